//! The Python example policy (componentize-py) through the same host as the Rust built-ins:
//! the WIT contract is language-neutral.

use crate::support::*;
use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{
    PipelineError, PolicyContext, PolicyError, PolicyKind, PolicyStep,
};
use serde_json::json;

/// Builds (or takes from the cache) the component with the pinned componentize-py.
fn require_labels() -> Vec<u8> {
    let script = repo().join("policies/examples/python-require-labels/build.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("running the example's build.sh");
    assert!(
        out.status.success(),
        "building the Python example failed (tests/setup.sh installs python3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn python_policy_runs_in_the_same_host() {
    let host = host_with(|c| c.deadline = std::time::Duration::from_secs(10));
    let step = |config| PolicyStep {
        name: "require-labels".to_owned(),
        module: component(require_labels()),
        config,
        failure_policy: FailurePolicy::Fail,
    };
    let info = host
        .load("require-labels", &step(json!(null)).module)
        .expect("the Python component loads");
    assert_eq!(
        (info.name.as_str(), info.kind),
        ("require-labels", PolicyKind::Validate)
    );
    // Built against the first contract (`wit/v0.1.0`): it declares no kinds and is given every
    // object.
    assert_eq!((info.contract, info.kinds), ("0.1.0", None));

    let mut labelled = objects();
    for o in &mut labelled {
        o["metadata"]["labels"] = json!({"team": "vote"});
    }
    let outcome = host
        .run_pipeline(
            &[step(json!({"labels": ["team"]}))],
            &PolicyContext::default(),
            labelled.clone(),
        )
        .expect("labelled objects pass");
    assert_eq!(outcome.objects, labelled);

    match host.run_pipeline(
        &[step(json!({"labels": ["team"]}))],
        &PolicyContext::default(),
        objects(),
    ) {
        Err(PipelineError::Denied { violations }) => {
            let text: Vec<_> = violations.iter().map(ToString::to_string).collect();
            assert_eq!(
                text,
                [
                    "policy require-labels: ConfigMap apps/a /metadata/labels: label 'team' is required",
                    "policy require-labels: Deployment apps/web /metadata/labels: label 'team' is required"
                ]
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    match host.run_pipeline(
        &[step(json!({"labels": []}))],
        &PolicyContext::default(),
        objects(),
    ) {
        Err(PipelineError::Failed(PolicyError::InvalidConfig { path, .. })) => {
            assert_eq!(path.as_deref(), Some("/labels"))
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}
