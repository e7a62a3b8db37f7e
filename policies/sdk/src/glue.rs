//! Conversions between the WIT types and the SDK's types, used by [`crate::export_policy!`].
//! Compiled on every target so the conversions are checked and tested natively.

use crate::bindings::kubectl_gitops::policy::types as wit;
use crate::{
    ConfigError, Context, GroupKind, Metadata, Object, ObjectRef, Policy, PolicyError, PolicyKind,
    Severity, Value,
};

/// `metadata` export.
pub fn metadata<P: Policy>() -> wit::Metadata {
    let Metadata {
        name,
        version,
        description,
        kind,
        config_schema,
        kinds,
    } = P::metadata();
    wit::Metadata {
        name,
        version,
        description,
        kind: match kind {
            PolicyKind::Transform => wit::PolicyKind::Transform,
            PolicyKind::Validate => wit::PolicyKind::Validate,
            PolicyKind::Both => wit::PolicyKind::Both,
        },
        config_schema,
        kinds: kinds.map(|kinds| {
            kinds
                .into_iter()
                .map(|GroupKind { group, kind }| wit::GroupKind { group, kind })
                .collect()
        }),
    }
}

/// Parses the config document (an empty string counts as `null`).
fn parse_config_json(config: &str) -> Result<Value, ConfigError> {
    if config.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(config)
        .map_err(|e| ConfigError::new(format!("config is not valid JSON: {e}")))
}

fn config_error(e: ConfigError) -> wit::ConfigError {
    wit::ConfigError {
        message: e.message,
        path: e.path,
    }
}

/// `validate-config` export.
pub fn validate_config<P: Policy>(config: &str) -> Result<(), wit::ConfigError> {
    let value = parse_config_json(config).map_err(config_error)?;
    P::parse_config(&value).map(|_| ()).map_err(config_error)
}

fn context(ctx: wit::Context) -> Context {
    Context {
        kustomization_namespace: ctx.kustomization_namespace,
        kustomization_name: ctx.kustomization_name,
        source_revision: ctx.source_revision,
        target_namespace: ctx.target_namespace,
        dry_run: ctx.dry_run,
    }
}

fn object_ref(r: ObjectRef) -> wit::ObjectRef {
    wit::ObjectRef {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
    }
}

fn policy_error(e: PolicyError) -> wit::PolicyError {
    wit::PolicyError {
        message: e.message,
        object: e.object.map(object_ref),
    }
}

/// Wraps each document the host passed; nothing is read until a policy uses an object (the
/// host only passes valid JSON objects, so a document that does not even start like one means
/// a broken host, reported as a policy error naming the index).
pub fn parse_objects(objects: Vec<String>) -> Result<Vec<Object>, PolicyError> {
    objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            Object::from_host_json(o).map_err(|e| PolicyError {
                message: format!("object #{i}: {e}"),
                object: None,
            })
        })
        .collect()
}

/// `transform` export.
pub fn transform<P: Policy>(
    ctx: wit::Context,
    config: &str,
    objects: Vec<String>,
) -> Result<Vec<String>, wit::PolicyError> {
    let config = parse_config_json(config)
        .and_then(|v| P::parse_config(&v))
        .map_err(|e| wit::PolicyError {
            message: format!("invalid config: {}", e.message),
            object: None,
        })?;
    let objects = parse_objects(objects).map_err(policy_error)?;
    let out = P::transform(&context(ctx), &config, objects).map_err(policy_error)?;
    Ok(out.into_iter().map(Object::into_json).collect())
}

/// `validate` export.
pub fn validate<P: Policy>(
    ctx: wit::Context,
    config: &str,
    objects: Vec<String>,
) -> Vec<wit::Violation> {
    let whole_set = |message: String| {
        vec![wit::Violation {
            object: None,
            field: None,
            message,
            severity: wit::Severity::Error,
        }]
    };
    let config = match parse_config_json(config).and_then(|v| P::parse_config(&v)) {
        Ok(c) => c,
        Err(e) => return whole_set(format!("invalid config: {}", e.message)),
    };
    let objects = match parse_objects(objects) {
        Ok(o) => o,
        Err(e) => return whole_set(e.message),
    };
    P::validate(&context(ctx), &config, &objects)
        .into_iter()
        .map(|v| wit::Violation {
            object: v.object.map(object_ref),
            field: v.field,
            message: v.message,
            severity: match v.severity {
                Severity::Error => wit::Severity::Error,
                Severity::Warning => wit::Severity::Warning,
            },
        })
        .collect()
}
