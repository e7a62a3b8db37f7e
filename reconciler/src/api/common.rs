//! Types shared by more than one kind: references, durations, policy module references.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL rule for Go-style durations (`30s`, `1m30s`, `1.5h`): must parse, be positive, and at most
/// 30 days. The `matches` guard comes first so that a malformed value yields this message instead
/// of a CEL evaluation error.
pub const DURATION_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('720h')";
/// The message of a [`DURATION_RULE`] violation.
pub const DURATION_MESSAGE: &str =
    "must be a Go duration such as 30s, 5m or 1h30m, greater than 0 and at most 720h";

/// CEL rule for a Kubernetes object name (RFC 1123 subdomain).
pub const NAME_RULE: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// The message of a [`NAME_RULE`] violation.
pub const NAME_MESSAGE: &str = "must be a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with an alphanumeric character";

/// CEL rule for a namespace name (RFC 1123 label).
pub const LABEL_RULE: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
/// The message of a [`LABEL_RULE`] violation.
pub const LABEL_MESSAGE: &str = "must be a lowercase RFC 1123 label: a-z, 0-9 and '-', starting and ending with an alphanumeric character";

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct LocalObjectReference {
    /// Name of the referent.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
}

/// A reference to a Kubernetes object, optionally in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectReference {
    /// Name of the referent.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the referent; defaults to the namespace of the referring object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
}

/// A reference to an object of a given kind (health checks, an ExternalArtifact's producer).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectKindReference {
    /// API version of the referent, e.g. `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub api_version: Option<String>,
    /// Kind of the referent, e.g. `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the referent.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the referent; empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
}

/// Where a policy's WebAssembly component comes from. Exactly one source is set; every source
/// other than `builtin` carries the `sha256` of the component, verified before compiling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.builtin), has(self.path), has(self.configMapRef), has(self.url)].filter(x, x).size() == 1").message("exactly one of builtin, path, configMapRef or url must be set"))]
#[x_kube(validation = Rule::new("has(self.builtin) || has(self.sha256)").message("sha256 is required for every module that is not builtin"))]
#[x_kube(validation = Rule::new("!has(self.builtin) || !has(self.sha256)").message("sha256 must not be set for a builtin module"))]
pub struct PolicyModule {
    /// A policy embedded in the reconciler: `image-pinning`, `replica-bounds` or `target-namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self in ['image-pinning', 'replica-bounds', 'target-namespace']").message("unknown builtin policy; expected image-pinning, replica-bounds or target-namespace"))]
    pub builtin: Option<String>,
    /// Path of a `.wasm` component inside the source artifact, relative to its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)\\\\.\\\\.(/|$)')").message("path must be relative to the artifact root and must not contain '..'"))]
    pub path: Option<String>,
    /// A key of a ConfigMap's `binaryData` holding the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyReference>,
    /// An https URL to download the component from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https://[^-@/\\\\s][^/\\\\s]*(/\\\\S*)?$')").message("url must be https:// with a host that does not start with '-'"))]
    pub url: Option<String>,
    /// Lowercase hex sha256 of the component bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')").message("sha256 must be 64 lowercase hex characters"))]
    pub sha256: Option<String>,
}

/// A key in a ConfigMap in the same namespace (or, for ClusterPolicy, a given namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the ConfigMap (ClusterPolicy only; Kustomizations use their own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
    /// Key in `binaryData`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What to do when a policy fails to run (trap, timeout, bad output) as opposed to denying.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    /// Fail the reconcile (reason PolicyFailed); nothing is applied. The default.
    #[default]
    Fail,
    /// Skip the policy and record a warning Event.
    Ignore,
}

/// Whether a policy's findings deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyMode {
    /// Violations of severity error deny the revision; transforms change the objects. The
    /// default.
    #[default]
    Enforce,
    /// Kubewarden's monitor mode, for rolling out a policy safely: the policy runs after the
    /// enforcing ones, on their output; its violations (of any severity) and failures are
    /// reported in status, events, metrics and `build`/`diff`, nothing is denied, and what its
    /// transform returns is discarded.
    Audit,
}

/// A selector of Kubernetes objects by group/version/kind/name/namespace and labels/annotations
/// (the same shape as kustomize's patch target).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// API group (empty for the core group); any group when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// API version; any version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind; any kind when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name, or a regular expression matched against the whole name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; any namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A Kubernetes label selector in string form, e.g. `app=web,tier!=db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// An annotation selector in the same form as `labelSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_selector: Option<String>,
}
