#!/usr/bin/env bash
# Builds the reconciler's OCI image without a container engine:
#   kubectl-gitops/image/build.sh [OUT_DIR]        (default: dist/image)
# 1. a static `gitops-reconciler` (glibc, -C target-feature=+crt-static: no musl target here);
# 2. one layer: /gitops-reconciler, /etc/passwd and /etc/group with the non-root user
#    65532 (nonroot), /tmp and /data writable by it, and the CA bundle of the build machine
#    (/etc/ssl/certs/ca-certificates.crt, Debian's ca-certificates) for https git servers with
#    public certificates; reproducible (sorted, mtime 0, gzip -n);
# 3. an OCI image layout (oci-layout, index.json, blobs/sha256/...) packed as
#    OUT_DIR/gitops-reconciler.oci.tar, also carrying a Docker-style manifest.json, so
#    `kind load image-archive`, `docker load`, `podman load` and `skopeo` all take it.
# Prints key=value lines: archive=, image= (name:tag), digest= (manifest digest), ref= (name@digest).
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
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile "$profile" --quiet --target "$target" \
      -p gitops-reconciler --features static --bin gitops-reconciler)
  dir=$profile; [ "$profile" = dev ] && dir=debug
  bin="$CARGO_TARGET_DIR/$target/$dir/gitops-reconciler"
fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "image/build.sh: $bin is dynamically linked:" >&2; ldd "$bin" >&2; exit 1
fi

ca_bundle=${GITOPS_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca_bundle" ] || { echo "image/build.sh: no CA bundle at $ca_bundle (install ca-certificates)" >&2; exit 1; }

python3 - "$bin" "$out" "$name" "v$version" "$ca_bundle" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
bin_path, out, name, tag, ca_bundle = sys.argv[1:]
UID = GID = 65532

def entry(tar, path, data=None, mode=0o644, kind=tarfile.REGTYPE, uid=0, gid=0):
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 0
    info.uname = info.gname = ""
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)

layer_tar = io.BytesIO()
with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
    entry(tar, "data", mode=0o755, kind=tarfile.DIRTYPE, uid=UID, gid=GID)
    entry(tar, "etc", mode=0o755, kind=tarfile.DIRTYPE)
    entry(tar, "etc/group", b"root:x:0:\nnonroot:x:65532:\n")
    entry(tar, "etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    entry(tar, "etc/ssl", mode=0o755, kind=tarfile.DIRTYPE)
    entry(tar, "etc/ssl/certs", mode=0o755, kind=tarfile.DIRTYPE)
    entry(tar, "etc/ssl/certs/ca-certificates.crt", open(ca_bundle, "rb").read())
    entry(tar, "gitops-reconciler", open(bin_path, "rb").read(), mode=0o755)
    entry(tar, "home", mode=0o755, kind=tarfile.DIRTYPE)
    entry(tar, "home/nonroot", mode=0o700, kind=tarfile.DIRTYPE, uid=UID, gid=GID)
    entry(tar, "tmp", mode=0o1777, kind=tarfile.DIRTYPE)
layer = layer_tar.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
    g.write(layer)
layer_gz = gz.getvalue()

def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

config = canonical({
    "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
    "config": {
        "User": f"{UID}:{GID}",
        "Entrypoint": ["/gitops-reconciler"],
        "WorkingDir": "/",
        "Env": ["PATH=/", "TMPDIR=/tmp", "HOME=/home/nonroot",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}, "9440/tcp": {}},
        "Labels": {"org.opencontainers.image.title": "gitops-reconciler",
                   "org.opencontainers.image.version": tag},
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubectl-gitops/image/build.sh"}],
})
config_digest, _ = blob(config)
layer_digest, _ = blob(layer_gz)
manifest = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer_gz)}],
})
manifest_digest, _ = blob(manifest)
index = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": f"{name}:{tag}", "org.opencontainers.image.ref.name": tag},
    }],
})
hexof = lambda d: d.split(":", 1)[1]
docker_manifest = canonical([{
    "Config": f"blobs/sha256/{hexof(config_digest)}",
    "RepoTags": [f"{name}:{tag}"],
    "Layers": [f"blobs/sha256/{hexof(layer_digest)}"],
}])
archive = os.path.join(out, "gitops-reconciler.oci.tar")
with tarfile.open(archive + ".tmp", mode="w", format=tarfile.PAX_FORMAT) as tar:
    entry(tar, "blobs", mode=0o755, kind=tarfile.DIRTYPE)
    entry(tar, "blobs/sha256", mode=0o755, kind=tarfile.DIRTYPE)
    for d, data in sorted([(config_digest, config), (layer_digest, layer_gz), (manifest_digest, manifest)]):
        entry(tar, f"blobs/sha256/{hexof(d)}", data)
    entry(tar, "index.json", index)
    entry(tar, "manifest.json", docker_manifest)
    entry(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
os.replace(archive + ".tmp", archive)
open(os.path.join(out, "digest"), "w").write(manifest_digest + "\n")
print(f"archive={archive}")
print(f"image={name}:{tag}")
print(f"digest={manifest_digest}")
print(f"ref={name}@{manifest_digest}")
PY
