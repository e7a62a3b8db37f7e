#!/usr/bin/env bash
# The main job of the README (`make demo`): builds what is needed, starts the local control plane,
# installs the kubectl-gitops CRDs and shows the API working against a real apiserver.
# Leaves the cluster running; stop it with `make cluster-down`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
run() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

bash tests/setup.sh
cargo build --workspace --quiet
bash tests/cluster/down.sh >/dev/null 2>&1 || true
KUBECONFIG=$(bash tests/cluster/up.sh)
export KUBECONFIG
run kubectl version
run kubectl apply --server-side -f reconciler/config/crd/
run kubectl wait --for=condition=Established -f reconciler/config/crd/
run kubectl create namespace instavote
cat > /tmp/kubectl-gitops-demo.yaml <<YAML
apiVersion: kubectl-gitops.io/v1alpha1
kind: GitRepository
metadata: {name: instavote, namespace: default}
spec:
  url: https://git.example.com/instavote.git
  ref: {branch: main}
  interval: 30s
---
apiVersion: kubectl-gitops.io/v1alpha1
kind: Kustomization
metadata: {name: vote-dev, namespace: default}
spec:
  sourceRef: {kind: GitRepository, name: instavote}
  path: ./deploy/vote
  interval: 1m
  prune: true
  targetNamespace: instavote
  policies:
  - name: bounds
    module: {builtin: replica-bounds}
    config: {max: 5}
YAML
run kubectl apply -f /tmp/kubectl-gitops-demo.yaml
run kubectl get gitrepo,ks -n default
printf '\n$ kubectl apply (an invalid GitRepository: ssh host starting with "-")\n'
if printf 'apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {name: evil, namespace: default}\nspec: {url: "ssh://-oProxyCommand=x/r.git", interval: 1m}\n' | kubectl apply -f - ; then
  echo "demo: the apiserver accepted an invalid object" >&2; exit 1
fi
printf '\n\033[32m✔ demo complete:\033[0m the local control plane runs with the kubectl-gitops API installed.\n'
printf '  export KUBECONFIG=%s   # to use it; make cluster-down to stop it\n' "$KUBECONFIG"
