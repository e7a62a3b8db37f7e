//! Shared pieces of the Receiver conformance test and the notification bench: the reconciler's
//! controllers in process (GitRepository, artifact server, Kustomization, Receivers) and polling
//! of their objects; the git side (hooks, manifests, percentiles) is in [`hooks`].
#![allow(dead_code)] // the test and the bench use different subsets

mod hooks;
pub use hooks::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_conformance::git::temp_dir;
use gitops_reconciler::api::Receiver;
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::notify::{NotifyConfig, ReceiverLimits};
use gitops_reconciler::source::{SourceConfig, Storage};
use kube::Api;

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
