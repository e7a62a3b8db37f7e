//! Shared pieces of the real-node tests (`node_*.rs`): finding the real node, the reconciler's
//! image built and pushed to the node's registry, `kubectl gitops install` with it, pods that run
//! a busybox script, and a git server on the host that pods reach through the node link.
//! The including test file declares `mod cli_support;` too.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::cli_support::gitops;
use gitops_conformance::git::{GitServer, ServerKind};
use gitops_conformance::{cargo_command, kubeconfig, kubectl, kubectl_ok, repo_root, run_ok};
use serde_json::Value;

/// A value of `tests/cluster/common.sh` (NAME=value), the one place the real node's names are set.
pub fn cluster_setting(name: &str) -> String {
    let path = repo_root().join("tests/cluster/common.sh");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{} sets no {name}", path.display()))
        .to_owned()
}

/// The name of the cluster's real node, or `None` (with the reason printed) when it has none.
pub fn real_node(test: &str) -> Option<String> {
    let label = cluster_setting("NODE_LABEL");
    let names = kubectl_ok(
        &["get", "nodes", "-l", &format!("{label}=true"), "-o", "name"],
        None,
    );
    match names.lines().next() {
        Some(name) => Some(name.trim_start_matches("node/").to_owned()),
        None => {
            eprintln!(
                "SKIPPED {test}: the cluster has no node labelled {label}=true \
                 (start one with GITOPS_REAL_NODE=1 bash tests/cluster/up.sh)"
            );
            None
        }
    }
}

/// The reconciler image, built once per test process and pushed to the real node's registry:
/// its reference by digest.
pub fn pushed_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_and_push("gitops-reconciler"))
}

/// Builds the reconciler image under repository name `name` (another name, another config and
/// so another digest for the same binary) and pushes it; returns its reference by digest.
pub fn build_and_push(name: &str) -> String {
    let dir = gitops_conformance::git::temp_dir("node-image");
    let out = run_ok(
        cargo_command("bash")
            .arg(repo_root().join("kubectl-gitops/image/build.sh"))
            .arg(&dir)
            .env(
                "GITOPS_IMAGE_NAME",
                format!("ghcr.io/kubectl-gitops/{name}"),
            )
            .env("GITOPS_IMAGE_PROFILE", "dev"),
    );
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("build.sh printed no {key}=:\n{out}"))
            .to_owned()
    };
    let (archive, digest) = (field("archive"), field("digest"));
    // The cluster directory of tests/cluster/up.sh is where its kubeconfig lives.
    let cluster_dir = kubeconfig()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let reference = run_ok(
        Command::new("bash")
            .arg(repo_root().join("tests/cluster/push.sh"))
            .args([&archive, name, "dev"])
            .env("GITOPS_CLUSTER_DIR", &cluster_dir),
    )
    .trim()
    .to_owned();
    assert!(
        reference.ends_with(&format!("@{digest}")),
        "push.sh printed {reference}, not the digest {digest} build.sh made"
    );
    reference
}

/// The tests share one installation: each holds this for its whole run (a panicking test
/// poisons it; the next one goes on with what is installed).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `kubectl gitops install --image <pushed>`; panics with the pods' description when it fails.
pub fn install() {
    let run = gitops(&["install", "--image", pushed_image(), "--timeout", "3m"]);
    assert_eq!(
        run.code,
        0,
        "install failed:\nstdout:\n{}\nstderr:\n{}\npods:\n{}",
        run.stdout,
        run.stderr,
        kubectl(&["-n", "gitops-system", "describe", "pods"], None).stdout
    );
}

/// The busybox image up.sh pushed to the real node's registry (by digest).
pub fn busybox_image() -> String {
    let images = std::fs::read_to_string(
        kubeconfig()
            .parent()
            .map(|d| d.join("node/images.env"))
            .unwrap_or_default(),
    )
    .expect("the real node's images.env next to the kubeconfig");
    images
        .lines()
        .find_map(|l| l.strip_prefix("BUSYBOX_IMAGE="))
        .expect("BUSYBOX_IMAGE in images.env")
        .to_owned()
}

/// Runs `script` (busybox sh) in a pod of `namespace` that meets the restricted Pod Security
/// Standard, and returns its output once it succeeded; panics with its log otherwise.
pub fn busybox_output(namespace: &str, name: &str, script: &str) -> String {
    let image = busybox_image();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "command": ["/bin/sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&pod.to_string()));
    let phase = wait_for(
        &format!("pod {namespace}/{name} finished"),
        Duration::from_secs(90),
        || {
            let phase = kubectl_ok(
                &[
                    "-n",
                    namespace,
                    "get",
                    "pod",
                    name,
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            );
            match phase.as_str() {
                "Succeeded" | "Failed" => Ok(phase),
                _ => Err(phase),
            }
        },
    );
    let logs = kubectl_ok(&["-n", namespace, "logs", name], None);
    kubectl(
        &["-n", namespace, "delete", "pod", name, "--wait=false"],
        None,
    );
    assert_eq!(phase, "Succeeded", "pod {namespace}/{name}:\n{logs}");
    logs
}

pub fn json(args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&full, None)).expect("kubectl prints JSON")
}

/// The `Ready` condition in `status` (an object's `.status`), or `null`.
pub fn ready_condition(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default()
}

/// The reconciler's pods (the install's namespace and labels).
pub fn reconciler_pods() -> Vec<Value> {
    json(&[
        "-n",
        "gitops-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=gitops-reconciler",
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls until `check` returns `Some`, at most `timeout`; panics with `what` and the last state.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if start.elapsed() > timeout => {
                panic!("{what}: not within {timeout:?}; last state: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

pub fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// A git server on the host's 127.0.0.1 made reachable from pods: socat listens on the node
/// link's host address (routed into the node's namespace, nowhere else) and forwards to it.
pub struct GitForPods {
    pub server: GitServer,
    socat: std::process::Child,
    /// `http://10.254.0.1:PORT/` as pods see the server (repositories are `<base><name>.git`).
    pub base: String,
}

impl GitForPods {
    pub fn start() -> Self {
        let server = GitServer::start(ServerKind::Http);
        let local = server.get("url").to_owned();
        let port = local
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let host_ip = cluster_setting("NODE_HOST_IP");
        let socat = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind={host_ip},fork,reuseaddr"))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .spawn()
            .expect("socat");
        let base = local.replace("127.0.0.1", &host_ip);
        Self {
            server,
            socat,
            base,
        }
    }
}

impl Drop for GitForPods {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}
