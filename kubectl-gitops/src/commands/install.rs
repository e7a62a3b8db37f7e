//! `install` (CRDs + the reconciler's manifests, embedded in the binary, applied server-side,
//! then a wait with progress until the reconciler is ready), `uninstall` (keeps the workloads:
//! finalizers are dropped before the kinds go away, as flux does). `bootstrap git` (in
//! `bootstrap.rs`) applies the same manifests.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitops_reconciler::api::{GitRepository, Kustomization};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::discovery::Scope;
use kube::{Api, Client, ResourceExt as _};
use serde_json::Value;

use crate::cli::{GlobalArgs, InstallArgs, UninstallArgs};
use crate::cluster::{self, FIELD_MANAGER};
use crate::commands::check::crd_names;
use crate::commands::shards;
use crate::error::{Exit, Failure, fail};
use crate::ui::Ui;

/// The reconciler's install manifests, in `reconciler/config/install/kustomization.yaml` order.
const INSTALL_MANIFESTS: [&str; 6] = [
    include_str!("../../../reconciler/config/install/namespace.yaml"),
    include_str!("../../../reconciler/config/install/serviceaccount.yaml"),
    include_str!("../../../reconciler/config/install/rbac.yaml"),
    include_str!("../../../reconciler/config/install/service.yaml"),
    include_str!("../../../reconciler/config/install/networkpolicy.yaml"),
    include_str!("../../../reconciler/config/install/deployment.yaml"),
];

/// The namespace the embedded manifests are written for.
const MANIFEST_NAMESPACE: &str = "gitops-system";

/// The reconciler image this CLI installs unless `--image` says otherwise. A release build sets
/// `GITOPS_RECONCILER_IMAGE=<name>@sha256:<digest>` (printed by `kubectl-gitops/image/build.sh`)
/// so that installs reference the image by digest; a development build keeps the manifests' tag.
pub fn default_image() -> Option<&'static str> {
    option_env!("GITOPS_RECONCILER_IMAGE").filter(|s| !s.is_empty())
}

/// Every object an install applies, in order: CRDs first, then the reconciler. Namespaced
/// objects move to `namespace`; the reconciler container gets `image` when given.
pub fn manifests(
    namespace: &str,
    image: Option<&str>,
    crds_only: bool,
) -> anyhow::Result<Vec<Value>> {
    // The CRDs come from the API types themselves (the committed YAML under
    // reconciler/config/crd is rendered from the same types and checked against them).
    let mut objects = gitops_reconciler::api::crd::all()
        .into_iter()
        .map(|(_, crd)| serde_json::to_value(crd))
        .collect::<Result<Vec<Value>, _>>()
        .context("serialising the CRDs")?;
    if !crds_only {
        for text in INSTALL_MANIFESTS {
            let docs: Vec<Value> = gitops_reconciler::yaml::from_str_multi(text)
                .context("parsing the embedded install manifests")?;
            objects.extend(docs);
        }
    }
    for object in &mut objects {
        relocate(object, namespace);
        if let Some(image) = image {
            set_image(object, image);
        }
    }
    Ok(objects)
}

fn relocate(object: &mut Value, namespace: &str) {
    if namespace == MANIFEST_NAMESPACE {
        return;
    }
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if kind == "Namespace" && meta.get("name") == Some(&Value::from(MANIFEST_NAMESPACE)) {
            meta.insert("name".into(), namespace.into());
        }
        if meta.get("namespace") == Some(&Value::from(MANIFEST_NAMESPACE)) {
            meta.insert("namespace".into(), namespace.into());
        }
    }
    if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects {
            if subject.get("namespace") == Some(&Value::from(MANIFEST_NAMESPACE)) {
                subject["namespace"] = namespace.into();
            }
        }
    }
}

fn set_image(object: &mut Value, image: &str) {
    if object["kind"] != "Deployment" {
        return;
    }
    if let Some(containers) = object
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for container in containers {
            if container["name"] == "reconciler" {
                container["image"] = image.into();
            }
        }
    }
}

pub async fn install(
    global: &GlobalArgs,
    args: &InstallArgs,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let image = args.image.as_deref().or(default_image());
    shards::validate(&args.shards)?;
    if args.crds_only && !args.shards.is_empty() {
        return Err(fail(
            Exit::Usage,
            "--shard installs reconcilers: it cannot be combined with --crds-only",
        ));
    }
    let mut objects = manifests(&global.namespace, image, args.crds_only)?;
    if !args.crds_only {
        shards::add(&mut objects, &args.shards);
    }
    if args.export {
        write!(ui.out, "{}", crate::objects::yaml_stream(&objects)?)?;
        return Ok(Exit::Success);
    }
    let client = cluster::connect(global).await?;
    let (crds, rest): (Vec<Value>, Vec<Value>) = objects
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    ui.step("installing the CRDs")?;
    apply_all(&client, &crds, ui).await?;
    wait_established(&client, global.timeout, ui).await?;
    if args.crds_only {
        ui.success("CRDs installed: run gitops-reconciler yourself against this cluster")?;
        return Ok(Exit::Success);
    }
    // Shards installed before and not asked for now go first: their objects would otherwise
    // be reconciled by nobody once their reconciler is gone, or twice while both run.
    let dropped: Vec<String> = installed_shards(&client, &global.namespace)
        .await?
        .into_iter()
        .filter(|s| !args.shards.contains(s))
        .collect();
    for shard in &dropped {
        ui.step(&format!("removing the reconciler of shard {shard}"))?;
        let name = shards::deployment_name(Some(shard));
        stop_reconciler(&client, &global.namespace, &name, global.timeout, ui).await?;
        delete_all(&client, &shard_objects(&global.namespace, shard)?, ui).await?;
    }
    ui.step(&format!(
        "installing the reconciler{} in {}",
        if args.shards.is_empty() {
            String::new()
        } else {
            format!(" and shards {}", args.shards.join(", "))
        },
        global.namespace
    ))?;
    apply_all(&client, &rest, ui).await?;
    for shard in std::iter::once(None).chain(args.shards.iter().map(|s| Some(s.as_str()))) {
        let name = shards::deployment_name(shard);
        wait_rollout(&client, &global.namespace, &name, global.timeout, ui).await?;
    }
    ui.success("install finished")?;
    Ok(Exit::Success)
}

/// Server-side applies each object (resolving its kind by discovery).
pub(crate) async fn apply_all(
    client: &Client,
    objects: &[Value],
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    for object in objects {
        let (api, name, label) = dynamic_api(client, object).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .with_context(|| format!("applying {label}"))?;
        ui.success(&format!("{label} applied"))?;
    }
    Ok(())
}

async fn dynamic_api(
    client: &Client,
    object: &Value,
) -> anyhow::Result<(Api<DynamicObject>, String, String)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the cluster does not serve {kind} ({api_version})"))?;
    let namespace = object["metadata"]["namespace"].as_str();
    let (api, label) = match (caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => (
            Api::namespaced_with(client.clone(), ns, &resource),
            format!("{kind} {ns}/{name}"),
        ),
        _ => (
            Api::all_with(client.clone(), &resource),
            format!("{kind} {name}"),
        ),
    };
    Ok((api, name, label))
}

pub(crate) async fn wait_established(
    client: &Client,
    timeout: Duration,
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let _spinner = ui.waiting("waiting for the CRDs to be established")?;
    let start = Instant::now();
    for name in crd_names() {
        loop {
            let established = api.get_opt(&name).await?.is_some_and(|crd| {
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            if start.elapsed() > timeout {
                return Err(crate::error::fail(
                    Exit::Timeout,
                    format!(
                        "CRD {name} not established after {}",
                        cluster::human_duration(timeout)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Waits until the reconciler Deployment `name` (the main one or a shard's) rolled out.
pub(crate) async fn wait_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let _spinner = ui.waiting(&format!("waiting for {} to become ready", described(name)))?;
    loop {
        if let Some(d) = api.get_opt(name).await?
            && rolled_out(&d)
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "the reconciler Deployment {namespace}/{name} is not ready after {}",
                    cluster::human_duration(timeout)
                ),
            )
            .hint(format!(
                "see kubectl -n {namespace} describe pods -l app.kubernetes.io/name={name}, and kubectl gitops logs"
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The reconciler is ready when every replica runs the current template and one of them (the
/// leader: only it passes the readiness probe, which checks the artifact port) is available.
/// Standby replicas stay unready by design, so waiting for all of them would never end.
fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    let updated = status.updated_replicas.unwrap_or(0);
    status.observed_generation.unwrap_or(0) >= generation
        && updated >= wanted
        // No replica of an older template left (Recreate stops them before starting new ones).
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= wanted.min(1)
}

pub async fn uninstall(
    global: &GlobalArgs,
    args: &UninstallArgs,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    if !args.silent {
        match ui.confirm(&format!(
            "Uninstall kubectl-gitops from the cluster (CRDs, reconciler{})? Workloads it applied stay.",
            if args.keep_namespace { "" } else { ", namespace" }
        ))? {
            Some(true) => {}
            Some(false) => {
                ui.warning("nothing uninstalled")?;
                return Ok(Exit::Failed);
            }
            None => {
                return Err(Failure::new(
                    Exit::Usage,
                    "refusing to uninstall without confirmation: there is no terminal to ask",
                )
                .hint("pass -s/--silent to uninstall without asking")
                .into());
            }
        }
    }
    let client = cluster::connect(global).await?;
    // 0. Stop the in-cluster reconciler first: a running one puts its finalizer back on a
    //    released object, and deleting that object would then prune its workloads.
    let installed = installed_shards(&client, &global.namespace).await?;
    for shard in std::iter::once(None).chain(installed.iter().map(|s| Some(s.as_str()))) {
        let name = shards::deployment_name(shard);
        ui.step(&format!("stopping {}", described(&name)))?;
        stop_reconciler(&client, &global.namespace, &name, global.timeout, ui).await?;
    }
    // 1. Let go of every object without running its deletion policy: drop finalizers first.
    ui.step("releasing Kustomizations and GitRepositories (their workloads stay)")?;
    release::<Kustomization>(&client, ui).await?;
    release::<GitRepository>(&client, ui).await?;
    // 2. The reconcilers, then the CRDs (which deletes every remaining custom object).
    let mut objects = manifests(&global.namespace, None, false)?;
    shards::add(&mut objects, &installed);
    if args.keep_namespace {
        objects.retain(|o| o["kind"] != "Namespace");
    }
    delete_all(&client, &objects, ui).await?;
    ui.success("uninstall finished")?;
    Ok(Exit::Success)
}

/// "the reconciler" for the main reconciler Deployment, "the reconciler NAME" for a shard's.
fn described(name: &str) -> String {
    if name == shards::deployment_name(None) {
        "the reconciler".to_owned()
    } else {
        format!("the reconciler {name}")
    }
}

/// The shards whose reconcilers are installed in `namespace`.
async fn installed_shards(client: &Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    Ok(shards::installed(
        &shards::deployments(client, namespace).await?,
    ))
}

/// The objects an install adds for `shard` alone.
fn shard_objects(namespace: &str, shard: &str) -> anyhow::Result<Vec<Value>> {
    let plain = manifests(namespace, None, false)?;
    Ok(shards::copies(&plain, &[shard.to_owned()]))
}

/// Deletes `objects`, last first; objects and kinds already gone are skipped.
async fn delete_all(client: &Client, objects: &[Value], ui: &mut Ui<'_>) -> anyhow::Result<()> {
    for object in objects.iter().rev() {
        let (api, name, label) = match dynamic_api(client, object).await {
            Ok(found) => found,
            // The kind is gone already (CRDs deleted by an earlier, interrupted uninstall).
            Err(_) => continue,
        };
        if still_there(api.delete(&name, &DeleteParams::background()).await)
            .with_context(|| format!("deleting {label}"))?
        {
            ui.success(&format!("{label} deleted"))?;
        }
    }
    Ok(())
}

/// Deletes the reconciler Deployment `name` and waits until none of its pods is left.
async fn stop_reconciler(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(deployment) = deployments.get_opt(name).await? else {
        return Ok(());
    };
    // Its pods are found by the Deployment's own selector.
    let selector = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if !still_there(deployments.delete(name, &DeleteParams::foreground()).await)
        .with_context(|| format!("deleting Deployment {namespace}/{name}"))?
    {
        return Ok(());
    }
    if selector.is_empty() {
        // Without matchLabels its pods cannot be told from others; the delete has to do.
        return Ok(());
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&selector);
    let _spinner = ui.waiting(&format!(
        "waiting for the pods of {} to stop",
        described(name)
    ))?;
    let start = Instant::now();
    while !pods.list(&selector).await?.items.is_empty() {
        if start.elapsed() > timeout {
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "the pods of {namespace}/{name} did not stop within {}; nothing was released",
                    cluster::human_duration(timeout)
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn release<K>(client: &Client, ui: &mut Ui<'_>) -> anyhow::Result<()>
where
    K: cluster::Reconcilable,
{
    let api: Api<K> = Api::all(client.clone());
    let items = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for item in items {
        let ns = item.namespace().unwrap_or_default();
        let name = item.name_any();
        let namespaced: Api<K> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        // An object deleted by someone else between the list and here needs nothing more; one
        // that was being deleted goes as soon as its finalizers do.
        let released = namespaced
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if !still_there(released)
            .with_context(|| format!("releasing {} {ns}/{name}", K::kind(&())))?
        {
            continue;
        }
        still_there(namespaced.delete(&name, &DeleteParams::background()).await)
            .with_context(|| format!("deleting {} {ns}/{name}", K::kind(&())))?;
        ui.success(&format!("{} {ns}/{name} deleted", K::kind(&())))?;
    }
    Ok(())
}

/// Whether the object a call acted on still existed: `false` for 404, the error for any other
/// failure.
fn still_there<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_found_means_gone() {
        let status = |code| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("x", "y").with_code(code),
            ))
        };
        assert!(still_there(Ok::<(), kube::Error>(())).unwrap());
        assert!(!still_there::<()>(Err(status(404))).unwrap());
        assert!(still_there::<()>(Err(status(409))).is_err());
    }

    #[test]
    fn manifests_hold_the_crds_then_the_reconciler() {
        let objects = manifests("gitops-system", None, false).unwrap();
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        let crds = gitops_reconciler::api::crd::all().len();
        assert!(
            kinds[..crds]
                .iter()
                .all(|k| *k == "CustomResourceDefinition")
        );
        assert_eq!(kinds[crds], "Namespace");
        for wanted in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "NetworkPolicy",
            "Deployment",
        ] {
            assert!(kinds.contains(&wanted), "no {wanted} in {kinds:?}");
        }
        assert_eq!(manifests("x", None, true).unwrap().len(), crds);
    }

    /// The CRDs an install applies are the committed files users apply by hand (rendered from
    /// the same types), and `check` waits for exactly those, by name.
    #[test]
    fn installed_crds_are_the_committed_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../reconciler")
            .join(gitops_reconciler::api::crd::COMMITTED_DIR);
        let installed = manifests("gitops-system", None, true).unwrap();
        let files = gitops_reconciler::api::crd::all();
        assert_eq!(installed.len(), files.len());
        for ((file, _), object) in files.iter().zip(&installed) {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let committed: Value = gitops_reconciler::yaml::from_str(&text).unwrap();
            assert_eq!(&committed, object, "{file}");
        }
        let names: Vec<&str> = installed
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(crd_names(), names);
    }

    fn deployment(replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gitops-reconciler", "generation": 2},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rollout_is_done_when_all_replicas_are_updated_and_the_leader_is_available() {
        let status = |observed: i64, replicas: i32, updated: i32, available: i32| {
            serde_json::json!({"observedGeneration": observed, "replicas": replicas,
                               "updatedReplicas": updated, "availableReplicas": available})
        };
        // One replica: it must be available.
        assert!(rolled_out(&deployment(1, status(2, 1, 1, 1))));
        assert!(!rolled_out(&deployment(1, status(2, 1, 1, 0))));
        // Two replicas: the leader available, the standby unready by design.
        assert!(rolled_out(&deployment(2, status(2, 2, 2, 1))));
        assert!(!rolled_out(&deployment(2, status(2, 2, 2, 0))));
        // Not yet observed, not all updated, or an old replica still there.
        assert!(!rolled_out(&deployment(2, status(1, 2, 2, 1))));
        assert!(!rolled_out(&deployment(2, status(2, 2, 1, 1))));
        assert!(!rolled_out(&deployment(2, status(2, 3, 2, 1))));
        // No status at all yet.
        assert!(!rolled_out(&deployment(1, serde_json::Value::Null)));
        // Scaled to zero: nothing to wait for.
        assert!(rolled_out(&deployment(0, status(2, 0, 0, 0))));
    }

    #[test]
    fn namespace_and_image_are_substituted() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = format!("registry.local/gitops-reconciler@{digest}");
        let objects = manifests("flux-free", Some(&image), false).unwrap();
        let text = serde_json::to_string(&objects).unwrap();
        assert!(!text.contains("\"gitops-system\""), "{text}");
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["metadata"]["namespace"], "flux-free");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            image.as_str()
        );
        let ns = objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
        assert_eq!(ns["metadata"]["name"], "flux-free");
        for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding") {
            assert_eq!(binding["subjects"][0]["namespace"], "flux-free");
        }
    }
}
