//! The stages from the source to the health checks, in order (see the table in the parent
//! module): source (see `source`) → dependencies → artifact → render (build, policies, plan) → apply → prune
//! → health.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::dependencies::find_cycle;
use super::status::{Run, StageError};
use crate::api::conditions::{self, status as cstatus, types};
use crate::api::{Kustomization, duration};
use crate::apply::{self, ApplyOptions, DriftRules, ObjectRef, Owner, OwnerLookup, inventory};
use crate::controller::render::{self, Cluster, Keys, Lookups, RenderInput};

/// The spec's durations, parsed.
pub(super) struct Durations {
    pub(super) interval: Duration,
    pub(super) retry: Duration,
    pub(super) timeout: Duration,
}

pub(super) fn durations(ks: &Kustomization) -> Result<Durations, StageError> {
    let parse = |field: &str, text: &str| {
        duration::parse(text).map_err(|e| StageError::InvalidSpec(format!("spec.{field}: {e}")))
    };
    let interval = parse("interval", &ks.spec.interval)?;
    let retry = match &ks.spec.retry_interval {
        Some(text) => parse("retryInterval", text)?,
        None => interval,
    };
    let timeout = match &ks.spec.timeout {
        Some(text) => parse("timeout", text)?,
        None => interval,
    };
    Ok(Durations {
        interval,
        retry,
        timeout,
    })
}

/// What a successful pipeline run produced.
pub(super) struct Applied {
    pub(super) revision: String,
    pub(super) summary: Option<String>,
    pub(super) healthy: Option<bool>,
}

impl Run<'_> {
    /// Stages 3–8. Returns what was applied; status fields are updated along the way.
    pub(super) async fn pipeline(&mut self, durations: &Durations) -> Result<Applied, StageError> {
        // One of the `--concurrent` slots until the health checks (the semaphore is never
        // closed; without a slot the reconcile proceeds rather than never).
        let slot = self.ctx.slots.clone().acquire_owned().await.ok();
        // A cycle can never resolve: report it before anything else.
        if let Some(cycle) = find_cycle(&self.ctx.store, &self.namespace, &self.name) {
            return Err(StageError::DependencyCycle(cycle));
        }
        let (source, artifact) = self.source().await?;
        let revision = artifact.revision.clone();
        self.status.last_attempted_revision = Some(revision.clone());
        self.dependencies().await?;

        let client = self
            .ctx
            .tenant_client(self.ks, &self.namespace)
            .map_err(|source| StageError::Impersonation {
                object: format!("{}/{}", self.namespace, self.name),
                source,
            })?;
        let dir = self.ctx.fetcher.unpack(&source, &artifact).await?;
        let input = RenderInput {
            kustomization: self.ks,
            root: dir.path(),
            path: None,
            revision: &revision,
            default_service_account: self.ctx.config.default_service_account.as_deref(),
            dry_run: false,
        };
        let lookups = Lookups {
            cluster: Some(Cluster {
                tenant: &client,
                admin: &self.ctx.client,
                resolver: &self.ctx.resolver,
                cluster_policies: Some(&self.ctx.cluster_policies),
            }),
            keys: Keys::Cluster {
                default_secret: self.ctx.config.sops_age_secret.clone(),
            },
            ..Lookups::default()
        };
        let rendered = render::render(&input, &lookups, &self.ctx.policy).await;
        self.record_cluster_policy_status(&lookups, &revision, &rendered)
            .await;
        let rendered = rendered?;
        drop(dir);
        self.report_policy_findings(&rendered).await;
        let plan = rendered.plan;

        let owner = Owner {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        };
        let new_refs = plan.refs();
        let old_inventory = self.status.inventory.clone();
        let old_len = old_inventory.as_ref().map_or(0, |i| i.entries.len());
        if plan.is_empty() && old_len > 0 && !self.ks.spec.allow_empty.unwrap_or(false) {
            return Err(StageError::Prune(format!(
                "the build of revision {revision} yielded no objects; refusing to prune the {old_len} objects of the inventory (set spec.allowEmpty: true to allow)"
            )));
        }

        // Record the pending inventory before the first write. This write also marks the
        // reconcile Reconciling for everything after it, the health checks included: they get
        // no write of their own when it happened.
        let pending = inventory::union(old_inventory.as_ref(), &new_refs);
        let announced = Some(&pending) != old_inventory.as_ref();
        if announced {
            self.status.inventory = Some(pending.clone());
            // (An unusable spec.healthChecks fails the health stage, below.)
            let waits = health_targets(self.ks, &new_refs).is_ok_and(|t| !t.is_empty());
            self.report_stage(if waits {
                format!("applying revision {revision}, then waiting for the health checks")
            } else {
                format!("applying revision {revision}")
            })
            .await?;
        }

        let opts = ApplyOptions {
            owner: owner.clone(),
            force: self.ks.spec.force.unwrap_or(false),
            concurrency: self.ctx.config.concurrent_apply.max(1),
            drift: DriftRules::new(&self.ks.spec.ignore)?,
            definitions_timeout: durations.timeout,
            // Objects of a Kustomization that no longer exists (deleted with Orphan, or a
            // re-bootstrap in a new namespace) are adopted; asked with our own client.
            owner_lookup: Some(OwnerLookup::new(self.ctx.client.clone())),
            known: self.known(),
        };
        let mut changes = apply::apply(&client, &self.ctx.resolver, &plan, &opts).await?;
        if opts.known.is_some() {
            self.ctx
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    (self.namespace.clone(), self.name.clone()),
                    Arc::new(std::mem::take(&mut changes.verified)),
                );
        }
        for action in [
            apply::Action::Created,
            apply::Action::Configured,
            apply::Action::Recreated,
            apply::Action::Adopted,
            apply::Action::Unchanged,
        ] {
            self.ctx
                .metrics
                .count_objects(&action.to_string(), changes.count(action));
        }

        let mut pruned = 0;
        if self.ks.spec.prune {
            let stale = inventory::stale(Some(&pending), &new_refs);
            let outcome = apply::prune(&client, &self.ctx.resolver, &stale, &owner).await;
            pruned = outcome.deleted.len();
            self.ctx.metrics.count_objects("pruned", pruned);
            self.status.inventory = Some(inventory::without(&pending, &outcome.removed()));
            if let Some(failed) = prune_failures(&outcome) {
                return Err(StageError::Prune(format!(
                    "prune failed (kept in the inventory, retried): {failed}"
                )));
            }
        } else {
            self.status.inventory = Some(inventory::of(&new_refs));
        }

        let summary = (changes.wrote() || pruned > 0).then(|| {
            let mut s = changes.summary();
            if pruned > 0 {
                if changes.wrote() {
                    s.push_str(&format!(", pruned {pruned}"));
                } else {
                    s = format!("pruned {pruned}");
                }
            }
            s
        });

        // A wait that may take a while says so, unless nothing changed and all was healthy
        // (a no-change reconcile writes nothing), or the pending inventory's write said so.
        let waits = !health_targets(self.ks, &new_refs)?.is_empty();
        let was_healthy = conditions::get(&self.status.conditions, types::HEALTHY)
            .is_some_and(|c| c.status == cstatus::TRUE);
        if waits && !announced && (summary.is_some() || !was_healthy) {
            self.report_stage(format!(
                "waiting for the health checks of revision {revision}"
            ))
            .await?;
        }
        // Waiting for health takes no slot: a Kustomization that never gets healthy must not
        // delay the others for its whole timeout.
        drop(slot);
        let healthy = self
            .health(&client, &new_refs, &changes.seen, durations.timeout)
            .await?;
        Ok(Applied {
            revision,
            summary,
            healthy,
        })
    }

    /// What may stand for reading live objects: the shared stores and what the previous apply
    /// verified, for a Kustomization acting as the reconciler itself (the stores list as it).
    fn known(&self) -> Option<apply::Known> {
        if self.ctx.tenant_identity(self.ks, &self.namespace).is_some() {
            return None;
        }
        let verified = self
            .ctx
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(self.namespace.clone(), self.name.clone()))
            .cloned()
            .unwrap_or_default();
        Some(apply::Known {
            watches: self.ctx.health_watches.clone(),
            verified,
        })
    }

    /// Stage 8: the objects [`health_targets`] names become healthy within `timeout`.
    ///
    /// The shared per-kind stores list and watch as the reconciler itself, so only a
    /// Kustomization acting as the reconciler reads them; one impersonating a ServiceAccount
    /// watches each object with its own client, and sees only what that account may read.
    async fn health(
        &self,
        client: &kube::Client,
        applied: &[ObjectRef],
        seen: &BTreeMap<ObjectRef, apply::Seen>,
        timeout: Duration,
    ) -> Result<Option<bool>, StageError> {
        let targets = health_targets(self.ks, applied)?;
        if targets.is_empty() {
            return Ok(None);
        }
        let shared = self
            .ctx
            .tenant_identity(self.ks, &self.namespace)
            .is_none()
            .then_some(apply::health::Shared {
                watches: &self.ctx.health_watches,
                seen,
            });
        apply::health::wait_with(client, &self.ctx.resolver, &targets, timeout, shared).await?;
        Ok(Some(true))
    }
}

/// What the health stage waits for, Flux's rule: with `wait: true` every applied object and
/// `healthChecks` is ignored; otherwise the objects `healthChecks` lists.
fn health_targets(ks: &Kustomization, applied: &[ObjectRef]) -> Result<Vec<ObjectRef>, StageError> {
    if ks.spec.wait.unwrap_or(false) {
        return Ok(applied.to_vec());
    }
    let mut targets: Vec<ObjectRef> = Vec::new();
    for check in &ks.spec.health_checks {
        let api_version = check.api_version.as_deref().unwrap_or("v1");
        let gv: kube::core::GroupVersion = api_version.parse().map_err(|e| {
            StageError::InvalidSpec(format!(
                "spec.healthChecks {}/{}: apiVersion {api_version:?}: {e}",
                check.kind, check.name
            ))
        })?;
        targets.push(ObjectRef {
            group: gv.group,
            version: gv.version,
            kind: check.kind.clone(),
            namespace: check.namespace.clone(),
            name: check.name.clone(),
        });
    }
    let mut seen = HashSet::new();
    targets.retain(|t| seen.insert(t.id()));
    Ok(targets)
}

/// The objects a prune could not delete, with why; `None` when it deleted them all.
pub(super) fn prune_failures(outcome: &apply::PruneOutcome) -> Option<String> {
    if outcome.failed.is_empty() {
        return None;
    }
    let failed: Vec<String> = outcome
        .failed
        .iter()
        .map(|(r, why)| format!("{r}: {why}"))
        .collect();
    Some(failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flux: "`.spec.wait` ... If set to `true`, `.spec.healthChecks` is ignored."
    #[test]
    fn wait_checks_every_applied_object_and_ignores_health_checks() {
        let ks = |wait: bool| -> Kustomization {
            crate::yaml::from_str(&format!(
                "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: a, namespace: n}}\nspec:\n  sourceRef: {{kind: GitRepository, name: r}}\n  interval: 1m\n  wait: {wait}\n  healthChecks:\n  - {{apiVersion: apps/v1, kind: Deployment, name: other, namespace: x}}\n  - {{kind: ConfigMap, name: cm, namespace: x}}\n"
            ))
            .unwrap()
        };
        let applied = vec![ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: "Service".into(),
            namespace: Some("n".into()),
            name: "s".into(),
        }];
        let targets = health_targets(&ks(true), &applied).unwrap();
        assert_eq!(targets, applied);
        let targets = health_targets(&ks(false), &applied).unwrap();
        let ids: Vec<String> = targets
            .iter()
            .map(|t| format!("{}/{}/{}", t.group, t.version, t.kind))
            .collect();
        assert_eq!(ids, ["apps/v1/Deployment", "/v1/ConfigMap"]);
    }
}
