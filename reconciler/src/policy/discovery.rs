//! Which kinds the cluster serves and their scope, for the tenancy re-check: one table per
//! process, read from aggregated discovery and shared by every reconcile.
//!
//! - A table younger than [`TABLE_TTL`] is used as it is; an older one is read again before a
//!   pipeline runs ([`ClusterScopes::table`]). If discovery cannot be read, the pipeline does
//!   not run (fail closed).
//! - A kind the table does not know (a CRD created since it was read) makes the check read
//!   discovery again at once, unless the table is younger than [`UNKNOWN_KIND_REFRESH`]
//!   ([`ClusterScopes::scope`]). A kind still unknown then is treated by the tenancy check as
//!   cluster-scoped (fail closed).
//! - Reads are single-flight: concurrent callers wait for one read, bounded by
//!   [`FETCH_TIMEOUT`].

use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a table is used before it is read again.
pub const TABLE_TTL: Duration = Duration::from_secs(60);
/// How often at most an unknown kind makes the process read discovery again.
pub const UNKNOWN_KIND_REFRESH: Duration = Duration::from_secs(2);
/// Bound on one read of discovery.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The scope of a kind, as the cluster serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindScope {
    /// Cluster-scoped.
    Cluster,
    /// Namespaced.
    Namespaced,
}

/// The kinds the cluster served when the table was read, by `(group, kind)`.
#[derive(Clone, Debug, Default)]
pub struct KindTable {
    cluster: HashSet<(String, String)>,
    namespaced: HashSet<(String, String)>,
}

impl KindTable {
    /// Adds a kind (`group` is `""` for the core group).
    pub fn insert(&mut self, group: &str, kind: &str, scope: KindScope) {
        let key = (group.to_owned(), kind.to_owned());
        match scope {
            KindScope::Cluster => self.cluster.insert(key),
            KindScope::Namespaced => self.namespaced.insert(key),
        };
    }

    /// The scope of a kind, if the cluster serves it.
    pub fn scope(&self, group: &str, kind: &str) -> Option<KindScope> {
        let key = (group.to_owned(), kind.to_owned());
        if self.cluster.contains(&key) {
            Some(KindScope::Cluster)
        } else if self.namespaced.contains(&key) {
            Some(KindScope::Namespaced)
        } else {
            None
        }
    }
}

type Fetch = dyn Fn() -> BoxFuture<'static, Result<KindTable, String>> + Send + Sync;

struct Inner {
    fetch: Box<Fetch>,
    /// A table younger than this is not read again for an unknown kind.
    unknown_kind_refresh: Duration,
    current: Mutex<Option<(Instant, Arc<KindTable>)>>,
    /// Held while discovery is read, so concurrent callers share one read.
    reading: tokio::sync::Mutex<()>,
}

/// The process's table of the cluster's kinds (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct ClusterScopes {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterScopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterScopes").finish_non_exhaustive()
    }
}

impl PartialEq for ClusterScopes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ClusterScopes {}

impl ClusterScopes {
    /// The table of `client`'s cluster, from aggregated discovery (two requests per read).
    pub fn new(client: kube::Client) -> ClusterScopes {
        ClusterScopes::with_fetch(UNKNOWN_KIND_REFRESH, move || {
            let client = client.clone();
            Box::pin(async move {
                let discovery = kube::discovery::Discovery::new(client)
                    .run_aggregated()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut table = KindTable::default();
                for (resource, caps) in discovery.groups().flat_map(|g| g.resources_by_stability())
                {
                    let scope = match caps.scope {
                        kube::discovery::Scope::Cluster => KindScope::Cluster,
                        kube::discovery::Scope::Namespaced => KindScope::Namespaced,
                    };
                    table.insert(&resource.group, &resource.kind, scope);
                }
                Ok(table)
            })
        })
    }

    /// A table read by `fetch`, read again for an unknown kind when older than
    /// `unknown_kind_refresh` (tests).
    pub fn with_fetch(
        unknown_kind_refresh: Duration,
        fetch: impl Fn() -> BoxFuture<'static, Result<KindTable, String>> + Send + Sync + 'static,
    ) -> ClusterScopes {
        ClusterScopes {
            inner: Arc::new(Inner {
                fetch: Box::new(fetch),
                unknown_kind_refresh,
                current: Mutex::new(None),
                reading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn current(&self) -> Option<(Instant, Arc<KindTable>)> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The table, read again first if it is older than `TABLE_TTL`; an error if discovery
    /// cannot be read (the caller must not run the pipeline then).
    pub async fn table(&self) -> Result<Arc<KindTable>, String> {
        match self.current() {
            Some((read, table)) if read.elapsed() < TABLE_TTL => Ok(table),
            _ => self.read(TABLE_TTL).await,
        }
    }

    /// Reads discovery unless a read younger than `fresh` is there by the time this caller's
    /// turn comes.
    async fn read(&self, fresh: Duration) -> Result<Arc<KindTable>, String> {
        let _reading = self.inner.reading.lock().await;
        if let Some((read, table)) = self.current()
            && read.elapsed() < fresh
        {
            return Ok(table);
        }
        let table = tokio::time::timeout(FETCH_TIMEOUT, (self.inner.fetch)())
            .await
            .map_err(|_| format!("discovery did not answer within {FETCH_TIMEOUT:?}"))??;
        let table = Arc::new(table);
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), table.clone()));
        Ok(table)
    }

    /// The scope of a kind; if the table does not know it, discovery is read again (unless
    /// the table is younger than `UNKNOWN_KIND_REFRESH`) and asked once more. Blocking: call
    /// it from a blocking thread of a tokio runtime (without one no read is made). `None`:
    /// the cluster does not serve the kind, or discovery could not be read.
    pub fn scope(&self, group: &str, kind: &str) -> Option<KindScope> {
        if let Some(found) = self.current().and_then(|(_, t)| t.scope(group, kind)) {
            return Some(found);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        // Reading the cluster uses no CPU: the pipeline on this thread must not keep its
        // CPU turn while it waits.
        super::sched::Turns::give_back_kept();
        match runtime.block_on(self.read(self.inner.unknown_kind_refresh)) {
            Ok(table) => table.scope(group, kind),
            Err(e) => {
                tracing::warn!(error = %e, group, kind, "reading discovery for an unknown kind failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A discovery that serves `Deployment.apps` always and `ClusterIssuer.cert-manager.io`
    /// from its second read on, and fails while `down` is set; counts its reads.
    fn fake(
        unknown_kind_refresh: Duration,
    ) -> (
        ClusterScopes,
        Arc<AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let reads = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (counted, failing) = (reads.clone(), down.clone());
        let scopes = ClusterScopes::with_fetch(unknown_kind_refresh, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let failing = failing.load(Ordering::SeqCst);
            Box::pin(async move {
                if failing {
                    return Err("connection refused".to_owned());
                }
                let mut table = KindTable::default();
                table.insert("apps", "Deployment", KindScope::Namespaced);
                if n >= 1 {
                    table.insert("cert-manager.io", "ClusterIssuer", KindScope::Cluster);
                }
                Ok(table)
            })
        });
        (scopes, reads, down)
    }

    #[tokio::test]
    async fn the_table_is_shared_until_it_expires_and_a_failed_read_fails_closed() {
        let (scopes, reads, down) = fake(UNKNOWN_KIND_REFRESH);
        down.store(true, Ordering::SeqCst);
        let err = scopes
            .table()
            .await
            .expect_err("no table without discovery");
        assert!(err.contains("connection refused"), "{err}");
        down.store(false, Ordering::SeqCst);
        let (a, b) = tokio::join!(scopes.table(), scopes.table());
        assert!(a.is_ok() && b.is_ok());
        scopes.table().await.expect("cached");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "one failed read, then one shared"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_kind_reads_discovery_again_but_not_more_often_than_the_bound() {
        let (scopes, reads, _) = fake(Duration::ZERO);
        scopes.table().await.expect("read");
        let s = scopes.clone();
        let (deployment, issuer, issuer_again, unknown) = tokio::task::spawn_blocking(move || {
            (
                s.scope("apps", "Deployment"),
                s.scope("cert-manager.io", "ClusterIssuer"),
                s.scope("cert-manager.io", "ClusterIssuer"),
                s.scope("example.com", "Nothing"),
            )
        })
        .await
        .expect("blocking task");
        assert_eq!(deployment, Some(KindScope::Namespaced));
        // Created after the first read: learnt by reading again.
        assert_eq!(issuer, Some(KindScope::Cluster));
        assert_eq!(issuer_again, Some(KindScope::Cluster));
        // Read again for, and unknown even then.
        assert_eq!(unknown, None);
        assert_eq!(reads.load(Ordering::SeqCst), 3);

        // With a bound, a table younger than it is not read again.
        let (scopes, reads, _) = fake(Duration::from_secs(3600));
        scopes.table().await.expect("read");
        let issuer =
            tokio::task::spawn_blocking(move || scopes.scope("cert-manager.io", "ClusterIssuer"))
                .await
                .expect("blocking task");
        assert_eq!(issuer, None);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
