//! `build kustomization NAME --path DIR` and `diff kustomization NAME --path DIR`: the
//! reconciler's own build engine (`gitops_reconciler::build`) run on a local checkout with the
//! Kustomization's spec from the cluster; `diff` then server-side dry-runs every object as the
//! reconciler would apply it and prints a unified diff against the live state (Secret values
//! masked).
//!
//! Caveat: the policy host (WebAssembly) is not wired into the CLI yet, so `spec.policies` are
//! reported as skipped; `spec.targetNamespace` is applied here the way the built-in
//! `target-namespace` policy documents it (namespaced objects only, Namespace objects untouched).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use gitops_reconciler::api::Kustomization;
use gitops_reconciler::api::conditions::meta;
use gitops_reconciler::api::kustomization::SubstituteKind;
use gitops_reconciler::build::{self, BuildOptions};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::Value;

use crate::cli::{GlobalArgs, LocalBuildArgs, LocalBuildCommand};
use crate::cluster;
use crate::error::{Exit, Failure, fail};
use crate::ui::{Ui, escape};

/// Kinds the target namespace never applies to (diff resolves every kind by discovery and
/// drops a namespace from any other cluster-scoped kind).
const CLUSTER_SCOPED: [&str; 14] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "IngressClass",
    "RuntimeClass",
    "ClusterPolicy",
    "Node",
];

/// Builds the objects of `ks` from `dir` (the directory that stands for `spec.path`).
async fn render(
    client: &Client,
    ks: &Kustomization,
    dir: &Path,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Vec<Value>> {
    if !dir.is_dir() {
        return Err(fail(
            Exit::Usage,
            format!("--path {} is not a directory", dir.display()),
        ));
    }
    let mut options = BuildOptions::from_spec(&ks.spec);
    options.path = String::new();
    let namespace = ks.metadata.namespace.clone().unwrap_or_default();
    if let Some(post) = &ks.spec.post_build {
        for reference in &post.substitute_from {
            let values = match reference.kind {
                SubstituteKind::ConfigMap => {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
                    api.get_opt(&reference.name)
                        .await?
                        .map(|cm| cm.data.unwrap_or_default())
                }
                SubstituteKind::Secret => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                    api.get_opt(&reference.name).await?.map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect::<BTreeMap<_, _>>()
                    })
                }
            };
            match values {
                // Later sources override earlier ones; inline `substitute` wins over all.
                Some(values) => {
                    for (k, v) in values {
                        options.substitute.entry(k).or_insert(v);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(fail(
                        Exit::NotFound,
                        format!(
                            "postBuild.substituteFrom: {:?} {namespace}/{} not found",
                            reference.kind, reference.name
                        ),
                    ));
                }
            }
        }
    }
    let root = dir.to_path_buf();
    let mut objects = tokio::task::spawn_blocking(move || build::build(&root, &options))
        .await?
        .map_err(|e| fail(Exit::Failed, format!("build failed: {e}")))?;
    if !ks.spec.policies.is_empty() {
        ui.warning(&format!(
            "{} policies of the Kustomization were not run: this CLI build has no policy host",
            ks.spec.policies.len()
        ))?;
    }
    if let Some(target) = &ks.spec.target_namespace {
        for object in &mut objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            if !CLUSTER_SCOPED.contains(&kind) && object["metadata"].is_object() {
                object["metadata"]["namespace"] = target.as_str().into();
            }
        }
    }
    Ok(objects)
}

fn args(command: LocalBuildCommand) -> LocalBuildArgs {
    let LocalBuildCommand::Kustomization(args) = command;
    args
}

async fn kustomization(
    global: &GlobalArgs,
    args: &LocalBuildArgs,
) -> anyhow::Result<(Client, Kustomization, std::path::PathBuf)> {
    let Some(dir) = args.path.clone() else {
        return Err(Failure::new(
            Exit::Usage,
            "--path is required: the local directory that stands for the Kustomization's spec.path",
        )
        .hint("e.g. kubectl gitops build kustomization vote-dev --path ./deploy/vote")
        .into());
    };
    let client = cluster::connect(global).await?;
    let api: Api<Kustomization> = Api::namespaced(client.clone(), &global.namespace);
    let ks = cluster::get(&api, &global.namespace, &args.name).await?;
    Ok((client, ks, dir))
}

pub async fn build(
    global: &GlobalArgs,
    command: LocalBuildCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let args = args(command);
    let (client, ks, dir) = kustomization(global, &args).await?;
    let objects = render(&client, &ks, &dir, ui).await?;
    // Secret values never reach the output, not even from a local checkout.
    let objects: Vec<Value> = objects.into_iter().map(mask_secret).collect();
    write!(ui.out, "{}", crate::objects::yaml_stream(&objects)?)?;
    Ok(Exit::Success)
}

pub async fn diff(
    global: &GlobalArgs,
    command: LocalBuildCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let args = args(command);
    let (client, ks, dir) = kustomization(global, &args).await?;
    let mut objects = render(&client, &ks, &dir, ui).await?;
    let ks_ns = global.namespace.clone();
    let mut changed = false;
    for object in &mut objects {
        // What the reconciler adds to every object it applies.
        let labels = object["metadata"]
            .as_object_mut()
            .map(|m| m.entry("labels").or_insert_with(|| serde_json::json!({})));
        if let Some(labels) = labels {
            labels[meta::OWNER_NAME_LABEL] = args.name.as_str().into();
            labels[meta::OWNER_NAMESPACE_LABEL] = ks_ns.as_str().into();
        }
        if let (Some(target), None) = (
            &ks.spec.target_namespace,
            object["metadata"]["namespace"].as_str(),
        ) {
            // Decided per kind below: only namespaced kinds take the target namespace.
            object["metadata"]["namespace"] = target.as_str().into();
        }
        let (api, name, label) = dynamic_api(&client, &mut *object).await?;
        let live = api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading {label}"))?;
        let params = PatchParams::apply(meta::FIELD_MANAGER).force().dry_run();
        let desired = api
            .patch(&name, &params, &Patch::Apply(&*object))
            .await
            .with_context(|| format!("server-side dry-run of {label}"))?;
        let desired = comparable(serde_json::to_value(desired)?);
        let live = live
            .map(|l| serde_json::to_value(l).map(comparable))
            .transpose()?;
        let (old, new) = (
            live.as_ref().map(yaml).transpose()?.unwrap_or_default(),
            yaml(&desired)?,
        );
        if old == new {
            continue;
        }
        changed = true;
        let header = if live.is_none() {
            "created"
        } else {
            "configured"
        };
        let text = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("live {label}"), &format!("desired {label}"))
            .to_string();
        writeln!(ui.out, "► {} {header}", escape(&label))?;
        ui.diff(&text)?;
    }
    if !changed {
        ui.success("no differences")?;
    }
    Ok(if changed { Exit::Failed } else { Exit::Success })
}

/// Strips what the server sets and masks Secret values (equal values get equal masks so a
/// changed value still shows as changed, without printing it).
fn comparable(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    mask_secret(object)
}

/// Replaces Secret values by a mask carrying a short digest.
fn mask_secret(mut object: Value) -> Value {
    if object["kind"] == "Secret" {
        for key in ["data", "stringData"] {
            if let Some(data) = object.get_mut(key).and_then(Value::as_object_mut) {
                for value in data.values_mut() {
                    let text = value.as_str().unwrap_or_default();
                    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
                    *value = format!("***** (sha256 {})", &hex::encode(digest)[..8]).into();
                }
            }
        }
    }
    object
}

fn yaml(value: &Value) -> anyhow::Result<String> {
    Ok(gitops_reconciler::yaml::to_string(value)?)
}

async fn dynamic_api(
    client: &Client,
    object: &mut Value,
) -> anyhow::Result<(Api<DynamicObject>, String, String)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let (resource, caps): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the cluster does not serve {kind} ({api_version})"))?;
    if caps.scope == Scope::Cluster
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        // Cluster-scoped kinds have no namespace (a target namespace does not apply to them).
        meta.remove("namespace");
    }
    let namespace = object["metadata"]["namespace"].as_str();
    Ok(match (caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => (
            Api::namespaced_with(client.clone(), ns, &resource),
            name.clone(),
            format!("{kind}/{ns}/{name}"),
        ),
        (Scope::Namespaced, None) => {
            return Err(fail(
                Exit::Failed,
                format!(
                    "{kind}/{name} has no namespace: set one in the manifest or spec.targetNamespace"
                ),
            ));
        }
        (Scope::Cluster, _) => (
            Api::all_with(client.clone(), &resource),
            name.clone(),
            format!("{kind}/{name}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_but_changes_stay_visible() {
        let secret = |v: &str| {
            comparable(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "resourceVersion": "9", "managedFields": []},
                "data": {"password": v}
            }))
        };
        let (a, b, c) = (secret("aGVsbG8="), secret("aGVsbG8="), secret("d29ybGQ="));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("aGVsbG8="), "{text}");
        assert!(a["metadata"].get("resourceVersion").is_none());
    }
}
