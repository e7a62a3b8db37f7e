//! The blocking fetch of one GitRepository with gix.
//!
//! Expected flow: validate → ls-refs (one handshake; `prepare_fetch` lists the single ref we
//! follow) → when the resulting revision equals the last stored one, stop there (no pack is
//! requested) → otherwise a depth-1 fetch of that one ref into the GitRepository's bare object
//! store → walk the commit's tree from the object database into a new artifact → store it under
//! its digest → GC older artifacts.
//!
//! Guarantees: nothing is checked out, no hooks/filters/submodules run, no process is spawned
//! (gix speaks http(s):// and git:// natively; ssh:// goes through the in-process transport of
//! [`super::ssh`] instead of gix's, which would spawn `ssh`; file:// is read in-process from the
//! local repository's object database); credentials are handed to gix through its credential
//! callback or a header, never in a URL; every gix error is redacted before it is returned.
//!
//! Bounds: every transport (curl for http(s)://, a TCP stream for git://, the ssh channel)
//! is read through [`super::transfer`], which enforces the deadline, the cancellation of
//! [`FetchControl`] and the size limits while the bytes arrive; the tree walk checks the same
//! control between entries. A fetch holds its GitRepository's [`Claim`] on storage from start
//! to end, so a fetch never runs over another one's locks, and leftovers of a killed process are
//! removed when the claim is taken.
//!
//! Caveats: curl's connect timeout bounds connecting (at most 30 s, and the fetch's timeout);
//! git:// connects within the fetch's timeout (at most 30 s).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::bstr::{BString, ByteSlice};
use gix::protocol::handshake::Ref;
use gix::protocol::transport::Protocol;
use gix::protocol::transport::client::blocking_io::http;
use gix::protocol::transport::client::git;
use gix::remote::fetch::refmap::Source;

use super::SourceError;
use super::credentials::{Auth, Credentials};
use super::limits::SourceLimits;
use super::reference::{self, FETCHED_REF, RefRequest};
use super::remote::{self, RemoteUrl, Scheme, redact};
use super::ssh::{self, SshAuth, SshTarget};
use super::storage::{Claim, Storage, StoredArtifact};
use super::transfer::{FetchControl, Guard, GuardedHttp, GuardedReader, Stop};
use super::tree::{IgnoreRules, TreeStats, write_tree};

/// Everything one fetch needs.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// Namespace of the GitRepository (the storage directory and the git cache are per object).
    pub namespace: String,
    /// Name of the GitRepository.
    pub name: String,
    /// `spec.url`, parsed and checked.
    pub url: RemoteUrl,
    /// `spec.ref`, resolved to what to ask the remote for.
    pub reference: RefRequest,
    /// Credentials from `spec.secretRef` (none for a public repository).
    pub credentials: Credentials,
    /// `spec.ignore`.
    pub ignore: Option<String>,
    /// The revision of the artifact in storage; when the remote still has it, nothing is fetched.
    pub last_revision: Option<String>,
    /// `spec.timeout`: the whole fetch, from connect to stored artifact.
    pub timeout: Duration,
    /// Size and count limits of the fetch and of the tree.
    pub limits: SourceLimits,
    /// A revision refused for its content under these very limits: when the remote still
    /// points at it, nothing is downloaded ([`SourceError::StillRefused`]).
    pub refused: Option<Refused>,
    /// Artifacts to keep after storing a new one.
    pub keep_artifacts: usize,
}

/// A revision refused for its content, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The refused revision, as in `status.artifact.revision`.
    pub revision: String,
    /// The message of the refusal.
    pub cause: String,
}

impl Refused {
    /// The error for a remote that still points at the refused revision.
    fn still(&self, revision: &str) -> Option<SourceError> {
        (self.revision == revision).then(|| SourceError::StillRefused {
            revision: self.revision.clone(),
            cause: self.cause.clone(),
        })
    }
}

/// What a fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The remote still points at `revision`: nothing was downloaded or written.
    Unchanged {
        /// The revision, e.g. `main@sha1:<40 hex>`.
        revision: String,
    },
    /// A new artifact was stored.
    Stored {
        /// The revision fetched, e.g. `main@sha1:<40 hex>`.
        revision: String,
        /// Where the artifact is and its digest and size.
        artifact: StoredArtifact,
        /// Counts and sizes of the tree that was archived.
        stats: TreeStats,
    },
}

impl FetchOutcome {
    /// The revision the remote points at, stored now or before.
    pub fn revision(&self) -> &str {
        match self {
            Self::Unchanged { revision } | Self::Stored { revision, .. } => revision,
        }
    }
}

/// Above this many pack files the object store is rebuilt from scratch on the next fetch: each
/// shallow fetch adds a pack, and old trees are never needed again.
const MAX_PACKS: usize = 16;

/// Fetches `request` and stores its artifact in `storage`. Blocking: run it on a blocking
/// thread; stop it with `control` (it then returns the cause given to
/// [`FetchControl::stop`]).
///
/// Guarantees: the error is the first real cause: a limit, the timeout or the cancellation
/// recorded in `control` wins over whatever the unwinding transfer reported afterwards; on
/// return no lock, temporary pack or partial artifact of this fetch is left in storage.
pub fn fetch(
    storage: &Storage,
    request: &FetchRequest,
    control: &Arc<FetchControl>,
) -> Result<FetchOutcome, SourceError> {
    let secrets = request.credentials.secrets();
    let deadline = Instant::now() + request.timeout;
    let guard = Guard::new(
        control.clone(),
        request.timeout,
        deadline,
        request.limits.clone(),
    );
    let mut revision = None;
    let result = storage
        .claim(&request.namespace, &request.name)
        .map_err(SourceError::from)
        .and_then(|claim| {
            log_recovered(request, &claim);
            fetch_inner(storage, request, &guard, &mut revision)
        });
    let result = match (result, control.cause()) {
        (Err(_), Some(Stop::Limit(exceeded))) => Err(SourceError::LimitExceeded {
            revision: revision.clone(),
            exceeded,
        }),
        (Err(_), Some(Stop::Timeout(_))) => Err(SourceError::Timeout(request.timeout)),
        (Err(_), Some(Stop::Cancelled(cause))) => Err(SourceError::Cancelled(cause)),
        // A transfer that failed once its deadline had passed was stopped by the time limit,
        // whichever layer (curl, ssh, the socket) noticed first.
        (Err(_), None) if Instant::now() >= deadline => Err(SourceError::Timeout(request.timeout)),
        (result, _) => result,
    };
    // Defence in depth: even our own messages go through redaction.
    result.map_err(|e| match e {
        SourceError::Git(text) => SourceError::Git(redact(&text, &secrets)),
        SourceError::AuthenticationFailed(text) => {
            SourceError::AuthenticationFailed(redact(&text, &secrets))
        }
        SourceError::Timeout(_) => SourceError::Timeout(request.timeout),
        SourceError::LimitExceeded {
            revision: None,
            exceeded,
        } => SourceError::LimitExceeded {
            revision: revision.clone(),
            exceeded,
        },
        other => other,
    })
}

fn log_recovered(request: &FetchRequest, claim: &Claim) {
    for path in &claim.recovered {
        tracing::warn!(
            namespace = %request.namespace,
            name = %request.name,
            path = %path.display(),
            "removed a lock or temporary file left by an interrupted fetch"
        );
    }
}

/// How long [`fetch_async`] waits, after stopping a fetch at its timeout, for the blocking
/// work to unwind (it checks its control at least every [`super::transfer::POLL`]).
const UNWIND_GRACE: Duration = Duration::from_secs(3);

/// Runs [`fetch`] on the blocking pool, bounded by `request.timeout`.
///
/// Guarantees: at the timeout the fetch is stopped through `control` and this waits for the
/// blocking work to end (normally well under a second, at most `UNWIND_GRACE`), so when it
/// returns the fetch's locks and temporary files are gone and the next fetch of the same
/// GitRepository starts clean. Cancel early with [`FetchControl::stop`]. `permit` (a
/// concurrency slot) is held until the blocking work has really ended.
pub async fn fetch_async<P: Send + 'static>(
    storage: Storage,
    request: FetchRequest,
    control: Arc<FetchControl>,
    permit: P,
) -> Result<FetchOutcome, SourceError> {
    let flag = control.clone();
    let timeout = request.timeout;
    let mut task = tokio::task::spawn_blocking(move || {
        let result = fetch(&storage, &request, &flag);
        drop(permit);
        result
    });
    let joined = match tokio::time::timeout(timeout, &mut task).await {
        Ok(joined) => joined,
        Err(_) => {
            control.stop(Stop::Timeout(timeout));
            match tokio::time::timeout(UNWIND_GRACE, &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!(?timeout, "a timed-out fetch is still unwinding");
                    return Err(SourceError::Timeout(timeout));
                }
            }
        }
    };
    match joined {
        Ok(result) => result,
        Err(join) => Err(SourceError::Git(format!("fetch task failed: {join}"))),
    }
}

fn fetch_inner(
    storage: &Storage,
    request: &FetchRequest,
    guard: &Arc<Guard>,
    revision_out: &mut Option<String>,
) -> Result<FetchOutcome, SourceError> {
    let interrupt = guard.control().flag();
    let secrets = request.credentials.secrets();
    let git_error = |context: &str, e: gix::Error| classify(context, &e, &secrets);
    match request.url.scheme {
        Scheme::Ssh if !matches!(request.credentials.auth, Auth::Ssh { .. }) => {
            return Err(SourceError::Credentials {
                secret: "spec.secretRef".to_owned(),
                reason: "ssh:// needs a Secret with keys 'identity' and 'known_hosts' \
                         (host keys are always verified)"
                    .to_owned(),
            });
        }
        Scheme::Http | Scheme::Git if request.credentials.sends_credentials() => {
            return Err(SourceError::InsecureCredentials {
                scheme: if request.url.scheme == Scheme::Http {
                    "http://"
                } else {
                    "git://"
                },
            });
        }
        Scheme::File => return fetch_local(storage, request, interrupt, revision_out),
        _ => {}
    }
    if request.url.scheme != Scheme::Ssh && matches!(request.credentials.auth, Auth::Ssh { .. }) {
        return Err(SourceError::Credentials {
            secret: "spec.secretRef".to_owned(),
            reason: "an ssh identity can only be used with an ssh:// URL".to_owned(),
        });
    }

    let repo = open_store(storage, &request.namespace, &request.name)?;

    // Semver: list the tags first, pick one, then fetch it like a tag.
    let reference = match &request.reference {
        RefRequest::Semver { range, text } => {
            let tags = list_tags(&repo, request, guard)?;
            let tag = reference::pick_semver_tag(range, tags.iter().map(String::as_str))
                .ok_or_else(|| SourceError::RefNotFound {
                    what: format!("a tag matching semver range '{text}'"),
                })?;
            RefRequest::Tag(tag.to_owned())
        }
        other => other.clone(),
    };
    // A pinned commit needs no network to know it is unchanged.
    if let RefRequest::Commit { commit, branch } = &reference {
        let revision = reference::revision(branch.as_deref(), commit);
        if request.last_revision.as_deref() == Some(revision.as_str()) {
            return Ok(FetchOutcome::Unchanged { revision });
        }
        if let Some(still) = request.refused.as_ref().and_then(|r| r.still(&revision)) {
            return Err(still);
        }
    }
    let source = reference
        .remote_source()
        .ok_or_else(|| SourceError::Git("semver range was not resolved to a tag".to_owned()))?;

    let remote = repo
        .remote_at(request.url.url.as_str())
        .map_err(|e| git_error("remote url", e))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(
            [format!("+{source}:{FETCHED_REF}").as_str()],
            gix::remote::Direction::Fetch,
        )
        .map_err(|e| git_error("refspec", e))?;
    let connection = connect(&remote, request, &secrets, guard)?;
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| git_error("listing remote refs", e))?;

    let (label, commit) = resolve_mapping(prepare.ref_map(), &reference)?;
    let revision = reference::revision(label.as_deref(), &commit);
    if request.last_revision.as_deref() == Some(revision.as_str()) {
        // Dropping `prepare` ends the connection without asking for a pack.
        return Ok(FetchOutcome::Unchanged { revision });
    }
    if let Some(still) = request.refused.as_ref().and_then(|r| r.still(&revision)) {
        return Err(still);
    }
    *revision_out = Some(revision.clone());
    let depth = NonZeroU32::new(1).unwrap_or(NonZeroU32::MIN);
    prepare
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| {
            if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                SourceError::Interrupted
            } else {
                git_error("fetching the pack", e)
            }
        })?;
    let artifact_and_stats = store_commit(storage, request, &repo, commit, interrupt)?;
    Ok(FetchOutcome::Stored {
        revision,
        artifact: artifact_and_stats.0,
        stats: artifact_and_stats.1,
    })
}

/// Reads a local repository (file://, test reconcilers only) in-process: no transport, no
/// `git-upload-pack` child.
fn fetch_local(
    storage: &Storage,
    request: &FetchRequest,
    interrupt: &AtomicBool,
    revision_out: &mut Option<String>,
) -> Result<FetchOutcome, SourceError> {
    let path = request.url.url.trim_start_matches("file://");
    let git_error = |context: &str, e: gix::Error| classify(context, &e, &[]);
    let repo = gix::open_opts(path, gix::open::Options::isolated())
        .map_err(|e| git_error("opening the local repository", e))?;
    let find = |name: &str| -> Result<gix::ObjectId, SourceError> {
        let mut reference = repo
            .find_reference(name)
            .map_err(|_| SourceError::RefNotFound {
                what: format!("reference '{name}'"),
            })?;
        let id = reference
            .peel_to_id()
            .map_err(|e| git_error("peeling the reference", e))?;
        Ok(id.detach())
    };
    let (label, commit) = match &request.reference {
        RefRequest::Head => {
            let head = repo.head().map_err(|e| git_error("reading HEAD", e))?;
            let label = head
                .referent_name()
                .map(|n| n.shorten().to_string())
                .unwrap_or_else(|| "HEAD".to_owned());
            (Some(label), find("HEAD")?)
        }
        RefRequest::Branch(b) => (Some(b.clone()), find(&format!("refs/heads/{b}"))?),
        RefRequest::Tag(t) => (Some(t.clone()), find(&format!("refs/tags/{t}"))?),
        RefRequest::Name(n) => (Some(n.clone()), find(n)?),
        RefRequest::Commit { commit, branch } => (branch.clone(), *commit),
        RefRequest::Semver { range, text } => {
            let refs = repo
                .references()
                .map_err(|e| git_error("listing tags", e))?;
            let tags: Vec<String> = refs
                .tags()
                .map_err(|e| git_error("listing tags", e))?
                .filter_map(Result::ok)
                .map(|r| r.name().shorten().to_string())
                .collect();
            let tag = reference::pick_semver_tag(range, tags.iter().map(String::as_str))
                .ok_or_else(|| SourceError::RefNotFound {
                    what: format!("a tag matching semver range '{text}'"),
                })?;
            (Some(tag.to_owned()), find(&format!("refs/tags/{tag}"))?)
        }
    };
    let revision = reference::revision(label.as_deref(), &commit);
    if request.last_revision.as_deref() == Some(revision.as_str()) {
        return Ok(FetchOutcome::Unchanged { revision });
    }
    if let Some(still) = request.refused.as_ref().and_then(|r| r.still(&revision)) {
        return Err(still);
    }
    *revision_out = Some(revision.clone());
    let (artifact, stats) = store_commit(storage, request, &repo, commit, interrupt)?;
    Ok(FetchOutcome::Stored {
        revision,
        artifact,
        stats,
    })
}

/// Walks `commit`'s tree into a new artifact and stores it; GC afterwards.
fn store_commit(
    storage: &Storage,
    request: &FetchRequest,
    repo: &gix::Repository,
    commit: gix::ObjectId,
    interrupt: &AtomicBool,
) -> Result<(StoredArtifact, TreeStats), SourceError> {
    let git_error = |context: &str, e: gix::Error| classify(context, &e, &[]);
    let object = repo
        .find_object(commit)
        .map_err(|e| git_error("the fetched commit is missing", e))?;
    let commit_object = object
        .peel_to_commit()
        .map_err(|e| git_error("the fetched object is not a commit", e))?;
    let tree_id = commit_object
        .tree_id()
        .map_err(|e| git_error("reading the commit", e))?
        .detach();
    let mut rules = IgnoreRules::new(request.ignore.as_deref());
    let mut pending = storage.begin(&request.namespace, &request.name, request.limits.unpack())?;
    let stats = match write_tree(repo, tree_id, &mut rules, pending.writer(), interrupt) {
        Ok(stats) => stats,
        Err(e) => {
            pending.abort();
            return Err(e);
        }
    };
    let stored = pending.commit()?;
    storage.touch(&stored.path)?;
    storage.gc(
        &request.namespace,
        &request.name,
        request.keep_artifacts.max(1),
        Some(&stored.path),
    )?;
    Ok((stored, stats))
}

/// Opens (creating if needed) the bare object store of one GitRepository, isolated from any
/// git configuration of the machine and the environment.
fn open_store(
    storage: &Storage,
    namespace: &str,
    name: &str,
) -> Result<gix::Repository, SourceError> {
    let dir = storage.git_dir(namespace, name)?;
    let packs = std::fs::read_dir(dir.join("objects/pack"))
        .map(|read| {
            read.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count()
        })
        .unwrap_or(0);
    if packs > MAX_PACKS {
        std::fs::remove_dir_all(&dir).map_err(|e| {
            SourceError::Storage(format!(
                "cannot reset object store '{}': {e}",
                dir.display()
            ))
        })?;
    }
    let open = || gix::open_opts(&dir, gix::open::Options::isolated());
    let repo = match open() {
        Ok(repo) => repo,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| {
                SourceError::Storage(format!("cannot create '{}': {e}", dir.display()))
            })?;
            gix::ThreadSafeRepository::init_opts(
                &dir,
                gix::create::Kind::Bare,
                gix::create::Options::default(),
                gix::open::Options::isolated(),
            )
            .map_err(|e| SourceError::Storage(format!("cannot create object store: {e}")))?
            .to_thread_local()
        }
    };
    let mut repo = repo;
    // Blobs are read once each; a small cache keeps memory flat on big trees.
    repo.object_cache_size(Some(4 * 1024 * 1024));
    Ok(repo)
}

/// Opens a connection with our transport options and credentials, every response read through
/// `guard`: http(s):// with gix's curl client wrapped in [`GuardedHttp`], git:// over a TCP
/// stream of our own, ssh:// over the in-process transport of [`super::ssh`].
fn connect<'remote, 'repo>(
    remote: &'remote gix::Remote<'repo>,
    request: &FetchRequest,
    secrets: &[&str],
    guard: &Arc<Guard>,
) -> Result<
    gix::remote::Connection<
        'remote,
        'static,
        'repo,
        Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    >,
    SourceError,
> {
    if let Auth::Ssh {
        secret,
        identity,
        known_hosts,
        password,
    } = &request.credentials.auth
    {
        let target = SshTarget::parse(&request.url.url)?;
        let auth = SshAuth {
            secret,
            identity,
            password: password.as_deref(),
            known_hosts,
        };
        let transport = ssh::connect(
            &target,
            &request.url.url,
            &auth,
            guard.deadline(),
            guard.clone(),
        )?;
        return Ok(remote.to_connection_with_transport(transport));
    }
    let url = gix::url::parse(request.url.url.as_bytes().as_bstr()).map_err(|e| {
        SourceError::InvalidUrl {
            url: remote::redact_url(&request.url.url),
            reason: redact(&e.to_string(), secrets),
        }
    })?;
    let transport: Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send> =
        match request.url.scheme {
            Scheme::Https | Scheme::Http => Box::new(http::Transport::new_http(
                GuardedHttp::new(guard.clone()),
                url,
                Protocol::V2,
                false,
            )),
            Scheme::Git => Box::new(connect_daemon(&url, request, guard)?),
            Scheme::Ssh | Scheme::File => {
                return Err(SourceError::Unsupported(format!(
                    "no network transport for '{}'",
                    remote::redact_url(&request.url.url)
                )));
            }
        };
    let mut connection = remote.to_connection_with_transport(transport);
    if matches!(request.url.scheme, Scheme::Https | Scheme::Http) {
        connection.set_transport_options(Box::new(http_options(request, remote.repo().git_dir())?));
    }
    let auth = request.credentials.auth.clone();
    connection.set_credentials(move |action| match action {
        gix::credentials::helper::Action::Get(context) => match &auth {
            Auth::Basic { username, password } => Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: username.clone(),
                    password: password.clone(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            })),
            // Bearer tokens travel as a header; nothing else to offer.
            _ => Ok(None),
        },
        _ => Ok(None),
    });
    Ok(connection)
}

/// A git:// connection over a TCP stream read through `guard`.
fn connect_daemon(
    url: &gix::Url,
    request: &FetchRequest,
    guard: &Arc<Guard>,
) -> Result<git::blocking_io::Connection<GuardedReader, std::net::TcpStream>, SourceError> {
    use std::net::ToSocketAddrs;
    let host = url
        .host()
        .ok_or_else(|| SourceError::Git("git:// URL without a host".to_owned()))?;
    let port = url.port.unwrap_or(9418);
    let shown = remote::redact_url(&request.url.url);
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| SourceError::Git(format!("cannot resolve '{shown}': {e}")))?
        .next()
        .ok_or_else(|| SourceError::Git(format!("cannot resolve '{shown}'")))?;
    let connect_timeout = request.timeout.min(Duration::from_secs(30));
    let stream = std::net::TcpStream::connect_timeout(&address, connect_timeout)
        .map_err(|e| SourceError::Git(format!("cannot connect to '{shown}': {e}")))?;
    let _ = stream.set_nodelay(true);
    let read = stream
        .try_clone()
        .map_err(|e| SourceError::Git(format!("connection to '{shown}': {e}")))?;
    Ok(git::blocking_io::Connection::new(
        GuardedReader::new(read, guard.clone(), true),
        stream,
        Protocol::V2,
        url.path.clone(),
        Some((host.to_owned(), url.port)),
        git::ConnectMode::Daemon,
        false,
    ))
}

/// The curl options of one fetch: CA from the Secret, bearer header, timeouts, no redirects
/// (a redirect to another host must not receive the credentials).
fn http_options(
    request: &FetchRequest,
    repo_dir: &std::path::Path,
) -> Result<gix::protocol::transport::client::blocking_io::http::Options, SourceError> {
    use gix::protocol::transport::client::blocking_io::http;
    let mut options = http::Options {
        follow_redirects: http::options::FollowRedirects::None,
        connect_timeout: Some(request.timeout.min(Duration::from_secs(30))),
        // A backstop for a stalled server that never lets curl's own message race the fetch's
        // deadline, which reports the timeout: less than 1 byte/s for longer than the timeout.
        low_speed_limit_bytes_per_second: 1,
        low_speed_time_seconds: request.timeout.as_secs().saturating_add(2),
        user_agent: Some(concat!("gitops-reconciler/", env!("CARGO_PKG_VERSION")).to_owned()),
        ..Default::default()
    };
    if let Auth::Bearer { token } = &request.credentials.auth {
        options
            .extra_headers
            .push(format!("Authorization: Bearer {token}"));
    }
    if let Some(ca) = &request.credentials.ca_pem {
        // curl reads the CA from a file: keep it in the object store (it is public data).
        let path = repo_dir.join("gitops-ca.pem");
        std::fs::write(&path, ca)
            .map_err(|e| SourceError::Storage(format!("cannot write the CA bundle: {e}")))?;
        options.ssl_ca_info = Some(path);
    }
    Ok(options)
}

/// Lists the remote's tags (short names) with one ls-refs, fetching nothing.
fn list_tags(
    repo: &gix::Repository,
    request: &FetchRequest,
    guard: &Arc<Guard>,
) -> Result<Vec<String>, SourceError> {
    let secrets = request.credentials.secrets();
    let remote = repo
        .remote_at(request.url.url.as_str())
        .map_err(|e| classify("remote url", &e, &secrets))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(["refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
        .map_err(|e| classify("refspec", &e, &secrets))?;
    let connection = connect(&remote, request, &secrets, guard)?;
    let (ref_map, _handshake) = connection
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| classify("listing remote tags", &e, &secrets))?;
    let mut tags = Vec::new();
    for r in &ref_map.remote_refs {
        let (name, _, _) = r.unpack();
        if let Some(short) = name.strip_prefix(b"refs/tags/")
            && let Ok(short) = std::str::from_utf8(short)
            && !short.ends_with("^{}")
        {
            tags.push(short.to_owned());
        }
    }
    Ok(tags)
}

/// Finds the commit the followed ref points to in the ref map, peeling annotated tags.
fn resolve_mapping(
    ref_map: &gix::remote::fetch::RefMap,
    reference: &RefRequest,
) -> Result<(Option<String>, gix::ObjectId), SourceError> {
    let mapping = ref_map
        .mappings
        .first()
        .ok_or_else(|| SourceError::RefNotFound {
            what: reference.describe(),
        })?;
    let commit = match &mapping.remote {
        Source::ObjectId(id) => *id,
        Source::Ref(r) => match r {
            Ref::Peeled { object, .. } => *object,
            Ref::Direct { object, .. } => *object,
            Ref::Symbolic { object, .. } => *object,
            Ref::Unborn { .. } => {
                return Err(SourceError::RefNotFound {
                    what: format!(
                        "{} (the remote branch has no commits)",
                        reference.describe()
                    ),
                });
            }
        },
    };
    let label = match reference {
        RefRequest::Head => Some(match &mapping.remote {
            Source::Ref(Ref::Symbolic { target, .. }) => head_label(target),
            _ => "HEAD".to_owned(),
        }),
        RefRequest::Branch(b) => Some(b.clone()),
        RefRequest::Tag(t) => Some(t.clone()),
        RefRequest::Name(n) => Some(n.clone()),
        RefRequest::Commit { branch, .. } => branch.clone(),
        RefRequest::Semver { .. } => None,
    };
    Ok((label, commit))
}

/// The branch name HEAD points to, if it is a sane branch name (it comes from the server and
/// ends up in status).
fn head_label(target: &BString) -> String {
    let short = target
        .strip_prefix(b"refs/heads/")
        .and_then(|s| std::str::from_utf8(s).ok());
    match short {
        Some(short)
            if !short.is_empty()
                && short.len() <= 250
                && !short.starts_with('-')
                && short
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"\\:~^?*[".contains(&b)) =>
        {
            short.to_owned()
        }
        _ => "HEAD".to_owned(),
    }
}

/// Turns a gix error into a [`SourceError`]: the whole chain of messages, redacted, and
/// AuthenticationFailed when the server refused (or required) credentials.
fn classify(context: &str, e: &gix::Error, secrets: &[&str]) -> SourceError {
    let mut messages: Vec<String> = Vec::new();
    for err in e.iter_errors() {
        let text = err.to_string();
        if !text.is_empty() && !messages.iter().any(|m| m.contains(&text)) {
            messages.push(text);
        }
    }
    if messages.is_empty() {
        messages.push(e.to_string());
    }
    let text = redact(&format!("{context}: {}", messages.join(": ")), secrets);
    let permission_denied = e.iter_errors().any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if e.classify().is_unauthenticated()
        || permission_denied
        || text.contains("were not accepted by the remote")
    {
        SourceError::AuthenticationFailed(text)
    } else {
        SourceError::Git(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_label_accepts_only_sane_branch_names() {
        assert_eq!(head_label(&"refs/heads/main".into()), "main");
        assert_eq!(head_label(&"refs/heads/feature/x".into()), "feature/x");
        assert_eq!(head_label(&"refs/heads/-x".into()), "HEAD");
        assert_eq!(head_label(&"refs/heads/a\u{1b}[31m".into()), "HEAD");
        assert_eq!(head_label(&"refs/tags/v1".into()), "HEAD");
    }
}
