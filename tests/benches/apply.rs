//! Bench of the apply stage and the Kustomization controller. Prints, for each
//! figure, the measured value, the goal and the ratio (against the baseline measured in the same
//! run where there is one, else against the goal).
//!
//! (b) one build of 2,000 objects: first apply through `apply::plan` + `apply::apply` vs
//!     `kubectl apply --server-side` of the same objects (into a twin namespace), then a
//!     no-change reconcile: its duration and the write requests the apiserver counted for it.
//! (a) the flux-benchmark workload (N Kustomizations × 4 objects: Deployment, Service,
//!     ConfigMap, ServiceAccount, from one git source, `wait` and `prune`) side by side: the
//!     floor (the cluster alone), Flux's controllers built from source, and the release
//!     `gitops-reconciler`, same control plane, same run, same `--concurrent`
//!     (see side_by_side/mod.rs).
//! (c) the reconciler's RSS idle (peak RSS is in (a)'s table).
//!
//! Uses the cluster of GITOPS_TEST_KUBECONFIG, or starts the local control plane (tests/cluster,
//! which runs kube-controller-manager with --kube-api-qps 500 --kube-api-burst 1000 so that its
//! own client throttling is not what is measured) and stops it afterwards.
//! `GITOPS_BENCH_KUSTOMIZATIONS` (comma list, default 100,1000), `GITOPS_BENCH_LARGE=1` (adds
//! 5,000), `GITOPS_BENCH_SIDES` (default floor,flux,ours) and `GITOPS_BENCH_CONCURRENT` shape (a);
//! `GITOPS_BENCH_PARTS=a` (or `b`) runs one part; `GITOPS_BENCH_STATIC=1` also measures (c) idle
//! for the static image binary.

#[path = "../tests/kustomization_support/mod.rs"]
mod support;

mod side_by_side;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gitops_conformance::{kubectl, kubectl_ok, repo_root, request_samples};
use gitops_reconciler::apply::{self, Resolver};

fn report(name: &str, measured: String, goal: &str, ratio: f64, note: &str) {
    println!("{name:<48} measured {measured:<14} goal {goal:<10} ratio {ratio:>6.2}  {note}");
}

/// CPU seconds (user + system) a process has used so far; 0 when it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    gitops_conformance::cpu_time(pid).as_secs_f64()
}

/// The processes of our own local control plane (tests/cluster records them in `pids/`).
fn cluster_processes(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".pid")?
                .to_owned();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((name, pid))
        })
        .collect();
    out.sort();
    out
}

/// apiserver_request_total by "VERB resource" (dry-run requests marked), summed over codes.
fn request_counts() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for r in request_samples() {
        let sub = if r.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", r.subresource)
        };
        let dry = if r.dry_run { " (dry-run)" } else { "" };
        *out.entry(format!("{} {}{sub}{dry}", r.verb, r.resource))
            .or_insert(0.0) += r.count;
    }
    out
}

/// Sum of apiserver_request_total for write verbs (dry-run or not) on `resources`.
fn write_requests(resources: &[&str]) -> u64 {
    const WRITES: [&str; 7] = [
        "APPLY", "PATCH", "POST", "PUT", "DELETE", "CREATE", "UPDATE",
    ];
    request_samples()
        .iter()
        .filter(|r| WRITES.contains(&r.verb.as_str()) && resources.contains(&r.resource.as_str()))
        .map(|r| r.count as u64)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The release `gitops-reconciler` (dynamically linked, as `cargo build --release` makes it),
/// built here so the bench always measures the current code; `GITOPS_BENCH_RECONCILER` names
/// another build instead (to compare two builds on one cluster).
fn release_reconciler() -> PathBuf {
    if let Some(bin) = std::env::var_os("GITOPS_BENCH_RECONCILER") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "GITOPS_BENCH_RECONCILER={} is no file",
            bin.display()
        );
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = gitops_conformance::cargo_command(&cargo)
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
    target_dir().join("release/gitops-reconciler")
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
}

/// The static release binary the OCI image ships (kubectl-gitops/image/build.sh builds it with
/// `--target x86_64-unknown-linux-gnu --features static`), when `GITOPS_BENCH_STATIC=1` asks for
/// it (another full release build, so not by default).
fn static_reconciler() -> Option<PathBuf> {
    if std::env::var("GITOPS_BENCH_STATIC").as_deref() != Ok("1") {
        return None;
    }
    let out = std::env::temp_dir().join(format!("gitops-bench-image-{}", std::process::id()));
    let status = gitops_conformance::cargo_command("bash")
        .arg(repo_root().join("kubectl-gitops/image/build.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run kubectl-gitops/image/build.sh");
    assert!(status.success(), "building the static reconciler failed");
    let _ = std::fs::remove_dir_all(&out);
    Some(target_dir().join("x86_64-unknown-linux-gnu/release/gitops-reconciler"))
}

/// Starts `bin` against the cluster under test, reconciling only the bench's Kustomizations and
/// GitRepositories, with /readyz on `health` and its log in `log`.
fn start_reconciler(
    bin: &Path,
    storage: &Path,
    health: &str,
    concurrent: u16,
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let (key, value) = side_by_side::BENCH_LABEL;
    Command::new(bin)
        .args([
            &format!("--storage-path={}", storage.display()),
            &format!("--storage-addr=127.0.0.1:{}", free_port()),
            &format!("--metrics-addr=127.0.0.1:{}", free_port()),
            &format!("--health-addr={health}"),
            "--receiver-addr=127.0.0.1:0",
            &format!("--concurrent={concurrent}"),
            &format!("--concurrent-apply={}", side_by_side::CONCURRENT_APPLY),
            &format!("--watch-label-selector={key}={value}"),
            "--log-format=json",
        ])
        .env("KUBECONFIG", gitops_conformance::kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start gitops-reconciler")
}

/// RSS of `bin` started against the cluster, idle (no Kustomization of its shard), after 5 s.
async fn idle_rss_of(bin: &Path, storage: &Path) -> u64 {
    let health = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join("gitops-bench-reconciler.log");
    let mut reconciler = start_reconciler(bin, storage, &health, 4, &log);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = gitops_conformance::proc_status_kib(reconciler.id(), "VmRSS:");
    let _ = reconciler.kill();
    let _ = reconciler.wait();
    rss
}

async fn bench_a(cluster_dir: Option<&Path>) {
    let settings = side_by_side::Settings::from_env();
    gitops_conformance::install_crds();
    let ours = settings.sides.contains(&side_by_side::Side::Ours);
    let bin = ours.then(release_reconciler);
    if let Some(bin) = &bin {
        let storage =
            std::env::temp_dir().join(format!("gitops-bench-idle-{}", std::process::id()));
        std::fs::create_dir_all(&storage).expect("storage");
        let idle_rss = idle_rss_of(bin, &storage).await;
        report(
            "(c) reconciler RSS idle",
            format!("{:.1}MiB", idle_rss as f64 / 1024.0),
            "< 25MiB",
            idle_rss as f64 / 1024.0 / 25.0,
            "cargo build --release (shared libcurl, libssl, ...)",
        );
        match static_reconciler() {
            Some(static_bin) => {
                let rss = idle_rss_of(&static_bin, &storage).await;
                report(
                    "(c) reconciler RSS idle, static image binary",
                    format!("{:.1}MiB", rss as f64 / 1024.0),
                    "< 25MiB",
                    rss as f64 / 1024.0 / 25.0,
                    "what the OCI image runs (--features static, +crt-static)",
                );
            }
            None => {
                println!("(c) static image binary: not measured (GITOPS_BENCH_STATIC=1 builds it)")
            }
        }
        let _ = std::fs::remove_dir_all(&storage);
    }
    let bench = side_by_side::Bench::new(cluster_dir, &settings, bin).await;
    let flux_crds = if bench.flux_bin.is_some() {
        side_by_side::FluxCrds::install(&bench.flux_version)
    } else {
        None
    };
    for &count in &settings.sizes {
        let mut runs = Vec::new();
        for &side in &settings.sides {
            let run = match side {
                side_by_side::Side::Floor => bench.floor(count).await,
                side_by_side::Side::Flux if flux_crds.is_some() => bench.flux(count).await,
                side_by_side::Side::Flux => continue,
                side_by_side::Side::Ours => bench.ours(count).await,
            };
            println!(
                "(a) N={count} {:?}: {}/{count} Ready in {:.1}s (teardown {:.1}s)",
                run.side,
                run.ready,
                run.elapsed.as_secs_f64(),
                run.teardown.as_secs_f64()
            );
            runs.push(run);
        }
        side_by_side::print_table(&runs, settings.concurrent, &bench.flux_version);
    }
    if let Some(crds) = flux_crds {
        crds.remove();
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let cluster = gitops_conformance::BenchCluster::get("apply");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "kube-controller-manager client QPS: --kube-api-qps 500 --kube-api-burst 1000 (tests/cluster/up.sh)"
    );
    println!(
        "load average at start: {}",
        gitops_conformance::load_average()
    );
    let parts = std::env::var("GITOPS_BENCH_PARTS").unwrap_or_else(|_| "ab".into());
    if parts.contains('b') {
        runtime.block_on(bench_b());
    }
    if parts.contains('a') {
        // A control plane of tests/cluster the caller started (GITOPS_TEST_KUBECONFIG and
        // GITOPS_CLUSTER_DIR) has its pids recorded there too.
        let dir = cluster
            .dir()
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("GITOPS_CLUSTER_DIR").map(PathBuf::from));
        runtime.block_on(bench_a(dir.as_deref()));
    }
}
