//! Notifications, a controller of its own in the reconciler binary.
//!
//! - [`receiver`]: the Receiver controller (token → webhook path → status, the in-memory
//!   [`receiver::Registry`]);
//! - [`server`]: the webhook HTTP server on its own port (`--receiver-addr`, `:9292`) that
//!   turns a verified request into the `reconcile-requested-at` annotation the GitRepository
//!   and Kustomization controllers already act on;
//! - [`verify`]: the signature and token checks of each Receiver type;
//! - [`alert`]: the bounded event queue the controllers' events go to, and the dispatcher that
//!   forwards them as Alerts select them;
//! - [`provider`]: the payload of each Provider type and one delivery attempt;
//! - [`commit_status`]: the `github` and `gitea` Providers' commit status calls.
//!
//! Every limit of the webhook server is in [`ReceiverLimits`]; the reconciler's flags take
//! their defaults from it.

pub mod alert;
pub mod commit_status;
pub mod provider;
pub mod receiver;
pub mod server;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use tokio::net::TcpListener;

use crate::api::Receiver;
use crate::api::conditions::meta;
use crate::backoff;
use crate::controller::common::Events;
use crate::controller::metrics::Metrics;
use crate::controller::watch::{self, logged};

/// The reconciler's flags of the webhook server.
#[derive(Clone, Debug, clap::Args)]
pub struct ReceiverArgs {
    /// Listen address of the Receivers' webhook server (empty: no webhook server).
    #[arg(long, default_value = ":9292")]
    pub receiver_addr: String,
    /// Largest webhook request body in bytes.
    #[arg(long, default_value_t = ReceiverLimits::default().max_body_bytes)]
    pub receiver_max_body_bytes: usize,
    /// Webhook requests per minute each Receiver accepts (more are answered 429).
    #[arg(long, default_value_t = ReceiverLimits::default().requests_per_minute)]
    pub receiver_rate_limit: u32,
}

impl ReceiverArgs {
    /// The server's limits with the flags' values.
    pub fn limits(&self) -> ReceiverLimits {
        ReceiverLimits {
            max_body_bytes: self.receiver_max_body_bytes,
            requests_per_minute: self.receiver_rate_limit,
            ..ReceiverLimits::default()
        }
    }
}

/// Limits of the webhook server, per process (the flags of the same names set them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// `--receiver-max-body-bytes`: largest request body read. GitHub caps payloads at 25 MB
    /// but a push's payload is kilobytes; a larger one is refused with 413 and the source
    /// still follows at its interval.
    pub max_body_bytes: usize,
    /// `--receiver-rate-limit`: requests per minute each Receiver accepts on average.
    pub requests_per_minute: u32,
    /// Requests a Receiver accepts at once after a quiet period (the bucket's size).
    pub burst: u32,
    /// Requests handled at once by the whole server; more are answered 503.
    pub max_in_flight: usize,
    /// Bound on receiving a request's headers, and separately its body.
    pub request_timeout: Duration,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            requests_per_minute: 60,
            burst: 20,
            max_in_flight: 16,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How the notification controllers run.
#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    /// Refuse Receiver resources in another namespace than the Receiver's.
    pub no_cross_namespace_refs: bool,
    /// Watch only Receivers matching this label selector.
    pub watch_label_selector: Option<String>,
    /// The webhook server's limits (body size, rate, in-flight requests, timeouts).
    pub limits: ReceiverLimits,
}

/// Hash of the reconcile-requested-at annotation: a reconcile trigger besides the generation.
fn requested_at(receiver: &Receiver) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    receiver
        .annotations()
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the Receiver controller and serves webhooks on `listener` until `shutdown` completes.
pub async fn run_receivers(
    client: kube::Client,
    config: NotifyConfig,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(selector) = &config.watch_label_selector {
        wc = wc.labels(selector);
    }
    let api: Api<Receiver> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    use kube::CustomResourceExt as _;
    let resource = Receiver::crd_name();
    let triggers = logged(watcher(api, wc), resource)
        .backoff(backoff::backoff())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(requested_at),
            Default::default(),
        );
    let registry = receiver::Registry::default();
    let ctx = Arc::new(receiver::Context {
        events: Events::new(client.clone()),
        client: client.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
    });
    let shutdown = shutdown.shared();
    let webhooks = Arc::new(server::WebhookServer::new(
        registry,
        reader.clone(),
        client,
        metrics,
        config.limits.clone(),
        config.no_cross_namespace_refs,
    ));
    let serving = tokio::spawn(server::serve(listener, webhooks, shutdown.clone()));
    let controller = Controller::for_stream(triggers, reader.clone())
        .trigger_backoff(backoff::trigger_backoff())
        .graceful_shutdown_on(shutdown.clone())
        .run(receiver::reconcile, receiver::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    watch::run_until_shutdown(controller, reader, shutdown, resource).await;
    let _ = serving.await;
}
