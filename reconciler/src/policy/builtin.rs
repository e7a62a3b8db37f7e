//! The built-in policy components, embedded from `policies/dist/` (built by
//! `policies/build.sh`, checked byte-for-byte in CI).

/// Names and component bytes of the built-in policies.
pub const BUILTINS: &[(&str, &[u8])] = &[
    (
        "image-pinning",
        include_bytes!("../../../policies/dist/image-pinning.wasm"),
    ),
    (
        "replica-bounds",
        include_bytes!("../../../policies/dist/replica-bounds.wasm"),
    ),
    (
        "target-namespace",
        include_bytes!("../../../policies/dist/target-namespace.wasm"),
    ),
];

/// The bytes of built-in `name`.
pub(crate) fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
