# Reconciler OCI image: kubectl-gitops/image/build.sh links OpenSSL and zlib statically
# from Debian's libssl.a and libz.a (feature `static` of gitops-reconciler), puts the CA bundle
# into the image, and tests/tests/cli_image.rs checks the archive with skopeo (60-cli.sh).
want libssl-dev /usr/lib/x86_64-linux-gnu/libssl.a
want ca-certificates /etc/ssl/certs/ca-certificates.crt
want pkg-config pkg-config
want zlib1g-dev /usr/lib/x86_64-linux-gnu/libz.a
