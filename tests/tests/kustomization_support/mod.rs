//! Shared pieces of the Kustomization conformance tests: a kube client for the cluster under
//! test and the apply stage driven directly (plan → apply → prune), as the controller does.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use gitops_reconciler::apply::{self, ApplyOptions, DriftRules, Owner, Resolver};
use serde_json::Value;

/// The JSON log lines of this test process (the reconciler's parts run in it) that `filter`
/// (an `EnvFilter` directive) lets through, from the first call on; later calls return the same
/// buffer (one subscriber per process).
pub fn captured_logs(filter: &str) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || Sink(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

/// A client for `GITOPS_TEST_KUBECONFIG`.
pub async fn client() -> kube::Client {
    let path = gitops_conformance::kubeconfig();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("usable kubeconfig");
    kube::Client::try_from(config).expect("client")
}

pub fn owner(name: &str, namespace: &str) -> Owner {
    Owner {
        name: name.into(),
        namespace: namespace.into(),
    }
}

pub fn options(owner: Owner) -> ApplyOptions {
    ApplyOptions {
        owner,
        force: false,
        concurrency: 8,
        drift: DriftRules::default(),
        definitions_timeout: Duration::from_secs(30),
        owner_lookup: None,
        known: None,
    }
}

/// Parses a multi-document YAML manifest.
pub fn objects(yaml: &str) -> Vec<Value> {
    gitops_reconciler::yaml::from_str_multi(yaml).expect("valid test YAML")
}

/// plan + apply, the way the controller runs them.
pub async fn plan_and_apply(
    client: &kube::Client,
    resolver: &Resolver,
    yaml: &str,
    opts: &ApplyOptions,
) -> Result<(apply::Plan, apply::ChangeSet), apply::ApplyError> {
    let plan = apply::plan(client, resolver, objects(yaml), &opts.owner).await?;
    let changes = apply::apply(client, resolver, &plan, opts).await?;
    Ok((plan, changes))
}

/// `kubectl get KIND NAME -n NS -o json`, or None when it does not exist.
pub fn get(ns: &str, kind: &str, name: &str) -> Option<Value> {
    let res = gitops_conformance::kubectl(&["-n", ns, "get", kind, name, "-o", "json"], None);
    if !res.success {
        assert!(
            res.stderr.contains("NotFound") || res.stderr.contains("not found"),
            "kubectl get {kind} {name}: {}",
            res.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&res.stdout).expect("kubectl prints JSON"))
}

/// An artifact published the way the source controller publishes one: a real tar.gz in a
/// storage directory and the GitRepository's `status.artifact` pointing at it. Used where the
/// test is about the Kustomization controller, not about git.
pub struct PublishedSource {
    pub storage: std::path::PathBuf,
    pub namespace: String,
    pub name: String,
}

impl PublishedSource {
    /// Creates the GitRepository `name` in `namespace` (no artifact yet).
    pub fn new(storage: &std::path::Path, namespace: &str, name: &str) -> Self {
        gitops_conformance::kubectl_ok(
            &["-n", namespace, "apply", "-f", "-"],
            Some(&format!(
                "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {{name: {name}}}\nspec:\n  url: https://git.invalid/{name}.git\n  interval: 1h\n  suspend: true\n"
            )),
        );
        Self {
            storage: storage.to_owned(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Packs `files` (path → content) as revision `main@sha1:<commit>` and publishes it.
    pub fn publish(&self, commit_byte: char, files: &[(&str, &str)]) -> String {
        use gitops_reconciler::source::artifact::UnpackLimits;
        use gitops_reconciler::source::storage::Storage;
        let storage = Storage::new(&self.storage).expect("storage dir");
        let mut pending = storage
            .begin(&self.namespace, &self.name, UnpackLimits::default())
            .expect("begin artifact");
        let mut sorted: Vec<_> = files.to_vec();
        sorted.sort();
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _) in &sorted {
            let mut prefix = String::new();
            for part in path
                .split('/')
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .skip(1)
                .rev()
            {
                prefix = if prefix.is_empty() {
                    part.to_string()
                } else {
                    format!("{prefix}/{part}")
                };
                dirs.insert(prefix.clone());
            }
        }
        for dir in &dirs {
            pending.writer().add_dir(dir).expect("add dir");
        }
        for (path, content) in &sorted {
            pending
                .writer()
                .add_file(path, false, content.as_bytes())
                .expect("add file");
        }
        let stored = pending.commit().expect("commit artifact");
        let revision = format!(
            "main@sha1:{}",
            std::iter::repeat_n(commit_byte, 40).collect::<String>()
        );
        let status = serde_json::json!({"status": {
            "artifact": {
                "revision": revision,
                "digest": stored.packed.digest,
                "size": stored.packed.size,
                "url": format!("http://127.0.0.1:9/{}", stored.path),
                "path": stored.path,
                "lastUpdateTime": "2026-01-01T00:00:00Z",
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                "message": format!("stored artifact for revision '{revision}'"),
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }});
        gitops_conformance::kubectl_ok(
            &[
                "-n",
                &self.namespace,
                "patch",
                "gitrepositories.kubectl-gitops.io",
                &self.name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
            None,
        );
        revision
    }
}

/// The Kustomization controller of the library, running in this test process and reconciling
/// only Kustomizations labelled `conformance-shard=<shard>` (so parallel tests never share
/// objects). Stopped when dropped.
pub struct RunningController {
    task: tokio::task::JoinHandle<()>,
    pub shard: String,
    pub storage: tempfile_dir::Dir,
}

pub mod tempfile_dir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One policy host per test process (as per reconciler process).
pub fn policy_host() -> Option<gitops_reconciler::policy::PolicyHost> {
    static HOST: std::sync::OnceLock<Option<gitops_reconciler::policy::PolicyHost>> =
        std::sync::OnceLock::new();
    HOST.get_or_init(|| gitops_reconciler::policy::PolicyHost::new(Default::default()).ok())
        .clone()
}

impl RunningController {
    pub async fn start(shard: &str) -> Self {
        Self::start_with(shard, |_| {}).await
    }

    pub async fn start_with(
        shard: &str,
        adjust: impl FnOnce(&mut gitops_reconciler::controller::kustomization::KustomizationConfig),
    ) -> Self {
        Self::start_as(shard, &gitops_conformance::kubeconfig(), adjust).await
    }

    /// Starts the controller with the identity of `kubeconfig`.
    pub async fn start_as(
        shard: &str,
        kubeconfig: &std::path::Path,
        adjust: impl FnOnce(&mut gitops_reconciler::controller::kustomization::KustomizationConfig),
    ) -> Self {
        use gitops_reconciler::controller::fetch::ArtifactFetcher;
        use gitops_reconciler::controller::kustomization::{self, KustomizationConfig};
        use gitops_reconciler::source::artifact::UnpackLimits;
        use gitops_reconciler::source::storage::Storage;
        let storage = std::env::temp_dir().join(format!("gitops-conf-{shard}"));
        std::fs::create_dir_all(&storage).expect("storage dir");
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config.clone()).expect("client");
        let mut ks_config = KustomizationConfig {
            concurrent: 4,
            watch_label_selector: Some(format!("conformance-shard={shard}")),
            ..Default::default()
        };
        adjust(&mut ks_config);
        let fetcher = ArtifactFetcher::new(
            Some(Storage::new(&storage).expect("storage")),
            UnpackLimits::default(),
        );
        let task = tokio::spawn(kustomization::run(
            client,
            config,
            ks_config,
            fetcher,
            policy_host(),
            Default::default(),
            std::future::pending(),
        ));
        Self {
            task,
            shard: shard.into(),
            storage: tempfile_dir::Dir(storage),
        }
    }
}

impl Drop for RunningController {
    /// Stops the controller, then releases the finalizers of its shard's Kustomizations, so
    /// the test namespace can be deleted whether the test passed or not.
    fn drop(&mut self) {
        self.task.abort();
        // Let the runtime's other workers drop the aborted controller and its reconciles.
        std::thread::sleep(Duration::from_millis(500));
        release_finalizers(&self.shard);
    }
}

/// Removes the finalizers of the shard's Kustomizations, so the test namespace can be deleted
/// once no controller runs for it any more.
pub fn release_finalizers(shard: &str) {
    gitops_conformance::release_finalizers(None, Some(&format!("conformance-shard={shard}")));
}

/// A Kustomization manifest in the controller's shard.
pub fn kustomization(name: &str, shard: &str, spec: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata:\n  name: {name}\n  labels: {{conformance-shard: {shard}}}\nspec:\n{spec}"
    )
}

/// The Kustomization's status as JSON.
pub fn ks_status(ns: &str, name: &str) -> Value {
    get(ns, "kustomizations.kubectl-gitops.io", name)
        .and_then(|k| k.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// The Ready condition: (status, reason, message).
pub fn ready(ns: &str, name: &str) -> Option<(String, String, String)> {
    let status = ks_status(ns, name);
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

/// Polls `check` every 200 ms until it returns Some or `timeout` passes (then panics with the
/// last state described by `describe`).
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state: {}",
                describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
