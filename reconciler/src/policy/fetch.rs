//! Policy components from `module.url`: downloaded over https, pinned by the sha256 the spec
//! declares, cached by that digest.
//!
//! Expected flow: [`ModuleFetcher::fetch`] looks the digest up in memory, then on disk (bytes
//! read from disk are hashed again before use); on a miss it downloads the URL, following at
//! most [`FetchConfig::max_redirects`] redirects (each to https), stops reading past
//! [`FetchConfig::max_bytes`], gives up after [`FetchConfig::timeout`] in all, checks the
//! digest and stores the bytes under it.
//!
//! Guarantees:
//! - Only bytes whose sha256 equals the declared one are ever returned; the policy host checks
//!   the digest again before compiling.
//! - Every error names the policy and the URL, with any user information and query string
//!   removed (presigned URLs carry their credentials there), and says what went wrong.
//! - Plain http is refused, for the URL and for every redirect target; so are URLs with user
//!   information (credentials would sit in the object in plain text).
//! - Every download is bounded in time (connect and total) and in size (while reading).
//!
//! Caveats: two Kustomizations asking for the same digest at the same moment may both download
//! it; the second result is the same bytes. The memory cache is dropped whole when it would
//! exceed [`FetchConfig::memory_cache_bytes`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use sha2::{Digest as _, Sha256};

use crate::net::https::{ClientOptions, PemInput};

/// The reconciler's flags of policy module downloads.
#[derive(Clone, Debug, clap::Args)]
pub struct PolicyArgs {
    /// PEM file of CA certificates trusted for policy modules' `module.url`, besides the
    /// system's (a private module server).
    #[arg(long, value_name = "FILE")]
    pub policy_module_ca_file: Option<PathBuf>,
}

/// Limits and trust of the downloads.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Extra CA certificates (PEM) trusted besides the system's, e.g. a private registry's.
    pub ca_pem: Option<Vec<u8>>,
    /// Directory of downloaded components, one file per sha256; `None` keeps them in memory.
    pub cache_dir: Option<PathBuf>,
    /// Largest component accepted, in bytes; default 32 MiB (the policy host's own cap).
    pub max_bytes: u64,
    /// Bound on one download, redirects included; default 60 s.
    pub timeout: Duration,
    /// Bound on opening one connection; default 10 s.
    pub connect_timeout: Duration,
    /// Redirects followed; default 5.
    pub max_redirects: usize,
    /// Bytes of components kept in memory; default 256 MiB.
    pub memory_cache_bytes: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            ca_pem: None,
            cache_dir: None,
            // The policy host refuses larger components anyway: one limit for both.
            max_bytes: crate::policy::HostConfig::default().max_module_bytes as u64,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            memory_cache_bytes: 256 << 20,
        }
    }
}

/// Why a module could not be had from its URL.
#[derive(Debug, thiserror::Error)]
#[error("policy {policy}: module.url {url}: {cause}")]
pub struct FetchError {
    /// The step (or ClusterPolicy) the module belongs to.
    pub policy: String,
    /// The URL without user information or query string.
    pub url: String,
    /// What went wrong.
    pub cause: FetchCause,
}

/// The cause of a [`FetchError`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchCause {
    /// The URL is not an https URL without user information (the message says why).
    #[error("{0}")]
    BadUrl(String),
    /// `module.sha256` is not 64 lowercase hex characters.
    #[error("declared sha256 '{0}' is not 64 lowercase hex characters")]
    BadDigest(String),
    /// No CA certificate to verify the server with (system store and `--policy-module-ca-file`).
    #[error("the trust store could not be set up: {0}")]
    Trust(String),
    /// Connecting, TLS or the transfer failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with a status other than 200 or a redirect.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// More redirects than allowed were followed.
    #[error("more than {limit} redirects")]
    TooManyRedirects {
        /// The redirect limit.
        limit: usize,
    },
    /// A redirect pointed at a URL other than https.
    #[error("redirect to {0} refused: only https is allowed")]
    RedirectNotHttps(String),
    /// A redirect without a Location header that parses as a URL.
    #[error("redirect without a usable Location header")]
    BadRedirect,
    /// The body is longer than the limit; reading stopped there.
    #[error("the component is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The whole answer did not arrive within the timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The downloaded bytes do not hash to `module.sha256`.
    #[error("sha256 mismatch: declared {expected}, downloaded {actual}")]
    DigestMismatch {
        /// The declared sha256.
        expected: String,
        /// The sha256 of the bytes downloaded.
        actual: String,
    },
}

impl FetchError {
    /// Whether a retry may help (a server error, a timeout or a network failure), as opposed to
    /// a spec that must change (bad URL, digest mismatch, too large).
    pub fn is_transient(&self) -> bool {
        match &self.cause {
            FetchCause::Request(_) | FetchCause::Timeout(_) => true,
            FetchCause::Status(code) => *code >= 500 || *code == 429 || *code == 408,
            _ => false,
        }
    }
}

type HttpsClient = crate::net::https::HttpsClient<Empty<Bytes>>;

/// Downloads and caches policy components; cheap to clone (shared state).
#[derive(Clone)]
pub struct ModuleFetcher(Arc<Inner>);

struct Inner {
    config: FetchConfig,
    /// Built on first use: a reconciler whose policies use no URL never reads the trust store.
    client: std::sync::OnceLock<Result<HttpsClient, String>>,
    memory: Mutex<MemoryCache>,
}

#[derive(Default)]
struct MemoryCache {
    bytes: usize,
    modules: HashMap<String, Arc<[u8]>>,
}

impl std::fmt::Debug for ModuleFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleFetcher")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl Default for ModuleFetcher {
    fn default() -> Self {
        Self::new(FetchConfig::default())
    }
}

/// The process's fetcher (see [`ModuleFetcher::install`]).
static PROCESS: std::sync::OnceLock<ModuleFetcher> = std::sync::OnceLock::new();

impl ModuleFetcher {
    /// Makes `config` the settings of [`ModuleFetcher::process`]; call once at startup, before
    /// any reconcile. Returns false (and changes nothing) if the process's fetcher exists already.
    pub fn install(config: FetchConfig) -> bool {
        PROCESS.set(Self::new(config)).is_ok()
    }

    /// The fetcher every reconcile of this process shares (one cache, one trust store): the one
    /// [`ModuleFetcher::install`] set, or defaults (system CAs, memory cache only).
    pub fn process() -> &'static ModuleFetcher {
        PROCESS.get_or_init(ModuleFetcher::default)
    }

    /// A fetcher with these limits; nothing is read or connected until the first fetch.
    pub fn new(config: FetchConfig) -> Self {
        Self(Arc::new(Inner {
            config,
            client: std::sync::OnceLock::new(),
            memory: Mutex::new(MemoryCache::default()),
        }))
    }

    /// The component at `url` whose sha256 is `sha256`, from the cache or downloaded.
    pub async fn fetch(
        &self,
        policy: &str,
        url: &str,
        sha256: &str,
    ) -> Result<Arc<[u8]>, FetchError> {
        let error = |cause: FetchCause| FetchError {
            policy: policy.to_owned(),
            url: redact(url),
            cause,
        };
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(error(FetchCause::BadDigest(sha256.to_owned())));
        }
        if let Some(bytes) = self.cached(sha256) {
            return Ok(bytes);
        }
        let uri = parse_https(url).map_err(error)?;
        let client = self.client().map_err(|e| error(FetchCause::Trust(e)))?;
        let limit = self.0.config.timeout;
        let bytes = tokio::time::timeout(limit, self.download(&client, uri))
            .await
            .map_err(|_| error(FetchCause::Timeout(limit)))?
            .map_err(error)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(error(FetchCause::DigestMismatch {
                expected: sha256.to_owned(),
                actual,
            }));
        }
        let bytes: Arc<[u8]> = bytes.into();
        self.store(sha256, &bytes);
        Ok(bytes)
    }

    /// Builds the https client now (reads the trust store, parses the extra CAs), so that a
    /// bad `--policy-module-ca-file` stops the reconciler at startup rather than failing every
    /// URL module later.
    pub fn check_trust(&self) -> Result<(), String> {
        self.client().map(drop)
    }

    fn client(&self) -> Result<HttpsClient, String> {
        self.0
            .client
            .get_or_init(|| build_client(&self.0.config))
            .clone()
    }

    /// From memory, else from disk if the file still hashes to its name.
    fn cached(&self, sha256: &str) -> Option<Arc<[u8]>> {
        if let Ok(memory) = self.0.memory.lock()
            && let Some(bytes) = memory.modules.get(sha256)
        {
            return Some(bytes.clone());
        }
        let path = self.0.config.cache_dir.as_ref()?.join(sha256);
        let bytes = std::fs::read(&path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            tracing::warn!(path = %path.display(), "cached policy module is corrupt; downloading it again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let bytes: Arc<[u8]> = bytes.into();
        self.remember(sha256, &bytes);
        Some(bytes)
    }

    fn remember(&self, sha256: &str, bytes: &Arc<[u8]>) {
        let Ok(mut memory) = self.0.memory.lock() else {
            return;
        };
        if memory.bytes + bytes.len() > self.0.config.memory_cache_bytes {
            *memory = MemoryCache::default();
        }
        if bytes.len() <= self.0.config.memory_cache_bytes
            && memory
                .modules
                .insert(sha256.to_owned(), bytes.clone())
                .is_none()
        {
            memory.bytes += bytes.len();
        }
    }

    /// In memory, and on disk through a temporary file renamed into place (a reader never sees
    /// half a file; a failed write only costs a later download).
    fn store(&self, sha256: &str, bytes: &Arc<[u8]>) {
        self.remember(sha256, bytes);
        let Some(dir) = &self.0.config.cache_dir else {
            return;
        };
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut file, bytes)?;
            file.persist(dir.join(sha256)).map_err(|e| e.error)?;
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "could not cache a policy module on disk");
        }
    }

    async fn download(
        &self,
        client: &HttpsClient,
        mut uri: hyper::Uri,
    ) -> Result<Vec<u8>, FetchCause> {
        let config = &self.0.config;
        for _ in 0..=config.max_redirects {
            let request = hyper::Request::get(uri.clone())
                .header(hyper::header::USER_AGENT, "gitops-reconciler")
                .body(Empty::new())
                .map_err(|e| FetchCause::BadUrl(e.to_string()))?;
            let response = client
                .request(request)
                .await
                .map_err(|e| FetchCause::Request(error_chain(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                uri = redirect_target(&uri, response.headers())?;
                continue;
            }
            if status != hyper::StatusCode::OK {
                return Err(FetchCause::Status(status.as_u16()));
            }
            let too_large = FetchCause::TooLarge {
                limit: config.max_bytes,
            };
            let declared = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > config.max_bytes) {
                return Err(too_large);
            }
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchCause::Request(error_chain(&e)))?;
                if let Some(data) = frame.data_ref() {
                    if (bytes.len() + data.len()) as u64 > config.max_bytes {
                        return Err(too_large);
                    }
                    bytes.extend_from_slice(data);
                }
            }
            return Ok(bytes);
        }
        Err(FetchCause::TooManyRedirects {
            limit: config.max_redirects,
        })
    }
}

fn build_client(config: &FetchConfig) -> Result<HttpsClient, String> {
    crate::net::https::build(&ClientOptions {
        system_roots: true,
        ca: config.ca_pem.clone().map(|pem| PemInput {
            name: "the CA file".to_owned(),
            pem,
        }),
        identity: None,
        connect_timeout: config.connect_timeout,
        https_only: true,
        proxy: None,
    })
    .map_err(|e| e.to_string())
}

/// The URL as a request target, if it is https without user information.
fn parse_https(url: &str) -> Result<hyper::Uri, FetchCause> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| FetchCause::BadUrl(format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchCause::BadUrl("only https:// URLs are allowed".into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| FetchCause::BadUrl("the URL has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(FetchCause::BadUrl(
            "credentials in the URL are not supported (they would be stored in the object in plain text)"
                .into(),
        ));
    }
    if authority.host().starts_with('-') {
        return Err(FetchCause::BadUrl(
            "the host must not start with '-'".into(),
        ));
    }
    Ok(uri)
}

/// Where a redirect leads: an absolute https URL, or a path on the same server.
fn redirect_target(
    current: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Result<hyper::Uri, FetchCause> {
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(FetchCause::BadRedirect)?;
    if location.contains("://") {
        return parse_https(location).map_err(|_| FetchCause::RedirectNotHttps(redact(location)));
    }
    let authority = current.authority().ok_or(FetchCause::BadRedirect)?;
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let base = current.path();
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    format!("https://{authority}{path}")
        .parse()
        .map_err(|_| FetchCause::BadRedirect)
}

/// `url` for messages: no user information, no query string, no fragment.
pub fn redact(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(cut);
    let base = match base.split_once("://") {
        Some((scheme, tail)) => {
            let host_end = tail.find('/').unwrap_or(tail.len());
            let (authority, path) = tail.split_at(host_end);
            let authority = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if rest.is_empty() {
        base
    } else {
        format!("{base}?…")
    }
}

/// `error: cause: cause`, hyper's errors say little at the top level.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries_in_messages() {
        assert_eq!(
            redact("https://user:secret@example.com/p/m.wasm?X-Amz-Signature=abc#f"),
            "https://example.com/p/m.wasm?…"
        );
        assert_eq!(
            redact("https://example.com/m.wasm"),
            "https://example.com/m.wasm"
        );
    }

    #[test]
    fn only_https_without_credentials_is_accepted() {
        assert!(parse_https("https://example.com/m.wasm").is_ok());
        for bad in [
            "http://example.com/m.wasm",
            "ftp://example.com/m.wasm",
            "https://u:p@example.com/m.wasm",
            "example.com/m.wasm",
        ] {
            assert!(
                matches!(parse_https(bad), Err(FetchCause::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redirects_resolve_against_the_current_url_and_stay_on_https() {
        let current: hyper::Uri = "https://example.com/a/b/m.wasm".parse().unwrap();
        let at = |location: &str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(hyper::header::LOCATION, location.parse().unwrap());
            redirect_target(&current, &headers).map(|u| u.to_string())
        };
        assert_eq!(at("/c/m.wasm").unwrap(), "https://example.com/c/m.wasm");
        assert_eq!(at("n.wasm").unwrap(), "https://example.com/a/b/n.wasm");
        assert_eq!(
            at("https://cdn.example.com/x").unwrap(),
            "https://cdn.example.com/x"
        );
        assert_eq!(
            at("http://u:p@cdn.example.com/x?sig=1"),
            Err(FetchCause::RedirectNotHttps(
                "http://cdn.example.com/x?…".into()
            ))
        );
        assert_eq!(
            redirect_target(&current, &hyper::HeaderMap::new()),
            Err(FetchCause::BadRedirect)
        );
    }

    #[tokio::test]
    async fn a_bad_digest_or_url_fails_before_any_connection() {
        let fetcher = ModuleFetcher::default();
        let err = fetcher
            .fetch("pin", "https://example.com/m.wasm", "ABC")
            .await
            .unwrap_err();
        assert!(matches!(err.cause, FetchCause::BadDigest(_)));
        let err = fetcher
            .fetch("pin", "http://example.com/m.wasm", &"0".repeat(64))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy pin: module.url http://example.com/m.wasm: only https:// URLs are allowed"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let fetcher = ModuleFetcher::new(FetchConfig {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..FetchConfig::default()
        });
        assert_eq!(
            fetcher.check_trust(),
            Err("the CA file holds no certificate".to_owned())
        );
        assert_eq!(FetchConfig::default().max_bytes, 32 << 20);
    }

    #[tokio::test]
    async fn the_disk_cache_serves_verified_bytes_and_drops_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"component bytes".to_vec();
        let digest = hex::encode(Sha256::digest(&bytes));
        std::fs::write(dir.path().join(&digest), &bytes).unwrap();
        let fetcher = ModuleFetcher::new(FetchConfig {
            cache_dir: Some(dir.path().to_owned()),
            ..FetchConfig::default()
        });
        // Served from disk: the URL is never dialled (nothing listens on port 9).
        let got = fetcher
            .fetch("p", "https://127.0.0.1:9/m.wasm", &digest)
            .await
            .unwrap();
        assert_eq!(&got[..], &bytes[..]);

        let other = b"other".to_vec();
        let other_digest = hex::encode(Sha256::digest(&other));
        std::fs::write(dir.path().join(&other_digest), b"tampered").unwrap();
        let fresh = ModuleFetcher::new(FetchConfig {
            cache_dir: Some(dir.path().to_owned()),
            timeout: Duration::from_secs(5),
            ..FetchConfig::default()
        });
        let err = fresh
            .fetch("p", "https://127.0.0.1:9/m.wasm", &other_digest)
            .await
            .unwrap_err();
        assert!(
            matches!(err.cause, FetchCause::Request(_) | FetchCause::Trust(_)),
            "{err}"
        );
        assert!(
            !dir.path().join(&other_digest).exists(),
            "the corrupt file is removed"
        );
    }
}
