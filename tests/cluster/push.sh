#!/usr/bin/env bash
# Copies an OCI image archive (kubectl-gitops/image/build.sh, pack.py) into the registry of the
# real node of the cluster in $GITOPS_CLUSTER_DIR and prints its reference by digest, the form
# pods should use:
#   tests/cluster/push.sh ARCHIVE REPOSITORY TAG   ->   127.0.0.1:5000/REPOSITORY@sha256:...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
. "$here/node.sh"
[ $# -eq 3 ] || fail "usage: push.sh ARCHIVE REPOSITORY TAG"
[ -f "$1" ] || fail "no image archive at $1"
is_ours registry || fail "the real node's registry is not running in $RUN (up.sh with GITOPS_REAL_NODE=1)"
node_push "$1" "$2" "$3"
