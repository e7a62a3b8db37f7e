//! Instance slots: how many policy instances may exist at once, in all and per tenant.
//!
//! The pooling allocator has a fixed number of instance slots for the whole process. Every
//! call takes a [`Slot`] here before it instantiates, and the slot is given back when the
//! [`Slot`] is dropped (after the call's Store was dropped), whatever way the call ended. A
//! tenant (the namespace of the Kustomization) holds at most `per_tenant` slots, so tenants
//! whose policies run until their deadlines cannot take the slots other tenants need; a call
//! that finds no free slot waits, at most until its own deadline.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Why no slot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The tenant holds all the slots it may.
    Tenant(usize),
    /// Every slot of the process is taken.
    Host(usize),
}

#[derive(Default)]
struct InUse {
    total: usize,
    by_tenant: HashMap<String, usize>,
}

/// The slot table of one host.
pub(crate) struct Slots {
    in_use: Mutex<InUse>,
    freed: Condvar,
    total: usize,
    per_tenant: usize,
}

/// One taken slot; given back on drop.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    tenant: String,
}

impl Slots {
    pub(crate) fn new(total: usize, per_tenant: usize) -> Slots {
        Slots {
            in_use: Mutex::new(InUse::default()),
            freed: Condvar::new(),
            total: total.max(1),
            per_tenant: per_tenant.clamp(1, total.max(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InUse> {
        // Plain counters: a panic while they were held leaves them consistent.
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `tenant`, waiting for one until `deadline` at most.
    pub(crate) fn take(&self, tenant: &str, deadline: Instant) -> Result<Slot<'_>, Full> {
        let mut in_use = self.lock();
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

    /// Slots taken right now.
    pub(crate) fn in_use(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_use = self.slots.lock();
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
    use std::time::Duration;

    #[test]
    fn a_tenant_is_capped_and_slots_come_back_on_drop() {
        let slots = Slots::new(3, 2);
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
        let slots = std::sync::Arc::new(Slots::new(1, 1));
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
