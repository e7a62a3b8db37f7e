//! The tenancy re-check after transforms uses the cluster's own discovery data: a tenant's
//! transform that adds an object of a cluster-scoped *custom* kind (a `ClusterIssuer` of a CRD
//! installed in the cluster, unknown to the reconciler's built-in table) is refused at the
//! policy stage, naming the policy and the object; nothing of the revision is applied and the
//! Kustomization is Stalled.

mod kustomization_support;

use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds, kubectl, kubectl_ok, repo_root};
use kustomization_support::*;

const CLUSTER_ISSUER_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusterissuers.cert-manager.io
spec:
  group: cert-manager.io
  scope: Cluster
  names: {kind: ClusterIssuer, plural: clusterissuers, singular: clusterissuer, listKind: ClusterIssuerList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_tenant_transform_adding_a_cluster_scoped_custom_resource_applies_nothing() {
    install_crds();
    kubectl_ok(&["apply", "-f", "-"], Some(CLUSTER_ISSUER_CRD));
    kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/clusterissuers.cert-manager.io",
            "--timeout=30s",
        ],
        None,
    );
    let ns = TestNamespace::new("pol-tenancy");
    kubectl_ok(
        &["-n", &ns.name, "create", "serviceaccount", "tenant"],
        None,
    );
    ns.grant_edit("tenant");
    // The committed component and its digest from policies/dist/SHA256SUMS; kubectl puts a
    // binary file into binaryData.
    let dist = repo_root().join("policies/dist");
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).expect("SHA256SUMS");
    let sha256 = sums
        .lines()
        .find_map(|l| l.strip_suffix("  hostile.wasm"))
        .expect("hostile.wasm in SHA256SUMS")
        .to_owned();
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "create",
            "configmap",
            "hostile",
            &format!(
                "--from-file=policy.wasm={}",
                dist.join("hostile.wasm").display()
            ),
        ],
        None,
    );

    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let revision = source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [cm.yaml]\n"),
            (
                "app/cm.yaml",
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: {}\ndata: {{k: v}}\n",
                    ns.name
                ),
            ),
        ],
    );
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        &format!(
            "  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./app\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  prune: true\n  serviceAccountName: tenant\n  policies:\n  - name: breach\n    module: {{configMapRef: {{name: hostile, key: policy.wasm}}, sha256: {sha256}}}\n    config: {{mode: add-cluster-custom-object}}\n"
        ),
    ));
    let (_, _, message) = eventually(
        Duration::from_secs(60),
        "PolicyFailed",
        || ready(&ns.name, "app").filter(|(s, r, _)| s == "False" && r == "PolicyFailed"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(
        message.contains(
            "policy breach: transform output breaks tenancy: ClusterIssuer tenant-issuer: adds a cluster-scoped object"
        ),
        "{message}"
    );
    let status = ks_status(&ns.name, "app");
    let stalled = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Stalled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(stalled["status"], "True", "{status}");
    assert_eq!(status["lastAttemptedRevision"], revision.as_str());
    assert!(status["lastAppliedRevision"].is_null(), "{status}");
    let issuer = kubectl(&["get", "clusterissuer", "tenant-issuer"], None);
    assert!(!issuer.success, "the ClusterIssuer was created");
    assert!(
        get(&ns.name, "configmap", "a").is_none(),
        "nothing of the revision was applied"
    );
}
