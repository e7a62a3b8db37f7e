#!/usr/bin/env bash
# Builds the krew release archive of kubectl-gitops for the host platform and writes the plugin
# manifest with that archive's sha256 filled in.
#   kubectl-gitops/krew/package.sh [OUT_DIR]     (default: dist/krew)
# Produces OUT_DIR/kubectl-gitops_<os>_<arch>.tar.gz and OUT_DIR/gitops.yaml, and prints the
# archive path. The archive is reproducible: sorted entries, fixed owner and mtime, gzip -n.
# KUBECTL_GITOPS_BIN=path packages an already built binary instead of a release build (tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/dist/krew}
mkdir -p "$out"
out=$(cd "$out" && pwd)
. "$root/tests/cluster/versions.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}

case "$(uname -s)" in
  Linux) os=linux ;; Darwin) os=darwin ;; MINGW*|MSYS*|CYGWIN*) os=windows ;;
  *) echo "package.sh: unsupported OS $(uname -s)" >&2; exit 1 ;;
esac
case "$(uname -m)" in
  x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;;
  *) echo "package.sh: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
ext=""; [ "$os" = windows ] && ext=.exe

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
manifest_version=$(sed -n 's/^  version: v//p' "$here/gitops.yaml")
if [ "$version" != "$manifest_version" ]; then
  echo "package.sh: Cargo.toml says $version but gitops.yaml says v$manifest_version: update the manifest" >&2
  exit 1
fi

bin=${KUBECTL_GITOPS_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --quiet -p kubectl-gitops)
  bin="$CARGO_TARGET_DIR/release/kubectl-gitops$ext"
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/kubectl-gitops$ext"
cp "$root/README.md" "$root/LICENSE" "$stage/"
archive="$out/kubectl-gitops_${os}_${arch}.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - "kubectl-gitops$ext" LICENSE README.md \
  | gzip -n -9 > "$archive"
sum=$(sha256sum "$archive" | cut -d' ' -f1)

# Fill in the sha256 of the entry whose selector is this os/arch.
python3 - "$here/gitops.yaml" "$out/gitops.yaml" "$os" "$arch" "$sum" <<'PY'
import re, sys
src, dst, os_, arch, digest = sys.argv[1:]
lines = open(src).read().split("\n")
cur_os = cur_arch = None
done = False
for i, line in enumerate(lines):
    m = re.match(r"\s+os: (\S+)$", line)
    if m: cur_os = m.group(1)
    m = re.match(r"\s+arch: (\S+)$", line)
    if m: cur_arch = m.group(1)
    if re.match(r"\s+sha256: ", line) and (cur_os, cur_arch) == (os_, arch):
        lines[i] = re.sub(r'sha256: .*', f'sha256: "{digest}"', line)
        done = True
if not done:
    sys.exit(f"no platform entry for {os_}/{arch} in {src}")
open(dst, "w").write("\n".join(lines))
PY
echo "$archive"
