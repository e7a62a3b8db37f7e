//! What the apply may know of a live object without reading it.
//!
//! Before it decides, the apply reads each object of a stage (a GET, or a LIST per kind and
//! namespace). For a Kustomization acting as the reconciler itself, two facts already held in
//! memory can stand for that read ([`Known`]):
//!
//! - **Unchanged since verified.** After every apply the reconciler remembers, per object, the
//!   version at which the live object was known to hold the intent (its write's answer, or the
//!   live object it compared and left unchanged) and the intent's digest ([`Verified`]). When
//!   the shared store of the kind ([`super::kind_watch`]) holds that very version and the intent's
//!   digest is the same, nothing changed on either side: the object is unchanged without a read.
//! - **Unclaimed.** The shared store of a kind holds every object that carries owner labels.
//!   When it has none of that name, no Kustomization owns the object (there is no conflict to
//!   refuse and nothing to adopt): it is new, or exists without owner labels, and in both cases it
//!   is written. Whether it was created or configured is read from the write's answer
//!   ([`created_by_the_write`]).
//!
//! Neither applies to an object a drift rule (`spec.ignore`) matches (the rule needs the live
//! values) and neither starts a store: only a store some health check started, and which has
//! completed its first list, is used.
//!
//! Caveat: a store lags the apiserver by the time a watch event takes (milliseconds). An object
//! changed in that window is seen as drifted at the next reconcile instead of this one; an object
//! another Kustomization claimed in that window is written (its owner labels taken) and the other
//! Kustomization reports the conflict at its next reconcile instead of this one refusing it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use super::intent_digest;
use super::kind_watch::{KindWatches, Seen};
use super::object::ObjectRef;
use crate::api::conditions::meta;

/// The versions at which a Kustomization's objects were last known to hold its intent.
#[derive(Clone, Debug, Default)]
pub struct Verified(HashMap<u64, (Seen, u64)>);

impl Verified {
    /// Remembers that `object`, at version `seen`, holds an intent whose digest annotation is
    /// `digest`.
    pub fn insert(&mut self, object: &ObjectRef, seen: Seen, digest: &str) {
        self.0.insert(key(object), (seen, hash(digest)));
    }

    /// The version remembered for `object` with an intent of `digest`; `None` when the digest
    /// differs or nothing is remembered.
    pub fn get(&self, object: &ObjectRef, digest: &str) -> Option<&Seen> {
        self.0
            .get(&key(object))
            .filter(|(_, d)| *d == hash(digest))
            .map(|(seen, _)| seen)
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Objects are remembered by a hash of their identity: a few bytes each instead of five
/// strings. A collision cannot make an object skipped: the store's copy must also be at the
/// remembered resourceVersion, and no two objects share one.
fn key(object: &ObjectRef) -> u64 {
    let mut h = DefaultHasher::new();
    object.hash(&mut h);
    h.finish()
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// What the apply may use instead of reading live objects (see the module docs).
#[derive(Clone)]
pub struct Known {
    /// The shared stores; they list and watch as the reconciler itself, so pass them only for
    /// a Kustomization whose client is the reconciler's own.
    pub watches: Arc<KindWatches>,
    /// What this Kustomization's previous apply verified.
    pub verified: Arc<Verified>,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Known")
            .field("verified", &self.verified.len())
            .finish_non_exhaustive()
    }
}

/// What is known of one live object without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// It holds the intent at this version: nothing to send.
    Unchanged(Seen),
    /// No object of this name carries owner labels: it is written without a read.
    Unclaimed,
}

impl Known {
    /// What is known of `object` (of `resource`'s kind) whose intent is `intent`; `None` when
    /// it must be read.
    pub fn hint(&self, resource: &ApiResource, object: &ObjectRef, intent: &Value) -> Option<Hint> {
        let store = self.watches.ready(resource)?;
        let copy = store.get(object.namespace.as_deref(), &object.name).ok()?;
        let Some(copy) = copy else {
            return Some(Hint::Unclaimed);
        };
        let seen = self.verified.get(object, intent_digest(intent)?)?;
        (copy.uid.as_deref() == Some(seen.uid.as_str())
            && copy.resource_version.as_deref() == Some(seen.resource_version.as_str()))
        .then(|| Hint::Unchanged(seen.clone()))
    }
}

/// Whether the answer to an apply of an object that was not read shows that the apply created
/// it: every field manager of the answer is this reconciler's (an object that existed has the
/// managers of whoever wrote it before).
pub fn created_by_the_write(answer: &DynamicObject) -> bool {
    answer
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|m| m.manager.as_deref() == Some(meta::FIELD_MANAGER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str) -> ObjectRef {
        ObjectRef::from_object(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns"}}))
        .unwrap()
    }

    fn seen(rv: &str) -> Seen {
        Seen {
            uid: "u".into(),
            resource_version: rv.into(),
            generation: Some(1),
        }
    }

    #[test]
    fn a_version_is_remembered_per_object_and_intent_digest() {
        let mut verified = Verified::default();
        verified.insert(&object("web"), seen("7"), "sha256:a");
        assert_eq!(verified.get(&object("web"), "sha256:a"), Some(&seen("7")));
        assert_eq!(verified.get(&object("web"), "sha256:b"), None);
        assert_eq!(verified.get(&object("db"), "sha256:a"), None);
        verified.insert(&object("web"), seen("9"), "sha256:b");
        assert_eq!(verified.get(&object("web"), "sha256:b"), Some(&seen("9")));
        assert_eq!(verified.len(), 1);
    }

    #[test]
    fn an_answer_with_only_our_manager_was_created_by_the_write() {
        let answer = |managers: &[&str]| -> DynamicObject {
            let fields: Vec<Value> = managers
                .iter()
                .map(|m| json!({"manager": m, "operation": "Apply"}))
                .collect();
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "managedFields": fields}}))
            .unwrap()
        };
        assert!(created_by_the_write(&answer(&[meta::FIELD_MANAGER])));
        assert!(!created_by_the_write(&answer(&[
            meta::FIELD_MANAGER,
            "kubectl-client-side-apply"
        ])));
        assert!(!created_by_the_write(&answer(&["kube-controller-manager"])));
    }
}
