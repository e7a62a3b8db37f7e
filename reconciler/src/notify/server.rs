//! The webhook server: `POST /hook/<digest>` → the Receiver registered under that path →
//! checks → the reconcile-requested-at annotation on each of its resources.
//!
//! Expected flow of one request, each refusal counted in `gitops_receiver_requests_total`
//! with its `result`: a path under `/hook/` (else 404) → a free request slot (else 503,
//! `busy`) → a registered Receiver still in the cache (else 404, `not_found`) → POST (else
//! 405, `method_not_allowed`) → not suspended (else 503, `suspended`) → within the Receiver's
//! rate (else 429 with Retry-After, `rate_limited`) → a body of at most the limit, read within
//! the request deadline (else 413 `too_large` / 408 `timeout`) → [`verify`] (else 400 with the
//! rejection's label) → every resource annotated (200 `accepted`, else 500 `annotate_failed`).
//!
//! Guarantees: nothing is written to the cluster before a request has passed every check; the
//! body is never read past the limit (the length is checked before reading and enforced while
//! reading); no token, signature or body reaches a log line, a metric label or a response;
//! requests for unknown paths create no per-path state.
//!
//! Deliberate differences from Flux (docs/notifications.md): only POST is accepted (Flux takes
//! any method), a suspended Receiver answers 503 like Flux but the body limit, request rate and
//! in-flight limits are ours (Flux relies on an ingress for them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ReceiverLimits;
use super::receiver::Registry;
use super::verify::verify;
use crate::api::conditions::meta;
use crate::api::receiver::{Receiver, ReceiverResource, ReceiverResourceKind, WEBHOOK_PATH_PREFIX};
use crate::api::{GitRepository, Kustomization};
use crate::controller::metrics::Metrics;

/// Why annotating a Receiver's resources failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// `--no-cross-namespace-refs` is set and a resource is in another namespace.
    #[error(
        "{kind} '{namespace}/{name}' is in another namespace than the Receiver and cross-namespace references are disabled"
    )]
    CrossNamespace {
        /// `GitRepository` or `Kustomization`.
        kind: &'static str,
        /// The resource's namespace.
        namespace: String,
        /// The resource's name.
        name: String,
    },
    /// A resource named in `spec.resources` does not exist.
    #[error("{kind} '{namespace}/{name}' not found")]
    NotFound {
        /// `GitRepository` or `Kustomization`.
        kind: &'static str,
        /// The resource's namespace.
        namespace: String,
        /// The resource's name.
        name: String,
    },
    /// The annotation patch (or the list for `*`/matchLabels) failed.
    #[error("annotating {kind} '{namespace}/{name}': {source}")]
    Kube {
        /// `GitRepository` or `Kustomization`.
        kind: &'static str,
        /// The resource's namespace.
        namespace: String,
        /// The resource's name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
}

/// A token bucket per Receiver: `burst` requests at once, refilled at `per_minute`.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<ObjectRef<Receiver>, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_minute` requests a minute per key on average, bursts of `burst` (both at least 1).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `object`'s budget at `now`, or says how long until one is free.
    /// `keep` is asked, when there are more than `expected` buckets, which to keep.
    pub fn take(
        &self,
        object: &ObjectRef<Receiver>,
        now: Instant,
        expected: usize,
        keep: impl Fn(&ObjectRef<Receiver>) -> bool,
    ) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > expected * 2 + 16 {
            buckets.retain(|o, _| keep(o));
        }
        let bucket = buckets.entry(object.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// The webhook server's shared state.
pub struct WebhookServer {
    registry: Registry,
    store: Store<Receiver>,
    client: kube::Client,
    metrics: Arc<Metrics>,
    limits: ReceiverLimits,
    no_cross_namespace_refs: bool,
    rate: RateLimiter,
    slots: Semaphore,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, text: impl Into<String>) -> Reply {
    let mut text: String = text.into();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

impl WebhookServer {
    /// A server for the Receivers of `registry`: `store` is the Receiver watch's store (spec
    /// and resources), `client` annotates resources with the reconciler's identity.
    pub fn new(
        registry: Registry,
        store: Store<Receiver>,
        client: kube::Client,
        metrics: Arc<Metrics>,
        limits: ReceiverLimits,
        no_cross_namespace_refs: bool,
    ) -> Self {
        let slots = Semaphore::new(limits.max_in_flight.max(1));
        let rate = RateLimiter::new(limits.requests_per_minute, limits.burst);
        Self {
            registry,
            store,
            client,
            metrics,
            limits,
            no_cross_namespace_refs,
            rate,
            slots,
        }
    }

    /// Handles one request (see the module documentation).
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        if !path.starts_with(WEBHOOK_PATH_PREFIX) {
            self.metrics.count_receiver_request("", "", "not_found");
            return reply(StatusCode::NOT_FOUND, "not found");
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            self.metrics.count_receiver_request("", "", "busy");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight",
            );
        };
        let found = self
            .registry
            .lookup(&path)
            .and_then(|registered| Some((self.store.get(&registered.object)?, registered)));
        let Some((receiver, registered)) = found else {
            self.metrics.count_receiver_request("", "", "not_found");
            return reply(StatusCode::NOT_FOUND, "not found");
        };
        let namespace = registered.object.namespace.clone().unwrap_or_default();
        let name = registered.object.name.clone();
        let count = |result: &str| {
            self.metrics
                .count_receiver_request(&namespace, &name, result);
        };
        if request.method() != Method::POST {
            count("method_not_allowed");
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("POST"),
            );
            return response;
        }
        if receiver.spec.suspend == Some(true) {
            count("suspended");
            return reply(StatusCode::SERVICE_UNAVAILABLE, "receiver is suspended");
        }
        let taken = self.rate.take(
            &registered.object,
            Instant::now(),
            self.registry.len(),
            |o| self.store.get(o).is_some(),
        );
        if let Err(wait) = taken {
            count("rate_limited");
            let mut response = reply(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, (wait.as_secs() + 1).into());
            return response;
        }
        let declared = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            count("too_large");
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {} bytes", self.limits.max_body_bytes),
            )
        };
        if declared.is_some_and(|n| n > self.limits.max_body_bytes as u64) {
            return too_large();
        }
        let (parts, body) = request.into_parts();
        let limited = Limited::new(body, self.limits.max_body_bytes);
        let body = match tokio::time::timeout(self.limits.request_timeout, limited.collect()).await
        {
            Err(_) => {
                count("timeout");
                return reply(StatusCode::REQUEST_TIMEOUT, "body not received in time");
            }
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return too_large();
                }
                count("bad_request");
                return reply(StatusCode::BAD_REQUEST, "could not read the body");
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let verified = match verify(
            receiver.spec.type_,
            &receiver.spec.events,
            &registered.token,
            &parts.headers,
            &body,
        ) {
            Ok(verified) => verified,
            Err(rejection) => {
                count(rejection.label());
                tracing::warn!(kind = super::receiver::KIND, %namespace, %name, reason = %rejection, "webhook request refused");
                return reply(StatusCode::BAD_REQUEST, rejection.to_string());
            }
        };
        let requested_at = jiff::Timestamp::now().to_string();
        let mut annotated = 0usize;
        let mut failures = Vec::new();
        for resource in &receiver.spec.resources {
            match self.annotate(resource, &namespace, &requested_at).await {
                Ok(n) => annotated += n,
                Err(e) => failures.push(e.to_string()),
            }
        }
        if !failures.is_empty() {
            count("annotate_failed");
            tracing::warn!(kind = super::receiver::KIND, %namespace, %name, errors = ?failures, annotated, "webhook request: some resources could not be annotated");
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{annotated} objects annotated; {}", failures.join("; ")),
            );
        }
        count("accepted");
        tracing::info!(kind = super::receiver::KIND, %namespace, %name, event = ?verified.event, annotated, "webhook request accepted: reconcile requested");
        reply(
            StatusCode::OK,
            format!("reconcile requested for {annotated} objects"),
        )
    }

    /// Writes the reconcile-requested-at annotation on the objects `resource` names.
    async fn annotate(
        &self,
        resource: &ReceiverResource,
        receiver_namespace: &str,
        requested_at: &str,
    ) -> Result<usize, AnnotateError> {
        let namespace = resource.namespace.as_deref().unwrap_or(receiver_namespace);
        let kind = resource.kind.as_str();
        if self.no_cross_namespace_refs && namespace != receiver_namespace {
            return Err(AnnotateError::CrossNamespace {
                kind,
                namespace: namespace.to_owned(),
                name: resource.name.clone(),
            });
        }
        match resource.kind {
            ReceiverResourceKind::GitRepository => {
                annotate_in::<GitRepository>(&self.client, resource, namespace, requested_at).await
            }
            ReceiverResourceKind::Kustomization => {
                annotate_in::<Kustomization>(&self.client, resource, namespace, requested_at).await
            }
        }
    }
}

async fn annotate_in<K>(
    client: &kube::Client,
    resource: &ReceiverResource,
    namespace: &str,
    requested_at: &str,
) -> Result<usize, AnnotateError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = resource.kind.as_str();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = if resource.name == "*" {
        let selector: Selector = resource
            .match_labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        api.list_metadata(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|source| AnnotateError::Kube {
                kind,
                namespace: namespace.to_owned(),
                name: "*".to_owned(),
                source,
            })?
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect()
    } else {
        vec![resource.name.clone()]
    };
    let patch = serde_json::json!({
        "metadata": {"annotations": {meta::RECONCILE_REQUESTED_AT_ANNOTATION: requested_at}}
    });
    for name in &names {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(AnnotateError::NotFound {
                    kind,
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                });
            }
            Err(source) => {
                return Err(AnnotateError::Kube {
                    kind,
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(names.len())
}

/// Serves webhooks on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    server: Arc<WebhookServer>,
    shutdown: impl Future<Output = ()>,
) {
    let header_read_timeout = server.limits.request_timeout;
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(request).await) }
    });
    let mut http = crate::http_server::Server::new("webhook", service);
    http.header_read_timeout = header_read_timeout;
    crate::http_server::serve(listener, http, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(60, 3);
        let a = ObjectRef::new("a").within("ns");
        let b = ObjectRef::new("b").within("ns");
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(&a, start, 2, |_| true).is_ok());
        }
        let wait = limiter.take(&a, start, 2, |_| true).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another receiver has its own budget.
        assert!(limiter.take(&b, start, 2, |_| true).is_ok());
        // One request per second comes back, never more than the burst.
        assert!(
            limiter
                .take(&a, start + Duration::from_millis(1100), 2, |_| true)
                .is_ok()
        );
        assert!(
            limiter
                .take(&a, start + Duration::from_millis(1200), 2, |_| true)
                .is_err()
        );
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.take(&a, later, 2, |_| true).is_ok());
        }
        assert!(limiter.take(&a, later, 2, |_| true).is_err());
    }

    #[test]
    fn buckets_of_receivers_that_are_gone_are_dropped() {
        let limiter = RateLimiter::new(60, 3);
        let now = Instant::now();
        for i in 0..40 {
            let o = ObjectRef::new(&format!("r{i}")).within("ns");
            let _ = limiter.take(&o, now, 1, |o| o.name == "r39");
        }
        let buckets = limiter.buckets.lock().unwrap().len();
        assert!(buckets <= 19, "{buckets}");
    }
}
