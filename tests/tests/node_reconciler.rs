//! The reconciler as a Pod on a real node: `tests/cluster/up.sh` with `GITOPS_REAL_NODE=1` runs
//! containerd, kubelet and kube-proxy next to the control plane, and a registry in the node's
//! network namespace. The reconciler's image (`kubectl-gitops/image/build.sh`, dev profile) is
//! pushed there (`tests/cluster/push.sh`) and installed by digest with `kubectl gitops install`;
//! the container then really runs: in-cluster config, RBAC, probes, non-root and a read-only root.
//!
//! Every test here prints why and returns when the cluster has no real node (kind, or the
//! kwok-only local control plane), so the suite runs on any kubeconfig.

mod cli_support;
mod node_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::gitops;
use gitops_conformance::git::Repo;
use gitops_conformance::{TestNamespace, kubeconfig, kubectl, kubectl_ok, run_ok};
use node_support::{
    GitForPods, build_and_push, busybox_image, busybox_output, cluster_setting, container_status,
    install, json, pushed_image, ready_condition, real_node, reconciler_pods, serial, wait_for,
};
use serde_json::Value;

/// The holder of the reconciler's leader Lease ("" when none).
fn lease_holder() -> String {
    kubectl(
        &[
            "-n",
            "gitops-system",
            "get",
            "lease",
            "gitops-reconciler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .stdout
}

/// The PIDs in the cgroup of container `id` (kubelet's cgroupfs layout under the node's cgroup).
fn container_pids(id: &str) -> Vec<u32> {
    let root = PathBuf::from("/sys/fs/cgroup/pids").join(cluster_setting("NODE_CGROUP"));
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy() == id {
                let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
                return procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
            }
            stack.push(path);
        }
    }
    Vec::new()
}

/// The processes of the (first) container of `pod`, found through its containerd ID.
fn pod_container_pids(pod: &Value) -> Vec<u32> {
    let status = container_status(pod);
    let id = status["containerID"]
        .as_str()
        .and_then(|c| c.strip_prefix("containerd://"))
        .unwrap_or_else(|| panic!("no containerd container ID in {status}"));
    let pids = container_pids(id);
    assert!(
        !pids.is_empty(),
        "no processes in the cgroup of container {id}"
    );
    pids
}

fn kill_9(pids: &[u32]) {
    for pid in pids {
        run_ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    }
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn install_runs_the_reconciler_pod_and_kubelet_restarts_it_after_kill_9() {
    let Some(node) =
        real_node("install_runs_the_reconciler_pod_and_kubelet_restarts_it_after_kill_9")
    else {
        return;
    };
    let _serial = serial();
    let image = pushed_image();
    let digest = image.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();

    // `install` returns once the Deployment is available: the readiness probe passed.
    install();
    let pods = reconciler_pods();
    assert_eq!(pods.len(), 1, "one reconciler pod: {pods:?}");
    let pod = &pods[0];
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        pod["spec"]["nodeName"],
        node.as_str(),
        "{name} runs elsewhere"
    );
    assert_eq!(
        pod["status"]["phase"], "Running",
        "{name}: {}",
        pod["status"]
    );
    let status = container_status(pod);
    assert_eq!(status["ready"], true, "{name}: {status}");
    assert!(
        status["imageID"]
            .as_str()
            .unwrap_or_default()
            .ends_with(digest),
        "{name} runs {} rather than the pushed {digest}",
        status["imageID"]
    );
    let restarts = status["restartCount"].as_u64().unwrap_or(0);

    // The container's process runs as the image's non-root user.
    let pids = pod_container_pids(pod);
    for pid in &pids {
        let proc_status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = proc_status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65532"),
            "process {pid} of {name} runs as {uid}"
        );
    }

    // Its root filesystem is mounted read-only (readOnlyRootFilesystem), /data and /tmp are not.
    let pid = pids[0];
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let options = |target: &str| {
        mountinfo
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .rfind(|f| f.get(4) == Some(&target))
            .and_then(|f| f.get(5).map(|o| o.to_string()))
            .unwrap_or_else(|| panic!("no mount at {target} for process {pid}:\n{mountinfo}"))
    };
    assert!(
        options("/").split(',').any(|o| o == "ro"),
        "root of {name}: {}",
        options("/")
    );
    for writable in ["/data", "/tmp"] {
        assert!(
            options(writable).split(',').any(|o| o == "rw"),
            "{writable} of {name}: {}",
            options(writable)
        );
    }

    // The in-cluster client works: the log says it serves and names no failure.
    let logs = kubectl_ok(&["-n", "gitops-system", "logs", &name], None);
    assert!(logs.contains("serving health"), "{name} log:\n{logs}");
    assert!(!logs.contains("\"level\":\"ERROR\""), "{name} log:\n{logs}");

    // kill -9 of the container's process: kubelet restarts the container in the same pod.
    kill_9(&pids);
    let restarted = wait_for(
        "the killed reconciler container restarted and ready again",
        Duration::from_secs(120),
        || {
            let pods = reconciler_pods();
            let pod = pods
                .iter()
                .find(|p| p["metadata"]["name"] == name.as_str())
                .ok_or_else(|| format!("pod {name} is gone: {pods:?}"))?;
            let status = container_status(pod);
            if status["restartCount"].as_u64().unwrap_or(0) > restarts && status["ready"] == true {
                Ok(status.clone())
            } else {
                Err(status.to_string())
            }
        },
    );
    let last = &restarted["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{name} last state: {last}");
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn the_artifact_and_metrics_ports_answer_through_the_service_from_a_pod() {
    if real_node("the_artifact_and_metrics_ports_answer_through_the_service_from_a_pod").is_none() {
        return;
    }
    let _serial = serial();
    install();
    // From a pod in gitops-system (the NetworkPolicy's allowed peers), by the Service's DNS name:
    // port 80 is the artifact server (named port http), 8080 the metrics.
    let service = "gitops-reconciler.gitops-system.svc.cluster.local";
    let out = busybox_output(
        "gitops-system",
        // Per process: a pod of an earlier run may still be terminating.
        &format!("node-test-client-{}", std::process::id()),
        &format!(
            "printf 'GET /no-such-artifact HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 {service} 80 && \
             printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 {service} 8080"
        ),
    );
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/")).collect();
    assert_eq!(statuses.len(), 2, "two HTTP answers expected:\n{out}");
    assert!(
        statuses[0].contains(" 404"),
        "artifact server: {}\n{out}",
        statuses[0]
    );
    assert!(
        statuses[1].contains(" 200"),
        "metrics: {}\n{out}",
        statuses[1]
    );
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn a_rollout_stops_the_old_pod_gracefully_and_releases_the_lease() {
    if real_node("a_rollout_stops_the_old_pod_gracefully_and_releases_the_lease").is_none() {
        return;
    }
    let _serial = serial();
    install();
    let pods = reconciler_pods();
    let old = pods
        .first()
        .and_then(|p| p["metadata"]["name"].as_str())
        .expect("a reconciler pod")
        .to_owned();
    let held_by_old = wait_for("the leader Lease is held", Duration::from_secs(60), || {
        let holder = lease_holder();
        if holder.starts_with(&old) {
            Ok(holder)
        } else {
            Err(holder)
        }
    });
    // Follow the old container's log to its end, then roll the Deployment.
    let follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["-n", "gitops-system", "logs", "-f", &old])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    kubectl_ok(
        &[
            "-n",
            "gitops-system",
            "rollout",
            "restart",
            "deployment/gitops-reconciler",
        ],
        None,
    );
    let out = follow
        .wait_with_output()
        .expect("kubectl logs -f ends with the container");
    let stopped_after = started.elapsed();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("termination signal"),
        "{old} did not see SIGTERM:\n{log}"
    );
    assert!(
        log.lines()
            .last()
            .unwrap_or_default()
            .contains("\"stopped\""),
        "{old} did not stop cleanly:\n{log}"
    );
    assert!(
        stopped_after < Duration::from_secs(60),
        "{old} took {stopped_after:?} (grace period 60 s)"
    );
    assert!(
        log.contains("released leadership"),
        "{old} did not release the Lease:\n{log}"
    );
    // The new pod (Recreate: it starts once the old one is gone) takes the Lease over.
    let new_holder = wait_for(
        "the new pod holds the Lease",
        Duration::from_secs(120),
        || {
            let holder = lease_holder();
            if !holder.is_empty() && !holder.starts_with(&old) {
                Ok(holder)
            } else {
                Err(holder)
            }
        },
    );
    assert_ne!(held_by_old, new_holder);
}

fn web_deployment(image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {image}
        command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www']
        readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 1}}
"
    )
}

/// The `web` pods of `ns` that run and are ready, by name.
fn ready_web_pods(ns: &str) -> Vec<String> {
    json(&["-n", ns, "get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| container_status(p)["ready"] == true)
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn applied_revision(ns: &str) -> String {
    let ks = json(&["-n", ns, "get", "kustomizations.kubectl-gitops.io", "web"]);
    ks["status"]["lastAppliedRevision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A GitRepository and Kustomization `web` in `ns` that deploy `deploy/` of repository `web`
/// (2 replicas committed first) into `ns`; returns the repository and the first commit.
fn web_from_git(ns: &TestNamespace, git: &GitForPods) -> (Repo, String) {
    let repo = git.server.repo("web");
    let first = repo.commit(
        &[(
            "deploy/web.yaml",
            Some(&web_deployment(&busybox_image(), 2)),
        )],
        "two",
    );
    let objects = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1
kind: GitRepository
metadata: {{name: web}}
spec:
  url: {base}web.git
  insecure: true
  interval: 5s
  ref: {{branch: main}}
---
apiVersion: kubectl-gitops.io/v1alpha1
kind: Kustomization
metadata: {{name: web}}
spec:
  interval: 5s
  path: ./deploy
  prune: true
  wait: true
  timeout: 90s
  targetNamespace: {ns}
  sourceRef: {{kind: GitRepository, name: web}}
",
        base = git.base,
        ns = ns.name
    );
    let created = ns.create(&objects);
    assert!(created.success, "{}", created.stderr);
    (repo, first)
}

/// Waits until `ns` has `count` ready web pods and the Kustomization applied `commit`.
fn wait_web(ns: &TestNamespace, count: usize, commit: &str) {
    wait_for(
        &format!("{count} ready web pods from {commit}"),
        Duration::from_secs(180),
        || {
            let pods = ready_web_pods(&ns.name);
            let revision = applied_revision(&ns.name);
            if pods.len() == count && revision.ends_with(commit) {
                Ok(())
            } else {
                Err(format!("{revision}: {pods:?}"))
            }
        },
    );
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn git_drives_real_pods_through_a_kill_9_of_the_reconciler_and_prune_removes_them() {
    if real_node("git_drives_real_pods_through_a_kill_9_of_the_reconciler_and_prune_removes_them")
        .is_none()
    {
        return;
    }
    let _serial = serial();
    install();
    let git = GitForPods::start();
    let ns = TestNamespace::new("node-git");
    let (repo, first) = web_from_git(&ns, &git);
    wait_web(&ns, 2, &first);

    // A new commit, and the reconciler's container killed right away: after kubelet restarts it,
    // the new revision is applied, exactly once (one Deployment, three pods).
    let second = repo.commit(
        &[(
            "deploy/web.yaml",
            Some(&web_deployment(&busybox_image(), 3)),
        )],
        "three",
    );
    let reconciler = reconciler_pods();
    kill_9(&pod_container_pids(
        reconciler.first().expect("a reconciler pod"),
    ));
    wait_web(&ns, 3, &second);
    let deployments = json(&["-n", &ns.name, "get", "deployments"]);
    assert_eq!(
        deployments["items"].as_array().map(Vec::len),
        Some(1),
        "{deployments}"
    );
    let sets = json(&["-n", &ns.name, "get", "replicasets"]);
    assert_eq!(
        sets["items"].as_array().map(Vec::len),
        Some(1),
        "a replica change makes no new ReplicaSet: {sets}"
    );

    // The Deployment leaves git: prune deletes it, and its real pods go with it.
    let third = repo.commit(
        &[
            ("deploy/web.yaml", None),
            (
                "deploy/config.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-gone}\ndata: {a: b}\n"),
            ),
        ],
        "prune web",
    );
    wait_for("the web pods pruned", Duration::from_secs(180), || {
        let pods = json(&["-n", &ns.name, "get", "pods", "-l", "app=web"]);
        let left = pods["items"].as_array().map(Vec::len).unwrap_or(0);
        let revision = applied_revision(&ns.name);
        if left == 0 && revision.ends_with(&third) {
            Ok(())
        } else {
            Err(format!("{revision}: {left} pods left"))
        }
    });
    let gone = kubectl(&["-n", &ns.name, "get", "deployment", "web"], None);
    assert!(
        !gone.success && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn an_upgrade_to_a_new_image_digest_mid_reconcile_converges() {
    if real_node("an_upgrade_to_a_new_image_digest_mid_reconcile_converges").is_none() {
        return;
    }
    let _serial = serial();
    install();
    let next = build_and_push("gitops-reconciler-next");
    let digest = next
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default()
        .to_owned();
    assert!(
        !pushed_image().ends_with(&digest),
        "the two images share {digest}"
    );
    let git = GitForPods::start();
    let ns = TestNamespace::new("node-upgrade");
    // The upgrade starts while the first revision is being applied and waited for.
    let (_repo, first) = web_from_git(&ns, &git);
    wait_for("the Kustomization started", Duration::from_secs(60), || {
        let ks = json(&[
            "-n",
            &ns.name,
            "get",
            "kustomizations.kubectl-gitops.io",
            "web",
        ]);
        if ks["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            Ok(())
        } else {
            Err(ks["status"].to_string())
        }
    });
    let run = gitops(&["install", "--image", &next, "--timeout", "3m"]);
    assert_eq!(run.code, 0, "upgrade failed: {}", run.stderr);
    let pods = reconciler_pods();
    assert!(
        pods.iter().all(|p| container_status(p)["imageID"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&digest)),
        "after the upgrade every reconciler pod runs {digest}: {pods:?}"
    );
    wait_web(&ns, 2, &first);
    // Back to the suite's image for the other tests.
    install();
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn bootstrap_makes_the_reconciler_pod_manage_itself_from_git() {
    let Some(node) = real_node("bootstrap_makes_the_reconciler_pod_manage_itself_from_git") else {
        return;
    };
    let _serial = serial();
    let image = pushed_image();
    let git = GitForPods::start();
    let repo = git.server.repo("fleet");
    // The plain-http test server takes pushes only where the repository allows them.
    gitops_conformance::git::git(&repo.bare, &["config", "http.receivepack", "true"]);
    repo.commit(&[("README.md", Some("# fleet\n"))], "initial");
    let url = format!("{}fleet.git", git.base);
    let run = gitops(&[
        "bootstrap",
        "git",
        "--url",
        &url,
        "--allow-insecure-http",
        "--branch",
        "main",
        "--path",
        "clusters/real",
        "--image",
        image,
        "--timeout",
        "4m",
    ]);
    assert_eq!(run.code, 0, "bootstrap failed:\n{}", run.stderr);
    let head = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    let head = head.split('\t').next().unwrap_or_default().to_owned();
    // The in-cluster reconciler fetched the pushed commit and applied it, itself included.
    let ks = json(&[
        "-n",
        "gitops-system",
        "get",
        "kustomizations.kubectl-gitops.io",
        "gitops-system",
    ]);
    assert!(
        ks["status"]["lastAppliedRevision"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&head),
        "{}",
        ks["status"]
    );
    let inventory = ks["status"]["inventory"]["entries"].to_string();
    assert!(
        inventory.contains("gitops-system_gitops-reconciler_apps_Deployment"),
        "{inventory}"
    );
    let pods = reconciler_pods();
    assert!(
        pods.iter().all(|p| p["spec"]["nodeName"] == node.as_str()
            && container_status(p)["ready"] == true
            && container_status(p)["imageID"]
                .as_str()
                .unwrap_or_default()
                .ends_with(image.rsplit_once('@').map(|(_, d)| d).unwrap_or_default())),
        "{pods:?}"
    );
    // Let go of the sync objects without pruning the reconciler: stop the reconciler first (a
    // running one puts its finalizer back, and deleting the Kustomization would then prune the
    // reconciler with everything else), then drop the finalizers and delete. The next test
    // installs the reconciler again.
    kubectl_ok(
        &[
            "-n",
            "gitops-system",
            "delete",
            "deployment",
            "gitops-reconciler",
            "--timeout=120s",
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            "gitops-system",
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=gitops-reconciler",
            "--timeout=120s",
        ],
        None,
    );
    for kind in [
        "kustomizations.kubectl-gitops.io",
        "gitrepositories.kubectl-gitops.io",
    ] {
        kubectl_ok(
            &[
                "-n",
                "gitops-system",
                "patch",
                kind,
                "gitops-system",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        );
        kubectl_ok(
            &[
                "-n",
                "gitops-system",
                "delete",
                kind,
                "gitops-system",
                "--wait=false",
            ],
            None,
        );
    }
    let left = kubectl_ok(
        &["-n", "gitops-system", "get", "secret,service", "-o", "name"],
        None,
    );
    assert!(
        left.contains("service/gitops-reconciler"),
        "the sync's objects were pruned: {left}"
    );
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn uninstall_stops_the_reconciler_pod_and_keeps_the_workloads_it_applied() {
    if real_node("uninstall_stops_the_reconciler_pod_and_keeps_the_workloads_it_applied").is_none()
    {
        return;
    }
    let _serial = serial();
    install();
    let git = GitForPods::start();
    let ns = TestNamespace::new("node-uninstall");
    let (_repo, first) = web_from_git(&ns, &git);
    wait_web(&ns, 2, &first);
    let pods_before = ready_web_pods(&ns.name);

    let run = gitops(&[
        "uninstall",
        "--silent",
        "--keep-namespace",
        "--timeout",
        "3m",
    ]);
    assert_eq!(run.code, 0, "uninstall failed:\n{}", run.stderr);
    assert!(
        reconciler_pods().is_empty(),
        "reconciler pods left: {:?}",
        reconciler_pods()
    );
    let crds = kubectl(&["get", "crd", "kustomizations.kubectl-gitops.io"], None);
    assert!(!crds.success, "the CRD is still there");
    // The workloads stay, with the very same pods (nothing was pruned or recreated).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ready_web_pods(&ns.name), pods_before);
    install();
}

/// A Deployment `name` of busybox running `script`, with `probe` (YAML) as its readiness probe.
fn busybox_deployment(image: &str, name: &str, script: &str, probe: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: main
        image: {image}
        command: [/bin/sh, -c, '{script}']
        readinessProbe: {probe}
"
    )
}

/// The Ready condition of Kustomization `name` in `ns`: (status, message).
fn kustomization_ready(ns: &str, name: &str) -> (String, String) {
    let ks = json(&["-n", ns, "get", "kustomizations.kubectl-gitops.io", name]);
    let ready = ready_condition(&ks["status"]);
    (
        ready["status"].as_str().unwrap_or_default().to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn unready_deployments_end_not_ready_naming_the_pod_and_the_containers_reason() {
    if real_node("unready_deployments_end_not_ready_naming_the_pod_and_the_containers_reason")
        .is_none()
    {
        return;
    }
    let _serial = serial();
    install();
    let git = GitForPods::start();
    let ns = TestNamespace::new("node-unready");
    let repo = git.server.repo("unready");
    let image = busybox_image();
    repo.commit(
        &[
            (
                "probe/deploy.yaml",
                Some(&busybox_deployment(
                    &image,
                    "probe-fails",
                    "exec sleep 3600",
                    "{exec: {command: [/bin/sh, -c, 'exit 1']}, periodSeconds: 1}",
                )),
            ),
            (
                "crash/deploy.yaml",
                Some(&busybox_deployment(
                    &image,
                    "crashes",
                    "echo starting; exit 3",
                    "{exec: {command: [/bin/sh, -c, 'exit 0']}, periodSeconds: 1}",
                )),
            ),
        ],
        "two workloads that never become ready",
    );
    let kustomization = |name: &str, path: &str| {
        format!(
            "---
apiVersion: kubectl-gitops.io/v1alpha1
kind: Kustomization
metadata: {{name: {name}}}
spec:
  interval: 10s
  path: ./{path}
  prune: true
  wait: true
  timeout: 30s
  targetNamespace: {ns}
  sourceRef: {{kind: GitRepository, name: unready}}
",
            ns = ns.name
        )
    };
    let objects = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1
kind: GitRepository
metadata: {{name: unready}}
spec:
  url: {base}unready.git
  insecure: true
  interval: 10s
  ref: {{branch: main}}
{probe}{crash}",
        base = git.base,
        probe = kustomization("probe", "probe"),
        crash = kustomization("crash", "crash"),
    );
    let created = ns.create(&objects);
    assert!(created.success, "{}", created.stderr);

    // Each ends not Ready with a message naming its pod and the container's reason (the
    // message is rewritten at every attempt; a crash-looping container is first seen running or
    // terminated, so the check waits for the back-off to show).
    let expectations = [
        (
            "probe",
            "pod probe-fails-",
            "container main: running, readiness probe failing",
        ),
        ("crash", "pod crashes-", "container main: CrashLoopBackOff"),
    ];
    for (name, pod, reason) in expectations {
        let message = wait_for(
            &format!("Kustomization {name} not Ready naming {pod}… and {reason}"),
            Duration::from_secs(240),
            || {
                let (status, message) = kustomization_ready(&ns.name, name);
                if status == "False" && message.contains(pod) && message.contains(reason) {
                    Ok(message)
                } else {
                    Err(format!("{status}: {message}"))
                }
            },
        );
        assert!(message.contains("timeout waiting for"), "{name}: {message}");
        if name == "crash" {
            assert!(message.contains("last exit code 3"), "{message}");
        }
        eprintln!("{name}: {message}");
    }
}
