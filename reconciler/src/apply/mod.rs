//! The apply stage: staged server-side apply, inventory, prune and health.
//!
//! Flow for one Kustomization (the controller drives it):
//! 1. [`plan`] (reads discovery only): validates every built object, decides its scope, adds the
//!    owner labels and the intent digest, sorts it into a [`Stage`]. The plan's references are
//!    the new inventory, which the controller records (union with the old one) *before* step 2.
//! 2. [`apply`]: per stage — CRDs/Namespaces/ClusterRoles, then `*Class` kinds, then the rest —
//!    read the live objects, skip those whose intent is unchanged and not drifted, dry-run all
//!    remaining objects of the stage but the new passive ones (ConfigMaps, Secrets,
//!    ServiceAccounts, ClusterIP Services: deleting them undoes them exactly) and one more (the
//!    probe), and only when every dry-run passed write the passive ones, then the probe, alone
//!    (its write is its test), then, when it passed, the others; a refusal of a passive one or
//!    of the probe deletes the passive ones again; after the first stage wait until CRDs are
//!    established and Namespaces active.
//! 3. [`prune`]: delete, in reverse stage order, objects that left the inventory and still carry
//!    this Kustomization's owner labels (never those annotated `kubectl-gitops.io/prune: disabled`).
//! 4. [`health::wait`]: watch-driven kstatus rules; for Kustomizations acting as the reconciler
//!    itself, read from one shared store per kind ([`kind_watch`]) instead of a watch per object.

pub mod diff;
pub mod health;
pub mod ignore;
pub mod inventory;
pub mod kind_watch;
pub mod known;
pub mod object;
pub mod resolve;

mod prune;
mod ssa;

use std::fmt;

use serde_json::Value;

pub use health::{Health, HealthError};
pub use ignore::DriftRules;
pub use kind_watch::{KindWatches, Seen};
pub use known::{Known, Verified};
pub use object::ObjectRef;
pub use prune::{PruneOutcome, prune, prune_dry_run};
pub use resolve::{ResolveError, Resolver};
pub use ssa::{
    ApplyOptions, OwnerLookup, Plan, Planned, Previewed, Scopes, apply, plan, plan_with, preview,
};

use crate::api::conditions::meta;

/// Annotation holding the sha256 of the intent the reconciler last applied to an object; an
/// equal digest plus a live object that still contains the intent means nothing to send.
pub const INTENT_DIGEST_ANNOTATION: &str = "kubectl-gitops.io/intent-digest";

/// The [`INTENT_DIGEST_ANNOTATION`] of an object (an intent or a live object), if any.
fn intent_digest(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(INTENT_DIGEST_ANNOTATION))
        .and_then(Value::as_str)
}

/// The Kustomization that owns the applied objects (its owner labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The Kustomization's name (label `kubectl-gitops.io/name`).
    pub name: String,
    /// The Kustomization's namespace (label `kubectl-gitops.io/namespace`).
    pub namespace: String,
}

impl Owner {
    /// Label selector matching this owner's objects.
    pub fn selector(&self) -> String {
        format!(
            "{}={},{}={}",
            meta::OWNER_NAME_LABEL,
            self.name,
            meta::OWNER_NAMESPACE_LABEL,
            self.namespace
        )
    }

    /// The owner named by the labels of a live object, if any.
    pub fn of(live: &Value) -> Option<Owner> {
        let labels = live.pointer("/metadata/labels")?;
        let name = labels.get(meta::OWNER_NAME_LABEL)?.as_str()?;
        let namespace = labels
            .get(meta::OWNER_NAMESPACE_LABEL)
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(Owner {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The apply stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// CustomResourceDefinitions, Namespaces and ClusterRoles: everything else may depend on them.
    Definitions,
    /// `*Class` kinds (StorageClass, IngressClass, PriorityClass, RuntimeClass, ...).
    Classes,
    /// Everything else.
    Resources,
}

impl Stage {
    /// The stage an object of this group and kind is applied in.
    pub fn of(object: &ObjectRef) -> Stage {
        match (object.group.as_str(), object.kind.as_str()) {
            ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("", "Namespace")
            | ("rbac.authorization.k8s.io", "ClusterRole") => Stage::Definitions,
            (_, kind) if kind.ends_with("Class") => Stage::Classes,
            _ => Stage::Resources,
        }
    }
}

/// What the apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The object did not exist and was created.
    Created,
    /// The live object differed from the intent (or had drifted) and was patched.
    Configured,
    /// The live object already held the intent: nothing was sent.
    Unchanged,
    /// Deleted and created again because an immutable field changed (force).
    Recreated,
    /// Taken over from a Kustomization that no longer exists: its owner labels now name ours.
    Adopted,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Recreated => "recreated",
            Action::Adopted => "adopted",
        })
    }
}

/// The result of an apply: one action per object, in plan order.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    /// Each object of the plan with what the apply did to it.
    pub changes: Vec<(ObjectRef, Action)>,
    /// The version of each object as the apply last saw it (its write's answer, or the live
    /// object when nothing was sent): a health check reading a shared store waits for it.
    pub seen: std::collections::BTreeMap<ObjectRef, Seen>,
    /// The version at which each object was known to hold its intent (see [`known`]); objects
    /// a drift rule matches are left out.
    pub verified: Verified,
}

impl ChangeSet {
    /// How many objects got `action`.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|(_, a)| *a == action).count()
    }

    /// True when at least one object was written.
    pub fn wrote(&self) -> bool {
        self.changes.iter().any(|(_, a)| *a != Action::Unchanged)
    }

    /// `created 3, configured 1` (zero counts left out; `unchanged N` when nothing changed).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            Action::Created,
            Action::Configured,
            Action::Recreated,
            Action::Adopted,
        ]
        .into_iter()
        .filter_map(|a| {
            let n = self.count(a);
            (n > 0).then(|| format!("{a} {n}"))
        })
        .collect();
        if parts.is_empty() {
            format!("unchanged {}", self.count(Action::Unchanged))
        } else {
            parts.join(", ")
        }
    }
}

/// Why the apply stage failed. Every variant names the object(s) and the cause; nothing of the
/// failing stage was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A built object is not a valid Kubernetes object (no apiVersion, kind or name, ...).
    #[error("object #{index} of the build: {message}")]
    Invalid {
        /// Position of the object in the build output, from 0.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The kind of an object is unknown to the cluster, or discovery failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A namespaced object without a namespace (and no `spec.targetNamespace` to supply one).
    #[error(
        "{object}: namespaced kind without metadata.namespace (set it in the manifest or use spec.targetNamespace)"
    )]
    NamespaceMissing {
        /// The object, as `Kind name`.
        object: String,
    },
    /// Two objects of the build have the same group, kind, namespace and name.
    #[error("{object} appears more than once in the build")]
    Duplicate {
        /// The object, as `Kind namespace/name`.
        object: String,
    },
    /// The live object carries the owner labels of another Kustomization that still exists.
    #[error("{object} is managed by Kustomization {owner}; refusing to take it over")]
    Conflict {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The other Kustomization, as `namespace/name`.
        owner: String,
    },
    /// The server refused a change to an immutable field and recreating is not allowed.
    #[error(
        "{object}: immutable field {field} changed; set spec.force: true or annotate the object with kubectl-gitops.io/force: enabled to recreate it ({message})"
    )]
    Immutable {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The immutable field the server named.
        field: String,
        /// The server's message.
        message: String,
    },
    /// The server-side dry-run refused objects of a stage: one `object: message` per object
    /// (or the server refused the write of the stage's probe, the one object written before
    /// the others without a dry-run: nothing of the stage was written either).
    #[error("dry-run rejected {} object(s), nothing of this stage was applied: {}", .0.len(), .0.join("; "))]
    DryRun(Vec<String>),
    /// The server refused objects of a stage after objects written without a dry-run (see
    /// [`ssa::apply`]) could not all be undone: each refusal as `object: message`, and each
    /// object that stays written with why.
    #[error(
        "the server refused {} object(s) of a stage: {}; written before the refusal and still there: {}",
        .rejected.len(), .rejected.join("; "), .kept.join("; ")
    )]
    PartlyApplied {
        /// `object: message` per refused object.
        rejected: Vec<String>,
        /// `object: why` per object that stays written.
        kept: Vec<String>,
    },
    /// Writing an object failed after its dry-run passed.
    #[error("{object}: {message}")]
    Write {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The server's message.
        message: String,
    },
    /// Reading the live object before the apply failed.
    #[error("{object}: read failed: {message}")]
    Read {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The server's message.
        message: String,
    },
    /// The CRDs or Namespaces of the first stage did not become established or active.
    #[error("waiting for definitions: {0}")]
    Definitions(#[source] HealthError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api: &str, kind: &str) -> ObjectRef {
        ObjectRef::from_object(&json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}}))
            .unwrap()
    }

    #[test]
    fn stages() {
        assert_eq!(
            Stage::of(&obj("apiextensions.k8s.io/v1", "CustomResourceDefinition")),
            Stage::Definitions
        );
        assert_eq!(Stage::of(&obj("v1", "Namespace")), Stage::Definitions);
        assert_eq!(
            Stage::of(&obj("rbac.authorization.k8s.io/v1", "ClusterRole")),
            Stage::Definitions
        );
        assert_eq!(
            Stage::of(&obj("storage.k8s.io/v1", "StorageClass")),
            Stage::Classes
        );
        assert_eq!(Stage::of(&obj("apps/v1", "Deployment")), Stage::Resources);
    }

    #[test]
    fn summary_counts() {
        let mut cs = ChangeSet::default();
        cs.changes.push((obj("v1", "A"), Action::Created));
        cs.changes.push((obj("v1", "B"), Action::Created));
        cs.changes.push((obj("v1", "C"), Action::Configured));
        cs.changes.push((obj("v1", "D"), Action::Unchanged));
        assert_eq!(cs.summary(), "created 2, configured 1");
        cs.changes.push((obj("v1", "E"), Action::Adopted));
        assert_eq!(cs.summary(), "created 2, configured 1, adopted 1");
        assert!(cs.wrote());
        let idle = ChangeSet {
            changes: vec![(obj("v1", "D"), Action::Unchanged)],
            ..ChangeSet::default()
        };
        assert_eq!(idle.summary(), "unchanged 1");
        assert!(!idle.wrote());
    }

    #[test]
    fn owner_from_labels() {
        let live = json!({"metadata": {"labels": {"kubectl-gitops.io/name": "app", "kubectl-gitops.io/namespace": "team"}}});
        let owner = Owner::of(&live).unwrap();
        assert_eq!(owner.to_string(), "team/app");
        assert_eq!(
            owner.selector(),
            "kubectl-gitops.io/name=app,kubectl-gitops.io/namespace=team"
        );
        assert!(Owner::of(&json!({"metadata": {}})).is_none());
    }
}
