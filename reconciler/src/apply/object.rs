//! Identity of a Kubernetes object as the apply stage and the inventory see it.

use std::fmt;

use serde_json::Value;

use crate::api::InventoryEntry;

/// Which object: group/version/kind plus namespace and name. The namespace is `None` for
/// cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group (`v1`).
    pub version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// `apiVersion` as written in a manifest (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The inventory id `<namespace>_<name>_<group>_<kind>` (Flux's format).
    pub fn id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace.as_deref().unwrap_or(""),
            self.name,
            self.group,
            self.kind
        )
    }

    /// The inventory entry of this object.
    pub fn entry(&self) -> InventoryEntry {
        InventoryEntry {
            id: self.id(),
            v: self.version.clone(),
        }
    }

    /// Parses an inventory entry back into a reference. Object names, namespaces and groups never
    /// contain `_` (they are DNS names), and kinds are identifiers, so splitting is unambiguous.
    pub fn from_entry(entry: &InventoryEntry) -> Option<Self> {
        let mut parts = entry.id.splitn(4, '_');
        let namespace = parts.next()?;
        let name = parts.next()?;
        let group = parts.next()?;
        let kind = parts.next()?;
        if name.is_empty() || kind.is_empty() || kind.contains('_') {
            return None;
        }
        Some(Self {
            group: group.to_owned(),
            version: entry.v.clone(),
            kind: kind.to_owned(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            name: name.to_owned(),
        })
    }

    /// Reads apiVersion/kind/metadata.{name,namespace} from a manifest. The namespace is taken
    /// as written; whether the kind is namespaced is decided later with discovery.
    pub fn from_object(object: &Value) -> Result<Self, String> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("missing apiVersion")?;
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("missing kind")?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{kind} without metadata.name"))?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let gv: kube::core::GroupVersion = api_version
            .parse()
            .map_err(|e| format!("apiVersion {api_version:?}: {e}"))?;
        if gv.version.is_empty() || gv.version.contains('/') {
            return Err(format!(
                "apiVersion {api_version:?} is not GROUP/VERSION or VERSION"
            ));
        }
        Ok(Self {
            group: gv.group,
            version: gv.version,
            kind: kind.to_owned(),
            namespace,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ObjectRef {
    /// `Deployment instavote/vote`, `Namespace instavote`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_round_trip() {
        let deploy = ObjectRef::from_object(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "vote", "namespace": "instavote"}
        }))
        .unwrap();
        assert_eq!(deploy.id(), "instavote_vote_apps_Deployment");
        assert_eq!(deploy.to_string(), "Deployment instavote/vote");
        assert_eq!(ObjectRef::from_entry(&deploy.entry()), Some(deploy));

        let ns = ObjectRef::from_object(&json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "instavote"}
        }))
        .unwrap();
        assert_eq!(ns.id(), "_instavote__Namespace");
        assert_eq!(ns.api_version(), "v1");
        assert_eq!(ObjectRef::from_entry(&ns.entry()), Some(ns));
    }

    #[test]
    fn refuses_incomplete_objects() {
        assert_eq!(
            ObjectRef::from_object(&json!({"kind": "Pod"})).unwrap_err(),
            "missing apiVersion"
        );
        assert!(
            ObjectRef::from_object(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}))
                .unwrap_err()
                .contains("Pod without metadata.name")
        );
        assert!(
            ObjectRef::from_entry(&InventoryEntry {
                id: "garbage".into(),
                v: "v1".into()
            })
            .is_none()
        );
    }
}
