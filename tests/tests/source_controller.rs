//! The GitRepository controller against the real apiserver and real git servers: status
//! conditions, artifact URL served by the artifact server, events, reconcile-requested-at,
//! authentication failure keeping the last artifact, canary credentials never leaking.
//!
//! The controller and artifact server run in-process (the library functions the reconciler
//! binary wires), watching only this test's GitRepositories (label selector).

use std::time::{Duration, Instant};

use gitops_conformance::git::{
    CountingProxy, GitServer, LargeFixture, ServerKind, slow_drip, temp_dir,
};
use gitops_conformance::{TestNamespace, install_crds};
use gitops_reconciler::source::{SourceConfig, Storage, UnpackLimits, unpack_verified};
use serde_json::Value;

const CANARY: &str = "canary-secret-5d2b7a";

async fn client() -> kube::Client {
    let path = gitops_conformance::kubeconfig();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("usable kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// The controller and artifact server of one test.
struct Reconciler {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    storage: std::path::PathBuf,
    metrics: std::sync::Arc<gitops_reconciler::controller::metrics::Metrics>,
}

impl Reconciler {
    async fn start(label: &str) -> Self {
        let storage_path = temp_dir("controller-storage");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = SourceConfig {
            storage_path: storage_path.clone(),
            storage_adv_addr: addr.to_string(),
            concurrency: 2,
            ..SourceConfig::default()
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let storage = Storage::new(&storage_path).expect("storage");
        let server_stop = stop.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            gitops_reconciler::source::server::serve(listener, storage, server_stop)
                .await
                .expect("artifact server");
        });
        let client = client().await;
        let selector = format!("gitops-test={label}");
        let controller_stop = stop.clone().cancelled_owned();
        let metrics =
            std::sync::Arc::new(gitops_reconciler::controller::metrics::Metrics::default());
        let controller_metrics = metrics.clone();
        let controller = tokio::spawn(async move {
            gitops_reconciler::controller::gitrepository::run_with_metrics(
                client,
                config,
                Some(selector),
                controller_metrics,
                controller_stop,
            )
            .await
            .expect("controller");
        });
        Self {
            stop,
            tasks: vec![server, controller],
            storage: storage_path,
            metrics,
        }
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

fn get_repo(ns: &TestNamespace, name: &str) -> Value {
    let res = ns.kubectl(
        &[
            "get",
            "gitrepositories.kubectl-gitops.io",
            name,
            "-o",
            "json",
        ],
        None,
    );
    assert!(res.success, "{}", res.stderr);
    serde_json::from_str(&res.stdout).expect("json")
}

fn condition<'a>(repo: &'a Value, type_: &str) -> Option<&'a Value> {
    repo["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Polls the GitRepository until `done` holds; panics with the last object after `timeout`.
async fn wait_for(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let repo = get_repo(ns, name);
        if done(&repo) {
            return repo;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting on gitrepository {name}: {}",
            serde_json::to_string_pretty(&repo["status"]).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn ready_with(repo: &Value, status: &str, reason: &str) -> bool {
    condition(repo, "Ready").is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

fn secret_manifest(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n");
    for (k, v) in pairs {
        let indented = v.replace('\n', "\n    ");
        out.push_str(&format!("  {k}: |-\n    {indented}\n"));
    }
    out
}

async fn download(url: &str) -> Vec<u8> {
    // A plain HTTP/1.0 GET against the artifact server (127.0.0.1).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    response[split + 4..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn gitrepository_stores_serves_follows_and_keeps_the_last_artifact_on_auth_failure() {
    install_crds();
    let ns = TestNamespace::new("source");
    let label = ns.name.clone();
    let server = GitServer::start_with_env(ServerKind::Https, &[("GITOPS_GIT_PASSWORD", CANARY)]);
    let repo = server.repo("app");
    let c1 = repo.commit(&[("deploy/app.yaml", Some("replicas: 1\n"))], "one");
    let ca = std::fs::read_to_string(server.get("ca")).expect("ca");
    let created = ns.create(&secret_manifest(
        "git-auth",
        &[
            ("username", "gitops"),
            ("password", CANARY),
            ("ca.crt", ca.trim()),
        ],
    ));
    assert!(created.success, "{}", created.stderr);
    let reconciler = Reconciler::start(&label).await;
    let manifest = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: app\n  labels:\n    gitops-test: {label}\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n  secretRef:\n    name: git-auth\n",
        server.url("app")
    );
    let created = ns.create(&manifest);
    assert!(created.success, "{}", created.stderr);

    // Ready with the revision; the artifact is served and verifies.
    let expected = format!("main@sha1:{c1}");
    let obj = wait_for(&ns, "app", Duration::from_secs(60), |r| {
        ready_with(r, "True", "Succeeded")
    })
    .await;
    assert_eq!(obj["status"]["artifact"]["revision"], expected.as_str());
    assert_eq!(
        condition(&obj, "Ready").expect("Ready")["message"],
        format!("stored artifact for revision '{expected}'").as_str()
    );
    assert_eq!(
        condition(&obj, "ArtifactInStorage").expect("ArtifactInStorage")["status"],
        "True"
    );
    assert!(condition(&obj, "FetchFailed").is_none());
    assert!(condition(&obj, "Reconciling").is_none());
    assert_eq!(
        obj["status"]["observedGeneration"],
        obj["metadata"]["generation"]
    );
    let url = obj["status"]["artifact"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let digest = obj["status"]["artifact"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    let bytes = download(&url).await;
    assert_eq!(
        bytes.len() as i64,
        obj["status"]["artifact"]["size"].as_i64().expect("size")
    );
    let dest = temp_dir("controller-unpack");
    unpack_verified(&bytes, &digest, &UnpackLimits::default(), &dest).expect("artifact verifies");
    assert_eq!(
        std::fs::read_to_string(dest.join("deploy/app.yaml")).expect("file"),
        "replicas: 1\n"
    );
    let _ = std::fs::remove_dir_all(&dest);

    // A new commit is picked up at once when reconcile-requested-at changes.
    let c2 = repo.commit(&[("deploy/app.yaml", Some("replicas: 3\n"))], "two");
    let annotate = ns.kubectl(
        &[
            "annotate",
            "--overwrite",
            "gitrepositories.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=first",
        ],
        None,
    );
    assert!(annotate.success, "{}", annotate.stderr);
    let expected2 = format!("main@sha1:{c2}");
    let obj = wait_for(&ns, "app", Duration::from_secs(30), |r| {
        r["status"]["artifact"]["revision"] == expected2.as_str()
    })
    .await;
    assert_eq!(obj["status"]["lastHandledReconcileAt"], "first");
    assert_ne!(obj["status"]["artifact"]["digest"], digest.as_str());
    let good_artifact = obj["status"]["artifact"].clone();

    // Wrong password: AuthenticationFailed, the last artifact stays in status and is served.
    let wrong = format!("{CANARY}-wrong");
    let patched = ns.kubectl(
        &["apply", "-f", "-"],
        Some(&secret_manifest(
            "git-auth",
            &[
                ("username", "gitops"),
                ("password", &wrong),
                ("ca.crt", ca.trim()),
            ],
        )),
    );
    assert!(patched.success, "{}", patched.stderr);
    repo.commit(&[("deploy/app.yaml", Some("replicas: 5\n"))], "three");
    let annotate = ns.kubectl(
        &[
            "annotate",
            "--overwrite",
            "gitrepositories.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=second",
        ],
        None,
    );
    assert!(annotate.success, "{}", annotate.stderr);
    let obj = wait_for(&ns, "app", Duration::from_secs(30), |r| {
        ready_with(r, "False", "AuthenticationFailed")
    })
    .await;
    assert_eq!(
        obj["status"]["artifact"], good_artifact,
        "last good artifact kept"
    );
    assert_eq!(
        condition(&obj, "FetchFailed").expect("FetchFailed")["reason"],
        "AuthenticationFailed"
    );
    assert!(
        condition(&obj, "Stalled").is_none(),
        "auth failures are retried, not stalled"
    );
    let served = download(good_artifact["url"].as_str().expect("url")).await;
    assert_eq!(
        served.len() as i64,
        good_artifact["size"].as_i64().expect("size")
    );

    // Events: a NewArtifact and an AuthenticationFailed warning; no credential anywhere.
    let start = Instant::now();
    let events = loop {
        let res = ns.kubectl(&["get", "events", "-o", "json"], None);
        assert!(res.success, "{}", res.stderr);
        if res.stdout.contains("AuthenticationFailed") || start.elapsed() > Duration::from_secs(20)
        {
            break res.stdout;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(events.contains("NewArtifact"), "{events}");
    assert!(events.contains("AuthenticationFailed"), "{events}");
    // Each new revision has an event of its own, naming it (not a series keeping the first).
    for revision in [&expected, &expected2] {
        let note = format!("stored artifact for revision '{revision}'");
        assert!(events.contains(&note), "no event {note:?}: {events}");
    }
    // The controller's reconciles are timed, by result, and its Ready gauge follows status.
    assert!(
        reconciler.sample(
            r#"gitops_reconcile_duration_seconds_count{kind="GitRepository",result="success"}"#
        ) >= 2,
        "{}",
        reconciler.metrics.encode()
    );
    assert!(
        reconciler.sample(r#"gitops_reconcile_duration_seconds_count{kind="GitRepository",result="AuthenticationFailed"}"#) >= 1,
        "{}",
        reconciler.metrics.encode()
    );
    let ready_false = format!(
        r#"gitops_reconcile_condition{{kind="GitRepository",namespace="{}",name="app",type="Ready",status="False"}}"#,
        ns.name
    );
    assert_eq!(
        reconciler.sample(&ready_false),
        1,
        "{}",
        reconciler.metrics.encode()
    );
    let status_text = ns
        .kubectl(
            &[
                "get",
                "gitrepositories.kubectl-gitops.io",
                "app",
                "-o",
                "yaml",
            ],
            None,
        )
        .stdout;
    for text in [&events, &status_text] {
        assert!(!text.contains(CANARY), "credential leaked: {text}");
    }
    reconciler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn gitrepository_over_ssh_with_a_deploy_key_secret() {
    install_crds();
    let ns = TestNamespace::new("source-ssh");
    let label = ns.name.clone();
    let server = GitServer::start(ServerKind::Ssh);
    let repo = server.repo("app");
    let c1 = repo.commit(&[("deploy/app.yaml", Some("replicas: 1\n"))], "one");
    let identity = std::fs::read_to_string(server.get("identity")).expect("identity");
    let known_hosts = std::fs::read_to_string(server.get("known_hosts")).expect("known_hosts");
    let created = ns.create(&secret_manifest(
        "deploy-key",
        &[
            ("identity", identity.trim()),
            ("known_hosts", known_hosts.trim()),
        ],
    ));
    assert!(created.success, "{}", created.stderr);
    let reconciler = Reconciler::start(&label).await;
    let manifest = |name: &str, secret: Option<&str>| {
        let mut text = format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: {name}\n  labels:\n    gitops-test: {label}\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n",
            server.url("app")
        );
        if let Some(secret) = secret {
            text.push_str(&format!("  secretRef:\n    name: {secret}\n"));
        }
        text
    };
    let created = ns.create(&manifest("app", Some("deploy-key")));
    assert!(created.success, "{}", created.stderr);
    let expected = format!("main@sha1:{c1}");
    let obj = wait_for(&ns, "app", Duration::from_secs(60), |r| {
        ready_with(r, "True", "Succeeded")
    })
    .await;
    assert_eq!(obj["status"]["artifact"]["revision"], expected.as_str());
    let good_artifact = obj["status"]["artifact"].clone();
    let bytes = download(good_artifact["url"].as_str().expect("url")).await;
    let dest = temp_dir("controller-ssh-unpack");
    unpack_verified(
        &bytes,
        good_artifact["digest"].as_str().expect("digest"),
        &UnpackLimits::default(),
        &dest,
    )
    .expect("artifact verifies");
    assert_eq!(
        std::fs::read_to_string(dest.join("deploy/app.yaml")).expect("file"),
        "replicas: 1\n"
    );
    let _ = std::fs::remove_dir_all(&dest);

    // The server's host key no longer matches known_hosts (another key for the same host):
    // Ready=False AuthenticationFailed naming the host key problem; the last artifact stays.
    let keys = temp_dir("controller-ssh-keys");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(keys.join("other"))
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let other = std::fs::read_to_string(keys.join("other.pub")).expect("pub");
    let host = known_hosts.split_whitespace().next().expect("host field");
    let other_line = format!(
        "{host} {}",
        other
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = std::fs::remove_dir_all(&keys);
    let patched = ns.kubectl(
        &["apply", "-f", "-"],
        Some(&secret_manifest(
            "deploy-key",
            &[("identity", identity.trim()), ("known_hosts", &other_line)],
        )),
    );
    assert!(patched.success, "{}", patched.stderr);
    repo.commit(&[("deploy/app.yaml", Some("replicas: 2\n"))], "two");
    let annotate = ns.kubectl(
        &[
            "annotate",
            "--overwrite",
            "gitrepositories.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=hostkey",
        ],
        None,
    );
    assert!(annotate.success, "{}", annotate.stderr);
    let obj = wait_for(&ns, "app", Duration::from_secs(30), |r| {
        ready_with(r, "False", "AuthenticationFailed")
    })
    .await;
    let message = condition(&obj, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("host key mismatch"), "{message}");
    assert!(message.contains("SHA256:"), "{message}");
    assert_eq!(
        obj["status"]["artifact"], good_artifact,
        "last good artifact kept"
    );

    // An ssh:// URL without a secretRef is Stalled: only a spec change can fix it.
    let created = ns.create(&manifest("nosecret", None));
    assert!(created.success, "{}", created.stderr);
    let obj = wait_for(&ns, "nosecret", Duration::from_secs(30), |r| {
        ready_with(r, "False", "InvalidSpec")
    })
    .await;
    let stalled = condition(&obj, "Stalled").expect("Stalled");
    assert_eq!(stalled["status"], "True");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secretRef"),
        "{stalled}"
    );

    // The private key never shows up in status or events.
    let key_line = identity.lines().nth(1).expect("key body line");
    let events = ns.kubectl(&["get", "events", "-o", "json"], None).stdout;
    let status_text = ns
        .kubectl(
            &["get", "gitrepositories.kubectl-gitops.io", "-o", "yaml"],
            None,
        )
        .stdout;
    for text in [&events, &status_text] {
        assert!(!text.contains(key_line), "private key leaked: {text}");
    }
    reconciler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn reconciling_is_shown_while_a_fetch_runs_and_cleared_by_its_failure() {
    install_crds();
    let ns = TestNamespace::new("source-progress");
    let label = ns.name.clone();
    // Accepts TCP connections (kernel backlog) and never speaks: the fetch hangs until its
    // timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let keys = temp_dir("controller-progress-keys");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(keys.join("id"))
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let identity = std::fs::read_to_string(keys.join("id")).expect("key");
    let _ = std::fs::remove_dir_all(&keys);
    let created = ns.create(&secret_manifest(
        "deploy-key",
        &[
            ("identity", identity.trim()),
            (
                "known_hosts",
                &format!("[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC3pIz1E3DHt8lQocby4hvqc1JO0bmN4fOsG7oVWQ8nC"),
            ),
        ],
    ));
    assert!(created.success, "{}", created.stderr);
    let reconciler = Reconciler::start(&label).await;
    let manifest = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: slow\n  labels:\n    gitops-test: {label}\nspec:\n  url: ssh://git@127.0.0.1:{port}/srv/app.git\n  interval: 10m\n  timeout: 20s\n  secretRef:\n    name: deploy-key\n"
    );
    let created = ns.create(&manifest);
    assert!(created.success, "{}", created.stderr);
    let obj = wait_for(&ns, "slow", Duration::from_secs(15), |r| {
        condition(r, "Reconciling").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        condition(&obj, "Reconciling").expect("Reconciling")["reason"],
        "Progressing"
    );
    assert_eq!(
        condition(&obj, "Ready").expect("Ready")["status"],
        "Unknown"
    );
    let obj = wait_for(&ns, "slow", Duration::from_secs(45), |r| {
        ready_with(r, "False", "GitOperationFailed")
    })
    .await;
    assert!(condition(&obj, "Reconciling").is_none(), "cleared: {obj}");
    let message = condition(&obj, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("timed out after 20s"), "{message}");
    drop(silent);
    reconciler.shutdown().await;
}

impl Reconciler {
    /// The value of the `gitops_source_fetch_aborted_total` series for `cause` (0 when absent).
    fn aborted(&self, cause: &str) -> u64 {
        self.sample(&format!(
            "gitops_source_fetch_aborted_total{{cause=\"{cause}\"}}"
        ))
    }

    /// The value of the metric sample `series` (name and labels), 0 when absent.
    fn sample(&self, series: &str) -> u64 {
        let prefix = format!("{series} ");
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn gitrepository_manifest(
    label: &str,
    name: &str,
    url: &str,
    interval: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: {name}\n  labels:\n    gitops-test: {label}\nspec:\n  url: {url}\n  insecure: true\n  interval: {interval}\n  ref:\n    branch: main\n{extra}"
    )
}

fn ready_message(repo: &Value) -> String {
    condition(repo, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_source_refused_for_size_is_quiet_others_stay_on_time_and_deletion_frees_storage() {
    install_crds();
    let ns = TestNamespace::new("source-size");
    let label = ns.name.clone();
    let server = GitServer::start(ServerKind::Http);
    server.serve_borrowed("large", &LargeFixture::Blob300M.path());
    let small = server.repo("small");
    small.commit(&[("app.yaml", Some("replicas: 1\n"))], "one");
    let (proxy, proxied) = CountingProxy::in_front_of(&server.url("large"));
    let reconciler = Reconciler::start(&label).await;
    for manifest in [
        gitrepository_manifest(&label, "big", &proxied, "3s", ""),
        gitrepository_manifest(&label, "small", &server.url("small"), "2s", ""),
    ] {
        let created = ns.create(&manifest);
        assert!(created.success, "{}", created.stderr);
    }
    let big = wait_for(&ns, "big", Duration::from_secs(60), |r| {
        ready_with(r, "False", "SizeLimitExceeded")
    })
    .await;
    let message = ready_message(&big);
    assert!(message.contains("--max-file-size"), "{message}");
    assert!(message.contains("314572800"), "names the value: {message}");
    assert_eq!(
        condition(&big, "FetchFailed").expect("FetchFailed")["reason"],
        "SizeLimitExceeded"
    );
    wait_for(&ns, "small", Duration::from_secs(30), |r| {
        ready_with(r, "True", "Succeeded")
    })
    .await;
    let downloaded = tokio::task::block_in_place(|| proxy.settled());
    assert!(
        downloaded < 64 << 20,
        "the refusal stopped the transfer: {downloaded} bytes"
    );
    assert_eq!(reconciler.aborted("file_size"), 1);

    // Meanwhile the small source follows its branch on time.
    let c2 = small.commit(&[("app.yaml", Some("replicas: 2\n"))], "two");
    let pushed = Instant::now();
    wait_for(&ns, "small", Duration::from_secs(10), |r| {
        r["status"]["artifact"]["revision"]
            .as_str()
            .is_some_and(|rev| rev.ends_with(&c2))
    })
    .await;
    let followed = pushed.elapsed();
    eprintln!("small source followed a new commit in {followed:?} (interval 2s)");
    assert!(followed < Duration::from_secs(5), "on time: {followed:?}");

    // Later polls of the refused source list refs only: no second download.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let big = get_repo(&ns, "big");
    let message = ready_message(&big);
    assert!(message.contains("not downloaded again"), "{message}");
    assert!(
        message.contains("--max-file-size"),
        "the first cause stays: {message}"
    );
    let again = tokio::task::block_in_place(|| proxy.settled()) - downloaded;
    eprintln!("refused source: {again} bytes over 8 s of polls after the refusal");
    assert!(again < 1 << 20, "ref listings only: {again} bytes");
    assert_eq!(
        reconciler.aborted("file_size"),
        1,
        "never aborted a second download"
    );

    // Deleting it frees its storage within seconds.
    let cache = reconciler.storage.join(format!("git/{}/big.git", ns.name));
    assert!(cache.exists(), "the git cache exists before the deletion");
    let small_artifacts = reconciler
        .storage
        .join(format!("gitrepository/{}/small", ns.name));
    let deleted = ns.kubectl(
        &[
            "delete",
            "gitrepositories.kubectl-gitops.io",
            "big",
            "small",
            "--wait=false",
        ],
        None,
    );
    assert!(deleted.success, "{}", deleted.stderr);
    let started = Instant::now();
    while cache.exists() || small_artifacts.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "storage still holds {} / {}",
            cache.display(),
            small_artifacts.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("storage freed {:?} after the deletion", started.elapsed());
    reconciler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn deleting_or_changing_a_gitrepository_cancels_its_fetch_at_once() {
    install_crds();
    let ns = TestNamespace::new("source-cancel");
    let label = ns.name.clone();
    // One byte of a valid response every second: the fetch runs until it is cancelled.
    let port = slow_drip(Duration::from_secs(1), 1);
    let url = format!("http://127.0.0.1:{port}/git/app.git");
    let reconciler = Reconciler::start(&label).await;
    for name in ["deleted", "changed"] {
        let created = ns.create(&gitrepository_manifest(
            &label,
            name,
            &url,
            "10m",
            "  timeout: 5m\n",
        ));
        assert!(created.success, "{}", created.stderr);
    }
    for name in ["deleted", "changed"] {
        wait_for(&ns, name, Duration::from_secs(15), |r| {
            condition(r, "Reconciling").is_some_and(|c| c["status"] == "True")
        })
        .await;
    }
    let deleted = ns.kubectl(
        &[
            "delete",
            "gitrepositories.kubectl-gitops.io",
            "deleted",
            "--wait=false",
        ],
        None,
    );
    assert!(deleted.success, "{}", deleted.stderr);
    let started = Instant::now();
    while reconciler.aborted("cancelled") < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the fetch of a deleted source went on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("deletion cancelled the fetch in {:?}", started.elapsed());
    let patched = ns.kubectl(
        &[
            "patch",
            "gitrepositories.kubectl-gitops.io",
            "changed",
            "--type=merge",
            "-p",
            r#"{"spec":{"timeout":"2s"}}"#,
        ],
        None,
    );
    assert!(patched.success, "{}", patched.stderr);
    let started = Instant::now();
    while reconciler.aborted("cancelled") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the fetch of an old spec went on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "a spec change cancelled the fetch in {:?}",
        started.elapsed()
    );
    // The new spec's fetch runs with the new timeout.
    let obj = wait_for(&ns, "changed", Duration::from_secs(15), |r| {
        ready_with(r, "False", "GitOperationFailed")
    })
    .await;
    assert!(ready_message(&obj).contains("timed out after 2s"), "{obj}");
    reconciler.shutdown().await;
}
