//! The policy stage: runs a Kustomization's build output through WebAssembly policy
//! components (WIT package `kubectl-gitops:policy@0.2.0`, `wit/policy.wit`; components built
//! against `@0.1.0`, `wit/v0.1.0/policy.wit`, still load and are given every object).
//!
//! One [`PolicyHost`] per process owns the wasmtime engine, the caches of compiled components
//! (memory and disk) and the epoch ticker thread. [`PolicyHost::run_pipeline`] runs an ordered
//! list of [`PolicyStep`]s over the objects: every transform in order, then a tenancy
//! re-check, then every validation. Each call of a component gets a fresh instance with a
//! deadline, a memory cap and an output cap; any misbehaviour is a typed [`PolicyError`] naming
//! the policy (and the object where one is known). The three built-in policies are embedded in
//! the binary ([`ModuleSource::Builtin`]).

mod builtin;
mod cache;
mod discovery;
mod error;
pub mod fetch;
mod host;
mod manifests;
mod output;
mod sched;
mod slots;
mod store;
#[cfg(test)]
mod strategies;
mod structure;
mod tenancy;
mod wasi;
mod worker;

pub use builtin::BUILTINS;
pub use discovery::{ClusterScopes, KindScope, KindTable};
pub use error::{PipelineError, PolicyError};
pub use gitops_policy_sdk::GroupKind;
pub use host::{HostConfig, ModuleInfo, PolicyHost};
pub use manifests::{ManifestError, read_manifests};
pub use structure::CodeLimits;
pub use worker::{COMPILE_WORKER_ARG, compile_worker_main};

use crate::api::FailurePolicy;
use serde_json::Value;
use std::sync::Arc;

/// Bindings generated from `wit/policy.wit` (kept private: the public API is this module's
/// own types).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });

    /// The first contract, `kubectl-gitops:policy@0.1.0` (`wit/v0.1.0/policy.wit`). Its
    /// `transform` and `validate` have the same types as today's; only `metadata` differs.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "policy",
        });
    }
}

/// One step of a pipeline: a policy module with its configuration.
#[derive(Clone, Debug)]
pub struct PolicyStep {
    /// Name of the step (from the Kustomization or ClusterPolicy), used in every message.
    pub name: String,
    /// Where the component comes from.
    pub module: ModuleSource,
    /// The configuration handed to the policy (`Value::Null` when unset).
    pub config: Value,
    /// What to do when the policy fails to run (not when it denies).
    pub failure_policy: FailurePolicy,
}

/// The component of a step.
#[derive(Clone, Debug)]
pub enum ModuleSource {
    /// A built-in policy embedded in the reconciler: `image-pinning`, `replica-bounds` or
    /// `target-namespace`.
    Builtin(String),
    /// Component bytes resolved by the caller (artifact path, ConfigMap, URL) with the sha256
    /// declared in the spec (lowercase hex); the host verifies it before compiling.
    Component {
        /// The component bytes.
        bytes: Arc<[u8]>,
        /// Declared sha256 (64 lowercase hex characters).
        sha256: String,
    },
}

/// Where a pipeline run comes from, and the tenancy rules its transforms must respect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyContext {
    /// Namespace of the Kustomization.
    pub kustomization_namespace: String,
    /// Name of the Kustomization.
    pub kustomization_name: String,
    /// Revision of the source artifact (empty when run on a local directory).
    pub source_revision: String,
    /// `spec.targetNamespace`, if set.
    pub target_namespace: Option<String>,
    /// True for dry runs, diffs and `policy test`.
    pub dry_run: bool,
    /// Tenancy re-check after the transforms. `None` disables it (the CLI's `policy test`).
    pub tenancy: Option<Tenancy>,
}

/// What transforms may do to a tenant's objects (checked after all transforms ran).
///
/// A transformed object may be in: a namespace some object of the pipeline's input was
/// already in, the target namespace, or one of `allowed_namespaces`. A cluster-scoped object
/// (built-in table of the `target-namespace` policy, `cluster_scoped_kinds` from discovery, and
/// kinds that CRDs of the input define with scope `Cluster`) may only be in the output if the
/// same object was in the input, unless `allow_cluster_scoped` is set. With `discovery`, a
/// kind none of these tables knows is looked up there (discovery is read again for it); a kind
/// the cluster does not serve either counts as cluster-scoped (fail closed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// Namespaces transforms may move or add objects into, besides the ones above.
    pub allowed_namespaces: Vec<String>,
    /// Whether transforms may add cluster-scoped objects (a cluster-admin Kustomization).
    pub allow_cluster_scoped: bool,
    /// Cluster-scoped kinds from the cluster's discovery data, as `Kind.group` (`Kind` for the
    /// core group), in addition to the built-in table.
    pub cluster_scoped_kinds: Vec<String>,
    /// The cluster's kinds and their scope (the reconciler's shared table), if any.
    pub discovery: Option<ClusterScopes>,
}

/// Which operations a policy performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Only `transform` is called.
    Transform,
    /// Only `validate` is called.
    Validate,
    /// Both are called.
    Both,
}

impl PolicyKind {
    /// True if `transform` is called.
    pub fn transforms(self) -> bool {
        matches!(self, PolicyKind::Transform | PolicyKind::Both)
    }
    /// True if `validate` is called.
    pub fn validates(self) -> bool {
        matches!(self, PolicyKind::Validate | PolicyKind::Both)
    }
}

/// What a pipeline produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineOutcome {
    /// The objects after every transform, in the order the last transform returned them.
    pub objects: Vec<Value>,
    /// Violations of severity warning (they do not deny).
    pub warnings: Vec<Violation>,
    /// Steps with `failurePolicy: Ignore` that failed and were skipped, with why.
    pub ignored_failures: Vec<PolicyError>,
}

/// Identifies an object in messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// How serious a violation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Denies the revision (reason PolicyDenied).
    Error,
    /// Reported only.
    Warning,
}

/// A finding of a validating policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The step that reported it.
    pub policy: String,
    /// The object it is about, if any.
    pub object: Option<ObjectRef>,
    /// JSON pointer into the object, if any.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Whether it denies.
    pub severity: Severity,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy {}: ", self.policy)?;
        if let Some(object) = &self.object {
            write!(f, "{object}")?;
            if let Some(field) = &self.field {
                write!(f, " {field}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}
