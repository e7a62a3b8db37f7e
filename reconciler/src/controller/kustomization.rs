//! The Kustomization controller: a linear pipeline of named stages, each owning one failure
//! reason (DESIGN.md "The pipeline"):
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef as StoreRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span, warn};

use super::fetch::{ArtifactFetcher, FetchError};
use super::metrics::{Metrics, ReconcileLabels};
use super::watch::{self, logged};
use crate::api::conditions::{self, meta, reasons, status as cstatus, types};
use crate::api::kustomization::{DeletionPolicy, SubstituteKind};
use crate::api::{GitRepository, Inventory, Kustomization, KustomizationStatus, duration};
use crate::apply::{
    self, ApplyError, ApplyOptions, DriftRules, HealthError, ObjectRef, Owner, OwnerLookup,
    Resolver, inventory,
};

/// Settings of the Kustomization controller (from the reconciler's flags).
#[derive(Clone, Debug)]
pub struct KustomizationConfig {
    /// Kustomizations reconciled at once (`--concurrent`).
    pub concurrent: u16,
    /// Apply requests in flight per Kustomization (`--concurrent-apply`).
    pub concurrent_apply: usize,
    /// Refuse sourceRef/dependsOn in other namespaces (`--no-cross-namespace-refs`).
    pub no_cross_namespace_refs: bool,
    /// ServiceAccount impersonated when `spec.serviceAccountName` is unset
    /// (`--default-service-account`); `None` uses the reconciler's own identity.
    pub default_service_account: Option<String>,
    /// Only Kustomizations matching this label selector (`--watch-label-selector`).
    pub watch_label_selector: Option<String>,
}

impl Default for KustomizationConfig {
    fn default() -> Self {
        Self {
            concurrent: 4,
            concurrent_apply: 16,
            no_cross_namespace_refs: true,
            default_service_account: None,
            watch_label_selector: None,
        }
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
    reporter: Reporter,
    store: Store<Kustomization>,
    impersonated: Mutex<HashMap<String, kube::Client>>,
}

/// The process's policy host, started on first use: a reconciler whose Kustomizations use no
/// policies never starts the wasm engine (which keeps an idle reconciler small).
#[derive(Clone)]
pub struct PolicyEngine(Arc<PolicyEngineState>);

struct PolicyEngineState {
    config: crate::policy::HostConfig,
    host: std::sync::OnceLock<Result<crate::policy::PolicyHost, String>>,
    /// The cluster's kinds for the tenancy check, shared by every reconcile.
    scopes: std::sync::OnceLock<crate::policy::ClusterScopes>,
}

impl PolicyEngine {
    /// Starts the host with `config` when a Kustomization first needs it.
    pub fn on_first_use(config: crate::policy::HostConfig) -> Self {
        Self(Arc::new(PolicyEngineState {
            config,
            host: std::sync::OnceLock::new(),
            scopes: std::sync::OnceLock::new(),
        }))
    }

    /// The process's table of the cluster's kinds (read through `client` the first time).
    pub fn cluster_scopes(&self, client: &kube::Client) -> crate::policy::ClusterScopes {
        self.0
            .scopes
            .get_or_init(|| crate::policy::ClusterScopes::new(client.clone()))
            .clone()
    }

    /// The host; blocking when it starts now (call from a blocking task). A failed start is
    /// remembered: the reason is returned to every later caller.
    pub fn get(&self) -> Result<crate::policy::PolicyHost, String> {
        self.0
            .host
            .get_or_init(|| {
                crate::policy::PolicyHost::new(self.0.config.clone()).map_err(|e| {
                    tracing::error!(error = %e, "the policy host could not start");
                    e.to_string()
                })
            })
            .clone()
    }
}

impl From<Option<crate::policy::PolicyHost>> for PolicyEngine {
    /// An already started host (`None`: one that failed to start).
    fn from(host: Option<crate::policy::PolicyHost>) -> Self {
        let cell = std::sync::OnceLock::new();
        let _ = cell.set(host.ok_or_else(|| "it failed to start (see the log)".to_owned()));
        Self(Arc::new(PolicyEngineState {
            config: crate::policy::HostConfig::default(),
            host: cell,
            scopes: std::sync::OnceLock::new(),
        }))
    }
}

/// A failed stage: its reason is the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    SourceNotReady(String),
    #[error("{0}")]
    DependencyNotReady(String),
    #[error("dependency cycle: {0}")]
    DependencyCycle(String),
    #[error(transparent)]
    Artifact(#[from] FetchError),
    #[error("{0}")]
    Build(String),
    #[error("{message}")]
    Policy {
        reason: &'static str,
        message: String,
        /// Retrying the same spec and revision cannot help (a denial, a bad module, a policy
        /// that failed the same way it will again): the message names the policy.
        stalled: bool,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Prune(String),
    #[error(transparent)]
    Health(#[from] HealthError),
}

impl StageError {
    /// The condition reason of the stage that failed.
    pub fn reason(&self) -> &'static str {
        match self {
            StageError::InvalidSpec(_) => reasons::INVALID_SPEC,
            StageError::SourceNotReady(_) => reasons::SOURCE_NOT_READY,
            StageError::DependencyNotReady(_) | StageError::DependencyCycle(_) => {
                reasons::DEPENDENCY_NOT_READY
            }
            StageError::Artifact(_) => reasons::ARTIFACT_FAILED,
            StageError::Build(_) => reasons::BUILD_FAILED,
            StageError::Policy { reason, .. } => reason,
            StageError::Apply(_) => reasons::APPLY_FAILED,
            StageError::Prune(_) => reasons::PRUNE_FAILED,
            StageError::Health(_) => reasons::HEALTH_CHECK_FAILED,
        }
    }

    /// True when retrying cannot help without a change of the spec.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            StageError::InvalidSpec(_)
                | StageError::DependencyCycle(_)
                | StageError::Policy { stalled: true, .. }
        )
    }
}

/// Errors the controller itself cannot record in status (the status write failed); retried
/// with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing status of Kustomization {object}: {source}")]
    Status {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("Kustomization {object}: deletion cleanup failed: {message}")]
    Cleanup { object: String, message: String },
    #[error("Kustomization without namespace or name")]
    Malformed,
}

const KIND: &str = "Kustomization";

fn key(ks: &Kustomization) -> Result<(String, String), ReconcileError> {
    match (ks.metadata.namespace.clone(), ks.metadata.name.clone()) {
        (Some(ns), Some(name)) => Ok((ns, name)),
        _ => Err(ReconcileError::Malformed),
    }
}

impl Context {
    /// The client for every read and write of `ks`'s objects: the impersonated ServiceAccount
    /// (spec.serviceAccountName, else the default one) or the reconciler's own identity.
    fn tenant_client(&self, ks: &Kustomization, namespace: &str) -> kube::Client {
        let Some(sa) = ks
            .spec
            .service_account_name
            .clone()
            .or_else(|| self.config.default_service_account.clone())
        else {
            return self.client.clone();
        };
        let user = format!("system:serviceaccount:{namespace}:{sa}");
        let mut cache = self.impersonated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&user) {
            return client.clone();
        }
        let mut config = self.kube_config.clone();
        // Only the user: the apiserver adds the ServiceAccount's groups itself.
        config.auth_info.impersonate = Some(user.clone());
        match kube::Client::try_from(config) {
            Ok(client) => {
                cache.insert(user, client.clone());
                client
            }
            Err(e) => {
                // Building a client from a config that already built one cannot fail on the
                // identity; fall back to a client that will be refused rather than escalate.
                warn!(error = %e, "cannot build impersonating client");
                let mut config = self.kube_config.clone();
                config.auth_info.impersonate = Some(user);
                kube::Client::try_from(config).unwrap_or_else(|_| self.client.clone())
            }
        }
    }
}

/// Interval with ±5% jitter so that many Kustomizations created together spread out.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.05;
    let offset = (fastrand_f64() * 2.0 - 1.0) * spread;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(1.0))
}

/// A cheap uniform [0, 1) from the clock and a counter (jitter needs no cryptographic quality).
fn fastrand_f64() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

struct Durations {
    interval: Duration,
    retry: Duration,
    timeout: Duration,
}

fn durations(ks: &Kustomization) -> Result<Durations, StageError> {
    let parse = |field: &str, text: &str| {
        duration::parse(text).map_err(|e| StageError::InvalidSpec(format!("spec.{field}: {e}")))
    };
    let interval = parse("interval", &ks.spec.interval)?;
    let retry = match &ks.spec.retry_interval {
        Some(text) => parse("retryInterval", text)?,
        None => interval,
    };
    let timeout = match &ks.spec.timeout {
        Some(text) => parse("timeout", text)?,
        None => interval,
    };
    Ok(Durations {
        interval,
        retry,
        timeout,
    })
}

/// What a successful pipeline run produced.
struct Applied {
    revision: String,
    summary: Option<String>,
    healthy: Option<bool>,
}

/// One reconcile of one Kustomization, with its status being built.
struct Run<'a> {
    ctx: &'a Context,
    ks: &'a Kustomization,
    namespace: String,
    name: String,
    status: KustomizationStatus,
    api: Api<Kustomization>,
}

impl Run<'_> {
    async fn write_status(&self) -> Result<(), ReconcileError> {
        let patch = json!({ "status": self.status });
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ReconcileError::Status {
                object: format!("{}/{}", self.namespace, self.name),
                source,
            })?;
        Ok(())
    }

    /// Records the stage being worked on (Reconciling's message) in status right away.
    async fn report_stage(&mut self, message: String) -> Result<(), StageError> {
        self.progressing(message);
        self.write_status().await.map_err(|e| {
            StageError::Apply(ApplyError::Write {
                object: format!("Kustomization {}/{}", self.namespace, self.name),
                message: e.to_string(),
            })
        })
    }

    fn progressing(&mut self, message: String) {
        let generation = self.ks.metadata.generation;
        conditions::set(
            &mut self.status.conditions,
            types::RECONCILING,
            cstatus::TRUE,
            reasons::PROGRESSING,
            message.clone(),
            generation,
        );
        if !conditions::is_ready(&self.status.conditions) {
            conditions::set(
                &mut self.status.conditions,
                types::READY,
                cstatus::UNKNOWN,
                reasons::PROGRESSING,
                message,
                generation,
            );
        }
    }

    /// The namespace a reference points into (ours when unset); refused when it crosses
    /// namespaces while the reconciler runs with `--no-cross-namespace-refs`.
    fn referenced_namespace(
        &self,
        field: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<String, StageError> {
        let ns = namespace.unwrap_or(&self.namespace).to_owned();
        if self.ctx.config.no_cross_namespace_refs && ns != self.namespace {
            return Err(StageError::InvalidSpec(format!(
                "{field}: cross-namespace reference to {kind} {ns}/{name} is not allowed (the reconciler runs with --no-cross-namespace-refs)"
            )));
        }
        Ok(ns)
    }

    /// Stage 1: the source and its artifact metadata.
    async fn source(&self) -> Result<crate::api::Artifact, StageError> {
        let source = &self.ks.spec.source_ref;
        let source_ns = self.referenced_namespace(
            "spec.sourceRef",
            "GitRepository",
            &source.name,
            source.namespace.as_deref(),
        )?;
        let api: Api<GitRepository> = Api::namespaced(self.ctx.client.clone(), &source_ns);
        let repo = api
            .get_opt(&source.name)
            .await
            .map_err(|e| {
                StageError::SourceNotReady(format!(
                    "GitRepository {source_ns}/{}: {e}",
                    source.name
                ))
            })?
            .ok_or_else(|| {
                StageError::SourceNotReady(format!(
                    "GitRepository {source_ns}/{} not found",
                    source.name
                ))
            })?;
        repo.status.and_then(|s| s.artifact).ok_or_else(|| {
            StageError::SourceNotReady(format!(
                "GitRepository {source_ns}/{} has no artifact yet",
                source.name
            ))
        })
    }

    /// Stage 2: every dependency Ready at its source's current revision; cycles refused.
    async fn dependencies(&self) -> Result<(), StageError> {
        if self.ks.spec.depends_on.is_empty() {
            return Ok(());
        }
        for dep in &self.ks.spec.depends_on {
            let ns = self.referenced_namespace(
                "spec.dependsOn",
                "Kustomization",
                &dep.name,
                dep.namespace.as_deref(),
            )?;
            let api: Api<Kustomization> = Api::namespaced(self.ctx.client.clone(), &ns);
            let other = api
                .get_opt(&dep.name)
                .await
                .map_err(|e| StageError::DependencyNotReady(format!("{ns}/{}: {e}", dep.name)))?
                .ok_or_else(|| {
                    StageError::DependencyNotReady(format!(
                        "dependency {ns}/{} not found",
                        dep.name
                    ))
                })?;
            let status = other.status.clone().unwrap_or_default();
            let ready = conditions::is_ready(&status.conditions)
                && status.observed_generation == other.metadata.generation;
            if !ready {
                return Err(StageError::DependencyNotReady(format!(
                    "dependency {ns}/{} is not ready",
                    dep.name
                )));
            }
            // Ready at the current revision of its own source.
            let src = &other.spec.source_ref;
            let src_ns = src.namespace.clone().unwrap_or(ns.clone());
            let repos: Api<GitRepository> = Api::namespaced(self.ctx.client.clone(), &src_ns);
            let current = repos
                .get_opt(&src.name)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.status)
                .and_then(|s| s.artifact)
                .map(|a| a.revision);
            if current.is_some() && current != status.last_applied_revision {
                return Err(StageError::DependencyNotReady(format!(
                    "dependency {ns}/{} is not ready at revision {}",
                    dep.name,
                    current.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// postBuild.substitute merged over substituteFrom (earlier entries win over later ones).
    async fn substitutions(
        &self,
        client: &kube::Client,
    ) -> Result<BTreeMap<String, String>, StageError> {
        let mut vars = BTreeMap::new();
        let Some(post) = &self.ks.spec.post_build else {
            return Ok(vars);
        };
        for reference in post.substitute_from.iter().rev() {
            let optional = reference.optional.unwrap_or(false);
            let what = format!("{:?} {}/{}", reference.kind, self.namespace, reference.name);
            let data: Option<BTreeMap<String, String>> = match reference.kind {
                SubstituteKind::ConfigMap => {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
                    api.get_opt(&reference.name)
                        .await
                        .map_err(|e| {
                            StageError::Build(format!("postBuild.substituteFrom {what}: {e}"))
                        })?
                        .map(|cm| cm.data.unwrap_or_default())
                }
                SubstituteKind::Secret => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
                    let secret = api.get_opt(&reference.name).await.map_err(|e| {
                        StageError::Build(format!("postBuild.substituteFrom {what}: {e}"))
                    })?;
                    match secret {
                        Some(secret) => {
                            let mut out = BTreeMap::new();
                            for (k, v) in secret.data.unwrap_or_default() {
                                let text = String::from_utf8(v.0).map_err(|_| {
                                    StageError::Build(format!(
                                        "postBuild.substituteFrom {what}: key {k} is not UTF-8"
                                    ))
                                })?;
                                out.insert(k, text);
                            }
                            Some(out)
                        }
                        None => None,
                    }
                }
            };
            match data {
                Some(data) => vars.extend(data),
                None if optional => {}
                None => {
                    return Err(StageError::Build(format!(
                        "postBuild.substituteFrom: {what} not found"
                    )));
                }
            }
        }
        vars.extend(post.substitute.clone());
        Ok(vars)
    }

    /// Stages 3–8. Returns what was applied; status fields are updated along the way.
    async fn pipeline(&mut self, durations: &Durations) -> Result<Applied, StageError> {
        // A cycle can never resolve: report it before anything else.
        if let Some(cycle) = find_cycle(&self.ctx.store, &self.namespace, &self.name) {
            return Err(StageError::DependencyCycle(cycle));
        }
        let artifact = self.source().await?;
        let revision = artifact.revision.clone();
        self.status.last_attempted_revision = Some(revision.clone());
        self.dependencies().await?;

        let client = self.ctx.tenant_client(self.ks, &self.namespace);
        let dir = self.ctx.fetcher.unpack(&artifact).await?;
        let substitute = self.substitutions(&client).await?;
        let objects = build_stage(dir.path(), self.ks, substitute).await?;
        let objects = policy_stage(self, &client, dir.path(), &revision, objects).await?;
        drop(dir);

        let owner = Owner {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        };
        let plan = apply::plan(&client, &self.ctx.resolver, objects, &owner).await?;
        let new_refs = plan.refs();
        let old_inventory = self.status.inventory.clone();
        let old_len = old_inventory.as_ref().map_or(0, |i| i.entries.len());
        if plan.is_empty() && old_len > 0 && !self.ks.spec.allow_empty.unwrap_or(false) {
            return Err(StageError::Prune(format!(
                "the build of revision {revision} yielded no objects; refusing to prune the {old_len} objects of the inventory (set spec.allowEmpty: true to allow)"
            )));
        }

        // Record the pending inventory before the first write.
        let pending = inventory::union(old_inventory.as_ref(), &new_refs);
        if Some(&pending) != old_inventory.as_ref() {
            self.status.inventory = Some(pending.clone());
            self.report_stage(format!("applying revision {revision}"))
                .await?;
        }

        let opts = ApplyOptions {
            owner: owner.clone(),
            force: self.ks.spec.force.unwrap_or(false),
            concurrency: self.ctx.config.concurrent_apply.max(1),
            drift: DriftRules::new(&self.ks.spec.ignore)
                .map_err(|e| StageError::InvalidSpec(e.to_string()))?,
            definitions_timeout: durations.timeout,
            // Objects of a Kustomization that no longer exists (deleted with Orphan, or a
            // re-bootstrap in a new namespace) are adopted; asked with our own client.
            owner_lookup: Some(OwnerLookup::new(self.ctx.client.clone())),
        };
        let changes = apply::apply(&client, &self.ctx.resolver, &plan, &opts).await?;
        for action in [
            apply::Action::Created,
            apply::Action::Configured,
            apply::Action::Recreated,
            apply::Action::Adopted,
            apply::Action::Unchanged,
        ] {
            self.ctx
                .metrics
                .count_objects(&action.to_string(), changes.count(action));
        }

        let mut pruned = 0;
        if self.ks.spec.prune {
            let stale = inventory::stale(Some(&pending), &new_refs);
            let outcome = apply::prune(&client, &self.ctx.resolver, &stale, &owner).await;
            pruned = outcome.deleted.len();
            self.ctx.metrics.count_objects("pruned", pruned);
            self.status.inventory = Some(inventory::without(&pending, &outcome.removed()));
            if !outcome.failed.is_empty() {
                let failed: Vec<String> = outcome
                    .failed
                    .iter()
                    .map(|(r, why)| format!("{r}: {why}"))
                    .collect();
                return Err(StageError::Prune(format!(
                    "prune failed (kept in the inventory, retried): {}",
                    failed.join("; ")
                )));
            }
        } else {
            self.status.inventory = Some(inventory::of(&new_refs));
        }

        let summary = (changes.wrote() || pruned > 0).then(|| {
            let mut s = changes.summary();
            if pruned > 0 {
                if changes.wrote() {
                    s.push_str(&format!(", pruned {pruned}"));
                } else {
                    s = format!("pruned {pruned}");
                }
            }
            s
        });

        // A wait that may take a while says so, unless nothing changed and all was healthy
        // (a no-change reconcile writes nothing).
        let waits = self.ks.spec.wait.unwrap_or(false) || !self.ks.spec.health_checks.is_empty();
        let was_healthy = conditions::get(&self.status.conditions, types::HEALTHY)
            .is_some_and(|c| c.status == cstatus::TRUE);
        if waits && (summary.is_some() || !was_healthy) {
            self.report_stage(format!(
                "waiting for the health checks of revision {revision}"
            ))
            .await?;
        }
        let healthy = self.health(&client, &new_refs, durations.timeout).await?;
        Ok(Applied {
            revision,
            summary,
            healthy,
        })
    }

    /// Stage 8: `wait` checks every applied object, `healthChecks` the listed ones.
    async fn health(
        &self,
        client: &kube::Client,
        applied: &[ObjectRef],
        timeout: Duration,
    ) -> Result<Option<bool>, StageError> {
        let mut targets: Vec<ObjectRef> = Vec::new();
        if self.ks.spec.wait.unwrap_or(false) {
            targets.extend(applied.iter().cloned());
        }
        for check in &self.ks.spec.health_checks {
            let api_version = check.api_version.clone().unwrap_or_else(|| "v1".into());
            let (group, version) = match api_version.split_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), api_version.clone()),
            };
            targets.push(ObjectRef {
                group,
                version,
                kind: check.kind.clone(),
                namespace: check.namespace.clone(),
                name: check.name.clone(),
            });
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let mut seen = HashSet::new();
        targets.retain(|t| seen.insert(t.id()));
        apply::health::wait(client, &self.ctx.resolver, &targets, timeout).await?;
        Ok(Some(true))
    }
}

/// The build stage: the kustomize engine on the unpacked artifact (blocking, off the runtime).
async fn build_stage(
    root: &std::path::Path,
    ks: &Kustomization,
    substitute: BTreeMap<String, String>,
) -> Result<Vec<Value>, StageError> {
    let mut options = crate::build::BuildOptions::from_spec(&ks.spec);
    options.substitute = substitute;
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || crate::build::build(&root, &options))
        .await
        .map_err(|e| StageError::Build(format!("build task failed: {e}")))?
        .map_err(|e| StageError::Build(e.to_string()))
}

/// The policy stage: `spec.targetNamespace` through the `target-namespace` built-in, then the
/// ClusterPolicies selecting this Kustomization, then `spec.policies`, run by the policy host
/// (blocking, off the runtime). Module bytes are resolved here: `path` from the artifact,
/// `configMapRef` through the tenant's client.
async fn policy_stage(
    run: &Run<'_>,
    client: &kube::Client,
    artifact_root: &std::path::Path,
    revision: &str,
    objects: Vec<Value>,
) -> Result<Vec<Value>, StageError> {
    use crate::policy::{ModuleSource, PolicyContext, PolicyStep, Tenancy};
    let ks = run.ks;
    let failed = |message: String| StageError::Policy {
        reason: reasons::POLICY_FAILED,
        message,
        stalled: false,
    };
    let mut steps = Vec::new();
    if let Some(target) = &ks.spec.target_namespace {
        steps.push(PolicyStep {
            name: "target-namespace".into(),
            module: ModuleSource::Builtin("target-namespace".into()),
            config: json!({ "namespace": target }),
            failure_policy: crate::api::FailurePolicy::Fail,
        });
    }
    steps.extend(cluster_policy_steps(run).await?);
    for policy in &ks.spec.policies {
        let module = resolve_module(
            &policy.module,
            &policy.name,
            client,
            &run.namespace,
            Some(artifact_root),
        )
        .await?;
        steps.push(PolicyStep {
            name: policy.name.clone(),
            module,
            config: policy.config.clone().unwrap_or(Value::Null),
            failure_policy: policy.failure_policy.unwrap_or_default(),
        });
    }
    if steps.is_empty() {
        return Ok(objects);
    }
    let engine = run.ctx.policy.clone();
    let host = tokio::task::spawn_blocking(move || engine.get())
        .await
        .map_err(|e| failed(format!("policy task failed: {e}")))?
        .map_err(|e| {
            failed(format!(
                "the policy host could not be started in this reconciler: {e}"
            ))
        })?;
    let admin =
        ks.spec.service_account_name.is_none() && run.ctx.config.default_service_account.is_none();
    // A tenant's transforms may not add cluster-scoped objects: which kinds are cluster-scoped
    // (CRDs included) comes from the cluster. Without that answer nothing runs (fail closed).
    let discovery = if admin {
        None
    } else {
        let scopes = run.ctx.policy.cluster_scopes(&run.ctx.client);
        scopes.table().await.map_err(|e| {
            failed(format!(
                "reading the cluster's cluster-scoped kinds for the tenancy check: {e}"
            ))
        })?;
        Some(scopes)
    };
    let context = PolicyContext {
        kustomization_namespace: run.namespace.clone(),
        kustomization_name: run.name.clone(),
        source_revision: revision.to_owned(),
        target_namespace: ks.spec.target_namespace.clone(),
        dry_run: false,
        tenancy: Some(Tenancy {
            allowed_namespaces: Vec::new(),
            allow_cluster_scoped: admin,
            cluster_scoped_kinds: Vec::new(),
            discovery,
        }),
    };
    let outcome = tokio::task::spawn_blocking(move || host.run_pipeline(&steps, &context, objects))
        .await
        .map_err(|e| failed(format!("policy task failed: {e}")))?
        .map_err(|e| StageError::Policy {
            reason: e.reason(),
            message: e.to_string(),
            stalled: e.is_stalling(),
        })?;
    for warning in &outcome.warnings {
        warn!(%warning, "policy warning");
    }
    for ignored in &outcome.ignored_failures {
        warn!(error = %ignored, "policy failed and was ignored (failurePolicy: Ignore)");
    }
    Ok(outcome.objects)
}

/// Resolves a module reference into bytes the host verifies against the declared sha256.
async fn resolve_module(
    module: &crate::api::PolicyModule,
    step: &str,
    client: &kube::Client,
    namespace: &str,
    artifact_root: Option<&std::path::Path>,
) -> Result<crate::policy::ModuleSource, StageError> {
    use crate::policy::ModuleSource;
    let failed = |message: String| StageError::Policy {
        reason: reasons::POLICY_FAILED,
        message: format!("policy {step}: {message}"),
        stalled: false,
    };
    if let Some(name) = &module.builtin {
        return Ok(ModuleSource::Builtin(name.clone()));
    }
    let sha256 = module
        .sha256
        .clone()
        .ok_or_else(|| failed("sha256 is required for a module that is not builtin".into()))?;
    let bytes: Vec<u8> = if let Some(path) = &module.path {
        let root =
            artifact_root.ok_or_else(|| failed("module.path needs a source artifact".into()))?;
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(failed(format!("module.path '{path}' escapes the artifact")));
        }
        let file = root.join(path);
        // The artifact holds regular files only (symlinks are refused when unpacking).
        std::fs::read(&file).map_err(|e| failed(format!("module.path '{path}': {e}")))?
    } else if let Some(reference) = &module.config_map_ref {
        let ns = reference.namespace.clone().unwrap_or(namespace.to_owned());
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| failed(format!("ConfigMap {ns}/{}: {e}", reference.name)))?
            .ok_or_else(|| failed(format!("ConfigMap {ns}/{} not found", reference.name)))?;
        cm.binary_data
            .and_then(|mut d| d.remove(&reference.key))
            .map(|b| b.0)
            .ok_or_else(|| {
                failed(format!(
                    "ConfigMap {ns}/{} has no binaryData key {}",
                    reference.name, reference.key
                ))
            })?
    } else if module.url.is_some() {
        return Err(failed(
            "url modules are not supported by this reconciler yet; use path or configMapRef".into(),
        ));
    } else {
        return Err(failed("no module source set".into()));
    };
    Ok(ModuleSource::Component {
        bytes: bytes.into(),
        sha256,
    })
}

/// The ClusterPolicies whose selector matches this Kustomization, as steps (name order).
async fn cluster_policy_steps(run: &Run<'_>) -> Result<Vec<crate::policy::PolicyStep>, StageError> {
    use crate::api::ClusterPolicy;
    use k8s_openapi::api::core::v1::Namespace;
    let failed = |message: String| StageError::Policy {
        reason: reasons::POLICY_FAILED,
        message,
        stalled: false,
    };
    let api: Api<ClusterPolicy> = Api::all(run.ctx.client.clone());
    let mut policies = api
        .list(&Default::default())
        .await
        .map_err(|e| failed(format!("listing ClusterPolicies: {e}")))?
        .items;
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    policies.sort_by_key(|p| p.name_any());
    let namespaces: Api<Namespace> = Api::all(run.ctx.client.clone());
    let ns_labels = namespaces
        .get_opt(&run.namespace)
        .await
        .map_err(|e| failed(format!("reading Namespace {}: {e}", run.namespace)))?
        .map(|n| n.metadata.labels.unwrap_or_default())
        .unwrap_or_default();
    let ks_labels = run.ks.metadata.labels.clone().unwrap_or_default();
    let mut steps = Vec::new();
    for policy in policies {
        let selector = policy.spec.selector.clone().unwrap_or_default();
        let matches = selector
            .namespace_selector
            .as_ref()
            .is_none_or(|s| label_selector_matches(s, &ns_labels))
            && selector
                .kustomization_selector
                .as_ref()
                .is_none_or(|s| label_selector_matches(s, &ks_labels));
        if !matches {
            continue;
        }
        let name = policy.name_any();
        let module = resolve_module(
            &policy.spec.module,
            &format!("ClusterPolicy {name}"),
            &run.ctx.client,
            "",
            None,
        )
        .await?;
        steps.push(crate::policy::PolicyStep {
            name,
            module,
            config: policy.spec.config.clone().unwrap_or(Value::Null),
            failure_policy: policy.spec.failure_policy.unwrap_or_default(),
        });
    }
    Ok(steps)
}

/// Kubernetes label selector semantics (matchLabels and matchExpressions).
fn label_selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// A dependency cycle through `namespace/name`, as `a -> b -> a`, from the informer cache.
fn find_cycle(store: &Store<Kustomization>, namespace: &str, name: &str) -> Option<String> {
    let graph: HashMap<(String, String), Vec<(String, String)>> = store
        .state()
        .iter()
        .filter_map(|ks| {
            let ns = ks.metadata.namespace.clone()?;
            let deps = ks
                .spec
                .depends_on
                .iter()
                .map(|d| (d.namespace.clone().unwrap_or(ns.clone()), d.name.clone()))
                .collect();
            Some(((ns, ks.metadata.name.clone()?), deps))
        })
        .collect();
    let start = (namespace.to_owned(), name.to_owned());
    let mut path = vec![start.clone()];
    fn dfs(
        graph: &HashMap<(String, String), Vec<(String, String)>>,
        start: &(String, String),
        path: &mut Vec<(String, String)>,
        visited: &mut HashSet<(String, String)>,
    ) -> bool {
        let Some(current) = path.last().cloned() else {
            return false;
        };
        for next in graph.get(&current).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if visited.insert(next.clone()) {
                path.push(next.clone());
                if dfs(graph, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut visited = HashSet::new();
    dfs(&graph, &start, &mut path, &mut visited).then(|| {
        path.iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect::<Vec<_>>()
            .join(" -> ")
    })
}

async fn publish(ctx: &Context, ks: &Kustomization, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // kube's Recorder folds events with the same reason into one series and keeps the first
    // note; each of our notes is distinct (revision, counts), so every publish starts afresh.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &ks.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

/// Reconciles one Kustomization (not being deleted): runs the pipeline and records status.
async fn reconcile_apply(ks: Arc<Kustomization>, ctx: &Context) -> Result<Action, ReconcileError> {
    let (namespace, name) = key(&ks)?;
    let started = Instant::now();
    let api: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &namespace);
    let original = ks.status.clone().unwrap_or_default();
    let mut run = Run {
        ctx,
        ks: &ks,
        namespace: namespace.clone(),
        name: name.clone(),
        status: original.clone(),
        api,
    };
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
        return Ok(Action::await_change());
    }

    let durations = match durations(&ks) {
        Ok(d) => d,
        Err(e) => {
            record_failure(&mut run, &e, generation);
            run.write_status().await?;
            return Ok(Action::await_change());
        }
    };

    // A new generation announces itself before the (possibly long) pipeline.
    if original.observed_generation != generation {
        run.progressing(format!(
            "reconciling generation {}",
            generation.unwrap_or(0)
        ));
        run.write_status().await?;
    }

    let result = run.pipeline(&durations).await;
    let outcome_label;
    let action = match result {
        Ok(applied) => {
            outcome_label = "success".to_owned();
            let message = format!("Applied revision: {}", applied.revision);
            conditions::set(
                &mut run.status.conditions,
                types::READY,
                cstatus::TRUE,
                reasons::RECONCILIATION_SUCCEEDED,
                message.clone(),
                generation,
            );
            conditions::remove(&mut run.status.conditions, types::RECONCILING);
            conditions::remove(&mut run.status.conditions, types::STALLED);
            match applied.healthy {
                Some(_) => conditions::set(
                    &mut run.status.conditions,
                    types::HEALTHY,
                    cstatus::TRUE,
                    reasons::SUCCEEDED,
                    "Health check passed",
                    generation,
                ),
                None => conditions::remove(&mut run.status.conditions, types::HEALTHY),
            }
            run.status.last_applied_revision = Some(applied.revision.clone());
            run.status.observed_generation = generation;
            if let Some(summary) = applied.summary {
                info!(revision = %applied.revision, %summary, "applied");
                publish(
                    ctx,
                    &ks,
                    EventType::Normal,
                    reasons::RECONCILIATION_SUCCEEDED,
                    format!("{message}: {summary}"),
                )
                .await;
            }
            Action::requeue(jittered(durations.interval))
        }
        Err(e) => {
            outcome_label = e.reason().to_owned();
            warn!(reason = e.reason(), error = %e, "reconcile failed");
            let previous = conditions::get(&original.conditions, types::READY)
                .map(|c| (c.reason.clone(), c.message.clone()));
            record_failure(&mut run, &e, generation);
            if previous != Some((e.reason().to_owned(), e.to_string())) {
                publish(ctx, &ks, EventType::Warning, e.reason(), e.to_string()).await;
            }
            if e.is_stalled() {
                Action::await_change()
            } else {
                Action::requeue(durations.retry)
            }
        }
    };
    if run.status != original {
        run.write_status().await?;
    }
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ReconcileLabels {
            kind: KIND.into(),
            result: outcome_label,
        })
        .observe(started.elapsed().as_secs_f64());
    let ready = conditions::get(&run.status.conditions, types::READY).map(|c| c.status.clone());
    ctx.metrics
        .record_ready(KIND, &namespace, &name, ready.as_deref());
    Ok(action)
}

fn record_failure(run: &mut Run<'_>, e: &StageError, generation: Option<i64>) {
    let message = e.to_string();
    conditions::set(
        &mut run.status.conditions,
        types::READY,
        cstatus::FALSE,
        e.reason(),
        message.clone(),
        generation,
    );
    if matches!(e, StageError::Health(_)) {
        conditions::set(
            &mut run.status.conditions,
            types::HEALTHY,
            cstatus::FALSE,
            e.reason(),
            message.clone(),
            generation,
        );
    }
    if e.is_stalled() {
        conditions::set(
            &mut run.status.conditions,
            types::STALLED,
            cstatus::TRUE,
            e.reason(),
            message,
            generation,
        );
        conditions::remove(&mut run.status.conditions, types::RECONCILING);
        run.status.observed_generation = generation;
    } else {
        conditions::remove(&mut run.status.conditions, types::STALLED);
        conditions::set(
            &mut run.status.conditions,
            types::RECONCILING,
            cstatus::TRUE,
            reasons::PROGRESSING_WITH_RETRY,
            format!("retrying after {}: {message}", e.reason()),
            generation,
        );
        run.status.observed_generation = generation;
    }
}

/// Deletion: apply `deletionPolicy` to the inventory, then let the finalizer go.
async fn cleanup(ks: Arc<Kustomization>, ctx: &Context) -> Result<Action, ReconcileError> {
    let (namespace, name) = key(&ks)?;
    ctx.metrics.forget(KIND, &namespace, &name);
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
    let client = ctx.tenant_client(&ks, &namespace);
    let owner = Owner {
        name: name.clone(),
        namespace: namespace.clone(),
    };
    let outcome = apply::prune(&client, &ctx.resolver, &entries, &owner).await;
    ctx.metrics.count_objects("pruned", outcome.deleted.len());
    if !outcome.failed.is_empty() {
        let failed: Vec<String> = outcome
            .failed
            .iter()
            .map(|(r, why)| format!("{r}: {why}"))
            .collect();
        return Err(ReconcileError::Cleanup {
            object: format!("{namespace}/{name}"),
            message: failed.join("; "),
        });
    }
    info!(
        deleted = outcome.deleted.len(),
        "deleted; pruned the inventory"
    );
    Ok(Action::await_change())
}

async fn reconcile(ks: Arc<Kustomization>, ctx: Arc<Context>) -> Result<Action, ReconcileFailure> {
    let namespace = ks.namespace().unwrap_or_default();
    let api: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &namespace);
    let span =
        info_span!("reconcile", kind = KIND, namespace = %namespace, object = %ks.name_any());
    async move {
        finalizer(&api, meta::FINALIZER, ks, |event| async {
            match event {
                FinalizerEvent::Apply(ks) => reconcile_apply(ks, &ctx).await,
                FinalizerEvent::Cleanup(ks) => cleanup(ks, &ctx).await,
            }
        })
        .await
        .map_err(|e| ReconcileFailure(Box::new(e)))
    }
    .instrument(span)
    .await
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

/// Hash of what dependents care about: Ready status and the last applied revision.
fn readiness_of(ks: &Kustomization) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let status = ks.status.as_ref()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    conditions::is_ready(&status.conditions).hash(&mut hasher);
    status.last_applied_revision.hash(&mut hasher);
    Some(hasher.finish())
}

/// Hash of a GitRepository's artifact revision and digest.
fn artifact_of(repo: &GitRepository) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let artifact = repo.status.as_ref()?.artifact.as_ref()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    artifact.revision.hash(&mut hasher);
    artifact.digest.hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the Kustomization controller until `shutdown` completes (reconciles in flight finish;
/// when the Kustomizations could never be listed, it returns at once, see
/// [`watch::run_until_shutdown`]). Watches reconnect with [`watch::backoff`].
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
    let repo_api: Api<GitRepository> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    const KS_RESOURCE: &str = "kustomizations.kubectl-gitops.io";
    const REPO_RESOURCE: &str = "gitrepositories.kubectl-gitops.io";
    let triggers = logged(watcher(ks_api.clone(), wc.clone()), KS_RESOURCE)
        .backoff(watch::backoff())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(requested_at),
            Default::default(),
        );

    let dependents_store = reader.clone();
    let dependency_changes = logged(watcher(ks_api, wc), KS_RESOURCE)
        .backoff(watch::backoff())
        .applied_objects()
        .predicate_filter(readiness_of, Default::default());
    let source_store = reader.clone();
    let source_changes = logged(
        watcher(repo_api, watcher::Config::default().any_semantic()),
        REPO_RESOURCE,
    )
    .backoff(watch::backoff())
    .applied_objects()
    .predicate_filter(artifact_of, Default::default());

    let reporter = Reporter {
        controller: "gitops-reconciler".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        reporter,
        client,
        kube_config,
        resolver: Arc::new(Resolver::new()),
        fetcher,
        policy,
        metrics,
        store: reader.clone(),
        impersonated: Mutex::new(HashMap::new()),
        config: config.clone(),
    });

    let shutdown = shutdown.shared();
    let controller = Controller::for_stream(triggers, reader.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrent))
        // Each watch backs off by itself (and logs why).
        .trigger_backoff(watch::trigger_backoff())
        .watches_stream(dependency_changes, move |dep: Kustomization| {
            let (Some(dep_ns), Some(dep_name)) = (dep.namespace(), dep.metadata.name.clone())
            else {
                return Vec::new();
            };
            dependents_store
                .state()
                .iter()
                .filter(|ks| {
                    let ns = ks.namespace().unwrap_or_default();
                    ks.spec.depends_on.iter().any(|d| {
                        d.name == dep_name && d.namespace.clone().unwrap_or(ns.clone()) == dep_ns
                    })
                })
                .map(|ks| StoreRef::from_obj(ks.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(source_changes, move |repo: GitRepository| {
            let (Some(repo_ns), Some(repo_name)) = (repo.namespace(), repo.metadata.name.clone())
            else {
                return Vec::new();
            };
            source_store
                .state()
                .iter()
                .filter(|ks| {
                    let ns = ks.namespace().unwrap_or_default();
                    let src = &ks.spec.source_ref;
                    src.name == repo_name && src.namespace.clone().unwrap_or(ns) == repo_ns
                })
                .map(|ks| StoreRef::from_obj(ks.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        // Watch errors were logged where they happened, reconcile errors by error_policy.
        .for_each(|_| futures::future::ready(()));
    watch::run_until_shutdown(controller, reader, shutdown, KS_RESOURCE).await;
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

    #[test]
    fn jitter_stays_within_five_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60)).as_secs_f64();
            assert!((57.0..=63.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn stage_errors_know_their_reason() {
        assert_eq!(
            StageError::Build("x".into()).reason(),
            reasons::BUILD_FAILED
        );
        assert!(StageError::DependencyCycle("a -> a".into()).is_stalled());
        assert!(!StageError::SourceNotReady("x".into()).is_stalled());
        assert_eq!(
            StageError::Prune("x".into()).reason(),
            reasons::PRUNE_FAILED
        );
    }
}
