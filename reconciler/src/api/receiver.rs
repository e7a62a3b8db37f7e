//! Receiver: an incoming webhook that requests a reconcile of sources and Kustomizations. Field
//! names and behaviour follow Flux's notification.toolkit.fluxcd.io/v1 Receiver; see
//! docs/notifications.md for the deliberate differences (POST only, body and rate limits).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DURATION_MESSAGE, DURATION_RULE, LABEL_MESSAGE, LABEL_RULE, LocalObjectReference, NAME_MESSAGE,
    NAME_RULE,
};

/// Prefix of every webhook path; the rest is the hex sha256 of token + name + namespace.
pub const WEBHOOK_PATH_PREFIX: &str = "/hook/";

/// How often a Receiver is reconciled (its Secret re-read) when `spec.interval` is unset.
pub const DEFAULT_INTERVAL: &str = "10m";

/// The desired state of a Receiver.
// Each `printcolumn(...)` repeats `type_`; the lint takes them for one attribute repeated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "Receiver",
    namespaced,
    status = "ReceiverStatus",
    category = "gitops",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// Who sends the webhook, which decides how a request is verified: `generic` (the secret
    /// path alone), `generic-hmac` (`X-Signature: sha1|sha256|sha512=<hex>`), `github` (also
    /// Gitea: `X-Hub-Signature-256`, or `X-Hub-Signature` with SHA-1), `gitlab`
    /// (`X-Gitlab-Token`), `bitbucket` (Bitbucket Server: `X-Hub-Signature`).
    #[serde(rename = "type")]
    pub type_: ReceiverType,
    /// How often the Receiver is reconciled (its Secret re-read and the webhook path
    /// recomputed). Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// Event types to act on, compared case-insensitively with `X-GitHub-Event` (github),
    /// `X-Gitlab-Event` (gitlab) or `X-Event-Key` (bitbucket), e.g. `push`, `ping`,
    /// `Push Hook`, `repo:refs_changed`. Empty: every verified request. Not used by the
    /// generic types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub events: Vec<String>,
    /// The objects to reconcile when a verified request arrives.
    #[schemars(length(min = 1, max = 64))]
    pub resources: Vec<ReceiverResource>,
    /// Secret in the Receiver's namespace whose `token` key salts the webhook path and
    /// verifies requests.
    pub secret_ref: LocalObjectReference,
    /// Stop handling requests (they are answered 503) until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// The sender of a Receiver's webhooks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    /// Any caller that knows the path; nothing else is verified.
    Generic,
    /// An HMAC of the body keyed with the token, in `X-Signature: <sha1|sha256|sha512>=<hex>`.
    GenericHmac,
    /// GitHub and Gitea: an HMAC in `X-Hub-Signature-256` (or `X-Hub-Signature`), the event
    /// in `X-GitHub-Event`.
    #[serde(rename = "github")]
    GitHub,
    /// GitLab: the token in `X-Gitlab-Token`, the event in `X-Gitlab-Event`.
    #[serde(rename = "gitlab")]
    GitLab,
    /// Bitbucket Server: an HMAC in `X-Hub-Signature`, the event in `X-Event-Key`.
    Bitbucket,
}

impl ReceiverType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [Self; 5] = [
        Self::Generic,
        Self::GenericHmac,
        Self::GitHub,
        Self::GitLab,
        Self::Bitbucket,
    ];

    /// The name used in `spec.type` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::GenericHmac => "generic-hmac",
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Bitbucket => "bitbucket",
        }
    }
}

/// The kinds a Receiver can request a reconcile of.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReceiverResourceKind {
    /// A GitRepository: fetched at once.
    GitRepository,
    /// A Kustomization: reconciled at once (its source as it is).
    Kustomization,
}

impl ReceiverResourceKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitRepository => "GitRepository",
            Self::Kustomization => "Kustomization",
        }
    }
}

/// One object, or every object of a kind with some labels, to reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.name != '*' || has(self.matchLabels)").message("name '*' needs matchLabels"))]
#[x_kube(validation = Rule::new("self.name == '*' || !has(self.matchLabels)").message("matchLabels needs name '*'"))]
pub struct ReceiverResource {
    /// `kubectl-gitops.io/v1alpha1` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'kubectl-gitops.io/v1alpha1'").message("apiVersion must be kubectl-gitops.io/v1alpha1"))]
    pub api_version: Option<String>,
    /// `GitRepository` or `Kustomization`.
    pub kind: ReceiverResourceKind,
    /// Name of the object, or `*` with `matchLabels`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self == '*' || ({NAME_RULE})")).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the object; default the Receiver's. Another namespace is refused while
    /// the reconciler runs with `--no-cross-namespace-refs` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
    /// With name `*`: every object of the kind in the namespace with all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// The observed state of a Receiver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (and Reconciling while a Secret is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `/hook/<hex sha256 of token + name + namespace>`: where senders POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// The value of the reconcile-requested-at annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The webhook path of a Receiver as Flux computes it: `/hook/` + hex(sha256(token + name +
/// namespace)).
pub fn webhook_path(token: &[u8], name: &str, namespace: &str) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(token);
    hasher.update(name.as_bytes());
    hasher.update(namespace.as_bytes());
    format!("{WEBHOOK_PATH_PREFIX}{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_path_is_the_sha256_of_token_name_and_namespace() {
        // printf 'tokenreceiverns' | sha256sum
        assert_eq!(
            webhook_path(b"token", "receiver", "ns"),
            "/hook/a02c9330a19f5118e5ba023b53aa867c3da7ae58feb6cc42b684a7065f146387"
        );
    }

    #[test]
    fn type_names_round_trip() {
        for t in ReceiverType::ALL {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, t.as_str());
            let back: ReceiverType = serde_json::from_value(json).unwrap();
            assert_eq!(back, t);
        }
    }
}
