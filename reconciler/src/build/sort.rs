//! Output order: kustomize's legacy order (by kind class, then group/version/kind, then
//! namespace and name), or input order (`sortOptions.order: fifo`).

use super::kustomization::SortOptions;
use super::resource::{ResId, Resource};

const ORDER_FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn gvk_string(group: &str, version: &str, kind: &str) -> String {
    let or = |s: &str, d: &str| {
        if s.is_empty() {
            d.to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{}_{}_{}",
        or(group, "~G"),
        or(version, "~V"),
        or(kind, "~K")
    )
}

/// The rank of `kind` among `first` (negative) and `last` (positive); 0 for any other kind.
fn rank(first: &[&str], last: &[&str], kind: &str) -> i64 {
    if let Some(i) = first.iter().position(|k| *k == kind) {
        return i as i64 - first.len() as i64;
    }
    if let Some(i) = last.iter().position(|k| *k == kind) {
        return 1 + i as i64;
    }
    0
}

/// kustomize's order of group/version/kind triples (empty parts allowed, sorting after any
/// set one) under the default kind ranks. kustomize orders field specs by it too.
pub(crate) fn gvk_key(group: &str, version: &str, kind: &str) -> (i64, String) {
    (
        rank(&ORDER_FIRST, &ORDER_LAST, kind),
        gvk_string(group, version, kind),
    )
}

fn id_string(id: &ResId) -> String {
    let ns = if id.namespace.is_empty() {
        "~X"
    } else {
        &id.namespace
    };
    let name = if id.name.is_empty() { "~N" } else { &id.name };
    format!("{ns}|{name}")
}

/// Sorts in place per the root kustomization's sortOptions (legacy when absent).
pub(crate) fn sort(resources: &mut Vec<Resource>, opts: Option<&SortOptions>) {
    if opts.and_then(|o| o.order.as_deref()) == Some("fifo") {
        return;
    }
    let legacy = opts.and_then(|o| o.legacy_sort_options.as_ref());
    let first: Vec<&str> = match legacy {
        Some(l) if !l.order_first.is_empty() => l.order_first.iter().map(String::as_str).collect(),
        Some(_) => Vec::new(),
        None => ORDER_FIRST.to_vec(),
    };
    let last: Vec<&str> = match legacy {
        Some(l) if !l.order_last.is_empty() => l.order_last.iter().map(String::as_str).collect(),
        Some(_) => Vec::new(),
        None => ORDER_LAST.to_vec(),
    };
    let mut keyed: Vec<((i64, String, String), Resource)> = resources
        .drain(..)
        .map(|r| {
            let id = r.id();
            (
                (
                    rank(&first, &last, &id.kind),
                    gvk_string(&id.group, &id.version, &id.kind),
                    id_string(&id),
                ),
                r,
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    resources.extend(keyed.into_iter().map(|(_, r)| r));
}
