//! Health of applied objects: kstatus-equivalent rules (pure functions over the live object)
//! and a watch-driven wait that returns as soon as every object is healthy.
//!
//! The rules follow kstatus (sigs.k8s.io/cli-utils/pkg/kstatus): an object whose controller has
//! not observed its latest generation is in progress; workloads are current when every desired
//! replica is updated and available; custom resources report through `Ready`, `Reconciling` and
//! `Stalled` conditions.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::kind_watch::{self, KindWatches, Lease, Observed, Seen};
use super::object::ObjectRef;
use super::resolve::Resolver;

/// The health of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Fully reconciled by its controller.
    Current,
    /// Still converging; the message says what is missing.
    InProgress(String),
    /// Will not converge without a change (e.g. a Deployment past its progress deadline).
    Failed(String),
}

impl Health {
    /// True for [`Health::Current`].
    pub fn is_current(&self) -> bool {
        matches!(self, Health::Current)
    }
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn conditions(object: &Value) -> impl Iterator<Item = &Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions(object).find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).and_then(|c| c.get("status").and_then(Value::as_str)) == Some(status)
}

fn condition_text(object: &Value, type_: &str) -> String {
    let Some(c) = condition(object, type_) else {
        return String::new();
    };
    let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = c.get("message").and_then(Value::as_str).unwrap_or("");
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_owned(),
        _ => message.to_owned(),
    }
}

/// The health of `object` (a live object as the apiserver returns it).
pub fn health(object: &Value) -> Health {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return Health::InProgress("being deleted".into());
    }
    // A controller that has not seen the latest spec says nothing about it yet.
    if let (Some(generation), Some(observed)) = (
        int(object, "/metadata/generation"),
        int(object, "/status/observedGeneration"),
    ) && observed < generation
    {
        return Health::InProgress(format!(
            "generation {generation} not yet observed (observed {observed})"
        ));
    }
    match (group, kind) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("apps", "ReplicaSet") => replica_set(object),
        ("batch", "Job") => job(object),
        ("batch", "CronJob") => Health::Current,
        ("", "Pod") => pod(object),
        ("", "PersistentVolumeClaim") => pvc(object),
        ("", "Service") => service(object),
        ("", "Namespace") => namespace(object),
        ("policy", "PodDisruptionBudget") => pdb(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(object),
        _ => generic(object),
    }
}

fn needs_observed_generation(object: &Value) -> Option<Health> {
    if int(object, "/metadata/generation").is_some()
        && int(object, "/status/observedGeneration").is_none()
    {
        return Some(Health::InProgress("status not yet reported".into()));
    }
    None
}

fn deployment(object: &Value) -> Health {
    if let Some(h) = needs_observed_generation(object) {
        return h;
    }
    if let Some(c) = condition(object, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        return Health::Failed(format!(
            "progress deadline exceeded: {}",
            condition_text(object, "Progressing")
        ));
    }
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    let replicas = int(object, "/status/replicas").unwrap_or(0);
    let available = int(object, "/status/availableReplicas").unwrap_or(0);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    if updated < desired {
        return Health::InProgress(format!("{updated}/{desired} replicas updated"));
    }
    if replicas > updated {
        return Health::InProgress(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < desired {
        return Health::InProgress(format!("{available}/{desired} replicas available"));
    }
    if ready < desired {
        return Health::InProgress(format!("{ready}/{desired} replicas ready"));
    }
    Health::Current
}

fn stateful_set(object: &Value) -> Health {
    if let Some(h) = needs_observed_generation(object) {
        return h;
    }
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    let current = int(object, "/status/currentReplicas").unwrap_or(0);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    if ready < desired {
        return Health::InProgress(format!("{ready}/{desired} replicas ready"));
    }
    let on_delete = object
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    if !on_delete {
        let current_rev = object.pointer("/status/currentRevision");
        let update_rev = object.pointer("/status/updateRevision");
        if current_rev != update_rev {
            return Health::InProgress(format!("{updated}/{desired} replicas updated"));
        }
        if current < desired {
            return Health::InProgress(format!("{current}/{desired} replicas current"));
        }
    }
    Health::Current
}

fn daemon_set(object: &Value) -> Health {
    if let Some(h) = needs_observed_generation(object) {
        return h;
    }
    let desired = int(object, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(object, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(object, "/status/numberAvailable").unwrap_or(0);
    if updated < desired {
        return Health::InProgress(format!("{updated}/{desired} pods updated"));
    }
    if available < desired {
        return Health::InProgress(format!("{available}/{desired} pods available"));
    }
    Health::Current
}

fn replica_set(object: &Value) -> Health {
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let available = int(object, "/status/availableReplicas").unwrap_or(0);
    if condition_is(object, "ReplicaFailure", "True") {
        return Health::Failed(condition_text(object, "ReplicaFailure"));
    }
    if available < desired {
        return Health::InProgress(format!("{available}/{desired} replicas available"));
    }
    Health::Current
}

fn job(object: &Value) -> Health {
    if condition_is(object, "Failed", "True") {
        return Health::Failed(format!("job failed: {}", condition_text(object, "Failed")));
    }
    if condition_is(object, "Complete", "True") {
        return Health::Current;
    }
    // kstatus: a started Job is current (it is doing what its spec says).
    if object.pointer("/status/startTime").is_some() {
        return Health::Current;
    }
    Health::InProgress("job not started".into())
}

fn pod(object: &Value) -> Health {
    match object.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => Health::Current,
        Some("Failed") => Health::Failed("pod failed".into()),
        Some("Running") if condition_is(object, "Ready", "True") => Health::Current,
        Some(phase) => Health::InProgress(format!("pod is {phase}, not ready")),
        None => Health::InProgress("pod not scheduled".into()),
    }
}

fn pvc(object: &Value) -> Health {
    match object.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => Health::Current,
        Some(phase) => Health::InProgress(format!("claim is {phase}, not Bound")),
        None => Health::InProgress("claim not bound".into()),
    }
}

fn service(object: &Value) -> Health {
    let is_lb = object.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
    let has_ingress = object
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if is_lb && !has_ingress {
        return Health::InProgress("load balancer has no ingress address yet".into());
    }
    Health::Current
}

fn namespace(object: &Value) -> Health {
    match object.pointer("/status/phase").and_then(Value::as_str) {
        Some("Active") => Health::Current,
        Some(phase) => Health::InProgress(format!("namespace is {phase}")),
        None => Health::InProgress("namespace not yet active".into()),
    }
}

fn pdb(object: &Value) -> Health {
    if let Some(h) = needs_observed_generation(object) {
        return h;
    }
    let healthy = int(object, "/status/currentHealthy").unwrap_or(0);
    let desired = int(object, "/status/desiredHealthy").unwrap_or(0);
    if healthy < desired {
        return Health::InProgress(format!("{healthy}/{desired} pods healthy"));
    }
    Health::Current
}

fn crd(object: &Value) -> Health {
    if condition_is(object, "NamesAccepted", "False") {
        return Health::Failed(format!(
            "names not accepted: {}",
            condition_text(object, "NamesAccepted")
        ));
    }
    if condition_is(object, "Established", "True") {
        return Health::Current;
    }
    Health::InProgress("not yet established".into())
}

fn generic(object: &Value) -> Health {
    if condition_is(object, "Stalled", "True") {
        return Health::Failed(condition_text(object, "Stalled"));
    }
    if condition_is(object, "Reconciling", "True") {
        return Health::InProgress(condition_text(object, "Reconciling"));
    }
    if condition_is(object, "Ready", "False") {
        return Health::InProgress(condition_text(object, "Ready"));
    }
    if condition_is(object, "Ready", "Unknown") {
        return Health::InProgress(format!(
            "Ready is Unknown: {}",
            condition_text(object, "Ready")
        ));
    }
    Health::Current
}

/// Why the wait did not end with every object current.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The objects that are not current when the timeout fired, each with why.
    #[error("timeout waiting for: {}", format_unready(.0))]
    Timeout(Vec<(ObjectRef, String)>),
    /// Objects that failed (will not converge without a change).
    #[error("{}", format_unready(.0))]
    Failed(Vec<(ObjectRef, String)>),
    /// An object could not be read at all.
    #[error("{object}: {message}")]
    Read {
        /// The object, `Kind namespace/name`.
        object: String,
        /// The apiserver's error.
        message: String,
    },
}

fn format_unready(items: &[(ObjectRef, String)]) -> String {
    items
        .iter()
        .map(|(r, why)| format!("{r}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until every object in `objects` is [`Health::Current`], driven by one watch per object
/// (a field selector on its name), so readiness is noticed the moment the apiserver reports it.
///
/// Guarantees: returns `Ok` only when every object was observed current; returns
/// [`HealthError::Failed`] as soon as every object has settled and at least one failed, and
/// [`HealthError::Timeout`] naming each unsettled object and its last known state otherwise. A
/// missing object counts as not ready ("not found"). The watches end when this returns.
pub async fn wait(
    client: &kube::Client,
    resolver: &Resolver,
    objects: &[ObjectRef],
    timeout: Duration,
) -> Result<(), HealthError> {
    wait_with(client, resolver, objects, timeout, None).await
}

/// Shared stores a health check may read instead of watching each object.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// The stores; they list and watch as the reconciler itself, so pass them only for a
    /// Kustomization whose `client` is the reconciler's own (not an impersonated one).
    pub watches: &'a KindWatches,
    /// The objects the apply just handled, each with the version it last saw; only these go
    /// through the stores (they carry the owner labels the stores select on), every other
    /// object gets its own watch.
    pub seen: &'a BTreeMap<ObjectRef, Seen>,
}

/// [`wait`], reading the objects that `shared` covers from the shared store of their kind
/// (woken by every change of it; a copy older than the version the apply saw does not count).
/// Same guarantees and messages as [`wait`].
pub async fn wait_with(
    client: &kube::Client,
    resolver: &Resolver,
    objects: &[ObjectRef],
    timeout: Duration,
    shared: Option<Shared<'_>>,
) -> Result<(), HealthError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: BTreeMap<ObjectRef, Health> = objects
        .iter()
        .map(|o| (o.clone(), Health::InProgress("not yet observed".into())))
        .collect();
    // The label selector of each workload's pods, from its last observed state.
    let mut selectors: BTreeMap<ObjectRef, String> = BTreeMap::new();
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(ObjectRef, Health, Option<String>)>();
    // Dropping the JoinSet aborts every watch that is still running.
    let mut watches = tokio::task::JoinSet::new();
    // Objects read from a shared store, by kind: the store's lease and the objects.
    let mut from_stores: BTreeMap<kind_watch::Key, StoreReads> = BTreeMap::new();
    for object in objects {
        let (resource, namespaced) = resolve(client, resolver, object).await?;
        if let Some(shared) = shared
            && let Some(seen) = shared.seen.get(object)
        {
            let entry = match from_stores.entry(kind_watch::kind_key(&resource)) {
                std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
                std::collections::btree_map::Entry::Vacant(e) => shared
                    .watches
                    .lease(&resource)
                    .map(|lease| e.insert((lease, Vec::new()))),
            };
            if let Some((_, items)) = entry {
                items.push((object.clone(), seen.clone()));
                continue;
            }
        }
        let api: Api<DynamicObject> = match (&object.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let config = watcher::Config::default().fields(&format!("metadata.name={}", object.name));
        let object = object.clone();
        let tx = tx.clone();
        watches.spawn(async move {
            // The controllers' bounded reconnect backoff: an apiserver outage must not stall a
            // health check for longer than the outage itself (plus a few seconds).
            let mut stream = watcher(api, config)
                .backoff(crate::backoff::backoff())
                .boxed();
            while let Some(event) = stream.next().await {
                let (health, selector) = match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        assess_live(&object.api_version(), &object.kind, &obj)
                    }
                    Ok(watcher::Event::Delete(_)) => (Health::InProgress("not found".into()), None),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(e) => (Health::InProgress(format!("watch error: {e}")), None),
                };
                let settled = !matches!(health, Health::InProgress(_));
                if tx.send((object.clone(), health, selector)).is_err() || settled {
                    break;
                }
            }
        });
    }
    for (lease, items) in from_stores.into_values() {
        watches.spawn(read_store(lease, items, tx.clone()));
    }
    drop(tx);
    let settled = |last: &BTreeMap<ObjectRef, Health>| {
        last.values().all(|h| !matches!(h, Health::InProgress(_)))
    };
    while !settled(&last) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((object, health, selector))) => {
                match selector {
                    Some(selector) => selectors.insert(object.clone(), selector),
                    None => selectors.remove(&object),
                };
                last.insert(object, health);
            }
            // Every watch ended (they only end once settled) or the deadline passed.
            Ok(None) | Err(_) => break,
        }
    }
    conclude(client, &last, &selectors).await
}

/// The resource of `object` and whether it is namespaced, as a health error when unknown.
async fn resolve(
    client: &kube::Client,
    resolver: &Resolver,
    object: &ObjectRef,
) -> Result<(kube::api::ApiResource, bool), HealthError> {
    resolver
        .resolve(client, object)
        .await
        .map_err(|e| HealthError::Read {
            object: object.to_string(),
            message: e.to_string(),
        })
}

/// The outcome of a wait from each object's last known health: `Ok` when all are current,
/// [`HealthError::Timeout`] when any is still in progress (failed ones listed after them),
/// else [`HealthError::Failed`]; unready workloads explained with their pods.
async fn conclude(
    client: &kube::Client,
    last: &BTreeMap<ObjectRef, Health>,
    selectors: &BTreeMap<ObjectRef, String>,
) -> Result<(), HealthError> {
    let failed: Vec<_> = last
        .iter()
        .filter_map(|(o, h)| match h {
            Health::Failed(why) => Some((o.clone(), why.clone())),
            _ => None,
        })
        .collect();
    let unready: Vec<_> = last
        .iter()
        .filter_map(|(o, h)| match h {
            Health::InProgress(why) => Some((o.clone(), why.clone())),
            _ => None,
        })
        .collect();
    if !unready.is_empty() {
        let mut all = unready;
        all.extend(failed);
        explain_with_pods(client, selectors, &mut all).await;
        return Err(HealthError::Timeout(all));
    }
    if !failed.is_empty() {
        let mut failed = failed;
        explain_with_pods(client, selectors, &mut failed).await;
        return Err(HealthError::Failed(failed));
    }
    Ok(())
}

/// A kind's store and the objects a health check reads from it.
type StoreReads = (Lease, Vec<(ObjectRef, Seen)>);

/// Reports the health of `items` from `lease`'s store, again after every change of the store,
/// until each has settled (a settled object is not looked at again, as with a watch per object).
async fn read_store(
    lease: Lease,
    mut items: Vec<(ObjectRef, Seen)>,
    tx: tokio::sync::mpsc::UnboundedSender<(ObjectRef, Health, Option<String>)>,
) {
    let mut changed = lease.subscribe();
    let mut reported: BTreeMap<ObjectRef, Health> = BTreeMap::new();
    // The resourceVersion each object had when last evaluated: a store wakes its readers on a
    // change of any object of the kind, and re-evaluating an unchanged object is wasted work.
    let mut evaluated: BTreeMap<ObjectRef, String> = BTreeMap::new();
    loop {
        changed.borrow_and_update();
        let mut closed = false;
        items.retain(|(object, seen)| {
            let stored = lease.get(object.namespace.as_deref(), &object.name);
            let version = match &stored {
                Ok(Some(live)) => live.resource_version.clone(),
                _ => None,
            };
            if version.is_some() && evaluated.get(object) == version.as_ref() {
                return true;
            }
            match version {
                Some(v) => evaluated.insert(object.clone(), v),
                None => evaluated.remove(object),
            };
            let (health, selector) = stored_health(stored, seen);
            let settled = !matches!(health, Health::InProgress(_));
            if reported.get(object) != Some(&health) {
                reported.insert(object.clone(), health.clone());
                closed |= tx.send((object.clone(), health, selector)).is_err();
            }
            !settled
        });
        if closed || items.is_empty() || changed.changed().await.is_err() {
            return;
        }
    }
}

/// The health of `object` from what its kind's store holds ([`KindWatch::get`]'s answer), with
/// its pods' selector.
///
/// [`KindWatch::get`]: super::kind_watch::KindWatch::get
fn stored_health(
    stored: Result<Option<std::sync::Arc<Observed>>, Option<String>>,
    seen: &Seen,
) -> (Health, Option<String>) {
    match stored {
        Err(Some(error)) => (Health::InProgress(error), None),
        Err(None) => (Health::InProgress("not yet observed".into()), None),
        Ok(None) => (Health::InProgress("not found".into()), None),
        Ok(Some(live)) if !seen.reached_by(&live) => {
            (Health::InProgress("not yet observed".into()), None)
        }
        Ok(Some(live)) => (live.health.clone(), live.pod_selector.clone()),
    }
}

/// At most this many unready workloads have their pods listed to explain a failed wait.
const MAX_WORKLOADS_EXPLAINED: usize = 5;
/// At most this many pods are named per workload (the rest are counted).
const MAX_PODS_NAMED: usize = 2;
/// The longest container message quoted (kubelet's messages embed pod names and UIDs).
const MAX_MESSAGE_CHARS: usize = 160;
/// Bound on listing the pods once the wait has ended.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends to each unready workload's reason why its pods are not ready (one pod list per
/// workload, for at most [`MAX_WORKLOADS_EXPLAINED`] workloads, all within [`EXPLAIN_TIMEOUT`]).
/// A list that fails (RBAC, timeout) adds nothing: the workload's own reason stands.
async fn explain_with_pods(
    client: &kube::Client,
    selectors: &BTreeMap<ObjectRef, String>,
    items: &mut [(ObjectRef, String)],
) {
    let lists = items
        .iter()
        .enumerate()
        .filter_map(|(i, (object, _))| {
            let namespace = object.namespace.as_deref()?;
            let selector = selectors.get(object)?;
            Some((i, namespace.to_owned(), selector.clone()))
        })
        .take(MAX_WORKLOADS_EXPLAINED)
        .map(|(i, namespace, selector)| async move {
            let api: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(client.clone(), &namespace);
            let params = kube::api::ListParams::default().labels(&selector);
            match api.list(&params).await {
                Ok(list) => {
                    let pods: Vec<Value> = list
                        .items
                        .iter()
                        .filter_map(|p| serde_json::to_value(p).ok())
                        .collect();
                    (i, pods_not_ready(&pods))
                }
                Err(e) => {
                    tracing::debug!(%namespace, %selector, error = %e, "cannot list pods to explain an unready workload");
                    (i, None)
                }
            }
        });
    let Ok(found) = tokio::time::timeout(EXPLAIN_TIMEOUT, futures::future::join_all(lists)).await
    else {
        return;
    };
    for (i, explanation) in found {
        if let (Some(explanation), Some((_, why))) = (explanation, items.get_mut(i)) {
            why.push_str(&format!(" ({explanation})"));
        }
    }
}

/// The label selector (`kubectl -l` syntax) of the pods of a Deployment, StatefulSet or
/// DaemonSet, or `None` for other kinds and selectors that select nothing expressible.
pub fn pod_selector(object: &Value) -> Option<String> {
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    let kind = object.get("kind").and_then(Value::as_str)?;
    if !api_version.starts_with("apps/")
        || !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
    {
        return None;
    }
    let selector = object.pointer("/spec/selector")?;
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str)?;
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        terms.push(match e.get("operator").and_then(Value::as_str)? {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    // An empty selector would list every pod of the namespace.
    (!terms.is_empty()).then(|| terms.join(","))
}

fn truncated(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Why one container is not ready, or `None` when it is ready (or done, for init containers).
fn container_problem(pod: &Value, status: &Value, init: bool) -> Option<String> {
    let name = status.get("name").and_then(Value::as_str).unwrap_or("?");
    let restarts = status
        .get("restartCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let last_exit = status
        .pointer("/lastState/terminated")
        .map(|t| {
            let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
            let reason = t.get("reason").and_then(Value::as_str).unwrap_or("");
            format!(", last exit code {code} {reason}")
                .trim_end()
                .to_owned()
        })
        .unwrap_or_default();
    let restarts = if restarts > 0 {
        format!(", {restarts} restarts")
    } else {
        String::new()
    };
    let label = if init { "init container" } else { "container" };
    if let Some(waiting) = status.pointer("/state/waiting") {
        let reason = waiting
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("Waiting");
        let message = waiting
            .get("message")
            .and_then(Value::as_str)
            .map(|m| format!(" ({})", truncated(m)))
            .unwrap_or_default();
        return Some(format!(
            "{label} {name}: {reason}{message}{last_exit}{restarts}"
        ));
    }
    if let Some(terminated) = status.pointer("/state/terminated") {
        let code = terminated
            .get("exitCode")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if init && code == 0 {
            return None;
        }
        let reason = terminated
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("Terminated");
        return Some(format!(
            "{label} {name}: {reason} (exit code {code}){restarts}"
        ));
    }
    if init || status.get("ready").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let spec = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name));
    let why = if status.get("started").and_then(Value::as_bool) == Some(false)
        && spec.is_some_and(|c| c.get("startupProbe").is_some())
    {
        "running, startup probe not passed"
    } else if spec.is_some_and(|c| c.get("readinessProbe").is_some()) {
        "running, readiness probe failing"
    } else {
        "running, not ready"
    };
    Some(format!("{label} {name}: {why}{last_exit}{restarts}"))
}

/// Why one pod is not ready: its containers' states, or why it is not running at all.
fn pod_problem(pod: &Value) -> String {
    let mut problems: Vec<String> = Vec::new();
    for (field, init) in [
        ("initContainerStatuses", true),
        ("containerStatuses", false),
    ] {
        for status in pod
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            problems.extend(container_problem(pod, status, init));
        }
    }
    if !problems.is_empty() {
        return problems.join(", ");
    }
    if condition_is(pod, "PodScheduled", "False") {
        return format!(
            "not scheduled: {}",
            truncated(&condition_text(pod, "PodScheduled"))
        );
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    format!("{phase}, not ready")
}

/// A summary of the pods in `pods` that are not ready (deleted ones aside), naming at most
/// `MAX_PODS_NAMED` of them with their containers' reasons; `None` when every pod is ready.
pub fn pods_not_ready(pods: &[Value]) -> Option<String> {
    let mut unready: Vec<(&str, String)> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| !condition_is(p, "Ready", "True"))
        .map(|p| {
            let name = p
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            (name, pod_problem(p))
        })
        .collect();
    if unready.is_empty() {
        return None;
    }
    unready.sort();
    let more = unready.len().saturating_sub(MAX_PODS_NAMED);
    let mut text = unready
        .iter()
        .take(MAX_PODS_NAMED)
        .map(|(name, why)| format!("pod {name} {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        text.push_str(&format!("; {more} more pods not ready"));
    }
    Some(text)
}

/// The health and pod selector of a watched dynamic object of `api_version` and `kind` (watch
/// events may lack the type fields, so they are filled in).
pub(super) fn assess_live(
    api_version: &str,
    kind: &str,
    live: &DynamicObject,
) -> (Health, Option<String>) {
    match typed_value_of(api_version, kind, live) {
        Ok(value) => (health(&value), pod_selector(&value)),
        Err(e) => (Health::InProgress(format!("unreadable object: {e}")), None),
    }
}

/// A watched dynamic object as JSON, with the type fields given.
pub(super) fn typed_value_of(
    api_version: &str,
    kind: &str,
    live: &DynamicObject,
) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(live)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version.to_owned()));
        map.insert("kind".into(), Value::String(kind.to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(spec_replicas: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "vote", "generation": 2},
               "spec": {"replicas": spec_replicas}, "status": status})
    }

    #[test]
    fn deployment_rules() {
        assert_eq!(
            health(&deploy(2, json!({"observedGeneration": 1}))),
            Health::InProgress("generation 2 not yet observed (observed 1)".into())
        );
        assert_eq!(
            health(&deploy(
                2,
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1, "readyReplicas": 1})
            )),
            Health::InProgress("1/2 replicas available".into())
        );
        assert_eq!(
            health(&deploy(
                2,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            Health::InProgress("1 old replicas pending termination".into())
        );
        assert!(health(&deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2})
        ))
        .is_current());
        assert!(matches!(
            health(&deploy(
                2,
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]})
            )),
            Health::Failed(m) if m.contains("too slow")
        ));
    }

    #[test]
    fn other_kinds() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"}});
        assert!(health(&ns).is_current());
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                         "status": {"conditions": [{"type": "Established", "status": "False"}]}});
        assert!(!health(&crd).is_current());
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                         "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(matches!(health(&job), Health::Failed(_)));
        let svc = json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}});
        assert!(health(&svc).is_current());
        let lb = json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"}});
        assert!(!health(&lb).is_current());
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert_eq!(
            health(&pvc),
            Health::InProgress("claim is Pending, not Bound".into())
        );
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"generation": 3},
                        "status": {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "db"}]}});
        assert_eq!(health(&cr), Health::InProgress("Waiting: db".into()));
        let stalled = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                        "status": {"conditions": [{"type": "Stalled", "status": "True", "reason": "Broken"}]}});
        assert!(matches!(health(&stalled), Health::Failed(_)));
        let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
        assert!(health(&plain).is_current());
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
            "spec": {"replicas": 3}, "status": {"observedGeneration": 1, "readyReplicas": 1}});
        assert_eq!(
            health(&sts),
            Health::InProgress("1/3 replicas ready".into())
        );
    }

    fn pod(name: &str, status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "web", "readinessProbe": {"httpGet": {"port": 8080}}}]},
               "status": status})
    }

    #[test]
    fn unready_pods_name_the_pod_and_the_containers_reason() {
        let crash = pod(
            "web-7d9c-abcde",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "web", "ready": false, "restartCount": 3,
                     "state": {"waiting": {"reason": "CrashLoopBackOff",
                               "message": "back-off 40s restarting failed container=web pod=web-7d9c-abcde_ns(uid)"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert_eq!(
            pods_not_ready(&[crash]).as_deref(),
            Some(
                "pod web-7d9c-abcde container web: CrashLoopBackOff (back-off 40s restarting failed \
                 container=web pod=web-7d9c-abcde_ns(uid)), last exit code 1 Error, 3 restarts"
            )
        );
        let probe = pod(
            "web-1",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "web", "ready": false, "started": true,
                     "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}),
        );
        assert_eq!(
            pods_not_ready(&[probe]).as_deref(),
            Some("pod web-1 container web: running, readiness probe failing")
        );
        let pull = pod(
            "web-2",
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "ready": false,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                   "containerStatuses": [{"name": "web", "ready": false,
                     "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        assert_eq!(
            pods_not_ready(&[pull]).as_deref(),
            Some("pod web-2 container web: ImagePullBackOff")
        );
        let pending = pod(
            "web-3",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                     "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
        );
        assert_eq!(
            pods_not_ready(&[pending]).as_deref(),
            Some("pod web-3 not scheduled: Unschedulable: 0/1 nodes are available")
        );
    }

    #[test]
    fn ready_and_deleted_pods_are_left_out_and_the_list_is_capped() {
        let ready = pod(
            "a-ready",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let mut deleted = pod("b-deleted", json!({"phase": "Running"}));
        deleted["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pods_not_ready(&[ready.clone(), deleted]), None);
        let waiting = |name: &str| {
            pod(
                name,
                json!({"phase": "Pending", "containerStatuses": [{"name": "web", "ready": false,
                         "state": {"waiting": {"reason": "ContainerCreating", "message": "x".repeat(500)}}}]}),
            )
        };
        let many: Vec<Value> = ["p4", "p1", "p3", "p2"]
            .iter()
            .map(|n| waiting(n))
            .chain([ready])
            .collect();
        let text = pods_not_ready(&many).unwrap_or_default();
        assert!(
            text.starts_with("pod p1 container web: ContainerCreating (xxx"),
            "{text}"
        );
        assert!(text.contains("; pod p2 "), "{text}");
        assert!(!text.contains("pod p3"), "{text}");
        assert!(text.ends_with("; 2 more pods not ready"), "{text}");
        assert!(text.len() < 2 * (MAX_MESSAGE_CHARS + 100), "{text}");
    }

    #[test]
    fn workload_pod_selectors() {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"selector": {
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "qa"]},
                                 {"key": "canary", "operator": "DoesNotExist"},
                                 {"key": "zone", "operator": "NotIn", "values": ["a"]},
                                 {"key": "team", "operator": "Exists"}]}}});
        assert_eq!(
            pod_selector(&deploy).as_deref(),
            Some("app=web,tier=front,env in (dev,qa),!canary,zone notin (a),team")
        );
        let empty =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"selector": {}}});
        assert_eq!(pod_selector(&empty), None);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(pod_selector(&cm), None);
    }
}
