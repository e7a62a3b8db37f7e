//! Property tests of what crosses the component boundary, through a real guest (the hostile
//! component in its `ok` mode, whose transform returns the objects it was given, re-encoded by
//! the guest's own JSON library, and whose validation reports how many it saw): arbitrary
//! contexts, configs and objects are lowered into the guest and what it returns is lifted back
//! and checked. Brief (a bounded number of cases), so it runs in every test run.

use crate::support::*;
use gitops_reconciler::policy::{PolicyContext, Severity};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value that reads back exactly: any Unicode text as keys and strings, integers of
/// the whole i64/u64 range, binary fractions.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 1024.0)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    (".{1,30}", proptest::option::of(".{1,20}"), json_value()).prop_map(|(name, ns, data)| {
        let mut metadata = json!({ "name": name });
        if let Some(ns) = ns {
            metadata["namespace"] = json!(ns);
        }
        json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": metadata, "data": data})
    })
}

fn context() -> impl Strategy<Value = PolicyContext> {
    (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        any::<bool>(),
    )
        .prop_map(
            |(namespace, name, revision, target_namespace, dry_run)| PolicyContext {
                kustomization_namespace: namespace,
                kustomization_name: name,
                source_revision: revision,
                target_namespace,
                dry_run,
                tenancy: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Objects go into the guest and come back equal; the context and config are lowered
    /// whatever text they hold; the guest's violation is lifted as it wrote it.
    #[test]
    fn values_cross_the_component_boundary_unchanged(
        ctx in context(),
        extra in any::<String>(),
        objects in prop::collection::vec(object(), 0..8),
    ) {
        let host = shared_host();
        let mut step = hostile("ok");
        step.config = json!({ "mode": "ok", "extra": extra });
        let outcome = host
            .run_pipeline(std::slice::from_ref(&step), &ctx, objects.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&outcome.objects, &objects);
        prop_assert_eq!(outcome.warnings.len(), 1);
        let warning = &outcome.warnings[0];
        prop_assert_eq!(&warning.message, &format!("hostile saw {} objects", objects.len()));
        prop_assert_eq!(warning.severity, Severity::Warning);
        prop_assert_eq!(&warning.policy, &step.name);
        prop_assert!(outcome.ignored_failures.is_empty());
        prop_assert_eq!(host.slots_in_use(), 0);
        prop_assert_eq!(host.turns_in_use(), 0);
    }
}

/// One host for every case (each case would otherwise create an engine).
fn shared_host() -> &'static gitops_reconciler::policy::PolicyHost {
    static HOST: std::sync::OnceLock<gitops_reconciler::policy::PolicyHost> =
        std::sync::OnceLock::new();
    HOST.get_or_init(|| host_with(|_| {}))
}
