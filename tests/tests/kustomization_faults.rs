//! The reconciler under faults, as a real `gitops-reconciler` process against a real apiserver:
//! kill -9 in the middle of an apply and of a prune, then a restart, converges with no orphans;
//! two replicas with leader election hand over when the leader dies; a policy denial applies
//! and prunes nothing; two Kustomizations claiming one object are reported as a conflict and
//! do not flap; SIGTERM ends a reconciler that could never list its objects; after an apiserver
//! outage the watches reconnect within seconds; with the reconcilers of a sharded install
//! (`install --shard`), every Kustomization is reconciled by exactly one of them.

mod cli_support;
mod kustomization_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kustomization_support::*;

const T: Duration = Duration::from_secs(90);

/// The `gitops-reconciler` binary of this checkout, built once per test process.
fn reconciler_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| gitops_conformance::cargo_binary("gitops-reconciler", "gitops-reconciler"))
        .clone()
}

/// One `gitops-reconciler` process reconciling the test's shard, its log in `log`.
struct ReconcilerProcess {
    child: Child,
    log: PathBuf,
}

impl ReconcilerProcess {
    fn start(shard: &str, storage: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_as(
            shard,
            storage,
            name,
            extra,
            &gitops_conformance::kubeconfig(),
        )
    }

    /// Like [`ReconcilerProcess::start`], with the identity of `kubeconfig`.
    fn start_as(
        shard: &str,
        storage: &Path,
        name: &str,
        extra: &[&str],
        kubeconfig: &Path,
    ) -> Self {
        Self::start_selecting(
            &format!("conformance-shard={shard}"),
            storage,
            name,
            extra,
            kubeconfig,
        )
    }

    /// A process reconciling the objects `selector` matches.
    fn start_selecting(
        selector: &str,
        storage: &Path,
        name: &str,
        extra: &[&str],
        kubeconfig: &Path,
    ) -> Self {
        let log = storage.with_file_name(format!(
            "{}-{name}.log",
            storage.file_name().unwrap().to_string_lossy()
        ));
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("reconciler log file");
        let err = out.try_clone().expect("log file handle");
        let child = Command::new(reconciler_binary())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .args(["--storage-path", &storage.to_string_lossy()])
            .args(["--storage-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--receiver-addr", "127.0.0.1:0"])
            .args(["--watch-label-selector", selector])
            .args(["--log-format", "text"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the reconciler binary starts");
        Self { child, log }
    }

    /// SIGKILL: no graceful shutdown, no final status write, no lease release.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status, or None when it has not exited within `within`.
    async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the reconciler") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for ReconcilerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What every process-level test starts from: its namespace (also the shard label value of its
/// Kustomizations), a storage directory with a published GitRepository `repo`, and the
/// ConfigMaps API of the namespace. Dropping it releases the shard's finalizers, then deletes
/// the storage and the namespace.
struct Setup {
    source: PublishedSource,
    api: Api<DynamicObject>,
    storage: tempfile_dir::Dir,
    ns: TestNamespace,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        install_crds();
        let ns = TestNamespace::new(prefix);
        let storage =
            tempfile_dir::Dir(std::env::temp_dir().join(format!("gitops-faults-{}", ns.name)));
        std::fs::create_dir_all(&storage.0).expect("storage dir");
        let api = configmaps(&client().await, &ns.name);
        let source = PublishedSource::new(&storage.0, &ns.name, "repo");
        Self {
            source,
            api,
            storage,
            ns,
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        release_finalizers(&self.ns.name);
    }
}

fn configmaps(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Names of the ConfigMaps in `ns` that carry the owner labels of Kustomization `ks`.
async fn owned(api: &Api<DynamicObject>, ns: &str, ks: &str) -> BTreeSet<String> {
    let selector = format!("kubectl-gitops.io/name={ks},kubectl-gitops.io/namespace={ns}");
    match api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .filter_map(|o| o.metadata.name)
            .collect(),
        Err(e) => panic!("listing ConfigMaps in {ns}: {e}"),
    }
}

fn cms(ns: &str, names: &[String]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            (
                format!("app/{n}.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n  namespace: {ns}\ndata: {{value: \"{n}\"}}\n"
                ),
            )
        })
        .collect();
    let list: Vec<String> = names.iter().map(|n| format!("{n}.yaml")).collect();
    files.push((
        "app/kustomization.yaml".into(),
        format!("resources: [{}]\n", list.join(", ")),
    ));
    files
}

fn publish(source: &PublishedSource, commit: char, files: &[(String, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    source.publish(commit, &borrowed)
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Polls the owned set every 20 ms until `mid` says the reconciler is in the middle of its work,
/// then kills it. Panics if the work finished first (the kill point was missed).
async fn kill_when(
    process: &mut ReconcilerProcess,
    api: &Api<DynamicObject>,
    ns: &str,
    what: &str,
    mid: impl Fn(&BTreeSet<String>) -> bool,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> usize {
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = owned(api, ns, "app").await;
        if mid(&now) {
            process.kill9();
            return now.len();
        }
        assert!(
            !done(&now),
            "{what} finished before it could be killed (the kill point was missed); log:\n{}",
            process.log_tail()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never started; log:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the Kustomization is Ready at `revision` and owns exactly `expected`.
async fn converged(
    api: &Api<DynamicObject>,
    ns: &str,
    revision: &str,
    expected: &[String],
    process: &ReconcilerProcess,
) {
    converged_within(T, api, ns, revision, expected, process).await;
}

async fn converged_within(
    within: Duration,
    api: &Api<DynamicObject>,
    ns: &str,
    revision: &str,
    expected: &[String],
    process: &ReconcilerProcess,
) {
    let want: BTreeSet<String> = expected.iter().cloned().collect();
    let deadline = std::time::Instant::now() + within;
    loop {
        let ready = ready(ns, "app");
        let now = owned(api, ns, "app").await;
        if matches!(&ready, Some((s, _, m)) if s == "True" && m == &format!("Applied revision: {revision}"))
            && now == want
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not converged on {revision}: ready {ready:?}; {} owned, {} expected; missing {:?}; orphans {:?}; log:\n{}",
            now.len(),
            want.len(),
            want.difference(&now).take(5).collect::<Vec<_>>(),
            now.difference(&want).take(5).collect::<Vec<_>>(),
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = ks_status(ns, "app");
    let entries = status["inventory"]["entries"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(entries, expected.len(), "inventory after convergence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn kill_9_mid_apply_and_mid_prune_then_restart_converges_without_orphans() {
    let setup = Setup::new("ksf-kill").await;
    let (ns, shard, storage, api, source) = (
        &setup.ns,
        &setup.ns.name,
        &setup.storage,
        &setup.api,
        &setup.source,
    );
    // One apply request in flight: the writes of a stage take long enough to be interrupted.
    let slow = ["--concurrent-apply", "1"];

    // 1. Killed in the middle of the first apply.
    let v1_names = names("a", 0..300);
    let v1 = publish(source, '1', &cms(&ns.name, &v1_names));
    let mut process = ReconcilerProcess::start(shard, &storage.0, "1", &slow);
    ns.create(&kustomization(
        "app",
        shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 60s\n",
    ));
    let at = kill_when(
        &mut process,
        api,
        &ns.name,
        "the first apply",
        |s| !s.is_empty() && s.len() < 300,
        |s| s.len() == 300,
    )
    .await;
    eprintln!("killed mid-apply with {at}/300 applied");
    let process = ReconcilerProcess::start(shard, &storage.0, "2", &slow);
    converged(api, &ns.name, &v1, &v1_names, &process).await;
    drop(process);

    // 2. Killed while applying a revision that also drops 200 objects: the pending inventory
    // recorded before the first write still names them, so the restarted reconciler prunes them.
    let mut v2_names = names("a", 0..100);
    v2_names.extend(names("b", 0..300));
    let v2 = publish(source, '2', &cms(&ns.name, &v2_names));
    let mut process = ReconcilerProcess::start(shard, &storage.0, "3", &slow);
    let at = kill_when(
        &mut process,
        api,
        &ns.name,
        "the second apply",
        |s| {
            s.iter().any(|n| n.starts_with("b-"))
                && s.iter().filter(|n| n.starts_with("b-")).count() < 300
        },
        |s| s.iter().filter(|n| n.starts_with("b-")).count() == 300,
    )
    .await;
    eprintln!("killed mid-apply of v2 with {at} owned");
    let process = ReconcilerProcess::start(shard, &storage.0, "4", &slow);
    converged(api, &ns.name, &v2, &v2_names, &process).await;
    drop(process);

    // 3. Killed in the middle of a prune of 390 objects.
    let v3_names = names("b", 0..10);
    let v3 = publish(source, '3', &cms(&ns.name, &v3_names));
    let mut process = ReconcilerProcess::start(shard, &storage.0, "5", &slow);
    let at = kill_when(
        &mut process,
        api,
        &ns.name,
        "the prune",
        |s| s.len() < 400 && s.len() > 10,
        |s| s.len() == 10,
    )
    .await;
    eprintln!("killed mid-prune with {at} owned");
    let process = ReconcilerProcess::start(shard, &storage.0, "6", &slow);
    converged(api, &ns.name, &v3, &v3_names, &process).await;
}

/// The Lease of the shard's reconcilers and its holder.
fn lease_holder(ns: &str) -> Option<String> {
    let out = gitops_conformance::kubectl(
        &[
            "-n",
            ns,
            "get",
            "leases",
            "-o",
            "jsonpath={.items[0].spec.holderIdentity}",
        ],
        None,
    );
    (out.success && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn two_replicas_one_leader_and_a_handover_when_it_dies() {
    let setup = Setup::new("ksf-leader").await;
    let (ns, shard, storage, api, source) = (
        &setup.ns,
        &setup.ns.name,
        &setup.storage,
        &setup.api,
        &setup.source,
    );
    let elect = ["--leader-elect", "--leader-election-namespace", &ns.name];
    let mut replicas = [
        ReconcilerProcess::start(shard, &storage.0, "r0", &elect),
        ReconcilerProcess::start(shard, &storage.0, "r1", &elect),
    ];
    let holder = eventually(
        T,
        "a leader",
        || lease_holder(&ns.name),
        || {
            replicas
                .iter()
                .map(|r| r.log_tail())
                .collect::<Vec<_>>()
                .join("\n---\n")
        },
    )
    .await;
    let pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
    let leader = pids
        .iter()
        .position(|pid| holder.ends_with(&format!("_{pid}")))
        .unwrap_or_else(|| panic!("lease holder {holder} is none of the replicas {pids:?}"));

    let v1_names = names("a", 0..3);
    let v1 = publish(source, '1', &cms(&ns.name, &v1_names));
    ns.create(&kustomization(
        "app",
        shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n",
    ));
    converged(api, &ns.name, &v1, &v1_names, &replicas[leader]).await;
    // Only the leader reconciles: the follower has not even started its controllers.
    let follower = 1 - leader;
    let follower_log = std::fs::read_to_string(&replicas[follower].log).unwrap_or_default();
    assert!(
        !follower_log.contains("serving artifacts"),
        "the follower started its controllers while another replica held the lease:\n{follower_log}"
    );

    // The leader dies without releasing the lease; the follower takes over when it expires
    // and reconciles the next revision.
    replicas[leader].kill9();
    let v2_names = names("a", 1..5);
    let v2 = publish(source, '2', &cms(&ns.name, &v2_names));
    let new_holder = eventually(
        T,
        "the follower to take the lease",
        || lease_holder(&ns.name).filter(|h| h.ends_with(&format!("_{}", pids[follower]))),
        || format!("{:?}", lease_holder(&ns.name)),
    )
    .await;
    assert_ne!(new_holder, holder);
    converged(api, &ns.name, &v2, &v2_names, &replicas[follower]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_policy_denial_applies_nothing_and_prunes_nothing() {
    install_crds();
    let ns = TestNamespace::new("ksf-deny");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let deployment = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n",
            ns.name
        )
    };
    let cm = |name: &str, value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\ndata: {{value: {value}}}\n",
            ns.name
        )
    };
    let v1 = source.publish(
        '1',
        &[
            (
                "app/kustomization.yaml",
                "resources: [web.yaml, a.yaml, b.yaml]\n",
            ),
            ("app/web.yaml", &deployment(2)),
            ("app/a.yaml", &cm("a", "one")),
            ("app/b.yaml", &cm("b", "one")),
        ],
    );
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  policies:\n  - name: bounds\n    module: {builtin: replica-bounds}\n    config: {bounds: {Deployment: {min: 1, max: 5}}, action: deny}\n",
    ));
    eventually(
        T,
        "Ready at v1",
        || ready(&ns.name, "app").filter(|(s, _, m)| s == "True" && m.ends_with(&v1)),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    let inventory_v1 = ks_status(&ns.name, "app")["inventory"].clone();

    // v2 changes a ConfigMap, drops another and asks for 50 replicas: denied as a whole.
    let v2 = source.publish(
        '2',
        &[
            ("app/kustomization.yaml", "resources: [web.yaml, a.yaml]\n"),
            ("app/web.yaml", &deployment(50)),
            ("app/a.yaml", &cm("a", "two")),
        ],
    );
    let (_, _, message) = eventually(
        T,
        "PolicyDenied",
        || ready(&ns.name, "app").filter(|(s, r, _)| s == "False" && r == "PolicyDenied"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(message.contains("bounds"), "names the policy: {message}");
    assert!(message.contains("web"), "names the object: {message}");
    let status = ks_status(&ns.name, "app");
    assert_eq!(status["lastAppliedRevision"], v1.as_str());
    assert_eq!(status["lastAttemptedRevision"], v2.as_str());
    assert_eq!(status["inventory"], inventory_v1, "inventory unchanged");
    let replicas = kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "2", "the denied replicas were not applied");
    let a = get(&ns.name, "configmap", "a").expect("a exists");
    assert_eq!(
        a["data"]["value"], "one",
        "nothing of the denied revision applied"
    );
    assert!(
        get(&ns.name, "configmap", "b").is_some(),
        "nothing pruned for a denied revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn two_kustomizations_claiming_one_object_conflict_without_flapping() {
    install_crds();
    let ns = TestNamespace::new("ksf-claim");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let shared = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: {}\ndata: {{value: one}}\n",
        ns.name
    );
    let other = shared.replace("value: one", "value: two");
    source.publish(
        '1',
        &[
            ("one/kustomization.yaml", "resources: [shared.yaml]\n"),
            ("one/shared.yaml", &shared),
            ("two/kustomization.yaml", "resources: [shared.yaml]\n"),
            ("two/shared.yaml", &other),
        ],
    );
    let spec = |path: &str| {
        format!(
            "  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./{path}\n  prune: true\n  interval: 2s\n  retryInterval: 1s\n  timeout: 30s\n"
        )
    };
    ns.create(&kustomization("one", &ctl.shard, &spec("one")));
    eventually(
        T,
        "one Ready",
        || ready(&ns.name, "one").filter(|(s, _, _)| s == "True"),
        || format!("{:?}", ready(&ns.name, "one")),
    )
    .await;
    ns.create(&kustomization("two", &ctl.shard, &spec("two")));
    let (_, _, message) = eventually(
        T,
        "two refused",
        || ready(&ns.name, "two").filter(|(s, _, _)| s == "False"),
        || format!("{:?}", ready(&ns.name, "two")),
    )
    .await;
    assert!(
        message.contains(&format!("managed by Kustomization {}/one", ns.name)),
        "{message}"
    );
    // Several intervals of both reconciling: the object stays with its first owner, unchanged.
    let before = get(&ns.name, "configmap", "shared").expect("shared exists");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = get(&ns.name, "configmap", "shared").expect("shared exists");
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "the object flapped between its claimants"
    );
    assert_eq!(after["data"]["value"], "one");
    assert_eq!(after["metadata"]["labels"]["kubectl-gitops.io/name"], "one");
    assert!(matches!(ready(&ns.name, "one"), Some((s, _, _)) if s == "True"));
    assert!(matches!(ready(&ns.name, "two"), Some((s, _, _)) if s == "False"));
}

/// Restarts a component of the local control plane under test (tests/cluster/restart.sh).
/// Needs `GITOPS_CLUSTER_DIR` of a control plane started by tests/cluster/up.sh: on any other
/// cluster (kind) skip these tests with `--skip disruptive_`.
fn restart_component(name: &str, args: &[&str]) {
    let dir = std::env::var("GITOPS_CLUSTER_DIR").unwrap_or_else(|_| {
        panic!("disruptive tests need GITOPS_CLUSTER_DIR of a tests/cluster control plane (skip them with --skip disruptive_)")
    });
    let out = Command::new("bash")
        .arg(gitops_conformance::repo_root().join("tests/cluster/restart.sh"))
        .arg(name)
        .args(args)
        .env("GITOPS_CLUSTER_DIR", dir)
        .output()
        .expect("run restart.sh");
    assert!(
        out.status.success(),
        "restart.sh {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Disrupts the whole cluster: run alone (`disruptive_` tests run after the others, one at a
/// time, in tests/run-all.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn disruptive_apiserver_killed_mid_apply_converges() {
    let setup = Setup::new("ksf-apiserver").await;
    let (ns, shard, storage, api, source) = (
        &setup.ns,
        &setup.ns.name,
        &setup.storage,
        &setup.api,
        &setup.source,
    );
    let v1_names = names("a", 0..300);
    let v1 = publish(source, '1', &cms(&ns.name, &v1_names));
    let process = ReconcilerProcess::start(shard, &storage.0, "1", &["--concurrent-apply", "1"]);
    ns.create(&kustomization(
        "app",
        shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 60s\n",
    ));
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = owned(api, &ns.name, "app").await;
        if !now.is_empty() && now.len() < 300 {
            eprintln!("killing the apiserver with {}/300 applied", now.len());
            break;
        }
        assert!(
            now.len() < 300,
            "the apply finished before the apiserver could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL, 3 s without an apiserver, then the same apiserver again (etcd keeps the state).
    restart_component("kube-apiserver", &["--kill", "--down-for", "3"]);
    converged(api, &ns.name, &v1, &v1_names, &process).await;
    // The reconciler's watches came back too: a new revision is picked up (how fast is
    // disruptive_watches_reconnect_within_seconds_after_an_apiserver_outage's business).
    let v2_names = names("a", 0..5);
    let v2 = publish(source, '2', &cms(&ns.name, &v2_names));
    converged(api, &ns.name, &v2, &v2_names, &process).await;
}

/// A kubeconfig with the token of ServiceAccount `nobody` of `ns`, which no RBAC rule grants
/// anything: every list and watch of the reconciler is Forbidden, forever — for its caches the
/// same as a cluster without our CRDs (404), which cannot be had next to the other tests.
fn unprivileged_kubeconfig(ns: &str, dir: &Path) -> PathBuf {
    kubectl_ok(&["-n", ns, "create", "serviceaccount", "nobody"], None);
    let token = kubectl_ok(
        &["-n", ns, "create", "token", "nobody", "--duration=1h"],
        None,
    );
    let admin = std::fs::read_to_string(gitops_conformance::kubeconfig()).expect("kubeconfig");
    let admin: serde_json::Value =
        gitops_reconciler::yaml::from_str(&admin).expect("kubeconfig is YAML");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"].clone()}],
        "users": [{"name": "nobody", "user": {"token": token.trim()}}],
        "contexts": [{"name": "nobody", "context": {"cluster": "c", "user": "nobody"}}],
        "current-context": "nobody",
    });
    let path = dir.join("nobody.kubeconfig");
    std::fs::write(
        &path,
        gitops_reconciler::yaml::to_string(&config).expect("serialisable"),
    )
    .expect("write kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn sigterm_ends_a_reconciler_that_could_never_list_its_objects() {
    let ns = TestNamespace::new("ksf-term");
    let storage =
        tempfile_dir::Dir(std::env::temp_dir().join(format!("gitops-faults-{}", ns.name)));
    std::fs::create_dir_all(&storage.0).expect("storage dir");
    let kubeconfig = unprivileged_kubeconfig(&ns.name, &storage.0);
    let mut process = ReconcilerProcess::start_as(&ns.name, &storage.0, "1", &[], &kubeconfig);
    // Both controllers say why they cannot start, naming the resource and the cause.
    eventually(
        T,
        "the forbidden lists to be logged",
        || {
            let log = process.log();
            [
                "cannot list or watch kustomizations.kubectl-gitops.io: forbidden",
                "cannot list or watch gitrepositories.kubectl-gitops.io: forbidden",
            ]
            .iter()
            .all(|line| log.contains(line))
            .then_some(())
        },
        || process.log_tail(),
    )
    .await;
    // Long enough for the backoff to reach its cap (0.25 s doubling to 2.5 s, jitter up to as
    // much again): about 6 attempts per watch in these 8 s, 4 watches; a retry loop without
    // backoff would log thousands of lines.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let failures = process
        .log()
        .lines()
        .filter(|l| l.contains("cannot list or watch"))
        .count();
    assert!(
        (4..=48).contains(&failures),
        "{failures} failure lines in about 9 s: expected one per watch and backoff step:\n{}",
        process.log_tail()
    );
    let status = process.terminate(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "the reconciler did not exit within 5 s of SIGTERM; log:\n{}",
            process.log_tail()
        )
    });
    assert!(status.success(), "{status}; log:\n{}", process.log_tail());
    let log = process.log();
    assert!(
        log.contains("stopping before kustomizations.kubectl-gitops.io could ever be listed"),
        "{}",
        process.log_tail()
    );
    assert!(log.contains("stopped"), "{}", process.log_tail());
}

/// Disrupts the whole cluster: run alone. The bound: a watch that failed during the outage
/// retries at most 5 s later (0.25 s doubling to 2.5 s, jitter up to as much again), so
/// within 5 s of the apiserver being ready again the watch is back; the reconcile itself
/// (nothing to write) takes well under a second; 10 s leaves room for a busy machine.
/// kube-runtime's default backoff (0.8 s doubling to 30 s, same jitter, and a second one on
/// the controller's trigger stream) usually misses it: after 20 s of failures its next step
/// is 12.8–25.6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn disruptive_watches_reconnect_within_seconds_after_an_apiserver_outage() {
    let setup = Setup::new("ksf-outage").await;
    let (ns, shard, storage, api, source) = (
        &setup.ns,
        &setup.ns.name,
        &setup.storage,
        &setup.api,
        &setup.source,
    );
    let v1_names = names("a", 0..3);
    let v1 = publish(source, '1', &cms(&ns.name, &v1_names));
    let process = ReconcilerProcess::start(shard, &storage.0, "1", &[]);
    // A long interval: only a watch event can make it reconcile again within the bound.
    ns.create(&kustomization(
        "app",
        shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  path: ./app\n  prune: true\n  interval: 1h\n  retryInterval: 1h\n  timeout: 30s\n",
    ));
    converged(api, &ns.name, &v1, &v1_names, &process).await;

    // 20 s without an apiserver (SIGKILL, then the same apiserver again; etcd keeps the state).
    restart_component("kube-apiserver", &["--kill", "--down-for", "20"]);
    let ready_at = std::time::Instant::now();
    let requested = format!("after-outage-{}", std::process::id());
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "--overwrite",
            "kustomizations.kubectl-gitops.io",
            "app",
            &format!("kubectl-gitops.io/reconcile-requested-at={requested}"),
        ],
        None,
    );
    eventually(
        Duration::from_secs(90),
        "the reconcile request to be handled",
        || {
            (ks_status(&ns.name, "app")["lastHandledReconcileAt"] == requested.as_str())
                .then_some(())
        },
        || process.log_tail(),
    )
    .await;
    let took = ready_at.elapsed();
    eprintln!("reconcile request handled {took:?} after the apiserver was ready");
    assert!(
        took <= Duration::from_secs(10),
        "handled {took:?} after the apiserver was ready again (bound 10 s); log:\n{}",
        process.log_tail()
    );
    assert!(
        process.log().contains("works again"),
        "the watches' recovery is logged:\n{}",
        process.log_tail()
    );
}

/// `kubectl gitops ARGS`, which must succeed, run in process on a thread of its own (it starts
/// its own runtime, which a test's runtime thread may not).
fn cli(args: &[&str]) -> cli_support::Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_support::gitops(&args).expect(0)
    })
    .join()
    .expect("kubectl gitops")
}

/// The reconcilers `install --shard a,b` runs (their `--watch-label-selector`s, taken from the
/// exported manifests), each narrowed to this test's objects: every Kustomization is reconciled
/// by exactly one of them, the one of its shard label; one labelled with a shard nobody runs
/// and unlabelled ones by the main reconciler. `get -o wide` names each one's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn the_reconcilers_of_a_sharded_install_reconcile_every_kustomization_once() {
    let setup = Setup::new("ksf-shards").await;
    let (ns, storage, source) = (&setup.ns, &setup.storage, &setup.source);
    let export = cli(&["install", "--export", "--shard", "a,b"]);
    let manifests: Vec<serde_json::Value> =
        gitops_reconciler::yaml::from_str_multi(&export.stdout).expect("the exported YAML");
    let selectors: Vec<(String, String)> = manifests
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|d| {
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let selector = d["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|a| a.as_str()?.strip_prefix("--watch-label-selector="))
                .unwrap_or_else(|| panic!("{name} has no --watch-label-selector"))
                .to_owned();
            (name, selector)
        })
        .collect();
    let deployments: Vec<&str> = selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        deployments,
        [
            "gitops-reconciler",
            "gitops-reconciler-a",
            "gitops-reconciler-b"
        ]
    );
    let processes: Vec<(String, ReconcilerProcess)> = selectors
        .iter()
        .map(|(name, selector)| {
            let narrowed = format!("conformance-shard={},{selector}", ns.name);
            let process = ReconcilerProcess::start_selecting(
                &narrowed,
                &storage.0,
                name,
                &[],
                &gitops_conformance::kubeconfig(),
            );
            (name.clone(), process)
        })
        .collect();

    let revision = publish(source, '1', &cms(&ns.name, &names("cm", 0..1)));
    // (Kustomization, its shard label, the reconciler that must own it)
    let mut owners: Vec<(String, Option<&str>, &str)> = Vec::new();
    for i in 0..3 {
        owners.push((format!("main-{i}"), None, "gitops-reconciler"));
        owners.push((format!("a-{i}"), Some("a"), "gitops-reconciler-a"));
        owners.push((format!("b-{i}"), Some("b"), "gitops-reconciler-b"));
    }
    owners.push(("nobodys".into(), Some("c"), "gitops-reconciler"));
    for (name, shard, _) in &owners {
        let shard_label = shard
            .map(|s| format!(", sharding.kubectl-gitops.io/key: {s}"))
            .unwrap_or_default();
        ns.create(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata:\n  name: {name}\n  labels: {{conformance-shard: {}{shard_label}}}\nspec:\n  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./app\n  prune: true\n  namePrefix: {name}-\n  interval: 10m\n  retryInterval: 2s\n",
            ns.name
        ));
    }
    let logs = || {
        processes
            .iter()
            .map(|(name, p)| format!("--- {name}\n{}", p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    eventually(
        T,
        "every Kustomization Ready",
        || {
            owners
                .iter()
                .all(|(name, _, _)| {
                    matches!(ready(&ns.name, name), Some((s, _, m))
                        if s == "True" && m == format!("Applied revision: {revision}"))
                })
                .then_some(())
        },
        logs,
    )
    .await;
    // Each applied its objects once, by the reconciler of its shard and by no other.
    for (name, _, owner) in &owners {
        let applied_by: Vec<&str> = processes
            .iter()
            .filter(|(_, p)| {
                p.log()
                    .lines()
                    .any(|l| l.contains(&format!(" name={name}}}")) && l.contains("applied"))
            })
            .map(|(process, _)| process.as_str())
            .collect();
        assert_eq!(
            applied_by,
            [*owner],
            "Kustomization {name}; logs:\n{}",
            logs()
        );
    }

    // `get -o wide` shows the shard each one belongs to.
    let listed = cli(&["get", "ks", "-n", &ns.name, "-o", "wide"]);
    let header: Vec<&str> = listed
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "SHARD")
        .unwrap_or_else(|| panic!("no SHARD column:\n{}", listed.stdout));
    for (name, shard, _) in &owners {
        let line = listed
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", listed.stdout));
        assert_eq!(
            line.split_whitespace().nth(column),
            Some(shard.unwrap_or("-")),
            "{line}"
        );
    }
}
