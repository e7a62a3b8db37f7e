//! Kustomization: what to build from a source and how to apply it. Field names follow Flux's
//! kustomize.toolkit.fluxcd.io/v1 where the concept is the same.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DURATION_MESSAGE, DURATION_RULE, FailurePolicy, LABEL_MESSAGE, LABEL_RULE,
    LocalObjectReference, NAME_MESSAGE, NAME_RULE, NamespacedObjectKindReference,
    NamespacedObjectReference, PolicyMode, PolicyModule, Selector,
};

/// The desired state of a Kustomization.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "Kustomization",
    namespaced,
    status = "KustomizationStatus",
    shortname = "ks",
    category = "gitops",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.lastAppliedRevision"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].message"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters (it is the value of the owner label on applied objects)"),
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// The source whose artifact is built.
    pub source_ref: SourceReference,
    /// Directory inside the artifact to build; defaults to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)\\\\.\\\\.(/|$)')").message("path must be relative to the artifact root and must not contain '..'"))]
    pub path: Option<String>,
    /// How often the build is re-applied and drift corrected.
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: String,
    /// Delay before retrying after a failure; defaults to `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub retry_interval: Option<String>,
    /// Bound on apply, health checks and prune; defaults to `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Delete objects that left the build (and still carry this Kustomization's owner labels).
    #[serde(default)]
    pub prune: bool,
    /// Wait for every applied object to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Objects to wait for when `wait` is not true (with `wait: true` every applied object is
    /// checked and this list is ignored, as in Flux).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub health_checks: Vec<NamespacedObjectKindReference>,
    /// Kustomizations that must be Ready (at their source's current revision) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub depends_on: Vec<NamespacedObjectReference>,
    /// Namespace for every namespaced object of the build (the target-namespace policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub target_namespace: Option<String>,
    /// Prefix for the names of all objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub name_prefix: Option<String>,
    /// Suffix for the names of all objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub name_suffix: Option<String>,
    /// Strategic merge or JSON 6902 patches, applied after the kustomization's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub patches: Vec<Patch>,
    /// Image overrides, as kustomize's `images`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub images: Vec<Image>,
    /// Kustomize components (paths relative to `path`) to include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub components: Vec<String>,
    /// Labels and annotations added to every object (not to selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// Variable substitution after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    /// WebAssembly policies run after the ClusterPolicies that select this Kustomization, in
    /// order: transforms first, then validations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("policy names must be unique"))]
    pub policies: Vec<PolicyReference>,
    /// ServiceAccount (in this namespace) impersonated for every read and write of the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub service_account_name: Option<String>,
    /// Recreate objects whose immutable fields changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Stop reconciling; applied objects stay as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// What happens to applied objects when this Kustomization is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Allow a build that yields no objects to prune everything (default false: refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    /// Drift rules: fields that are not reverted when they change in the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ignore: Vec<DriftIgnoreRule>,
    /// Decrypt SOPS-encrypted objects (any kind carrying `sops.mac`), secretGenerator
    /// `envs`/`files` and `patches[].path` files of the build, in memory, before substitution
    /// and the policies. Decrypts YAML, JSON, dotenv and binary files encrypted for age X25519,
    /// ssh-ed25519 or ssh-rsa recipients to what `sops -d` gives; refuses, naming the file,
    /// files encrypted only for PGP, cloud KMS or Vault ("encrypted only for PGP, which the
    /// reconciler does not support (age keys only)"), Shamir key groups and the comment-regex
    /// options. Differences from Flux, on purpose: the MAC of every encrypted resource file is
    /// verified; a file with `ENC[…]` values but no SOPS metadata (truncated) is refused; an
    /// encrypted secretGenerator input without `decryption` is refused instead of being applied
    /// as ciphertext. The compatibility table is in docs/sops.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
}

/// How the build's SOPS-encrypted files and objects are decrypted (in memory, before the
/// policies).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// The decryption provider; only `sops`.
    pub provider: DecryptionProvider,
    /// Secret (in this namespace) whose keys ending in `.agekey` hold age identities. Without
    /// it the reconciler's `--sops-age-secret` is used. Keys for PGP (`.asc`), Vault
    /// (`sops.vault-token`) or cloud KMS (`sops.aws-kms`, `sops.azure-kv`, `sops.gcp-kms`) are
    /// refused: only age is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// Decryption providers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecryptionProvider {
    /// Mozilla SOPS (getsops/sops v3 file format).
    Sops,
}

/// A reference to the source of a Kustomization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    /// API version of the source; defaults to `kubectl-gitops.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub api_version: Option<String>,
    /// Kind of the source.
    pub kind: SourceKind,
    /// Name of the source.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the source; defaults to the Kustomization's. Cross-namespace references are
    /// refused unless the reconciler runs with `--no-cross-namespace-refs=false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
}

pub use super::source::SourceKind;

/// A kustomize patch with an optional target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Patch {
    /// A strategic merge patch (YAML object) or a JSON 6902 patch (YAML list of operations).
    #[schemars(length(min = 1, max = 1048576))]
    pub patch: String,
    /// Objects the patch applies to; for a strategic merge patch without target, the patch's
    /// own kind and name select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Selector>,
}

/// An image override, as kustomize's `images` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.newName) || has(self.newTag) || has(self.digest)").message("set at least one of newName, newTag or digest"))]
pub struct Image {
    /// Image name as it appears in the manifests (without tag).
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
    /// Image name that replaces `name` (registry and repository, without tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub new_name: Option<String>,
    /// Tag that replaces the image's tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub new_tag: Option<String>,
    /// `sha256:<64 hex>`; takes precedence over `newTag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 71, max = 71))]
    #[x_kube(validation = Rule::new("self.matches('^sha256:[a-f0-9]{64}$')").message("digest must be sha256:<64 lowercase hex>"))]
    pub digest: Option<String>,
}

/// Labels and annotations added to every object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommonMetadata {
    /// Labels set on every object (selectors and templates are left alone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations set on every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Variable substitution applied to the built objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// Variables: `${name}` is replaced by the value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    /// ConfigMaps and Secrets whose data are variables (as in Flux, a later entry overrides an
    /// earlier one on a common key; `substitute` wins over all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub substitute_from: Vec<SubstituteReference>,
}

/// A ConfigMap or Secret providing substitution variables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SubstituteReference {
    /// ConfigMap or Secret.
    pub kind: SubstituteKind,
    /// Name of the object, in the Kustomization's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NAME_RULE).message(NAME_MESSAGE))]
    pub name: String,
    /// Do not fail when the object does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// The kind of a `postBuild.substituteFrom` object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubstituteKind {
    /// A ConfigMap: its `data` entries are the variables.
    ConfigMap,
    /// A Secret: its `data` entries, base64-decoded, are the variables.
    Secret,
}

/// A policy step of a Kustomization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReference {
    /// Name of this step (unique within the Kustomization), used in messages and events.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub name: String,
    /// The component to run.
    pub module: PolicyModule,
    /// Configuration handed to the policy (any JSON); checked by its `validate-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub config: Option<serde_json::Value>,
    /// What to do when the policy fails to run. Default Fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Enforce (default) or Audit: an audit step reports and never denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,
}

/// What happens to applied objects when their Kustomization is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the objects if `prune` is true, keep them otherwise. The default.
    #[default]
    MirrorPrune,
    /// Delete the objects.
    Delete,
    /// Keep the objects.
    Orphan,
}

/// Fields that are not reverted when they drift, for the selected objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct DriftIgnoreRule {
    /// JSON pointers (RFC 6901), e.g. `/spec/replicas`.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, p.startsWith('/'))").message("each path must be a JSON pointer starting with '/'"))]
    pub paths: Vec<String>,
    /// Objects the rule applies to; all objects when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Selector>,
}

/// The observed state of a Kustomization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    /// The generation of the spec the last reconcile handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Objects applied by this Kustomization (while an apply is in flight: the union of the old
    /// and the new set, so a crash never orphans objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Source revision of the last successful apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Findings of policies in audit mode and failures of policies that did not block
    /// (`failurePolicy: Ignore`, audit steps) in the last render, at most 20 lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_audit: Vec<String>,
    /// Source revision of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// The value of the `kubectl-gitops.io/reconcile-requested-at` annotation the last
    /// reconcile handled (how `kubectl gitops reconcile` knows its request was served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The set of objects a Kustomization manages.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Inventory {
    /// The objects, in apply order (while an apply is in flight, old entries follow the new ones).
    pub entries: Vec<InventoryEntry>,
}

/// One managed object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct InventoryEntry {
    /// `<namespace>_<name>_<group>_<kind>` (namespace empty for cluster-scoped objects).
    pub id: String,
    /// API version the object was applied with.
    pub v: String,
}
