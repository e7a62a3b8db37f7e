//! What every controller of the reconciler does the same way: write status, time a reconcile,
//! open its span, spread its requeues, publish its events.
//!
//! - [`write_status`]: server-side apply of `.status` under [`meta::FIELD_MANAGER`], only when
//!   it changed. Fields the controller stops setting disappear (the apply owns them), so no
//!   explicit `null`s are needed.
//! - [`ReconcileTimer`]: a drop guard that records `gitops_reconcile_duration_seconds` on every
//!   exit path, early returns and `?` included.
//! - [`reconcile_span`]: the span every reconcile runs in, with the same fields for every kind.
//! - [`jittered`]: the one requeue jitter ([`JITTER_PERCENT`]), from the one random source.
//! - [`Events`]: the event publisher of one controller.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::metrics::{Metrics, ReconcileLabels};
use crate::api::conditions::meta;

/// Writes `new` as the status of `object` with server-side apply (forced: the reconciler owns
/// its objects' status) when it differs from `old`. Returns whether it wrote.
pub async fn write_status<K, S>(
    api: &Api<K>,
    object: &K,
    old: &S,
    new: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if old == new {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(meta::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// The `result` label of a reconcile that ended without saying how (an error of the controller
/// itself, such as a failed status write).
pub const RESULT_ERROR: &str = "error";
/// The `result` label of a reconcile that did nothing (suspended, not due, being deleted).
pub const RESULT_SKIPPED: &str = "skipped";
/// The `result` label of a reconcile that succeeded.
pub const RESULT_SUCCESS: &str = "success";

/// Records the duration of one reconcile when dropped, labelled with its kind and the result
/// last set with [`ReconcileTimer::result`] ([`RESULT_ERROR`] when none was).
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    kind: &'static str,
    started: Instant,
    result: String,
    /// Namespace and name, for the per-object histogram.
    object: Option<(String, String)>,
}

impl ReconcileTimer {
    /// Starts timing a reconcile of `kind`.
    pub fn start(metrics: Arc<Metrics>, kind: &'static str) -> Self {
        Self {
            metrics,
            kind,
            started: Instant::now(),
            result: RESULT_ERROR.to_owned(),
            object: None,
        }
    }

    /// Starts timing a reconcile of the object `namespace/name` of `kind`, recorded per
    /// object too, and records whether it is `suspended`.
    pub fn for_object(
        metrics: Arc<Metrics>,
        kind: &'static str,
        namespace: &str,
        name: &str,
        suspended: bool,
    ) -> Self {
        metrics.record_suspended(kind, namespace, name, suspended);
        let mut timer = Self::start(metrics, kind);
        timer.object = Some((namespace.to_owned(), name.to_owned()));
        timer
    }

    /// How the reconcile ended: [`RESULT_SUCCESS`], [`RESULT_SKIPPED`] or a condition reason
    /// (a bounded set: the label must not carry messages or names).
    pub fn result(&mut self, result: &str) {
        result.clone_into(&mut self.result);
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        if let Some((namespace, name)) = self.object.take() {
            self.metrics
                .object_reconcile_duration
                .get_or_create(&super::metrics::ObjectLabels {
                    kind: self.kind.to_owned(),
                    namespace,
                    name,
                })
                .observe(seconds);
        }
        self.metrics
            .reconcile_duration
            .get_or_create(&ReconcileLabels {
                kind: self.kind.to_owned(),
                result: std::mem::take(&mut self.result),
            })
            .observe(seconds);
    }
}

/// The span of one reconcile of `kind` `namespace/name`.
pub fn reconcile_span(kind: &'static str, namespace: &str, name: &str) -> tracing::Span {
    tracing::info_span!("reconcile", kind, namespace = %namespace, name = %name)
}

/// The requeue jitter, in percent of the interval either way (Flux's default
/// `--interval-jitter-percentage`), so that objects created together do not poll in lockstep.
pub const JITTER_PERCENT: u32 = 5;

/// `interval` ± [`JITTER_PERCENT`], uniformly.
pub fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * f64::from(JITTER_PERCENT) / 100.0;
    let offset = (random_unit() * 2.0 - 1.0) * spread;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.0))
}

/// A uniform number in [0, 1) from a randomly keyed hash of a counter: enough for jitter, which
/// needs no cryptographic quality, and free of a seeded generator to share.
pub fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let hash = std::collections::hash_map::RandomState::new()
        .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Largest event note in bytes (events.k8s.io/v1 refuses notes over 1 kB).
pub const MAX_EVENT_NOTE: usize = 1000;

/// The event publisher of one controller: every event names the reconciler as its reporter
/// and carries an action of the controller's (`Reconcile`, `Fetch`).
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
}

impl Events {
    /// A publisher reporting as [`meta::FIELD_MANAGER`] (and the pod, from `POD_NAME`).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller: meta::FIELD_MANAGER.to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
        }
    }

    /// Publishes an event about `object`; a failure is logged, never returned (an event is
    /// not worth failing a reconcile for). The note is cut to [`MAX_EVENT_NOTE`] bytes.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        self.publish_about(object, type_, reason, action, note, None)
            .await;
    }

    /// [`publish`](Self::publish) with the revision the event is about, which Alerts forward
    /// as the `revision` metadata. Every event also goes to the notification queue
    /// ([`crate::notify::alert::submit`]) when notifications run in this process.
    pub async fn publish_about<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        revision: Option<&str>,
    ) {
        let meta = object.meta();
        crate::notify::alert::submit(crate::notify::alert::Event {
            kind: K::kind(&()).into_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            severity: match type_ {
                EventType::Warning => crate::api::alert::EventSeverity::Error,
                EventType::Normal => crate::api::alert::EventSeverity::Info,
            },
            reason: reason.to_owned(),
            message: truncate(note, MAX_EVENT_NOTE),
            metadata: revision
                .map(|r| {
                    [(crate::notify::alert::REVISION_KEY.to_owned(), r.to_owned())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: jiff::Timestamp::now(),
            reporting_controller: self.reporter.controller.clone(),
        });
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, MAX_EVENT_NOTE)),
            action: action.to_owned(),
            secondary: None,
        };
        // kube's Recorder folds events with the same reason and action into one series that
        // keeps the first note; our notes differ (a revision, counts, a cause), so each
        // event starts its own series.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn jitter_stays_within_its_percentage_and_spreads() {
        let base = Duration::from_secs(60);
        let spread = 60.0 * f64::from(JITTER_PERCENT) / 100.0;
        let samples: Vec<f64> = (0..200).map(|_| jittered(base).as_secs_f64()).collect();
        for d in &samples {
            assert!((60.0 - spread..=60.0 + spread).contains(d), "{d}");
        }
        assert!(
            samples.iter().any(|d| *d < 59.0),
            "never below: {samples:?}"
        );
        assert!(
            samples.iter().any(|d| *d > 61.0),
            "never above: {samples:?}"
        );
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }

    #[test]
    fn the_timer_records_on_every_exit_path() {
        let metrics = Arc::new(Metrics::default());
        let early_return = |metrics: &Arc<Metrics>| -> Result<(), ()> {
            let _timer = ReconcileTimer::start(metrics.clone(), "GitRepository");
            Err(())?;
            Ok(())
        };
        let _ = early_return(&metrics);
        {
            let mut timer = ReconcileTimer::start(metrics.clone(), "GitRepository");
            timer.result(RESULT_SUCCESS);
        }
        {
            let _timer =
                ReconcileTimer::for_object(metrics.clone(), "Kustomization", "ns", "app", true);
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"gitops_object_reconcile_duration_seconds_count{kind="Kustomization",namespace="ns",name="app"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gitops_suspend_status{kind="Kustomization",namespace="ns",name="app"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gitops_reconcile_duration_seconds_count{kind="GitRepository",result="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"gitops_reconcile_duration_seconds_count{kind="GitRepository",result="success"} 1"#),
            "{text}"
        );
    }

    /// A minimal apiserver on 127.0.0.1 that answers every request with `reply` and records
    /// `METHOD path?query content-type body` of each.
    async fn recording_apiserver(reply: &'static str) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server_seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = server_seen.clone();
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let head = format!(
                                "{} {}?{} {}",
                                req.method(),
                                req.uri().path(),
                                req.uri().query().unwrap_or_default(),
                                req.headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock()
                                .unwrap()
                                .push(format!("{head} {}", String::from_utf8_lossy(&body)));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(reply)),
                            ))
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        (kube::Client::try_from(config).unwrap(), seen)
    }

    #[tokio::test]
    async fn the_status_writer_applies_the_status_only_when_it_changed() {
        use crate::api::{GitRepository, GitRepositoryStatus};
        const REPO: &str = r#"{"apiVersion":"kubectl-gitops.io/v1alpha1","kind":"GitRepository","metadata":{"name":"app","namespace":"team"},"spec":{"url":"https://example.invalid/app.git","interval":"1m"}}"#;
        let (client, seen) = recording_apiserver(REPO).await;
        let repo: GitRepository = serde_json::from_str(REPO).unwrap();
        let api: Api<GitRepository> = Api::namespaced(client, "team");
        let old = GitRepositoryStatus::default();
        assert!(!write_status(&api, &repo, &old, &old.clone()).await.unwrap());
        assert!(seen.lock().unwrap().is_empty(), "wrote an unchanged status");

        let mut new = old.clone();
        new.observed_generation = Some(2);
        assert!(write_status(&api, &repo, &old, &new).await.unwrap());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let request = &seen[0];
        assert!(
            request.starts_with(
                "PATCH /apis/kubectl-gitops.io/v1alpha1/namespaces/team/gitrepositories/app/status?"
            ),
            "{request}"
        );
        for part in [
            "fieldManager=gitops-reconciler",
            "force=true",
            "application/apply-patch+yaml",
            r#""kind":"GitRepository""#,
            r#""observedGeneration":2"#,
        ] {
            assert!(request.contains(part), "{part} missing: {request}");
        }
    }

    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_EVENT_NOTE);
        let cut = truncate(&long, MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", MAX_EVENT_NOTE), "short");
    }
}
