//! The accept-and-serve loop of every plain HTTP/1.1 server of the reconciler: artifacts
//! (`source::server`), the operations endpoints (`controller::ops`) and webhooks
//! (`notify::server`). One place for the header timeout, the pause after a failed accept and
//! the graceful shutdown.
//!
//! Expected flow: [`serve`] accepts until `shutdown` completes, serving each connection on its
//! own task with [`Server::service`]. Then it stops accepting, asks every open connection to
//! finish the request it is serving and close (idle keep-alive connections close at once), and
//! returns when all have closed or [`Server::shutdown_grace`] has passed.
//!
//! Guarantees: a client that closes its sending half after its request still gets the
//! answer; a client that does not send its request headers within
//! [`Server::header_read_timeout`] is disconnected, so a slow or silent client holds a
//! connection task for a bounded time only; an accept error (out of file descriptors, ...)
//! never ends the loop: it is logged and retried after [`ACCEPT_RETRY`]; shutdown is bounded by
//! the grace period.
//!
//! Caveats: connections still open when the grace period ends are not waited for; their tasks
//! end with the runtime. A request body is not bounded in time here: handlers bound their own
//! reads.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long [`serve`] waits after a failed accept before it accepts again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The header timeout servers use unless they have a reason to differ.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight, unless a server says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One server: what it is called in logs, its bounds and the service that answers requests.
#[derive(Clone, Debug)]
pub struct Server<S> {
    /// Names the server in log lines (`artifact`, `operations`, `webhook`).
    pub name: &'static str,
    /// How long a client may take to send a request's headers before it is disconnected.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for the requests in flight to finish.
    pub shutdown_grace: Duration,
    /// Answers the requests; cloned for every connection.
    pub service: S,
}

impl<S> Server<S> {
    /// A server with the default header timeout and shutdown grace.
    pub fn new(name: &'static str, service: S) -> Self {
        Server {
            name,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            service,
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then shuts down gracefully (see
/// the module documentation for the flow and its bounds).
pub async fn serve<S, B>(
    listener: TcpListener,
    server: Server<S>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let name = server.name;
    // Every connection task holds a receiver until its connection has closed: `closed()` on
    // the sender completes when the last one is dropped.
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = server.service.clone();
        let header_read_timeout = server.header_read_timeout;
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                // A client may close its sending half once its request is sent (`nc`, some
                // probes) and still wait for the answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(server = name, error = %e, "connection ended with an error");
            }
            drop(stopping);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    if tokio::time::timeout(server.shutdown_grace, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            server = name,
            connections = stop.receiver_count(),
            grace = ?server.shutdown_grace,
            "connections still open after the shutdown grace period; not waiting for them"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    use super::*;

    /// A server whose every request waits for `release` before it answers `ok`.
    async fn start(
        release: Arc<Notify>,
        grace: Duration,
    ) -> (
        std::net::SocketAddr,
        Arc<Notify>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let mut server = Server::new("test", service);
        server.header_read_timeout = Duration::from_millis(300);
        server.shutdown_grace = grace;
        let shutdown = Arc::new(Notify::new());
        let signal = shutdown.clone();
        let task = tokio::spawn(serve(listener, server, async move {
            signal.notified().await;
        }));
        (addr, shutdown, task)
    }

    /// A connection whose request the server is handling (and holds until released).
    async fn request_in_flight(addr: std::net::SocketAddr) -> TcpStream {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        client
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_in_flight_finishes_after_shutdown_began() {
        let release = Arc::new(Notify::new());
        let (addr, shutdown, task) = start(release.clone(), Duration::from_secs(5)).await;
        let mut client = request_in_flight(addr).await;
        shutdown.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !task.is_finished(),
            "shutdown waits for the request in flight"
        );
        release.notify_one();
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns once the connection closed")
            .unwrap();
        // No longer accepting.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_requests_after_the_grace_period() {
        let release = Arc::new(Notify::new());
        let (addr, shutdown, task) = start(release, Duration::from_millis(200)).await;
        let _client = request_in_flight(addr).await;
        shutdown.notify_one();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("serve returns after the grace period though a request never ends")
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
        // `printf 'GET ...' | nc host port` closes its sending half once the request is sent;
        // the answer must still come when the handler takes a while.
        let release = Arc::new(Notify::new());
        let (addr, _shutdown, _task) = start(release.clone(), Duration::from_secs(5)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.notify_one();
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}");
        assert!(answer.ends_with("ok"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_client_silent_past_the_header_timeout_is_disconnected() {
        let release = Arc::new(Notify::new());
        let (addr, _shutdown, _task) = start(release, Duration::from_secs(5)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let answer = read_all(&mut client).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
            "disconnected after {waited:?}: {answer}"
        );
    }
}
