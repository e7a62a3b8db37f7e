//! The source stage (issue 3): fetch a GitRepository with gix, turn the fetched tree into a
//! deterministic, content-addressed tar.gz artifact, keep the last few in storage and serve them
//! over HTTP.
//!
//! - [`remote`]: URL validation and redaction of credentials from every message;
//! - [`credentials`]: the Secret of `spec.secretRef`;
//! - [`reference`]: which ref to follow (commit > name > semver > tag > branch > HEAD);
//! - [`git`]: the blocking fetch (ls-refs, skip when unchanged, shallow single-ref fetch);
//! - [`ssh`]: the in-process ssh:// transport (russh exec channel bridged into gix);
//! - [`known_hosts`]: strict host key checking against the Secret's `known_hosts`;
//! - [`tree`]: tree walk with ignore rules, hostile-entry checks and caps;
//! - [`artifact`]: the artifact format, its writer and [`artifact::unpack_verified`];
//! - [`storage`]: content-addressed files on disk, GC;
//! - [`server`]: the artifact HTTP server.

pub mod artifact;
pub mod credentials;
mod ecdsa_key;
pub mod git;
pub mod known_hosts;
pub mod reference;
pub mod remote;
pub mod server;
pub mod ssh;
pub mod storage;
pub mod tree;

use std::path::PathBuf;
use std::time::Duration;

use crate::api::conditions::reasons;

pub use artifact::{ArtifactError, UnpackLimits, unpack_verified};
pub use git::{FetchOutcome, FetchRequest, fetch};
pub use storage::Storage;

/// Settings of the source controller and artifact server (flags of the reconciler binary).
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Root directory of the artifact storage (`--storage-path`).
    pub storage_path: PathBuf,
    /// `host:port` written into artifact URLs (`--storage-adv-addr`).
    pub storage_adv_addr: String,
    /// Fetches running at once (`--concurrent`).
    pub concurrency: usize,
    /// Accept `file://` URLs (`--allow-file-urls`, tests only).
    pub allow_file_urls: bool,
    /// Caps on each artifact's content.
    pub limits: UnpackLimits,
    /// Artifacts kept per GitRepository (older ones are garbage-collected).
    pub keep_artifacts: usize,
    /// Fetch timeout when `spec.timeout` is not set.
    pub default_timeout: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            storage_path: PathBuf::from("/data"),
            storage_adv_addr: "localhost:9090".to_owned(),
            concurrency: 4,
            allow_file_urls: false,
            limits: UnpackLimits::default(),
            keep_artifacts: 2,
            default_timeout: Duration::from_secs(60),
        }
    }
}

impl SourceConfig {
    /// The URL under which the artifact at storage-relative `path` is served.
    pub fn artifact_url(&self, path: &str) -> String {
        format!("http://{}/{}", self.storage_adv_addr, path)
    }
}

/// Why a source could not be fetched or stored. Messages never contain credentials (every
/// text derived from gix goes through [`remote::redact`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid url '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid ref: {reason}")]
    InvalidRef { reason: String },
    #[error("secret '{secret}': {reason}")]
    Credentials { secret: String, reason: String },
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("host key verification failed: {0}")]
    HostKey(String),
    #[error("{what} not found on the remote")]
    RefNotFound { what: String },
    #[error("refusing to send credentials over {scheme}: use https://")]
    InsecureCredentials { scheme: &'static str },
    #[error("{0}")]
    Unsupported(String),
    #[error("git operation failed: {0}")]
    Git(String),
    #[error("fetch timed out after {0:?}")]
    Timeout(Duration),
    #[error("fetch cancelled")]
    Cancelled,
    #[error("hostile content at '{path}': {reason}")]
    HostileContent { path: String, reason: String },
    #[error("storage: {0}")]
    Storage(String),
}

impl SourceError {
    /// The stable condition reason of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } | Self::InvalidRef { .. } | Self::Unsupported(_) => {
                reasons::INVALID_SPEC
            }
            Self::InsecureCredentials { .. } => reasons::INVALID_SPEC,
            Self::Credentials { .. } | Self::AuthenticationFailed(_) | Self::HostKey(_) => {
                reasons::AUTHENTICATION_FAILED
            }
            Self::RefNotFound { .. } | Self::Git(_) | Self::Timeout(_) | Self::Cancelled => {
                reasons::GIT_OPERATION_FAILED
            }
            Self::HostileContent { .. } => reasons::HOSTILE_CONTENT,
            Self::Storage(_) => reasons::STORAGE_OPERATION_FAILED,
        }
    }

    /// True when only a change of the spec (not a retry) can fix this: the object is Stalled.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            Self::InvalidUrl { .. }
                | Self::InvalidRef { .. }
                | Self::Unsupported(_)
                | Self::InsecureCredentials { .. }
        )
    }
}

impl From<storage::StorageError> for SourceError {
    fn from(e: storage::StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}
