//! Safe prune: delete objects that left the inventory, but only what is provably ours.

use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::Value;

use super::object::ObjectRef;
use super::resolve::Resolver;
use super::{Owner, Stage};
use crate::api::conditions::meta;

/// What the prune did. Entries in `gone` and `skipped` leave the inventory; entries in `failed`
/// stay in it so the next reconcile retries them.
#[derive(Debug, Default)]
pub struct PruneOutcome {
    /// Deleted now.
    pub deleted: Vec<ObjectRef>,
    /// Already absent (or its kind is no longer served).
    pub gone: Vec<ObjectRef>,
    /// Left alone, with why (not ours any more, or `kubectl-gitops.io/prune: disabled`).
    pub skipped: Vec<(ObjectRef, String)>,
    /// The cluster refused or the read failed.
    pub failed: Vec<(ObjectRef, String)>,
}

impl PruneOutcome {
    /// Everything that leaves the inventory.
    pub fn removed(&self) -> Vec<ObjectRef> {
        self.deleted
            .iter()
            .chain(&self.gone)
            .cloned()
            .chain(self.skipped.iter().map(|(r, _)| r.clone()))
            .collect()
    }
}

fn is_prune_disabled(live: &Value) -> bool {
    let annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(meta::PRUNE_ANNOTATION))
        .and_then(Value::as_str);
    let label = live
        .pointer("/metadata/labels")
        .and_then(|a| a.get(meta::PRUNE_ANNOTATION))
        .and_then(Value::as_str);
    annotation == Some(meta::PRUNE_DISABLED) || label == Some(meta::PRUNE_DISABLED)
}

/// Deletes the `stale` objects in reverse apply order (workloads before Namespaces and CRDs,
/// later inventory entries first).
///
/// Guarantees: an object is deleted only if it exists, still carries `owner`'s labels and is not
/// marked `kubectl-gitops.io/prune: disabled` (annotation or label); a refused delete is
/// reported in `failed` and never stops the others.
pub async fn prune(
    client: &kube::Client,
    resolver: &Resolver,
    stale: &[ObjectRef],
    owner: &Owner,
) -> PruneOutcome {
    prune_with(client, resolver, stale, owner, false).await
}

/// [`prune`] with every delete sent as a server-side dry-run: `deleted` lists what a prune
/// would delete now (the same ownership and prune-disabled rules, the same permissions).
pub async fn prune_dry_run(
    client: &kube::Client,
    resolver: &Resolver,
    stale: &[ObjectRef],
    owner: &Owner,
) -> PruneOutcome {
    prune_with(client, resolver, stale, owner, true).await
}

async fn prune_with(
    client: &kube::Client,
    resolver: &Resolver,
    stale: &[ObjectRef],
    owner: &Owner,
    dry_run: bool,
) -> PruneOutcome {
    let mut order: Vec<&ObjectRef> = stale.iter().rev().collect();
    order.sort_by_key(|r| std::cmp::Reverse(Stage::of(r)));
    let mut outcome = PruneOutcome::default();
    for object in order {
        let resource = match resolver.resolve(client, object).await {
            Ok((resource, _)) => resource,
            // The kind is gone (its CRD was removed): so are its objects.
            Err(_) => {
                outcome.gone.push(object.clone());
                continue;
            }
        };
        let api: Api<DynamicObject> = match &object.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let live = match api.get_opt(&object.name).await {
            Ok(Some(live)) => serde_json::to_value(&live).unwrap_or(Value::Null),
            Ok(None) => {
                outcome.gone.push(object.clone());
                continue;
            }
            Err(e) => {
                outcome.failed.push((object.clone(), e.to_string()));
                continue;
            }
        };
        if Owner::of(&live).as_ref() != Some(owner) {
            outcome.skipped.push((
                object.clone(),
                "owner labels no longer name this Kustomization".into(),
            ));
            continue;
        }
        if is_prune_disabled(&live) {
            outcome
                .skipped
                .push((object.clone(), "kubectl-gitops.io/prune: disabled".into()));
            continue;
        }
        let mut params = DeleteParams::background();
        params.dry_run = dry_run;
        // Delete exactly the object we inspected, not a namesake created since.
        params.preconditions = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            });
        match api.delete(&object.name, &params).await {
            Ok(_) => outcome.deleted.push(object.clone()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                outcome.gone.push(object.clone())
            }
            Err(kube::Error::Api(status)) => outcome
                .failed
                .push((object.clone(), status.message.clone())),
            Err(e) => outcome.failed.push((object.clone(), e.to_string())),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prune_disabled_by_annotation_or_label() {
        assert!(is_prune_disabled(
            &json!({"metadata": {"annotations": {"kubectl-gitops.io/prune": "disabled"}}})
        ));
        assert!(is_prune_disabled(
            &json!({"metadata": {"labels": {"kubectl-gitops.io/prune": "disabled"}}})
        ));
        assert!(!is_prune_disabled(
            &json!({"metadata": {"annotations": {"kubectl-gitops.io/prune": "enabled"}}})
        ));
    }
}
