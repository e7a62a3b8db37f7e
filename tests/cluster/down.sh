#!/usr/bin/env bash
# Stops exactly the processes `up.sh` started (recorded PID + process start time; never by name).
# Idempotent: running it with nothing up, or twice, is fine. Keeps logs; removes state with --purge.
set -euo pipefail
. "$(dirname "$0")/common.sh"

purge=false
[ "${1:-}" = "--purge" ] && purge=true

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

if [ -d "$PIDS" ]; then
  # Reverse start order: clients first, etcd last.
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_one "$name"
  done
fi
if $purge; then rm -rf "$RUN"; log "removed $RUN"; fi
log "down"
