#!/usr/bin/env bash
# The main job of the README (`make demo`): the seed's story, end to end, with real containers.
# Builds the CLI, the reconciler's image and the example app's images (instavote: vote and
# redis, no container engine), starts the local control plane with a real node (containerd,
# kubelet, kube-proxy, CoreDNS and a registry, all on this machine; root only), pushes the images
# to the node's registry, and walks the story with `kubectl gitops`, echoing each command before
# running it: the reconciler runs as a Pod from its image (by digest) and manages itself from git,
# and the vote and redis containers follow the commits. It ends by fetching the vote page
# through its Service.
# On success the cluster stays up for you to explore (make cluster-down stops it); on failure or
# Ctrl-C everything the demo started is stopped. Without root, `make demo-fast` tells the story
# with the reconciler as a local process and fake nodes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/cluster/versions.sh
. tests/cluster/common.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GITOPS_CACHE_DIR/target}
. tests/demo-lib.sh

if [ "$(id -u)" != 0 ]; then
  echo "make demo runs a real node (network namespaces, cgroups, mounts) and needs root;" >&2
  echo "make demo-fast tells the same story with the reconciler as a local process and fake nodes." >&2
  exit 1
fi

work=$(mktemp -d /tmp/kubectl-gitops-demo-XXXXXX)
ok=0
cleanup() {
  local code=$?
  if [ "$ok" != 1 ]; then
    printf '\n%s✗ demo failed or interrupted (exit %s)%s\n' "$red" "$code" "$reset" >&2
    if [ -n "${KUBECONFIG:-}" ]; then
      echo "reconciler pods and their last log lines:" >&2
      kubectl -n gitops-system get pods -o wide >&2 2>&1 || true
      kubectl -n gitops-system logs deployment/gitops-reconciler --tail=20 >&2 2>&1 || true
      kubectl -n instavote get pods -o wide >&2 2>&1 || true
    fi
  fi
  # down.sh also stops the git server and its forwarder (recorded in the cluster's directory).
  if [ "$ok" != 1 ]; then bash tests/cluster/down.sh >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "setting up the machine and building the CLI (cargo build) and three images (no container engine)"
bash tests/setup.sh --demo
# Every Go build (the control plane, the node's kubelet, kube-proxy and CoreDNS, sops and age;
# cached by version) runs while cargo builds: on a fresh machine their downloads, links and
# serial tails overlap with cargo's. The node's build follows the control plane's, whose compiled
# packages it reuses.
bash tests/cluster/build.sh k8s etcd node coredns sops age > "$work/go-build.log" 2>&1 &
go_build=$!
# The dev profile, as the conformance tests build it (one static build to keep warm); build.sh
# also builds a static kubectl-gitops in the same cargo run, which the demo uses.
mkdir -p "$work/images"
GITOPS_IMAGE_PROFILE=dev bash kubectl-gitops/image/build.sh "$work/images" > "$work/images/reconciler.env"
cli=$(sed -n 's/^cli=//p' "$work/images/reconciler.env")
export PATH="${cli%/*}:$PATH"   # kubectl finds the plugin as `kubectl gitops`
bash tests/apps/build.sh "$work/images" > "$work/images/apps.env"
sed 's/^/  /' "$work/images/reconciler.env" "$work/images/apps.env"

wait "$go_build" || { cat "$work/go-build.log" >&2; echo "the Go builds (control plane, node, sops) failed" >&2; exit 1; }

say "starting the local control plane with a real node (containerd, kubelet, kube-proxy, CoreDNS, registry)"
bash tests/cluster/down.sh >/dev/null 2>&1 || true
KUBECONFIG=$(GITOPS_REAL_NODE=1 bash tests/cluster/up.sh)
export KUBECONFIG
run kubectl get nodes -o wide

say "pushing the images to the node's registry ($NODE_REGISTRY); pods reference them by digest"
field() { sed -n "s/^$2=//p" "$1"; }
reconciler_image=$(bash tests/cluster/push.sh "$(field "$work/images/reconciler.env" archive)" gitops-reconciler dev)
vote_image=$(bash tests/cluster/push.sh "$(field "$work/images/apps.env" vote_archive)" instavote/vote demo)
redis_image=$(bash tests/cluster/push.sh "$(field "$work/images/apps.env" redis_archive)" instavote/redis demo)
printf '  %s\n' "$reconciler_image" "$vote_image" "$redis_image"

say "a git server with the example app and an empty fleet repository (lighttpd + git-http-backend)"
demo_app "$work/app" "$vote_image" "$redis_image"
mkdir -p "$work/repos"
git_c clone -q --bare "$work/app" "$work/repos/instavote.git"
git -C "$work/repos/instavote.git" update-server-info
git_c init -q --bare "$work/repos/fleet.git"
# bootstrap pushes the cluster's manifests to the fleet repository over http.
git -C "$work/repos/fleet.git" config http.receivepack true
# The server and its forwarder are recorded in the cluster's directory: they outlive the demo
# (the sources keep syncing) and down.sh (make cluster-down) stops them, after a SIGKILL too.
local_url=$(bash tests/git/serve.sh http "$work/repos" "$RUN/git" | sed -n 's/^url=//p')
# Pods reach the server through the node link's host address ($NODE_HOST_IP is routed into the
# node's network namespace and nowhere else); socat forwards to the server on 127.0.0.1.
git_port=${local_url#http://127.0.0.1:}; git_port=${git_port%%/*}
start git-link socat "TCP-LISTEN:$git_port,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$git_port"
git_url=${local_url/127.0.0.1/$NODE_HOST_IP}
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/$NODE_HOST_IP/$git_port") 2>/dev/null && break; sleep 0.1; done
echo "serving ${git_url}instavote.git and ${git_url}fleet.git"

say "the story: the reconciler runs as a Pod from its image"
run kubectl gitops check --pre
run kubectl gitops install --image "$reconciler_image" --timeout 5m
run kubectl get pods -n gitops-system -o wide

say "bootstrap: the cluster manages itself (and the reconciler's own Deployment) from git"
run kubectl gitops bootstrap git --url "${git_url}fleet.git" --allow-insecure-http --branch main \
  --path clusters/demo --image "$reconciler_image" --timeout 5m
run kubectl gitops get kustomizations -n gitops-system

say "the app: a source, two Kustomizations, real vote and redis containers"
run kubectl create namespace instavote
demo_kustomizations "${git_url}instavote.git"
demo_follow_git "$work/repos/instavote.git"

say "the vote page, through the vote Service (NodePort 30000 on the node's address $NODE_IP)"
run curl -fsS --max-time 10 -d vote=a -o /dev/null -w '%{http_code} after a vote for a\n' "http://$NODE_IP:30000/vote"
run curl -fsS --max-time 10 "http://$NODE_IP:30000/"
page=$(curl -fsS --max-time 10 "http://$NODE_IP:30000/")
grep -q '<span id="count-a">[1-9]' <<< "$page" || { echo "the vote was not counted: $page" >&2; exit 1; }
running=$(kubectl get pods -n instavote -l app=vote --field-selector=status.phase=Running -o name | wc -l)
[ "$running" = 4 ] || { echo "expected 4 Running vote pods, found $running" >&2; exit 1; }

ok=1
printf '\n%s✔ demo complete:%s the reconciler runs as a Pod from %s,\n  instavote/vote runs %s real containers from commit %s, and a revision the policy denied was never applied.\n' \
  "$green" "$reset" "$reconciler_image" "$running" "$(git -C "$work/repos/instavote.git" rev-parse --short main)"
printf '  export KUBECONFIG=%s   # to look around; make cluster-down to stop the cluster\n' "$KUBECONFIG"
printf '  the git server (%s) keeps serving the sources until then\n' "$git_url"
