//! Verifying one webhook request against its Receiver's type and token: pure functions of
//! (type, events, token, headers, raw body), so every scheme is tested without a server.
//!
//! Guarantees: signatures and tokens are compared in constant time (`hmac`'s `verify_slice`,
//! `subtle`); the HMAC is computed over the raw body bytes as received; no error carries the
//! token, a computed signature or the body (errors end up in logs and metrics).

use hmac::{Hmac, KeyInit, Mac};
use hyper::HeaderMap;
use subtle::ConstantTimeEq as _;

use crate::api::receiver::ReceiverType;

/// Why a request was refused after its Receiver was found. Each variant has a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The type's signature header (named) is absent.
    #[error("the {0} header is missing")]
    MissingSignature(&'static str),
    /// The signature header (named) is not `<algorithm>=<hex>`.
    #[error("the {0} header is malformed (expected <sha1|sha256|sha512>=<hex>)")]
    MalformedSignature(&'static str),
    /// The HMAC of the body under the token differs from the header (named).
    #[error("the {0} header does not match the body signed with the receiver's token")]
    BadSignature(&'static str),
    /// GitLab's token header differs from the token.
    #[error("the X-Gitlab-Token header does not match the receiver's token")]
    BadToken,
    /// The request's event type is not listed in the Receiver's `spec.events`.
    #[error("the {kind} event '{event}' is not in spec.events")]
    EventNotAllowed {
        /// The Receiver type.
        kind: &'static str,
        /// The event type the request carried.
        event: String,
    },
    /// The body's content type is one the type's payload cannot be.
    #[error("content type '{0}' is not application/json or application/x-www-form-urlencoded")]
    UnsupportedContentType(String),
}

impl Rejection {
    /// The `result` label of `gitops_receiver_requests_total` (a bounded set).
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) | Self::MalformedSignature(_) | Self::BadSignature(_) => {
                "invalid_signature"
            }
            Self::BadToken => "invalid_token",
            Self::EventNotAllowed { .. } => "event_not_allowed",
            Self::UnsupportedContentType(_) => "unsupported_content_type",
        }
    }
}

const X_SIGNATURE: &str = "X-Signature";
const X_HUB_SIGNATURE_256: &str = "X-Hub-Signature-256";
const X_HUB_SIGNATURE: &str = "X-Hub-Signature";

/// What a verified request told us: the event type, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The event type header's value, for the types that send one.
    pub event: Option<String>,
}

/// Verifies a request of a Receiver of `type_` with `token`, accepting only `events` when
/// that list is not empty (for the types that carry an event).
pub fn verify(
    type_: ReceiverType,
    events: &[String],
    token: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, Rejection> {
    match type_ {
        ReceiverType::Generic => Ok(Verified { event: None }),
        ReceiverType::GenericHmac => {
            let signature =
                header(headers, X_SIGNATURE).ok_or(Rejection::MissingSignature(X_SIGNATURE))?;
            check_hmac(X_SIGNATURE, signature, token, body)?;
            Ok(Verified { event: None })
        }
        ReceiverType::GitHub | ReceiverType::Bitbucket => {
            check_form_or_json(headers)?;
            // As go-github's ValidatePayload: the SHA-256 header first, then the SHA-1 one.
            let (name, signature) = match header(headers, X_HUB_SIGNATURE_256) {
                Some(value) => (X_HUB_SIGNATURE_256, value),
                None => (
                    X_HUB_SIGNATURE,
                    header(headers, X_HUB_SIGNATURE)
                        .ok_or(Rejection::MissingSignature(X_HUB_SIGNATURE_256))?,
                ),
            };
            check_hmac(name, signature, token, body)?;
            let (kind, event_header) = if type_ == ReceiverType::GitHub {
                ("GitHub", "X-GitHub-Event")
            } else {
                ("Bitbucket server", "X-Event-Key")
            };
            allowed(kind, events, header(headers, event_header))
        }
        ReceiverType::GitLab => {
            let given = header(headers, "X-Gitlab-Token").unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(token)) {
                return Err(Rejection::BadToken);
            }
            allowed("GitLab", events, header(headers, "X-Gitlab-Event"))
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The event filter: an empty list accepts everything; otherwise a case-insensitive match.
fn allowed(
    kind: &'static str,
    events: &[String],
    event: Option<&str>,
) -> Result<Verified, Rejection> {
    let event = event.unwrap_or_default();
    if !events.is_empty() && !events.iter().any(|e| e.eq_ignore_ascii_case(event)) {
        return Err(Rejection::EventNotAllowed {
            kind,
            event: printable(event),
        });
    }
    Ok(Verified {
        event: (!event.is_empty()).then(|| printable(event)),
    })
}

/// A header value safe to log: at most 64 characters, control characters replaced.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// GitHub's two content types (go-github refuses the others before checking anything).
fn check_form_or_json(headers: &HeaderMap) -> Result<(), Rejection> {
    let content_type = header(headers, "Content-Type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "application/x-www-form-urlencoded" => Ok(()),
        _ => Err(Rejection::UnsupportedContentType(printable(content_type))),
    }
}

/// Checks `<algorithm>=<hex>` in header `name` against the HMAC of `body` keyed with `token`.
fn check_hmac(name: &'static str, value: &str, token: &[u8], body: &[u8]) -> Result<(), Rejection> {
    let (algorithm, hex_mac) = value
        .trim()
        .split_once('=')
        .ok_or(Rejection::MalformedSignature(name))?;
    let expected = hex::decode(hex_mac).map_err(|_| Rejection::MalformedSignature(name))?;
    let ok = match algorithm {
        "sha1" => mac_matches::<Hmac<sha1::Sha1>>(token, body, &expected),
        "sha256" => mac_matches::<Hmac<sha2::Sha256>>(token, body, &expected),
        "sha512" => mac_matches::<Hmac<sha2::Sha512>>(token, body, &expected),
        _ => return Err(Rejection::MalformedSignature(name)),
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::BadSignature(name))
    }
}

fn mac_matches<M: Mac + KeyInit>(key: &[u8], body: &[u8], expected: &[u8]) -> bool {
    // HMAC takes keys of any length; the error case cannot happen but is a refusal if it did.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// `<algorithm>=<hex>` of `body` keyed with `token`, as senders compute it (for tests and
/// the documentation's examples).
pub fn sign(algorithm: &str, token: &[u8], body: &[u8]) -> Option<String> {
    fn hex_of<M: Mac + KeyInit>(key: &[u8], body: &[u8]) -> Option<String> {
        let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
        mac.update(body);
        Some(hex::encode(mac.finalize().into_bytes()))
    }
    let hex = match algorithm {
        "sha1" => hex_of::<Hmac<sha1::Sha1>>(token, body)?,
        "sha256" => hex_of::<Hmac<sha2::Sha256>>(token, body)?,
        "sha512" => hex_of::<Hmac<sha2::Sha512>>(token, body)?,
        _ => return None,
    };
    Some(format!("{algorithm}={hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"it-is-a-secret";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123"}"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_known_github_signature_verifies() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload
        // "Hello, World!".
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            sign("sha256", b"It's a Secret to Everybody", b"Hello, World!").unwrap(),
            expected
        );
        let h = headers(&[
            ("X-Hub-Signature-256", expected),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ]);
        let verified = verify(
            ReceiverType::GitHub,
            &[],
            b"It's a Secret to Everybody",
            &h,
            b"Hello, World!",
        )
        .unwrap();
        assert_eq!(verified.event.as_deref(), Some("push"));
    }

    #[test]
    fn github_checks_signature_event_and_content_type() {
        let good = sign("sha256", TOKEN, BODY).unwrap();
        let events = vec!["ping".to_owned(), "Push".to_owned()];
        let ok = headers(&[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json; charset=utf-8"),
        ]);
        assert!(verify(ReceiverType::GitHub, &events, TOKEN, &ok, BODY).is_ok());
        // The SHA-1 header alone (old GitHub, Gitea) is accepted.
        let sha1 = headers(&[
            ("X-Hub-Signature", &sign("sha1", TOKEN, BODY).unwrap()),
            ("X-GitHub-Event", "ping"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]);
        assert!(verify(ReceiverType::GitHub, &events, TOKEN, &sha1, BODY).is_ok());
        // One byte of the body changed.
        let mut tampered = BODY.to_vec();
        tampered[3] ^= 1;
        assert_eq!(
            verify(ReceiverType::GitHub, &events, TOKEN, &ok, &tampered),
            Err(Rejection::BadSignature("X-Hub-Signature-256"))
        );
        // Another token.
        assert!(verify(ReceiverType::GitHub, &events, b"other", &ok, BODY).is_err());
        // An event not in the list.
        let issues = headers(&[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "issues"),
            ("Content-Type", "application/json"),
        ]);
        let refused = verify(ReceiverType::GitHub, &events, TOKEN, &issues, BODY).unwrap_err();
        assert_eq!(refused.label(), "event_not_allowed");
        // No filter: every event.
        assert!(verify(ReceiverType::GitHub, &[], TOKEN, &issues, BODY).is_ok());
        // No signature, a malformed one, a wrong content type.
        let unsigned = headers(&[
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(
            verify(ReceiverType::GitHub, &[], TOKEN, &unsigned, BODY),
            Err(Rejection::MissingSignature("X-Hub-Signature-256"))
        );
        for bad in ["sha256", "sha256=zz", "md5=00", "=00"] {
            let h = headers(&[
                ("X-Hub-Signature-256", bad),
                ("Content-Type", "application/json"),
            ]);
            assert_eq!(
                verify(ReceiverType::GitHub, &[], TOKEN, &h, BODY),
                Err(Rejection::MalformedSignature("X-Hub-Signature-256")),
                "{bad}"
            );
        }
        let text = headers(&[
            ("X-Hub-Signature-256", &good),
            ("Content-Type", "text/plain"),
        ]);
        assert_eq!(
            verify(ReceiverType::GitHub, &[], TOKEN, &text, BODY)
                .unwrap_err()
                .label(),
            "unsupported_content_type"
        );
    }

    #[test]
    fn a_truncated_signature_is_refused() {
        let good = sign("sha256", TOKEN, BODY).unwrap();
        let short = &good[..good.len() - 2];
        let h = headers(&[
            ("X-Hub-Signature-256", short),
            ("Content-Type", "application/json"),
        ]);
        assert!(verify(ReceiverType::GitHub, &[], TOKEN, &h, BODY).is_err());
    }

    #[test]
    fn generic_hmac_takes_each_algorithm_in_x_signature() {
        for algorithm in ["sha1", "sha256", "sha512"] {
            let h = headers(&[("X-Signature", &sign(algorithm, TOKEN, BODY).unwrap())]);
            assert!(
                verify(ReceiverType::GenericHmac, &[], TOKEN, &h, BODY).is_ok(),
                "{algorithm}"
            );
            assert_eq!(
                verify(ReceiverType::GenericHmac, &[], TOKEN, &h, b"other body"),
                Err(Rejection::BadSignature("X-Signature")),
                "{algorithm}"
            );
        }
        assert_eq!(
            verify(
                ReceiverType::GenericHmac,
                &[],
                TOKEN,
                &HeaderMap::new(),
                BODY
            ),
            Err(Rejection::MissingSignature("X-Signature"))
        );
    }

    #[test]
    fn gitlab_compares_the_token_header_and_filters_events() {
        let events = vec!["Push Hook".to_owned()];
        let token = std::str::from_utf8(TOKEN).unwrap();
        let ok = headers(&[("X-Gitlab-Token", token), ("X-Gitlab-Event", "push hook")]);
        assert!(verify(ReceiverType::GitLab, &events, TOKEN, &ok, BODY).is_ok());
        let wrong = headers(&[
            ("X-Gitlab-Token", "it-is-a-secreT"),
            ("X-Gitlab-Event", "Push Hook"),
        ]);
        assert_eq!(
            verify(ReceiverType::GitLab, &events, TOKEN, &wrong, BODY),
            Err(Rejection::BadToken)
        );
        let prefix = headers(&[
            ("X-Gitlab-Token", "it-is-a"),
            ("X-Gitlab-Event", "Push Hook"),
        ]);
        assert_eq!(
            verify(ReceiverType::GitLab, &events, TOKEN, &prefix, BODY),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            verify(
                ReceiverType::GitLab,
                &events,
                TOKEN,
                &HeaderMap::new(),
                BODY
            ),
            Err(Rejection::BadToken)
        );
        let tag = headers(&[
            ("X-Gitlab-Token", token),
            ("X-Gitlab-Event", "Tag Push Hook"),
        ]);
        assert_eq!(
            verify(ReceiverType::GitLab, &events, TOKEN, &tag, BODY)
                .unwrap_err()
                .label(),
            "event_not_allowed"
        );
    }

    #[test]
    fn bitbucket_server_uses_x_hub_signature_and_x_event_key() {
        let events = vec!["repo:refs_changed".to_owned()];
        let ok = headers(&[
            ("X-Hub-Signature", &sign("sha256", TOKEN, BODY).unwrap()),
            ("X-Event-Key", "repo:refs_changed"),
            ("Content-Type", "application/json; charset=utf-8"),
        ]);
        assert!(verify(ReceiverType::Bitbucket, &events, TOKEN, &ok, BODY).is_ok());
        let ping = headers(&[
            ("X-Hub-Signature", &sign("sha256", TOKEN, BODY).unwrap()),
            ("X-Event-Key", "diagnostics:ping"),
            ("Content-Type", "application/json"),
        ]);
        assert!(verify(ReceiverType::Bitbucket, &events, TOKEN, &ping, BODY).is_err());
        let forged = headers(&[
            ("X-Hub-Signature", &sign("sha256", b"guess", BODY).unwrap()),
            ("X-Event-Key", "repo:refs_changed"),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(
            verify(ReceiverType::Bitbucket, &events, TOKEN, &forged, BODY),
            Err(Rejection::BadSignature("X-Hub-Signature"))
        );
    }

    #[test]
    fn gitea_headers_verify_as_github() {
        // Gitea sends the GitHub headers next to its own.
        let h = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Signature", "ignored"),
            ("X-Hub-Signature-256", &sign("sha256", TOKEN, BODY).unwrap()),
            ("Content-Type", "application/json"),
        ]);
        assert!(verify(ReceiverType::GitHub, &["push".into()], TOKEN, &h, BODY).is_ok());
    }

    #[test]
    fn errors_never_carry_the_token_or_the_signature() {
        let good = sign("sha256", TOKEN, BODY).unwrap();
        let h = headers(&[
            ("X-Hub-Signature-256", &good),
            ("Content-Type", "application/json"),
        ]);
        let error = verify(ReceiverType::GitHub, &[], b"another", &h, BODY).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains(&good[7..]), "{text}");
        assert!(!text.contains("another"), "{text}");
    }
}
