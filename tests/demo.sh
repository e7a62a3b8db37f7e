#!/usr/bin/env bash
# The main job of the README (`make demo`): the seed's story, end to end, on this machine.
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

bold=$'\033[1m'; green=$'\033[32m'; red=$'\033[31m'; reset=$'\033[0m'
if [ ! -t 1 ] || [ -n "${NO_COLOR:-}" ]; then bold=; green=; red=; reset=; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$bold" "$*" "$reset"; "$@"; }

work=$(mktemp -d /tmp/kubectl-gitops-demo-XXXXXX)
reconciler_pid=""
git_run="$work/git-server"
ok=0
cleanup() {
  local code=$?
  [ -n "$reconciler_pid" ] && kill "$reconciler_pid" 2>/dev/null && wait "$reconciler_pid" 2>/dev/null
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
mkdir -p "$work/repos" "$work/app/deploy/vote" "$work/app/deploy/redis"
cat > "$work/app/deploy/vote/vote-deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vote
  labels: {app: vote}
spec:
  replicas: 2
  selector:
    matchLabels: {app: vote}
  template:
    metadata:
      labels: {app: vote}
    spec:
      containers:
      - name: vote
        image: schooldevops/vote:v1
        ports:
        - containerPort: 80
YAML
cat > "$work/app/deploy/vote/vote-service.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: vote
  labels: {app: vote}
spec:
  type: NodePort
  selector: {app: vote}
  ports:
  - port: 80
    targetPort: 80
    nodePort: 30000
YAML
cat > "$work/app/deploy/redis/redis-deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
  labels: {app: redis}
spec:
  replicas: 1
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - containerPort: 6379
YAML
cat > "$work/app/deploy/redis/redis-service.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: redis
  labels: {app: redis}
spec:
  type: ClusterIP
  selector: {app: redis}
  ports:
  - port: 6379
    targetPort: 6379
YAML
git_c() { git -c user.name=demo -c user.email=demo@example.com -c init.defaultBranch=main "$@"; }
git_c -C "$work/app" init -q
git_c -C "$work/app" add .
git_c -C "$work/app" commit -qm "instavote: vote and redis"
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
  --health-addr "127.0.0.1:$(port)" --log-format text > "$work/reconciler.log" 2>&1 &
reconciler_pid=$!

say "the story goes on: a source, two Kustomizations"
run kubectl gitops create source git instavote --url "$git_url" --insecure --branch main --interval 30s --timeout 2m
run kubectl gitops get sources git
# replica-bounds is a WebAssembly policy shipped with the reconciler: here it denies any revision
# that asks for fewer than 1 or more than 6 vote replicas.
run kubectl gitops create kustomization vote-dev --source=instavote --path=./deploy/vote \
  --interval=1m --target-namespace=instavote --prune --timeout 2m \
  --policy 'builtin:replica-bounds:{"bounds":{"Deployment":{"min":1,"max":6}},"action":"deny"}'
run kubectl gitops create kustomization redis-dev --source=instavote --path=./deploy/redis \
  --interval=1m --target-namespace=instavote --prune --wait --timeout 2m
run kubectl get deployments,services,pods -n instavote

say "a commit changes vote's replicas from 2 to 4; the cluster follows"
git_c clone -q "$work/repos/instavote.git" "$work/clone"
commit() { git_c -C "$work/clone" commit -qam "$1"; git -C "$work/clone" push -q origin main; git -C "$work/repos/instavote.git" update-server-info; }
sed -i 's/replicas: 2/replicas: 4/' "$work/clone/deploy/vote/vote-deployment.yaml"
commit "vote: 4 replicas"
run kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m
replicas=$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')
[ "$replicas" = 4 ] || { echo "the cluster did not follow the commit: replicas=$replicas" >&2; exit 1; }
run kubectl wait --for=jsonpath='{.status.availableReplicas}'=4 deployment/vote -n instavote --timeout=120s
run kubectl get pods -n instavote

say "a commit asks for 50 replicas: the replica-bounds policy denies the revision, nothing is applied"
sed -i 's/replicas: 4/replicas: 50/' "$work/clone/deploy/vote/vote-deployment.yaml"
commit "vote: 50 replicas"
printf '%s$ %s%s\n' "$bold" "kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m   # expected to fail" "$reset"
if kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m; then
  echo "the policy did not deny 50 replicas" >&2; exit 1
fi
replicas=$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')
[ "$replicas" = 4 ] || { echo "a denied revision changed the cluster: replicas=$replicas" >&2; exit 1; }
run kubectl gitops get kustomizations

say "reverting the commit in git brings vote-dev back to Ready"
git_c -C "$work/clone" revert --no-edit HEAD >/dev/null
git -C "$work/clone" push -q origin main
git -C "$work/repos/instavote.git" update-server-info
run kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m
run kubectl gitops get kustomizations
run kubectl gitops tree kustomization vote-dev
run kubectl gitops trace deployment/vote -n instavote

ok=1
printf '\n%s✔ demo complete:%s the cluster follows git: instavote/vote runs %s replicas from commit %s, and a\n  revision the policy denied was never applied.\n' \
  "$green" "$reset" "$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')" \
  "$(git -C "$work/repos/instavote.git" rev-parse --short main)"
printf '  export KUBECONFIG=%s   # to look around; make cluster-down to stop the cluster\n' "$KUBECONFIG"
