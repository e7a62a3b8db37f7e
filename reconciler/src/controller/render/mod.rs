//! The render of a Kustomization, shared by the controller and the CLI (`build`, `diff`):
//!
//! artifact tree → build (kustomize; SOPS-encrypted generator and patch files decrypted as
//! they are read) → decryption of SOPS-encrypted objects (`spec.decryption`, in memory) →
//! postBuild substitutions → policy pipeline
//! (`target-namespace` for `spec.targetNamespace`, the ClusterPolicies that select the
//! Kustomization, then `spec.policies`) → audit steps → [`apply::plan`] (owner labels,
//! intent digest, scope of every kind).
//!
//! Everything outside the artifact comes through [`Lookups`]: from the cluster (the controller,
//! the CLI online) or from local files (the CLI offline, where nothing dials a cluster). The
//! rules are the same either way, so `build` prints what the reconciler applies.
//!
//! Substitution order (Flux's): `substituteFrom` entries in order, a later entry overriding an
//! earlier one on a common key; inline `substitute` overrides them all.
//!
//! Audit steps (`mode: Audit`, Kubewarden's monitor mode) run after the enforcing pipeline, on
//! its output: their violations (of any severity) and failures are reported, never deny, and
//! whatever their transforms return is discarded.
//!
//! Modules: `substitute` (postBuild variables), `decryption` (the keys of `spec.decryption`)
//! and `policies` (which steps run, with which module); this module holds the inputs, the outputs and the order of the stages.

use std::path::Path;

use kube::runtime::reflector::Store;
use serde_json::Value;

use super::kustomization::{PolicyEngine, PolicyEngineError};
use crate::api::conditions::reasons;
use crate::api::{ClusterPolicy, FailurePolicy, Kustomization};
use crate::apply::{self, ApplyError, Owner, Plan, Resolver, Scopes};
use crate::build::BuildError;
use crate::policy::{PipelineError, PolicyContext, PolicyStep, Severity, Tenancy, Violation};
use crate::sops::decryptor::DecryptError;

mod decryption;
mod policies;
mod substitute;

pub use decryption::{DecryptionKeysError, Keys};
pub(crate) use policies::cluster_policies;
pub use policies::selected_cluster_policies;
pub use substitute::{DataProblem, SubstituteError};

/// The name of the step that implements `spec.targetNamespace`, and the built-in it runs.
pub const TARGET_NAMESPACE_STEP: &str = "target-namespace";

/// The label the apiserver puts on every Namespace with its own name; offline, the only label
/// a namespace selector can see unless a Namespace object is given.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The cluster, as the reconciler sees it.
#[derive(Clone, Copy)]
pub struct Cluster<'a> {
    /// Reads and discovery done with the Kustomization's identity (the impersonated
    /// ServiceAccount in the controller).
    pub tenant: &'a kube::Client,
    /// Reads done with the reconciler's own identity: ClusterPolicies, Namespaces, the modules
    /// of ClusterPolicies, the cluster's discovery data for the tenancy check.
    pub admin: &'a kube::Client,
    /// The discovery cache for the plan.
    pub resolver: &'a Resolver,
    /// The reconciler's watch-backed copy of the ClusterPolicies; `None` lists them.
    pub cluster_policies: Option<&'a Store<ClusterPolicy>>,
}

/// Where everything outside the artifact comes from. A `Some` file source wins over the
/// cluster; with no cluster, what no file provides is absent.
#[derive(Clone, Default)]
pub struct Lookups<'a> {
    /// `None`: offline, nothing dials.
    pub cluster: Option<Cluster<'a>>,
    /// ConfigMaps and Secrets standing for the cluster's in `postBuild.substituteFrom`.
    pub substitute_from: Option<Vec<Value>>,
    /// The ClusterPolicies (and, optionally, Namespace objects whose labels namespace selectors
    /// see) standing for the cluster's.
    pub cluster_policies: Option<Vec<Value>>,
    /// Flux's dry-run rule: a `substituteFrom` object that cannot be looked up is skipped (with
    /// a notice) instead of failing the render.
    pub skip_missing_substitutions: bool,
    /// Where `spec.decryption` finds its keys (the default: nowhere, values are masked).
    pub keys: Keys,
}

/// What is rendered and how.
pub struct RenderInput<'a> {
    /// The Kustomization whose spec says what to build and which policies run.
    pub kustomization: &'a Kustomization,
    /// Root of the artifact (module paths and kustomize's load restrictor are relative to it).
    pub root: &'a Path,
    /// Directory to build, relative to `root`; `None` uses `spec.path`.
    pub path: Option<String>,
    /// Revision of the artifact (empty for a local directory).
    pub revision: &'a str,
    /// The reconciler's `--default-service-account` (decides whether the Kustomization is a
    /// tenant for the tenancy check).
    pub default_service_account: Option<&'a str>,
    /// Handed to the policies (`context.dry-run`).
    pub dry_run: bool,
}

/// A render that succeeded.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The objects exactly as they will be applied.
    pub plan: Plan,
    /// Violations of severity warning of the enforcing steps.
    pub warnings: Vec<Violation>,
    /// Violations found by audit steps (never deny).
    pub audit: Vec<Violation>,
    /// Failures of audit steps and of steps with `failurePolicy: Ignore`, with why.
    pub ignored_failures: Vec<String>,
    /// Other things the caller should tell (a skipped substitution source in a dry run).
    pub notices: Vec<String>,
}

/// Why a render produced nothing; each variant is one stage's failure reason.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The kustomize build failed (BuildFailed).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The build task died (BuildFailed).
    #[error("build task failed: {0}")]
    BuildTask(#[from] tokio::task::JoinError),
    /// The substitution sources could not be read (BuildFailed).
    #[error(transparent)]
    Substitute(#[from] SubstituteError),
    /// The keys of `spec.decryption` could not be read (BuildFailed).
    #[error(transparent)]
    DecryptionKeys(#[from] DecryptionKeysError),
    /// An object of the build could not be decrypted (BuildFailed).
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The policy stage denied or failed (PolicyDenied / PolicyFailed).
    #[error("{message}")]
    Policy {
        /// The condition reason: PolicyDenied or PolicyFailed.
        reason: &'static str,
        /// The message for the Ready condition (decrypted values redacted).
        message: String,
        /// Retrying the same spec and revision cannot help.
        stalled: bool,
        /// The violations of a denial (empty for a failure).
        violations: Vec<Violation>,
    },
    /// The policy host is not available (PolicyFailed; retried).
    #[error("the policy host could not be started: {0}")]
    PolicyHost(#[from] PolicyEngineError),
    /// The objects cannot be planned: invalid, duplicate, unknown kind (ApplyFailed).
    #[error(transparent)]
    Plan(#[from] ApplyError),
}

impl RenderError {
    /// The condition reason: BuildFailed, PolicyDenied, PolicyFailed or ApplyFailed.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Build(_)
            | RenderError::BuildTask(_)
            | RenderError::Substitute(_)
            | RenderError::DecryptionKeys(_)
            | RenderError::Decrypt(_) => reasons::BUILD_FAILED,
            RenderError::Policy { reason, .. } => reason,
            RenderError::PolicyHost(_) => reasons::POLICY_FAILED,
            RenderError::Plan(_) => reasons::APPLY_FAILED,
        }
    }

    /// True when retrying the same spec and revision cannot help (a denial, a bad module, a
    /// policy that fails the same way again): the message names the policy.
    pub fn is_stalled(&self) -> bool {
        matches!(self, RenderError::Policy { stalled: true, .. })
    }
}

fn policy_failed(message: String) -> RenderError {
    RenderError::Policy {
        reason: reasons::POLICY_FAILED,
        message,
        stalled: false,
        violations: Vec::new(),
    }
}

/// Renders `input` with `lookups`; the policy host of `engine` is started only when a step
/// needs it.
pub async fn render(
    input: &RenderInput<'_>,
    lookups: &Lookups<'_>,
    engine: &PolicyEngine,
) -> Result<Rendered, RenderError> {
    let ks = input.kustomization;
    let namespace = ks.metadata.namespace.clone().unwrap_or_default();
    let mut rendered = Rendered::default();

    let substitute =
        substitute::substitutions(ks, &namespace, lookups, &mut rendered.notices).await?;
    let mut options = crate::build::BuildOptions::from_spec(&ks.spec);
    if let Some(path) = &input.path {
        options.path = path.clone();
    }
    options.substitute = substitute;
    let decryptor = decryption::decryptor(ks, &namespace, lookups).await?;
    let root = input.root.to_owned();
    // Build (generator and patch files decrypted as they are read), decrypt the objects, then
    // substitute: Flux's order, so variables never reach into ciphertext.
    let (objects, redactor) = tokio::task::spawn_blocking(move || -> Result<_, RenderError> {
        let objects = crate::build::build_with(&root, &options, &decryptor)?;
        let objects = decryptor.decrypt_objects(objects)?;
        let objects = crate::build::substitute_objects(objects, &options)?;
        Ok((objects, decryptor.redactor()))
    })
    .await??;
    // Policies see the decrypted objects; what they say about them leaves without the
    // plaintext.
    let rendered_result = policies_and_plan(input, lookups, engine, objects, rendered).await;
    match rendered_result {
        Ok(mut rendered) => {
            for v in rendered.warnings.iter_mut().chain(&mut rendered.audit) {
                v.message = redactor.redact(&v.message);
            }
            for text in rendered
                .ignored_failures
                .iter_mut()
                .chain(&mut rendered.notices)
            {
                *text = redactor.redact(text);
            }
            Ok(rendered)
        }
        Err(RenderError::Policy {
            reason,
            message,
            stalled,
            mut violations,
        }) => {
            for v in &mut violations {
                v.message = redactor.redact(&v.message);
            }
            Err(RenderError::Policy {
                reason,
                message: redactor.redact(&message),
                stalled,
                violations,
            })
        }
        Err(e) => Err(e),
    }
}

/// The stages after the build: the policy pipeline (with audit steps) and the plan.
async fn policies_and_plan(
    input: &RenderInput<'_>,
    lookups: &Lookups<'_>,
    engine: &PolicyEngine,
    objects: Vec<Value>,
    mut rendered: Rendered,
) -> Result<Rendered, RenderError> {
    let ks = input.kustomization;
    let namespace = ks.metadata.namespace.clone().unwrap_or_default();
    let name = ks.metadata.name.clone().unwrap_or_default();

    let admin = ks.spec.service_account_name.is_none() && input.default_service_account.is_none();
    let steps = policies::policy_steps(ks, &namespace, input.root, lookups).await?;
    let objects = if steps.enforce.is_empty() && steps.audit.is_empty() {
        objects
    } else {
        let host = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.get())
                .await
                .map_err(|e| policy_failed(format!("policy task failed: {e}")))??
        };
        // A tenant's transforms may not add cluster-scoped objects: which kinds are
        // cluster-scoped (CRDs included) comes from the cluster. Without that answer nothing
        // runs (fail closed). Offline, the built-in table stands alone.
        let discovery = match lookups.cluster {
            Some(cluster) if !admin => {
                let scopes = engine.cluster_scopes(cluster.admin);
                scopes.table().await.map_err(|e| {
                    policy_failed(format!(
                        "reading the cluster's cluster-scoped kinds for the tenancy check: {e}"
                    ))
                })?;
                Some(scopes)
            }
            _ => None,
        };
        let enforce = steps.enforce;
        let context = PolicyContext {
            kustomization_namespace: namespace.clone(),
            kustomization_name: name.clone(),
            source_revision: input.revision.to_owned(),
            target_namespace: ks.spec.target_namespace.clone(),
            dry_run: input.dry_run,
            tenancy: Some(Tenancy {
                allowed_namespaces: Vec::new(),
                allow_cluster_scoped: admin,
                cluster_scoped_kinds: Vec::new(),
                discovery,
            }),
        };
        let audit = steps.audit;
        let (host2, context2) = (host.clone(), context.clone());
        let outcome =
            tokio::task::spawn_blocking(move || host2.run_pipeline(&enforce, &context2, objects))
                .await
                .map_err(|e| policy_failed(format!("policy task failed: {e}")))?
                .map_err(|e| RenderError::Policy {
                    reason: e.reason(),
                    message: e.to_string(),
                    stalled: e.is_stalling(),
                    violations: match &e {
                        PipelineError::Denied { violations } => violations.clone(),
                        PipelineError::Failed(_) => Vec::new(),
                    },
                })?;
        rendered.warnings = outcome.warnings;
        rendered.ignored_failures = outcome
            .ignored_failures
            .iter()
            .map(|e| format!("{e} (failurePolicy: Ignore)"))
            .collect();
        if !audit.is_empty() {
            let context = PolicyContext {
                dry_run: true,
                tenancy: None,
                ..context
            };
            let objects = outcome.objects.clone();
            let (findings, failures) =
                tokio::task::spawn_blocking(move || run_audit(&host, &audit, &context, objects))
                    .await
                    .map_err(|e| policy_failed(format!("policy task failed: {e}")))?;
            rendered.audit = findings;
            rendered.ignored_failures.extend(failures);
        }
        outcome.objects
    };

    let owner = Owner { name, namespace };
    let scopes = match lookups.cluster {
        Some(cluster) => Scopes::Cluster {
            client: cluster.tenant,
            resolver: cluster.resolver,
        },
        None => Scopes::Offline,
    };
    rendered.plan = apply::plan_with(scopes, objects, &owner).await?;
    Ok(rendered)
}

/// Runs the audit steps one at a time (so one failing step does not hide the findings of the
/// others): every violation is reported, as a warning; failures are returned as text.
fn run_audit(
    host: &crate::policy::PolicyHost,
    steps: &[PolicyStep],
    context: &PolicyContext,
    objects: Vec<Value>,
) -> (Vec<Violation>, Vec<String>) {
    let mut findings = Vec::new();
    let mut failures = Vec::new();
    for step in steps {
        let step = PolicyStep {
            // A failure must come back as an error to be reported (it never blocks: the
            // caller only records it).
            failure_policy: FailurePolicy::Fail,
            ..step.clone()
        };
        match host.run_pipeline(std::slice::from_ref(&step), context, objects.clone()) {
            Ok(outcome) => findings.extend(outcome.warnings),
            Err(PipelineError::Denied { violations }) => findings.extend(violations),
            Err(PipelineError::Failed(e)) => failures.push(format!("{e} (mode: Audit)")),
        }
    }
    for finding in &mut findings {
        finding.severity = Severity::Warning;
    }
    (findings, failures)
}
