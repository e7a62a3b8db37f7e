//! Part (a) of the apply bench: the flux-benchmark workload (N Kustomizations × 4 objects from
//! one git source, `wait` and `prune`) run three ways on the same control plane in the same run,
//! one after the other, each in its own namespace that is gone before the next starts:
//!
//! - **floor**: the cluster alone — the same 4N objects server-side applied by a lean client
//!   (one kube client, [`FLOOR_CONNECTIONS`] requests in flight, no per-object process), waited
//!   on until every Deployment is healthy (the rule `wait` uses). No GitOps tool can beat it.
//! - **Flux**: source-controller and kustomize-controller built from source
//!   (`tests/cluster/build.sh flux`, cached by version) run as local processes with Flux's CRDs
//!   from the Go module cache; a GitRepository and N Flux Kustomizations.
//! - **ours**: the release `gitops-reconciler` with the same GitRepository and Kustomizations.
//!
//! Each run's window opens once the source is Ready (and the controllers are up) and closes when
//! every Kustomization (floor: Deployment) is Ready. Over the window: wall time, CPU seconds of
//! the tool's processes and of each control-plane process (tests/cluster records their pids),
//! the apiserver's `apiserver_request_total` by verb and resource, and the tool's peak RSS.
//!
//! Environment: `GITOPS_BENCH_KUSTOMIZATIONS` (comma list of N, default 100,1000),
//! `GITOPS_BENCH_LARGE=1` (adds 5,000), `GITOPS_BENCH_SIDES` (default floor,flux,ours),
//! `GITOPS_BENCH_CONCURRENT` (`--concurrent` of both tools, default 20).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use gitops_conformance::git::{GitServer, ServerKind};
use gitops_conformance::{kubectl, kubectl_ok, repo_root};

/// Requests the floor's client keeps in flight (one HTTP/1.1 connection each).
pub const FLOOR_CONNECTIONS: usize = 16;
/// `--concurrent-apply` of ours and `--concurrent-ssa` of Flux's kustomize-controller.
pub const CONCURRENT_APPLY: u16 = 8;
/// Flux's client rate limits: high enough that client-side throttling is not what is measured.
const FLUX_QPS: &str = "500";
const FLUX_BURST: &str = "1000";
/// Bound on one run's wait for all Ready.
const READY_DEADLINE: Duration = Duration::from_secs(1800);
/// Bound on a source becoming Ready and on a controller's start-up.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// Bound on a teardown (finalizers released, namespace gone).
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(900);
/// Pods one fake node of tests/cluster/up.sh takes (its `status.allocatable.pods`).
const PODS_PER_NODE: usize = 2000;
/// The label our reconciler's `--watch-label-selector` selects.
pub const BENCH_LABEL: (&str, &str) = ("bench", "flux");

/// One way of running the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Floor,
    Flux,
    Ours,
}

impl Side {
    fn parse(s: &str) -> Side {
        match s.trim() {
            "floor" => Side::Floor,
            "flux" => Side::Flux,
            "ours" => Side::Ours,
            other => panic!("GITOPS_BENCH_SIDES: unknown side '{other}' (floor, flux, ours)"),
        }
    }
}

/// What the environment asks for.
pub struct Settings {
    pub sizes: Vec<usize>,
    pub sides: Vec<Side>,
    pub concurrent: u16,
}

impl Settings {
    pub fn from_env() -> Settings {
        let mut sizes: Vec<usize> = std::env::var("GITOPS_BENCH_KUSTOMIZATIONS")
            .unwrap_or_else(|_| "100,1000".into())
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("GITOPS_BENCH_KUSTOMIZATIONS: '{n}' is not a count"))
            })
            .collect();
        if std::env::var("GITOPS_BENCH_LARGE").as_deref() == Ok("1") {
            sizes.push(5000);
        }
        // Each fake node of tests/cluster takes PODS_PER_NODE pods; N pods must fit at once.
        let nodes: usize = std::env::var("GITOPS_CLUSTER_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        let largest = sizes.iter().copied().max().unwrap_or(0);
        assert!(
            std::env::var_os(gitops_conformance::KUBECONFIG_ENV).is_some()
                || largest <= nodes * PODS_PER_NODE,
            "N = {largest} needs {} fake nodes of {PODS_PER_NODE} pods: set GITOPS_CLUSTER_NODES",
            largest.div_ceil(PODS_PER_NODE)
        );
        let sides = std::env::var("GITOPS_BENCH_SIDES")
            .unwrap_or_else(|_| "floor,flux,ours".into())
            .split(',')
            .map(Side::parse)
            .collect();
        let concurrent = std::env::var("GITOPS_BENCH_CONCURRENT")
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("GITOPS_BENCH_CONCURRENT: '{v}' is not a number"))
            })
            .unwrap_or(20);
        Settings {
            sizes,
            sides,
            concurrent,
        }
    }
}

// ---- the workload ---------------------------------------------------------------------------

/// The four objects of one app: `name` for each, `app` in the pod labels and the selectors (so
/// each Service selects its own pod only), in `namespace` when given.
pub fn app_objects(name: &str, app: &str, namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!(", namespace: {n}"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}{ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: \"{app}\"}}}}\n  template:\n    metadata: {{labels: {{app: \"{app}\"}}}}\n    spec:\n      serviceAccountName: {name}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}{ns}}}\nspec:\n  selector: {{app: \"{app}\"}}\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}{ns}}}\ndata: {{k: v}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}{ns}}}\n"
    )
}

/// Kustomization `i`'s name prefix and app label: the objects it applies are what
/// [`app_objects`] makes with `prefix + "app"` (kustomize's namePrefix renames the
/// ServiceAccount reference too) and this app label.
fn prefix_and_app(i: usize) -> (String, String) {
    (format!("k{i}-"), format!("k{i}-app"))
}

/// The files of the git repository both tools read: one app under `./app`, its names and labels
/// set per Kustomization by namePrefix, postBuild substitution and targetNamespace.
fn repository_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "app/kustomization.yaml",
            "resources: [app.yaml]\n".to_owned(),
        ),
        ("app/app.yaml", app_objects("app", "${app}", None)),
    ]
}

/// N Kustomizations of `api_version` (ours and Flux's have the same spec fields).
fn kustomizations(api_version: &str, ns: &str, count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let (prefix, app) = prefix_and_app(i);
        out.push_str(&format!(
            "apiVersion: {api_version}\nkind: Kustomization\nmetadata: {{name: app-{i}, namespace: {ns}, labels: {{{}: {}}}}}\nspec:\n  sourceRef: {{kind: GitRepository, name: bench}}\n  path: ./app\n  interval: 1h\n  retryInterval: 5s\n  timeout: 5m\n  prune: true\n  wait: true\n  targetNamespace: {ns}\n  namePrefix: {prefix}\n  postBuild: {{substitute: {{app: {app}}}}}\n---\n",
            BENCH_LABEL.0, BENCH_LABEL.1
        ));
    }
    out
}

/// The kinds each tool defines and puts finalizers on.
struct Kinds {
    kustomization: ApiResource,
    git_repository: ApiResource,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn ours_kinds() -> Kinds {
    Kinds {
        kustomization: resource(
            "kubectl-gitops.io",
            "v1alpha1",
            "Kustomization",
            "kustomizations",
        ),
        git_repository: resource(
            "kubectl-gitops.io",
            "v1alpha1",
            "GitRepository",
            "gitrepositories",
        ),
    }
}

fn flux_kinds() -> Kinds {
    Kinds {
        kustomization: resource(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
            "kustomizations",
        ),
        git_repository: resource(
            "source.toolkit.fluxcd.io",
            "v1",
            "GitRepository",
            "gitrepositories",
        ),
    }
}

/// True when the object's `Ready` condition is `True`.
fn is_ready(object: &DynamicObject) -> bool {
    object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// True when a Deployment is healthy by the rule `wait` uses (kstatus's).
fn deployment_healthy(object: &DynamicObject) -> bool {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    // List items come without apiVersion and kind; the rule picks by kind.
    value["apiVersion"] = json!("apps/v1");
    value["kind"] = json!("Deployment");
    gitops_reconciler::apply::health::health(&value).is_current()
}

/// Watches `api` until `count` objects satisfy `done` (or the deadline passes); returns how many
/// did. One LIST and one WATCH: the bench's own load on the apiserver stays out of the way.
async fn wait_for(
    api: Api<DynamicObject>,
    count: usize,
    deadline: Duration,
    done: fn(&DynamicObject) -> bool,
) -> usize {
    let until = tokio::time::Instant::now() + deadline;
    let mut state: BTreeMap<String, bool> = BTreeMap::new();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    loop {
        let ready = state.values().filter(|r| **r).count();
        if ready >= count {
            return ready;
        }
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(object))) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                state.insert(name, done(&object));
            }
            Ok(Some(Err(e))) => eprintln!("[bench] watch error (retried): {e}"),
            Ok(None) | Err(_) => return ready,
        }
    }
}

// ---- measurement ----------------------------------------------------------------------------

/// What one side measured for one N.
pub struct Run {
    pub side: Side,
    pub count: usize,
    pub ready: usize,
    pub elapsed: Duration,
    /// CPU seconds over the window: the tool's processes first, then the control plane's.
    pub cpu: Vec<(String, f64)>,
    /// How many leading entries of `cpu` are the tool's own processes.
    pub tool_processes: usize,
    /// Peak RSS (VmHWM) of the tool's processes, MiB.
    pub peak_rss: Vec<(String, f64)>,
    /// apiserver_request_total over the window by "VERB resource[/sub][ (dry-run)]".
    pub requests: BTreeMap<String, f64>,
    pub teardown: Duration,
}

impl Run {
    fn tool_cpu(&self) -> f64 {
        self.cpu[..self.tool_processes].iter().map(|(_, c)| c).sum()
    }
    fn cpu_of(&self, process: &str) -> Option<f64> {
        self.cpu[self.tool_processes..]
            .iter()
            .find(|(n, _)| n == process)
            .map(|(_, c)| *c)
    }
    /// None when the control plane's processes are not ours to measure.
    fn control_plane_cpu(&self) -> Option<f64> {
        let cluster = &self.cpu[self.tool_processes..];
        (!cluster.is_empty()).then(|| cluster.iter().map(|(_, c)| c).sum())
    }
    fn total_requests(&self) -> f64 {
        self.requests.values().sum()
    }
    fn peak_rss_total(&self) -> f64 {
        self.peak_rss.iter().map(|(_, r)| r).sum()
    }
}

/// The measurement window: CPU and request counters read when it opens.
struct Window {
    started: Instant,
    processes: Vec<(String, u32)>,
    tool_processes: usize,
    cpu_before: Vec<f64>,
    requests_before: BTreeMap<String, f64>,
}

impl Window {
    /// `tool` (the tool's processes) followed by the control plane's.
    fn open(tool: Vec<(String, u32)>, cluster_dir: Option<&Path>) -> Window {
        let tool_processes = tool.len();
        let mut processes = tool;
        processes.extend(crate::cluster_processes(
            cluster_dir.unwrap_or(Path::new("/nonexistent")),
        ));
        let cpu_before = processes
            .iter()
            .map(|(_, p)| crate::cpu_seconds(*p))
            .collect();
        let requests_before = crate::request_counts();
        Window {
            started: Instant::now(),
            processes,
            tool_processes,
            cpu_before,
            requests_before,
        }
    }

    fn close(self, side: Side, count: usize, ready: usize) -> Run {
        let elapsed = self.started.elapsed();
        let cpu = self
            .processes
            .iter()
            .zip(&self.cpu_before)
            .map(|((name, p), before)| (name.clone(), crate::cpu_seconds(*p) - before))
            .collect();
        let peak_rss = self.processes[..self.tool_processes]
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    gitops_conformance::proc_status_kib(*p, "VmHWM:") as f64 / 1024.0,
                )
            })
            .collect();
        let requests = crate::request_counts()
            .into_iter()
            .map(|(k, v)| {
                let before = self.requests_before.get(&k).copied().unwrap_or(0.0);
                (k, v - before)
            })
            .filter(|(_, v)| *v > 0.0)
            .collect();
        Run {
            side,
            count,
            ready,
            elapsed,
            cpu,
            tool_processes: self.tool_processes,
            peak_rss,
            requests,
            teardown: Duration::ZERO,
        }
    }
}

// ---- processes ------------------------------------------------------------------------------

/// A process the bench started; killed (SIGKILL, by its own handle) when dropped.
struct Started {
    name: String,
    child: Child,
}

impl Started {
    fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Started {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Started {
            name: name.to_owned(),
            child,
        }
    }

    fn pid(&self) -> (String, u32) {
        (self.name.clone(), self.child.id())
    }

    /// Panics with the end of its log when the process has exited.
    fn assert_running(&mut self, log_dir: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(log_dir.join(format!("{}.log", self.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "{} exited ({status}); last lines of its log:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET http://`addr``path` answers 200 within a second.
fn http_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).unwrap_or(0);
    String::from_utf8_lossy(&head[..n]).contains(" 200")
}

/// Waits until `started`'s health endpoint `addr` answers /readyz.
async fn wait_healthy(started: &mut Started, addr: &str, log_dir: &Path) {
    let deadline = Instant::now() + START_DEADLINE;
    while !http_ok(addr, "/readyz") {
        started.assert_running(log_dir);
        assert!(
            Instant::now() < deadline,
            "{} was not ready within {START_DEADLINE:?}",
            started.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn loopback_addr() -> String {
    format!("127.0.0.1:{}", crate::free_port())
}

// ---- Flux -----------------------------------------------------------------------------------

/// Flux's version and where build.sh caches its binaries (tests/cluster/versions.sh).
fn flux_version_and_bin() -> (String, PathBuf) {
    let out = gitops_conformance::run_ok(Command::new("bash").arg("-c").arg(format!(
        ". {}/tests/cluster/versions.sh && echo \"$FLUX_VERSION $FLUX_BIN\"",
        repo_root().display()
    )));
    let (version, bin) = out
        .trim()
        .split_once(' ')
        .expect("versions.sh defines FLUX_VERSION and FLUX_BIN");
    (version.to_owned(), PathBuf::from(bin))
}

/// Builds Flux's controllers (or finds them cached) and returns their directory.
fn build_flux() -> PathBuf {
    let status = Command::new("bash")
        .arg(repo_root().join("tests/cluster/build.sh"))
        .arg("flux")
        .status()
        .expect("run tests/cluster/build.sh flux");
    assert!(status.success(), "tests/cluster/build.sh flux failed");
    flux_version_and_bin().1
}

/// Flux's CRD directories, from the controllers' modules in the Go module cache (downloaded
/// again by `go mod download` when the cache was cleaned).
fn flux_crd_dirs(version: &str) -> Vec<PathBuf> {
    ["source-controller", "kustomize-controller"]
        .iter()
        .map(|c| {
            let out = gitops_conformance::run_ok(
                Command::new("go")
                    .args(["mod", "download", "-json"])
                    .arg(format!("github.com/fluxcd/{c}@{version}"))
                    .env("GOWORK", "off")
                    .env("GOTOOLCHAIN", "local")
                    .env("GOFLAGS", "-mod=mod")
                    .current_dir(std::env::temp_dir()),
            );
            let info: Value = serde_json::from_str(&out).expect("go mod download -json");
            let dir =
                PathBuf::from(info["Dir"].as_str().expect("module Dir")).join("config/crd/bases");
            assert!(dir.is_dir(), "no CRDs in {}", dir.display());
            dir
        })
        .collect()
}

const FLUX_CRD_NAMES: [&str; 2] = [
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io",
];

/// Flux's CRDs installed by the bench (and removed again by [`FluxCrds::remove`]).
pub struct FluxCrds {
    dirs: Vec<PathBuf>,
}

impl FluxCrds {
    /// Installs Flux's CRDs; None (with the reason printed) when the cluster has them already:
    /// a Flux of the cluster's own would reconcile the bench's objects too.
    pub fn install(version: &str) -> Option<FluxCrds> {
        let existing = kubectl(&["get", "crd", FLUX_CRD_NAMES[0]], None);
        if existing.success {
            println!(
                "(a) Flux side skipped: the cluster already has Flux's CRDs (a Flux of its own would reconcile the bench's objects too)"
            );
            return None;
        }
        let dirs = flux_crd_dirs(version);
        for dir in &dirs {
            gitops_conformance::apply_crds(dir);
        }
        Some(FluxCrds { dirs })
    }

    pub fn remove(self) {
        for dir in &self.dirs {
            let _ = kubectl(
                &[
                    "delete",
                    "--ignore-not-found",
                    "--wait=false",
                    "-f",
                    &dir.to_string_lossy(),
                ],
                None,
            );
        }
    }
}

/// Flux's two controllers against the cluster under test.
struct FluxControllers {
    source: Started,
    kustomize: Started,
}

fn start_flux(
    bin: &Path,
    work: &Path,
    logs: &Path,
    ns: &str,
    concurrent: u16,
) -> (FluxControllers, String) {
    let storage = work.join("flux-storage");
    let tmp = work.join("flux-tmp");
    for d in [&storage, &tmp] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).expect("flux dirs");
    }
    let kubeconfig = gitops_conformance::kubeconfig();
    let common = |cmd: &mut Command, health: &str| {
        cmd.arg(format!("--metrics-addr={}", loopback_addr()))
            .arg(format!("--health-addr={health}"))
            .arg("--events-addr=")
            .arg("--enable-leader-election=false")
            .arg(format!("--concurrent={concurrent}"))
            .arg(format!("--kube-api-qps={FLUX_QPS}"))
            .arg(format!("--kube-api-burst={FLUX_BURST}"))
            // Flux has no warn level; error logs least (ours runs at warn).
            .arg("--log-level=error")
            .env("KUBECONFIG", &kubeconfig)
            .env("RUNTIME_NAMESPACE", ns)
            // kustomize-controller builds in the temp dir: on tmpfs, as in its Deployment.
            .env("TMPDIR", &tmp);
    };
    let storage_addr = loopback_addr();
    let source_health = loopback_addr();
    let mut cmd = Command::new(bin.join("source-controller"));
    cmd.arg(format!("--storage-path={}", storage.display()))
        .arg(format!("--storage-addr={storage_addr}"))
        .arg(format!("--storage-adv-addr={storage_addr}"));
    common(&mut cmd, &source_health);
    let source = Started::spawn("source-controller", &mut cmd, logs);
    let kustomize_health = loopback_addr();
    let mut cmd = Command::new(bin.join("kustomize-controller"));
    cmd.arg(format!("--concurrent-ssa={CONCURRENT_APPLY}"));
    common(&mut cmd, &kustomize_health);
    let kustomize = Started::spawn("kustomize-controller", &mut cmd, logs);
    (
        FluxControllers { source, kustomize },
        format!("{source_health} {kustomize_health}"),
    )
}

// ---- the three runs -------------------------------------------------------------------------

/// Everything the runs share: the client, the git server with the workload, a tmpfs work dir.
pub struct Bench<'a> {
    pub client: kube::Client,
    pub cluster_dir: Option<&'a Path>,
    pub work: PathBuf,
    /// The processes' logs (kept after the bench).
    pub logs: PathBuf,
    pub git_url: String,
    pub concurrent: u16,
    pub flux_bin: Option<PathBuf>,
    pub flux_version: String,
    pub reconciler_bin: Option<PathBuf>,
    _git: GitServer,
}

impl<'a> Bench<'a> {
    pub async fn new(
        cluster_dir: Option<&'a Path>,
        settings: &Settings,
        reconciler_bin: Option<PathBuf>,
    ) -> Bench<'a> {
        let git = GitServer::start(ServerKind::Http);
        let repo = git.repo("bench");
        let files = repository_files();
        let files: Vec<(&str, Option<&str>)> =
            files.iter().map(|(p, c)| (*p, Some(c.as_str()))).collect();
        repo.commit(&files, "the flux-benchmark app");
        let git_url = git.url("bench");
        // Both tools' storage and build directories on tmpfs when the machine has one.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let work = base.join(format!("gitops-bench-side-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let logs = std::env::temp_dir().join(format!("gitops-bench-logs-{}", std::process::id()));
        std::fs::create_dir_all(&logs).expect("log dir");
        println!("(a) logs of the controllers in {}", logs.display());
        let (flux_version, _) = flux_version_and_bin();
        let flux_bin = settings.sides.contains(&Side::Flux).then(build_flux);
        Bench {
            client: crate::support::client().await,
            cluster_dir,
            work,
            logs,
            git_url,
            concurrent: settings.concurrent,
            flux_bin,
            flux_version,
            reconciler_bin,
            _git: git,
        }
    }

    fn namespace(&self, side: Side, count: usize) -> String {
        let side = format!("{side:?}").to_lowercase();
        let ns = format!("bench-{side}-{count}-{}", std::process::id());
        kubectl_ok(&["create", "namespace", &ns], None);
        ns
    }

    fn api(&self, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, ar)
    }

    /// Server-side applies `objects` (of the kinds in `kinds`, by `kind`) into `ns` with
    /// [`FLOOR_CONNECTIONS`] requests in flight on the bench's own client: how the floor applies
    /// its objects and how both tools' Kustomizations are created (one `kubectl apply` of
    /// thousands of objects paces itself at a few objects a second).
    async fn apply_objects(
        &self,
        ns: &str,
        objects: Vec<Value>,
        kinds: &BTreeMap<&'static str, ApiResource>,
        manager: &str,
    ) {
        let mut lanes: Vec<Vec<Value>> = vec![Vec::new(); FLOOR_CONNECTIONS];
        for (i, object) in objects.into_iter().enumerate() {
            lanes[i % FLOOR_CONNECTIONS].push(object);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for lane in lanes {
            let client = self.client.clone();
            let ns = ns.to_owned();
            let kinds = kinds.clone();
            let params = PatchParams::apply(manager).force();
            tasks.spawn(async move {
                for object in lane {
                    let kind = object["kind"].as_str().unwrap_or_default();
                    let name = object["metadata"]["name"].as_str().unwrap_or_default();
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &ns, &kinds[kind]);
                    api.patch(name, &params, &Patch::Apply(&object))
                        .await
                        .unwrap_or_else(|e| panic!("apply {kind}/{name} in {ns}: {e}"));
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("apply task");
        }
    }

    /// The floor: the 4N objects server-side applied by one client with [`FLOOR_CONNECTIONS`]
    /// requests in flight, then every Deployment healthy.
    pub async fn floor(&self, count: usize) -> Run {
        let ns = self.namespace(Side::Floor, count);
        let mut objects = Vec::with_capacity(count * 4);
        for i in 0..count {
            let (prefix, app) = prefix_and_app(i);
            let yaml = app_objects(&format!("{prefix}app"), &app, Some(&ns));
            objects.extend(gitops_reconciler::yaml::from_str_multi(&yaml).expect("workload YAML"));
        }
        let kinds: BTreeMap<&str, ApiResource> = [
            (
                "Deployment",
                resource("apps", "v1", "Deployment", "deployments"),
            ),
            ("Service", resource("", "v1", "Service", "services")),
            ("ConfigMap", resource("", "v1", "ConfigMap", "configmaps")),
            (
                "ServiceAccount",
                resource("", "v1", "ServiceAccount", "serviceaccounts"),
            ),
        ]
        .into();
        let me = ("bench client".to_owned(), std::process::id());
        let window = Window::open(vec![me], self.cluster_dir);
        self.apply_objects(&ns, objects, &kinds, "gitops-bench-floor")
            .await;
        let ready = wait_for(
            self.api(&ns, &kinds["Deployment"]),
            count,
            READY_DEADLINE,
            deployment_healthy,
        )
        .await;
        let mut run = window.close(Side::Floor, count, ready);
        run.teardown = self.teardown(&ns, &[]).await;
        run
    }

    /// Flux: its controllers, a GitRepository and N Kustomizations.
    pub async fn flux(&self, count: usize) -> Run {
        let bin = self.flux_bin.as_ref().expect("Flux was built");
        let ns = self.namespace(Side::Flux, count);
        let kinds = flux_kinds();
        let (mut flux, health) = start_flux(bin, &self.work, &self.logs, &ns, self.concurrent);
        let (source_health, kustomize_health) =
            health.split_once(' ').expect("two health addresses");
        wait_healthy(&mut flux.source, source_health, &self.logs).await;
        wait_healthy(&mut flux.kustomize, kustomize_health, &self.logs).await;
        self.source_ready(
            &ns,
            &kinds,
            &format!(
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: bench, namespace: {ns}}}\nspec:\n  url: {}\n  interval: 1h\n  ref: {{branch: main}}\n",
                self.git_url
            ),
        )
        .await;
        let window = Window::open(
            vec![flux.source.pid(), flux.kustomize.pid()],
            self.cluster_dir,
        );
        let ready = self
            .apply_and_wait(&ns, &kinds, "kustomize.toolkit.fluxcd.io/v1", count)
            .await;
        let mut run = window.close(Side::Flux, count, ready);
        flux.source.assert_running(&self.logs);
        flux.kustomize.assert_running(&self.logs);
        drop(flux);
        run.teardown = self
            .teardown(&ns, &[&kinds.kustomization, &kinds.git_repository])
            .await;
        run
    }

    /// Ours: the release reconciler, a GitRepository and N Kustomizations.
    pub async fn ours(&self, count: usize) -> Run {
        let bin = self
            .reconciler_bin
            .as_ref()
            .expect("the reconciler was built");
        let ns = self.namespace(Side::Ours, count);
        let kinds = ours_kinds();
        let storage = self.work.join("ours-storage");
        let _ = std::fs::remove_dir_all(&storage);
        std::fs::create_dir_all(&storage).expect("storage dir");
        let health = loopback_addr();
        let mut ours = Started {
            name: "gitops-reconciler".into(),
            child: crate::start_reconciler(
                bin,
                &storage,
                &health,
                self.concurrent,
                &self.logs.join("gitops-reconciler.log"),
            ),
        };
        wait_healthy(&mut ours, &health, &self.logs).await;
        self.source_ready(
            &ns,
            &kinds,
            &format!(
                "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata: {{name: bench, namespace: {ns}, labels: {{{}: {}}}}}\nspec:\n  url: {}\n  interval: 1h\n  ref: {{branch: main}}\n  insecure: true\n",
                BENCH_LABEL.0, BENCH_LABEL.1, self.git_url
            ),
        )
        .await;
        let window = Window::open(vec![ours.pid()], self.cluster_dir);
        let ready = self
            .apply_and_wait(&ns, &kinds, "kubectl-gitops.io/v1alpha1", count)
            .await;
        let mut run = window.close(Side::Ours, count, ready);
        ours.assert_running(&self.logs);
        drop(ours);
        run.teardown = self
            .teardown(&ns, &[&kinds.kustomization, &kinds.git_repository])
            .await;
        let _ = std::fs::remove_dir_all(&storage);
        run
    }

    /// Applies the GitRepository `manifest` and waits until it is Ready.
    async fn source_ready(&self, ns: &str, kinds: &Kinds, manifest: &str) {
        kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(manifest));
        let ready = wait_for(
            self.api(ns, &kinds.git_repository),
            1,
            START_DEADLINE,
            is_ready,
        )
        .await;
        assert_eq!(
            ready, 1,
            "the GitRepository in {ns} was not Ready within {START_DEADLINE:?}"
        );
    }

    /// Applies N Kustomizations of `api_version` and waits until all are Ready; returns how many
    /// were.
    async fn apply_and_wait(
        &self,
        ns: &str,
        kinds: &Kinds,
        api_version: &str,
        count: usize,
    ) -> usize {
        let objects =
            gitops_reconciler::yaml::from_str_multi(&kustomizations(api_version, ns, count))
                .expect("Kustomization YAML");
        let kinds_by_name = [("Kustomization", kinds.kustomization.clone())].into();
        self.apply_objects(ns, objects, &kinds_by_name, "gitops-bench")
            .await;
        wait_for(
            self.api(ns, &kinds.kustomization),
            count,
            READY_DEADLINE,
            is_ready,
        )
        .await
    }

    /// Removes the finalizers of `kinds` in `ns` (their controllers are stopped), deletes the
    /// namespace and waits until it is gone, so the next run starts on a quiet cluster.
    async fn teardown(&self, ns: &str, kinds: &[&ApiResource]) -> Duration {
        let started = Instant::now();
        let release = json!({"metadata": {"finalizers": null}});
        for ar in kinds {
            let api = self.api(ns, ar);
            let names: Vec<String> = api
                .list_metadata(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("list {} in {ns}: {e}", ar.plural))
                .items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect();
            let mut tasks = tokio::task::JoinSet::new();
            for lane in 0..FLOOR_CONNECTIONS {
                let api = api.clone();
                let mine: Vec<String> = names
                    .iter()
                    .skip(lane)
                    .step_by(FLOOR_CONNECTIONS)
                    .cloned()
                    .collect();
                let release = release.clone();
                tasks.spawn(async move {
                    for name in mine {
                        // NotFound and the like: the object is going anyway.
                        let _ = api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&release))
                            .await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
        let namespaces: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource("", "v1", "Namespace", "namespaces"),
        );
        let _ = namespaces.delete(ns, &DeleteParams::background()).await;
        while namespaces
            .get_opt(ns)
            .await
            .unwrap_or_else(|e| panic!("get namespace {ns}: {e}"))
            .is_some()
        {
            assert!(
                started.elapsed() < TEARDOWN_DEADLINE,
                "namespace {ns} was not gone within {TEARDOWN_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        started.elapsed()
    }
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

// ---- the table ------------------------------------------------------------------------------

fn side_name(side: Side, flux_version: &str) -> String {
    match side {
        Side::Floor => "floor".into(),
        Side::Flux => format!("Flux {flux_version}"),
        Side::Ours => "ours".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

/// Prints the side-by-side table for one N (markdown, so it pastes into notes as is).
pub fn print_table(runs: &[Run], concurrent: u16, flux_version: &str) {
    let Some(first) = runs.first() else { return };
    let count = first.count;
    let get = |side: Side| runs.iter().find(|r| r.side == side);
    let (floor, flux, ours) = (get(Side::Floor), get(Side::Flux), get(Side::Ours));
    println!();
    println!(
        "(a) N = {count} Kustomizations x 4 objects (wait + prune, one git source); --concurrent {concurrent} for ours and Flux's kustomize-controller (--concurrent-apply / --concurrent-ssa {CONCURRENT_APPLY}); Flux --kube-api-qps {FLUX_QPS} --kube-api-burst {FLUX_BURST}, builds on tmpfs; floor: {FLOOR_CONNECTIONS} concurrent server-side applies; load average now {}",
        gitops_conformance::load_average()
    );
    println!(
        "| figure | floor | {} | ours | ours/Flux | ours/floor | Flux/floor |",
        side_name(Side::Flux, flux_version)
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Run) -> Option<f64>, decimals: usize| {
        let (a, b, c) = (floor.and_then(f), flux.and_then(f), ours.and_then(f));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            cell(a, decimals),
            cell(b, decimals),
            cell(c, decimals),
            ratio(c, b),
            ratio(c, a),
            ratio(b, a)
        );
    };
    row(
        "time to all Ready (s)",
        &|r| Some(r.elapsed.as_secs_f64()),
        1,
    );
    row("Ready", &|r| Some(r.ready as f64), 0);
    row("CPU s, the tool's processes", &|r| Some(r.tool_cpu()), 1);
    for process in [
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ] {
        row(&format!("CPU s, {process}"), &|r| r.cpu_of(process), 1);
    }
    row("CPU s, control plane total", &|r| r.control_plane_cpu(), 1);
    row(
        "peak RSS MiB, the tool's processes",
        &|r| (r.side != Side::Floor).then(|| r.peak_rss_total()),
        1,
    );
    row("apiserver requests", &|r| Some(r.total_requests()), 0);
    row(
        "requests per Kustomization",
        &|r| Some(r.total_requests() / count as f64),
        1,
    );
    let floor_total = floor.map(Run::total_requests);
    row(
        "requests per Kustomization above the floor",
        &|r| floor_total.map(|f| (r.total_requests() - f) / count as f64),
        1,
    );
    row("teardown (s)", &|r| Some(r.teardown.as_secs_f64()), 1);
    for r in runs {
        let procs: Vec<String> = r.cpu[..r.tool_processes]
            .iter()
            .zip(&r.peak_rss)
            .map(|((n, c), (_, rss))| format!("{n} {c:.1} CPU-s, peak {rss:.0} MiB"))
            .collect();
        println!(
            "(a) {}: {}",
            side_name(r.side, flux_version),
            procs.join("; ")
        );
    }
    // Requests by verb and resource, largest first.
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.requests.keys()).collect();
    keys.sort();
    keys.dedup();
    let count_of = |r: Option<&Run>, k: &str| r.and_then(|r| r.requests.get(k).copied());
    keys.sort_by(|a, b| {
        let max = |k: &str| {
            runs.iter()
                .filter_map(|r| r.requests.get(k))
                .fold(0.0f64, |m, v| m.max(*v))
        };
        max(b).total_cmp(&max(a))
    });
    println!();
    println!(
        "| apiserver requests (N = {count}) | floor | {} | ours |",
        side_name(Side::Flux, flux_version)
    );
    println!("|---|---|---|---|");
    for k in keys {
        let label = if k.trim().is_empty() {
            "(non-resource)".to_owned()
        } else {
            k.clone()
        };
        println!(
            "| {label} | {} | {} | {} |",
            cell(count_of(floor, k), 0),
            cell(count_of(flux, k), 0),
            cell(count_of(ours, k), 0)
        );
    }
    println!();
    let time = |r: Option<&Run>| r.map(|r| r.elapsed.as_secs_f64());
    if let (Some(o), Some(f)) = (time(ours), time(flux)) {
        let goal = if count >= 1000 { ">= 4x" } else { ">= 10x" };
        crate::report(
            &format!("(a) N={count}: Flux time / ours"),
            format!("{:.1}x", f / o),
            goal,
            f / o,
            "same run, same control plane",
        );
    }
    if let (Some(o), Some(f)) = (time(ours), time(floor)) {
        crate::report(
            &format!("(a) N={count}: ours time / floor"),
            format!("{:.2}x", o / f),
            "<= 1.3x",
            o / f / 1.3,
            "ratio against the goal",
        );
    }
    if let (Some(o), Some(f)) = (ours, flux) {
        let (o, f) = (o.peak_rss_total(), f.peak_rss_total());
        crate::report(
            &format!("(a) N={count}: ours peak RSS / Flux's"),
            format!("{:.2}x", o / f),
            "<= 0.33x",
            o / f / 0.33,
            &format!("{o:.0} MiB vs {f:.0} MiB (both Flux controllers)"),
        );
    }
}
