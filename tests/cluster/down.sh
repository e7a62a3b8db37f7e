#!/usr/bin/env bash
# Stops exactly the processes `up.sh` started (recorded PID + process start time; never by name),
# and removes the real node's network namespace, routes, cgroups and mounts when up.sh made one
# (node.sh records each change before making it, so this also cleans up after a SIGKILLed up.sh).
# Idempotent: running it with nothing up, or twice, is fine. Keeps logs; removes state with --purge.
set -euo pipefail
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/node.sh"

purge=false
[ "${1:-}" = "--purge" ] && purge=true

# A git server the demo (tests/demo.sh) left running for the cluster's sources, and its
# forwarder into the node's network: recorded in the cluster's directory, stopped here.
[ -f "$RUN/git/pids" ] && bash "$(dirname "$0")/../git/stop.sh" "$RUN/git" --keep
[ -d "$PIDS" ] && stop_one git-link
# The node first: its kubelet and kube-proxy are clients of the control plane.
node_down
if [ -d "$PIDS" ]; then
  # Reverse start order: clients first, etcd last.
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_one "$name"
  done
fi
if $purge; then rm -rf "$RUN"; log "removed $RUN"; fi
log "down"
