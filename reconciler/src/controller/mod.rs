//! kube-runtime controllers wiring the stages; status, events, metrics (issues 3 and 7).
pub mod gitrepository;
