//! Errors of the policy stage.

use super::{ObjectRef, Violation};
use crate::api::conditions::reasons;
use std::time::Duration;

/// A policy that could not be loaded or run. Every variant names the step (`policy`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The engine could not be created (bad host configuration).
    #[error("policy host: {0}")]
    Engine(String),
    /// `builtin:` names no built-in policy.
    #[error(
        "policy {policy}: unknown builtin {name:?} (expected image-pinning, replica-bounds or target-namespace)"
    )]
    UnknownBuiltin {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The name after `builtin:`.
        name: String,
    },
    /// The declared sha256 is not 64 lowercase hex characters.
    #[error("policy {policy}: sha256 {sha256:?} is not 64 lowercase hex characters")]
    BadDigest {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The declared digest.
        sha256: String,
    },
    /// The bytes do not hash to the declared sha256.
    #[error(
        "policy {policy}: module digest mismatch: spec says sha256 {expected}, the bytes hash to {actual}"
    )]
    DigestMismatch {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The declared sha256.
        expected: String,
        /// The sha256 of the bytes.
        actual: String,
    },
    /// The component is larger than the host accepts.
    #[error("policy {policy}: module is {size} bytes, over the limit of {limit} bytes")]
    ModuleTooLarge {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The module's size, in bytes.
        size: usize,
        /// The size limit, in bytes.
        limit: usize,
    },
    /// Compiling did not finish within the compile-time bound.
    #[error("policy {policy}: compiling the module took longer than {limit:?}")]
    CompileTimeout {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The compile-time bound.
        limit: Duration,
    },
    /// Not compiled now: earlier compilations that exceeded the compile timeout are still
    /// running (of this tenant, or too many in all). Retried later.
    #[error(
        "policy {policy}: not compiled now: {tenant_overdue} compilation(s) of this tenant and {overdue} in all exceeded the compile timeout and are still running"
    )]
    CompileBusy {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// Overdue compilations of this tenant still running.
        tenant_overdue: usize,
        /// Overdue compilations still running, all tenants.
        overdue: usize,
    },
    /// The tenant already compiles another component (one at a time each). Retried later.
    #[error(
        "policy {policy}: not compiled now: its tenant (namespace {tenant:?}) is compiling another component, and compiles one at a time"
    )]
    TenantCompiling {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The tenant (the Kustomization's namespace).
        tenant: String,
    },
    /// No instance slot became free before the call's deadline. Retried later.
    #[error("policy {policy}: {operation} did not start before its deadline: {reason}")]
    NoInstanceSlot {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The guest function called (`validate-config`, `transform`, `validate`).
        operation: &'static str,
        /// Why no slot was free.
        reason: String,
    },
    /// Not a component, or not one of the `policy` world (missing/mistyped export).
    #[error("policy {policy}: not a valid policy component: {reason}")]
    InvalidComponent {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// What is missing or mistyped.
        reason: String,
    },
    /// The component imports something the host does not grant.
    #[error(
        "policy {policy}: the module imports {import:?}, which the host does not grant (only the log interface and the deny-all WASI interfaces a standard library links against)"
    )]
    ImportDenied {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The import's name.
        import: String,
    },
    /// `validate-config` refused the configuration.
    #[error("policy {policy}: invalid config{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    InvalidConfig {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// Where in the configuration, when the policy said.
        path: Option<String>,
        /// The policy's message.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("policy {policy}: {operation} exceeded its deadline of {deadline:?}")]
    Timeout {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The guest function called (`validate-config`, `transform`, `validate`).
        operation: &'static str,
        /// The call's deadline.
        deadline: Duration,
    },
    /// The instance tried to grow its memory past the cap.
    #[error("policy {policy}: {operation} exceeded its memory limit of {limit} bytes")]
    MemoryExhausted {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The guest function called (`validate-config`, `transform`, `validate`).
        operation: &'static str,
        /// The memory cap, in bytes.
        limit: usize,
    },
    /// The instance trapped (panic, `unreachable`, stack overflow, out-of-bounds access, ...).
    #[error("policy {policy}: {operation} trapped: {trap}")]
    Trap {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The guest function called (`validate-config`, `transform`, `validate`).
        operation: &'static str,
        /// The trap's description.
        trap: String,
    },
    /// The output was larger than the cap (refused before the host copied it).
    #[error("policy {policy}: {operation} returned more than the output limit of {limit} bytes")]
    OutputTooLarge {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The guest function called (`validate-config`, `transform`, `validate`).
        operation: &'static str,
        /// The output cap, in bytes.
        limit: usize,
    },
    /// The output had more objects than the cap.
    #[error("policy {policy}: transform returned {count} objects, over the limit of {limit}")]
    TooManyObjects {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// How many objects it returned.
        count: usize,
        /// The object cap.
        limit: usize,
    },
    /// An output object is not a Kubernetes object as JSON, or breaks a limit every later
    /// reader applies (nesting, number range, Unicode, size).
    #[error(
        "policy {policy} (step {step} of the pipeline): transform returned a malformed object at index {index}{}: {reason}",
        object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default()
    )]
    MalformedOutput {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// Position of the step in the pipeline, from 1.
        step: usize,
        /// Index of the object in the step's output, from 0.
        index: usize,
        /// The object, when its identity could be read.
        object: Option<Box<ObjectRef>>,
        /// What is malformed.
        reason: String,
    },
    /// The policy reported an error (WIT `policy-error`).
    #[error("policy {policy} failed{}: {message}", object.as_ref().map(|o| format!(" on {o}")).unwrap_or_default())]
    Failed {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The object the error is about, when the policy named one.
        object: Option<Box<ObjectRef>>,
        /// The policy's message.
        message: String,
    },
    /// A transform broke the tenancy rules.
    #[error("policy {policy}: transform output breaks tenancy: {object}: {reason}")]
    Tenancy {
        /// The step's name (`spec.policies[].name` or the ClusterPolicy's name).
        policy: String,
        /// The object that breaks the rules.
        object: Box<ObjectRef>,
        /// Which rule it breaks.
        reason: String,
    },
}

impl PolicyError {
    /// The step the error is about (empty for [`PolicyError::Engine`]).
    pub fn policy(&self) -> &str {
        match self {
            PolicyError::Engine(_) => "",
            PolicyError::UnknownBuiltin { policy, .. }
            | PolicyError::BadDigest { policy, .. }
            | PolicyError::DigestMismatch { policy, .. }
            | PolicyError::ModuleTooLarge { policy, .. }
            | PolicyError::CompileTimeout { policy, .. }
            | PolicyError::CompileBusy { policy, .. }
            | PolicyError::TenantCompiling { policy, .. }
            | PolicyError::NoInstanceSlot { policy, .. }
            | PolicyError::InvalidComponent { policy, .. }
            | PolicyError::ImportDenied { policy, .. }
            | PolicyError::InvalidConfig { policy, .. }
            | PolicyError::Timeout { policy, .. }
            | PolicyError::MemoryExhausted { policy, .. }
            | PolicyError::Trap { policy, .. }
            | PolicyError::OutputTooLarge { policy, .. }
            | PolicyError::TooManyObjects { policy, .. }
            | PolicyError::MalformedOutput { policy, .. }
            | PolicyError::Failed { policy, .. }
            | PolicyError::Tenancy { policy, .. } => policy,
        }
    }

    /// True for a bad spec (module, digest, config, tenancy): retrying the same spec and
    /// revision cannot help (the controller marks the Kustomization Stalled).
    pub fn is_stalling(&self) -> bool {
        !matches!(
            self,
            PolicyError::Engine(_)
                | PolicyError::CompileTimeout { .. }
                | PolicyError::CompileBusy { .. }
                | PolicyError::TenantCompiling { .. }
                | PolicyError::NoInstanceSlot { .. }
        )
    }

    /// A static label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::Engine(_) => "engine",
            PolicyError::UnknownBuiltin { .. } => "unknown_builtin",
            PolicyError::BadDigest { .. } | PolicyError::DigestMismatch { .. } => "digest",
            PolicyError::ModuleTooLarge { .. } => "module_too_large",
            PolicyError::CompileTimeout { .. }
            | PolicyError::CompileBusy { .. }
            | PolicyError::TenantCompiling { .. } => "compile_timeout",
            PolicyError::NoInstanceSlot { .. } => "no_instance_slot",
            PolicyError::InvalidComponent { .. } => "invalid_component",
            PolicyError::ImportDenied { .. } => "import_denied",
            PolicyError::InvalidConfig { .. } => "invalid_config",
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::MemoryExhausted { .. } => "memory",
            PolicyError::Trap { .. } => "trap",
            PolicyError::OutputTooLarge { .. } | PolicyError::TooManyObjects { .. } => {
                "output_too_large"
            }
            PolicyError::MalformedOutput { .. } => "malformed_output",
            PolicyError::Failed { .. } => "failed",
            PolicyError::Tenancy { .. } => "tenancy",
        }
    }
}

/// Why a pipeline produced no objects.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PipelineError {
    /// Validations denied the objects (condition reason PolicyDenied).
    #[error("denied by policy: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Denied {
        /// Every violation of severity error (and the warnings reported with them).
        violations: Vec<Violation>,
    },
    /// A policy failed to load or run (condition reason PolicyFailed).
    #[error(transparent)]
    Failed(#[from] PolicyError),
}

impl PipelineError {
    /// True when retrying the same spec and revision cannot help (the Kustomization is marked
    /// Stalled): a denial, or a policy failure that [`PolicyError::is_stalling`].
    pub fn is_stalling(&self) -> bool {
        match self {
            PipelineError::Denied { .. } => true,
            PipelineError::Failed(e) => e.is_stalling(),
        }
    }

    /// The condition reason: PolicyDenied or PolicyFailed.
    pub fn reason(&self) -> &'static str {
        match self {
            PipelineError::Denied { .. } => reasons::POLICY_DENIED,
            PipelineError::Failed(_) => reasons::POLICY_FAILED,
        }
    }
}
