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
//! Caveats: the whole fetch is bounded by `timeout` through the interrupt flag (checked while
//! receiving the pack and while walking the tree) plus curl's connect timeout and low-speed
//! limit; a git:// server that stalls during the handshake holds the (blocking) thread until
//! the TCP connection fails, but the caller's timeout has already reported the failure.

use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::bstr::BString;
use gix::protocol::handshake::Ref;
use gix::remote::fetch::refmap::Source;

use super::SourceError;
use super::artifact::UnpackLimits;
use super::credentials::{Auth, Credentials};
use super::reference::{self, FETCHED_REF, RefRequest};
use super::remote::{RemoteUrl, Scheme, redact};
use super::ssh::{self, SshAuth, SshTarget};
use super::storage::{Storage, StoredArtifact};
use super::tree::{IgnoreRules, TreeStats, write_tree};

/// Everything one fetch needs.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub namespace: String,
    pub name: String,
    pub url: RemoteUrl,
    pub reference: RefRequest,
    pub credentials: Credentials,
    /// `spec.ignore`.
    pub ignore: Option<String>,
    /// The revision of the artifact in storage; when the remote still has it, nothing is fetched.
    pub last_revision: Option<String>,
    pub timeout: Duration,
    pub limits: UnpackLimits,
    /// Artifacts to keep after storing a new one.
    pub keep_artifacts: usize,
}

/// What a fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The remote still points at `revision`: nothing was downloaded or written.
    Unchanged { revision: String },
    /// A new artifact was stored.
    Stored {
        revision: String,
        artifact: StoredArtifact,
        stats: TreeStats,
    },
}

impl FetchOutcome {
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
/// thread; set `interrupt` to cancel (the fetch then returns [`SourceError::Cancelled`]).
pub fn fetch(
    storage: &Storage,
    request: &FetchRequest,
    interrupt: &AtomicBool,
) -> Result<FetchOutcome, SourceError> {
    let secrets = request.credentials.secrets();
    let deadline = Instant::now() + request.timeout;
    let result = fetch_inner(storage, request, interrupt, deadline);
    // Defence in depth: even our own messages go through redaction.
    result.map_err(|e| match e {
        SourceError::Git(text) => SourceError::Git(redact(&text, &secrets)),
        SourceError::AuthenticationFailed(text) => {
            SourceError::AuthenticationFailed(redact(&text, &secrets))
        }
        SourceError::Timeout(_) => SourceError::Timeout(request.timeout),
        other => other,
    })
}

/// Runs [`fetch`] on the blocking pool, bounded by `request.timeout`.
///
/// Guarantees: returns within the timeout (plus scheduling); on timeout the blocking fetch is
/// told to stop through its interrupt flag and its partial artifact is discarded by the fetch
/// itself. `permit` (a concurrency slot) is held until the blocking work has really ended, so a
/// stuck fetch keeps occupying its slot instead of letting fetches pile up.
pub async fn fetch_async<P: Send + 'static>(
    storage: Storage,
    request: FetchRequest,
    permit: P,
) -> Result<FetchOutcome, SourceError> {
    let interrupt = std::sync::Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let timeout = request.timeout;
    let task = tokio::task::spawn_blocking(move || {
        let result = fetch(&storage, &request, &flag);
        drop(permit);
        result
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(SourceError::Git(format!("fetch task failed: {join}"))),
        Err(_) => {
            interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(SourceError::Timeout(timeout))
        }
    }
}

fn fetch_inner(
    storage: &Storage,
    request: &FetchRequest,
    interrupt: &AtomicBool,
    deadline: Instant,
) -> Result<FetchOutcome, SourceError> {
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
        Scheme::File => return fetch_local(storage, request, interrupt),
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
            let tags = list_tags(&repo, request, deadline)?;
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
    let connection = connect(&remote, request, &secrets, deadline)?;
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| git_error("listing remote refs", e))?;

    let (label, commit) = resolve_mapping(prepare.ref_map(), &reference)?;
    let revision = reference::revision(label.as_deref(), &commit);
    if request.last_revision.as_deref() == Some(revision.as_str()) {
        // Dropping `prepare` ends the connection without asking for a pack.
        return Ok(FetchOutcome::Unchanged { revision });
    }
    let depth = NonZeroU32::new(1).unwrap_or(NonZeroU32::MIN);
    prepare
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| {
            if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                SourceError::Cancelled
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
    let mut pending = storage.begin(&request.namespace, &request.name, request.limits.clone())?;
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

/// Opens a connection with our transport options and credentials; for ssh:// over the
/// in-process transport of [`super::ssh`], which must be done by `deadline`.
fn connect<'remote, 'repo>(
    remote: &'remote gix::Remote<'repo>,
    request: &FetchRequest,
    secrets: &[&str],
    deadline: Instant,
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
        let transport = ssh::connect(&target, &request.url.url, &auth, deadline)?;
        return Ok(remote.to_connection_with_transport(transport));
    }
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| classify("connecting", &e, secrets))?;
    let mut connection = connection;
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
        // Abort when less than 1 byte/s arrives over the whole timeout: a stalled server.
        low_speed_limit_bytes_per_second: 1,
        low_speed_time_seconds: request.timeout.as_secs().max(1),
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
    deadline: Instant,
) -> Result<Vec<String>, SourceError> {
    let secrets = request.credentials.secrets();
    let remote = repo
        .remote_at(request.url.url.as_str())
        .map_err(|e| classify("remote url", &e, &secrets))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(["refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
        .map_err(|e| classify("refspec", &e, &secrets))?;
    let connection = connect(&remote, request, &secrets, deadline)?;
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
