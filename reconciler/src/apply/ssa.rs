//! Planning and staged server-side apply.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::health;
use super::ignore::DriftRules;
use super::kind_watch::Seen;
use super::known::{self, Hint, Known};
use super::object::ObjectRef;
use super::resolve::Resolver;
use super::{
    Action, ApplyError, ChangeSet, INTENT_DIGEST_ANNOTATION, Owner, Stage, diff, intent_digest,
};
use crate::api::conditions::meta;

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// The Kustomization whose owner labels the objects get and whose objects may be updated.
    pub owner: Owner,
    /// `spec.force`: recreate objects whose immutable fields changed.
    pub force: bool,
    /// Requests in flight at once (`--concurrent-apply`).
    pub concurrency: usize,
    /// `spec.ignore`.
    pub drift: DriftRules,
    /// Bound on waiting for CRDs to be established and Namespaces to be active.
    pub definitions_timeout: Duration,
    /// When set, a live object whose owner labels name a Kustomization that no longer exists
    /// is adopted (its labels are rewritten to ours, [`Action::Adopted`]); when `None`, every
    /// object labelled for another Kustomization is a conflict.
    pub owner_lookup: Option<OwnerLookup>,
    /// What may stand for reading a live object (see [`known`]); `None`: every object is read.
    /// Only for a client that is the reconciler's own (the stores list as the reconciler).
    pub known: Option<Known>,
}

/// Answers whether the Kustomization named by a live object's owner labels still exists.
///
/// It asks with the reconciler's own client: a tenant's impersonated client may not be
/// allowed to read Kustomizations, and a Forbidden must never look like "gone".
#[derive(Clone)]
pub struct OwnerLookup(kube::Client);

impl OwnerLookup {
    /// A lookup that asks with `client`, which must be the reconciler's own (not impersonated).
    pub fn new(client: kube::Client) -> Self {
        Self(client)
    }

    /// `Ok(false)` only when the apiserver answers 404 for the Kustomization; an object that
    /// exists, also one being deleted, is `Ok(true)`. Owner labels without a namespace never
    /// identify a Kustomization that can be looked up: treated as existing.
    pub async fn exists(&self, owner: &Owner) -> Result<bool, kube::Error> {
        if owner.namespace.is_empty() || owner.name.is_empty() {
            return Ok(true);
        }
        let api: Api<crate::api::Kustomization> = Api::namespaced(self.0.clone(), &owner.namespace);
        Ok(api.get_metadata_opt(&owner.name).await?.is_some())
    }
}

impl std::fmt::Debug for OwnerLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerLookup")
    }
}

/// One object of the plan, ready to send.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The object's identity (namespace `None` when its kind is cluster-scoped).
    pub id: ObjectRef,
    /// The stage it is applied in.
    pub stage: Stage,
    /// Whether its kind is namespaced (from discovery, or from a CRD of the same build).
    pub namespaced: bool,
    /// The object as it will be applied: owner labels and intent digest included.
    pub intent: Value,
}

/// The validated objects of a build in apply order (stage, then build order).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The objects, sorted by stage; within a stage in build order.
    pub objects: Vec<Planned>,
}

impl Plan {
    /// The new inventory, in apply order.
    pub fn refs(&self) -> Vec<ObjectRef> {
        self.objects.iter().map(|p| p.id.clone()).collect()
    }

    /// True when the build produced no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Kinds defined by CRDs of the build itself: (group, kind) → namespaced.
fn kinds_defined_by(objects: &[Value]) -> HashMap<(String, String), bool> {
    objects
        .iter()
        .filter(|o| {
            o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
        })
        .filter_map(|crd| {
            let group = crd.pointer("/spec/group")?.as_str()?;
            let kind = crd.pointer("/spec/names/kind")?.as_str()?;
            let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
            Some(((group.to_owned(), kind.to_owned()), namespaced))
        })
        .collect()
}

/// Server-populated metadata that must not be sent.
const SERVER_FIELDS: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
    "deletionTimestamp",
];

/// Where [`plan`] learns whether a kind is namespaced.
#[derive(Clone, Copy)]
pub enum Scopes<'a> {
    /// The cluster's discovery data (cached by the resolver); a kind the cluster does not
    /// serve is an error.
    Cluster {
        /// The client discovery asks with.
        client: &'a kube::Client,
        /// The discovery cache.
        resolver: &'a Resolver,
    },
    /// No cluster (an offline build): the built-in table of cluster-scoped kinds (the one the
    /// `target-namespace` policy uses); every other kind counts as namespaced, as in kustomize.
    Offline,
}

impl Scopes<'_> {
    async fn namespaced(&self, id: &ObjectRef) -> Result<bool, ApplyError> {
        match self {
            Scopes::Cluster { client, resolver } => Ok(resolver.resolve(client, id).await?.1),
            Scopes::Offline => Ok(gitops_policy_target_namespace::CLUSTER_SCOPED
                .binary_search(&(id.group.as_str(), id.kind.as_str()))
                .is_err()),
        }
    }
}

/// Validates and prepares the built objects (reads discovery only, writes nothing).
///
/// Guarantees: every object has apiVersion/kind/name, a kind the cluster (or a CRD of the same
/// build) defines, a namespace exactly when its kind is namespaced, is unique, and carries the
/// owner labels and the intent digest annotation.
pub async fn plan(
    client: &kube::Client,
    resolver: &Resolver,
    objects: Vec<Value>,
    owner: &Owner,
) -> Result<Plan, ApplyError> {
    plan_with(Scopes::Cluster { client, resolver }, objects, owner).await
}

/// [`plan`] with the scope of kinds from `scopes` (offline builds use [`Scopes::Offline`]).
pub async fn plan_with(
    scopes: Scopes<'_>,
    objects: Vec<Value>,
    owner: &Owner,
) -> Result<Plan, ApplyError> {
    let defined = kinds_defined_by(&objects);
    if let Scopes::Cluster { resolver, .. } = scopes {
        resolver.expect_kinds(defined.keys().cloned());
    }
    let mut seen = HashSet::new();
    let mut planned = Vec::with_capacity(objects.len());
    for (index, mut object) in objects.into_iter().enumerate() {
        if !object.is_object() {
            return Err(ApplyError::Invalid {
                index,
                message: "not a JSON object".into(),
            });
        }
        let mut id = ObjectRef::from_object(&object)
            .map_err(|message| ApplyError::Invalid { index, message })?;
        let namespaced = match defined.get(&(id.group.clone(), id.kind.clone())) {
            Some(namespaced) => *namespaced,
            None => scopes.namespaced(&id).await?,
        };
        if !namespaced {
            id.namespace = None;
        } else if id.namespace.is_none() {
            return Err(ApplyError::NamespaceMissing {
                object: id.to_string(),
            });
        }
        if !seen.insert(id.id()) {
            return Err(ApplyError::Duplicate {
                object: id.to_string(),
            });
        }
        prepare_intent(&mut object, &id, owner, index)?;
        planned.push(Planned {
            stage: Stage::of(&id),
            id,
            namespaced,
            intent: object,
        });
    }
    planned.sort_by_key(|p| p.stage);
    Ok(Plan { objects: planned })
}

fn prepare_intent(
    object: &mut Value,
    id: &ObjectRef,
    owner: &Owner,
    index: usize,
) -> Result<(), ApplyError> {
    let invalid = |message: &str| ApplyError::Invalid {
        index,
        message: format!("{id}: {message}"),
    };
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("metadata is not an object"))?;
    for field in SERVER_FIELDS {
        metadata.remove(*field);
    }
    match &id.namespace {
        Some(ns) => {
            metadata.insert("namespace".into(), Value::String(ns.clone()));
        }
        None => {
            metadata.remove("namespace");
        }
    }
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata.labels is not an object"))?;
    labels.insert(
        meta::OWNER_NAME_LABEL.into(),
        Value::String(owner.name.clone()),
    );
    labels.insert(
        meta::OWNER_NAMESPACE_LABEL.into(),
        Value::String(owner.namespace.clone()),
    );
    if id.group.is_empty() && id.kind == "Secret" {
        fold_string_data(object).map_err(|m| invalid(&m))?;
    }
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("metadata is not an object"))?;
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        annotations.remove(INTENT_DIGEST_ANNOTATION);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    let bytes = serde_json::to_vec(object).map_err(|e| invalid(&e.to_string()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("metadata is not an object"))?;
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata.annotations is not an object"))?;
    annotations.insert(INTENT_DIGEST_ANNOTATION.into(), Value::String(digest));
    Ok(())
}

/// A Secret's write-only `stringData` becomes base64 `data` (entries of `stringData` win, as
/// in the apiserver), so the intent says what the live object will hold and a change to that
/// data is seen as drift.
fn fold_string_data(secret: &mut Value) -> Result<(), String> {
    use base64::Engine as _;
    let Some(object) = secret.as_object_mut() else {
        return Ok(());
    };
    let Some(string_data) = object.remove("stringData") else {
        return Ok(());
    };
    let entries = match string_data {
        Value::Null => return Ok(()),
        Value::Object(entries) => entries,
        _ => return Err("stringData is not a map of strings".into()),
    };
    let data = object
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    let data = data
        .as_object_mut()
        .ok_or_else(|| "data is not a map of base64 strings".to_owned())?;
    for (key, value) in entries {
        let Value::String(text) = value else {
            return Err(format!("stringData.{key} is not a string"));
        };
        data.insert(
            key,
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
    Ok(())
}

fn api_for(
    client: &kube::Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

fn status_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The field named by an "field is immutable" rejection, if that is what `err` is.
fn immutable_field(err: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    if status.code != 422 {
        return None;
    }
    if let Some(cause) = status
        .details
        .as_ref()
        .and_then(|d| d.causes.iter().find(|c| c.message.contains("immutable")))
    {
        return Some(cause.field.clone());
    }
    status.message.contains("field is immutable").then(|| {
        status
            .message
            .split_once("is invalid: ")
            .and_then(|(_, rest)| rest.split(':').next())
            .unwrap_or("?")
            .to_owned()
    })
}

fn wants_force(intent: &Value, opts: &ApplyOptions) -> bool {
    opts.force
        || intent
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(meta::FORCE_ANNOTATION))
            .and_then(Value::as_str)
            == Some("enabled")
}

/// One object of a stage with everything needed to decide and send.
struct Work<'a> {
    planned: &'a Planned,
    api: Api<DynamicObject>,
    /// The intent after drift rules took live values.
    intent: Value,
    live: Option<Value>,
    /// What stood for reading the live object (then `live` is `None`).
    hint: Option<Hint>,
}

impl Work<'_> {
    /// Whether the object may exist: it was read, or it was not read (unclaimed objects can
    /// exist without owner labels).
    fn may_exist(&self) -> bool {
        self.live.is_some() || self.hint.is_some()
    }

    /// Server-side applies the intent with `params` (a dry-run, when they say so).
    async fn send(&self, params: &PatchParams) -> Result<DynamicObject, kube::Error> {
        self.api
            .patch(&self.planned.id.name, params, &Patch::Apply(&self.intent))
            .await
    }

    /// The version of the object the apply saw without writing it.
    fn seen_unwritten(&self) -> Option<Seen> {
        match &self.hint {
            Some(Hint::Unchanged(seen)) => Some(seen.clone()),
            _ => self.live.as_ref().and_then(Seen::of),
        }
    }
}

/// Applies the plan stage by stage (see the module docs of [`crate::apply`]).
///
/// Guarantees: within a stage, nothing stays written unless every object that needs a write
/// passed its dry-run, except the creations of passive objects, written first and deleted again
/// when anything of the stage is refused, and the probe, which is written alone before the
/// others and whose refusal is reported as its dry-run's would have been
/// ([`DryRuns::WhenNeeded`]). Caveat: an object the shared stores know no owner of
/// ([`Hint::Unclaimed`]) may exist without owner labels; a passive one is then configured, not
/// created, cannot be undone, and a refusal in the same stage is reported as
/// [`ApplyError::PartlyApplied`] naming it. Objects whose digest
/// and content match the live object are not sent at all;
/// objects owned by another Kustomization are refused, unless that Kustomization no longer
/// exists and `opts.owner_lookup` is set (then they are adopted, [`Action::Adopted`]). Caveats: earlier stages stay applied when
/// a later stage fails (they are in the pending inventory, so prune and retries see them).
pub async fn apply(
    client: &kube::Client,
    resolver: &Resolver,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<ChangeSet, ApplyError> {
    let mut changes = ChangeSet::default();
    let intents: HashMap<&ObjectRef, &Value> =
        plan.objects.iter().map(|p| (&p.id, &p.intent)).collect();
    for stage in [Stage::Definitions, Stage::Classes, Stage::Resources] {
        let items: Vec<&Planned> = plan.objects.iter().filter(|p| p.stage == stage).collect();
        if items.is_empty() {
            continue;
        }
        let done = apply_stage(client, resolver, &items, opts).await?;
        if stage == Stage::Definitions {
            // CRDs must be established and Namespaces active before anything uses them.
            let written: Vec<ObjectRef> = done
                .iter()
                .filter(|(r, a, _)| {
                    *a != Action::Unchanged
                        && (r.kind == "CustomResourceDefinition" || r.kind == "Namespace")
                })
                .map(|(r, _, _)| r.clone())
                .collect();
            if !written.is_empty() {
                health::wait(client, resolver, &written, opts.definitions_timeout)
                    .await
                    .map_err(ApplyError::Definitions)?;
            }
        }
        for (id, action, seen) in done {
            if let Some(seen) = seen {
                if let Some(intent) = intents.get(&id)
                    && !opts.drift.applies_to(&id, intent)
                    && let Some(digest) = intent_digest(intent)
                {
                    changes.verified.insert(&id, seen.clone(), digest);
                }
                changes.seen.insert(id.clone(), seen);
            }
            changes.changes.push((id, action));
        }
    }
    Ok(changes)
}

/// What the apply knows of one live object: read (`None`: not found), or a [`Hint`].
type LiveState = Result<Option<Value>, Hint>;

async fn read_live(
    client: &kube::Client,
    resolver: &Resolver,
    items: &[&Planned],
    opts: &ApplyOptions,
    known: Option<&Known>,
) -> Result<Vec<(Api<DynamicObject>, LiveState)>, ApplyError> {
    // Objects `known` has a hint for are not read. Of the others: one LIST per (resource,
    // namespace) with more than one of them finds every object we own; only objects not found
    // that way (new, or not labelled by us yet) are read one by one. The only object of its
    // (resource, namespace) is read by itself: a LIST would cost as much when it finds the
    // object, and a GET more when it does not.
    let mut apis = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    // (apiVersion, plural, namespace) -> an Api for them and how many objects of the stage.
    type Group = (String, String, Option<String>);
    let mut groups: HashMap<Group, (Api<DynamicObject>, usize)> = HashMap::new();
    let mut hints = Vec::with_capacity(items.len());
    for p in items {
        let (resource, _) = resolver.resolve(client, &p.id).await?;
        let ns = p.id.namespace.clone();
        let api = api_for(client, &resource, ns.as_deref());
        let key = (resource.api_version.clone(), resource.plural.clone(), ns);
        let hint = known
            .filter(|_| !opts.drift.applies_to(&p.id, &p.intent))
            .and_then(|k| k.hint(&resource, &p.id, &p.intent));
        if hint.is_none() {
            groups
                .entry(key.clone())
                .or_insert_with(|| (api.clone(), 0))
                .1 += 1;
        }
        hints.push(hint);
        keys.push((key.0, key.1, key.2, p.id.name.clone()));
        apis.push(api);
    }
    let selector = opts.owner.selector();
    let lists: Vec<_> = groups
        .into_iter()
        .filter(|(_, (_, members))| *members > 1)
        .map(|(key, (api, _))| {
            let selector = selector.clone();
            async move {
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| ApplyError::Read {
                        object: format!("{} in {}", key.1, key.2.as_deref().unwrap_or("cluster")),
                        message: status_message(&e),
                    })?;
                Ok::<_, ApplyError>((key, list.items))
            }
        })
        .collect();
    let lists = stream::iter(lists)
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut owned: HashMap<(String, String, Option<String>, String), Value> = HashMap::new();
    for result in lists {
        let (key, items) = result?;
        for obj in items {
            if let Some(name) = obj.metadata.name.clone() {
                let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                owned.insert((key.0.clone(), key.1.clone(), key.2.clone(), name), value);
            }
        }
    }
    let lookups: Vec<_> = items
        .iter()
        .zip(apis)
        .zip(keys)
        .zip(hints)
        .map(|(((p, api), key), hint)| {
            let found = owned.remove(&key);
            let id = p.id.clone();
            async move {
                if let Some(hint) = hint {
                    return Ok((api, Err(hint)));
                }
                if found.is_some() {
                    return Ok((api, Ok(found)));
                }
                let live = api.get_opt(&id.name).await.map_err(|e| ApplyError::Read {
                    object: id.to_string(),
                    message: status_message(&e),
                })?;
                let live = live.map(|o| serde_json::to_value(&o).unwrap_or(Value::Null));
                Ok::<_, ApplyError>((api, Ok(live)))
            }
        })
        .collect();
    let lookups = stream::iter(lookups)
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    lookups.into_iter().collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Decision {
    Skip,
    Create,
    Configure,
    /// Write an object that was not read because no Kustomization owns it ([`Hint::Unclaimed`]):
    /// created or configured, as the write's answer shows.
    Claim,
    /// Configure an object taken over from a Kustomization that no longer exists.
    Adopt,
    Recreate,
}

/// Whether `object`, labelled for `other`, may be adopted: only when `opts` allows adoption
/// and `other` no longer exists. Answers are remembered per stage in `gone`.
async fn may_adopt(
    object: &ObjectRef,
    other: &Owner,
    opts: &ApplyOptions,
    gone: &mut HashMap<String, bool>,
) -> Result<bool, ApplyError> {
    let Some(lookup) = &opts.owner_lookup else {
        return Ok(false);
    };
    let key = other.to_string();
    if let Some(known) = gone.get(&key) {
        return Ok(*known);
    }
    let exists = lookup.exists(other).await.map_err(|e| ApplyError::Read {
        object: format!("Kustomization {other} (named by the owner labels of {object})"),
        message: status_message(&e),
    })?;
    gone.insert(key, !exists);
    Ok(!exists)
}

/// The objects of a stage with what applying them would do, after every dry-run passed.
struct Decided<'a> {
    work: Vec<Work<'a>>,
    decisions: Vec<Decision>,
    /// The server's answer to the dry-run of each object that needs a write.
    dry_runs: Vec<Option<Value>>,
    /// The one object that needs a write and had no dry-run (see [`DryRuns::WhenNeeded`]): it
    /// is written before any other but the undoable creations, its write is its test, and a
    /// rejection of it is handled as its dry-run's would have been.
    probe: Option<usize>,
    /// Per object: a creation that deleting undoes exactly ([`undoable_creation`]), written
    /// without a dry-run before anything else of the stage.
    undoable: Vec<bool>,
}

/// Kinds (group, kind) whose objects do nothing by merely existing for a moment: nothing runs,
/// is provisioned or is granted because one was created. Creating one is undone exactly by
/// deleting it again, so a creation of one needs no dry-run ([`DryRuns::WhenNeeded`]). A
/// Service counts only as a ClusterIP Service (a load balancer or a node port is provisioned).
const PASSIVE_KINDS: &[(&str, &str)] = &[
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "Service"),
];

/// Whether writing `intent` with `decision` would create an object that deleting undoes
/// exactly: a passive kind ([`PASSIVE_KINDS`]) that is not known to exist.
fn undoable_creation(id: &ObjectRef, intent: &Value, decision: Decision) -> bool {
    matches!(decision, Decision::Create | Decision::Claim)
        && PASSIVE_KINDS.contains(&(id.group.as_str(), id.kind.as_str()))
        && (id.kind != "Service"
            || intent
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "ClusterIP"))
}

/// When the dry-runs of a stage are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DryRuns {
    /// Only where one can change the outcome. Creations of passive objects
    /// ([`undoable_creation`]) get none: they are written first, and deleted again when
    /// anything of the stage is refused. Of the other objects that need a write, one (the
    /// probe) gets none and is written next, alone; its write is its own test. The rest are
    /// dry-run before anything is written and written only after the probe passed. One refused
    /// object still means none of the stage stays written.
    WhenNeeded,
    /// For every object that needs a write (a preview wants the server's answers).
    Always,
}

/// Reads the live objects, decides per object and dry-runs the objects that need a write (see
/// [`DryRuns`]); writes nothing.
async fn decide_stage<'a>(
    client: &kube::Client,
    resolver: &Resolver,
    items: &[&'a Planned],
    opts: &ApplyOptions,
    when: DryRuns,
    known: Option<&Known>,
) -> Result<Decided<'a>, ApplyError> {
    let live = read_live(client, resolver, items, opts, known).await?;
    let mut work = Vec::with_capacity(items.len());
    let mut decisions = Vec::with_capacity(items.len());
    let mut gone_owners = HashMap::new();
    for (planned, (api, state)) in items.iter().zip(live) {
        let mut intent = planned.intent.clone();
        let (live, hint) = match state {
            Ok(live) => (live, None),
            Err(hint) => (None, Some(hint)),
        };
        let decision = match (&live, &hint) {
            (_, Some(Hint::Unchanged(_))) => Decision::Skip,
            (_, Some(Hint::Unclaimed)) => Decision::Claim,
            (None, None) => Decision::Create,
            (Some(live), None) => {
                let mut adopt = false;
                if let Some(other) = Owner::of(live)
                    && other != opts.owner
                {
                    if !may_adopt(&planned.id, &other, opts, &mut gone_owners).await? {
                        return Err(ApplyError::Conflict {
                            object: planned.id.to_string(),
                            owner: other.to_string(),
                        });
                    }
                    tracing::info!(
                        object = %planned.id,
                        previous_owner = %other,
                        owner = %opts.owner,
                        "adopting an object whose owner Kustomization no longer exists"
                    );
                    adopt = true;
                }
                opts.drift.adopt_live_values(&planned.id, &mut intent, live);
                if adopt {
                    Decision::Adopt
                } else if intent_digest(live) == intent_digest(&intent)
                    && diff::is_subset(&intent, live)
                {
                    Decision::Skip
                } else {
                    Decision::Configure
                }
            }
        };
        decisions.push(decision);
        work.push(Work {
            planned,
            api,
            intent,
            live,
            hint,
        });
    }

    let undoable: Vec<bool> = work
        .iter()
        .zip(&decisions)
        .map(|(w, d)| {
            when == DryRuns::WhenNeeded && undoable_creation(&w.planned.id, &w.intent, *d)
        })
        .collect();
    let probe = match when {
        // The first in apply order: what the others may need when they arrive (a ServiceAccount
        // before the Deployment whose pods name it; in kustomize's order it comes first)
        // exists before them.
        DryRuns::WhenNeeded => {
            (0..work.len()).position(|i| decisions[i] != Decision::Skip && !undoable[i])
        }
        DryRuns::Always => None,
    };
    let untested = |i: usize| probe == Some(i) || undoable[i];
    // Dry-run every other object that needs a write; collect every rejection before deciding.
    let dry = PatchParams::apply(meta::FIELD_MANAGER).force().dry_run();
    let dry_runs: Vec<_> = work
        .iter()
        .zip(&decisions)
        .enumerate()
        .map(|(i, (w, d))| {
            let (dry, skip) = (dry.clone(), *d == Decision::Skip || untested(i));
            let (api, name, intent) = (w.api.clone(), w.planned.id.name.clone(), w.intent.clone());
            async move {
                if skip {
                    return Ok(None);
                }
                api.patch(&name, &dry, &Patch::Apply(&intent))
                    .await
                    .map(|o| Some(serde_json::to_value(&o).unwrap_or(Value::Null)))
            }
        })
        .collect();
    let results = stream::iter(dry_runs)
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut rejected = Vec::new();
    let mut dry_runs = Vec::with_capacity(work.len());
    for ((w, decision), result) in work.iter().zip(decisions.iter_mut()).zip(results) {
        let err = match result {
            Ok(answer) => {
                dry_runs.push(answer);
                continue;
            }
            Err(err) => {
                dry_runs.push(None);
                err
            }
        };
        match immutable_field(&err) {
            Some(_) if wants_force(&w.intent, opts) && w.may_exist() => {
                *decision = Decision::Recreate;
            }
            Some(field) => {
                return Err(ApplyError::Immutable {
                    object: w.planned.id.to_string(),
                    field,
                    message: status_message(&err),
                });
            }
            None => rejected.push(format!("{}: {}", w.planned.id, status_message(&err))),
        }
    }
    if !rejected.is_empty() {
        // Nothing will be written: dry-run the untested objects too, so the error names every
        // object the server refuses, as when each had its dry-run.
        let tests: Vec<_> = (0..work.len())
            .filter(|i| untested(*i))
            .map(|i| {
                let (w, dry) = (&work[i], dry.clone());
                async move {
                    match w.send(&dry).await {
                        Err(err)
                            if !(immutable_field(&err).is_some()
                                && wants_force(&w.intent, opts)
                                && w.may_exist()) =>
                        {
                            Some(format!("{}: {}", w.planned.id, status_message(&err)))
                        }
                        _ => None,
                    }
                }
            })
            .collect();
        rejected.extend(
            stream::iter(tests)
                .buffered(opts.concurrency.max(1))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten(),
        );
        return Err(ApplyError::DryRun(rejected));
    }
    Ok(Decided {
        work,
        decisions,
        dry_runs,
        probe,
        undoable,
    })
}

/// What a refused write of an object that had no dry-run means: what its dry-run's refusal
/// would have meant. `Ok(())`: recreate it (an immutable field changed and force is on).
fn refused_untested(
    id: &ObjectRef,
    intent: &Value,
    exists: bool,
    err: &kube::Error,
    opts: &ApplyOptions,
) -> Result<(), ApplyError> {
    match immutable_field(err) {
        Some(_) if wants_force(intent, opts) && exists => Ok(()),
        Some(field) => Err(ApplyError::Immutable {
            object: id.to_string(),
            field,
            message: status_message(err),
        }),
        None => Err(ApplyError::DryRun(vec![format!(
            "{id}: {}",
            status_message(err)
        )])),
    }
}

/// The stage's objects with what was done to each and the version of each last seen.
type StageDone = Vec<(ObjectRef, Action, Option<Seen>)>;

/// What one write did: the action and the version its answer holds.
type Written = (Action, Option<Seen>);

async fn apply_stage(
    client: &kube::Client,
    resolver: &Resolver,
    items: &[&Planned],
    opts: &ApplyOptions,
) -> Result<StageDone, ApplyError> {
    let Decided {
        work,
        decisions,
        probe,
        undoable,
        ..
    } = decide_stage(
        client,
        resolver,
        items,
        opts,
        DryRuns::WhenNeeded,
        opts.known.as_ref(),
    )
    .await?;
    // Every dry-run passed: write the undoable creations, then the probe, then the rest.
    let params = PatchParams::apply(meta::FIELD_MANAGER).force();
    let mut writes: Vec<_> = work
        .iter()
        .zip(&decisions)
        .enumerate()
        .map(|(i, (w, d))| {
            let (params, decision, write_is_test) = (params.clone(), *d, probe == Some(i));
            let (api, id, intent) = (w.api.clone(), w.planned.id.clone(), w.intent.clone());
            let live_seen = w.seen_unwritten();
            let exists = w.may_exist();
            Some(async move {
                let mut action = match decision {
                    Decision::Skip => return Ok((Action::Unchanged, live_seen)),
                    Decision::Create => Action::Created,
                    // Decided by the answer, below.
                    Decision::Configure | Decision::Claim => Action::Configured,
                    Decision::Adopt => Action::Adopted,
                    Decision::Recreate => {
                        recreate_prelude(&api, &id).await?;
                        Action::Recreated
                    }
                };
                let mut result = api.patch(&id.name, &params, &Patch::Apply(&intent)).await;
                if write_is_test && let Err(err) = &result {
                    refused_untested(&id, &intent, exists, err, opts)?;
                    recreate_prelude(&api, &id).await?;
                    action = Action::Recreated;
                    result = api.patch(&id.name, &params, &Patch::Apply(&intent)).await;
                }
                let written = result.map_err(|e| ApplyError::Write {
                    object: id.to_string(),
                    message: status_message(&e),
                })?;
                // Whether the object existed shows in the answer: someone else may have
                // created it since it was read, and an unclaimed one may have existed.
                if matches!(decision, Decision::Create | Decision::Claim) {
                    action = if known::created_by_the_write(&written) {
                        Action::Created
                    } else {
                        Action::Configured
                    };
                }
                let seen = serde_json::to_value(&written)
                    .ok()
                    .as_ref()
                    .and_then(Seen::of);
                Ok::<_, ApplyError>((action, seen))
            })
        })
        .collect();
    let mut results: Vec<Option<Result<Written, ApplyError>>> =
        std::iter::repeat_with(|| None).take(work.len()).collect();

    // The undoable creations, untested: one refused means the others are deleted again.
    let first: Vec<usize> = (0..work.len()).filter(|i| undoable[*i]).collect();
    let batch: Vec<_> = first.iter().filter_map(|i| writes[*i].take()).collect();
    let answers = stream::iter(batch)
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut written = Vec::new();
    let mut rejected = Vec::new();
    for (i, answer) in first.iter().zip(answers) {
        match answer {
            Ok(done) => written.push((*i, done)),
            // A refused write reads "object: message", as a refused dry-run does.
            Err(refused) => rejected.push(refused.to_string()),
        }
    }
    if !rejected.is_empty() {
        return Err(undo(&work, &written, ApplyError::DryRun(rejected), opts).await);
    }
    for (i, done) in &written {
        results[*i] = Some(Ok(done.clone()));
    }

    // The probe alone: when it is refused, nothing else of the stage has been written but the
    // undoable creations, which are deleted again. Its write is its test only while everything
    // written so far can be undone: once a creation turned out to configure an object that
    // existed (an unclaimed object without owner labels), the probe is dry-run first.
    if let Some(i) = probe {
        let configured_existing = written.iter().any(|(_, (a, _))| *a != Action::Created);
        let tested = if configured_existing {
            let w = &work[i];
            let dry = PatchParams::apply(meta::FIELD_MANAGER).force().dry_run();
            match w.send(&dry).await {
                Err(err) => refused_untested(&w.planned.id, &w.intent, w.may_exist(), &err, opts),
                Ok(_) => Ok(()),
            }
        } else {
            Ok(())
        };
        let done = match tested {
            Ok(()) => match writes[i].take() {
                Some(write) => write.await,
                None => Ok((Action::Unchanged, None)),
            },
            Err(refused) => Err(refused),
        };
        match done {
            Ok(done) => results[i] = Some(Ok(done)),
            Err(refused) => return Err(undo(&work, &written, refused, opts).await),
        }
    }

    // The rest, every one tested by its dry-run.
    let rest: Vec<usize> = (0..work.len()).filter(|i| writes[*i].is_some()).collect();
    let batch: Vec<_> = rest.iter().filter_map(|i| writes[*i].take()).collect();
    let answers = stream::iter(batch)
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (i, answer) in rest.into_iter().zip(answers) {
        results[i] = Some(answer);
    }
    let mut out = Vec::with_capacity(work.len());
    for (w, result) in work.iter().zip(results) {
        let (action, seen) = result.unwrap_or(Ok((Action::Unchanged, None)))?;
        out.push((w.planned.id.clone(), action, seen));
    }
    Ok(out)
}

/// Deletes again the objects of `written` that their write created (each only at the version
/// the write left, so nothing changed since is deleted) after the stage was refused for
/// `refused`. Returns `refused` when nothing written stays, else [`ApplyError::PartlyApplied`]
/// naming what stays and why.
async fn undo(
    work: &[Work<'_>],
    written: &[(usize, Written)],
    refused: ApplyError,
    opts: &ApplyOptions,
) -> ApplyError {
    let deletions: Vec<_> = written
        .iter()
        .map(|(i, (action, seen))| {
            let w = &work[*i];
            async move {
                let id = &w.planned.id;
                let Some(seen) = seen.as_ref().filter(|_| *action == Action::Created) else {
                    return Some(format!(
                        "{id}: existed without owner labels and was configured before the refusal"
                    ));
                };
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(seen.uid.clone()),
                        resource_version: Some(seen.resource_version.clone()),
                    }),
                    ..DeleteParams::background()
                };
                match w.api.delete(&id.name, &params).await {
                    Ok(_) => None,
                    Err(kube::Error::Api(status)) if status.code == 404 => None,
                    Err(e) => Some(format!(
                        "{id}: created, and deleting it again failed: {}",
                        status_message(&e)
                    )),
                }
            }
        })
        .collect();
    let kept: Vec<String> = stream::iter(deletions)
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    if kept.is_empty() {
        return refused;
    }
    tracing::warn!(
        kept = kept.len(),
        "a refused stage left objects written before the refusal"
    );
    let rejected = match refused {
        ApplyError::DryRun(rejected) => rejected,
        other => vec![other.to_string()],
    };
    ApplyError::PartlyApplied { rejected, kept }
}

/// What applying a plan would do to one object (see [`preview`]).
#[derive(Clone, Debug)]
pub struct Previewed {
    /// The object's identity.
    pub id: ObjectRef,
    /// What the apply would do ([`Action::Unchanged`]: nothing would be sent).
    pub action: Action,
    /// The live object, if it exists.
    pub live: Option<Value>,
    /// The object as the server would store it (the answer to the server-side dry-run);
    /// `None` when unchanged, or when its kind is defined by a CRD of the same plan that the
    /// cluster does not serve yet (it cannot be dry-run before the CRD exists).
    pub desired: Option<Value>,
}

/// Everything [`apply`] would do, found the way it finds it (live reads, drift rules, the
/// intent digest, a server-side dry-run of every object that needs a write), without writing.
///
/// Use a resolver that was not told to expect the plan's own kinds: a kind only a CRD of the
/// plan defines is reported as created at once instead of being waited for.
pub async fn preview(
    client: &kube::Client,
    resolver: &Resolver,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<Vec<Previewed>, ApplyError> {
    let defined: HashSet<(String, String)> = kinds_defined_by(
        &plan
            .objects
            .iter()
            .map(|p| p.intent.clone())
            .collect::<Vec<_>>(),
    )
    .into_keys()
    .collect();
    let mut out = Vec::with_capacity(plan.objects.len());
    for stage in [Stage::Definitions, Stage::Classes, Stage::Resources] {
        let mut items = Vec::new();
        for p in plan.objects.iter().filter(|p| p.stage == stage) {
            match resolver.resolve(client, &p.id).await {
                Ok(_) => items.push(p),
                Err(_) if defined.contains(&(p.id.group.clone(), p.id.kind.clone())) => {
                    out.push(Previewed {
                        id: p.id.clone(),
                        action: Action::Created,
                        live: None,
                        desired: None,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        if items.is_empty() {
            continue;
        }
        // A preview reads every object: it shows the live objects.
        let decided = decide_stage(client, resolver, &items, opts, DryRuns::Always, None).await?;
        for ((w, decision), desired) in decided
            .work
            .into_iter()
            .zip(decided.decisions)
            .zip(decided.dry_runs)
        {
            let action = match decision {
                Decision::Skip => Action::Unchanged,
                // A preview reads every object, so it never claims one unread.
                Decision::Create | Decision::Claim => Action::Created,
                Decision::Configure => Action::Configured,
                Decision::Adopt => Action::Adopted,
                Decision::Recreate => Action::Recreated,
            };
            out.push(Previewed {
                id: w.planned.id.clone(),
                action,
                live: w.live,
                desired,
            });
        }
    }
    Ok(out)
}

/// Deletes the live object and waits until it is gone, so it can be created again.
async fn recreate_prelude(api: &Api<DynamicObject>, id: &ObjectRef) -> Result<(), ApplyError> {
    let write_err = |e: kube::Error| ApplyError::Write {
        object: id.to_string(),
        message: format!("recreate: {}", status_message(&e)),
    };
    api.delete(&id.name, &DeleteParams::foreground())
        .await
        .map_err(write_err)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.get_opt(&id.name).await.map_err(write_err)?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err(ApplyError::Write {
                object: id.to_string(),
                message: "recreate: the old object was not deleted within 60s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_new_passive_objects_are_undoable_creations() {
        let undoable = |object: Value, decision| {
            let id = ObjectRef::from_object(&object).unwrap();
            undoable_creation(&id, &object, decision)
        };
        let of = |api: &str, kind: &str, spec: Value| {
            json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
        };
        for kind in ["ConfigMap", "Secret", "ServiceAccount", "Service"] {
            for decision in [Decision::Create, Decision::Claim] {
                assert!(undoable(of("v1", kind, json!({})), decision), "{kind}");
            }
            for decision in [
                Decision::Skip,
                Decision::Configure,
                Decision::Adopt,
                Decision::Recreate,
            ] {
                assert!(!undoable(of("v1", kind, json!({})), decision), "{kind}");
            }
        }
        assert!(undoable(
            of("v1", "Service", json!({"type": "ClusterIP"})),
            Decision::Create
        ));
        for kind in ["NodePort", "LoadBalancer", "ExternalName"] {
            assert!(!undoable(
                of("v1", "Service", json!({"type": kind})),
                Decision::Create
            ));
        }
        for (api, kind) in [
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("v1", "PersistentVolumeClaim"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("example.com/v1", "ConfigMap"),
        ] {
            assert!(
                !undoable(of(api, kind, json!({})), Decision::Create),
                "{api} {kind}"
            );
        }
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"a": "b2xk", "keep": "eA=="},
            "stringData": {"a": "new", "b": "two"}});
        fold_string_data(&mut secret).unwrap();
        assert_eq!(
            secret,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": "bmV3", "keep": "eA==", "b": "dHdv"}})
        );
        let mut bad = json!({"kind": "Secret", "stringData": {"a": 1}});
        assert_eq!(
            fold_string_data(&mut bad).unwrap_err(),
            "stringData.a is not a string"
        );
    }

    #[test]
    fn intent_gets_owner_labels_and_a_stable_digest() {
        let owner = Owner {
            name: "app".into(),
            namespace: "team".into(),
        };
        let mut a = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "x", "uid": "u", "resourceVersion": "5"}, "data": {"k": "v"}});
        let id = ObjectRef::from_object(&a).unwrap();
        let mut b = a.clone();
        prepare_intent(&mut a, &id, &owner, 0).unwrap();
        prepare_intent(&mut b, &id, &owner, 0).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.pointer("/metadata/labels/kubectl-gitops.io~1name"),
            Some(&json!("app"))
        );
        assert_eq!(a.pointer("/metadata/uid"), None);
        let digest = a
            .pointer("/metadata/annotations/kubectl-gitops.io~1intent-digest")
            .unwrap()
            .clone();
        // Re-preparing an already prepared intent yields the same digest.
        let mut again = a.clone();
        prepare_intent(&mut again, &id, &owner, 0).unwrap();
        assert_eq!(again, a);
        let mut c = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "x"}, "data": {"k": "w"}});
        prepare_intent(&mut c, &id, &owner, 0).unwrap();
        assert_ne!(
            c.pointer("/metadata/annotations/kubectl-gitops.io~1intent-digest"),
            Some(&digest)
        );
    }

    #[test]
    fn crds_of_the_build_define_scopes() {
        let kinds = kinds_defined_by(&[json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}
        })]);
        assert_eq!(
            kinds.get(&("example.com".into(), "Widget".into())),
            Some(&false)
        );
    }
}
