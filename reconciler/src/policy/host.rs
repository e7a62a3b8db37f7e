//! The wasmtime host: engine, module loading and caches, per-call isolation, the pipeline.

use super::bindings::{Policy, PolicyPre, kubectl_gitops::policy::types as wit, v0_1};
use super::cache::{DiskCache, Miss, engine_hash};
use super::sched::{PROBATION_FREE_SHARE, PROBATION_PAUSE, Turns};
use super::slots::{Full, Slots};
use super::store::{LogBudget, StoreState};
use super::structure::{self, CodeLimits};
use super::wasi::{self, DeadlineReached};
use super::worker::{self, WorkerError};
use super::{
    ModuleSource, ObjectRef, PipelineError, PipelineOutcome, PolicyContext, PolicyError,
    PolicyKind, PolicyStep, Severity, Violation, builtin, output, tenancy,
};
use crate::api::FailurePolicy;
use gitops_policy_sdk::GroupKind;
use gitops_policy_sdk::given::{self, splice};
use gitops_policy_sdk::object::Identity;
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, HasSelf, Instance, InstancePre, Lift,
    Linker, Lower, TypedFunc,
};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

/// The `metadata` export's operation name.
const METADATA: &str = "metadata";
/// The version of the WIT package `kubectl-gitops:policy` (`wit/policy.wit`) policies are built
/// against today...
const CONTRACT: &str = "0.2.0";
/// ...and of the first one (`wit/v0.1.0/policy.wit`), whose components still load.
const CONTRACT_V0_1: &str = "0.1.0";
/// The longest deadline a policy call may be given.
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);
/// How often the epoch ticker advances the engine's epoch (the deadline's granularity).
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Bytes of each pooled linear memory and table kept resident between instances (see
/// [`PolicyHost::new`]).
const KEEP_RESIDENT: usize = 512 << 10;
/// Compilations that ran past the compile timeout and are still finishing in the background
/// (Cranelift cannot be interrupted): while a tenant has this many, it starts no new one...
const MAX_OVERDUE_COMPILES_PER_TENANT: usize = 1;
/// ...and while the process has this many, no tenant does. Built-ins are never refused.
const MAX_OVERDUE_COMPILES: usize = 4;
/// How long a load that failed for a reason of the component's own (structure, code, imports,
/// world, `metadata`) is answered from memory instead of being tried again: a retried bad
/// module would otherwise check, deserialise and link its code and run `metadata` every time.
const FAILED_LOAD_TTL: Duration = Duration::from_secs(60);
/// Failed loads remembered at once; when full, the table is cleared.
const MAX_FAILED_LOADS: usize = 1024;

/// Limits and settings of a [`PolicyHost`]. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Directory of the on-disk cache of compiled components; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Deadline of one call (instantiate + run); default 1 s, at most `MAX_DEADLINE`.
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
    /// The reconciler binary, to compile tenants' components in a child process that is
    /// killed at the compile timeout (`worker.rs`); `None` compiles in this process (the
    /// CLI), where a compile past the timeout can only be abandoned.
    pub compile_worker: Option<PathBuf>,
    /// Instances that may exist at once (pooling allocator slots); default 32.
    pub max_instances: u32,
    /// Instances one tenant (namespace of the Kustomization) may hold at once; default 8.
    pub max_instances_per_tenant: u32,
    /// Time a tenant's failed calls may take (a token bucket draining this much per minute);
    /// beyond it the tenant's calls are refused until it drained. Default 5 s.
    pub tenant_failure_budget: Duration,
    /// Calls that may run guest code at the same time, shared fairly between tenants by recent
    /// CPU use (`sched.rs`); default one per CPU.
    pub cpu_turns: usize,
    /// Limits on the code of a component, checked before compiling.
    pub code: CodeLimits,
    /// Violations kept per validating step; the rest are counted in one summary; default 1,000.
    pub max_violations: usize,
    /// Bytes kept of each text a policy reports (violation message and field, object names,
    /// error and config messages); default 1,024.
    pub max_message_bytes: usize,
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
            compile_worker: None,
            max_instances: 32,
            max_instances_per_tenant: 8,
            tenant_failure_budget: Duration::from_secs(5),
            cpu_turns: std::thread::available_parallelism().map_or(1, usize::from),
            code: CodeLimits::default(),
            max_violations: 1_000,
            max_message_bytes: 1024,
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
    /// The kinds of object it is given; `None` for every object.
    pub kinds: Option<Vec<GroupKind>>,
    /// The version of the WIT package it was built against.
    pub contract: &'static str,
    /// sha256 (hex) of the component bytes.
    pub sha256: String,
}

impl ModuleInfo {
    /// True if the policy is given `object` (its declared kinds; every object when none).
    pub fn is_given(&self, object: &Value) -> bool {
        given::is_given(self.kinds.as_deref(), object.api_version(), object.kind())
    }
}

/// The engine configuration of a host with `config`: pooling allocator, epoch interruption.
/// A compile worker builds its engine from the same function, so what it precompiles loads
/// into the host's engine.
pub(crate) fn engine_config(config: &HostConfig) -> wasmtime::Config {
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
    wasm
}

/// A load that failed for a reason of the component's own, remembered for
/// [`FAILED_LOAD_TTL`].
struct FailedLoad {
    error: PolicyError,
    /// What the load took: charged to the failure budget of every tenant answered with it.
    cost: Duration,
    at: Instant,
}

/// A compiled, linked, pre-instantiated component.
struct LoadedModule {
    pre: InstancePre<StoreState>,
    /// The `validate-config`, `transform` and `validate` exports (type-checked by
    /// `PolicyPre::new` of either contract), looked up once instead of on every call.
    validate_config: ComponentExportIndex,
    transform: ComponentExportIndex,
    validate: ComponentExportIndex,
    info: ModuleInfo,
}

/// `transform(context, config, objects)`.
type TransformParams<'a> = (&'a wit::Context, &'a str, &'a [&'a str]);
type TransformResults = (Result<Vec<String>, wit::PolicyError>,);
/// `validate(context, config, objects)`.
type ValidateParams<'a> = TransformParams<'a>;
type ValidateResults = (Vec<wit::Violation>,);

/// One object a transform returned, as the host keeps it.
enum Returned {
    /// Byte-identical to the object at the same index of what the step was given.
    Same,
    /// New or changed: its text and its checked identity.
    Changed(String, ObjectRef),
}

/// A tenant's compilation in a worker; the tenant may start another once this is dropped.
struct Compiling<'a> {
    set: &'a Mutex<HashSet<String>>,
    tenant: String,
}

impl<'a> Compiling<'a> {
    /// `None` if the tenant already compiles.
    fn start(set: &'a Mutex<HashSet<String>>, tenant: &str) -> Option<Compiling<'a>> {
        lock(set).insert(tenant.to_owned()).then(|| Compiling {
            set,
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for Compiling<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.tenant);
    }
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
    disk: Option<DiskCache>,
    builtin_digests: Vec<(&'static str, String)>,
    modules: Mutex<HashMap<String, Arc<LoadedModule>>>,
    /// One lock per built-in digest, held while it loads: the first uses of a built-in by many
    /// reconciles at once wait for one compilation instead of each running its own (each holds
    /// Cranelift's working memory and a thread). Built-ins only: a tenant never waits on a lock
    /// another tenant's load holds. A fixed set, never pruned.
    builtin_loads: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Compilations started in this process so far.
    compiles: AtomicUsize,
    /// `(component sha256, sha256 of the config document)` pairs that passed `validate-config`.
    valid_configs: Mutex<HashSet<(String, [u8; 32])>>,
    /// Loads that failed for a reason of the component's own, by (sha256, step name).
    failed_loads: Mutex<HashMap<(String, String), FailedLoad>>,
    /// sha256 of each component whose compilation exceeded the timeout and is still running,
    /// with the tenant that asked for it.
    overdue: Arc<Mutex<HashMap<String, String>>>,
    /// Tenants with a compilation running in a worker process (one each).
    compiling: Mutex<HashSet<String>>,
    /// Instance slots of the pool, shared by every tenant.
    slots: Slots,
    /// Turns to run guest code, shared by every tenant by recent CPU use.
    turns: Arc<Turns>,
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
    "kubectl-gitops:policy/log@0.2.",
    "kubectl-gitops:policy/types@0.2.",
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

        let engine = Engine::new(&engine_config(&config)).map_err(engine_err)?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(engine_err)?;
        Policy::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        v0_1::Policy::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(engine_err)?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            // The ticker is a plain OS thread so a busy async runtime cannot delay deadlines.
            // Each tick only makes running guests reach their epoch check, where the deadline
            // is compared with the wall clock: a late wake-up on a loaded machine delays that
            // check, it never stretches the deadline by the number of ticks missed.
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
        let slots = Slots::new(
            config.max_instances.max(1) as usize,
            config.max_instances_per_tenant as usize,
            config.tenant_failure_budget,
        );
        let turns = {
            let engine = engine.clone();
            Arc::new(Turns::new(config.cpu_turns, move || {
                engine.increment_epoch()
            }))
        };
        Ok(PolicyHost {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                disk,
                builtin_digests,
                modules: Mutex::new(HashMap::new()),
                builtin_loads: Mutex::new(HashMap::new()),
                compiles: AtomicUsize::new(0),
                valid_configs: Mutex::new(HashSet::new()),
                failed_loads: Mutex::new(HashMap::new()),
                overdue: Arc::new(Mutex::new(HashMap::new())),
                compiling: Mutex::new(HashSet::new()),
                slots,
                turns,
                _ticker: Ticker { stop },
            }),
        })
    }

    /// The effective configuration (deadline clamped).
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// How many compilations exceeded the compile timeout and are still finishing in the
    /// background (at most 4, at most 1 per tenant; each is bounded by the code limits).
    pub fn overdue_compiles(&self) -> usize {
        lock(&self.inner.overdue).len()
    }

    /// Compilations started in this process so far (worker processes' not counted).
    pub fn compiles(&self) -> usize {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// Instance slots taken right now (0 when no call runs).
    pub fn slots_in_use(&self) -> usize {
        self.inner.slots.in_use()
    }

    /// Compilations running in worker processes right now (each worker is reaped before it
    /// stops counting).
    pub fn compile_workers(&self) -> usize {
        lock(&self.inner.compiling).len()
    }

    /// CPU turns held right now (0 when no call runs).
    pub fn turns_in_use(&self) -> usize {
        self.inner.turns.running()
    }

    /// Loads (verifies, compiles or fetches from a cache, links) the module of step `policy`
    /// and returns what it says about itself. Runs as the tenant `""` (local use).
    pub fn load(&self, policy: &str, source: &ModuleSource) -> Result<ModuleInfo, PolicyError> {
        self.module(policy, source, "").map(|m| m.info.clone())
    }

    /// Runs the step's `validate-config` (memoised per module digest and config) as the
    /// tenant `""` (local use).
    pub fn validate_config(&self, step: &PolicyStep) -> Result<(), PolicyError> {
        let module = self.module(&step.name, &step.module, "")?;
        self.check_config(&step.name, &module, &step.config.to_string(), "")
    }

    /// The loaded module of `source`; `tenant` (the namespace of the Kustomization) is charged
    /// for the instance slots and compilations this needs.
    fn module(
        &self,
        policy: &str,
        source: &ModuleSource,
        tenant: &str,
    ) -> Result<Arc<LoadedModule>, PolicyError> {
        let inner = &self.inner;
        let builtin = matches!(source, ModuleSource::Builtin(_));
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
        let loading = builtin.then(|| {
            lock(&inner.builtin_loads)
                .entry(sha256.clone())
                .or_default()
                .clone()
        });
        let _loading = loading.as_deref().map(lock);
        if loading.is_some()
            && let Some(m) = lock(&inner.modules).get(&sha256)
        {
            return Ok(m.clone());
        }
        if bytes.len() > inner.config.max_module_bytes {
            return Err(PolicyError::ModuleTooLarge {
                policy: policy.to_owned(),
                size: bytes.len(),
                limit: inner.config.max_module_bytes,
            });
        }
        if !builtin {
            // A tenant over its failure budget does not get to compile or load either.
            inner
                .slots
                .admit(tenant)
                .map_err(|full| self.refused(policy, "load", tenant, full))?;
        }
        // The whole load (structure check, compile or cache read, link, `metadata`) is charged
        // to the tenant's failure budget when it fails: a module that never loads costs its
        // tenant the time it takes on every retry, like a failing call. A failure of the
        // component's own is remembered and charged again on every retry, without the work.
        let failed_key = (sha256.clone(), policy.to_owned());
        if !builtin {
            let mut failed = lock(&inner.failed_loads);
            match failed.get(&failed_key) {
                Some(f) if f.at.elapsed() < FAILED_LOAD_TTL => {
                    inner.slots.charge(tenant, f.cost);
                    return Err(f.error.clone());
                }
                Some(_) => {
                    failed.remove(&failed_key);
                }
                None => {}
            }
        }
        let started = Instant::now();
        let loaded = self
            .component(policy, bytes, &sha256, (!builtin).then_some(tenant))
            .and_then(|component| self.link(policy, &component, sha256.clone(), tenant));
        let module = match loaded {
            Ok(m) => Arc::new(m),
            Err(e) => {
                if !builtin && !matches!(e, PolicyError::NoInstanceSlot { .. }) {
                    let cost = started.elapsed();
                    inner.slots.charge(tenant, cost);
                    // Retried failures (compile capacity, slots) are not the component's own.
                    if e.is_stalling() {
                        let mut failed = lock(&inner.failed_loads);
                        if failed.len() >= MAX_FAILED_LOADS {
                            failed.clear();
                        }
                        let at = Instant::now();
                        failed.insert(
                            failed_key,
                            FailedLoad {
                                error: e.clone(),
                                cost,
                                at,
                            },
                        );
                    }
                }
                return Err(e);
            }
        };
        lock(&inner.modules).insert(sha256, module.clone());
        Ok(module)
    }

    /// The compiled component, once its bytes passed [`structure::check`]: from the disk cache
    /// if a verified entry exists, else compiled (bounded in time) and written back. `tenant` is `None`
    /// for a built-in: those are trusted, and never wait for or are refused because of a
    /// tenant's compilations.
    fn component(
        &self,
        policy: &str,
        bytes: &[u8],
        sha256: &str,
        tenant: Option<&str>,
    ) -> Result<Component, PolicyError> {
        let inner = &self.inner;
        // Before the disk cache too: an entry compiled by an earlier version of the host (which
        // may have accepted more) never bypasses the check.
        structure::check(bytes, &inner.config.code).map_err(|reason| {
            PolicyError::InvalidComponent {
                policy: policy.to_owned(),
                reason,
            }
        })?;
        if let Some(disk) = &inner.disk {
            match disk.read(sha256) {
                Ok(payload) => {
                    // SAFETY: `deserialize` runs native code produced by Cranelift, so it must
                    // only see bytes that this engine configuration serialized. The payload
                    // comes from our own cache directory, under a name keyed by the engine's
                    // compatibility hash, and its sha256 was just verified against the header
                    // written together with it (cache.rs), so it is exactly what
                    // `Component::serialize` produced.
                    #[allow(unsafe_code)]
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
        if let (Some(tenant), Some(program)) = (tenant, &inner.config.compile_worker) {
            return self.compile_in_worker(policy, program, bytes, sha256, tenant);
        }
        let started = Instant::now();
        let timeout = || PolicyError::CompileTimeout {
            policy: policy.to_owned(),
            limit: inner.config.compile_timeout,
        };
        if let Some(tenant) = tenant {
            // A module whose compilation already overran is refused until that compilation
            // ends, and overdue compilations are capped per tenant and in all: a hostile
            // module cannot pile up compile threads by being retried, and one tenant's
            // overdue compilations never stop another tenant's.
            let overdue = lock(&inner.overdue);
            if overdue.contains_key(sha256) {
                return Err(timeout());
            }
            let mine = overdue.values().filter(|t| *t == tenant).count();
            if mine >= MAX_OVERDUE_COMPILES_PER_TENANT || overdue.len() >= MAX_OVERDUE_COMPILES {
                return Err(PolicyError::CompileBusy {
                    policy: policy.to_owned(),
                    tenant_overdue: mine,
                    overdue: overdue.len(),
                });
            }
        }
        let engine = inner.engine.clone();
        let owned: Arc<[u8]> = Arc::from(bytes);
        inner.compiles.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let overdue = inner.overdue.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let (digest, done) = (sha256.to_owned(), finished.clone());
        std::thread::Builder::new()
            .name("policy-compile".to_owned())
            .spawn(move || {
                // Binary only: the text format is never compiled for a tenant.
                let _ = tx.send(Component::from_binary(&engine, &owned[..]));
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
                    overdue.insert(sha256.to_owned(), tenant.unwrap_or("(built-in)").to_owned());
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
        if inner.disk.is_some() {
            match component.serialize() {
                Ok(payload) => self.write_back(policy, sha256, &payload),
                Err(e) => {
                    tracing::warn!(policy, sha256, error = %e, "could not serialize a compiled policy")
                }
            }
        }
        Ok(component)
    }

    /// Writes compiled code to the disk cache, if there is one (a failure is only logged).
    fn write_back(&self, policy: &str, sha256: &str, payload: &[u8]) {
        if let Some(disk) = &self.inner.disk
            && let Err(e) = disk.write(sha256, payload)
        {
            tracing::warn!(policy, sha256, error = %e, "could not write the policy cache entry");
        }
    }

    /// Compiles a tenant's component in a worker process (`worker.rs`), killed at the compile
    /// timeout. A tenant compiles one component at a time; nothing else waits for it (the
    /// built-ins compile in this process, other tenants in their own workers).
    fn compile_in_worker(
        &self,
        policy: &str,
        program: &std::path::Path,
        bytes: &[u8],
        sha256: &str,
        tenant: &str,
    ) -> Result<Component, PolicyError> {
        let inner = &self.inner;
        let _compiling = Compiling::start(&inner.compiling, tenant).ok_or_else(|| {
            PolicyError::TenantCompiling {
                policy: policy.to_owned(),
                tenant: tenant.to_owned(),
            }
        })?;
        let started = Instant::now();
        let compiled = worker::compile(program, &inner.config, bytes, inner.config.compile_timeout)
            .map_err(|e| match e {
                WorkerError::Timeout => PolicyError::CompileTimeout {
                    policy: policy.to_owned(),
                    limit: inner.config.compile_timeout,
                },
                WorkerError::Failed(reason) => PolicyError::InvalidComponent {
                    policy: policy.to_owned(),
                    reason: clip(reason, inner.config.max_message_bytes),
                },
            })?;
        // SAFETY: `deserialize` runs native code, so it must only see what an engine of this
        // configuration produced. The bytes are what `Engine::precompile_component` wrote in
        // the worker: this same binary, re-executed by us, with the engine built by the same
        // `engine_config` from the same settings, read from a pipe only it and we hold.
        // wasmtime also checks the header (version, target, settings) and refuses a mismatch.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(&inner.engine, &compiled) }.map_err(|e| {
                PolicyError::InvalidComponent {
                    policy: policy.to_owned(),
                    reason: format!("the compile worker's output did not load: {e:#}"),
                }
            })?;
        tracing::debug!(
            policy,
            sha256,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled policy component in a worker"
        );
        self.write_back(policy, sha256, &compiled);
        Ok(component)
    }

    /// Checks imports, links, type-checks the world, and reads the metadata.
    fn link(
        &self,
        policy: &str,
        component: &Component,
        sha256: String,
        tenant: &str,
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
        // The world's exports say which contract a component implements: a `metadata` of
        // 0.1.0 lacks `kinds`.
        let (metadata, contract) = match PolicyPre::new(pre.clone()) {
            Ok(_) => {
                let metadata = self.call(&pre, policy, tenant, METADATA, |instance, store| {
                    Policy::new(&mut *store, instance)?.call_metadata(store)
                })?;
                (metadata, CONTRACT)
            }
            Err(current) => {
                v0_1::PolicyPre::new(pre.clone()).map_err(|old| PolicyError::InvalidComponent {
                    policy: policy.to_owned(),
                    reason: format!(
                        "it implements neither kubectl-gitops:policy@{CONTRACT} ({}) nor @{CONTRACT_V0_1} ({})",
                        error_text(&current),
                        error_text(&old)
                    ),
                })?;
                let m = self.call(&pre, policy, tenant, METADATA, |instance, store| {
                    v0_1::Policy::new(&mut *store, instance)?.call_metadata(store)
                })?;
                let kind = match m.kind {
                    v0_1::kubectl_gitops::policy::types::PolicyKind::Transform => {
                        wit::PolicyKind::Transform
                    }
                    v0_1::kubectl_gitops::policy::types::PolicyKind::Validate => {
                        wit::PolicyKind::Validate
                    }
                    v0_1::kubectl_gitops::policy::types::PolicyKind::Both => wit::PolicyKind::Both,
                };
                let metadata = wit::Metadata {
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    kind,
                    config_schema: m.config_schema,
                    kinds: None,
                };
                (metadata, CONTRACT_V0_1)
            }
        };
        let missing = |export: &str| PolicyError::InvalidComponent {
            policy: policy.to_owned(),
            reason: format!("no export {export:?}"),
        };
        let validate_config = component
            .get_export_index(None, "validate-config")
            .ok_or_else(|| missing("validate-config"))?;
        let transform = component
            .get_export_index(None, "transform")
            .ok_or_else(|| missing("transform"))?;
        let validate = component
            .get_export_index(None, "validate")
            .ok_or_else(|| missing("validate"))?;
        check_metadata(&metadata).map_err(|reason| PolicyError::InvalidComponent {
            policy: policy.to_owned(),
            reason: format!("its metadata {reason}"),
        })?;
        let kind = match metadata.kind {
            wit::PolicyKind::Transform => PolicyKind::Transform,
            wit::PolicyKind::Validate => PolicyKind::Validate,
            wit::PolicyKind::Both => PolicyKind::Both,
        };
        Ok(LoadedModule {
            pre,
            validate_config,
            transform,
            validate,
            info: ModuleInfo {
                name: metadata.name,
                version: metadata.version,
                description: metadata.description,
                kind,
                config_schema: metadata.config_schema,
                kinds: metadata.kinds.map(|kinds| {
                    kinds
                        .into_iter()
                        .map(|k| GroupKind {
                            group: k.group,
                            kind: k.kind,
                        })
                        .collect()
                }),
                contract,
                sha256,
            },
        })
    }

    /// One call in a fresh instance, with the deadline, memory cap and output cap. `f` calls
    /// one export of `instance`; the instance and its store are dropped afterwards, and then
    /// the instance slot `tenant` was charged for is given back.
    ///
    /// The deadline covers everything: waiting for a slot, instantiating, the guest's code
    /// (epoch interruption) and every host function it calls (`wasi.rs`).
    fn call<R>(
        &self,
        pre: &InstancePre<StoreState>,
        policy: &str,
        tenant: &str,
        operation: &'static str,
        f: impl FnOnce(&Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let inner = &self.inner;
        let config = &inner.config;
        let deadline = Instant::now() + config.deadline;
        // A call never waits for a slot while its pipeline keeps a CPU turn: the slot may be
        // held by a call of the same tenant that waits for that very turn.
        let mut slot = match inner.slots.take(tenant, Instant::now()) {
            Ok(slot) => slot,
            Err(Full::Budget(wait)) => {
                return Err(self.refused(policy, operation, tenant, Full::Budget(wait)));
            }
            Err(_) => {
                Turns::give_back_kept();
                inner
                    .slots
                    .take(tenant, deadline)
                    .map_err(|full| self.refused(policy, operation, tenant, full))?
            }
        };
        let mut store = Store::new(
            &inner.engine,
            StoreState::new(
                Arc::from(policy),
                deadline,
                config.memory_limit,
                LogBudget {
                    lines: config.log_lines_per_call,
                    line_bytes: config.log_line_bytes,
                },
            ),
        );
        store.limiter(|s| &mut s.limiter);
        // On probation a call pauses at its epoch checks. When every recent failure of the
        // tenant was short (a trap, a memory cap), its first part still runs at full speed, so
        // its working policies are not pushed past their deadline by another one's quick
        // failure; once a failed call of the tenant ran longer than that part, it pauses from
        // its start.
        let free = config.deadline.mul_f64(PROBATION_FREE_SHARE);
        store.data_mut().probation = slot.on_probation().map(|longest| {
            if longest >= free {
                Instant::now()
            } else {
                Instant::now() + free
            }
        });
        // Guest code reaches an epoch check at every tick of the ticker (and when `Turns`
        // advances the epoch to preempt it): there the wall-clock deadline is enforced and the
        // turn is given up to a tenant that used less CPU; a call on probation pauses there.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            let deadline = state.deadline();
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            let paused = state.probation.is_some_and(|from| Instant::now() >= from);
            if let Some(turn) = state.turn.as_mut() {
                if paused {
                    turn.pause(PROBATION_PAUSE, deadline)
                } else {
                    turn.yield_if_asked(deadline)
                }
                .map_err(|_| wasmtime::Error::from(Trap::Interrupt))?;
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_hostcall_fuel(config.max_output_bytes);
        let tenant_name: Arc<str> = Arc::from(tenant);
        let result = inner
            .turns
            .take_for_call(&tenant_name, deadline)
            .map_err(|_| wasmtime::Error::from(Trap::Interrupt))
            .and_then(|turn| {
                store.data_mut().turn = Some(turn);
                pre.instantiate(&mut store)
            })
            .and_then(|instance| f(&instance, &mut store));
        // The turn is given back (or kept by this thread's pipeline) before anything else is
        // done with the result.
        if let Some(turn) = store.data_mut().turn.take() {
            Turns::end_call(turn);
        }
        // Charged to the tenant's failure budget when the slot is given back; a failed
        // `metadata` call is charged with the whole load it is part of (`module`).
        if result.is_err() && operation != METADATA {
            slot.failed();
        }
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
            if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt))
                || e.downcast_ref::<DeadlineReached>().is_some()
            {
                tracing::debug!(policy, operation, error = ?e, "policy call ran out of time");
                return PolicyError::Timeout {
                    policy,
                    operation,
                    deadline: config.deadline,
                };
            }
            // wasmtime's hostcall fuel bounds what lifting a result may allocate.
            if error_text(&e).contains("fuel allocated for hostcalls has been exhausted") {
                return PolicyError::OutputTooLarge {
                    policy,
                    operation,
                    limit: config.max_output_bytes,
                };
            }
            tracing::debug!(policy, operation, error = ?e, "policy call trapped (with the wasm backtrace)");
            PolicyError::Trap {
                policy,
                operation,
                trap: trap_text(&e, &store.data().stderr.text(), config.max_message_bytes),
            }
        })
    }

    /// The error of a call (or load) that got no slot.
    fn refused(
        &self,
        policy: &str,
        operation: &'static str,
        tenant: &str,
        full: Full,
    ) -> PolicyError {
        PolicyError::NoInstanceSlot {
            policy: policy.to_owned(),
            operation,
            reason: match full {
                Full::Tenant(n) => format!(
                    "its tenant (namespace {tenant:?}) already runs {n} policy instances, its limit"
                ),
                Full::Host(n) => format!("all {n} policy instance slots are in use"),
                Full::Budget(wait) => format!(
                    "the policies of its tenant (namespace {tenant:?}) failed for more than {:?} in the last minute; its calls are refused for {}s more",
                    self.inner.config.tenant_failure_budget,
                    wait.as_secs() + 1
                ),
            },
        }
    }

    fn check_config(
        &self,
        policy: &str,
        module: &LoadedModule,
        config: &str,
        tenant: &str,
    ) -> Result<(), PolicyError> {
        let key = (
            module.info.sha256.clone(),
            Sha256::digest(config.as_bytes()).into(),
        );
        if lock(&self.inner.valid_configs).contains(&key) {
            return Ok(());
        }
        let max = self.inner.config.max_message_bytes;
        let started = Instant::now();
        let answer = self.call(
            &module.pre,
            policy,
            tenant,
            "validate-config",
            |instance, store| {
                let func = typed_export::<(&str,), (Result<(), wit::ConfigError>,)>(
                    instance,
                    store,
                    &module.validate_config,
                )?;
                Ok(func.call(&mut *store, (config,))?.0)
            },
        )?;
        // A refused config is a failure of the tenant's: its time counts against the failure
        // budget like a failed call's (a failed call was charged with its slot).
        answer.map_err(|e| {
            self.inner.slots.charge(tenant, started.elapsed());
            PolicyError::InvalidConfig {
                policy: policy.to_owned(),
                path: e.path.map(|p| clip(p, max)),
                message: clip(e.message, max),
            }
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
    /// every object a step changed or added is checked completely right there
    /// (`output::check`) and against `ctx.tenancy` when set); then each validating step on
    /// the final objects; then the changed objects of the final list are parsed, once.
    ///
    /// Guarantees: a step that fails with `failure_policy: Ignore` is skipped (the objects stay
    /// as they were before it) and reported in `ignored_failures`; any other failure returns
    /// [`PipelineError::Failed`] naming the step; violations of severity error from any step
    /// return [`PipelineError::Denied`] with all of them (warnings included; at most
    /// `max_violations` per step, the rest summarised). No partial result is ever returned.
    /// Every call is charged to the tenant `ctx.kustomization_namespace`.
    pub fn run_pipeline(
        &self,
        steps: &[PolicyStep],
        ctx: &PolicyContext,
        objects: Vec<Value>,
    ) -> Result<PipelineOutcome, PipelineError> {
        let tenant = ctx.kustomization_namespace.as_str();
        let mut outcome = PipelineOutcome::default();
        let mut loaded = Vec::with_capacity(steps.len());
        for (position, step) in steps.iter().enumerate() {
            let config = step.config.to_string();
            let module = self.module(&step.name, &step.module, tenant).and_then(|m| {
                self.check_config(&step.name, &m, &config, tenant)
                    .map(|()| m)
            });
            match module {
                Ok(m) => loaded.push((position, step, m, config)),
                Err(e) => ignore_or_fail(step, e, &mut outcome)?,
            }
        }

        // From here on the pipeline keeps a CPU turn between its calls, so its own work between
        // them is not crowded out by other tenants' guest code (not while loading: waiting for
        // a compile uses no CPU, and must not hold a turn).
        let tenant_name: Arc<str> = Arc::from(tenant);
        let mut pipeline_turn = Some(
            self.inner
                .turns
                .hold_for_pipeline(&tenant_name, Instant::now() + self.inner.config.deadline),
        );
        let wit_ctx = wit::Context {
            kustomization_namespace: ctx.kustomization_namespace.clone(),
            kustomization_name: ctx.kustomization_name.clone(),
            source_revision: ctx.source_revision.clone(),
            target_namespace: ctx.target_namespace.clone(),
            dry_run: ctx.dry_run,
        };
        let parallel = objects.len() >= PARALLEL_FROM;
        let mut current: Vec<Doc> = map_all(&objects, parallel, Value::to_string)
            .into_iter()
            .zip(&objects)
            .enumerate()
            .map(|(i, (text, value))| Doc {
                text,
                origin: Origin::Input(i),
                api_version: value.api_version().to_owned(),
                kind: value.kind().to_owned(),
            })
            .collect();
        let tenancy = ctx
            .tenancy
            .as_ref()
            .map(|t| tenancy::Input::new(ctx, t, &objects));
        for (position, step, module, config) in loaded
            .iter()
            .filter(|(_, _, m, _)| m.info.kind.transforms())
        {
            let step_ctx = StepCall {
                step,
                position: *position,
                module,
                config,
                tenant,
                wit_ctx: &wit_ctx,
            };
            let started = Instant::now();
            if let Err(e) = self.transform_step(&step_ctx, tenancy.as_ref(), &mut current) {
                // A failed call was charged to the tenant's failure budget with its slot; a
                // refused output is charged here.
                if matches!(
                    e,
                    PolicyError::Failed { .. }
                        | PolicyError::TooManyObjects { .. }
                        | PolicyError::MalformedOutput { .. }
                        | PolicyError::Tenancy { .. }
                ) {
                    self.inner.slots.charge(tenant, started.elapsed());
                }
                ignore_or_fail(step, e, &mut outcome)?;
            }
        }
        drop(tenancy);
        let docs = &current;

        // The validations are independent of each other, so with enough objects they run side
        // by side.
        let validating: Vec<_> = loaded
            .iter()
            .filter(|(_, _, m, _)| m.info.kind.validates())
            .collect();
        let validate =
            |(_, step, module, config): &&(usize, &PolicyStep, Arc<LoadedModule>, String)| {
                let sent: Vec<&str> = given_positions(docs, module.info.kinds.as_deref())
                    .into_iter()
                    .map(|i| docs[i].text.as_str())
                    .collect();
                self.call(
                    &module.pre,
                    &step.name,
                    tenant,
                    "validate",
                    |instance, store| {
                        let func = typed_export::<ValidateParams<'_>, ValidateResults>(
                            instance,
                            store,
                            &module.validate,
                        )?;
                        Ok(func
                            .call(&mut *store, (&wit_ctx, config.as_str(), sent.as_slice()))?
                            .0)
                    },
                )
            };
        // An object no transform changed is the input value itself; a changed one is parsed
        // here (only the last text of an object matters, and it was checked with the same
        // parser and limits when it was returned), beside the validations.
        let returned: Vec<(usize, &String)> = current
            .iter()
            .filter_map(|doc| match doc.origin {
                Origin::Returned(position) => Some((position, &doc.text)),
                Origin::Input(_) => None,
            })
            .collect();
        let parse = |(position, text): &(usize, &String)| {
            output::parse(text).map_err(|e| {
                let policy = steps.get(*position).map_or("?", |s| s.name.as_str());
                PolicyError::Engine(format!(
                    "an object returned by policy {policy} passed the output check but could not be parsed: {e}"
                ))
            })
        };
        let (findings, parsed) = if parallel {
            // Calls side by side on other threads take turns of their own.
            pipeline_turn = None;
            rayon::join(
                || map_all(&validating, true, validate),
                || map_all(&returned, true, parse),
            )
        } else {
            let findings = map_all(&validating, false, validate);
            (findings, map_all(&returned, false, parse))
        };
        drop(pipeline_turn);
        let mut denials = Vec::new();
        for ((_, step, _, _), found) in validating.iter().zip(findings) {
            match found {
                Ok(violations) => {
                    for v in capped_violations(&step.name, violations, &self.inner.config) {
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
        let mut parsed = parsed.into_iter();
        let mut originals: Vec<Option<Value>> = objects.into_iter().map(Some).collect();
        let mut objects = Vec::with_capacity(current.len());
        for Doc { origin, .. } in &current {
            let value = match origin {
                Origin::Input(i) => originals.get_mut(*i).and_then(Option::take),
                Origin::Returned(_) => parsed.next().transpose()?,
            }
            .ok_or_else(|| PolicyError::Engine("pipeline lost track of an object".into()))?;
            objects.push(value);
        }
        outcome.objects = objects;
        Ok(outcome)
    }
}

/// At most `max_violations` of what one step reported, each text clipped to
/// `max_message_bytes`, and one summary for the rest (of severity error if any of the rest
/// is: a denial is never lost by capping).
fn capped_violations(
    policy: &str,
    reported: Vec<wit::Violation>,
    limits: &HostConfig,
) -> Vec<Violation> {
    let total = reported.len();
    let mut kept = Vec::with_capacity(total.min(limits.max_violations) + 1);
    let mut left_out_errors = 0usize;
    for (i, v) in reported.into_iter().enumerate() {
        if i < limits.max_violations {
            kept.push(violation(policy, v, limits.max_message_bytes));
        } else if matches!(v.severity, wit::Severity::Error) {
            left_out_errors += 1;
        }
    }
    if total > limits.max_violations {
        let left_out = total - limits.max_violations;
        kept.push(Violation {
                policy: policy.to_owned(),
                object: None,
                field: None,
                message: format!(
                    "{left_out} more violations not shown ({left_out_errors} of them of severity error); the policy reported {total}, the host keeps {}",
                    limits.max_violations
                ),
                severity: if left_out_errors > 0 {
                    Severity::Error
                } else {
                    Severity::Warning
                },
            });
    }
    kept
}

impl PolicyHost {
    /// Runs one transform over `current` and, if everything it returned passed the checks,
    /// replaces `current` with its output (otherwise `current` is left as it was).
    fn transform_step(
        &self,
        call: &StepCall<'_>,
        tenancy: Option<&tenancy::Input<'_>>,
        current: &mut Vec<Doc>,
    ) -> Result<(), PolicyError> {
        let policy = call.step.name.as_str();
        let module = call.module;
        let limits = &self.inner.config;
        let given = given_positions(current, module.info.kinds.as_deref());
        let sent: Vec<&str> = given.iter().map(|&i| current[i].text.as_str()).collect();
        let out = self
            .call(
                &module.pre,
                policy,
                call.tenant,
                "transform",
                |instance, store| {
                    let func = typed_export::<TransformParams<'_>, TransformResults>(
                        instance,
                        store,
                        &module.transform,
                    )?;
                    Ok(func
                        .call(
                            &mut *store,
                            (call.wit_ctx, call.config.as_str(), sent.as_slice()),
                        )?
                        .0)
                },
            )?
            .map_err(|e| PolicyError::Failed {
                policy: policy.to_owned(),
                object: e
                    .object
                    .map(|o| Box::new(wit_object_ref(o, limits.max_message_bytes))),
                message: clip(e.message, limits.max_message_bytes),
            })?;
        if out.len() > limits.max_objects {
            return Err(PolicyError::TooManyObjects {
                policy: policy.to_owned(),
                count: out.len(),
                limit: limits.max_objects,
            });
        }
        let parallel = out.len() >= PARALLEL_FROM;
        // Returned exactly as it was handed in: already checked. Anything else is checked
        // completely now, so a bad object fails this step, naming it.
        let checked = map_all(
            &out.iter().enumerate().collect::<Vec<_>>(),
            parallel,
            |(index, text)| {
                if sent.get(*index) == Some(&text.as_str()) {
                    return Ok(None);
                }
                output::check(text)
                    .map(Some)
                    .map_err(|m| PolicyError::MalformedOutput {
                        policy: policy.to_owned(),
                        step: call.position + 1,
                        index: *index,
                        object: m.object.map(Box::new),
                        reason: m.reason,
                    })
            },
        );
        let mut returned = Vec::with_capacity(out.len());
        for (text, checked) in out.into_iter().zip(checked) {
            returned.push(match checked? {
                None => Returned::Same,
                Some(r) => Returned::Changed(text, r),
            });
        }
        if let Some(input) = tenancy {
            let changed = returned.iter().filter_map(|r| match r {
                Returned::Same => None,
                Returned::Changed(_, r) => Some(r),
            });
            input.check(changed, policy)?;
        }
        // Every check passed: the unchanged objects move over from the step's input, and what
        // the policy returned takes the place of what it was given.
        drop(sent);
        let mut all: Vec<Option<Doc>> = std::mem::take(current).into_iter().map(Some).collect();
        let mut next = Vec::with_capacity(returned.len());
        for (index, r) in returned.into_iter().enumerate() {
            next.push(match r {
                Returned::Same => given
                    .get(index)
                    .and_then(|&at| all.get_mut(at))
                    .and_then(Option::take),
                Returned::Changed(text, r) => Some(Doc {
                    text,
                    origin: Origin::Returned(call.position),
                    api_version: r.api_version,
                    kind: r.kind,
                }),
            });
        }
        *current = splice(all, &given, next)
            .into_iter()
            .collect::<Option<Vec<Doc>>>()
            .ok_or_else(|| PolicyError::Engine("pipeline lost track of an object".into()))?;
        Ok(())
    }
}

/// One transforming step of a pipeline run, with what its call needs.
struct StepCall<'a> {
    step: &'a PolicyStep,
    /// Position of the step in the pipeline (0-based).
    position: usize,
    module: &'a LoadedModule,
    config: &'a String,
    tenant: &'a str,
    wit_ctx: &'a wit::Context,
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

/// One object between two steps of a pipeline: the JSON text the next step is given, where
/// its value comes from, and its kind (which policies are given it).
struct Doc {
    text: String,
    origin: Origin,
    api_version: String,
    kind: String,
}

/// The positions in `docs` of the objects a policy that declared `kinds` is given.
fn given_positions(docs: &[Doc], kinds: Option<&[GroupKind]>) -> Vec<usize> {
    given::positions(
        kinds,
        docs.iter()
            .map(|d| (d.api_version.as_str(), d.kind.as_str())),
    )
}

/// The value of an object between two steps.
enum Origin {
    /// Byte-identical to this object of the pipeline input (no transform changed it).
    Input(usize),
    /// Changed or added by the transform at this position of the pipeline, and checked by
    /// [`output::check`] when it was returned.
    Returned(usize),
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

/// `text` cut to at most `max` bytes (at a character boundary), marked when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn wit_object_ref(r: wit::ObjectRef, max: usize) -> ObjectRef {
    ObjectRef {
        api_version: clip(r.api_version, max),
        kind: clip(r.kind, max),
        namespace: r.namespace.map(|n| clip(n, max)),
        name: clip(r.name, max),
    }
}

fn violation(policy: &str, v: wit::Violation, max: usize) -> Violation {
    Violation {
        policy: policy.to_owned(),
        object: v.object.map(|o| wit_object_ref(o, max)),
        field: v.field.map(|f| clip(f, max)),
        message: clip(v.message, max),
        severity: match v.severity {
            wit::Severity::Error => Severity::Error,
            wit::Severity::Warning => Severity::Warning,
        },
    }
}

/// What a trap is reported with, on one line: what the guest wrote to stderr before it (a
/// Rust panic's message, say), then the trap itself or the error of the host function that
/// ended the call; control characters escaped, clipped to `max` bytes. The wasm backtrace is
/// only logged, at debug level.
fn trap_text(e: &wasmtime::Error, stderr: &str, max: usize) -> String {
    let cause = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let said = escape_controls(&said.join(" "));
    let cause = escape_controls(&cause);
    // The end of stderr is what matters (a panic message is written last): keep its tail.
    let room = max.saturating_sub(cause.len() + 8);
    let mut start = said.len().saturating_sub(room);
    while !said.is_char_boundary(start) {
        start += 1;
    }
    let text = match (&said[start..], start > 0) {
        ("", _) => cause,
        (tail, false) => format!("{tail} ({cause})"),
        (tail, true) => format!("…{tail} ({cause})"),
    };
    clip(text, max)
}

/// `text` with control characters (newlines, terminal escapes) escaped.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Longest policy name the metadata may give (a DNS label's length).
const MAX_NAME_BYTES: usize = 63;
/// Longest description the metadata may give.
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Largest config schema the metadata may give.
const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Most kinds the metadata may list.
const MAX_KINDS: usize = 64;
/// Longest API group the metadata may name (a DNS subdomain's length).
const MAX_GROUP_BYTES: usize = 253;

/// Checks `metadata` against what the WIT documents: the name is lowercase letters, digits
/// and `-`; the version is semver; the description is one bounded line; the config schema,
/// if any, is a JSON document that can be a JSON Schema (an object or a boolean); at most
/// `MAX_KINDS` kinds, each a group (empty, or lowercase letters, digits, `-` and `.`) and a kind
/// (a letter, then letters, digits and `-`; at most `MAX_NAME_BYTES`).
fn check_metadata(metadata: &wit::Metadata) -> Result<(), String> {
    let shown = |s: &str| clip(s.to_owned(), 80);
    let name = &metadata.name;
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "name {:?} is not 1 to {MAX_NAME_BYTES} lowercase letters, digits and '-'",
            shown(name)
        ));
    }
    if let Err(e) = semver::Version::parse(&metadata.version) {
        return Err(format!(
            "version {:?} is not a semantic version: {e}",
            shown(&metadata.version)
        ));
    }
    let description = &metadata.description;
    if description.len() > MAX_DESCRIPTION_BYTES || description.chars().any(char::is_control) {
        return Err(format!(
            "description is not one line of at most {MAX_DESCRIPTION_BYTES} bytes"
        ));
    }
    if let Some(schema) = &metadata.config_schema {
        if schema.len() > MAX_SCHEMA_BYTES {
            return Err(format!(
                "config schema is {} bytes, over the limit of {MAX_SCHEMA_BYTES}",
                schema.len()
            ));
        }
        match serde_json::from_str::<Value>(schema) {
            Ok(Value::Object(_) | Value::Bool(_)) => {}
            Ok(_) => return Err("config schema is neither a JSON object nor a boolean".to_owned()),
            Err(e) => return Err(format!("config schema is not JSON: {e}")),
        }
    }
    if let Some(kinds) = &metadata.kinds {
        if kinds.len() > MAX_KINDS {
            return Err(format!(
                "lists {} kinds, over the limit of {MAX_KINDS}",
                kinds.len()
            ));
        }
        for k in kinds {
            if !valid_group(&k.group) || !valid_kind(&k.kind) {
                return Err(format!(
                    "kind {:?} of group {:?} is not a valid group and kind",
                    shown(&k.kind),
                    shown(&k.group)
                ));
            }
        }
    }
    Ok(())
}

/// An API group: empty (the core group), or lowercase letters, digits, `-` and `.`.
fn valid_group(group: &str) -> bool {
    group.len() <= MAX_GROUP_BYTES
        && group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A kind: a letter, then letters, digits and `-`, at most `MAX_NAME_BYTES`.
fn valid_kind(kind: &str) -> bool {
    kind.len() <= MAX_NAME_BYTES
        && kind.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::strategies::config;
    use proptest::prelude::*;

    fn wit_object_ref_strategy() -> impl Strategy<Value = wit::ObjectRef> {
        (
            any::<String>(),
            any::<String>(),
            proptest::option::of(any::<String>()),
            any::<String>(),
        )
            .prop_map(|(api_version, kind, namespace, name)| wit::ObjectRef {
                api_version,
                kind,
                namespace,
                name,
            })
    }

    fn wit_violation_strategy() -> impl Strategy<Value = wit::Violation> {
        (
            proptest::option::of(wit_object_ref_strategy()),
            proptest::option::of(any::<String>()),
            ".{0,300}",
            any::<bool>(),
        )
            .prop_map(|(object, field, message, error)| wit::Violation {
                object,
                field,
                message,
                severity: if error {
                    wit::Severity::Error
                } else {
                    wit::Severity::Warning
                },
            })
    }

    /// `clip`'s contract: short text unchanged; long text cut at a character boundary to at
    /// most `max` bytes, marked.
    fn assert_clipped(original: &str, clipped: &str, max: usize) -> Result<(), TestCaseError> {
        if original.len() <= max {
            prop_assert_eq!(clipped, original);
        } else {
            let kept = clipped
                .strip_suffix('…')
                .ok_or_else(|| TestCaseError::fail("a cut text is not marked"))?;
            prop_assert!(kept.len() <= max && kept.len() + 4 > max);
            prop_assert!(original.starts_with(kept));
        }
        Ok(())
    }

    /// Many first uses of one built-in at once compile it once: the others wait for it.
    #[test]
    fn concurrent_first_loads_of_a_builtin_compile_it_once() {
        let host = PolicyHost::new(HostConfig::default()).unwrap();
        let source = ModuleSource::Builtin("replica-bounds".into());
        std::thread::scope(|s| {
            let loads: Vec<_> = (0..6)
                .map(|_| s.spawn(|| host.load("p", &source).map(|info| info.name)))
                .collect();
            for load in loads {
                load.join().unwrap().unwrap();
            }
        });
        assert_eq!(host.compiles(), 1);
    }

    proptest! {
        #![proptest_config(config(256))]

        /// What the host lifts from a guest's violation: every text clipped by the rule,
        /// nothing else changed.
        #[test]
        fn a_lifted_violation_keeps_everything_within_the_clip(
            v in wit_violation_strategy(),
            max in 0usize..64,
        ) {
            let lifted = violation("p", v.clone(), max);
            prop_assert_eq!(&lifted.policy, "p");
            assert_clipped(&v.message, &lifted.message, max)?;
            prop_assert_eq!(lifted.field.is_some(), v.field.is_some());
            if let (Some(f), Some(g)) = (&v.field, &lifted.field) {
                assert_clipped(f, g, max)?;
            }
            prop_assert_eq!(lifted.object.is_some(), v.object.is_some());
            if let (Some(o), Some(r)) = (&v.object, &lifted.object) {
                assert_clipped(&o.api_version, &r.api_version, max)?;
                assert_clipped(&o.kind, &r.kind, max)?;
                assert_clipped(&o.name, &r.name, max)?;
                prop_assert_eq!(o.namespace.is_some(), r.namespace.is_some());
            }
            prop_assert_eq!(
                lifted.severity == Severity::Error,
                matches!(v.severity, wit::Severity::Error)
            );
        }

        /// A trap report is one line without control characters, bounded, and names the
        /// cause whatever the guest wrote to stderr.
        #[test]
        fn a_trap_report_is_one_bounded_line(stderr in any::<String>(), max in 64usize..512) {
            let e = wasmtime::Error::from(Trap::UnreachableCodeReached);
            let text = trap_text(&e, &stderr, max);
            prop_assert!(!text.chars().any(char::is_control), "{text:?}");
            prop_assert!(text.len() <= max + '…'.len_utf8());
            prop_assert!(
                text.contains(&Trap::UnreachableCodeReached.to_string()),
                "{text:?}"
            );
        }

        /// Metadata is accepted exactly when the name, version, description and schema follow
        /// the rules the WIT documents.
        #[test]
        fn metadata_is_checked_by_the_documented_rules(
            name in prop_oneof![".{0,70}", "[a-z0-9-]{1,63}"],
            version in prop_oneof![".{0,12}", "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"],
            description in ".{0,40}",
            schema in proptest::option::of(prop_oneof![".{0,20}", Just("{}".to_owned()), Just("true".to_owned())]),
            kinds in proptest::option::of(prop::collection::vec(
                (prop_oneof![".{0,8}", "[a-z0-9.-]{0,20}"], prop_oneof![".{0,8}", "[A-Za-z][A-Za-z0-9-]{0,62}"]),
                0..70,
            )),
        ) {
            let metadata = wit::Metadata {
                name: name.clone(),
                version: version.clone(),
                description: description.clone(),
                kind: wit::PolicyKind::Both,
                config_schema: schema.clone(),
                kinds: kinds.clone().map(|kinds| kinds.into_iter().map(|(group, kind)| wit::GroupKind { group, kind }).collect()),
            };
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME_BYTES
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let valid_schema = schema.as_deref().is_none_or(|s| {
                matches!(serde_json::from_str::<Value>(s), Ok(Value::Object(_) | Value::Bool(_)))
            });
            let valid_kinds = kinds.as_ref().is_none_or(|kinds| {
                kinds.len() <= MAX_KINDS
                    && kinds.iter().all(|(group, kind)| {
                        group.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                            && kind.len() <= MAX_NAME_BYTES
                            && kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                            && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
            });
            let expected = valid_name
                && semver::Version::parse(&version).is_ok()
                && !description.chars().any(char::is_control)
                && valid_schema
                && valid_kinds;
            prop_assert_eq!(check_metadata(&metadata).is_ok(), expected, "{:?}", metadata);
        }
    }

    proptest! {
        #![proptest_config(config(64))]

        /// However many violations a step reports, the host keeps the first `max_violations`
        /// (clipped) and one summary for the rest, of severity error if any left out is.
        #[test]
        fn violations_are_capped_and_no_denial_is_lost(
            reported in prop::collection::vec(wit_violation_strategy(), 0..40),
            max_violations in 0usize..20,
        ) {
            let limits = HostConfig { max_violations, ..HostConfig::default() };
            let kept = capped_violations("p", reported.clone(), &limits);
            let total = reported.len();
            prop_assert_eq!(kept.len(), total.min(max_violations) + usize::from(total > max_violations));
            for (k, r) in kept.iter().zip(&reported).take(max_violations) {
                prop_assert_eq!(k, &violation("p", r.clone(), 1024));
            }
            if total > max_violations {
                let summary = kept.last().expect("a summary");
                let left_out_errors = reported[max_violations..]
                    .iter()
                    .any(|v| matches!(v.severity, wit::Severity::Error));
                prop_assert_eq!(summary.severity == Severity::Error, left_out_errors);
                let left_out = format!("{} more violations not shown", total - max_violations);
                prop_assert!(summary.message.contains(&left_out));
            }
        }
    }
}
