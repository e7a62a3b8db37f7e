//! Built-in policy `target-namespace`: how `spec.targetNamespace` is implemented.
//!
//! Config: `{"namespace": "<name>", "clusterScoped": ["Kind.group", ...]}` (`clusterScoped`
//! optional). Semantics follow kustomize's namespace transformer:
//! - every namespaced object gets `metadata.namespace: <name>`;
//! - cluster-scoped kinds are never touched: the built-in table below, plus the kinds the
//!   controller lists in `clusterScoped` from the cluster's discovery data (`Kind.group`, the core
//!   group written as just `Kind`); an unknown kind counts as namespaced, as in kustomize;
//! - Namespace objects are never renamed;
//! - RoleBinding/ClusterRoleBinding subjects of kind ServiceAccount whose namespace is unset,
//!   empty or `default` get `<name>` (kustomize's default `defaultOnly` subject mode);
//! - `webhooks[].clientConfig.service.namespace` of Validating/MutatingWebhookConfigurations and
//!   `spec.service.namespace` of APIServices are set to `<name>` where a service is referenced.

use gitops_policy_sdk::object::{self, str_at};
use gitops_policy_sdk::{
    ConfigError, Context, Metadata, Object, Policy, PolicyError, PolicyKind, Value, json,
};
use std::collections::BTreeSet;

/// Cluster-scoped kinds of Kubernetes v1.34 (and of kubectl-gitops itself), as
/// `(group, kind)`. Used when the controller supplies no discovery data, and in addition to it.
pub const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "ComponentStatus"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authentication.k8s.io", "TokenReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("internal.apiserver.k8s.io", "StorageVersion"),
    ("kubectl-gitops.io", "ClusterPolicy"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("storagemigration.k8s.io", "StorageVersionMigration"),
];

/// The policy.
pub struct TargetNamespace;

/// Parsed configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The namespace to move objects into.
    pub namespace: String,
    /// Extra cluster-scoped kinds from discovery, as `(group, kind)`.
    pub cluster_scoped: BTreeSet<(String, String)>,
}

impl Config {
    /// True if objects of `group`/`kind` are cluster-scoped.
    pub fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        CLUSTER_SCOPED.binary_search(&(group, kind)).is_ok()
            || self
                .cluster_scoped
                .contains(&(group.to_owned(), kind.to_owned()))
    }
}

/// True if `s` is a DNS-1123 label (what a namespace name must be).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Sets `namespace` at `pointer` (which must point at an object holding a `namespace` field's
/// parent) if that object exists.
fn set_service_namespace(object: &mut Value, pointer: &str, namespace: &str) {
    if let Some(Value::Object(service)) = object.pointer_mut(pointer) {
        service.insert("namespace".to_owned(), json!(namespace));
    }
}

/// The transformation of one object (see the module docs). An object that is cluster-scoped,
/// or already in the namespace and without references to update, is left as it came.
pub fn retarget(object: &mut Object, config: &Config) {
    let group = object::group(object).to_owned();
    let kind = object::kind(object).to_owned();
    let ns = config.namespace.as_str();
    match (group.as_str(), kind.as_str()) {
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(Value::Array(subjects)) = object.get_mut("subjects") {
                for subject in subjects.iter_mut() {
                    let is_sa = str_at(subject, "/kind") == Some("ServiceAccount");
                    let subject_ns = str_at(subject, "/namespace").unwrap_or("");
                    if is_sa
                        && (subject_ns.is_empty() || subject_ns == "default")
                        && let Some(map) = subject.as_object_mut()
                    {
                        map.insert("namespace".to_owned(), json!(ns));
                    }
                }
            }
        }
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => {
            if let Some(Value::Array(webhooks)) = object.get_mut("webhooks") {
                for webhook in webhooks.iter_mut() {
                    set_service_namespace(webhook, "/clientConfig/service", ns);
                }
            }
        }
        ("apiregistration.k8s.io", "APIService") => {
            set_service_namespace(object, "/spec/service", ns)
        }
        _ => {}
    }
    if !config.is_cluster_scoped(&group, &kind) && object::namespace(object) != Some(ns) {
        object.set_namespace(ns);
    }
}

impl Policy for TargetNamespace {
    type Config = Config;

    fn metadata() -> Metadata {
        Metadata {
            name: "target-namespace".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description:
                "Moves every namespaced object into one namespace (spec.targetNamespace), \
                          with kustomize namespace-transformer semantics."
                    .to_owned(),
            kind: PolicyKind::Transform,
            config_schema: Some(
                json!({
                    "type": "object",
                    "required": ["namespace"],
                    "properties": {
                        "namespace": {"type": "string", "maxLength": 63},
                        "clusterScoped": {"type": "array", "items": {"type": "string"}}
                    },
                    "additionalProperties": false
                })
                .to_string(),
            ),
            kinds: None,
        }
    }

    fn parse_config(config: &Value) -> Result<Config, ConfigError> {
        let map = config.as_object().ok_or_else(|| {
            ConfigError::new("config must be an object like {\"namespace\": \"apps\"}")
        })?;
        if let Some(key) = map
            .keys()
            .find(|k| *k != "namespace" && *k != "clusterScoped")
        {
            return Err(ConfigError::at(
                format!("/{key}"),
                format!("unknown field {key:?}"),
            ));
        }
        let namespace = map
            .get("namespace")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::at("/namespace", "namespace (a string) is required"))?;
        if !is_dns_label(namespace) {
            return Err(ConfigError::at(
                "/namespace",
                format!(
                    "{namespace:?} is not a valid namespace name (lowercase DNS label, at most 63 characters)"
                ),
            ));
        }
        let mut cluster_scoped = BTreeSet::new();
        if let Some(list) = map.get("clusterScoped") {
            let list = list.as_array().ok_or_else(|| {
                ConfigError::at(
                    "/clusterScoped",
                    "clusterScoped must be a list of \"Kind.group\" strings",
                )
            })?;
            for (i, entry) in list.iter().enumerate() {
                let entry = entry.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::at(
                        format!("/clusterScoped/{i}"),
                        "must be a non-empty \"Kind.group\" string",
                    )
                })?;
                let (kind, group) = entry.split_once('.').unwrap_or((entry, ""));
                cluster_scoped.insert((group.to_owned(), kind.to_owned()));
            }
        }
        Ok(Config {
            namespace: namespace.to_owned(),
            cluster_scoped,
        })
    }

    fn transform(
        _ctx: &Context,
        config: &Config,
        mut objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        for object in objects.iter_mut() {
            if !object.is_object() {
                return Err(PolicyError::on(object, "object is not a JSON object"));
            }
            retarget(object, config);
        }
        Ok(objects)
    }
}

gitops_policy_sdk::export_policy!(TargetNamespace);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_scoped_table_is_sorted_for_binary_search() {
        let mut sorted = CLUSTER_SCOPED.to_vec();
        sorted.sort();
        assert_eq!(sorted, CLUSTER_SCOPED);
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = TargetNamespace::parse_config(&json!({"namespace": "Bad_NS"})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/namespace"));
        let e = TargetNamespace::parse_config(&json!({"namespace": "ok", "extra": 1})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/extra"));
        let e = TargetNamespace::parse_config(&Value::Null).unwrap_err();
        assert!(e.message.contains("namespace"));
        let c = TargetNamespace::parse_config(
            &json!({"namespace": "ok", "clusterScoped": ["Widget.example.com", "Thing"]}),
        )
        .unwrap();
        assert!(c.is_cluster_scoped("example.com", "Widget"));
        assert!(c.is_cluster_scoped("", "Thing"));
        assert!(!c.is_cluster_scoped("", "Widget"));
    }

    #[test]
    fn fixtures() {
        gitops_policy_sdk::testing::check_fixtures::<TargetNamespace>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/target-namespace"
        ));
    }
}
