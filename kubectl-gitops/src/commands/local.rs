//! `diff kustomization`, `build kustomization` and `policy test`: the pipeline's build and policy
//! stages run locally with the reconciler's own library code.
//!
//! They need the build engine (issue 4) and the policy host (issue 5) of the reconciler
//! library; until those land these commands say so instead of pretending.

use crate::cli::{GlobalArgs, LocalBuildCommand, PolicyTestArgs};
use crate::error::{Exit, Failure};
use crate::ui::Ui;

fn unavailable(what: &str) -> anyhow::Error {
    Failure::new(Exit::Other, format!("{what} is not available in this build: the reconciler library's build engine and policy host are not wired into the CLI yet"))
        .hint("use kubectl gitops reconcile and get to see what the reconciler does")
        .into()
}

pub async fn diff(
    _global: &GlobalArgs,
    _command: LocalBuildCommand,
    _ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    Err(unavailable("diff"))
}

pub async fn build(
    _global: &GlobalArgs,
    _command: LocalBuildCommand,
    _ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    Err(unavailable("build"))
}

pub fn policy_test(_args: &PolicyTestArgs, _ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    Err(unavailable("policy test"))
}
