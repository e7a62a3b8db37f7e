//! Conformance harness: everything a test needs to talk to the cluster that
//! `GITOPS_TEST_KUBECONFIG` points to (kind for users; the local control plane of
//! `tests/cluster/` in this repository's CI).
//!
//! Conformance tests are `#[ignore]`d so that `cargo test --workspace` needs no cluster; the
//! suite runs with `cargo test -p gitops-conformance -- --ignored --test-threads=4`. Each test
//! works in its own namespace ([`TestNamespace`]), deleted when the test ends, pass or fail.
//! Tests drive the cluster through the real `kubectl`, as users do.

#![deny(missing_docs)]

pub mod git;
pub mod krusty;
pub mod kustomize_corpus;
pub mod pki;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The env var naming the kubeconfig of the cluster under test.
pub const KUBECONFIG_ENV: &str = "GITOPS_TEST_KUBECONFIG";

/// The field manager of everything the conformance suite applies itself.
pub const FIELD_MANAGER: &str = "gitops-conformance";

/// Path of the kubeconfig under test; panics with instructions when it is not set.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os(KUBECONFIG_ENV) {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        Some(path) => panic!(
            "{KUBECONFIG_ENV}={} does not name a file",
            Path::new(&path).display()
        ),
        None => panic!(
            "{KUBECONFIG_ENV} is not set: point it at a cluster's kubeconfig (bash tests/cluster/up.sh prints one)"
        ),
    }
}

/// Root of the repository (for manifests under reconciler/config/...).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `cmd` and returns its stdout; panics with both outputs when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`; zero when
/// the process is gone. For benches, which report CPU next to wall time.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: u64 = rest.get(11)?.parse().ok()?;
            let stime: u64 = rest.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    std::time::Duration::from_millis(ticks * 10)
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`; benches print it because the
/// machine is shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A command that runs `program` (cargo, or a script that runs cargo) from a test or bench
/// without the environment cargo gives the running test: `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`
/// and the like. Some build scripts (ring's) record those variables, so a nested build that saw
/// them would rebuild ring and everything above it, and the next top-level `cargo test` would
/// rebuild it all back — minutes per flip in CI.
pub fn cargo_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    const RUN_TIME: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_") || RUN_TIME.contains(&key.as_ref()) {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

/// Builds binary `bin` of workspace package `package` with the profile the running test or
/// bench was built with (its executable's directory says which: `debug` is `dev`), into the same
/// target dir, and returns its path. Panics with cargo's output when the build fails.
pub fn cargo_binary(package: &str, bin: &str) -> PathBuf {
    // Test executables live in <target>/<profile dir>/deps, binaries in <target>/<profile dir>.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no profile directory above {}", exe.display()));
    let profile = match out_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = cargo_command(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p {package}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --profile {profile} -p {package} --bin {bin} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = out_dir.join(bin);
    assert!(path.is_file(), "no {bin} binary at {}", path.display());
    path
}

/// The cluster a bench runs against: the caller's (`GITOPS_TEST_KUBECONFIG`), or a local
/// control plane of its own (tests/cluster), started by [`BenchCluster::get`] and stopped with
/// `--purge` when dropped.
pub struct BenchCluster {
    dir: Option<PathBuf>,
}

impl BenchCluster {
    /// Uses the caller's cluster, or starts one in a temporary directory named after `bench`;
    /// sets `GITOPS_TEST_KUBECONFIG` to it. Call before any other thread starts.
    pub fn get(bench: &str) -> BenchCluster {
        if std::env::var_os(KUBECONFIG_ENV).is_some() {
            return BenchCluster { dir: None };
        }
        let dir = std::env::temp_dir().join(format!("gitops-bench-{bench}-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(repo_root().join("tests/cluster/up.sh"))
            .env("GITOPS_CLUSTER_DIR", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/cluster/up.sh");
        assert!(out.status.success(), "tests/cluster/up.sh failed");
        let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // SAFETY: benches call this first, before any thread reads the environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(KUBECONFIG_ENV, kubeconfig)
        };
        BenchCluster { dir: Some(dir) }
    }

    /// The directory of the control plane this bench started, if it started one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl Drop for BenchCluster {
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

/// The outcome of one kubectl invocation.
#[derive(Debug)]
pub struct KubectlResult {
    /// kubectl exited with status 0.
    pub success: bool,
    /// Its standard output (lossily decoded).
    pub stdout: String,
    /// Its standard error (lossily decoded).
    pub stderr: String,
}

impl From<Output> for KubectlResult {
    fn from(out: Output) -> Self {
        Self {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `kubectl --kubeconfig <under test> ARGS`, with `stdin` piped in when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> KubectlResult {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig()).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child
        .wait_with_output()
        .expect("kubectl runs to completion")
        .into()
}

/// Runs kubectl and panics with its stderr unless it succeeds; returns stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let res = kubectl(args, stdin);
    assert!(
        res.success,
        "kubectl {} failed:\n{}",
        args.join(" "),
        res.stderr
    );
    res.stdout
}

/// One `apiserver_request_total` sample of the apiserver's metrics.
pub struct RequestSample {
    /// `verb` (GET, LIST, WATCH, APPLY, PATCH, POST, ...).
    pub verb: String,
    /// `resource` (plural).
    pub resource: String,
    /// `subresource` (empty for the object itself).
    pub subresource: String,
    /// A dry-run request.
    pub dry_run: bool,
    /// The counter's value.
    pub count: f64,
}

/// Attempts at reading the apiserver's metrics: right after thousands of Kustomizations got
/// Ready the apiserver can answer with a timeout.
const METRICS_ATTEMPTS: u32 = 5;

/// Every `apiserver_request_total` sample the apiserver under test reports now.
pub fn request_samples() -> Vec<RequestSample> {
    let mut attempt = 1;
    let metrics = loop {
        let res = kubectl(&["get", "--raw", "/metrics"], None);
        if res.success {
            break res.stdout;
        }
        assert!(
            attempt < METRICS_ATTEMPTS,
            "kubectl get --raw /metrics failed {METRICS_ATTEMPTS} times:\n{}",
            res.stderr
        );
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    let label = |line: &str, key: &str| -> String {
        line.split_once(&format!("{key}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default()
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|line| {
            let count = line.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some(RequestSample {
                verb: label(line, "verb"),
                resource: label(line, "resource"),
                subresource: label(line, "subresource"),
                dry_run: label(line, "dry_run") == "All",
                count,
            })
        })
        .collect()
}

/// How many `verb` requests for `resource` (not a subresource, dry-run or not) the apiserver
/// under test has served, over every response code.
pub fn requests(verb: &str, resource: &str) -> f64 {
    request_samples()
        .iter()
        .filter(|r| r.verb == verb && r.resource == resource && r.subresource.is_empty())
        .map(|r| r.count)
        .sum()
}

/// Installs (server-side applies) the committed CRDs and waits until they are Established.
/// Idempotent; safe to call from every test.
pub fn install_crds() {
    apply_crds(&repo_root().join("reconciler/config/crd"));
}

/// Server-side applies the CRDs in `dir` and waits until they are Established.
pub fn apply_crds(dir: &Path) {
    let dir = dir.to_string_lossy();
    let manager = format!("--field-manager={FIELD_MANAGER}");
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-f",
            &dir,
        ],
        None,
    );
    kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &dir,
        ],
        None,
    );
}

/// Removes the finalizers of our Kustomizations (the only kind the reconciler sets one on)
/// in `namespace` (else all namespaces) matching the label `selector` (else all), so their
/// namespace can be deleted once no reconciler runs for them any more. `kubectl patch` takes
/// names only, so the objects are listed first. Best effort: failures are ignored.
pub fn release_finalizers(namespace: Option<&str>, selector: Option<&str>) {
    const KIND: &str = "kustomizations.kubectl-gitops.io";
    let mut args = vec!["get", KIND];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("-A"),
    }
    if let Some(selector) = selector {
        args.extend(["-l", selector]);
    }
    args.extend([
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
    ]);
    let names = kubectl(&args, None);
    for line in names.stdout.lines() {
        if let Some((ns, name)) = line.split_once(' ') {
            let _ = kubectl(
                &[
                    "-n",
                    ns,
                    "patch",
                    KIND,
                    name,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            );
        }
    }
}

/// A namespace that exists for the lifetime of one test and is deleted (without waiting) when
/// dropped, whether the test passed or panicked.
pub struct TestNamespace {
    /// The namespace's name (unique per test process and test).
    pub name: String,
}

impl TestNamespace {
    /// Binds the ClusterRole `edit` to ServiceAccount `service_account` of this namespace
    /// (RoleBinding `<service_account>-edit`): the rights of a typical tenant.
    pub fn grant_edit(&self, service_account: &str) {
        kubectl_ok(
            &[
                "-n",
                &self.name,
                "create",
                "rolebinding",
                &format!("{service_account}-edit"),
                "--clusterrole=edit",
                &format!("--serviceaccount={}:{service_account}", self.name),
            ],
            None,
        );
    }

    /// Creates `gitops-test-<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("gt-{prefix}-{}-{n}", std::process::id());
        kubectl_ok(&["create", "namespace", &name], None);
        Self { name }
    }

    /// `kubectl -n <ns> ARGS`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> KubectlResult {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        kubectl(&full, stdin)
    }

    /// Applies a manifest in this namespace; returns the result without asserting.
    pub fn create(&self, manifest: &str) -> KubectlResult {
        self.kubectl(&["create", "-f", "-"], Some(manifest))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, ...) in KiB; 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
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
