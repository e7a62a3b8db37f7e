//! The render of a Kustomization, shared by the controller and the CLI (`build`, `diff`):
//!
//! artifact tree → build (kustomize) → postBuild substitutions → policy pipeline
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

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

use super::kustomization::PolicyEngine;
use crate::api::conditions::reasons;
use crate::api::kustomization::SubstituteKind;
use crate::api::{ClusterPolicy, FailurePolicy, Kustomization, PolicyMode, PolicyModule};
use crate::apply::{self, ApplyError, Owner, Plan, Resolver, Scopes};
use crate::policy::{
    ModuleSource, PipelineError, PolicyContext, PolicyStep, Severity, Tenancy, Violation,
};

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
}

/// What is rendered and how.
pub struct RenderInput<'a> {
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
    /// Substitution sources or the kustomize build failed (BuildFailed).
    #[error("{0}")]
    Build(String),
    /// The policy stage denied or failed (PolicyDenied / PolicyFailed).
    #[error("{message}")]
    Policy {
        reason: &'static str,
        message: String,
        /// Retrying the same spec and revision cannot help.
        stalled: bool,
        /// The violations of a denial (empty for a failure).
        violations: Vec<Violation>,
    },
    /// The objects cannot be planned: invalid, duplicate, unknown kind (ApplyFailed).
    #[error(transparent)]
    Plan(#[from] ApplyError),
}

impl RenderError {
    /// The condition reason: BuildFailed, PolicyDenied, PolicyFailed or ApplyFailed.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Build(_) => reasons::BUILD_FAILED,
            RenderError::Policy { reason, .. } => reason,
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
    let name = ks.metadata.name.clone().unwrap_or_default();
    let mut rendered = Rendered::default();

    let substitute = substitutions(ks, &namespace, lookups, &mut rendered.notices).await?;
    let mut options = crate::build::BuildOptions::from_spec(&ks.spec);
    if let Some(path) = &input.path {
        options.path = path.clone();
    }
    options.substitute = substitute;
    let root = input.root.to_owned();
    let objects = tokio::task::spawn_blocking(move || crate::build::build(&root, &options))
        .await
        .map_err(|e| RenderError::Build(format!("build task failed: {e}")))?
        .map_err(|e| RenderError::Build(e.to_string()))?;

    let admin = ks.spec.service_account_name.is_none() && input.default_service_account.is_none();
    let steps = policy_steps(ks, &namespace, input.root, lookups).await?;
    let objects = if steps.enforce.is_empty() && steps.audit.is_empty() {
        objects
    } else {
        let host = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.get())
                .await
                .map_err(|e| policy_failed(format!("policy task failed: {e}")))?
                .map_err(|e| policy_failed(format!("the policy host could not be started: {e}")))?
        };
        // A tenant's transforms may not add cluster-scoped objects: which kinds are
        // cluster-scoped (CRDs included) comes from the cluster. Without that answer nothing
        // runs (fail closed). Offline, the built-in table stands alone.
        let discovered = match lookups.cluster {
            Some(cluster) if !admin => cluster_scoped_kinds(cluster.admin).await.map_err(|e| {
                policy_failed(format!(
                    "reading the cluster's cluster-scoped kinds for the tenancy check: {e}"
                ))
            })?,
            _ => Vec::new(),
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
                cluster_scoped_kinds: discovered,
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

/// postBuild variables: `substituteFrom` in order (later entries win), then `substitute`.
async fn substitutions(
    ks: &Kustomization,
    namespace: &str,
    lookups: &Lookups<'_>,
    notices: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, RenderError> {
    let mut vars = BTreeMap::new();
    let Some(post) = &ks.spec.post_build else {
        return Ok(vars);
    };
    for reference in &post.substitute_from {
        let what = format!("{:?} {namespace}/{}", reference.kind, reference.name);
        let data = match (&lookups.substitute_from, lookups.cluster) {
            (Some(objects), _) => local_data(objects, reference.kind, &reference.name)
                .map_err(|e| RenderError::Build(format!("postBuild.substituteFrom {what}: {e}")))?,
            (None, Some(cluster)) => {
                cluster_data(cluster.tenant, reference.kind, namespace, &reference.name)
                    .await
                    .map_err(|e| {
                        RenderError::Build(format!("postBuild.substituteFrom {what}: {e}"))
                    })?
            }
            (None, None) => None,
        };
        match data {
            Some(data) => vars.extend(data),
            None if reference.optional == Some(true) => {}
            None if lookups.skip_missing_substitutions => notices.push(format!(
                "postBuild.substituteFrom {what} was not looked up (dry run): its variables are not substituted"
            )),
            None => {
                return Err(RenderError::Build(format!(
                    "postBuild.substituteFrom: {what} not found"
                )));
            }
        }
    }
    vars.extend(post.substitute.clone());
    Ok(vars)
}

fn secret_text(key: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("key {key} is not UTF-8"))
}

async fn cluster_data(
    client: &kube::Client,
    kind: SubstituteKind,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match kind {
        SubstituteKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let cm = api.get_opt(name).await.map_err(|e| e.to_string())?;
            Ok(cm.map(|cm| cm.data.unwrap_or_default()))
        }
        SubstituteKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let Some(secret) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let mut out = BTreeMap::new();
            for (k, v) in secret.data.unwrap_or_default() {
                let text = secret_text(&k, v.0)?;
                out.insert(k, text);
            }
            Ok(Some(out))
        }
    }
}

/// The data of the ConfigMap or Secret `name` among local manifests (a Secret's `data` is
/// base64, its `stringData` plain and winning, as in the apiserver).
fn local_data(
    objects: &[Value],
    kind: SubstituteKind,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    use base64::Engine as _;
    let kind_name = match kind {
        SubstituteKind::ConfigMap => "ConfigMap",
        SubstituteKind::Secret => "Secret",
    };
    let Some(object) = objects.iter().find(|o| {
        o["kind"] == kind_name && o["apiVersion"] == "v1" && o["metadata"]["name"] == name
    }) else {
        return Ok(None);
    };
    let strings = |field: &str| -> Result<Vec<(String, String)>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(format!("{field}.{k} is not a string")),
                })
                .collect(),
            Some(_) => Err(format!("{field} is not a map of strings")),
        }
    };
    let mut out = BTreeMap::new();
    match kind {
        SubstituteKind::ConfigMap => out.extend(strings("data")?),
        SubstituteKind::Secret => {
            for (k, v) in strings("data")? {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| format!("data.{k} is not base64"))?;
                let text = secret_text(&k, bytes)?;
                out.insert(k, text);
            }
            out.extend(strings("stringData")?);
        }
    }
    Ok(Some(out))
}

/// The steps of a render: the enforcing pipeline and the audit steps.
#[derive(Default)]
struct Steps {
    enforce: Vec<PolicyStep>,
    audit: Vec<PolicyStep>,
}

impl Steps {
    fn push(&mut self, mode: Option<PolicyMode>, step: PolicyStep) {
        match mode.unwrap_or_default() {
            PolicyMode::Enforce => self.enforce.push(step),
            PolicyMode::Audit => self.audit.push(step),
        }
    }
}

/// `target-namespace` for `spec.targetNamespace`, then the ClusterPolicies selecting the
/// Kustomization (name order), then `spec.policies` (spec order).
async fn policy_steps(
    ks: &Kustomization,
    namespace: &str,
    artifact_root: &Path,
    lookups: &Lookups<'_>,
) -> Result<Steps, RenderError> {
    let mut steps = Steps::default();
    if let Some(target) = &ks.spec.target_namespace {
        steps.enforce.push(PolicyStep {
            name: TARGET_NAMESPACE_STEP.into(),
            module: ModuleSource::Builtin(TARGET_NAMESPACE_STEP.into()),
            config: json!({ "namespace": target }),
            failure_policy: FailurePolicy::Fail,
        });
    }
    for policy in selected_cluster_policies(ks, namespace, lookups).await? {
        let name = policy.name_any();
        let module = resolve_module(
            &policy.spec.module,
            &format!("ClusterPolicy {name}"),
            lookups.cluster.map(|c| c.admin),
            "",
            None,
        )
        .await?;
        steps.push(
            policy.spec.mode,
            PolicyStep {
                name,
                module,
                config: policy.spec.config.clone().unwrap_or(Value::Null),
                failure_policy: policy.spec.failure_policy.unwrap_or_default(),
            },
        );
    }
    for policy in &ks.spec.policies {
        let module = resolve_module(
            &policy.module,
            &policy.name,
            lookups.cluster.map(|c| c.tenant),
            namespace,
            Some(artifact_root),
        )
        .await?;
        steps.push(
            policy.mode,
            PolicyStep {
                name: policy.name.clone(),
                module,
                config: policy.config.clone().unwrap_or(Value::Null),
                failure_policy: policy.failure_policy.unwrap_or_default(),
            },
        );
    }
    Ok(steps)
}

/// The ClusterPolicies whose selector matches the Kustomization, in name order.
pub async fn selected_cluster_policies(
    ks: &Kustomization,
    namespace: &str,
    lookups: &Lookups<'_>,
) -> Result<Vec<ClusterPolicy>, RenderError> {
    let (mut policies, namespaces) = match (&lookups.cluster_policies, lookups.cluster) {
        (Some(objects), _) => local_cluster_policies(objects)?,
        (None, Some(cluster)) => {
            let api: Api<ClusterPolicy> = Api::all(cluster.admin.clone());
            let policies = api
                .list(&Default::default())
                .await
                .map_err(|e| policy_failed(format!("listing ClusterPolicies: {e}")))?
                .items;
            let namespaces = if policies.is_empty() {
                Vec::new()
            } else {
                let api: Api<Namespace> = Api::all(cluster.admin.clone());
                api.get_opt(namespace)
                    .await
                    .map_err(|e| policy_failed(format!("reading Namespace {namespace}: {e}")))?
                    .into_iter()
                    .collect()
            };
            (policies, namespaces)
        }
        (None, None) => return Ok(Vec::new()),
    };
    policies.sort_by_key(|p| p.name_any());
    let mut ns_labels: BTreeMap<String, String> = namespaces
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(namespace))
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default();
    ns_labels
        .entry(NAMESPACE_NAME_LABEL.to_owned())
        .or_insert_with(|| namespace.to_owned());
    let ks_labels = ks.metadata.labels.clone().unwrap_or_default();
    let mut selected = Vec::new();
    for policy in policies {
        let selector = policy.spec.selector.clone().unwrap_or_default();
        let matches =
            |s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
             labels: &BTreeMap<String, String>|
             -> Result<bool, RenderError> {
                let Some(s) = s else { return Ok(true) };
                let parsed = Selector::try_from(s.clone()).map_err(|e| {
                    policy_failed(format!(
                        "ClusterPolicy {}: invalid selector: {e}",
                        policy.name_any()
                    ))
                })?;
                Ok(parsed.matches(labels))
            };
        if matches(selector.namespace_selector.as_ref(), &ns_labels)?
            && matches(selector.kustomization_selector.as_ref(), &ks_labels)?
        {
            selected.push(policy);
        }
    }
    Ok(selected)
}

/// ClusterPolicies and Namespaces among local manifests (other kinds are refused: a file
/// meant for something else should not be silently half-used).
fn local_cluster_policies(
    objects: &[Value],
) -> Result<(Vec<ClusterPolicy>, Vec<Namespace>), RenderError> {
    let mut policies = Vec::new();
    let mut namespaces = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let bad = |e: serde_json::Error| policy_failed(format!("{kind} {name}: {e}"));
        match kind {
            "ClusterPolicy" => {
                policies.push(serde_json::from_value(object.clone()).map_err(bad)?);
            }
            "Namespace" => namespaces.push(serde_json::from_value(object.clone()).map_err(bad)?),
            other => {
                return Err(policy_failed(format!(
                    "{other} {name}: only ClusterPolicy and Namespace objects are read as cluster policies"
                )));
            }
        }
    }
    Ok((policies, namespaces))
}

/// Every cluster-scoped kind the cluster serves, built-in or from a CRD, as `Kind.group`
/// (`Kind` for the core group), from aggregated discovery (two requests).
async fn cluster_scoped_kinds(client: &kube::Client) -> Result<Vec<String>, kube::Error> {
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run_aggregated()
        .await?;
    Ok(discovery
        .groups()
        .flat_map(|g| g.resources_by_stability())
        .filter(|(_, caps)| matches!(caps.scope, kube::discovery::Scope::Cluster))
        .map(|(resource, _)| match resource.group.as_str() {
            "" => resource.kind,
            group => format!("{}.{group}", resource.kind),
        })
        .collect())
}

/// Resolves a module reference into bytes the host verifies against the declared sha256.
async fn resolve_module(
    module: &PolicyModule,
    step: &str,
    client: Option<&kube::Client>,
    namespace: &str,
    artifact_root: Option<&Path>,
) -> Result<ModuleSource, RenderError> {
    let failed = |message: String| policy_failed(format!("policy {step}: {message}"));
    if let Some(name) = &module.builtin {
        return Ok(ModuleSource::Builtin(name.clone()));
    }
    let sha256 = module
        .sha256
        .clone()
        .ok_or_else(|| failed("sha256 is required for a module that is not builtin".into()))?;
    let bytes: Vec<u8> = if let Some(path) = &module.path {
        let root =
            artifact_root.ok_or_else(|| failed("module.path needs a source artifact".into()))?;
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(failed(format!("module.path '{path}' escapes the artifact")));
        }
        let file = root.join(path);
        // The artifact holds regular files only (symlinks are refused when unpacking).
        std::fs::read(&file).map_err(|e| failed(format!("module.path '{path}': {e}")))?
    } else if let Some(reference) = &module.config_map_ref {
        let ns = reference.namespace.clone().unwrap_or(namespace.to_owned());
        let client = client.ok_or_else(|| {
            failed(format!(
                "module.configMapRef {ns}/{} needs a cluster (this render is offline)",
                reference.name
            ))
        })?;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| failed(format!("ConfigMap {ns}/{}: {e}", reference.name)))?
            .ok_or_else(|| failed(format!("ConfigMap {ns}/{} not found", reference.name)))?;
        cm.binary_data
            .and_then(|mut d| d.remove(&reference.key))
            .map(|b| b.0)
            .ok_or_else(|| {
                failed(format!(
                    "ConfigMap {ns}/{} has no binaryData key {}",
                    reference.name, reference.key
                ))
            })?
    } else if let Some(url) = &module.url {
        // The fetch error names the policy and the URL (without credentials or query).
        let bytes = crate::policy::fetch::ModuleFetcher::process()
            .fetch(step, url, &sha256)
            .await
            .map_err(|e| policy_failed(e.to_string()))?;
        return Ok(ModuleSource::Component { bytes, sha256 });
    } else {
        return Err(failed("no module source set".into()));
    };
    Ok(ModuleSource::Component {
        bytes: bytes.into(),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(yaml: &str) -> Kustomization {
        crate::yaml::from_str(yaml).unwrap()
    }

    const HEAD: &str = "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {name: app, namespace: team, labels: {tier: web}}\nspec:\n  sourceRef: {kind: GitRepository, name: repo}\n  interval: 1m\n";

    fn cm(name: &str, data: &str) -> Value {
        crate::yaml::from_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {data}\n"
        ))
        .unwrap()
    }

    /// Flux: "the values from the later entries of substituteFrom override the earlier ones,
    /// and the inline substitute values override all of them".
    #[tokio::test]
    async fn later_substitute_from_entries_win_and_inline_substitute_wins_over_all() {
        let ks = ks(&format!(
            "{HEAD}  postBuild:\n    substitute: {{inline: yes}}\n    substituteFrom:\n    - {{kind: ConfigMap, name: first}}\n    - {{kind: ConfigMap, name: second}}\n"
        ));
        let lookups = Lookups {
            substitute_from: Some(vec![
                cm("first", "{a: first, b: first, inline: first}"),
                cm("second", "{a: second, inline: second}"),
            ]),
            ..Default::default()
        };
        let vars = substitutions(&ks, "team", &lookups, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(vars["a"], "second");
        assert_eq!(vars["b"], "first");
        assert_eq!(vars["inline"], "yes");
    }

    #[tokio::test]
    async fn missing_substitution_source_fails_unless_optional_or_a_dry_run() {
        let ks = ks(&format!(
            "{HEAD}  postBuild:\n    substituteFrom:\n    - {{kind: Secret, name: gone}}\n"
        ));
        let mut lookups = Lookups {
            substitute_from: Some(Vec::new()),
            ..Default::default()
        };
        let err = substitutions(&ks, "team", &lookups, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("Secret team/gone not found"),
            "{err}"
        );
        lookups.skip_missing_substitutions = true;
        let mut notices = Vec::new();
        substitutions(&ks, "team", &lookups, &mut notices)
            .await
            .unwrap();
        assert!(notices[0].contains("Secret team/gone"), "{notices:?}");
    }

    #[test]
    fn local_secrets_decode_base64_and_string_data_wins() {
        let secret: Value = crate::yaml::from_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGVsbG8=, b: eA==}\nstringData: {b: plain}\n",
        )
        .unwrap();
        let data = local_data(&[secret], SubstituteKind::Secret, "s")
            .unwrap()
            .unwrap();
        assert_eq!(data["a"], "hello");
        assert_eq!(data["b"], "plain");
    }

    #[tokio::test]
    async fn cluster_policies_are_selected_with_kubernetes_label_selector_rules() {
        let ks = ks(HEAD);
        let policy = |name: &str, selector: &str| -> Value {
            crate::yaml::from_str(&format!(
                "apiVersion: kubectl-gitops.io/v1alpha1\nkind: ClusterPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: {{builtin: replica-bounds}}\n  selector: {selector}\n"
            ))
            .unwrap()
        };
        let namespace: Value = crate::yaml::from_str(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {env: prod}}\n",
        )
        .unwrap();
        let lookups = Lookups {
            cluster_policies: Some(vec![
                policy("b-prod", "{namespaceSelector: {matchLabels: {env: prod}}}"),
                policy(
                    "a-web",
                    "{kustomizationSelector: {matchExpressions: [{key: tier, operator: In, values: [web]}]}}",
                ),
                policy("c-dev", "{namespaceSelector: {matchLabels: {env: dev}}}"),
                policy(
                    "d-by-name",
                    "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team}}}",
                ),
                policy(
                    "e-notin",
                    "{kustomizationSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}}",
                ),
                policy("f-all", "{}"),
                namespace,
            ]),
            ..Default::default()
        };
        let names: Vec<String> = selected_cluster_policies(&ks, "team", &lookups)
            .await
            .unwrap()
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["a-web", "b-prod", "d-by-name", "f-all"]);

        let bad = Lookups {
            cluster_policies: Some(vec![policy(
                "bad",
                "{kustomizationSelector: {matchExpressions: [{key: tier, operator: Sometimes}]}}",
            )]),
            ..Default::default()
        };
        let err = selected_cluster_policies(&ks, "team", &bad)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ClusterPolicy bad"), "{err}");
    }
}
