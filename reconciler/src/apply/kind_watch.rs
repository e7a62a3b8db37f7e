//! Shared watches for health checks: one cluster-wide store per group/version/kind of the
//! objects the reconciler manages (label `kubectl-gitops.io/name` present), shared by every
//! Kustomization that runs with the reconciler's own identity.
//!
//! Instead of a LIST + WATCH per object and reconcile, a health check reads the store and is
//! woken on every change of its kind. Limits (all here): at most [`MAX_KINDS`] stores at once
//! (when full and none idle, a health check falls back to per-object watches); a store no
//! health check used for [`IDLE_DROP`] is stopped (checked every [`SWEEP_EVERY`]). A store's
//! watch restarts on error with the reconcilers' bounded backoff ([`crate::backoff`]).
//!
//! A store keeps no objects, only what a health check needs of each ([`Observed`]): its
//! version and what the health rules ([`health::health`], [`health::pod_selector`]) made of it
//! when it arrived, a few hundred bytes where a Deployment as an object takes kilobytes; with
//! tens of thousands of applied objects that is most of the reconciler's memory.
//!
//! Freshness: a store may lag a few milliseconds behind the apiserver, so a health check passes
//! the resourceVersion of each object as the reconcile last saw it (its write's answer, or the
//! live read when nothing was written) and the store's copy counts only once it is at least
//! that version ([`Seen::reached_by`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;

use super::health::{self, Health};
use crate::api::conditions::meta;

/// At most this many kinds have a shared store at once.
pub const MAX_KINDS: usize = 64;
/// A store unused by any health check for this long is stopped.
pub const IDLE_DROP: Duration = Duration::from_secs(5 * 60);
/// How often idle stores are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The version of an object a reconcile last saw (write answer or live read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.generation`, when the kind has one.
    pub generation: Option<i64>,
}

impl Seen {
    /// The version recorded in a live object's metadata; `None` without a resourceVersion.
    pub fn of(object: &serde_json::Value) -> Option<Self> {
        let meta = object.get("metadata")?;
        Some(Self {
            uid: meta.get("uid")?.as_str()?.to_owned(),
            resource_version: meta.get("resourceVersion")?.as_str()?.to_owned(),
            generation: meta.get("generation").and_then(serde_json::Value::as_i64),
        })
    }

    /// Whether `live` (a store's copy) is this version or a later one. resourceVersions are
    /// etcd revisions (comparable integers on every apiserver backed by etcd); when one does not
    /// parse as an integer, the same uid at the same or a later generation counts.
    pub fn reached_by(&self, live: &Observed) -> bool {
        let Some(rv) = live.resource_version.as_deref() else {
            return false;
        };
        if rv == self.resource_version {
            return true;
        }
        match (rv.parse::<u64>(), self.resource_version.parse::<u64>()) {
            (Ok(live_rv), Ok(seen_rv)) => live_rv >= seen_rv,
            _ => {
                live.uid.as_deref() == Some(self.uid.as_str())
                    && matches!((live.generation, self.generation),
                        (Some(l), Some(s)) if l >= s)
            }
        }
    }
}

/// What a store keeps of one object: its version and what the health rules made of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// [`health::health`] of the object.
    pub health: Health,
    /// [`health::pod_selector`] of the object.
    pub pod_selector: Option<String>,
}

impl Observed {
    /// Evaluates `object` (of `resource`'s kind) once, keeping its version and the results.
    pub fn of(resource: &ApiResource, object: &DynamicObject) -> Self {
        let (health, pod_selector) =
            health::assess_live(&resource.api_version, &resource.kind, object);
        Self {
            uid: object.metadata.uid.clone(),
            resource_version: object.metadata.resource_version.clone(),
            generation: object.metadata.generation,
            health,
            pod_selector,
        }
    }
}

/// An object's place in a store: namespace (empty for cluster-scoped objects) and name.
type ObjectKey = (String, String);
type Objects = HashMap<ObjectKey, Arc<Observed>>;

/// A store's kind: group, version, kind.
pub(super) type Key = (String, String, String);

/// The store key of `resource`'s kind.
pub(super) fn kind_key(resource: &ApiResource) -> Key {
    (
        resource.group.clone(),
        resource.version.clone(),
        resource.kind.clone(),
    )
}

/// What a store's watch task reports.
struct SharedState {
    /// Bumped after every event the store applied (and on every watch error).
    changed: tokio::sync::watch::Sender<()>,
    /// The last watch error while the store has not (re)listed since.
    error: Mutex<Option<String>>,
    /// Set once the first list completed.
    ready: AtomicBool,
}

/// One kind's store and the signal of its changes.
pub struct KindWatch {
    objects: Arc<RwLock<Objects>>,
    state: Arc<SharedState>,
    users: AtomicUsize,
    last_used: Mutex<Instant>,
    task: tokio::task::AbortHandle,
}

impl KindWatch {
    /// A receiver woken on every change of the store (subscribe before reading it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.state.changed.subscribe()
    }

    /// `Err(why)` while the store has not completed its first list (why: the last watch
    /// error, if any); else what the store holds of the object, if it exists.
    pub fn get(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Observed>>, Option<String>> {
        if !self.state.ready.load(Ordering::Acquire) {
            return Err(self
                .state
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone());
        }
        let key = (namespace.unwrap_or_default().to_owned(), name.to_owned());
        Ok(self
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned())
    }
}

impl Drop for KindWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A health check's use of a [`KindWatch`]; the store is not dropped while one exists.
pub struct Lease(Arc<KindWatch>);

impl Lease {
    /// A new use of `watch`.
    fn of(watch: Arc<KindWatch>) -> Self {
        watch.users.fetch_add(1, Ordering::AcqRel);
        Self(watch)
    }
}

impl std::ops::Deref for Lease {
    type Target = KindWatch;
    fn deref(&self) -> &KindWatch {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.users.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The shared stores, by kind. Cheap to share behind an `Arc`.
pub struct KindWatches {
    client: kube::Client,
    kinds: Arc<Mutex<HashMap<Key, Arc<KindWatch>>>>,
    sweeper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl KindWatches {
    /// Stores that list and watch with `client`, which must be the reconciler's own identity:
    /// every Kustomization reading them sees what that identity may see.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            kinds: Arc::new(Mutex::new(HashMap::new())),
            sweeper: Mutex::new(None),
        }
    }

    /// The store of `resource`'s kind, started on first use; `None` when [`MAX_KINDS`] stores
    /// are in use (the caller watches per object instead).
    pub fn lease(&self, resource: &ApiResource) -> Option<Lease> {
        self.start_sweeper();
        let key = kind_key(resource);
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let watch = match kinds.get(&key) {
            Some(watch) => watch.clone(),
            None => {
                if kinds.len() >= MAX_KINDS {
                    drop_idle(&mut kinds, Duration::ZERO);
                    if kinds.len() >= MAX_KINDS {
                        return None;
                    }
                }
                let watch = Arc::new(start(self.client.clone(), resource.clone()));
                kinds.insert(key, watch.clone());
                watch
            }
        };
        Some(Lease::of(watch))
    }

    /// The store of `resource`'s kind when one is running, has completed its list and has had
    /// no watch error since; never starts one.
    pub fn ready(&self, resource: &ApiResource) -> Option<Lease> {
        let watch = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kind_key(resource))?
            .clone();
        let healthy = watch.state.ready.load(Ordering::Acquire)
            && watch
                .state
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none();
        if !healthy {
            return None;
        }
        Some(Lease::of(watch))
    }

    /// How many kinds have a store now.
    pub fn len(&self) -> usize {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no kind has a store.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start_sweeper(&self) {
        let mut sweeper = self.sweeper.lock().unwrap_or_else(|e| e.into_inner());
        if sweeper.is_some() {
            return;
        }
        let kinds: Weak<Mutex<HashMap<Key, Arc<KindWatch>>>> = Arc::downgrade(&self.kinds);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(kinds) = kinds.upgrade() else {
                    return;
                };
                drop_idle(
                    &mut kinds.lock().unwrap_or_else(|e| e.into_inner()),
                    IDLE_DROP,
                );
            }
        });
        *sweeper = Some(task.abort_handle());
    }
}

impl Drop for KindWatches {
    fn drop(&mut self) {
        if let Some(task) = self
            .sweeper
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Drops the stores no health check uses and none used for `idle`.
fn drop_idle(kinds: &mut HashMap<Key, Arc<KindWatch>>, idle: Duration) {
    let now = Instant::now();
    kinds.retain(|_, w| {
        w.users.load(Ordering::Acquire) > 0
            || now.duration_since(*w.last_used.lock().unwrap_or_else(|e| e.into_inner())) < idle
    });
}

fn key_of(object: &DynamicObject) -> ObjectKey {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// Applies one watch event to `objects`; `relisted` collects a (re)list until it is complete,
/// so readers see the previous state until then. Returns whether the first list completed.
fn apply_event(
    resource: &ApiResource,
    objects: &RwLock<Objects>,
    relisted: &mut Option<Objects>,
    event: watcher::Event<DynamicObject>,
) -> bool {
    let write = || objects.write().unwrap_or_else(|e| e.into_inner());
    match event {
        watcher::Event::Init => *relisted = Some(Objects::new()),
        watcher::Event::InitApply(object) => {
            relisted
                .get_or_insert_with(Objects::new)
                .insert(key_of(&object), Arc::new(Observed::of(resource, &object)));
        }
        watcher::Event::InitDone => {
            *write() = relisted.take().unwrap_or_default();
            return true;
        }
        watcher::Event::Apply(object) => {
            let observed = Arc::new(Observed::of(resource, &object));
            write().insert(key_of(&object), observed);
        }
        watcher::Event::Delete(object) => {
            write().remove(&key_of(&object));
        }
    }
    false
}

fn start(client: kube::Client, resource: ApiResource) -> KindWatch {
    let objects = Arc::new(RwLock::new(Objects::new()));
    let (changed, _) = tokio::sync::watch::channel(());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default().labels(meta::OWNER_NAME_LABEL);
    let state = Arc::new(SharedState {
        changed,
        error: Mutex::new(None),
        ready: AtomicBool::new(false),
    });
    let task_state = state.clone();
    let task_objects = objects.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config)
            .backoff(crate::backoff::backoff())
            .boxed();
        let mut relisted = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if apply_event(&resource, &task_objects, &mut relisted, event) {
                        *task_state.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        task_state.ready.store(true, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::debug!(kind = %resource.kind, error = %e, "shared health watch failed; retrying");
                    *task_state.error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("watch error: {e}"));
                }
            }
            task_state.changed.send_replace(());
        }
    });
    KindWatch {
        objects,
        state,
        users: AtomicUsize::new(0),
        last_used: Mutex::new(Instant::now()),
        task: task.abort_handle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        )
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn stored(uid: &str, rv: &str, generation: Option<i64>) -> Observed {
        let mut o = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "uid": uid, "resourceVersion": rv},
            "spec": {"replicas": 1}
        }));
        o.metadata.generation = generation;
        Observed::of(&deployments(), &o)
    }

    #[test]
    fn a_copy_counts_from_the_version_seen_on() {
        let seen = Seen::of(&json!({"metadata":
            {"uid": "u1", "resourceVersion": "100", "generation": 2}}))
        .unwrap();
        assert!(seen.reached_by(&stored("u1", "100", Some(2))));
        assert!(seen.reached_by(&stored("u1", "101", Some(2))));
        // A later object of the same name (recreated by someone) is newer too.
        assert!(seen.reached_by(&stored("u2", "150", Some(1))));
        assert!(!seen.reached_by(&stored("u1", "99", Some(1))));
        // Opaque versions: the same object at the same or a later generation.
        let opaque = Seen {
            uid: "u1".into(),
            resource_version: "a".into(),
            generation: Some(2),
        };
        assert!(opaque.reached_by(&stored("u1", "b", Some(2))));
        assert!(!opaque.reached_by(&stored("u1", "b", Some(1))));
        assert!(!opaque.reached_by(&stored("u0", "b", Some(3))));
        assert_eq!(Seen::of(&json!({"metadata": {"uid": "u"}})), None);
    }

    fn deployment(name: &str, rv: &str, ready: i64) -> DynamicObject {
        // As the apiserver sends it in a list or watch: no apiVersion or kind on the items.
        object(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "resourceVersion": rv, "generation": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                       "readyReplicas": ready, "availableReplicas": ready}
        }))
    }

    #[test]
    fn a_store_keeps_each_objects_health_as_the_rules_judge_the_whole_object() {
        let resource = deployments();
        let whole = |o: &DynamicObject| {
            let value = health::typed_value_of("apps/v1", "Deployment", o).unwrap();
            (health::health(&value), health::pod_selector(&value))
        };
        let objects = RwLock::new(Objects::new());
        let mut relisted = None;
        let get = |name: &str| {
            objects
                .read()
                .unwrap()
                .get(&("ns".to_owned(), name.to_owned()))
                .cloned()
        };
        let (web, db) = (deployment("web", "10", 2), deployment("db", "11", 1));
        assert!(!apply_event(
            &resource,
            &objects,
            &mut relisted,
            watcher::Event::Init
        ));
        for o in [&web, &db] {
            apply_event(
                &resource,
                &objects,
                &mut relisted,
                watcher::Event::InitApply(o.clone()),
            );
        }
        // A list shows only once complete.
        assert_eq!(get("web"), None);
        assert!(apply_event(
            &resource,
            &objects,
            &mut relisted,
            watcher::Event::InitDone
        ));
        for o in [&web, &db] {
            let kept = get(o.metadata.name.as_deref().unwrap()).expect("kept");
            assert_eq!((kept.health.clone(), kept.pod_selector.clone()), whole(o));
            assert_eq!(kept.resource_version, o.metadata.resource_version);
        }
        assert_eq!(get("web").unwrap().health, Health::Current);
        assert!(matches!(get("db").unwrap().health, Health::InProgress(_)));
        assert_eq!(get("web").unwrap().pod_selector.as_deref(), Some("app=web"));

        let db_ready = deployment("db", "12", 2);
        apply_event(
            &resource,
            &objects,
            &mut relisted,
            watcher::Event::Apply(db_ready),
        );
        assert_eq!(get("db").unwrap().health, Health::Current);
        apply_event(
            &resource,
            &objects,
            &mut relisted,
            watcher::Event::Delete(web),
        );
        assert_eq!(get("web"), None);
        // A relist replaces the store's content once it is complete.
        apply_event(&resource, &objects, &mut relisted, watcher::Event::Init);
        apply_event(&resource, &objects, &mut relisted, watcher::Event::InitDone);
        assert_eq!(get("db"), None);
    }
}
