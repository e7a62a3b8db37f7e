//! Living next to Flux: a cluster migrating from Flux has Flux's CRDs beside ours, and both
//! claim the words `kustomizations`, `kustomization`, `ks`, `gitrepositories`, `gitrepo`. With
//! Flux-group CRDs installed and Flux objects of the same names as ours in the same namespace,
//! `check --pre` warns about the shared words, and `create`, `get`, `reconcile`, `tree`,
//! completion, `delete`, `uninstall` and the suite's namespace clean-up act on our objects only:
//! Flux's keep their resourceVersion.
//!
//! Flux's own CRD files are not in this machine's Go module cache (the module proxy does not
//! serve the controllers' modules here), so the test declares CRDs with Flux's groups, kinds,
//! plural, singular and short names — what kubectl resolves words by — and an open schema.

mod cli_support;

use cli_support::gitops;
use gitops_conformance::{TestNamespace, install_crds, kubectl, kubectl_ok};

/// (group, kind, plural, singular, short names) of Flux's kinds that share words with ours.
const FLUX_KINDS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "kustomize.toolkit.fluxcd.io",
        "Kustomization",
        "kustomizations",
        "kustomization",
        "ks",
    ),
    (
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "gitrepositories",
        "gitrepository",
        "gitrepo",
    ),
];

fn flux_crds() -> String {
    FLUX_KINDS
        .iter()
        .map(|(group, kind, plural, singular, short)| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, shortNames: [{short}], categories: [flux]}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Our Kustomization `vote-dev`, as `kubectl get -o json` prints it.
fn our_kustomization(ns: &TestNamespace) -> gitops_conformance::KubectlResult {
    ns.kubectl(
        &[
            "get",
            "kustomizations.kubectl-gitops.io",
            "vote-dev",
            "-o",
            "json",
        ],
        None,
    )
}

/// `resourceVersion` and annotations of the Flux object `plural.group/name`.
fn flux_state(ns: &TestNamespace, resource: &str, name: &str) -> (String, String) {
    let out = ns.kubectl(&["get", resource, name, "-o", "json"], None);
    assert!(out.success, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    (
        value["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        value["metadata"]["annotations"].to_string(),
    )
}

const FLUX_KS: &str = "kustomizations.kustomize.toolkit.fluxcd.io";
const FLUX_REPO: &str = "gitrepositories.source.toolkit.fluxcd.io";

/// The tests of this file share Flux's CRDs: one at a time.
static FLUX_CRDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Our CRDs and Flux's, and a namespace holding Flux objects named like the ones the tests
/// create of ours.
fn with_flux() -> TestNamespace {
    install_crds();
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&flux_crds()));
    kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{FLUX_KS}"),
            &format!("crd/{FLUX_REPO}"),
        ],
        None,
    );
    let ns = TestNamespace::new("flux");
    let flux_objects = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: instavote}
spec: {url: 'https://example.com/flux/instavote.git', interval: 1m}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: vote-dev}
spec: {sourceRef: {kind: GitRepository, name: instavote}, path: ./flux, interval: 1m, prune: true}
";
    let created = ns.create(flux_objects);
    assert!(created.success, "{}", created.stderr);
    ns
}

/// The state of both Flux objects.
fn flux_states(ns: &TestNamespace) -> [(String, String); 2] {
    [
        flux_state(ns, FLUX_KS, "vote-dev"),
        flux_state(ns, FLUX_REPO, "instavote"),
    ]
}

/// Deletes the namespace (the suite's clean-up: Flux's objects go with it), then Flux's CRDs.
fn clean_up(ns: TestNamespace) {
    let name = ns.name.clone();
    drop(ns);
    let gone = kubectl(
        &[
            "wait",
            "--for=delete",
            &format!("namespace/{name}"),
            "--timeout=60s",
        ],
        None,
    );
    assert!(gone.success, "{}", gone.stderr);
    kubectl_ok(
        &["delete", "crd", FLUX_KS, FLUX_REPO, "--ignore-not-found"],
        None,
    );
}

#[test]
#[ignore = "needs a cluster (GITOPS_TEST_KUBECONFIG)"]
fn the_cli_acts_on_our_kinds_only_next_to_fluxs() {
    let _one_at_a_time = FLUX_CRDS.lock().unwrap_or_else(|e| e.into_inner());
    let ns = with_flux();
    let before = flux_states(&ns);

    let check = gitops(&["check", "--pre", "-n", &ns.name]);
    assert!(
        check.stderr.contains(
            "kustomizations.kustomize.toolkit.fluxcd.io also claims 'ks', 'kustomization', 'kustomizations'"
        ) && check.stderr.contains("use kustomizations.kubectl-gitops.io with kubectl"),
        "no warning about Flux's Kustomization:\n{}",
        check.stderr
    );
    assert!(
        check
            .stderr
            .contains("gitrepositories.source.toolkit.fluxcd.io also claims"),
        "{}",
        check.stderr
    );

    // No reconciler runs here: `create` applies, then its wait times out (exit 5).
    gitops(&[
        "create",
        "source",
        "git",
        "instavote",
        "-n",
        &ns.name,
        "--url",
        "https://example.com/ours/instavote.git",
        "--branch",
        "main",
        "--timeout",
        "2s",
    ])
    .expect(5);
    gitops(&[
        "create",
        "kustomization",
        "vote-dev",
        "-n",
        &ns.name,
        "--source",
        "instavote",
        "--path",
        "./deploy/vote",
        "--prune",
        "--timeout",
        "2s",
    ])
    .expect(5);
    let ours = our_kustomization(&ns);
    assert!(
        ours.success,
        "our Kustomization was not created: {}",
        ours.stderr
    );
    assert!(ours.stdout.contains("./deploy/vote"), "{}", ours.stdout);

    let names = gitops(&["get", "all", "-n", &ns.name, "-o", "name"]).expect(0);
    assert_eq!(
        names.stdout,
        "gitrepository.kubectl-gitops.io/instavote\nkustomization.kubectl-gitops.io/vote-dev\n"
    );
    let listed = gitops(&["get", "ks", "-n", &ns.name, "-o", "json"]).expect(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(
        listed["items"][0]["apiVersion"],
        "kubectl-gitops.io/v1alpha1"
    );

    // No reconciler runs here: objects and requests are written, the waits time out (exit 5).
    gitops(&[
        "reconcile",
        "ks",
        "vote-dev",
        "-n",
        &ns.name,
        "--timeout",
        "2s",
    ])
    .expect(5);
    let ours = our_kustomization(&ns);
    assert!(
        ours.stdout
            .contains("kubectl-gitops.io/reconcile-requested-at"),
        "the reconcile request is not on our object: {}",
        ours.stdout
    );
    gitops(&["tree", "ks", "vote-dev", "-n", &ns.name]).expect(0);

    // Completion lists our names, from our kind.
    let kubeconfig = gitops_conformance::kubeconfig();
    let completed = cli_support::gitops_raw(&[
        "kubectl_complete-gitops".into(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into_owned(),
        "-n".into(),
        ns.name.clone(),
        "reconcile".into(),
        "ks".into(),
        "vo".into(),
    ]);
    assert_eq!(completed.stdout, "vote-dev\n:4\n", "{}", completed.stderr);

    gitops(&["delete", "ks", "vote-dev", "-n", &ns.name, "-s"]).expect(0);
    gitops(&["delete", "source", "git", "instavote", "-n", &ns.name, "-s"]).expect(0);
    assert!(
        !ns.kubectl(
            &["get", "kustomizations.kubectl-gitops.io", "vote-dev"],
            None
        )
        .success,
        "ours is deleted"
    );
    assert_eq!(before, flux_states(&ns), "a Flux object was touched");
    clean_up(ns);
    // Our CRDs stay.
    kubectl_ok(&["get", "crd", "kustomizations.kubectl-gitops.io"], None);
}

/// `uninstall` removes our CRDs and objects, cluster-wide: it runs with the disruptive tests,
/// alone, and installs our CRDs again at the end.
#[test]
#[ignore = "needs a cluster (GITOPS_TEST_KUBECONFIG); removes our CRDs for a while"]
fn disruptive_uninstall_next_to_flux_leaves_fluxs_objects() {
    let _one_at_a_time = FLUX_CRDS.lock().unwrap_or_else(|e| e.into_inner());
    let ns = with_flux();
    let ours = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1
kind: GitRepository
metadata: {{name: instavote, namespace: {}}}
spec: {{url: 'https://example.com/ours/instavote.git', interval: 1m}}
",
        ns.name
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&ours));
    let before = flux_states(&ns);

    let uninstall = gitops(&["uninstall", "-s", "--keep-namespace", "-n", &ns.name]).expect(0);
    assert!(
        uninstall.stderr.contains("uninstall finished"),
        "{}",
        uninstall.stderr
    );
    kubectl_ok(
        &[
            "wait",
            "--for=delete",
            "--timeout=120s",
            "crd/gitrepositories.kubectl-gitops.io",
            "crd/kustomizations.kubectl-gitops.io",
            "crd/clusterpolicies.kubectl-gitops.io",
        ],
        None,
    );
    // Flux's CRDs and objects are all there, untouched.
    assert_eq!(before, flux_states(&ns), "a Flux object was touched");
    kubectl_ok(&["get", "crd", FLUX_KS, FLUX_REPO], None);

    clean_up(ns);
    install_crds();
}
