# The parts of the seed's story both demos tell (tests/demo.sh on a real node, tests/demo-fast.sh
# with the reconciler as a local process and kwok's fake nodes). Sourced, not run; needs
# KUBECONFIG, `kubectl gitops` on PATH and $work.

bold=$'\033[1m'; green=$'\033[32m'; red=$'\033[31m'; reset=$'\033[0m'
if [ ! -t 1 ] || [ -n "${NO_COLOR:-}" ]; then bold=; green=; red=; reset=; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$bold" "$*" "$reset"; "$@"; }
git_c() { git -c user.name=demo -c user.email=demo@example.com -c init.defaultBranch=main "$@"; }

# demo_app DIR VOTE_IMAGE REDIS_IMAGE: the example app (instavote) in DIR/deploy/{vote,redis}.
# vote listens on 8080 and is ready once redis answers (its /healthz pings redis); its Service
# is a NodePort (30000). Both meet the restricted Pod Security Standard.
demo_app() {
  local dir=$1 vote_image=$2 redis_image=$3
  mkdir -p "$dir/deploy/vote" "$dir/deploy/redis"
  local restricted='      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}'
  local container_restricted='        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}'
  cat > "$dir/deploy/vote/vote-deployment.yaml" <<YAML
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
$restricted
      containers:
      - name: vote
        image: $vote_image
        env:
        - {name: REDIS, value: "redis:6379"}
        - name: REDIS_PASSWORD
          valueFrom: {secretKeyRef: {name: redis-auth, key: password}}
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 2
$container_restricted
YAML
  cat > "$dir/deploy/vote/vote-service.yaml" <<'YAML'
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
    targetPort: 8080
    nodePort: 30000
YAML
  cat > "$dir/deploy/redis/redis-deployment.yaml" <<YAML
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
$restricted
      containers:
      - name: redis
        image: $redis_image
        # The image's own arguments, plus the password from the Secret the reconciler decrypted.
        args: [--bind, 0.0.0.0, --protected-mode, "no", --save, "", --appendonly, "no", --dir, /data,
               --requirepass, \$(REDIS_PASSWORD)]
        env:
        - name: REDIS_PASSWORD
          valueFrom: {secretKeyRef: {name: redis-auth, key: password}}
        ports:
        - containerPort: 6379
        readinessProbe:
          tcpSocket: {port: 6379}
          periodSeconds: 2
$container_restricted
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - {name: data, emptyDir: {}}
YAML
  cat > "$dir/deploy/redis/redis-service.yaml" <<'YAML'
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
  # redis's password is in git encrypted with SOPS for the demo's age key ($work/age.agekey,
  # never committed): only the reconciler, given the key as a Secret, decrypts it (in memory).
  "$AGE_BIN_DIR/age-keygen" -o "$work/age.agekey" 2>/dev/null
  head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$work/redis-password"
  cat > "$dir/deploy/redis/redis-auth.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: redis-auth
type: Opaque
stringData:
  password: $(cat "$work/redis-password")
YAML
  "$SOPS_BIN" --encrypt --age "$("$AGE_BIN_DIR/age-keygen" -y "$work/age.agekey")" \
    --encrypted-regex '^(data|stringData)$' --in-place "$dir/deploy/redis/redis-auth.yaml"
  git_c -C "$dir" init -q
  git_c -C "$dir" add .
  git_c -C "$dir" commit -qm "instavote: vote and redis"
}

# demo_kustomizations SOURCE-URL: the source and the two Kustomizations of the story.
demo_kustomizations() {
  run kubectl gitops create source git instavote --url "$1" --insecure --branch main --interval 30s --timeout 2m
  run kubectl gitops get sources git
  say "redis's password is SOPS-encrypted in git: the reconciler gets the age key as a Secret"
  run grep -A2 '^stringData' "$work/app/deploy/redis/redis-auth.yaml"
  run kubectl gitops create secret age sops-age --age-key-file "$work/age.agekey"
  run kubectl gitops create kustomization redis-dev --source=instavote --path=./deploy/redis \
    --interval=1m --target-namespace=instavote --prune --wait --timeout 3m \
    --decryption-provider sops --decryption-secret sops-age
  local applied
  applied=$(kubectl get secret redis-auth -n instavote -o jsonpath='{.data.password}' | base64 -d)
  [ "$applied" = "$(cat "$work/redis-password")" ] || { echo "the Secret redis-auth does not hold the decrypted password" >&2; return 1; }
  echo "the Secret instavote/redis-auth holds the decrypted password (not printed); redis and vote read it"
  # replica-bounds is a WebAssembly policy shipped with the reconciler: here it denies any
  # revision that asks for fewer than 1 or more than 6 vote replicas.
  run kubectl gitops create kustomization vote-dev --source=instavote --path=./deploy/vote \
    --interval=1m --target-namespace=instavote --prune --wait --timeout 3m \
    --policy 'builtin:replica-bounds:{"bounds":{"Deployment":{"min":1,"max":6}},"action":"deny"}'
  run kubectl get deployments,services,pods -n instavote
}

# demo_follow_git BARE-REPO: commits 4 replicas (followed), 50 (denied by the policy), and the
# revert (Ready again), each reconciled at once.
demo_follow_git() {
  local bare=$1 clone="$work/clone" replicas
  git_c clone -q "$bare" "$clone"
  commit() { git_c -C "$clone" commit -qam "$1"; git -C "$clone" push -q origin main; git -C "$bare" update-server-info; }

  say "a commit changes vote's replicas from 2 to 4; the cluster follows"
  sed -i 's/replicas: 2/replicas: 4/' "$clone/deploy/vote/vote-deployment.yaml"
  commit "vote: 4 replicas"
  run kubectl gitops reconcile kustomization vote-dev --with-source --timeout 3m
  replicas=$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')
  [ "$replicas" = 4 ] || { echo "the cluster did not follow the commit: replicas=$replicas" >&2; return 1; }
  run kubectl wait --for=jsonpath='{.status.readyReplicas}'=4 deployment/vote -n instavote --timeout=180s
  run kubectl get pods -n instavote -o wide

  say "a commit asks for 50 replicas: the replica-bounds policy denies the revision, nothing is applied"
  sed -i 's/replicas: 4/replicas: 50/' "$clone/deploy/vote/vote-deployment.yaml"
  commit "vote: 50 replicas"
  printf '%s$ %s%s\n' "$bold" "kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m   # expected to fail" "$reset"
  if kubectl gitops reconcile kustomization vote-dev --with-source --timeout 2m; then
    echo "the policy did not deny 50 replicas" >&2; return 1
  fi
  replicas=$(kubectl get deployment vote -n instavote -o jsonpath='{.spec.replicas}')
  [ "$replicas" = 4 ] || { echo "a denied revision changed the cluster: replicas=$replicas" >&2; return 1; }
  run kubectl gitops get kustomizations

  say "reverting the commit in git brings vote-dev back to Ready"
  git_c -C "$clone" revert --no-edit HEAD >/dev/null
  git -C "$clone" push -q origin main
  git -C "$bare" update-server-info
  run kubectl gitops reconcile kustomization vote-dev --with-source --timeout 3m
  run kubectl gitops get kustomizations
  run kubectl gitops tree kustomization vote-dev
  run kubectl gitops trace deployment/vote -n instavote
}
