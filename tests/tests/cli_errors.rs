//! How `kubectl gitops` fails: unknown objects (exit 3 and a sentence naming them), an
//! unreachable cluster (exit 4, a sentence and a hint, not a stack), missing CRDs (the check
//! hint), invalid and conflicting flags (exit 2), and a delete nobody confirmed.

mod cli_support;

use cli_support::*;
use gitops_conformance::{TestNamespace, install_crds, kubeconfig};

#[test]
#[ignore = "needs a cluster"]
fn unknown_objects_exit_3_naming_the_object() {
    install_crds();
    let ns = TestNamespace::new("cli-unknown");
    for args in [
        &["get", "ks", "nope"][..],
        &["reconcile", "ks", "nope"],
        &["reconcile", "source", "git", "nope"],
        &["suspend", "ks", "nope"],
        &["export", "source", "git", "nope"],
        &["tree", "ks", "nope"],
        &["delete", "ks", "nope", "-s"],
    ] {
        let mut full = args.to_vec();
        full.extend_from_slice(&["-n", &ns.name]);
        let run = gitops(&full).expect(3);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("✗ ") && first.contains(&format!("{}/nope not found", ns.name)),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("hint: list them with kubectl gitops get"),
            "{}",
            run.stderr
        );
    }
    let run = gitops(&["trace", "configmap/nope", "-n", &ns.name]).expect(3);
    assert!(
        run.stderr
            .contains(&format!("ConfigMap/{}/nope not found", ns.name)),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs a cluster"]
fn an_unreachable_cluster_is_one_sentence_and_a_hint() {
    // The kubeconfig under test, pointed at a port nothing listens on.
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dead: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: https://127.0.0.1:{port}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = std::env::temp_dir().join(format!("cli-dead-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, dead).unwrap();
    let path = path.to_string_lossy().into_owned();
    let run = gitops_raw(
        &[
            "kubectl-gitops",
            "get",
            "ks",
            "--kubeconfig",
            &path,
            "--timeout",
            "5s",
        ]
        .map(String::from),
    )
    .expect(4);
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("✗ listing Kustomizations: cannot reach the Kubernetes API server"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: is the cluster running?"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Error {") && !run.stderr.contains("backtrace"),
        "{}",
        run.stderr
    );
    // version still prints the client and warns about the server.
    let run = gitops_raw(&["kubectl-gitops", "version", "--kubeconfig", &path].map(String::from))
        .expect(0);
    assert!(
        run.stdout.starts_with("kubectl-gitops: v"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("server version unavailable"),
        "{}",
        run.stderr
    );
    let run = gitops_raw(
        &[
            "kubectl-gitops",
            "get",
            "ks",
            "--kubeconfig",
            "/no/such/kubeconfig",
        ]
        .map(String::from),
    )
    .expect(4);
    assert!(
        run.stderr
            .contains("cannot read kubeconfig /no/such/kubeconfig"),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
#[ignore = "needs a cluster"]
fn invalid_and_conflicting_flags_exit_2() {
    for (args, expected) in [
        (&["get", "ks", "--output", "xml"][..], "invalid value 'xml'"),
        (&["get", "ks", "--timeout", "soon"], "not a Go duration"),
        (
            &["get", "ks", "--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (
            &[
                "create",
                "source",
                "git",
                "a",
                "--url",
                "https://h/r",
                "--branch",
                "main",
                "--tag",
                "v1",
            ],
            "cannot be used with",
        ),
        (
            &[
                "create",
                "secret",
                "git",
                "s",
                "--url",
                "https://h/r",
                "-u",
                "me",
                "--private-key-file",
                "k",
            ],
            "cannot be used with",
        ),
        (&["suspend", "ks", "a", "--all"], "cannot be used with"),
        (
            &["get", "ks", "-w", "-o", "json"],
            "--watch prints tables only",
        ),
        (&["get", "ks", "a", "-A"], "cannot be combined with -A"),
    ] {
        let run = gitops(args).expect(2);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

#[test]
#[ignore = "needs a cluster"]
fn delete_without_a_terminal_asks_for_silent() {
    install_crds();
    let ns = TestNamespace::new("cli-del");
    let res = ns.create("apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {name: keep}\nspec: {url: 'https://h/r.git', interval: 1m}\n");
    assert!(res.success, "{}", res.stderr);
    let run = gitops(&["delete", "source", "git", "keep", "-n", &ns.name]).expect(2);
    assert!(run.stderr.contains("pass -s/--silent"), "{}", run.stderr);
    assert!(
        ns.kubectl(&["get", "gitrepositories.kubectl-gitops.io", "keep"], None)
            .success,
        "deleted without confirmation"
    );
    gitops(&["delete", "source", "git", "keep", "-n", &ns.name, "-s"]).expect(0);
    assert!(
        !ns.kubectl(&["get", "gitrepositories.kubectl-gitops.io", "keep"], None)
            .success
    );
}
