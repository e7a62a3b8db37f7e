//! `kubectl gitops`: the kubectl plugin of kubectl-gitops, as a library so that the conformance
//! suite and the benches run the very code the binary runs, in process, with captured output.
//!
//! Layout: `cli` holds the clap types; `commands` has one module per command group, each
//! with an execution function taking its options and a [`ui::Ui`]; `cluster` connects and
//! holds the waits shared by commands; `error` maps failures to documented exit codes. Only
//! [`run`] and [`ui`] are public: the binary, the conformance suite and the benches need nothing
//! else.

#![deny(missing_docs)]

pub(crate) mod cli;
pub(crate) mod cluster;
pub(crate) mod commands;
pub(crate) mod error;
pub(crate) mod objects;
pub mod ui;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser as _;

use crate::error::Exit;
use crate::ui::Ui;

/// Parses `args` (the first one is the program name) and runs the command. Returns the exit
/// code; errors have been reported on `ui.err` as one line plus a hint.
pub fn run<I, T>(args: I, ui: &mut Ui<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = commands::completion::rewrite_args(args.into_iter().map(Into::into).collect());
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" with exit code 0 and their text on stdout.
            let code = e.exit_code();
            let text = if ui.color {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let target: &mut dyn Write = if code == 0 { ui.out } else { ui.err };
            let _ = target.write_all(text.as_bytes());
            return code;
        }
    };
    match commands::dispatch(cli, ui) {
        Ok(exit) => exit.code(),
        Err(error) => {
            if is_broken_pipe(&error) {
                return Exit::Success.code();
            }
            let report = error::report(&error);
            let _ = ui.failure(&report.line);
            if let Some(hint) = report.hint {
                let _ = writeln!(ui.err, "  hint: {hint}");
            }
            report.exit.code()
        }
    }
}

/// A closed stdout (`kubectl gitops get ks | head -1`) is not an error worth reporting.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
