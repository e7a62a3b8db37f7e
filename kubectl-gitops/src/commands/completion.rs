//! `kubectl gitops completion bash|zsh|fish|…`: shell completion scripts from the clap model.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionArgs};
use crate::error::Exit;
use crate::ui::Ui;

pub fn run(args: &CompletionArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "kubectl-gitops", ui.out);
    Ok(Exit::Success)
}
