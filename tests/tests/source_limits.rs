//! A fetch is bounded while it runs, against the real git server (lighttpd + git-http-backend)
//! and a slow-drip server of our own on 127.0.0.1 (no cluster needed):
//! - a 300 MiB blob and a 1 GiB repository are refused while the pack arrives, with bounded
//!   memory (measured in a process of its own, `fetch_probe`), leaving no lock or temporary file;
//! - a refused revision is not downloaded again while the remote still points at it;
//! - a slow-drip server ends the fetch at its timeout plus at most a second;
//! - a fetching process SIGKILLed mid-transfer leaves leftovers that the next fetch removes.
//!
//! The large repositories are generated once and cached (see `LargeFixture`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_conformance::git::{
    CountingProxy, GitServer, LargeFixture, ServerKind, git, slow_drip, temp_dir,
};
use gitops_reconciler::source::credentials::Credentials;
use gitops_reconciler::source::git::{Refused, fetch_async};
use gitops_reconciler::source::reference::RefRequest;
use gitops_reconciler::source::remote::validate;
use gitops_reconciler::source::{
    FetchControl, FetchOutcome, FetchRequest, Limit, SourceError, SourceLimits, Storage, fetch,
};
use serde_json::Value;

/// Peak memory a refused fetch may add to the fetching process, whatever the repository's size:
/// the transfer's buffers and gix's state, never the refused objects.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

fn request(url: &str, timeout: Duration) -> FetchRequest {
    FetchRequest {
        namespace: "probe".into(),
        name: "repo".into(),
        url: validate(url, true, false).expect("valid url"),
        reference: RefRequest::Head,
        credentials: Credentials::default(),
        ignore: None,
        last_revision: None,
        timeout,
        limits: SourceLimits::default(),
        refused: None,
        keep_artifacts: 2,
    }
}

/// Runs `fetch_probe` (one fetch in a process of its own) and returns its JSON line.
fn probe(url: &str, storage: &Path, timeout_secs: u64, limits: &[(Limit, u64)]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fetch_probe"));
    cmd.arg(url).arg(storage).arg(timeout_secs.to_string());
    for (limit, value) in limits {
        cmd.arg(format!("{}={value}", limit.label()));
    }
    let out = cmd.output().expect("run fetch_probe");
    assert!(
        out.status.success(),
        "fetch_probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fetch_probe prints JSON")
}

/// Files under `dir` that an interrupted fetch leaves behind: locks, temporary files, keeps,
/// and pack files (a refused fetch must not keep any of its pack).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".lock")
                || name.starts_with(".tmp")
                || name.starts_with("tmp")
                || name.ends_with(".keep")
                || name.ends_with(".pack")
            {
                out.push(path);
            }
        }
    }
    out
}

/// Serves `fixture` over plain HTTP through a byte-counting proxy; returns the server (keep
/// it alive), the proxy and the URL through the proxy.
fn serve(fixture: LargeFixture) -> (GitServer, CountingProxy, String) {
    let server = GitServer::start(ServerKind::Http);
    server.serve_borrowed("large", &fixture.path());
    let (proxy, proxied) = CountingProxy::in_front_of(&server.url("large"));
    (server, proxy, proxied)
}

/// Checks a refusal measured by `fetch_probe` and prints the figures for the closing note.
fn assert_refused(what: &str, result: &Value, limit: Limit, within: Duration) -> (u64, u64) {
    assert_eq!(result["ok"], false, "{what}: {result}");
    assert_eq!(result["reason"], "SizeLimitExceeded", "{what}: {result}");
    assert_eq!(result["limit"], limit.label(), "{what}: {result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(limit.flag()) && message.contains("limit of"),
        "{what}: the message names the limit and its value: {message}"
    );
    let elapsed = result["elapsed_ms"].as_u64().unwrap_or(u64::MAX);
    let growth = result["peak_rss_kib"]
        .as_u64()
        .unwrap_or(u64::MAX)
        .saturating_sub(result["rss_before_kib"].as_u64().unwrap_or(0));
    eprintln!(
        "{what}: refused by {} in {elapsed} ms, peak RSS growth {growth} KiB",
        limit.label()
    );
    assert!(
        Duration::from_millis(elapsed) < within,
        "{what}: detection took {elapsed} ms"
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "{what}: peak RSS grew by {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    (elapsed, growth)
}

#[test]
fn a_300_mib_blob_is_refused_at_its_header_and_not_downloaded_again() {
    let fixture = LargeFixture::Blob300M;
    let (_server, proxy, url) = serve(fixture);
    let storage_dir = temp_dir("limits-blob");
    let result = probe(&url, &storage_dir, 120, &[]);
    assert_refused(
        "300 MiB blob",
        &result,
        Limit::FileSize,
        Duration::from_secs(10),
    );
    let downloaded = proxy.settled();
    eprintln!("300 MiB blob: {downloaded} bytes passed the proxy before the refusal");
    assert!(
        downloaded < 64 << 20,
        "the transfer stopped early: {downloaded} bytes of a 300 MiB pack"
    );
    let left = leftovers(&storage_dir);
    assert!(
        left.is_empty(),
        "no lock, temporary file or pack left: {left:?}"
    );

    // The next poll with the refusal remembered lists refs only.
    let storage = Storage::new(&storage_dir).expect("storage");
    let mut again = request(&url, Duration::from_secs(60));
    let revision = result["message"]
        .as_str()
        .and_then(|m| m.split('\'').nth(1))
        .expect("the refusal names the revision")
        .to_owned();
    again.refused = Some(Refused {
        revision: revision.clone(),
        cause: result["message"].as_str().unwrap_or_default().to_owned(),
    });
    let before = proxy.settled();
    let err = fetch(&storage, &again, &FetchControl::new()).expect_err("still refused");
    assert!(
        matches!(&err, SourceError::StillRefused { revision: r, .. } if *r == revision),
        "{err}"
    );
    assert_eq!(err.reason(), "SizeLimitExceeded");
    let listing = proxy.settled() - before;
    assert!(listing < 64 * 1024, "only the ref listing: {listing} bytes");
    let _ = std::fs::remove_dir_all(&storage_dir);
}

#[test]
fn a_1_gib_repository_is_refused_at_the_tree_size_limit_with_bounded_memory() {
    let fixture = LargeFixture::Tree1G;
    let (_server, proxy, url) = serve(fixture);
    let storage_dir = temp_dir("limits-tree");
    let result = probe(&url, &storage_dir, 300, &[]);
    assert_refused(
        "1 GiB repository",
        &result,
        Limit::TreeSize,
        Duration::from_secs(60),
    );
    let downloaded = proxy.settled();
    eprintln!("1 GiB repository: {downloaded} bytes passed the proxy before the refusal");
    let limit = Limit::TreeSize.default_value();
    assert!(
        downloaded < limit + (48 << 20),
        "stopped right after the limit: {downloaded} bytes (limit {limit})"
    );
    let left = leftovers(&storage_dir);
    assert!(
        left.is_empty(),
        "no lock, temporary file or pack left: {left:?}"
    );

    // The bytes-received limit stops the same transfer earlier when it is lower.
    let storage_dir2 = temp_dir("limits-received");
    let result = probe(
        &url,
        &storage_dir2,
        300,
        &[(Limit::ReceivedBytes, 20 << 20)],
    );
    assert_refused(
        "1 GiB repository, 20 MiB received",
        &result,
        Limit::ReceivedBytes,
        Duration::from_secs(30),
    );
    // And the objects limit at the pack header.
    let result = probe(&url, &storage_dir2, 300, &[(Limit::Objects, 50)]);
    assert_refused(
        "1 GiB repository, 50 objects",
        &result,
        Limit::Objects,
        Duration::from_secs(5),
    );
    assert!(leftovers(&storage_dir2).is_empty());
    let _ = std::fs::remove_dir_all(&storage_dir);
    let _ = std::fs::remove_dir_all(&storage_dir2);
}

#[test]
fn a_slow_drip_server_ends_the_fetch_at_its_timeout_plus_at_most_a_second() {
    let port = slow_drip(Duration::from_secs(2), 4);
    let url = format!("http://127.0.0.1:{port}/git/app.git");
    let timeout = Duration::from_secs(3);
    let storage_dir = temp_dir("limits-drip");
    let storage = Storage::new(&storage_dir).expect("storage");

    // The blocking fetch itself ends (it does not merely get abandoned).
    let started = Instant::now();
    let err =
        fetch(&storage, &request(&url, timeout), &FetchControl::new()).expect_err("must time out");
    let elapsed = started.elapsed();
    eprintln!("slow drip, blocking fetch: ended after {elapsed:?} (timeout {timeout:?})");
    assert!(
        matches!(err, SourceError::Timeout(t) if t == timeout),
        "{err}"
    );
    assert!(
        elapsed >= timeout && elapsed <= timeout + Duration::from_secs(1),
        "ended after {elapsed:?}"
    );

    // Through the controller's async wrapper too, which returns only once the work ended.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let err = rt
        .block_on(fetch_async(
            storage.clone(),
            request(&url, timeout),
            FetchControl::new(),
            (),
        ))
        .expect_err("must time out");
    let elapsed = started.elapsed();
    eprintln!("slow drip, fetch_async: ended after {elapsed:?}");
    assert!(matches!(err, SourceError::Timeout(_)), "{err}");
    assert!(
        elapsed <= timeout + Duration::from_secs(1),
        "ended after {elapsed:?}"
    );
    let left = leftovers(&storage_dir);
    assert!(left.is_empty(), "nothing left: {left:?}");
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&storage_dir);
}

#[test]
fn cancelling_a_large_transfer_ends_it_within_a_second_and_releases_everything() {
    let fixture = LargeFixture::Tree1G;
    let (_server, proxy, url) = serve(fixture);
    let storage_dir = temp_dir("limits-cancel");
    let storage = Storage::new(&storage_dir).expect("storage");
    let mut req = request(&url, Duration::from_secs(300));
    req.limits = SourceLimits {
        max_received_bytes: 4 << 30,
        max_tree_bytes: 4 << 30,
        ..SourceLimits::default()
    };
    let control = FetchControl::new();
    let canceller = control.clone();
    let worker = {
        let storage = storage.clone();
        std::thread::spawn(move || fetch(&storage, &req, &control))
    };
    let started = Instant::now();
    while proxy.downloaded() < 50 << 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the transfer never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    canceller.stop(gitops_reconciler::source::transfer::Stop::Cancelled(
        gitops_reconciler::source::CancelCause::Deleted,
    ));
    let result = worker.join().expect("fetch thread");
    let unwind = stopped.elapsed();
    eprintln!("cancel mid-transfer: the fetch ended {unwind:?} after the stop");
    assert!(
        matches!(&result, Err(SourceError::Cancelled(_))),
        "{:?}",
        result.map(|o| o.revision().to_owned())
    );
    assert!(unwind < Duration::from_secs(1), "ended after {unwind:?}");
    let left = leftovers(&storage_dir);
    assert!(left.is_empty(), "nothing left: {left:?}");
    let _ = std::fs::remove_dir_all(&storage_dir);
}

#[test]
fn a_fetch_sigkilled_mid_transfer_does_not_wedge_the_next_one() {
    let fixture = LargeFixture::Tree1G;
    let (server, proxy, url) = serve(fixture);
    let storage_dir = temp_dir("limits-sigkill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fetch_probe"))
        .arg(&url)
        .arg(&storage_dir)
        .arg("300")
        .arg(format!("{}={}", Limit::ReceivedBytes.label(), 4u64 << 30))
        .arg(format!("{}={}", Limit::TreeSize.label(), 4u64 << 30))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start fetch_probe");
    let started = Instant::now();
    let git_dir = storage_dir.join("git/probe/repo.git");
    // Kill it once the pack is arriving (the shallow lock is held and a temporary pack grows).
    while proxy.downloaded() < 80 << 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the transfer never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait();
    let left = leftovers(&git_dir);
    eprintln!("SIGKILL mid-transfer left: {left:?}");
    assert!(
        left.iter().any(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".lock") || name.starts_with(".tmp")
        }),
        "the kill hit the transfer while it held a lock or a temporary pack: {left:?}"
    );

    // The remote moves to a small commit; the next fetch of the same GitRepository succeeds
    // without any manual clean-up.
    let work = temp_dir("limits-sigkill-work");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("app.yaml"), "kind: ConfigMap\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "small"]);
    let bare = server.repos.join("large.git");
    git(
        &work,
        &["push", "-q", "-f", bare.to_str().expect("utf-8"), "main"],
    );
    let storage = Storage::new(&storage_dir).expect("storage");
    let outcome = fetch(
        &storage,
        &request(&url, Duration::from_secs(60)),
        &FetchControl::new(),
    )
    .expect("the next fetch succeeds");
    assert!(
        matches!(outcome, FetchOutcome::Stored { .. }),
        "{outcome:?}"
    );
    let still = leftovers(&git_dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".pack"))
        .collect::<Vec<_>>();
    assert!(still.is_empty(), "recovered: {still:?}");
    let _ = std::fs::remove_dir_all(&storage_dir);
    let _ = std::fs::remove_dir_all(&work);
}
