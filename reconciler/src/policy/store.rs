//! Per-call state of a policy instance: the deny-all WASI context, the memory limiter and the
//! rate-limited `log` import. A fresh [`StoreState`] is built for every call.

use super::bindings::kubectl_gitops::policy::log;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView,
};

/// How much a guest may log in one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogBudget {
    /// Lines accepted per call; later lines are dropped and counted.
    pub lines: u32,
    /// Bytes kept of each line; the rest is cut off.
    pub line_bytes: usize,
}

/// Everything a Store holds for one call.
pub(crate) struct StoreState {
    /// Built on the first WASI call: most calls make none, and building it is a good part of
    /// what a fresh Store would otherwise cost.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    policy: Arc<str>,
    log_budget: LogBudget,
    logged: u32,
    pub(crate) dropped_logs: u32,
}

impl StoreState {
    pub(crate) fn new(policy: Arc<str>, memory_cap: usize, log_budget: LogBudget) -> StoreState {
        StoreState {
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: memory_cap,
                hit: false,
            },
            policy,
            log_budget,
            logged: 0,
            dropped_logs: 0,
        }
    }
}

/// A WASI context that grants nothing: no preopened directories, empty environment and
/// arguments, closed stdin, discarded stdout/stderr, no network, a wall clock and a monotonic
/// clock frozen at zero, and constant bytes for both random interfaces. This is what a
/// guest's standard library links against; it must not be a channel to the outside world or a
/// source of nondeterminism.
fn deny_all_wasi() -> WasiCtx {
    WasiCtx::builder()
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(Deterministic::new(vec![0]))
        .insecure_random(Deterministic::new(vec![0]))
        .insecure_random_seed(0)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(deny_all_wasi),
            table: &mut self.table,
        }
    }
}

/// Caps linear memory (and tables) of one instance. Records that the cap was hit so a trap
/// that follows (the guest's allocator aborting) is reported as memory exhaustion.
pub(crate) struct MemoryCap {
    cap: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real policy.
        Ok(desired <= 1_000_000)
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) {
        if self.logged >= self.log_budget.lines {
            self.dropped_logs = self.dropped_logs.saturating_add(1);
            return;
        }
        self.logged += 1;
        let mut end = message.len().min(self.log_budget.line_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message[..end];
        let truncated = end < message.len();
        let policy = &*self.policy;
        match level {
            log::Level::Trace => tracing::trace!(policy, truncated, "{text}"),
            log::Level::Debug => tracing::debug!(policy, truncated, "{text}"),
            log::Level::Info => tracing::info!(policy, truncated, "{text}"),
            log::Level::Warn => tracing::warn!(policy, truncated, "{text}"),
            log::Level::Error => tracing::error!(policy, truncated, "{text}"),
        }
    }
}

impl super::bindings::kubectl_gitops::policy::types::Host for StoreState {}
