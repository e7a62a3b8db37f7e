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
//!
//! Modules: `reconcile` (is a fetch due, the fetch, the schedule it leaves behind) and
//! `status` (conditions, status writes, events); this module holds the shared state, the
//! watch-driven storage cleanup and the wiring.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::common::{self, Events, ReconcileTimer};
use super::metrics::Metrics;
use super::watch::logged;
use crate::api::GitRepository;
use crate::backoff;
use crate::source::git::Refused;
use crate::source::transfer::Stop;
use crate::source::{CancelCause, FetchControl, SourceConfig, SourceLimits, Storage};

mod reconcile;
mod status;

/// The kind this controller reconciles (metric and span label).
const KIND: &str = "GitRepository";

/// Why the controller itself (not a fetch) failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A request to the apiserver failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The storage directory cannot be opened or created at start.
    #[error("storage: {0}")]
    Storage(#[from] crate::source::storage::StorageError),
    /// The object has no namespace (never the case for a served object).
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
    events: Events,
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
            ctx.metrics.forget(KIND, &key.0, &key.1);
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
    let storage = Storage::new(&config.storage_path)?;
    let context = Arc::new(Context {
        events: Events::new(client.clone()),
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
        .backoff(backoff::backoff())
        .modify(crate::controller::watch::slim::<GitRepository>)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                on_event(&event_context, event, &event_store);
            }
        })
        .applied_objects();
    let controller =
        Controller::for_stream(triggers, store.clone()).trigger_backoff(backoff::trigger_backoff());
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

async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = repo.namespace().ok_or(ControllerError::NoNamespace)?;
    let name = repo.name_any();
    let mut timer = ReconcileTimer::for_object(
        ctx.metrics.clone(),
        KIND,
        &namespace,
        &name,
        repo.spec.suspend == Some(true),
    );
    let span = common::reconcile_span(KIND, &namespace, &name);
    reconcile::reconcile(repo, ctx, namespace, name, &mut timer)
        .instrument(span)
        .await
}
