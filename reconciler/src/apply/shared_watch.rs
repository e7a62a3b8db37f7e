//! Health waits over shared watches: one watch per (identity, kind, namespace) instead of one
//! per object, so N Kustomizations waiting on the same kinds in a namespace cost the apiserver
//! one LIST + WATCH per kind, not one per object.
//!
//! A watch starts on the first wait that needs it and keeps, per object name, only the object's
//! [`Health`] and its pods' selector (never the object). It stops once no wait has used it for
//! [`IDLE`]; at most [`MAX_WATCHES`] run at once. A wait that finds the table full of watches
//! in use falls back to one watch per object ([`health::wait`]), so the bound never blocks a
//! wait. The identity (the impersonated user, or none for the reconciler's own) is part of the
//! key: a tenant's wait only sees what its own identity may list.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::health::{self, Health, HealthError, conclude, typed_value_of};
use super::object::ObjectRef;
use super::resolve::Resolver;

/// Most shared watches running at once.
pub const MAX_WATCHES: usize = 512;
/// A watch no wait has used for this long is stopped.
pub const IDLE: Duration = Duration::from_secs(300);

/// What one shared watch scopes: who lists, which kind, where (None: cluster-scoped kind).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    identity: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
}

/// What a shared watch knows of one object.
#[derive(Clone)]
struct Seen {
    health: Health,
    selector: Option<String>,
}

#[derive(Default)]
struct State {
    /// True once the first list has completed: before it, an absent object is not yet known.
    listed: bool,
    objects: HashMap<String, Seen>,
    /// The objects of a re-list in progress (replace `objects` when it completes).
    relisting: Option<HashMap<String, Seen>>,
    /// The last list/watch error, until the next successful list.
    error: Option<String>,
}

struct Shared {
    state: RwLock<State>,
    /// Bumped on every change of `state`; waits sleep on it.
    version: watch::Sender<u64>,
    users: AtomicUsize,
    last_used: Mutex<Instant>,
}

struct Entry {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

/// The table of shared health watches of one reconciler.
#[derive(Default)]
pub struct SharedWatches {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Drop for SharedWatches {
    fn drop(&mut self) {
        let entries = self.entries.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values() {
            entry.task.abort();
        }
    }
}

/// A wait's use of one shared watch; released when dropped.
struct Lease {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self
            .shared
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.shared.users.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SharedWatches {
    /// The number of shared watches running now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no shared watch runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A lease on the watch of `key`, started when there is none; None when [`MAX_WATCHES`]
    /// watches are in use.
    fn lease(&self, key: Key, api: Api<DynamicObject>) -> Option<Lease> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Stop idle watches (and any whose task ended).
        entries.retain(|_, e| {
            let idle = e.shared.users.load(Ordering::Acquire) == 0
                && now
                    .duration_since(*e.shared.last_used.lock().unwrap_or_else(|p| p.into_inner()))
                    >= IDLE;
            let keep = !idle && !e.task.is_finished();
            if !keep {
                e.task.abort();
            }
            keep
        });
        if !entries.contains_key(&key) {
            if entries.len() >= MAX_WATCHES {
                return None;
            }
            let (version, _) = watch::channel(0u64);
            let shared = Arc::new(Shared {
                state: RwLock::new(State::default()),
                version,
                users: AtomicUsize::new(0),
                last_used: Mutex::new(now),
            });
            let task = tokio::spawn(run(api, key.clone(), shared.clone())).abort_handle();
            entries.insert(key.clone(), Entry { shared, task });
        }
        let entry = entries.get(&key)?;
        entry.shared.users.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            shared: entry.shared.clone(),
            changes: entry.shared.version.subscribe(),
        })
    }
}

/// Runs one shared watch until aborted: every event updates the health of its object.
async fn run(api: Api<DynamicObject>, key: Key, shared: Arc<Shared>) {
    let seen = |object: &DynamicObject| match typed_value_of(&key.api_version, &key.kind, object) {
        Ok(value) => Seen {
            health: health::health(&value),
            selector: health::pod_selector(&value),
        },
        Err(e) => Seen {
            health: Health::InProgress(format!("unreadable object: {e}")),
            selector: None,
        },
    };
    let name = |object: &DynamicObject| object.metadata.name.clone().unwrap_or_default();
    let mut stream = watcher(api, watcher::Config::default())
        .backoff(crate::backoff::backoff())
        .boxed();
    while let Some(event) = stream.next().await {
        {
            let mut state = shared.state.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Ok(watcher::Event::Init) => state.relisting = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    let seen = seen(&object);
                    state
                        .relisting
                        .get_or_insert_with(HashMap::new)
                        .insert(name(&object), seen);
                }
                Ok(watcher::Event::InitDone) => {
                    state.objects = state.relisting.take().unwrap_or_default();
                    state.listed = true;
                    state.error = None;
                }
                Ok(watcher::Event::Apply(object)) => {
                    let seen = seen(&object);
                    state.objects.insert(name(&object), seen);
                }
                Ok(watcher::Event::Delete(object)) => {
                    state.objects.remove(&name(&object));
                }
                Err(e) => state.error = Some(e.to_string()),
            }
        }
        shared.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// [`health::wait`] over shared watches: the same guarantees (returns `Ok` only when every
/// object was observed current, `Failed` once all settled with a failure, `Timeout` naming each
/// unsettled object with its last known state), with `identity` naming who `client` lists as.
pub async fn wait(
    watches: &SharedWatches,
    identity: &str,
    client: &kube::Client,
    resolver: &Resolver,
    objects: &[ObjectRef],
    timeout: Duration,
) -> Result<(), HealthError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut groups: BTreeMap<Key, (ApiResource, bool, Vec<ObjectRef>)> = BTreeMap::new();
    for object in objects {
        let (resource, namespaced) = health::resolve(client, resolver, object).await?;
        let key = Key {
            identity: identity.to_owned(),
            api_version: object.api_version(),
            kind: object.kind.clone(),
            namespace: if namespaced {
                object.namespace.clone()
            } else {
                None
            },
        };
        groups
            .entry(key)
            .or_insert_with(|| (resource, namespaced, Vec::new()))
            .2
            .push(object.clone());
    }
    let mut leases: Vec<(Lease, Vec<ObjectRef>)> = Vec::new();
    for (key, (resource, namespaced, members)) in groups {
        let api: Api<DynamicObject> = match (&key.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        match watches.lease(key, api) {
            Some(lease) => leases.push((lease, members)),
            // Every shared watch is in use: this wait watches its objects one by one.
            None => {
                drop(leases);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return health::wait(client, resolver, objects, left).await;
            }
        }
    }
    let mut last: BTreeMap<ObjectRef, Health> = BTreeMap::new();
    let mut selectors: BTreeMap<ObjectRef, String> = BTreeMap::new();
    loop {
        for (lease, members) in &mut leases {
            // Mark the current version seen before reading, so no change is missed.
            lease.changes.borrow_and_update();
            let state = lease.shared.state.read().unwrap_or_else(|e| e.into_inner());
            for object in members.iter() {
                let (health, selector) = match state.objects.get(&object.name) {
                    Some(seen) => (seen.health.clone(), seen.selector.clone()),
                    None => {
                        let why = match (&state.error, state.listed) {
                            (Some(e), _) => format!("watch error: {e}"),
                            (None, true) => "not found".to_owned(),
                            (None, false) => "not yet observed".to_owned(),
                        };
                        (Health::InProgress(why), None)
                    }
                };
                match selector {
                    Some(selector) => selectors.insert(object.clone(), selector),
                    None => selectors.remove(object),
                };
                last.insert(object.clone(), health);
            }
        }
        if last.values().all(|h| !matches!(h, Health::InProgress(_))) {
            break;
        }
        let changed = futures::future::select_all(
            leases
                .iter_mut()
                .map(|(lease, _)| Box::pin(lease.changes.changed())),
        );
        match tokio::time::timeout_at(deadline, changed).await {
            Ok((Ok(()), _, _)) => {}
            // A watch task ended (it only does when stopped): look again shortly.
            Ok((Err(_), _, _)) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(500)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(leases);
    conclude(client, &last, &selectors).await
}
