//! Runs one source fetch (the reconciler's `source::fetch`, the code its GitRepository
//! controller runs) in a process of its own, so a test can measure that process's memory or
//! SIGKILL it in the middle of a transfer.
//!
//! `fetch_probe <url> <storage-dir> <timeout-seconds> [<limit-label>=<value> ...]`
//!
//! Prints one JSON line: `ok`, `reason`, `limit`, `message`, `elapsed_ms`, `rss_before_kib`
//! (VmRSS just before the fetch), `peak_rss_kib` (VmHWM after it). Namespace and name are
//! `probe`/`repo`; plain http:// and git:// are allowed.

use std::time::{Duration, Instant};

use gitops_reconciler::source::credentials::Credentials;
use gitops_reconciler::source::reference::RefRequest;
use gitops_reconciler::source::remote::validate;
use gitops_reconciler::source::{FetchControl, FetchRequest, Limit, SourceLimits, Storage, fetch};

fn status_kib(field: &str) -> u64 {
    gitops_conformance::proc_status_kib(std::process::id(), field)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, storage, timeout, limits @ ..] = args.as_slice() else {
        eprintln!("usage: fetch_probe <url> <storage-dir> <timeout-seconds> [label=value ...]");
        return std::process::ExitCode::from(2);
    };
    let mut source_limits = SourceLimits::default();
    for pair in limits {
        let Some((label, value)) = pair.split_once('=') else {
            eprintln!("not label=value: {pair}");
            return std::process::ExitCode::from(2);
        };
        let Some(limit) = Limit::ALL.into_iter().find(|l| l.label() == label) else {
            eprintln!("unknown limit {label}");
            return std::process::ExitCode::from(2);
        };
        let Ok(value) = value.parse() else {
            eprintln!("not a number: {value}");
            return std::process::ExitCode::from(2);
        };
        source_limits.set(limit, value);
    }
    let (Ok(url), Ok(storage), Ok(timeout)) = (
        validate(url, true, false),
        Storage::new(storage),
        timeout.parse::<u64>(),
    ) else {
        eprintln!("bad url, storage or timeout");
        return std::process::ExitCode::from(2);
    };
    let request = FetchRequest {
        namespace: "probe".into(),
        name: "repo".into(),
        url,
        reference: RefRequest::Head,
        credentials: Credentials::default(),
        ignore: None,
        last_revision: None,
        timeout: Duration::from_secs(timeout),
        limits: source_limits,
        refused: None,
        keep_artifacts: 2,
    };
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let result = fetch(&storage, &request, &FetchControl::new());
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:");
    let line = match &result {
        Ok(outcome) => serde_json::json!({
            "ok": true,
            "revision": outcome.revision(),
            "elapsed_ms": elapsed.as_millis() as u64,
            "rss_before_kib": rss_before,
            "peak_rss_kib": peak,
        }),
        Err(e) => serde_json::json!({
            "ok": false,
            "reason": e.reason(),
            "limit": e.limit().map(|l| l.label()),
            "message": e.to_string(),
            "elapsed_ms": elapsed.as_millis() as u64,
            "rss_before_kib": rss_before,
            "peak_rss_kib": peak,
        }),
    };
    println!("{line}");
    std::process::ExitCode::SUCCESS
}
