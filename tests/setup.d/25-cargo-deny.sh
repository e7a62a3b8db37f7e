# Licence check of every dependency (`cargo deny check licenses` against deny.toml, run by
# tests/run-all.sh): cargo-deny is built once from crates.io into the cache, keyed by its version
# (CARGO_DENY_VERSION in tests/cluster/versions.sh).
install_cargo_deny() {
  [ -x "$CARGO_DENY" ] && return 0
  log "building cargo-deny $CARGO_DENY_VERSION into $GITOPS_CACHE_DIR/bin (once, a few minutes)"
  cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION" \
    --root "$GITOPS_CACHE_DIR/bin/cargo-deny-$CARGO_DENY_VERSION" \
    --target-dir "$GITOPS_CACHE_DIR/cargo-deny-build"
  rm -rf "$GITOPS_CACHE_DIR/cargo-deny-build"
}
if [ "$setup_for" = test ]; then post_install+=(install_cargo_deny); fi
