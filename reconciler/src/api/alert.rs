//! Alert and Provider: which of the reconciler's events to forward, and where. Field names and
//! behaviour follow Flux's notification.toolkit.fluxcd.io/v1beta3 Alert and Provider (which have
//! no status either); docs/notifications.md lists the differences.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DURATION_MESSAGE, DURATION_RULE, LABEL_MESSAGE, LABEL_RULE, LocalObjectReference, NAME_MESSAGE,
    NAME_RULE,
};

/// Which events an Alert forwards to its Provider.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "Alert",
    namespaced,
    category = "gitops",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// The Provider (same namespace) that delivers the events.
    pub provider_ref: LocalObjectReference,
    /// `info` forwards every event, `error` only failures. Default `info`.
    #[serde(default)]
    pub event_severity: EventSeverity,
    /// The objects whose events are forwarded.
    #[schemars(length(min = 1, max = 64))]
    pub event_sources: Vec<EventSource>,
    /// Regular expressions; when set, only events whose message matches one are forwarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub inclusion_list: Vec<String>,
    /// Regular expressions; events whose message matches one are not forwarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub exclusion_list: Vec<String>,
    /// Metadata added to every forwarded event (the event's own keys win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_metadata: Option<BTreeMap<String, String>>,
    /// A short description added to the metadata as `summary` (Flux deprecated it in favour
    /// of `eventMetadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub summary: Option<String>,
    /// Stop forwarding until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// `info` or `error`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventSeverity {
    /// Every event.
    #[default]
    Info,
    /// Failures only (the controllers' Warning events).
    Error,
}

impl EventSeverity {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Error => "error",
        }
    }
}

/// The objects whose events an Alert forwards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    /// `GitRepository`, `Kustomization` or `Receiver`.
    pub kind: EventSourceKind,
    /// Name of the object, or `*` for every object of the kind (narrowed by `matchLabels`).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self == '*' || ({NAME_RULE})")).message(NAME_MESSAGE))]
    pub name: String,
    /// Namespace of the objects; default the Alert's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(LABEL_RULE).message(LABEL_MESSAGE))]
    pub namespace: Option<String>,
    /// With name `*`: only objects with all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// The kinds whose events can be forwarded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EventSourceKind {
    /// Events of GitRepositories.
    GitRepository,
    /// Events of Kustomizations.
    Kustomization,
    /// Events of Receivers.
    Receiver,
}

impl EventSourceKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitRepository => "GitRepository",
            Self::Kustomization => "Kustomization",
            Self::Receiver => "Receiver",
        }
    }
}

/// Where and how events are delivered.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "Provider",
    namespaced,
    category = "gitops",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.address) || has(self.secretRef)").message("set address, or secretRef to a Secret with an 'address' key"))]
pub struct ProviderSpec {
    /// `generic`, `generic-hmac`, `slack`, `msteams`, `discord`, `googlechat`,
    /// `alertmanager`, or the commit status types `github` and `gitea`.
    #[serde(rename = "type")]
    pub type_: ProviderType,
    /// Where to POST: a webhook URL, or Alertmanager's `/api/v2/alerts`; for `github` and
    /// `gitea`, the repository's URL (`https://github.com/org/app`). An `address` key in the
    /// Secret overrides it (keep webhook URLs that carry a secret there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^-@/\\\\s][^/\\\\s]*(/\\\\S*)?$')").message("address must be an http:// or https:// URL whose host does not start with '-'"))]
    pub address: Option<String>,
    /// Slack channel to post to (only for a token-authenticated Slack API address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub channel: Option<String>,
    /// The name messages are posted as (Slack, Discord); default the reporting controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub username: Option<String>,
    /// Bound on one delivery attempt. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Secret with `address`, `token` (Bearer for slack/alertmanager, the HMAC key for
    /// generic-hmac), `username`/`password` (alertmanager basic auth), `headers` (YAML map,
    /// generic types) or `proxy` (an HTTP proxy URL, overrides `proxy`; Flux deprecated it in
    /// favour of `proxySecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret with the TLS material of the connection: `ca.crt` (PEM CA certificates, trusted
    /// instead of the system's), `tls.crt` and `tls.key` (a client certificate and its key, for
    /// servers that demand mutual TLS). Flux's older keys `caFile`, `certFile` and `keyFile` are
    /// read when the new ones are absent. Type `Opaque` or `kubernetes.io/tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// An HTTP proxy every delivery goes through: `http://[user:password@]host[:port]` (https
    /// addresses through a CONNECT tunnel, http ones forwarded). Flux deprecated it in favour of
    /// `proxySecretRef`; a `proxy` key in the `secretRef` Secret overrides it, and
    /// `proxySecretRef` overrides both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^-/\\\\s][^/\\\\s]*/?$')").message("proxy must be an http:// or https:// URL with a host and no path"))]
    pub proxy: Option<String>,
    /// Secret with the proxy: `address` (`http://host:port`), and optionally `username` and
    /// `password`. Overrides `proxy` and the `secretRef` Secret's `proxy` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// Stop delivering until resumed (events meanwhile are dropped, not queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// The kinds of receiving ends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// The event as JSON.
    Generic,
    /// The event as JSON, with `X-Signature: sha256=<HMAC of the body keyed with token>`.
    GenericHmac,
    /// A Slack incoming webhook (or chat.postMessage with a token).
    Slack,
    /// A Microsoft Teams incoming webhook (adaptive card; the legacy connector's MessageCard
    /// for `*.webhook.office.com`).
    Msteams,
    /// A Discord webhook (its Slack-compatible endpoint).
    Discord,
    /// A Google Chat webhook (a card).
    Googlechat,
    /// Prometheus Alertmanager's v2 alerts API.
    Alertmanager,
    /// A commit status on GitHub (or GitHub Enterprise): the address is the repository's URL,
    /// the Secret's `token` authenticates.
    Github,
    /// A commit status on Gitea: the address is the repository's URL, the Secret's `token`
    /// authenticates.
    Gitea,
}

impl ProviderType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [Self; 9] = [
        Self::Generic,
        Self::GenericHmac,
        Self::Slack,
        Self::Msteams,
        Self::Discord,
        Self::Googlechat,
        Self::Alertmanager,
        Self::Github,
        Self::Gitea,
    ];

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::GenericHmac => "generic-hmac",
            Self::Slack => "slack",
            Self::Msteams => "msteams",
            Self::Discord => "discord",
            Self::Googlechat => "googlechat",
            Self::Alertmanager => "alertmanager",
            Self::Github => "github",
            Self::Gitea => "gitea",
        }
    }

    /// Whether the Provider sets commit statuses (its address is a repository, not a webhook).
    pub fn is_commit_status(self) -> bool {
        matches!(self, Self::Github | Self::Gitea)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_type_names_round_trip() {
        for t in ProviderType::ALL {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, t.as_str());
            assert_eq!(serde_json::from_value::<ProviderType>(json).unwrap(), t);
        }
    }
}
