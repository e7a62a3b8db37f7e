//! kubectl-gitops reconciler library: the API types and every stage of the pipeline, shared by
//! the in-cluster `gitops-reconciler` binary and the `kubectl-gitops` CLI.

pub mod api;
pub mod yaml;
