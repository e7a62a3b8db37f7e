//! The bounded reconnect backoff of every watch: the controllers' watches and trigger streams,
//! and the apply stage's health watches.
//!
//! Why not kube-runtime's defaults: `default_backoff()` (client-go's numbers, 0.8 s doubling to
//! 30 s, plus up to 100% jitter) lets a controller sit idle for up to a minute after an
//! apiserver outage of a few tens of seconds, and `Controller` wraps its whole trigger stream
//! in a second such backoff. Our bound: [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], jitter
//! adding up to 100% of each step (so no single wait exceeds 2 × `BACKOFF_MAX` = 5 s), started
//! over after [`BACKOFF_QUIET`] without a failure; a controller's trigger stream adds at most
//! `BACKOFF_MIN`.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use kube::runtime::utils::Backoff;

/// First wait after a failed list/watch.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Largest step before jitter (jitter adds up to as much again: the longest wait is 5 s).
pub const BACKOFF_MAX: Duration = Duration::from_millis(2500);
/// A failure this long after the previous one starts the backoff over.
pub const BACKOFF_QUIET: Duration = Duration::from_secs(15);

/// An exponential backoff that never gives up: [`backoff`] for every watch (bounded, with
/// jitter so that replicas and watches do not reconnect in lockstep), [`trigger_backoff`] for
/// a controller's merged trigger stream.
///
/// It starts over after [`BACKOFF_QUIET`] without a failure, not on the stream's next `Ok`
/// (`Backoff::reset`, which `StreamBackoff` calls on every `Ok`, is ignored): kube-runtime's
/// watcher yields an `Ok(Event::Init)` before every re-list, also before one that fails, so a
/// list that keeps failing (CRD missing, RBAC) would otherwise retry at the first step forever.
pub struct WatchBackoff {
    builder: backon::ExponentialBuilder,
    steps: backon::ExponentialBackoff,
    last_failure: Option<Instant>,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.step(Instant::now()))
    }
}

impl WatchBackoff {
    fn new(min: Duration, max: Duration, jitter: bool) -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        let builder = if jitter {
            builder.with_jitter()
        } else {
            builder
        };
        WatchBackoff {
            steps: builder.build(),
            builder,
            last_failure: None,
        }
    }

    /// The wait after a failure at `now`.
    fn step(&mut self, now: Instant) -> Duration {
        if self
            .last_failure
            .is_some_and(|last| now.duration_since(last) > BACKOFF_QUIET)
        {
            self.steps = self.builder.build();
        }
        self.last_failure = Some(now);
        // `without_max_times`: the steps never run out; the minimum is only a fallback.
        self.steps.next().unwrap_or(BACKOFF_MIN)
    }
}

impl Backoff for WatchBackoff {
    /// Ignored, see the type's docs.
    fn reset(&mut self) {}
}

/// A fresh [`WatchBackoff`] for one stream.
pub fn backoff() -> WatchBackoff {
    WatchBackoff::new(BACKOFF_MIN, BACKOFF_MAX, true)
}

/// The backoff of a controller's merged trigger stream: every watch in it backs off by itself
/// ([`backoff`]), so this one only guards against a stream that would not, and adds no more
/// than [`BACKOFF_MIN`] to a reconnect (a second growing backoff here would pause all watches
/// of the controller after any one of them failed).
pub fn trigger_backoff() -> WatchBackoff {
    WatchBackoff::new(BACKOFF_MIN, BACKOFF_MIN, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_grows_and_starts_over_after_a_quiet_period() {
        let mut b = backoff();
        let first = b.next().expect("never gives up");
        assert!(first >= BACKOFF_MIN && first < BACKOFF_MIN * 2, "{first:?}");
        // What StreamBackoff does on the Ok(Init) before each re-list: no effect.
        b.reset();
        let waits: Vec<Duration> = (0..50)
            .map(|_| {
                b.reset();
                b.next().expect("never gives up")
            })
            .collect();
        assert!(waits.iter().all(|d| *d < BACKOFF_MAX * 2), "{waits:?}");
        // After ten doublings the step is at the cap: every wait is in [max, 2 × max).
        assert!(waits[10..].iter().all(|d| *d >= BACKOFF_MAX), "{waits:?}");
        let later = Instant::now() + BACKOFF_QUIET + Duration::from_secs(1);
        let again = b.step(later);
        assert!(
            again < BACKOFF_MIN * 2,
            "starts over after quiet: {again:?}"
        );
    }

    #[test]
    fn the_trigger_backoff_stays_at_the_minimum() {
        let mut b = trigger_backoff();
        assert!((0..20).all(|_| b.next() == Some(BACKOFF_MIN)));
    }
}
