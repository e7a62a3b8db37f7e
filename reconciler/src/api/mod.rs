//! The `kubectl-gitops.io/v1alpha1` API: CRD types, conditions, durations and CRD generation.

pub mod alert;
pub mod clusterpolicy;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod duration;
pub mod externalartifact;
pub mod gitrepository;
pub mod kustomization;
pub mod receiver;
pub mod reference;
pub mod source;

pub use alert::{Alert, AlertSpec, Provider, ProviderSpec};
pub use clusterpolicy::{ClusterPolicy, ClusterPolicySpec, ClusterPolicyStatus, RecordedViolation};
pub use common::{FailurePolicy, PolicyMode, PolicyModule, Selector};
pub use externalartifact::{ExternalArtifact, ExternalArtifactSpec, ExternalArtifactStatus};
pub use gitrepository::{
    Artifact, GitRepository, GitRepositoryLimits, GitRepositoryRef, GitRepositorySpec,
    GitRepositoryStatus,
};
pub use kustomization::{
    Inventory, InventoryEntry, Kustomization, KustomizationSpec, KustomizationStatus,
};
pub use receiver::{Receiver, ReceiverSpec, ReceiverStatus};
pub use source::{SourceArtifact, SourceKind, SourceState};

/// API group of every kind of this project.
pub const GROUP: &str = "kubectl-gitops.io";
/// API version of every kind of this project.
pub const VERSION: &str = "v1alpha1";
/// The label that assigns an object to a shard: a reconciler installed for shard `S`
/// (`kubectl gitops install --shard S`) reconciles the objects labelled `S`, the main one
/// those without the label or with a value no shard has. Flux's convention, under this
/// project's own group.
pub const SHARD_LABEL: &str = "sharding.kubectl-gitops.io/key";
