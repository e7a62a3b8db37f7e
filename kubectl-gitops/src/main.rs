//! `kubectl-gitops`: found by kubectl on PATH as `kubectl gitops`. Wires the real terminal to
//! [`kubectl_gitops::run`] and exits with its code.

use std::io::{IsTerminal as _, Write as _};

use kubectl_gitops::ui::{Ui, colors_wanted};

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stdin = std::io::stdin();
    let err_is_terminal = stderr.is_terminal();
    let in_is_terminal = stdin.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = stderr.lock();
    let mut input = stdin.lock();
    let code = {
        let mut ui = Ui {
            out: &mut out,
            err: &mut err,
            input: if in_is_terminal {
                Some(&mut input)
            } else {
                None
            },
            color: colors_wanted(err_is_terminal),
            interactive: err_is_terminal,
        };
        kubectl_gitops::run(std::env::args_os(), &mut ui)
    };
    // A closed pipe on the last flush is not an error either.
    let _ = out.flush();
    std::process::exit(code);
}
