//! Tests of the policy host (`gitops_reconciler::policy`) with real components: the built-ins
//! on their shared fixtures, hostile modules against the limits, and the compiled-module cache.
//! One test binary (wasmtime makes each one large to link).

mod builtins;
mod cache;
mod compile;
mod fuzz;
mod given;
mod hostile;
mod python;
#[path = "../../src/policy/strategies.rs"]
mod strategies;
mod suite;
mod support;
