//! Forwarding the reconciler's own events to Providers, as Alerts select them.
//!
//! Expected flow: a controller publishes an event ([`crate::controller::common::Events`]) →
//! [`submit`] puts it on the process's bounded queue (the oldest event is dropped and counted
//! when it is full) → the dispatcher takes it, finds the Alerts that select it (kind, name or
//! `*`, namespace, matchLabels, severity, inclusion/exclusion regexes, not suspended) → per
//! Alert, a duplicate of an event forwarded within [`DispatchConfig::rate_limit_window`] is
//! dropped (Flux's key: object, message, revision) → the Provider's delivery runs in its own
//! task, at most [`DispatchConfig::max_deliveries`] at once, retried with an exponential
//! backoff up to [`DispatchConfig::attempts`] times.
//!
//! Guarantees: memory is bounded by the queue's capacity, the delivery slots and the
//! rate-limit table (pruned of entries older than the window); the controllers never wait for
//! a delivery ([`submit`] only takes a lock); a Provider's address, token and headers are read
//! from its Secret for each delivery and never logged (log lines name the Provider and the
//! address's scheme and host only).
//!
//! Caveats: the queue lives in memory; events queued or being retried when the process stops
//! are lost (as in Flux). With leader election only the leader's controllers publish events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, Semaphore};

use super::provider::{self, Delivery, DeliveryError};
use crate::api::alert::{Alert, EventSeverity, Provider};
use crate::backoff;
use crate::controller::metrics::Metrics;
use crate::controller::watch::logged;

/// One event of the reconciler, as Alerts see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The involved object's kind (`GitRepository`, `Kustomization`, `Receiver`).
    pub kind: String,
    /// The involved object's namespace.
    pub namespace: String,
    /// The involved object's name.
    pub name: String,
    /// Labels of the object (for `matchLabels`).
    pub labels: BTreeMap<String, String>,
    /// `error` for failures (Warning events), `info` otherwise.
    pub severity: EventSeverity,
    /// The event's reason (a condition reason such as `PolicyDenied`).
    pub reason: String,
    /// The event's message.
    pub message: String,
    /// `revision` and whatever else the controller knew; Alerts add theirs.
    pub metadata: BTreeMap<String, String>,
    /// When the controller emitted it.
    pub timestamp: jiff::Timestamp,
    /// The controller that emitted it (the event's `reportingController`).
    pub reporting_controller: String,
}

impl Event {
    /// The identity of an event for duplicate suppression: the object, the message and the
    /// revision (as Flux keys them).
    pub fn key(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for part in [
            "name=",
            &self.name,
            "/namespace=",
            &self.namespace,
            "/kind=",
            &self.kind,
            "/message=",
            &self.message,
        ] {
            hasher.update(part.as_bytes());
        }
        if let Some(revision) = self.metadata.get(REVISION_KEY) {
            hasher.update(b"/revision=");
            hasher.update(revision.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Metadata key of the revision an event is about.
pub const REVISION_KEY: &str = "revision";

/// Limits of the dispatcher (one place; the reconciler's flags take their defaults here).
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Events waiting for dispatch; beyond it the oldest is dropped.
    pub queue_capacity: usize,
    /// A duplicate of an event forwarded by the same Alert within this window is dropped
    /// (Flux's `--rate-limit-interval`, 5m).
    pub rate_limit_window: Duration,
    /// Deliveries (with their retries) running at once.
    pub max_deliveries: usize,
    /// Attempts per delivery, the first included.
    pub attempts: usize,
    /// First wait between attempts; it doubles.
    pub first_retry: Duration,
    /// Refuse Alerts selecting events of another namespace.
    pub no_cross_namespace_refs: bool,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            rate_limit_window: Duration::from_secs(300),
            max_deliveries: 16,
            attempts: 4,
            first_retry: Duration::from_secs(1),
            no_cross_namespace_refs: true,
        }
    }
}

/// The bounded queue between the controllers and the dispatcher.
pub struct EventQueue {
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
    ready: Notify,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    /// An empty queue that holds at most `capacity` events (at least one).
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: Notify::new(),
            metrics,
        }
    }

    /// Queues `event`, dropping (and counting) the oldest when full.
    pub fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        while events.len() >= self.capacity {
            events.pop_front();
            self.metrics.alert_events_dropped.inc();
        }
        events.push_back(event);
        self.metrics.alert_queue_length.set(events.len() as i64);
        drop(events);
        self.ready.notify_one();
    }

    /// The next event, waiting for one.
    pub async fn pop(&self) -> Event {
        loop {
            let notified = self.ready.notified();
            {
                let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(event) = events.pop_front() {
                    self.metrics.alert_queue_length.set(events.len() as i64);
                    return event;
                }
            }
            notified.await;
        }
    }

    /// Events waiting for the dispatcher.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The process's event queue, when notifications run. Event publishers are created inside each
/// controller, so the queue is found here rather than passed through every controller.
static QUEUE: OnceLock<Arc<EventQueue>> = OnceLock::new();

/// Makes `queue` the process's event queue; false when one was installed already.
pub fn install(queue: Arc<EventQueue>) -> bool {
    QUEUE.set(queue).is_ok()
}

/// Hands `event` to the dispatcher, if notifications run in this process.
pub fn submit(event: Event) {
    if let Some(queue) = QUEUE.get() {
        queue.push(event);
    }
}

/// Whether `alert` selects `event` (sources, severity, regexes; not suspension).
pub fn selects(
    alert: &Alert,
    event: &Event,
    no_cross_namespace_refs: bool,
) -> Result<bool, regex::Error> {
    let own = alert.namespace().unwrap_or_default();
    if alert.spec.event_severity == EventSeverity::Error && event.severity != EventSeverity::Error {
        return Ok(false);
    }
    let source = alert.spec.event_sources.iter().any(|source| {
        let namespace = source.namespace.as_deref().unwrap_or(&own);
        if no_cross_namespace_refs && namespace != own {
            return false;
        }
        source.kind.as_str() == event.kind
            && namespace == event.namespace
            && (source.name == "*" || source.name == event.name)
            && source
                .match_labels
                .as_ref()
                .is_none_or(|wanted| wanted.iter().all(|(k, v)| event.labels.get(k) == Some(v)))
    });
    if !source {
        return Ok(false);
    }
    let compile = |pattern: &str| {
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
    };
    if !alert.spec.inclusion_list.is_empty() {
        let mut included = false;
        for pattern in &alert.spec.inclusion_list {
            included |= compile(pattern)?.is_match(&event.message);
        }
        if !included {
            return Ok(false);
        }
    }
    for pattern in &alert.spec.exclusion_list {
        if compile(pattern)?.is_match(&event.message) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `event` with `alert`'s metadata added (the event's own keys win) and its summary.
pub fn with_alert_metadata(alert: &Alert, event: &Event) -> Event {
    let mut event = event.clone();
    for (k, v) in alert.spec.event_metadata.iter().flatten() {
        event.metadata.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(summary) = &alert.spec.summary {
        event
            .metadata
            .entry("summary".to_owned())
            .or_insert_with(|| summary.clone());
    }
    event
}

/// Duplicate suppression: when each (Alert, event key) was last forwarded.
pub struct RecentEvents {
    window: Duration,
    seen: HashMap<(ObjectRef<Alert>, String), Instant>,
    limit: usize,
}

impl RecentEvents {
    /// Remembers keys for `window`, at most `limit` of them (at least one).
    pub fn new(window: Duration, limit: usize) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            limit: limit.max(1),
        }
    }

    /// True the first time (alert, key) is seen within the window; records it.
    pub fn first(&mut self, alert: &ObjectRef<Alert>, key: &str, now: Instant) -> bool {
        if self.seen.len() >= self.limit {
            let window = self.window;
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            // Still full of recent keys: forget the oldest half rather than grow.
            if self.seen.len() >= self.limit {
                let mut times: Vec<Instant> = self.seen.values().copied().collect();
                times.sort();
                let cut = times[times.len() / 2];
                self.seen.retain(|_, at| *at > cut);
            }
        }
        let entry = (alert.clone(), key.to_owned());
        match self.seen.get(&entry) {
            Some(at) if now.saturating_duration_since(*at) < self.window => false,
            _ => {
                self.seen.insert(entry, now);
                true
            }
        }
    }

    /// Keys remembered now (recent or not yet forgotten).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Runs the dispatcher: watches Alerts and Providers, takes events from `queue` and delivers
/// them, until `shutdown` completes.
pub async fn run_alerts(
    client: kube::Client,
    config: DispatchConfig,
    queue: Arc<EventQueue>,
    metrics: Arc<Metrics>,
    watch_label_selector: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(selector) = &watch_label_selector {
        wc = wc.labels(selector);
    }
    use kube::CustomResourceExt as _;
    let (alerts, alert_writer) = reflector::store::<Alert>();
    let (providers, provider_writer) = reflector::store::<Provider>();
    let alert_watch = logged(
        watcher(Api::<Alert>::all(client.clone()), wc.clone()),
        Alert::crd_name(),
    )
    .backoff(backoff::backoff())
    .reflect(alert_writer)
    .for_each(|_| futures::future::ready(()));
    let provider_watch = logged(
        watcher(Api::<Provider>::all(client.clone()), wc),
        Provider::crd_name(),
    )
    .backoff(backoff::backoff())
    .reflect(provider_writer)
    .for_each(|_| futures::future::ready(()));
    let watches = tokio::spawn(async move {
        tokio::join!(alert_watch, provider_watch);
    });
    let dispatcher = Dispatcher {
        client,
        slots: Arc::new(Semaphore::new(config.max_deliveries.max(1))),
        recent: Mutex::new(RecentEvents::new(
            config.rate_limit_window,
            config.queue_capacity * 8,
        )),
        config,
        alerts,
        providers,
        metrics,
    };
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            event = queue.pop() => event,
            () = &mut shutdown => break,
        };
        dispatcher.dispatch(event).await;
    }
    watches.abort();
}

struct Dispatcher {
    client: kube::Client,
    config: DispatchConfig,
    alerts: Store<Alert>,
    providers: Store<Provider>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    recent: Mutex<RecentEvents>,
}

impl Dispatcher {
    async fn dispatch(&self, event: Event) {
        let key = event.key();
        for alert in self.alerts.state() {
            if alert.spec.suspend == Some(true) {
                continue;
            }
            let alert_ns = alert.namespace().unwrap_or_default();
            match selects(&alert, &event, self.config.no_cross_namespace_refs) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(kind = "Alert", namespace = %alert_ns, name = %alert.name_any(), error = %e, "alert has an invalid regular expression; skipped");
                    continue;
                }
            }
            let alert_ref = ObjectRef::from_obj(alert.as_ref());
            let first = self.recent.lock().unwrap_or_else(|e| e.into_inner()).first(
                &alert_ref,
                &key,
                Instant::now(),
            );
            let provider_name = alert.spec.provider_ref.name.clone();
            if !first {
                self.metrics
                    .count_alert_delivery(&alert_ns, &provider_name, "rate_limited");
                continue;
            }
            let Some(provider) = self
                .providers
                .get(&ObjectRef::new(&provider_name).within(&alert_ns))
            else {
                tracing::warn!(kind = "Alert", namespace = %alert_ns, name = %alert.name_any(), provider = %provider_name, "the alert's provider does not exist");
                self.metrics
                    .count_alert_delivery(&alert_ns, &provider_name, "provider_not_found");
                continue;
            };
            if provider.spec.suspend == Some(true) {
                self.metrics
                    .count_alert_delivery(&alert_ns, &provider_name, "suspended");
                continue;
            }
            // Waiting for a slot holds the queue: events pile up there (bounded) rather than
            // as tasks.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return;
            };
            let delivery = Delivery {
                client: self.client.clone(),
                provider,
                event: with_alert_metadata(&alert, &event),
            };
            let metrics = self.metrics.clone();
            let attempts = self.config.attempts.max(1);
            let first_retry = self.config.first_retry;
            tokio::spawn(async move {
                let _slot = slot;
                let result = deliver_with_retries(&delivery, attempts, first_retry).await;
                let ns = delivery.provider.namespace().unwrap_or_default();
                let name = delivery.provider.name_any();
                match result {
                    Ok(()) => metrics.count_alert_delivery(&ns, &name, "delivered"),
                    Err(e) => {
                        tracing::warn!(kind = "Provider", namespace = %ns, name = %name, error = %e, "alert delivery failed");
                        metrics.count_alert_delivery(&ns, &name, "failed");
                    }
                }
            });
        }
    }
}

/// Delivers, retrying transient failures with a doubling wait.
pub async fn deliver_with_retries(
    delivery: &Delivery,
    attempts: usize,
    first_retry: Duration,
) -> Result<(), DeliveryError> {
    let mut wait = first_retry;
    let mut attempt = 1;
    loop {
        match provider::deliver(delivery).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt < attempts => {
                tracing::debug!(attempt, error = %e, "alert delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(kind: &str, name: &str, severity: EventSeverity, message: &str) -> Event {
        Event {
            kind: kind.to_owned(),
            namespace: "team".to_owned(),
            name: name.to_owned(),
            labels: BTreeMap::from([("tier".to_owned(), "web".to_owned())]),
            severity,
            reason: "PolicyDenied".to_owned(),
            message: message.to_owned(),
            metadata: BTreeMap::from([(REVISION_KEY.to_owned(), "main@sha1:abc".to_owned())]),
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            reporting_controller: "gitops-reconciler".to_owned(),
        }
    }

    fn alert(spec: serde_json::Value) -> Alert {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1",
            "kind": "Alert",
            "metadata": {"name": "a", "namespace": "team"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn alerts_select_by_kind_name_labels_severity_and_regexes() {
        let denied = event(
            "Kustomization",
            "app",
            EventSeverity::Error,
            "policy 'bounds' denied",
        );
        let applied = event(
            "Kustomization",
            "app",
            EventSeverity::Info,
            "Applied revision: main@sha1:abc",
        );
        let all = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}]}),
        );
        assert!(selects(&all, &denied, true).unwrap());
        assert!(selects(&all, &applied, true).unwrap());
        let errors = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSeverity": "error", "eventSources": [{"kind": "Kustomization", "name": "app"}]}),
        );
        assert!(selects(&errors, &denied, true).unwrap());
        assert!(!selects(&errors, &applied, true).unwrap());
        let other_kind = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "GitRepository", "name": "*"}]}),
        );
        assert!(!selects(&other_kind, &denied, true).unwrap());
        let other_name = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "db"}]}),
        );
        assert!(!selects(&other_name, &denied, true).unwrap());
        let labels = |tier: &str| {
            alert(
                serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*", "matchLabels": {"tier": tier}}]}),
            )
        };
        assert!(selects(&labels("web"), &denied, true).unwrap());
        assert!(!selects(&labels("db"), &denied, true).unwrap());
        let include = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}], "inclusionList": ["^policy"]}),
        );
        assert!(selects(&include, &denied, true).unwrap());
        assert!(!selects(&include, &applied, true).unwrap());
        let exclude = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}], "exclusionList": ["bounds"]}),
        );
        assert!(!selects(&exclude, &denied, true).unwrap());
        assert!(selects(&exclude, &applied, true).unwrap());
        let bad = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}], "exclusionList": ["("]}),
        );
        assert!(selects(&bad, &denied, true).is_err());
    }

    #[test]
    fn another_namespace_is_selected_only_when_allowed() {
        let elsewhere = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*", "namespace": "other"}]}),
        );
        let mut e = event("Kustomization", "app", EventSeverity::Info, "x");
        e.namespace = "other".to_owned();
        assert!(!selects(&elsewhere, &e, true).unwrap());
        assert!(selects(&elsewhere, &e, false).unwrap());
    }

    #[test]
    fn alert_metadata_adds_without_overriding() {
        let a = alert(
            serde_json::json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}], "eventMetadata": {"env": "prod", "revision": "fake"}, "summary": "cluster eu-1"}),
        );
        let e = with_alert_metadata(&a, &event("Kustomization", "app", EventSeverity::Info, "x"));
        assert_eq!(e.metadata["env"], "prod");
        assert_eq!(e.metadata["revision"], "main@sha1:abc");
        assert_eq!(e.metadata["summary"], "cluster eu-1");
    }

    #[test]
    fn duplicates_within_the_window_are_dropped_and_the_table_stays_bounded() {
        let mut recent = RecentEvents::new(Duration::from_secs(300), 64);
        let a = ObjectRef::new("a").within("team");
        let b = ObjectRef::new("b").within("team");
        let now = Instant::now();
        let key = event("Kustomization", "app", EventSeverity::Error, "denied").key();
        assert!(recent.first(&a, &key, now));
        assert!(!recent.first(&a, &key, now + Duration::from_secs(299)));
        // Another alert forwards it too.
        assert!(recent.first(&b, &key, now));
        // After the window, again.
        assert!(recent.first(&a, &key, now + Duration::from_secs(301)));
        // A new revision or message is another event.
        let mut other = event("Kustomization", "app", EventSeverity::Error, "denied");
        other
            .metadata
            .insert(REVISION_KEY.into(), "main@sha1:def".into());
        assert_ne!(other.key(), key);
        for i in 0..1000 {
            recent.first(&a, &format!("k{i}"), now);
        }
        assert!(recent.len() <= 64, "{}", recent.len());
    }

    #[tokio::test]
    async fn the_queue_drops_the_oldest_when_full_and_counts_it() {
        let metrics = Arc::new(Metrics::default());
        let queue = EventQueue::new(3, metrics.clone());
        for i in 0..5 {
            queue.push(event(
                "Kustomization",
                &format!("k{i}"),
                EventSeverity::Info,
                "x",
            ));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop().await.name, "k2");
        let text = metrics.encode();
        assert!(
            text.contains("gitops_alert_events_dropped_total 2"),
            "{text}"
        );
    }
}
