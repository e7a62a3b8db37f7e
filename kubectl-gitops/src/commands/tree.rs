//! `kubectl gitops tree kustomization NAME` (the inventory as a tree, nested Kustomizations
//! expanded) and `kubectl gitops trace KIND/NAME` (which Kustomization manages an object, from
//! which source and revision, with their status).

use std::collections::BTreeSet;

use anyhow::Context as _;
use gitops_reconciler::api::Kustomization;
use gitops_reconciler::api::conditions::{self, meta};
use kube::api::{ApiResource, DynamicObject};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client, ResourceExt as _};

use crate::cli::{GlobalArgs, TraceArgs, TreeCommand};
use crate::cluster;
use crate::error::{Exit, Failure, fail};
use crate::objects::ObjectId;
use crate::ui::{Ui, escape};

/// Deepest nesting of Kustomizations `tree` follows (an inventory cycle stops earlier).
const MAX_DEPTH: usize = 16;

pub async fn tree(
    global: &GlobalArgs,
    command: TreeCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let TreeCommand::Kustomization(args) = command;
    let client = cluster::connect(global).await?;
    let api: Api<Kustomization> = Api::namespaced(client.clone(), &global.namespace);
    let root = cluster::get(&api, &global.namespace, &args.name).await?;
    let mut lines = vec![format!("Kustomization/{}/{}", global.namespace, args.name)];
    let mut visited = BTreeSet::from([(global.namespace.clone(), args.name.clone())]);
    let mut nodes = Vec::new();
    expand(&client, &root, &mut visited, 0, &mut nodes).await?;
    render_tree(&nodes, "", &mut lines);
    for line in lines {
        writeln!(ui.out, "{}", escape(&line))?;
    }
    Ok(Exit::Success)
}

/// One object of an inventory, with its own inventory when it is a Kustomization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub children: Vec<Node>,
}

fn inventory_ids(ks: &Kustomization) -> Vec<ObjectId> {
    // Inventory order is the reconciler's apply order: keep it.
    ks.status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|inv| {
            inv.entries
                .iter()
                .filter_map(|e| ObjectId::parse(&e.id))
                .collect()
        })
        .unwrap_or_default()
}

fn expand<'a>(
    client: &'a Client,
    ks: &'a Kustomization,
    visited: &'a mut BTreeSet<(String, String)>,
    depth: usize,
    out: &'a mut Vec<Node>,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        for id in inventory_ids(ks) {
            let mut node = Node {
                label: id.display(),
                children: Vec::new(),
            };
            let nested = id.group == gitops_reconciler::api::GROUP && id.kind == "Kustomization";
            if nested
                && depth < MAX_DEPTH
                && visited.insert((id.namespace.clone(), id.name.clone()))
            {
                let api: Api<Kustomization> = Api::namespaced(client.clone(), &id.namespace);
                if let Some(child) = api.get_opt(&id.name).await? {
                    expand(client, &child, visited, depth + 1, &mut node.children).await?;
                }
            }
            out.push(node);
        }
        Ok(())
    })
}

/// Draws `nodes` below a root line with box-drawing branches.
pub fn render_tree(nodes: &[Node], prefix: &str, lines: &mut Vec<String>) {
    for (i, node) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (branch, indent) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        lines.push(format!("{prefix}{branch}{}", node.label));
        render_tree(&node.children, &format!("{prefix}{indent}"), lines);
    }
}

pub async fn trace(global: &GlobalArgs, args: &TraceArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let (kind, name) = match args.object.as_slice() {
        [one] => one.split_once('/').ok_or_else(|| {
            fail(
                Exit::Usage,
                format!(
                    "invalid object '{}': expected KIND/NAME or KIND NAME",
                    escape(one)
                ),
            )
        })?,
        [kind, name] => (kind.as_str(), name.as_str()),
        _ => return Err(fail(Exit::Usage, "expected KIND/NAME or KIND NAME")),
    };
    let client = cluster::connect(global).await?;
    let (resource, scope) = resolve_kind(&client, kind, args.api_version.as_deref()).await?;
    let namespace = global.namespace.as_str();
    let api: Api<DynamicObject> = match scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let where_ = match scope {
        Scope::Namespaced => format!("{}/{namespace}/{name}", resource.kind),
        Scope::Cluster => format!("{}/{name}", resource.kind),
    };
    let object = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {where_}"))?
        .ok_or_else(|| fail(Exit::NotFound, format!("{} not found", escape(&where_))))?;
    let labels = object.labels();
    let (Some(ks_name), Some(ks_ns)) = (
        labels.get(meta::OWNER_NAME_LABEL),
        labels.get(meta::OWNER_NAMESPACE_LABEL),
    ) else {
        return Err(Failure::new(
            Exit::Failed,
            format!("{} is not managed by kubectl-gitops", escape(&where_)),
        )
        .hint(format!("it has no {} label", meta::OWNER_NAME_LABEL))
        .into());
    };
    let mut w = Vec::new();
    w.push(("Object", where_.clone()));
    if let Scope::Namespaced = scope {
        w.push(("Namespace", namespace.to_owned()));
    }
    let ks_api: Api<Kustomization> = Api::namespaced(client.clone(), ks_ns);
    let ks = ks_api.get_opt(ks_name).await?;
    let Some(ks) = ks else {
        w.push((
            "Status",
            format!("orphaned: its Kustomization {ks_ns}/{ks_name} no longer exists"),
        ));
        print_block(ui, &w)?;
        return Ok(Exit::Failed);
    };
    let id = ObjectId {
        namespace: object.namespace().unwrap_or_default(),
        name: name.to_owned(),
        group: resource.group.clone(),
        kind: resource.kind.clone(),
    };
    let in_inventory = inventory_ids(&ks).contains(&id);
    w.push((
        "Status",
        if in_inventory {
            "Managed by kubectl-gitops".to_owned()
        } else {
            format!("labelled for {ks_ns}/{ks_name} but not in its inventory (not applied by it, or about to be pruned)")
        },
    ));
    print_block(ui, &w)?;
    writeln!(ui.out, "---")?;
    let status = ks.status.clone().unwrap_or_default();
    let mut k = vec![
        ("Kustomization", ks_name.clone()),
        ("Namespace", ks_ns.clone()),
    ];
    if let Some(target) = &ks.spec.target_namespace {
        k.push(("Target", target.clone()));
    }
    k.push(("Path", ks.spec.path.clone().unwrap_or_else(|| "./".into())));
    k.push((
        "Revision",
        status.last_applied_revision.clone().unwrap_or_default(),
    ));
    k.push(("Status", condition_summary(&status.conditions)));
    print_block(ui, &k)?;
    let source = &ks.spec.source_ref;
    let src_ns = source.namespace.clone().unwrap_or_else(|| ks_ns.clone());
    let src_api: Api<DynamicObject> =
        Api::namespaced_with(client, &src_ns, &source.kind.api_resource());
    writeln!(ui.out, "---")?;
    let object = src_api
        .get_opt(&source.name)
        .await
        .with_context(|| format!("reading {} {src_ns}/{}", source.kind, source.name))?;
    match object {
        Some(object) => {
            let state = source.kind.state_of(&object)?;
            let mut s = vec![
                (state.kind.name(), state.name.clone()),
                ("Namespace", state.namespace.clone()),
            ];
            s.extend(state.origin.iter().cloned());
            s.push((
                "Revision",
                state
                    .artifact
                    .as_ref()
                    .map(|a| a.revision.clone())
                    .unwrap_or_default(),
            ));
            s.push(("Status", condition_summary(&state.conditions)));
            print_block(ui, &s)?;
        }
        None => print_block(
            ui,
            &[
                (source.kind.name(), source.name.clone()),
                ("Status", "not found".into()),
            ],
        )?,
    }
    Ok(Exit::Success)
}

fn condition_summary(
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> String {
    match conditions::get(conds, conditions::types::READY) {
        Some(c) if c.status == conditions::status::TRUE => format!("Ready: {}", c.message),
        Some(c) => format!("Not ready ({}): {}", c.reason, c.message),
        None => "waiting to be reconciled".to_owned(),
    }
}

fn print_block(ui: &mut Ui<'_>, pairs: &[(&str, String)]) -> anyhow::Result<()> {
    // One width for the blocks of a trace ("Kustomization:", "GitRepository:"); a longer label
    // ("ExternalArtifact:") widens its own block.
    let width = pairs
        .iter()
        .map(|(k, _)| k.len() + 1)
        .max()
        .unwrap_or(0)
        .max(14);
    for (key, value) in pairs {
        writeln!(
            ui.out,
            "{:<width$} {}",
            format!("{key}:"),
            escape(value),
            width = width
        )?;
    }
    Ok(())
}

/// Finds the resource of `kind` (kind, plural or singular, any case) by discovery.
async fn resolve_kind(
    client: &Client,
    kind: &str,
    api_version: Option<&str>,
) -> anyhow::Result<(ApiResource, Scope)> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the cluster's kinds")?;
    let wanted = kind.to_ascii_lowercase();
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            let matches = resource.kind.to_ascii_lowercase() == wanted
                || resource.plural == wanted
                || (wanted.ends_with('s')
                    && resource.kind.to_ascii_lowercase() == wanted[..wanted.len() - 1]);
            let version_ok = api_version.is_none_or(|v| resource.api_version == v);
            if matches && version_ok {
                found.push((resource, caps.scope));
            }
        }
    }
    match found.len() {
        0 => Err(fail(
            Exit::NotFound,
            format!(
                "the cluster has no kind '{}'{}",
                escape(kind),
                api_version.map(|v| format!(" in {v}")).unwrap_or_default()
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            // Prefer the core and well-known groups, as kubectl does.
            if let Some(i) = found
                .iter()
                .position(|(r, _)| r.group.is_empty() || r.group == "apps")
            {
                return Ok(found.remove(i));
            }
            let names: Vec<String> = found.iter().map(|(r, _)| r.api_version.clone()).collect();
            Err(Failure::new(
                Exit::Usage,
                format!(
                    "kind '{}' exists in several groups: {}",
                    escape(kind),
                    names.join(", ")
                ),
            )
            .hint("pick one with --api-version")
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_draw_nested_inventories() {
        let nodes = vec![
            Node {
                label: "Namespace/instavote".into(),
                children: vec![],
            },
            Node {
                label: "Kustomization/gitops-system/apps".into(),
                children: vec![
                    Node {
                        label: "Deployment/instavote/vote".into(),
                        children: vec![],
                    },
                    Node {
                        label: "Service/instavote/vote".into(),
                        children: vec![],
                    },
                ],
            },
            Node {
                label: "Service/instavote/redis".into(),
                children: vec![],
            },
        ];
        let mut lines = vec!["Kustomization/gitops-system/root".to_owned()];
        render_tree(&nodes, "", &mut lines);
        assert_eq!(
            lines.join("\n"),
            "Kustomization/gitops-system/root\n\
             ├── Namespace/instavote\n\
             ├── Kustomization/gitops-system/apps\n\
             │   ├── Deployment/instavote/vote\n\
             │   └── Service/instavote/vote\n\
             └── Service/instavote/redis"
        );
    }
}
