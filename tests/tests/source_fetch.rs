//! The source stage against real git servers (no cluster needed, so these run in
//! `cargo test --workspace`): lighttpd + git-http-backend over HTTPS with basic auth, nginx +
//! fcgiwrap with a bearer token, git daemon, plain HTTP. Each test starts and stops its own
//! servers on free ports.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, ServerKind, temp_dir};
use gitops_reconciler::api::GitRepositoryRef;
use gitops_reconciler::source::credentials::Credentials;
use gitops_reconciler::source::reference::RefRequest;
use gitops_reconciler::source::remote::validate;
use gitops_reconciler::source::{
    FetchControl, FetchOutcome, FetchRequest, SourceError, SourceLimits, Storage, UnpackLimits,
    fetch, unpack_verified,
};

const CANARY_PASSWORD: &str = "canary-pw-8c1f3e";

fn request(url: &str, insecure: bool, reference: Option<GitRepositoryRef>) -> FetchRequest {
    FetchRequest {
        namespace: "ns".into(),
        name: "repo".into(),
        url: validate(url, insecure, false).expect("valid url"),
        reference: RefRequest::from_spec(reference.as_ref()).expect("valid ref"),
        credentials: Credentials::default(),
        ignore: None,
        last_revision: None,
        timeout: Duration::from_secs(30),
        limits: SourceLimits::default(),
        refused: None,
        keep_artifacts: 2,
    }
}

fn creds(pairs: &[(&str, &[u8])]) -> Credentials {
    let data: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    Credentials::from_secret_data("git-auth", &data).expect("valid secret")
}

fn storage() -> Storage {
    Storage::new(temp_dir("source-storage")).expect("storage")
}

fn run(storage: &Storage, request: &FetchRequest) -> Result<FetchOutcome, SourceError> {
    fetch(storage, request, &FetchControl::new())
}

/// Unpacks the stored artifact of `outcome` and returns its files (path → content).
fn files_of(storage: &Storage, outcome: &FetchOutcome) -> BTreeMap<String, String> {
    let FetchOutcome::Stored { artifact, .. } = outcome else {
        panic!("expected a stored artifact, got {outcome:?}");
    };
    let bytes = storage
        .read_verified(&artifact.path)
        .expect("read")
        .expect("artifact exists");
    let dest = temp_dir("unpacked");
    unpack_verified(
        &bytes,
        &artifact.packed.digest,
        &UnpackLimits::default(),
        &dest,
    )
    .expect("unpack");
    let mut files = BTreeMap::new();
    collect(&dest, &dest, &mut files);
    std::fs::remove_dir_all(&dest).expect("cleanup");
    files
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, std::fs::read_to_string(&path).expect("utf-8 file"));
        }
    }
}

fn stored_digest(outcome: &FetchOutcome) -> String {
    match outcome {
        FetchOutcome::Stored { artifact, .. } => artifact.packed.digest.clone(),
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[test]
fn https_basic_auth_branch_advances_and_unchanged_remote_is_skipped() {
    let server = GitServer::start(ServerKind::Https);
    let repo = server.repo("app");
    let c1 = repo.commit(
        &[
            ("deploy/app.yaml", Some("replicas: 1\n")),
            (".github/ci.yml", Some("x")),
        ],
        "one",
    );
    let storage = storage();
    let ca = std::fs::read(server.get("ca")).expect("ca");
    let mut req = request(&server.url("app"), false, None);
    req.reference = RefRequest::Branch("main".into());
    req.credentials = creds(&[
        ("username", server.get("username").as_bytes()),
        ("password", server.get("password").as_bytes()),
        ("ca.crt", &ca),
    ]);
    let first = run(&storage, &req).expect("first fetch");
    assert_eq!(first.revision(), format!("main@sha1:{c1}"));
    let files = files_of(&storage, &first);
    assert_eq!(
        files.get("deploy/app.yaml").map(String::as_str),
        Some("replicas: 1\n")
    );
    assert!(
        !files.contains_key(".github/ci.yml"),
        "default exclusions apply: {files:?}"
    );

    // Unchanged remote: skipped after ls-refs, nothing new stored.
    req.last_revision = Some(first.revision().to_owned());
    let second = run(&storage, &req).expect("second fetch");
    assert_eq!(
        second,
        FetchOutcome::Unchanged {
            revision: first.revision().to_owned()
        }
    );

    // The branch advances: a new revision and a new artifact.
    let c2 = repo.commit(&[("deploy/app.yaml", Some("replicas: 3\n"))], "two");
    let third = run(&storage, &req).expect("third fetch");
    assert_eq!(third.revision(), format!("main@sha1:{c2}"));
    assert_ne!(stored_digest(&first), stored_digest(&third));
    assert_eq!(
        files_of(&storage, &third)
            .get("deploy/app.yaml")
            .map(String::as_str),
        Some("replicas: 3\n")
    );
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn wrong_password_is_authentication_failed_keeps_the_artifact_and_never_leaks() {
    let server = GitServer::start_with_env(
        ServerKind::Https,
        &[("GITOPS_GIT_PASSWORD", CANARY_PASSWORD)],
    );
    let repo = server.repo("app");
    repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let storage = storage();
    let ca = std::fs::read(server.get("ca")).expect("ca");
    let mut req = request(&server.url("app"), false, None);
    req.credentials = creds(&[
        ("username", b"gitops"),
        ("password", CANARY_PASSWORD.as_bytes()),
        ("ca.crt", &ca),
    ]);
    let good = run(&storage, &req).expect("fetch with the right password");
    let FetchOutcome::Stored { artifact, .. } = &good else {
        panic!("stored")
    };

    repo.commit(&[("a.yaml", Some("a: 2\n"))], "two");
    let wrong = format!("{CANARY_PASSWORD}-wrong");
    req.credentials = creds(&[
        ("username", b"gitops"),
        ("password", wrong.as_bytes()),
        ("ca.crt", &ca),
    ]);
    req.last_revision = Some(good.revision().to_owned());
    let err = run(&storage, &req).expect_err("wrong password must fail");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(CANARY_PASSWORD), "password leaked: {text}");
    assert!(storage.exists(&artifact.path), "last good artifact kept");

    // No credentials at all against a server that needs them: AuthenticationFailed too.
    req.credentials = creds(&[("ca.crt", &ca)]);
    let err = run(&storage, &req).expect_err("anonymous must fail");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn https_without_the_test_ca_is_refused() {
    let server = GitServer::start(ServerKind::Https);
    server.repo("app").commit(&[("a.yaml", Some("a\n"))], "one");
    let storage = storage();
    let mut req = request(&server.url("app"), false, None);
    req.credentials = creds(&[
        ("username", b"gitops"),
        ("password", server.get("password").as_bytes()),
    ]);
    let err = run(&storage, &req).expect_err("unknown CA must fail");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    assert!(!err.to_string().contains(server.get("password")));
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn bearer_token_is_sent_as_a_header_and_a_wrong_token_fails() {
    let server = GitServer::start(ServerKind::Bearer);
    let repo = server.repo("app");
    let c1 = repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let storage = storage();
    let ca = std::fs::read(server.get("ca")).expect("ca");
    let mut req = request(&server.url("app"), false, None);
    req.credentials = creds(&[
        ("bearerToken", server.get("token").as_bytes()),
        ("ca.crt", &ca),
    ]);
    let ok = run(&storage, &req).expect("fetch with the token");
    assert_eq!(ok.revision(), format!("main@sha1:{c1}"));
    req.credentials = creds(&[("bearerToken", b"canary-token-wrong"), ("ca.crt", &ca)]);
    let err = run(&storage, &req).expect_err("wrong token must fail");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    assert!(!format!("{err:?}").contains("canary-token-wrong"));
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn git_daemon_tags_semver_commit_pinning_and_force_push() {
    let server = GitServer::start(ServerKind::Daemon);
    let repo = server.repo("app");
    let c1 = repo.commit(&[("v.yaml", Some("v1\n"))], "one");
    repo.tag("v1.0.0");
    let c2 = repo.commit(&[("v.yaml", Some("v1.2\n"))], "two");
    repo.tag("v1.2.0");
    let c3 = repo.commit(&[("v.yaml", Some("v2\n"))], "three");
    repo.tag("v2.0.0");
    let c4 = repo.commit(&[("v.yaml", Some("tip\n"))], "four");
    let storage = storage();
    let url = server.url("app");

    // HEAD
    let head = run(&storage, &request(&url, true, None)).expect("HEAD");
    assert_eq!(head.revision(), format!("main@sha1:{c4}"));

    // Annotated tag: peeled to its commit.
    let tag = GitRepositoryRef {
        tag: Some("v1.0.0".into()),
        ..Default::default()
    };
    let out = run(&storage, &request(&url, true, Some(tag))).expect("tag");
    assert_eq!(out.revision(), format!("v1.0.0@sha1:{c1}"));
    assert_eq!(files_of(&storage, &out)["v.yaml"], "v1\n");

    // Semver: the highest tag in range.
    let semver = GitRepositoryRef {
        semver: Some(">=1.0.0, <2.0.0".into()),
        ..Default::default()
    };
    let out = run(&storage, &request(&url, true, Some(semver))).expect("semver");
    assert_eq!(out.revision(), format!("v1.2.0@sha1:{c2}"));
    let semver = GitRepositoryRef {
        semver: Some(">=5".into()),
        ..Default::default()
    };
    let err = run(&storage, &request(&url, true, Some(semver))).expect_err("no match");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");

    // Commit pinning (not the tip), with and without a branch.
    let pin = GitRepositoryRef {
        commit: Some(c3.clone()),
        ..Default::default()
    };
    let out = run(&storage, &request(&url, true, Some(pin))).expect("commit");
    assert_eq!(out.revision(), format!("sha1:{c3}"));
    assert_eq!(files_of(&storage, &out)["v.yaml"], "v2\n");
    let pin = GitRepositoryRef {
        commit: Some(c2.clone()),
        branch: Some("main".into()),
        ..Default::default()
    };
    let out = run(&storage, &request(&url, true, Some(pin))).expect("commit on branch");
    assert_eq!(out.revision(), format!("main@sha1:{c2}"));

    // Missing branch.
    let missing = GitRepositoryRef {
        branch: Some("nope".into()),
        ..Default::default()
    };
    let err = run(&storage, &request(&url, true, Some(missing))).expect_err("missing branch");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    // Force-push: history rewritten, the new root is followed.
    let mut req = request(&url, true, None);
    req.last_revision = Some(head.revision().to_owned());
    let rewritten = repo.force_push_new_root(&[("new.yaml", "rewritten\n")]);
    let out = run(&storage, &req).expect("after force-push");
    assert_eq!(out.revision(), format!("main@sha1:{rewritten}"));
    let files = files_of(&storage, &out);
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["new.yaml"]);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn same_tree_gives_the_same_digest_across_commits_and_repositories() {
    let server = GitServer::start(ServerKind::Http);
    let a = server.repo("a");
    let b = server.repo("b");
    let files: &[(&str, Option<&str>)] = &[("x/one.yaml", Some("1\n")), ("two.yaml", Some("2\n"))];
    a.commit(files, "in a");
    b.commit(&[("unrelated", Some("z"))], "different history");
    b.commit(
        &[
            ("unrelated", None),
            ("x/one.yaml", Some("1\n")),
            ("two.yaml", Some("2\n")),
        ],
        "same tree",
    );
    let storage = storage();
    let da = stored_digest(&run(&storage, &request(&server.url("a"), true, None)).expect("a"));
    let mut req_b = request(&server.url("b"), true, None);
    req_b.name = "repo-b".into();
    let db = stored_digest(&run(&storage, &req_b).expect("b"));
    assert_eq!(da, db);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn ignore_rules_defaults_sourceignore_and_spec() {
    let server = GitServer::start(ServerKind::Http);
    let repo = server.repo("app");
    repo.commit(
        &[
            ("deploy/app.yaml", Some("a\n")),
            ("deploy/.sourceignore", Some("local.yaml\n")),
            ("deploy/local.yaml", Some("l\n")),
            (".sourceignore", Some("docs/\n")),
            ("docs/readme.yaml", Some("d\n")),
            ("logo.png", Some("png")),
            ("notes.txt", Some("n\n")),
            ("keep.zip", Some("z")),
        ],
        "one",
    );
    let storage = storage();
    let assert_files = |ignore: Option<&str>, expected: &[&str]| {
        let mut req = request(&server.url("app"), true, None);
        req.ignore = ignore.map(str::to_owned);
        let out = run(&storage, &req).expect("fetch");
        let files = files_of(&storage, &out);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "ignore {ignore:?}: {files:?}");
    };
    // Without spec.ignore: the default exclusions (images, archives, ...) and every
    // .sourceignore apply.
    assert_files(
        None,
        &[
            ".sourceignore",
            "deploy/.sourceignore",
            "deploy/app.yaml",
            "notes.txt",
        ],
    );
    // With spec.ignore, as in Flux, its patterns replace the default exclusions (so the image
    // is kept); the .sourceignore files still apply.
    assert_files(
        Some("*.txt\n!keep.zip\n"),
        &[
            ".sourceignore",
            "deploy/.sourceignore",
            "deploy/app.yaml",
            "keep.zip",
            "logo.png",
        ],
    );
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn plain_http_needs_insecure_and_never_carries_credentials() {
    let server = GitServer::start(ServerKind::Http);
    server.repo("app").commit(&[("a", Some("a"))], "one");
    assert!(validate(&server.url("app"), false, false).is_err());
    let storage = storage();
    let mut req = request(&server.url("app"), true, None);
    req.credentials = creds(&[("username", b"u"), ("password", b"canary-http")]);
    let err = run(&storage, &req).expect_err("credentials over http");
    assert!(err.is_stalled(), "{err}");
    assert!(!err.to_string().contains("canary-http"));
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn limits_are_enforced_and_nothing_is_stored() {
    let server = GitServer::start(ServerKind::Http);
    let repo = server.repo("app");
    let files: Vec<(String, String)> = (0..30)
        .map(|i| (format!("f{i}.yaml"), format!("{i}\n")))
        .collect();
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    repo.commit(&refs, "many files");
    let storage = storage();
    let mut req = request(&server.url("app"), true, None);
    req.limits.max_files = 10;
    let err = run(&storage, &req).expect_err("too many files");
    assert_eq!(err.reason(), "SizeLimitExceeded", "{err}");
    assert!(err.to_string().contains("limit of 10 files"), "{err}");
    assert!(err.to_string().contains("--max-files"), "{err}");
    req.limits = SourceLimits {
        max_tree_bytes: 20,
        ..SourceLimits::default()
    };
    let err = run(&storage, &req).expect_err("too large");
    assert_eq!(
        err.limit(),
        Some(gitops_reconciler::source::Limit::TreeSize),
        "{err}"
    );
    assert!(err.to_string().contains("limit of 20 bytes"), "{err}");
    let dir = storage.root().join("gitrepository/ns/repo");
    let stored: Vec<_> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let storage = storage();
    let mut req = request(
        &format!("https://127.0.0.1:{port}/git/app.git"),
        false,
        None,
    );
    req.timeout = Duration::from_secs(2);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let err = rt
        .block_on(gitops_reconciler::source::git::fetch_async(
            storage.clone(),
            req,
            FetchControl::new(),
            (),
        ))
        .expect_err("must time out");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    drop(listener);
    rt.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn a_stopped_server_fails_the_fetch_with_git_operation_failed() {
    let mut server = GitServer::start(ServerKind::Daemon);
    let repo = server.repo("app");
    repo.commit(&[("a", Some("a"))], "one");
    let url = server.url("app");
    server.stop();
    let storage = storage();
    let err = run(&storage, &request(&url, true, None)).expect_err("server is down");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn hostile_trees_are_refused_with_the_path_and_nothing_is_stored() {
    let server = GitServer::start(ServerKind::Http);
    let repo = server.repo("evil");
    let blob = repo.blob("kind: ConfigMap\n");
    let file = |name: &str| format!("100644 blob {blob}\t{name}");
    let link = |name: &str, target: &str| format!("120000 blob {}\t{name}", repo.blob(target));
    let sub = |name: &str, lines: &[String]| format!("040000 tree {}\t{name}", repo.mktree(lines));
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("dot-dot", vec![file("..")], "'..'"),
        ("dot-git", vec![file(".git")], ".git"),
        (
            "nested dot-GIT",
            vec![sub("deploy", &[sub(".GIT", &[file("config")])])],
            "deploy/.GIT",
        ),
        ("backslash", vec![file("a\\b")], "backslash"),
        (
            "case collision",
            vec![file("A.yaml"), file("a.yaml")],
            "differs only in case",
        ),
        (
            "symlink escaping",
            vec![sub("d", &[link("l", "../../etc/passwd")])],
            "d/l",
        ),
        (
            "absolute symlink",
            vec![link("l", "/etc/passwd")],
            "absolute",
        ),
    ];
    let storage = storage();
    let req = request(&server.url("evil"), true, None);
    for (what, lines, expected) in cases {
        let tree = repo.mktree(&lines);
        repo.push_tree(&tree);
        let err = run(&storage, &req).expect_err(what);
        assert_eq!(err.reason(), "HostileContent", "{what}: {err}");
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
    let dir = storage.root().join("gitrepository/ns/repo");
    let stored: Vec<_> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");

    // In-tree symlinks (also a loop) and submodules are dropped, the rest is stored.
    let some_commit = repo.push_tree(&repo.mktree(&[file("x")]));
    let tree = repo.mktree(&[
        file("app.yaml"),
        link("alias.yaml", "app.yaml"),
        link("loop-a", "loop-b"),
        link("loop-b", "loop-a"),
        format!("160000 commit {some_commit}\tvendor"),
    ]);
    repo.push_tree(&tree);
    let out = run(&storage, &req).expect("benign links are dropped");
    let FetchOutcome::Stored { stats, .. } = &out else {
        panic!("stored")
    };
    assert_eq!(stats.dropped_symlinks, 3);
    assert_eq!(stats.submodules, 1);
    let files = files_of(&storage, &out);
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["app.yaml"]);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn file_urls_are_read_in_process_only_when_allowed() {
    let repos = temp_dir("file-repos");
    let repo = gitops_conformance::git::Repo::create(&repos, "local");
    let c1 = repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    repo.tag("v1.0.0");
    let url = format!("file://{}", repo.bare.display());
    assert!(
        validate(&url, false, false).is_err(),
        "file:// needs the test flag"
    );
    let storage = storage();
    let mut req = request("https://example.com/x.git", false, None);
    req.url = validate(&url, false, true).expect("allowed with the flag");
    let out = run(&storage, &req).expect("local fetch");
    assert_eq!(out.revision(), format!("main@sha1:{c1}"));
    assert_eq!(files_of(&storage, &out)["a.yaml"], "a: 1\n");
    req.reference = RefRequest::from_spec(Some(&GitRepositoryRef {
        semver: Some("^1".into()),
        ..Default::default()
    }))
    .expect("range");
    let out = run(&storage, &req).expect("local semver");
    assert_eq!(out.revision(), format!("v1.0.0@sha1:{c1}"));
    let _ = std::fs::remove_dir_all(storage.root());
    let _ = std::fs::remove_dir_all(&repos);
}

#[test]
fn artifact_server_serves_verified_bytes_only() {
    let storage = storage();
    let mut pending = storage
        .begin("ns", "repo", UnpackLimits::default())
        .expect("begin");
    pending
        .writer()
        .add_file("a.yaml", false, b"a: 1\n")
        .expect("add");
    let stored = pending.commit().expect("commit");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gitops_reconciler::source::server::serve(
            listener,
            storage.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let get = |path: String| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
            out
        };
        let ok = get(stored.path.clone()).await;
        assert!(
            ok.starts_with(b"HTTP/1.0 200"),
            "{}",
            String::from_utf8_lossy(&ok)
        );
        assert!(
            ok.ends_with(
                &storage
                    .read_verified(&stored.path)
                    .expect("read")
                    .expect("exists")
            )
        );
        for bad in [
            "../etc/passwd",
            "gitrepository/ns/repo/abc.tar.gz",
            "gitrepository/ns/../x",
        ] {
            let res = get(bad.to_owned()).await;
            assert!(
                res.starts_with(b"HTTP/1.0 404"),
                "{bad}: {}",
                String::from_utf8_lossy(&res)
            );
        }
        // A file whose bytes no longer match its digest name is refused, never served.
        std::fs::write(storage.resolve(&stored.path).expect("path"), b"tampered").expect("tamper");
        let res = get(stored.path.clone()).await;
        assert!(
            res.starts_with(b"HTTP/1.0 500"),
            "{}",
            String::from_utf8_lossy(&res)
        );
        assert!(!res.ends_with(b"tampered"));
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
    });
    let _ = std::fs::remove_dir_all(storage.root());
}

/// How [`lying_proxy`] falsifies the pack it relays.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Relays the first 40 bytes of the pack, then hangs up.
    Truncate,
    /// Flips one byte inside the first object's data (the pack checksum no longer matches).
    Corrupt,
}

/// A TCP proxy in front of the git daemon on `upstream`: the client's bytes go through
/// verbatim; the server's pkt-lines are parsed, and the pack data (side-band channel 1) is
/// falsified as `lie` says — a server whose pack does not match what it advertised.
fn lying_proxy(upstream: u16, lie: Lie) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone())
            else {
                return;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut pack_bytes = 0usize;
                loop {
                    let mut header = [0u8; 4];
                    if server.read_exact(&mut header).is_err() {
                        break;
                    }
                    let len = std::str::from_utf8(&header)
                        .ok()
                        .and_then(|h| usize::from_str_radix(h, 16).ok())
                        .unwrap_or(0);
                    let mut payload = vec![0u8; len.saturating_sub(4)];
                    if server.read_exact(&mut payload).is_err() {
                        break;
                    }
                    if payload.first() == Some(&1) {
                        let data_start = pack_bytes;
                        pack_bytes += payload.len() - 1;
                        match lie {
                            Lie::Corrupt if data_start <= 30 && 30 < pack_bytes => {
                                payload[1 + 30 - data_start] ^= 0x55;
                            }
                            Lie::Truncate if pack_bytes >= 40 => {
                                let keep = 1 + 40 - data_start;
                                payload.truncate(keep);
                                let _ = client.write_all(format!("{:04x}", keep + 4).as_bytes());
                                let _ = client.write_all(&payload);
                                break;
                            }
                            _ => {}
                        }
                    }
                    if client.write_all(&header).is_err() || client.write_all(&payload).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_lying_server_fails_the_fetch_stores_nothing_and_keeps_the_last_artifact() {
    let server = GitServer::start(ServerKind::Daemon);
    let repo = server.repo("app");
    // Enough content that the pack is longer than what the proxy keeps or reaches for.
    let body: String = (0..200).map(|i| format!("line {i}\n")).collect();
    repo.commit(&[("a.yaml", Some(&body))], "one");
    let upstream: u16 = server
        .get("url")
        .trim_start_matches("git://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("daemon port");
    let storage = storage();
    let mut req = request(&server.url("app"), true, None);
    let good = run(&storage, &req).expect("honest fetch");
    let FetchOutcome::Stored { artifact, .. } = &good else {
        panic!("stored")
    };
    let stored_dir = storage.root().join("gitrepository/ns/repo");
    let count = || {
        std::fs::read_dir(&stored_dir)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let before = count();

    let c2 = repo.commit(&[("a.yaml", Some(&format!("{body}more\n")))], "two");
    req.last_revision = Some(good.revision().to_owned());
    req.timeout = Duration::from_secs(20);
    for lie in [Lie::Truncate, Lie::Corrupt] {
        let port = lying_proxy(upstream, lie);
        let mut lying = req.clone();
        lying.url =
            validate(&format!("git://127.0.0.1:{port}/app.git"), true, false).expect("valid url");
        let started = Instant::now();
        let err = run(&storage, &lying).expect_err("a falsified pack must fail the fetch");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{lie:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(err.reason(), "GitOperationFailed", "{lie:?}: {err}");
        assert!(err.to_string().contains("pack"), "{lie:?}: {err}");
        assert_eq!(count(), before, "{lie:?}: nothing stored");
        assert!(
            storage.exists(&artifact.path),
            "{lie:?}: last good artifact kept"
        );
    }

    // The object store was not poisoned: the honest server's new commit is fetched.
    let honest = run(&storage, &req).expect("honest fetch after the lies");
    assert_eq!(honest.revision(), format!("main@sha1:{c2}"));
    let _ = std::fs::remove_dir_all(storage.root());
}
