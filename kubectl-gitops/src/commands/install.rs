//! `install`, `uninstall` and `bootstrap git`.

use crate::cli::{BootstrapGitArgs, GlobalArgs, InstallArgs, UninstallArgs};
use crate::error::{Exit, Failure};
use crate::ui::Ui;

fn unavailable(what: &str) -> anyhow::Error {
    Failure::new(Exit::Other, format!("{what} is not available in this build: the reconciler's install manifests are not embedded yet"))
        .into()
}

pub async fn install(
    _global: &GlobalArgs,
    _args: &InstallArgs,
    _ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    Err(unavailable("install"))
}

pub async fn uninstall(
    _global: &GlobalArgs,
    _args: &UninstallArgs,
    _ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    Err(unavailable("uninstall"))
}

pub async fn bootstrap_git(
    _global: &GlobalArgs,
    _args: &BootstrapGitArgs,
    _ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    Err(unavailable("bootstrap"))
}
