//! The Kustomization controller: a linear pipeline of named stages, each owning one failure
//! reason (docs/architecture.md, "The pipeline"):
//!
//! | stage        | reason on failure                    |
//! |--------------|--------------------------------------|
//! | source       | SourceNotReady (InvalidSpec: stalled) |
//! | dependencies | DependencyNotReady                   |
//! | artifact     | ArtifactFailed                       |
//! | build        | BuildFailed                          |
//! | policies     | PolicyDenied / PolicyFailed          |
//! | apply        | ApplyFailed                          |
//! | prune        | PruneFailed                          |
//! | health       | HealthCheckFailed                    |
//!
//! A failure before apply applies and prunes nothing; the previous inventory stays. Before the
//! first write of an apply the pending inventory (old ∪ new) is recorded in status.
//!
//! Triggers: a change of generation or of the reconcile-requested-at annotation, a new artifact
//! revision of the source (watch), a dependency becoming ready (watch), `interval` (with
//! jitter) after success and `retryInterval` after a failure.
//!
//! Modules by concern: `pipeline` (the stages in order), `source` (the source of any kind,
//! through `api::source`, and its watch), `dependencies` (`dependsOn`, cycles), `policies`
//! (the policy host, audit findings), `tenancy` (impersonation, cross-namespace references),
//! `status` (stage errors, conditions, status writes); this module wires them into a
//! kube-runtime `Controller`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use tracing::{Instrument, info, warn};

use super::common::{self, Events, ReconcileTimer};
use super::fetch::ArtifactFetcher;
use super::metrics::Metrics;
use super::watch::{self, logged};
use crate::api::conditions::{self, meta, types};
use crate::api::kustomization::DeletionPolicy;
use crate::api::{ClusterPolicy, Inventory, Kustomization};
use crate::apply::{self, KindWatches, ObjectRef, Owner, Resolver};
use crate::backoff;

mod dependencies;
mod pipeline;
mod policies;
mod source;
mod status;
mod tenancy;

pub use policies::{AUDIT_REASON, MAX_AUDIT_IN_STATUS, PolicyEngine, PolicyEngineError};
use status::Run;
pub use status::StageError;

/// Settings of the Kustomization controller: the reconciler's flags of this controller (and
/// the two both controllers share, `--concurrent` and `--watch-label-selector`).
#[derive(Clone, Debug, clap::Args)]
pub struct KustomizationConfig {
    /// Objects reconciled at once, per kind (Kustomizations, and fetches of GitRepositories).
    /// A Kustomization waiting for its health checks does not hold one of these slots, so one
    /// that never gets healthy does not delay the others.
    #[arg(long, default_value_t = crate::flags::DEFAULT_CONCURRENT)]
    pub concurrent: u16,
    /// Apply requests in flight per Kustomization.
    #[arg(long, default_value_t = 16)]
    pub concurrent_apply: usize,
    /// Refuse sourceRef/dependsOn references to objects in other namespaces.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub no_cross_namespace_refs: bool,
    /// ServiceAccount impersonated for Kustomizations without spec.serviceAccountName; unset,
    /// the reconciler's own identity applies.
    #[arg(long)]
    pub default_service_account: Option<String>,
    /// Reconcile only objects (of both kinds) matching this label selector (sharding).
    #[arg(long)]
    pub watch_label_selector: Option<String>,
    /// Name of a Secret in the reconciler's namespace ($POD_NAMESPACE, else gitops-system)
    /// whose keys ending in .agekey hold age identities, used by Kustomizations whose
    /// spec.decryption names no secretRef (Flux's fallback key). Kept as (namespace, name).
    #[arg(long, value_name = "NAME", value_parser = crate::flags::in_runtime_namespace)]
    pub sops_age_secret: Option<(String, String)>,
}

impl Default for KustomizationConfig {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

/// Shared state of every reconcile.
pub struct Context {
    client: kube::Client,
    kube_config: kube::Config,
    config: KustomizationConfig,
    resolver: Arc<Resolver>,
    fetcher: ArtifactFetcher,
    /// Started on first use; when it cannot start, Kustomizations that need policies fail
    /// with PolicyFailed and the others reconcile.
    policy: PolicyEngine,
    metrics: Arc<Metrics>,
    events: Events,
    store: Store<Kustomization>,
    /// Every ClusterPolicy, kept by one watch (read by each render instead of a list).
    cluster_policies: Store<ClusterPolicy>,
    /// The sources of every kind, kept by the watches that re-queue their users.
    sources: source::SourceStores,
    /// Impersonating clients by user name (see [`tenancy`]).
    impersonated: Mutex<HashMap<String, kube::Client>>,
    /// The shared per-kind stores of health checks (the reconciler's own identity).
    health_watches: Arc<KindWatches>,
    /// Per Kustomization (namespace, name): the versions its last apply verified
    /// ([`apply::known`]); only for Kustomizations acting as the reconciler itself.
    verified: Mutex<HashMap<(String, String), Arc<apply::Verified>>>,
    /// `--concurrent` slots: held by a reconcile from its start to its health checks, and by a
    /// deletion's cleanup. The controller itself runs any number of reconciles at once (each
    /// object at most once), so those waiting for health do not take slots.
    slots: Arc<tokio::sync::Semaphore>,
}

/// Errors the controller itself cannot record in status (the status write failed); retried
/// with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The server-side apply of the status failed.
    #[error("writing status of Kustomization {object}: {source}")]
    Status {
        /// The Kustomization, `namespace/name`.
        object: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// The deletion policy could not be carried out; the finalizer stays until it can.
    #[error("Kustomization {object}: deletion cleanup failed: {message}")]
    Cleanup {
        /// The Kustomization, `namespace/name`.
        object: String,
        /// What failed.
        message: String,
    },
    /// The object has no namespace or no name (never the case for a served object).
    #[error("Kustomization without namespace or name")]
    Malformed,
    /// The client acting as `spec.serviceAccountName` could not be built.
    #[error("Kustomization {object}: cannot build the impersonating client: {source}")]
    Impersonation {
        /// The Kustomization, `namespace/name`.
        object: String,
        /// Why the client could not be built.
        #[source]
        source: kube::Error,
    },
}

const KIND: &str = "Kustomization";

fn key(ks: &Kustomization) -> Result<(String, String), ReconcileError> {
    match (ks.metadata.namespace.clone(), ks.metadata.name.clone()) {
        (Some(ns), Some(name)) => Ok((ns, name)),
        _ => Err(ReconcileError::Malformed),
    }
}

/// The action of every event of this controller.
const ACTION: &str = "Reconcile";

/// Reconciles one Kustomization (not being deleted): runs the pipeline and records status.
async fn reconcile_apply(
    ks: Arc<Kustomization>,
    ctx: &Context,
    timer: &mut ReconcileTimer,
) -> Result<Action, ReconcileError> {
    let (namespace, name) = key(&ks)?;
    let mut run = Run::new(ctx, &ks, namespace.clone(), name.clone());
    let original_ready = conditions::get(&run.status.conditions, types::READY)
        .map(|c| (c.reason.clone(), c.message.clone()));
    let generation = ks.metadata.generation;
    let requested_at = ks
        .annotations()
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();
    if requested_at.is_some() {
        run.status.last_handled_reconcile_at = requested_at;
    }

    if ks.spec.suspend.unwrap_or(false) {
        info!("suspended; not reconciling");
        timer.result(common::RESULT_SKIPPED);
        return Ok(Action::await_change());
    }

    let durations = match pipeline::durations(&ks) {
        Ok(d) => d,
        Err(e) => {
            timer.result(e.reason());
            run.record_failure(&e);
            run.write_status().await?;
            return Ok(Action::await_change());
        }
    };

    // A new generation is marked Reconciling; the mark reaches the cluster with the run's next
    // status write (the pending inventory before the first apply, or the result), not in a
    // write of its own: one request less per reconcile of a changed Kustomization.
    if run.status.observed_generation != generation {
        run.progressing(format!(
            "reconciling generation {}",
            generation.unwrap_or(0)
        ));
    }

    let action = match run.pipeline(&durations).await {
        Ok(applied) => {
            timer.result(common::RESULT_SUCCESS);
            let message = run.record_success(&applied.revision, applied.healthy);
            if let Some(summary) = applied.summary {
                info!(revision = %applied.revision, %summary, "applied");
                ctx.events
                    .publish_about(
                        ks.as_ref(),
                        EventType::Normal,
                        crate::api::conditions::reasons::RECONCILIATION_SUCCEEDED,
                        ACTION,
                        &format!("{message}: {summary}"),
                        Some(&applied.revision),
                    )
                    .await;
            }
            Action::requeue(common::jittered(durations.interval))
        }
        Err(e) => {
            timer.result(e.reason());
            warn!(reason = e.reason(), error = %e, "reconcile failed");
            run.record_failure(&e);
            if original_ready != Some((e.reason().to_owned(), e.to_string())) {
                ctx.events
                    .publish_about(
                        ks.as_ref(),
                        EventType::Warning,
                        e.reason(),
                        ACTION,
                        &e.to_string(),
                        run.status.last_attempted_revision.as_deref(),
                    )
                    .await;
            }
            if e.is_stalled() {
                Action::await_change()
            } else {
                Action::requeue(durations.retry)
            }
        }
    };
    run.write_status().await?;
    let ready = conditions::get(&run.status.conditions, types::READY).map(|c| c.status.clone());
    ctx.metrics
        .record_ready(KIND, &namespace, &name, ready.as_deref());
    Ok(action)
}

/// Deletion: apply `deletionPolicy` to the inventory, then let the finalizer go.
async fn cleanup(ks: Arc<Kustomization>, ctx: &Context) -> Result<Action, ReconcileError> {
    let (namespace, name) = key(&ks)?;
    // The semaphore is never closed: an error cannot happen, and without a slot the cleanup
    // proceeds rather than never.
    let _slot = ctx.slots.clone().acquire_owned().await.ok();
    ctx.metrics.forget(KIND, &namespace, &name);
    ctx.verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(namespace.clone(), name.clone()));
    crate::controller::clusterpolicy_status::forget(
        &ctx.client,
        Some(&ctx.cluster_policies),
        &format!("{namespace}/{name}"),
    )
    .await;
    let policy = ks.spec.deletion_policy.unwrap_or_default();
    let delete = match policy {
        DeletionPolicy::MirrorPrune => ks.spec.prune,
        DeletionPolicy::Delete => true,
        DeletionPolicy::Orphan => false,
    };
    if !delete || ks.spec.suspend.unwrap_or(false) {
        info!(?policy, "deleted; leaving the applied objects in place");
        return Ok(Action::await_change());
    }
    let entries: Vec<ObjectRef> = ks
        .status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|inv| {
            inv.entries
                .iter()
                .filter_map(ObjectRef::from_entry)
                .collect()
        })
        .unwrap_or_default();
    let client =
        ctx.tenant_client(&ks, &namespace)
            .map_err(|source| ReconcileError::Impersonation {
                object: format!("{namespace}/{name}"),
                source,
            })?;
    let owner = Owner {
        name: name.clone(),
        namespace: namespace.clone(),
    };
    let outcome = apply::prune(&client, &ctx.resolver, &entries, &owner).await;
    ctx.metrics.count_objects("pruned", outcome.deleted.len());
    if let Some(message) = pipeline::prune_failures(&outcome) {
        return Err(ReconcileError::Cleanup {
            object: format!("{namespace}/{name}"),
            message,
        });
    }
    info!(
        deleted = outcome.deleted.len(),
        "deleted; pruned the inventory"
    );
    Ok(Action::await_change())
}

/// Waits until one of the `--concurrent` slots is free, then reconciles. Thousands of
/// Kustomizations can be due at once (a start, a new revision of a shared source) and the
/// controller runs a future for each; waiting here keeps the waiting ones small, and a
/// reconcile's own state (a large future) is allocated only once it may run. The slot is given
/// back at once: the reconcile takes one again for the stages that need it.
async fn reconcile(ks: Arc<Kustomization>, ctx: Arc<Context>) -> Result<Action, ReconcileFailure> {
    // The semaphore is never closed; without a slot the reconcile proceeds rather than never.
    drop(ctx.slots.acquire().await);
    Box::pin(reconcile_now(ks, ctx)).await
}

async fn reconcile_now(
    ks: Arc<Kustomization>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileFailure> {
    let namespace = ks.namespace().unwrap_or_default();
    let api: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &namespace);
    let span = common::reconcile_span(KIND, &namespace, &ks.name_any());
    let mut timer = ReconcileTimer::for_object(
        ctx.metrics.clone(),
        KIND,
        &namespace,
        &ks.name_any(),
        ks.spec.suspend == Some(true),
    );
    // Adding the finalizer ends a reconcile without running either branch below.
    timer.result(common::RESULT_SKIPPED);
    let timer = &mut timer;
    let ctx = &ctx;
    finalizer(&api, meta::FINALIZER, ks, move |event| async move {
        match event {
            FinalizerEvent::Apply(ks) => reconcile_apply(ks, ctx, timer).await,
            FinalizerEvent::Cleanup(ks) => {
                timer.result(common::RESULT_ERROR);
                let action = cleanup(ks, ctx).await?;
                timer.result(common::RESULT_SUCCESS);
                Ok(action)
            }
        }
    })
    .instrument(span)
    .await
    .map_err(|e| ReconcileFailure(Box::new(e)))
}

/// A reconcile that could not even record its failure in status.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReconcileFailure(Box<kube::runtime::finalizer::Error<ReconcileError>>);

fn error_policy(ks: Arc<Kustomization>, error: &ReconcileFailure, _ctx: Arc<Context>) -> Action {
    warn!(namespace = ?ks.namespace(), name = %ks.name_any(), error = %error, "reconcile error; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Hash of what besides the generation triggers a reconcile: the reconcile-requested-at
/// annotation and the finalizers (adding ours does not change the generation).
fn requested_at(ks: &Kustomization) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ks.annotations()
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .hash(&mut hasher);
    ks.finalizers().hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the Kustomization controller until `shutdown` completes (reconciles in flight finish;
/// when the Kustomizations could never be listed, it returns at once, see
/// [`watch::run_until_shutdown`]). Watches reconnect with [`backoff::backoff`].
pub async fn run(
    client: kube::Client,
    kube_config: kube::Config,
    config: KustomizationConfig,
    fetcher: ArtifactFetcher,
    policy: impl Into<PolicyEngine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policy = policy.into();
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(selector) = &config.watch_label_selector {
        wc = wc.labels(selector);
    }
    let ks_api: Api<Kustomization> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    use kube::CustomResourceExt as _;
    let ks_resource = Kustomization::crd_name();
    let triggers = logged(watcher(ks_api.clone(), wc.clone()), ks_resource)
        .backoff(backoff::backoff())
        .modify(watch::slim::<Kustomization>)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(requested_at),
            Default::default(),
        );

    let dependents_store = reader.clone();
    let dependency_changes = logged(watcher(ks_api, wc), ks_resource)
        .backoff(backoff::backoff())
        .applied_objects()
        .predicate_filter(dependencies::readiness_of, Default::default());
    let (sources, source_changes) = source::watch_all(&client);

    // One watch keeps the ClusterPolicies for every render; renders list them themselves
    // until its first list completed (see `render::cluster_policies`).
    let (cluster_policies, policies_writer) = reflector::store();
    let policy_watch = tokio::spawn(
        logged(
            watcher(
                Api::<ClusterPolicy>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            ),
            ClusterPolicy::crd_name(),
        )
        .backoff(backoff::backoff())
        .reflect(policies_writer)
        .for_each(|_| futures::future::ready(())),
    );

    let ctx = Arc::new(Context {
        events: Events::new(client.clone()),
        health_watches: Arc::new(KindWatches::new(client.clone())),
        slots: Arc::new(tokio::sync::Semaphore::new(usize::from(
            config.concurrent.max(1),
        ))),
        client,
        kube_config,
        resolver: Arc::new(Resolver::new()),
        fetcher,
        policy,
        metrics,
        store: reader.clone(),
        cluster_policies,
        sources,
        impersonated: Mutex::new(HashMap::new()),
        verified: Mutex::new(HashMap::new()),
        config: config.clone(),
    });

    let shutdown = shutdown.shared();
    let mut controller = Controller::for_stream(triggers, reader.clone())
        // Unbounded here: `Context::slots` bounds the work.
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        // Each watch backs off by itself (and logs why).
        .trigger_backoff(backoff::trigger_backoff())
        .watches_stream(dependency_changes, move |dep: Kustomization| {
            dependencies::dependents_of(&dependents_store, &dep)
        });
    // One watch per source kind: a new artifact re-queues the Kustomizations that use it.
    for (kind, changes) in source_changes {
        let store = reader.clone();
        controller = controller.watches_stream_with(
            changes,
            move |object| source::users_of(&store, kind, &object),
            kind.api_resource(),
        );
    }
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        // Watch errors were logged where they happened, reconcile errors by error_policy.
        .for_each(|_| futures::future::ready(()));
    watch::run_until_shutdown(controller, reader, shutdown, ks_resource).await;
    policy_watch.abort();
}

/// The Kustomizations in `store` with a reference (namespace, unset for their own, and name)
/// among `references` to the object of `target`: whom a change of `target` concerns.
fn referring(
    store: &Store<Kustomization>,
    target: &kube::core::ObjectMeta,
    references: impl Fn(&Kustomization) -> Vec<(Option<&str>, &str)>,
) -> Vec<reflector::ObjectRef<Kustomization>> {
    let (Some(target_ns), Some(target_name)) = (&target.namespace, &target.name) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|ks| {
            let own = ks.metadata.namespace.as_deref().unwrap_or_default();
            references(ks).into_iter().any(|(ns, name)| {
                name == target_name.as_str() && ns.unwrap_or(own) == target_ns.as_str()
            })
        })
        .map(|ks| reflector::ObjectRef::from_obj(ks.as_ref()))
        .collect()
}

/// For status readers: the inventory of a Kustomization as object references.
pub fn inventory_refs(inventory: &Inventory) -> Vec<ObjectRef> {
    inventory
        .entries
        .iter()
        .filter_map(ObjectRef::from_entry)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: Fn(Arc<Kustomization>, Arc<Context>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_reconcile_waiting_for_a_slot_is_small() {
        let waiting = future_size(reconcile);
        let running = future_size(reconcile_now);
        eprintln!("a waiting reconcile: {waiting} bytes; a running one: {running} bytes");
        assert!(waiting < 512, "{waiting} bytes");
        assert!(waiting * 8 < running, "{waiting} of {running} bytes");
    }
}
