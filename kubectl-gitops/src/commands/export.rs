//! `kubectl gitops export source git | kustomization (NAME | --all)`: the objects as clean YAML
//! to commit to git (no status, no server-set metadata). Secrets referenced by sources are not
//! exported: their data does not belong in git.

use gitops_reconciler::api::{GitRepository, Kustomization};
use kube::Api;

use crate::cli::{GlobalArgs, SelectCommand, SelectSourceCommand, Selection};
use crate::cluster::{self, Reconcilable};
use crate::commands::suspend::selected;
use crate::error::Exit;
use crate::objects;
use crate::ui::Ui;

pub async fn run(
    global: &GlobalArgs,
    command: SelectCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let client = cluster::connect(global).await?;
    let docs = match command {
        SelectCommand::Source(SelectSourceCommand::Git(sel)) => {
            collect(
                Api::<GitRepository>::namespaced(client, &global.namespace),
                global,
                &sel,
            )
            .await?
        }
        SelectCommand::Kustomization(sel) => {
            collect(
                Api::<Kustomization>::namespaced(client, &global.namespace),
                global,
                &sel,
            )
            .await?
        }
    };
    write!(ui.out, "{}", objects::yaml_stream(&docs)?)?;
    Ok(Exit::Success)
}

async fn collect<K: Reconcilable>(
    api: Api<K>,
    global: &GlobalArgs,
    sel: &Selection,
) -> anyhow::Result<Vec<serde_json::Value>> {
    selected(&api, global, sel)
        .await?
        .iter()
        .map(|o| Ok(objects::exportable(&serde_json::to_value(o)?)))
        .collect()
}
