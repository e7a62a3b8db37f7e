//! The Kustomization controller against a real apiserver: status, inventory, prune on a new
//! revision, prune-disabled objects kept, empty builds refused, dependsOn chains, health
//! timeouts naming the object, impersonation without rights, deletion with prune, drift on
//! request, adoption of the objects of a Kustomization deleted with `deletionPolicy: Orphan`,
//! objects known from the shared stores applied without reads.

mod kustomization_support;

use std::time::{Duration, Instant};

use gitops_conformance::{TestNamespace, install_crds, kubectl_ok, requests};
use kustomization_support::*;

const T: Duration = Duration::from_secs(60);

fn cm(name: &str, value: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra_meta}data: {{value: \"{value}\"}}\n"
    )
}

fn spec(source: &str, extra: &str) -> String {
    format!(
        "  sourceRef: {{kind: GitRepository, name: {source}}}\n  interval: 10m\n  retryInterval: 2s\n  timeout: 20s\n{extra}"
    )
}

fn ready_true(ns: &str, name: &str) -> Option<String> {
    match ready(ns, name) {
        Some((s, _, m)) if s == "True" => Some(m),
        _ => None,
    }
}

/// The message of the Kustomization's Reconciling condition.
fn reconciling_message(ns: &str, name: &str) -> Option<String> {
    ks_status(ns, name)["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Reconciling")?["message"]
        .as_str()
        .map(str::to_owned)
}

fn ready_false_with(ns: &str, name: &str, reason: &str) -> Option<String> {
    match ready(ns, name) {
        Some((s, r, m)) if s == "False" && r == reason => Some(m),
        _ => None,
    }
}

/// Creates Kustomization `name` (spec extra `extra`, source `repo`) and waits until it is
/// refused because the objects are managed by Kustomization `owner` of the same namespace.
async fn refused_as_managed_by(
    ns: &TestNamespace,
    shard: &str,
    name: &str,
    extra: &str,
    owner: &str,
) {
    ns.create(&kustomization(name, shard, &spec("repo", extra)));
    let message = eventually(
        T,
        &format!("{name} refused"),
        || ready_false_with(&ns.name, name, "ApplyFailed"),
        || format!("{:?}", ready(&ns.name, name)),
    )
    .await;
    assert!(
        message.contains(&format!("managed by Kustomization {}/{owner}", ns.name)),
        "{message}"
    );
}

/// The notes of every event in namespace `ns`, space-separated.
fn event_notes(ns: &str) -> String {
    kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={.items[*].note}",
        ],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn applies_prunes_on_new_revisions_and_keeps_prune_disabled() {
    install_crds();
    let ns = TestNamespace::new("ksc-prune");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let kustomize = "resources: [a.yaml, b.yaml, keep.yaml]\n";
    let v1 = source.publish(
        '1',
        &[
            ("app/kustomization.yaml", kustomize),
            ("app/a.yaml", &cm("a", "one", "")),
            ("app/b.yaml", &cm("b", "one", "")),
            (
                "app/keep.yaml",
                &cm(
                    "keep",
                    "one",
                    "  annotations: {kubectl-gitops.io/prune: disabled}\n",
                ),
            ),
        ],
    );
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        &spec("repo", "  path: ./app\n  prune: true\n"),
    ));
    // Objects without a namespace need one: the build output has none, so this fails first…
    let message = eventually(
        T,
        "ApplyFailed for objects without namespace",
        || ready_false_with(&ns.name, "app", "ApplyFailed"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(message.contains("without metadata.namespace"), "{message}");
    assert!(
        get(&ns.name, "configmap", "a").is_none(),
        "nothing may be applied"
    );

    // …and with the namespace set in the manifests it applies.
    let with_ns = |name: &str, value: &str, extra: &str| {
        cm(name, value, &format!("  namespace: {}\n{extra}", ns.name))
    };
    assert!(v1.ends_with(&"1".repeat(40)));
    let v1 = {
        source.publish(
            '2',
            &[
                ("app/kustomization.yaml", kustomize),
                ("app/a.yaml", &with_ns("a", "one", "")),
                ("app/b.yaml", &with_ns("b", "one", "")),
                (
                    "app/keep.yaml",
                    &with_ns(
                        "keep",
                        "one",
                        "  annotations: {kubectl-gitops.io/prune: disabled}\n",
                    ),
                ),
            ],
        )
    };
    let message = eventually(
        T,
        "Ready",
        || ready_true(&ns.name, "app"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert_eq!(message, format!("Applied revision: {v1}"));
    // The event of the first apply counts what it did.
    let events = event_notes(&ns.name);
    assert!(
        events.contains(&format!("Applied revision: {v1}: created 3")),
        "{events}"
    );
    let status = ks_status(&ns.name, "app");
    assert_eq!(status["lastAppliedRevision"], v1.as_str());
    assert_eq!(status["lastAttemptedRevision"], v1.as_str());
    let ids: Vec<&str> = status["inventory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let id = |n: &str| format!("{}_{n}__ConfigMap", ns.name);
    assert_eq!(ids, [id("a"), id("b"), id("keep")]);
    assert!(get(&ns.name, "configmap", "b").is_some());

    // v3: a changes, b and keep leave the build.
    let v3 = source.publish(
        '3',
        &[
            ("app/kustomization.yaml", "resources: [a.yaml]\n"),
            ("app/a.yaml", &with_ns("a", "two", "")),
        ],
    );
    eventually(
        T,
        "revision 3 applied",
        || (ks_status(&ns.name, "app")["lastAppliedRevision"] == v3.as_str()).then_some(()),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert_eq!(
        get(&ns.name, "configmap", "a").unwrap()["data"]["value"],
        "two"
    );
    assert!(get(&ns.name, "configmap", "b").is_none(), "b was pruned");
    assert!(
        get(&ns.name, "configmap", "keep").is_some(),
        "prune: disabled is kept"
    );
    let status = ks_status(&ns.name, "app");
    let ids: Vec<&str> = status["inventory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id("a")]);
    let events = event_notes(&ns.name);
    assert!(events.contains("configured 1, pruned 1"), "{events}");

    // v4 yields nothing: refused, nothing pruned, inventory kept.
    source.publish('4', &[("app/kustomization.yaml", "resources: []\n")]);
    let message = eventually(
        T,
        "empty build refused",
        || ready_false_with(&ns.name, "app", "PruneFailed"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(message.contains("yielded no objects"), "{message}");
    assert!(get(&ns.name, "configmap", "a").is_some());
    assert_eq!(
        ks_status(&ns.name, "app")["lastAppliedRevision"],
        v3.as_str()
    );

    // Deleting the Kustomization (prune: true, MirrorPrune) deletes what it applied.
    source.publish(
        '5',
        &[
            ("app/kustomization.yaml", "resources: [a.yaml]\n"),
            ("app/a.yaml", &with_ns("a", "two", "")),
        ],
    );
    eventually(
        T,
        "Ready again",
        || ready_true(&ns.name, "app"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "delete",
            "kustomizations.kubectl-gitops.io",
            "app",
            "--timeout=30s",
        ],
        None,
    );
    assert!(
        get(&ns.name, "configmap", "a").is_none(),
        "deletion pruned a"
    );
    assert!(get(&ns.name, "configmap", "keep").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn depends_on_chain_of_three_and_health_timeout() {
    install_crds();
    let ns = TestNamespace::new("ksc-deps");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let deploy = |name: &str, node_selector: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{node_selector}      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n",
            ns = ns.name
        )
    };
    source.publish(
        '1',
        &[
            ("a/kustomization.yaml", "resources: [d.yaml]\n"),
            ("a/d.yaml", &deploy("a", "")),
            ("b/kustomization.yaml", "resources: [d.yaml]\n"),
            ("b/d.yaml", &deploy("b", "")),
            ("c/kustomization.yaml", "resources: [d.yaml]\n"),
            ("c/d.yaml", &deploy("c", "")),
            ("stuck/kustomization.yaml", "resources: [d.yaml]\n"),
            (
                "stuck/d.yaml",
                &deploy("stuck", "      nodeSelector: {no-such-node: 'true'}\n"),
            ),
        ],
    );
    // Created in reverse order: c waits for b waits for a.
    for (name, deps) in [("c", "[{name: b}]"), ("b", "[{name: a}]"), ("a", "[]")] {
        ns.create(&kustomization(
            name,
            &ctl.shard,
            &spec(
                "repo",
                &format!("  path: ./{name}\n  wait: true\n  dependsOn: {deps}\n"),
            ),
        ));
    }
    ns.create(&kustomization(
        "stuck",
        &ctl.shard,
        &spec("repo", "  path: ./stuck\n  wait: true\n  timeout: 3s\n"),
    ));
    for name in ["a", "b", "c"] {
        eventually(
            T,
            &format!("{name} Ready"),
            || ready_true(&ns.name, name),
            || format!("{:?}", ready(&ns.name, name)),
        )
        .await;
    }
    let transition = |name: &str| {
        ks_status(&ns.name, name)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["lastTransitionTime"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(transition("a") <= transition("b") && transition("b") <= transition("c"));
    // While a dependency was not ready, the dependant said so (recorded in its events).
    let events = kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    );
    assert!(events.contains("DependencyNotReady"), "{events}");

    let message = eventually(
        T,
        "health check failure",
        || ready_false_with(&ns.name, "stuck", "HealthCheckFailed"),
        || format!("{:?}", ready(&ns.name, "stuck")),
    )
    .await;
    assert!(
        message.contains(&format!(
            "Deployment {}/stuck: 0/1 replicas available",
            ns.name
        )),
        "{message}"
    );
    let healthy = ks_status(&ns.name, "stuck")["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Healthy")
        .cloned()
        .unwrap();
    assert_eq!(healthy["status"], "False");
    // While it waits (again, after each retry), Reconciling says which stage it is in.
    let reconciling = || reconciling_message(&ns.name, "stuck");
    eventually(
        T,
        "Reconciling naming the health stage",
        || reconciling().filter(|m| m.starts_with("waiting for the health checks of revision")),
        || format!("{:?}", reconciling()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn impersonated_service_account_without_rights_writes_nothing() {
    install_crds();
    let ns = TestNamespace::new("ksc-sa");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    ns.kubectl(&["create", "serviceaccount", "tenant"], None);
    source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [a.yaml]\n"),
            (
                "app/a.yaml",
                &cm("a", "one", &format!("  namespace: {}\n", ns.name)),
            ),
        ],
    );
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        &spec("repo", "  path: ./app\n  serviceAccountName: tenant\n"),
    ));
    let message = eventually(
        T,
        "Forbidden",
        || ready_false_with(&ns.name, "app", "ApplyFailed"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(
        message.contains("forbidden")
            && message.contains(&format!("system:serviceaccount:{}:tenant", ns.name)),
        "{message}"
    );
    assert!(get(&ns.name, "configmap", "a").is_none());
    // Granting the ServiceAccount the rights makes the same Kustomization succeed.
    ns.grant_edit("tenant");
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "kustomizations.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=now1",
            "--overwrite",
        ],
        None,
    );
    eventually(
        T,
        "Ready",
        || ready_true(&ns.name, "app"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert_eq!(ks_status(&ns.name, "app")["lastHandledReconcileAt"], "now1");
    let managers = ns
        .kubectl(
            &[
                "get",
                "configmap",
                "a",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
                "--show-managed-fields",
            ],
            None,
        )
        .stdout;
    assert_eq!(managers, "gitops-reconciler");

    // Drift: a kubectl edit is reverted on the next reconcile (here: requested at once).
    ns.kubectl(
        &[
            "patch",
            "configmap",
            "a",
            "-p",
            r#"{"data":{"value":"hacked"}}"#,
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "kustomizations.kubectl-gitops.io",
            "app",
            "kubectl-gitops.io/reconcile-requested-at=now2",
            "--overwrite",
        ],
        None,
    );
    eventually(
        T,
        "drift reverted",
        || (get(&ns.name, "configmap", "a")?["data"]["value"] == "one").then_some(()),
        || format!("{:?}", get(&ns.name, "configmap", "a")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn objects_orphaned_by_a_deleted_kustomization_are_adopted() {
    install_crds();
    let ns = TestNamespace::new("ksc-adopt");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let with_ns = |name: &str| cm(name, "one", &format!("  namespace: {}\n", ns.name));
    source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [a.yaml, b.yaml]\n"),
            ("app/a.yaml", &with_ns("a")),
            ("app/b.yaml", &with_ns("b")),
        ],
    );
    let owner_of = |name: &str| {
        get(&ns.name, "configmap", name).map(|cm| {
            cm["metadata"]["labels"]["kubectl-gitops.io/name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    };
    ns.create(&kustomization(
        "first",
        &ctl.shard,
        &spec(
            "repo",
            "  path: ./app\n  prune: true\n  deletionPolicy: Orphan\n",
        ),
    ));
    eventually(
        T,
        "first Ready",
        || ready_true(&ns.name, "first"),
        || format!("{:?}", ready(&ns.name, "first")),
    )
    .await;
    assert_eq!(owner_of("a").as_deref(), Some("first"));

    // While first exists, second is refused the objects.
    refused_as_managed_by(
        &ns,
        &ctl.shard,
        "second",
        "  path: ./app\n  prune: true\n",
        "first",
    )
    .await;

    // first goes with deletionPolicy: Orphan: its objects stay, still labelled for it…
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "delete",
            "kustomizations.kubectl-gitops.io",
            "first",
            "--timeout=30s",
        ],
        None,
    );
    assert!(get(&ns.name, "kustomizations.kubectl-gitops.io", "first").is_none());
    // …and second, retrying, adopts them: Ready, the labels name it, the event says so.
    eventually(
        T,
        "second Ready",
        || ready_true(&ns.name, "second"),
        || format!("{:?}", ready(&ns.name, "second")),
    )
    .await;
    assert_eq!(owner_of("a").as_deref(), Some("second"));
    assert_eq!(owner_of("b").as_deref(), Some("second"));
    let cm = get(&ns.name, "configmap", "a").expect("a kept");
    assert_eq!(
        cm["metadata"]["labels"]["kubectl-gitops.io/namespace"],
        ns.name.as_str()
    );
    let events = event_notes(&ns.name);
    assert!(events.contains("adopted 2"), "{events}");
    let ids: Vec<String> = ks_status(&ns.name, "second")["inventory"]["entries"]
        .as_array()
        .expect("an inventory")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        ids,
        [
            format!("{}_a__ConfigMap", ns.name),
            format!("{}_b__ConfigMap", ns.name)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_kustomization_that_never_gets_healthy_does_not_delay_the_others() {
    install_crds();
    let ns = TestNamespace::new("ksc-starve");
    // One slot: a health wait that held it would block every other Kustomization.
    let ctl = RunningController::start_with(&ns.name, |c| c.concurrent = 1).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let kustomize = format!("namespace: {}\nresources: [o.yaml]\n", ns.name);
    let stuck = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec:\n      nodeSelector: {no-such-node: 'true'}\n      containers: [{name: c, image: registry.k8s.io/pause:3.10}]\n";
    source.publish(
        '1',
        &[
            ("alone/kustomization.yaml", &kustomize),
            ("alone/o.yaml", &cm("alone", "1", "")),
            ("beside/kustomization.yaml", &kustomize),
            ("beside/o.yaml", &cm("beside", "1", "")),
            ("stuck/kustomization.yaml", &kustomize),
            ("stuck/o.yaml", stuck),
        ],
    );
    let time_to_ready = |name: &'static str| {
        let ns = &ns;
        let shard = ctl.shard.clone();
        async move {
            let started = Instant::now();
            ns.create(&kustomization(
                name,
                &shard,
                &spec("repo", &format!("  path: ./{name}\n  wait: true\n")),
            ));
            eventually(
                T,
                &format!("{name} Ready"),
                || ready_true(&ns.name, name),
                || format!("{:?}", ready(&ns.name, name)),
            )
            .await;
            started.elapsed()
        }
    };
    let alone = time_to_ready("alone").await;

    // A 5-minute health timeout that never ends well, then another Kustomization.
    ns.create(&kustomization(
        "stuck",
        &ctl.shard,
        "  sourceRef: {kind: GitRepository, name: repo}\n  interval: 10m\n  timeout: 5m\n  path: ./stuck\n  wait: true\n",
    ));
    // Its first reconcile says it will wait for the health checks in the write of its pending
    // inventory; once its Deployment exists, the wait has begun (or begins at once).
    let reconciling = || reconciling_message(&ns.name, "stuck");
    eventually(
        T,
        "stuck waiting for its health checks",
        || {
            reconciling()
                .filter(|m| m.ends_with("then waiting for the health checks"))
                .filter(|_| get(&ns.name, "deployment", "stuck").is_some())
        },
        || format!("{:?}", reconciling()),
    )
    .await;
    let beside = time_to_ready("beside").await;
    println!("time to Ready: alone {alone:?}, beside a stuck health check {beside:?}");
    assert!(
        beside < alone + Duration::from_secs(10),
        "alone {alone:?}, beside the stuck one {beside:?}"
    );
    assert!(
        ready_true(&ns.name, "stuck").is_none(),
        "the stuck one is still waiting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn objects_known_from_the_shared_stores_are_not_read_and_changes_are_still_seen() {
    install_crds();
    let ns = TestNamespace::new("ksc-known");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    // PodTemplates: a kind nothing else in the cluster reads one by one, so the apiserver's
    // GET counter of the kind counts this test's reads; healthy as soon as they exist.
    let template = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: PodTemplate\nmetadata: {{name: {name}, namespace: {}}}\ntemplate:\n  metadata: {{labels: {{app: {name}}}}}\n  spec:\n    containers: [{{name: c, image: '{image}'}}]\n",
            ns.name
        )
    };
    let files = |names: &[&str]| -> Vec<(String, String)> {
        let mut files = vec![(
            "app/kustomization.yaml".to_owned(),
            format!(
                "resources: [{}]\n",
                names
                    .iter()
                    .map(|n| format!("{n}.yaml"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )];
        for n in names {
            files.push((format!("app/{n}.yaml"), template(n, "busybox:1.36")));
        }
        files
    };
    let publish = |byte: char, names: &[&str]| {
        let files = files(names);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        source.publish(byte, &refs)
    };
    let applied = |revision: &str| {
        let revision = revision.to_owned();
        let ns = ns.name.clone();
        move || {
            let status = ks_status(&ns, "app");
            (status["lastAppliedRevision"] == revision.as_str() && ready_true(&ns, "app").is_some())
                .then_some(())
        }
    };
    let request = |at: &str| {
        kubectl_ok(
            &[
                "-n",
                &ns.name,
                "annotate",
                "kustomizations.kubectl-gitops.io",
                "app",
                &format!("kubectl-gitops.io/reconcile-requested-at={at}"),
                "--overwrite",
            ],
            None,
        );
    };
    let handled = |at: &str| {
        let (at, ns) = (at.to_owned(), ns.name.clone());
        move || (ks_status(&ns, "app")["lastHandledReconcileAt"] == at.as_str()).then_some(())
    };

    // The first apply reads (no store of the kind runs yet); its health check starts one.
    let v1 = publish('1', &["a", "b"]);
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        &spec("repo", "  path: ./app\n  prune: true\n  wait: true\n"),
    ));
    eventually(T, "v1 applied", applied(&v1), || {
        format!("{:?}", ready(&ns.name, "app"))
    })
    .await;
    assert!(
        event_notes(&ns.name).contains(&format!("{v1}: created 2")),
        "{}",
        event_notes(&ns.name)
    );

    // An object that exists without owner labels, then a revision that adds it and a new one.
    let created = ns.kubectl(&["apply", "-f", "-"], Some(&template("c", "busybox:1.36")));
    assert!(created.success, "{}", created.stderr);
    let gets_before = requests("GET", "podtemplates");
    let v2 = publish('2', &["a", "b", "c", "d"]);
    eventually(T, "v2 applied", applied(&v2), || {
        format!("{:?}", ready(&ns.name, "app"))
    })
    .await;
    let gets = requests("GET", "podtemplates") - gets_before;
    // a and b unchanged since the reconciler wrote them, c and d claimed by nobody: no reads.
    assert_eq!(gets, 0.0, "GETs of PodTemplates during the second apply");
    // Whether c and d were created is read from the writes' answers: c existed.
    assert!(
        event_notes(&ns.name).contains(&format!("{v2}: created 1, configured 1")),
        "{}",
        event_notes(&ns.name)
    );
    let c = get(&ns.name, "podtemplate", "c").expect("c kept");
    assert_eq!(c["metadata"]["labels"]["kubectl-gitops.io/name"], "app");

    // Drift is still seen: the store's copy is not the version the reconciler verified.
    let patched = ns.kubectl(
        &[
            "patch",
            "podtemplate",
            "a",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/template/spec/containers/0/image","value":"busybox:drifted"}]"#,
        ],
        None,
    );
    assert!(patched.success, "{}", patched.stderr);
    request("drift");
    eventually(T, "drift handled", handled("drift"), || {
        format!("{:?}", ready(&ns.name, "app"))
    })
    .await;
    let a = get(&ns.name, "podtemplate", "a").expect("a kept");
    assert_eq!(
        a["template"]["spec"]["containers"][0]["image"], "busybox:1.36",
        "drift reverted"
    );

    // A second Kustomization claiming b is refused: b carries owner labels, so it is read.
    refused_as_managed_by(
        &ns,
        &ctl.shard,
        "other",
        "  path: ./app\n  wait: true\n",
        "app",
    )
    .await;
}
