//! kube-runtime controllers wiring the stages; status, events, metrics.
//!
//! - [`gitrepository`]: the GitRepository controller (fetch, artifact, status, events);
//! - [`kustomization`]: the Kustomization controller (the pipeline of stages);
//! - [`render`]: artifact → build → policies → plan, shared with the CLI's build and diff;
//! - [`common`]: what both controllers share: the status writer, the reconcile timer, the span,
//!   the jitter, the event publisher;
//! - [`fetch`]: getting a source's artifact into a temporary directory;
//! - [`metrics`] and [`ops`]: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`;
//! - [`lease`]: leader election with a coordination.k8s.io Lease;
//! - [`watch`]: watch failure logs, shutdown before a sync (the reconnect backoff is
//!   [`crate::backoff`]).

pub mod clusterpolicy_status;
pub mod common;
pub mod fetch;
pub mod gitrepository;
pub mod kustomization;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod render;
pub mod watch;
