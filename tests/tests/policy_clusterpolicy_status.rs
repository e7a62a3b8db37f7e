//! ClusterPolicy status, written by the Kustomization controller (in process, against the real
//! apiserver): a ClusterPolicy that selects a Kustomization lists it in `status.selected` and
//! records the denial in `status.lastViolations`; a fixed revision clears that Kustomization's
//! violations; a Kustomization that stops matching leaves `selected`.

mod kustomization_support;

use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds, kubectl, kubectl_ok};
use kustomization_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

fn policy_status(name: &str) -> Value {
    let out = kubectl(
        &[
            "get",
            "clusterpolicies.kubectl-gitops.io",
            name,
            "-o",
            "json",
        ],
        None,
    );
    if !out.success {
        return Value::Null;
    }
    serde_json::from_str::<Value>(&out.stdout).map_or(Value::Null, |v| v["status"].clone())
}

/// An absent or empty list.
fn none_listed(list: &Value) -> bool {
    list.as_array().is_none_or(Vec::is_empty)
}

/// Deletes the ClusterPolicy when the test ends, passed or not.
struct PolicyGuard(String);
impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "clusterpolicies.kubectl-gitops.io",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn cluster_policy_status_lists_selected_kustomizations_and_their_last_violations() {
    install_crds();
    let ns = TestNamespace::new("cps");
    let ctl = RunningController::start(&ns.name).await;
    let policy = format!("{}-bounds", ns.name);
    let _guard = PolicyGuard(policy.clone());
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1
kind: ClusterPolicy
metadata: {{name: {policy}}}
spec:
  module: {{builtin: replica-bounds}}
  config: {{bounds: {{Deployment: {{min: 1, max: 5}}}}, action: deny}}
  selector:
    kustomizationSelector:
      matchLabels: {{conformance-shard: {shard}, bounded: 'yes'}}
",
            shard = ctl.shard
        )),
    );
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let deployment = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n",
            ns.name
        )
    };
    let v1 = source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [web.yaml]\n"),
            ("app/web.yaml", &deployment(50)),
        ],
    );
    let manifest = kustomization(
        "app",
        &ctl.shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n",
    )
    .replace("  labels: {", "  labels: {bounded: 'yes', ");
    let created = ns.create(&manifest);
    assert!(created.success, "{}", created.stderr);
    let key = format!("{}/app", ns.name);

    // Denied at v1: the policy lists the Kustomization and the violation.
    eventually(
        T,
        "PolicyDenied",
        || ready(&ns.name, "app").filter(|(s, r, _)| s == "False" && r == "PolicyDenied"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    let status = eventually(
        T,
        "the ClusterPolicy status to record the denial",
        || {
            let s = policy_status(&policy);
            (s["lastViolations"]
                .as_array()
                .is_some_and(|v| !v.is_empty()))
            .then_some(s)
        },
        || policy_status(&policy).to_string(),
    )
    .await;
    assert_eq!(status["selected"], serde_json::json!([key]), "{status}");
    let violation = &status["lastViolations"][0];
    assert_eq!(violation["kustomization"], key.as_str(), "{status}");
    assert_eq!(violation["revision"], v1.as_str(), "{status}");
    assert_eq!(violation["severity"], "error", "{status}");
    assert_eq!(
        violation["object"],
        format!("Deployment {}/web", ns.name).as_str(),
        "{status}"
    );
    assert!(
        violation["message"]
            .as_str()
            .unwrap_or_default()
            .contains('5'),
        "{status}"
    );
    let managers = kubectl_ok(
        &[
            "get",
            "clusterpolicies.kubectl-gitops.io",
            &policy,
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
            "--show-managed-fields",
        ],
        None,
    );
    assert!(managers.contains("gitops-reconciler"), "{managers}");

    // Fixed at v2: Ready, the Kustomization's violations are gone, it stays selected.
    let v2 = source.publish(
        '2',
        &[
            ("app/kustomization.yaml", "resources: [web.yaml]\n"),
            ("app/web.yaml", &deployment(2)),
        ],
    );
    eventually(
        T,
        "Ready at v2",
        || ready(&ns.name, "app").filter(|(s, _, m)| s == "True" && m.ends_with(&v2)),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    let status = eventually(
        T,
        "the violations to clear",
        || {
            let s = policy_status(&policy);
            none_listed(&s["lastViolations"]).then_some(s)
        },
        || policy_status(&policy).to_string(),
    )
    .await;
    assert_eq!(status["selected"], serde_json::json!([key]), "{status}");

    // No longer matching (label removed) and reconciled: it leaves `selected`.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "label",
            "kustomizations.kubectl-gitops.io",
            "app",
            "bounded-",
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "--overwrite",
            "kustomizations.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=after-unlabel",
        ],
        None,
    );
    eventually(
        T,
        "the Kustomization to leave status.selected",
        || {
            let s = policy_status(&policy);
            none_listed(&s["selected"]).then_some(())
        },
        || policy_status(&policy).to_string(),
    )
    .await;
    drop(ctl);
}
