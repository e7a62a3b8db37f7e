//! `kubectl gitops reconcile source git NAME | kustomization NAME [--with-source] | receiver
//! NAME`: write the
//! reconcile-requested-at annotation, wait until the status echoes it in
//! `lastHandledReconcileAt`, print the outcome, exit 1 when it is not Ready. `--with-source`
//! reconciles the source first when this reconciler produces its kind
//! ([`SourceKind::produced_here`]); another tool's artifact is used as it is.

use gitops_reconciler::api::{GitRepository, Kustomization, Receiver, SourceKind};
use kube::{Api, Client};

use crate::cli::{GlobalArgs, ReconcileCommand, ReconcileSourceCommand};
use crate::cluster::{self, Reconcilable};
use crate::commands::create::report_outcome;
use crate::error::{Exit, Failure};
use crate::ui::Ui;

pub async fn run(
    global: &GlobalArgs,
    command: ReconcileCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let client = cluster::connect(global).await?;
    match command {
        ReconcileCommand::Source(ReconcileSourceCommand::Git(args)) => {
            reconcile::<GitRepository>(&client, global, &global.namespace, &args.name, ui).await
        }
        ReconcileCommand::Kustomization(args) => {
            if args.with_source {
                let api: Api<Kustomization> = Api::namespaced(client.clone(), &global.namespace);
                let ks = cluster::get(&api, &global.namespace, &args.name).await?;
                let source = &ks.spec.source_ref;
                let source_ns = source
                    .namespace
                    .clone()
                    .unwrap_or_else(|| global.namespace.clone());
                let exit = match source.kind {
                    SourceKind::GitRepository => {
                        reconcile::<GitRepository>(&client, global, &source_ns, &source.name, ui)
                            .await?
                    }
                    kind => {
                        debug_assert!(!kind.produced_here());
                        ui.step(&format!(
                            "{kind} {source_ns}/{} is published by its producer: using its current artifact",
                            source.name
                        ))?;
                        Exit::Success
                    }
                };
                if exit != Exit::Success {
                    return Ok(exit);
                }
            }
            reconcile::<Kustomization>(&client, global, &global.namespace, &args.name, ui).await
        }
        ReconcileCommand::Receiver(args) => {
            reconcile::<Receiver>(&client, global, &global.namespace, &args.name, ui).await
        }
    }
}

/// Requests a reconcile of one object and reports its outcome.
pub async fn reconcile<K: Reconcilable>(
    client: &Client,
    global: &GlobalArgs,
    namespace: &str,
    name: &str,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object = cluster::get(&api, namespace, name).await?;
    if object.suspended() {
        return Err(Failure::new(
            Exit::Failed,
            format!("{kind} {namespace}/{name} is suspended"),
        )
        .hint(match resume_noun(&kind) {
            Some(noun) => {
                format!("resume it first: kubectl gitops resume {noun} {name} -n {namespace}")
            }
            None => format!("resume it first: remove spec.suspend from {kind} {namespace}/{name}"),
        })
        .into());
    }
    ui.step(&format!("annotating {kind} {namespace}/{name}"))?;
    let token = cluster::request_reconcile(&api, namespace, name).await?;
    let outcome = {
        let _spinner = ui.waiting(&format!("waiting for {kind} reconciliation"))?;
        cluster::wait_reconciled(&api, namespace, name, &token, global.timeout).await?
    };
    report_outcome::<K>(ui, &outcome)
}

/// The `resume` subcommand of `kind`, where there is one.
fn resume_noun(kind: &str) -> Option<&'static str> {
    match kind {
        "GitRepository" => Some("source git"),
        "Kustomization" => Some("kustomization"),
        _ => None,
    }
}
