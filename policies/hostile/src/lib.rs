//! A hostile policy for the host's tests. Its config picks the misbehaviour of `transform`:
//! `{"mode": "loop" | "memory" | "recursion" | "panic" | "many-objects" | "big-object" |
//! "gigabyte-output" | "bad-json" | "log-flood" | "add-cluster-object" | "remember" | "ok"}`. `validate` always reports one warning, so a test can
//! tell that the instance after a hostile one still works.

use gitops_policy_sdk::{
    ConfigError, Context, Level, Metadata, Object, Policy, PolicyError, PolicyKind, Value,
    Violation, json, log,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by a `remember` call; in wasm every call runs in a fresh instance, so no call may ever
/// find it set.
static REMEMBERED: AtomicBool = AtomicBool::new(false);

/// The hostile policy.
pub struct Hostile;

/// Misbehaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Returns the objects unchanged.
    Ok,
    /// Spins forever.
    Loop,
    /// Allocates without bound (towards 4 GiB).
    Memory,
    /// Recurses without bound.
    Recursion,
    /// Panics (a trap in wasm: `panic = "abort"`).
    Panic,
    /// Returns 200,000 (empty) objects.
    ManyObjects,
    /// Returns one 24 MiB object.
    BigObject,
    /// Returns 1 GiB: 2^20 strings of 1 KiB that all alias one buffer (see [`gigabyte`]).
    GigabyteOutput,
    /// Returns a string that is not JSON.
    BadJson,
    /// Writes 10,000 log lines.
    LogFlood,
    /// Appends a ClusterRoleBinding granting cluster-admin (a tenancy breach).
    AddClusterObject,
    /// Fails if an earlier call left its mark in the instance's memory, then leaves it: proves
    /// the host gives every call fresh state.
    Remember,
}

#[inline(never)]
fn recurse(depth: u64, acc: &mut [u64; 8]) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    acc[(depth % 8) as usize] = black_box(depth);
    black_box(recurse(depth + 1, black_box(acc))) + acc[0]
}

impl Policy for Hostile {
    type Config = Mode;

    fn metadata() -> Metadata {
        Metadata {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            description: "Misbehaves on request; for tests only.".to_owned(),
            kind: PolicyKind::Both,
            config_schema: None,
        }
    }

    fn parse_config(config: &Value) -> Result<Mode, ConfigError> {
        Ok(
            match config.get("mode").and_then(Value::as_str).unwrap_or("ok") {
                "ok" => Mode::Ok,
                "loop" => Mode::Loop,
                "memory" => Mode::Memory,
                "recursion" => Mode::Recursion,
                "panic" => Mode::Panic,
                "many-objects" => Mode::ManyObjects,
                "big-object" => Mode::BigObject,
                "gigabyte-output" => Mode::GigabyteOutput,
                "bad-json" => Mode::BadJson,
                "log-flood" => Mode::LogFlood,
                "add-cluster-object" => Mode::AddClusterObject,
                "remember" => Mode::Remember,
                other => return Err(ConfigError::at("/mode", format!("unknown mode {other:?}"))),
            },
        )
    }

    fn transform(
        _ctx: &Context,
        mode: &Mode,
        objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        match mode {
            Mode::Ok => Ok(objects),
            Mode::Loop => loop {
                black_box(());
            },
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Mode::Recursion => {
                let mut acc = [0u64; 8];
                Ok(vec![json!(recurse(0, &mut acc)).into()])
            }
            Mode::Panic => panic!("hostile policy panics on purpose"),
            Mode::ManyObjects => Ok(vec![Object::from(json!({})); 200_000]),
            Mode::BigObject => Ok(vec![
                json!({"kind": "ConfigMap", "data": {"x": "x".repeat(24 << 20)}}).into(),
            ]),
            // Only reachable natively: the component's export answers this mode with
            // `gigabyte`; here it is the same object list in honest form, a few entries long.
            Mode::GigabyteOutput => Ok(vec![json!({"kind": "ConfigMap"}).into(); 4]),
            Mode::BadJson => Ok(vec![Value::String("not an object".to_owned()).into()]),
            Mode::AddClusterObject => {
                let mut objects = objects;
                objects.push(Object::from(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "tenant-is-admin"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "apps"}]
                })));
                Ok(objects)
            }
            Mode::Remember => {
                if REMEMBERED.swap(true, Ordering::Relaxed) {
                    return Err(PolicyError {
                        message: "state survived from an earlier call".to_owned(),
                        object: None,
                    });
                }
                Ok(objects)
            }
            Mode::LogFlood => {
                for i in 0..10_000 {
                    log(Level::Info, &format!("line {i} {}", "y".repeat(4096)));
                }
                Ok(objects)
            }
        }
    }

    fn validate(_ctx: &Context, _mode: &Mode, objects: &[Object]) -> Vec<Violation> {
        vec![Violation {
            object: None,
            field: None,
            message: format!("hostile saw {} objects", objects.len()),
            severity: gitops_policy_sdk::Severity::Warning,
        }]
    }
}

/// 2^20 JSON documents of 1 KiB each, 1 GiB in all, in about 1 KiB of guest memory plus the
/// list itself (24 MiB of `String` headers): every `String` aliases one leaked buffer.
///
/// Deliberately unsound, and only for this hostile fixture: the strings are handed to the
/// canonical ABI, which transfers them to the host; the host must refuse the output (its output
/// cap) before copying 1 GiB, and the instance is discarded without running its post-return
/// (which would free the aliases).
#[cfg(target_arch = "wasm32")]
fn gigabyte() -> Vec<String> {
    let doc: &'static mut str = Box::leak(
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"x"}},"data":{{"x":"{}"}}}}"#,
            "x".repeat(960)
        )
        .into_boxed_str(),
    );
    let (ptr, len) = (doc.as_mut_ptr(), doc.len());
    (0..1 << 20)
        // SAFETY: see above; the aliases are never used or freed by this instance.
        .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
        .collect()
}

/// The component's exports: the SDK's (as `export_policy!` generates them), except that
/// `transform` in mode `gigabyte-output` returns [`gigabyte`].
#[cfg(target_arch = "wasm32")]
const _: () = {
    use gitops_policy_sdk::bindings::kubectl_gitops::policy::types as wit;
    use gitops_policy_sdk::glue;

    struct Component;
    impl gitops_policy_sdk::bindings::Guest for Component {
        fn metadata() -> wit::Metadata {
            glue::metadata::<Hostile>()
        }
        fn validate_config(config: String) -> Result<(), wit::ConfigError> {
            glue::validate_config::<Hostile>(&config)
        }
        fn transform(
            context: wit::Context,
            config: String,
            objects: Vec<String>,
        ) -> Result<Vec<String>, wit::PolicyError> {
            let mode = gitops_policy_sdk::serde_json::from_str(&config)
                .ok()
                .and_then(|c| Hostile::parse_config(&c).ok());
            if mode == Some(Mode::GigabyteOutput) {
                return Ok(gigabyte());
            }
            glue::transform::<Hostile>(context, &config, objects)
        }
        fn validate(
            context: wit::Context,
            config: String,
            objects: Vec<String>,
        ) -> Vec<wit::Violation> {
            glue::validate::<Hostile>(context, &config, objects)
        }
    }
    gitops_policy_sdk::bindings::export_component!(Component with_types_in gitops_policy_sdk::bindings);
};
