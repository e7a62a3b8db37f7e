//! Shared pieces of the CLI conformance tests: `kubectl gitops` run in process (the very code
//! the binary runs) against the cluster under test, with its output captured, plus fixtures that
//! write the status the reconciler would write (through the real status subresource).
#![allow(dead_code)] // each test file uses a different subset

use gitops_conformance::{kubeconfig, kubectl};
use kubectl_gitops::ui::Ui;

/// The outcome of one `kubectl gitops` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// `kubectl gitops ARGS --kubeconfig <cluster under test>`.
pub fn gitops(args: &[&str]) -> Run {
    let path = kubeconfig();
    let mut full: Vec<String> = vec!["kubectl-gitops".into()];
    full.extend(args.iter().map(|a| a.to_string()));
    full.push("--kubeconfig".into());
    full.push(path.to_string_lossy().into_owned());
    gitops_raw(&full)
}

/// Runs exactly `args` (the first is the program name), no kubeconfig added.
pub fn gitops_raw(args: &[String]) -> Run {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = {
        let mut ui = Ui::plain(&mut out, &mut err);
        kubectl_gitops::run(args.iter().cloned(), &mut ui)
    };
    Run {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Writes `status` (JSON) on an object through the status subresource, as the reconciler does.
pub fn set_status(ns: &str, resource: &str, name: &str, status: serde_json::Value) {
    let patch = serde_json::json!({ "status": status }).to_string();
    let res = kubectl(
        &[
            "-n",
            ns,
            "patch",
            resource,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
    assert!(
        res.success,
        "status patch of {resource}/{name} failed: {}",
        res.stderr
    );
}

/// A Ready condition as the reconciler writes it.
pub fn ready(status: &str, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
    })
}

/// The JSON of one object, read with kubectl.
pub fn get_json(ns: &str, resource: &str, name: &str) -> serde_json::Value {
    let out =
        gitops_conformance::kubectl_ok(&["-n", ns, "get", resource, name, "-o", "json"], None);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}
