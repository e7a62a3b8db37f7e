//! The artifact stage of a Kustomization: get the source's artifact bytes (from the local store
//! when this process produced it, else over http(s) from `status.artifact.url`), bounded in size
//! and time, and unpack them into a fresh temporary directory after verifying the digest.
//!
//! Guarantees:
//! - only bytes whose sha256 equals the source's declared digest are unpacked; a mismatch names
//!   the source and both digests;
//! - a download reads at most [`ArtifactFetcher::max_download`] bytes and gives up after
//!   [`DOWNLOAD_TIMEOUT`] (connect: [`CONNECT_TIMEOUT`]); redirects are not followed;
//! - URLs in errors lose their user information and query string (presigned URLs carry
//!   credentials there);
//! - the local store is read only for kinds this reconciler produces
//!   ([`crate::api::SourceKind::produced_here`]): another tool's artifact never names a file of
//!   ours.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::SourceArtifact;
use crate::policy::fetch::redact;
use crate::source::artifact::{ArtifactError, UnpackLimits, unpack_verified};
use crate::source::storage::Storage;

/// Bound on a whole download (response and complete body).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on opening one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the artifact of a source could not be made available.
#[derive(Debug, thiserror::Error)]
#[error("{object}: artifact {revision}: {cause}")]
pub struct FetchError {
    /// The source, `Kind namespace/name`.
    pub object: String,
    /// The revision the source declares.
    pub revision: String,
    /// What went wrong (boxed: the error travels inside every stage's result).
    pub cause: Box<FetchCause>,
}

/// The cause of a [`FetchError`]; every URL is shown redacted.
#[derive(Debug, thiserror::Error)]
pub enum FetchCause {
    /// The artifact URL is not plain http(s) or carries user information (redacted URL).
    #[error("URL '{0}' is not an http:// or https:// URL without user information")]
    BadUrl(String),
    /// An https URL, but the system store has no CA certificate to verify the server with.
    #[error("{url}: https is unavailable: no trusted CA certificates in the system store")]
    NoTrust {
        /// The artifact URL.
        url: String,
    },
    /// The request failed; `cause` is the whole chain (hyper's top level says only "client
    /// error (Connect)").
    #[error("downloading {url}: {cause}")]
    Request {
        /// The artifact URL.
        url: String,
        /// Every cause of the failure, joined.
        cause: String,
    },
    /// The server answered with a status other than 2xx.
    #[error("downloading {url}: HTTP {status}")]
    Status {
        /// The artifact URL.
        url: String,
        /// The status the server sent.
        status: hyper::StatusCode,
    },
    /// `what` did not happen within `after` (no response, or not the complete body).
    #[error("downloading {url}: {what} within {after:?}")]
    Timeout {
        /// The artifact URL.
        url: String,
        /// What was awaited: the response headers or the whole body.
        what: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// Reading the body failed part way.
    #[error("downloading {url}: {source}")]
    Body {
        /// The artifact URL.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The body is longer than the download limit; reading stopped there.
    #[error("{url} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The artifact URL.
        url: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The downloaded bytes do not hash to the digest the source declares.
    #[error(
        "digest mismatch: the source declares {declared}, the downloaded tar.gz has {actual}; nothing was applied"
    )]
    DigestMismatch {
        /// The source's `status.artifact.digest`.
        declared: String,
        /// `sha256:<hex>` of what was downloaded.
        actual: String,
    },
    /// The tar.gz is malformed, hostile or over an unpack limit.
    #[error(transparent)]
    Unpack(ArtifactError),
    /// The blocking unpack task panicked or was cancelled.
    #[error("the unpack task failed: {0}")]
    UnpackTask(#[source] tokio::task::JoinError),
    /// No temporary directory to unpack into.
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Downloads artifacts. One per process (connection pool); cheap to clone.
#[derive(Clone)]
pub struct ArtifactFetcher {
    http: Client<HttpConnector, Empty<Bytes>>,
    /// `None` without trusted CA certificates.
    https: Option<HttpsClient>,
    storage: Option<Storage>,
    limits: UnpackLimits,
    max_download: u64,
}

impl ArtifactFetcher {
    /// `storage` is the local store when this process also runs the source controller.
    pub fn new(storage: Option<Storage>, limits: UnpackLimits) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let https = (!roots.is_empty()).then(|| https_client(roots)).flatten();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Self {
            http: Client::builder(TokioExecutor::new()).build(http),
            https,
            storage,
            // The compressed artifact is never larger than its content plus headers.
            max_download: limits.max_total_bytes + 4096 * limits.max_entries + (1 << 20),
            limits,
        }
    }

    /// Largest download accepted, in bytes: the unpack limits' content plus 4 KiB of headers per
    /// entry plus 1 MiB.
    pub fn max_download(&self) -> u64 {
        self.max_download
    }

    async fn bytes(&self, object: &str, artifact: &SourceArtifact) -> Result<Vec<u8>, FetchCause> {
        if let (Some(storage), Some(path)) = (&self.storage, &artifact.stored_path) {
            let storage = storage.clone();
            let path = path.clone();
            // A local copy that fails verification is ignored; the download below re-checks.
            if let Ok(Ok(Some(bytes))) =
                tokio::task::spawn_blocking(move || storage.read_verified(&path)).await
            {
                return Ok(bytes);
            }
        }
        let shown = redact(&artifact.url);
        let uri: hyper::Uri = artifact
            .url
            .parse()
            .map_err(|_| FetchCause::BadUrl(shown.clone()))?;
        if uri.authority().is_none_or(|a| a.as_str().contains('@')) {
            return Err(FetchCause::BadUrl(shown));
        }
        tracing::debug!(source = object, url = %shown, "downloading artifact");
        match uri.scheme_str() {
            Some("http") => self.download(&self.http, uri, &shown).await,
            Some("https") => match &self.https {
                Some(client) => self.download(client, uri, &shown).await,
                None => Err(FetchCause::NoTrust { url: shown }),
            },
            _ => Err(FetchCause::BadUrl(shown)),
        }
    }

    /// One GET of `uri` (shown as `shown`), bounded in time and size.
    async fn download<C>(
        &self,
        client: &Client<C, Empty<Bytes>>,
        uri: hyper::Uri,
        shown: &str,
    ) -> Result<Vec<u8>, FetchCause>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        let shown = shown.to_owned();
        let timeout = |what| FetchCause::Timeout {
            url: shown.clone(),
            what,
            after: DOWNLOAD_TIMEOUT,
        };
        let deadline = tokio::time::Instant::now() + DOWNLOAD_TIMEOUT;
        let response = tokio::time::timeout_at(deadline, client.get(uri))
            .await
            .map_err(|_| timeout("no response"))?
            .map_err(|e| FetchCause::Request {
                url: shown.clone(),
                cause: std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": "),
            })?;
        if !response.status().is_success() {
            return Err(FetchCause::Status {
                url: shown.clone(),
                status: response.status(),
            });
        }
        let limited = Limited::new(response.into_body(), self.max_download as usize);
        let collected = tokio::time::timeout_at(deadline, limited.collect())
            .await
            .map_err(|_| timeout("not complete"))?;
        match collected {
            Ok(body) => Ok(body.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchCause::TooLarge {
                url: shown.clone(),
                limit: self.max_download,
            }),
            Err(source) => Err(FetchCause::Body {
                url: shown.clone(),
                source,
            }),
        }
    }

    /// Fetches, verifies and unpacks the artifact of `object` (`Kind namespace/name`); the
    /// directory is deleted when the returned guard is dropped.
    pub async fn unpack(
        &self,
        object: &str,
        artifact: &SourceArtifact,
    ) -> Result<tempfile::TempDir, FetchError> {
        let error = |cause| FetchError {
            object: object.to_owned(),
            revision: artifact.revision.clone(),
            cause: Box::new(cause),
        };
        let bytes = self.bytes(object, artifact).await.map_err(error)?;
        let dir = tempfile::Builder::new()
            .prefix("gitops-ks-")
            .tempdir()
            .map_err(|e| error(FetchCause::TempDir(e)))?;
        let dest = dir.path().to_owned();
        let digest = artifact.digest.clone();
        let limits = self.limits.clone();
        tokio::task::spawn_blocking(move || unpack_verified(&bytes, &digest, &limits, &dest))
            .await
            .map_err(|e| error(FetchCause::UnpackTask(e)))?
            .map_err(|e| {
                error(match e {
                    ArtifactError::DigestMismatch { expected, actual } => {
                        FetchCause::DigestMismatch {
                            declared: expected,
                            actual,
                        }
                    }
                    other => FetchCause::Unpack(other),
                })
            })?;
        Ok(dir)
    }
}

/// A client for https trusting `roots`; `None` when the TLS settings cannot be built.
fn https_client(roots: rustls::RootCertStore) -> Option<HttpsClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Some(Client::builder(TokioExecutor::new()).build(connector))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::source::artifact::{ArtifactWriter, digest_of};

    const OBJECT: &str = "ExternalArtifact team/bundle";

    fn tar_gz() -> Vec<u8> {
        let mut writer = ArtifactWriter::new(Vec::new(), UnpackLimits::default());
        writer
            .add_file("cm.yaml", false, b"apiVersion: v1\nkind: ConfigMap\n")
            .unwrap();
        writer.finish().unwrap().1
    }

    /// Serves `status` and `body` to every request on 127.0.0.1; returns the base URL.
    async fn serve(status: &'static str, body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn artifact(url: String, digest: String) -> SourceArtifact {
        SourceArtifact {
            revision: "v1".into(),
            digest,
            url,
            stored_path: None,
        }
    }

    /// The error of fetching `url` declared with `digest`.
    async fn failure(fetcher: &ArtifactFetcher, url: String, digest: &str) -> FetchError {
        fetcher
            .unpack(OBJECT, &artifact(url, digest.to_owned()))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_matching_download_is_unpacked() {
        let bytes = tar_gz();
        let url = serve("200 OK", bytes.clone()).await;
        let fetcher = ArtifactFetcher::new(None, UnpackLimits::default());
        let dir = fetcher
            .unpack(
                OBJECT,
                &artifact(format!("{url}/a.tar.gz"), digest_of(&bytes)),
            )
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("cm.yaml")).unwrap();
        assert!(text.contains("ConfigMap"));
    }

    #[tokio::test]
    async fn a_digest_mismatch_names_the_object_and_both_digests() {
        let bytes = tar_gz();
        let url = serve("200 OK", bytes.clone()).await;
        let declared = format!("sha256:{}", "0".repeat(64));
        let fetcher = ArtifactFetcher::new(None, UnpackLimits::default());
        let err = failure(&fetcher, format!("{url}/a.tar.gz"), &declared).await;
        assert!(
            matches!(*err.cause, FetchCause::DigestMismatch { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("ExternalArtifact team/bundle: artifact v1: "),
            "{text}"
        );
        assert!(text.contains(&declared), "{text}");
        assert!(text.contains(&digest_of(&bytes)), "{text}");
    }

    #[tokio::test]
    async fn http_errors_oversize_bodies_and_bad_urls_are_refused_without_credentials() {
        let fetcher = ArtifactFetcher::new(
            None,
            UnpackLimits {
                max_total_bytes: 1024,
                max_entries: 1,
            },
        );
        let digest = digest_of(b"");
        let url = serve("404 Not Found", Vec::new()).await;
        let err = failure(&fetcher, format!("{url}/a.tar.gz?token=s3cr3t"), &digest).await;
        assert!(
            matches!(*err.cause, FetchCause::Status { status, .. } if status == 404),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cr3t"), "{err}");

        let limit = fetcher.max_download();
        let url = serve("200 OK", vec![0u8; limit as usize + 1]).await;
        let err = failure(&fetcher, format!("{url}/big.tar.gz"), &digest).await;
        assert!(matches!(*err.cause, FetchCause::TooLarge { .. }), "{err}");

        for bad in [
            "ftp://host/a.tar.gz",
            "http://user:s3cr3t@host/a.tar.gz",
            "not a url",
        ] {
            let err = failure(&fetcher, bad.to_owned(), &digest).await;
            assert!(matches!(*err.cause, FetchCause::BadUrl(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_url_is_a_request_error_with_its_cause() {
        // Bind and drop: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let fetcher = ArtifactFetcher::new(None, UnpackLimits::default());
        let url = format!("http://127.0.0.1:{port}/a.tar.gz");
        let err = failure(&fetcher, url, &digest_of(b"")).await;
        assert!(matches!(*err.cause, FetchCause::Request { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
    }
}
