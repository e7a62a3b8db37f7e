//! One reconcile of a GitRepository: is a fetch due (the schedule, the failure backoff, a
//! remembered refusal), the fetch itself under a concurrency slot, and what it leaves for the
//! next reconcile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::status::{finish_failure, finish_success, mark_progressing, write_status};
use super::{Context, ControllerError, Key, Running, Schedule};
use crate::api::conditions::meta;
use crate::api::{GitRepository, GitRepositoryStatus, duration};
use crate::controller::common::{self, ReconcileTimer};
use crate::source::credentials::Credentials;
use crate::source::git::{Refused, fetch_async};
use crate::source::reference::RefRequest;
use crate::source::remote;
use crate::source::{
    CancelCause, FetchControl, FetchOutcome, FetchRequest, SourceError, SourceLimits,
};

/// Delay after `failures` consecutive failures: 2 s doubling, at most the interval and at most
/// 5 minutes.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let exp = Duration::from_secs(2).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    exp.min(interval.max(Duration::from_secs(2)))
        .min(Duration::from_secs(300))
}

pub(super) async fn reconcile(
    repo: Arc<GitRepository>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
    timer: &mut ReconcileTimer,
) -> Result<Action, ControllerError> {
    timer.result(common::RESULT_SKIPPED);
    if repo.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if repo.spec.suspend == Some(true) {
        tracing::debug!("suspended");
        return Ok(Action::await_change());
    }
    let generation = repo.meta().generation;
    let old_status = repo.status.clone().unwrap_or_default();
    let requested_at = repo
        .annotations()
        .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();

    // An unusable interval or timeout can only be fixed in the spec: retried after the
    // interval (5 minutes when the interval itself is unusable).
    let parsed = duration::parse(&repo.spec.interval)
        .map_err(|e| (format!("spec.interval: {e}"), Duration::from_secs(300)))
        .and_then(|interval| match repo.spec.timeout.as_deref() {
            None => Ok((interval, ctx.config.default_timeout)),
            Some(text) => duration::parse(text)
                .map(|timeout| (interval, timeout))
                .map_err(|e| (format!("spec.timeout: {e}"), interval)),
        });
    let (interval, timeout) = match parsed {
        Ok(durations) => durations,
        Err((reason, retry)) => {
            let err = SourceError::InvalidRef { reason };
            timer.result(err.reason());
            return finish_failure(
                &repo,
                &ctx,
                old_status,
                err,
                generation,
                requested_at,
                retry,
            )
            .await;
        }
    };

    // Is a fetch due?
    let key = (namespace.clone(), name.clone());
    let artifact_present = old_status
        .artifact
        .as_ref()
        .is_some_and(|a| ctx.storage.exists(&a.path));
    let remembered = ctx.schedule.lock().ok().and_then(|s| s.get(&key).cloned());
    if let Some(schedule) = &remembered {
        let wait = if schedule.failures > 0 {
            backoff(schedule.failures, interval)
        } else {
            interval
        };
        let elapsed = schedule.last_attempt.elapsed();
        let spec_unchanged =
            schedule.generation == generation && old_status.observed_generation == generation;
        let request_handled = requested_at == old_status.last_handled_reconcile_at;
        let artifact_ok = artifact_present || schedule.failures > 0;
        if spec_unchanged && request_handled && artifact_ok && elapsed < wait {
            return Ok(Action::requeue(wait - elapsed));
        }
    }

    // A fetch that changes what the object shows (first artifact, new spec, requested
    // reconcile) is announced before it starts, so watchers see it in progress; a periodic
    // poll or a retry after a failure writes nothing until it has news (Ready keeps the
    // failure while the backoff retries run).
    let failures = remembered.as_ref().map(|s| s.failures).unwrap_or(0);
    let mut old_status = old_status;
    let progressing = (!artifact_present && failures == 0)
        || old_status.observed_generation != generation
        || requested_at != old_status.last_handled_reconcile_at;
    timer.result(common::RESULT_ERROR);
    if progressing {
        let mut marked = old_status.clone();
        mark_progressing(&mut marked, &repo.spec.url, generation);
        write_status(&repo, &ctx, &old_status, &marked).await?;
        old_status = marked;
    }

    let started = Instant::now();
    let limits = ctx
        .config
        .limits
        .tightened(|limit| repo.spec.limits.as_ref().and_then(|l| l.get(limit)));
    // A refusal holds for the spec and the limits it was made under.
    let refused = remembered
        .as_ref()
        .filter(|s| s.generation == generation)
        .and_then(|s| s.refused.clone())
        .filter(|(_, under)| *under == limits);
    let result = fetch_once(
        &repo,
        &ctx,
        &key,
        &old_status,
        artifact_present,
        timeout,
        limits.clone(),
        refused.as_ref().map(|(r, _)| r.clone()),
    )
    .await;
    let mut schedule = Schedule {
        generation,
        last_attempt: started,
        failures: 0,
        refused: None,
    };
    if let Err(err) = &result {
        if let Some(revision) = err.refused_revision() {
            schedule.refused = Some((
                Refused {
                    revision: revision.to_owned(),
                    cause: err.to_string(),
                },
                limits,
            ));
        } else if matches!(err, SourceError::StillRefused { .. }) {
            schedule.refused = refused;
        }
        let cause = match err {
            SourceError::LimitExceeded { exceeded, .. } => Some(exceeded.limit.label()),
            SourceError::Timeout(_) => Some("timeout"),
            SourceError::Cancelled(_) => Some("cancelled"),
            _ => None,
        };
        if let Some(cause) = cause {
            ctx.metrics.count_aborted_fetch(cause);
        }
    }
    match result {
        Ok(outcome) => {
            if let Ok(mut s) = ctx.schedule.lock() {
                s.insert(key, schedule);
            }
            finish_success(&repo, &ctx, old_status, outcome, generation, requested_at).await?;
            timer.result(common::RESULT_SUCCESS);
            Ok(Action::requeue(common::jittered(interval)))
        }
        Err(SourceError::Cancelled(cause)) => {
            // The next reconcile (new spec), nothing (deleted) or the next process (shutdown)
            // takes over: the status keeps what it said.
            tracing::info!(%cause, "fetch cancelled");
            timer.result(SourceError::Cancelled(cause).reason());
            schedule.failures = failures;
            if cause != CancelCause::Deleted
                && let Ok(mut s) = ctx.schedule.lock()
            {
                s.insert(key, schedule);
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Err(err) => {
            schedule.failures = failures.saturating_add(1);
            let retry = backoff(schedule.failures, interval);
            timer.result(err.reason());
            if let Ok(mut s) = ctx.schedule.lock() {
                s.insert(key, schedule);
            }
            finish_failure(
                &repo,
                &ctx,
                old_status,
                err,
                generation,
                requested_at,
                retry,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)] // One call site; the reconcile's state travels in.
async fn fetch_once(
    repo: &GitRepository,
    ctx: &Arc<Context>,
    key: &Key,
    old_status: &GitRepositoryStatus,
    artifact_present: bool,
    timeout: Duration,
    limits: SourceLimits,
    refused: Option<Refused>,
) -> Result<FetchOutcome, SourceError> {
    let (namespace, name) = (key.0.as_str(), key.1.as_str());
    let spec = &repo.spec;
    let url = remote::validate(
        &spec.url,
        spec.insecure.unwrap_or(false),
        ctx.config.allow_file_urls,
    )?;
    if url.scheme == remote::Scheme::Ssh && spec.secret_ref.is_none() {
        // Only a spec change can fix this: host keys are always verified.
        return Err(SourceError::Unsupported(
            "ssh:// URLs need spec.secretRef: a Secret with keys 'identity' (private key) and \
             'known_hosts' (the server's host key)"
                .to_owned(),
        ));
    }
    let reference = RefRequest::from_spec(spec.reference.as_ref())?;
    let credentials = match &spec.secret_ref {
        None => Credentials::default(),
        Some(secret_ref) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let secret = secrets
                .get_opt(&secret_ref.name)
                .await
                .map_err(|e| SourceError::Credentials {
                    secret: secret_ref.name.clone(),
                    reason: format!("cannot read the Secret: {e}"),
                })?
                .ok_or_else(|| SourceError::Credentials {
                    secret: secret_ref.name.clone(),
                    reason: "Secret not found".to_owned(),
                })?;
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            Credentials::from_secret_data(&secret_ref.name, &data)?
        }
    };
    // Skip the download only when the stored artifact was built from this very spec.
    let last_revision = match &old_status.artifact {
        Some(artifact)
            if artifact_present && old_status.observed_generation == repo.meta().generation =>
        {
            Some(artifact.revision.clone())
        }
        _ => None,
    };
    let request = FetchRequest {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        url,
        reference,
        credentials,
        ignore: spec.ignore.clone(),
        last_revision,
        timeout,
        limits,
        refused,
        keep_artifacts: ctx.config.keep_artifacts,
    };
    let permit = ctx
        .fetch_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| SourceError::Cancelled(CancelCause::Shutdown))?;
    let control = FetchControl::new();
    if let Ok(mut running) = ctx.running.lock() {
        running.insert(
            key.clone(),
            Running {
                generation: repo.meta().generation,
                control: control.clone(),
            },
        );
    }
    let result = fetch_async(ctx.storage.clone(), request, control, permit).await;
    if let Ok(mut running) = ctx.running.lock() {
        running.remove(key);
    }
    if matches!(result, Ok(FetchOutcome::Stored { .. })) {
        let storage_ctx = ctx.clone();
        let cap = ctx.config.max_storage_bytes;
        let _ = tokio::task::spawn_blocking(move || {
            let outcome = storage_ctx.storage.enforce_cap(cap);
            for evicted in &outcome.evicted {
                tracing::info!(cache = %evicted, "evicted a git cache to stay under the storage cap");
            }
            storage_ctx
                .metrics
                .source_storage_bytes
                .set(i64::try_from(outcome.bytes).unwrap_or(i64::MAX));
        })
        .await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, hour), Duration::from_secs(2));
        assert_eq!(backoff(2, hour), Duration::from_secs(4));
        assert_eq!(backoff(5, hour), Duration::from_secs(32));
        assert_eq!(backoff(30, hour), Duration::from_secs(300));
        assert_eq!(
            backoff(10, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }
}
