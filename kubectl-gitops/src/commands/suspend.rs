//! `kubectl gitops suspend|resume source git | kustomization (NAME | --all)`. Suspending sets
//! `spec.suspend` (the cluster keeps its state, the reconciler stops); resuming clears it,
//! requests a reconcile and waits for its outcome like `reconcile` does.

use gitops_reconciler::api::{GitRepository, Kustomization};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use crate::cli::{GlobalArgs, SelectCommand, SelectSourceCommand, Selection};
use crate::cluster::{self, Reconcilable};
use crate::commands::create::report_outcome;
use crate::error::{Exit, fail};
use crate::ui::{Ui, escape};

pub async fn run(
    global: &GlobalArgs,
    command: SelectCommand,
    suspend: bool,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let client = cluster::connect(global).await?;
    match command {
        SelectCommand::Source(SelectSourceCommand::Git(sel)) => {
            toggle(
                Api::<GitRepository>::namespaced(client, &global.namespace),
                global,
                &sel,
                suspend,
                ui,
            )
            .await
        }
        SelectCommand::Kustomization(sel) => {
            toggle(
                Api::<Kustomization>::namespaced(client, &global.namespace),
                global,
                &sel,
                suspend,
                ui,
            )
            .await
        }
    }
}

/// The names a selection means: the one named (which must exist) or every object of the kind.
pub async fn selected<K: Reconcilable>(
    api: &Api<K>,
    global: &GlobalArgs,
    sel: &Selection,
) -> anyhow::Result<Vec<K>> {
    match (&sel.name, sel.all) {
        (Some(name), false) => Ok(vec![cluster::get(api, &global.namespace, name).await?]),
        (None, true) => {
            let mut items = api
                .list(&ListParams::default())
                .await
                .map_err(|e| cluster::map_missing_crd(e, K::kind(&()).as_ref()))?
                .items;
            items.sort_by_key(|o| o.name_any());
            Ok(items)
        }
        _ => Err(fail(Exit::Usage, "name an object or pass --all (not both)")),
    }
}

async fn toggle<K: Reconcilable>(
    api: Api<K>,
    global: &GlobalArgs,
    sel: &Selection,
    suspend: bool,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let kind = K::kind(&());
    let objects = selected(&api, global, sel).await?;
    if objects.is_empty() {
        ui.warning(&format!(
            "no {kind} found in namespace {}",
            global.namespace
        ))?;
        return Ok(Exit::Success);
    }
    let mut exit = Exit::Success;
    for object in objects {
        let name = object.name_any();
        let verb = if suspend { "suspending" } else { "resuming" };
        ui.step(&format!(
            "{verb} {kind} {}/{}",
            global.namespace,
            escape(&name)
        ))?;
        // JSON merge patch: `null` removes the field, which is what resuming means.
        let value = if suspend {
            serde_json::json!(true)
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"spec": {"suspend": value}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if suspend {
            ui.success(&format!("{kind} {} suspended", escape(&name)))?;
            continue;
        }
        ui.success(&format!("{kind} {} resumed", escape(&name)))?;
        let token = cluster::request_reconcile(&api, &global.namespace, &name).await?;
        let outcome = {
            let _spinner = ui.waiting(&format!("waiting for {kind} reconciliation"))?;
            cluster::wait_reconciled(&api, &global.namespace, &name, &token, global.timeout).await?
        };
        if report_outcome::<K>(ui, &outcome)? != Exit::Success {
            exit = Exit::Failed;
        }
    }
    Ok(exit)
}
