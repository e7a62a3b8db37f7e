//! Credentials from the Secret named by `spec.secretRef`, with Flux's key names.
//!
//! Invariant: no value read here is ever formatted by `Debug`/`Display` (the `Debug` impl
//! prints key names only) or put into a URL; the fetch hands them to gix through its
//! credential callback and header options, and [`Credentials::secrets`] lists them for
//! [`super::remote::redact`].

use std::collections::BTreeMap;

use super::SourceError;
use super::known_hosts::KnownHosts;

/// How to authenticate to the git server.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (a public repository).
    #[default]
    None,
    /// HTTP basic auth (a personal access token goes in `password`).
    Basic {
        /// The Secret's `username`.
        username: String,
        /// The Secret's `password`.
        password: String,
    },
    /// HTTP `Authorization: Bearer <token>`.
    Bearer {
        /// The Secret's `bearerToken`.
        token: String,
    },
    /// SSH private key (decoded at connect time, on the fetch thread: an encrypted key costs
    /// a key derivation) with the known_hosts the server's host key must match.
    Ssh {
        /// The Secret's name, for errors about the key.
        secret: String,
        /// The Secret's `identity`: the private key, still encoded.
        identity: Vec<u8>,
        /// The Secret's `known_hosts`, parsed.
        known_hosts: KnownHosts,
        /// The Secret's `password`: the key's passphrase, when it is encrypted.
        password: Option<String>,
    },
}

/// Everything the Secret provides.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// How to authenticate.
    pub auth: Auth,
    /// PEM CA bundle (`ca.crt`) to verify an HTTPS server with.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.auth {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Bearer { .. } => "bearer",
            Auth::Ssh { .. } => "ssh",
        };
        f.debug_struct("Credentials")
            .field("auth", &kind)
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

impl Credentials {
    /// Reads the Secret's `data` (already base64-decoded). `secret` names it in errors.
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, SourceError> {
        let text = |key: &str| -> Result<Option<String>, SourceError> {
            match data.get(key) {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.clone()).map(Some).map_err(|_| {
                    SourceError::Credentials {
                        secret: secret.to_owned(),
                        reason: format!("key '{key}' is not UTF-8"),
                    }
                }),
            }
        };
        let username = text("username")?;
        let password = text("password")?;
        let token = text("bearerToken")?;
        let auth = match (
            username,
            password,
            token,
            data.get("identity"),
            data.get("known_hosts"),
        ) {
            (_, _, Some(_), Some(_), _) => {
                return Err(SourceError::Credentials {
                    secret: secret.to_owned(),
                    reason: "set either bearerToken or identity, not both".to_owned(),
                });
            }
            (Some(_), _, Some(_), _, _) | (_, Some(_), Some(_), _, _) => {
                return Err(SourceError::Credentials {
                    secret: secret.to_owned(),
                    reason: "set either username/password or bearerToken, not both".to_owned(),
                });
            }
            (_, password, None, Some(identity), known_hosts) => {
                let known_hosts = known_hosts
                    .cloned()
                    .ok_or_else(|| SourceError::Credentials {
                        secret: secret.to_owned(),
                        reason:
                            "key 'identity' needs 'known_hosts' (host keys are always verified)"
                                .to_owned(),
                    })?;
                let known_hosts =
                    KnownHosts::parse(&known_hosts).map_err(|e| SourceError::Credentials {
                        secret: secret.to_owned(),
                        reason: format!("key 'known_hosts': {e}"),
                    })?;
                Auth::Ssh {
                    secret: secret.to_owned(),
                    identity: identity.clone(),
                    known_hosts,
                    password,
                }
            }
            (None, None, Some(token), None, _) => Auth::Bearer {
                token: token.trim().to_owned(),
            },
            (Some(username), Some(password), None, None, _) => Auth::Basic { username, password },
            (Some(_), None, None, None, _) | (None, Some(_), None, None, _) => {
                return Err(SourceError::Credentials {
                    secret: secret.to_owned(),
                    reason: "keys 'username' and 'password' must be set together".to_owned(),
                });
            }
            (None, None, None, None, _) => Auth::None,
        };
        Ok(Self {
            auth,
            ca_pem: data.get("ca.crt").cloned(),
        })
    }

    /// The secret values, for redaction.
    pub fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            Auth::None => Vec::new(),
            Auth::Basic { password, .. } => vec![password.as_str()],
            Auth::Bearer { token } => vec![token.as_str()],
            Auth::Ssh { password, .. } => password.iter().map(String::as_str).collect(),
        }
    }

    /// True when credentials would be sent to the server.
    pub fn sends_credentials(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn reads_each_kind_and_never_debug_prints_values() {
        let basic =
            Credentials::from_secret_data("s", &data(&[("username", "u"), ("password", "canary")]))
                .unwrap();
        assert!(matches!(basic.auth, Auth::Basic { .. }));
        assert!(!format!("{basic:?}").contains("canary"));
        let bearer = Credentials::from_secret_data(
            "s",
            &data(&[("bearerToken", "tok\n"), ("ca.crt", "PEM")]),
        )
        .unwrap();
        assert!(
            bearer.auth
                == Auth::Bearer {
                    token: "tok".into()
                }
        );
        assert_eq!(bearer.ca_pem.as_deref(), Some(&b"PEM"[..]));
        let none = Credentials::from_secret_data("s", &data(&[])).unwrap();
        assert!(!none.sends_credentials());
    }

    #[test]
    fn refuses_incomplete_or_ambiguous_secrets() {
        for pairs in [
            &[("username", "u")][..],
            &[("identity", "key")][..],
            &[("username", "u"), ("password", "p"), ("bearerToken", "t")][..],
        ] {
            let err = Credentials::from_secret_data("my-secret", &data(pairs)).unwrap_err();
            assert!(err.to_string().contains("my-secret"), "{err}");
        }
    }

    #[test]
    fn ssh_secrets_need_a_usable_known_hosts() {
        let host = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC3pIz1E3DHt8lQocby4hvqc1JO0bmN4fOsG7oVWQ8nC\n";
        let ssh = Credentials::from_secret_data(
            "deploy",
            &data(&[
                ("identity", "KEY"),
                ("known_hosts", host),
                ("password", "pw-canary"),
            ]),
        )
        .unwrap();
        assert!(matches!(ssh.auth, Auth::Ssh { .. }));
        assert_eq!(ssh.secrets(), vec!["pw-canary"]);
        assert!(!format!("{ssh:?}").contains("KEY"));
        let err = Credentials::from_secret_data(
            "deploy",
            &data(&[("identity", "KEY"), ("known_hosts", "# nothing\n")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret 'deploy': key 'known_hosts': known_hosts is empty"
        );
    }
}
