//! The git side of the Receiver tests: a bare repository on the project's git server whose
//! post-receive hook sends what GitHub or GitLab sends for a push (documented headers, HMAC over
//! the raw body) with curl to a URL, the token and manifests those tests share, and percentiles.
//! Nothing here runs the reconciler: the in-process test (`notify_receiver.rs`), the bench and the
//! real-node test (`node_receiver.rs`, through the `webhook-receiver` Service) all use it.
#![allow(dead_code)] // each includer uses a different subset

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gitops_conformance::git::{GitServer, Repo, git};
use gitops_reconciler::api::conditions::meta;
use gitops_reconciler::api::{GitRepository, Kustomization};

/// The webhook token of every Receiver here.
pub const TOKEN: &str = "receiver-token-7c1f3e9a";

/// Creates Secret `webhook-token` (key `token` = [`TOKEN`]) in `namespace`.
pub fn create_token_secret(namespace: &str) {
    gitops_conformance::kubectl_ok(
        &[
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            "webhook-token",
            &format!("--from-literal=token={TOKEN}"),
        ],
        None,
    );
}

/// The one object of the pushed tree: ConfigMap `pushed` with `data.n`.
pub fn config_map(n: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pushed\ndata:\n  n: \"{n}\"\n")
}

/// `data.n` of ConfigMap `pushed` in `namespace`: which push the cluster runs.
pub fn pushed_n(namespace: &str) -> String {
    gitops_conformance::kubectl_ok(
        &[
            "-n",
            namespace,
            "get",
            "configmap",
            "pushed",
            "-o",
            "jsonpath={.data.n}",
        ],
        None,
    )
    .trim()
    .to_owned()
}

/// The deliveries [`install_hook`]'s hooks logged to `log` that were answered 200, and the log.
pub fn delivered(log: &Path) -> (usize, String) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (text.lines().filter(|l| *l == "200").count(), text)
}

/// A repository `name` on `server` that accepts pushes over HTTP, its first commit holding
/// `deploy/` (a kustomization of [`config_map`] "1") and `origin` pointing at the server.
/// Returns the repository and the first commit.
pub fn pushable_repo(server: &GitServer, name: &str) -> (Repo, String) {
    let repo = Repo::create(&server.repos, name);
    // git-http-backend accepts unauthenticated pushes only when the repository says so.
    git(&repo.bare, &["config", "http.receivepack", "true"]);
    let first = repo.commit(
        &[
            ("deploy/kustomization.yaml", Some("resources: [cm.yaml]\n")),
            ("deploy/cm.yaml", Some(&config_map("1"))),
        ],
        "first",
    );
    let url = server.url(name);
    repo.git(&["remote", "set-url", "origin", &url]);
    (repo, first)
}

/// Commits a one-object change (ConfigMap `pushed` with `data.n = n`) without pushing it;
/// returns the commit.
pub fn commit_change(repo: &Repo, n: &str) -> String {
    std::fs::write(repo.work.join("deploy/cm.yaml"), config_map(n)).unwrap();
    repo.git(&["commit", "-qam", &format!("push {n}")]);
    repo.git(&["rev-parse", "HEAD"])
}

/// GitRepository `name` labelled for the in-process controllers, polling `url` every hour.
pub fn git_repository(label: &str, name: &str, url: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: {name}\n  labels:\n    gitops-test: {label}\nspec:\n  url: {url}\n  insecure: true\n  interval: 1h\n  ref:\n    branch: main\n"
    )
}

/// Kustomization `name` of `./deploy` of GitRepository `name`, into `target`, every hour.
pub fn kustomization(label: &str, name: &str, target: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata:\n  name: {name}\n  labels:\n    gitops-test: {label}\nspec:\n  sourceRef: {{kind: GitRepository, name: {name}}}\n  path: ./deploy\n  targetNamespace: {target}\n  prune: true\n  interval: 1h\n"
    )
}

/// A post-receive hook that sends, per updated ref, a GitHub push webhook: a JSON body with
/// ref/before/after/repository, `X-GitHub-Event: push`, `X-GitHub-Delivery`, `User-Agent:
/// GitHub-Hookshot/…` and `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>`.
pub const GITHUB_HOOK: &str = r#"#!/bin/sh
# post-receive: send what GitHub sends for a push.
while read -r before after ref; do
  body=$(mktemp)
  printf '{"ref":"%s","before":"%s","after":"%s","repository":{"name":"app","full_name":"team/app"},"pusher":{"name":"tester"},"commits":[{"id":"%s"}]}' \
    "$ref" "$before" "$after" "$after" > "$body"
  sig=$(openssl dgst -sha256 -hmac "$TOKEN" -r < "$body" | cut -d' ' -f1)
  curl -sS -o /dev/null -w '%{http_code}\n' -X POST "$URL" \
    -H 'Content-Type: application/json' \
    -H 'User-Agent: GitHub-Hookshot/044aadd' \
    -H 'X-GitHub-Event: push' \
    -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \
    -H 'X-GitHub-Hook-ID: 1' \
    -H "X-Hub-Signature: sha1=$(openssl dgst -sha1 -hmac "$TOKEN" -r < "$body" | cut -d' ' -f1)" \
    -H "X-Hub-Signature-256: sha256=$sig" \
    --data-binary @"$body" >> "$LOG" 2>&1
  rm -f "$body"
done
"#;

/// Installs `hook` as the bare repository's post-receive hook, posting to `url` with
/// [`TOKEN`] and appending curl's status lines to `log`.
pub fn install_hook(bare: &Path, hook: &str, url: &str, log: &Path) {
    let script = format!(
        "#!/bin/sh\nTOKEN='{TOKEN}' URL='{url}' LOG='{}' exec sh \"$0.send\"\n",
        log.display()
    );
    let path = bare.join("hooks/post-receive");
    std::fs::write(&path, script).unwrap();
    std::fs::write(bare.join("hooks/post-receive.send"), hook).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [path, bare.join("hooks/post-receive.send")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with TOKEN>`, computed by openssl as the hook does.
pub fn sign(body: &str) -> String {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", TOKEN, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256={}", text.split_whitespace().next().unwrap())
}

/// The `p`th percentile (nearest rank) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A post-receive hook that sends, per updated ref, what GitLab sends for a push:
/// `X-Gitlab-Event: Push Hook`, `X-Gitlab-Token`, the push body.
pub const GITLAB_HOOK: &str = r#"#!/bin/sh
# post-receive: send what GitLab sends for a push.
while read -r before after ref; do
  curl -sS -o /dev/null -w '%{http_code}\n' -X POST "$URL" \
    -H 'Content-Type: application/json' \
    -H 'User-Agent: GitLab/17.0.0' \
    -H 'X-Gitlab-Event: Push Hook' \
    -H "X-Gitlab-Event-UUID: $(cat /proc/sys/kernel/random/uuid)" \
    -H 'X-Gitlab-Instance: https://gitlab.example' \
    -H "X-Gitlab-Token: $TOKEN" \
    --data-binary "{\"object_kind\":\"push\",\"event_name\":\"push\",\"before\":\"$before\",\"after\":\"$after\",\"ref\":\"$ref\",\"project\":{\"name\":\"app\"}}" \
    >> "$LOG" 2>&1
done
"#;

/// curl's arguments for a `method` request to `url` with `headers` and, when given, a JSON
/// `body` (`@path` sends a file's bytes).
pub fn request(method: &str, headers: &[&str], body: Option<&str>, url: &str) -> Vec<String> {
    let mut args = vec!["-X".to_owned(), method.to_owned()];
    let json = body.map(|_| "Content-Type: application/json");
    for header in json.iter().chain(headers) {
        args.extend(["-H".to_owned(), (*header).to_owned()]);
    }
    if let Some(body) = body {
        args.extend(["--data-binary".to_owned(), body.to_owned()]);
    }
    args.push(url.to_owned());
    args
}

/// curl with `args`; returns the HTTP status.
pub fn curl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The revision of the GitRepository's artifact.
pub fn revision(repo: &GitRepository) -> Option<&str> {
    repo.status
        .as_ref()?
        .artifact
        .as_ref()
        .map(|a| a.revision.as_str())
}

/// The Kustomization's `lastAppliedRevision`.
pub fn applied(ks: &Kustomization) -> Option<&str> {
    ks.status.as_ref()?.last_applied_revision.as_deref()
}

/// The reconcile-requested-at annotation of the GitRepository.
pub fn requested_at(repo: &GitRepository) -> Option<String> {
    repo.metadata
        .annotations
        .as_ref()?
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned()
}
