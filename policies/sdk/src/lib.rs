//! SDK for writing kubectl-gitops policies in Rust.
//!
//! A policy is a type implementing [`Policy`]: it parses its configuration once per call,
//! then rewrites ([`Policy::transform`]) and/or judges ([`Policy::validate`]) the objects of a
//! Kustomization's build. [`export_policy!`] turns such a type into a WebAssembly component
//! implementing the `kubectl-gitops:policy@0.2.0` world (`wit/policy.wit`); on any other target
//! the macro expands to nothing, so the same crate is an ordinary Rust library whose logic is
//! unit-tested natively with [`testing`].
//!
//! Objects arrive as [`Object`]s: JSON documents whose identity (kind, name, ...) is read
//! without parsing them, parsed into a `serde_json::Value` on first use and handed back
//! untouched unless changed, so a policy pays only for the objects it looks into. [`object`]
//! has helpers to read and edit them.

#![deny(missing_docs)]

pub mod given;
pub mod object;
pub mod testing;

#[doc(hidden)]
pub mod glue;

/// The bindings generated from `wit/policy.wit`, for authors who want the raw contract.
// Generated code: the canonical-ABI glue takes one argument per flattened value, lowers values
// with unsafe code, and documents only what the WIT file documents.
#[allow(clippy::too_many_arguments, unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_component",
        default_bindings_module: "gitops_policy_sdk::bindings",
    });
}

pub use object::{Identity, Object};
pub use serde_json::{self, Value, json};

/// Where a call comes from (WIT `context`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Namespace of the Kustomization.
    pub kustomization_namespace: String,
    /// Name of the Kustomization.
    pub kustomization_name: String,
    /// Revision of the source artifact; empty when run on a local directory.
    pub source_revision: String,
    /// `spec.targetNamespace`, if set.
    pub target_namespace: Option<String>,
    /// True when the result is only shown, not applied.
    pub dry_run: bool,
}

/// Which operations a policy performs (WIT `policy-kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Only `transform` is called.
    Transform,
    /// Only `validate` is called.
    Validate,
    /// `transform`, then (after every transform of the pipeline) `validate`.
    Both,
}

/// What a policy says about itself (WIT `metadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Short name, e.g. `image-pinning`.
    pub name: String,
    /// Semver version of the policy.
    pub version: String,
    /// One sentence on what the policy does.
    pub description: String,
    /// Which operations are called.
    pub kind: PolicyKind,
    /// JSON Schema of the configuration, as a JSON document.
    pub config_schema: Option<String>,
    /// The kinds of object the policy is given; `None` for every object (see [`given`]).
    pub kinds: Option<Vec<GroupKind>>,
}

/// A kind of object by API group and kind (WIT `group-kind`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKind {
    /// The API group (`""` for the core group).
    pub group: String,
    /// The kind.
    pub kind: String,
}

impl GroupKind {
    /// `group`/`kind`.
    pub fn new(group: &str, kind: &str) -> GroupKind {
        GroupKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// True for an object of this group and kind.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.kind == kind && self.group == object::api_group(api_version)
    }
}

impl std::fmt::Display for GroupKind {
    /// `Kind.group`, or just `Kind` for the core group (as `kubectl` names resources).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// Identifies an object in messages (WIT `object-ref`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// The reference of `object` (empty strings for missing fields).
    pub fn of<O: Identity + ?Sized>(object: &O) -> ObjectRef {
        ObjectRef {
            api_version: object.api_version().to_owned(),
            kind: object.kind().to_owned(),
            namespace: object.namespace().map(str::to_owned),
            name: object.name().to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A configuration the policy refuses (WIT `config-error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong, for a person.
    pub message: String,
    /// JSON pointer to the offending field, if known.
    pub path: Option<String>,
}

impl ConfigError {
    /// An error about the field at JSON pointer `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            path: Some(path.into()),
        }
    }

    /// An error about the config as a whole.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            path: None,
        }
    }
}

/// A failure to do the work (WIT `policy-error`), as opposed to a denial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// What went wrong.
    pub message: String,
    /// The object being processed, if any.
    pub object: Option<ObjectRef>,
}

impl PolicyError {
    /// An error while processing `object`.
    pub fn on<O: Identity + ?Sized>(object: &O, message: impl Into<String>) -> PolicyError {
        PolicyError {
            message: message.into(),
            object: Some(ObjectRef::of(object)),
        }
    }
}

/// How serious a violation is (WIT `severity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Denies the revision.
    Error,
    /// Reported only.
    Warning,
}

/// One finding of `validate` (WIT `violation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The object the finding is about.
    pub object: Option<ObjectRef>,
    /// JSON pointer into the object.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Whether it denies.
    pub severity: Severity,
}

impl Violation {
    /// A denying finding about `field` (a JSON pointer) of `object`.
    pub fn deny<O: Identity + ?Sized>(
        object: &O,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Violation {
        Violation {
            object: Some(ObjectRef::of(object)),
            field: Some(field.into()),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A non-denying finding about `field` of `object`.
    pub fn warn<O: Identity + ?Sized>(
        object: &O,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Violation {
        Violation {
            severity: Severity::Warning,
            ..Violation::deny(object, field, message)
        }
    }
}

/// Log levels of the host's `log` import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Debugging.
    Debug,
    /// Normal.
    Info,
    /// Unexpected but handled.
    Warn,
    /// Failed.
    Error,
}

/// Writes a log line through the host (rate-limited there). Natively (unit tests) the line
/// goes to [`testing::take_logs`].
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use bindings::kubectl_gitops::policy::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::record_log(level, message);
}

/// A policy. Implement it on a unit struct and pass the struct to [`export_policy!`].
///
/// The host calls, per pipeline run: [`Policy::parse_config`] (via `validate-config`) when the
/// step is loaded, then `parse_config` again inside each `transform`/`validate` call (every
/// call is a fresh instance), then the operation. Keep the logic in these methods (plain Rust)
/// so it runs the same natively in tests and as a component.
pub trait Policy {
    /// The parsed configuration.
    type Config;

    /// Describes the policy.
    fn metadata() -> Metadata;

    /// Parses and checks the configuration (`Value::Null` when unset).
    fn parse_config(config: &Value) -> Result<Self::Config, ConfigError>;

    /// Rewrites the objects. The default returns them unchanged.
    ///
    /// Objects not borrowed mutably go back as the exact text they came in, without being
    /// serialized; check [`Identity`] (kind, name, ...) before reading an object's document.
    fn transform(
        _ctx: &Context,
        _config: &Self::Config,
        objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        Ok(objects)
    }

    /// Judges the objects. The default finds nothing.
    fn validate(_ctx: &Context, _config: &Self::Config, _objects: &[Object]) -> Vec<Violation> {
        Vec::new()
    }
}

/// Exports a [`Policy`] implementation as the `kubectl-gitops:policy@0.2.0` component.
///
/// ```ignore
/// struct MyPolicy;
/// impl gitops_policy_sdk::Policy for MyPolicy { /* ... */ }
/// gitops_policy_sdk::export_policy!(MyPolicy);
/// ```
/// Expands to nothing unless compiling for `wasm32`, so native builds and tests of the crate
/// carry no component exports.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Component;
            impl $crate::bindings::Guest for Component {
                fn metadata() -> $crate::bindings::kubectl_gitops::policy::types::Metadata {
                    $crate::glue::metadata::<$policy>()
                }
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::std::result::Result<
                    (),
                    $crate::bindings::kubectl_gitops::policy::types::ConfigError,
                > {
                    $crate::glue::validate_config::<$policy>(&config)
                }
                fn transform(
                    context: $crate::bindings::kubectl_gitops::policy::types::Context,
                    config: ::std::string::String,
                    objects: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    $crate::bindings::kubectl_gitops::policy::types::PolicyError,
                > {
                    $crate::glue::transform::<$policy>(context, &config, objects)
                }
                fn validate(
                    context: $crate::bindings::kubectl_gitops::policy::types::Context,
                    config: ::std::string::String,
                    objects: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::vec::Vec<$crate::bindings::kubectl_gitops::policy::types::Violation>
                {
                    $crate::glue::validate::<$policy>(context, &config, objects)
                }
            }
    $crate::bindings::export_component!(Component with_types_in $crate::bindings);
        };
    };
}
