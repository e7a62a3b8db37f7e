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
