//! The ssh:// transport against Debian's real sshd (no cluster needed, so these run in
//! `cargo test --workspace`): deploy keys (OpenSSH ed25519, encrypted, PEM RSA) from
//! Secret-shaped data, strict known_hosts, protocol v2 and the v0 fallback, and the failures a
//! user meets (wrong key, host key mismatch or unknown host, missing repository, server down,
//! a server that never speaks). Each test starts and stops its own servers on free ports.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, Repo, ServerKind, temp_dir};
use gitops_reconciler::api::GitRepositoryRef;
use gitops_reconciler::source::credentials::Credentials;
use gitops_reconciler::source::reference::RefRequest;
use gitops_reconciler::source::remote::validate;
use gitops_reconciler::source::{
    FetchControl, FetchOutcome, FetchRequest, SourceError, SourceLimits, Storage, UnpackLimits,
    fetch, unpack_verified,
};

const CANARY_PASSPHRASE: &str = "canary-passphrase-71be0d";

fn request(url: &str, credentials: Credentials) -> FetchRequest {
    FetchRequest {
        namespace: "ns".into(),
        name: "repo".into(),
        // Plain http:// is the comparison transport (insecure: true).
        url: validate(url, url.starts_with("http://"), false).expect("valid url"),
        reference: RefRequest::Branch("main".into()),
        credentials,
        ignore: None,
        last_revision: None,
        timeout: Duration::from_secs(30),
        limits: SourceLimits::default(),
        refused: None,
        keep_artifacts: 2,
    }
}

/// Credentials as the controller reads them from a Secret with `identity`, `known_hosts` and
/// optionally `password`.
fn ssh_creds(identity: &[u8], known_hosts: &[u8], password: Option<&str>) -> Credentials {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    data.insert("identity".into(), identity.to_vec());
    data.insert("known_hosts".into(), known_hosts.to_vec());
    if let Some(password) = password {
        data.insert("password".into(), password.as_bytes().to_vec());
    }
    Credentials::from_secret_data("deploy-key", &data).expect("valid secret")
}

fn server_creds(server: &GitServer) -> Credentials {
    ssh_creds(
        &std::fs::read(server.get("identity")).expect("identity"),
        &std::fs::read(server.get("known_hosts")).expect("known_hosts"),
        None,
    )
}

fn storage() -> Storage {
    Storage::new(temp_dir("ssh-storage")).expect("storage")
}

fn run(storage: &Storage, request: &FetchRequest) -> Result<FetchOutcome, SourceError> {
    fetch(storage, request, &FetchControl::new())
}

fn stored_digest(outcome: &FetchOutcome) -> String {
    match outcome {
        FetchOutcome::Stored { artifact, .. } => artifact.packed.digest.clone(),
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// The stored artifact's file `path`.
fn file_of(storage: &Storage, outcome: &FetchOutcome, path: &str) -> String {
    let FetchOutcome::Stored { artifact, .. } = outcome else {
        panic!("expected a stored artifact, got {outcome:?}");
    };
    let bytes = storage
        .read_verified(&artifact.path)
        .expect("read")
        .expect("artifact exists");
    let dest = temp_dir("ssh-unpacked");
    unpack_verified(
        &bytes,
        &artifact.packed.digest,
        &UnpackLimits::default(),
        &dest,
    )
    .expect("unpack");
    let text = std::fs::read_to_string(dest.join(path)).expect("file in artifact");
    std::fs::remove_dir_all(&dest).expect("cleanup");
    text
}

/// Makes a client key with `ssh-keygen` (extra args select type/format/passphrase) and returns
/// (private key bytes, public key line).
fn keygen(dir: &Path, name: &str, args: &[&str]) -> (Vec<u8>, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-C", "gitops-test", "-f"])
        .arg(&path)
        .args(args)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read(&path).expect("private key"),
        std::fs::read_to_string(format!("{}.pub", path.display()))
            .expect("public key")
            .trim()
            .to_owned(),
    )
}

/// Lets `public_key` log in to `server` (sshd reads authorized_keys at every login).
fn authorize(server: &GitServer, public_key: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(server.get("authorized_keys"))
        .expect("authorized_keys");
    writeln!(file, "restrict {public_key}").expect("append key");
}

/// The SHA256 fingerprint `ssh-keygen -l` prints for the public key file `path`.
fn fingerprint(path: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f", path])
        .output()
        .expect("run ssh-keygen -l");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_owned()
}

/// Pushes `main` and every tag of `repo`'s working clone to the bare repository `bare`.
fn mirror(repo: &Repo, bare: &Path) {
    let bare = bare.to_str().expect("utf-8 path");
    repo.git(&["push", "-q", "-f", bare, "main"]);
    repo.git(&["push", "-q", "-f", "--tags", bare]);
}

#[test]
fn ssh_fetches_branch_tag_semver_and_commit_with_the_digests_of_http() {
    let ssh = GitServer::start(ServerKind::Ssh);
    let http = GitServer::start(ServerKind::Http);
    let repo = ssh.repo("app");
    let http_repo = http.repo("app");
    let c1 = repo.commit(&[("deploy/app.yaml", Some("replicas: 1\n"))], "one");
    repo.tag("v1.0.0");
    let c2 = repo.commit(&[("deploy/app.yaml", Some("replicas: 2\n"))], "two");
    mirror(&repo, &http_repo.bare);

    let storage = storage();
    let mut over_ssh = request(&ssh.url("app"), server_creds(&ssh));
    let mut over_http = request(&http.url("app"), Credentials::default());
    over_http.name = "repo-http".into();

    // Branch: same revision and same artifact digest over both transports.
    let branch = run(&storage, &over_ssh).expect("branch over ssh");
    assert_eq!(branch.revision(), format!("main@sha1:{c2}"));
    let branch_http = run(&storage, &over_http).expect("branch over http");
    assert_eq!(branch_http.revision(), branch.revision());
    assert_eq!(stored_digest(&branch), stored_digest(&branch_http));
    assert_eq!(
        file_of(&storage, &branch, "deploy/app.yaml"),
        "replicas: 2\n"
    );

    // Unchanged remote: one handshake, nothing stored.
    over_ssh.last_revision = Some(branch.revision().to_owned());
    assert_eq!(
        run(&storage, &over_ssh).expect("unchanged"),
        FetchOutcome::Unchanged {
            revision: branch.revision().to_owned()
        }
    );
    over_ssh.last_revision = None;

    // Annotated tag, peeled to its commit.
    let tag_ref = |tag: &str| GitRepositoryRef {
        tag: Some(tag.into()),
        ..Default::default()
    };
    over_ssh.reference = RefRequest::from_spec(Some(&tag_ref("v1.0.0"))).expect("ref");
    over_http.reference = over_ssh.reference.clone();
    let tag = run(&storage, &over_ssh).expect("tag over ssh");
    assert_eq!(tag.revision(), format!("v1.0.0@sha1:{c1}"));
    let tag_http = run(&storage, &over_http).expect("tag over http");
    assert_eq!(stored_digest(&tag), stored_digest(&tag_http));
    assert_eq!(file_of(&storage, &tag, "deploy/app.yaml"), "replicas: 1\n");

    // Semver range (lists the tags over ssh first) and a pinned commit.
    over_ssh.reference = RefRequest::from_spec(Some(&GitRepositoryRef {
        semver: Some(">=1.0.0, <2.0.0".into()),
        ..Default::default()
    }))
    .expect("ref");
    let semver = run(&storage, &over_ssh).expect("semver over ssh");
    assert_eq!(semver.revision(), format!("v1.0.0@sha1:{c1}"));
    over_ssh.reference = RefRequest::from_spec(Some(&GitRepositoryRef {
        commit: Some(c1.clone()),
        ..Default::default()
    }))
    .expect("ref");
    let pinned = run(&storage, &over_ssh).expect("commit over ssh");
    assert_eq!(pinned.revision(), format!("sha1:{c1}"));
    assert_eq!(stored_digest(&pinned), stored_digest(&tag));
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn ssh_protocol_v0_fallback_when_the_server_ignores_git_protocol() {
    let ssh = GitServer::start_with_env(ServerKind::Ssh, &[("GITOPS_SSH_ACCEPT_ENV", "0")]);
    let repo = ssh.repo("app");
    let c1 = repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let storage = storage();
    let mut req = request(&ssh.url("app"), server_creds(&ssh));
    let first = run(&storage, &req).expect("fetch over protocol v0");
    assert_eq!(first.revision(), format!("main@sha1:{c1}"));
    let c2 = repo.commit(&[("a.yaml", Some("a: 2\n"))], "two");
    req.last_revision = Some(first.revision().to_owned());
    let second = run(&storage, &req).expect("second fetch over protocol v0");
    assert_eq!(second.revision(), format!("main@sha1:{c2}"));
    assert_eq!(file_of(&storage, &second, "a.yaml"), "a: 2\n");
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn every_key_type_and_format_works_and_a_wrong_passphrase_never_leaks() {
    let ssh = GitServer::start(ServerKind::Ssh);
    let repo = ssh.repo("app");
    let c1 = repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let keys = temp_dir("ssh-keys");
    let known_hosts = std::fs::read(ssh.get("known_hosts")).expect("known_hosts");
    let storage = storage();

    // OpenSSH ed25519 key encrypted with a passphrase.
    let (encrypted, public) = keygen(
        &keys,
        "encrypted",
        &["-t", "ed25519", "-N", CANARY_PASSPHRASE],
    );
    authorize(&ssh, &public);
    let req = request(
        &ssh.url("app"),
        ssh_creds(&encrypted, &known_hosts, Some(CANARY_PASSPHRASE)),
    );
    let outcome = run(&storage, &req).expect("encrypted key with its passphrase");
    assert_eq!(outcome.revision(), format!("main@sha1:{c1}"));

    // Wrong passphrase: a credentials error naming the Secret, no passphrase in it.
    let wrong = format!("{CANARY_PASSPHRASE}-wrong");
    let req = request(
        &ssh.url("app"),
        ssh_creds(&encrypted, &known_hosts, Some(&wrong)),
    );
    let err = run(&storage, &req).expect_err("wrong passphrase");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("deploy-key") && text.contains("passphrase"),
        "{text}"
    );
    assert!(
        !text.contains(CANARY_PASSPHRASE),
        "passphrase leaked: {text}"
    );
    // No passphrase at all for an encrypted key says so.
    let req = request(&ssh.url("app"), ssh_creds(&encrypted, &known_hosts, None));
    let err = run(&storage, &req).expect_err("missing passphrase");
    assert!(err.to_string().contains("encrypted"), "{err}");

    // RSA key in PEM (PKCS#1) format, signing with rsa-sha2.
    let (pem, public) = keygen(
        &keys,
        "rsa-pem",
        &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
    );
    assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
    authorize(&ssh, &public);
    let mut req = request(&ssh.url("app"), ssh_creds(&pem, &known_hosts, None));
    req.name = "repo-rsa".into();
    let outcome = run(&storage, &req).expect("PEM RSA key");
    assert_eq!(outcome.revision(), format!("main@sha1:{c1}"));

    // Keys in OpenSSH format, as `ssh-keygen` writes them by default: ECDSA on each curve and
    // RSA (signing with rsa-sha2).
    for (name, args) in [
        ("ecdsa", ["-t", "ecdsa", "-b", "256"]),
        ("ecdsa-384", ["-t", "ecdsa", "-b", "384"]),
        ("ecdsa-521", ["-t", "ecdsa", "-b", "521"]),
        ("rsa-openssh", ["-t", "rsa", "-b", "3072"]),
    ] {
        let (key, public) = keygen(&keys, name, &[&args[..], &["-N", ""]].concat());
        authorize(&ssh, &public);
        let mut req = request(&ssh.url("app"), ssh_creds(&key, &known_hosts, None));
        req.name = format!("repo-{name}");
        let outcome = run(&storage, &req).unwrap_or_else(|e| panic!("{name} key: {e}"));
        assert_eq!(outcome.revision(), format!("main@sha1:{c1}"));
    }

    // An ECDSA key whose scalar OpenSSH stored in 31 bytes (one key in 256), encrypted: a
    // fixture, since ssh-keygen makes one only by chance.
    let short = include_str!("../../reconciler/src/source/testdata/ecdsa-short-scalar-encrypted");
    let public = include_str!("../../reconciler/src/source/testdata/ecdsa-short-scalar.pub");
    authorize(&ssh, public.trim());
    let mut req = request(
        &ssh.url("app"),
        ssh_creds(short.as_bytes(), &known_hosts, Some("fixture-passphrase")),
    );
    req.name = "repo-ecdsa-short".into();
    let outcome = run(&storage, &req).expect("ECDSA key with a short scalar");
    assert_eq!(outcome.revision(), format!("main@sha1:{c1}"));
    let _ = std::fs::remove_dir_all(&keys);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn an_unauthorized_key_is_authentication_failed_and_keeps_the_last_artifact() {
    let ssh = GitServer::start(ServerKind::Ssh);
    let repo = ssh.repo("app");
    repo.commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let storage = storage();
    let mut req = request(&ssh.url("app"), server_creds(&ssh));
    let good = run(&storage, &req).expect("deploy key works");
    let FetchOutcome::Stored { artifact, .. } = &good else {
        panic!("stored")
    };

    repo.commit(&[("a.yaml", Some("a: 2\n"))], "two");
    let keys = temp_dir("ssh-keys");
    let (stranger, _) = keygen(&keys, "stranger", &["-t", "ed25519", "-N", ""]);
    let stranger_fingerprint = fingerprint(keys.join("stranger.pub").to_str().expect("utf-8"));
    let known_hosts = std::fs::read(ssh.get("known_hosts")).expect("known_hosts");
    req.credentials = ssh_creds(&stranger, &known_hosts, None);
    req.last_revision = Some(good.revision().to_owned());
    let err = run(&storage, &req).expect_err("unknown key must be refused");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&stranger_fingerprint),
        "names the key: {text}"
    );
    assert!(text.contains("refused key"), "{text}");
    let private_text = String::from_utf8_lossy(&stranger);
    let key_line = private_text.lines().nth(1).expect("key body");
    assert!(!text.contains(key_line), "key material leaked: {text}");
    assert!(storage.exists(&artifact.path), "last good artifact kept");
    let _ = std::fs::remove_dir_all(&keys);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn host_keys_are_checked_strictly() {
    let ssh = GitServer::start(ServerKind::Ssh);
    ssh.repo("app").commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let identity = std::fs::read(ssh.get("identity")).expect("identity");
    let real_fingerprint = fingerprint(ssh.get("host_key"));
    let port = ssh
        .get("url")
        .split(':')
        .nth(2)
        .and_then(|rest| rest.split('/').next())
        .expect("port in url")
        .to_owned();
    let keys = temp_dir("ssh-keys");
    let (_, impostor) = keygen(&keys, "impostor", &["-t", "ed25519", "-N", ""]);
    let impostor_key = impostor
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let storage = storage();

    // The host is known with another key: a mismatch naming the host and the offered key.
    let wrong = format!("[127.0.0.1]:{port} {impostor_key}\n");
    let req = request(
        &ssh.url("app"),
        ssh_creds(&identity, wrong.as_bytes(), None),
    );
    let err = run(&storage, &req).expect_err("host key mismatch");
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    let text = err.to_string();
    assert!(text.contains("host key mismatch"), "{text}");
    assert!(text.contains(&format!("[127.0.0.1]:{port}")), "{text}");
    assert!(text.contains(&real_fingerprint), "{text}");

    // The host is not in known_hosts at all (an entry for the default port does not count).
    let other = format!("127.0.0.1 {impostor_key}\n");
    let req = request(
        &ssh.url("app"),
        ssh_creds(&identity, other.as_bytes(), None),
    );
    let err = run(&storage, &req).expect_err("unknown host");
    assert!(err.to_string().contains("no known_hosts entry"), "{err}");
    assert!(err.to_string().contains(&real_fingerprint), "{err}");

    // Nothing was stored by the refused attempts.
    let stored = storage.root().join("gitrepository/ns/repo");
    assert!(
        std::fs::read_dir(&stored).map_or(true, |mut d| d.next().is_none()),
        "nothing stored"
    );

    // The right key, hashed by ssh-keygen -H, is accepted.
    let hashed = keys.join("known_hosts");
    std::fs::copy(ssh.get("known_hosts"), &hashed).expect("copy known_hosts");
    let out = Command::new("ssh-keygen")
        .args(["-H", "-f"])
        .arg(&hashed)
        .output()
        .expect("ssh-keygen -H");
    assert!(out.status.success());
    let hashed = std::fs::read(&hashed).expect("hashed known_hosts");
    assert!(String::from_utf8_lossy(&hashed).starts_with("|1|"));
    let req = request(&ssh.url("app"), ssh_creds(&identity, &hashed, None));
    run(&storage, &req).expect("hashed known_hosts entry");

    let _ = std::fs::remove_dir_all(&keys);
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn missing_repository_server_down_and_ssh_without_a_secret() {
    let mut ssh = GitServer::start(ServerKind::Ssh);
    ssh.repo("app").commit(&[("a.yaml", Some("a: 1\n"))], "one");
    let storage = storage();

    let req = request(&ssh.url("nope"), server_creds(&ssh));
    let err = run(&storage, &req).expect_err("missing repository");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    assert!(
        err.to_string()
            .contains("does not appear to be a git repository"),
        "the server's reason is passed on: {err}"
    );

    let req = request(&ssh.url("app"), Credentials::default());
    let err = run(&storage, &req).expect_err("no secret");
    assert!(err.to_string().contains("known_hosts"), "{err}");

    let creds = server_creds(&ssh);
    ssh.stop();
    let req = request(&ssh.url("app"), creds);
    let err = run(&storage, &req).expect_err("server down");
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    let _ = std::fs::remove_dir_all(storage.root());
}

#[test]
fn a_server_that_never_speaks_ssh_times_out() {
    let ssh = GitServer::start(ServerKind::Ssh);
    let creds = server_creds(&ssh);
    // Accepts TCP connections and never sends the SSH banner.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let storage = storage();
    let mut req = request(&format!("ssh://git@127.0.0.1:{port}/srv/app.git"), creds);
    req.timeout = Duration::from_secs(2);
    let started = Instant::now();
    // Directly (the blocking fetch itself honours the deadline) ...
    let err = run(&storage, &req).expect_err("must time out");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, SourceError::Timeout(t) if t == Duration::from_secs(2)),
        "{err}"
    );
    // ... and through the async wrapper the controller uses.
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

/// A TCP proxy in front of `upstream` that relays both directions and hangs up on both sides
/// once `cut_after` bytes came from the server: a server dying in the middle of a pack.
fn dying_proxy(upstream: u16, cut_after: usize) -> u16 {
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
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut relayed = 0usize;
                let mut buf = [0u8; 16 * 1024];
                while relayed < cut_after {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut_after - relayed),
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    relayed += n;
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_server_dying_mid_pack_fails_the_fetch_and_the_next_fetch_recovers() {
    let ssh = GitServer::start(ServerKind::Ssh);
    let repo = ssh.repo("app");
    // About 4 MiB of hex noise (≈2 MiB packed), far more than the proxy relays.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: String = (0..260_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{state:016x}")
        })
        .collect();
    let c1 = repo.commit(&[("noise.txt", Some(&noise))], "noise");
    let url = ssh.get("url");
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in ssh url");
    let proxy = dying_proxy(port, 300 * 1024);
    // known_hosts names the real port: the proxy's clients must check the same host key.
    let known_hosts = std::fs::read_to_string(ssh.get("known_hosts"))
        .expect("known_hosts")
        .replace(&format!(":{port} "), &format!(":{proxy} "));
    let identity = std::fs::read(ssh.get("identity")).expect("identity");
    let storage = storage();
    let mut req = request(
        &ssh.url("app")
            .replace(&format!(":{port}/"), &format!(":{proxy}/")),
        ssh_creds(&identity, known_hosts.as_bytes(), None),
    );
    req.timeout = Duration::from_secs(20);
    let started = Instant::now();
    let err = run(&storage, &req).expect_err("the connection dies mid-pack");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
    assert!(
        err.to_string()
            .contains("connection to the server was lost"),
        "{err}"
    );
    let stored = storage.root().join("gitrepository/ns/repo");
    assert!(
        std::fs::read_dir(&stored).map_or(true, |mut d| d.next().is_none()),
        "nothing stored"
    );

    // Straight to the server: the same object store takes the full pack.
    let req = request(&ssh.url("app"), server_creds(&ssh));
    let outcome = run(&storage, &req).expect("fetch after the failure");
    assert_eq!(outcome.revision(), format!("main@sha1:{c1}"));
    assert_eq!(file_of(&storage, &outcome, "noise.txt"), noise);
    let _ = std::fs::remove_dir_all(storage.root());
}
