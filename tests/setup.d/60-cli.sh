# CLI: skopeo checks the reconciler's OCI image archive (digests, config) in
# tests/tests/cli_image.rs; krew is built from its Go module by the krew test itself.
want skopeo skopeo
