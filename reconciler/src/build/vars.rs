//! `vars:` (deprecated in kustomize, still common): a var names a field of one object; after
//! every rename and name reference is settled, `$(NAME)` in the var-reference fields of every
//! object is replaced by that field's value.
//!
//! kustomize's rules, followed here: a var is bound to its object when the kustomization that
//! declares it is built (by group, version, kind and name — any earlier name counts — plus the
//! namespace when given), so later renames carry the binding along; two vars with one name
//! are an error; the value is read at the end, from the object as it then is; `$$` is a
//! literal `$`; an unknown `$(X)` stays as written; a field that is exactly `$(NAME)` takes
//! the value with its type (a number stays a number).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::BuildError;
use super::kustomization::FieldSpec;
use super::resource::{ResId, Resource, split_api_version};

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjRef {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FieldRef {
    #[serde(default, rename = "fieldpath", alias = "fieldPath")]
    pub field_path: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VarEntry {
    pub name: String,
    pub objref: ObjRef,
    #[serde(default)]
    pub fieldref: Option<FieldRef>,
}

impl VarEntry {
    fn target(&self) -> (String, String) {
        match self.objref.api_version.as_deref() {
            Some(av) if !av.is_empty() => {
                let (g, v) = split_api_version(av);
                (g.to_string(), v.to_string())
            }
            _ => (
                self.objref.group.clone().unwrap_or_default(),
                self.objref.version.clone().unwrap_or_default(),
            ),
        }
    }

    fn field_path(&self) -> &str {
        self.fieldref
            .as_ref()
            .and_then(|f| f.field_path.as_deref())
            .filter(|p| !p.is_empty())
            .unwrap_or("metadata.name")
    }
}

/// Declares `vars` of one kustomization: checks names are new and binds each var to the one
/// object it names (if any yet; kustomize reports a missing one only when resolving).
pub(crate) fn declare(
    vars: &[VarEntry],
    resources: &mut [Resource],
    declared: &mut Vec<VarEntry>,
    file: &str,
) -> Result<(), BuildError> {
    for v in vars {
        if declared.iter().any(|d| d.name == v.name) {
            return Err(BuildError::Transform {
                file: file.to_string(),
                message: format!("var '{}' already encountered", v.name),
            });
        }
        let (group, version) = v.target();
        let want = ResId {
            group,
            version,
            kind: v.objref.kind.clone(),
            namespace: v.objref.namespace.clone().unwrap_or_default(),
            name: v.objref.name.clone(),
        };
        let exact_ns = !want.namespace.is_empty() || want.is_cluster_scoped();
        let matches = |id: &ResId| {
            id.name == want.name
                && id.group == want.group
                && id.version == want.version
                && id.kind == want.kind
                && (!exact_ns || id.effective_namespace() == want.effective_namespace())
        };
        let hits: Vec<usize> = resources
            .iter()
            .enumerate()
            .filter(|(_, r)| matches(&r.id()) || r.prev.iter().any(&matches))
            .map(|(i, _)| i)
            .collect();
        if hits.len() > 1 {
            return Err(BuildError::Transform {
                file: file.to_string(),
                message: format!(
                    "var '{}': {} objects match {} {} (unable to disambiguate)",
                    v.name,
                    hits.len(),
                    v.objref.kind,
                    v.objref.name
                ),
            });
        }
        if let Some(i) = hits.first() {
            resources[*i].vars.push(v.name.clone());
        }
        declared.push(v.clone());
    }
    Ok(())
}

/// Reads a field by kustomize's dotted field path (`spec.ports[0].port`,
/// `spec.containers[name=app].image`, `metadata.annotations.a\.b`).
fn field_value<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = obj;
    for seg in split_path(path) {
        let (key, selector) = match seg.find('[') {
            Some(i) if seg.ends_with(']') => (&seg[..i], Some(&seg[i + 1..seg.len() - 1])),
            _ => (seg.as_str(), None),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        if let Some(sel) = selector {
            let items = cur.as_array()?;
            cur = match sel.split_once('=') {
                Some((k, v)) => items
                    .iter()
                    .find(|i| i.get(k).map(scalar_text).as_deref() == Some(v))?,
                None => items.get(sel.parse::<usize>().ok()?)?,
            };
        }
    }
    Some(cur)
}

/// kustomize's var field paths: dotted, with `\.` for a dot inside a key.
fn split_path(path: &str) -> Vec<String> {
    const ESCAPED_DOT: &str = "\u{0}";
    super::replacements::split_dotted(&path.replace("\\.", ESCAPED_DOT))
        .into_iter()
        .map(|s| s.replace(ESCAPED_DOT, "."))
        .collect()
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Where `$(VAR)` is replaced by default: kustomize's varReference configuration.
fn default_var_paths(id: &ResId) -> Vec<String> {
    const CONTAINER: &[&str] = &[
        "containers/args",
        "containers/command",
        "containers/env/value",
        "containers/volumeMounts/mountPath",
        "initContainers/args",
        "initContainers/command",
        "initContainers/env/value",
        "initContainers/volumeMounts/mountPath",
    ];
    let pod_spec = match id.kind.as_str() {
        "Pod" => Some("spec"),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            Some("spec/template/spec")
        }
        "CronJob" => Some("spec/jobTemplate/spec/template/spec"),
        _ => None,
    };
    let mut out: Vec<String> = vec!["metadata/labels".into(), "metadata/annotations".into()];
    if let Some(base) = pod_spec {
        out.extend(CONTAINER.iter().map(|p| format!("{base}/{p}")));
        // kustomize's table: StatefulSets look in their claim templates, CronJobs at a path
        // without `spec` (so never), everything else in the pod's volumes.
        out.push(match id.kind.as_str() {
            "StatefulSet" => "spec/volumeClaimTemplates/spec/nfs/server".into(),
            "CronJob" => "spec/jobTemplate/spec/template/volumes/nfs/server".into(),
            _ => format!("{base}/volumes/nfs/server"),
        });
    }
    match id.kind.as_str() {
        "Deployment" => out.push("spec/template/metadata/annotations".into()),
        "Ingress" => out
            .extend(["spec/rules/host", "spec/tls/hosts", "spec/tls/secretName"].map(String::from)),
        "Service" => out.extend(["spec/ports/port", "spec/ports/targetPort"].map(String::from)),
        "PersistentVolume" => out.push("spec/nfs/server".into()),
        _ => {}
    }
    out
}

/// Kubernetes' `$(VAR)` expansion of one string. Returns the new value: a var's own typed
/// value when the string is exactly one reference to it.
fn expand(s: &str, values: &BTreeMap<String, Value>, used: &mut Vec<String>) -> Option<Value> {
    if !s.contains('$') {
        return None;
    }
    if let Some(name) = s.strip_prefix("$(").and_then(|r| r.strip_suffix(')'))
        && !name.contains(['(', ')', '$'])
        && let Some(v) = values.get(name)
    {
        used.push(name.to_string());
        return Some(v.clone());
    }
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = s[i + 2..].find(')') {
                        let name = &s[i + 2..i + 2 + end];
                        match values.get(name) {
                            Some(v) => {
                                used.push(name.to_string());
                                out.push_str(&scalar_text(v));
                            }
                            None => out.push_str(&s[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = s[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    (out != s).then_some(Value::String(out))
}

fn replace_in(v: &mut Value, values: &BTreeMap<String, Value>, used: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(n) = expand(s, values, used) {
                *v = n;
            }
        }
        Value::Array(items) => {
            for i in items {
                if i.is_string() {
                    replace_in(i, values, used);
                }
            }
        }
        Value::Object(m) => {
            for (_, x) in m.iter_mut() {
                if x.is_string() {
                    replace_in(x, values, used);
                }
            }
        }
        _ => {}
    }
}

/// Resolves every declared var and substitutes it. Unused vars are allowed (kustomize only
/// logs them).
pub(crate) fn resolve(
    declared: &[VarEntry],
    resources: &mut [Resource],
    extra_paths: &[FieldSpec],
    file: &str,
) -> Result<(), BuildError> {
    if declared.is_empty() {
        return Ok(());
    }
    let mut values = BTreeMap::new();
    for v in declared {
        let Some(r) = resources.iter().find(|r| r.vars.contains(&v.name)) else {
            return Err(BuildError::Transform {
                file: file.to_string(),
                message: format!(
                    "var '{}' cannot be mapped to a field in the set of known resources \
                     (no {} '{}' with that apiVersion)",
                    v.name, v.objref.kind, v.objref.name
                ),
            });
        };
        let Some(val) = field_value(&r.obj, v.field_path()) else {
            return Err(BuildError::Transform {
                file: file.to_string(),
                message: format!(
                    "var '{}': field '{}' not found in {}",
                    v.name,
                    v.field_path(),
                    r.id()
                ),
            });
        };
        values.insert(v.name.clone(), val.clone());
    }
    let mut used = Vec::new();
    for r in resources.iter_mut() {
        let id = r.id();
        let mut paths = default_var_paths(&id);
        paths.extend(
            extra_paths
                .iter()
                .filter(|f| f.selects(&id))
                .map(|f| f.path.clone()),
        );
        paths.sort();
        paths.dedup();
        for p in paths {
            let segs: Vec<&str> = p.split('/').map(|s| s.trim_end_matches("[]")).collect();
            super::fieldspec::visit_values(&mut r.obj, &segs, &mut |v| {
                replace_in(v, &values, &mut used)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_like_kubernetes() {
        let vals: BTreeMap<String, Value> = [
            ("A".to_string(), json!("x")),
            ("N".to_string(), json!(8080)),
        ]
        .into();
        let mut used = Vec::new();
        assert_eq!(expand("$(A)-$(B)", &vals, &mut used), Some(json!("x-$(B)")));
        assert_eq!(expand("$(N)", &vals, &mut used), Some(json!(8080)));
        assert_eq!(expand("p:$(N)", &vals, &mut used), Some(json!("p:8080")));
        assert_eq!(expand("$$(A)", &vals, &mut used), Some(json!("$(A)")));
        assert_eq!(expand("plain", &vals, &mut used), None);
    }

    #[test]
    fn reads_field_paths() {
        let o = json!({"spec": {"ports": [{"name": "http", "port": 80}]},
                       "metadata": {"annotations": {"a.b": "c"}}});
        assert_eq!(field_value(&o, "spec.ports[0].port"), Some(&json!(80)));
        assert_eq!(
            field_value(&o, "spec.ports[name=http].port"),
            Some(&json!(80))
        );
        assert_eq!(
            field_value(&o, "metadata.annotations.a\\.b"),
            Some(&json!("c"))
        );
        assert_eq!(field_value(&o, "spec.nope"), None);
    }
}
