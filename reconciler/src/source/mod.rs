//! The source stage: fetch a GitRepository with gix, turn the fetched tree into a
//! deterministic, content-addressed tar.gz artifact, keep the last few in storage and serve them
//! over HTTP.
//!
//! - [`remote`]: URL validation and redaction of credentials from every message;
//! - [`credentials`]: the Secret of `spec.secretRef`;
//! - [`mod@reference`]: which ref to follow (commit > name > semver > tag > branch > HEAD);
//! - [`git`]: the blocking fetch (ls-refs, skip when unchanged, shallow single-ref fetch);
//! - [`ssh`]: the in-process ssh:// transport (russh exec channel bridged into gix);
//! - [`known_hosts`]: strict host key checking against the Secret's `known_hosts`;
//! - [`flags`]: the reconciler's flags of this stage;
//! - [`limits`]: the table of size limits (defaults, flags, `spec.limits` fields, labels);
//! - [`transfer`]: deadline, cancellation and limits enforced while the bytes arrive;
//! - [`tree`]: tree walk with ignore rules, hostile-entry checks and caps;
//! - [`artifact`]: the artifact format, its writer and [`artifact::unpack_verified`];
//! - [`storage`]: content-addressed files on disk, GC, per-repository claims, the storage cap;
//! - [`server`]: the artifact HTTP server.

pub mod artifact;
pub mod credentials;
mod ecdsa_key;
pub mod flags;
pub mod git;
pub mod known_hosts;
pub mod limits;
pub mod reference;
pub mod remote;
pub mod semver_range;
pub mod server;
pub mod ssh;
pub mod storage;
pub mod transfer;
pub mod tree;

use std::path::PathBuf;
use std::time::Duration;

use crate::api::conditions::reasons;

pub use artifact::{ArtifactError, UnpackLimits, unpack_verified};
pub use git::{FetchOutcome, FetchRequest, fetch};
pub use limits::{Limit, LimitExceeded, SourceLimits};
pub use storage::Storage;
pub use transfer::{CancelCause, FetchControl};

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
    /// Size limits of every fetch (each GitRepository may tighten them).
    pub limits: SourceLimits,
    /// Cap on the bytes in storage (`--storage-max-bytes`; 0: none): the least recently used
    /// git caches are evicted to stay under it.
    pub max_storage_bytes: u64,
    /// Artifacts kept per GitRepository (older ones are garbage-collected).
    pub keep_artifacts: usize,
    /// Fetch timeout when `spec.timeout` is not set.
    pub default_timeout: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        let flags = crate::flags::defaults::<flags::SourceArgs>();
        Self {
            storage_adv_addr: "localhost:9090".to_owned(),
            concurrency: usize::from(crate::flags::DEFAULT_CONCURRENT),
            keep_artifacts: 2,
            default_timeout: Duration::from_secs(60),
            storage_path: flags.storage_path,
            allow_file_urls: flags.allow_file_urls,
            limits: flags.limits,
            max_storage_bytes: flags.storage_max_bytes,
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
    /// `spec.url` cannot be parsed or uses a scheme that is not allowed.
    #[error("invalid url '{url}': {reason}")]
    InvalidUrl {
        /// The URL with any credentials removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `spec.ref` is malformed (a bad commit hash, semver range or ref name).
    #[error("invalid ref: {reason}")]
    InvalidRef {
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials Secret is missing or does not hold a usable set of keys.
    #[error("secret '{secret}': {reason}")]
    Credentials {
        /// The Secret's name.
        secret: String,
        /// What is missing or malformed (never a value).
        reason: String,
    },
    /// The server refused the credentials (http 401/403, ssh auth rejected).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The ssh server's host key is not in `known_hosts`, or does not match it.
    #[error("host key verification failed: {0}")]
    HostKey(String),
    /// The branch, tag, semver range or commit of `spec.ref` matches nothing on the remote.
    #[error("{what} not found on the remote")]
    RefNotFound {
        /// What was looked for, e.g. `branch 'main'`.
        what: String,
    },
    /// Credentials would travel over plain http.
    #[error("refusing to send credentials over {scheme}: use https://")]
    InsecureCredentials {
        /// The URL's scheme.
        scheme: &'static str,
    },
    /// A URL scheme or remote feature this client has no transport for (the message says which).
    #[error("{0}")]
    Unsupported(String),
    /// Any other git or transport failure (redacted message).
    #[error("git operation failed: {0}")]
    Git(String),
    /// The fetch ran longer than `spec.timeout`.
    #[error("fetch timed out after {0:?}")]
    Timeout(Duration),
    /// The fetch was stopped from outside (shutdown, object deleted, spec changed).
    #[error("fetch cancelled: {0}")]
    Cancelled(CancelCause),
    /// The interrupt flag was seen; [`fetch`] replaces it with the cause recorded.
    #[error("fetch interrupted")]
    Interrupted,
    /// A size or count limit was reached during the fetch; what was received is discarded.
    #[error("{}{exceeded}; the fetch was stopped", revision.as_deref().map(|r| format!("revision '{r}' refused: ")).unwrap_or_default())]
    LimitExceeded {
        /// The revision being fetched, when known by then.
        revision: Option<String>,
        /// Which limit, its value and how far the fetch got.
        exceeded: LimitExceeded,
    },
    /// The remote still points at a revision refused earlier for its content; it is not
    /// fetched again.
    #[error(
        "{cause} (the remote still points at '{revision}': not downloaded again until the remote revision, the spec or the limits change)"
    )]
    StillRefused {
        /// The refused revision.
        revision: String,
        /// Why it was refused (the first refusal's message).
        cause: String,
    },
    /// The tree holds an entry refused for safety.
    #[error("hostile content at '{path}': {reason}")]
    HostileContent {
        /// Path of the entry inside the repository.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// Writing, reading or verifying the artifact in storage failed.
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
            Self::RefNotFound { .. }
            | Self::Git(_)
            | Self::Timeout(_)
            | Self::Cancelled(_)
            | Self::Interrupted => reasons::GIT_OPERATION_FAILED,
            Self::LimitExceeded { .. } | Self::StillRefused { .. } => reasons::SIZE_LIMIT_EXCEEDED,
            Self::HostileContent { .. } => reasons::HOSTILE_CONTENT,
            Self::Storage(_) => reasons::STORAGE_OPERATION_FAILED,
        }
    }

    /// The revision refused for its content (a limit or hostile content): fetching it again
    /// cannot succeed until the remote moves, so it is not downloaded again.
    pub fn refused_revision(&self) -> Option<&str> {
        match self {
            Self::LimitExceeded { revision, .. } => revision.as_deref(),
            _ => None,
        }
    }

    /// The limit that stopped the fetch, if one did.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::LimitExceeded { exceeded, .. } => Some(exceeded.limit),
            _ => None,
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
