//! `kubectl gitops create …` against a real apiserver: the objects written match the flags, the
//! apiserver accepts what --export prints, secrets never echo their data, and the wait for the
//! first reconcile ends with a timeout (exit 5) and a hint when no reconciler answers.

mod cli_support;

use cli_support::*;
use gitops_conformance::{TestNamespace, install_crds, kubectl};

#[test]
#[ignore = "needs a cluster"]
fn create_source_and_kustomization_write_the_objects_of_the_seed_story() {
    install_crds();
    let ns = TestNamespace::new("cli-create");
    let run = gitops(&[
        "create",
        "source",
        "git",
        "instavote",
        "-n",
        &ns.name,
        "--url",
        "https://git.example.com/instavote.git",
        "--branch",
        "main",
        "--interval",
        "30s",
        "--timeout",
        "1s",
    ])
    .expect(5);
    assert!(
        run.stderr.contains("✔ GitRepository applied"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for GitRepository"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: is the reconciler running?"),
        "{}",
        run.stderr
    );
    let repo = get_json(&ns.name, "gitrepositories.kubectl-gitops.io", "instavote");
    assert_eq!(
        repo["spec"],
        serde_json::json!({"url": "https://git.example.com/instavote.git", "ref": {"branch": "main"}, "interval": "30s"})
    );
    gitops(&[
        "create",
        "kustomization",
        "vote-dev",
        "-n",
        &ns.name,
        "--source=instavote",
        "--path=./deploy/vote",
        "--interval=1m",
        "--target-namespace=instavote",
        "--prune",
        "--policy",
        r#"builtin:replica-bounds:{"max": 5}"#,
        "--timeout",
        "1s",
    ])
    .expect(5);
    let ks = get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev");
    assert_eq!(ks["spec"]["targetNamespace"], "instavote");
    assert_eq!(ks["spec"]["prune"], true);
    assert_eq!(
        ks["spec"]["policies"][0]["module"]["builtin"],
        "replica-bounds"
    );
    assert_eq!(ks["spec"]["policies"][0]["config"]["max"], 5);
    // Running it again with other flags updates the object in place (server-side apply).
    gitops(&[
        "create",
        "kustomization",
        "vote-dev",
        "-n",
        &ns.name,
        "--source=instavote",
        "--path=./deploy/redis",
        "--timeout",
        "1s",
    ])
    .expect(5);
    let ks = get_json(&ns.name, "kustomizations.kubectl-gitops.io", "vote-dev");
    assert_eq!(ks["spec"]["path"], "./deploy/redis");
    assert!(ks["spec"].get("targetNamespace").is_none(), "{ks}");
}

#[test]
#[ignore = "needs a cluster"]
fn exported_objects_are_accepted_by_the_apiserver_as_they_are() {
    install_crds();
    let ns = TestNamespace::new("cli-export");
    let run = gitops(&[
        "create",
        "kustomization",
        "apps",
        "-n",
        &ns.name,
        "--source",
        "GitRepository/infra/fleet",
        "--path",
        "clusters/dev",
        "--depends-on",
        "base",
        "--health-check",
        "Deployment/web.apps",
        "--wait",
        "--export",
    ])
    .expect(0);
    assert!(
        run.stdout
            .starts_with("---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\n"),
        "{}",
        run.stdout
    );
    let res = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&run.stdout));
    assert!(
        res.success,
        "apiserver refused the export:\n{}\n{}",
        run.stdout, res.stderr
    );
    // Nothing was created by --export.
    let res = ns.kubectl(&["get", "kustomizations.kubectl-gitops.io", "apps"], None);
    assert!(!res.success);
}

#[test]
#[ignore = "needs a cluster"]
fn git_secrets_are_applied_without_echoing_their_data() {
    install_crds();
    let ns = TestNamespace::new("cli-secret");
    let run = gitops(&[
        "create",
        "secret",
        "git",
        "creds",
        "-n",
        &ns.name,
        "--url",
        "https://git.example.com/r.git",
        "-u",
        "deploy",
        "-p",
        "s3cr3t-pa55",
    ])
    .expect(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains("s3cr3t-pa55"),
        "the password was printed:\n{all}"
    );
    assert!(
        run.stderr.contains("keys: password, username"),
        "{}",
        run.stderr
    );
    let secret = get_json(&ns.name, "secret", "creds");
    assert_eq!(secret["data"]["username"], "ZGVwbG95"); // base64("deploy")
}

#[test]
#[ignore = "needs a cluster"]
fn invalid_values_are_refused_before_anything_is_written() {
    install_crds();
    let ns = TestNamespace::new("cli-invalid");
    let run = gitops(&[
        "create",
        "source",
        "git",
        "evil",
        "-n",
        &ns.name,
        "--url",
        "ssh://-oProxyCommand=x/r.git",
    ]);
    // The CLI passes ssh:// through; the apiserver's schema refuses the option-injection host.
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("must not start with '-'"),
        "{}",
        run.stderr
    );
    let run = gitops(&[
        "create",
        "source",
        "git",
        "plain",
        "-n",
        &ns.name,
        "--url",
        "http://example.com/r.git",
    ])
    .expect(2);
    assert!(run.stderr.contains("--insecure"), "{}", run.stderr);
    let run = gitops(&[
        "create",
        "ks",
        "k",
        "-n",
        &ns.name,
        "--source",
        "r",
        "--path",
        "../../etc",
    ])
    .expect(2);
    assert!(
        run.stderr.contains("invalid --path '../../etc'"),
        "{}",
        run.stderr
    );
    let listed = ns.kubectl(
        &["get", "gitrepositories,kustomizations", "-o", "name"],
        None,
    );
    assert!(
        listed.success && listed.stdout.trim().is_empty(),
        "something was written: {}",
        listed.stdout
    );
}
