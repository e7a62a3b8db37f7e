#!/usr/bin/env bash
# Starts a real local Kubernetes control plane on free 127.0.0.1 ports: etcd, kube-apiserver
# (own PKI, RBAC), kube-controller-manager, kube-scheduler and kwok with fake Nodes, so that
# Deployments really become Available. Builds the binaries first if the cache lacks them.
# With GITOPS_REAL_NODE=1 it also starts a real node that runs containers (node.sh: containerd,
# kubelet, kube-proxy, a local registry, CoreDNS; root only), and then makes no kwok nodes unless
# GITOPS_CLUSTER_NODES says so (pods would land on fake nodes).
# Writes the kubeconfig to $GITOPS_CLUSTER_DIR/kubeconfig and prints its path on stdout.
# Stop with down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
. "$here/node.sh"

READY_TIMEOUT=${GITOPS_CLUSTER_READY_TIMEOUT:-90}
REAL_NODE=${GITOPS_REAL_NODE:-0}
case $REAL_NODE in 0|1) ;; *) fail "GITOPS_REAL_NODE must be 0 or 1, not '$REAL_NODE'" ;; esac
if [ "$REAL_NODE" = 1 ]; then NODES=${GITOPS_CLUSTER_NODES:-0}; else NODES=${GITOPS_CLUSTER_NODES:-2}; fi

for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  if is_ours "$name"; then
    fail "a local control plane is already running from $RUN ($name is up); run tests/cluster/down.sh first"
  fi
done

# kwok runs only for fake nodes: a real-node cluster without them neither builds nor starts it.
builds=(k8s etcd)
if [ "$NODES" -gt 0 ]; then builds+=(kwok); fi
if [ "$REAL_NODE" = 1 ]; then builds+=(node coredns); fi
"$here/build.sh" "${builds[@]}"
command -v openssl >/dev/null || fail "openssl is required to make the cluster's PKI (apt-get install openssl)"
command -v kubectl >/dev/null || fail "kubectl is required (it is used to create the fake Nodes and to wait for them)"

# Leftovers of an earlier real node in this directory (a SIGKILLed run) go before its record does.
node_down
rm -rf "$RUN"
mkdir -p "$RUN/pki" "$PIDS" "$LOGS" "$RUN/etcd"
# Any failure from here on (fail exits too) stops and removes what was started.
up_done=false
on_exit() {
  $up_done && return
  log "start-up failed; stopping what was started"
  "$here/down.sh" >/dev/null 2>&1 || true
}
trap on_exit EXIT
# The real node's network (unreachable routes first) exists before any component starts.
if [ "$REAL_NODE" = 1 ]; then node_network_up; fi
# Ports: etcd client, etcd peer, apiserver, controller-manager, scheduler, kwok.
read -r P_ETCD P_PEER P_API P_KCM P_SCHED P_KWOK <<< "$(free_ports 6)"
for p in $P_ETCD $P_PEER $P_API $P_KCM $P_SCHED $P_KWOK; do
  port_in_use "$p" && fail "port $p on 127.0.0.1 is taken"
done

# ---- PKI ----------------------------------------------------------------------------------
pki="$RUN/pki"
log "making PKI in $pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
    -subj "/CN=kubectl-gitops-local-ca" 2>/dev/null
  cat > apiserver.ext <<EXT
subjectAltName = DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:10.96.0.1, IP:$NODE_HOST_IP
extendedKeyUsage = serverAuth
EXT
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile apiserver.ext 2>/dev/null
  # Client certificates: CN is the user, O the group (RBAC's bootstrap policy knows these users).
  client() {
    printf 'extendedKeyUsage = clientAuth\n' > "$1.ext"
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 30 -extfile "$1.ext" 2>/dev/null
  }
  client admin "/O=system:masters/CN=kubernetes-admin"
  client controller-manager "/CN=system:kube-controller-manager"
  client scheduler "/CN=system:kube-scheduler"
  client kwok "/O=system:masters/CN=kwok"
  if [ "$REAL_NODE" = 1 ]; then node_pki; fi
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
) || fail "openssl could not make the PKI"

kubeconfig_for() { # NAME -> writes $RUN/NAME.kubeconfig
  local user=$1
  cat > "$RUN/$user.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$P_API
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: kubectl-gitops-local
  context: {cluster: local, user: $user}
current-context: kubectl-gitops-local
KC
}
for u in admin controller-manager scheduler kwok; do kubeconfig_for "$u"; done
cp "$RUN/admin.kubeconfig" "$KUBECONFIG_OUT"
kc() { kubectl --kubeconfig "$KUBECONFIG_OUT" "$@"; }

# ---- etcd ---------------------------------------------------------------------------------
start etcd "$ETCD_BIN/etcd" --name local --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "local=http://127.0.0.1:$P_PEER" --unsafe-no-fsync --log-level warn \
  --quota-backend-bytes 4294967296
wait_until etcd "$READY_TIMEOUT" curl -fsS "http://127.0.0.1:$P_ETCD/health"

# ---- kube-apiserver -----------------------------------------------------------------------
api_node_flags=()
if [ "$REAL_NODE" = 1 ]; then
  # Pods reach the apiserver through the `kubernetes` Service at the node link's host address;
  # the apiserver reaches kubelets (logs, exec) at their InternalIP (a node name would go to the
  # host's resolver) with its own client certificate.
  api_node_flags=(--advertise-address "$NODE_HOST_IP"
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt"
    --kubelet-client-key "$pki/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types InternalIP)
fi
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$P_ETCD" \
  --bind-address 127.0.0.1 --secure-port "$P_API" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --allow-privileged \
  --max-requests-inflight 1000 --max-mutating-requests-inflight 500 \
  --profiling=false "${api_node_flags[@]}"
wait_until kube-apiserver "$READY_TIMEOUT" curl -fsS --cacert "$pki/ca.crt" \
  --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$P_API/readyz"

# ---- controller-manager and scheduler -----------------------------------------------------
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$P_KCM" \
  --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --kube-api-qps 500 --kube-api-burst 1000 \
  --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20
cat > "$RUN/scheduler.yaml" <<SCHED
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $RUN/scheduler.kubeconfig
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
SCHED
start kube-scheduler "$K8S_BIN/kube-scheduler" --config "$RUN/scheduler.yaml" \
  --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
  --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$P_SCHED"
wait_until kube-controller-manager "$READY_TIMEOUT" curl -fsSk "https://127.0.0.1:$P_KCM/healthz"
wait_until kube-scheduler "$READY_TIMEOUT" curl -fsSk "https://127.0.0.1:$P_SCHED/healthz"

# ---- kwok and fake nodes ------------------------------------------------------------------
if [ "$NODES" -gt 0 ]; then
start kwok "$KWOK_BIN/kwok" --kubeconfig "$RUN/kwok.kubeconfig" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.0.0.1/16 --node-ip 10.0.0.1 --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$P_KWOK"
wait_until kwok "$READY_TIMEOUT" curl -fsS "http://127.0.0.1:$P_KWOK/healthz"

for i in $(seq 0 $((NODES - 1))); do
  kc apply -f - > /dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "2000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "2000"}
NODE
done
kc wait --for=condition=Ready node -l type=kwok --timeout="${READY_TIMEOUT}s" > /dev/null \
  || fail "the fake nodes did not become Ready" kwok
fi
# The default ServiceAccount appears once the controller-manager's token controller runs.
wait_until kube-controller-manager "$READY_TIMEOUT" kc -n default get serviceaccount default

if [ "$REAL_NODE" = 1 ]; then node_up; fi

up_done=true
cat > "$RUN/ports.env" <<ENV
APISERVER_PORT=$P_API
ETCD_PORT=$P_ETCD
ENV
log "control plane up: apiserver https://127.0.0.1:$P_API ($K8S_VERSION), etcd $ETCD_VERSION, $NODES kwok nodes"
if [ "$REAL_NODE" = 1 ]; then log "real node $NODE_NAME up: pods on $NODE_POD_CIDR, registry $NODE_REGISTRY in netns $NODE_NETNS (images: $NODE_DIR/images.env)"; fi
log "kubeconfig: $KUBECONFIG_OUT   (export KUBECONFIG=$KUBECONFIG_OUT)"
echo "$KUBECONFIG_OUT"
