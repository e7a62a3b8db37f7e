//! A hostile policy for the host's tests. Its config picks the misbehaviour of `transform`:
//! `{"mode": "loop" | "memory" | "recursion" | "panic" | "many-objects" | "big-object" |
//! "bad-json" | "log-flood" | "add-cluster-object" | "ok"}`. `validate` always reports one warning, so a test can
//! tell that the instance after a hostile one still works.

use gitops_policy_sdk::{
    ConfigError, Context, Level, Metadata, Policy, PolicyError, PolicyKind, Value, Violation, json,
    log,
};
use std::hint::black_box;

/// The hostile policy.
pub struct Hostile;

/// Misbehaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Returns the objects unchanged.
    Ok,
    /// Spins forever.
    Loop,
    /// Allocates without bound (towards 4 GiB).
    Memory,
    /// Recurses without bound.
    Recursion,
    /// Panics (a trap in wasm: `panic = "abort"`).
    Panic,
    /// Returns 200,000 (empty) objects.
    ManyObjects,
    /// Returns one 24 MiB object.
    BigObject,
    /// Returns a string that is not JSON.
    BadJson,
    /// Writes 10,000 log lines.
    LogFlood,
    /// Appends a ClusterRoleBinding granting cluster-admin (a tenancy breach).
    AddClusterObject,
}

#[inline(never)]
fn recurse(depth: u64, acc: &mut [u64; 8]) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    acc[(depth % 8) as usize] = black_box(depth);
    black_box(recurse(depth + 1, black_box(acc))) + acc[0]
}

impl Policy for Hostile {
    type Config = Mode;

    fn metadata() -> Metadata {
        Metadata {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            description: "Misbehaves on request; for tests only.".to_owned(),
            kind: PolicyKind::Both,
            config_schema: None,
        }
    }

    fn parse_config(config: &Value) -> Result<Mode, ConfigError> {
        Ok(
            match config.get("mode").and_then(Value::as_str).unwrap_or("ok") {
                "ok" => Mode::Ok,
                "loop" => Mode::Loop,
                "memory" => Mode::Memory,
                "recursion" => Mode::Recursion,
                "panic" => Mode::Panic,
                "many-objects" => Mode::ManyObjects,
                "big-object" => Mode::BigObject,
                "bad-json" => Mode::BadJson,
                "log-flood" => Mode::LogFlood,
                "add-cluster-object" => Mode::AddClusterObject,
                other => return Err(ConfigError::at("/mode", format!("unknown mode {other:?}"))),
            },
        )
    }

    fn transform(
        _ctx: &Context,
        mode: &Mode,
        objects: Vec<Value>,
    ) -> Result<Vec<Value>, PolicyError> {
        match mode {
            Mode::Ok => Ok(objects),
            Mode::Loop => loop {
                black_box(());
            },
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Mode::Recursion => {
                let mut acc = [0u64; 8];
                Ok(vec![json!(recurse(0, &mut acc))])
            }
            Mode::Panic => panic!("hostile policy panics on purpose"),
            Mode::ManyObjects => Ok(vec![json!({}); 200_000]),
            Mode::BigObject => Ok(vec![
                json!({"kind": "ConfigMap", "data": {"x": "x".repeat(24 << 20)}}),
            ]),
            Mode::BadJson => Ok(vec![Value::String("not an object".to_owned())]),
            Mode::AddClusterObject => {
                let mut objects = objects;
                objects.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "tenant-is-admin"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "apps"}]
                }));
                Ok(objects)
            }
            Mode::LogFlood => {
                for i in 0..10_000 {
                    log(Level::Info, &format!("line {i} {}", "y".repeat(4096)));
                }
                Ok(objects)
            }
        }
    }

    fn validate(_ctx: &Context, _mode: &Mode, objects: &[Value]) -> Vec<Violation> {
        vec![Violation {
            object: None,
            field: None,
            message: format!("hostile saw {} objects", objects.len()),
            severity: gitops_policy_sdk::Severity::Warning,
        }]
    }
}

gitops_policy_sdk::export_policy!(Hostile);
