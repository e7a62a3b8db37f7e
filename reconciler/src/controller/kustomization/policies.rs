//! Policies around the render: the process's policy host, started on first use, and the
//! findings a render reports without failing (warnings, ignored failures, audit violations).

use std::sync::{Arc, OnceLock};

use kube::runtime::events::EventType;
use tracing::warn;

use kube::ResourceExt;

use super::status::Run;
use crate::controller::render::{self, Lookups, RenderError, Rendered};
use crate::policy::{HostConfig, PolicyError, PolicyHost, Violation};

/// The process's policy host, started on first use: a reconciler whose Kustomizations use no
/// policies never starts the wasm engine (which keeps an idle reconciler small).
#[derive(Clone)]
pub struct PolicyEngine(Arc<PolicyEngineState>);

struct PolicyEngineState {
    config: HostConfig,
    host: OnceLock<Result<PolicyHost, PolicyEngineError>>,
    /// The cluster's kinds for the tenancy check, shared by every reconcile.
    scopes: OnceLock<crate::policy::ClusterScopes>,
}

impl PolicyEngine {
    /// Starts the host with `config` when a Kustomization first needs it.
    pub fn on_first_use(config: HostConfig) -> Self {
        Self(Arc::new(PolicyEngineState {
            config,
            host: OnceLock::new(),
            scopes: OnceLock::new(),
        }))
    }

    /// The process's table of the cluster's kinds (read through `client` the first time).
    pub fn cluster_scopes(&self, client: &kube::Client) -> crate::policy::ClusterScopes {
        self.0
            .scopes
            .get_or_init(|| crate::policy::ClusterScopes::new(client.clone()))
            .clone()
    }

    /// The host; blocking when it starts now (call from a blocking task). A failed start is
    /// remembered: the same error is returned to every later caller.
    pub fn get(&self) -> Result<PolicyHost, PolicyEngineError> {
        self.0
            .host
            .get_or_init(|| {
                PolicyHost::new(self.0.config.clone()).map_err(|e| {
                    tracing::error!(error = %e, "the policy host could not start");
                    PolicyEngineError::Start(e)
                })
            })
            .clone()
    }
}

impl From<Option<PolicyHost>> for PolicyEngine {
    /// An already started host (`None`: one that failed to start).
    fn from(host: Option<PolicyHost>) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(host.ok_or(PolicyEngineError::Unavailable));
        Self(Arc::new(PolicyEngineState {
            config: HostConfig::default(),
            host: cell,
            scopes: OnceLock::new(),
        }))
    }
}

/// Why the policy host is not available.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PolicyEngineError {
    /// It failed to start (the cause stays the same for the life of the process).
    #[error(transparent)]
    Start(PolicyError),
    /// It was handed over as failed, its cause logged where it failed.
    #[error("it failed to start (see the log)")]
    Unavailable,
}

impl Run<'_> {
    /// Records in every ClusterPolicy's status what this render's policy stage found: whether
    /// the policy selected this Kustomization, and its violations. Renders that stopped before
    /// the policies ran (build or substitution failures) change nothing; a failure to record is
    /// only logged.
    pub(super) async fn record_cluster_policy_status(
        &self,
        lookups: &Lookups<'_>,
        revision: &str,
        rendered: &Result<Rendered, RenderError>,
    ) {
        let reported: Vec<crate::policy::Violation> = match rendered {
            Ok(r) => r.warnings.iter().chain(&r.audit).cloned().collect(),
            Err(RenderError::Policy { violations, .. }) => violations.clone(),
            Err(RenderError::Plan(_)) => Vec::new(),
            Err(
                RenderError::Build(_)
                | RenderError::BuildTask(_)
                | RenderError::Substitute(_)
                | RenderError::DecryptionKeys(_)
                | RenderError::Decrypt(_)
                | RenderError::PolicyHost(_),
            ) => return,
        };
        let selected =
            match render::selected_cluster_policies(self.ks, &self.namespace, lookups).await {
                Ok(policies) => policies.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "reading ClusterPolicies to record their status");
                    return;
                }
            };
        crate::controller::clusterpolicy_status::record(
            &self.ctx.client,
            Some(&self.ctx.cluster_policies),
            &format!("{}/{}", self.namespace, self.name),
            revision,
            &selected,
            &reported,
        )
        .await;
    }

    /// Policy warnings, ignored failures and audit findings: logged, counted, kept in status
    /// (bounded) and published as a Warning event when they changed since the last reconcile.
    pub(super) async fn report_policy_findings(&mut self, rendered: &Rendered) {
        for warning in &rendered.warnings {
            warn!(%warning, "policy warning");
        }
        for ignored in &rendered.ignored_failures {
            warn!(error = %ignored, "policy failed and was ignored");
        }
        for finding in &rendered.audit {
            self.ctx
                .metrics
                .count_audit_violation(&self.namespace, &self.name, &finding.policy);
        }
        let findings = audit_summary(&rendered.audit, &rendered.ignored_failures);
        if findings != self.status.policy_audit {
            if !findings.is_empty() {
                let note = format!(
                    "policy audit: {} finding(s): {}",
                    rendered.audit.len() + rendered.ignored_failures.len(),
                    findings.join("; ")
                );
                self.ctx
                    .events
                    .publish(
                        self.ks,
                        EventType::Warning,
                        AUDIT_REASON,
                        super::ACTION,
                        &note,
                    )
                    .await;
            }
            self.status.policy_audit = findings;
        }
    }
}

/// Event reason of audit findings (never a condition reason: an audit does not fail).
pub const AUDIT_REASON: &str = "PolicyAudit";

/// Entries of `status.policyAudit` kept at most; the last one counts the rest.
pub const MAX_AUDIT_IN_STATUS: usize = 20;

/// Audit findings and ignored failures as bounded status lines.
fn audit_summary(findings: &[Violation], failures: &[String]) -> Vec<String> {
    let all: Vec<String> = findings
        .iter()
        .map(ToString::to_string)
        .chain(failures.iter().cloned())
        .collect();
    if all.len() <= MAX_AUDIT_IN_STATUS {
        return all;
    }
    let mut kept: Vec<String> = all[..MAX_AUDIT_IN_STATUS - 1].to_vec();
    kept.push(format!(
        "... and {} more",
        all.len() - (MAX_AUDIT_IN_STATUS - 1)
    ));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_findings_in_status_are_bounded() {
        let failures: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
        let kept = audit_summary(&[], &failures);
        assert_eq!(kept.len(), MAX_AUDIT_IN_STATUS);
        assert_eq!(kept[MAX_AUDIT_IN_STATUS - 1], "... and 31 more");
        assert_eq!(audit_summary(&[], &failures[..3]).len(), 3);
    }
}
