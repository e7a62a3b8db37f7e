//! Exit codes and the one-line error report.
//!
//! Commands return `anyhow::Result`. An error that should end with a particular exit code or
//! hint carries a [`Failure`] somewhere in its chain; errors from the Kubernetes client are
//! classified here (unknown object, unreachable cluster, missing CRDs) so every command reports
//! them the same way: one line with the cause chain, then a hint saying what to do.

use std::fmt;

/// The documented exit codes (see `kubectl gitops --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The operation ran and reports a failure (reconcile not Ready, check problem, diff found).
    Failed = 1,
    /// Invalid usage: unknown or conflicting flags, malformed values.
    Usage = 2,
    /// An object named on the command line does not exist.
    NotFound = 3,
    /// The cluster cannot be reached or refused the credentials.
    Unreachable = 4,
    /// Timed out waiting.
    Timeout = 5,
    /// Anything else.
    Other = 6,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An error with a chosen exit code and an optional hint.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Shorthand: `Err(fail(Exit::Usage, "..."))?`.
pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    Failure::new(exit, message).into()
}

/// Hint given when the API of kubectl-gitops seems missing or the reconciler does not answer.
pub const HINT_CHECK: &str = "is kubectl-gitops installed? run kubectl gitops check";

/// How an error is reported: exit code, one line of causes, an optional hint.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub exit: Exit,
    pub line: String,
    pub hint: Option<String>,
}

/// Classifies an error chain into a [`Report`].
pub fn report(error: &anyhow::Error) -> Report {
    let mut exit = None;
    let mut hint = None;
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            exit.get_or_insert(failure.exit);
            if hint.is_none() {
                hint.clone_from(&failure.hint);
            }
        }
        if let Some(kube_error) = cause.downcast_ref::<kube::Error>() {
            let (e, h, text) = classify_kube(kube_error);
            exit.get_or_insert(e);
            if hint.is_none() {
                hint = h;
            }
            parts.push(text);
            // kube's own sources repeat what we already said (and can be long); stop here.
            break;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            )
        {
            exit.get_or_insert(Exit::Unreachable);
        }
        let text = cause.to_string();
        // Skip a cause whose text is already contained in the previous one (common with wrappers).
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    Report {
        exit: exit.unwrap_or(Exit::Other),
        line: crate::ui::escape(&parts.join(": ")),
        hint,
    }
}

fn classify_kube(error: &kube::Error) -> (Exit, Option<String>, String) {
    match error {
        kube::Error::Api(status) => {
            let text = if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            };
            match status.code {
                404 if text.contains("the server could not find the requested resource") => (
                    Exit::NotFound,
                    Some(HINT_CHECK.to_owned()),
                    format!("{text} (the kubectl-gitops CRDs are not installed)"),
                ),
                404 => (Exit::NotFound, None, text),
                401 => (
                    Exit::Unreachable,
                    Some("check the credentials of your kubeconfig context".to_owned()),
                    text,
                ),
                403 => (
                    Exit::Other,
                    Some("your user lacks a permission: run kubectl gitops check --pre".to_owned()),
                    text,
                ),
                422 => (Exit::Usage, None, text),
                _ => (Exit::Other, None, text),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let mut text = String::from("cannot reach the Kubernetes API server");
            let mut source = std::error::Error::source(error);
            let mut last = String::new();
            while let Some(cause) = source {
                last = cause.to_string();
                source = cause.source();
            }
            if !last.is_empty() {
                text.push_str(&format!(" ({last})"));
            }
            (
                Exit::Unreachable,
                Some(
                    "is the cluster running? check --kubeconfig/--context, or run kubectl cluster-info"
                        .to_owned(),
                ),
                text,
            )
        }
        kube::Error::Auth(_) => (
            Exit::Unreachable,
            Some("check the credentials of your kubeconfig context".to_owned()),
            error.to_string(),
        ),
        other => (Exit::Other, None, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: message.into(),
                reason: "NotFound".into(),
                ..Default::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn unknown_objects_exit_3_with_the_apiserver_message() {
        let err = anyhow::Error::from(api_error(
            404,
            "kustomizations.kubectl-gitops.io \"nope\" not found",
        ))
        .context("reading Kustomization gitops-system/nope");
        let report = report(&err);
        assert_eq!(report.exit, Exit::NotFound);
        assert_eq!(
            report.line,
            "reading Kustomization gitops-system/nope: kustomizations.kubectl-gitops.io \"nope\" not found"
        );
    }

    #[test]
    fn missing_crds_give_the_check_hint() {
        let err = anyhow::Error::from(api_error(
            404,
            "the server could not find the requested resource",
        ))
        .context("listing Kustomizations");
        let report = report(&err);
        assert_eq!(report.exit, Exit::NotFound);
        assert_eq!(report.hint.as_deref(), Some(HINT_CHECK));
    }

    #[test]
    fn failures_keep_their_exit_code_and_hint() {
        let err: anyhow::Result<()> = Err(Failure::new(Exit::Timeout, "timed out after 2s")
            .hint("is the reconciler running?")
            .into());
        let err = err.context("waiting for GitRepository a/b").unwrap_err();
        let report = report(&err);
        assert_eq!(report.exit, Exit::Timeout);
        assert_eq!(
            report.line,
            "waiting for GitRepository a/b: timed out after 2s"
        );
        assert_eq!(report.hint.as_deref(), Some("is the reconciler running?"));
    }

    #[test]
    fn error_lines_are_escaped() {
        let err = anyhow::anyhow!("bad \x1b[31mname");
        assert_eq!(report(&err).line, "bad \\x1b[31mname");
        assert_eq!(report(&err).exit, Exit::Other);
    }
}
