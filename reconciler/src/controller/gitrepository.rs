//! The GitRepository controller: schedules fetches, writes status and events.
//!
//! Expected flow of one reconcile: decide whether a fetch is due (new generation, a new
//! `reconcile-requested-at` annotation, the interval (or the failure backoff) elapsed, or the
//! artifact missing from storage) → read the Secret → fetch on the blocking pool under a
//! concurrency slot and the spec's timeout → status (conditions, artifact, observedGeneration,
//! lastHandledReconcileAt) with server-side apply → an Event for a new revision or a failure →
//! requeue at the interval with jitter, or after an exponential backoff on failure.
//!
//! Guarantees: a failed fetch never removes `status.artifact` nor the stored file (the last good
//! artifact stays served); a watch event caused by our own status write does not cause a second
//! fetch (the in-memory schedule says it is not due); status is only written when it changed,
//! so an unchanged poll costs one ls-refs and no write. A fetch that will change what the
//! object shows (first artifact, new generation, requested reconcile; not a backoff retry) first sets
//! Reconciling=True/Progressing (and Ready=Unknown unless Ready), so watchers see it running.
//!
//! Cancellation: a running fetch is stopped (within [`crate::source::transfer::POLL`] plus
//! unwinding) when its GitRepository's spec changes (a new generation seen by the watch), when
//! it is deleted, and at shutdown; the reconcile then ends with the cause in the status.
//!
//! Storage: a deletion seen by the watch cancels the fetch and removes the cache and artifacts
//! at once; a re-list of the watch (and a periodic sweep) removes what belongs to objects
//! deleted while the watch was down. After each stored artifact the storage cap evicts the
//! least recently used git caches. `gitops_source_storage_bytes` and
//! `gitops_source_fetch_aborted_total{cause}` are kept up to date.
//!
//! Refusals: a revision refused for its content (a size limit) is remembered with the limits
//! it was refused under; while the remote still points at it, later polls only list refs and
//! report the same refusal (no download) until the remote revision, the spec or the limits
//! change. Failures are retried with an exponential backoff (2 s doubling, at most the
//! interval and 5 minutes).
//!
//! Caveats: the schedule and the refusals live in memory; after a restart every GitRepository
//! is polled once (an ls-refs each; no pack when the stored artifact still matches; a refused
//! revision is downloaded once more, up to its limit).

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::watch::logged;

use super::metrics::Metrics;
use crate::api::conditions::{self, meta, reasons, status, types};
use crate::api::{Artifact, GitRepository, GitRepositoryStatus, duration};
use crate::source::credentials::Credentials;
use crate::source::git::{Refused, fetch_async};
use crate::source::reference::RefRequest;
use crate::source::remote;
use crate::source::transfer::Stop;
use crate::source::{
    CancelCause, FetchControl, FetchOutcome, FetchRequest, SourceConfig, SourceError, SourceLimits,
    Storage,
};

/// Why the controller itself (not a fetch) failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("storage: {0}")]
    Storage(String),
    #[error("GitRepository has no namespace")]
    NoNamespace,
}

/// What the controller remembers about one GitRepository between reconciles.
#[derive(Clone, Debug)]
struct Schedule {
    generation: Option<i64>,
    last_attempt: Instant,
    /// Consecutive failed fetches (for the backoff).
    failures: u32,
    /// The revision last refused for its content, and the limits it was refused under.
    refused: Option<(Refused, SourceLimits)>,
}

/// A fetch in flight: the generation it fetches and its stop switch.
struct Running {
    generation: Option<i64>,
    control: Arc<FetchControl>,
}

type Key = (String, String);

/// Shared state of the controller.
pub struct Context {
    client: Client,
    config: SourceConfig,
    storage: Storage,
    fetch_slots: Arc<Semaphore>,
    recorder: Recorder,
    schedule: Mutex<HashMap<Key, Schedule>>,
    running: Mutex<HashMap<Key, Running>>,
    /// The GitRepositories the watch knew when it started to list again: the objects among
    /// them that the new list lacks were deleted while the watch was down.
    known_before_relist: Mutex<Vec<Key>>,
    metrics: Arc<Metrics>,
}

impl Context {
    /// Stops the fetch of `key` in flight, if any (and, for a spec change, only when it
    /// fetches another generation).
    fn cancel(&self, key: &Key, cause: CancelCause, generation: Option<i64>) {
        if let Ok(running) = self.running.lock()
            && let Some(run) = running.get(key)
            && (cause != CancelCause::SpecChanged || run.generation != generation)
        {
            tracing::info!(namespace = %key.0, name = %key.1, %cause, "cancelling the fetch in flight");
            run.control.stop(Stop::Cancelled(cause));
        }
    }

    fn cancel_all(&self, cause: CancelCause) {
        if let Ok(running) = self.running.lock() {
            for run in running.values() {
                run.control.stop(Stop::Cancelled(cause));
            }
        }
    }

    /// Recomputes the storage gauge (walks the storage directory: call off the runtime).
    fn record_storage(&self) {
        let bytes = self.storage.usage();
        self.metrics
            .source_storage_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Watch events the controller acts on directly, besides reconciling.
fn on_event(
    ctx: &Arc<Context>,
    event: &watcher::Event<GitRepository>,
    store: &reflector::Store<GitRepository>,
) {
    match event {
        watcher::Event::Apply(repo) | watcher::Event::InitApply(repo) => {
            let key = (repo.namespace().unwrap_or_default(), repo.name_any());
            ctx.cancel(&key, CancelCause::SpecChanged, repo.meta().generation);
        }
        watcher::Event::Delete(repo) => {
            let key = (repo.namespace().unwrap_or_default(), repo.name_any());
            ctx.cancel(&key, CancelCause::Deleted, None);
            if let Ok(mut schedule) = ctx.schedule.lock() {
                schedule.remove(&key);
            }
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || {
                let (namespace, name) = key;
                // Waits for the cancelled fetch to release its claim.
                match ctx.storage.remove_all(&namespace, &name) {
                    Ok(()) => {
                        tracing::info!(%namespace, %name, "removed the storage of a deleted GitRepository")
                    }
                    Err(e) => {
                        tracing::warn!(%namespace, %name, error = %e, "cannot remove the storage of a deleted GitRepository")
                    }
                }
                ctx.record_storage();
            });
        }
        // Only objects this watch knew and the new list lacks are removed here: storage of a
        // GitRepository the watch never saw (another shard's, or one deleted while the
        // process was down) is left to the periodic sweep.
        watcher::Event::Init => {
            if let Ok(mut known) = ctx.known_before_relist.lock() {
                *known = live_keys(store);
            }
        }
        watcher::Event::InitDone => {
            let known = ctx
                .known_before_relist
                .lock()
                .map(|mut known| std::mem::take(&mut *known))
                .unwrap_or_default();
            let live = live_keys(store);
            let gone: Vec<Key> = known.into_iter().filter(|k| !live.contains(k)).collect();
            if gone.is_empty() {
                return;
            }
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || {
                for (namespace, name) in gone {
                    if let Err(e) = ctx.storage.remove_all(&namespace, &name) {
                        tracing::warn!(%namespace, %name, error = %e, "cannot remove the storage of a deleted GitRepository");
                    }
                }
                ctx.record_storage();
            });
        }
    }
}

fn live_keys(store: &reflector::Store<GitRepository>) -> Vec<Key> {
    store
        .state()
        .iter()
        .map(|g| (g.namespace().unwrap_or_default(), g.name_any()))
        .collect()
}

/// Runs the GitRepository controller until `shutdown` completes, with metrics of its own.
///
/// `label_selector` restricts the watch (sharding with `--watch-label-selector`).
pub async fn run(
    client: Client,
    config: SourceConfig,
    label_selector: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), ControllerError> {
    let metrics = Arc::new(Metrics::default());
    run_with_metrics(client, config, label_selector, metrics, shutdown).await
}

/// [`run`], recording into the process's `metrics`.
pub async fn run_with_metrics(
    client: Client,
    config: SourceConfig,
    label_selector: Option<String>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), ControllerError> {
    let storage =
        Storage::new(&config.storage_path).map_err(|e| ControllerError::Storage(e.to_string()))?;
    let reporter = Reporter {
        controller: meta::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        fetch_slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
        client: client.clone(),
        config,
        storage,
        schedule: Mutex::new(HashMap::new()),
        running: Mutex::new(HashMap::new()),
        known_before_relist: Mutex::new(Vec::new()),
        metrics,
    });
    let api: Api<GitRepository> = Api::all(client);
    let mut watch = watcher::Config::default().any_semantic();
    if let Some(selector) = label_selector {
        watch = watch.labels(&selector);
    }
    let resource = <GitRepository as kube::CustomResourceExt>::crd_name();
    let (store, writer) = reflector::store();
    let event_context = context.clone();
    let event_store = store.clone();
    let triggers = logged(watcher(api, watch), resource)
        .backoff(crate::backoff::backoff())
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                on_event(&event_context, event, &event_store);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(triggers, store.clone())
        .trigger_backoff(crate::backoff::trigger_backoff());
    let synced = store.clone();
    let sweep_context = context.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        tick.tick().await;
        loop {
            tick.tick().await;
            if store.wait_until_ready().now_or_never().is_none() {
                continue;
            }
            let live = live_keys(&store);
            let ctx = sweep_context.clone();
            let _ = tokio::task::spawn_blocking(move || {
                sweep_orphans(&ctx.storage, &live);
                ctx.record_storage();
            })
            .await;
        }
    });
    let shutdown = shutdown.shared();
    let cancel_context = context.clone();
    let stop_fetches = shutdown.clone();
    let canceller = tokio::spawn(async move {
        stop_fetches.await;
        cancel_context.cancel_all(CancelCause::Shutdown);
    });
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "gitrepository reconcile error");
            }
        });
    super::watch::run_until_shutdown(controller, synced, shutdown, resource).await;
    sweeper.abort();
    canceller.abort();
    Ok(())
}

/// Removes stored artifacts and object stores of GitRepositories that no longer exist.
fn sweep_orphans(storage: &Storage, live: &[Key]) {
    for (tree, suffix) in [("gitrepository", ""), ("git", ".git")] {
        let Ok(namespaces) = std::fs::read_dir(storage.root().join(tree)) else {
            continue;
        };
        for ns in namespaces.flatten() {
            let namespace = ns.file_name().to_string_lossy().into_owned();
            let Ok(names) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for entry in names.flatten() {
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let Some(name) = file_name.strip_suffix(suffix) else {
                    continue;
                };
                if !live.iter().any(|(n, m)| *n == namespace && m == name)
                    && let Err(e) = storage.remove_all(&namespace, name)
                {
                    tracing::warn!(%namespace, %name, error = %e, "cannot remove orphaned storage");
                }
            }
        }
    }
}

fn error_policy(_repo: Arc<GitRepository>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "gitrepository reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// `base` ± 10 %, so that many sources with the same interval do not poll in lockstep.
fn jitter(base: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let spread = base.as_millis() as u64 / 10;
    if spread == 0 {
        return base;
    }
    let offset = random % (2 * spread + 1);
    base + Duration::from_millis(offset) - Duration::from_millis(spread)
}

/// Delay after `failures` consecutive failures: 2 s doubling, at most the interval and at most
/// 5 minutes.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let exp = Duration::from_secs(2).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    exp.min(interval.max(Duration::from_secs(2)))
        .min(Duration::from_secs(300))
}

async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = repo.namespace().ok_or(ControllerError::NoNamespace)?;
    let name = repo.name_any();
    let span = tracing::info_span!("reconcile", kind = "GitRepository", %namespace, %name);
    reconcile_in_span(repo, ctx, namespace, name)
        .instrument(span)
        .await
}

async fn reconcile_in_span(
    repo: Arc<GitRepository>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Action, ControllerError> {
    if repo.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if repo.spec.suspend == Some(true) {
        tracing::debug!("suspended");
        return Ok(Action::await_change());
    }
    let generation = repo.meta().generation;
    let old_status = repo.status.clone().unwrap_or_default();
    let requested_at = repo
        .annotations()
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();

    let interval = match duration::parse(&repo.spec.interval) {
        Ok(interval) => interval,
        Err(e) => {
            let err = SourceError::InvalidRef {
                reason: format!("spec.interval: {e}"),
            };
            return finish_failure(
                &repo,
                &ctx,
                old_status,
                err,
                generation,
                requested_at,
                Duration::from_secs(300),
            )
            .await;
        }
    };
    let timeout = match repo.spec.timeout.as_deref().map(duration::parse) {
        None => ctx.config.default_timeout,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            let err = SourceError::InvalidRef {
                reason: format!("spec.timeout: {e}"),
            };
            return finish_failure(
                &repo,
                &ctx,
                old_status,
                err,
                generation,
                requested_at,
                interval,
            )
            .await;
        }
    };

    // Is a fetch due?
    let key = (namespace.clone(), name.clone());
    let artifact_present = old_status
        .artifact
        .as_ref()
        .is_some_and(|a| ctx.storage.exists(&a.path));
    let remembered = ctx.schedule.lock().ok().and_then(|s| s.get(&key).cloned());
    if let Some(schedule) = &remembered {
        let wait = if schedule.failures > 0 {
            backoff(schedule.failures, interval)
        } else {
            interval
        };
        let elapsed = schedule.last_attempt.elapsed();
        let spec_unchanged =
            schedule.generation == generation && old_status.observed_generation == generation;
        let request_handled = requested_at == old_status.last_handled_reconcile_at;
        let artifact_ok = artifact_present || schedule.failures > 0;
        if spec_unchanged && request_handled && artifact_ok && elapsed < wait {
            return Ok(Action::requeue(wait - elapsed));
        }
    }

    // A fetch that changes what the object shows (first artifact, new spec, requested
    // reconcile) is announced before it starts, so watchers see it in progress; a periodic
    // poll or a retry after a failure writes nothing until it has news (Ready keeps the
    // failure while the backoff retries run).
    let failures = remembered.as_ref().map(|s| s.failures).unwrap_or(0);
    let mut old_status = old_status;
    let progressing = (!artifact_present && failures == 0)
        || old_status.observed_generation != generation
        || requested_at != old_status.last_handled_reconcile_at;
    if progressing {
        let mut marked = old_status.clone();
        mark_progressing(&mut marked, &repo.spec.url, generation);
        write_status(&repo, &ctx, &old_status, &marked).await?;
        old_status = marked;
    }

    let started = Instant::now();
    let limits = ctx
        .config
        .limits
        .tightened(|limit| repo.spec.limits.as_ref().and_then(|l| l.get(limit)));
    // A refusal holds for the spec and the limits it was made under.
    let refused = remembered
        .as_ref()
        .filter(|s| s.generation == generation)
        .and_then(|s| s.refused.clone())
        .filter(|(_, under)| *under == limits);
    let result = fetch_once(
        &repo,
        &ctx,
        &key,
        &old_status,
        artifact_present,
        timeout,
        limits.clone(),
        refused.as_ref().map(|(r, _)| r.clone()),
    )
    .await;
    let mut schedule = Schedule {
        generation,
        last_attempt: started,
        failures: 0,
        refused: None,
    };
    if let Err(err) = &result {
        if let Some(revision) = err.refused_revision() {
            schedule.refused = Some((
                Refused {
                    revision: revision.to_owned(),
                    cause: err.to_string(),
                },
                limits,
            ));
        } else if matches!(err, SourceError::StillRefused { .. }) {
            schedule.refused = refused;
        }
        let cause = match err {
            SourceError::LimitExceeded { exceeded, .. } => Some(exceeded.limit.label()),
            SourceError::Timeout(_) => Some("timeout"),
            SourceError::Cancelled(_) => Some("cancelled"),
            _ => None,
        };
        if let Some(cause) = cause {
            ctx.metrics.count_aborted_fetch(cause);
        }
    }
    match result {
        Ok(outcome) => {
            if let Ok(mut s) = ctx.schedule.lock() {
                s.insert(key, schedule);
            }
            finish_success(&repo, &ctx, old_status, outcome, generation, requested_at).await?;
            Ok(Action::requeue(jitter(interval)))
        }
        Err(SourceError::Cancelled(cause)) => {
            // The next reconcile (new spec), nothing (deleted) or the next process (shutdown)
            // takes over: the status keeps what it said.
            tracing::info!(%cause, "fetch cancelled");
            schedule.failures = failures;
            if cause != CancelCause::Deleted
                && let Ok(mut s) = ctx.schedule.lock()
            {
                s.insert(key, schedule);
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Err(err) => {
            schedule.failures = failures.saturating_add(1);
            let retry = backoff(schedule.failures, interval);
            if let Ok(mut s) = ctx.schedule.lock() {
                s.insert(key, schedule);
            }
            finish_failure(
                &repo,
                &ctx,
                old_status,
                err,
                generation,
                requested_at,
                retry,
            )
            .await
        }
    }
}

/// Reconciling=True (Progressing) for a fetch about to start; Ready=Unknown unless the object
/// is Ready already (its artifact stays served while the fetch runs).
fn mark_progressing(repo_status: &mut GitRepositoryStatus, url: &str, generation: Option<i64>) {
    let message = format!("fetching from '{}'", remote::redact_url(url));
    let c = &mut repo_status.conditions;
    conditions::set(
        c,
        types::RECONCILING,
        status::TRUE,
        reasons::PROGRESSING,
        &message,
        generation,
    );
    if !conditions::is_ready(c) {
        conditions::set(
            c,
            types::READY,
            status::UNKNOWN,
            reasons::PROGRESSING,
            &message,
            generation,
        );
    }
}

#[allow(clippy::too_many_arguments)] // One call site; the reconcile's state travels in.
async fn fetch_once(
    repo: &GitRepository,
    ctx: &Arc<Context>,
    key: &Key,
    old_status: &GitRepositoryStatus,
    artifact_present: bool,
    timeout: Duration,
    limits: SourceLimits,
    refused: Option<Refused>,
) -> Result<FetchOutcome, SourceError> {
    let (namespace, name) = (key.0.as_str(), key.1.as_str());
    let spec = &repo.spec;
    let url = remote::validate(
        &spec.url,
        spec.insecure.unwrap_or(false),
        ctx.config.allow_file_urls,
    )?;
    if url.scheme == remote::Scheme::Ssh && spec.secret_ref.is_none() {
        // Only a spec change can fix this: host keys are always verified.
        return Err(SourceError::Unsupported(
            "ssh:// URLs need spec.secretRef: a Secret with keys 'identity' (private key) and \
             'known_hosts' (the server's host key)"
                .to_owned(),
        ));
    }
    let reference = RefRequest::from_spec(spec.reference.as_ref())?;
    let credentials = match &spec.secret_ref {
        None => Credentials::default(),
        Some(secret_ref) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let secret = secrets
                .get_opt(&secret_ref.name)
                .await
                .map_err(|e| SourceError::Credentials {
                    secret: secret_ref.name.clone(),
                    reason: format!("cannot read the Secret: {e}"),
                })?
                .ok_or_else(|| SourceError::Credentials {
                    secret: secret_ref.name.clone(),
                    reason: "Secret not found".to_owned(),
                })?;
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            Credentials::from_secret_data(&secret_ref.name, &data)?
        }
    };
    // Skip the download only when the stored artifact was built from this very spec.
    let last_revision = match &old_status.artifact {
        Some(artifact)
            if artifact_present && old_status.observed_generation == repo.meta().generation =>
        {
            Some(artifact.revision.clone())
        }
        _ => None,
    };
    let request = FetchRequest {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        url,
        reference,
        credentials,
        ignore: spec.ignore.clone(),
        last_revision,
        timeout,
        limits,
        refused,
        keep_artifacts: ctx.config.keep_artifacts,
    };
    let permit = ctx
        .fetch_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| SourceError::Cancelled(CancelCause::Shutdown))?;
    let control = FetchControl::new();
    if let Ok(mut running) = ctx.running.lock() {
        running.insert(
            key.clone(),
            Running {
                generation: repo.meta().generation,
                control: control.clone(),
            },
        );
    }
    let result = fetch_async(ctx.storage.clone(), request, control, permit).await;
    if let Ok(mut running) = ctx.running.lock() {
        running.remove(key);
    }
    if matches!(result, Ok(FetchOutcome::Stored { .. })) {
        let storage_ctx = ctx.clone();
        let cap = ctx.config.max_storage_bytes;
        let _ = tokio::task::spawn_blocking(move || {
            let outcome = storage_ctx.storage.enforce_cap(cap);
            for evicted in &outcome.evicted {
                tracing::info!(cache = %evicted, "evicted a git cache to stay under the storage cap");
            }
            storage_ctx
                .metrics
                .source_storage_bytes
                .set(i64::try_from(outcome.bytes).unwrap_or(i64::MAX));
        })
        .await;
    }
    result
}

async fn finish_success(
    repo: &GitRepository,
    ctx: &Context,
    old_status: GitRepositoryStatus,
    outcome: FetchOutcome,
    generation: Option<i64>,
    requested_at: Option<String>,
) -> Result<(), ControllerError> {
    let mut new_status = old_status.clone();
    let revision = outcome.revision().to_owned();
    let mut event = None;
    if let FetchOutcome::Stored { artifact, .. } = &outcome {
        new_status.artifact = Some(Artifact {
            revision: revision.clone(),
            digest: artifact.packed.digest.clone(),
            size: i64::try_from(artifact.packed.size).unwrap_or(i64::MAX),
            url: ctx.config.artifact_url(&artifact.path),
            path: artifact.path.clone(),
            last_update_time: jiff::Timestamp::now().to_string(),
        });
        let changed_revision = old_status.artifact.as_ref().map(|a| &a.revision) != Some(&revision);
        if changed_revision {
            event = Some(Event {
                type_: EventType::Normal,
                reason: "NewArtifact".to_owned(),
                note: Some(format!("stored artifact for revision '{revision}'")),
                action: "Fetch".to_owned(),
                secondary: None,
            });
        }
    }
    let mut message = format!("stored artifact for revision '{revision}'");
    match &outcome {
        FetchOutcome::Stored { stats, .. } => {
            if let Some(note) = stats.dropped_note() {
                message.push_str(&format!("; {note}"));
            }
        }
        // Unchanged: what the stored artifact's message said still holds.
        FetchOutcome::Unchanged { .. } => {
            if let Some(ready) = conditions::get(&old_status.conditions, types::READY)
                && ready.status == status::TRUE
                && ready.message.starts_with(&message)
            {
                message = ready.message.clone();
            }
        }
    }
    let c = &mut new_status.conditions;
    conditions::set(
        c,
        types::READY,
        status::TRUE,
        reasons::SUCCEEDED,
        &message,
        generation,
    );
    conditions::set(
        c,
        types::ARTIFACT_IN_STORAGE,
        status::TRUE,
        reasons::SUCCEEDED,
        &message,
        generation,
    );
    conditions::remove(c, types::FETCH_FAILED);
    conditions::remove(c, types::RECONCILING);
    conditions::remove(c, types::STALLED);
    new_status.observed_generation = generation;
    new_status.last_handled_reconcile_at = requested_at;
    write_status(repo, ctx, &old_status, &new_status).await?;
    if let Some(event) = event {
        tracing::info!(namespace = ?repo.namespace(), name = %repo.name_any(), %revision, "stored new artifact");
        publish(ctx, repo, event).await;
    }
    Ok(())
}

async fn finish_failure(
    repo: &GitRepository,
    ctx: &Context,
    old_status: GitRepositoryStatus,
    err: SourceError,
    generation: Option<i64>,
    requested_at: Option<String>,
    retry: Duration,
) -> Result<Action, ControllerError> {
    let reason = err.reason();
    let message = format!("{err}");
    tracing::warn!(namespace = ?repo.namespace(), name = %repo.name_any(), %reason, error = %message, "fetch failed");
    let mut new_status = old_status.clone();
    let c = &mut new_status.conditions;
    conditions::set(c, types::READY, status::FALSE, reason, &message, generation);
    conditions::set(
        c,
        types::FETCH_FAILED,
        status::TRUE,
        reason,
        &message,
        generation,
    );
    conditions::remove(c, types::RECONCILING);
    if err.is_stalled() {
        conditions::set(
            c,
            types::STALLED,
            status::TRUE,
            reason,
            &message,
            generation,
        );
    } else {
        conditions::remove(c, types::STALLED);
    }
    // The last good artifact stays: ArtifactInStorage keeps describing it.
    if new_status.artifact.is_none() {
        conditions::set(
            c,
            types::ARTIFACT_IN_STORAGE,
            status::FALSE,
            reason,
            "no artifact stored yet",
            generation,
        );
    }
    new_status.observed_generation = generation;
    new_status.last_handled_reconcile_at = requested_at;
    write_status(repo, ctx, &old_status, &new_status).await?;
    publish(
        ctx,
        repo,
        Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(truncate(&message, 1000)),
            action: "Fetch".to_owned(),
            secondary: None,
        },
    )
    .await;
    if err.is_stalled() {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(retry))
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Writes `new` with server-side apply when it differs from `old`.
async fn write_status(
    repo: &GitRepository,
    ctx: &Context,
    old: &GitRepositoryStatus,
    new: &GitRepositoryStatus,
) -> Result<(), ControllerError> {
    if old == new {
        return Ok(());
    }
    let namespace = repo.namespace().ok_or(ControllerError::NoNamespace)?;
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": GitRepository::api_version(&()),
        "kind": GitRepository::kind(&()),
        "status": new,
    });
    api.patch_status(
        &repo.name_any(),
        &PatchParams::apply(meta::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, repo: &GitRepository, event: Event) {
    let reference = repo.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(60));
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
        assert_eq!(jitter(Duration::from_millis(5)), Duration::from_millis(5));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, hour), Duration::from_secs(2));
        assert_eq!(backoff(2, hour), Duration::from_secs(4));
        assert_eq!(backoff(5, hour), Duration::from_secs(32));
        assert_eq!(backoff(30, hour), Duration::from_secs(300));
        assert_eq!(
            backoff(10, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }
}
