//! `kubectl gitops`: the plugin binary. Thin: parses, calls library code, prints.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-gitops",
    bin_name = "kubectl gitops",
    version,
    about = "GitOps for Kubernetes with WebAssembly policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the client version.
    Version,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!(
            "kubectl-gitops {} (API {}/{})",
            env!("CARGO_PKG_VERSION"),
            gitops_reconciler::api::GROUP,
            gitops_reconciler::api::VERSION
        ),
    }
}
