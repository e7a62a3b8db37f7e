//! Watch plumbing shared by the controllers: how fast a broken watch reconnects, how its
//! failures are logged, and a shutdown that does not wait for a cache that never filled.
//!
//! Why not kube-runtime's defaults: `default_backoff()` (client-go's numbers, 0.8 s doubling to
//! 30 s, plus up to 100% jitter) lets a controller sit idle for up to a minute after an
//! apiserver outage of a few tens of seconds, and `Controller` wraps its whole trigger stream
//! in a second such backoff. Our bound: [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], jitter
//! adding up to 100% of each step (so no single wait exceeds 2 × `BACKOFF_MAX` = 5 s), started
//! over after [`BACKOFF_QUIET`] without a failure; the trigger stream adds at most
//! `BACKOFF_MIN`; an expired watch (410) lists again without waiting.

use std::future::Future;
use std::hash::Hash;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;

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

/// What a person should know about a failed list/watch of `resource` (plural.group).
pub fn describe(resource: &str, error: &watcher::Error) -> String {
    let api_error = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    match api_error {
        Some(404) => format!(
            "cannot list {resource}: the CustomResourceDefinition {resource} is not installed (kubectl gitops install)"
        ),
        Some(403) => format!(
            "cannot list or watch {resource}: forbidden for the reconciler's identity (check its ClusterRole)"
        ),
        _ => format!("watch of {resource} failed: {error}"),
    }
}

/// How often a watch that keeps failing for the same cause says so again at warn level.
pub const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// Decides which failures of one watch are worth a warning: the first, any with a new cause,
/// and the same cause again once per [`REPEAT_WARNING`] (with the count of attempts in
/// between); the rest go to debug. A reconciler started before its CRDs were installed would
/// otherwise warn on every retry of every watch.
#[derive(Debug, Default)]
struct Repeats {
    /// The cause last warned about, when, and how many attempts failed with it since.
    last: Option<(String, Instant, u32)>,
}

impl Repeats {
    /// `Some(n)` when this failure is to be warned about, `n` being the attempts that failed
    /// the same way since the last warning; `None` to log it at debug.
    fn failed(&mut self, cause: &str, now: Instant) -> Option<u32> {
        if let Some((last, at, since)) = &mut self.last
            && last == cause
        {
            if now.duration_since(*at) < REPEAT_WARNING {
                *since += 1;
                return None;
            }
            let suppressed = *since;
            (*at, *since) = (now, 0);
            return Some(suppressed);
        }
        self.last = Some((cause.to_owned(), now, 0));
        Some(0)
    }

    fn recovered(&mut self) {
        self.last = None;
    }
}

/// Logs the failures of one watch stream, naming the cause: a warning for the first failure,
/// for a new cause and once a minute while the cause stays the same (see [`Repeats`]), debug
/// lines for the other attempts (spaced by [`backoff`]), and one line when objects flow again.
///
/// A watch that expired (410 Gone, e.g. after an apiserver restart: its watch cache starts at a
/// newer resourceVersion) is not a failure: the watcher lists again by itself, and this drops
/// the error so that no backoff delays that list — at most once per [`BACKOFF_QUIET`], so an
/// apiserver that answered every fresh watch with 410 would still be backed off, not hammered.
pub fn logged<S, K>(stream: S, resource: &'static str) -> impl Stream<Item = S::Item>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut failing = false;
    let mut repeats = Repeats::default();
    let mut last_expiry: Option<Instant> = None;
    stream.filter(move |item| {
        let keep = match item {
            Err(watcher::Error::WatchError(status))
                if status.code == 410
                    && last_expiry.is_none_or(|at| at.elapsed() > BACKOFF_QUIET) =>
            {
                last_expiry = Some(Instant::now());
                tracing::debug!(
                    resource,
                    "watch of {resource} expired; listing again at once"
                );
                false
            }
            Err(error) => {
                failing = true;
                let cause = describe(resource, error);
                match repeats.failed(&cause, Instant::now()) {
                    Some(0) => tracing::warn!(
                        resource,
                        error = %error,
                        "{cause}; retrying within {:?}",
                        BACKOFF_MAX * 2
                    ),
                    Some(since) => tracing::warn!(
                        resource,
                        error = %error,
                        "{cause}; still failing ({since} more attempts since the last warning), retrying within {:?}",
                        BACKOFF_MAX * 2
                    ),
                    None => tracing::debug!(resource, error = %error, "{cause}; retrying"),
                }
                true
            }
            // Init starts every (re-)list, also one that is about to fail: not yet a success.
            Ok(watcher::Event::Init) => true,
            Ok(_) => {
                if failing {
                    failing = false;
                    repeats.recovered();
                    tracing::info!(resource, "watch of {resource} works again");
                }
                true
            }
        };
        futures::future::ready(keep)
    })
}

/// Runs `controller` to its end, except when `shutdown` completes while `store` has never been
/// filled: then it is dropped and this returns at once.
///
/// Why: kube-runtime's `Controller` holds every reconcile until its store is ready, and keeps
/// waiting for that even after a graceful shutdown ended its trigger streams; when the list
/// never succeeds (CRD not installed, RBAC forbidden, apiserver unreachable) the controller
/// would never return and SIGTERM would hang. Guarantees: when the store was not ready at
/// shutdown, no reconcile was ever started, so dropping the controller abandons nothing;
/// when it was ready, the controller is awaited as usual (reconciles in flight finish).
pub async fn run_until_shutdown<K>(
    controller: impl Future<Output = ()>,
    store: Store<K>,
    shutdown: impl Future<Output = ()>,
    resource: &'static str,
) where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let never_synced = async {
        shutdown.await;
        if store.wait_until_ready().now_or_never().is_some() {
            // Synced: the controller drains its reconciles and ends by itself.
            std::future::pending::<()>().await;
        }
        tracing::info!(
            resource,
            "stopping before {resource} could ever be listed; no reconcile had started"
        );
    };
    tokio::select! {
        () = controller => {},
        () = never_synced => {},
    }
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

    #[tokio::test]
    async fn an_expired_watch_is_dropped_once_per_quiet_period_other_errors_pass() {
        let gone = || {
            Err::<watcher::Event<()>, _>(watcher::Error::WatchError(Box::new(
                kube::core::Status::failure("too old resource version", "Expired").with_code(410),
            )))
        };
        let items = vec![
            Ok(watcher::Event::Init),
            gone(),
            Ok(watcher::Event::InitDone),
            gone(),
            Err(watcher::Error::NoResourceVersion),
        ];
        let out: Vec<_> = logged(futures::stream::iter(items), "things.example.com")
            .collect()
            .await;
        let kinds: Vec<&str> = out
            .iter()
            .map(|i| match i {
                Ok(watcher::Event::Init) => "init",
                Ok(watcher::Event::InitDone) => "done",
                Err(watcher::Error::WatchError(_)) => "expired",
                Err(_) => "error",
                Ok(_) => "other",
            })
            .collect();
        // The first expiry is dropped; a second one right after is backed off like any error.
        assert_eq!(kinds, ["init", "done", "expired", "error"]);
    }

    #[test]
    fn a_cause_that_stays_the_same_is_warned_about_once_a_minute() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(r.failed("crd missing", t0), Some(0));
        assert_eq!(r.failed("crd missing", t0 + s(5)), None);
        assert_eq!(r.failed("crd missing", t0 + s(10)), None);
        assert_eq!(r.failed("crd missing", t0 + s(61)), Some(2));
        assert_eq!(r.failed("crd missing", t0 + s(62)), None);
        // A new cause is warned about at once, and so is the old one coming back.
        assert_eq!(r.failed("forbidden", t0 + s(63)), Some(0));
        assert_eq!(r.failed("crd missing", t0 + s(64)), Some(0));
        // After a recovery the next failure is news.
        r.recovered();
        assert_eq!(r.failed("crd missing", t0 + s(65)), Some(0));
    }

    #[test]
    fn a_missing_crd_and_forbidden_say_so() {
        let status = |code: u16| kube::core::Status::failure("x", "NotFound").with_code(code);
        let missing = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(404))));
        assert!(
            describe("kustomizations.kubectl-gitops.io", &missing).contains(
                "CustomResourceDefinition kustomizations.kubectl-gitops.io is not installed"
            ),
        );
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(403))));
        assert!(describe("gitrepositories.kubectl-gitops.io", &forbidden).contains("forbidden"));
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_store_that_never_synced() {
        let (store, _writer) =
            kube::runtime::reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let finished = tokio::time::timeout(
            Duration::from_secs(5),
            run_until_shutdown(std::future::pending(), store, async {}, "configmaps"),
        )
        .await;
        assert!(
            finished.is_ok(),
            "shutdown waited for the unsynced controller"
        );
    }
}
