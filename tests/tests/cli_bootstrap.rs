//! `kubectl gitops bootstrap git` against a real https git server (lighttpd + git-http-backend,
//! basic auth, a throwaway CA) and the local control plane, with a real `gitops-reconciler`
//! process running out of the cluster (the cluster's pods are kwok's fakes) doing the
//! reconciling. The plugin runs as a process, so that its git child and PATH are real.
//!
//! Proves: the manifests land under `--path` in one commit next to what the repository had, the
//! cluster reconciles itself from that commit (GitRepository and Kustomization Ready at the
//! pushed revision, the Kustomization's inventory holds the reconciler and itself), a second run
//! commits nothing, a changed flag is an upgrade (one new commit, reconciled), the password is in
//! no output, no git argv and no committed file; and the errors: unreachable URL, bad
//! credentials, no git on PATH — each before anything is pushed or applied. Cluster-scoped
//! objects left labelled by a bootstrap whose Kustomization is gone are adopted. Over ssh (Debian's
//! sshd, a deploy key): git pushes with the key and known_hosts, the reconciler fetches with the
//! same pair from the Secret, a second run commits nothing.

mod cli_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use cli_support::get_json;
use gitops_conformance::git::{GitServer, ServerKind, temp_dir};
use gitops_conformance::{
    TestNamespace, cargo_binary, install_crds, kubeconfig, kubectl, kubectl_ok,
};

/// The plugin and the reconciler (debug builds).
fn binaries() -> (PathBuf, PathBuf) {
    (
        cargo_binary("kubectl-gitops", "kubectl-gitops"),
        cargo_binary("gitops-reconciler", "gitops-reconciler"),
    )
}

/// The bootstrap scenarios run one at a time: each runs a reconciler that watches the whole
/// cluster, and both claim the same cluster-scoped objects (CRDs, ClusterRoles).
static SCENARIO: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `gitops-reconciler` process out of the cluster, stopped when dropped.
struct Reconciler {
    child: Child,
    log: PathBuf,
    storage: PathBuf,
}

impl Reconciler {
    fn start(bin: &Path) -> Self {
        let storage = temp_dir("bootstrap-storage");
        let log = storage.with_extension("log");
        let port = free_port();
        // The reconciler logs to stdout (tracing's default) and errors to stderr: both here.
        let out = std::fs::File::create(&log).expect("create reconciler log");
        let child = Command::new(bin)
            .args([
                "--storage-path",
                storage.to_str().expect("utf-8 path"),
                "--storage-addr",
                &format!("127.0.0.1:{port}"),
                "--storage-adv-addr",
                &format!("127.0.0.1:{port}"),
                "--metrics-addr",
                &format!("127.0.0.1:{}", free_port()),
                "--health-addr",
                &format!("127.0.0.1:{}", free_port()),
                "--receiver-addr",
                "127.0.0.1:0",
                "--log-format",
                "text",
            ])
            .env("KUBECONFIG", kubeconfig())
            .stdout(out.try_clone().expect("reconciler log handle"))
            .stderr(out)
            .spawn()
            .expect("start gitops-reconciler");
        Self {
            child,
            log,
            storage,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.storage);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// On drop, lets go of the self-managing objects of `ns` (their finalizers would wait forever
/// for the reconciler, stopped before this runs) and deletes them, without pruning what they
/// applied: the cluster-scoped objects stay behind, labelled for a Kustomization that is gone,
/// and the next bootstrap (in a namespace of its own) adopts them.
struct Release(String);

impl Drop for Release {
    fn drop(&mut self) {
        for kind in [
            "kustomizations.kubectl-gitops.io",
            "gitrepositories.kubectl-gitops.io",
        ] {
            let _ = kubectl(
                &[
                    "-n",
                    &self.0,
                    "patch",
                    kind,
                    "gitops-system",
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            );
            let _ = kubectl(
                &[
                    "-n",
                    &self.0,
                    "delete",
                    kind,
                    "gitops-system",
                    "--ignore-not-found",
                    "--timeout=60s",
                ],
                None,
            );
        }
    }
}

/// A directory with a `git` that records its arguments, then runs the real one.
fn recording_git(dir: &Path) -> (PathBuf, PathBuf) {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .expect("sh")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_owned();
    assert!(!real.is_empty(), "no git on PATH");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create bin dir");
    let argv_log = dir.join("git-argv.log");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        argv_log.display(),
        real
    );
    let path = bin.join("git");
    std::fs::write(&path, script).expect("write git wrapper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (bin, argv_log)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the plugin with `PATH=path` and the cluster's kubeconfig.
fn plugin(bin: &Path, path: &str, args: &[&str]) -> Run {
    let out = Command::new(bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl-gitops");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The lines of a run without the per-object `applied` lines, with the run's variable parts
/// (URL, namespace, commit ids) replaced by placeholders.
fn normalised(stderr: &str, url: &str, ns: &str, commits: &[&str]) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !(l.starts_with("✔ ") && l.ends_with(" applied")))
        .map(|l| {
            let mut l = l.replace(url, "<URL>").replace(ns, "<NS>");
            for (i, c) in commits.iter().enumerate() {
                l = l
                    .replace(c, &format!("<C{i}>"))
                    .replace(&c[..12], &format!("<C{i}>"));
            }
            l
        })
        .collect()
}

#[test]
#[ignore = "needs a cluster"]
fn bootstrap_git_over_https_makes_the_cluster_manage_itself_and_reruns_are_idempotent() {
    let _scenario = SCENARIO.lock().unwrap_or_else(|e| e.into_inner());
    let (cli, reconciler_bin) = binaries();
    let server = GitServer::start(ServerKind::Https);
    let repo = server.repo("fleet");
    let first = repo.commit(&[("README.md", Some("# fleet\n"))], "initial");
    let url = server.url("fleet");
    let password = server.get("password").to_owned();
    let work = temp_dir("bootstrap");
    let (wrapper, argv_log) = recording_git(&work);
    let path = format!(
        "{}:{}",
        wrapper.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The cluster-scoped objects of the install manifests (CRDs, ClusterRoles) outlive every
    // bootstrap: mark the CRDs as left behind by one whose Kustomization is gone (its namespace
    // never existed), as after a re-bootstrap into a new namespace. The reconciler adopts them.
    install_crds();
    let gone = format!("gone-{}", std::process::id());
    kubectl_ok(
        &[
            "label",
            "--overwrite",
            "customresourcedefinitions",
            "kustomizations.kubectl-gitops.io",
            "gitrepositories.kubectl-gitops.io",
            "kubectl-gitops.io/name=gitops-system",
            &format!("kubectl-gitops.io/namespace={gone}"),
        ],
        None,
    );
    // Dropped in reverse: the reconciler stops, the objects are released, the namespace goes.
    let ns = TestNamespace::new("bootstrap");
    let _release = Release(ns.name.clone());
    let reconciler = Reconciler::start(&reconciler_bin);
    let args = |interval: &'static str| -> Vec<String> {
        [
            "bootstrap",
            "git",
            "--url",
            &url,
            "--branch",
            "main",
            "--path",
            "clusters/dev",
            "-u",
            server.get("username"),
            "-p",
            &password,
            "--ca-file",
            server.get("ca"),
            "--interval",
            interval,
            "-n",
            &ns.name,
            "--timeout",
            "3m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run_with = |interval| {
        let a = args(interval);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        plugin(&cli, &path, &a)
    };

    // First run: one commit on top of the user's, reconciled by the cluster.
    let run = run_with("1m");
    let head = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    let head = head.split('\t').next().unwrap_or_default().to_owned();
    assert_eq!(
        run.code,
        0,
        "stderr:\n{}\nreconciler log:\n{}",
        run.stderr,
        reconciler.log()
    );
    assert_eq!(run.stdout, "");
    assert_eq!(
        normalised(&run.stderr, &url, &ns.name, &[&first, &head]),
        [
            "► cloning branch \"main\" from <URL>",
            "✔ cloned repository at <C0>",
            "► generating the manifests of the reconciler and of the sync",
            "✔ committed the manifests to \"main\" (<C1>)",
            "► pushing to <URL>",
            "✔ pushed <C1> to \"main\"",
            "► installing the reconciler in <NS>",
            "◎ waiting for the CRDs to be established",
            "◎ waiting for the reconciler to become ready",
            "► configuring the cluster to synchronize with the repository",
            "◎ waiting for GitRepository <NS>/gitops-system to fetch main@sha1:<C1>",
            "✔ fetched revision: main@sha1:<C1>",
            "◎ waiting for Kustomization <NS>/gitops-system to apply main@sha1:<C1>",
            "✔ applied revision: main@sha1:<C1>",
            "✔ bootstrap finished: the cluster reconciles itself from <URL> (clusters/dev/gitops-system/ at main@sha1:<C1>)",
        ],
        "{}",
        run.stderr
    );
    for applied in [
        "✔ CustomResourceDefinition kustomizations.kubectl-gitops.io applied".to_owned(),
        format!("✔ Deployment {}/gitops-reconciler applied", ns.name),
        format!("✔ Secret {}/gitops-system applied", ns.name),
        format!("✔ GitRepository {}/gitops-system applied", ns.name),
        format!("✔ Kustomization {}/gitops-system applied", ns.name),
    ] {
        assert!(
            run.stderr.contains(&applied),
            "no {applied:?} in\n{}",
            run.stderr
        );
    }

    // The repository: the user's commit, then ours, with the three files next to README.md.
    repo.git(&["pull", "-q", "origin", "main"]);
    assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), first);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%an <%ae>"]),
        "kubectl-gitops <noreply@kubectl-gitops.io>"
    );
    assert_eq!(
        repo.git(&["ls-tree", "-r", "--name-only", "HEAD"]),
        "README.md\nclusters/dev/gitops-system/gitops-components.yaml\nclusters/dev/gitops-system/gitops-sync.yaml\nclusters/dev/gitops-system/kustomization.yaml"
    );
    let sync = repo.git(&["show", "HEAD:clusters/dev/gitops-system/gitops-sync.yaml"]);
    assert!(sync.contains(&format!("url: {url}")), "{sync}");
    assert!(sync.contains("secretRef:"), "{sync}");
    for file in [
        "gitops-components.yaml",
        "gitops-sync.yaml",
        "kustomization.yaml",
    ] {
        let text = repo.git(&["show", &format!("HEAD:clusters/dev/gitops-system/{file}")]);
        assert!(
            !text.contains(&password),
            "the password was committed in {file}"
        );
    }

    // The cluster reconciled itself from that commit.
    let revision = format!("main@sha1:{head}");
    let source = get_json(
        &ns.name,
        "gitrepositories.kubectl-gitops.io",
        "gitops-system",
    );
    assert_eq!(source["status"]["artifact"]["revision"], revision.as_str());
    let ks = get_json(
        &ns.name,
        "kustomizations.kubectl-gitops.io",
        "gitops-system",
    );
    assert_eq!(ks["status"]["lastAppliedRevision"], revision.as_str());
    let ids: Vec<String> = ks["status"]["inventory"]["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for wanted in [
        format!("{}_gitops-reconciler_apps_Deployment", ns.name),
        format!("{}_gitops-system_kubectl-gitops.io_Kustomization", ns.name),
        format!("{}_gitops-system_kubectl-gitops.io_GitRepository", ns.name),
        "_kustomizations.kubectl-gitops.io_apiextensions.k8s.io_CustomResourceDefinition"
            .to_owned(),
    ] {
        assert!(
            ids.contains(&wanted),
            "no {wanted} in the inventory {ids:?}"
        );
    }
    // Adopted from the Kustomization that is gone, and said so.
    let crd: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &[
            "get",
            "customresourcedefinition",
            "kustomizations.kubectl-gitops.io",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("kubectl prints JSON");
    assert_eq!(
        crd["metadata"]["labels"]["kubectl-gitops.io/namespace"],
        ns.name.as_str()
    );
    assert!(
        reconciler
            .log()
            .contains("adopting an object whose owner Kustomization no longer exists"),
        "{}",
        reconciler.log()
    );
    let deployment = get_json(&ns.name, "deployment", "gitops-reconciler");
    assert_eq!(
        deployment["metadata"]["labels"]["kubectl-gitops.io/name"], "gitops-system",
        "the Deployment is managed by the gitops-system Kustomization"
    );

    // Second run: nothing changed, nothing committed, still Ready at the same revision.
    let again = run_with("1m");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains(
            "✔ the manifests in clusters/dev/gitops-system/ are up to date: nothing to commit"
        ),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("pushing"), "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains(&format!("✔ applied revision: {revision}")),
        "{}",
        again.stderr
    );
    let still = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    assert!(still.starts_with(&head), "{still}");

    // A changed flag is an upgrade: one new commit, reconciled.
    let upgrade = run_with("2m");
    assert_eq!(upgrade.code, 0, "{}", upgrade.stderr);
    repo.git(&["pull", "-q", "origin", "main"]);
    let new_head = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), head);
    assert!(
        upgrade
            .stderr
            .contains(&format!("✔ applied revision: main@sha1:{new_head}")),
        "{}",
        upgrade.stderr
    );
    let source = get_json(
        &ns.name,
        "gitrepositories.kubectl-gitops.io",
        "gitops-system",
    );
    assert_eq!(source["spec"]["interval"], "2m");

    // The password is in no output and in no git argv.
    for text in [&run.stdout, &run.stderr, &again.stderr, &upgrade.stderr] {
        assert!(!text.contains(&password), "password printed:\n{text}");
    }
    let argv = std::fs::read_to_string(&argv_log).expect("the wrapper ran");
    assert!(argv.contains("push"), "{argv}");
    assert!(!argv.contains(&password), "password in git argv:\n{argv}");

    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "needs a cluster"]
fn bootstrap_git_errors_are_one_line_with_a_hint_and_change_nothing() {
    let (cli, _) = binaries();
    let server = GitServer::start(ServerKind::Https);
    let repo = server.repo("fleet");
    let first = repo.commit(&[("README.md", Some("# fleet\n"))], "initial");
    let url = server.url("fleet");
    let ns = TestNamespace::new("bootstrap-err");
    let path = std::env::var("PATH").unwrap_or_default();
    let base = |url: &str, password: &str| -> Vec<String> {
        [
            "bootstrap",
            "git",
            "--url",
            url,
            "--path",
            "clusters/dev",
            "-u",
            server.get("username"),
            "-p",
            password,
            "--ca-file",
            server.get("ca"),
            "-n",
            &ns.name,
            "--timeout",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>, path: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        plugin(&cli, path, &a)
    };

    // Bad credentials: refused by the server, the wrong password is not echoed.
    let bad = run(base(&url, "not-the-password"), &path);
    assert_eq!(bad.code, 6, "{}", bad.stderr);
    let lines: Vec<&str> = bad.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", bad.stderr);
    assert_eq!(lines[0], format!("► cloning branch \"main\" from {url}"));
    assert!(
        lines[1].starts_with(&format!("✗ git could not list the branches of {url}: ")),
        "{}",
        bad.stderr
    );
    assert_eq!(
        lines[2],
        "  hint: the git server refused the credentials: check -u/-p or --private-key-file"
    );
    assert!(!bad.stderr.contains("not-the-password"), "{}", bad.stderr);

    // Unreachable URL: a closed port.
    let closed = format!("https://127.0.0.1:{}/git/fleet.git", free_port());
    let down = run(base(&closed, server.get("password")), &path);
    assert_eq!(down.code, 6, "{}", down.stderr);
    assert!(
        down.stderr
            .contains(&format!("✗ git could not list the branches of {closed}: ")),
        "{}",
        down.stderr
    );
    assert!(
        down.stderr
            .contains("  hint: is the git server reachable from here?"),
        "{}",
        down.stderr
    );

    // No git on PATH: said before anything else happens.
    let empty = temp_dir("bootstrap-nogit");
    let nogit = run(base(&url, server.get("password")), empty.to_str().unwrap());
    assert_eq!(nogit.code, 6, "{}", nogit.stderr);
    assert_eq!(
        nogit.stderr,
        "✗ bootstrap git pushes with the git command-line tool, and there is no git on PATH\n  hint: install git (e.g. apt-get install git) and run bootstrap again\n"
    );

    // Nothing pushed, nothing applied.
    let head = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    assert!(head.starts_with(&first), "{head}");
    let objects = kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            "gitrepositories,kustomizations,secrets",
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        !objects.stdout.contains("gitops-system"),
        "{}",
        objects.stdout
    );
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
#[ignore = "needs a cluster"]
fn bootstrap_git_over_ssh_pushes_with_the_deploy_key_and_the_reconciler_fetches_with_it() {
    let _scenario = SCENARIO.lock().unwrap_or_else(|e| e.into_inner());
    let (cli, reconciler_bin) = binaries();
    let server = GitServer::start(ServerKind::Ssh);
    let repo = server.repo("fleet");
    let first = repo.commit(&[("README.md", Some("# fleet\n"))], "initial");
    let url = server.url("fleet");
    let path = std::env::var("PATH").unwrap_or_default();
    let ns = TestNamespace::new("bootstrap-ssh");
    let _release = Release(ns.name.clone());
    let reconciler = Reconciler::start(&reconciler_bin);
    let args = [
        "bootstrap",
        "git",
        "--url",
        &url,
        "--path",
        "clusters/ssh",
        "--private-key-file",
        server.get("identity"),
        "--known-hosts-file",
        server.get("known_hosts"),
        "-n",
        &ns.name,
        "--timeout",
        "3m",
    ];
    let run = plugin(&cli, &path, &args);
    assert_eq!(
        run.code,
        0,
        "stderr:\n{}\nreconciler log:\n{}",
        run.stderr,
        reconciler.log()
    );
    let head = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    let head = head.split('\t').next().unwrap_or_default().to_owned();
    assert_ne!(head, first);
    assert!(
        run.stderr
            .contains(&format!("✔ applied revision: main@sha1:{head}")),
        "{}",
        run.stderr
    );
    // The reconciler got the deploy key and known_hosts from the Secret, not from git.
    let secret = get_json(&ns.name, "secret", "gitops-system");
    let keys: Vec<&String> = secret["data"]
        .as_object()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["identity", "known_hosts"]);
    repo.git(&["pull", "-q", "origin", "main"]);
    let sync = repo.git(&["show", "HEAD:clusters/ssh/gitops-system/gitops-sync.yaml"]);
    assert!(!sync.contains("PRIVATE KEY"), "{sync}");
    assert!(sync.contains(&format!("url: {url}")), "{sync}");

    let again = plugin(&cli, &path, &args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains("nothing to commit"),
        "{}",
        again.stderr
    );
    let still = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    assert!(still.starts_with(&head), "{still}");
}
