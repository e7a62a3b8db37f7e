//! The story from the seed, end to end with a real git server: the instavote app repository,
//! a GitRepository and a Kustomization `vote-dev` (path ./deploy/vote, targetNamespace, prune).
//! Pods of vote appear in the target namespace without any `kubectl create deploy`; a commit
//! changing `replicas` is followed; a removed file is pruned; a prune-disabled object is kept.

mod kustomization_support;

use std::time::Duration;

use gitops_conformance::git::{GitServer, ServerKind};
use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};
use kustomization_support::*;

const T: Duration = Duration::from_secs(90);

fn vote_deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: vote\n  labels: {{app: vote}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: vote}}\n  template:\n    metadata:\n      labels: {{app: vote}}\n    spec:\n      containers:\n      - name: vote\n        image: schooldevops/vote:v1\n        ports: [{{containerPort: 80}}]\n"
    )
}

const VOTE_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: vote\nspec:\n  type: NodePort\n  selector: {app: vote}\n  ports:\n  - port: 80\n    targetPort: 80\n    nodePort: 30000\n";
const REDIS_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: redis\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: redis}\n  template:\n    metadata:\n      labels: {app: redis}\n    spec:\n      containers:\n      - name: redis\n        image: redis:alpine\n        ports: [{containerPort: 6379}]\n";
const REDIS_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: redis\nspec:\n  selector: {app: redis}\n  ports: [{port: 6379}]\n";
const KEEP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vote-keep\n  annotations: {kubectl-gitops.io/prune: disabled}\ndata: {k: v}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn instavote_from_git_to_pods_and_back() {
    use gitops_reconciler::controller::gitrepository;
    use gitops_reconciler::source::SourceConfig;

    install_crds();
    let ns = TestNamespace::new("instavote");
    let target = TestNamespace::new("instavote-app");
    let server = GitServer::start(ServerKind::Http);
    let repo = server.repo("instavote");
    repo.commit(
        &[
            (
                "deploy/vote/vote-deployment.yaml",
                Some(&vote_deployment(2)),
            ),
            ("deploy/vote/vote-service.yaml", Some(VOTE_SERVICE)),
            ("deploy/vote/vote-keep.yaml", Some(KEEP)),
            ("deploy/redis/redis-deployment.yaml", Some(REDIS_DEPLOYMENT)),
            ("deploy/redis/redis-service.yaml", Some(REDIS_SERVICE)),
        ],
        "instavote",
    );

    let ctl = RunningController::start(&ns.name).await;
    let client = client().await;
    let source_task = tokio::spawn(gitrepository::run(
        client,
        SourceConfig {
            storage_path: ctl.storage.0.clone(),
            storage_adv_addr: "127.0.0.1:9".into(),
            ..Default::default()
        },
        Some(format!("conformance-shard={}", ctl.shard)),
        std::future::pending(),
    ));
    kubectl_ok(
        &["-n", &ns.name, "apply", "-f", "-"],
        Some(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: instavote\n  labels: {{conformance-shard: {}}}\nspec:\n  url: {}\n  insecure: true\n  interval: 2s\n  ref: {{branch: main}}\n",
            ctl.shard,
            server.url("instavote")
        )),
    );
    kubectl_ok(
        &["-n", &ns.name, "apply", "-f", "-"],
        Some(&kustomization(
            "vote-dev",
            &ctl.shard,
            &format!(
                "  sourceRef: {{kind: GitRepository, name: instavote}}\n  path: ./deploy/vote\n  interval: 1m\n  retryInterval: 2s\n  timeout: 60s\n  targetNamespace: {}\n  prune: true\n  wait: true\n",
                target.name
            ),
        )),
    );

    let message = eventually(
        T,
        "vote-dev Ready",
        || match ready(&ns.name, "vote-dev") {
            Some((s, _, m)) if s == "True" => Some(m),
            _ => None,
        },
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;
    assert!(
        message.starts_with("Applied revision: main@sha1:"),
        "{message}"
    );
    let deploy =
        get(&target.name, "deployment", "vote").expect("vote Deployment in the target namespace");
    assert_eq!(
        deploy["status"]["availableReplicas"], 2,
        "wait: true means available"
    );
    let pods = kubectl_ok(
        &[
            "-n",
            &target.name,
            "get",
            "pods",
            "-l",
            "app=vote",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(pods.lines().count(), 2, "{pods}");
    let svc = get(&target.name, "service", "vote").expect("vote Service");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
    assert!(
        get(&target.name, "deployment", "redis").is_none(),
        "only ./deploy/vote"
    );

    // A commit changing replicas is followed.
    let commit = repo.commit(
        &[(
            "deploy/vote/vote-deployment.yaml",
            Some(&vote_deployment(3)),
        )],
        "scale vote",
    );
    eventually(
        T,
        "3 replicas",
        || (get(&target.name, "deployment", "vote")?["spec"]["replicas"] == 3).then_some(()),
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;
    eventually(
        T,
        "new revision applied",
        || {
            let rev = ks_status(&ns.name, "vote-dev")["lastAppliedRevision"]
                .as_str()?
                .to_owned();
            rev.ends_with(&commit).then_some(())
        },
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;

    // Removed files: the Service is pruned, the prune-disabled ConfigMap is kept.
    repo.commit(
        &[
            ("deploy/vote/vote-service.yaml", None),
            ("deploy/vote/vote-keep.yaml", None),
        ],
        "drop service",
    );
    eventually(
        T,
        "vote Service pruned",
        || get(&target.name, "service", "vote").is_none().then_some(()),
        || format!("{:?}", ready(&ns.name, "vote-dev")),
    )
    .await;
    assert!(get(&target.name, "configmap", "vote-keep").is_some());
    assert!(get(&target.name, "deployment", "vote").is_some());
    // Delete the GitRepository while its controller runs (it owns a finalizer).
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "delete",
            "gitrepositories.kubectl-gitops.io",
            "instavote",
            "--timeout=60s",
        ],
        None,
    );
    source_task.abort();
    drop(ctl);
}
