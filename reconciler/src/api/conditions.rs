//! Condition types, reasons, labels and annotations: the stable vocabulary of status.
//!
//! Every controller and the CLI use these constants; a reason string never appears as a literal
//! anywhere else. Types follow kstatus: `Ready` is the summary, `Reconciling` and `Stalled` are
//! "abnormal-true" conditions that are only present while true.

/// Condition types.
pub mod types {
    /// Summary condition: True when the last reconcile of the current generation succeeded.
    pub const READY: &str = "Ready";
    /// Present (True) while a reconcile is in progress; the message names the current stage.
    pub const RECONCILING: &str = "Reconciling";
    /// Present (True) when the object cannot make progress without a change to its spec.
    pub const STALLED: &str = "Stalled";
    /// GitRepository: an artifact for the last fetched revision is in storage.
    pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
    /// GitRepository: the last fetch failed (the previous artifact, if any, stays in place).
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// Kustomization: the health checks of the last applied revision pass.
    pub const HEALTHY: &str = "Healthy";
}

/// Condition reasons (CamelCase, stable: users alert on them).
pub mod reasons {
    /// The last reconcile succeeded (GitRepository and Receiver Ready, GitRepository
    /// ArtifactInStorage).
    pub const SUCCEEDED: &str = "Succeeded";
    /// A reconcile is running: the reason of `Reconciling`, and of `Ready=Unknown` while the
    /// object is not Ready.
    pub const PROGRESSING: &str = "Progressing";
    /// Reconciling after a failed attempt: the attempt is over (Ready says why it failed) and
    /// another follows after `retryInterval`.
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    /// Kustomization Ready=True: the revision was applied (and is healthy when health is checked).
    pub const RECONCILIATION_SUCCEEDED: &str = "ReconciliationSucceeded";
    /// The spec cannot work as written (a bad URL, reference, path or option); retrying does not
    /// help until it changes.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    // Source (GitRepository)
    /// The source's credentials are missing, malformed, or refused by the server (including an
    /// unknown ssh host key).
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    /// A git operation failed: the reference is missing, the remote is unreachable, or the fetch
    /// timed out or was cancelled.
    pub const GIT_OPERATION_FAILED: &str = "GitOperationFailed";
    /// Writing or verifying an artifact in the reconciler's storage failed.
    pub const STORAGE_OPERATION_FAILED: &str = "StorageOperationFailed";
    /// The fetched tree holds an entry refused for safety (a symlink that is absolute or
    /// leaves the repository, a malformed entry name, an oversized `.sourceignore`, ...).
    pub const HOSTILE_CONTENT: &str = "HostileContent";
    /// A fetch went over a size limit (bytes received, objects, file size, tree size, files).
    pub const SIZE_LIMIT_EXCEEDED: &str = "SizeLimitExceeded";
    // Kustomization pipeline stages, one reason each.
    /// Kustomization: the source artifact could not be downloaded, verified or unpacked.
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    /// Kustomization: the kustomize build (or substitution or decryption before it) failed.
    pub const BUILD_FAILED: &str = "BuildFailed";
    /// Kustomization: a policy returned a violation that denies the build.
    pub const POLICY_DENIED: &str = "PolicyDenied";
    /// Kustomization: a policy could not run (missing module, bad configuration, trap, time or
    /// memory limit).
    pub const POLICY_FAILED: &str = "PolicyFailed";
    /// Kustomization: the server-side apply of an object failed, or the impersonated client could
    /// not be built.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Kustomization: deleting an object that left the inventory failed.
    pub const PRUNE_FAILED: &str = "PruneFailed";
    /// Kustomization: an applied or listed object did not become healthy within the timeout.
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    /// Kustomization: a `dependsOn` Kustomization is not Ready at its latest generation (or the
    /// dependencies form a cycle).
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    /// Kustomization: the source does not exist or has no ready artifact.
    pub const SOURCE_NOT_READY: &str = "SourceNotReady";
    // Receiver
    /// The Receiver's Secret or its `token` key is missing.
    pub const TOKEN_NOT_FOUND: &str = "TokenNotFound";
}

/// Labels and annotations the project reads or writes on Kubernetes objects.
pub mod meta {
    /// Owner label: name of the Kustomization that applied the object.
    pub const OWNER_NAME_LABEL: &str = "kubectl-gitops.io/name";
    /// Owner label: namespace of the Kustomization that applied the object.
    pub const OWNER_NAMESPACE_LABEL: &str = "kubectl-gitops.io/namespace";
    /// `kubectl-gitops.io/prune: disabled` keeps an object when it leaves the inventory.
    pub const PRUNE_ANNOTATION: &str = "kubectl-gitops.io/prune";
    /// The value of [`PRUNE_ANNOTATION`] that keeps the object.
    pub const PRUNE_DISABLED: &str = "disabled";
    /// `kubectl-gitops.io/decrypt: disabled` leaves an object's SOPS metadata and values as
    /// they are (Flux's `kustomize.toolkit.fluxcd.io/decrypt`).
    pub const DECRYPT_ANNOTATION: &str = "kubectl-gitops.io/decrypt";
    /// The value of [`DECRYPT_ANNOTATION`] that leaves the object encrypted.
    pub const DECRYPT_DISABLED: &str = "disabled";
    /// Written by `kubectl gitops reconcile`; echoed in `status.lastHandledReconcileAt`.
    pub const RECONCILE_REQUESTED_AT_ANNOTATION: &str = "kubectl-gitops.io/reconcile-requested-at";
    /// Per-object opt-in to recreate on immutable-field changes (like `spec.force`).
    pub const FORCE_ANNOTATION: &str = "kubectl-gitops.io/force";
    /// Field manager of every server-side apply the reconciler makes.
    pub const FIELD_MANAGER: &str = "gitops-reconciler";
    /// Finalizer on Kustomizations (deletionPolicy) and GitRepositories (artifact cleanup).
    pub const FINALIZER: &str = "kubectl-gitops.io/finalizer";
}

/// The status of a condition as Kubernetes spells it.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet (Ready while the first reconcile runs).
    pub const UNKNOWN: &str = "Unknown";
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets (adds or replaces) the condition of `type_` in `conditions`, keeping
/// `lastTransitionTime` when the status did not change — the one way every controller writes a
/// condition.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let message = message.into();
    let now = Time(jiff::Timestamp::now());
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status.to_owned();
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation,
            last_transition_time: now,
        }),
    }
}

/// Removes the condition of `type_` (used for the abnormal-true `Reconciling` and `Stalled`).
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the `Ready` condition is present with status True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    get(conditions, types::READY).is_some_and(|c| c.status == status::TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            types::READY,
            status::FALSE,
            reasons::PROGRESSING,
            "fetching",
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        set(
            &mut conditions,
            types::READY,
            status::FALSE,
            reasons::GIT_OPERATION_FAILED,
            "boom",
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].reason, reasons::GIT_OPERATION_FAILED);
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert!(!is_ready(&conditions));
        set(
            &mut conditions,
            types::READY,
            status::TRUE,
            reasons::SUCCEEDED,
            "ok",
            Some(2),
        );
        assert!(is_ready(&conditions));
        remove(&mut conditions, types::READY);
        assert!(get(&conditions, types::READY).is_none());
    }
}
