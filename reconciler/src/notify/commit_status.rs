//! The `github` and `gitea` Providers: a commit status on the revision an event is about, as
//! Flux's notification-controller sets it.
//!
//! Expected flow: the Provider's address is the repository's URL (`https://github.com/org/app`,
//! `https://gitea.example/org/app`; an `ssh://` clone URL means its https host) → [`target`] turns it and the event's `revision` into the
//! API call `POST {api}/repos/{owner}/{repo}/statuses/{sha}` (GitHub: `api.github.com`, or
//! `{host}/api/v3` for GitHub Enterprise; Gitea: `{host}/api/v1`) → [`body`] is the status:
//! `success` for info events, `failure` for errors, the reason in words as the description, and
//! [`context`] (`kind/name/<first part of the Provider's UID>`) so that each object of each
//! cluster has its own status line.
//!
//! Guarantees: the sha must be hexadecimal (it becomes a path segment); owner and repository
//! must be one path segment each; an event without a revision is an error (nothing to attach the
//! status to) and `Progressing` events are skipped, as in Flux.

use serde_json::{Value, json};

use super::alert::{Event, REVISION_KEY};
use crate::api::alert::{EventSeverity, ProviderType};

/// Why no commit status can be set for an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitStatusError {
    /// The event carries no `revision` metadata.
    #[error("the event has no revision metadata to set a commit status on")]
    NoRevision,
    /// The revision ends in no commit sha (at least 7 hex digits after `:` or `/`).
    #[error("revision '{0}' names no commit sha")]
    BadRevision(String),
    /// The Provider's address is not `scheme://host/owner/repository`.
    #[error("address {0} is not a repository URL (scheme://host/owner/repository)")]
    BadAddress(String),
}

/// Whether `event` is one a commit status is not set for (Flux skips `Progressing`).
pub fn skips(event: &Event) -> bool {
    event.reason == "Progressing"
}

/// The URL of the commit status API call for `event` on the repository at `address`;
/// `shown` is the address as errors may show it.
pub fn target(
    type_: ProviderType,
    address: &str,
    shown: &str,
    event: &Event,
) -> Result<String, CommitStatusError> {
    let revision = event
        .metadata
        .get(REVISION_KEY)
        .ok_or(CommitStatusError::NoRevision)?;
    let sha = sha_of(revision).ok_or_else(|| CommitStatusError::BadRevision(revision.clone()))?;
    let bad = || CommitStatusError::BadAddress(shown.to_owned());
    let (scheme, rest) = address.trim().split_once("://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    // An ssh clone URL names the same repository; its API is served over https (as in Flux).
    let (scheme, host) = match scheme {
        "http" | "https" => (scheme, host),
        "ssh" => {
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            ("https", host.split(':').next().unwrap_or_default())
        }
        _ => return Err(bad()),
    };
    let mut parts = path.trim_end_matches('/').split('/');
    let (Some(owner), Some(repo), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let segment = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if host.is_empty() || host.contains('@') || !segment(owner) || !segment(repo) {
        return Err(bad());
    }
    let api = match type_ {
        ProviderType::Github if host == "github.com" => "https://api.github.com".to_owned(),
        ProviderType::Github => format!("{scheme}://{host}/api/v3"),
        _ => format!("{scheme}://{host}/api/v1"),
    };
    Ok(format!("{api}/repos/{owner}/{repo}/statuses/{sha}"))
}

/// The commit sha of a revision: `main@sha1:<sha>`, `<sha>`, or the older `main/<sha>`.
fn sha_of(revision: &str) -> Option<&str> {
    let sha = revision
        .rsplit_once(':')
        .map(|(_, sha)| sha)
        .or_else(|| revision.rsplit_once('/').map(|(_, sha)| sha))
        .unwrap_or(revision);
    (sha.len() >= 7 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

/// `kind/name/<first part of the Provider's UID>`, lower-case: one status line per object and
/// cluster.
pub fn context(provider_uid: &str, event: &Event) -> String {
    let uid = provider_uid.split('-').next().unwrap_or_default();
    format!("{}/{}/{uid}", event.kind, event.name).to_lowercase()
}

/// The status: state from the severity, the reason in lower-case words as the description.
pub fn body(event: &Event, context: &str) -> Value {
    json!({
        "state": match event.severity {
            EventSeverity::Info => "success",
            EventSeverity::Error => "failure",
        },
        "context": context,
        "description": words(&event.reason),
    })
}

/// `ReconciliationSucceeded` → `reconciliation succeeded`, `HealthCheckFailed` → `health check
/// failed`, `PDFLoader` → `pdf loader`.
fn words(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn event(revision: Option<&str>, severity: EventSeverity, reason: &str) -> Event {
        Event {
            kind: "Kustomization".into(),
            namespace: "apps".into(),
            name: "podinfo".into(),
            labels: BTreeMap::new(),
            severity,
            reason: reason.into(),
            message: "m".into(),
            metadata: revision
                .map(|r| BTreeMap::from([(REVISION_KEY.to_owned(), r.to_owned())]))
                .unwrap_or_default(),
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            reporting_controller: "gitops-reconciler".into(),
        }
    }

    const SHA: &str = "0c9c2e41ab2f0e3b1d2c4a5b6e7f8091a2b3c4d5";

    #[test]
    fn the_api_url_follows_the_host() {
        let e = event(
            Some(&format!("main@sha1:{SHA}")),
            EventSeverity::Info,
            "ReconciliationSucceeded",
        );
        let at = |type_, address: &str| target(type_, address, "<shown>", &e);
        assert_eq!(
            at(ProviderType::Github, "https://github.com/org/app").unwrap(),
            format!("https://api.github.com/repos/org/app/statuses/{SHA}")
        );
        assert_eq!(
            at(ProviderType::Github, "https://ghe.corp/org/app.git/").unwrap(),
            format!("https://ghe.corp/api/v3/repos/org/app/statuses/{SHA}")
        );
        assert_eq!(
            at(ProviderType::Github, "ssh://git@github.com/org/app.git").unwrap(),
            format!("https://api.github.com/repos/org/app/statuses/{SHA}")
        );
        assert_eq!(
            at(ProviderType::Gitea, "http://127.0.0.1:3000/org/app").unwrap(),
            format!("http://127.0.0.1:3000/api/v1/repos/org/app/statuses/{SHA}")
        );
        for bad in [
            "https://github.com/org",
            "https://github.com/org/app/extra",
            "git@github.com:org/app.git",
            "https://github.com/org/a%2Fb",
            "https://u:p@github.com/org/app",
        ] {
            assert_eq!(
                at(ProviderType::Github, bad),
                Err(CommitStatusError::BadAddress("<shown>".into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_revision_must_name_a_sha() {
        let at = |revision: Option<&str>| {
            target(
                ProviderType::Github,
                "https://github.com/org/app",
                "x",
                &event(revision, EventSeverity::Info, "X"),
            )
        };
        assert_eq!(at(None), Err(CommitStatusError::NoRevision));
        assert!(at(Some(&format!("main/{SHA}"))).is_ok());
        assert!(at(Some(SHA)).is_ok());
        assert_eq!(
            at(Some("main@sha1:../../x")),
            Err(CommitStatusError::BadRevision("main@sha1:../../x".into()))
        );
    }

    #[test]
    fn the_status_says_success_or_failure_with_the_reason_in_words() {
        let e = event(Some(SHA), EventSeverity::Error, "HealthCheckFailed");
        let c = context("6f1b8c3e-1111-2222-3333-444455556666", &e);
        assert_eq!(c, "kustomization/podinfo/6f1b8c3e");
        assert_eq!(
            body(&e, &c),
            json!({"state": "failure", "context": c, "description": "health check failed"})
        );
        let ok = event(Some(SHA), EventSeverity::Info, "ReconciliationSucceeded");
        assert_eq!(body(&ok, &c)["state"], "success");
        assert_eq!(body(&ok, &c)["description"], "reconciliation succeeded");
        assert_eq!(words("PDFLoader"), "pdf loader");
        assert!(skips(&event(Some(SHA), EventSeverity::Info, "Progressing")));
    }
}
