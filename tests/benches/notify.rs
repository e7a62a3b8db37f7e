//! Bench of push-to-applied latency: how long after `git push` the cluster runs the pushed
//! revision, over 20 pushes of a one-object change (ConfigMap data), median and p99.
//!
//! (a) through a `github` Receiver: the bare repository's post-receive hook sends GitHub's
//!     signed push webhook to the webhook server; GitRepository and Kustomization poll every
//!     hour, so only the webhook can bring the change in time. Goal: median < 2 s.
//! (b) baseline, in the same run and interleaved push by push with (a): the same push to a
//!     repository without a hook, followed by `kubectl gitops reconcile kustomization NAME
//!     --with-source` (the CLI binary, a fresh process), which is what a user does without a
//!     webhook.
//!
//! Both end when the Kustomization's `lastAppliedRevision` names the pushed commit (polled
//! every 25 ms). The GitRepository, Kustomization and notification controllers run in process
//! (the library functions the reconciler binary wires). Uses the cluster of
//! GITOPS_TEST_KUBECONFIG, or starts the local control plane and stops it afterwards.

#[path = "../tests/kustomization_support/mod.rs"]
mod kustomization_support;
#[path = "../tests/notify_support/mod.rs"]
mod notify_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, Repo, ServerKind, temp_dir};
use gitops_conformance::{TestNamespace, install_crds};
use gitops_reconciler::api::{Kustomization, Receiver};
use gitops_reconciler::notify::ReceiverLimits;
use kube::Api;
use notify_support::{
    GITHUB_HOOK, Reconciler, applied, commit_change, create_token_secret, git_repository,
    has_webhook_path, install_hook, kustomization, percentile, poll, pushable_repo,
};

const PUSHES: usize = 20;
/// The goal for the median of (a).
const GOAL: Duration = Duration::from_secs(2);
/// Longest one push may take to be applied before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Pushes `repo`'s HEAD, runs `after` (the baseline's CLI call), and waits until Kustomization
/// `name` applied the pushed commit; returns the time from the push's start.
async fn push_to_applied(
    repo: &Repo,
    n: usize,
    kss: &Api<Kustomization>,
    name: &str,
    after: impl FnOnce() + Send + 'static,
) -> Duration {
    let commit = commit_change(repo, &n.to_string());
    let wanted = format!("main@sha1:{commit}");
    let started = Instant::now();
    repo.git(&["push", "-q", "origin", "main"]);
    tokio::task::spawn_blocking(after).await.expect("CLI call");
    let (object, ok) = poll(kss, name, TIMEOUT, |k| applied(k) == Some(&wanted)).await;
    assert!(
        ok,
        "push {n} of {name} not applied within {TIMEOUT:?}: {:?}",
        object.status
    );
    started.elapsed()
}

async fn bench(cli: PathBuf) {
    install_crds();
    let ns = TestNamespace::new("bench-notify");
    // The baseline's ConfigMap goes to a namespace of its own (same name as (a)'s).
    let target_b = TestNamespace::new("bench-notify-cli");
    let label = ns.name.clone();
    let client = kustomization_support::client().await;
    let server = GitServer::start(ServerKind::Http);
    let (hooked, first_a) = pushable_repo(&server, "hooked");
    let (plain, first_b) = pushable_repo(&server, "plain");
    // The default limits: what a user gets (20 pushes fit in the rate limit's burst).
    let reconciler = Reconciler::start(client.clone(), &label, ReceiverLimits::default()).await;
    create_token_secret(&ns.name);
    let mut manifests = vec![format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Receiver\nmetadata:\n  name: github\n  labels:\n    gitops-test: {label}\nspec:\n  type: github\n  events: [push]\n  secretRef:\n    name: webhook-token\n  resources:\n  - kind: GitRepository\n    name: hooked\n"
    )];
    for (name, target) in [("hooked", &ns.name), ("plain", &target_b.name)] {
        manifests.push(git_repository(&label, name, &server.url(name)));
        manifests.push(kustomization(&label, name, target));
    }
    for manifest in &manifests {
        let created = ns.create(manifest);
        assert!(created.success, "{}", created.stderr);
    }
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    let (receiver, ok) = poll(&receivers, "github", TIMEOUT, has_webhook_path).await;
    assert!(ok, "receiver not ready: {:?}", receiver.status);
    let path = receiver.status.and_then(|s| s.webhook_path).unwrap();
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &ns.name);
    for (name, first) in [("hooked", &first_a), ("plain", &first_b)] {
        let (object, ok) = poll(&kss, name, TIMEOUT, |k| {
            applied(k) == Some(&format!("main@sha1:{first}"))
        })
        .await;
        assert!(
            ok,
            "{name}: first revision not applied: {:?}",
            object.status
        );
    }
    let hook_log = temp_dir("bench-notify-hook").join("hook.log");
    install_hook(
        &hooked.bare,
        GITHUB_HOOK,
        &format!("{}{path}", reconciler.webhook),
        &hook_log,
    );

    println!(
        "load average before: {}",
        gitops_conformance::load_average()
    );
    let kubeconfig = gitops_conformance::kubeconfig();
    let (mut receiver_times, mut cli_times) = (Vec::new(), Vec::new());
    for i in 0..PUSHES {
        let n = i + 2;
        receiver_times.push(push_to_applied(&hooked, n, &kss, "hooked", || ()).await);
        let (cli, kubeconfig, namespace) = (cli.clone(), kubeconfig.clone(), ns.name.clone());
        let reconcile = move || reconcile_with_source(&cli, &kubeconfig, &namespace, "plain");
        cli_times.push(push_to_applied(&plain, n, &kss, "plain", reconcile).await);
    }
    println!("load average after: {}", gitops_conformance::load_average());
    let log = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert_eq!(
        log.lines().filter(|l| *l == "200").count(),
        PUSHES,
        "every webhook accepted: {log}"
    );
    assert_eq!(
        reconciler.count(&ns.name, "github", "accepted"),
        PUSHES as u64
    );

    receiver_times.sort();
    cli_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a50, a99) = (
        percentile(&receiver_times, 50.0),
        percentile(&receiver_times, 99.0),
    );
    let (b50, b99) = (percentile(&cli_times, 50.0), percentile(&cli_times, 99.0));
    println!(
        "(a) push-to-applied through a github Receiver (interval 1h), {PUSHES} pushes: median {:.0} ms, p99 {:.0} ms",
        ms(a50),
        ms(a99)
    );
    println!(
        "(b) baseline, push + `kubectl gitops reconcile kustomization --with-source`, {PUSHES} pushes: median {:.0} ms, p99 {:.0} ms",
        ms(b50),
        ms(b99)
    );
    println!(
        "goal: median < {:.0} ms ({}); figure/goal {:.2}; (a)/(b) median {:.2}, p99 {:.2}",
        ms(GOAL),
        if a50 < GOAL { "met" } else { "MISSED" },
        a50.as_secs_f64() / GOAL.as_secs_f64(),
        a50.as_secs_f64() / b50.as_secs_f64(),
        a99.as_secs_f64() / b99.as_secs_f64(),
    );
    reconciler.shutdown().await;
    gitops_conformance::release_finalizers(Some(&ns.name), None);
}

/// `kubectl gitops reconcile kustomization NAME --with-source` as a user runs it.
fn reconcile_with_source(cli: &Path, kubeconfig: &Path, namespace: &str, name: &str) {
    let out = std::process::Command::new(cli)
        .args(["reconcile", "kustomization", name, "--with-source", "-n"])
        .arg(namespace)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .expect("run kubectl-gitops");
    assert!(
        out.status.success(),
        "kubectl gitops reconcile failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let _cluster = gitops_conformance::BenchCluster::get("notify");
    let cli = gitops_conformance::cargo_binary("kubectl-gitops", "kubectl-gitops");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(cli));
}
