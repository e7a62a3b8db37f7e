//! Validation of `spec.url`, again in code (the CRD schema may not have run: old CRDs, direct
//! etcd writes), and redaction of anything credential-like from text that leaves the fetch.

use super::SourceError;

/// The transports the reconciler speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// HTTPS, verified against the system CAs or the Secret's `ca.crt`.
    Https,
    /// Plain HTTP: only with `spec.insecure: true`, and never with credentials.
    Http,
    /// git:// (git daemon): unauthenticated and unencrypted, treated like plain HTTP.
    Git,
    /// ssh://, with a key from the Secret and a host key checked against its known_hosts.
    Ssh,
    /// file:// — only on a reconciler started with the test-only flag.
    File,
}

/// A URL that passed [`validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The URL as written in the spec.
    pub url: String,
    /// Its scheme.
    pub scheme: Scheme,
}

/// Checks a source URL against these rules: a known scheme (no `ext::`, no scp-like
/// `host:path`), a host that cannot be read as an option (`-oProxyCommand…`), no password in
/// the URL (credentials come from the Secret), no whitespace or control characters; http:// and
/// git:// only when `insecure`, file:// only when `allow_file`.
pub fn validate(url: &str, insecure: bool, allow_file: bool) -> Result<RemoteUrl, SourceError> {
    let invalid = |why: &str| SourceError::InvalidUrl {
        url: redact_url(url),
        reason: why.to_owned(),
    };
    if url.len() > 2048 {
        return Err(invalid("longer than 2048 characters"));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(invalid(
            "contains whitespace, control characters or backslashes",
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("must be of the form scheme://host/path"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        "git" => Scheme::Git,
        "ssh" => Scheme::Ssh,
        "file" => Scheme::File,
        _ => {
            return Err(invalid(
                "unsupported scheme (use https://, http://, ssh://)",
            ));
        }
    };
    if scheme == Scheme::File {
        if !allow_file {
            return Err(invalid(
                "file:// URLs are only allowed on a reconciler started with --allow-file-urls",
            ));
        }
        if !rest.starts_with('/') || rest.split('/').any(|c| c == "..") {
            return Err(invalid("file:// URLs must be absolute paths without '..'"));
        }
        return Ok(RemoteUrl {
            url: url.to_owned(),
            scheme,
        });
    }
    if matches!(scheme, Scheme::Http | Scheme::Git) && !insecure {
        return Err(invalid(
            "plain http:// and git:// send content in clear text: use https://, or set insecure: true",
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            if userinfo.contains(':') {
                return Err(invalid(
                    "credentials must not be part of the URL: put them in the Secret of spec.secretRef",
                ));
            }
            if userinfo.is_empty() || userinfo.starts_with('-') {
                return Err(invalid("user name must not be empty or start with '-'"));
            }
            host
        }
        None => authority,
    };
    if host_port.is_empty() {
        return Err(invalid("host is empty"));
    }
    if host_port.starts_with('-') {
        return Err(invalid("host must not start with '-'"));
    }
    let path = &rest[authority.len()..];
    if path.is_empty() || path == "/" {
        return Err(invalid("repository path is empty"));
    }
    Ok(RemoteUrl {
        url: url.to_owned(),
        scheme,
    })
}

/// `url` with any userinfo removed (`https://user:pw@host/x` → `https://host/x`).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Removes every secret in `secrets` (and its percent-encoded form) and every URL userinfo
/// from `text`. Every message derived from a gix error goes through this before it reaches a
/// log, an event or a status.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(secret, "***");
        let encoded = percent_encode(secret);
        if encoded != *secret {
            out = out.replace(&encoded, "***");
        }
    }
    // Strip `user[:password]@` after every `://`.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(index) = rest.find("://") {
        let (head, tail) = rest.split_at(index + 3);
        result.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rsplit_once('@') {
            Some((_, host)) => result.push_str(host),
            None => result.push_str(authority),
        }
        rest = after;
    }
    result.push_str(rest);
    result
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_urls() {
        for (url, insecure) in [
            ("https://github.com/org/repo.git", false),
            ("https://git.example.com:8443/org/repo", false),
            ("ssh://git@github.com/org/repo.git", false),
            ("http://127.0.0.1:8080/git/repo.git", true),
            ("git://127.0.0.1:9418/repo.git", true),
        ] {
            validate(url, insecure, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert_eq!(
            validate("file:///srv/repo.git", false, true)
                .unwrap()
                .scheme,
            Scheme::File
        );
    }

    #[test]
    fn refuses_hostile_and_unsafe_urls() {
        for (url, insecure, allow_file) in [
            ("ssh://-oProxyCommand=touch /tmp/pwned/repo", false, false),
            ("ssh://-oProxyCommand=x@host/repo", false, false),
            ("ext::sh -c touch% /tmp/pwned", false, false),
            ("git@github.com:org/repo.git", false, false),
            ("file:///srv/repo.git", false, false),
            ("file:///srv/../etc", false, true),
            ("http://example.com/repo.git", false, false),
            ("git://example.com/repo.git", false, false),
            ("https://user:pw-canary@example.com/repo.git", false, false),
            ("https://example.com/repo\n.git", false, false),
            ("https://example.com", false, false),
            ("ftp://example.com/repo", false, false),
        ] {
            let err = validate(url, insecure, allow_file).unwrap_err();
            assert!(matches!(err, SourceError::InvalidUrl { .. }), "{url}");
            assert!(!err.to_string().contains("pw-canary"), "{err}");
        }
    }

    #[test]
    fn redaction_removes_secrets_and_userinfo() {
        let text = r#"Credentials provided for "https://alice:p%40ss%20w0rd@host/x.git" were not accepted; token tok3n-canary"#;
        let out = redact(text, &["p@ss w0rd", "tok3n-canary"]);
        assert!(!out.contains("p%40ss"), "{out}");
        assert!(!out.contains("tok3n-canary"), "{out}");
        assert!(!out.contains("alice"), "{out}");
        assert!(out.contains("https://host/x.git"), "{out}");
        assert_eq!(redact_url("https://u:p@h/x"), "https://h/x");
    }
}
