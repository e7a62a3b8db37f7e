//! ClusterPolicy: a policy platform teams enforce on every matching Kustomization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{FailurePolicy, PolicyMode, PolicyModule};

/// The desired state of a ClusterPolicy. It runs before the Kustomization's own policies, and
/// tenants cannot remove it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "ClusterPolicy",
    status = "ClusterPolicyStatus",
    category = "gitops",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].message"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.module.path)").message("module.path is not available to a ClusterPolicy (it has no source); use builtin, configMapRef or url"))]
#[x_kube(validation = Rule::new("!has(self.module.configMapRef) || has(self.module.configMapRef.namespace)").message("module.configMapRef.namespace is required for a ClusterPolicy"))]
pub struct ClusterPolicySpec {
    /// The component to run.
    pub module: PolicyModule,
    /// Configuration handed to the policy (any JSON); checked by its `validate-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub config: Option<serde_json::Value>,
    /// What to do when the policy fails to run. Default Fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Enforce (default) or Audit: an audit policy reports its violations in the selected
    /// Kustomizations' status, events and metrics and never denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,
    /// Which Kustomizations the policy applies to; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<KustomizationSelector>,
}

/// Selects Kustomizations by the labels of their namespace and by their own labels. Both must
/// match when both are set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSelector {
    /// Matches the labels of the Kustomization's namespace; any namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Matches the Kustomization's own labels; any Kustomization when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomization_selector: Option<LabelSelector>,
}

/// The observed state of a ClusterPolicy: whether its module loads and its config validates,
/// which Kustomizations it selected when they last reconciled, and its latest violations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicyStatus {
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; the printer columns read `Ready`. The reconciler writes none yet:
    /// a module that fails to load or a configuration that fails to validate is reported on
    /// the Kustomizations the policy applies to (reason PolicyFailed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Kustomizations (`namespace/name`, sorted) the policy ran on at their last
    /// reconcile; at most 1,000 are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub selected: Vec<String>,
    /// The latest violations the policy reported, newest first: for each Kustomization only
    /// those of its last reconcile; at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub last_violations: Vec<RecordedViolation>,
}

/// A violation as a ClusterPolicy's status records it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedViolation {
    /// The Kustomization whose objects it is about: `namespace/name`.
    pub kustomization: String,
    /// The source revision that was checked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// The object: `Kind namespace/name` (or `Kind name`), if the policy named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// JSON pointer into the object, if the policy named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// `error` (denied the revision) or `warning`.
    pub severity: String,
    /// When it was reported (RFC 3339).
    pub time: String,
}
