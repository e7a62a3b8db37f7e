//! `kubectl gitops get …` against a real apiserver: golden tables (stable columns, widths that
//! adapt), -A, -l, --status-selector, --show-source, -o json|yaml, --no-header, `get all`, and
//! escaping of hostile text written into status.

mod cli_support;

use cli_support::*;
use gitops_conformance::{TestNamespace, install_crds};

const REV: &str = "main@sha1:4f1c2e6bd8f1a0f3b2c9f7e4d3a2b1c0e9f8d7c6";

/// Two sources and two Kustomizations with the status a reconciler would have written.
fn fixtures(ns: &TestNamespace) {
    for (name, label) in [("instavote", "web"), ("broken", "db")] {
        let res = ns.create(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {{name: {name}, labels: {{team: {label}}}}}\nspec: {{url: 'https://git.example.com/{name}.git', interval: 1m}}\n"
        ));
        assert!(res.success, "{}", res.stderr);
    }
    set_status(
        &ns.name,
        "gitrepository",
        "instavote",
        serde_json::json!({
            "observedGeneration": 1,
            "conditions": [ready("True", "Succeeded", &format!("stored artifact for revision '{REV}'"))],
            "artifact": {"revision": REV, "digest": "sha256:00", "size": 1, "url": "http://storage/x.tar.gz", "path": "x", "lastUpdateTime": "2026-01-01T00:00:00Z"}
        }),
    );
    set_status(
        &ns.name,
        "gitrepository",
        "broken",
        serde_json::json!({
            "observedGeneration": 1,
            "conditions": [ready("False", "AuthenticationFailed", "authentication required: check secretRef creds")]
        }),
    );
    for (name, suspend) in [("vote-dev", false), ("redis-dev", true)] {
        let res = ns.create(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: {name}}}\nspec: {{sourceRef: {{kind: GitRepository, name: instavote}}, interval: 1m, suspend: {suspend}}}\n"
        ));
        assert!(res.success, "{}", res.stderr);
    }
    vote_dev_status(
        ns,
        ready(
            "True",
            "ReconciliationSucceeded",
            &format!("Applied revision: {REV}"),
        ),
    );
}

/// The status a reconciler writes on Kustomization `vote-dev` after applying `REV`, with
/// Ready condition `ready`.
fn vote_dev_status(ns: &TestNamespace, ready: serde_json::Value) {
    set_status(
        &ns.name,
        "kustomization",
        "vote-dev",
        serde_json::json!({
            "observedGeneration": 1, "lastAppliedRevision": REV, "conditions": [ready]
        }),
    );
}

#[test]
#[ignore = "needs a cluster"]
fn tables_match_the_golden_files() {
    install_crds();
    let ns = TestNamespace::new("cli-get");
    fixtures(&ns);
    let run = gitops(&["get", "sources", "git", "-n", &ns.name]).expect(0);
    assert_eq!(
        run.stdout,
        include_str!("../../kubectl-gitops/tests/golden/cli-get-sources-git.txt")
    );
    let run = gitops(&["get", "kustomizations", "-n", &ns.name, "--show-source"]).expect(0);
    let golden =
        include_str!("../../kubectl-gitops/tests/golden/cli-get-kustomizations-source.txt")
            .replace("NAMESPACE_", &ns.name);
    // The SOURCE column holds the test's namespace: align the golden's columns to its width.
    assert_eq!(normalize(&run.stdout), normalize(&golden));
    let run = gitops(&["get", "all", "-n", &ns.name, "--no-header"]).expect(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout); // 2 sources, blank line, 2 Kustomizations
    assert!(
        lines[0].starts_with("gitrepository/broken "),
        "{}",
        run.stdout
    );
    assert!(
        lines[3].starts_with("kustomization/redis-dev "),
        "{}",
        run.stdout
    );
}

/// Collapses runs of spaces: compares cells and their order, not the padding.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs a cluster"]
fn selectors_and_formats() {
    install_crds();
    let ns = TestNamespace::new("cli-sel");
    fixtures(&ns);
    let run = gitops(&[
        "get",
        "sources",
        "git",
        "-n",
        &ns.name,
        "--status-selector",
        "ready=false",
    ])
    .expect(0);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("broken") && !run.stdout.contains("instavote"),
        "{}",
        run.stdout
    );
    let run = gitops(&[
        "get",
        "sources",
        "git",
        "-n",
        &ns.name,
        "-l",
        "team=web",
        "--no-header",
    ])
    .expect(0);
    assert!(
        run.stdout.starts_with("instavote ") && run.stdout.lines().count() == 1,
        "{}",
        run.stdout
    );
    let run = gitops(&["get", "ks", "-n", &ns.name, "-o", "json"]).expect(0);
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON output");
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["redis-dev", "vote-dev"]);
    assert!(list["items"][0]["metadata"].get("managedFields").is_none());
    let run = gitops(&["get", "ks", "vote-dev", "-n", &ns.name, "-o", "yaml"]).expect(0);
    assert!(
        run.stdout.contains("lastAppliedRevision: main@sha1:"),
        "{}",
        run.stdout
    );
    // -A finds the objects of this namespace among all others, with a NAMESPACE column.
    let run = gitops(&["get", "ks", "-A", "-l", "nothing-has-this-label"]).expect(0);
    assert!(run.stdout.starts_with("NAMESPACE   NAME"), "{}", run.stdout);
    let run = gitops(&["get", "ks", "-A"]).expect(0);
    let mine: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{} ", ns.name)))
        .collect();
    assert_eq!(mine.len(), 2, "{}", run.stdout);
    gitops(&["get", "ks", "-n", &ns.name, "--status-selector", "ready"]).expect(2);
}

#[test]
#[ignore = "needs a cluster"]
fn hostile_status_text_is_escaped() {
    install_crds();
    let ns = TestNamespace::new("cli-esc");
    fixtures(&ns);
    set_status(
        &ns.name,
        "gitrepository",
        "broken",
        serde_json::json!({
            "conditions": [ready("False", "GitOperationFailed", "bad\u{1b}[2J\u{1b}]0;owned\u{7}\rline\nnext")]
        }),
    );
    let run = gitops(&["get", "sources", "git", "broken", "-n", &ns.name]).expect(0);
    assert!(
        !run.stdout.contains('\u{1b}') && !run.stdout.contains('\r'),
        "{:?}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("bad\\x1b[2J\\x1b]0;owned\\x07\\rline\\nnext"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), 2);
}

/// `get ks -w`: the listing, then one row (no header) for each change of what a row shows,
/// and nothing for a change it does not show; ends at --timeout with exit 0.
#[test]
#[ignore = "needs a cluster"]
fn watch_prints_a_row_for_each_change_of_a_row() {
    install_crds();
    let ns = TestNamespace::new("cli-watch");
    fixtures(&ns);
    let name = ns.name.clone();
    let watching = std::thread::spawn(move || {
        gitops(&["get", "ks", "-n", &name, "-w", "--timeout", "10s"]).expect(0)
    });
    // After the watch settled (it ignores the replay of its first half second).
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Not shown in a row: no new line.
    gitops_conformance::kubectl_ok(
        &[
            "-n",
            &ns.name,
            "label",
            "kustomizations.kubectl-gitops.io",
            "redis-dev",
            "touched=yes",
        ],
        None,
    );
    vote_dev_status(
        &ns,
        ready(
            "False",
            "HealthCheckFailed",
            "Deployment x/vote: 1/2 replicas available",
        ),
    );
    let run = watching.join().expect("watch thread");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header:\n{}",
        run.stdout
    );
    let vote: Vec<&&str> = lines.iter().filter(|l| l.starts_with("vote-dev")).collect();
    assert_eq!(
        vote.len(),
        2,
        "the listing row and the change:\n{}",
        run.stdout
    );
    assert!(vote[0].contains("True") && !vote[0].contains("replicas available"));
    assert!(
        vote[1].contains("False") && vote[1].contains("1/2 replicas available"),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("redis-dev")).count(),
        1,
        "a label change shows nothing new:\n{}",
        run.stdout
    );
    gitops(&["get", "ks", "-n", &ns.name, "-w", "-o", "json"]).expect(2);
}
