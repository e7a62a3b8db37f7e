//! The Kubernetes schema facts the engine needs: for each built-in kind its root type, whether
//! it is cluster-scoped, and per field the patch strategy and merge keys used by strategic merge
//! patches. Derived from a kube-apiserver's OpenAPI by `generate.py` into `k8s.table`; parsed
//! once, on first use, into an immutable table.

use std::collections::{HashMap, HashSet};
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
    cluster: HashSet<(String, String)>,
    pub types: Vec<Type>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(TABLE));

pub(crate) fn schema() -> &'static Schema {
    &SCHEMA
}

/// Whether a kind is cluster-scoped (unknown kinds, e.g. custom resources, are namespaced, as
/// in kustomize).
pub(crate) fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    SCHEMA
        .cluster
        .contains(&(group.to_string(), kind.to_string()))
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
    let mut cluster = HashSet::new();
    let mut types: HashMap<usize, Type> = HashMap::new();
    let mut current: Option<usize> = None;
    // The table is a compile-time constant; lines that do not parse are skipped (a unit test
    // checks the table has what the engine relies on).
    for line in text.lines() {
        let cols: Vec<&'static str> = line.split(' ').collect();
        match cols.as_slice() {
            ["K", gvk, ty, scope] => {
                let mut it = gvk.splitn(3, '/');
                let (Some(g), Some(v), Some(k)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let t = intern(ty, &mut names);
                kinds.insert((g.to_string(), v.to_string(), k.to_string()), t);
                if *scope == "c" {
                    cluster.insert((g.to_string(), k.to_string()));
                }
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
    Schema {
        kinds,
        cluster,
        types: out,
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
        assert!(is_cluster_scoped("", "Namespace"));
        assert!(is_cluster_scoped(
            "rbac.authorization.k8s.io",
            "ClusterRole"
        ));
        assert!(!is_cluster_scoped("apps", "Deployment"));
        assert!(!is_cluster_scoped("example.com", "Foo"));
    }
}
