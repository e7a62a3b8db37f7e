//! Watch plumbing shared by the controllers: how a broken watch's failures are logged, and a
//! shutdown that does not wait for a cache that never filled. Watches reconnect with
//! [`crate::backoff`]; an expired watch (410) lists again without waiting.

use std::future::Future;
use std::hash::Hash;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::backoff::{BACKOFF_MAX, BACKOFF_QUIET};

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

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from an object kept in a controller's store what no controller reads and what can
/// make up most of its size: `managedFields` and `kubectl apply`'s copy of the object.
pub fn slim<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
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
/// for a new cause and once a minute while the cause stays the same (see `Repeats`), debug
/// lines for the other attempts (spaced by [`crate::backoff::backoff`]), and one line when
/// objects flow again.
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
    fn stored_objects_lose_managed_fields_and_kubectls_copy_only() {
        let mut ks: crate::api::Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": "ns",
                "annotations": {LAST_APPLIED: "{\"big\": true}",
                                "reconcile.fluxcd.io/requestedAt": "now"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"interval": "1m", "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "repo"}}
        }))
        .expect("a Kustomization");
        slim(&mut ks);
        assert_eq!(ks.metadata.managed_fields, None);
        let annotations = ks.metadata.annotations.expect("annotations kept");
        assert_eq!(annotations.len(), 1);
        assert_eq!(
            annotations
                .get("reconcile.fluxcd.io/requestedAt")
                .map(String::as_str),
            Some("now")
        );
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
