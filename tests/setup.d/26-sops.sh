# The real `sops` and `age` (tests/tests/sops_compat.rs encrypts with them and compares with the
# reconciler's decryption), built once from the Go module proxy into the cache, keyed by version
# (SOPS_VERSION, AGE_VERSION in tests/cluster/versions.sh).
install_sops() {
  if [ ! -x "$AGE_BIN_DIR/age-keygen" ]; then
    log "building age $AGE_VERSION into $AGE_BIN_DIR (once)"
    GOBIN="$AGE_BIN_DIR" go install "filippo.io/age/cmd/...@$AGE_VERSION"
  fi
  if [ ! -x "$SOPS_BIN" ]; then
    log "building sops $SOPS_VERSION into $(dirname "$SOPS_BIN") (once, a few minutes)"
    GOBIN="$(dirname "$SOPS_BIN")" go install "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
  fi
}
post_install+=(install_sops)
want openssh-client ssh-keygen
