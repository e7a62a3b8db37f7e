//! Name-reference updates: after renames (prefix/suffix, namespace, hash suffixes, patches),
//! every field that refers to a renamed object by name is updated — kustomize's
//! `nameReference` configuration and its candidate sieve (previous names, kind, roleRef kind,
//! namespace, then matching prefixes/suffixes).

use std::collections::HashMap;

use serde_json::Value;

use super::BuildError;
use super::config::NameBackRef;
use super::resource::{ResId, Resource};

/// Referrer field: (group or "", kind, path with `/` separators; `|` stands for a `/` inside a
/// key).
type Referrer = (&'static str, &'static str, &'static str);

const POD_CM: &[&str] = &[
    "volumes/configMap/name",
    "containers/env/valueFrom/configMapKeyRef/name",
    "initContainers/env/valueFrom/configMapKeyRef/name",
    "containers/envFrom/configMapRef/name",
    "initContainers/envFrom/configMapRef/name",
    "volumes/projected/sources/configMap/name",
];
const POD_SECRET: &[&str] = &[
    "volumes/secret/secretName",
    "containers/env/valueFrom/secretKeyRef/name",
    "initContainers/env/valueFrom/secretKeyRef/name",
    "containers/envFrom/secretRef/name",
    "initContainers/envFrom/secretRef/name",
    "imagePullSecrets/name",
    "volumes/projected/sources/secret/name",
];
const POD_SA: &[&str] = &["serviceAccountName"];
const POD_PVC: &[&str] = &["volumes/persistentVolumeClaim/claimName"];
const POD_PRIORITY: &[&str] = &["priorityClassName"];

/// Where each workload kind keeps its pod spec.
const WORKLOADS: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("PodTemplate", "template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("ReplicationController", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

/// Which pod-spec references kustomize updates per workload kind (its table is not uniform).
fn pod_paths(target: &str, workload: &str) -> &'static [&'static str] {
    match target {
        "ConfigMap" | "Secret" if workload == "ReplicationController" => &[],
        "ConfigMap" => POD_CM,
        "Secret" => POD_SECRET,
        "ServiceAccount" if workload == "ReplicaSet" || workload == "PodTemplate" => &[],
        "ServiceAccount" => POD_SA,
        "PersistentVolumeClaim" if workload == "ReplicaSet" || workload == "PodTemplate" => &[],
        "PersistentVolumeClaim" => POD_PVC,
        "PriorityClass" if workload == "ReplicaSet" || workload == "PodTemplate" => &[],
        "PriorityClass" => POD_PRIORITY,
        _ => &[],
    }
}

/// Other (non pod-spec) referrers per target kind.
fn other_referrers(target: &str) -> &'static [Referrer] {
    match target {
        "Deployment" | "ReplicationController" | "ReplicaSet" | "StatefulSet" => {
            &[("", "HorizontalPodAutoscaler", "spec/scaleTargetRef/name")]
        }
        "ConfigMap" => &[
            ("", "Node", "spec/configSource/configMap"),
            ("", "Role", "rules/resourceNames"),
            ("", "ClusterRole", "rules/resourceNames"),
            (
                "",
                "Ingress",
                "metadata/annotations/nginx.ingress.kubernetes.io|fastcgi-params-configmap",
            ),
        ],
        "Secret" => &[
            ("", "Ingress", "spec/tls/secretName"),
            (
                "",
                "Ingress",
                "metadata/annotations/ingress.kubernetes.io|auth-secret",
            ),
            (
                "",
                "Ingress",
                "metadata/annotations/nginx.ingress.kubernetes.io|auth-secret",
            ),
            (
                "",
                "Ingress",
                "metadata/annotations/nginx.ingress.kubernetes.io|auth-tls-secret",
            ),
            ("", "ServiceAccount", "imagePullSecrets/name"),
            ("", "StorageClass", "parameters/secretName"),
            ("", "StorageClass", "parameters/adminSecretName"),
            ("", "StorageClass", "parameters/userSecretName"),
            ("", "StorageClass", "parameters/secretRef"),
            ("", "Role", "rules/resourceNames"),
            ("", "ClusterRole", "rules/resourceNames"),
            (
                "serving.knative.dev",
                "Service",
                "spec/template/spec/containers/env/valueFrom/secretKeyRef/name",
            ),
            ("", "PersistentVolume", "spec/azureFile/secretName"),
        ],
        "Service" => &[
            ("apps", "StatefulSet", "spec/serviceName"),
            ("", "Ingress", "spec/rules/http/paths/backend/serviceName"),
            ("", "Ingress", "spec/backend/serviceName"),
            ("", "Ingress", "spec/rules/http/paths/backend/service/name"),
            ("", "Ingress", "spec/defaultBackend/service/name"),
            ("apiregistration.k8s.io", "APIService", "spec/service/name"),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                "webhooks/clientConfig/service",
            ),
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
                "webhooks/clientConfig/service",
            ),
        ],
        "Role" => &[("rbac.authorization.k8s.io", "RoleBinding", "roleRef/name")],
        "ClusterRole" => &[
            ("rbac.authorization.k8s.io", "RoleBinding", "roleRef/name"),
            (
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                "roleRef/name",
            ),
        ],
        "ServiceAccount" => &[
            ("rbac.authorization.k8s.io", "RoleBinding", "subjects"),
            (
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                "subjects",
            ),
        ],
        "PersistentVolume" => &[
            ("", "PersistentVolumeClaim", "spec/volumeName"),
            ("", "ClusterRole", "rules/resourceNames"),
        ],
        "StorageClass" => &[
            ("", "PersistentVolume", "spec/storageClassName"),
            ("", "PersistentVolumeClaim", "spec/storageClassName"),
            (
                "",
                "StatefulSet",
                "spec/volumeClaimTemplates/spec/storageClassName",
            ),
        ],
        "IngressClass" => &[("", "Ingress", "spec/ingressClassName")],
        "ValidatingAdmissionPolicy" => &[(
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
            "spec/policyName",
        )],
        _ => &[],
    }
}

const TARGETS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("", "ReplicationController"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Service"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("", "ServiceAccount"),
    ("", "PersistentVolumeClaim"),
    ("", "PersistentVolume"),
    ("storage.k8s.io", "StorageClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
];

struct Candidate {
    idx: usize,
    cur: ResId,
    prev: Vec<ResId>,
}

/// Updates every name reference in `resources`. `file` names the root kustomization for errors.
pub(crate) fn fix(
    resources: &mut [Resource],
    configured: &[NameBackRef],
    file: &str,
) -> Result<(), BuildError> {
    // kustomize refuses a RoleBinding whose ServiceAccount subject has a `namespace:` key
    // without a value (it cannot tell which namespace's account is meant).
    for r in resources.iter() {
        if r.kind() != "RoleBinding" {
            continue;
        }
        let Some(Value::Array(subjects)) = r.obj.get("subjects") else {
            continue;
        };
        let blank = subjects.iter().any(|s| {
            s.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                && s.get("namespace").is_some_and(|n| !n.is_string())
        });
        if blank {
            return Err(BuildError::InvalidObject {
                file: file.to_string(),
                message: format!(
                    "{}: a ServiceAccount subject has a blank namespace (give it a value or \
                     remove the key)",
                    r.id()
                ),
            });
        }
    }
    // Only objects that were renamed matter; if none was, nothing can change.
    if resources.iter().all(|r| r.prev.is_empty()) {
        return Ok(());
    }
    // Index candidates by (kind, previous name). As in kustomize, only renamed (or moved)
    // objects are candidates: a reference already naming an object that kept its id needs
    // no change, and such an object never competes with a renamed one for a reference
    // (an overlay's moved copy of a base's object wins over the base's own copy).
    let cands: Vec<Candidate> = resources
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.prev.is_empty())
        .map(|(idx, r)| Candidate {
            idx,
            cur: r.id(),
            prev: r.prev.clone(),
        })
        .collect();
    let mut by_name: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (ci, c) in cands.iter().enumerate() {
        for p in &c.prev {
            let v = by_name
                .entry((p.kind.as_str(), p.name.as_str()))
                .or_default();
            if v.last() != Some(&ci) {
                v.push(ci);
            }
        }
    }
    let affixes: Vec<(Vec<String>, Vec<String>)> = resources
        .iter()
        .map(|r| (r.prefixes.clone(), r.suffixes.clone()))
        .collect();
    let ctx = Ctx {
        cands: &cands,
        by_name: &by_name,
        affixes: &affixes,
        file,
    };
    for (ri, r) in resources.iter_mut().enumerate() {
        let rid = r.id();
        // Built-in rules, then the configured ones (`configurations: nameReference`).
        let mut rules: Vec<(&str, &str, Vec<String>)> = Vec::new();
        for (tg, tk) in TARGETS {
            let mut paths: Vec<String> = Vec::new();
            for (wk, base) in WORKLOADS {
                if rid.kind == *wk {
                    for p in pod_paths(tk, wk) {
                        paths.push(format!("{base}/{p}"));
                    }
                }
            }
            for (g, k, p) in other_referrers(tk) {
                if rid.kind == *k && (g.is_empty() || *g == rid.group) {
                    paths.push(p.to_string());
                }
            }
            rules.push((tg, tk, paths));
        }
        for nb in configured {
            let paths: Vec<String> = nb
                .field_specs
                .iter()
                .filter(|f| f.selects(&rid))
                .map(|f| f.path.replace("[]", ""))
                .collect();
            rules.push((
                nb.group.as_deref().unwrap_or(""),
                nb.kind.as_deref().unwrap_or(""),
                paths,
            ));
        }
        for (tg, tk, paths) in rules {
            let (tg, tk) = (&tg, &tk);
            for path in paths {
                let segs: Vec<String> = path.split('/').map(|s| s.replace('|', "/")).collect();
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                let mut err = None;
                let role_kind = if path == "roleRef/name" {
                    r.obj
                        .get("roleRef")
                        .and_then(|x| x.get("kind"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                } else {
                    None
                };
                if role_kind.as_deref().is_some_and(|k| k != *tk) {
                    continue;
                }
                super::fieldspec::visit_values(&mut r.obj, &segs, &mut |v| {
                    if err.is_none()
                        && let Err(e) = ctx.update(v, tg, tk, ri, &rid)
                    {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

struct Ctx<'a> {
    cands: &'a [Candidate],
    by_name: &'a HashMap<(&'a str, &'a str), Vec<usize>>,
    affixes: &'a [(Vec<String>, Vec<String>)],
    file: &'a str,
}

impl Ctx<'_> {
    fn update(
        &self,
        v: &mut Value,
        tg: &str,
        tk: &str,
        referrer: usize,
        rid: &ResId,
    ) -> Result<(), BuildError> {
        match v {
            Value::String(name) => {
                if let Some(c) = self.select(name, None, false, tg, tk, referrer, rid)? {
                    *name = c.cur.name.clone();
                }
            }
            Value::Array(items) => {
                for item in items {
                    if item.is_object()
                        && tk == "ServiceAccount"
                        && item.get("kind").and_then(Value::as_str) != Some("ServiceAccount")
                    {
                        continue;
                    }
                    self.update(item, tg, tk, referrer, rid)?;
                }
            }
            Value::Object(m) => {
                let Some(name) = m.get("name").and_then(Value::as_str).map(str::to_string) else {
                    return Ok(());
                };
                let ns = m
                    .get("namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(c) = self.select(&name, ns.as_deref(), true, tg, tk, referrer, rid)? {
                    m.insert("name".into(), Value::String(c.cur.name.clone()));
                    if !c.cur.namespace.is_empty() {
                        m.insert("namespace".into(), Value::String(c.cur.namespace.clone()));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the sieve needs the whole referral context"
    )]
    fn select(
        &self,
        name: &str,
        ns: Option<&str>,
        is_map: bool,
        tg: &str,
        tk: &str,
        referrer: usize,
        rid: &ResId,
    ) -> Result<Option<&Candidate>, BuildError> {
        let Some(list) = self.by_name.get(&(tk, name)) else {
            return Ok(None);
        };
        let referrer_cluster = rid.is_cluster_scoped();
        let found: Vec<&Candidate> = list
            .iter()
            .map(|ci| &self.cands[*ci])
            .filter(|c| {
                c.prev.iter().any(|p| {
                    p.kind == tk
                        && p.name == name
                        && (tg.is_empty()
                            || p.group == tg
                            || tk == "Deployment"
                            || tk == "ReplicaSet"
                            || tk == "StatefulSet")
                        && ns.is_none_or(|ns| {
                            let ns = if ns.is_empty() { "default" } else { ns };
                            p.effective_namespace() == ns
                        })
                })
            })
            .filter(|c| {
                ns.is_some()
                    || referrer_cluster
                    || c.cur.is_cluster_scoped()
                    || c.cur.kind == "ServiceAccount"
                    || c.cur.effective_namespace() == rid.effective_namespace()
            })
            .collect();
        if found.len() <= 1 {
            return Ok(found.into_iter().next());
        }
        // kustomize's sieve: prefixes/suffixes that agree with the referrer's (an empty list
        // agreeing with anything), then, if still ambiguous, strictly.
        let mine = &self.affixes[referrer];
        let mut pool: Vec<&Candidate> = found
            .into_iter()
            .filter(|c| affixes_agree(&self.affixes[c.idx], mine, true))
            .collect();
        if pool.len() > 1 {
            pool.retain(|c| affixes_agree(&self.affixes[c.idx], mine, false));
        }
        match pool.len() {
            0 => return Ok(None),
            1 => return Ok(Some(pool[0])),
            _ => {}
        }
        // Candidates that would all write the same value: take the first.
        let identical = pool.iter().all(|c| {
            c.cur.name == pool[0].cur.name && (!is_map || c.cur.namespace == pool[0].cur.namespace)
        });
        if identical {
            return Ok(Some(pool[0]));
        }
        Err(BuildError::Transform {
            file: self.file.to_string(),
            message: format!(
                "name reference '{name}' in {rid} matches several {tk} objects: {}",
                pool.iter()
                    .map(|c| c.cur.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// kustomize's `PrefixesSuffixesEquals`: each list of one ends the other's (with
/// `allow_empty`, an empty list agrees with anything).
fn affixes_agree(
    a: &(Vec<String>, Vec<String>),
    b: &(Vec<String>, Vec<String>),
    allow_empty: bool,
) -> bool {
    let ends = |x: &[String], y: &[String]| {
        if allow_empty && (x.is_empty() || y.is_empty()) {
            return true;
        }
        let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
        if short.is_empty() {
            return long.is_empty();
        }
        long.ends_with(short)
    };
    ends(&a.0, &b.0) && ends(&a.1, &b.1)
}
