# The wasm32-wasip2 toolchain for the policy components:
# rustup's target when it can be added here, otherwise Debian's rustc-web with the Rust library
# sources and wasi-libc so that policies/build.sh can use -Zbuild-std.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
  && ! rustup target add wasm32-wasip2 >/dev/null 2>&1; then
  log "rustup cannot add wasm32-wasip2; using Debian's rustc-web toolchain for policy components"
  want rustc-web /usr/bin/rustc
  want cargo-web /usr/bin/cargo
  want rust-web-src /usr/lib/rustlib/src/rust
  want wasi-libc /usr/lib/wasm32-wasi/libc.a
  want lld /usr/bin/ld.lld
fi
# The Python example policy (policies/examples/python-require-labels/build.sh) installs a pinned
# componentize-py into a venv under the cache directory; Debian's python3 needs ensurepip for that.
python3 -c 'import ensurepip' >/dev/null 2>&1 || want python3-venv /usr/share/doc/python3-venv
