//! The status of ClusterPolicies, written from the reconciles of the Kustomizations they apply
//! to: `selected` (which Kustomizations the policy ran on at their last reconcile) and
//! `lastViolations` (what it reported there, newest first).
//!
//! Expected flow: after the policy stage of a Kustomization, [`record`] lists the
//! ClusterPolicies, and for each one whose recorded state about this Kustomization changed —
//! newly selected, no longer selected, other violations — computes the new status with
//! [`next_status`] and writes it with a server-side apply under the reconciler's one field
//! manager, carrying the `resourceVersion` it read, so that two reconciles updating the same
//! ClusterPolicy at once cannot lose each other's entries (a conflict re-reads and retries).
//!
//! Guarantees: bounded — at most [`MAX_SELECTED`] names and [`MAX_VIOLATIONS`] violations per
//! policy, messages as bounded as the policy host made them; never fails the reconcile: a
//! failed write is logged and the next reconcile writes again.
//!
//! Caveats: `selected` is what the Kustomizations' own reconciles saw: a Kustomization that
//! starts or stops matching is listed or dropped at its next reconcile, and a deleted one is
//! dropped by [`forget`] when its finalizer runs. Past [`MAX_SELECTED`] names, further ones
//! are not listed.

use std::collections::BTreeSet;

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::conditions::meta;
use crate::api::{ClusterPolicy, ClusterPolicyStatus, RecordedViolation};
use crate::policy::{Severity, Violation};

/// Names listed in `status.selected` at most.
pub const MAX_SELECTED: usize = 1000;
/// Violations kept in `status.lastViolations` at most.
pub const MAX_VIOLATIONS: usize = 20;
/// Writes of one status tried at most (the first plus retries after a conflict).
const MAX_ATTEMPTS: usize = 4;

/// What one reconcile learned about one ClusterPolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    /// `namespace/name` of the Kustomization.
    pub kustomization: &'a str,
    /// Whether the policy selected it.
    pub selected: bool,
    /// The source revision checked.
    pub revision: &'a str,
    /// What the policy reported (empty if it was not selected, or found nothing).
    pub violations: &'a [Violation],
    /// Now, RFC 3339.
    pub time: &'a str,
}

/// The status after `observation`, from `current` (the other fields are kept as they are).
/// `None` when nothing changes, so that an unchanged policy costs no write.
pub fn next_status(
    current: &ClusterPolicyStatus,
    observation: &Observation<'_>,
) -> Option<ClusterPolicyStatus> {
    let mut next = current.clone();
    let mut selected: BTreeSet<String> = current.selected.iter().cloned().collect();
    if observation.selected {
        if selected.len() < MAX_SELECTED {
            selected.insert(observation.kustomization.to_owned());
        }
    } else {
        selected.remove(observation.kustomization);
    }
    next.selected = selected.into_iter().collect();

    let old_mine: Vec<&RecordedViolation> = current
        .last_violations
        .iter()
        .filter(|v| v.kustomization == observation.kustomization)
        .collect();
    let new_mine: Vec<RecordedViolation> = observation
        .violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| RecordedViolation {
            kustomization: observation.kustomization.to_owned(),
            revision: observation.revision.to_owned(),
            object: v.object.as_ref().map(ToString::to_string),
            field: v.field.clone(),
            message: v.message.clone(),
            severity: match v.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            }
            .to_owned(),
            time: observation.time.to_owned(),
        })
        .collect();
    // The same findings again are no news: keep the entries (and their time) as they are.
    let same = old_mine.len() == new_mine.len()
        && old_mine.iter().zip(&new_mine).all(|(old, new)| {
            (
                &old.revision,
                &old.object,
                &old.field,
                &old.message,
                &old.severity,
            ) == (
                &new.revision,
                &new.object,
                &new.field,
                &new.message,
                &new.severity,
            )
        });
    if !same {
        let others = current
            .last_violations
            .iter()
            .filter(|v| v.kustomization != observation.kustomization)
            .cloned();
        next.last_violations = new_mine
            .into_iter()
            .chain(others)
            .take(MAX_VIOLATIONS)
            .collect();
    }
    (next != *current).then_some(next)
}

/// Records what the policy stage of Kustomization `namespace/name` found: `selected` names the
/// ClusterPolicies that ran on it, `violations` are everything the pipeline reported (those of
/// other steps are ignored). Errors are logged, never returned.
/// The ClusterPolicies are read from `known` (the reconciler's watch) when given.
pub async fn record(
    client: &kube::Client,
    known: Option<&Store<ClusterPolicy>>,
    kustomization: &str,
    revision: &str,
    selected: &[String],
    violations: &[Violation],
) {
    let api: Api<ClusterPolicy> = Api::all(client.clone());
    let policies = match super::render::cluster_policies(known, client).await {
        Ok(policies) => policies,
        Err(e) => {
            tracing::warn!(error = %e, "reading ClusterPolicies to record their status");
            return;
        }
    };
    let time = jiff::Timestamp::now().to_string();
    for policy in policies {
        let name = policy.name_any();
        let mine: Vec<Violation> = violations
            .iter()
            .filter(|v| v.policy == name)
            .cloned()
            .collect();
        let observation = Observation {
            kustomization,
            selected: selected.contains(&name),
            revision,
            violations: &mine,
            time: &time,
        };
        if let Err(e) = write(&api, policy, &observation).await {
            tracing::warn!(clusterpolicy = %name, error = %e, "writing ClusterPolicy status");
        }
    }
}

/// Removes a deleted Kustomization from every ClusterPolicy's status.
pub async fn forget(
    client: &kube::Client,
    known: Option<&Store<ClusterPolicy>>,
    kustomization: &str,
) {
    record(client, known, kustomization, "", &[], &[]).await;
}

/// Applies the next status of `policy`, re-reading it after a conflict.
async fn write(
    api: &Api<ClusterPolicy>,
    mut policy: ClusterPolicy,
    observation: &Observation<'_>,
) -> Result<(), kube::Error> {
    let name = policy.name_any();
    for attempt in 1..=MAX_ATTEMPTS {
        let current = policy.status.clone().unwrap_or_default();
        let Some(next) = next_status(&current, observation) else {
            return Ok(());
        };
        let patch = json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1",
            "kind": "ClusterPolicy",
            "metadata": {"name": name, "resourceVersion": policy.resource_version()},
            "status": {
                "selected": next.selected,
                "lastViolations": next.last_violations,
            },
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(meta::FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < MAX_ATTEMPTS => {
                match api.get_opt(&name).await? {
                    Some(fresh) => policy = fresh,
                    None => return Ok(()),
                }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ObjectRef;

    fn violation(policy: &str, message: &str) -> Violation {
        Violation {
            policy: policy.into(),
            object: Some(ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("apps".into()),
                name: "vote".into(),
            }),
            field: Some("/spec/replicas".into()),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    fn observe<'a>(
        ks: &'a str,
        selected: bool,
        violations: &'a [Violation],
        time: &'a str,
    ) -> Observation<'a> {
        Observation {
            kustomization: ks,
            selected,
            revision: "main@sha1:1",
            violations,
            time,
        }
    }

    #[test]
    fn selection_and_violations_follow_the_last_reconcile_of_each_kustomization() {
        let empty = ClusterPolicyStatus::default();
        let found = [violation("bounds", "replicas 9 > 5")];
        let one = next_status(&empty, &observe("apps/vote", true, &found, "t1")).unwrap();
        assert_eq!(one.selected, ["apps/vote"]);
        assert_eq!(one.last_violations.len(), 1);
        assert_eq!(
            one.last_violations[0].object.as_deref(),
            Some("Deployment apps/vote")
        );
        assert_eq!(one.last_violations[0].severity, "error");

        // The same findings again: no write.
        assert_eq!(
            next_status(&one, &observe("apps/vote", true, &found, "t2")),
            None
        );

        // Another Kustomization is added beside it, sorted; its violations come first.
        let other = [violation("bounds", "replicas 7 > 5")];
        let two = next_status(&one, &observe("apps/api", true, &other, "t3")).unwrap();
        assert_eq!(two.selected, ["apps/api", "apps/vote"]);
        assert_eq!(two.last_violations[0].kustomization, "apps/api");
        assert_eq!(two.last_violations[1].kustomization, "apps/vote");

        // Fixed: its violations go, the other's stay.
        let fixed = next_status(&two, &observe("apps/vote", true, &[], "t4")).unwrap();
        assert_eq!(fixed.last_violations.len(), 1);
        assert_eq!(fixed.last_violations[0].kustomization, "apps/api");

        // No longer selected (labels changed, or deleted): it leaves the list.
        let left = next_status(&fixed, &observe("apps/api", false, &[], "t5")).unwrap();
        assert_eq!(left.selected, ["apps/vote"]);
        assert!(left.last_violations.is_empty());
        assert_eq!(
            next_status(&left, &observe("other/x", false, &[], "t6")),
            None
        );
    }

    #[test]
    fn the_lists_are_bounded() {
        let many: Vec<Violation> = (0..100).map(|i| violation("p", &format!("v{i}"))).collect();
        let status = next_status(
            &ClusterPolicyStatus::default(),
            &observe("a/b", true, &many, "t"),
        )
        .unwrap();
        assert_eq!(status.last_violations.len(), MAX_VIOLATIONS);

        let full = ClusterPolicyStatus {
            selected: (0..MAX_SELECTED).map(|i| format!("ns/k{i:04}")).collect(),
            ..Default::default()
        };
        assert_eq!(next_status(&full, &observe("zz/new", true, &[], "t")), None);
        let less = next_status(&full, &observe("ns/k0000", false, &[], "t")).unwrap();
        assert_eq!(less.selected.len(), MAX_SELECTED - 1);
    }
}
