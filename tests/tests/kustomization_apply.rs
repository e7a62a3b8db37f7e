//! The apply stage against a real apiserver: staged server-side apply with dry-run first,
//! unchanged objects not re-sent, drift reverted, conflicts refused (adopted only once the
//! owning Kustomization is gone), immutable fields, prune safety and watch-driven health.

mod kustomization_support;

use std::time::{Duration, Instant};

use gitops_conformance::{TestNamespace, kubectl_ok};
use gitops_reconciler::apply::{self, Action, ApplyError, HealthError, Resolver, inventory};
use kustomization_support::*;

/// Applies `manifest`, which must fail with exactly one object refused (`why`); the error's text.
async fn one_refusal(
    client: &kube::Client,
    resolver: &Resolver,
    manifest: &str,
    opts: &apply::ApplyOptions,
    why: &str,
) -> String {
    let err = plan_and_apply(client, resolver, manifest, opts)
        .await
        .expect_err(why);
    let message = err.to_string();
    assert!(
        matches!(err, ApplyError::DryRun(ref v) if v.len() == 1),
        "{why}: {message}"
    );
    message
}

fn app(ns: &str, replicas: u32, data: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{mode: "{data}"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: registry.k8s.io/pause:3.10}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"#
    )
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn applies_skips_unchanged_and_reverts_drift() {
    let ns = TestNamespace::new("ks-apply");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));

    let (plan, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 2, "a"), &opts)
        .await
        .expect("first apply");
    assert_eq!(changes.count(Action::Created), 3, "{changes:?}");
    assert_eq!(
        inventory::of(&plan.refs())
            .entries
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        [
            format!("{}_settings__ConfigMap", ns.name),
            format!("{}_web_apps_Deployment", ns.name),
            format!("{}_web__Service", ns.name),
        ]
    );
    let cm = get(&ns.name, "configmap", "settings").expect("created");
    assert_eq!(
        cm.pointer("/metadata/labels/kubectl-gitops.io~1name"),
        Some(&"app".into())
    );
    assert_eq!(
        cm.pointer("/metadata/labels/kubectl-gitops.io~1namespace"),
        Some(&ns.name.clone().into())
    );
    let with_fields: serde_json::Value = serde_json::from_str(
        &ns.kubectl(
            &[
                "get",
                "configmap",
                "settings",
                "-o",
                "json",
                "--show-managed-fields",
            ],
            None,
        )
        .stdout,
    )
    .unwrap();
    let managers: Vec<String> = with_fields["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields shown")
        .iter()
        .map(|m| m["manager"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(managers, ["gitops-reconciler"]);
    let rv = cm["metadata"]["resourceVersion"].clone();

    // Nothing changed: nothing is sent.
    let (_, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 2, "a"), &opts)
        .await
        .expect("second apply");
    assert_eq!(changes.count(Action::Unchanged), 3, "{changes:?}");
    assert!(!changes.wrote());
    assert_eq!(
        get(&ns.name, "configmap", "settings").unwrap()["metadata"]["resourceVersion"],
        rv
    );

    // A kubectl edit of a managed field is drift: reverted, and only that object is written.
    ns.kubectl(
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"mode":"hacked"}}"#,
        ],
        None,
    );
    ns.kubectl(&["scale", "deployment", "web", "--replicas=5"], None);
    let (_, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 2, "a"), &opts)
        .await
        .expect("drift apply");
    assert_eq!(changes.count(Action::Configured), 2, "{changes:?}");
    assert_eq!(changes.count(Action::Unchanged), 1, "{changes:?}");
    let cm = get(&ns.name, "configmap", "settings").unwrap();
    assert_eq!(cm["data"]["mode"], "a");
    let web = get(&ns.name, "deployment", "web").unwrap();
    assert_eq!(web["spec"]["replicas"], 2);

    // With a drift rule, replicas owned by someone else (an HPA) are not fought.
    let mut hpa_opts = opts.clone();
    hpa_opts.drift = apply::DriftRules::new(&[serde_json::from_value(serde_json::json!({
        "paths": ["/spec/replicas"], "target": {"kind": "Deployment"}
    }))
    .unwrap()])
    .unwrap();
    ns.kubectl(&["scale", "deployment", "web", "--replicas=4"], None);
    let (_, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 2, "a"), &hpa_opts)
        .await
        .expect("apply with drift rule");
    assert_eq!(changes.count(Action::Unchanged), 3, "{changes:?}");
    assert_eq!(
        get(&ns.name, "deployment", "web").unwrap()["spec"]["replicas"],
        4
    );
    // ...but a real change of the intent is still applied, without resetting replicas.
    let (_, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 2, "b"), &hpa_opts)
        .await
        .expect("apply new intent with drift rule");
    assert_eq!(changes.count(Action::Configured), 1, "{changes:?}");
    assert_eq!(
        get(&ns.name, "deployment", "web").unwrap()["spec"]["replicas"],
        4
    );
    assert_eq!(
        get(&ns.name, "configmap", "settings").unwrap()["data"]["mode"],
        "b"
    );
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_rejected_object_leaves_its_stage_untouched() {
    let ns = TestNamespace::new("ks-dryrun");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: broken, namespace: {ns}}}\nspec:\n  ports: [{{port: 99999}}]\n",
        app(&ns.name, 1, "a"),
        ns = ns.name
    );
    let err = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect_err("the invalid Service must fail the dry-run");
    let message = err.to_string();
    assert!(matches!(err, ApplyError::DryRun(_)), "{message}");
    assert!(
        message.contains(&format!("Service {}/broken", ns.name)) && message.contains("99999"),
        "{message}"
    );
    for (kind, name) in [
        ("configmap", "settings"),
        ("deployment", "web"),
        ("service", "web"),
    ] {
        assert!(
            get(&ns.name, kind, name).is_none(),
            "{kind}/{name} was written although the stage failed its dry-run"
        );
    }

    // With the other objects applied and unchanged, the broken Service is the stage's only
    // write: no dry-run is sent, and its refused write is reported the same way.
    plan_and_apply(&client, &resolver, &app(&ns.name, 1, "a"), &opts)
        .await
        .expect("apply the valid objects");
    let message = one_refusal(
        &client,
        &resolver,
        &manifest,
        &opts,
        "the invalid Service is refused",
    )
    .await;
    assert!(
        message.contains(&format!("Service {}/broken", ns.name)) && message.contains("99999"),
        "{message}"
    );
    assert!(get(&ns.name, "service", "broken").is_none());

    // In a stage of several writes, one object (the probe) is written first without a dry-run
    // and the others are dry-run: a refused object anywhere in the stage, probe or not, means
    // nothing of the stage is written, and the error names every refused object.
    let broken = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{port: 99999}}]\n",
            ns = ns.name
        )
    };
    for (label, manifest, refused) in [
        (
            "first",
            format!("{}---\n{}", broken("broken-a"), app(&ns.name, 2, "b")),
            vec!["broken-a"],
        ),
        (
            "last",
            format!("{}---\n{}", app(&ns.name, 2, "b"), broken("broken-z")),
            vec!["broken-z"],
        ),
        (
            "both ends",
            format!(
                "{}---\n{}---\n{}",
                broken("broken-a"),
                app(&ns.name, 2, "b"),
                broken("broken-z")
            ),
            vec!["broken-a", "broken-z"],
        ),
    ] {
        let err = plan_and_apply(&client, &resolver, &manifest, &opts)
            .await
            .expect_err("a stage with a refused object fails");
        let message = err.to_string();
        assert!(
            matches!(err, ApplyError::DryRun(ref v) if v.len() == refused.len()),
            "{label}: {message}"
        );
        for name in &refused {
            assert!(
                message.contains(&format!("Service {}/{name}", ns.name)),
                "{label}: {message}"
            );
            assert!(get(&ns.name, "service", name).is_none(), "{label}: {name}");
        }
        // The valid objects are still at their first version: nothing was written.
        let settings = get(&ns.name, "configmap", "settings").expect("applied before");
        assert_eq!(
            settings
                .pointer("/data/mode")
                .and_then(serde_json::Value::as_str),
            Some("a"),
            "{label}: {settings}"
        );
        let web = get(&ns.name, "deployment", "web").expect("applied before");
        assert_eq!(
            web.pointer("/spec/replicas")
                .and_then(serde_json::Value::as_u64),
            Some(1),
            "{label}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_crd_its_namespace_and_its_custom_resources_in_one_build() {
    let client = client().await;
    let resolver = Resolver::new();
    let suffix = std::process::id();
    let group = format!("t{suffix}.conformance.kubectl-gitops.io");
    let target = format!("gt-crd-{suffix}");
    let opts = options(owner("platform", "default"));
    let manifest = format!(
        r#"
apiVersion: {group}/v1
kind: Widget
metadata: {{name: w1, namespace: {target}}}
spec: {{size: 3}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {target}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{size: {{type: integer}}}}}}
"#
    );
    let result = plan_and_apply(&client, &resolver, &manifest, &opts).await;
    let (plan, changes) = result.expect("CRD + namespace + CR apply");
    assert_eq!(changes.count(Action::Created), 3, "{changes:?}");
    // Stage order: the CRD and the Namespace before the Widget.
    assert_eq!(plan.objects.last().unwrap().id.kind, "Widget");
    let widget = kubectl_ok(
        &[
            "-n",
            &target,
            "get",
            &format!("widgets.{group}"),
            "w1",
            "-o",
            "jsonpath={.spec.size}",
        ],
        None,
    );
    assert_eq!(widget, "3");
    // Prune everything (allowed here): CR first, then namespace and CRD.
    let outcome = apply::prune(&client, &resolver, &plan.refs(), &opts.owner).await;
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.deleted.len(), 3);
    assert_eq!(outcome.deleted[0].kind, "Widget");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn prune_deletes_only_what_is_still_ours() {
    let ns = TestNamespace::new("ks-prune");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    let cm = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\n{extra}data: {{k: v}}\n---\n",
            ns.name
        )
    };
    let old = format!(
        "{}{}{}{}",
        cm("keep", ""),
        cm("gone", ""),
        cm(
            "sticky",
            "  annotations: {kubectl-gitops.io/prune: disabled}\n"
        ),
        cm("adopted", "")
    );
    let (old_plan, _) = plan_and_apply(&client, &resolver, &old, &opts)
        .await
        .expect("apply");
    // Someone else takes "adopted" over (relabels it): it is not ours to delete any more.
    ns.kubectl(
        &[
            "label",
            "configmap",
            "adopted",
            "kubectl-gitops.io/name=other",
            "--overwrite",
        ],
        None,
    );
    let new_plan = apply::plan(&client, &resolver, objects(&cm("keep", "")), &opts.owner)
        .await
        .unwrap();
    let old_inventory = inventory::of(&old_plan.refs());
    let stale = inventory::stale(Some(&old_inventory), &new_plan.refs());
    assert_eq!(stale.len(), 3);
    let outcome = apply::prune(&client, &resolver, &stale, &opts.owner).await;
    assert_eq!(
        outcome
            .deleted
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["gone"]
    );
    assert_eq!(outcome.skipped.len(), 2, "{:?}", outcome.skipped);
    assert!(outcome.failed.is_empty());
    assert!(get(&ns.name, "configmap", "gone").is_none());
    assert!(get(&ns.name, "configmap", "keep").is_some());
    assert!(get(&ns.name, "configmap", "sticky").is_some());
    assert!(get(&ns.name, "configmap", "adopted").is_some());
    let remaining = inventory::without(
        &inventory::union(Some(&old_inventory), &new_plan.refs()),
        &outcome.removed(),
    );
    assert_eq!(remaining, inventory::of(&new_plan.refs()));
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn an_object_of_another_kustomization_is_a_conflict() {
    let ns = TestNamespace::new("ks-conflict");
    let client = client().await;
    let resolver = Resolver::new();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, namespace: {}}}\ndata: {{k: a}}\n",
        ns.name
    );
    plan_and_apply(
        &client,
        &resolver,
        &manifest,
        &options(owner("first", &ns.name)),
    )
    .await
    .expect("first owner");
    for _ in 0..2 {
        let err = plan_and_apply(
            &client,
            &resolver,
            &manifest.replace("k: a", "k: b"),
            &options(owner("second", &ns.name)),
        )
        .await
        .expect_err("second owner must be refused");
        assert!(
            err.to_string()
                .contains(&format!("is managed by Kustomization {}/first", ns.name)),
            "{err}"
        );
    }
    let cm = get(&ns.name, "configmap", "shared").unwrap();
    assert_eq!(
        cm["data"]["k"], "a",
        "no flapping: the first owner's value stays"
    );
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn an_object_of_a_kustomization_that_is_gone_is_adopted_not_while_it_exists() {
    gitops_conformance::install_crds();
    let ns = TestNamespace::new("ks-adopt");
    let client = client().await;
    let resolver = Resolver::new();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, namespace: {}}}\ndata: {{k: a}}\n",
        ns.name
    );
    plan_and_apply(
        &client,
        &resolver,
        &manifest,
        &options(owner("first", &ns.name)),
    )
    .await
    .expect("first owner");
    // Kustomization first exists (no controller reconciles it here), held by a finalizer.
    let created = ns.create(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata:\n  name: first\n  finalizers: [conformance.kubectl-gitops.io/hold]\nspec:\n  sourceRef: {kind: GitRepository, name: none}\n  interval: 1h\n  prune: false\n",
    );
    assert!(created.success, "{}", created.stderr);
    let mut second = options(owner("second", &ns.name));
    second.owner_lookup = Some(apply::OwnerLookup::new(client.clone()));
    let refused = |when: &'static str| {
        let (client, resolver, second) = (&client, &resolver, &second);
        let manifest = manifest.replace("k: a", "k: b");
        async move {
            let err = plan_and_apply(client, resolver, &manifest, second)
                .await
                .expect_err(when);
            assert!(matches!(err, ApplyError::Conflict { .. }), "{when}: {err}");
        }
    };
    refused("first exists: a conflict").await;
    // Being deleted is still existing.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "delete",
            "kustomizations.kubectl-gitops.io",
            "first",
            "--wait=false",
        ],
        None,
    );
    refused("first is being deleted: still a conflict").await;
    assert_eq!(
        get(&ns.name, "configmap", "shared").unwrap()["data"]["k"],
        "a"
    );
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "patch",
            "kustomizations.kubectl-gitops.io",
            "first",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&ns.name, "kustomizations.kubectl-gitops.io", "first").is_some() {
        assert!(
            Instant::now() < deadline,
            "Kustomization first was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Gone: adopted, labels rewritten, our content applied.
    let (_, changes) = plan_and_apply(
        &client,
        &resolver,
        &manifest.replace("k: a", "k: b"),
        &second,
    )
    .await
    .expect("adopted");
    assert_eq!(changes.count(Action::Adopted), 1, "{changes:?}");
    assert_eq!(changes.summary(), "adopted 1");
    let cm = get(&ns.name, "configmap", "shared").unwrap();
    assert_eq!(cm["data"]["k"], "b");
    assert_eq!(cm["metadata"]["labels"]["kubectl-gitops.io/name"], "second");
    // From now on it is ours: nothing to do.
    let (_, changes) = plan_and_apply(
        &client,
        &resolver,
        &manifest.replace("k: a", "k: b"),
        &second,
    )
    .await
    .expect("second apply");
    assert_eq!(changes.count(Action::Unchanged), 1, "{changes:?}");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn immutable_field_changes_need_force() {
    let ns = TestNamespace::new("ks-immutable");
    let client = client().await;
    let resolver = Resolver::new();
    let mut opts = options(owner("app", &ns.name));
    let job = |image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate, namespace: {}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: {image}}}]\n",
            ns.name
        )
    };
    plan_and_apply(&client, &resolver, &job("busybox:1"), &opts)
        .await
        .expect("create job");
    let err = plan_and_apply(&client, &resolver, &job("busybox:2"), &opts)
        .await
        .expect_err("changing a Job's template is refused without force");
    let message = err.to_string();
    assert!(matches!(err, ApplyError::Immutable { .. }), "{message}");
    assert!(
        message.contains(&format!("Job {}/migrate", ns.name)) && message.contains("spec.template"),
        "{message}"
    );
    opts.force = true;
    let (_, changes) = plan_and_apply(&client, &resolver, &job("busybox:2"), &opts)
        .await
        .expect("force recreates");
    assert_eq!(changes.count(Action::Recreated), 1, "{changes:?}");
    let live = get(&ns.name, "job", "migrate").unwrap();
    assert_eq!(
        live.pointer("/spec/template/spec/containers/0/image"),
        Some(&"busybox:2".into())
    );
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn health_is_watch_driven_and_timeouts_name_the_object() {
    let ns = TestNamespace::new("ks-health");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    let stuck = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: stuck, namespace: {}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: stuck}}}}\n  template:\n    metadata: {{labels: {{app: stuck}}}}\n    spec:\n      nodeSelector: {{no-such-node: 'true'}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n",
        ns.name
    );
    let manifest = format!("{}---\n{stuck}", app(&ns.name, 2, "a"));
    let (plan, _) = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect("apply");
    let healthy: Vec<_> = plan
        .refs()
        .into_iter()
        .filter(|r| r.name != "stuck")
        .collect();
    let started = Instant::now();
    apply::health::wait(&client, &resolver, &healthy, Duration::from_secs(60))
        .await
        .expect("the schedulable Deployment becomes ready");
    assert!(started.elapsed() < Duration::from_secs(30));

    let err = apply::health::wait(&client, &resolver, &plan.refs(), Duration::from_secs(3))
        .await
        .expect_err("the unschedulable Deployment never becomes ready");
    assert!(matches!(err, HealthError::Timeout(ref items) if items.len() == 1));
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "Deployment {}/stuck: 0/2 replicas available",
            ns.name
        )),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn secret_string_data_and_canonicalised_quantities_are_not_drift_but_edits_are() {
    let ns = TestNamespace::new("ks-canon");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    // The apiserver stores stringData as base64 data and rewrites 0.5 CPU as 500m, 1024Mi as 1Gi.
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\nstringData: {{password: hunter2}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n        resources:\n          limits: {{cpu: \"0.5\", memory: 1024Mi}}\n          requests: {{cpu: 0.25, memory: 0.5Gi}}\n",
        ns = ns.name
    );
    let (_, changes) = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect("first apply");
    assert_eq!(changes.count(Action::Created), 2, "{changes:?}");
    let limits = kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].resources.limits.cpu}",
        ],
        None,
    );
    assert_eq!(limits, "500m", "the apiserver canonicalised the quantity");

    // Same intent again: canonical forms are not drift, nothing is sent.
    let (_, changes) = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect("second apply");
    assert_eq!(changes.count(Action::Unchanged), 2, "{changes:?}");

    // A hand edit of the secret's data is drift, and the apply restores it.
    ns.kubectl(
        &[
            "patch",
            "secret",
            "creds",
            "--type=merge",
            "-p",
            r#"{"data":{"password":"ZWRpdGVk"}}"#,
        ],
        None,
    );
    let (_, changes) = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect("third apply");
    assert_eq!(changes.count(Action::Configured), 1, "{changes:?}");
    let password = kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.password}",
        ],
        None,
    );
    assert_eq!(password, "aHVudGVyMg==", "base64 of hunter2 restored");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn shared_kind_stores_see_each_applied_version_and_are_shared_per_kind() {
    let ns = TestNamespace::new("ks-shared");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    let watches = apply::KindWatches::new(client.clone());
    let (plan, changes) = plan_and_apply(&client, &resolver, &app(&ns.name, 1, "a"), &opts)
        .await
        .expect("apply");
    assert_eq!(changes.seen.len(), 3, "{changes:?}");
    let shared = |seen| {
        Some(apply::health::Shared {
            watches: &watches,
            seen,
        })
    };
    apply::health::wait_with(
        &client,
        &resolver,
        &plan.refs(),
        Duration::from_secs(60),
        shared(&changes.seen),
    )
    .await
    .expect("the app becomes ready");
    assert_eq!(watches.len(), 3, "one store per kind");

    // The new version cannot become ready; the stores' copies of the old, ready one must not
    // count for it even though they are still there when the wait starts.
    let stuck = app(&ns.name, 2, "a").replace(
        "      containers:",
        "      nodeSelector: {no-such-node: 'true'}\n      containers:",
    );
    let (plan, changes) = plan_and_apply(&client, &resolver, &stuck, &opts)
        .await
        .expect("apply the stuck version");
    assert_eq!(changes.count(Action::Configured), 1, "{changes:?}");
    let started = Instant::now();
    let err = apply::health::wait_with(
        &client,
        &resolver,
        &plan.refs(),
        Duration::from_secs(3),
        shared(&changes.seen),
    )
    .await
    .expect_err("the unschedulable version never becomes ready");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    let message = err.to_string();
    assert!(
        matches!(err, HealthError::Timeout(ref items) if items.len() == 1),
        "{message}"
    );
    assert!(
        message.contains(&format!("Deployment {}/web: ", ns.name)),
        "{message}"
    );
    assert_eq!(watches.len(), 3, "the stores are reused");

    // A deleted object is "not found" once the store has seen the deletion (a store, like a
    // watch, learns of it a moment after `kubectl delete` returns).
    kubectl_ok(&["delete", "configmap", "settings", "-n", &ns.name], None);
    let settings: Vec<_> = plan
        .refs()
        .into_iter()
        .filter(|r| r.kind == "ConfigMap")
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        let result = apply::health::wait_with(
            &client,
            &resolver,
            &settings,
            Duration::from_secs(1),
            shared(&changes.seen),
        )
        .await;
        match result {
            Err(err) => break err,
            Ok(()) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(()) => panic!("the store never saw the deletion"),
        }
    };
    assert!(
        err.to_string()
            .contains(&format!("ConfigMap {}/settings: not found", ns.name)),
        "{err}"
    );
}

/// A ValidatingAdmissionPolicy refusing every dry-run of the passive kinds in one namespace;
/// removed on drop.
struct NoDryRuns(String);

impl NoDryRuns {
    fn in_namespace(ns: &str) -> Self {
        let name = format!("gt-no-dry-run-{ns}");
        kubectl_ok(
            &["apply", "-f", "-"],
            Some(&format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [configmaps, secrets, serviceaccounts, services]
  validations:
  - expression: "!has(request.dryRun) || !request.dryRun"
    message: dry-run refused by the test's policy
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
"#
            )),
        );
        // The policy takes effect once the apiserver has compiled it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = gitops_conformance::kubectl(
                &["-n", ns, "create", "configmap", "probe", "--dry-run=server"],
                None,
            );
            if probe
                .stderr
                .contains("dry-run refused by the test's policy")
            {
                break;
            }
            assert!(Instant::now() < deadline, "the policy never took effect");
            std::thread::sleep(Duration::from_millis(300));
        }
        Self(name)
    }
}

impl Drop for NoDryRuns {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            gitops_conformance::kubectl(&["delete", kind, &self.0, "--ignore-not-found"], None);
        }
    }
}

/// The API resource of ConfigMaps.
fn configmaps() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
    }
}

/// The names of the ConfigMaps of `ns` added and deleted from now on, in order, until
/// `deleted` is deleted or 60 s passed.
async fn configmap_events(
    client: &kube::Client,
    ns: &str,
    deleted: &str,
) -> tokio::task::JoinHandle<Vec<String>> {
    use futures::StreamExt as _;
    use kube::api::{DynamicObject, ListParams, WatchEvent, WatchParams};
    let resource = configmaps();
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), ns, &resource);
    let version = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list ConfigMaps")
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &version)
        .await
        .expect("watch ConfigMaps")
        .boxed();
    let deleted = deleted.to_owned();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(event)) = stream.next().await {
            match event {
                // The namespace's own ConfigMap (kube-root-ca.crt) is not the test's.
                WatchEvent::Added(o) if o.metadata.name.as_deref() != Some("kube-root-ca.crt") => {
                    seen.push(format!("added {}", o.metadata.name.unwrap_or_default()))
                }
                WatchEvent::Deleted(o) => {
                    let name = o.metadata.name.unwrap_or_default();
                    seen.push(format!("deleted {name}"));
                    if name == deleted {
                        break;
                    }
                }
                _ => {}
            }
        }
        seen
    })
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn new_passive_objects_are_written_without_a_dry_run_and_deleted_again_when_their_stage_is_refused()
 {
    let ns = TestNamespace::new("ks-passive");
    let client = client().await;
    let resolver = Resolver::new();
    let opts = options(owner("app", &ns.name));
    let _policy = NoDryRuns::in_namespace(&ns.name);
    let passive = |suffix: &str| {
        format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: cm-{suffix}, namespace: {ns}}}
data: {{a: "1"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: secret-{suffix}, namespace: {ns}}}
stringData: {{a: "1"}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: sa-{suffix}, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc-{suffix}, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"#,
            ns = ns.name
        )
    };
    let deployment = |name: &str, replicas: i32| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: sa-one
      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]
"#,
            ns = ns.name
        )
    };

    // Every dry-run of a passive kind is refused in this namespace: the creations were not
    // dry-run. The Deployment (the probe) is written after them.
    let first = format!("{}---\n{}", passive("one"), deployment("web", 1));
    let (_, changes) = plan_and_apply(&client, &resolver, &first, &opts)
        .await
        .expect("new passive objects are created without a dry-run");
    assert_eq!(changes.count(Action::Created), 5, "{changes:?}");

    // A refused Deployment (the probe) after new passive objects: they are deleted again.
    let events = configmap_events(&client, &ns.name, "cm-two").await;
    let refused = format!(
        "{first}---\n{}---\n{}",
        passive("two"),
        deployment("broken", -1)
    );
    let message = one_refusal(
        &client,
        &resolver,
        &refused,
        &opts,
        "the Deployment with replicas -1 is refused",
    )
    .await;
    assert!(
        message.contains(&format!("Deployment {}/broken", ns.name)),
        "{message}"
    );
    for (kind, name) in [
        ("configmap", "cm-two"),
        ("secret", "secret-two"),
        ("serviceaccount", "sa-two"),
        ("service", "svc-two"),
        ("deployment", "broken"),
    ] {
        assert!(get(&ns.name, kind, name).is_none(), "{kind}/{name} stayed");
    }
    let seen = tokio::time::timeout(Duration::from_secs(90), events)
        .await
        .expect("the watch ends")
        .expect("the watch task");
    assert_eq!(seen, ["added cm-two", "deleted cm-two"], "{seen:?}");
    // What the earlier apply created is untouched.
    for (kind, name) in [("configmap", "cm-one"), ("deployment", "web")] {
        let live = get(&ns.name, kind, name).expect("kept");
        assert_eq!(live["metadata"]["labels"]["kubectl-gitops.io/name"], "app");
    }

    // A refused passive creation: the other creations of the stage are deleted again, and
    // nothing else is written.
    let invalid_service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-bad, namespace: {ns}}}\nspec:\n  ports: [{{port: 99999}}]\n",
        ns = ns.name
    );
    let refused = format!(
        "{first}---\n{}---\n{invalid_service}---\n{}",
        passive("three"),
        deployment("other", 1)
    );
    let message = one_refusal(
        &client,
        &resolver,
        &refused,
        &opts,
        "the Service with port 99999 is refused",
    )
    .await;
    assert!(
        message.contains("svc-bad") && message.contains("99999"),
        "{message}"
    );
    for (kind, name) in [
        ("configmap", "cm-three"),
        ("secret", "secret-three"),
        ("serviceaccount", "sa-three"),
        ("service", "svc-three"),
        ("deployment", "other"),
    ] {
        assert!(get(&ns.name, kind, name).is_none(), "{kind}/{name} stayed");
    }
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn an_unclaimed_object_that_existed_is_named_when_a_refusal_leaves_it_configured() {
    use gitops_reconciler::apply::{KindWatches, Known, Verified};
    use std::sync::Arc;
    let ns = TestNamespace::new("ks-unclaimed");
    let client = client().await;
    let resolver = Resolver::new();
    let resource = configmaps();
    // The shared store of ConfigMaps, listed: objects it does not hold are unclaimed.
    let watches = Arc::new(KindWatches::new(client.clone()));
    let _lease = watches.lease(&resource).expect("a store");
    let deadline = Instant::now() + Duration::from_secs(30);
    while watches.ready(&resource).is_none() {
        assert!(Instant::now() < deadline, "the store never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut opts = options(owner("app", &ns.name));
    opts.known = Some(Known {
        watches,
        verified: Arc::new(Verified::default()),
    });
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "create",
            "configmap",
            "existing",
            "--from-literal=a=before",
        ],
        None,
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: existing, namespace: {ns}}}
data: {{a: after}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: fresh, namespace: {ns}}}
data: {{a: new}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: broken, namespace: {ns}}}
spec:
  replicas: -1
  selector: {{matchLabels: {{app: broken}}}}
  template:
    metadata: {{labels: {{app: broken}}}}
    spec:
      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]
"#,
        ns = ns.name
    );
    let err = plan_and_apply(&client, &resolver, &manifest, &opts)
        .await
        .expect_err("the Deployment is refused");
    let message = err.to_string();
    let ApplyError::PartlyApplied { rejected, kept } = &err else {
        panic!("not PartlyApplied: {message}");
    };
    assert_eq!(rejected.len(), 1, "{message}");
    assert!(rejected[0].contains("broken"), "{message}");
    assert_eq!(kept.len(), 1, "{message}");
    assert!(
        kept[0].contains(&format!("ConfigMap {}/existing", ns.name))
            && kept[0].contains("existed without owner labels"),
        "{message}"
    );
    // The created one is gone; the one that existed holds what was written.
    assert!(get(&ns.name, "configmap", "fresh").is_none());
    assert!(get(&ns.name, "deployment", "broken").is_none());
    let existing = get(&ns.name, "configmap", "existing").expect("kept");
    assert_eq!(existing["data"]["a"], "after", "{existing}");
}
