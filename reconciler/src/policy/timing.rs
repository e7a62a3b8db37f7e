//! TEMPORARY instrumentation: where the time of the pipelines run on this thread goes.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Time spent per part of the pipelines run on this thread since the last [`take`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Split {
    pub load: Duration,
    pub pipeline_turn: Duration,
    pub slot: Duration,
    pub store_new: Duration,
    pub turn: Duration,
    pub instantiate: Duration,
    /// Lowering, guest code and lifting (including `preempted`).
    pub call: Duration,
    /// Waiting for a turn again after a preemption at an epoch check.
    pub preempted: Duration,
    pub store_drop: Duration,
    pub output: Duration,
    pub serialize: Duration,
    pub calls: u32,
}

thread_local! {
    static SPLIT: Cell<Split> = Cell::new(Split::default());
}

/// The split so far on this thread, reset.
pub fn take() -> Split {
    SPLIT.take()
}

pub(crate) fn add(since: Instant, f: impl FnOnce(&mut Split) -> &mut Duration) {
    let elapsed = since.elapsed();
    let mut s = SPLIT.get();
    *f(&mut s) += elapsed;
    SPLIT.set(s);
}

pub(crate) fn count_call() {
    let mut s = SPLIT.get();
    s.calls += 1;
    SPLIT.set(s);
}
