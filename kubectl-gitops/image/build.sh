#!/usr/bin/env bash
# Builds the reconciler's OCI image without a container engine:
#   kubectl-gitops/image/build.sh [OUT_DIR]        (default: dist/image)
# 1. a static `gitops-reconciler` (glibc, -C target-feature=+crt-static: no musl target here);
# 2. one layer: /gitops-reconciler, /etc/passwd and /etc/group with the non-root user
#    65532 (nonroot), /tmp and /data writable by it, and the CA bundle of the build machine
#    (/etc/ssl/certs/ca-certificates.crt, Debian's ca-certificates) for https git servers with
#    public certificates; reproducible (sorted, mtime 0, gzip -n);
# 3. (pack.py) an OCI image layout (oci-layout, index.json, blobs/sha256/...) packed as
#    OUT_DIR/gitops-reconciler.oci.tar, also carrying a Docker-style manifest.json, so
#    `kind load image-archive`, `docker load`, `podman load` and `skopeo` all take it.
# Prints key=value lines: archive=, image= (name:tag), digest= (manifest digest), ref= (name@digest),
# and, when it compiled them, cli= (the static kubectl-gitops built alongside).
# GITOPS_IMAGE_NAME overrides the repository (default ghcr.io/kubectl-gitops/gitops-reconciler);
# GITOPS_RECONCILER_BIN packages an already built static binary; GITOPS_IMAGE_PROFILE=dev builds
# it with the dev profile (tests: quicker to compile; releases use the default, release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/dist/image}
mkdir -p "$out"
out=$(cd "$out" && pwd)
. "$root/tests/cluster/versions.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
name=${GITOPS_IMAGE_NAME:-ghcr.io/kubectl-gitops/gitops-reconciler}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
target=x86_64-unknown-linux-gnu

bin=${GITOPS_RECONCILER_BIN:-}
if [ -z "$bin" ]; then
  [ "$(uname -m)" = x86_64 ] || { echo "image/build.sh: builds linux/amd64 images on x86_64 hosts only" >&2; exit 1; }
  # --target keeps RUSTFLAGS away from build scripts and proc macros (they stay dynamic).
  profile=${GITOPS_IMAGE_PROFILE:-release}
  # Feature `static`: libcurl from its bundled source (OpenSSL backend) instead of the system's
  # shared libcurl. OpenSSL and zlib come from Debian's libssl-dev and zlib1g-dev: under
  # +crt-static the linker takes their .a archives. (No OPENSSL_STATIC/LIBZ_SYS_STATIC: libz-sys
  # reads the latter when its build script is compiled, and the build script is shared with the
  # normal build, which would then be rebuilt after every image build and back.)
  # The CLI is built in the same run, statically too: the dependencies are compiled once for both
  # (`make demo` runs this kubectl-gitops, so a fresh machine compiles them once, not twice).
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile "$profile" --quiet --target "$target" \
      -p gitops-reconciler -p kubectl-gitops --features gitops-reconciler/static \
      --bin gitops-reconciler --bin kubectl-gitops)
  dir=$profile; [ "$profile" = dev ] && dir=debug
  bin="$CARGO_TARGET_DIR/$target/$dir/gitops-reconciler"
  echo "cli=$CARGO_TARGET_DIR/$target/$dir/kubectl-gitops"
fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "image/build.sh: $bin is dynamically linked:" >&2; ldd "$bin" >&2; exit 1
fi

ca_bundle=${GITOPS_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca_bundle" ] || { echo "image/build.sh: no CA bundle at $ca_bundle (install ca-certificates)" >&2; exit 1; }

# The layer: the binary, the non-root user 65532 (nonroot), /data and HOME owned by it, /tmp, and
# the CA bundle.
pack_out=$(python3 "$here/pack.py" --out "$out/gitops-reconciler.oci.tar" --name "$name" --tag "v$version" \
  --entrypoint /gitops-reconciler --user 65532:65532 \
  --env PATH=/ --env TMPDIR=/tmp --env HOME=/home/nonroot --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 8080 --port 9090 --port 9440 \
  dir:data:755:65532 dir:etc:755 \
  'text:etc/group:644:root:x:0:\nnonroot:x:65532:\n' \
  'text:etc/passwd:644:root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  dir:etc/ssl:755 dir:etc/ssl/certs:755 "file:etc/ssl/certs/ca-certificates.crt:644:$ca_bundle" \
  "file:gitops-reconciler:755:$bin" dir:home:755 dir:home/nonroot:700:65532 dir:tmp:1777)
echo "$pack_out"
echo "$pack_out" | sed -n 's/^digest=//p' > "$out/digest"
