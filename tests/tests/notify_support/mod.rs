//! Shared pieces of the Receiver conformance test and the notification bench: the reconciler's
//! controllers in process (GitRepository, artifact server, Kustomization, Receivers), a git
//! server whose bare repository's post-receive hook sends GitHub's push webhook, the manifests
//! both use, polling and percentiles.
#![allow(dead_code)] // the test and the bench use different subsets

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, Repo, git, temp_dir};
use gitops_reconciler::api::{GitRepository, Kustomization, Receiver};
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::notify::{NotifyConfig, ReceiverLimits};
use gitops_reconciler::source::{SourceConfig, Storage};
use kube::Api;

/// The webhook token of every Receiver here.
pub const TOKEN: &str = "receiver-token-7c1f3e9a";

/// The in-process reconciler parts of one test.
pub struct Reconciler {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    storage: std::path::PathBuf,
    pub metrics: Arc<Metrics>,
    /// `http://127.0.0.1:PORT` of the webhook server.
    pub webhook: String,
}

impl Reconciler {
    /// Starts the controllers, watching only objects labelled `gitops-test=<label>`, with the
    /// webhook server's `limits`.
    pub async fn start(client: kube::Client, label: &str, limits: ReceiverLimits) -> Self {
        let storage_path = temp_dir("receiver-storage");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = SourceConfig {
            storage_path: storage_path.clone(),
            storage_adv_addr: addr.to_string(),
            concurrency: 2,
            ..SourceConfig::default()
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let storage = Storage::new(&storage_path).unwrap();
        let server_stop = stop.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            gitops_reconciler::source::server::serve(listener, storage, server_stop)
                .await
                .expect("artifact server");
        });
        let selector = format!("gitops-test={label}");
        let metrics = Arc::new(Metrics::default());
        let (repo_client, repo_metrics, repo_stop, repo_selector) = (
            client.clone(),
            metrics.clone(),
            stop.clone().cancelled_owned(),
            selector.clone(),
        );
        let sources = tokio::spawn(async move {
            gitops_reconciler::controller::gitrepository::run_with_metrics(
                repo_client,
                config,
                Some(repo_selector),
                repo_metrics,
                repo_stop,
            )
            .await
            .expect("GitRepository controller");
        });
        // The Kustomization controller reads the artifacts from the same storage, as the
        // reconciler binary does: a new artifact triggers it at once.
        let kube_config = {
            let path = gitops_conformance::kubeconfig();
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .unwrap()
        };
        let applier = tokio::spawn(gitops_reconciler::controller::kustomization::run(
            client.clone(),
            kube_config,
            gitops_reconciler::controller::kustomization::KustomizationConfig {
                concurrent: 2,
                watch_label_selector: Some(selector.clone()),
                ..Default::default()
            },
            gitops_reconciler::controller::fetch::ArtifactFetcher::new(
                Some(Storage::new(&storage_path).unwrap()),
                Default::default(),
            ),
            crate::kustomization_support::policy_host(),
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ));
        let webhook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let webhook = format!("http://{}", webhook_listener.local_addr().unwrap());
        let notify_config = NotifyConfig {
            no_cross_namespace_refs: true,
            watch_label_selector: Some(selector),
            limits,
        };
        let receivers = tokio::spawn(gitops_reconciler::notify::run_receivers(
            client,
            notify_config,
            webhook_listener,
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ));
        Self {
            stop,
            tasks: vec![server, sources, receivers, applier],
            storage: storage_path,
            metrics,
            webhook,
        }
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = std::fs::remove_dir_all(&self.storage);
    }

    /// The value of `gitops_receiver_requests_total` for `name` and `result`.
    pub fn count(&self, namespace: &str, name: &str, result: &str) -> u64 {
        let needle = format!(
            "gitops_receiver_requests_total{{namespace=\"{namespace}\",name=\"{name}\",result=\"{result}\"}} "
        );
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0)
    }
}

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

/// Whether the Receiver is serving: its webhook path is in the status.
pub fn has_webhook_path(receiver: &Receiver) -> bool {
    receiver
        .status
        .as_ref()
        .and_then(|s| s.webhook_path.as_ref())
        .is_some()
}

/// Polls `get` every 25 ms until `done` holds or `timeout` passes; returns the last object and
/// whether `done` held.
pub async fn poll<K: Clone + serde::de::DeserializeOwned + std::fmt::Debug>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&K) -> bool,
) -> (K, bool) {
    let start = Instant::now();
    loop {
        let object = api.get(name).await.expect("get");
        if done(&object) {
            return (object, true);
        }
        if start.elapsed() > timeout {
            return (object, false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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

/// The one object of the pushed tree: ConfigMap `pushed` with `data.n`.
pub fn config_map(n: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pushed\ndata:\n  n: \"{n}\"\n")
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
