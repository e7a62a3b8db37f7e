//! The artifact stage of a Kustomization: get the source's artifact bytes (from the local store
//! when this process holds it, else over HTTP from `status.artifact.url`), bounded in size, and
//! unpack them into a fresh temporary directory after verifying the digest.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::Artifact;
use crate::source::artifact::{ArtifactError, UnpackLimits, unpack_verified};
use crate::source::storage::Storage;

/// Why the artifact could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("artifact URL '{0}' is not a plain http:// URL of the reconciler's artifact server")]
    BadUrl(String),
    #[error("downloading artifact {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("downloading artifact {url}: HTTP {status}")]
    Status {
        url: String,
        status: hyper::StatusCode,
    },
    /// `what` did not happen within `after` (no response, or not the complete body).
    #[error("downloading artifact {url}: {what} within {after:?}")]
    Timeout {
        url: String,
        what: &'static str,
        after: Duration,
    },
    #[error("downloading artifact {url}: {source}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("artifact {url} is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("artifact {revision}: {source}")]
    Unpack {
        revision: String,
        #[source]
        source: ArtifactError,
    },
    #[error("artifact {revision}: the unpack task failed: {source}")]
    UnpackTask {
        revision: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
}

/// Downloads artifacts. One per process (connection pool).
#[derive(Clone)]
pub struct ArtifactFetcher {
    http: Client<HttpConnector, Empty<Bytes>>,
    storage: Option<Storage>,
    limits: UnpackLimits,
    max_download: u64,
    timeout: Duration,
}

impl ArtifactFetcher {
    /// `storage` is the local store when this process also runs the source controller.
    pub fn new(storage: Option<Storage>, limits: UnpackLimits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            storage,
            // The compressed artifact is never larger than its content plus headers.
            max_download: limits.max_total_bytes + 4096 * limits.max_entries + (1 << 20),
            limits,
            timeout: Duration::from_secs(120),
        }
    }

    async fn bytes(&self, artifact: &Artifact) -> Result<Vec<u8>, FetchError> {
        if let Some(storage) = &self.storage {
            let storage = storage.clone();
            let path = artifact.path.clone();
            // A local copy that fails verification is ignored; the download below re-checks.
            if let Ok(Ok(Some(bytes))) =
                tokio::task::spawn_blocking(move || storage.read_verified(&path)).await
            {
                return Ok(bytes);
            }
        }
        let url = &artifact.url;
        if !url.starts_with("http://") {
            return Err(FetchError::BadUrl(url.clone()));
        }
        let uri: hyper::Uri = url.parse().map_err(|_| FetchError::BadUrl(url.clone()))?;
        let timeout = |what| FetchError::Timeout {
            url: url.clone(),
            what,
            after: self.timeout,
        };
        let response = tokio::time::timeout(self.timeout, self.http.get(uri))
            .await
            .map_err(|_| timeout("no response"))?
            .map_err(|source| FetchError::Request {
                url: url.clone(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        let limited = Limited::new(response.into_body(), self.max_download as usize);
        let collected = tokio::time::timeout(self.timeout, limited.collect())
            .await
            .map_err(|_| timeout("not complete"))?;
        match collected {
            Ok(body) => Ok(body.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge {
                url: url.clone(),
                limit: self.max_download,
            }),
            Err(source) => Err(FetchError::Body {
                url: url.clone(),
                source,
            }),
        }
    }

    /// Fetches, verifies and unpacks `artifact`; the directory is deleted when the returned
    /// guard is dropped.
    pub async fn unpack(&self, artifact: &Artifact) -> Result<tempfile::TempDir, FetchError> {
        let bytes = self.bytes(artifact).await?;
        let dir = tempfile::Builder::new()
            .prefix("gitops-ks-")
            .tempdir()
            .map_err(FetchError::TempDir)?;
        let dest = dir.path().to_owned();
        let digest = artifact.digest.clone();
        let limits = self.limits.clone();
        let revision = artifact.revision.clone();
        tokio::task::spawn_blocking(move || unpack_verified(&bytes, &digest, &limits, &dest))
            .await
            .map_err(|source| FetchError::UnpackTask {
                revision: revision.clone(),
                source,
            })?
            .map_err(|source| FetchError::Unpack { revision, source })?;
        Ok(dir)
    }
}
