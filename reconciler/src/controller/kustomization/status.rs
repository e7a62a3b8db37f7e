//! The status of one reconcile: the failure of a stage and what it means for the conditions,
//! the success, and the writes (server-side apply, only when something changed).

use kube::api::Api;

use super::Context;
use super::ReconcileError;
use crate::api::conditions::{self, reasons, status as cstatus, types};
use crate::api::{Kustomization, KustomizationStatus};
use crate::apply::ignore::IgnoreRuleError;
use crate::apply::{ApplyError, HealthError};
use crate::controller::common;
use crate::controller::fetch::FetchError;
use crate::controller::render::RenderError;

/// A failed stage: its reason is the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The spec cannot work as written (stalls until it changes).
    #[error("{0}")]
    InvalidSpec(String),
    /// The source is missing or has no ready artifact.
    #[error("{0}")]
    SourceNotReady(String),
    /// `spec.ignore` has a rule that cannot be used (InvalidSpec).
    #[error(transparent)]
    Drift(#[from] IgnoreRuleError),
    /// Reading the source or a dependency failed; `reason` is the stage's.
    #[error("{object}: {source}")]
    Read {
        /// The object read, `Kind namespace/name`.
        object: String,
        /// The condition reason of the stage that read it.
        reason: &'static str,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// A `dependsOn` Kustomization is missing or not Ready at its latest generation.
    #[error("{0}")]
    DependencyNotReady(String),
    /// The `dependsOn` chain leads back to this Kustomization (the cycle, joined by `->`).
    #[error("dependency cycle: {0}")]
    DependencyCycle(String),
    /// Downloading, verifying or unpacking the source artifact failed.
    #[error(transparent)]
    Artifact(#[from] FetchError),
    /// Build, substitution, policy or plan (see [`RenderError::reason`]).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The server-side apply of a stage failed; nothing of that stage was written.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Deleting objects that left the inventory failed.
    #[error("{0}")]
    Prune(String),
    /// An object failed, did not become healthy in time, or could not be read.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// Recording the stage in status failed (reported as ApplyFailed: the apply cannot be
    /// allowed to run ahead of the pending inventory it records).
    #[error(transparent)]
    Status(#[from] ReconcileError),
    /// The client acting as the Kustomization's ServiceAccount could not be built.
    #[error("Kustomization {object}: cannot build the impersonating client: {source}")]
    Impersonation {
        /// The Kustomization, `namespace/name`.
        object: String,
        /// Why the client could not be built.
        #[source]
        source: kube::Error,
    },
}

impl StageError {
    /// The condition reason of the stage that failed.
    pub fn reason(&self) -> &'static str {
        match self {
            StageError::InvalidSpec(_) | StageError::Drift(_) => reasons::INVALID_SPEC,
            StageError::Read { reason, .. } => reason,
            StageError::SourceNotReady(_) => reasons::SOURCE_NOT_READY,
            StageError::DependencyNotReady(_) | StageError::DependencyCycle(_) => {
                reasons::DEPENDENCY_NOT_READY
            }
            StageError::Artifact(_) => reasons::ARTIFACT_FAILED,
            StageError::Render(e) => e.reason(),
            StageError::Apply(_) | StageError::Status(_) | StageError::Impersonation { .. } => {
                reasons::APPLY_FAILED
            }
            StageError::Prune(_) => reasons::PRUNE_FAILED,
            StageError::Health(_) => reasons::HEALTH_CHECK_FAILED,
        }
    }

    /// True when retrying cannot help without a change of the spec.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            StageError::InvalidSpec(_) | StageError::Drift(_) | StageError::DependencyCycle(_)
        ) || matches!(self, StageError::Render(e) if e.is_stalled())
    }
}

/// One reconcile of one Kustomization, with its status being built.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a Context,
    pub(super) ks: &'a Kustomization,
    pub(super) namespace: String,
    pub(super) name: String,
    /// The status as this reconcile wants it.
    pub(super) status: KustomizationStatus,
    /// The status as last written (or read): a write happens only when `status` differs.
    written: KustomizationStatus,
    api: Api<Kustomization>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        ks: &'a Kustomization,
        namespace: String,
        name: String,
    ) -> Self {
        let status = ks.status.clone().unwrap_or_default();
        Run {
            ctx,
            ks,
            api: Api::namespaced(ctx.client.clone(), &namespace),
            namespace,
            name,
            written: status.clone(),
            status,
        }
    }

    /// Writes the status when it changed since the last write.
    pub(super) async fn write_status(&mut self) -> Result<(), ReconcileError> {
        common::write_status(&self.api, self.ks, &self.written, &self.status)
            .await
            .map_err(|source| ReconcileError::Status {
                object: format!("{}/{}", self.namespace, self.name),
                source,
            })?;
        self.written = self.status.clone();
        Ok(())
    }

    /// Records the stage being worked on (Reconciling's message) in status right away.
    pub(super) async fn report_stage(&mut self, message: String) -> Result<(), StageError> {
        self.progressing(message);
        Ok(self.write_status().await?)
    }

    pub(super) fn progressing(&mut self, message: String) {
        let generation = self.ks.metadata.generation;
        conditions::set(
            &mut self.status.conditions,
            types::RECONCILING,
            cstatus::TRUE,
            reasons::PROGRESSING,
            message.clone(),
            generation,
        );
        if !conditions::is_ready(&self.status.conditions) {
            conditions::set(
                &mut self.status.conditions,
                types::READY,
                cstatus::UNKNOWN,
                reasons::PROGRESSING,
                message,
                generation,
            );
        }
    }

    /// Ready=True for `revision`, Healthy as the health stage found it, no Reconciling or
    /// Stalled; returns the Ready message.
    pub(super) fn record_success(&mut self, revision: &str, healthy: Option<bool>) -> String {
        let generation = self.ks.metadata.generation;
        let message = format!("Applied revision: {revision}");
        let c = &mut self.status.conditions;
        conditions::set(
            c,
            types::READY,
            cstatus::TRUE,
            reasons::RECONCILIATION_SUCCEEDED,
            message.clone(),
            generation,
        );
        conditions::remove(c, types::RECONCILING);
        conditions::remove(c, types::STALLED);
        match healthy {
            Some(_) => conditions::set(
                c,
                types::HEALTHY,
                cstatus::TRUE,
                reasons::SUCCEEDED,
                "Health check passed",
                generation,
            ),
            None => conditions::remove(c, types::HEALTHY),
        }
        self.status.last_applied_revision = Some(revision.to_owned());
        self.status.observed_generation = generation;
        message
    }

    /// Ready=False with the stage's reason; Stalled when retrying cannot help, else
    /// Reconciling (ProgressingWithRetry).
    pub(super) fn record_failure(&mut self, e: &StageError) {
        let generation = self.ks.metadata.generation;
        let message = e.to_string();
        conditions::set(
            &mut self.status.conditions,
            types::READY,
            cstatus::FALSE,
            e.reason(),
            message.clone(),
            generation,
        );
        if matches!(e, StageError::Health(_)) {
            conditions::set(
                &mut self.status.conditions,
                types::HEALTHY,
                cstatus::FALSE,
                e.reason(),
                message.clone(),
                generation,
            );
        }
        if e.is_stalled() {
            conditions::set(
                &mut self.status.conditions,
                types::STALLED,
                cstatus::TRUE,
                e.reason(),
                message,
                generation,
            );
            conditions::remove(&mut self.status.conditions, types::RECONCILING);
            self.status.observed_generation = generation;
        } else {
            conditions::remove(&mut self.status.conditions, types::STALLED);
            conditions::set(
                &mut self.status.conditions,
                types::RECONCILING,
                cstatus::TRUE,
                reasons::PROGRESSING_WITH_RETRY,
                format!("retrying after {}: {message}", e.reason()),
                generation,
            );
            self.status.observed_generation = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_errors_know_their_reason() {
        assert_eq!(
            StageError::Render(RenderError::Substitute(
                crate::controller::render::SubstituteError::NotFound { what: "x".into() }
            ))
            .reason(),
            reasons::BUILD_FAILED
        );
        assert!(StageError::DependencyCycle("a -> a".into()).is_stalled());
        assert!(!StageError::SourceNotReady("x".into()).is_stalled());
        assert_eq!(
            StageError::Prune("x".into()).reason(),
            reasons::PRUNE_FAILED
        );
    }
}
