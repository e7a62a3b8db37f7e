//! The WASI a policy guest sees: a deny-all context, and the few functions of it that could
//! otherwise wait or work without bound, replaced by versions that cannot.
//!
//! Guarantees (each has a hostile test in `reconciler/tests/policy/hostile.rs`):
//! - No host call outlives the call's deadline. Epoch interruption only stops *guest* code, so
//!   every WASI function that can wait is bounded here: `monotonic-clock.subscribe-duration`
//!   and `subscribe-instant` return a pollable that is already ready (time does not pass for a
//!   policy: the monotonic clock reads 0, so a sleep returns at once), and `poll.poll` and
//!   `pollable.block` wait at most until the call's deadline and then end the call with
//!   [`DeadlineReached`], which the host reports as the policy's timeout. The only other
//!   pollables a guest can obtain are those of stdin (closed), stdout (a sink) and stderr (a
//!   bounded capture), which are always ready; no files or sockets can be opened.
//! - `get-random-bytes` / `get-insecure-random-bytes` return at most [`MAX_RANDOM_BYTES`]
//!   bytes (constant ones); a larger request traps at once instead of making the host fill
//!   megabytes.
//! - What the guest writes to stderr is kept, its last [`STDERR_CAPTURE_BYTES`] (a Rust panic
//!   message is written last, just before the trap), for the error a trap is reported with.
//!
//! Caveat: the shadowed functions are registered under the WASI version the linked
//! `wasmtime-wasi` implements ([`WASI_VERSION`]); guests importing older 0.2 versions are
//! matched to them by semver, as to every other WASI function.

use super::store::StoreState;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx};

/// The WASI 0.2 version `wasmtime-wasi` defines its interfaces under.
const WASI_VERSION: &str = "0.2.12";
/// Largest `get-random-bytes` / `get-insecure-random-bytes` request served.
pub(crate) const MAX_RANDOM_BYTES: u64 = 4096;
/// Bytes of a guest's stderr kept per call.
pub(crate) const STDERR_CAPTURE_BYTES: usize = 4096;

/// Ends a call whose host function would have waited past the call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("{function} waited until the call's deadline")]
pub(crate) struct DeadlineReached {
    /// The WASI function that was waiting.
    pub(crate) function: &'static str,
}

/// A WASI context that grants nothing: no preopened directories, empty environment and
/// arguments, closed stdin, discarded stdout, stderr captured (bounded) into `stderr`, no
/// network, a wall clock and a monotonic clock frozen at zero, and constant bytes for both
/// random interfaces (at most [`MAX_RANDOM_BYTES`] per request). This is what a guest's
/// standard library links against; it must not be a channel to the outside world or a source
/// of nondeterminism.
pub(crate) fn deny_all(stderr: &Capture) -> WasiCtx {
    WasiCtx::builder()
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(Deterministic::new(vec![0]))
        .insecure_random(Deterministic::new(vec![0]))
        .insecure_random_seed(0)
        .max_random_size(MAX_RANDOM_BYTES)
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// Links WASI (sync) into `linker`, with the functions that could wait replaced (see the
/// module docs).
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_VERSION}"))?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, StoreState>, (_,): (u64,)| {
            Ok((ready_pollable(store.data_mut().table())?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, StoreState>, (_,): (u64,)| {
            Ok((ready_pollable(store.data_mut().table())?,))
        },
    )?;
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_VERSION}"))?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, StoreState>,
         (pollables,): (Vec<Resource<DynPollable>>,)| {
            let deadline = store.data().deadline();
            let table = store.data_mut().table();
            let ready = until(deadline, "wasi:io/poll.poll", table.poll(pollables))??;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, StoreState>, (pollable,): (Resource<DynPollable>,)| {
            let deadline = store.data().deadline();
            let table = store.data_mut().table();
            until(
                deadline,
                "wasi:io/poll.pollable.block",
                table.block(pollable),
            )??;
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `wait` to completion or until `deadline`, whichever comes first.
fn until<F: Future>(
    deadline: Instant,
    function: &'static str,
    wait: F,
) -> Result<F::Output, DeadlineReached> {
    wasmtime_wasi::runtime::in_tokio(async {
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .map_err(|_| DeadlineReached { function })
    })
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready_pollable(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let ready = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, ready)
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The guest's stderr of one call: the last [`STDERR_CAPTURE_BYTES`] bytes are kept, earlier
/// ones are dropped (a write never fails and never waits).
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// What was kept, as text (invalid UTF-8 replaced), trimmed.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 uses this, and it is not linked.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let new = &bytes[bytes.len().saturating_sub(STDERR_CAPTURE_BYTES)..];
        let over = (kept.len() + new.len()).saturating_sub(STDERR_CAPTURE_BYTES);
        kept.drain(..over);
        kept.extend_from_slice(new);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_that_never_ends_ends_at_the_deadline() {
        let started = Instant::now();
        let e = until(
            started + Duration::from_millis(100),
            "wasi:io/poll.poll",
            std::future::pending::<()>(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "wasi:io/poll.poll waited until the call's deadline"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        assert_eq!(until(Instant::now(), "x", async { 7 }).ok(), Some(7));
    }

    #[test]
    fn stderr_keeps_its_last_bytes() {
        let mut capture = Capture::default();
        capture
            .write(Bytes::from(vec![b'a'; 3 * STDERR_CAPTURE_BYTES]))
            .unwrap();
        capture
            .write(Bytes::from_static(b"\npanicked: the message"))
            .unwrap();
        let text = capture.text();
        assert!(text.ends_with("panicked: the message"), "{text}");
        assert!(text.len() <= STDERR_CAPTURE_BYTES);
    }
}
