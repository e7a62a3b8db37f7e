//! The seed's vote-dev with its replica-bounds policy, reconciled by the real controller and
//! rendered by `kubectl gitops build|diff` from the same files: the CLI prints the objects the
//! reconciler applied (same intent digest, online and offline), the same denial message, and
//! `diff` lists the object a prune would delete.

mod cli_support;
mod kustomization_support;

use std::time::Duration;

use cli_support::Run;
use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};
use kustomization_support::*;

/// The CLI runs its own runtime: call it from a thread of its own.
fn gitops(args: &[&str]) -> Run {
    std::thread::scope(|s| s.spawn(|| cli_support::gitops(args)).join().unwrap())
}

fn gitops_raw(args: &[String]) -> Run {
    std::thread::scope(|s| s.spawn(|| cli_support::gitops_raw(args)).join().unwrap())
}

const T: Duration = Duration::from_secs(90);

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: vote\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: vote}}\n  template:\n    metadata:\n      labels: {{app: vote}}\n    spec:\n      containers:\n      - name: vote\n        image: schooldevops/vote:v1\n"
    )
}
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: vote\nspec:\n  selector: {app: vote}\n  ports: [{port: 80}]\n";

/// Writes `files` under `dir` (a fresh checkout with a `.git` marker).
fn checkout(dir: &std::path::Path, files: &[(&str, &str)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
}

/// The `kubectl-gitops.io/intent-digest` annotations of a YAML stream, by kind.
fn digests(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        gitops_reconciler::yaml::from_str_multi::<serde_json::Value>(yaml)
            .unwrap()
            .into_iter()
            .filter(|o| !o.is_null())
            .map(|o| {
                (
                    o["kind"].as_str().unwrap_or_default().to_owned(),
                    o["metadata"]["annotations"]["kubectl-gitops.io/intent-digest"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn build_and_diff_match_what_the_reconciler_applies_and_denies() {
    install_crds();
    let ns = TestNamespace::new("cli-build-conf");
    let target = TestNamespace::new("cli-build-conf-app");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "instavote");
    let files = |replicas: u32, service: bool| {
        let mut files = vec![
            (
                "deploy/vote/kustomization.yaml".to_owned(),
                if service {
                    "resources: [vote.yaml, service.yaml]\n".to_owned()
                } else {
                    "resources: [vote.yaml]\n".to_owned()
                },
            ),
            ("deploy/vote/vote.yaml".to_owned(), deployment(replicas)),
        ];
        if service {
            files.push(("deploy/vote/service.yaml".to_owned(), SERVICE.to_owned()));
        }
        files
    };
    let as_refs = |f: &[(String, String)]| -> Vec<(String, String)> { f.to_vec() };
    let local = std::env::temp_dir().join(format!("cli-build-conf-{}", std::process::id()));
    let publish = |byte: char, f: &[(String, String)]| {
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        checkout(&local, &refs);
        source.publish(byte, &refs)
    };
    let v1 = publish('1', &as_refs(&files(2, true)));
    ns.create(&kustomization(
        "vote-dev",
        &ctl.shard,
        &format!(
            "  sourceRef: {{kind: GitRepository, name: instavote}}\n  path: ./deploy/vote\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  targetNamespace: {}\n  policies:\n  - name: replica-bounds\n    module: {{builtin: replica-bounds}}\n    config: {{bounds: {{Deployment: {{min: 1, max: 6}}}}, action: deny}}\n",
            target.name
        ),
    ));
    eventually(
        T,
        "Ready at v1",
        || ready(&ns.name, "vote-dev").filter(|(s, _, m)| s == "True" && m.ends_with(&v1)),
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;

    let path = local.join("deploy/vote").to_string_lossy().into_owned();
    let n = ns.name.as_str();
    // Online: the CLI's objects carry the very intent digests the reconciler applied.
    let online = gitops(&["build", "ks", "vote-dev", "-n", n, "--path", &path]).expect(0);
    let live = kubectl_ok(
        &[
            "-n",
            &target.name,
            "get",
            "deployment,service",
            "vote",
            "-o",
            "yaml",
        ],
        None,
    );
    let live_digests: Vec<(String, String)> = {
        let list: serde_json::Value = gitops_reconciler::yaml::from_str(&live).unwrap();
        let mut d: Vec<(String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().to_owned(),
                    o["metadata"]["annotations"]["kubectl-gitops.io/intent-digest"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        d.sort();
        d
    };
    assert_eq!(digests(&online.stdout), live_digests, "{}", online.stdout);

    // Offline: the Kustomization from a file, no ClusterPolicies, no cluster: same output.
    // Outside the checkout, which each publish rewrites.
    let ks_file = local.with_extension("ks.yaml");
    let ks_yaml = kubectl_ok(
        &["-n", n, "get", "kustomization", "vote-dev", "-o", "yaml"],
        None,
    );
    std::fs::write(&ks_file, ks_yaml).unwrap();
    let empty = local.with_extension("no-policies");
    std::fs::create_dir_all(&empty).unwrap();
    let offline_build = || {
        gitops_raw(
            &[
                "kubectl-gitops",
                "build",
                "ks",
                "vote-dev",
                "--path",
                &path,
                "--dry-run",
                "--kustomization-file",
                &ks_file.to_string_lossy(),
                "--cluster-policies",
                &empty.to_string_lossy(),
            ]
            .map(String::from),
        )
    };
    let offline = offline_build().expect(0);
    assert_eq!(offline.stdout, online.stdout);

    // In sync: diff exits 0.
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &path]).expect(0);
    assert!(
        run.stderr.contains("no differences"),
        "{}{}",
        run.stdout,
        run.stderr
    );

    // 50 replicas: the reconciler denies; build and diff show the same denial.
    let v2 = publish('2', &as_refs(&files(50, true)));
    let (_, _, message) = eventually(
        T,
        "PolicyDenied",
        || ready(&ns.name, "vote-dev").filter(|(s, r, _)| s == "False" && r == "PolicyDenied"),
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;
    assert_eq!(
        ks_status(n, "vote-dev")["lastAttemptedRevision"],
        v2.as_str()
    );
    let run = gitops(&["build", "ks", "vote-dev", "-n", n, "--path", &path]).expect(1);
    assert!(
        run.stderr.contains(&message),
        "reconciler: {message}\ncli: {}",
        run.stderr
    );
    assert!(run.stderr.contains("POLICY"), "{}", run.stderr);
    let run = offline_build().expect(1);
    assert!(
        run.stderr.contains(&message),
        "reconciler: {message}\ncli: {}",
        run.stderr
    );
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &path]).expect(6);
    assert!(run.stderr.contains(&message), "{}", run.stderr);
    // diff with the Kustomization and the ClusterPolicies from files: the same denial.
    let ks_arg = ks_file.to_string_lossy().into_owned();
    let policies_arg = empty.to_string_lossy().into_owned();
    let run = gitops(&[
        "diff",
        "ks",
        "vote-dev",
        "--path",
        &path,
        "--kustomization-file",
        &ks_arg,
        "--cluster-policies",
        &policies_arg,
    ])
    .expect(6);
    assert!(run.stderr.contains(&message), "{}", run.stderr);

    // The Service leaves the build: diff lists it as pruned (exit 1), and applies nothing.
    // (Only the local checkout changes: the reconciler must not prune it first.)
    let v3 = files(2, false);
    let refs: Vec<(&str, &str)> = v3.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    checkout(&local, &refs);
    std::fs::write(
        &ks_file,
        kubectl_ok(
            &["-n", n, "get", "kustomization", "vote-dev", "-o", "yaml"],
            None,
        ),
    )
    .unwrap();
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &path]).expect(1);
    assert!(
        run.stdout
            .contains(&format!("► Service/{}/vote pruned", target.name)),
        "{}",
        run.stdout
    );
    let _ = std::fs::remove_dir_all(&local);
    let _ = std::fs::remove_dir_all(&empty);
    let _ = std::fs::remove_file(&ks_file);
}

/// A policy in audit mode (Kubewarden's monitor mode): the reconciler applies the revision and
/// reports the violations in status and as an event; `build` prints the objects and the
/// findings, and exits 0. A clean revision clears the findings from status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn audit_mode_reports_violations_and_blocks_nothing() {
    install_crds();
    let ns = TestNamespace::new("cli-build-audit");
    let target = TestNamespace::new("cli-build-audit-app");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "instavote");
    let local = std::env::temp_dir().join(format!("cli-build-audit-{}", std::process::id()));
    let publish = |byte: char, replicas: u32| {
        let vote = deployment(replicas);
        let files = [
            ("deploy/vote/kustomization.yaml", "resources: [vote.yaml]\n"),
            ("deploy/vote/vote.yaml", vote.as_str()),
        ];
        checkout(&local, &files);
        source.publish(byte, &files)
    };
    let v1 = publish('1', 50);
    ns.create(&kustomization(
        "vote-dev",
        &ctl.shard,
        &format!(
            "  sourceRef: {{kind: GitRepository, name: instavote}}\n  path: ./deploy/vote\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  targetNamespace: {}\n  policies:\n  - name: bounds-audit\n    mode: Audit\n    module: {{builtin: replica-bounds}}\n    config: {{bounds: {{Deployment: {{min: 1, max: 6}}}}, action: deny}}\n",
            target.name
        ),
    ));
    let n = ns.name.as_str();
    eventually(
        T,
        "Ready at v1 despite the audit violation",
        || ready(n, "vote-dev").filter(|(s, _, m)| s == "True" && m.ends_with(&v1)),
        || format!("{:?}", ready(n, "vote-dev")),
    )
    .await;
    let replicas = kubectl_ok(
        &[
            "-n",
            &target.name,
            "get",
            "deployment",
            "vote",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "50", "an audit policy blocks nothing");
    let findings = ks_status(n, "vote-dev")["policyAudit"].clone();
    assert!(
        findings.to_string().contains("bounds-audit"),
        "status.policyAudit: {findings}"
    );
    let events = eventually(
        T,
        "a PolicyAudit event",
        || {
            let out = kubectl_ok(
                &[
                    "-n",
                    n,
                    "get",
                    "events",
                    "--field-selector",
                    "reason=PolicyAudit",
                    "-o",
                    "name",
                ],
                None,
            );
            (!out.trim().is_empty()).then_some(out)
        },
        || "no event".to_owned(),
    )
    .await;
    assert!(!events.is_empty());

    let path = local.join("deploy/vote").to_string_lossy().into_owned();
    let run = gitops(&["build", "ks", "vote-dev", "-n", n, "--path", &path]).expect(0);
    assert!(run.stdout.contains("replicas: 50"), "{}", run.stdout);
    assert!(
        run.stderr.contains("bounds-audit") && run.stderr.contains("audit mode"),
        "{}",
        run.stderr
    );

    // A clean revision: the findings leave the status.
    let v2 = publish('2', 2);
    eventually(
        T,
        "Ready at v2 without findings",
        || {
            let status = ks_status(n, "vote-dev");
            (status["lastAppliedRevision"] == v2.as_str() && status.get("policyAudit").is_none())
                .then_some(())
        },
        || ks_status(n, "vote-dev").to_string(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&local);
}
