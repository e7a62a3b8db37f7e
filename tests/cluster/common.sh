# Shared helpers of the local control plane scripts. Sourced, not run.
. "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

K8S_BIN="$GITOPS_CACHE_DIR/bin/k8s-$K8S_VERSION"
ETCD_BIN="$GITOPS_CACHE_DIR/bin/etcd-$ETCD_VERSION"
KWOK_BIN="$GITOPS_CACHE_DIR/bin/kwok-$KWOK_VERSION"
RUN="$GITOPS_CLUSTER_DIR"
PIDS="$RUN/pids"
LOGS="$RUN/logs"
KUBECONFIG_OUT="$RUN/kubeconfig"

log() { printf '[cluster] %s\n' "$*" >&2; }

# fail MESSAGE [COMPONENT]: prints the message and, when given, the last lines of the
# component's log, then exits non-zero.
fail() {
  printf '[cluster] error: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -f "$LOGS/$2.log" ]; then
    printf '[cluster] last lines of %s:\n' "$LOGS/$2.log" >&2
    tail -n 25 "$LOGS/$2.log" | sed 's/^/    /' >&2
  fi
  exit 1
}

# start_time PID: the process start time in clock ticks since boot (field 22 of /proc/PID/stat),
# recorded with the PID so that `down` never signals a recycled PID.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # The command name (field 2) may contain spaces; strip through its closing parenthesis.
  stat=${stat##*) }
  # After stripping, field 3 (state) is first, so field 22 is the 20th.
  echo "$stat" | awk '{print $20}'
}

# is_ours NAME: true when the recorded process of NAME is alive and is the one we started.
is_ours() {
  local file="$PIDS/$1.pid" pid recorded now
  [ -f "$file" ] || return 1
  read -r pid recorded < "$file" || return 1
  [ -n "$pid" ] && [ -n "$recorded" ] || return 1
  now=$(start_time "$pid") || return 1
  [ "$now" = "$recorded" ]
}

port_in_use() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
PY
}

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# start NAME CMD...: runs CMD in the background, its output appended to $LOGS/NAME.log, and
# records its PID and start time.
start() {
  local name=$1; shift
  # The command line is kept so restart.sh can start the component again exactly so.
  mkdir -p "$RUN/argv"
  printf '%s\0' "$@" > "$RUN/argv/$name"
  "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  local pid=$!
  local st=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do st=$(start_time "$pid") && break; sleep 0.05; done
  [ -n "$st" ] || fail "$name exited immediately" "$name"
  echo "$pid $st" > "$PIDS/$name.pid"
  log "started $name (pid $pid)"
}

# wait_until NAME SECONDS CMD...: polls CMD until it succeeds; fails with the component's log.
wait_until() {
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    is_ours "$name" || fail "$name exited during start-up" "$name"
    [ $SECONDS -lt $deadline ] || fail "$name was not ready within ${seconds}s" "$name"
    sleep 0.5
  done
}

# stop_one NAME: stops the recorded process NAME (SIGTERM, then SIGKILL after 10 s); never a
# process that merely reuses its PID.
stop_one() {
  local name=$1 file="$PIDS/$1.pid" pid
  [ -f "$file" ] || return 0
  read -r pid _ < "$file" || true
  if is_ours "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do is_ours "$name" || break; sleep 0.2; done
    if is_ours "$name"; then
      log "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  else
    log "$name (pid $pid) is not running (or the PID now belongs to another process); leaving it alone"
  fi
  rm -f "$file"
}

# ---- the real node (GITOPS_REAL_NODE=1; tests/cluster/node.sh) -------------------------------
# One per machine: its network namespace, veth pair and address ranges are fixed here, and
# node.sh refuses to start a second one. Pods get addresses from POD_CIDR on a bridge inside the
# node's namespace; Services come from SERVICE_CIDR (the apiserver's range too).
NODE_NAME=gitops-node
# The label kubelet gives the node; tests look for it to find a real node.
NODE_LABEL=gitops.kubectl-gitops.io/real-node
NODE_NETNS=gitops-node
NODE_VETH_HOST=gitops-host
NODE_VETH_NODE=gitops-eth0
NODE_HOST_IP=10.254.0.1
NODE_IP=10.254.0.2
NODE_LINK_CIDR=10.254.0.0/30
POD_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_SERVICE_IP=10.96.0.10
# The image registry, on 127.0.0.1 inside the node's network namespace (where containerd pulls).
NODE_REGISTRY=127.0.0.1:5000
NODE_DIR="$RUN/node"
# Every process of the node (runtime, shims, kubelet, containers) lives under this cgroup, so
# that down.sh finds them all even after a SIGKILLed run.
NODE_CGROUP=gitops-node
NODE_PIDS_CGROUP=/sys/fs/cgroup/pids/$NODE_CGROUP
K8S_NODE_BIN="$GITOPS_CACHE_DIR/bin/k8s-node-$K8S_VERSION"
COREDNS_BIN="$GITOPS_CACHE_DIR/bin/coredns-$COREDNS_VERSION"

# in_node CMD...: runs CMD in the node's network namespace (the host's mounts and cgroups).
in_node() { nsenter --net="/run/netns/$NODE_NETNS" "$@"; }

# node_exec CMD...: becomes CMD in the node's network namespace and process cgroup (for start).
node_exec() {
  echo "$BASHPID" > "$NODE_PIDS_CGROUP/runtime/cgroup.procs"
  exec nsenter --net="/run/netns/$NODE_NETNS" "$@"
}
