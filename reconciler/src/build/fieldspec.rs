//! Field specs: "at this path in objects of this kind", as kustomize's transformer
//! configurations name them. The tables here are kustomize v5's defaults for labels,
//! annotations, replicas and name references.

use serde_json::{Map, Value};

use super::resource::ResId;

/// One field spec. Empty group/version/kind match anything.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub path: &'static str,
    pub create: bool,
}

const fn fs(group: &'static str, kind: &'static str, path: &'static str, create: bool) -> Spec {
    Spec {
        group,
        version: "",
        kind,
        path,
        create,
    }
}

impl Spec {
    pub fn applies_to(&self, id: &ResId) -> bool {
        (self.kind.is_empty() || self.kind == id.kind)
            && (self.group.is_empty() || self.group == id.group)
            && (self.version.is_empty() || self.version == id.version)
    }
}

/// Where template labels go (`labels[].includeTemplates`, and part of commonLabels).
pub(crate) const TEMPLATE_LABELS: &[Spec] = &[
    fs(
        "",
        "ReplicationController",
        "spec/template/metadata/labels",
        true,
    ),
    fs("", "Deployment", "spec/template/metadata/labels", true),
    fs("", "ReplicaSet", "spec/template/metadata/labels", true),
    fs("", "DaemonSet", "spec/template/metadata/labels", true),
    fs("apps", "StatefulSet", "spec/template/metadata/labels", true),
    fs(
        "apps",
        "StatefulSet",
        "spec/volumeClaimTemplates[]/metadata/labels",
        true,
    ),
    fs("batch", "Job", "spec/template/metadata/labels", true),
    fs("batch", "CronJob", "spec/jobTemplate/metadata/labels", true),
    fs(
        "batch",
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/labels",
        true,
    ),
];

/// Where selector labels go (commonLabels and `labels[].includeSelectors`).
pub(crate) const SELECTOR_LABELS: &[Spec] = &[
    fs("", "Service", "spec/selector", true),
    fs("", "ReplicationController", "spec/selector", true),
    fs("", "Deployment", "spec/selector/matchLabels", true),
    fs(
        "apps",
        "Deployment",
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "Deployment",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "Deployment",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "Deployment",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "Deployment",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
    fs("", "ReplicaSet", "spec/selector/matchLabels", true),
    fs("", "DaemonSet", "spec/selector/matchLabels", true),
    fs("apps", "StatefulSet", "spec/selector/matchLabels", true),
    fs(
        "apps",
        "StatefulSet",
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "StatefulSet",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "StatefulSet",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "StatefulSet",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        "apps",
        "StatefulSet",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
    fs("batch", "Job", "spec/selector/matchLabels", false),
    fs(
        "batch",
        "CronJob",
        "spec/jobTemplate/spec/selector/matchLabels",
        false,
    ),
    fs(
        "policy",
        "PodDisruptionBudget",
        "spec/selector/matchLabels",
        false,
    ),
    fs(
        "networking.k8s.io",
        "NetworkPolicy",
        "spec/podSelector/matchLabels",
        false,
    ),
    fs(
        "networking.k8s.io",
        "NetworkPolicy",
        "spec/ingress/from/podSelector/matchLabels",
        false,
    ),
    fs(
        "networking.k8s.io",
        "NetworkPolicy",
        "spec/egress/to/podSelector/matchLabels",
        false,
    ),
];

/// Where commonAnnotations go besides `metadata/annotations`.
pub(crate) const TEMPLATE_ANNOTATIONS: &[Spec] = &[
    fs(
        "",
        "ReplicationController",
        "spec/template/metadata/annotations",
        true,
    ),
    fs("", "Deployment", "spec/template/metadata/annotations", true),
    fs("", "ReplicaSet", "spec/template/metadata/annotations", true),
    fs("", "DaemonSet", "spec/template/metadata/annotations", true),
    fs(
        "",
        "StatefulSet",
        "spec/template/metadata/annotations",
        true,
    ),
    fs("batch", "Job", "spec/template/metadata/annotations", true),
    fs(
        "batch",
        "CronJob",
        "spec/jobTemplate/metadata/annotations",
        true,
    ),
    fs(
        "batch",
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/annotations",
        true,
    ),
];

/// Kinds whose `spec/replicas` the replicas transformer sets.
pub(crate) const REPLICAS_KINDS: &[&str] = &[
    "Deployment",
    "ReplicationController",
    "ReplicaSet",
    "StatefulSet",
];

/// Calls `f` on every map found at `path` in `obj` (creating missing maps when `create`).
/// Lists on the way are entered element by element.
pub(crate) fn visit_maps(
    obj: &mut Value,
    path: &str,
    create: bool,
    f: &mut dyn FnMut(&mut Map<String, Value>),
) {
    let segs: Vec<&str> = path.split('/').collect();
    walk(obj, &segs, create, f);
}

fn walk(cur: &mut Value, segs: &[&str], create: bool, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    if let Value::Array(items) = cur {
        for item in items {
            walk(item, segs, create, f);
        }
        return;
    }
    let Some((first, rest)) = segs.split_first() else {
        if cur.is_null() && create {
            *cur = Value::Object(Map::new());
        }
        if let Value::Object(m) = cur {
            f(m);
        }
        return;
    };
    // `name[]` names a list: its elements are walked, but a missing list is never created
    // (kustomize does not invent `volumeClaimTemplates` for a label).
    let (key, is_list) = match first.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (*first, false),
    };
    let Value::Object(m) = cur else { return };
    match m.get_mut(key) {
        Some(child) if !child.is_null() => walk(child, rest, create, f),
        _ if create && !is_list => {
            let child = m
                .entry(key.to_string())
                .or_insert(Value::Object(Map::new()));
            if child.is_null() {
                *child = Value::Object(Map::new());
            }
            walk(child, rest, create, f);
        }
        _ => {}
    }
}

/// Calls `f` on every value (scalar or not) at `path` (no creation). Lists are entered.
pub(crate) fn visit_values(obj: &mut Value, path: &[&str], f: &mut dyn FnMut(&mut Value)) {
    if let Value::Array(items) = obj {
        if path.is_empty() {
            f(obj);
            return;
        }
        for item in items {
            visit_values(item, path, f);
        }
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        f(obj);
        return;
    };
    if let Value::Object(m) = obj
        && let Some(child) = m.get_mut(*first)
    {
        visit_values(child, rest, f);
    }
}
