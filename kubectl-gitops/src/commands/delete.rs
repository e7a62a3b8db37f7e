//! `kubectl gitops delete source git | kustomization NAME [-s]`: asks first (unless -s), deletes,
//! waits until the object is gone (the reconciler's finalizer may run a cleanup first).

use gitops_reconciler::api::{GitRepository, Kustomization};
use kube::Api;
use kube::api::DeleteParams;

use crate::cli::{DeleteArgs, DeleteCommand, DeleteSourceCommand, GlobalArgs};
use crate::cluster::{self, Reconcilable};
use crate::error::{Exit, Failure};
use crate::ui::{Ui, escape};

pub async fn run(
    global: &GlobalArgs,
    command: DeleteCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    match command {
        DeleteCommand::Source(DeleteSourceCommand::Git(args)) => {
            delete::<GitRepository>(global, &args, ui).await
        }
        DeleteCommand::Kustomization(args) => delete::<Kustomization>(global, &args, ui).await,
    }
}

async fn delete<K: Reconcilable>(
    global: &GlobalArgs,
    args: &DeleteArgs,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let kind = K::kind(&());
    let namespace = &global.namespace;
    let client = cluster::connect(global).await?;
    let api: Api<K> = Api::namespaced(client, namespace);
    cluster::get(&api, namespace, &args.name).await?;
    if !args.silent {
        let what = if kind == "Kustomization" {
            " (with prune enabled, the objects it applied are deleted too)"
        } else {
            ""
        };
        match ui.confirm(&format!(
            "Delete {kind} {namespace}/{}{what}?",
            escape(&args.name)
        ))? {
            Some(true) => {}
            Some(false) => {
                ui.warning("nothing deleted")?;
                return Ok(Exit::Failed);
            }
            None => {
                return Err(Failure::new(
                    Exit::Usage,
                    "refusing to delete without confirmation: there is no terminal to ask",
                )
                .hint("pass -s/--silent to delete without asking")
                .into());
            }
        }
    }
    ui.step(&format!(
        "deleting {kind} {namespace}/{}",
        escape(&args.name)
    ))?;
    match api.delete(&args.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!("deleting {kind} {namespace}/{}", args.name)));
        }
    }
    {
        let _spinner = ui.waiting(&format!("waiting for {kind} to be deleted"))?;
        let start = std::time::Instant::now();
        while api.get_opt(&args.name).await?.is_some() {
            if start.elapsed() >= global.timeout {
                return Err(Failure::new(Exit::Timeout, format!("{kind} {namespace}/{} is still terminating after {}", args.name, cluster::human_duration(global.timeout)))
                    .hint("its finalizer is handled by the reconciler: is it running? run kubectl gitops check")
                    .into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    ui.success(&format!("{kind} deleted"))?;
    Ok(Exit::Success)
}
