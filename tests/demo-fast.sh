#!/usr/bin/env bash
# The seed's story in its quick form (`make demo-fast`): the reconciler runs as a local process and
# the pods on kwok's fake nodes (scheduled and reported Running, nothing runs), so it needs no root
# and no container runtime. `make demo` (tests/demo.sh) tells the story with real containers.
# Builds everything, starts the local control plane and a real git server holding the example
# app (instavote: deploy/vote and deploy/redis), runs the reconciler against the cluster, and
# walks the story with `kubectl gitops`, echoing each command before running it.
# On success the cluster stays up for you to explore (make cluster-down stops it); on failure
# or Ctrl-C everything the demo started is stopped.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}

. tests/demo-lib.sh

work=$(mktemp -d /tmp/kubectl-gitops-demo-XXXXXX)
reconciler_pid=""
git_run="$work/git-server"
ok=0
cleanup() {
  local code=$?
  # `wait` returns the killed process's status: a failure here must not end the clean-up (errexit).
  [ -n "$reconciler_pid" ] && kill "$reconciler_pid" 2>/dev/null && { wait "$reconciler_pid" 2>/dev/null || true; }
  [ -f "$git_run/pids" ] && bash tests/git/stop.sh "$git_run" >/dev/null 2>&1
  if [ "$ok" != 1 ]; then
    printf '\n%s✗ demo failed or interrupted (exit %s)%s; reconciler log: %s\n' "$red" "$code" "$reset" "$work/reconciler.log" >&2
    [ -f "$work/reconciler.log" ] && tail -n 20 "$work/reconciler.log" >&2
    bash tests/cluster/down.sh >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "setting up the machine and building (cargo build)"
bash tests/setup.sh
cargo build --quiet -p kubectl-gitops -p gitops-reconciler
export PATH="$CARGO_TARGET_DIR/debug:$PATH"   # kubectl finds the plugin as `kubectl gitops`

say "starting the local control plane (real kube-apiserver, etcd, controller-manager, scheduler, kwok nodes)"
bash tests/cluster/down.sh >/dev/null 2>&1 || true
KUBECONFIG=$(bash tests/cluster/up.sh)
export KUBECONFIG

say "a git server with the example app (lighttpd + git-http-backend on 127.0.0.1)"
# kwok's nodes pull nothing: the image names only have to be valid.
demo_app "$work/app" instavote/vote:demo instavote/redis:demo
mkdir -p "$work/repos"
git_c clone -q --bare "$work/app" "$work/repos/instavote.git"
git -C "$work/repos/instavote.git" update-server-info
git_url=$(bash tests/git/serve.sh http "$work/repos" "$git_run" | sed -n 's/^url=//p')instavote.git
echo "serving $git_url"

say "the story"
run kubectl gitops check --pre
run kubectl gitops install --crds-only
run kubectl create namespace gitops-system
run kubectl create namespace instavote
say "the reconciler runs as a local process against the cluster (kwok nodes cannot run its image)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
storage_port=$(port)
gitops-reconciler --storage-path "$work/storage" --storage-addr "127.0.0.1:$storage_port" \
  --storage-adv-addr "127.0.0.1:$storage_port" --metrics-addr "127.0.0.1:$(port)" \
  --health-addr "127.0.0.1:$(port)" --receiver-addr "127.0.0.1:$(port)" --log-format text > "$work/reconciler.log" 2>&1 &
reconciler_pid=$!

say "the story goes on: a source, two Kustomizations"
demo_kustomizations "$git_url"
demo_follow_git "$work/repos/instavote.git"

ok=1
printf '\n%s✔ demo complete:%s the cluster follows git: instavote/vote runs %s replicas from commit %s, and a\n  revision the policy denied was never applied.\n' \
  "$green" "$reset" "$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')" \
  "$(git -C "$work/repos/instavote.git" rev-parse --short main)"
printf '  export KUBECONFIG=%s   # to look around; make cluster-down to stop the cluster\n' "$KUBECONFIG"
