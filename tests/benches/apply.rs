//! Bench of the apply stage and the Kustomization controller (issue 7). Prints, for each
//! figure, the measured value, the goal and the ratio (against the baseline measured in the same
//! run where there is one, else against the goal).
//!
//! (b) one build of 2,000 objects: first apply through `apply::plan` + `apply::apply` vs
//!     `kubectl apply --server-side` of the same objects (into a twin namespace), then a
//!     no-change reconcile: its duration and the write requests the apiserver counted for it.
//! (a) the flux-benchmark workload: 1,000 Kustomizations × 4 objects (Deployment, Service,
//!     ConfigMap, ServiceAccount) from one source, `wait` and `prune`, reconciled by the
//!     `gitops-reconciler` binary (release build, `--concurrent` below): time until all Ready.
//! (c) the reconciler's RSS: idle, and peak during (a).
//!
//! Uses the cluster of GITOPS_TEST_KUBECONFIG, or starts the local control plane (tests/cluster,
//! which runs kube-controller-manager with --kube-api-qps 500 --kube-api-burst 1000 so that its
//! own client throttling is not what is measured) and stops it afterwards.
//! `GITOPS_BENCH_KUSTOMIZATIONS` scales (a) down for a quick run.

#[path = "../tests/kustomization_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gitops_conformance::{kubectl, kubectl_ok, repo_root};
use gitops_reconciler::apply::{self, Resolver};

const RECONCILER_CONCURRENT: u16 = 64;

fn report(name: &str, measured: String, goal: &str, ratio: f64, note: &str) {
    println!("{name:<48} measured {measured:<14} goal {goal:<10} ratio {ratio:>6.2}  {note}");
}

/// Cluster under test: the caller's, or one of our own (stopped on drop).
struct Cluster {
    dir: Option<PathBuf>,
}

impl Cluster {
    fn get() -> Cluster {
        if std::env::var_os(gitops_conformance::KUBECONFIG_ENV).is_some() {
            return Cluster { dir: None };
        }
        let dir = std::env::temp_dir().join(format!("gitops-bench-apply-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(repo_root().join("tests/cluster/up.sh"))
            .env("GITOPS_CLUSTER_DIR", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/cluster/up.sh");
        assert!(out.status.success(), "tests/cluster/up.sh failed");
        let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // SAFETY-free: set before any thread reads the environment (single-threaded here).
        unsafe { std::env::set_var(gitops_conformance::KUBECONFIG_ENV, kubeconfig) };
        Cluster { dir: Some(dir) }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new("bash")
                .arg(repo_root().join("tests/cluster/down.sh"))
                .arg("--purge")
                .env("GITOPS_CLUSTER_DIR", dir)
                .status();
        }
    }
}

/// Sum of apiserver_request_total for write verbs (dry-run or not) on `resources`.
fn write_requests(resources: &[&str]) -> u64 {
    let metrics = kubectl_ok(&["get", "--raw", "/metrics"], None);
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            [
                "verb=\"APPLY\"",
                "verb=\"PATCH\"",
                "verb=\"POST\"",
                "verb=\"PUT\"",
                "verb=\"DELETE\"",
                "verb=\"CREATE\"",
                "verb=\"UPDATE\"",
            ]
            .iter()
            .any(|v| l.contains(v))
        })
        .filter(|l| {
            resources
                .iter()
                .any(|r| l.contains(&format!("resource=\"{r}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn two_thousand(ns: &str) -> String {
    let mut out = String::new();
    for i in 0..700 {
        out.push_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {ns}, labels: {{app: bench}}}}\ndata: {{index: \"{i}\", payload: \"{}\"}}\n---\n",
            "x".repeat(200)
        ));
        out.push_str(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}, namespace: {ns}, labels: {{app: bench}}}}\n---\n"
        ));
    }
    for i in 0..600 {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}, labels: {{app: bench}}}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n"
        ));
    }
    out
}

async fn bench_b() {
    let ours = format!("bench-b-ours-{}", std::process::id());
    let theirs = format!("bench-b-kubectl-{}", std::process::id());
    for ns in [&ours, &theirs] {
        kubectl_ok(&["create", "namespace", ns], None);
    }
    let client = support::client().await;
    let resolver = Resolver::new();
    let mut opts = support::options(support::owner("bench", &ours));
    opts.concurrency = 64;

    // Warm discovery for both sides.
    kubectl_ok(&["api-resources"], None);
    let objects = support::objects(&two_thousand(&ours));
    let _ = apply::plan(&client, &resolver, objects[..3].to_vec(), &opts.owner).await;

    let started = Instant::now();
    let plan = apply::plan(&client, &resolver, objects, &opts.owner)
        .await
        .expect("plan");
    let changes = apply::apply(&client, &resolver, &plan, &opts)
        .await
        .expect("apply");
    let ours_first = started.elapsed();
    assert_eq!(changes.count(apply::Action::Created), 2000);

    let file = std::env::temp_dir().join(format!("{theirs}.yaml"));
    std::fs::write(&file, two_thousand(&theirs)).expect("write manifest");
    let started = Instant::now();
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=bench",
            "-f",
            &file.to_string_lossy(),
        ],
        None,
    );
    let kubectl_first = started.elapsed();
    let _ = std::fs::remove_file(&file);
    report(
        "(b) first apply of 2,000 objects",
        format!("{:.2}s", ours_first.as_secs_f64()),
        "<= 1.0x",
        ours_first.as_secs_f64() / kubectl_first.as_secs_f64(),
        &format!(
            "kubectl apply --server-side: {:.2}s (same run); --concurrent-apply 64",
            kubectl_first.as_secs_f64()
        ),
    );

    // No-change reconcile: the controller's plan + apply on an unchanged build.
    let resources = ["configmaps", "services", "serviceaccounts"];
    let writes_before = write_requests(&resources);
    let objects = support::objects(&two_thousand(&ours));
    let started = Instant::now();
    let plan = apply::plan(&client, &resolver, objects, &opts.owner)
        .await
        .expect("plan");
    let changes = apply::apply(&client, &resolver, &plan, &opts)
        .await
        .expect("apply");
    let idle = started.elapsed();
    let writes = write_requests(&resources) - writes_before;
    assert_eq!(changes.count(apply::Action::Unchanged), 2000);
    report(
        "(b) no-change reconcile of 2,000 objects",
        format!("{:.0}ms", idle.as_secs_f64() * 1000.0),
        "< 200ms",
        idle.as_secs_f64() / 0.2,
        "",
    );
    report(
        "(b) write requests of the no-change reconcile",
        format!("{writes}"),
        "0",
        writes as f64,
        "apiserver_request_total, write verbs incl. dry-run, on the bench's kinds",
    );
    for ns in [&ours, &theirs] {
        let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Builds (release) and starts the reconciler binary against the cluster under test.
fn start_reconciler(storage: &Path) -> Child {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "gitops-reconciler",
            "--bin",
            "gitops-reconciler",
        ])
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building gitops-reconciler failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let log = std::fs::File::create(std::env::temp_dir().join("gitops-bench-reconciler.log"))
        .expect("log file");
    Command::new(target.join("release/gitops-reconciler"))
        .args([
            &format!("--storage-path={}", storage.display()),
            &format!("--storage-addr=127.0.0.1:{}", free_port()),
            &format!("--metrics-addr=127.0.0.1:{}", free_port()),
            &format!("--health-addr=127.0.0.1:{}", free_port()),
            &format!("--concurrent={RECONCILER_CONCURRENT}"),
            "--concurrent-apply=8",
            "--watch-label-selector=bench=flux",
            "--log-format=json",
        ])
        .env("KUBECONFIG", gitops_conformance::kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start gitops-reconciler")
}

async fn bench_a() {
    let count: usize = std::env::var("GITOPS_BENCH_KUSTOMIZATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let ns = format!("bench-a-{}", std::process::id());
    kubectl_ok(&["create", "namespace", &ns], None);
    gitops_conformance::install_crds();
    let storage = std::env::temp_dir().join(format!("gitops-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&storage).expect("storage");
    let source = support::PublishedSource::new(&storage, &ns, "podinfo");
    let app = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    metadata: {{labels: {{app: app}}}}\n    spec:\n      serviceAccountName: app\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: {ns}}}\nspec:\n  selector: {{app: app}}\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app, namespace: {ns}}}\ndata: {{k: v}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: app, namespace: {ns}}}\n"
    );
    source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [app.yaml]\n"),
            ("app/app.yaml", &app),
        ],
    );

    let mut reconciler = start_reconciler(&storage);
    let pid = reconciler.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = rss_kib(pid, "VmRSS:");

    let mut manifests = String::new();
    for i in 0..count {
        manifests.push_str(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: app-{i}, namespace: {ns}, labels: {{bench: flux}}}}\nspec:\n  sourceRef: {{kind: GitRepository, name: podinfo}}\n  path: ./app\n  interval: 1h\n  retryInterval: 5s\n  timeout: 5m\n  prune: true\n  wait: true\n  namePrefix: k{i}-\n---\n"
        ));
    }
    let started = Instant::now();
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifests));
    let client = support::client().await;
    let api: kube::Api<gitops_reconciler::api::Kustomization> = kube::Api::namespaced(client, &ns);
    let deadline = Duration::from_secs(600);
    let mut ready = 0;
    while started.elapsed() < deadline {
        let list = api.list(&Default::default()).await.expect("list");
        ready = list
            .items
            .iter()
            .filter(|k| {
                k.status
                    .as_ref()
                    .is_some_and(|s| gitops_reconciler::api::conditions::is_ready(&s.conditions))
            })
            .count();
        if ready == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let peak_rss = rss_kib(pid, "VmHWM:");
    report(
        &format!("(a) {count} Kustomizations x 4 objects, all Ready"),
        format!("{:.1}s", elapsed.as_secs_f64()),
        "<= 60s",
        elapsed.as_secs_f64() / 60.0,
        &format!(
            "{ready}/{count} Ready; --concurrent {RECONCILER_CONCURRENT}; Flux: 4m13s on 16 cores (ratio vs Flux {:.2})",
            elapsed.as_secs_f64() / 253.0
        ),
    );
    report(
        "(c) reconciler RSS idle",
        format!("{:.1}MiB", idle_rss as f64 / 1024.0),
        "< 25MiB",
        idle_rss as f64 / 1024.0 / 25.0,
        "",
    );
    report(
        "(c) reconciler RSS peak during (a)",
        format!("{:.1}MiB", peak_rss as f64 / 1024.0),
        "< 250MiB",
        peak_rss as f64 / 1024.0 / 250.0,
        "VmHWM",
    );
    let _ = reconciler.kill();
    let _ = reconciler.wait();
    // Release the finalizers the reconciler set, then delete everything.
    let _ = kubectl(
        &[
            "-n",
            &ns,
            "patch",
            "kustomizations",
            "--all",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
    let _ = std::fs::remove_dir_all(&storage);
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let _cluster = Cluster::get();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "kube-controller-manager client QPS: --kube-api-qps 500 --kube-api-burst 1000 (tests/cluster/up.sh)"
    );
    runtime.block_on(bench_b());
    runtime.block_on(bench_a());
}
