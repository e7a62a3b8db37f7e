//! The reconciler's install manifests grant exactly what it needs: the controller runs with the
//! token of the `gitops-reconciler` ServiceAccount (from the TokenRequest API, the way a pod
//! gets it) and nothing else, reconciles a Kustomization end to end, impersonates a tenant, and
//! holds its leader Lease. A missing RBAC rule fails this test.

mod kustomization_support;

use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds, kubectl_ok, repo_root};
use gitops_reconciler::controller::lease::{LeaderElector, LeaseConfig};
use kustomization_support::*;

/// Applies namespace, ServiceAccount and RBAC of the install manifests (not the Deployment:
/// there is no image registry here) and returns a kubeconfig with the SA's token.
fn service_account_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let install = repo_root().join("reconciler/config/install");
    for file in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
        kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=gitops-conformance",
                "-f",
                &install.join(file).to_string_lossy(),
            ],
            None,
        );
    }
    let token = kubectl_ok(
        &[
            "-n",
            "gitops-system",
            "create",
            "token",
            "gitops-reconciler",
            "--duration=1h",
        ],
        None,
    );
    let admin = std::fs::read_to_string(gitops_conformance::kubeconfig()).unwrap();
    let admin: serde_json::Value = gitops_reconciler::yaml::from_str(&admin).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, gitops_reconciler::yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn the_install_manifests_rbac_is_enough_to_reconcile() {
    install_crds();
    let ns = TestNamespace::new("ksc-rbac");
    let dir = std::env::temp_dir().join(format!("gitops-rbac-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = service_account_kubeconfig(&dir);
    let whoami = kubectl_ok(
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(
        whoami,
        "system:serviceaccount:gitops-system:gitops-reconciler"
    );

    let ctl = RunningController::start_as(&ns.name, &kubeconfig, |_| {}).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a, namespace: {ns}}}\ndata: {{k: v}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n",
        ns = ns.name
    );
    source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [m.yaml]\n"),
            ("app/m.yaml", &manifest),
        ],
    );
    kubectl_ok(
        &["-n", &ns.name, "create", "serviceaccount", "tenant"],
        None,
    );
    ns.grant_edit("tenant");
    // One Kustomization as the reconciler itself, one impersonating the tenant.
    for (name, extra) in [("own", ""), ("tenant", "  serviceAccountName: tenant\n")] {
        ns.create(&kustomization(
            name,
            &ctl.shard,
            &format!("  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./app\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  prune: true\n  wait: true\n{extra}"),
        ));
        let message = eventually(
            Duration::from_secs(60),
            &format!("{name} Ready"),
            || match ready(&ns.name, name) {
                Some((s, _, m)) if s == "True" => Some(m),
                _ => None,
            },
            || format!("{:?}", ready(&ns.name, name)),
        )
        .await;
        assert!(
            message.starts_with("Applied revision: main@sha1:"),
            "{message}"
        );
        // Deleting the first prunes (as the reconciler's SA) before the tenant applies the same
        // objects, which would otherwise be a conflict between two owners.
        if name == "own" {
            kubectl_ok(
                &[
                    "-n",
                    &ns.name,
                    "delete",
                    "kustomizations.kubectl-gitops.io",
                    "own",
                    "--timeout=30s",
                ],
                None,
            );
            assert!(
                get(&ns.name, "configmap", "a").is_none(),
                "deletion pruned as the SA"
            );
        }
    }
    // Events were recorded with the SA's rights.
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
    assert!(events.contains("ReconciliationSucceeded"), "{events}");

    // Leader election with the same identity: one holder at a time, released on shutdown.
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let lease = |identity: &str| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace: "gitops-system".into(),
                name: format!("conformance-{}", ns.name),
                identity: identity.into(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(1),
            },
        )
    };
    let (first, second) = (lease("first"), lease("second"));
    assert!(first.try_acquire_or_renew().await.expect("lease rights"));
    assert!(
        !second.try_acquire_or_renew().await.unwrap(),
        "held by first"
    );
    assert!(first.try_acquire_or_renew().await.unwrap(), "renewal");
    first.release().await;
    assert!(
        second.try_acquire_or_renew().await.unwrap(),
        "released lease taken over"
    );
    second.release().await;
    kubectl_ok(
        &[
            "-n",
            "gitops-system",
            "delete",
            "lease",
            &format!("conformance-{}", ns.name),
        ],
        None,
    );
    drop(ctl);
    let _ = std::fs::remove_dir_all(&dir);
}
