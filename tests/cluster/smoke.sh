#!/usr/bin/env bash
# Proves the local control plane is real: the server reports its version, and a 2-replica
# Deployment is scheduled onto the kwok nodes and reaches 2 available replicas. When the cluster
# has a real node (up.sh with GITOPS_REAL_NODE=1), it checks that instead (smoke_real_node).
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

# smoke_real_node: a real container becomes Ready behind its readiness probe, a pod reaches it
# through its Service by the Service's DNS name, and CoreDNS answers for that name.
smoke_real_node() {
  [ -f "$NODE_DIR/images.env" ] || { echo "smoke: the cluster has a real node but $NODE_DIR/images.env is missing" >&2; exit 1; }
  # shellcheck source=/dev/null
  . "$NODE_DIR/images.env"
  local name="web.$ns.svc.cluster.local"
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: $BUSYBOX_IMAGE
        command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo "hello from \$HOSTNAME" > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www']
        readinessProbe:
          httpGet: {path: /index.html, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
YAML
  if ! kubectl -n "$ns" wait --for=condition=Available deployment/web --timeout=90s; then
    kubectl -n "$ns" describe pods >&2 || true
    echo "smoke: the real container did not become Ready" >&2; exit 1
  fi
  local pod
  pod=$(kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: $BUSYBOX_IMAGE
    # (Debian's static busybox wget crashes; nc through glibc's resolver is the HTTP client.)
    command: [/bin/sh, -c, 'busybox nslookup $name && printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | busybox nc -w 5 $name 80']
YAML
  local phase=""
  for _ in $(seq 1 90); do
    phase=$(kubectl -n "$ns" get pod client -o jsonpath='{.status.phase}')
    case $phase in Succeeded|Failed) break ;; esac
    sleep 1
  done
  local out
  out=$(kubectl -n "$ns" logs client)
  echo "$out"
  [ "$phase" = Succeeded ] || { echo "smoke: the client pod ended $phase" >&2; exit 1; }
  local svc_ip
  svc_ip=$(kubectl -n "$ns" get service web -o jsonpath='{.spec.clusterIP}')
  echo "$out" | grep -q "Address: $svc_ip" || { echo "smoke: CoreDNS did not answer $name with $svc_ip" >&2; exit 1; }
  echo "$out" | grep -qx "hello from $pod" || { echo "smoke: the page through Service web did not come from pod $pod" >&2; exit 1; }
  echo "smoke: ok — container Ready on the real node, $name resolves to $svc_ip and serves pod $pod's page"
}
if [ -n "$(kubectl get nodes -l "$NODE_LABEL=true" -o name)" ]; then
  smoke_real_node
  exit 0
fi
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
