//! `kubectl gitops check [--pre]`: before an install, the Kubernetes version and the permissions
//! an install needs; after it, the CRDs and the reconciler's health. One line per check, exit 1
//! when any fails.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt as _};

use crate::cli::{CheckArgs, GlobalArgs};
use crate::cluster;
use crate::commands::shards;
use crate::commands::version::RECONCILER_DEPLOYMENT;
use crate::error::Exit;
use crate::ui::{Ui, escape};

/// Oldest Kubernetes minor version supported (CEL validation rules with messages, v1 CRDs).
pub const MIN_KUBERNETES: (u32, u32) = (1, 30);

/// The names of the CRDs an install provides, in install order (from the API types).
pub(crate) fn crd_names() -> Vec<String> {
    gitops_reconciler::api::crd::all()
        .into_iter()
        .filter_map(|(_, crd)| crd.metadata.name)
        .collect()
}

pub async fn run(global: &GlobalArgs, args: &CheckArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let client = cluster::connect(global).await?;
    ui.step("checking prerequisites")?;
    let mut ok = check_version(&client, ui).await?;
    warn_name_clashes(&client, ui).await?;
    if args.pre {
        ok &= check_permissions(&client, &global.namespace, ui).await?;
    } else {
        ui.step("checking the installation")?;
        ok &= check_crds(&client, ui).await?;
        ok &= check_reconciler(&client, &global.namespace, ui).await?;
    }
    if ok {
        ui.success(if args.pre {
            "prerequisites checks passed"
        } else {
            "all checks passed"
        })?;
        Ok(Exit::Success)
    } else {
        ui.failure("some checks failed")?;
        Ok(Exit::Failed)
    }
}

/// The names kubectl resolves a bare resource word by: plural, singular, short names.
fn resource_words(crd: &CustomResourceDefinition) -> Vec<String> {
    let names = &crd.spec.names;
    let mut words = vec![names.plural.clone()];
    words.extend(names.singular.clone());
    words.extend(names.short_names.clone().unwrap_or_default());
    words.retain(|w| !w.is_empty());
    words
}

/// For each installed CRD of another group that claims a word one of ours claims (Flux's
/// `kustomizations.kustomize.toolkit.fluxcd.io` claims `kustomizations` and `ks`): the foreign
/// CRD, our CRD and the shared words, sorted.
pub fn name_clashes(installed: &[CustomResourceDefinition]) -> Vec<(String, String, Vec<String>)> {
    let ours = gitops_reconciler::api::crd::all();
    let mut clashes = Vec::new();
    for theirs in installed {
        if theirs.spec.group == gitops_reconciler::api::GROUP {
            continue;
        }
        let their_words = resource_words(theirs);
        for (_, our) in &ours {
            let mut shared: Vec<String> = resource_words(our)
                .into_iter()
                .filter(|w| their_words.contains(w))
                .collect();
            if shared.is_empty() {
                continue;
            }
            shared.sort();
            clashes.push((
                theirs.metadata.name.clone().unwrap_or_default(),
                our.metadata.name.clone().unwrap_or_default(),
                shared,
            ));
        }
    }
    clashes.sort();
    clashes
}

/// Warns (it is no failure: both can run side by side) when another CRD, Flux's typically,
/// claims the same plural or short name as ours, so that `kubectl get ks` may mean either.
async fn warn_name_clashes(client: &Client, ui: &mut Ui<'_>) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            ui.warning(&format!(
                "cannot list CRDs to look for name clashes (Flux's kinds): {}",
                escape(&e.to_string())
            ))?;
            return Ok(());
        }
    };
    for (theirs, ours, words) in name_clashes(&installed) {
        ui.warning(&format!(
            "{} also claims {}: kubectl may pick either kind for these words; use {} with kubectl \
             (kubectl gitops commands are not affected)",
            escape(&theirs),
            words
                .iter()
                .map(|w| format!("'{}'", escape(w)))
                .collect::<Vec<_>>()
                .join(", "),
            escape(&ours)
        ))?;
    }
    Ok(())
}

/// Parses `v1.34.4` / `1.34+` into (major, minor).
pub fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| {
        s.trim_start_matches('v')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Some((digits(major)?, digits(minor)?))
}

async fn check_version(client: &Client, ui: &mut Ui<'_>) -> anyhow::Result<bool> {
    let info = client.apiserver_version().await?;
    match parse_version(&info.major, &info.minor) {
        Some(v) if v >= MIN_KUBERNETES => {
            ui.success(&format!(
                "Kubernetes {} >= {}.{}",
                escape(&info.git_version),
                MIN_KUBERNETES.0,
                MIN_KUBERNETES.1
            ))?;
            Ok(true)
        }
        _ => {
            ui.failure(&format!(
                "Kubernetes {} is older than {}.{}",
                escape(&info.git_version),
                MIN_KUBERNETES.0,
                MIN_KUBERNETES.1
            ))?;
            Ok(false)
        }
    }
}

async fn check_permissions(
    client: &Client,
    namespace: &str,
    ui: &mut Ui<'_>,
) -> anyhow::Result<bool> {
    let wanted: [(&str, &str, &str, Option<&str>); 6] = [
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("create", "", "namespaces", None),
        ("create", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        ("create", "apps", "deployments", Some(namespace)),
        (
            "create",
            "networking.k8s.io",
            "networkpolicies",
            Some(namespace),
        ),
    ];
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut ok = true;
    for (verb, group, resource, ns) in wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    namespace: ns.map(Into::into),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let what = match ns {
            Some(ns) => format!("{verb} {resource} in {ns}"),
            None => format!("{verb} {resource}"),
        };
        if allowed {
            ui.success(&format!("can {what}"))?;
        } else {
            ui.failure(&format!("cannot {what}"))?;
            ok = false;
        }
    }
    Ok(ok)
}

async fn check_crds(client: &Client, ui: &mut Ui<'_>) -> anyhow::Result<bool> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut ok = true;
    for name in crd_names() {
        let established = api.get_opt(&name).await?.map(|crd| {
            crd.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        match established {
            Some(true) => ui.success(&format!("CRD {name} is established"))?,
            Some(false) => {
                ui.failure(&format!("CRD {name} is not established yet"))?;
                ok = false;
            }
            None => {
                ui.failure(&format!(
                    "CRD {name} is missing: run kubectl gitops install"
                ))?;
                ok = false;
            }
        }
    }
    Ok(ok)
}

async fn check_reconciler(
    client: &Client,
    namespace: &str,
    ui: &mut Ui<'_>,
) -> anyhow::Result<bool> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(deployment) = api.get_opt(RECONCILER_DEPLOYMENT).await? else {
        ui.warning(&format!(
            "no Deployment {namespace}/{RECONCILER_DEPLOYMENT}: install it with kubectl gitops install (fine if you run gitops-reconciler outside the cluster)"
        ))?;
        return Ok(true);
    };
    let mut ok = reconciler_ready(namespace, RECONCILER_DEPLOYMENT, deployment, ui)?;
    // The reconcilers of a sharded install (`install --shard`).
    for deployment in shards::deployments(client, namespace).await? {
        let name = deployment.name_any();
        ok &= reconciler_ready(namespace, &name, deployment, ui)?;
    }
    Ok(ok)
}

/// Reports whether the reconciler Deployment `name` has all its replicas available.
fn reconciler_ready(
    namespace: &str,
    name: &str,
    deployment: Deployment,
    ui: &mut Ui<'_>,
) -> anyhow::Result<bool> {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if available >= wanted && updated >= wanted {
        ui.success(&format!(
            "reconciler {namespace}/{name} is ready ({available}/{wanted})"
        ))?;
        Ok(true)
    } else {
        ui.failure(&format!("reconciler {namespace}/{name} is not ready ({available}/{wanted} available): see kubectl gitops logs"))?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_the_apiserver_reports_them() {
        assert_eq!(parse_version("1", "34"), Some((1, 34)));
        assert_eq!(parse_version("1", "29+"), Some((1, 29)));
        assert!(parse_version("1", "29+").unwrap() < MIN_KUBERNETES);
        assert_eq!(parse_version("", "x"), None);
    }

    fn crd(group: &str, plural: &str, singular: &str, short: &[&str]) -> CustomResourceDefinition {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Namespaced", "versions": [],
                     "names": {"plural": plural, "singular": singular, "kind": "X",
                               "shortNames": short}}
        }))
        .unwrap()
    }

    #[test]
    fn flux_kinds_that_claim_our_words_are_found() {
        let installed = [
            crd(
                "kustomize.toolkit.fluxcd.io",
                "kustomizations",
                "kustomization",
                &["ks"],
            ),
            crd(
                "source.toolkit.fluxcd.io",
                "gitrepositories",
                "gitrepository",
                &["gitrepo"],
            ),
            crd("source.toolkit.fluxcd.io", "buckets", "bucket", &[]),
            crd(
                "kubectl-gitops.io",
                "kustomizations",
                "kustomization",
                &["ks"],
            ),
        ];
        assert_eq!(
            name_clashes(&installed),
            [
                (
                    "gitrepositories.source.toolkit.fluxcd.io".to_owned(),
                    "gitrepositories.kubectl-gitops.io".to_owned(),
                    vec![
                        "gitrepo".to_owned(),
                        "gitrepositories".into(),
                        "gitrepository".into()
                    ]
                ),
                (
                    "kustomizations.kustomize.toolkit.fluxcd.io".to_owned(),
                    "kustomizations.kubectl-gitops.io".to_owned(),
                    vec![
                        "ks".to_owned(),
                        "kustomization".into(),
                        "kustomizations".into()
                    ]
                ),
            ]
        );
    }
}
