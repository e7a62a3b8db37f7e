# The real node of the local cluster: containerd + runc + CNI bridge, kubelet, kube-proxy, an OCI
# registry and CoreDNS, all inside one network namespace of this machine. Sourced by up.sh
# (GITOPS_REAL_NODE=1) and down.sh, after common.sh.
#
# Network: the namespace $NODE_NETNS is joined to the host by the veth pair $NODE_VETH_HOST
# ($NODE_HOST_IP) / $NODE_VETH_NODE ($NODE_IP). It has no default route: pods (bridge cni0,
# $NODE_POD_CIDR) and Services (kube-proxy's iptables rules, which live in the namespace too) reach
# only each other, the registry on the namespace's 127.0.0.1, and $NODE_HOST_IP, where a socat
# forwards the apiserver port to the apiserver on the host's 127.0.0.1 (the apiserver advertises
# $NODE_HOST_IP, so in-cluster clients reach it through the `kubernetes` Service). On the host,
# `unreachable` routes cover $POD_CIDR and $SERVICE_CIDR before anything starts; only
# $NODE_POD_CIDR is routed, into the namespace.
#
# Cleanup: every change to the host is appended to $NODE_DIR/made before it is made, and
# node_down undoes exactly those lines in reverse, so it works after a SIGKILLed up.sh too.

NODE_MADE="$NODE_DIR/made"

# made LINE: records one host change (undone by node_down).
made() { mkdir -p "$NODE_DIR"; echo "$*" >> "$NODE_MADE"; }

node_check_host() {
  local missing=() c
  for c in containerd containerd-shim-runc-v2 runc docker-registry skopeo socat nsenter conntrack ip iptables cc; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  for c in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap /bin/busybox; do
    [ -e "$c" ] || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] || fail "the real node needs ${missing[*]} (tests/setup.d/70-node.sh installs them: bash tests/setup.sh)"
  [ "$(id -u)" = 0 ] || fail "the real node needs root (network namespaces, cgroups, mounts)"
  [ -d /sys/fs/cgroup/pids ] || fail "the real node expects cgroup v1 with the pids controller at /sys/fs/cgroup/pids"
  if [ -e "/run/netns/$NODE_NETNS" ]; then
    fail "network namespace $NODE_NETNS exists: another real node runs on this machine (stop it with its down.sh)"
  fi
}

# ---- host network, before any component starts ----------------------------------------------
node_network_up() {
  node_check_host
  mkdir -p "$NODE_DIR"
  # Unreachable first: from here on nothing to these ranges can leave the machine.
  made "route unreachable $POD_CIDR"
  ip route add unreachable "$POD_CIDR"
  made "route unreachable $SERVICE_CIDR"
  ip route add unreachable "$SERVICE_CIDR"
  made "netns $NODE_NETNS"
  ip netns add "$NODE_NETNS"
  # The host end of the pair is deleted with the namespace (its peer lives there).
  ip link add "$NODE_VETH_HOST" type veth peer name "$NODE_VETH_NODE" netns "$NODE_NETNS"
  ip addr add "$NODE_HOST_IP/30" dev "$NODE_VETH_HOST"
  ip link set "$NODE_VETH_HOST" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/30" dev "$NODE_VETH_NODE"
  in_node ip link set "$NODE_VETH_NODE" up
  made "route $NODE_POD_CIDR"
  ip route add "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_VETH_HOST"
  # Inside the namespace: forwarding between pods, bridged traffic through iptables (kube-proxy),
  # and no route but the link, the bridge and an explicit unreachable for everything else.
  in_node sysctl -qw net.ipv4.ip_forward=1
  modprobe br_netfilter 2>/dev/null || true
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1
  in_node ip route add unreachable default
  # The process cgroup (pids hierarchy) and kubelet's cgroup root in every hierarchy (runc also
  # mirrors its cgroups into the unified one of a hybrid host).
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -e "$h/cgroup.procs" ] || continue
    made "cgroup $h/$NODE_CGROUP"
    mkdir -p "$h/$NODE_CGROUP/pods"
    if [ "${h##*/}" = cpuset ]; then
      local d
      for d in "$h/$NODE_CGROUP" "$h/$NODE_CGROUP/pods"; do
        cat "$h/cpuset.cpus" > "$d/cpuset.cpus"
        cat "$h/cpuset.mems" > "$d/cpuset.mems"
      done
    fi
  done
  mkdir -p "$NODE_PIDS_CGROUP/runtime"
}

# ---- PKI additions (run inside up.sh's PKI subshell, in $pki) --------------------------------
node_pki() {
  client kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  client kube-proxy "/CN=system:kube-proxy"
  client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
}

# node_push ARCHIVE REPO TAG: copies an OCI archive into the node's registry; prints the
# reference by digest (REGISTRY/REPO@sha256:...).
node_push() {
  local archive=$1 repo=$2 tag=$3 digestfile
  digestfile=$(mktemp)
  in_node skopeo --insecure-policy copy --quiet --dest-tls-verify=false --digestfile "$digestfile" \
    "oci-archive:$archive" "docker://$NODE_REGISTRY/$repo:$tag" >&2 \
    || { rm -f "$digestfile"; fail "skopeo could not push $archive to $NODE_REGISTRY/$repo:$tag" registry; }
  echo "$NODE_REGISTRY/$repo@$(cat "$digestfile")"
  rm -f "$digestfile"
}

# node_build_images: the pause, busybox and coredns images, pushed; writes $NODE_DIR/images.env.
node_build_images() {
  local img="$NODE_DIR/images" pack="$here/../../kubectl-gitops/image/pack.py"
  mkdir -p "$img"
  cc -static -Os -o "$img/pause" "$here/node/pause.c" || fail "cc could not build the pause program"
  python3 "$pack" --out "$img/pause.oci.tar" --name "$NODE_REGISTRY/pause" --tag 3.10 \
    --entrypoint /pause --user 65535:65535 "file:pause:755:$img/pause" > /dev/null
  python3 "$pack" --out "$img/busybox.oci.tar" --name "$NODE_REGISTRY/busybox" --tag 1.35 \
    --entrypoint /bin/busybox --user 65532:65532 --env PATH=/bin \
    dir:bin:755 file:bin/busybox:755:/bin/busybox link:bin/sh:busybox dir:tmp:1777 \
    'text:etc/passwd:644:root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\n' > /dev/null
  # CoreDNS's archive (50 MB to compress) is kept next to its cached binary.
  local coredns_archive="$COREDNS_BIN/coredns.oci.tar"
  [ -f "$coredns_archive" ] || python3 "$pack" --out "$coredns_archive" --name "$NODE_REGISTRY/coredns" \
    --tag "$COREDNS_VERSION" --entrypoint /coredns --user 65532:65532 --port 1053 \
    "file:coredns:755:$COREDNS_BIN/coredns" > /dev/null
  {
    echo "PAUSE_IMAGE=$(node_push "$img/pause.oci.tar" pause 3.10)"
    echo "BUSYBOX_IMAGE=$(node_push "$img/busybox.oci.tar" busybox 1.35)"
    echo "COREDNS_IMAGE=$(node_push "$coredns_archive" coredns "$COREDNS_VERSION")"
  } > "$NODE_DIR/images.env.tmp"
  mv "$NODE_DIR/images.env.tmp" "$NODE_DIR/images.env"
}

node_kubeconfig() { # USER SERVER -> $RUN/USER.kubeconfig (like up.sh's, another server)
  local user=$1 server=$2
  kubeconfig_for "$user"
  sed -i "s|server: .*|server: $server|" "$RUN/$user.kubeconfig"
}

# ---- the node's components, once the control plane runs ------------------------------------
node_up() {
  local api="https://$NODE_HOST_IP:$P_API"
  start apiserver-link socat "TCP-LISTEN:$P_API,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$P_API"
  node_kubeconfig kubelet "$api"
  node_kubeconfig kube-proxy "$api"
  node_registry_up
  node_runtime_up
  node_kubelet_up
  node_dns_up
}

# The registry (distribution 2.8, Debian's docker-registry) and the node's own images.
node_registry_up() {
  mkdir -p "$NODE_DIR/registry"
  cat > "$NODE_DIR/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $NODE_DIR/registry}
  delete: {enabled: true}
http: {addr: $NODE_REGISTRY}
YML
  start registry node_exec docker-registry serve "$NODE_DIR/registry.yml"
  wait_until registry "$READY_TIMEOUT" in_node curl -fsS "http://$NODE_REGISTRY/v2/"
  node_build_images
}

# containerd (Debian's 1.6) with runc and the CNI plugins of containernetworking-plugins.
node_runtime_up() {
  # shellcheck source=/dev/null
  . "$NODE_DIR/images.env"
  local ctrd="$NODE_DIR/containerd"
  mkdir -p "$ctrd/root" "$ctrd/state" "$ctrd/runc" "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
  # runc sets each container's oom_score_adj (-998 for sandboxes); lowering it needs
  # CAP_SYS_RESOURCE, which some sandboxed hosts (this project's CI VM) withhold even from root:
  # runc then fails with "can't get final child's PID from pipe". Without the capability,
  # containerd clamps the scores to its own (restrict_oom_score_adj).
  local restrict_oom=false cap_eff
  cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (( (16#$cap_eff >> 24) & 1 )) || restrict_oom=true
  cat > "$NODE_DIR/cni/net.d/10-gitops.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "gitops",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
              "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  cat > "$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$ctrd/containerd.sock"
[ttrpc]
  address = "$ctrd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_unprivileged_ports = false
  restrict_oom_score_adj = $restrict_oom
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
        Root = "$ctrd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$NODE_REGISTRY"]
    endpoint = ["http://$NODE_REGISTRY"]
TOML
  start containerd node_exec containerd --config "$ctrd/config.toml" --log-level warn
  wait_until containerd "$READY_TIMEOUT" ctr --address "$ctrd/containerd.sock" version
}

# kubelet (cgroupfs driver on cgroup v1, which kubelet 1.34 still supports with a warning) and
# kube-proxy (iptables mode, its rules inside the node's network namespace).
node_kubelet_up() {
  local kl="$NODE_DIR/kubelet" ctrd="$NODE_DIR/containerd"
  mkdir -p "$kl/root"
  : > "$kl/resolv.conf" # pods with dnsPolicy Default get no upstream resolver: nothing leaves the machine
  cat > "$kl/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$ctrd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP/pods
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: $kl/resolv.conf
podCIDR: $NODE_POD_CIDR
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 0s
staticPodPath: ""
YAML
  start kubelet node_exec "$K8S_NODE_BIN/kubelet" --config "$kl/config.yaml" \
    --kubeconfig "$RUN/kubelet.kubeconfig" --root-dir "$kl/root" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "$NODE_LABEL=true" -v 1
  wait_until kubelet "$READY_TIMEOUT" in_node curl -fsS http://127.0.0.1:10248/healthz

  cat > "$NODE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# Leave the host-wide conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start kube-proxy node_exec "$K8S_NODE_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml" -v 1
  wait_until kube-proxy "$READY_TIMEOUT" in_node curl -fsS http://127.0.0.1:10256/healthz

  wait_until kubelet "$READY_TIMEOUT" kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

# CoreDNS as a Deployment behind the kube-dns Service.
node_dns_up() {
  # shellcheck source=/dev/null
  . "$NODE_DIR/images.env"
  sed -e "s|@IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|" "$here/node/coredns.yaml" \
    | kc apply -f - > /dev/null
  kc -n kube-system rollout status deployment/coredns --timeout="${READY_TIMEOUT}s" >&2 \
    || fail "CoreDNS did not become ready on $NODE_NAME" kubelet
}

# ---- stop and remove what node_network_up and node_up made ----------------------------------
# kill_cgroup DIR: SIGKILLs every process in the pids cgroup DIR and below until none is left.
kill_cgroup() {
  local dir=$1 pids
  [ -d "$dir" ] || return 0
  for _ in $(seq 1 50); do
    pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  log "processes left in $dir: $pids"
}

# umount_under DIR: unmounts every mount point below DIR, deepest first.
umount_under() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

# remove_shim_sockets: containerd 1.6 puts each shim's socket in /run/containerd/s (fixed), named
# sha256(<containerd address>/<namespace>/<task id>); a SIGKILLed shim leaves it behind. The task
# IDs are the bundle directories in the node's containerd state, so exactly ours are removed.
remove_shim_sockets() {
  local ctrd="$NODE_DIR/containerd" bundle id
  for bundle in "$ctrd"/state/io.containerd.runtime.v2.task/*/*/; do
    [ -d "$bundle" ] || continue
    bundle=${bundle%/}
    id=${bundle##*/}
    bundle=${bundle%/*}
    rm -f "/run/containerd/s/$(printf '%s' "$ctrd/containerd.sock/${bundle##*/}/$id" | sha256sum | cut -c1-64)"
  done
}

node_down() {
  [ -f "$NODE_MADE" ] || return 0
  # Processes: the recorded ones gracefully (containers stop with kubelet gone), then everything
  # left in the node's cgroup (shims and containers) by force.
  local name
  for name in kube-proxy kubelet containerd registry apiserver-link; do stop_one "$name"; done
  kill_cgroup "$NODE_PIDS_CGROUP"
  remove_shim_sockets
  umount_under "$NODE_DIR"
  # Undo the recorded host changes, newest first.
  local line
  tac "$NODE_MADE" | while read -r line; do
    case $line in
      "route unreachable "*) ip route del unreachable "${line#route unreachable }" 2>/dev/null || true ;;
      "route "*) ip route del "${line#route }" 2>/dev/null || true ;;
      "netns "*) ip netns del "${line#netns }" 2>/dev/null || true ;;
      "cgroup "*)
        # Children first; a cgroup directory goes away with rmdir once it has no processes.
        find "${line#cgroup }" -depth -type d -exec rmdir {} + 2>/dev/null || true
        if [ -d "${line#cgroup }" ]; then log "cgroup ${line#cgroup } could not be removed"; fi
        ;;
      *) log "unknown entry in $NODE_MADE: $line" ;;
    esac
  done
  rm -f "$NODE_MADE"
  log "real node removed (network namespace, routes, cgroups, mounts)"
}
