//! One module per command group. [`dispatch`] starts the async runtime only for commands that
//! talk to the cluster, so `version --client` and `completion` stay instant.

pub mod bootstrap;
pub mod check;
pub mod completion;
pub mod create;
pub mod delete;
pub mod events;
pub mod export;
pub mod get;
pub mod install;
pub mod local;
pub mod logs;
pub mod notify;
pub mod policy;
pub mod reconcile;
pub mod shards;
pub mod suspend;
pub mod tree;
pub mod version;

use std::future::Future;

use crate::cli::{Cli, Command};
use crate::error::Exit;
use crate::ui::Ui;

/// Runs the parsed command line.
pub fn dispatch(cli: Cli, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    init_tracing(cli.global.verbose);
    let global = cli.global;
    match cli.command {
        Command::Completion(args) => completion::run(&args, ui),
        Command::Complete(args) => completion::complete(&args.words, ui),
        Command::Version(args) if args.client => version::run_client(&args, ui),
        Command::Version(args) => block_on(version::run(&global, &args, ui)),
        Command::Check(args) => block_on(check::run(&global, &args, ui)),
        Command::Install(args) => block_on(install::install(&global, &args, ui)),
        Command::Uninstall(args) => block_on(install::uninstall(&global, &args, ui)),
        Command::Bootstrap(crate::cli::BootstrapCommand::Git(args)) => {
            block_on(bootstrap::git(&global, &args, ui))
        }
        Command::Create(cmd) => block_on(create::run(&global, cmd, ui)),
        Command::Get(cmd) => block_on(get::run(&global, cmd, ui)),
        Command::Reconcile(cmd) => block_on(reconcile::run(&global, cmd, ui)),
        Command::Suspend(cmd) => block_on(suspend::run(&global, cmd, true, ui)),
        Command::Resume(cmd) => block_on(suspend::run(&global, cmd, false, ui)),
        Command::Delete(cmd) => block_on(delete::run(&global, cmd, ui)),
        Command::Export(cmd) => block_on(export::run(&global, cmd, ui)),
        Command::Diff(cmd) => block_on(local::diff(&global, cmd, ui)),
        Command::Build(cmd) => block_on(local::build(&global, cmd, ui)),
        Command::Tree(cmd) => block_on(tree::tree(&global, cmd, ui)),
        Command::Trace(args) => block_on(tree::trace(&global, &args, ui)),
        Command::Events(args) => block_on(events::run(&global, &args, ui)),
        Command::Logs(args) => block_on(logs::run(&global, &args, ui)),
        Command::Policy(crate::cli::PolicyCommand::Test(args)) => policy::test(&args, ui),
    }
}

fn block_on<F: Future<Output = anyhow::Result<Exit>>>(future: F) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = future => result,
            _ = tokio::signal::ctrl_c() => {
                Err(crate::error::fail(Exit::Other, "interrupted"))
            }
        }
    })
}

fn init_tracing(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let level = if verbose == 1 { "debug" } else { "trace" };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "kubectl_gitops={level},gitops_reconciler={level},kube={level}"
    ));
    // A second init (tests run many commands in one process) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
