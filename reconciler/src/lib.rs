//! kubectl-gitops reconciler library: the API types and every stage of the pipeline, shared by
//! the in-cluster `gitops-reconciler` binary and the `kubectl-gitops` CLI.
//!
//! Stages (docs/architecture.md): [`source`] → [`build`] → [`policy`] → [`apply`], wired by [`controller`].

#![deny(missing_docs)]

pub mod api;
pub mod apply;
pub mod backoff;
pub mod build;
pub mod controller;
pub mod flags;
pub mod http_server;
pub mod net;
pub mod notify;
pub mod policy;
pub mod sops;
pub mod source;
pub mod yaml;
