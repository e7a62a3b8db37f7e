//! Reading and editing Kubernetes objects held as `serde_json::Value`.

use serde_json::{Map, Value};

/// The string at JSON pointer `pointer`, if there is one.
pub fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// `kind`, or `""`.
pub fn kind(object: &Value) -> &str {
    str_at(object, "/kind").unwrap_or_default()
}

/// `metadata.name`, or `""`.
pub fn name(object: &Value) -> &str {
    str_at(object, "/metadata/name").unwrap_or_default()
}

/// `metadata.namespace`, if set and non-empty.
pub fn namespace(object: &Value) -> Option<&str> {
    str_at(object, "/metadata/namespace").filter(|s| !s.is_empty())
}

/// The API group of `apiVersion` (`""` for the core group).
pub fn group(object: &Value) -> &str {
    let api_version = str_at(object, "/apiVersion").unwrap_or_default();
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// The object's `metadata` map, created if missing (replacing a non-object `metadata`).
pub fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut()
}

/// Sets `metadata.namespace`.
pub fn set_namespace(object: &mut Value, namespace: &str) {
    if let Some(metadata) = metadata_mut(object) {
        metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
    }
}

/// The value of label `key`, if set.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// The pod spec of a workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// ReplicationController, Job, CronJob) and its JSON pointer; `None` for other kinds.
pub fn pod_spec_pointer(object: &Value) -> Option<&'static str> {
    match kind(object) {
        "Pod" => Some("/spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The container lists of a pod spec, in order.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];
