//! The tenancy re-check after transforms (see [`super::Tenancy`]).

use super::{ObjectRef, PolicyContext, PolicyError, Tenancy, output::group};
use gitops_policy_target_namespace::CLUSTER_SCOPED;
use std::collections::BTreeSet;

/// Scope information for the check.
pub(crate) struct Scope<'a> {
    discovered: BTreeSet<(&'a str, &'a str)>,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(tenancy: &'a Tenancy) -> Scope<'a> {
        let discovered = tenancy
            .cluster_scoped_kinds
            .iter()
            .map(|k| {
                let (kind, group) = k.split_once('.').unwrap_or((k.as_str(), ""));
                (group, kind)
            })
            .collect();
        Scope { discovered }
    }

    fn is_cluster_scoped(&self, object: &ObjectRef) -> bool {
        let key = (group(&object.api_version), object.kind.as_str());
        CLUSTER_SCOPED.binary_search(&key).is_ok() || self.discovered.contains(&key)
    }
}

/// Checks `output` (the objects step `policy` returned) against `input` (the objects the
/// pipeline was given).
pub(crate) fn check<'a>(
    ctx: &PolicyContext,
    tenancy: &Tenancy,
    input: &[ObjectRef],
    output: impl IntoIterator<Item = &'a ObjectRef>,
    policy: &str,
) -> Result<(), PolicyError> {
    let scope = Scope::new(tenancy);
    let mut namespaces: BTreeSet<&str> = input
        .iter()
        .filter_map(|o| o.namespace.as_deref())
        .collect();
    namespaces.extend(ctx.target_namespace.as_deref());
    namespaces.extend(tenancy.allowed_namespaces.iter().map(String::as_str));
    let same = |a: &ObjectRef, b: &ObjectRef| {
        group(&a.api_version) == group(&b.api_version) && a.kind == b.kind && a.name == b.name
    };
    for object in output {
        if scope.is_cluster_scoped(object) {
            if !tenancy.allow_cluster_scoped && !input.iter().any(|i| same(i, object)) {
                return Err(PolicyError::Tenancy {
                    policy: policy.to_owned(),
                    object: Box::new(object.clone()),
                    reason: "adds a cluster-scoped object that was not in the build".to_owned(),
                });
            }
        } else if let Some(ns) = object.namespace.as_deref()
            && !namespaces.contains(ns)
        {
            return Err(PolicyError::Tenancy {
                policy: policy.to_owned(),
                object: Box::new(object.clone()),
                reason: format!(
                    "namespace {ns:?} is neither the target namespace, a namespace of the build, nor an allowed namespace"
                ),
            });
        }
    }
    Ok(())
}
