//! Built-in policy `replica-bounds`: keeps `spec.replicas` of scalable workloads within
//! per-kind bounds. Given only the scalable kinds and HorizontalPodAutoscalers (its metadata
//! declares them).
//!
//! Config: `{"bounds": {"Deployment": {"min": 1, "max": 10}, "StatefulSet": {"max": 3}},
//! "action": "deny" | "clamp"}` (`action` defaults to `deny`). Kinds: Deployment, StatefulSet,
//! ReplicaSet, ReplicationController; a kind without bounds is not checked. A missing
//! `spec.replicas` counts as 1 (the API default). With `clamp` the transform moves the value
//! into the bounds; with `deny` validation reports it. Workloads that a
//! HorizontalPodAutoscaler in the same build targets (same namespace, kind and name) are left
//! alone: the HPA owns their replicas.

use gitops_policy_sdk::object::{group, kind, name, namespace, str_at};
use gitops_policy_sdk::{
    ConfigError, Context, GroupKind, Metadata, Object, Policy, PolicyError, PolicyKind, Value,
    Violation, json,
};
use std::collections::{BTreeMap, BTreeSet};

/// The policy.
pub struct ReplicaBounds;

/// Kinds with `spec.replicas` this policy understands, as `(group, kind)`.
pub const SCALABLE: [(&str, &str); 4] = [
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
];

/// The autoscaler kind whose targets are left alone, as `(group, kind)`.
pub const AUTOSCALER: (&str, &str) = ("autoscaling", "HorizontalPodAutoscaler");

/// True if `object` is of `(group, kind)`.
fn is(object: &Object, (g, k): (&str, &str)) -> bool {
    kind(object) == k && group(object) == g
}

/// Bounds of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest allowed replica count.
    pub min: Option<u64>,
    /// Largest allowed replica count.
    pub max: Option<u64>,
}

/// What to do with an out-of-bounds workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Report a violation (deny).
    Deny,
    /// Rewrite the replica count to the nearest bound.
    Clamp,
}

/// Parsed configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bounds per kind.
    pub bounds: BTreeMap<String, Bounds>,
    /// Deny or clamp.
    pub action: Action,
}

/// `(namespace, kind, name)` of every workload an HPA in `objects` targets.
pub fn autoscaled(objects: &[Object]) -> BTreeSet<(String, String, String)> {
    objects
        .iter()
        .filter(|o| is(o, AUTOSCALER))
        .filter_map(|hpa| {
            let target_kind = str_at(hpa, "/spec/scaleTargetRef/kind")?;
            let target_name = str_at(hpa, "/spec/scaleTargetRef/name")?;
            Some((
                namespace(hpa).unwrap_or("").to_owned(),
                target_kind.to_owned(),
                target_name.to_owned(),
            ))
        })
        .collect()
}

/// The bounds that apply to `object`, unless it is not scalable, has no bounds, or is
/// autoscaled.
fn applicable(
    object: &Object,
    config: &Config,
    hpa: &BTreeSet<(String, String, String)>,
) -> Option<Bounds> {
    if !SCALABLE.iter().any(|&scalable| is(object, scalable)) {
        return None;
    }
    let k = kind(object);
    let bounds = *config.bounds.get(k)?;
    let key = (
        namespace(object).unwrap_or("").to_owned(),
        k.to_owned(),
        name(object).to_owned(),
    );
    (!hpa.contains(&key)).then_some(bounds)
}

fn replicas(object: &Object) -> u64 {
    object.read_at::<u64>("/spec/replicas").unwrap_or(1)
}

impl Policy for ReplicaBounds {
    type Config = Config;

    fn metadata() -> Metadata {
        Metadata {
            name: "replica-bounds".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Keeps spec.replicas within per-kind bounds (deny or clamp), leaving \
                          HPA-managed workloads alone."
                .to_owned(),
            kind: PolicyKind::Both,
            config_schema: Some(
                json!({
                    "type": "object",
                    "required": ["bounds"],
                    "properties": {
                        "bounds": {"type": "object", "additionalProperties": {
                            "type": "object",
                            "properties": {"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 0}},
                            "additionalProperties": false
                        }},
                        "action": {"enum": ["deny", "clamp"], "default": "deny"}
                    },
                    "additionalProperties": false
                })
                .to_string(),
            ),
            kinds: Some(
                SCALABLE
                    .iter()
                    .chain([&AUTOSCALER])
                    .map(|&(group, kind)| GroupKind::new(group, kind))
                    .collect(),
            ),
        }
    }

    fn parse_config(config: &Value) -> Result<Config, ConfigError> {
        let map = config.as_object().ok_or_else(|| {
            ConfigError::new(
                "config must be an object like {\"bounds\": {\"Deployment\": {\"max\": 10}}}",
            )
        })?;
        if let Some(key) = map.keys().find(|k| *k != "bounds" && *k != "action") {
            return Err(ConfigError::at(
                format!("/{key}"),
                format!("unknown field {key:?}"),
            ));
        }
        let action = match map.get("action").map(|a| a.as_str()) {
            None | Some(Some("deny")) => Action::Deny,
            Some(Some("clamp")) => Action::Clamp,
            _ => {
                return Err(ConfigError::at(
                    "/action",
                    "action must be \"deny\" or \"clamp\"",
                ));
            }
        };
        let raw = map
            .get("bounds")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ConfigError::at("/bounds", "bounds (an object keyed by kind) is required")
            })?;
        let mut bounds = BTreeMap::new();
        for (k, b) in raw {
            if !SCALABLE.iter().any(|(_, scalable)| scalable == k) {
                return Err(ConfigError::at(
                    format!("/bounds/{k}"),
                    format!(
                        "{k} is not a scalable kind (expected one of {})",
                        SCALABLE.map(|(_, kind)| kind).join(", ")
                    ),
                ));
            }
            let b = b.as_object().ok_or_else(|| {
                ConfigError::at(format!("/bounds/{k}"), "must be {\"min\": n, \"max\": n}")
            })?;
            let mut parsed = Bounds::default();
            for (field, value) in b {
                let n = value.as_u64().ok_or_else(|| {
                    ConfigError::at(
                        format!("/bounds/{k}/{field}"),
                        "must be a non-negative integer",
                    )
                })?;
                match field.as_str() {
                    "min" => parsed.min = Some(n),
                    "max" => parsed.max = Some(n),
                    _ => {
                        return Err(ConfigError::at(
                            format!("/bounds/{k}/{field}"),
                            format!("unknown field {field:?}"),
                        ));
                    }
                }
            }
            if let (Some(min), Some(max)) = (parsed.min, parsed.max)
                && min > max
            {
                return Err(ConfigError::at(
                    format!("/bounds/{k}"),
                    format!("min {min} is greater than max {max}"),
                ));
            }
            bounds.insert(k.clone(), parsed);
        }
        Ok(Config { bounds, action })
    }

    fn transform(
        _ctx: &Context,
        config: &Config,
        mut objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        if config.action != Action::Clamp {
            return Ok(objects);
        }
        let hpa = autoscaled(&objects);
        for object in objects.iter_mut() {
            let Some(b) = applicable(object, config, &hpa) else {
                continue;
            };
            let current = replicas(object);
            let clamped = current
                .max(b.min.unwrap_or(0))
                .min(b.max.unwrap_or(u64::MAX));
            if clamped != current && !object.replace_at("/spec/replicas", json!(clamped)) {
                match object.get_mut("spec") {
                    Some(Value::Object(spec)) => {
                        spec.insert("replicas".to_owned(), json!(clamped));
                    }
                    _ => return Err(PolicyError::on(object, "spec is missing or not an object")),
                }
            }
        }
        Ok(objects)
    }

    fn validate(_ctx: &Context, config: &Config, objects: &[Object]) -> Vec<Violation> {
        if config.action != Action::Deny {
            return Vec::new();
        }
        let hpa = autoscaled(objects);
        let mut violations = Vec::new();
        for object in objects {
            let Some(b) = applicable(object, config, &hpa) else {
                continue;
            };
            let n = replicas(object);
            if let Some(min) = b.min.filter(|min| n < *min) {
                violations.push(Violation::deny(
                    object,
                    "/spec/replicas",
                    format!("{n} replicas is below the minimum of {min}"),
                ));
            }
            if let Some(max) = b.max.filter(|max| n > *max) {
                violations.push(Violation::deny(
                    object,
                    "/spec/replicas",
                    format!("{n} replicas is above the maximum of {max}"),
                ));
            }
        }
        violations
    }
}

gitops_policy_sdk::export_policy!(ReplicaBounds);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_point_at_the_field() {
        let e =
            ReplicaBounds::parse_config(&json!({"bounds": {"Deployment": {"min": 5, "max": 2}}}))
                .unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/bounds/Deployment"));
        let e =
            ReplicaBounds::parse_config(&json!({"bounds": {"Service": {"max": 2}}})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/bounds/Service"));
        let e = ReplicaBounds::parse_config(&json!({"bounds": {}, "action": "scale"})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/action"));
    }

    #[test]
    fn fixtures() {
        gitops_policy_sdk::testing::check_fixtures::<ReplicaBounds>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/replica-bounds"
        ));
    }
}
