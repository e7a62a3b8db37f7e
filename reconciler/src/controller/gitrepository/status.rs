//! The status of a GitRepository after a fetch: conditions, the artifact, the write (server-side
//! apply, only on change), the Ready metric and the event.

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;

use super::{Context, ControllerError, KIND};
use crate::api::conditions::{self, reasons, status, types};
use crate::api::{Artifact, GitRepository, GitRepositoryStatus};
use crate::controller::common;
use crate::source::remote;
use crate::source::{FetchOutcome, SourceError};

/// The action of every event of this controller.
const ACTION: &str = "Fetch";
/// The reason of the event for a new revision.
const NEW_ARTIFACT: &str = "NewArtifact";

/// Reconciling=True (Progressing) for a fetch about to start; Ready=Unknown unless the object
/// is Ready already (its artifact stays served while the fetch runs).
pub(super) fn mark_progressing(
    repo_status: &mut GitRepositoryStatus,
    url: &str,
    generation: Option<i64>,
) {
    let message = format!("fetching from '{}'", remote::redact_url(url));
    let c = &mut repo_status.conditions;
    conditions::set(
        c,
        types::RECONCILING,
        status::TRUE,
        reasons::PROGRESSING,
        &message,
        generation,
    );
    if !conditions::is_ready(c) {
        conditions::set(
            c,
            types::READY,
            status::UNKNOWN,
            reasons::PROGRESSING,
            &message,
            generation,
        );
    }
}

pub(super) async fn finish_success(
    repo: &GitRepository,
    ctx: &Context,
    old_status: GitRepositoryStatus,
    outcome: FetchOutcome,
    generation: Option<i64>,
    requested_at: Option<String>,
) -> Result<(), ControllerError> {
    let mut new_status = old_status.clone();
    let revision = outcome.revision().to_owned();
    let mut event = None;
    if let FetchOutcome::Stored { artifact, .. } = &outcome {
        // The same artifact stored again (same revision and content) was not updated: it keeps
        // the time it was.
        let last_update_time = old_status
            .artifact
            .as_ref()
            .filter(|a| {
                a.revision == revision
                    && a.digest == artifact.packed.digest
                    && a.path == artifact.path
            })
            .map(|a| a.last_update_time.clone())
            .unwrap_or_else(|| jiff::Timestamp::now().to_string());
        new_status.artifact = Some(Artifact {
            revision: revision.clone(),
            digest: artifact.packed.digest.clone(),
            size: i64::try_from(artifact.packed.size).unwrap_or(i64::MAX),
            url: ctx.config.artifact_url(&artifact.path),
            path: artifact.path.clone(),
            last_update_time,
        });
        let changed_revision = old_status.artifact.as_ref().map(|a| &a.revision) != Some(&revision);
        if changed_revision {
            event = Some(format!("stored artifact for revision '{revision}'"));
        }
    }
    let mut message = format!("stored artifact for revision '{revision}'");
    match &outcome {
        FetchOutcome::Stored { stats, .. } => {
            if let Some(note) = stats.dropped_note() {
                message.push_str(&format!("; {note}"));
            }
        }
        // Unchanged: what the stored artifact's message said still holds.
        FetchOutcome::Unchanged { .. } => {
            if let Some(ready) = conditions::get(&old_status.conditions, types::READY)
                && ready.status == status::TRUE
                && ready.message.starts_with(&message)
            {
                message = ready.message.clone();
            }
        }
    }
    let c = &mut new_status.conditions;
    conditions::set(
        c,
        types::READY,
        status::TRUE,
        reasons::SUCCEEDED,
        &message,
        generation,
    );
    conditions::set(
        c,
        types::ARTIFACT_IN_STORAGE,
        status::TRUE,
        reasons::SUCCEEDED,
        &message,
        generation,
    );
    conditions::remove(c, types::FETCH_FAILED);
    conditions::remove(c, types::RECONCILING);
    conditions::remove(c, types::STALLED);
    new_status.observed_generation = generation;
    new_status.last_handled_reconcile_at = requested_at;
    write_status(repo, ctx, &old_status, &new_status).await?;
    if let Some(note) = event {
        tracing::info!(%revision, "stored new artifact");
        ctx.events
            .publish_about(
                repo,
                EventType::Normal,
                NEW_ARTIFACT,
                ACTION,
                &note,
                Some(&revision),
            )
            .await;
    }
    Ok(())
}

pub(super) async fn finish_failure(
    repo: &GitRepository,
    ctx: &Context,
    old_status: GitRepositoryStatus,
    err: SourceError,
    generation: Option<i64>,
    requested_at: Option<String>,
    retry: Duration,
) -> Result<Action, ControllerError> {
    let reason = err.reason();
    let message = format!("{err}");
    tracing::warn!(namespace = ?repo.namespace(), name = %repo.name_any(), %reason, error = %message, "fetch failed");
    let mut new_status = old_status.clone();
    let c = &mut new_status.conditions;
    conditions::set(c, types::READY, status::FALSE, reason, &message, generation);
    conditions::set(
        c,
        types::FETCH_FAILED,
        status::TRUE,
        reason,
        &message,
        generation,
    );
    conditions::remove(c, types::RECONCILING);
    if err.is_stalled() {
        conditions::set(
            c,
            types::STALLED,
            status::TRUE,
            reason,
            &message,
            generation,
        );
    } else {
        conditions::remove(c, types::STALLED);
    }
    // The last good artifact stays: ArtifactInStorage keeps describing it.
    if new_status.artifact.is_none() {
        conditions::set(
            c,
            types::ARTIFACT_IN_STORAGE,
            status::FALSE,
            reason,
            "no artifact stored yet",
            generation,
        );
    }
    new_status.observed_generation = generation;
    new_status.last_handled_reconcile_at = requested_at;
    let changed = conditions::get(&old_status.conditions, types::READY)
        .is_none_or(|c| c.reason != reason || c.message != message);
    write_status(repo, ctx, &old_status, &new_status).await?;
    // Once per failure: a retry failing the same way adds no event.
    if changed {
        ctx.events
            .publish(repo, EventType::Warning, reason, ACTION, &message)
            .await;
    }
    if err.is_stalled() {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(retry))
    }
}

/// Writes `new` when it differs from `old` (see [`common::write_status`]) and records the
/// Ready gauge.
pub(super) async fn write_status(
    repo: &GitRepository,
    ctx: &Context,
    old: &GitRepositoryStatus,
    new: &GitRepositoryStatus,
) -> Result<(), ControllerError> {
    let namespace = repo.namespace().ok_or(ControllerError::NoNamespace)?;
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &namespace);
    common::write_status(&api, repo, old, new).await?;
    let ready = conditions::get(&new.conditions, types::READY).map(|c| c.status.as_str());
    ctx.metrics
        .record_ready(KIND, &namespace, &repo.name_any(), ready);
    Ok(())
}
