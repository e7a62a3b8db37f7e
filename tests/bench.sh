#!/usr/bin/env bash
# Runs the bench suite: every bench target of the gitops-conformance crate (tests/benches/*.rs).
# Benches that need a cluster start the local control plane themselves or use
# GITOPS_TEST_KUBECONFIG. Usage: tests/bench.sh [bench-name ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
bash tests/setup.sh
if [ $# -eq 0 ]; then
  cargo bench -p gitops-conformance
else
  for b in "$@"; do cargo bench -p gitops-conformance --bench "$b"; done
fi
