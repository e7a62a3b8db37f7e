//! The wasmtime host: engine, module loading and caches, per-call isolation, the pipeline.

use super::bindings::{self, Policy, PolicyPre, kubectl_gitops::policy::types as wit};
use super::cache::{DiskCache, Miss, engine_hash};
use super::store::{LogBudget, StoreState};
use super::{
    ModuleSource, ObjectRef, PipelineError, PipelineOutcome, PolicyContext, PolicyError,
    PolicyKind, PolicyStep, Severity, Violation, builtin, output, tenancy,
};
use crate::api::FailurePolicy;
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, HasSelf, Instance, Lift, Linker, Lower,
    TypedFunc,
};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// The longest deadline a policy call may be given.
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);
/// How often the epoch ticker advances the engine's epoch (the deadline's granularity).
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Bytes of each pooled linear memory and table kept resident between instances (see
/// [`PolicyHost::new`]).
const KEEP_RESIDENT: usize = 512 << 10;
/// Compilations that ran past the compile timeout and are still finishing in the background
/// (Cranelift cannot be interrupted); while this many run, no new compilation starts.
const MAX_OVERDUE_COMPILES: usize = 2;

/// Limits and settings of a [`PolicyHost`]. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Directory of the on-disk cache of compiled components; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Deadline of one call (instantiate + run); default 1 s, at most [`MAX_DEADLINE`].
    pub deadline: Duration,
    /// Linear-memory cap of one instance; default 64 MiB.
    pub memory_limit: usize,
    /// Cap on what one call may return, in bytes the host would allocate (strings plus list
    /// slots); refused before the host copies anything. Default 64 MiB.
    pub max_output_bytes: usize,
    /// Cap on the number of objects a transform returns; default 100,000.
    pub max_objects: usize,
    /// Largest component accepted, in bytes; default 32 MiB.
    pub max_module_bytes: usize,
    /// Bound on compiling one component; default 60 s.
    pub compile_timeout: Duration,
    /// Instances that may exist at once (pooling allocator slots); default 32.
    pub max_instances: u32,
    /// Log lines accepted per call; default 100.
    pub log_lines_per_call: u32,
    /// Bytes kept of each log line; default 1024.
    pub log_line_bytes: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            deadline: Duration::from_secs(1),
            memory_limit: 64 << 20,
            max_output_bytes: 64 << 20,
            max_objects: 100_000,
            max_module_bytes: 32 << 20,
            compile_timeout: Duration::from_secs(60),
            max_instances: 32,
            log_lines_per_call: 100,
            log_line_bytes: 1024,
        }
    }
}

/// What a loaded policy says about itself (its `metadata` export) and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The policy's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Which operations are called.
    pub kind: PolicyKind,
    /// JSON Schema of its config, if it publishes one.
    pub config_schema: Option<String>,
    /// sha256 (hex) of the component bytes.
    pub sha256: String,
}

/// A compiled, linked, pre-instantiated component.
struct LoadedModule {
    pre: PolicyPre<StoreState>,
    /// The `transform` and `validate` exports (type-checked by `PolicyPre::new`), looked up
    /// once instead of on every call.
    transform: ComponentExportIndex,
    validate: ComponentExportIndex,
    info: ModuleInfo,
}

/// `transform(context, config, objects)`.
type TransformParams<'a> = (&'a wit::Context, &'a str, &'a [String]);
type TransformResults = (Result<Vec<String>, wit::PolicyError>,);
/// `validate(context, config, objects)`.
type ValidateParams<'a> = TransformParams<'a>;
type ValidateResults = (Vec<wit::Violation>,);

/// One object a transform returned, as the host keeps it.
enum Returned {
    /// Byte-identical to the object at the same index of the step's input.
    Same,
    /// New or changed: its text and its checked identity.
    Changed(String, ObjectRef),
}

/// Stops the epoch ticker thread when the last host handle is dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    config: HostConfig,
    deadline_ticks: u64,
    disk: Option<DiskCache>,
    builtin_digests: Vec<(&'static str, String)>,
    modules: Mutex<HashMap<String, Arc<LoadedModule>>>,
    /// `(component sha256, sha256 of the config document)` pairs that passed `validate-config`.
    valid_configs: Mutex<HashSet<(String, [u8; 32])>>,
    /// sha256 of each component whose compilation exceeded the timeout and is still running.
    overdue: Arc<Mutex<HashSet<String>>>,
    _ticker: Ticker,
}

/// The policy runtime of a process (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PolicyHost {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// WASI interfaces a guest's standard library links against; all are backed by the deny-all
/// context of [`StoreState`]. Anything else (sockets, http, ...) is refused at load.
const GRANTED_IMPORTS: &[&str] = &[
    "kubectl-gitops:policy/log@0.1.",
    "kubectl-gitops:policy/types@0.1.",
    "wasi:cli/environment@0.2.",
    "wasi:cli/exit@0.2.",
    "wasi:cli/stdin@0.2.",
    "wasi:cli/stdout@0.2.",
    "wasi:cli/stderr@0.2.",
    "wasi:cli/terminal-input@0.2.",
    "wasi:cli/terminal-output@0.2.",
    "wasi:cli/terminal-stdin@0.2.",
    "wasi:cli/terminal-stdout@0.2.",
    "wasi:cli/terminal-stderr@0.2.",
    "wasi:clocks/monotonic-clock@0.2.",
    "wasi:clocks/wall-clock@0.2.",
    "wasi:filesystem/preopens@0.2.",
    "wasi:filesystem/types@0.2.",
    "wasi:io/error@0.2.",
    "wasi:io/poll@0.2.",
    "wasi:io/streams@0.2.",
    "wasi:random/insecure-seed@0.2.",
    "wasi:random/insecure@0.2.",
    "wasi:random/random@0.2.",
];

fn import_granted(name: &str) -> bool {
    GRANTED_IMPORTS
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

impl PolicyHost {
    /// Creates the engine (pooling allocator, epoch interruption), the linker and the epoch
    /// ticker thread.
    pub fn new(config: HostConfig) -> Result<PolicyHost, PolicyError> {
        let mut config = config;
        config.deadline = config.deadline.clamp(EPOCH_TICK, MAX_DEADLINE);
        let engine_err = |e: wasmtime::Error| PolicyError::Engine(format!("{e:#}"));

        let mut pool = PoolingAllocationConfig::default();
        let instances = config.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .max_core_instances_per_component(64)
            .max_memory_size(config.memory_limit);
        // A finished instance's memory is reset for the next one. By default that is an
        // madvise, and the next instance page-faults every page back in; instead the pages it
        // wrote are found with the PAGEMAP_SCAN ioctl (Linux 6.7+; elsewhere this is off) and
        // up to KEEP_RESIDENT bytes of them are reset in place and stay resident. That halves
        // instantiation (p50 27 -> 11 us in the policy bench) and cuts its tail. The cost is at
        // most KEEP_RESIDENT of resident memory per pool slot that was used.
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(engine_err)?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        Policy::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(engine_err)?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            // The ticker is a plain OS thread so a busy async runtime cannot delay deadlines.
            std::thread::Builder::new()
                .name("policy-epoch".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    PolicyError::Engine(format!("starting the epoch ticker thread: {e}"))
                })?;
        }

        let disk = config
            .cache_dir
            .clone()
            .map(|dir| DiskCache::new(dir, engine_hash(&engine)));
        let builtin_digests = builtin::BUILTINS
            .iter()
            .map(|(name, bytes)| (*name, sha256_hex(bytes)))
            .collect();
        let deadline_ticks =
            config.deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1;
        Ok(PolicyHost {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                deadline_ticks,
                disk,
                builtin_digests,
                modules: Mutex::new(HashMap::new()),
                valid_configs: Mutex::new(HashSet::new()),
                overdue: Arc::new(Mutex::new(HashSet::new())),
                _ticker: Ticker { stop },
            }),
        })
    }

    /// The effective configuration (deadline clamped).
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// How many compilations exceeded the compile timeout and are still finishing in the
    /// background (at most 2; each is bounded by the module size cap).
    pub fn overdue_compiles(&self) -> usize {
        lock(&self.inner.overdue).len()
    }

    /// Loads (verifies, compiles or fetches from a cache, links) the module of step `policy`
    /// and returns what it says about itself.
    pub fn load(&self, policy: &str, source: &ModuleSource) -> Result<ModuleInfo, PolicyError> {
        self.module(policy, source).map(|m| m.info.clone())
    }

    /// Runs the step's `validate-config` (memoised per module digest and config).
    pub fn validate_config(&self, step: &PolicyStep) -> Result<(), PolicyError> {
        let module = self.module(&step.name, &step.module)?;
        self.check_config(&step.name, &module, &step.config.to_string())
    }

    fn module(
        &self,
        policy: &str,
        source: &ModuleSource,
    ) -> Result<Arc<LoadedModule>, PolicyError> {
        let inner = &self.inner;
        let (bytes, sha256): (&[u8], String) = match source {
            ModuleSource::Builtin(name) => {
                let bytes = builtin::bytes(name).ok_or_else(|| PolicyError::UnknownBuiltin {
                    policy: policy.to_owned(),
                    name: name.clone(),
                })?;
                let sha = inner
                    .builtin_digests
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| sha256_hex(bytes));
                (bytes, sha)
            }
            ModuleSource::Component { bytes, sha256 } => {
                if sha256.len() != 64
                    || !sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(PolicyError::BadDigest {
                        policy: policy.to_owned(),
                        sha256: sha256.clone(),
                    });
                }
                let actual = sha256_hex(bytes);
                if actual != *sha256 {
                    return Err(PolicyError::DigestMismatch {
                        policy: policy.to_owned(),
                        expected: sha256.clone(),
                        actual,
                    });
                }
                (bytes, actual)
            }
        };
        if let Some(m) = lock(&inner.modules).get(&sha256) {
            return Ok(m.clone());
        }
        if bytes.len() > inner.config.max_module_bytes {
            return Err(PolicyError::ModuleTooLarge {
                policy: policy.to_owned(),
                size: bytes.len(),
                limit: inner.config.max_module_bytes,
            });
        }
        let component = self.component(policy, bytes, &sha256)?;
        let module = Arc::new(self.link(policy, &component, sha256.clone())?);
        lock(&inner.modules).insert(sha256, module.clone());
        Ok(module)
    }

    /// The compiled component: from the disk cache if a verified entry exists, else compiled
    /// (bounded in time) and written back.
    fn component(
        &self,
        policy: &str,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Component, PolicyError> {
        let inner = &self.inner;
        if let Some(disk) = &inner.disk {
            match disk.read(sha256) {
                Ok(payload) => {
                    // SAFETY: `deserialize` runs native code produced by Cranelift, so it must
                    // only see bytes that this engine configuration serialized. The payload
                    // comes from our own cache directory, under a name keyed by the engine's
                    // compatibility hash, and its sha256 was just verified against the header
                    // written together with it (cache.rs), so it is exactly what
                    // `Component::serialize` produced.
                    match unsafe { Component::deserialize(&inner.engine, &payload) } {
                        Ok(c) => return Ok(c),
                        Err(e) => {
                            tracing::warn!(policy, sha256, error = %e, "cached compiled policy rejected; recompiling")
                        }
                    }
                }
                Err(Miss::Absent) => {}
                Err(Miss::Corrupt(why)) => {
                    tracing::warn!(policy, sha256, reason = %why, "corrupted policy cache entry; recompiling")
                }
            }
        }
        let started = Instant::now();
        let timeout = || PolicyError::CompileTimeout {
            policy: policy.to_owned(),
            limit: inner.config.compile_timeout,
        };
        {
            // A module whose compilation already overran is refused until that compilation
            // ends, and overdue compilations are capped: a hostile module cannot pile up
            // compile threads by being retried.
            let overdue = lock(&inner.overdue);
            if overdue.contains(sha256) {
                return Err(timeout());
            }
            if overdue.len() >= MAX_OVERDUE_COMPILES {
                return Err(PolicyError::Engine(format!(
                    "policy {policy}: not compiling while {} earlier compilations that exceeded the compile timeout are still running",
                    overdue.len()
                )));
            }
        }
        let engine = inner.engine.clone();
        let owned: Arc<[u8]> = Arc::from(bytes);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let overdue = inner.overdue.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let (digest, done) = (sha256.to_owned(), finished.clone());
        std::thread::Builder::new()
            .name("policy-compile".to_owned())
            .spawn(move || {
                let _ = tx.send(Component::new(&engine, &owned[..]));
                // Under the lock, so a caller that timed out either sees `finished` or has
                // already registered the entry removed here.
                let mut overdue = lock(&overdue);
                done.store(true, Ordering::SeqCst);
                overdue.remove(&digest);
            })
            .map_err(|e| PolicyError::Engine(format!("starting a compile thread: {e}")))?;
        // On timeout the thread finishes in the background (Cranelift cannot be interrupted;
        // the size cap bounds how long that can take) and is accounted in `overdue`.
        let component = match rx.recv_timeout(inner.config.compile_timeout) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(PolicyError::InvalidComponent {
                    policy: policy.to_owned(),
                    reason: error_text(&e),
                });
            }
            Err(_) => {
                let mut overdue = lock(&inner.overdue);
                if !finished.load(Ordering::SeqCst) {
                    overdue.insert(sha256.to_owned());
                }
                return Err(timeout());
            }
        };
        tracing::debug!(
            policy,
            sha256,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled policy component"
        );
        if let Some(disk) = &inner.disk {
            match component.serialize() {
                Ok(payload) => {
                    if let Err(e) = disk.write(sha256, &payload) {
                        tracing::warn!(policy, sha256, error = %e, "could not write the policy cache entry");
                    }
                }
                Err(e) => {
                    tracing::warn!(policy, sha256, error = %e, "could not serialize a compiled policy")
                }
            }
        }
        Ok(component)
    }

    /// Checks imports, links, type-checks the world, and reads the metadata.
    fn link(
        &self,
        policy: &str,
        component: &Component,
        sha256: String,
    ) -> Result<LoadedModule, PolicyError> {
        let inner = &self.inner;
        let invalid = |e: wasmtime::Error| PolicyError::InvalidComponent {
            policy: policy.to_owned(),
            reason: error_text(&e),
        };
        for (name, _) in component.component_type().imports(&inner.engine) {
            if !import_granted(name) {
                return Err(PolicyError::ImportDenied {
                    policy: policy.to_owned(),
                    import: name.to_owned(),
                });
            }
        }
        let pre = inner.linker.instantiate_pre(component).map_err(invalid)?;
        let pre = PolicyPre::new(pre).map_err(invalid)?;
        let missing = |export: &str| PolicyError::InvalidComponent {
            policy: policy.to_owned(),
            reason: format!("no export {export:?}"),
        };
        let transform = component
            .get_export_index(None, "transform")
            .ok_or_else(|| missing("transform"))?;
        let validate = component
            .get_export_index(None, "validate")
            .ok_or_else(|| missing("validate"))?;
        let metadata = self.call(&pre, policy, "metadata", |instance, store| {
            Policy::new(&mut *store, instance)?.call_metadata(store)
        })?;
        let kind = match metadata.kind {
            wit::PolicyKind::Transform => PolicyKind::Transform,
            wit::PolicyKind::Validate => PolicyKind::Validate,
            wit::PolicyKind::Both => PolicyKind::Both,
        };
        Ok(LoadedModule {
            pre,
            transform,
            validate,
            info: ModuleInfo {
                name: metadata.name,
                version: metadata.version,
                description: metadata.description,
                kind,
                config_schema: metadata.config_schema,
                sha256,
            },
        })
    }

    /// One call in a fresh instance, with the deadline, memory cap and output cap. `f` calls
    /// one export of `instance`; the instance and its store are dropped afterwards.
    fn call<R>(
        &self,
        pre: &PolicyPre<StoreState>,
        policy: &str,
        operation: &'static str,
        f: impl FnOnce(&Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut store = Store::new(
            &inner.engine,
            StoreState::new(
                Arc::from(policy),
                config.memory_limit,
                LogBudget {
                    lines: config.log_lines_per_call,
                    line_bytes: config.log_line_bytes,
                },
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(inner.deadline_ticks);
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(config.max_output_bytes);
        let result = pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        let dropped = store.data().dropped_logs;
        if dropped > 0 {
            tracing::warn!(
                policy,
                dropped,
                "policy log lines over the per-call limit were dropped"
            );
        }
        result.map_err(|e| {
            let policy = policy.to_owned();
            if store.data().limiter.hit {
                return PolicyError::MemoryExhausted {
                    policy,
                    operation,
                    limit: config.memory_limit,
                };
            }
            if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
                return PolicyError::Timeout {
                    policy,
                    operation,
                    deadline: config.deadline,
                };
            }
            let text = error_text(&e);
            // wasmtime's hostcall fuel bounds what lifting a result may allocate.
            if text.contains("fuel allocated for hostcalls has been exhausted") {
                return PolicyError::OutputTooLarge {
                    policy,
                    operation,
                    limit: config.max_output_bytes,
                };
            }
            PolicyError::Trap {
                policy,
                operation,
                trap: text,
            }
        })
    }

    fn check_config(
        &self,
        policy: &str,
        module: &LoadedModule,
        config: &str,
    ) -> Result<(), PolicyError> {
        let key = (
            module.info.sha256.clone(),
            Sha256::digest(config.as_bytes()).into(),
        );
        if lock(&self.inner.valid_configs).contains(&key) {
            return Ok(());
        }
        self.call(&module.pre, policy, "validate-config", |instance, store| {
            Policy::new(&mut *store, instance)?.call_validate_config(store, &config.to_owned())
        })?
        .map_err(|e| PolicyError::InvalidConfig {
            policy: policy.to_owned(),
            path: e.path,
            message: e.message,
        })?;
        let mut valid = lock(&self.inner.valid_configs);
        if valid.len() >= 4096 {
            valid.clear();
        }
        valid.insert(key);
        Ok(())
    }

    /// Runs `steps` over `objects` (blocking; call it from `spawn_blocking` in async code).
    ///
    /// Expected flow: every module is loaded and every config validated first (nothing runs
    /// if one fails); then each transforming step in order (each sees the previous output;
    /// every output object is checked to be a Kubernetes object, and against
    /// `ctx.tenancy` when set); then each validating step on the final objects.
    ///
    /// Guarantees: a step that fails with `failure_policy: Ignore` is skipped (the objects stay
    /// as they were before it) and reported in `ignored_failures`; any other failure returns
    /// [`PipelineError::Failed`] naming the step; violations of severity error from any step
    /// return [`PipelineError::Denied`] with all of them (warnings included). No partial result
    /// is ever returned.
    pub fn run_pipeline(
        &self,
        steps: &[PolicyStep],
        ctx: &PolicyContext,
        objects: Vec<Value>,
    ) -> Result<PipelineOutcome, PipelineError> {
        let mut outcome = PipelineOutcome::default();
        let mut loaded = Vec::with_capacity(steps.len());
        for step in steps {
            let config = step.config.to_string();
            let module = self
                .module(&step.name, &step.module)
                .and_then(|m| self.check_config(&step.name, &m, &config).map(|()| m));
            match module {
                Ok(m) => loaded.push((step, m, config)),
                Err(e) => ignore_or_fail(step, e, &mut outcome)?,
            }
        }

        let wit_ctx = wit::Context {
            kustomization_namespace: ctx.kustomization_namespace.clone(),
            kustomization_name: ctx.kustomization_name.clone(),
            source_revision: ctx.source_revision.clone(),
            target_namespace: ctx.target_namespace.clone(),
            dry_run: ctx.dry_run,
        };
        let parallel = objects.len() >= PARALLEL_FROM;
        let mut current = Documents {
            texts: map_all(&objects, parallel, Value::to_string),
            origins: (0..objects.len()).map(Some).collect(),
        };
        let tenancy = ctx
            .tenancy
            .as_ref()
            .map(|t| tenancy::Input::new(ctx, t, &objects));
        for (step, module, config) in loaded.iter().filter(|(_, m, _)| m.info.kind.transforms()) {
            if let Err(e) = self.transform_step(
                step,
                module,
                config,
                &wit_ctx,
                tenancy.as_ref(),
                &mut current,
            ) {
                ignore_or_fail(step, e, &mut outcome)?;
            }
        }
        drop(tenancy);
        let docs = &current.texts;

        // The validations are independent of each other and of reading the changed documents
        // back into values (wasted only when a validation denies), so with enough objects they
        // run side by side.
        let validating: Vec<_> = loaded
            .iter()
            .filter(|(_, m, _)| m.info.kind.validates())
            .collect();
        let validate = |(step, module, config): &&(&PolicyStep, Arc<LoadedModule>, String)| {
            self.call(&module.pre, &step.name, "validate", |instance, store| {
                let func = typed_export::<ValidateParams<'_>, ValidateResults>(
                    instance,
                    store,
                    &module.validate,
                )?;
                Ok(func
                    .call(&mut *store, (&wit_ctx, config.as_str(), docs.as_slice()))?
                    .0)
            })
        };
        let changed: Vec<&String> = docs
            .iter()
            .zip(&current.origins)
            .filter(|(_, origin)| origin.is_none())
            .map(|(text, _)| text)
            .collect();
        let validate_all = || map_all(&validating, parallel, validate);
        let reread_all = || {
            map_all(&changed, parallel, |text| {
                serde_json::from_str::<Value>(text)
            })
        };
        let (findings, reread) = if parallel {
            rayon::join(validate_all, reread_all)
        } else {
            (validate_all(), reread_all())
        };
        let mut denials = Vec::new();
        for ((step, _, _), found) in validating.iter().zip(findings) {
            match found {
                Ok(violations) => {
                    for v in violations {
                        let v = violation(&step.name, v);
                        match v.severity {
                            Severity::Error => denials.push(v),
                            Severity::Warning => outcome.warnings.push(v),
                        }
                    }
                }
                Err(e) => ignore_or_fail(step, e, &mut outcome)?,
            }
        }
        if !denials.is_empty() {
            denials.append(&mut outcome.warnings);
            return Err(PipelineError::Denied {
                violations: denials,
            });
        }
        // An object no transform changed is the input value itself; only changed ones were
        // parsed again (their syntax was checked when they were returned).
        let mut originals: Vec<Option<Value>> = objects.into_iter().map(Some).collect();
        // `reread` holds the changed documents in order, one per object without an origin.
        let mut reread = reread.into_iter();
        let mut objects = Vec::with_capacity(docs.len());
        for origin in &current.origins {
            let value = match origin {
                Some(i) => originals.get_mut(*i).and_then(Option::take),
                None => reread.next().transpose().map_err(|e| {
                    PolicyError::Engine(format!("re-reading checked policy output: {e}"))
                })?,
            }
            .ok_or_else(|| PolicyError::Engine("pipeline lost track of an object".into()))?;
            objects.push(value);
        }
        outcome.objects = objects;
        Ok(outcome)
    }

    /// Runs one transform over `current` and, if everything it returned passed the checks,
    /// replaces `current` with its output (otherwise `current` is left as it was).
    #[allow(clippy::too_many_arguments)] // one private call site; the pieces are unrelated
    fn transform_step(
        &self,
        step: &PolicyStep,
        module: &LoadedModule,
        config: &str,
        wit_ctx: &wit::Context,
        tenancy: Option<&tenancy::Input<'_>>,
        current: &mut Documents,
    ) -> Result<(), PolicyError> {
        let policy = step.name.as_str();
        let limits = &self.inner.config;
        let texts = &current.texts;
        let out = self
            .call(&module.pre, policy, "transform", |instance, store| {
                let func = typed_export::<TransformParams<'_>, TransformResults>(
                    instance,
                    store,
                    &module.transform,
                )?;
                Ok(func
                    .call(&mut *store, (wit_ctx, config, texts.as_slice()))?
                    .0)
            })?
            .map_err(|e| PolicyError::Failed {
                policy: policy.to_owned(),
                object: e.object.map(|o| Box::new(wit_object_ref(o))),
                message: e.message,
            })?;
        if out.len() > limits.max_objects {
            return Err(PolicyError::TooManyObjects {
                policy: policy.to_owned(),
                count: out.len(),
                limit: limits.max_objects,
            });
        }
        let mut returned = Vec::with_capacity(out.len());
        for (index, text) in out.into_iter().enumerate() {
            // Returned exactly as it was handed in: already checked and identified.
            if texts.get(index) == Some(&text) {
                returned.push(Returned::Same);
                continue;
            }
            let r = output::identify(&text).map_err(|reason| PolicyError::MalformedOutput {
                policy: policy.to_owned(),
                index,
                reason,
            })?;
            returned.push(Returned::Changed(text, r));
        }
        if let Some(input) = tenancy {
            let changed = returned.iter().filter_map(|r| match r {
                Returned::Same => None,
                Returned::Changed(_, r) => Some(r),
            });
            input.check(changed, policy)?;
        }
        // Every check passed: the unchanged objects move over from the step's input.
        let mut next = Documents {
            texts: Vec::with_capacity(returned.len()),
            origins: Vec::with_capacity(returned.len()),
        };
        for (index, r) in returned.into_iter().enumerate() {
            match r {
                Returned::Same => {
                    next.texts.push(std::mem::take(&mut current.texts[index]));
                    next.origins.push(current.origins[index]);
                }
                Returned::Changed(text, _) => {
                    next.texts.push(text);
                    next.origins.push(None);
                }
            }
        }
        *current = next;
        Ok(())
    }
}

/// The export at `index` as a typed function.
fn typed_export<P, R>(
    instance: &Instance,
    store: &mut Store<StoreState>,
    index: &ComponentExportIndex,
) -> wasmtime::Result<TypedFunc<P, R>>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    instance
        .get_func(&mut *store, index)
        .ok_or_else(|| wasmtime::Error::msg("the component lost an export it had at load"))?
        .typed::<P, R>(&*store)
}

/// The objects between two steps of a pipeline, as the JSON text the next step is given.
struct Documents {
    /// One JSON object per object.
    texts: Vec<String>,
    /// Index of the pipeline input an object is byte-identical to, if no transform changed it.
    origins: Vec<Option<usize>>,
}

/// `failurePolicy: Ignore` covers a policy that fails to *run* (deadline, memory, trap, bad
/// output, its own error). A module that cannot be trusted or loaded (digest, imports, world,
/// config) or a transform that breaks tenancy always fails the pipeline.
fn ignore_or_fail(
    step: &PolicyStep,
    e: PolicyError,
    outcome: &mut PipelineOutcome,
) -> Result<(), PipelineError> {
    let ignorable = matches!(
        e,
        PolicyError::Timeout { .. }
            | PolicyError::MemoryExhausted { .. }
            | PolicyError::Trap { .. }
            | PolicyError::OutputTooLarge { .. }
            | PolicyError::TooManyObjects { .. }
            | PolicyError::MalformedOutput { .. }
            | PolicyError::Failed { .. }
            | PolicyError::CompileTimeout { .. }
    );
    match step.failure_policy {
        FailurePolicy::Ignore if ignorable => {
            tracing::warn!(policy = %step.name, error = %e, "policy failed; skipped (failurePolicy: Ignore)");
            outcome.ignored_failures.push(e);
            Ok(())
        }
        _ => Err(PipelineError::Failed(e)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps in a consistent state, so
    // the poison flag carries no information.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The whole error chain on one line.
fn error_text(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

/// From this many objects on, a pipeline spreads the host's own work over the rayon pool:
/// serialising the input, reading changed documents back, and the validations. Below it the
/// threads would cost more than they save.
const PARALLEL_FROM: usize = 512;

/// `f` over every item, in order; on the rayon pool when `parallel`.
fn map_all<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    if parallel {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

fn wit_object_ref(r: wit::ObjectRef) -> ObjectRef {
    ObjectRef {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
    }
}

fn violation(policy: &str, v: bindings::kubectl_gitops::policy::types::Violation) -> Violation {
    Violation {
        policy: policy.to_owned(),
        object: v.object.map(wit_object_ref),
        field: v.field,
        message: v.message,
        severity: match v.severity {
            wit::Severity::Error => Severity::Error,
            wit::Severity::Warning => Severity::Warning,
        },
    }
}
