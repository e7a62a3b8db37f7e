#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test kubectl-gitops: Debian packages, the
# Rust components, and (through tests/cluster/build.sh, cached by version) the Go-built binaries
# of the local control plane. Idempotent and quick when everything is present.
# Usage: setup.sh [--demo]
#   --demo: only what `make demo` needs before its cargo build: no test-only tools (cargo-deny),
#   and none of the Go builds (the demo runs them with `tests/cluster/build.sh` while cargo builds,
#   so that the two overlap on a fresh machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster/versions.sh"
setup_for=test
case "${1:-}" in
  --demo) setup_for=demo ;;
  "") ;;
  *) printf 'usage: %s [--demo]\n' "$0" >&2; exit 2 ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages: command or file that proves presence -> package.
need_pkgs=()
post_install=()
want() { # want PACKAGE PATH-OR-COMMAND
  if [[ $2 == /* ]]; then [ -e "$2" ] || need_pkgs+=("$1"); else command -v "$2" >/dev/null 2>&1 || need_pkgs+=("$1"); fi
}
want openssl openssl
want curl curl
want git git
want python3 python3
want make make
for extra in "$here"/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  # shellcheck source=/dev/null
  . "$extra"
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: ${need_pkgs[*]} (run as root or install them yourself)"; exit 1
  fi
  log "apt-get install ${need_pkgs[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

for fn in "${post_install[@]}"; do "$fn"; done

command -v cargo >/dev/null || { log "Rust (cargo) is required: install it with rustup"; exit 1; }
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
command -v go >/dev/null || { log "Go >= 1.24 is required to build the local control plane"; exit 1; }
command -v kubectl >/dev/null || { log "kubectl is required (v1.32 or newer)"; exit 1; }

# Per-area requirements (git servers, wasm toolchain, ...), one file per area, in name order.
# Each file is sourced with want/log available and may append to need_pkgs before the install.
if [ "$setup_for" = test ]; then "$here/cluster/build.sh" k8s etcd kwok sops age; fi
