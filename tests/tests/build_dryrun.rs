//! Everything the engine builds from the kustomize corpus is accepted by a real apiserver:
//! each case that `kubectl kustomize` builds is built by the engine (as in
//! `build_differential`), and every object is sent as a server-side apply with `dryRun=All`.
//! This is what catches "renders, but the cluster rejects it" (a number where a string is
//! required, a list where a map is required), which a comparison with kubectl alone misses when
//! both agree on a wrong shape or the corpus has no kubectl twin for a field.
//!
//! - The CustomResourceDefinitions of a case are applied for real first (and waited on until
//!   Established), so that its custom resources are checked against their schemas; they are
//!   deleted, and their deletion waited on, before the next case (cases reuse CRD names with
//!   different schemas). A CRD of that name that is already in the cluster (not created here)
//!   is neither replaced nor deleted: it is dry-run like any other object. The CRDs installed
//!   here carry a label, and a run starts by deleting those an interrupted run left behind.
//! - Namespaced objects are sent into the test's own namespace whatever namespace the build
//!   gave them: dry-run does not persist, so a namespace the build names (or creates) would not
//!   exist, and creating `default`-like names for real would touch what other tests share.
//!   The namespace names themselves are still checked: each distinct one is dry-run as a
//!   Namespace object.
//! - Cluster-scoped objects are only ever dry-run.
//! - Objects of kinds the cluster does not serve and whose CRD is not in the build (for example
//!   cert-manager's Certificate) cannot be checked: they are counted as skipped and printed.
//!   A kind that a CRD of the build defines but that is still not served is a failure.
//! - A case whose kustomize output the apiserver refuses by construction (kustomize keeps a
//!   literal `$setElementOrder` key, or writes a number where a string is required) declares
//!   it in `apiserver-refuses.txt`: one `Kind name: part of the apiserver's message` line per
//!   object. Such an object must be refused with that message, and kubectl's output of it must
//!   be identical to the engine's (so the refusal is kustomize's, not the engine's); a declared
//!   object the apiserver accepts is a failure too, so declarations cannot go stale.
//!
//! Run with `GITOPS_TEST_KUBECONFIG=... cargo test -p gitops-conformance --test build_dryrun --
//! --ignored`.

mod kustomization_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use gitops_conformance::kustomize_corpus::{self, CaseOptions};
use gitops_conformance::{FIELD_MANAGER, TestNamespace, kubectl};
use gitops_reconciler::build::build;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, oneshot};
use kube::error::DiscoveryError;
use kustomization_support::client;
use serde_json::{Value, json};

/// How long a kind defined by a just-established CRD may take to appear in discovery.
const DISCOVERY_GRACE: Duration = Duration::from_secs(30);
/// Label of the CRDs this test installs, so that the leftovers of an interrupted run are
/// deleted when it starts rather than taken for someone else's.
const INSTALLED_LABEL: &str = "conformance.kubectl-gitops.dev/build-dryrun";
/// Bound of the wait for a CRD to become Established, and for its deletion.
const CRD_TIMEOUT: &str = "60s";

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `Kind namespace/name (apiVersion)` as the build produced it.
fn describe(v: &Value) -> String {
    let ns = str_at(v, "/metadata/namespace");
    let name = str_at(v, "/metadata/name");
    let at = if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    };
    format!("{} {at} ({})", str_at(v, "/kind"), str_at(v, "/apiVersion"))
}

fn gvk_of(v: &Value) -> GroupVersionKind {
    let (group, version) = match str_at(v, "/apiVersion").rsplit_once('/') {
        Some((g, ver)) => (g, ver),
        None => ("", str_at(v, "/apiVersion")),
    };
    GroupVersionKind::gvk(group, version, str_at(v, "/kind"))
}

fn is_crd(v: &Value) -> bool {
    str_at(v, "/apiVersion").starts_with("apiextensions.k8s.io/")
        && str_at(v, "/kind") == "CustomResourceDefinition"
}

fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The API resource serving `gvk` and whether it is namespaced; `None` when the cluster does not
/// serve it. A kind the build's CRDs define gets [`DISCOVERY_GRACE`] to appear.
async fn resolve(
    client: &kube::Client,
    gvk: &GroupVersionKind,
    from_build_crd: bool,
) -> Result<Option<(ApiResource, bool)>, String> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_GRACE;
    loop {
        match oneshot::pinned_kind(client, gvk).await {
            Ok((resource, caps)) => {
                return Ok(Some((resource, matches!(caps.scope, Scope::Namespaced))));
            }
            // Discovery answers an unknown group or version with a plain 404 and an unknown
            // kind of a served version with kube's own "not found" error.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(kube::Error::Discovery(DiscoveryError::MissingKind(_))) => {}
            Err(e) => return Err(message(&e)),
        }
        if !from_build_crd || tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// CRDs applied for real by one case; deleted (and waited on) when dropped, so a panic cleans
/// up too.
#[derive(Default)]
struct InstalledCrds(Vec<String>);

impl InstalledCrds {
    /// Deletes the CRDs an interrupted run of this test left behind (they would serve kinds
    /// that must count as not served, with stale schemas).
    fn remove_leftovers() {
        let timeout = format!("--timeout={CRD_TIMEOUT}");
        let selector = format!("--selector={INSTALLED_LABEL}");
        let res = kubectl(
            &[
                "delete",
                "customresourcedefinition",
                &selector,
                "--wait=true",
                &timeout,
            ],
            None,
        );
        assert!(
            res.success,
            "cannot delete the CRDs of an earlier run: {}",
            res.stderr.trim()
        );
    }
}

impl Drop for InstalledCrds {
    fn drop(&mut self) {
        for name in &self.0 {
            let timeout = format!("--timeout={CRD_TIMEOUT}");
            let res = kubectl(
                &[
                    "delete",
                    "customresourcedefinition",
                    name,
                    "--ignore-not-found",
                    "--wait=true",
                    &timeout,
                ],
                None,
            );
            if !res.success {
                eprintln!("cannot delete CRD {name}: {}", res.stderr.trim());
            }
        }
    }
}

/// Objects of a case that the apiserver refuses by construction, from `apiserver-refuses.txt`:
/// `Kind name` → part of the expected message.
fn declared_refusals(case: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(case.join("apiserver-refuses.txt")) else {
        return BTreeMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (object, message) = l.split_once(": ").unwrap_or_else(|| {
                panic!(
                    "{}/apiserver-refuses.txt: {l:?} is not `Kind name: message`",
                    case.display()
                )
            });
            (object.trim().to_owned(), message.trim().to_owned())
        })
        .collect()
}

fn kind_and_name(v: &Value) -> String {
    format!("{} {}", str_at(v, "/kind"), str_at(v, "/metadata/name"))
}

#[derive(Default)]
struct Tally {
    cases: usize,
    kubectl_refuses: usize,
    submitted: usize,
    crds_installed: usize,
    namespace_names: usize,
    /// Skip reason → objects (`case: object`).
    skipped: BTreeMap<&'static str, Vec<String>>,
    /// Refused as declared, with kubectl's identical output (`case: object: message`).
    declared: Vec<String>,
    failures: Vec<String>,
}

impl Tally {
    fn skip(&mut self, reason: &'static str, case: &str, object: &Value) {
        self.skipped
            .entry(reason)
            .or_default()
            .push(format!("{case}: {}", describe(object)));
    }
}

/// Dry-runs one object as a server-side apply; `Err` carries the apiserver's message.
async fn dry_run(
    client: &kube::Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    object: &Value,
) -> Result<(), String> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    api.patch(
        str_at(object, "/metadata/name"),
        &params,
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(|e| message(&e))
}

/// Applies the build's CRDs for real and waits until they are Established. Returns the
/// (group, kind) pairs they define.
async fn install_crds(
    client: &kube::Client,
    case: &str,
    crds: &[&Value],
    installed: &mut InstalledCrds,
    tally: &mut Tally,
) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    if crds.is_empty() {
        return kinds;
    }
    let crd_gvk = GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition");
    let resource = match resolve(client, &crd_gvk, false).await {
        Ok(Some((r, _))) => r,
        other => panic!("the cluster does not serve CustomResourceDefinitions: {other:?}"),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    for crd in crds {
        tally.submitted += 1;
        let name = str_at(crd, "/metadata/name");
        kinds.insert((
            str_at(crd, "/spec/group").to_owned(),
            str_at(crd, "/spec/names/kind").to_owned(),
        ));
        let live = match api.get_opt(name).await {
            Ok(found) => found,
            Err(e) => panic!("cannot read CRD {name}: {}", message(&e)),
        };
        if live.is_some() {
            // Someone else's (this test's leftovers are gone): check it, never replace or
            // delete it.
            if let Err(m) = dry_run(client, &resource, None, crd).await {
                tally
                    .failures
                    .push(format!("{case}: {} refused: {m}", describe(crd)));
            }
            continue;
        }
        let mut labelled = (*crd).clone();
        labelled["metadata"]["labels"][INSTALLED_LABEL] = Value::String("true".into());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(name, &params, &Patch::Apply(&labelled)).await {
            Ok(_) => {
                installed.0.push(name.to_owned());
                tally.crds_installed += 1;
            }
            Err(e) => {
                tally.failures.push(format!(
                    "{case}: {} refused: {}",
                    describe(crd),
                    message(&e)
                ));
                continue;
            }
        }
        let timeout = format!("--timeout={CRD_TIMEOUT}");
        let wait = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                &timeout,
                "customresourcedefinition",
                name,
            ],
            None,
        );
        if !wait.success {
            tally.failures.push(format!(
                "{case}: {} never became Established: {}",
                describe(crd),
                wait.stderr.trim()
            ));
        }
    }
    kinds
}

/// Records the apiserver's answer for `object`: a refusal is a failure unless the case declares
/// it and kubectl's output holds the identical object.
fn record(
    tally: &mut Tally,
    case: &str,
    object: &Value,
    kubectl_objects: &[Value],
    declared: &mut BTreeMap<String, String>,
    result: Result<(), String>,
) {
    let key = kind_and_name(object);
    match (result, declared.remove(&key)) {
        (Ok(()), None) => {}
        (Ok(()), Some(expected)) => tally.failures.push(format!(
            "{case}: {} accepted, but apiserver-refuses.txt expects a refusal ({expected})",
            describe(object)
        )),
        (Err(m), Some(expected))
            if m.contains(&expected) && kubectl_objects.iter().any(|k| k == object) =>
        {
            tally
                .declared
                .push(format!("{case}: {}: {m}", describe(object)));
        }
        (Err(m), _) => tally
            .failures
            .push(format!("{case}: {} refused: {m}", describe(object))),
    }
}

async fn check_case(
    client: &kube::Client,
    namespace: &str,
    case: &Path,
    objects: &[Value],
    kubectl_objects: &[Value],
    tally: &mut Tally,
) {
    let mut declared = declared_refusals(case);
    let case = case.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let crds: Vec<&Value> = objects.iter().filter(|o| is_crd(o)).collect();
    let mut installed = InstalledCrds::default();
    let crd_kinds = install_crds(client, case, &crds, &mut installed, tally).await;

    let namespace_objects: BTreeSet<&str> = objects
        .iter()
        .filter(|o| str_at(o, "/apiVersion") == "v1" && str_at(o, "/kind") == "Namespace")
        .map(|o| str_at(o, "/metadata/name"))
        .collect();
    let mut namespace_names = BTreeSet::new();

    for object in objects.iter().filter(|o| !is_crd(o)) {
        let gvk = gvk_of(object);
        let from_build_crd = crd_kinds.contains(&(gvk.group.clone(), gvk.kind.clone()));
        let (resource, namespaced) = match resolve(client, &gvk, from_build_crd).await {
            Ok(Some(found)) => found,
            Ok(None) if from_build_crd => {
                tally.failures.push(format!(
                    "{case}: {}: a CRD of the build defines the kind, but the cluster does not serve this version",
                    describe(object)
                ));
                continue;
            }
            Ok(None) => {
                tally.skip("kind not served", case, object);
                continue;
            }
            Err(m) => {
                tally.failures.push(format!(
                    "{case}: {}: discovery failed: {m}",
                    describe(object)
                ));
                continue;
            }
        };
        tally.submitted += 1;
        let result = if namespaced {
            let built = str_at(object, "/metadata/namespace");
            if !built.is_empty() && !namespace_objects.contains(built) {
                namespace_names.insert(built.to_owned());
            }
            let mut mapped = object.clone();
            mapped["metadata"]["namespace"] = Value::String(namespace.to_owned());
            dry_run(client, &resource, Some(namespace), &mapped).await
        } else {
            dry_run(client, &resource, None, object).await
        };
        record(tally, case, object, kubectl_objects, &mut declared, result);
    }
    for object in declared.keys() {
        tally.failures.push(format!(
            "{case}: apiserver-refuses.txt names {object}, which the build does not hold"
        ));
    }

    let ns_gvk = GroupVersionKind::gvk("", "v1", "Namespace");
    if let Some((resource, _)) = resolve(client, &ns_gvk, false).await.ok().flatten() {
        for name in namespace_names {
            tally.namespace_names += 1;
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            if let Err(m) = dry_run(client, &resource, None, &ns).await {
                tally.failures.push(format!(
                    "{case}: namespace name {name:?} of the build refused: {m}"
                ));
            }
        }
    }
    drop(installed);
}

/// The check can fail: the apiserver refuses, through the same dry-run call, a volume mode
/// written as the string `"0755"` (what a YAML 1.2 reading of `0755` gives).
async fn refuses_a_string_file_mode(client: &kube::Client, namespace: &str) {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "string-mode", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {
                    "containers": [{"name": "c", "image": "c"}],
                    "volumes": [{"name": "v", "configMap": {"name": "c", "defaultMode": "0755"}}],
                },
            },
        },
    });
    let (resource, _) = resolve(client, &gvk_of(&deployment), false)
        .await
        .ok()
        .flatten()
        .expect("the cluster serves apps/v1 Deployments");
    let result = dry_run(client, &resource, Some(namespace), &deployment).await;
    let refused = result.expect_err("a string defaultMode must be refused");
    assert!(
        refused.contains("defaultMode"),
        "refused for another reason: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: GITOPS_TEST_KUBECONFIG"]
async fn corpus_objects_pass_server_side_dry_run() {
    kustomize_corpus::require_kubectl();
    let client = client().await;
    let namespace = TestNamespace::new("dryrun");
    InstalledCrds::remove_leftovers();
    refuses_a_string_file_mode(&client, &namespace.name).await;
    let cases = kustomize_corpus::corpus_cases();

    let mut tally = Tally::default();
    for case in &cases {
        tally.cases += 1;
        let options = CaseOptions::read(case);
        let Ok(kubectl_objects) = kustomize_corpus::kubectl_build(case, &options) else {
            tally.kubectl_refuses += 1;
            continue;
        };
        match build(case, &options.to_build_options()) {
            Ok(objects) => {
                check_case(
                    &client,
                    &namespace.name,
                    case,
                    &objects,
                    &kubectl_objects,
                    &mut tally,
                )
                .await
            }
            Err(e) => tally.failures.push(format!(
                "{}: kubectl builds it, the engine fails: {e}",
                case.display()
            )),
        }
    }

    let built = tally.cases - tally.kubectl_refuses;
    eprintln!(
        "{} cases ({} built by kubectl, {} refused by kubectl and not checked): {} objects submitted \
         ({} CRDs installed for real), {} namespace names checked, {} refused",
        tally.cases,
        built,
        tally.kubectl_refuses,
        tally.submitted,
        tally.crds_installed,
        tally.namespace_names,
        tally.failures.len()
    );
    eprintln!(
        "refused as declared in apiserver-refuses.txt (kubectl's output identical): {}",
        tally.declared.len()
    );
    for o in &tally.declared {
        eprintln!("  {o}");
    }
    for (reason, objects) in &tally.skipped {
        eprintln!("skipped: {reason}: {}", objects.len());
        for o in objects {
            eprintln!("  {o}");
        }
    }
    assert!(
        built >= 80,
        "only {built} corpus cases are built by kubectl"
    );
    assert!(
        tally.submitted >= 200,
        "only {} objects reached the apiserver",
        tally.submitted
    );
    assert!(
        tally.failures.is_empty(),
        "{} objects refused by the apiserver's dry-run:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
}
