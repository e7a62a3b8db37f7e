#!/usr/bin/env bash
# Restarts one component of the running local control plane with the command line up.sh gave
# it, the way a crash and a supervisor restart would (fault-injection tests use it):
#   tests/cluster/restart.sh COMPONENT [--kill] [--down-for SECONDS]
# COMPONENT is one of etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, and
# with a real node apiserver-link, registry, containerd, kubelet, kube-proxy.
# --kill sends SIGKILL instead of SIGTERM; --down-for keeps it stopped that long first.
# Returns once the component runs again (for kube-apiserver: once /readyz answers ok).
set -euo pipefail
. "$(dirname "$0")/common.sh"

name=${1:?usage: restart.sh COMPONENT [--kill] [--down-for SECONDS]}
shift
signal=TERM down_for=0
while [ $# -gt 0 ]; do
  case $1 in
    --kill) signal=KILL ;;
    --down-for) down_for=${2:?--down-for needs seconds}; shift ;;
    *) fail "unknown argument $1" ;;
  esac
  shift
done
[ -f "$RUN/argv/$name" ] || fail "no recorded command line for $name in $RUN (is the control plane up, started by this checkout's up.sh?)"
is_ours "$name" || fail "$name is not running in $RUN"

read -r pid _ < "$PIDS/$name.pid"
kill "-$signal" "$pid"
for _ in $(seq 1 100); do is_ours "$name" || break; sleep 0.1; done
is_ours "$name" && fail "$name (pid $pid) did not stop on SIG$signal" "$name"
log "stopped $name (pid $pid, SIG$signal)"
sleep "$down_for"

mapfile -d '' -t argv < "$RUN/argv/$name"
start "$name" "${argv[@]}"
if [ "$name" = kube-apiserver ]; then
  wait_until kube-apiserver "${READY_TIMEOUT:-60}" kubectl --kubeconfig "$KUBECONFIG_OUT" get --raw /readyz
fi
log "$name is running again"
