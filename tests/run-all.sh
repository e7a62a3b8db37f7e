#!/usr/bin/env bash
# Runs every test of kubectl-gitops: formatting, lints, unit tests, then brings up the local
# control plane, runs the smoke test and the conformance suite against it, and brings it down
# again (also on failure). This is the README's test command (`make test`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
# Keep Rust builds warm across fresh clones: target dir in the cache unless the caller chose one.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}
step() { printf '\n==== %s  (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
t0=$SECONDS

# The target dir lives in the cache and grows with every tree built into it; when the disk runs
# low, drop what is cheap to rebuild (incremental state and test/bench executables older than an
# hour) instead of failing half-way with ENOSPC.
mkdir -p "$GITOPS_CACHE_DIR"
free_gib=$(df -P -BG "$GITOPS_CACHE_DIR" 2>/dev/null | awk 'NR==2 {gsub("G","",$4); print $4}')
if [ -n "$free_gib" ] && [ "$free_gib" -lt 20 ] && [ -d "$CARGO_TARGET_DIR" ]; then
  echo "only ${free_gib} GiB free: pruning incremental state and old executables in $CARGO_TARGET_DIR"
  find "$CARGO_TARGET_DIR" -maxdepth 2 -type d -name incremental -exec rm -rf {} + 2>/dev/null || true
  find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -type f -executable ! -name "*.*" -mmin +60 -delete 2>/dev/null || true
fi

step "setup"
bash tests/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "licences of every dependency (cargo deny check licenses, deny.toml)"
"$CARGO_DENY" --log-level error check licenses
step "policy components rebuilt byte-for-byte (policies/build.sh --check)"
bash policies/build.sh --check
step "cargo test (unit)"
cargo test --workspace --no-fail-fast

# A cluster of our own, in its own state directory, unless the caller points us at one.
if [ -z "${GITOPS_TEST_KUBECONFIG:-}" ]; then
  export GITOPS_CLUSTER_DIR="$GITOPS_CACHE_DIR/cluster-test-$$"
  step "local control plane up"
  trap 'step "local control plane down"; bash tests/cluster/down.sh --purge' EXIT
  GITOPS_TEST_KUBECONFIG=$(bash tests/cluster/up.sh)
  export GITOPS_TEST_KUBECONFIG
fi

step "smoke test"
bash tests/cluster/smoke.sh
step "conformance suite against $GITOPS_TEST_KUBECONFIG"
cargo test -p gitops-conformance --no-fail-fast -- --ignored --skip disruptive_ --test-threads=4
# Tests that restart parts of the control plane run last, alone.
if [ -n "${GITOPS_CLUSTER_DIR:-}" ]; then
  step "disruptive conformance tests (one at a time)"
  cargo test -p gitops-conformance -- --ignored disruptive_ --test-threads=1
fi

# The real-node group (tests/tests/node_reconciler.rs: the reconciler as a Pod, real containers;
# node_receiver.rs: webhooks from a git push through the receiver's Service)
# needs a cluster of its own with a real node (root only; one real node per machine, so it runs
# alone, and before the demo, which starts another). Its tests share one installation and run
# one at a time.
if [ "$(id -u)" = 0 ]; then
  step "real node up, smoke test, real-node conformance tests (one at a time)"
  (
    export GITOPS_CLUSTER_DIR="$GITOPS_CACHE_DIR/cluster-node-$$"
    trap 'step "real node down"; bash tests/cluster/down.sh --purge' EXIT
    GITOPS_TEST_KUBECONFIG=$(GITOPS_REAL_NODE=1 bash tests/cluster/up.sh)
    export GITOPS_TEST_KUBECONFIG
    bash tests/cluster/smoke.sh
    cargo test -p gitops-conformance --no-fail-fast --test node_reconciler --test node_receiver -- --ignored --test-threads=1
  )
else
  step "SKIPPED the real-node group: it needs root (network namespaces, cgroups, mounts)"
fi

# The README's other command must stay true: the demo's story, on a cluster of its own (with a
# real node as root; the process-mode story otherwise).
demo=tests/demo.sh
[ "$(id -u)" = 0 ] || demo=tests/demo-fast.sh
step "the demo ($demo)"
demo_cluster="$GITOPS_CACHE_DIR/cluster-demo-$$"
GITOPS_CLUSTER_DIR=$demo_cluster bash "$demo" </dev/null ||
  { GITOPS_CLUSTER_DIR=$demo_cluster bash tests/cluster/down.sh --purge; exit 1; }
GITOPS_CLUSTER_DIR=$demo_cluster bash tests/cluster/down.sh --purge

printf '\nall tests passed in %ss\n' "$((SECONDS - t0))"
