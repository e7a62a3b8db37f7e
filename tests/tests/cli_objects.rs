//! Commands that act on existing objects, against a real apiserver: reconcile writes the
//! request annotation and waits for the status to echo it; suspend/resume; export prints YAML
//! the apiserver takes back; tree and trace read inventories; events lists what was recorded.
//! (The reconciler answering the request is exercised by the demo and the end-to-end tests.)

mod cli_support;

use std::time::Duration;

use cli_support::*;
use gitops_conformance::{TestNamespace, install_crds, kubectl, kubectl_ok};

fn source_and_kustomization(ns: &TestNamespace) {
    let res = ns.create(&format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {{name: instavote}}\nspec: {{url: 'https://h/r.git', interval: 1m}}\n---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: vote-dev}}\nspec: {{sourceRef: {{kind: GitRepository, name: instavote}}, interval: 1m, targetNamespace: {}}}\n",
        ns.name
    ));
    assert!(res.success, "{}", res.stderr);
}

#[test]
#[ignore = "needs a cluster"]
fn reconcile_requests_and_waits_for_the_echo() {
    install_crds();
    let ns = TestNamespace::new("cli-rec");
    source_and_kustomization(&ns);
    // Nobody answers: the request is written, the wait times out with exit 5.
    let run = gitops(&[
        "reconcile",
        "ks",
        "vote-dev",
        "-n",
        &ns.name,
        "--timeout",
        "1s",
    ])
    .expect(5);
    assert!(
        run.stderr.contains("► annotating Kustomization"),
        "{}",
        run.stderr
    );
    let ks = get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev");
    let token = ks["metadata"]["annotations"]["kubectl-gitops.io/reconcile-requested-at"]
        .as_str()
        .expect("annotation written")
        .to_owned();
    assert!(
        token.len() >= 20 && token.contains('T') && token.ends_with('Z'),
        "not a timestamp: {token}"
    );
    // An answer echoing an older request does not end the wait; only the new token does.
    let ns_name = ns.name.clone();
    let answer = std::thread::spawn(move || {
        let mut seen = String::new();
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            let ks = get_json(&ns_name, "kustomizations.kubectl-gitops.io", "vote-dev");
            let now = ks["metadata"]["annotations"]["kubectl-gitops.io/reconcile-requested-at"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if now != token && !now.is_empty() {
                seen = now;
                break;
            }
        }
        set_status(
            &ns_name,
            "kustomization",
            "vote-dev",
            serde_json::json!({
                "observedGeneration": 1, "lastHandledReconcileAt": seen, "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
                "conditions": [ready("False", "BuildFailed", "kustomization.yaml: resources[0]: file deploy/missing.yaml not found")]
            }),
        );
    });
    let run = gitops(&[
        "reconcile",
        "ks",
        "vote-dev",
        "-n",
        &ns.name,
        "--timeout",
        "20s",
    ]);
    answer.join().unwrap();
    let run = run.expect(1);
    assert!(run.stderr.contains("✗ Kustomization reconciliation failed: BuildFailed: kustomization.yaml: resources[0]: file deploy/missing.yaml not found"), "{}", run.stderr);
}

#[test]
#[ignore = "needs a cluster"]
fn suspend_resume_and_export() {
    install_crds();
    let ns = TestNamespace::new("cli-susp");
    source_and_kustomization(&ns);
    gitops(&["suspend", "ks", "--all", "-n", &ns.name]).expect(0);
    assert_eq!(
        get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev")["spec"]["suspend"],
        true
    );
    let run = gitops(&["get", "ks", "-n", &ns.name, "--no-header"]).expect(0);
    assert!(run.stdout.contains("   True   "), "{}", run.stdout);
    let run = gitops(&["reconcile", "ks", "vote-dev", "-n", &ns.name]).expect(1);
    assert!(
        run.stderr.contains("is suspended")
            && run
                .stderr
                .contains("kubectl gitops resume kustomization vote-dev"),
        "{}",
        run.stderr
    );
    // resume clears suspend and then waits for the reconciler (none here: timeout).
    gitops(&[
        "resume",
        "ks",
        "vote-dev",
        "-n",
        &ns.name,
        "--timeout",
        "1s",
    ])
    .expect(5);
    assert!(
        get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev")["spec"]
            .get("suspend")
            .is_none()
    );
    let run = gitops(&["export", "ks", "vote-dev", "-n", &ns.name]).expect(0);
    assert!(
        !run.stdout.contains("status")
            && !run.stdout.contains("reconcile-requested-at")
            && !run.stdout.contains("uid"),
        "{}",
        run.stdout
    );
    // The export re-creates the object elsewhere as it is.
    let other = TestNamespace::new("cli-susp2");
    let copy = run.stdout.replace(
        &format!("namespace: {}", ns.name),
        &format!("namespace: {}", other.name),
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&copy));
    let spec =
        get_json(&other.name, "kustomizations.kubectl-gitops.io", "vote-dev")["spec"].clone();
    assert_eq!(
        spec,
        get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev")["spec"]
    );
}

#[test]
#[ignore = "needs a cluster"]
fn tree_and_trace_follow_inventories() {
    install_crds();
    let ns = TestNamespace::new("cli-tree");
    let n = ns.name.as_str();
    source_and_kustomization(&ns);
    // A nested Kustomization and objects carrying the owner labels, as the reconciler leaves them.
    let res = ns.create(&format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: redis}}\nspec: {{sourceRef: {{kind: GitRepository, name: instavote}}, interval: 1m}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: vote, labels: {{kubectl-gitops.io/name: vote-dev, kubectl-gitops.io/namespace: {n}}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: stray, labels: {{kubectl-gitops.io/name: vote-dev, kubectl-gitops.io/namespace: {n}}}}}\n"
    ));
    assert!(res.success, "{}", res.stderr);
    set_status(
        n,
        "kustomization",
        "vote-dev",
        serde_json::json!({
            "observedGeneration": 1, "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
            "conditions": [ready("True", "ReconciliationSucceeded", "Applied revision: main@sha1:0123456789abcdef0123456789abcdef01234567")],
            "inventory": {"entries": [
                {"id": format!("{n}_vote__ConfigMap"), "v": "v1"},
                {"id": format!("{n}_redis_kubectl-gitops.io_Kustomization"), "v": "v1alpha1"},
                {"id": "_instavote__Namespace", "v": "v1"}
            ]}
        }),
    );
    set_status(
        n,
        "kustomization",
        "redis",
        serde_json::json!({
            "inventory": {"entries": [
                {"id": format!("{n}_redis_apps_Deployment"), "v": "v1"},
                // A cycle back to the parent must not loop.
                {"id": format!("{n}_vote-dev_kubectl-gitops.io_Kustomization"), "v": "v1alpha1"}
            ]}
        }),
    );
    let run = gitops(&["tree", "ks", "vote-dev", "-n", n]).expect(0);
    assert_eq!(
        run.stdout,
        format!(
            "Kustomization/{n}/vote-dev\n├── ConfigMap/{n}/vote\n├── Kustomization/{n}/redis\n│   ├── Deployment/{n}/redis\n│   └── Kustomization/{n}/vote-dev\n└── Namespace/instavote\n"
        )
    );
    let run = gitops(&["trace", "configmap/vote", "-n", n]).expect(0);
    for line in [
        format!("Object:        ConfigMap/{n}/vote"),
        "Status:        Managed by kubectl-gitops".to_owned(),
        "Kustomization: vote-dev".to_owned(),
        "Revision:      main@sha1:0123456789abcdef0123456789abcdef01234567".to_owned(),
        "GitRepository: instavote".to_owned(),
        "URL:           https://h/r.git".to_owned(),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "no line {line:?} in\n{}",
            run.stdout
        );
    }
    let run = gitops(&["trace", "ConfigMap", "stray", "-n", n]).expect(0);
    assert!(
        run.stdout.contains("not in its inventory"),
        "{}",
        run.stdout
    );
    let res = kubectl(&["-n", n, "create", "configmap", "plain"], None);
    assert!(res.success);
    let run = gitops(&["trace", "cm/plain", "-n", n]);
    assert_eq!(run.code, 3, "{run:?}"); // 'cm' is not a kind name: we resolve kinds, plurals, singulars
    let run = gitops(&["trace", "configmaps/plain", "-n", n]).expect(1);
    assert!(
        run.stderr.contains("is not managed by kubectl-gitops"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs a cluster"]
fn events_of_our_objects_are_listed_and_filtered() {
    install_crds();
    let ns = TestNamespace::new("cli-ev");
    source_and_kustomization(&ns);
    let n = ns.name.as_str();
    let event = |name: &str, kind: &str, obj: &str, reason: &str, message: &str| {
        format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: {name}}}\ninvolvedObject: {{apiVersion: kubectl-gitops.io/v1alpha1, kind: {kind}, name: {obj}, namespace: {n}}}\nreason: {reason}\nmessage: \"{message}\"\ntype: Normal\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:00Z\"\nsource: {{component: gitops-reconciler}}\n"
        )
    };
    for manifest in [
        event(
            "e1",
            "GitRepository",
            "instavote",
            "NewArtifact",
            "stored artifact for commit 'Add vote'",
        ),
        event(
            "e2",
            "Kustomization",
            "vote-dev",
            "ReconciliationSucceeded",
            "Deployment/vote configured\\u001b[31m",
        ),
    ] {
        let res = ns.create(&manifest);
        assert!(res.success, "{}", res.stderr);
    }
    let res = kubectl(&["-n", n, "create", "configmap", "unrelated"], None);
    assert!(res.success);
    let run = gitops(&["events", "-n", n]).expect(0);
    assert!(
        run.stdout.starts_with("LAST SEEN   TYPE     REASON"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("GitRepository/instavote")
            && run.stdout.contains("Kustomization/vote-dev"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("configured\\x1b[31m"), "{}", run.stdout);
    let run = gitops(&["events", "-n", n, "--for", "ks/vote-dev", "--no-header"]).expect(0);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("ReconciliationSucceeded"),
        "{}",
        run.stdout
    );
}
