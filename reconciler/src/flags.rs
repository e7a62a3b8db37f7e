//! Command-line flags. Each subsystem owns a [`clap::Args`] struct next to the code it
//! configures, with each flag's default written there once; the `gitops-reconciler` binary
//! flattens them. Code that builds a configuration without a command line (tests, the CLI's
//! local runs) takes the same defaults through [`defaults`].

use clap::{ArgMatches, Args, Command, FromArgMatches};

/// Objects of each kind reconciled at once (`--concurrent`; both controllers).
pub const DEFAULT_CONCURRENT: u16 = 4;

/// The values `T`'s flags take when none is given.
///
/// # Panics
/// When a default of `T` does not parse as its own flag: a programming error, caught by the
/// tests of each subsystem's flags.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let name = std::any::type_name::<T>();
    T::augment_args(Command::new("defaults"))
        .try_get_matches_from(["defaults"])
        .and_then(|matches: ArgMatches| T::from_arg_matches(&matches))
        .unwrap_or_else(|e| panic!("the flag defaults of {name} do not parse: {e}"))
}

/// The namespace the reconciler runs in: `$POD_NAMESPACE`, else `gitops-system`.
pub fn runtime_namespace() -> String {
    std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "gitops-system".into())
}

/// Parses a flag naming an object in the reconciler's namespace: `(namespace, name)`.
pub fn in_runtime_namespace(name: &str) -> Result<(String, String), String> {
    if name.is_empty() {
        return Err("a name is required".into());
    }
    Ok((runtime_namespace(), name.to_owned()))
}
