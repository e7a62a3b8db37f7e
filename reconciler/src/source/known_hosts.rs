//! The `known_hosts` of an SSH Secret, and the strict check of a server's host key against it.
//!
//! There is no trust on first use: a host without a matching entry is refused, as is a host
//! whose key differs from every entry recorded for it. Supported syntax (OpenSSH's, see
//! sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): comma-separated host patterns with `*`/`?`
//! wildcards and `!` negation, `[host]:port` for non-default ports, hashed names
//! (`|1|salt|hash`, as written by `ssh-keygen -H`), comments, and the `@revoked` marker (a
//! revoked key is refused for every host). `@cert-authority` lines are skipped: host
//! certificates are not negotiated.
//!
//! Errors name the host and the offered key's SHA256 fingerprint; host keys are public, and no
//! other content of the Secret ever appears in a message.

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey};

/// Why `known_hosts` could not be read, or a host key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KnownHostsError {
    /// The `known_hosts` bytes are not UTF-8 text.
    #[error("known_hosts is not UTF-8")]
    NotUtf8,
    /// Lines are present but none parses as an entry.
    #[error(
        "known_hosts has no usable entry (line {first_bad_line} and others could not be parsed)"
    )]
    NoEntries {
        /// The first line that could not be parsed, from 1.
        first_bad_line: usize,
    },
    /// No entry at all (only blank lines and comments).
    #[error("known_hosts is empty")]
    Empty,
    /// No entry's host pattern matches the host connected to.
    #[error(
        "no known_hosts entry for host '{host}' (server offered {algorithm} key {fingerprint})"
    )]
    UnknownHost {
        /// The host as matched (`[host]:port` for a port other than 22).
        host: String,
        /// The algorithm of the key the server offered.
        algorithm: String,
        /// The SHA-256 fingerprint of the key the server offered.
        fingerprint: String,
    },
    /// Entries match the host, but none holds the key the server offered.
    #[error(
        "host key mismatch for '{host}': the server offered {algorithm} key {fingerprint}, which is not in known_hosts"
    )]
    Mismatch {
        /// The host as matched (`[host]:port` for a port other than 22).
        host: String,
        /// The algorithm of the key the server offered.
        algorithm: String,
        /// The SHA-256 fingerprint of the key the server offered.
        fingerprint: String,
    },
    /// The server sent a certificate instead of a plain host key.
    #[error("'{host}' presented a host certificate; only plain host keys are supported")]
    Certificate {
        /// The host connected to.
        host: String,
    },
    /// The offered key is listed with the `@revoked` marker.
    #[error("host key {fingerprint} of '{host}' is marked @revoked in known_hosts")]
    Revoked {
        /// The host connected to.
        host: String,
        /// The SHA-256 fingerprint of the revoked key.
        fingerprint: String,
    },
}

/// Parsed `known_hosts` content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Parses `known_hosts` bytes. Lines that cannot be parsed (including key types this build
    /// does not know) are skipped, as OpenSSH does; at least one usable entry is required.
    pub fn parse(bytes: &[u8]) -> Result<Self, KnownHostsError> {
        let text = std::str::from_utf8(bytes).map_err(|_| KnownHostsError::NotUtf8)?;
        let mut entries = Vec::new();
        let mut first_bad_line = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The parser splits fields on single spaces: normalise tabs and runs of blanks.
            let normalised = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match normalised.parse::<Entry>() {
                Ok(entry) => entries.push(entry),
                Err(_) => {
                    first_bad_line.get_or_insert(index + 1);
                }
            }
        }
        match (entries.is_empty(), first_bad_line) {
            (false, _) => Ok(Self { entries }),
            (true, Some(first_bad_line)) => Err(KnownHostsError::NoEntries { first_bad_line }),
            (true, None) => Err(KnownHostsError::Empty),
        }
    }

    /// Checks the key `offered` by the server at `host`:`port`.
    ///
    /// Guarantees: `Ok` only when a non-revoked entry whose host patterns match has exactly
    /// this key. Matching is case-insensitive on the host name; for a port other than 22 the
    /// name matched is `[host]:port`, as OpenSSH records it.
    pub fn verify(
        &self,
        host: &str,
        port: u16,
        offered: &PublicKey,
    ) -> Result<(), KnownHostsError> {
        let name = host_key_name(host, port);
        let fingerprint = offered.fingerprint(HashAlg::Sha256).to_string();
        let same_key = |entry: &Entry| entry.public_key().key_data() == offered.key_data();
        if self
            .entries
            .iter()
            .any(|e| e.marker() == Some(&Marker::Revoked) && same_key(e))
        {
            return Err(KnownHostsError::Revoked {
                host: name,
                fingerprint,
            });
        }
        let known: Vec<&Entry> = self.for_host(&name).collect();
        if known.is_empty() {
            return Err(KnownHostsError::UnknownHost {
                host: name,
                algorithm: offered.algorithm().to_string(),
                fingerprint,
            });
        }
        if known.into_iter().any(same_key) {
            Ok(())
        } else {
            Err(KnownHostsError::Mismatch {
                host: name,
                algorithm: offered.algorithm().to_string(),
                fingerprint,
            })
        }
    }

    /// The host key algorithms recorded for `host`:`port`, in file order, to ask the server for
    /// exactly those (a server with several host keys then presents one we can verify).
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = host_key_name(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for entry in self.for_host(&name) {
            let algorithms = match entry.public_key().algorithm() {
                // An RSA host key signs with rsa-sha2-512/256 (ssh-rsa/SHA-1 is not offered).
                Algorithm::Rsa { .. } => vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                ],
                other => vec![other],
            };
            for algorithm in algorithms {
                if !out.contains(&algorithm) {
                    out.push(algorithm);
                }
            }
        }
        out
    }

    /// Plain (non-marker) entries whose host patterns match `name`.
    fn for_host<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(|e| e.marker().is_none())
            .filter(move |e| patterns_match(e.host_patterns(), name))
    }
}

/// The name under which OpenSSH records `host`:`port`.
pub fn host_key_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

fn patterns_match(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(salt) else {
                return false;
            };
            mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for pattern in list {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, pattern.as_str()),
                };
                if wildcard_match(&pattern.to_ascii_lowercase(), name) {
                    if negated {
                        // A negated match wins over any positive one.
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

/// Glob match with `*` (any run) and `?` (one character), as OpenSSH's `match_pattern`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two throwaway ed25519 host keys made with ssh-keygen for these tests.
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC3pIz1E3DHt8lQocby4hvqc1JO0bmN4fOsG7oVWQ8nC";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINoOjmK4jJdS1UsasBVLGxqjGINekbXl2UVDqCRYV6n1";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("test key parses")
    }

    #[test]
    fn plain_and_port_entries_match_only_their_host_and_key() {
        let kh = KnownHosts::parse(
            format!("# comment\n\ngithub.com,140.82.112.3 {KEY_A}\n[127.0.0.1]:2222\t{KEY_B} my comment\n")
                .as_bytes(),
        )
        .unwrap();
        kh.verify("github.com", 22, &key(KEY_A)).unwrap();
        kh.verify("GitHub.COM", 22, &key(KEY_A)).unwrap();
        kh.verify("140.82.112.3", 22, &key(KEY_A)).unwrap();
        kh.verify("127.0.0.1", 2222, &key(KEY_B)).unwrap();
        // Same host, other port: unknown.
        let err = kh.verify("github.com", 2222, &key(KEY_A)).unwrap_err();
        assert!(matches!(err, KnownHostsError::UnknownHost { .. }), "{err}");
        assert!(err.to_string().contains("[github.com]:2222"), "{err}");
        // Known host, other key: a mismatch that names the offered fingerprint.
        let err = kh.verify("127.0.0.1", 2222, &key(KEY_A)).unwrap_err();
        let fingerprint = key(KEY_A).fingerprint(HashAlg::Sha256).to_string();
        // What `ssh-keygen -lf` printed for this key.
        assert_eq!(
            fingerprint,
            "SHA256:7ORFY8bX0E1yqcd3QwbyA2pkxLiOPBIWz8k+NnKL2cs"
        );
        assert_eq!(
            err,
            KnownHostsError::Mismatch {
                host: "[127.0.0.1]:2222".into(),
                algorithm: "ssh-ed25519".into(),
                fingerprint: fingerprint.clone(),
            }
        );
        assert!(err.to_string().contains(&fingerprint), "{err}");
        assert!(
            !err.to_string().contains("AAAAC3Nz"),
            "no key material: {err}"
        );
    }

    #[test]
    fn hashed_entries_match_like_ssh_keygen_wrote_them() {
        // `ssh-keygen -H` of "github.com" and "[127.0.0.1]:2222" lines.
        let kh = KnownHosts::parse(
            format!(
                "|1|63qG2+OrcxbIixZmMv+WDFI2twk=|MuTR/trHTeeT2Ld3q1pCOQeWUn4= {KEY_A}\n\
                 |1|CYpQF4uXBViiwGbbKfqVu4lwALA=|UBK+GvurUAG2VffxsXRirvxbUXo= {KEY_B}\n"
            )
            .as_bytes(),
        )
        .unwrap();
        kh.verify("github.com", 22, &key(KEY_A)).unwrap();
        kh.verify("127.0.0.1", 2222, &key(KEY_B)).unwrap();
        assert!(matches!(
            kh.verify("gitlab.com", 22, &key(KEY_A)),
            Err(KnownHostsError::UnknownHost { .. })
        ));
        assert!(matches!(
            kh.verify("github.com", 22, &key(KEY_B)),
            Err(KnownHostsError::Mismatch { .. })
        ));
    }

    #[test]
    fn wildcards_negation_and_revoked_keys() {
        let kh = KnownHosts::parse(
            format!(
                "*.example.com,!evil.example.com {KEY_A}\n\
                 git?.corp {KEY_B}\n\
                 @revoked * {KEY_B}\n\
                 @cert-authority *.example.com {KEY_B}\n"
            )
            .as_bytes(),
        )
        .unwrap();
        kh.verify("git.example.com", 22, &key(KEY_A)).unwrap();
        assert!(matches!(
            kh.verify("evil.example.com", 22, &key(KEY_A)),
            Err(KnownHostsError::UnknownHost { .. })
        ));
        assert!(matches!(
            kh.verify("git1.corp", 22, &key(KEY_B)),
            Err(KnownHostsError::Revoked { .. })
        ));
        assert_eq!(
            kh.algorithms("git.example.com", 22),
            vec![Algorithm::Ed25519]
        );
        assert!(kh.algorithms("nowhere", 22).is_empty());
    }

    #[test]
    fn unusable_known_hosts_are_refused() {
        assert_eq!(
            KnownHosts::parse(b"# only a comment\n\n").unwrap_err(),
            KnownHostsError::Empty
        );
        assert_eq!(
            KnownHosts::parse(b"github.com ssh-ed25519 not-base64!\n").unwrap_err(),
            KnownHostsError::NoEntries { first_bad_line: 1 }
        );
        assert_eq!(
            KnownHosts::parse(&[0xff, 0xfe]).unwrap_err(),
            KnownHostsError::NotUtf8
        );
        // A bad line next to a good one is skipped.
        let kh = KnownHosts::parse(format!("garbage\nhost {KEY_A}\n").as_bytes()).unwrap();
        kh.verify("host", 22, &key(KEY_A)).unwrap();
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(wildcard_match("[127.0.0.1]:*", "[127.0.0.1]:2222"));
        assert!(!wildcard_match("*.example.com", "example.com"));
    }
}
