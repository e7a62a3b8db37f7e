//! Which objects a policy is given (WIT `metadata.kinds`, `kubectl-gitops:policy@0.2.0`), seen
//! through components whose behaviour shows it.

use crate::support::*;
use gitops_reconciler::policy::{PipelineError, PolicyContext};
use serde_json::{Value, json};

/// A `@0.2.0` component whose metadata declares the kinds `Deployment.apps` and `ConfigMap`
/// and whose `transform` returns an empty list: it drops every object it is given, so what a
/// pipeline keeps is exactly what it was not given. `validate` finds nothing.
const DROPS_WHAT_IT_IS_GIVEN: &str = r#"
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.const 65536)) (then unreachable))
      (local.get $p))
    ;; Each export returns a pointer to its result; all-zero results are ok(()), ok([]) and [].
    (func (export "metadata") (result i32) (i32.const 256))
    (func (export "validate-config") (param i32 i32) (result i32) (i32.const 640))
    (func (export "transform")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 512))
    (func (export "validate")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 768))
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
    (data (i32.const 1330) "ConfigMap")
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "realloc" (core func $realloc))
  (alias core export $i "metadata" (core func $c-metadata))
  (alias core export $i "validate-config" (core func $c-validate-config))
  (alias core export $i "transform" (core func $c-transform))
  (alias core export $i "validate" (core func $c-validate))

  (type $kind' (enum "transform" "validate" "both"))
  (export $kind "policy-kind" (type $kind'))
  (type $group-kind' (record (field "group" string) (field "kind" string)))
  (export $group-kind "group-kind" (type $group-kind'))
  (type $metadata' (record (field "name" string) (field "version" string)
    (field "description" string) (field "kind" $kind) (field "config-schema" (option string))
    (field "kinds" (option (list $group-kind)))))
  (export $metadata "metadata-record" (type $metadata'))
  (type $context' (record (field "kustomization-namespace" string)
    (field "kustomization-name" string) (field "source-revision" string)
    (field "target-namespace" (option string)) (field "dry-run" bool)))
  (export $context "context" (type $context'))
  (type $object-ref' (record (field "api-version" string) (field "kind" string)
    (field "namespace" (option string)) (field "name" string)))
  (export $object-ref "object-ref" (type $object-ref'))
  (type $config-error' (record (field "message" string) (field "path" (option string))))
  (export $config-error "config-error" (type $config-error'))
  (type $policy-error' (record (field "message" string) (field "object" (option $object-ref))))
  (export $policy-error "policy-error" (type $policy-error'))
  (type $severity' (enum "error" "warning"))
  (export $severity "severity" (type $severity'))
  (type $violation' (record (field "object" (option $object-ref)) (field "field" (option string))
    (field "message" string) (field "severity" $severity)))
  (export $violation "violation" (type $violation'))

  (func $metadata (result $metadata) (canon lift (core func $c-metadata) (memory $mem)))
  (export "metadata" (func $metadata))
  (func $validate-config (param "config" string) (result (result (error $config-error)))
    (canon lift (core func $c-validate-config) (memory $mem) (realloc $realloc)))
  (export "validate-config" (func $validate-config))
  (func $transform (param "context" $context) (param "config" string)
    (param "objects" (list string)) (result (result (list string) (error $policy-error)))
    (canon lift (core func $c-transform) (memory $mem) (realloc $realloc)))
  (export "transform" (func $transform))
  (func $validate (param "context" $context) (param "config" string)
    (param "objects" (list string)) (result (list $violation))
    (canon lift (core func $c-validate) (memory $mem) (realloc $realloc)))
  (export "validate" (func $validate))
)
"#;

fn object(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "a"}})
}

#[test]
fn a_policy_is_given_only_the_objects_of_the_kinds_it_declares() {
    let host = host_with(|_| {});
    let step = bytes_step(
        "drop-given",
        wat::parse_str(DROPS_WHAT_IT_IS_GIVEN).expect("valid WAT"),
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
