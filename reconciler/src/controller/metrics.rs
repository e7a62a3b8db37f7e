//! Prometheus metrics of the reconciler (OpenMetrics text on `/metrics`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `gitops_reconcile_duration_seconds`: one series per kind and outcome, never per object
/// (bounded cardinality).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `Kustomization` or `GitRepository`.
    pub kind: String,
    /// `success` or the failure reason (a stable, bounded set).
    pub result: String,
}

/// One object of a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// The object's kind (`Kustomization`, `GitRepository`, ...).
    pub kind: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// Buckets of the reconcile durations: 10 ms doubling to 2621 s, so that reconciles that wait
/// up to the 30-minute health-check timeouts still land in a bucket, not in +Inf.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.01, 2.0, 19)
}

/// Labels of `gitops_reconcile_condition`: one series per object, condition type and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// The object's kind.
    pub kind: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The condition type (only `Ready` is recorded).
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// Labels of `gitops_applied_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `created`, `configured`, `recreated`, `unchanged`, `pruned`.
    pub action: String,
}

/// Labels of `gitops_source_fetch_aborted`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AbortLabels {
    /// The limit's label (`source::Limit::label`), `timeout` or `cancelled`.
    pub cause: String,
}

/// Labels of `gitops_policy_audit_violations`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// The Kustomization whose render was audited.
    pub namespace: String,
    /// The Kustomization's name.
    pub name: String,
    /// The audit step (a ClusterPolicy's name or a step of `spec.policies`).
    pub policy: String,
}

/// Labels of `gitops_receiver_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverRequestLabels {
    /// The Receiver (empty when the path matched none).
    pub namespace: String,
    /// The Receiver's name (empty when the path matched none).
    pub name: String,
    /// `accepted` or why the request was refused (a bounded set, see `notify::server`).
    pub result: String,
}

/// Labels of `gitops_alert_deliveries`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertDeliveryLabels {
    /// The Provider (for `rate_limited`: the Alert's namespace and its providerRef).
    pub namespace: String,
    /// The Provider's name (for `rate_limited`: the Alert's providerRef).
    pub name: String,
    /// `delivered`, `failed`, `rate_limited`, `suspended` or `provider_not_found`.
    pub result: String,
}

/// Every metric of the process, registered once.
pub struct Metrics {
    registry: Registry,
    /// `gitops_reconcile_duration_seconds`: reconcile durations by kind and result, recorded on
    /// every exit path.
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    /// Reconcile durations per object (Flux's `gotk_reconcile_duration_seconds` labels).
    pub object_reconcile_duration: Family<ObjectLabels, Histogram>,
    /// 1 while an object is suspended, else 0.
    pub suspended: Family<ObjectLabels, Gauge>,
    /// `gitops_reconcile_condition`: per object, 1 for the current status of its Ready condition
    /// and 0 for the other two statuses.
    pub conditions: Family<ConditionLabels, Gauge>,
    /// `gitops_applied_objects`: objects created, configured, recreated, unchanged or pruned,
    /// summed over every Kustomization.
    pub objects: Family<ActionLabels, Counter>,
    /// Bytes in the source storage (artifacts and git caches).
    pub source_storage_bytes: Gauge,
    /// Fetches stopped before they finished, by cause.
    pub source_fetch_aborted: Family<AbortLabels, Counter>,
    /// Violations found by policies in audit mode (they deny nothing).
    pub policy_audit_violations: Family<AuditLabels, Counter>,
    /// Webhook requests to Receivers, by Receiver and result.
    pub receiver_requests: Family<ReceiverRequestLabels, Counter>,
    /// Alert deliveries by Provider and result.
    pub alert_deliveries: Family<AlertDeliveryLabels, Counter>,
    /// Events dropped from the full alert queue (the oldest go first).
    pub alert_events_dropped: Counter,
    /// Events waiting in the alert queue.
    pub alert_queue_length: Gauge,
    encode_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gitops");
        let reconcile_duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles by kind and result",
            reconcile_duration.clone(),
        );
        let object_reconcile_duration =
            Family::<ObjectLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(duration_buckets())
            });
        registry.register(
            "object_reconcile_duration_seconds",
            "Duration of reconciles by object (kind, namespace, name)",
            object_reconcile_duration.clone(),
        );
        let suspended = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "suspend_status",
            "1 while the object is suspended, else 0",
            suspended.clone(),
        );
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "reconcile_condition",
            "1 for the current status of each condition of each object",
            conditions.clone(),
        );
        let objects = Family::<ActionLabels, Counter>::default();
        registry.register(
            "applied_objects",
            "Objects handled by apply and prune, by action",
            objects.clone(),
        );
        let source_storage_bytes = Gauge::default();
        registry.register(
            "source_storage_bytes",
            "Bytes in the source storage (artifacts and git caches)",
            source_storage_bytes.clone(),
        );
        let source_fetch_aborted = Family::<AbortLabels, Counter>::default();
        registry.register(
            "source_fetch_aborted",
            "Fetches stopped before they finished, by cause (a size limit, timeout, cancelled)",
            source_fetch_aborted.clone(),
        );
        let policy_audit_violations = Family::<AuditLabels, Counter>::default();
        registry.register(
            "policy_audit_violations",
            "Violations reported by policies in audit mode, per Kustomization and policy",
            policy_audit_violations.clone(),
        );
        let receiver_requests = Family::<ReceiverRequestLabels, Counter>::default();
        registry.register(
            "receiver_requests",
            "Webhook requests to Receivers, by Receiver and result (accepted or the refusal)",
            receiver_requests.clone(),
        );
        let alert_deliveries = Family::<AlertDeliveryLabels, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Alert deliveries by Provider and result",
            alert_deliveries.clone(),
        );
        let alert_events_dropped = Counter::default();
        registry.register(
            "alert_events_dropped",
            "Events dropped from the full alert queue (oldest first)",
            alert_events_dropped.clone(),
        );
        let alert_queue_length = Gauge::default();
        registry.register(
            "alert_queue_length",
            "Events waiting in the alert queue",
            alert_queue_length.clone(),
        );
        Self {
            object_reconcile_duration,
            suspended,
            policy_audit_violations,
            receiver_requests,
            alert_deliveries,
            alert_events_dropped,
            alert_queue_length,
            registry,
            reconcile_duration,
            conditions,
            objects,
            source_storage_bytes,
            source_fetch_aborted,
            encode_lock: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let _guard = self.encode_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records the Ready condition of an object: the gauge of the current status is 1, the
    /// others 0 (so alerts can use `== 1`).
    pub fn record_ready(&self, kind: &str, namespace: &str, name: &str, status: Option<&str>) {
        for candidate in ["True", "False", "Unknown"] {
            let labels = ConditionLabels {
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                r#type: "Ready".to_owned(),
                status: candidate.to_owned(),
            };
            let value = i64::from(status == Some(candidate));
            self.conditions.get_or_create(&labels).set(value);
        }
    }

    /// Records whether an object is suspended.
    pub fn record_suspended(&self, kind: &str, namespace: &str, name: &str, suspended: bool) {
        self.suspended
            .get_or_create(&ObjectLabels {
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .set(i64::from(suspended));
    }

    /// Drops the series of a deleted object.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let object = ObjectLabels {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.suspended.remove(&object);
        self.object_reconcile_duration.remove(&object);
        for candidate in ["True", "False", "Unknown"] {
            self.conditions.remove(&ConditionLabels {
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                r#type: "Ready".to_owned(),
                status: candidate.to_owned(),
            });
        }
    }

    /// Counts a fetch stopped by `cause`.
    pub fn count_aborted_fetch(&self, cause: &str) {
        self.source_fetch_aborted
            .get_or_create(&AbortLabels {
                cause: cause.to_owned(),
            })
            .inc();
    }

    /// Counts one violation of `policy` (in audit mode) in the render of Kustomization
    /// `namespace/name`.
    pub fn count_audit_violation(&self, namespace: &str, name: &str, policy: &str) {
        self.policy_audit_violations
            .get_or_create(&AuditLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                policy: policy.to_owned(),
            })
            .inc();
    }

    /// Counts a webhook request to the Receiver `namespace/name` that ended with `result`.
    pub fn count_receiver_request(&self, namespace: &str, name: &str, result: &str) {
        self.receiver_requests
            .get_or_create(&ReceiverRequestLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts an alert delivery to the Provider `namespace/name` that ended with `result`.
    pub fn count_alert_delivery(&self, namespace: &str, name: &str, result: &str) {
        self.alert_deliveries
            .get_or_create(&AlertDeliveryLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Adds `n` objects to the `action` counter of `gitops_applied_objects`; nothing when `n` is 0
    /// (no empty series).
    pub fn count_objects(&self, action: &str, n: usize) {
        if n > 0 {
            self.objects
                .get_or_create(&ActionLabels {
                    action: action.to_owned(),
                })
                .inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_violations_are_counted_per_kustomization_and_policy() {
        let metrics = Metrics::default();
        metrics.count_audit_violation("team", "app", "bounds");
        metrics.count_audit_violation("team", "app", "bounds");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"gitops_policy_audit_violations_total{namespace="team",name="app",policy="bounds"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn durations_up_to_30_minutes_land_in_a_bucket_and_objects_have_their_series() {
        let m = Metrics::default();
        m.object_reconcile_duration
            .get_or_create(&ObjectLabels {
                kind: "Kustomization".into(),
                namespace: "ns".into(),
                name: "app".into(),
            })
            .observe(1700.0);
        m.record_suspended("Kustomization", "ns", "app", true);
        let text = m.encode();
        assert!(
            text.contains(r#"gitops_object_reconcile_duration_seconds_bucket{le="2621.44",kind="Kustomization",namespace="ns",name="app"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gitops_suspend_status{kind="Kustomization",namespace="ns",name="app"} 1"#
            ),
            "{text}"
        );
        m.forget("Kustomization", "ns", "app");
        assert!(!m.encode().contains(r#"name="app""#));
    }

    #[test]
    fn exposition_contains_the_series() {
        let m = Metrics::default();
        m.reconcile_duration
            .get_or_create(&ReconcileLabels {
                kind: "Kustomization".into(),
                result: "success".into(),
            })
            .observe(0.2);
        m.record_ready("Kustomization", "ns", "app", Some("True"));
        m.count_objects("created", 3);
        let text = m.encode();
        assert!(
            text.contains("gitops_reconcile_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains(r#"gitops_reconcile_condition{kind="Kustomization",namespace="ns",name="app",type="Ready",status="True"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gitops_applied_objects_total{action="created"} 3"#),
            "{text}"
        );
    }
}
