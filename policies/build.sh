#!/usr/bin/env bash
# Builds every policy component (wasm32-wasip2) reproducibly into policies/dist/, with
# SHA256SUMS and the toolchain that produced them (policies/dist/TOOLCHAIN).
#
#   policies/build.sh          rebuild and update policies/dist/
#   policies/build.sh --check  rebuild into a temporary directory and fail if the bytes differ
#                              from the committed ones (CI). Byte-for-byte reproducibility is
#                              only promised on the recorded toolchain: on another toolchain the
#                              check says which versions differ and skips the byte comparison.
#
# Toolchain: rustup's wasm32-wasip2 target when it is installed or can be
# added; otherwise Debian's rustc-web + rust-web-src + wasi-libc with -Zbuild-std (installed by
# tests/setup.d/30-wasm.sh). Paths are remapped so the bytes do not depend on where the checkout,
# the cargo home or the target directory are.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
dist="$root/policies/dist"
# crate directory under policies/ -> file in dist/
crates=(image-pinning replica-bounds target-namespace hostile hostile-metadata)

mode=build
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf '[policies] %s\n' "$*" >&2; }

remap="--remap-path-prefix=$root=/kubectl-gitops --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$CARGO_TARGET_DIR=/target"
build_args=(build --locked --profile policy --target wasm32-wasip2)
for c in "${crates[@]}"; do build_args+=(-p "gitops-policy-$c"); done

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
  || rustup target add wasm32-wasip2 >/dev/null 2>&1; then
  toolchain="rustup $(rustc -V) target wasm32-wasip2"
  build() { RUSTFLAGS="$remap" cargo "${build_args[@]}"; }
elif [ -x /usr/bin/rustc ] && [ -e /usr/lib/wasm32-wasi/libc.a ] && [ -d /usr/lib/rustlib/src/rust ]; then
  toolchain="debian rustc-web $(dpkg-query -W -f='${Version}' rustc-web) ($(/usr/bin/rustc -V)) -Zbuild-std"
  build() {
    PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 \
      RUSTFLAGS="-L /usr/lib/wasm32-wasi $remap --remap-path-prefix=/usr/lib/rustlib/src/rust=/rust-src" \
      /usr/bin/cargo "${build_args[@]}" -Zbuild-std=std,panic_abort
  }
else
  log "no wasm32-wasip2 toolchain: run tests/setup.sh (tests/setup.d/30-wasm.sh) first"
  exit 1
fi

log "building ${crates[*]} with: $toolchain"
build
out=$dist
if [ "$mode" = check ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
for c in "${crates[@]}"; do
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/policy/gitops_policy_${c//-/_}.wasm" "$out/$c.wasm"
done
(cd "$out" && sha256sum "${crates[@]/%/.wasm}" > SHA256SUMS)
printf '%s\n' "$toolchain" > "$out/TOOLCHAIN"

if [ "$mode" = build ]; then
  log "wrote policies/dist/ (toolchain: $toolchain)"
  cat "$dist/SHA256SUMS" >&2
  exit 0
fi

# --check
(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || { log "policies/dist/SHA256SUMS does not match the committed .wasm files"; exit 1; }
recorded=$(cat "$dist/TOOLCHAIN")
if cmp -s "$out/SHA256SUMS" "$dist/SHA256SUMS"; then
  log "policy components are byte-identical to the committed ones ($toolchain)"
  exit 0
fi
if [ "$recorded" != "$toolchain" ]; then
  log "WARNING: toolchain differs: committed components were built with '$recorded', this machine has '$toolchain'."
  log "WARNING: bytes are only reproducible on the recorded toolchain; byte comparison skipped (the policy tests still run the committed components)."
  exit 0
fi
log "policy components differ from the committed ones although the toolchain is the same ($toolchain):"
diff "$dist/SHA256SUMS" "$out/SHA256SUMS" >&2 || true
log "rebuild with policies/build.sh and commit policies/dist/"
exit 1
