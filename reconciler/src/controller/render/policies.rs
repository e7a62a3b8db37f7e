//! The policy steps of a render: `target-namespace` for `spec.targetNamespace`, the
//! ClusterPolicies that select the Kustomization (Kubernetes label selector rules), then
//! `spec.policies`; audit steps apart; every module resolved to bytes with its digest.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use super::{Lookups, NAMESPACE_NAME_LABEL, RenderError, TARGET_NAMESPACE_STEP, policy_failed};
use crate::api::{ClusterPolicy, FailurePolicy, Kustomization, PolicyMode, PolicyModule};
use crate::policy::{ModuleSource, PolicyStep};

#[derive(Default)]
pub(super) struct Steps {
    pub(super) enforce: Vec<PolicyStep>,
    pub(super) audit: Vec<PolicyStep>,
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
pub(super) async fn policy_steps(
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
            let policies = cluster_policies(cluster.cluster_policies, cluster.admin).await?;
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

/// How long a render waits for the ClusterPolicy watch's first list before listing them
/// itself (which then reports why the watch could not list: a missing CRD, missing rights).
const POLICY_STORE_WAIT: Duration = Duration::from_secs(5);

/// Every ClusterPolicy: as the reconciler's watch (`store`) last saw them, or listed when there
/// is no watch or its first list has not completed, so a Kustomization never runs without the
/// policies that select it.
pub(crate) async fn cluster_policies(
    store: Option<&Store<ClusterPolicy>>,
    admin: &kube::Client,
) -> Result<Vec<ClusterPolicy>, RenderError> {
    if let Some(store) = store
        && let Ok(Ok(())) = tokio::time::timeout(POLICY_STORE_WAIT, store.wait_until_ready()).await
    {
        return Ok(store.state().iter().map(|p| (**p).clone()).collect());
    }
    let api: Api<ClusterPolicy> = Api::all(admin.clone());
    Ok(api
        .list(&Default::default())
        .await
        .map_err(|e| policy_failed(format!("listing ClusterPolicies: {e}")))?
        .items)
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
