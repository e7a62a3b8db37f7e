//! `gitops-reconciler`: the in-cluster controller. Wiring only; the stages live in the library.

use clap::Parser;

/// The kubectl-gitops reconciler.
#[derive(Parser, Debug)]
#[command(name = "gitops-reconciler", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the reconciler controllers are not implemented yet (see the open issues)")
}
