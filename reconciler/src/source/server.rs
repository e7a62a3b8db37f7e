//! The artifact HTTP server: `GET /gitrepository/<namespace>/<name>/<sha256-hex>.tar.gz`.
//!
//! Guarantees: only paths of exactly that shape are served (anything else is 404, so nothing
//! outside the storage can be named); the bytes are re-hashed before they are sent and a file
//! whose content no longer matches its name is refused with 500 (and logged), never served;
//! only GET and HEAD are allowed. Reads run on the blocking pool.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::storage::Storage;
use crate::http_server::{self, Server};

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn handle(storage: Storage, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let path = request.uri().path().trim_start_matches('/').to_owned();
    if storage.resolve(&path).is_none() {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let read = tokio::task::spawn_blocking(move || storage.read_verified(&path)).await;
    match read {
        Ok(Ok(Some(bytes))) => {
            let length = bytes.len();
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(bytes)
            };
            let mut response = Response::new(Full::new(body));
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/gzip"),
            );
            headers.insert(hyper::header::CONTENT_LENGTH, length.into());
            response
        }
        Ok(Ok(None)) => plain(StatusCode::NOT_FOUND, "not found\n"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "refusing to serve an artifact");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "artifact failed verification\n",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "artifact read task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Serves `storage` on `listener` until `shutdown` completes, then lets the downloads in
/// flight finish within the shutdown grace ([`crate::http_server`]); downloads cut off after it
/// are retried by their consumers. Never fails (the `Result` is kept for callers).
pub async fn serve(
    listener: TcpListener,
    storage: Storage,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = hyper::service::service_fn(move |request| {
        let storage = storage.clone();
        async move { Ok::<_, Infallible>(handle(storage, request).await) }
    });
    http_server::serve(listener, Server::new("artifact", service), shutdown).await;
    Ok(())
}
