#!/usr/bin/env bash
# Proves the local control plane is real: the server reports its version, and a 2-replica
# Deployment is scheduled onto the kwok nodes and reaches 2 available replicas.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export KUBECONFIG=${GITOPS_TEST_KUBECONFIG:-$KUBECONFIG_OUT}
ns=gitops-smoke-$$
cleanup() { kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true; }
trap cleanup EXIT

kubectl version
server=$(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
[ "$server" = "$K8S_VERSION" ] || { echo "smoke: server version is $server, expected $K8S_VERSION" >&2; exit 1; }
kubectl get nodes -o wide
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create deployment smoke --image=registry.k8s.io/pause:3.10 --replicas=2 >/dev/null
if ! kubectl -n "$ns" wait --for=condition=Available deployment/smoke --timeout=90s; then
  kubectl -n "$ns" describe deployment/smoke >&2 || true
  kubectl -n "$ns" get pods -o wide >&2 || true
  echo "smoke: deployment did not become available" >&2
  exit 1
fi
available=$(kubectl -n "$ns" get deployment smoke -o jsonpath='{.status.availableReplicas}')
[ "$available" = 2 ] || { echo "smoke: $available/2 replicas available" >&2; exit 1; }
kubectl -n "$ns" get deployment,pods -o wide
echo "smoke: ok — Deployment smoke has $available/2 available replicas on $server"
