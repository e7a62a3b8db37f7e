//! The Kubernetes schema facts the engine needs: for each built-in kind its root type, whether
//! it is cluster-scoped, and per field the patch strategy and merge keys used by strategic merge
//! patches. Derived from a kube-apiserver's OpenAPI by `generate.py` into `k8s.table`; parsed
//! once, on first use, into an immutable table.

use std::collections::HashMap;
use std::sync::LazyLock;

const TABLE: &str = include_str!("k8s.table");

/// The shape of a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    List,
    Map,
    Scalar,
}

#[derive(Debug)]
pub(crate) struct Field {
    pub shape: Shape,
    /// Index of the element/value type, if it is a known type.
    pub ty: Option<usize>,
    /// `x-kubernetes-patch-strategy` contains `merge` (or the list type is map/set).
    pub merge: bool,
    /// Merge keys (the first is the patch merge key).
    pub keys: Vec<String>,
}

#[derive(Default, Debug)]
pub(crate) struct Type {
    pub fields: HashMap<String, Field>,
}

pub(crate) struct Schema {
    kinds: HashMap<(String, String, String), usize>,
    pub types: Vec<Type>,
    /// Type index by the table's short definition name (see `short_name`); filled for the
    /// built-in table only.
    names: HashMap<String, usize>,
}

/// The table's name of an OpenAPI definition: the Kubernetes package prefix is dropped
/// (`io.k8s.api.core.v1.PodSpec` is `core.v1.PodSpec`), as `generate.py` writes them.
fn short_name(name: &str) -> &str {
    const PREFIXES: [&str; 4] = [
        "io.k8s.api.",
        "io.k8s.apimachinery.pkg.apis.meta.",
        "io.k8s.apimachinery.pkg.",
        "io.k8s.",
    ];
    PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(TABLE));

pub(crate) fn schema() -> &'static Schema {
    &SCHEMA
}

/// The (apiVersion, kind) pairs kustomize v5.5 knows to be cluster-scoped: its built-in schema
/// is Kubernetes v1.21's, so newer cluster-scoped kinds (ValidatingAdmissionPolicy,
/// flowcontrol v1 FlowSchema, ...) and every custom resource count as namespaced and get
/// `namespace:` like any namespaced object. The output must be kustomize's, so this table,
/// not the apiserver's, decides scope in the build. (The apply stage asks the cluster.)
const KUSTOMIZE_CLUSTER_SCOPED: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    (
        "flowcontrol.apiserver.k8s.io/v1beta1",
        "PriorityLevelConfiguration",
    ),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
    ("storage.k8s.io/v1beta1", "CSIDriver"),
    ("storage.k8s.io/v1beta1", "CSINode"),
    ("storage.k8s.io/v1beta1", "StorageClass"),
    ("storage.k8s.io/v1beta1", "VolumeAttachment"),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
];

/// Whether kustomize treats a group/version/kind as cluster-scoped.
pub(crate) fn is_cluster_scoped(group: &str, version: &str, kind: &str) -> bool {
    KUSTOMIZE_CLUSTER_SCOPED.iter().any(|(av, k)| {
        *k == kind
            && match av.split_once('/') {
                Some((g, v)) => g == group && v == version,
                None => group.is_empty() && *av == version,
            }
    })
}

/// A schema from a user's OpenAPI document (the kustomization's `openapi: {path: ...}`), as
/// kustomize reads one: `definitions` whose `x-kubernetes-group-version-kind` names a kind,
/// properties by `$ref`, `items` and `additionalProperties`, and the patch strategy and merge
/// key extensions. Anonymous nested objects become types of their own.
///
/// With `builtin`, a `$ref` to a definition the document lacks resolves to the built-in
/// Kubernetes type of that name (kustomize's schema then holds both: see the caller).
pub(crate) fn from_openapi(doc: &serde_json::Value, builtin: Option<&Schema>) -> Schema {
    use serde_json::Value;
    struct B<'d> {
        defs: Option<&'d serde_json::Map<String, Value>>,
        builtin: Option<&'d Schema>,
        index: HashMap<String, usize>,
        /// Built-in type index -> index here, for the built-in types copied in.
        imported: HashMap<usize, usize>,
        types: Vec<Type>,
    }
    impl<'d> B<'d> {
        /// The type index of a named definition, built on first use.
        fn named(&mut self, name: &str) -> usize {
            if let Some(i) = self.index.get(name) {
                return *i;
            }
            let def = self.defs.and_then(|d| d.get(name));
            if def.is_none()
                && let Some(b) = self.builtin
                && let Some(bt) = b.names.get(short_name(name)).copied()
            {
                let i = self.import(b, bt);
                self.index.insert(name.to_string(), i);
                return i;
            }
            let i = self.types.len();
            self.types.push(Type::default());
            self.index.insert(name.to_string(), i);
            if let Some(def) = def {
                let t = self.object(def);
                self.types[i] = t;
            }
            i
        }
        /// Copies the built-in type `bt` and the types it reaches (each once).
        fn import(&mut self, b: &Schema, bt: usize) -> usize {
            if let Some(i) = self.imported.get(&bt) {
                return *i;
            }
            let i = self.types.len();
            self.types.push(Type::default());
            self.imported.insert(bt, i);
            let mut t = Type::default();
            for (name, f) in b.types.get(bt).map(|t| &t.fields).into_iter().flatten() {
                let ty = f.ty.map(|c| self.import(b, c));
                t.fields.insert(
                    name.clone(),
                    Field {
                        shape: f.shape,
                        ty,
                        merge: f.merge,
                        keys: f.keys.clone(),
                    },
                );
            }
            self.types[i] = t;
            i
        }
        fn reference(&mut self, v: &'d Value) -> Option<usize> {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                return Some(self.named(r.trim_start_matches("#/definitions/")));
            }
            if v.get("properties").is_some() {
                let t = self.object(v);
                self.types.push(t);
                return Some(self.types.len() - 1);
            }
            None
        }
        fn object(&mut self, def: &'d Value) -> Type {
            let mut t = Type::default();
            let Some(props) = def.get("properties").and_then(Value::as_object) else {
                return t;
            };
            for (name, p) in props {
                let strategy = p
                    .get("x-kubernetes-patch-strategy")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let mut keys: Vec<String> = p
                    .get("x-kubernetes-patch-merge-key")
                    .and_then(Value::as_str)
                    .map(|k| vec![k.to_string()])
                    .unwrap_or_default();
                if keys.is_empty()
                    && let Some(Value::Array(mk)) = p.get("x-kubernetes-list-map-keys")
                {
                    keys = mk
                        .iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect();
                }
                let list_type = p.get("x-kubernetes-list-type").and_then(Value::as_str);
                let merge = strategy.split(',').any(|s| s == "merge")
                    || matches!(list_type, Some("map" | "set"));
                let is_list = p.get("type").and_then(Value::as_str) == Some("array");
                let field = if is_list {
                    let ty = p.get("items").and_then(|i| self.reference(i));
                    Field {
                        shape: Shape::List,
                        ty,
                        merge,
                        keys,
                    }
                } else if let Some(ap) = p.get("additionalProperties").filter(|a| a.is_object()) {
                    let ty = self.reference(ap);
                    Field {
                        shape: Shape::Map,
                        ty,
                        merge,
                        keys,
                    }
                } else if let Some(ty) = self.reference(p) {
                    Field {
                        shape: Shape::Object,
                        ty: Some(ty),
                        merge,
                        keys,
                    }
                } else {
                    Field {
                        shape: Shape::Scalar,
                        ty: None,
                        merge,
                        keys,
                    }
                };
                t.fields.insert(name.clone(), field);
            }
            t
        }
    }
    let defs = doc.get("definitions").and_then(Value::as_object);
    let mut b = B {
        defs,
        builtin,
        index: HashMap::new(),
        imported: HashMap::new(),
        types: Vec::new(),
    };
    let mut kinds = HashMap::new();
    for (name, def) in defs.into_iter().flatten() {
        let Some(Value::Array(gvks)) = def.get("x-kubernetes-group-version-kind") else {
            continue;
        };
        let t = b.named(name);
        for g in gvks {
            let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            kinds.insert((s("group"), s("version"), s("kind")), t);
        }
    }
    Schema {
        kinds,
        types: b.types,
        names: HashMap::new(),
    }
}

impl Schema {
    /// The root type of a kind, if the table knows it.
    pub fn root(&self, group: &str, version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .copied()
    }

    pub fn field(&self, ty: Option<usize>, name: &str) -> Option<&Field> {
        self.types.get(ty?)?.fields.get(name)
    }
}

fn parse(text: &'static str) -> Schema {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut intern = |n: &'static str, names: &mut Vec<&'static str>| -> usize {
        *index.entry(n).or_insert_with(|| {
            names.push(n);
            names.len() - 1
        })
    };
    let mut kinds = HashMap::new();
    let mut types: HashMap<usize, Type> = HashMap::new();
    let mut current: Option<usize> = None;
    // The table is a compile-time constant; lines that do not parse are skipped (a unit test
    // checks the table has what the engine relies on).
    for line in text.lines() {
        let cols: Vec<&'static str> = line.split(' ').collect();
        match cols.as_slice() {
            ["K", gvk, ty, _scope] => {
                let mut it = gvk.splitn(3, '/');
                let (Some(g), Some(v), Some(k)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let t = intern(ty, &mut names);
                kinds.insert((g.to_string(), v.to_string(), k.to_string()), t);
            }
            ["T", ty] => {
                let t = intern(ty, &mut names);
                current = Some(t);
                types.entry(t).or_default();
            }
            ["F", name, shape, ty, strategy, keys] => {
                let Some(cur) = current else { continue };
                let shape = match *shape {
                    "o" => Shape::Object,
                    "l" => Shape::List,
                    "m" => Shape::Map,
                    _ => Shape::Scalar,
                };
                let ty = if *ty == "-" {
                    None
                } else {
                    Some(intern(ty, &mut names))
                };
                let field = Field {
                    shape,
                    ty,
                    merge: strategy.split(',').any(|s| s == "merge"),
                    keys: if *keys == "-" {
                        Vec::new()
                    } else {
                        keys.split(',').map(str::to_string).collect()
                    },
                };
                types
                    .entry(cur)
                    .or_default()
                    .fields
                    .insert(name.to_string(), field);
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        out.push(types.remove(&i).unwrap_or_default());
    }
    let names = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i))
        .collect();
    Schema {
        kinds,
        types: out,
        names,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_knows_pod_spec_merge_keys() {
        let s = schema();
        let dep = s
            .root("apps", "v1", "Deployment")
            .expect("Deployment in table");
        let spec = s.field(Some(dep), "spec").expect("spec");
        let template = s.field(spec.ty, "template").expect("template");
        let pod = s.field(template.ty, "spec").expect("pod spec");
        let containers = s.field(pod.ty, "containers").expect("containers");
        assert!(containers.merge);
        assert_eq!(containers.keys, vec!["name".to_string()]);
        let c = s.field(containers.ty, "ports").expect("ports");
        assert_eq!(c.keys[0], "containerPort");
        assert!(is_cluster_scoped("", "v1", "Namespace"));
        assert!(is_cluster_scoped(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole"
        ));
        assert!(!is_cluster_scoped(
            "rbac.authorization.k8s.io",
            "v1alpha1",
            "ClusterRole"
        ));
        assert!(!is_cluster_scoped(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy"
        ));
        assert!(!is_cluster_scoped("apps", "v1", "Deployment"));
        assert!(!is_cluster_scoped("example.com", "v1", "Foo"));
    }
}
