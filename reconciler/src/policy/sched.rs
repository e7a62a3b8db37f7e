//! CPU turns: which policy calls may run guest code right now.
//!
//! Instance slots ([`super::slots`]) bound how many instances a tenant holds, not how much CPU
//! they burn. Here a fixed number of turns (by default one per CPU) is shared by every call
//! in the process, and a call runs guest code only while it holds one. When no turn is free,
//! waiting calls are served lowest recent CPU use first: each tenant (namespace of the
//! Kustomization) has a CPU account, charged with the time its calls held a turn and decaying
//! with a half-life of [`HALF_LIFE`]. A running call gives its turn up at its next epoch check
//! (every tick of the epoch ticker, and at once when a waiter is queued: [`Turns::take`]
//! advances the engine's epoch) whenever a tenant that used at least [`PREEMPT_MARGIN`] less
//! CPU is waiting for one.
//!
//! So a tenant whose calls run long or fail back to back uses more and more CPU time on its
//! account and is served after every tenant that used less: a healthy tenant's call waits at
//! most until the next epoch check of one running call, and calls of tenants that used the
//! same share take turns. Host work that cannot be interrupted (instantiating, copying
//! arguments and results) runs inside a turn too but is never preempted; it is bounded by the
//! output cap.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How fast a tenant's CPU account decays: what it used this long ago counts half. Short, so
/// the account follows a tenant's recent rate of use: a tenant seen for the first time starts
/// at zero and outranks the others only until it used about what they use in one half-life
/// (a longer half-life let new hostile tenants starve healthy ones for seconds in the tenants
/// bench).
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(1);
/// How much less CPU a waiting tenant must have used than a running one to take its turn:
/// tenants that used about as much do not preempt each other (each switch costs both).
pub(crate) const PREEMPT_MARGIN: Duration = Duration::from_millis(10);

/// How long a call on probation (see [`Turn::pause`]) sleeps off its turn at each epoch check.
/// With the epoch ticker's 5 ms, such a call runs at most a tenth of the time (15 ms, a quarter,
/// left the healthy tenants' p99 at 1.39x in the tenants bench; 45 ms: 1.21x).
pub(crate) const PROBATION_PAUSE: Duration = Duration::from_millis(45);
/// The share of its deadline a call on probation runs at full speed before it pauses, unless a
/// failed call of its tenant already ran that long (then it pauses from its start).
pub(crate) const PROBATION_FREE_SHARE: f64 = 0.25;

/// A tenant's CPU account: decayed seconds of turns held, as of `at`.
#[derive(Clone, Copy)]
struct Account {
    used: f64,
    at: Instant,
}

impl Account {
    fn used_at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.used * 0.5f64.powf(age / HALF_LIFE.as_secs_f64())
    }
}

struct Waiter {
    id: u64,
    tenant: Arc<str>,
    since: Instant,
}

#[derive(Default)]
struct State {
    running: usize,
    /// Tenants of the calls holding a turn, with how many each holds.
    holders: HashMap<Arc<str>, usize>,
    accounts: HashMap<Arc<str>, Account>,
    waiting: Vec<Waiter>,
    next_id: u64,
}

impl State {
    fn used(&self, tenant: &str, now: Instant) -> f64 {
        self.accounts.get(tenant).map_or(0.0, |a| a.used_at(now))
    }

    fn charge(&mut self, tenant: &Arc<str>, held: Duration, now: Instant) {
        let used = self.used(tenant, now) + held.as_secs_f64();
        self.accounts
            .insert(tenant.clone(), Account { used, at: now });
        if self.accounts.len() > 1024 {
            // Forget accounts that decayed to nothing, so the table stays bounded.
            let holders = &self.holders;
            self.accounts
                .retain(|t, a| a.used_at(now) > 1e-4 || holders.contains_key(t));
        }
    }

    /// The waiter served next: lowest CPU use, then longest waiting.
    fn first(&self, now: Instant) -> Option<(u64, f64)> {
        self.waiting
            .iter()
            .map(|w| (w.id, self.used(&w.tenant, now), w.since))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .map(|(id, used, _)| (id, used))
    }
}

/// The turns of one host.
pub(crate) struct Turns {
    state: Mutex<State>,
    freed: Condvar,
    total: usize,
    /// Advances the engine's epoch, so running calls reach their epoch check now.
    nudge: Box<dyn Fn() + Send + Sync>,
}

/// A turn held by one call; given back on drop, charging the time it was held.
pub(crate) struct Turn {
    turns: Arc<Turns>,
    tenant: Arc<str>,
    since: Instant,
    /// False after a yield found no new turn before the deadline.
    held: bool,
}

thread_local! {
    /// The turn a pipeline running on this thread holds between its calls.
    static HELD: RefCell<Option<Turn>> = const { RefCell::new(None) };
    /// Whether a pipeline on this thread keeps its turn between calls.
    static PIPELINE: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the pipeline on this thread keeps its turn between its calls (so its own host
/// work, between calls, also runs on a turn and cannot be crowded out by other tenants' guest
/// code); dropped, the turn is given back.
pub(crate) struct PipelineTurn(());

impl Drop for PipelineTurn {
    fn drop(&mut self) {
        PIPELINE.set(false);
        drop(HELD.take());
    }
}

/// No turn came before the call's deadline.
#[derive(Debug)]
pub(crate) struct NoTurn;

impl Turns {
    pub(crate) fn new(total: usize, nudge: impl Fn() + Send + Sync + 'static) -> Turns {
        Turns {
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            total: total.max(1),
            nudge: Box::new(nudge),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters and maps: a panic while they were held leaves them consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn for `tenant` until `deadline` at most.
    pub(crate) fn take(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        deadline: Instant,
    ) -> Result<Turn, NoTurn> {
        let state = self.lock();
        self.wait_turn(state, tenant, deadline)?;
        Ok(Turn {
            turns: self.clone(),
            tenant: tenant.clone(),
            since: Instant::now(),
            held: true,
        })
    }

    /// Queues `tenant` and waits until it is first and a turn is free; on return the turn is
    /// counted as held.
    fn wait_turn(
        &self,
        mut state: MutexGuard<'_, State>,
        tenant: &Arc<str>,
        deadline: Instant,
    ) -> Result<(), NoTurn> {
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        state.waiting.push(Waiter {
            id,
            tenant: tenant.clone(),
            since: now,
        });
        if state.running >= self.total {
            // Running calls of tenants that used more give their turns up at their next epoch
            // check (`Turn::yield_if_asked`); advancing the epoch makes that check come now
            // instead of at the next tick.
            (self.nudge)();
        }
        loop {
            let now = Instant::now();
            if state.running < self.total && state.first(now).map(|(first, _)| first) == Some(id) {
                state.waiting.retain(|w| w.id != id);
                state.running += 1;
                *state.holders.entry(tenant.clone()).or_default() += 1;
                // Another turn may be free for the next waiter.
                if state.running < self.total && !state.waiting.is_empty() {
                    self.freed.notify_all();
                }
                return Ok(());
            }
            if now >= deadline {
                state.waiting.retain(|w| w.id != id);
                // This waiter may have been the first: let the next one look.
                self.freed.notify_all();
                return Err(NoTurn);
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Marks one turn of `tenant` as given back, charging `held`.
    fn release(&self, state: &mut State, tenant: &Arc<str>, held: Duration) {
        let now = Instant::now();
        state.charge(tenant, held, now);
        state.running = state.running.saturating_sub(1);
        if let Some(n) = state.holders.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                state.holders.remove(tenant);
            }
        }
        self.freed.notify_all();
    }

    /// Keeps a turn for the pipeline of `tenant` running on this thread, taking one now (at
    /// most until `deadline`; without one, each call takes its own).
    pub(crate) fn hold_for_pipeline(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        deadline: Instant,
    ) -> PipelineTurn {
        PIPELINE.set(true);
        if let Ok(turn) = self.take(tenant, deadline) {
            HELD.set(Some(turn));
        }
        PipelineTurn(())
    }

    /// The turn for a call of `tenant`: the one its pipeline holds on this thread, else a new
    /// one (waiting at most until `deadline`).
    pub(crate) fn take_for_call(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        deadline: Instant,
    ) -> Result<Turn, NoTurn> {
        let held = HELD
            .take()
            .filter(|t| t.held && Arc::ptr_eq(&t.turns, self) && t.tenant == *tenant);
        match held {
            Some(turn) => Ok(turn),
            None => self.take(tenant, deadline),
        }
    }

    /// Gives back the turn the pipeline on this thread keeps between its calls, if any (the
    /// next call takes a new one): for waits that must not hold a turn.
    pub(crate) fn give_back_kept() {
        drop(HELD.take());
    }

    /// Ends a call's use of `turn`: a pipeline on this thread keeps it, else it is given back.
    pub(crate) fn end_call(turn: Turn) {
        if turn.held && PIPELINE.get() {
            HELD.set(Some(turn));
        }
    }

    /// Turns held right now.
    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }
}

impl Turn {
    /// Called at the epoch checks of a running call: if a call of a tenant that used less CPU
    /// waits and no turn is free, gives this turn up and waits for the next one (at most until
    /// `deadline`). Returns whether the call may go on.
    pub(crate) fn yield_if_asked(&mut self, deadline: Instant) -> Result<(), NoTurn> {
        if !self.held {
            return Err(NoTurn);
        }
        let mut state = self.turns.lock();
        let now = Instant::now();
        if state.running < self.turns.total {
            return Ok(());
        }
        let mine = state.used(&self.tenant, now) + now.duration_since(self.since).as_secs_f64();
        match state.first(now) {
            Some((_, first)) if first + PREEMPT_MARGIN.as_secs_f64() < mine => {}
            _ => return Ok(()),
        }
        self.turns
            .release(&mut state, &self.tenant, now.duration_since(self.since));
        let result = self.turns.wait_turn(state, &self.tenant, deadline);
        self.retaken(result)
    }

    /// Called at the epoch checks of a call on probation (its tenant's failures are still
    /// charged to its failure budget): gives the turn up, sleeps for `pause` (never past
    /// `deadline`), then waits for a turn again. Such a call uses at most a fraction of a CPU
    /// however long it runs, so calls that loop until their deadline leave the CPUs to the
    /// other tenants and to the reconciler's own work, which turns do not cover. Returns
    /// whether the call may go on.
    pub(crate) fn pause(&mut self, pause: Duration, deadline: Instant) -> Result<(), NoTurn> {
        if !self.held {
            return Err(NoTurn);
        }
        {
            let mut state = self.turns.lock();
            self.turns
                .release(&mut state, &self.tenant, self.since.elapsed());
            self.held = false;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        let result = self
            .turns
            .wait_turn(self.turns.lock(), &self.tenant, deadline);
        self.retaken(result)
    }

    /// Records the outcome of waiting for a new turn after this one was given back.
    fn retaken(&mut self, result: Result<(), NoTurn>) -> Result<(), NoTurn> {
        self.since = Instant::now();
        // Without a new turn there is nothing for drop to give back.
        self.held = result.is_ok();
        result
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut state = self.turns.lock();
        self.turns
            .release(&mut state, &self.tenant, self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn turns(total: usize) -> (Arc<Turns>, Arc<AtomicUsize>) {
        let nudges = Arc::new(AtomicUsize::new(0));
        let counted = nudges.clone();
        let turns = Turns::new(total, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        (Arc::new(turns), nudges)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn a_tenant_that_used_less_cpu_takes_the_turn_of_one_that_used_more() {
        let (turns, nudges) = turns(1);
        let busy: Arc<str> = Arc::from("busy");
        let light: Arc<str> = Arc::from("light");
        let mut running = turns.take(&busy, soon()).expect("free");
        std::thread::sleep(Duration::from_millis(30));
        // Nobody waits: the running call goes on.
        running.yield_if_asked(soon()).expect("keeps its turn");
        assert_eq!(turns.running(), 1);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let started = Instant::now();
                let turn = turns.take(&light, soon()).expect("served");
                (started.elapsed(), turn)
            });
            // The waiter is queued and nudged the engine; at its next epoch check the busy
            // call gives its turn up and waits for the light tenant's call to end.
            while nudges.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            let releaser = s.spawn(move || {
                running.yield_if_asked(soon()).expect("served again later");
                running
            });
            let (waited, light_turn) = waiter.join().expect("waiter");
            assert!(waited < Duration::from_secs(1), "{waited:?}");
            assert_eq!(turns.running(), 1);
            drop(light_turn);
            let running = releaser.join().expect("releaser");
            assert_eq!(turns.running(), 1);
            drop(running);
        });
        assert_eq!(turns.running(), 0);
    }

    #[test]
    fn waiters_are_served_lowest_cpu_use_first_and_time_out_at_their_deadline() {
        let (turns, _) = turns(1);
        let heavy: Arc<str> = Arc::from("heavy");
        let light: Arc<str> = Arc::from("light");
        // The heavy tenant has used 200 ms of CPU.
        let used = turns.take(&heavy, soon()).expect("free");
        std::thread::sleep(Duration::from_millis(200));
        drop(used);
        let holder = turns.take(&light, soon()).expect("free");
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let order = &order;
            let turns = &turns;
            let first = s.spawn(move || {
                let t = turns.take(&heavy, soon()).expect("served");
                order.lock().unwrap().push("heavy");
                drop(t);
            });
            std::thread::sleep(Duration::from_millis(20));
            let second = s.spawn(move || {
                let t = turns.take(&light, soon()).expect("served");
                order.lock().unwrap().push("light");
                drop(t);
            });
            std::thread::sleep(Duration::from_millis(20));
            drop(holder);
            first.join().expect("heavy");
            second.join().expect("light");
        });
        // The heavy tenant queued first but had used more: the light one went first.
        assert_eq!(*order.lock().unwrap(), ["light", "heavy"]);
        let held = turns.take(&Arc::from("a"), soon()).expect("free");
        let started = Instant::now();
        assert!(
            turns
                .take(&Arc::from("b"), Instant::now() + Duration::from_millis(50))
                .is_err()
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert_eq!(turns.running(), 0);
    }

    #[test]
    fn a_pause_frees_the_turn_for_its_length_and_never_outlasts_the_deadline() {
        let (turns, _) = turns(1);
        let tenant: Arc<str> = Arc::from("failing");
        let mut turn = turns.take(&tenant, soon()).expect("free");
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                // Nothing frees the only turn but the pause.
                let taken = turns.take(&Arc::from("other"), soon()).expect("served");
                std::thread::sleep(Duration::from_millis(5));
                drop(taken);
            });
            while turns.lock().waiting.is_empty() {
                std::thread::yield_now();
            }
            turn.pause(Duration::from_millis(50), soon())
                .expect("a turn again after the pause");
            other.join().expect("other tenant");
        });
        assert_eq!(turns.running(), 1);
        // A pause is cut at the deadline.
        let started = Instant::now();
        turn.pause(Duration::from_secs(10), started + Duration::from_millis(30))
            .expect("the turn is free again");
        let paused = started.elapsed();
        assert!(
            paused >= Duration::from_millis(25) && paused < Duration::from_secs(1),
            "{paused:?}"
        );
        drop(turn);
        assert_eq!(turns.running(), 0);
    }

    #[test]
    fn a_pipeline_keeps_its_turn_between_its_calls_and_gives_it_back_at_the_end() {
        let (turns, _) = turns(1);
        let tenant: Arc<str> = Arc::from("t");
        let pipeline = turns.hold_for_pipeline(&tenant, soon());
        assert_eq!(turns.running(), 1);
        for _ in 0..3 {
            // The only turn is the pipeline's: its calls use it without waiting.
            let turn = turns
                .take_for_call(&tenant, Instant::now() + Duration::from_millis(10))
                .expect("the pipeline's turn");
            Turns::end_call(turn);
            assert_eq!(turns.running(), 1);
        }
        // Another thread (no pipeline there) waits for it.
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                turns.take_for_call(&Arc::from("u"), Instant::now() + Duration::from_millis(30))
            });
            assert!(other.join().expect("thread").is_err());
        });
        drop(pipeline);
        assert_eq!(turns.running(), 0);
        // Without a pipeline a call's turn is given back when it ends.
        let turn = turns.take_for_call(&tenant, soon()).expect("free");
        Turns::end_call(turn);
        assert_eq!(turns.running(), 0);
    }
}
