//! Per-call state of a policy instance: the deny-all WASI context (`wasi.rs`), the call's
//! deadline, the memory limiter and the rate-limited `log` import. A fresh [`StoreState`] is
//! built for every call.

use super::bindings::kubectl_gitops::policy::log;
use super::bindings::v0_1::kubectl_gitops::policy as v0_1;
use super::sched::Turn;
use super::wasi::{self, Capture};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
    /// When the call must have ended; host functions that wait never wait past it.
    deadline: Instant,
    /// The guest's stderr (bounded), reported with a trap.
    pub(crate) stderr: Capture,
    pub(crate) limiter: MemoryCap,
    policy: Arc<str>,
    log_budget: LogBudget,
    logged: u32,
    pub(crate) dropped_logs: u32,
    /// The CPU turn the call holds while it runs guest code.
    pub(crate) turn: Option<Turn>,
    /// The tenant's earlier failures are still charged: from this instant on, the call pauses
    /// at every epoch check (`Turn::pause`).
    pub(crate) probation: Option<Instant>,
}

impl StoreState {
    pub(crate) fn new(
        policy: Arc<str>,
        deadline: Instant,
        memory_cap: usize,
        log_budget: LogBudget,
    ) -> StoreState {
        StoreState {
            wasi: None,
            table: ResourceTable::new(),
            deadline,
            stderr: Capture::default(),
            limiter: MemoryCap {
                cap: memory_cap,
                hit: false,
            },
            policy,
            log_budget,
            logged: 0,
            dropped_logs: 0,
            turn: None,
            probation: None,
        }
    }
}

impl StoreState {
    /// When the call must have ended.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The WASI resource table.
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| wasi::deny_all(&self.stderr)),
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

impl v0_1::log::Host for StoreState {
    fn log(&mut self, level: v0_1::log::Level, message: String) {
        use v0_1::log::Level as Old;
        let level = match level {
            Old::Trace => log::Level::Trace,
            Old::Debug => log::Level::Debug,
            Old::Info => log::Level::Info,
            Old::Warn => log::Level::Warn,
            Old::Error => log::Level::Error,
        };
        log::Host::log(self, level, message);
    }
}

impl v0_1::types::Host for StoreState {}
