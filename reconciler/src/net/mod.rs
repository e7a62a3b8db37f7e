//! Outbound HTTP that is not the Kubernetes API: [`https`] builds the one kind of client that
//! policy module downloads and alert deliveries share.

pub mod https;
