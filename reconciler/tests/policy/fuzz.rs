//! Property tests of what crosses the component boundary, through a real guest (the hostile
//! component in its `ok` mode, whose transform returns the objects it was given, re-encoded by
//! the guest's own JSON library, and whose validation reports how many it saw): arbitrary
//! contexts, configs and objects are lowered into the guest and what it returns is lifted back
//! and checked. Brief (a bounded number of cases), so it runs in every test run.

use crate::strategies::{config, json_value};
use crate::support::*;
use gitops_reconciler::policy::{PolicyContext, Severity};
use proptest::prelude::*;
use serde_json::{Value, json};

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
    #![proptest_config(config(48))]

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
