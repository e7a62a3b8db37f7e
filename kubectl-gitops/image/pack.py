#!/usr/bin/env python3
"""Packs files into a one-layer linux/amd64 OCI image archive, without a container engine.

    pack.py --out ARCHIVE --name REPO --tag TAG --entrypoint PATH [options] ENTRY...

ENTRY is one of
    dir:PATH:MODE[:UID]            a directory
    file:PATH:MODE:SOURCE[:UID]    a file with the bytes of SOURCE on the build machine
    text:PATH:MODE:CONTENT         a file with CONTENT (\\n escapes allowed)
    link:PATH:TARGET               a symbolic link
(MODE in octal; owner root unless UID, which is also the group). Options: --user UID:GID,
--env K=V (repeatable), --port N (repeatable), --arg A (repeatable, the image's Cmd).

The layer is reproducible: entries sorted by path, mtime 0, no user or group names, gzip without
a timestamp. The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that
also carries a Docker-style manifest.json, so `kind load image-archive`, `docker load`,
`podman load` and `skopeo copy oci-archive:`/`docker-archive:` all take it. Prints the
key=value lines archive=, image= (name:tag), digest= (manifest digest), ref= (name@digest).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def parse_entry(spec):
    kind, _, rest = spec.partition(":")
    parts = rest.split(":")
    try:
        if kind == "dir":
            path, mode, *uid = parts
            return (path, tarfile.DIRTYPE, int(mode, 8), None, int(uid[0]) if uid else 0, None)
        if kind == "file":
            path, mode, source, *uid = parts
            with open(source, "rb") as f:
                data = f.read()
            return (path, tarfile.REGTYPE, int(mode, 8), data, int(uid[0]) if uid else 0, None)
        if kind == "text":
            path, mode, content = rest.split(":", 2)
            data = content.encode().decode("unicode_escape").encode()
            return (path, tarfile.REGTYPE, int(mode, 8), data, 0, None)
        if kind == "link":
            path, target = rest.split(":", 1)
            return (path, tarfile.SYMTYPE, 0o777, None, 0, target)
    except (ValueError, OSError) as e:
        sys.exit(f"pack.py: bad entry {spec!r}: {e}")
    sys.exit(f"pack.py: bad entry {spec!r}: expected dir:, file:, text: or link:")


def tar_entry(tar, path, data=None, mode=0o644, kind=tarfile.REGTYPE, uid=0, link=None):
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, uid, 0
    info.uname = info.gname = ""
    if link is not None:
        info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--entrypoint", required=True)
    p.add_argument("--user", default="65532:65532")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--port", action="append", default=[])
    p.add_argument("--arg", action="append", default=[])
    p.add_argument("entries", nargs="+")
    a = p.parse_args()

    entries = sorted((parse_entry(s) for s in a.entries), key=lambda e: e[0].lstrip("/"))
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, data, uid, link in entries:
            tar_entry(tar, path, data, mode, kind, uid, link)
    layer = layer_tar.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(layer)
    layer_gz = gz.getvalue()

    image_config = {
        "User": a.user,
        "Entrypoint": [a.entrypoint],
        "WorkingDir": "/",
        "Env": a.env,
        "Labels": {"org.opencontainers.image.title": a.name.rsplit("/", 1)[-1],
                   "org.opencontainers.image.version": a.tag},
    }
    if a.port:
        image_config["ExposedPorts"] = {f"{port}/tcp": {} for port in a.port}
    if a.arg:
        image_config["Cmd"] = a.arg
    config = canonical({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubectl-gitops/image/pack.py"}],
    })
    config_digest, layer_digest = digest_of(config), digest_of(layer_gz)
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer_gz)}],
    })
    manifest_digest = digest_of(manifest)
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": f"{a.name}:{a.tag}", "org.opencontainers.image.ref.name": a.tag},
        }],
    })

    def hexof(d):
        return d.split(":", 1)[1]

    docker_manifest = canonical([{
        "Config": f"blobs/sha256/{hexof(config_digest)}",
        "RepoTags": [f"{a.name}:{a.tag}"],
        "Layers": [f"blobs/sha256/{hexof(layer_digest)}"],
    }])
    archive = os.path.abspath(a.out)
    with tarfile.open(archive + ".tmp", mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar_entry(tar, "blobs", mode=0o755, kind=tarfile.DIRTYPE)
        tar_entry(tar, "blobs/sha256", mode=0o755, kind=tarfile.DIRTYPE)
        for d, data in sorted([(config_digest, config), (layer_digest, layer_gz), (manifest_digest, manifest)]):
            tar_entry(tar, f"blobs/sha256/{hexof(d)}", data)
        tar_entry(tar, "index.json", index)
        tar_entry(tar, "manifest.json", docker_manifest)
        tar_entry(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
    os.replace(archive + ".tmp", archive)
    print(f"archive={archive}")
    print(f"image={a.name}:{a.tag}")
    print(f"digest={manifest_digest}")
    print(f"ref={a.name}@{manifest_digest}")


if __name__ == "__main__":
    main()
