//! `build kustomization NAME --path DIR` and `diff kustomization NAME --path DIR`: the
//! reconciler's own render ([`gitops_reconciler::controller::render`]: build, substitutions,
//! the Kustomization's policies and the ClusterPolicies that select it, target namespace, owner
//! labels, intent digest) on a local checkout. `build` prints the objects exactly as the
//! reconciler would apply them; `diff` previews the apply (live reads, drift rules, server-side
//! dry-run) and the prune with the reconciler's apply code.
//!
//! Offline: with `--kustomization-file`, `--cluster-policies` and (when the Kustomization uses
//! substituteFrom) `--substitute-from`, `build` needs no cluster; `--dry-run` never dials.

use std::path::{Path, PathBuf};

use gitops_reconciler::api::Kustomization;
use gitops_reconciler::apply::{
    self, Action, ApplyOptions, DriftRules, ObjectRef, Owner, Previewed, Resolver,
};
use gitops_reconciler::controller::kustomization::PolicyEngine;
use gitops_reconciler::controller::render::{
    self, Cluster, Keys, Lookups, RenderError, RenderInput, Rendered,
};
use gitops_reconciler::policy::{HostConfig, Violation};
use gitops_reconciler::sops::decryptor::is_sops_mask;
use kube::{Api, Client};
use serde_json::Value;

use crate::cli::{GlobalArgs, LocalBuildArgs, LocalBuildCommand};
use crate::cluster;
use crate::error::{Exit, Failure, fail};
use crate::ui::{Ui, escape, render_table};

fn args(command: LocalBuildCommand) -> LocalBuildArgs {
    let LocalBuildCommand::Kustomization(args) = command;
    args
}

/// Which command renders: they differ only in the exit code of a failed render (`diff` keeps
/// 1 for "differences", so its errors exit 6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Build,
    Diff,
}

impl Command {
    fn failed(self) -> Exit {
        match self {
            Command::Build => Exit::Failed,
            Command::Diff => Exit::Other,
        }
    }
}

/// The Kustomization, the directory, and everything the render needs.
struct Prepared {
    ks: Kustomization,
    /// The git checkout holding `--path` (or `--path` itself outside git).
    root: PathBuf,
    /// `--path` relative to `root`.
    path: String,
    client: Option<Client>,
    substitute_from: Option<Vec<Value>>,
    cluster_policies: Option<Vec<Value>>,
}

fn read_objects(flag: &str, path: &Path) -> anyhow::Result<Vec<Value>> {
    gitops_reconciler::policy::read_manifests(path)
        .map_err(|e| fail(Exit::Usage, format!("{flag}: {e}")))
}

/// The Kustomization named `name` among the manifests of `file` (its namespace: the manifest's,
/// else `-n`).
fn kustomization_from_file(
    file: &Path,
    name: &str,
    namespace: &str,
) -> anyhow::Result<Kustomization> {
    let objects = read_objects("--kustomization-file", file)?;
    let found = objects.into_iter().find(|o| {
        o["kind"] == "Kustomization"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("kubectl-gitops.io/"))
            && o["metadata"]["name"] == name
    });
    let Some(object) = found else {
        return Err(fail(
            Exit::NotFound,
            format!(
                "--kustomization-file {}: no kubectl-gitops.io Kustomization named {name}",
                file.display()
            ),
        ));
    };
    let mut ks: Kustomization = serde_json::from_value(object).map_err(|e| {
        fail(
            Exit::Usage,
            format!(
                "--kustomization-file {}: Kustomization {name}: {e}",
                file.display()
            ),
        )
    })?;
    if ks.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        ks.metadata.namespace = Some(namespace.to_owned());
    }
    Ok(ks)
}

/// The nearest directory at or above `dir` holding `.git` (the artifact root the reconciler
/// would see), and `dir` relative to it; outside git, `dir` itself.
fn checkout_root(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let dir = dir
        .canonicalize()
        .map_err(|e| fail(Exit::Usage, format!("--path {}: {e}", dir.display())))?;
    if !dir.is_dir() {
        return Err(fail(
            Exit::Usage,
            format!("--path {} is not a directory", dir.display()),
        ));
    }
    let root = dir
        .ancestors()
        .find(|a| a.join(".git").exists())
        .unwrap_or(&dir)
        .to_owned();
    let relative = dir
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((root, relative))
}

/// Whether anything the render needs must come from the cluster.
fn needs_cluster(args: &LocalBuildArgs, ks: Option<&Kustomization>) -> bool {
    let Some(ks) = ks else { return true };
    let substitutes = ks
        .spec
        .post_build
        .as_ref()
        .is_some_and(|p| !p.substitute_from.is_empty());
    let config_maps = ks
        .spec
        .policies
        .iter()
        .any(|p| p.module.config_map_ref.is_some());
    args.cluster_policies.is_none()
        || (substitutes && args.substitute_from.is_none())
        || config_maps
}

async fn prepare(
    global: &GlobalArgs,
    args: &LocalBuildArgs,
    command: Command,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Prepared> {
    let Some(dir) = args.path.clone() else {
        return Err(Failure::new(
            Exit::Usage,
            "--path is required: the local directory that stands for the Kustomization's spec.path",
        )
        .hint("e.g. kubectl gitops build kustomization vote-dev --path ./deploy/vote")
        .into());
    };
    if args.dry_run && args.kustomization_file.is_none() {
        return Err(Failure::new(
            Exit::Usage,
            "--dry-run needs --kustomization-file (without a cluster the Kustomization comes from a file)",
        )
        .into());
    }
    if args.dry_run && command == Command::Diff {
        return Err(fail(
            Exit::Usage,
            "diff compares with the cluster: --dry-run is for build",
        ));
    }
    let (root, path) = checkout_root(&dir)?;
    let from_file = match &args.kustomization_file {
        Some(file) => Some(kustomization_from_file(
            file,
            &args.name,
            &global.namespace,
        )?),
        None => None,
    };
    let client =
        if command == Command::Diff || (!args.dry_run && needs_cluster(args, from_file.as_ref())) {
            Some(cluster::connect(global).await?)
        } else {
            None
        };
    let ks = match (from_file, &client) {
        (Some(ks), _) => ks,
        (None, Some(client)) => {
            let api: Api<Kustomization> = Api::namespaced(client.clone(), &global.namespace);
            cluster::get(&api, &global.namespace, &args.name).await?
        }
        (None, None) => {
            return Err(fail(
                Exit::Usage,
                "without a cluster the Kustomization must come from --kustomization-file",
            ));
        }
    };
    if args.dry_run && args.cluster_policies.is_none() {
        ui.warning(
            "--dry-run without --cluster-policies: no ClusterPolicy runs (the cluster's are not read)",
        )?;
    }
    if ks.spec.wait.unwrap_or(false) && !ks.spec.health_checks.is_empty() {
        ui.warning(
            "spec.wait is true, so spec.healthChecks is ignored (as in Flux): every applied object is checked",
        )?;
    }
    let cluster_policies = match &args.cluster_policies {
        Some(dir) => Some(read_objects("--cluster-policies", dir)?),
        None => None,
    };
    if let Some(objects) = &cluster_policies {
        let namespace = ks.metadata.namespace.as_deref().unwrap_or_default();
        let selects_namespaces = objects.iter().any(|o| {
            o["kind"] == "ClusterPolicy" && !o["spec"]["selector"]["namespaceSelector"].is_null()
        });
        let labelled = objects
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == namespace);
        if selects_namespaces && !labelled {
            ui.warning(&format!(
                "--cluster-policies holds no Namespace {namespace}: namespace selectors see only its kubernetes.io/metadata.name label"
            ))?;
        }
    }
    Ok(Prepared {
        ks,
        root,
        path,
        client,
        substitute_from: match &args.substitute_from {
            Some(file) => Some(read_objects("--substitute-from", file)?),
            None => None,
        },
        cluster_policies,
    })
}

/// Runs the reconciler's render; a denial prints the violation table (on stderr) and fails.
async fn run_render(
    prepared: &Prepared,
    resolver: &Resolver,
    dry_run: bool,
    command: Command,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Rendered> {
    let input = RenderInput {
        kustomization: &prepared.ks,
        root: &prepared.root,
        path: Some(prepared.path.clone()),
        revision: "",
        default_service_account: None,
        dry_run: true,
    };
    let lookups = Lookups {
        cluster: prepared.client.as_ref().map(|c| Cluster {
            tenant: c,
            admin: c,
            resolver,
            cluster_policies: None,
        }),
        substitute_from: prepared.substitute_from.clone(),
        cluster_policies: prepared.cluster_policies.clone(),
        skip_missing_substitutions: dry_run,
        // The CLI never holds decryption keys: encrypted values print masked, as in Flux.
        keys: Keys::Masked,
    };
    let engine = PolicyEngine::on_first_use(HostConfig {
        cache_dir: super::policy::cache_dir(),
        ..HostConfig::default()
    });
    let rendered = match render::render(&input, &lookups, &engine).await {
        Ok(rendered) => rendered,
        Err(RenderError::Policy {
            reason,
            message,
            violations,
            ..
        }) => {
            if !violations.is_empty() {
                write!(ui.err, "{}", violation_table(&violations))?;
            }
            return Err(fail(command.failed(), format!("{reason}: {message}")));
        }
        Err(e) => return Err(fail(command.failed(), format!("{e}"))),
    };
    for notice in &rendered.notices {
        ui.warning(notice)?;
    }
    let findings: Vec<Violation> = rendered
        .warnings
        .iter()
        .chain(&rendered.audit)
        .cloned()
        .collect();
    if !findings.is_empty() {
        write!(ui.err, "{}", violation_table(&findings))?;
    }
    if !rendered.audit.is_empty() {
        ui.warning(&format!(
            "{} violation(s) of policies in audit mode (reported, not enforced)",
            rendered.audit.len()
        ))?;
    }
    for failure in &rendered.ignored_failures {
        ui.warning(&format!("policy did not run: {failure}"))?;
    }
    Ok(rendered)
}

/// Violations as the reconciler reports them, one row each.
fn violation_table(violations: &[Violation]) -> String {
    let rows: Vec<Vec<String>> = violations
        .iter()
        .map(|v| {
            let mut row = vec![v.policy.clone()];
            row.extend(super::policy::violation_cells(v));
            row
        })
        .collect();
    render_table(
        &["POLICY", "SEVERITY", "OBJECT", "FIELD", "MESSAGE"],
        &rows,
        false,
    )
}

pub async fn build(
    global: &GlobalArgs,
    command: LocalBuildCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let args = args(command);
    let prepared = prepare(global, &args, Command::Build, ui).await?;
    let resolver = Resolver::new();
    let rendered = run_render(&prepared, &resolver, args.dry_run, Command::Build, ui).await?;
    // Secret values never reach the output, not even from a local checkout.
    let objects: Vec<Value> = rendered
        .plan
        .objects
        .into_iter()
        .map(|p| mask_secret(p.intent))
        .collect();
    write!(ui.out, "{}", crate::objects::yaml_stream(&objects)?)?;
    Ok(Exit::Success)
}

pub async fn diff(
    global: &GlobalArgs,
    command: LocalBuildCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let args = args(command);
    let prepared = prepare(global, &args, Command::Diff, ui).await?;
    let Some(client) = prepared.client.clone() else {
        return Err(fail(Exit::Usage, "diff needs a cluster"));
    };
    // The render's resolver expects the kinds the build's CRDs define (and waits for them); the
    // preview reports those as created at once.
    let resolver = Resolver::new();
    let rendered = run_render(&prepared, &resolver, false, Command::Diff, ui).await?;
    let ks = &prepared.ks;
    let owner = Owner {
        name: ks.metadata.name.clone().unwrap_or_default(),
        namespace: ks.metadata.namespace.clone().unwrap_or_default(),
    };
    let opts = ApplyOptions {
        owner: owner.clone(),
        force: ks.spec.force.unwrap_or(false),
        concurrency: 8,
        drift: DriftRules::new(&ks.spec.ignore)
            .map_err(|e| fail(Exit::Usage, format!("spec.ignore: {e}")))?,
        definitions_timeout: std::time::Duration::from_secs(0),
        owner_lookup: Some(apply::OwnerLookup::new(client.clone())),
        known: None,
    };
    let preview_resolver = Resolver::new();
    let previews = apply::preview(&client, &preview_resolver, &rendered.plan, &opts)
        .await
        .map_err(|e| fail(Exit::Other, format!("{e}")))?;
    let mut changed = false;
    for preview in &previews {
        changed |= print_preview(preview, ui)?;
    }
    changed |= print_prune(&client, &preview_resolver, ks, &rendered, &owner, ui).await?;
    if !changed {
        ui.success("no differences")?;
    }
    Ok(if changed { Exit::Failed } else { Exit::Success })
}

fn label(id: &ObjectRef) -> String {
    match &id.namespace {
        Some(ns) => format!("{}/{ns}/{}", id.kind, id.name),
        None => format!("{}/{}", id.kind, id.name),
    }
}

/// Prints one object's change; true when it would change.
fn print_preview(preview: &Previewed, ui: &mut Ui<'_>) -> anyhow::Result<bool> {
    if preview.action == Action::Unchanged {
        return Ok(false);
    }
    let label = label(&preview.id);
    let old = preview
        .live
        .clone()
        .map(comparable)
        .map(|v| yaml(&v))
        .transpose()?
        .unwrap_or_default();
    let new = match &preview.desired {
        Some(desired) => yaml(&comparable(keep_live_for_sops_masks(
            desired.clone(),
            preview.live.as_ref(),
        )))?,
        None => String::new(),
    };
    if preview.live.is_some() && old == new {
        // Only what the server does not keep differs (e.g. a digest the dry-run normalised).
        return Ok(false);
    }
    writeln!(ui.out, "► {} {}", escape(&label), preview.action)?;
    if preview.desired.is_none() {
        let why = if preview.action == Action::Recreated {
            "an immutable field changed and force is set: deleted and created again"
        } else {
            "its kind is defined by a CustomResourceDefinition of this build: not dry-run"
        };
        writeln!(ui.out, "  ({why})")?;
        return Ok(true);
    }
    let text = similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {label}"), &format!("desired {label}"))
        .to_string();
    ui.diff(&text)?;
    Ok(true)
}

/// Lists what a prune would delete (server-side dry-run deletes of the live Kustomization's
/// inventory entries that left the build); true when something would be pruned.
async fn print_prune(
    client: &Client,
    resolver: &Resolver,
    ks: &Kustomization,
    rendered: &Rendered,
    owner: &Owner,
    ui: &mut Ui<'_>,
) -> anyhow::Result<bool> {
    if !ks.spec.prune {
        return Ok(false);
    }
    let api: Api<Kustomization> = Api::namespaced(client.clone(), &owner.namespace);
    let live = api.get_opt(&owner.name).await?;
    let inventory = live.and_then(|l| l.status).and_then(|s| s.inventory);
    let stale = apply::inventory::stale(inventory.as_ref(), &rendered.plan.refs());
    if stale.is_empty() {
        return Ok(false);
    }
    let outcome = apply::prune_dry_run(client, resolver, &stale, owner).await;
    for id in &outcome.deleted {
        writeln!(ui.out, "► {} pruned", escape(&label(id)))?;
    }
    for (id, why) in &outcome.failed {
        ui.warning(&format!("{}: a prune would fail: {why}", label(id)))?;
    }
    Ok(!outcome.deleted.is_empty())
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

/// A desired Secret whose values are SOPS masks takes the live values of the same keys (as
/// `flux diff` does): what the CLI cannot decrypt shows as unchanged, added or removed keys
/// still show.
fn keep_live_for_sops_masks(mut desired: Value, live: Option<&Value>) -> Value {
    let Some(live_data) = live.and_then(|l| l.get("data")).and_then(Value::as_object) else {
        return desired;
    };
    if desired["kind"] == "Secret"
        && let Some(data) = desired.get_mut("data").and_then(Value::as_object_mut)
    {
        for (key, value) in data.iter_mut() {
            if value.as_str().is_some_and(is_sops_mask)
                && let Some(live_value) = live_data.get(key)
            {
                *value = live_value.clone();
            }
        }
    }
    desired
}

/// Replaces Secret values by a mask carrying a short digest (a SOPS mask stays as it is).
fn mask_secret(mut object: Value) -> Value {
    if object["kind"] == "Secret" {
        for key in ["data", "stringData"] {
            if let Some(data) = object.get_mut(key).and_then(Value::as_object_mut) {
                for value in data.values_mut() {
                    let text = value.as_str().unwrap_or_default();
                    if is_sops_mask(text) {
                        continue;
                    }
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

    #[test]
    fn sops_masks_print_as_flux_prints_them_and_diff_as_unchanged() {
        // base64 of Flux's `**SOPS**`
        let masked = "KipTT1BTKio=";
        let desired = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"password": masked, "added": masked}
        });
        assert_eq!(mask_secret(desired.clone())["data"]["password"], masked);
        let live = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"password": "aGVsbG8="}
        });
        let compared = keep_live_for_sops_masks(desired, Some(&live));
        assert_eq!(compared["data"]["password"], "aGVsbG8=");
        // A key the cluster does not have yet still shows as new.
        assert_eq!(compared["data"]["added"], masked);
    }

    #[test]
    fn the_checkout_root_is_the_nearest_git_directory() {
        let base = std::env::temp_dir().join(format!("gitops-root-{}", std::process::id()));
        let dir = base.join("deploy/vote");
        std::fs::create_dir_all(&dir).unwrap();
        let (root, path) = checkout_root(&dir).unwrap();
        assert_eq!((root, path.as_str()), (dir.canonicalize().unwrap(), ""));
        std::fs::create_dir_all(base.join(".git")).unwrap();
        let (root, path) = checkout_root(&dir).unwrap();
        assert_eq!(root, base.canonicalize().unwrap());
        assert_eq!(path, "deploy/vote");
        let _ = std::fs::remove_dir_all(&base);
    }
}
