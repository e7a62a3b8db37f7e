//! Instance slots: how many policy instances may exist at once, in all and per tenant.
//!
//! The pooling allocator has a fixed number of instance slots for the whole process. Every
//! call takes a [`Slot`] here before it instantiates, and the slot is given back when the
//! [`Slot`] is dropped (after the call's Store was dropped), whatever way the call ended. A
//! tenant (the namespace of the Kustomization) holds at most `per_tenant` slots, so tenants
//! whose policies run until their deadlines cannot take the slots other tenants need; a call
//! that finds no free slot waits, at most until its own deadline.
//!
//! Slots bound how many instances a tenant holds, not how much CPU its failing calls burn one
//! after another. So each tenant also has a failure budget, a token bucket of time: the time of
//! every call that failed (ran into its deadline, its memory cap, trapped) and of every step
//! whose output was refused (bad objects, the policy's own error, a tenancy breach) is charged
//! to it, the bucket drains at `budget` per minute, and while it holds more than
//! `budget` the tenant's calls are refused at once (retried later). A tenant whose policies
//! work is never charged.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why no slot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The tenant holds all the slots it may.
    Tenant(usize),
    /// Every slot of the process is taken.
    Host(usize),
    /// The tenant's failed calls used up its failure budget; it is refused for this long.
    Budget(Duration),
}

#[derive(Default)]
struct InUse {
    total: usize,
    by_tenant: HashMap<String, usize>,
    /// Failure time charged to each tenant.
    charged: HashMap<String, Charge>,
}

/// What a tenant's failures cost it.
#[derive(Clone, Copy)]
struct Charge {
    /// When `charged` was last computed.
    at: Instant,
    /// Failure time not yet drained, as of `at`.
    charged: Duration,
    /// The longest failed call since the charge was last drained to nothing.
    longest: Duration,
}

/// The slot table of one host.
pub(crate) struct Slots {
    in_use: Mutex<InUse>,
    freed: Condvar,
    total: usize,
    per_tenant: usize,
    /// Failure time a tenant may accumulate; also what drains from it per minute.
    budget: Duration,
}

/// One taken slot; given back on drop, charging its time to the tenant's failure budget if
/// the call was marked [`Slot::failed`].
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    tenant: String,
    taken: Instant,
    failed: bool,
    probation: Option<Duration>,
}

impl Slot<'_> {
    /// `Some(longest)` when the tenant's earlier failures were still charged to its failure
    /// budget when the slot was taken: its call then runs on probation (`Turn::pause`);
    /// `longest` is the longest of those failed calls.
    pub(crate) fn on_probation(&self) -> Option<Duration> {
        self.probation
    }

    /// Marks the call as failed: its time counts against the tenant's failure budget.
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }
}

/// What is left charged of `charged` at `at` after `now - at` of draining at `budget` per
/// minute.
fn drained(charged: Duration, at: Instant, now: Instant, budget: Duration) -> Duration {
    charged.saturating_sub(budget.mul_f64(now.saturating_duration_since(at).as_secs_f64() / 60.0))
}

impl Slots {
    pub(crate) fn new(total: usize, per_tenant: usize, budget: Duration) -> Slots {
        Slots {
            in_use: Mutex::new(InUse::default()),
            freed: Condvar::new(),
            total: total.max(1),
            per_tenant: per_tenant.clamp(1, total.max(1)),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, InUse> {
        // Plain counters: a panic while they were held leaves them consistent.
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(Full::Budget)` while `tenant` used up its failure budget.
    pub(crate) fn admit(&self, tenant: &str) -> Result<(), Full> {
        self.admit_locked(&self.lock(), tenant).map(|_| ())
    }

    /// `Ok(Some(longest failed call))` while failures of `tenant` are still charged to its
    /// budget (not drained).
    fn admit_locked(&self, in_use: &InUse, tenant: &str) -> Result<Option<Duration>, Full> {
        if let Some(charge) = in_use.charged.get(tenant).copied() {
            let left = drained(charge.charged, charge.at, Instant::now(), self.budget);
            if left > self.budget {
                // Refused until it drained back to the budget.
                let wait = (left - self.budget).mul_f64(60.0 / self.budget.as_secs_f64().max(1e-3));
                return Err(Full::Budget(wait));
            }
            return Ok((!left.is_zero()).then_some(charge.longest));
        }
        Ok(None)
    }

    /// Takes a slot for `tenant`, waiting for one until `deadline` at most.
    pub(crate) fn take(&self, tenant: &str, deadline: Instant) -> Result<Slot<'_>, Full> {
        let mut in_use = self.lock();
        let probation = self.admit_locked(&in_use, tenant)?;
        loop {
            let mine = in_use.by_tenant.get(tenant).copied().unwrap_or(0);
            let full = if mine >= self.per_tenant {
                Some(Full::Tenant(self.per_tenant))
            } else if in_use.total >= self.total {
                Some(Full::Host(self.total))
            } else {
                None
            };
            let Some(full) = full else {
                in_use.total += 1;
                *in_use.by_tenant.entry(tenant.to_owned()).or_default() += 1;
                return Ok(Slot {
                    slots: self,
                    tenant: tenant.to_owned(),
                    taken: Instant::now(),
                    failed: false,
                    probation,
                });
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(full);
            }
            in_use = self
                .freed
                .wait_timeout(in_use, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Charges `spent` to `tenant`'s failure budget: for a failure found after its call gave
    /// its slot back (bad output, the policy's own error, a tenancy breach).
    pub(crate) fn charge(&self, tenant: &str, spent: Duration) {
        let mut in_use = self.lock();
        self.charge_locked(&mut in_use, tenant, spent);
    }

    fn charge_locked(&self, in_use: &mut InUse, tenant: &str, spent: Duration) {
        let now = Instant::now();
        let entry = in_use.charged.entry(tenant.to_owned()).or_insert(Charge {
            at: now,
            charged: Duration::ZERO,
            longest: Duration::ZERO,
        });
        let left = drained(entry.charged, entry.at, now, self.budget);
        *entry = Charge {
            at: now,
            charged: left + spent,
            longest: if left.is_zero() {
                spent
            } else {
                entry.longest.max(spent)
            },
        };
        // Forget tenants whose charge drained away, so the table does not grow without bound.
        if in_use.charged.len() > 1024 {
            in_use
                .charged
                .retain(|_, c| !drained(c.charged, c.at, now, self.budget).is_zero());
        }
    }

    /// Slots taken right now.
    pub(crate) fn in_use(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_use = self.slots.lock();
        if self.failed {
            self.slots
                .charge_locked(&mut in_use, &self.tenant, self.taken.elapsed());
        }
        in_use.total = in_use.total.saturating_sub(1);
        if let Some(n) = in_use.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                in_use.by_tenant.remove(&self.tenant);
            }
        }
        drop(in_use);
        self.slots.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_calls_use_up_the_tenant_budget_and_working_ones_never_do() {
        let slots = Slots::new(4, 4, Duration::from_millis(100));
        let far = || Instant::now() + Duration::from_secs(5);
        for _ in 0..3 {
            let _ok = slots.take("good", far()).expect("free");
            std::thread::sleep(Duration::from_millis(60));
        }
        let mut failing = slots.take("bad", far()).expect("free");
        failing.failed();
        std::thread::sleep(Duration::from_millis(150));
        drop(failing);
        match slots.take("bad", far()) {
            // Over the budget by at least 50 ms, draining 100 ms per minute: 30 s or more.
            Err(Full::Budget(wait)) => assert!(wait >= Duration::from_secs(29), "{wait:?}"),
            other => panic!("the failing tenant was not refused: {:?}", other.err()),
        }
        let good = slots
            .take("good", far())
            .expect("the working tenant was charged");
        assert_eq!(good.on_probation(), None);
        drop(good);
        // Once the tenant's charge is under the budget again it runs, on probation until the
        // charge has drained away; the longest of its failed calls is known.
        let mut short = slots.take("short", far()).expect("free");
        short.failed();
        std::thread::sleep(Duration::from_millis(20));
        drop(short);
        let mut again = slots.take("short", far()).expect("under the budget");
        let longest = again.on_probation().expect("on probation");
        assert!(longest >= Duration::from_millis(20), "{longest:?}");
        assert!(longest < Duration::from_millis(60), "{longest:?}");
        again.failed();
        std::thread::sleep(Duration::from_millis(30));
        drop(again);
        let third = slots.take("short", far()).expect("under the budget");
        let longest = third.on_probation().expect("on probation");
        assert!(longest >= Duration::from_millis(30), "{longest:?}");
        drop(third);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_tenant_is_capped_and_slots_come_back_on_drop() {
        let slots = Slots::new(3, 2, Duration::from_secs(5));
        let soon = || Instant::now() + Duration::from_millis(20);
        let a1 = slots.take("a", soon()).expect("free");
        let a2 = slots.take("a", soon()).expect("free");
        assert_eq!(slots.take("a", soon()).err(), Some(Full::Tenant(2)));
        let b1 = slots
            .take("b", soon())
            .expect("another tenant still gets one");
        assert_eq!(slots.take("c", soon()).err(), Some(Full::Host(3)));
        assert_eq!(slots.in_use(), 3);
        drop(a1);
        let c1 = slots.take("c", soon()).expect("freed by the drop");
        drop((a2, b1, c1));
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_waiting_call_gets_a_slot_freed_before_its_deadline() {
        let slots = std::sync::Arc::new(Slots::new(1, 1, Duration::from_secs(5)));
        let held = slots.take("a", Instant::now()).expect("free");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                drop(held);
            });
            let started = Instant::now();
            let got = slots.take("b", Instant::now() + Duration::from_secs(5));
            assert!(got.is_ok());
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }
}
