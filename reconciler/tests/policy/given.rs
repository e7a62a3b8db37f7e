//! Which objects a policy is given (WIT `metadata.kinds`, `kubectl-gitops:policy@0.2.0`), seen
//! through components whose behaviour shows it.

use crate::support::*;
use gitops_reconciler::policy::{PipelineError, PolicyContext};
use serde_json::{Value, json};

/// A `@0.2.0` component whose metadata declares the kinds `Deployment.apps` and `ConfigMap`
/// and whose `transform` returns an empty list: it drops every object it is given, so what a
/// pipeline keeps is exactly what it was not given. `validate` finds nothing.
fn drops_what_it_is_given() -> String {
    wat_policy(
        1,
        (4096, 65536),
        r#"
    ;; metadata: name, version, description, kind transform (24), no schema (28), kinds (40):
    ;; some(list at 1200 of 2)
    (data (i32.const 256) "\00\04\00\00\0a\00\00\00\10\04\00\00\05\00\00\00\20\04\00\00\16\00\00\00")
    (data (i32.const 296) "\01\00\00\00\b0\04\00\00\02\00\00\00")
    ;; group-kind {group: "apps", kind: "Deployment"}, {group: "", kind: "ConfigMap"}
    (data (i32.const 1200) "\14\05\00\00\04\00\00\00\1e\05\00\00\0a\00\00\00")
    (data (i32.const 1216) "\00\00\00\00\00\00\00\00\32\05\00\00\09\00\00\00")
    (data (i32.const 1024) "drop-given")
    (data (i32.const 1040) "0.0.0")
    (data (i32.const 1056) "drops what it is given")
    (data (i32.const 1300) "apps")
    (data (i32.const 1310) "Deployment")
    (data (i32.const 1330) "ConfigMap")"#,
        r#"(type $group-kind' (record (field "group" string) (field "kind" string)))
  (export $group-kind "group-kind" (type $group-kind'))"#,
        r#"(field "name" string) (field "version" string) (field "description" string)
    (field "kind" $kind) (field "config-schema" (option string))
    (field "kinds" (option (list $group-kind)))"#,
    )
}

fn object(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "a"}})
}

#[test]
fn a_policy_is_given_only_the_objects_of_the_kinds_it_declares() {
    let host = host_with(|_| {});
    let step = bytes_step(
        "drop-given",
        wat::parse_str(drops_what_it_is_given()).expect("valid WAT"),
    );
    let info = host.load("drop-given", &step.module).expect("loads");
    assert_eq!(info.contract, "0.2.0");
    let kinds: Option<Vec<String>> = info
        .kinds
        .map(|k| k.iter().map(ToString::to_string).collect());
    assert_eq!(
        kinds,
        Some(vec!["Deployment.apps".to_owned(), "ConfigMap".to_owned()])
    );

    let objects = vec![
        object("v1", "ConfigMap", "dropped-1"),
        object("v1", "Service", "kept-1"),
        object("apps/v1", "Deployment", "dropped-2"),
        // Matched by group as well as kind.
        object("example.com/v1", "Deployment", "kept-2"),
        object("example.com/v1", "ConfigMap", "kept-3"),
        object("apps/v1", "StatefulSet", "kept-4"),
        object("apps/v1beta2", "Deployment", "dropped-3"),
    ];
    let kept: Vec<Value> = objects
        .iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kept"))
        })
        .cloned()
        .collect();
    let out = host
        .run_pipeline(
            std::slice::from_ref(&step),
            &PolicyContext::default(),
            objects,
        )
        .expect("runs")
        .objects;
    assert_eq!(out, kept);
}

/// A built-in that declares its kinds edits the objects it is given in place: the others keep
/// their places and values, and a custom resource that shares a kind's name with a built-in
/// kind is neither changed nor judged.
#[test]
fn builtins_edit_what_they_are_given_in_place() {
    let host = host_with(|_| {});
    let config_map = |name: &str| object("v1", "ConfigMap", name);
    let workload = |api_version: &str, kind: &str, name: &str, image: &str| {
        let mut o = object(api_version, kind, name);
        o["spec"] = json!({"replicas": 9, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}});
        o
    };
    let objects = vec![
        config_map("first"),
        workload("apps/v1", "Deployment", "web", "nginx:1.27"),
        workload("example.com/v1", "Deployment", "custom", "nginx:latest"),
        config_map("middle"),
        workload("apps/v1", "StatefulSet", "set", "nginx:1.27"),
        config_map("last"),
    ];
    let clamp = builtin(
        "replica-bounds",
        json!({"bounds": {"Deployment": {"max": 3}, "StatefulSet": {"max": 2}}, "action": "clamp"}),
    );
    let out = host
        .run_pipeline(
            std::slice::from_ref(&clamp),
            &PolicyContext::default(),
            objects.clone(),
        )
        .expect("clamped, not denied")
        .objects;
    let mut expected = objects.clone();
    expected[1]["spec"]["replicas"] = json!(3);
    expected[4]["spec"]["replicas"] = json!(2);
    assert_eq!(out, expected);

    let pinning = builtin("image-pinning", json!({"denyLatest": true}));
    host.run_pipeline(
        std::slice::from_ref(&pinning),
        &PolicyContext::default(),
        objects.clone(),
    )
    .expect("no pod-bearing object uses latest");
    let mut latest = objects;
    latest[1]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
    let Err(PipelineError::Denied { violations }) =
        host.run_pipeline(&[pinning, clamp], &PolicyContext::default(), latest)
    else {
        panic!("the Deployment's latest image must be denied");
    };
    let names: Vec<_> = violations
        .iter()
        .map(|v| {
            (
                v.policy.as_str(),
                v.object.as_ref().map(|o| o.name.as_str()),
            )
        })
        .collect();
    assert_eq!(names, [("image-pinning", Some("web"))]);
}

/// A component whose `metadata` record is neither contract's is refused at load, with why it is
/// not each of them.
#[test]
fn a_component_of_neither_contract_is_refused_naming_both() {
    let host = host_with(|_| {});
    let wat = wat_policy(
        1,
        (4096, 65536),
        "",
        "",
        r#"(field "name" string) (field "version" string) (field "description" string)
    (field "kind" $kind) (field "owner" string)"#,
    );
    let step = bytes_step("other", wat::parse_str(wat).expect("valid WAT"));
    let e = host.load("other", &step.module).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            gitops_reconciler::policy::PolicyError::InvalidComponent { .. }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("it implements neither kubectl-gitops:policy@0.2.0 (")
            && text.contains(") nor @0.1.0 ("),
        "{text}"
    );
}
