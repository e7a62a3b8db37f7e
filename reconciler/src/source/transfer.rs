//! Bounds on a fetch while its bytes arrive: every byte the server sends passes through a
//! [`GuardedReader`] that counts it, follows the pkt-line framing down to the pack, reads each
//! pack entry's header (type and unpacked size, before the entry's data) and stops the fetch as
//! soon as a [`Limit`] is exceeded, the deadline passes or the fetch is cancelled.
//!
//! Expected flow: the fetch creates one [`Guard`] (its [`FetchControl`], deadline and limits);
//! each transport wraps every response body in a [`GuardedReader`] over that guard; gix reads
//! through it and writes the pack to disk as it arrives. When the guard trips, the reader
//! returns an error instead of the bytes that tripped it and sets the control's interrupt flag
//! (which gix's pack writer checks too), so gix unwinds: its temporary pack file and its locks
//! are removed by their drop guards.
//!
//! Guarantees: a limit trips before the object that exceeds it is handed to gix (the entry
//! header comes first), so gix never holds an object larger than the file-size limit in memory;
//! a blocked read of the transport never delays a stop: the transport's reads run on a relay
//! thread and the reading side waits for them in slices of [`POLL`], re-checking the
//! deadline and the control each time; the relay holds at most `RELAY_CHUNKS` chunks of
//! `CHUNK` bytes. The first cause recorded wins ([`FetchControl::stop`]), so the condition
//! names the real cause, not the errors that unwinding causes afterwards.
//!
//! Caveats: the relay thread of a stopped fetch stays blocked in the transport's read until
//! the server sends its next bytes or closes, or curl's low-speed limit fires (about the fetch's
//! timeout); it holds no lock and no file, only the connection. The pack is parsed for SHA-1
//! repositories (20-byte ids); anything the scanner cannot follow is counted as bytes only and
//! left to gix to refuse.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::protocol::transport::client::blocking_io::http::curl::Curl;
use gix::protocol::transport::client::blocking_io::http::{
    GetResponse, Http, PostBodyDataKind, PostResponse,
};

use super::limits::{Limit, LimitExceeded, SourceLimits};

/// How often a waiting read re-checks the deadline and the control.
pub const POLL: Duration = Duration::from_millis(50);
/// Bytes read from the transport at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks the relay may read ahead.
const RELAY_CHUNKS: usize = 4;

/// Why a fetch was cancelled from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelCause {
    /// The GitRepository's spec changed while it was fetching.
    SpecChanged,
    /// The GitRepository was deleted.
    Deleted,
    /// The reconciler is shutting down.
    Shutdown,
}

impl std::fmt::Display for CancelCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelCause::SpecChanged => "the spec changed",
            CancelCause::Deleted => "the GitRepository was deleted",
            CancelCause::Shutdown => "the reconciler is shutting down",
        })
    }
}

/// Why a fetch stopped early: the first cause recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The fetch's deadline passed (the duration is `spec.timeout`).
    Timeout(Duration),
    /// A size or count limit was reached.
    Limit(LimitExceeded),
    /// The controller cancelled the fetch.
    Cancelled(CancelCause),
}

/// The stop switch of one fetch, shared by the controller (which cancels) and the fetch (which
/// checks it everywhere it waits or loops).
#[derive(Debug, Default)]
pub struct FetchControl {
    interrupt: AtomicBool,
    cause: Mutex<Option<Stop>>,
}

impl FetchControl {
    /// A control with no cause recorded and the flag down, shared from the start.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records `cause` (unless an earlier cause is recorded) and raises the interrupt flag.
    pub fn stop(&self, cause: Stop) {
        if let Ok(mut slot) = self.cause.lock()
            && slot.is_none()
        {
            *slot = Some(cause);
        }
        self.interrupt.store(true, Ordering::SeqCst);
    }

    /// The flag gix and the tree walk check.
    pub fn flag(&self) -> &AtomicBool {
        &self.interrupt
    }

    /// True once any cause was recorded.
    pub fn is_stopped(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// The first cause recorded, if any.
    pub fn cause(&self) -> Option<Stop> {
        self.cause.lock().ok().and_then(|c| c.clone())
    }
}

/// What every reader of one fetch shares: the control, the deadline, the limits and the
/// running byte count.
#[derive(Debug)]
pub struct Guard {
    control: Arc<FetchControl>,
    deadline: Instant,
    timeout: Duration,
    limits: SourceLimits,
    received: AtomicU64,
}

impl Guard {
    /// The guard of one fetch: `deadline` is when `timeout` (reported in errors) runs out.
    pub fn new(
        control: Arc<FetchControl>,
        timeout: Duration,
        deadline: Instant,
        limits: SourceLimits,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            deadline,
            timeout,
            limits,
            received: AtomicU64::new(0),
        })
    }

    /// The control this guard stops.
    pub fn control(&self) -> &Arc<FetchControl> {
        &self.control
    }

    /// When the fetch must have ended.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// An error when the fetch must stop now (deadline passed or stopped).
    fn check(&self) -> io::Result<()> {
        if Instant::now() >= self.deadline {
            self.control.stop(Stop::Timeout(self.timeout));
        }
        if self.control.is_stopped() {
            return Err(stopped_error());
        }
        Ok(())
    }

    fn trip(&self, exceeded: LimitExceeded) -> io::Error {
        self.control.stop(Stop::Limit(exceeded));
        stopped_error()
    }

    fn count(&self, n: usize) -> io::Result<()> {
        let total = self.received.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let max = self.limits.max_received_bytes;
        if total > max {
            return Err(self.trip(LimitExceeded {
                limit: Limit::ReceivedBytes,
                max,
                value: total,
                at: None,
            }));
        }
        Ok(())
    }
}

/// Not `ErrorKind::Interrupted`: readers retry on that (`read_to_end`, `io::copy`), which
/// would spin on a stopped fetch.
fn stopped_error() -> io::Error {
    io::Error::other("fetch stopped")
}

/// A response body read through a [`Guard`]: counted, scanned for the pack, and interruptible
/// whatever the transport below does.
pub struct GuardedReader {
    incoming: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    scanner: Option<PackScanner>,
    guard: Arc<Guard>,
    ended: bool,
}

impl GuardedReader {
    /// Wraps a response body (`scan`: follow it down to the pack) or headers (count only).
    pub fn new<R: Read + Send + 'static>(mut inner: R, guard: Arc<Guard>, scan: bool) -> Self {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(RELAY_CHUNKS);
        let relay = move || {
            loop {
                let mut buf = vec![0; CHUNK];
                let result = match inner.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let last = !matches!(&result, Ok(b) if !b.is_empty());
                // A send error means the reading side is gone: stop reading the transport.
                if tx.send(result).is_err() || last {
                    return;
                }
            }
        };
        let spawned = std::thread::Builder::new()
            .name("gitops-fetch-relay".to_owned())
            .spawn(relay);
        let incoming = match spawned {
            Ok(_) => rx,
            Err(e) => {
                // Without a relay there is nothing to read from: fail the reads.
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(io::Error::other(format!(
                    "cannot start the transfer thread: {e}"
                ))));
                rx
            }
        };
        Self {
            incoming,
            chunk: Vec::new(),
            pos: 0,
            scanner: scan.then(|| PackScanner::new(guard.limits.clone())),
            guard,
            ended: false,
        }
    }
}

/// gix's curl HTTP client with every response (headers and body) read through a
/// [`GuardedReader`].
pub struct GuardedHttp {
    inner: Curl,
    guard: Arc<Guard>,
}

impl GuardedHttp {
    /// A curl client whose every response is read through `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        Self {
            inner: Curl::default(),
            guard,
        }
    }
}

impl Http for GuardedHttp {
    type Headers = GuardedReader;
    type ResponseBody = GuardedReader;
    type PostBody = <Curl as Http>::PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::Result<GetResponse<Self::Headers, Self::ResponseBody>> {
        let response = self.inner.get(url, base_url, headers)?;
        Ok(GetResponse {
            headers: GuardedReader::new(response.headers, self.guard.clone(), false),
            body: GuardedReader::new(response.body, self.guard.clone(), true),
        })
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        body: PostBodyDataKind,
    ) -> gix::Result<PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>> {
        let response = self.inner.post(url, base_url, headers, body)?;
        Ok(PostResponse {
            post_body: response.post_body,
            headers: GuardedReader::new(response.headers, self.guard.clone(), false),
            body: GuardedReader::new(response.body, self.guard.clone(), true),
        })
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::Result {
        self.inner.configure(config)
    }

    fn redirected_base_url(&self) -> Option<String> {
        self.inner.redirected_base_url()
    }
}

impl BufRead for GuardedReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.guard.check()?;
        while self.pos >= self.chunk.len() && !self.ended {
            match self.incoming.recv_timeout(POLL) {
                Ok(Ok(data)) if data.is_empty() => self.ended = true,
                Ok(Ok(data)) => {
                    self.guard.count(data.len())?;
                    if let Some(scanner) = &mut self.scanner
                        && let Err(exceeded) = scanner.feed(&data)
                    {
                        return Err(self.guard.trip(exceeded));
                    }
                    self.chunk = data;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => self.guard.check()?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the transfer thread ended",
                    ));
                }
            }
        }
        Ok(&self.chunk[self.pos.min(self.chunk.len())..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}

impl Read for GuardedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Largest pkt-line payload (65520 minus the 4 length bytes).
const MAX_PKT_PAYLOAD: usize = 65516;
/// Length of an object id in the pack (SHA-1).
const HASH_LEN: usize = 20;

/// How the stream is framed at the current position.
#[derive(Debug)]
enum Framing {
    /// Reading a pkt-line's 4-byte length.
    Length(Vec<u8>),
    /// Reading a payload of this many more bytes into `line`.
    Payload(usize),
    /// Pack bytes without pkt-lines (a server without side-band).
    Raw,
    /// Not something the scanner follows: only the byte count applies.
    Opaque,
}

/// Follows a git protocol response (pkt-lines, side-band) to the pack and parses the pack's
/// entry headers as the bytes arrive. Memory: one pkt-line (≤ 64 KiB) plus the inflate state.
#[derive(Debug)]
pub struct PackScanner {
    framing: Framing,
    line: Vec<u8>,
    /// Side-band framing is on: band 1 of each pkt-line is pack data.
    sideband: bool,
    pack: PackParser,
}

impl PackScanner {
    /// A scanner at the start of a response, checking the pack against `limits`.
    pub fn new(limits: SourceLimits) -> Self {
        Self {
            framing: Framing::Length(Vec::with_capacity(4)),
            line: Vec::new(),
            sideband: false,
            pack: PackParser::new(limits),
        }
    }

    /// Scans `data`; an error when a limit is exceeded.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), LimitExceeded> {
        while !data.is_empty() {
            match &mut self.framing {
                Framing::Opaque => return Ok(()),
                Framing::Raw => return self.pack_data(data),
                Framing::Length(head) => {
                    let take = (4 - head.len()).min(data.len());
                    head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if head.len() < 4 {
                        continue;
                    }
                    let head = std::mem::take(head);
                    if head == b"PACK" {
                        self.framing = Framing::Raw;
                        self.pack_data(&head)?;
                        continue;
                    }
                    let len = std::str::from_utf8(&head)
                        .ok()
                        .and_then(|s| usize::from_str_radix(s, 16).ok());
                    self.framing = match len {
                        // flush, delimiter, response-end
                        Some(0..=2) => Framing::Length(Vec::with_capacity(4)),
                        Some(n) if n > 4 && n - 4 <= MAX_PKT_PAYLOAD => {
                            self.line.clear();
                            Framing::Payload(n - 4)
                        }
                        _ => Framing::Opaque,
                    };
                }
                Framing::Payload(remaining) => {
                    let take = (*remaining).min(data.len());
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        self.framing = Framing::Length(Vec::with_capacity(4));
                        let line = std::mem::take(&mut self.line);
                        self.on_line(&line)?;
                        self.line = line;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), LimitExceeded> {
        if !self.sideband {
            if line.strip_suffix(b"\n").unwrap_or(line) == b"packfile" {
                // Protocol v2: everything after the "packfile" section header is side-band.
                self.sideband = true;
                return Ok(());
            }
            if line.len() >= 5 && line[0] == 1 && &line[1..5] == b"PACK" {
                // Protocol v1 with side-band: the first band-1 line starts the pack.
                self.sideband = true;
            } else {
                return Ok(());
            }
        }
        match line.first() {
            Some(1) => self.pack_data(&line[1..]),
            _ => Ok(()),
        }
    }

    fn pack_data(&mut self, data: &[u8]) -> Result<(), LimitExceeded> {
        match self.pack.feed(data) {
            Ok(()) => Ok(()),
            Err(PackError::Limit(exceeded)) => Err(exceeded),
            Err(PackError::Unreadable) => {
                self.framing = Framing::Opaque;
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
enum PackError {
    Limit(LimitExceeded),
    /// The bytes are not a pack the parser can follow (gix will judge them).
    Unreadable,
}

impl From<LimitExceeded> for PackError {
    fn from(e: LimitExceeded) -> Self {
        Self::Limit(e)
    }
}

#[derive(Debug)]
enum PackState {
    /// The 12-byte pack header.
    Header(Vec<u8>),
    /// An entry's type-and-size header.
    EntryHeader(Vec<u8>),
    /// The base offset of an ofs-delta (varint).
    OfsBase,
    /// The base id of a ref-delta: this many bytes left.
    RefBase(usize),
    /// The entry's zlib stream.
    Data,
    /// After the last entry (the checksum): nothing more to check.
    Done,
}

/// Parses a pack stream entry by entry, inflating each entry only to find where it ends (the
/// output is discarded, except the first bytes of a delta, which hold its result size).
struct PackParser {
    state: PackState,
    limits: SourceLimits,
    objects: u64,
    seen: u64,
    /// Unpacked bytes of all entries so far (see [`Limit::TreeSize`]).
    total: u64,
    kind: u8,
    inflate: flate2::Decompress,
    delta_head: Vec<u8>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for PackParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackParser")
            .field("state", &self.state)
            .field("objects", &self.objects)
            .field("seen", &self.seen)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;
/// Bytes of a delta's output that always hold its two size varints.
const DELTA_HEAD: usize = 20;

impl PackParser {
    fn new(limits: SourceLimits) -> Self {
        Self {
            state: PackState::Header(Vec::with_capacity(12)),
            limits,
            objects: 0,
            seen: 0,
            total: 0,
            kind: 0,
            inflate: flate2::Decompress::new(true),
            delta_head: Vec::new(),
            scratch: vec![0; 32 * 1024],
        }
    }

    fn exceeded(&self, limit: Limit, value: u64) -> PackError {
        PackError::Limit(LimitExceeded {
            limit,
            max: self.limits.get(limit),
            value,
            at: Some(format!(
                "object {} of {} in the pack",
                self.seen, self.objects
            )),
        })
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), PackError> {
        while !data.is_empty() {
            match &mut self.state {
                PackState::Done => return Ok(()),
                PackState::Header(head) => {
                    let take = (12 - head.len()).min(data.len());
                    head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if head.len() == 12 {
                        let head = std::mem::take(head);
                        if &head[..4] != b"PACK" {
                            return Err(PackError::Unreadable);
                        }
                        self.objects =
                            u64::from(u32::from_be_bytes([head[8], head[9], head[10], head[11]]));
                        if self.objects > self.limits.max_objects {
                            return Err(PackError::Limit(LimitExceeded {
                                limit: Limit::Objects,
                                max: self.limits.max_objects,
                                value: self.objects,
                                at: None,
                            }));
                        }
                        self.state = self.next_entry();
                    }
                }
                PackState::EntryHeader(head) => {
                    let byte = data[0];
                    data = &data[1..];
                    head.push(byte);
                    if byte & 0x80 != 0 {
                        if head.len() > 10 {
                            return Err(PackError::Unreadable);
                        }
                        continue;
                    }
                    let head = std::mem::take(head);
                    let kind = (head[0] >> 4) & 7;
                    let mut size = u64::from(head[0] & 15);
                    for (i, b) in head[1..].iter().enumerate() {
                        size |= u64::from(b & 0x7f) << (4 + 7 * i);
                    }
                    self.seen += 1;
                    self.kind = kind;
                    self.state = match kind {
                        1..=4 => {
                            self.account(size)?;
                            PackState::Data
                        }
                        OBJ_OFS_DELTA => PackState::OfsBase,
                        OBJ_REF_DELTA => PackState::RefBase(HASH_LEN),
                        _ => return Err(PackError::Unreadable),
                    };
                    self.inflate.reset(true);
                    self.delta_head.clear();
                }
                PackState::OfsBase => {
                    let byte = data[0];
                    data = &data[1..];
                    if byte & 0x80 == 0 {
                        self.state = PackState::Data;
                    }
                }
                PackState::RefBase(left) => {
                    let take = (*left).min(data.len());
                    data = &data[take..];
                    *left -= take;
                    if *left == 0 {
                        self.state = PackState::Data;
                    }
                }
                PackState::Data => {
                    let before_in = self.inflate.total_in();
                    let before_out = self.inflate.total_out();
                    let status = self
                        .inflate
                        .decompress(data, &mut self.scratch, flate2::FlushDecompress::None)
                        .map_err(|_| PackError::Unreadable)?;
                    let used = (self.inflate.total_in() - before_in) as usize;
                    let produced = (self.inflate.total_out() - before_out) as usize;
                    data = &data[used.min(data.len())..];
                    let is_delta = self.kind == OBJ_OFS_DELTA || self.kind == OBJ_REF_DELTA;
                    if is_delta && self.delta_head.len() < DELTA_HEAD {
                        let want = (DELTA_HEAD - self.delta_head.len()).min(produced);
                        self.delta_head.extend_from_slice(&self.scratch[..want]);
                    }
                    let ended = status == flate2::Status::StreamEnd;
                    if is_delta && (ended || self.delta_head.len() >= DELTA_HEAD) {
                        self.account_delta()?;
                    }
                    if ended {
                        self.state = self.next_entry();
                    } else if used == 0 && produced == 0 {
                        return Err(PackError::Unreadable);
                    }
                }
            }
        }
        Ok(())
    }

    fn next_entry(&self) -> PackState {
        if self.seen >= self.objects {
            PackState::Done
        } else {
            PackState::EntryHeader(Vec::with_capacity(10))
        }
    }

    /// Checks one object's unpacked size and adds it to the running total.
    fn account(&mut self, size: u64) -> Result<(), PackError> {
        if size > self.limits.max_file_bytes {
            return Err(self.exceeded(Limit::FileSize, size));
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_tree_bytes {
            return Err(self.exceeded(Limit::TreeSize, self.total));
        }
        Ok(())
    }

    /// Reads a delta's result size (its second varint) once, then accounts it.
    fn account_delta(&mut self) -> Result<(), PackError> {
        if self.kind == 0 {
            return Ok(());
        }
        let mut sizes = [0u64; 2];
        let mut at = 0;
        for size in &mut sizes {
            let mut shift = 0;
            loop {
                let Some(&b) = self.delta_head.get(at) else {
                    return Err(PackError::Unreadable);
                };
                at += 1;
                if shift > 63 {
                    return Err(PackError::Unreadable);
                }
                *size |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        // Accounted once per entry.
        self.kind = 0;
        self.account(sizes[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("compress");
        e.finish().expect("compress")
    }

    fn entry_header(kind: u8, mut size: u64) -> Vec<u8> {
        let mut out = vec![(kind << 4) | (size & 15) as u8];
        size >>= 4;
        while size > 0 {
            let last = out.len() - 1;
            out[last] |= 0x80;
            out.push((size & 0x7f) as u8);
            size >>= 7;
        }
        out
    }

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A pack of blobs of the given sizes plus one ref-delta announcing `delta_result` bytes.
    fn pack(blobs: &[usize], delta_result: Option<u64>) -> Vec<u8> {
        let count = blobs.len() + usize::from(delta_result.is_some());
        let mut out = b"PACK".to_vec();
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&(count as u32).to_be_bytes());
        for (i, size) in blobs.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|j| (j * 31 + i) as u8).collect();
            out.extend(entry_header(3, *size as u64));
            out.extend(zlib(&data));
        }
        if let Some(result) = delta_result {
            let mut delta = varint(10);
            delta.extend(varint(result));
            delta.extend_from_slice(&[0x01, b'x']);
            out.extend(entry_header(OBJ_REF_DELTA, delta.len() as u64));
            out.extend_from_slice(&[7; HASH_LEN]);
            out.extend(zlib(&delta));
        }
        out.extend_from_slice(&[0; HASH_LEN]);
        out
    }

    /// `pack` inside protocol-v2 pkt-lines with side-band, in lines of `line` bytes.
    fn v2_response(pack: &[u8], line: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let pkt = |out: &mut Vec<u8>, payload: &[u8]| {
            out.extend(format!("{:04x}", payload.len() + 4).into_bytes());
            out.extend_from_slice(payload);
        };
        pkt(&mut out, b"shallow-info\n");
        pkt(
            &mut out,
            b"shallow 0123456789012345678901234567890123456789\n",
        );
        out.extend_from_slice(b"0001");
        pkt(&mut out, b"packfile\n");
        pkt(&mut out, b"\x02Enumerating objects\n");
        for piece in pack.chunks(line) {
            let mut payload = vec![1];
            payload.extend_from_slice(piece);
            pkt(&mut out, &payload);
        }
        out.extend_from_slice(b"0000");
        out
    }

    fn limits(file: u64, tree: u64, objects: u64) -> SourceLimits {
        SourceLimits {
            max_file_bytes: file,
            max_tree_bytes: tree,
            max_objects: objects,
            ..SourceLimits::default()
        }
    }

    /// Feeds `bytes` in pieces of `step`; returns the error and how many bytes were fed by then.
    fn scan(bytes: &[u8], limits: SourceLimits, step: usize) -> Option<(LimitExceeded, usize)> {
        let mut scanner = PackScanner::new(limits);
        let mut fed = 0;
        for piece in bytes.chunks(step) {
            fed += piece.len();
            if let Err(e) = scanner.feed(piece) {
                return Some((e, fed));
            }
        }
        None
    }

    #[test]
    fn a_pack_within_the_limits_passes_in_any_split() {
        let response = v2_response(&pack(&[100, 5000, 70_000], Some(300)), 1000);
        for step in [1, 3, 7, 4096, response.len()] {
            assert!(scan(&response, limits(80_000, 80_000, 4), step).is_none());
        }
    }

    #[test]
    fn a_large_object_trips_at_its_header_before_its_data() {
        let big = 200_000;
        let body = pack(&[10, big], None);
        let response = v2_response(&body, 8192);
        let (e, fed) = scan(&response, limits(100_000, u64::MAX, 10), 512).expect("trips");
        assert_eq!(e.limit, Limit::FileSize);
        assert_eq!(e.value, big as u64);
        assert!(
            fed < 2048,
            "tripped after {fed} bytes, before the blob's data"
        );
        assert!(e.to_string().contains("object 2 of 2"), "{e}");
    }

    #[test]
    fn tree_size_objects_and_delta_results_are_counted() {
        let response = v2_response(&pack(&[40_000, 40_000, 40_000], None), 65000);
        let (e, _) = scan(&response, limits(u64::MAX, 100_000, 10), 4096).expect("trips");
        assert_eq!((e.limit, e.value), (Limit::TreeSize, 120_000));

        let (e, _) = scan(&response, limits(u64::MAX, u64::MAX, 2), 4096).expect("trips");
        assert_eq!((e.limit, e.value), (Limit::Objects, 3));

        let response = v2_response(&pack(&[10], Some(5_000_000)), 65000);
        let (e, _) = scan(&response, limits(1_000_000, u64::MAX, 10), 3).expect("trips");
        assert_eq!((e.limit, e.value), (Limit::FileSize, 5_000_000));
    }

    #[test]
    fn v1_side_band_and_raw_packs_are_followed() {
        let body = pack(&[10, 300_000], None);
        let mut v1 = b"0008NAK\n".to_vec();
        for piece in body.chunks(1000) {
            v1.extend(format!("{:04x}", piece.len() + 5).into_bytes());
            v1.push(1);
            v1.extend_from_slice(piece);
        }
        let (e, _) = scan(&v1, limits(100_000, u64::MAX, 10), 100).expect("v1 trips");
        assert_eq!(e.limit, Limit::FileSize);
        let (e, _) = scan(&body, limits(100_000, u64::MAX, 10), 100).expect("raw trips");
        assert_eq!(e.limit, Limit::FileSize);
    }

    #[test]
    fn garbage_is_left_to_gix() {
        assert!(scan(b"zzzz not a git response", limits(1, 1, 1), 3).is_none());
        let mut bad = v2_response(b"PACK\0\0\0\x02\0\0\0\x01\xff\xff\xff", 100);
        bad.extend_from_slice(&[0xff; 64]);
        assert!(scan(&bad, limits(1, 1, 1), 5).is_none());
    }

    #[test]
    fn the_reader_counts_bytes_and_stops_on_cancel_while_the_transport_blocks() {
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3));
                buf[0] = b'x';
                Ok(1)
            }
        }
        let control = FetchControl::new();
        let guard = Guard::new(
            control.clone(),
            Duration::from_secs(60),
            Instant::now() + Duration::from_secs(60),
            SourceLimits::default(),
        );
        let mut reader = GuardedReader::new(Slow, guard, true);
        let canceller = control.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            canceller.stop(Stop::Cancelled(CancelCause::Deleted));
        });
        let started = Instant::now();
        let err = reader.read(&mut [0; 10]).expect_err("cancelled");
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert!(started.elapsed() < Duration::from_millis(600));
        assert_eq!(control.cause(), Some(Stop::Cancelled(CancelCause::Deleted)));

        let control = FetchControl::new();
        let guard = Guard::new(
            control.clone(),
            Duration::from_millis(300),
            Instant::now() + Duration::from_millis(300),
            SourceLimits::default(),
        );
        let mut reader = GuardedReader::new(Slow, guard, true);
        let started = Instant::now();
        reader.read(&mut [0; 10]).expect_err("timed out");
        assert!(started.elapsed() < Duration::from_millis(700));
        assert_eq!(
            control.cause(),
            Some(Stop::Timeout(Duration::from_millis(300)))
        );

        let control = FetchControl::new();
        let guard = Guard::new(
            control.clone(),
            Duration::from_secs(60),
            Instant::now() + Duration::from_secs(60),
            SourceLimits {
                max_received_bytes: 100,
                ..SourceLimits::default()
            },
        );
        let mut reader = GuardedReader::new(io::Cursor::new(vec![0u8; 1000]), guard, false);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).expect_err("too many bytes");
        assert!(
            sink.is_empty(),
            "the bytes over the limit are never handed on"
        );
        assert!(matches!(
            control.cause(),
            Some(Stop::Limit(LimitExceeded {
                limit: Limit::ReceivedBytes,
                value: 1000,
                ..
            }))
        ));
    }
}
