//! Reading the objects of this project the way the CLI shows them: the status row of a source or
//! a Kustomization, inventory ids, and the clean form used by `export`.

use gitops_reconciler::api::conditions::{self, status, types};
use gitops_reconciler::api::{Kustomization, SourceState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde_json::Value;

/// One line of `get`: what every listing column needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub revision: String,
    pub suspended: bool,
    pub ready: String,
    /// Reason of the Ready condition (empty when there is none).
    pub reason: String,
    pub message: String,
    /// `Kind/ns/name` of the source of a Kustomization; empty for sources.
    pub source: String,
    /// The shard the object is labelled for (`SHARD_LABEL`); empty for the main reconciler's.
    pub shard: String,
    conditions: Vec<Condition>,
}

impl StatusRow {
    /// The status of condition `type_` (case-insensitive), `Unknown` when absent.
    pub fn condition_status(&self, type_: &str) -> &str {
        self.conditions
            .iter()
            .find(|c| c.type_.eq_ignore_ascii_case(type_))
            .map_or(status::UNKNOWN, |c| c.status.as_str())
    }
}

fn ready_columns(conds: &[Condition]) -> (String, String, String) {
    match conditions::get(conds, types::READY) {
        Some(ready) => (
            ready.status.clone(),
            ready.reason.clone(),
            ready.message.clone(),
        ),
        None => (
            status::UNKNOWN.to_owned(),
            String::new(),
            "waiting to be reconciled".to_owned(),
        ),
    }
}

/// The row of a source of any kind.
pub fn source_row(source: &SourceState) -> StatusRow {
    let (ready, reason, message) = ready_columns(&source.conditions);
    StatusRow {
        kind: source.kind.name(),
        namespace: source.namespace.clone(),
        name: source.name.clone(),
        revision: source
            .artifact
            .as_ref()
            .map(|a| a.revision.clone())
            .unwrap_or_default(),
        suspended: source.suspended,
        ready,
        reason,
        message,
        source: String::new(),
        shard: String::new(),
        conditions: source.conditions.clone(),
    }
}

pub fn kustomization_row(ks: &Kustomization) -> StatusRow {
    let status = ks.status.clone().unwrap_or_default();
    let (ready, reason, message) = ready_columns(&status.conditions);
    let namespace = ks.namespace().unwrap_or_default();
    let source_ns = ks
        .spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    StatusRow {
        kind: "Kustomization",
        source: format!(
            "{}/{source_ns}/{}",
            ks.spec.source_ref.kind, ks.spec.source_ref.name
        ),
        namespace,
        name: ks.name_any(),
        revision: status.last_applied_revision.unwrap_or_default(),
        suspended: ks.spec.suspend == Some(true),
        ready,
        reason,
        message,
        shard: String::new(),
        conditions: status.conditions,
    }
}

pub fn receiver_row(receiver: &gitops_reconciler::api::Receiver) -> StatusRow {
    let status = receiver.status.clone().unwrap_or_default();
    let (ready, reason, message) = ready_columns(&status.conditions);
    StatusRow {
        kind: "Receiver",
        namespace: receiver.namespace().unwrap_or_default(),
        name: receiver.name_any(),
        revision: String::new(),
        suspended: receiver.spec.suspend == Some(true),
        ready,
        reason,
        message,
        source: String::new(),
        shard: String::new(),
        conditions: status.conditions,
    }
}

/// Alerts and Providers have no status (as in Flux's v1beta3): READY is `True` once they
/// exist, and the message says what they point at.
fn static_row(
    kind: &'static str,
    meta: &kube::api::ObjectMeta,
    suspended: bool,
    message: String,
) -> StatusRow {
    StatusRow {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        revision: String::new(),
        suspended,
        ready: status::TRUE.to_owned(),
        reason: String::new(),
        message,
        source: String::new(),
        shard: String::new(),
        conditions: Vec::new(),
    }
}

pub fn alert_row(alert: &gitops_reconciler::api::Alert) -> StatusRow {
    static_row(
        "Alert",
        &alert.metadata,
        alert.spec.suspend == Some(true),
        format!("provider {}", alert.spec.provider_ref.name),
    )
}

pub fn provider_row(provider: &gitops_reconciler::api::Provider) -> StatusRow {
    static_row(
        "Provider",
        &provider.metadata,
        provider.spec.suspend == Some(true),
        format!("type {}", provider.spec.type_.as_str()),
    )
}

/// An object of an inventory: `<namespace>_<name>_<group>_<kind>` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub kind: String,
}

impl ObjectId {
    /// Parses an inventory id. Names, namespaces, groups and kinds cannot contain `_`, so the id
    /// has exactly four parts (namespace and group may be empty).
    pub fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('_');
        let (namespace, name, group, kind) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || name.is_empty() || kind.is_empty() {
            return None;
        }
        Some(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
        })
    }

    /// `Kind/namespace/name` (or `Kind/name` for cluster-scoped objects).
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The form of an object to commit to git: apiVersion, kind, metadata reduced to name,
/// namespace, labels and annotations (without the CLI's reconcile request and kubectl's
/// last-applied copy), and spec. Status and server-set fields are dropped.
pub fn exportable(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = object.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    let mut metadata = serde_json::Map::new();
    if let Some(meta) = object.get("metadata") {
        for key in ["name", "namespace", "labels"] {
            if let Some(v) = meta.get(key) {
                metadata.insert(key.to_owned(), v.clone());
            }
        }
        if let Some(Value::Object(annotations)) = meta.get("annotations") {
            let kept: serde_json::Map<String, Value> = annotations
                .iter()
                .filter(|(k, _)| {
                    k.as_str() != conditions::meta::RECONCILE_REQUESTED_AT_ANNOTATION
                        && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !kept.is_empty() {
                metadata.insert("annotations".to_owned(), Value::Object(kept));
            }
        }
    }
    out.insert("metadata".to_owned(), Value::Object(metadata));
    for key in ["spec", "data", "stringData", "binaryData", "type"] {
        if let Some(v) = object.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// Several objects as one YAML stream (`---` between documents).
pub fn yaml_stream(objects: &[Value]) -> anyhow::Result<String> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&gitops_reconciler::yaml::to_string(object)?);
    }
    Ok(text)
}

/// Removes `metadata.managedFields` (noise in `-o yaml|json`).
pub fn without_managed_fields(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inventory_ids_parse_and_print() {
        let id = ObjectId::parse("instavote_vote_apps_Deployment").unwrap();
        assert_eq!(id.display(), "Deployment/instavote/vote");
        assert_eq!(
            (id.namespace.as_str(), id.name.as_str(), id.group.as_str()),
            ("instavote", "vote", "apps")
        );
        let ns = ObjectId::parse("_instavote__Namespace").unwrap();
        assert_eq!(ns.display(), "Namespace/instavote");
        assert_eq!(ns.group, "");
        assert_eq!(ObjectId::parse("a_b_c"), None);
        assert_eq!(ObjectId::parse("a_b_c_d_e"), None);
        assert_eq!(ObjectId::parse("ns__apps_Deployment"), None);
    }

    #[test]
    fn export_keeps_only_what_belongs_in_git() {
        let live = json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Kustomization",
            "metadata": {
                "name": "vote-dev", "namespace": "gitops-system", "uid": "123",
                "resourceVersion": "9", "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl-gitops"}],
                "labels": {"team": "web"},
                "annotations": {
                    "kubectl-gitops.io/reconcile-requested-at": "now",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"
                },
                "finalizers": ["kubectl-gitops.io/finalizer"]
            },
            "spec": {"interval": "1m"},
            "status": {"observedGeneration": 3}
        });
        assert_eq!(
            exportable(&live),
            json!({
                "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Kustomization",
                "metadata": {"name": "vote-dev", "namespace": "gitops-system", "labels": {"team": "web"}},
                "spec": {"interval": "1m"}
            })
        );
    }
}
