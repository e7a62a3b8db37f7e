//! Providers: the payload each kind of receiving end expects, and one delivery attempt.
//!
//! Payload shapes follow what Flux's notification-controller sends for the same provider type
//! (the event's object as `kind/name.namespace`, the message, the metadata as fields or facts,
//! red for errors), so dashboards and routing rules written for Flux keep working.
//!
//! Guarantees: an attempt is bounded by the Provider's `timeout` (15s); errors name the
//! Provider and the address's scheme and host only (webhook URLs carry secrets in their path);
//! a 2xx answer is success, 408/429/5xx and connection failures are transient (retried), any
//! other answer is permanent.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::alert::Event;
use crate::api::alert::{EventSeverity, Provider, ProviderType};

/// Bound on one attempt when the Provider sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("Provider '{provider}': Secret '{secret}': {cause}")]
    Secret {
        provider: String,
        secret: String,
        cause: String,
    },
    #[error("Provider '{provider}' has no address (spec.address or the Secret's 'address' key)")]
    NoAddress { provider: String },
    #[error("Provider '{provider}': address {address} is not an http(s) URL")]
    BadAddress { provider: String, address: String },
    #[error("Provider '{provider}': {address} answered {status}")]
    Status {
        provider: String,
        address: String,
        status: u16,
    },
    #[error("Provider '{provider}': {address}: {cause}")]
    Transport {
        provider: String,
        address: String,
        cause: String,
    },
    #[error("Provider '{provider}': no answer from {address} within {timeout:?}")]
    Timeout {
        provider: String,
        address: String,
        timeout: Duration,
    },
    #[error(
        "Provider '{provider}': a Secret key 'proxy' is set, but proxies are not supported yet"
    )]
    ProxyUnsupported { provider: String },
}

impl DeliveryError {
    /// Whether another attempt can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::Transport { .. } | Self::Timeout { .. } | Self::Secret { .. } => true,
            Self::NoAddress { .. } | Self::BadAddress { .. } | Self::ProxyUnsupported { .. } => {
                false
            }
        }
    }
}

/// One event for one Provider.
pub struct Delivery {
    pub client: kube::Client,
    pub provider: Arc<Provider>,
    pub event: Event,
}

/// What a Provider's Secret may hold.
#[derive(Default)]
struct Credentials {
    address: Option<String>,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    headers: BTreeMap<String, String>,
    proxy: bool,
}

async fn credentials(delivery: &Delivery) -> Result<Credentials, DeliveryError> {
    let provider = &delivery.provider;
    let Some(secret_ref) = &provider.spec.secret_ref else {
        return Ok(Credentials::default());
    };
    let namespace = provider.namespace().unwrap_or_default();
    let fail = |cause: String| DeliveryError::Secret {
        provider: format!("{namespace}/{}", provider.name_any()),
        secret: secret_ref.name.clone(),
        cause,
    };
    let api: Api<Secret> = Api::namespaced(delivery.client.clone(), &namespace);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("not found".into()))?;
    let mut data = secret.data.unwrap_or_default();
    let mut text = |key: &str| -> Result<Option<String>, DeliveryError> {
        data.remove(key)
            .map(|v| {
                String::from_utf8(v.0)
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| fail(format!("key '{key}' is not UTF-8")))
            })
            .transpose()
    };
    let headers = match text("headers")? {
        Some(yaml) => serde_yaml::from_str::<BTreeMap<String, String>>(&yaml)
            .map_err(|_| fail("key 'headers' is not a YAML map of strings".into()))?,
        None => BTreeMap::new(),
    };
    Ok(Credentials {
        address: text("address")?,
        token: text("token")?,
        username: text("username")?,
        password: text("password")?,
        proxy: text("proxy")?.is_some(),
        headers,
    })
}

/// `scheme://host[:port]` of `address`: what may be logged of it.
pub fn redacted(address: &str) -> String {
    match address.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => "<address>".to_owned(),
    }
}

/// `kind/name.namespace`, as Flux names the object in messages.
fn object_name(event: &Event) -> String {
    format!(
        "{}/{}.{}",
        event.kind.to_lowercase(),
        event.name,
        event.namespace
    )
}

/// The event as the generic providers send it (Flux's event JSON).
pub fn event_json(event: &Event) -> Value {
    json!({
        "involvedObject": {
            "kind": event.kind,
            "namespace": event.namespace,
            "name": event.name,
            "apiVersion": format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
        },
        "severity": event.severity.as_str(),
        "timestamp": event.timestamp.to_string(),
        "message": event.message,
        "reason": event.reason,
        "metadata": event.metadata,
        "reportingController": event.reporting_controller,
    })
}

/// The JSON body `type_` expects for `event`; `address` decides the Teams card format.
pub fn payload(
    type_: ProviderType,
    event: &Event,
    username: Option<&str>,
    channel: Option<&str>,
    address: &str,
) -> Value {
    let error = event.severity == EventSeverity::Error;
    let fields = || {
        event
            .metadata
            .iter()
            .map(|(k, v)| json!({"title": k, "value": v, "short": false}))
            .collect::<Vec<_>>()
    };
    match type_ {
        ProviderType::Generic | ProviderType::GenericHmac => event_json(event),
        ProviderType::Slack | ProviderType::Discord => {
            let mut body = json!({
                "username": username.unwrap_or(&event.reporting_controller),
                "attachments": [{
                    "color": if error { "danger" } else { "good" },
                    "author_name": object_name(event),
                    "text": event.message,
                    "mrkdwn_in": ["text"],
                    "fields": fields(),
                }],
            });
            if let (ProviderType::Slack, Some(channel)) = (type_, channel) {
                body["channel"] = json!(channel);
            }
            body
        }
        ProviderType::Msteams => {
            let host = redacted(address);
            let facts: Vec<Value> = event
                .metadata
                .iter()
                .map(|(k, v)| json!({"title": k, "value": v}))
                .collect();
            if host.ends_with(".webhook.office.com") {
                json!({
                    "@type": "MessageCard",
                    "@context": "http://schema.org/extensions",
                    "themeColor": if error { "FF0000" } else { "0076D7" },
                    "summary": object_name(event),
                    "sections": [{
                        "activityTitle": event.message,
                        "activitySubtitle": object_name(event),
                        "facts": event.metadata.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                    }],
                })
            } else {
                let mut message = json!({"type": "TextBlock", "text": event.message, "wrap": true});
                if error {
                    message["color"] = json!("attention");
                }
                json!({
                    "type": "message",
                    "attachments": [{
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "content": {
                            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "type": "AdaptiveCard",
                            "version": "1.4",
                            "msteams": {"width": "Full"},
                            "body": [{
                                "type": "Container",
                                "items": [
                                    {"type": "TextBlock", "text": object_name(event), "size": "large", "weight": "bolder", "wrap": true},
                                    message,
                                    {"type": "FactSet", "facts": facts},
                                ],
                            }],
                        },
                    }],
                })
            }
        }
        ProviderType::Googlechat => {
            let text = if error {
                format!("<font color=\"#ff0000\">{}</font>", event.message)
            } else {
                event.message.clone()
            };
            let mut sections = vec![json!({"widgets": [{"textParagraph": {"text": text}}]})];
            if !event.metadata.is_empty() {
                sections.push(json!({"widgets": event.metadata.iter().map(|(k, v)| json!({"keyValue": {"topLabel": k, "content": v, "contentMultiline": false}})).collect::<Vec<_>>()}));
            }
            json!({"cards": [{
                "header": {"title": object_name(event), "subtitle": event.reporting_controller},
                "sections": sections,
            }]})
        }
        ProviderType::Alertmanager => {
            let mut labels = event.metadata.clone();
            let mut annotations = BTreeMap::from([("message".to_owned(), event.message.clone())]);
            if let Some(summary) = labels.remove("summary") {
                annotations.insert("summary".to_owned(), summary);
            }
            labels.insert(
                "alertname".into(),
                format!("Flux{}{}", event.kind, title_case(&event.reason)),
            );
            labels.insert("severity".into(), event.severity.as_str().into());
            labels.insert("reason".into(), event.reason.clone());
            labels.insert("kind".into(), event.kind.clone());
            labels.insert("name".into(), event.name.clone());
            labels.insert("namespace".into(), event.namespace.clone());
            labels.insert(
                "reportingcontroller".into(),
                event.reporting_controller.clone(),
            );
            json!([{
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": event.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }])
        }
    }
}

/// The first letter upper-case, the rest as is (Go's `cases.Title` on a CamelCase reason
/// lower-cases the rest; our reasons are CamelCase already, which Alertmanager users match).
fn title_case(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client for every delivery (connection reuse), trusting the system's CAs.
fn http_client() -> Result<&'static HttpClient, String> {
    static CLIENT: OnceLock<Result<HttpClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(Duration::from_secs(10)));
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One delivery attempt of `delivery`.
pub async fn deliver(delivery: &Delivery) -> Result<(), DeliveryError> {
    let provider = &delivery.provider;
    let name = format!(
        "{}/{}",
        provider.namespace().unwrap_or_default(),
        provider.name_any()
    );
    let creds = credentials(delivery).await?;
    if creds.proxy {
        return Err(DeliveryError::ProxyUnsupported { provider: name });
    }
    let mut address = creds
        .address
        .clone()
        .or_else(|| provider.spec.address.clone())
        .ok_or_else(|| DeliveryError::NoAddress {
            provider: name.clone(),
        })?;
    let spec = &provider.spec;
    if spec.type_ == ProviderType::Discord && !address.trim_end_matches('/').ends_with("/slack") {
        address = format!("{}/slack", address.trim_end_matches('/'));
    }
    let shown = redacted(&address);
    let uri: hyper::Uri = address
        .parse()
        .ok()
        .filter(|u: &hyper::Uri| matches!(u.scheme_str(), Some("http" | "https")))
        .ok_or_else(|| DeliveryError::BadAddress {
            provider: name.clone(),
            address: shown.clone(),
        })?;
    let body = payload(
        spec.type_,
        &delivery.event,
        spec.username.as_deref(),
        spec.channel.as_deref(),
        &address,
    );
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut request = hyper::Request::post(uri).header("Content-Type", "application/json");
    match spec.type_ {
        ProviderType::Generic | ProviderType::GenericHmac => {
            for (k, v) in &creds.headers {
                request = request.header(k.as_str(), v.as_str());
            }
            if spec.type_ == ProviderType::GenericHmac
                && let Some(token) = &creds.token
                && let Some(signature) = super::verify::sign("sha256", token.as_bytes(), &body)
            {
                request = request.header("X-Signature", signature);
            }
        }
        ProviderType::Slack | ProviderType::Alertmanager => {
            if let Some(token) = &creds.token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            if spec.type_ == ProviderType::Alertmanager
                && let (Some(user), Some(password)) = (&creds.username, &creds.password)
            {
                use base64::Engine as _;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request = request.header("Authorization", format!("Basic {basic}"));
            }
        }
        _ => {}
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| DeliveryError::Transport {
            provider: name.clone(),
            address: shown.clone(),
            cause: format!("invalid request (a header from the Secret?): {e}"),
        })?;
    let client = http_client().map_err(|cause| DeliveryError::Transport {
        provider: name.clone(),
        address: shown.clone(),
        cause,
    })?;
    let timeout = spec
        .timeout
        .as_deref()
        .and_then(|t| crate::api::duration::parse(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let attempt = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Drain (bounded) so the connection can be reused.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(DeliveryError::Timeout {
            provider: name,
            address: shown,
            timeout,
        }),
        Ok(Err(e)) => Err(DeliveryError::Transport {
            provider: name,
            address: shown,
            cause: transport_cause(&e),
        }),
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(DeliveryError::Status {
            provider: name,
            address: shown,
            status: status.as_u16(),
        }),
    }
}

/// The innermost cause of a client error (hyper's top level says little).
fn transport_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    cause
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::alert::REVISION_KEY;

    fn event(severity: EventSeverity) -> Event {
        Event {
            kind: "Kustomization".into(),
            namespace: "team".into(),
            name: "app".into(),
            labels: BTreeMap::new(),
            severity,
            reason: "PolicyDenied".into(),
            message: "policy 'bounds' denied Deployment/web".into(),
            metadata: BTreeMap::from([
                (REVISION_KEY.to_owned(), "main@sha1:abc".to_owned()),
                ("summary".to_owned(), "eu-1".to_owned()),
            ]),
            timestamp: "2026-01-02T03:04:05Z".parse().unwrap(),
            reporting_controller: "gitops-reconciler".into(),
        }
    }

    #[test]
    fn slack_and_discord_get_an_attachment_coloured_by_severity() {
        let body = payload(
            ProviderType::Slack,
            &event(EventSeverity::Error),
            None,
            Some("#ops"),
            "https://hooks.slack.com/x",
        );
        assert_eq!(body["channel"], "#ops");
        assert_eq!(body["username"], "gitops-reconciler");
        let a = &body["attachments"][0];
        assert_eq!(a["color"], "danger");
        assert_eq!(a["author_name"], "kustomization/app.team");
        assert_eq!(a["text"], "policy 'bounds' denied Deployment/web");
        assert!(
            a["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["title"] == "revision" && f["value"] == "main@sha1:abc")
        );
        let body = payload(
            ProviderType::Discord,
            &event(EventSeverity::Info),
            Some("bot"),
            Some("#ops"),
            "https://discord.com/api/webhooks/1/x",
        );
        assert_eq!(body["attachments"][0]["color"], "good");
        assert_eq!(body["username"], "bot");
        assert!(body.get("channel").is_none());
    }

    #[test]
    fn teams_gets_an_adaptive_card_or_the_legacy_message_card() {
        let card = payload(
            ProviderType::Msteams,
            &event(EventSeverity::Error),
            None,
            None,
            "https://prod-1.westus.logic.azure.com/workflows/x",
        );
        let content = &card["attachments"][0]["content"];
        assert_eq!(content["type"], "AdaptiveCard");
        let items = content["body"][0]["items"].as_array().unwrap();
        assert_eq!(items[0]["text"], "kustomization/app.team");
        assert_eq!(items[1]["color"], "attention");
        let legacy = payload(
            ProviderType::Msteams,
            &event(EventSeverity::Error),
            None,
            None,
            "https://acme.webhook.office.com/webhookb2/x",
        );
        assert_eq!(legacy["@type"], "MessageCard");
        assert_eq!(legacy["themeColor"], "FF0000");
    }

    #[test]
    fn google_chat_gets_a_card_and_alertmanager_an_alert() {
        let chat = payload(
            ProviderType::Googlechat,
            &event(EventSeverity::Error),
            None,
            None,
            "https://chat.googleapis.com/v1/x",
        );
        assert_eq!(
            chat["cards"][0]["header"]["title"],
            "kustomization/app.team"
        );
        assert!(
            chat["cards"][0]["sections"][0]["widgets"][0]["textParagraph"]["text"]
                .as_str()
                .unwrap()
                .contains("#ff0000")
        );
        let am = payload(
            ProviderType::Alertmanager,
            &event(EventSeverity::Error),
            None,
            None,
            "http://am:9093/api/v2/alerts",
        );
        let alert = &am[0];
        assert_eq!(alert["status"], "firing");
        assert_eq!(
            alert["labels"]["alertname"],
            "FluxKustomizationPolicyDenied"
        );
        assert_eq!(alert["labels"]["severity"], "error");
        assert_eq!(alert["labels"]["revision"], "main@sha1:abc");
        assert!(alert["labels"].get("summary").is_none());
        assert_eq!(alert["annotations"]["summary"], "eu-1");
        assert_eq!(alert["startsAt"], "2026-01-02T03:04:05Z");
    }

    #[test]
    fn generic_sends_the_event() {
        let body = payload(
            ProviderType::Generic,
            &event(EventSeverity::Info),
            None,
            None,
            "http://x",
        );
        assert_eq!(body["involvedObject"]["kind"], "Kustomization");
        assert_eq!(body["severity"], "info");
        assert_eq!(body["reason"], "PolicyDenied");
        assert_eq!(body["metadata"]["revision"], "main@sha1:abc");
    }

    #[test]
    fn addresses_are_logged_without_path_or_credentials() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redacted("https://user:pw@am.example:9093/api?x=1"),
            "https://am.example:9093"
        );
        assert_eq!(redacted("not a url"), "<address>");
    }

    #[test]
    fn transient_failures_are_retried_and_permanent_ones_not() {
        let status = |s| DeliveryError::Status {
            provider: "p".into(),
            address: "a".into(),
            status: s,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(404).is_transient());
    }
}
