//! The built-in policies as components through the host, on the same fixtures their crates
//! test natively (`policies/fixtures/`), and the pipeline around them.

use crate::support::*;
use gitops_policy_sdk::testing::load_fixtures;
use gitops_reconciler::policy::{
    PipelineError, PolicyContext, PolicyError, PolicyKind, Severity, Tenancy, Violation,
};
use serde_json::json;

fn severity(v: &Violation) -> &'static str {
    match v.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn check_builtin(name: &str) {
    let host = host_with(|_| {});
    let dir = repo().join("policies/fixtures").join(name);
    let mut failures = Vec::new();
    for (file, f) in load_fixtures(&dir.to_string_lossy()) {
        let ctx = PolicyContext {
            target_namespace: f.target_namespace.clone(),
            ..PolicyContext::default()
        };
        let result = host.run_pipeline(&[builtin(name, f.config.clone())], &ctx, f.input.clone());
        let problem: Option<String> = match (&f.expect.config_error, result) {
            (
                Some(path),
                Err(PipelineError::Failed(PolicyError::InvalidConfig {
                    path: got, policy, ..
                })),
            ) => {
                assert_eq!(policy, name);
                (got.as_deref().unwrap_or("") != path)
                    .then(|| format!("config error at {got:?}, expected {path:?}"))
            }
            (Some(path), other) => Some(format!(
                "expected a config error at {path:?}, got {other:?}"
            )),
            (None, result) => {
                let (objects, violations) = match result {
                    Ok(o) => (Some(o.objects), o.warnings),
                    Err(PipelineError::Denied { violations }) => (None, violations),
                    Err(e) => {
                        failures.push(format!("{file}: unexpected failure: {e}"));
                        continue;
                    }
                };
                let mut problems = Vec::new();
                if let (Some(want), Some(got)) = (&f.expect.objects, &objects)
                    && want != got
                {
                    problems.push(format!("objects differ: got {}", json!(got)));
                }
                if objects.is_none() != f.expect.violations.iter().any(|v| v.severity == "error") {
                    problems.push(format!(
                        "denied = {}, expected otherwise",
                        objects.is_none()
                    ));
                }
                if violations.len() != f.expect.violations.len() {
                    problems.push(format!(
                        "{} violations, expected {}: {violations:?}",
                        violations.len(),
                        f.expect.violations.len()
                    ));
                }
                for (want, got) in f.expect.violations.iter().zip(&violations) {
                    assert_eq!(got.policy, name);
                    let object = got
                        .object
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    if let Err(e) = want.matches(
                        &object,
                        got.field.as_deref().unwrap_or(""),
                        severity(got),
                        &got.message,
                    ) {
                        problems.push(e);
                    }
                }
                (!problems.is_empty()).then(|| problems.join("; "))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{file} ({}): {p}", f.description));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn image_pinning_fixtures_as_wasm() {
    check_builtin("image-pinning");
}

#[test]
fn replica_bounds_fixtures_as_wasm() {
    check_builtin("replica-bounds");
}

#[test]
fn target_namespace_fixtures_as_wasm() {
    check_builtin("target-namespace");
}

#[test]
fn builtins_describe_themselves() {
    let host = host_with(|_| {});
    let pod_bearing = [
        "Pod",
        "Deployment.apps",
        "StatefulSet.apps",
        "DaemonSet.apps",
        "ReplicaSet.apps",
        "ReplicationController",
        "Job.batch",
        "CronJob.batch",
    ];
    let scalable = [
        "Deployment.apps",
        "StatefulSet.apps",
        "ReplicaSet.apps",
        "ReplicationController",
        "HorizontalPodAutoscaler.autoscaling",
    ];
    for (name, kind, given) in [
        ("image-pinning", PolicyKind::Both, Some(&pod_bearing[..])),
        ("replica-bounds", PolicyKind::Both, Some(&scalable[..])),
        ("target-namespace", PolicyKind::Transform, None),
    ] {
        let info = host
            .load(
                name,
                &gitops_reconciler::policy::ModuleSource::Builtin(name.to_owned()),
            )
            .expect("built-in loads");
        assert_eq!(info.name, name);
        assert_eq!(info.kind, kind);
        assert!(
            info.config_schema
                .as_deref()
                .is_some_and(|s| s.starts_with('{'))
        );
        assert_eq!(info.sha256.len(), 64);
        assert_eq!(info.contract, "0.2.0");
        let kinds: Option<Vec<String>> = info
            .kinds
            .map(|kinds| kinds.iter().map(ToString::to_string).collect());
        assert_eq!(
            kinds,
            given.map(|g| g.iter().map(|k| k.to_string()).collect()),
            "{name}"
        );
    }
    let e = host
        .load(
            "x",
            &gitops_reconciler::policy::ModuleSource::Builtin("nope".to_owned()),
        )
        .unwrap_err();
    assert!(matches!(e, PolicyError::UnknownBuiltin { .. }), "{e:?}");
}

fn deployment(ns: &str, name: &str, image: &str, replicas: u64) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
           "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

#[test]
fn pipeline_runs_transforms_in_order_then_validations() {
    let host = host_with(|_| {});
    let digest = format!("sha256:{}", "c".repeat(64));
    let steps = [
        builtin("target-namespace", json!({"namespace": "instavote"})),
        // Validations run after every transform: the clamp below happens before image-pinning
        // validates, and image-pinning's digest rewrite happens before replica-bounds runs.
        builtin(
            "image-pinning",
            json!({"digests": {"redis:alpine": digest}}),
        ),
        builtin(
            "replica-bounds",
            json!({"bounds": {"Deployment": {"max": 3}}, "action": "clamp"}),
        ),
    ];
    let ctx = PolicyContext {
        target_namespace: Some("instavote".to_owned()),
        tenancy: Some(Tenancy::default()),
        ..PolicyContext::default()
    };
    let input = vec![
        deployment("", "redis", "redis:alpine", 5),
        deployment("", "vote", "schooldevops/vote:v1", 2),
    ];
    let outcome = host
        .run_pipeline(&steps, &ctx, input)
        .expect("pipeline passes");
    assert_eq!(
        outcome.objects,
        vec![
            deployment("instavote", "redis", &format!("redis@{digest}"), 3),
            deployment("instavote", "vote", "schooldevops/vote:v1", 2)
        ]
    );
    assert!(outcome.warnings.is_empty() && outcome.ignored_failures.is_empty());
}

#[test]
fn a_policy_error_names_the_policy_and_the_object() {
    // replica-bounds cannot clamp a Deployment that has no spec: its own error, with the
    // object, read by the host from the guest's memory.
    let host = host_with(|_| {});
    let step = builtin(
        "replica-bounds",
        json!({"bounds": {"Deployment": {"min": 2}}, "action": "clamp"}),
    );
    let input = vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bare", "namespace": "apps"}}),
    ];
    match host.run_pipeline(&[step], &PolicyContext::default(), input) {
        Err(PipelineError::Failed(PolicyError::Failed {
            policy,
            object,
            message,
        })) => {
            assert_eq!(policy, "replica-bounds");
            assert_eq!(
                object.map(|o| o.to_string()).as_deref(),
                Some("Deployment apps/bare")
            );
            assert!(message.contains("spec is missing"), "{message}");
        }
        other => panic!("expected the policy's own error, got {other:?}"),
    }
}

#[test]
fn denials_of_every_policy_are_reported_together() {
    let host = host_with(|_| {});
    let steps = [
        builtin("image-pinning", json!({})),
        builtin(
            "replica-bounds",
            json!({"bounds": {"Deployment": {"max": 3}}}),
        ),
    ];
    let input = vec![deployment("apps", "web", "nginx:latest", 9)];
    match host.run_pipeline(&steps, &PolicyContext::default(), input) {
        Err(e @ PipelineError::Denied { .. }) => {
            assert_eq!(e.reason(), "PolicyDenied");
            let PipelineError::Denied { violations } = &e else {
                unreachable!()
            };
            let policies: Vec<_> = violations.iter().map(|v| v.policy.as_str()).collect();
            assert_eq!(policies, ["image-pinning", "replica-bounds"]);
            let text = e.to_string();
            assert!(
                text.contains("Deployment apps/web /spec/template/spec/containers/0/image"),
                "{text}"
            );
            assert!(
                text.contains("9 replicas is above the maximum of 3"),
                "{text}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn tenancy_recheck_refuses_moves_into_foreign_namespaces() {
    let host = host_with(|_| {});
    // target-namespace configured with another namespace than spec.targetNamespace: the
    // objects would land in kube-system.
    let steps = [builtin(
        "target-namespace",
        json!({"namespace": "kube-system"}),
    )];
    let mut ctx = PolicyContext {
        target_namespace: Some("apps".to_owned()),
        tenancy: Some(Tenancy::default()),
        ..PolicyContext::default()
    };
    match host.run_pipeline(&steps, &ctx, objects()) {
        Err(e @ PipelineError::Failed(PolicyError::Tenancy { .. })) => {
            assert_eq!(e.reason(), "PolicyFailed");
            let text = e.to_string();
            assert!(
                text.contains("policy target-namespace") && text.contains("kube-system"),
                "{text}"
            );
        }
        other => panic!("expected a tenancy failure, got {other:?}"),
    }
    // Allowed explicitly: passes.
    ctx.tenancy = Some(Tenancy {
        allowed_namespaces: vec!["kube-system".to_owned()],
        ..Tenancy::default()
    });
    let outcome = host
        .run_pipeline(&steps, &ctx, objects())
        .expect("allowed namespace");
    assert!(
        outcome
            .objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == "kube-system")
    );
    // Without a tenancy check (policy test on a laptop) nothing is re-checked.
    ctx.tenancy = None;
    assert!(host.run_pipeline(&steps, &ctx, objects()).is_ok());
}

#[test]
fn tenancy_recheck_refuses_added_cluster_scoped_objects() {
    let host = host_with(|_| {});
    let ctx = PolicyContext {
        tenancy: Some(Tenancy::default()),
        ..PolicyContext::default()
    };
    let e = host
        .run_pipeline(&[hostile("add-cluster-object")], &ctx, objects())
        .unwrap_err();
    assert!(
        e.to_string().contains("adds a cluster-scoped object"),
        "{e}"
    );
    let ctx = PolicyContext {
        tenancy: Some(Tenancy {
            allow_cluster_scoped: true,
            ..Tenancy::default()
        }),
        ..PolicyContext::default()
    };
    let outcome = host
        .run_pipeline(&[hostile("add-cluster-object")], &ctx, objects())
        .expect("cluster admin tenant");
    assert_eq!(outcome.objects.len(), 3);
}

#[test]
fn manifests_are_read_from_a_directory_for_policy_test() {
    let dir = std::env::temp_dir().join(format!("gitops-policy-manifests-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: s\n").unwrap();
    std::fs::write(
        dir.join("sub/b.json"),
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not yaml").unwrap();
    let objects = gitops_reconciler::policy::read_manifests(&dir).unwrap();
    let kinds: Vec<_> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Secret", "Service"]);
    std::fs::write(dir.join("c.yaml"), "just: a map\n").unwrap();
    let e = gitops_reconciler::policy::read_manifests(&dir).unwrap_err();
    assert!(e.to_string().contains("c.yaml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// From a few hundred objects on the host serialises, validates and reads back in parallel;
/// the result must be the same as object by object: every output in input order, every
/// violation of every validation in step order, unchanged objects handed back as they were.
#[test]
fn large_pipelines_run_in_parallel_with_the_same_results_in_the_same_order() {
    let host = host_with(|_| {});
    let objects: Vec<_> = (0..1500)
        .map(|i| match i % 3 {
            0 => json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("d{i}")},
                "spec": {"replicas": 9, "template": {"spec": {"containers": [
                    {"name": "c", "image": if i % 300 == 0 { "nginx:latest" } else { "nginx:1.27" }}]}}}}),
            1 => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}),
            _ => json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": format!("r{i}")}}),
        })
        .collect();
    let steps = [
        builtin("target-namespace", json!({"namespace": "apps"})),
        builtin("image-pinning", json!({})),
        builtin(
            "replica-bounds",
            json!({"bounds": {"Deployment": {"max": 3}}, "action": "deny"}),
        ),
    ];
    let ctx = PolicyContext {
        target_namespace: Some("apps".to_owned()),
        tenancy: Some(Tenancy::default()),
        ..PolicyContext::default()
    };
    let Err(PipelineError::Denied { violations }) =
        host.run_pipeline(&steps, &ctx, objects.clone())
    else {
        panic!("latest images and 9 replicas must be denied");
    };
    let summary: Vec<(String, String)> = violations
        .iter()
        .map(|v| {
            let name = v
                .object
                .as_ref()
                .map(|o| o.name.clone())
                .unwrap_or_default();
            (v.policy.clone(), name)
        })
        .collect();
    let mut expected: Vec<(String, String)> = (0..1500)
        .step_by(300)
        .map(|i| ("image-pinning".to_owned(), format!("d{i}")))
        .collect();
    expected.extend(
        (0..1500)
            .step_by(3)
            .map(|i| ("replica-bounds".to_owned(), format!("d{i}"))),
    );
    assert_eq!(summary, expected);

    // Without the denials: namespaced objects moved, cluster-scoped ones untouched (the very
    // input values), order kept.
    let allowed: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] != "Deployment")
        .cloned()
        .collect();
    let out = host
        .run_pipeline(&steps, &ctx, allowed.clone())
        .expect("no deployments, nothing to deny")
        .objects;
    assert_eq!(out.len(), allowed.len());
    for (got, input) in out.iter().zip(&allowed) {
        if input["kind"] == "ClusterRole" {
            assert_eq!(got, input);
        } else {
            assert_eq!(got["metadata"]["namespace"], "apps", "{got}");
            assert_eq!(got["metadata"]["name"], input["metadata"]["name"]);
        }
    }
}
