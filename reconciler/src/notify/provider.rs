//! Providers: the payload each kind of receiving end expects, and one delivery attempt.
//!
//! Payload shapes follow what Flux's notification-controller sends for the same provider type
//! (the event's object as `kind/name.namespace`, the message, the metadata as fields or facts,
//! red for errors), so dashboards and routing rules written for Flux keep working.
//!
//! Expected flow of an attempt: read the `secretRef` Secret (address, token, headers, ...), the
//! `certSecretRef` Secret (CA, client certificate) and the proxy (`proxySecretRef`, else the
//! `secretRef` Secret's `proxy` key, else `spec.proxy`, Flux's precedence) → take the client
//! for that TLS material and proxy from a small cache ([`crate::net::https`] builds it) → POST
//! the payload of the Provider's type.
//!
//! Guarantees: an attempt is bounded by the Provider's `timeout` (15s); errors name the
//! Provider, the Secret and the key at fault, and the address's (or proxy's) scheme and host
//! only (webhook URLs carry secrets in their path, proxy URLs credentials); no key's value is
//! ever part of an error; a 2xx answer is success, 408/429/5xx, connection and TLS failures are
//! transient (retried), any other answer and a Secret whose content is unusable are permanent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::alert::Event;
use super::commit_status;
use crate::api::alert::{EventSeverity, Provider, ProviderType};
use crate::net::https::{
    ClientError, ClientOptions, HttpsClient, Identity, PemInput, Proxy, ProxyError,
};

/// Bound on one attempt when the Provider sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The Secret could not be read (missing, or the API failed): may be fixed by the next
    /// attempt.
    #[error("Provider '{provider}': Secret '{secret}': {cause}")]
    Secret {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The Secret's name.
        secret: String,
        /// What went wrong (never a Secret value).
        cause: String,
    },
    /// The Secret is there but a key is missing or unusable: only an edit fixes it.
    #[error("Provider '{provider}': Secret '{secret}': {cause}")]
    SecretContent {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The Secret's name.
        secret: String,
        /// What went wrong (never a Secret value).
        cause: String,
    },
    /// Neither `spec.address` nor the Secret's `address` key is set.
    #[error("Provider '{provider}' has no address (spec.address or the Secret's 'address' key)")]
    NoAddress {
        /// The Provider, `namespace/name`.
        provider: String,
    },
    /// The type needs a token and the Secret has none.
    #[error("Provider '{provider}': type {type_} needs a 'token' key in the secretRef Secret")]
    NoToken {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The Provider type that needs the token.
        type_: &'static str,
    },
    /// A commit status Provider could not make its request (no revision, bad address).
    #[error("Provider '{provider}': {cause}")]
    CommitStatus {
        /// The Provider, `namespace/name`.
        provider: String,
        /// Why the commit status could not be posted.
        cause: super::commit_status::CommitStatusError,
    },
    /// The address is not an http(s) URL.
    #[error("Provider '{provider}': address {address} is not an http(s) URL")]
    BadAddress {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The address as `scheme://host[:port]` only (its path may hold a token).
        address: String,
    },
    /// `from` says where the proxy was set; `proxy` is shown without credentials.
    #[error("Provider '{provider}': proxy {proxy} ({from}): {cause}")]
    BadProxy {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The proxy, without its credentials.
        proxy: String,
        /// Where the proxy was set (`spec.proxy`, a Secret key).
        from: String,
        /// Why the proxy address is unusable.
        cause: ProxyError,
    },
    /// The endpoint answered with a status other than 2xx.
    #[error("Provider '{provider}': {address} answered {status}")]
    Status {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The address as `scheme://host[:port]` only (its path may hold a token).
        address: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Connecting, TLS or the HTTP exchange failed.
    #[error("Provider '{provider}': {address}: {cause}")]
    Transport {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The address as `scheme://host[:port]` only (its path may hold a token).
        address: String,
        /// What went wrong (never a Secret value).
        cause: String,
    },
    /// No answer within the attempt's timeout.
    #[error("Provider '{provider}': no answer from {address} within {timeout:?}")]
    Timeout {
        /// The Provider, `namespace/name`.
        provider: String,
        /// The address as `scheme://host[:port]` only (its path may hold a token).
        address: String,
        /// The attempt's timeout (the Provider's `spec.timeout`).
        timeout: Duration,
    },
}

impl DeliveryError {
    /// Whether another attempt can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::Transport { .. } | Self::Timeout { .. } | Self::Secret { .. } => true,
            Self::SecretContent { .. }
            | Self::NoAddress { .. }
            | Self::NoToken { .. }
            | Self::CommitStatus { .. }
            | Self::BadAddress { .. }
            | Self::BadProxy { .. } => false,
        }
    }
}

/// One event for one Provider.
pub struct Delivery {
    /// Reads the Provider's Secrets (the reconciler's own identity).
    pub client: kube::Client,
    /// The Provider, as the dispatcher last saw it.
    pub provider: Arc<Provider>,
    /// The event, with the Alert's summary and metadata already merged in.
    pub event: Event,
}

impl Delivery {
    /// `namespace/name` of the Provider, as errors name it.
    fn provider_name(&self) -> String {
        format!(
            "{}/{}",
            self.provider.namespace().unwrap_or_default(),
            self.provider.name_any()
        )
    }

    /// The data of the Secret `name` in the Provider's namespace.
    async fn secret(&self, name: &str) -> Result<SecretData, DeliveryError> {
        let api: Api<Secret> = Api::namespaced(
            self.client.clone(),
            &self.provider.namespace().unwrap_or_default(),
        );
        let fail = |cause: String| DeliveryError::Secret {
            provider: self.provider_name(),
            secret: name.to_owned(),
            cause,
        };
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("not found".into()))?;
        Ok(SecretData {
            provider: self.provider_name(),
            secret: name.to_owned(),
            data: secret.data.unwrap_or_default(),
        })
    }
}

/// A Secret's keys, with errors that name the Provider, the Secret and the key (never a value).
struct SecretData {
    provider: String,
    secret: String,
    data: BTreeMap<String, k8s_openapi::ByteString>,
}

impl SecretData {
    fn error(&self, cause: String) -> DeliveryError {
        DeliveryError::SecretContent {
            provider: self.provider.clone(),
            secret: self.secret.clone(),
            cause,
        }
    }

    /// The trimmed text of `key`, if present.
    fn text(&self, key: &str) -> Result<Option<String>, DeliveryError> {
        self.data
            .get(key)
            .map(|v| {
                std::str::from_utf8(&v.0)
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| self.error(format!("key '{key}' is not UTF-8")))
            })
            .transpose()
    }

    /// The bytes of `key`, else of its older name `legacy` (logged as deprecated, as Flux does);
    /// empty values count as absent. Returns the key's name for messages.
    fn pem(&self, key: &str, legacy: &str) -> Option<PemInput> {
        let get = |k: &str| self.data.get(k).filter(|v| !v.0.is_empty());
        if let Some(value) = get(key) {
            return Some(PemInput {
                name: format!("key '{key}'"),
                pem: value.0.clone(),
            });
        }
        let value = get(legacy)?;
        tracing::warn!(kind = "Provider", provider = %self.provider, secret = %self.secret, "the Secret key '{legacy}' is deprecated, use '{key}'");
        Some(PemInput {
            name: format!("key '{legacy}'"),
            pem: value.0.clone(),
        })
    }
}

/// What a Provider's `secretRef` Secret may hold.
#[derive(Default)]
struct Credentials {
    address: Option<String>,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    headers: BTreeMap<String, String>,
    /// The deprecated `proxy` key, with the Secret's name.
    proxy: Option<(String, String)>,
}

async fn credentials(delivery: &Delivery) -> Result<Credentials, DeliveryError> {
    let Some(secret_ref) = &delivery.provider.spec.secret_ref else {
        return Ok(Credentials::default());
    };
    let secret = delivery.secret(&secret_ref.name).await?;
    let headers = match secret.text("headers")? {
        Some(yaml) => serde_yaml::from_str::<BTreeMap<String, String>>(&yaml)
            .map_err(|_| secret.error("key 'headers' is not a YAML map of strings".into()))?,
        None => BTreeMap::new(),
    };
    Ok(Credentials {
        address: secret.text("address")?,
        token: secret.text("token")?,
        username: secret.text("username")?,
        password: secret.text("password")?,
        proxy: secret
            .text("proxy")?
            .filter(|p| !p.is_empty())
            .map(|p| (p, secret.secret.clone())),
        headers,
    })
}

/// The connection settings of a delivery: `certSecretRef`'s TLS material and the proxy, by
/// Flux's precedence (`proxySecretRef`, then the `secretRef` Secret's `proxy` key, then
/// `spec.proxy`).
async fn client_options(
    delivery: &Delivery,
    secret_proxy: Option<(String, String)>,
) -> Result<(ClientOptions, Option<String>), DeliveryError> {
    let spec = &delivery.provider.spec;
    let mut options = ClientOptions {
        system_roots: true,
        ca: None,
        identity: None,
        connect_timeout: CONNECT_TIMEOUT,
        https_only: false,
        proxy: None,
    };
    let mut cert_secret = None;
    if let Some(cert_ref) = &spec.cert_secret_ref {
        let secret = delivery.secret(&cert_ref.name).await?;
        let ca = secret.pem("ca.crt", "caFile");
        let cert = secret.pem("tls.crt", "certFile");
        let key = secret.pem("tls.key", "keyFile");
        match (&cert, &key) {
            (Some(c), None) => {
                return Err(secret.error(format!("{} is set but 'tls.key' is missing", c.name)));
            }
            (None, Some(k)) => {
                return Err(secret.error(format!("{} is set but 'tls.crt' is missing", k.name)));
            }
            (None, None) if ca.is_none() => {
                return Err(secret.error(
                    "holds none of 'ca.crt', 'tls.crt' and 'tls.key' (certSecretRef)".into(),
                ));
            }
            _ => {}
        }
        // As in Flux, a CA given here is the only one trusted; without one, the system's are.
        options.system_roots = ca.is_none();
        options.ca = ca;
        options.identity = cert.zip(key).map(|(cert, key)| Identity { cert, key });
        cert_secret = Some(cert_ref.name.clone());
    }
    let (url, username, password, from) = if let Some(proxy_ref) = &spec.proxy_secret_ref {
        let secret = delivery.secret(&proxy_ref.name).await?;
        let address = secret
            .text("address")?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| secret.error("key 'address' is missing (proxySecretRef)".into()))?;
        (
            Some(address),
            secret.text("username")?,
            secret.text("password")?,
            format!("Secret '{}' key 'address'", proxy_ref.name),
        )
    } else if let Some((proxy, secret)) = secret_proxy {
        (
            Some(proxy),
            None,
            None,
            format!("Secret '{secret}' key 'proxy'"),
        )
    } else {
        (spec.proxy.clone(), None, None, "spec.proxy".to_owned())
    };
    if let Some(url) = url {
        options.proxy = Some(
            Proxy::parse(&url, username.as_deref(), password.as_deref()).map_err(|cause| {
                // An address that does not parse may not split where credentials end: show
                // its scheme only.
                let proxy = match cause {
                    ProxyError::NotUrl => match url.split_once("://") {
                        Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphabetic()) => {
                            format!("{scheme}://…")
                        }
                        _ => "<proxy>".to_owned(),
                    },
                    _ => redacted(&url),
                };
                DeliveryError::BadProxy {
                    provider: delivery.provider_name(),
                    proxy,
                    from,
                    cause,
                }
            })?,
        );
    }
    Ok((options, cert_secret))
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
        // The context (which needs the Provider's UID) is added by `deliver`.
        ProviderType::Github | ProviderType::Gitea => commit_status::body(event, ""),
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

type HttpClient = HttpsClient<Full<Bytes>>;

/// Bound on opening a connection (to the endpoint or the proxy); the Provider's `timeout`
/// bounds the whole attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients kept for reuse, one per distinct TLS material and proxy.
pub const CLIENT_CACHE: usize = 64;

/// The client for `options`, reused across deliveries (connection reuse). Keyed by a digest of
/// the material, so a rotated certificate or proxy gets a new client; the table is cleared when
/// it holds [`CLIENT_CACHE`] clients.
fn http_client(options: &ClientOptions) -> Result<HttpClient, ClientError> {
    static CLIENTS: OnceLock<Mutex<HashMap<[u8; 32], HttpClient>>> = OnceLock::new();
    let key = options.fingerprint();
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(client) = clients.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(client.clone());
    }
    let client = crate::net::https::build(options)?;
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if clients.len() >= CLIENT_CACHE {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

/// One delivery attempt of `delivery`.
pub async fn deliver(delivery: &Delivery) -> Result<(), DeliveryError> {
    let provider = &delivery.provider;
    let name = delivery.provider_name();
    let mut creds = credentials(delivery).await?;
    let (options, cert_secret) = client_options(delivery, creds.proxy.take()).await?;
    let mut address = creds
        .address
        .clone()
        .or_else(|| provider.spec.address.clone())
        .ok_or_else(|| DeliveryError::NoAddress {
            provider: name.clone(),
        })?;
    let spec = &provider.spec;
    if spec.type_.is_commit_status() && commit_status::skips(&delivery.event) {
        return Ok(());
    }
    if spec.type_ == ProviderType::Discord && !address.trim_end_matches('/').ends_with("/slack") {
        address = format!("{}/slack", address.trim_end_matches('/'));
    }
    let target = if spec.type_.is_commit_status() {
        commit_status::target(spec.type_, &address, &redacted(&address), &delivery.event).map_err(
            |cause| DeliveryError::CommitStatus {
                provider: name.clone(),
                cause,
            },
        )?
    } else {
        address.clone()
    };
    let shown = redacted(&target);
    let uri: hyper::Uri = target
        .parse()
        .ok()
        .filter(|u: &hyper::Uri| matches!(u.scheme_str(), Some("http" | "https")))
        .ok_or_else(|| DeliveryError::BadAddress {
            provider: name.clone(),
            address: shown.clone(),
        })?;
    let mut body = payload(
        spec.type_,
        &delivery.event,
        spec.username.as_deref(),
        spec.channel.as_deref(),
        &address,
    );
    if spec.type_.is_commit_status() {
        let uid = provider.metadata.uid.as_deref().unwrap_or_default();
        body["context"] = json!(commit_status::context(uid, &delivery.event));
    }
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
        ProviderType::Github | ProviderType::Gitea => {
            let token =
                creds
                    .token
                    .as_ref()
                    .filter(|t| !t.is_empty())
                    .ok_or(DeliveryError::NoToken {
                        provider: name.clone(),
                        type_: spec.type_.as_str(),
                    })?;
            request = if spec.type_ == ProviderType::Github {
                request
                    .header("Authorization", format!("Bearer {token}"))
                    .header("Accept", "application/vnd.github+json")
            } else {
                request.header("Authorization", format!("token {token}"))
            };
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
    let client = http_client(&options).map_err(|e| match &cert_secret {
        Some(secret) => DeliveryError::SecretContent {
            provider: name.clone(),
            secret: secret.clone(),
            cause: e.to_string(),
        },
        None => DeliveryError::Transport {
            provider: name.clone(),
            address: shown.clone(),
            cause: e.to_string(),
        },
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
