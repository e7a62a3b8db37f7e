//! `kubectl gitops build|diff kustomization NAME --path DIR` against a real apiserver: the
//! reconciler's build engine renders the local directory with the Kustomization's spec; diff
//! server-side dry-runs each object and exits 1 on differences (0 when in sync, 6 for a failed
//! build), masking Secret values.

mod cli_support;
mod kustomization_support;

use cli_support::*;
use gitops_conformance::{TestNamespace, install_crds};
use gitops_reconciler::api::Kustomization;
use gitops_reconciler::apply::{self, Resolver};
use gitops_reconciler::controller::kustomization::PolicyEngine;
use gitops_reconciler::controller::render::{self, Cluster, Lookups, RenderInput};

/// Renders `dir` for Kustomization vote-dev and applies it with the reconciler's own code.
fn apply_as_the_reconciler(namespace: &str, dir: &std::path::Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = kustomization_support::client().await;
        let api: kube::Api<Kustomization> = kube::Api::namespaced(client.clone(), namespace);
        let ks = api.get("vote-dev").await.unwrap();
        let resolver = Resolver::new();
        let input = RenderInput {
            kustomization: &ks,
            root: dir,
            path: Some(String::new()),
            revision: "",
            default_service_account: None,
            dry_run: false,
        };
        let lookups = Lookups {
            cluster: Some(Cluster {
                tenant: &client,
                admin: &client,
                resolver: &resolver,
                cluster_policies: None,
            }),
            ..Lookups::default()
        };
        let engine = PolicyEngine::on_first_use(Default::default());
        let rendered = render::render(&input, &lookups, &engine).await.unwrap();
        let opts =
            kustomization_support::options(kustomization_support::owner("vote-dev", namespace));
        apply::apply(&client, &resolver, &rendered.plan, &opts)
            .await
            .unwrap();
    });
}

fn write_app(dir: &std::path::Path, replicas: u32, password: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("kustomization.yaml"), "resources:\n- app.yaml\n").unwrap();
    std::fs::write(
        dir.join("app.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: vote}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: vote}}}}\n  template:\n    metadata: {{labels: {{app: vote}}}}\n    spec:\n      containers: [{{name: vote, image: schooldevops/vote:v1}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {password}}}\n"
        ),
    )
    .unwrap();
}

#[test]
#[ignore = "needs a cluster"]
fn diff_shows_changes_and_exits_0_when_in_sync() {
    install_crds();
    let ns = TestNamespace::new("cli-diff");
    let n = ns.name.as_str();
    let res = ns.create(&format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: vote-dev}}\nspec: {{sourceRef: {{kind: GitRepository, name: instavote}}, interval: 1m, path: ./deploy/vote, targetNamespace: {n}}}\n"
    ));
    assert!(res.success, "{}", res.stderr);
    let dir = std::env::temp_dir().join(format!("cli-diff-{}", std::process::id()));
    let d = dir.to_string_lossy().into_owned();
    write_app(&dir, 2, "hunter2");

    let run = gitops(&["build", "ks", "vote-dev", "-n", n, "--path", &d]).expect(0);
    assert!(
        run.stdout.contains("kind: Deployment") && run.stdout.contains(&format!("namespace: {n}")),
        "{}",
        run.stdout
    );

    // Nothing in the cluster yet: everything is created.
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &d]).expect(1);
    assert!(
        run.stdout
            .contains(&format!("► Deployment/{n}/vote created")),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("hunter2") && !run.stdout.contains("aHVudGVyMg=="),
        "a secret value was printed:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("*****"), "{}", run.stdout);

    // Apply exactly what the reconciler would (its render, its apply): in sync.
    apply_as_the_reconciler(n, &dir);
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &d]).expect(0);
    assert!(
        run.stderr.contains("no differences"),
        "{}{}",
        run.stdout,
        run.stderr
    );

    // A change in git shows as a unified diff of that field.
    write_app(&dir, 4, "hunter3");
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &d]).expect(1);
    assert!(
        run.stdout.contains("-  replicas: 2") && run.stdout.contains("+  replicas: 4"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("► Secret/{n}/db configured")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hunter3"), "{}", run.stdout);

    // spec.ignore: the reconciler keeps the live replicas, so diff shows no replicas change.
    gitops_conformance::kubectl_ok(
        &[
            "-n",
            n,
            "patch",
            "kustomizations.kubectl-gitops.io",
            "vote-dev",
            "--type=merge",
            "-p",
            r#"{"spec":{"ignore":[{"paths":["/spec/replicas"],"target":{"kind":"Deployment"}}]}}"#,
        ],
        None,
    );
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &d]).expect(1);
    assert!(!run.stdout.contains("+  replicas: 4"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("► Secret/{n}/db configured")),
        "{}",
        run.stdout
    );

    // Errors: no --path, unknown Kustomization, a broken build (diff: 6, build: 1).
    gitops(&["diff", "ks", "vote-dev", "-n", n]).expect(2);
    gitops(&["diff", "ks", "nope", "-n", n, "--path", &d]).expect(3);
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n- missing.yaml\n",
    )
    .unwrap();
    let run = gitops(&["diff", "ks", "vote-dev", "-n", n, "--path", &d]).expect(6);
    assert!(run.stderr.contains("missing.yaml"), "{}", run.stderr);
    let run = gitops(&["build", "ks", "vote-dev", "-n", n, "--path", &d]).expect(1);
    assert!(run.stderr.contains("missing.yaml"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
