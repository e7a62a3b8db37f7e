//! The operations endpoints: `/metrics` on the metrics address, `/healthz` and `/readyz` on the
//! health address. Plain HTTP/1.1 with hyper; everything else is 404.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use crate::http_server::{self, Server};

/// Readiness of the process: ready once the controllers have started (and, with leader
/// election, also while waiting for the lease: a standby replica is healthy).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets what `/readyz` answers: 200 when `ready`, 503 otherwise.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// The current readiness.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn route(metrics: &Metrics, readiness: &Readiness, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(
            StatusCode::OK,
            metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" if readiness.get() => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", "text/plain"),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// Serves the operations endpoints on `listener` until `shutdown` completes (then as
/// [`crate::http_server::serve`] shuts down).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = route(&metrics, &readiness, request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    http_server::serve(listener, Server::new("operations", service), shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::default();
        let readiness = Readiness::default();
        assert_eq!(
            route(&metrics, &readiness, "/healthz").status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&metrics, &readiness, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(
            route(&metrics, &readiness, "/readyz").status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&metrics, &readiness, "/metrics").status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&metrics, &readiness, "/etc/passwd").status(),
            StatusCode::NOT_FOUND
        );
    }
}
