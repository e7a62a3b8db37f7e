//! Real git servers and repositories for the source tests.
//!
//! [`GitServer::start`] runs `tests/git/serve.sh` (lighttpd + git-http-backend, nginx +
//! fcgiwrap, git daemon or sshd on a free loopback port) and stops exactly what it started when
//! dropped. [`Repo`] is a bare repository under the server's directory plus a working clone to
//! commit, tag and force-push with the real `git`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which server to start (see `tests/git/serve.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// lighttpd + git-http-backend, TLS with a throwaway CA, basic auth.
    Https,
    /// lighttpd + git-http-backend, plain HTTP, no auth.
    Http,
    /// nginx + fcgiwrap + git-http-backend, TLS, `Authorization: Bearer <token>` required.
    Bearer,
    /// `git daemon` (git://).
    Daemon,
    /// Debian's sshd with a deploy key and known_hosts.
    Ssh,
}

impl ServerKind {
    fn arg(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
            Self::Bearer => "bearer",
            Self::Daemon => "daemon",
            Self::Ssh => "ssh",
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gitops-{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running git server; stopped (exactly the processes it started) on drop.
pub struct GitServer {
    /// Which server and protocol it is.
    pub kind: ServerKind,
    /// Bare repositories served.
    pub repos: PathBuf,
    /// Everything `serve.sh` printed (url, ca, username, password, token, identity, ...).
    pub info: BTreeMap<String, String>,
    run: PathBuf,
    stopped: bool,
}

impl GitServer {
    /// Starts a server of `kind` over a fresh repositories directory.
    pub fn start(kind: ServerKind) -> Self {
        Self::start_with_env(kind, &[])
    }

    /// Like [`start`](Self::start) with extra environment for `serve.sh` (e.g.
    /// `GITOPS_GIT_PASSWORD`).
    pub fn start_with_env(kind: ServerKind, env: &[(&str, &str)]) -> Self {
        let base = temp_dir(&format!("git-{}", kind.arg()));
        let repos = base.join("repos");
        let run = base.join("run");
        std::fs::create_dir_all(&repos).expect("create repos dir");
        let script = crate::repo_root().join("tests/git/serve.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(kind.arg()).arg(&repos).arg(&run);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run tests/git/serve.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut info = BTreeMap::new();
        for line in stdout.lines() {
            if let Some((k, v)) = line.split_once('=') {
                info.insert(k.to_owned(), v.to_owned());
            }
        }
        let server = Self {
            kind,
            repos,
            info,
            run,
            stopped: false,
        };
        assert!(
            out.status.success(),
            "serve.sh {} failed: {}\n{}",
            kind.arg(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    /// A value printed by `serve.sh`; panics when missing.
    pub fn get(&self, key: &str) -> &str {
        self.info
            .get(key)
            .unwrap_or_else(|| panic!("serve.sh printed no {key}= for {:?}", self.kind))
    }

    /// URL of repository `name` (without `.git`).
    pub fn url(&self, name: &str) -> String {
        format!("{}{name}.git", self.get("url"))
    }

    /// Creates a bare repository `name` served by this server, with a working clone.
    pub fn repo(&self, name: &str) -> Repo {
        Repo::create(&self.repos, name)
    }

    /// Stops the server now (e.g. to simulate an outage).
    pub fn stop(&mut self) {
        if !self.stopped {
            let script = crate::repo_root().join("tests/git/stop.sh");
            let _ = Command::new("bash")
                .arg(script)
                .arg(&self.run)
                .arg("--keep")
                .status();
            self.stopped = true;
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(base) = self.repos.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// Runs `git` hermetically (no user/system config) in `dir`; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "gitops-test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "gitops-test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository and a working clone to change it with.
pub struct Repo {
    /// The bare repository the server serves.
    pub bare: PathBuf,
    /// A clone to commit in and push from.
    pub work: PathBuf,
}

impl Repo {
    /// Creates `<repos>/<name>.git` (default branch main) and a working clone next to it.
    pub fn create(repos: &Path, name: &str) -> Self {
        let bare = repos.join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).expect("create bare dir");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        // Allow fetching a pinned commit by id over protocol v0 too.
        git(
            &bare,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        );
        let work = temp_dir(&format!("work-{name}"));
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                bare.to_str().expect("utf-8 path"),
            ],
        );
        Self { bare, work }
    }

    /// Writes `files` (path → content; `None` deletes), commits on the current branch, pushes
    /// it, and returns the commit id.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        for (path, content) in files {
            let full = self.work.join(path);
            match content {
                Some(content) => {
                    if let Some(parent) = full.parent() {
                        std::fs::create_dir_all(parent).expect("create dirs");
                    }
                    std::fs::write(&full, content).expect("write file");
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        let branch = git(&self.work, &["rev-parse", "--abbrev-ref", "HEAD"]);
        git(&self.work, &["push", "-q", "-f", "origin", &branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Runs git in the working clone.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// Creates an annotated tag at HEAD and pushes it.
    pub fn tag(&self, name: &str) {
        git(&self.work, &["tag", "-a", name, "-m", name]);
        git(&self.work, &["push", "-q", "origin", name]);
    }

    /// Writes `content` as a blob and returns its id.
    pub fn blob(&self, content: &str) -> String {
        let path = self.work.join(".git/gitops-blob");
        std::fs::write(&path, content).expect("write blob file");
        git(&self.work, &["hash-object", "-w", ".git/gitops-blob"])
    }

    /// Writes a tree from `git mktree` lines (`<mode> <type> <id>\t<name>`) — names are not
    /// validated, as a hostile repository would have them — and returns its id.
    pub fn mktree(&self, lines: &[String]) -> String {
        let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let mut child = Command::new("git")
            .arg("mktree")
            .current_dir(&self.work)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run git mktree");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin piped");
            stdin
                .write_all(input.as_bytes())
                .expect("write mktree input");
        }
        let out = child.wait_with_output().expect("git mktree");
        assert!(out.status.success(), "git mktree failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Commits `tree` on top of nothing and force-pushes it as `main`; returns the commit id.
    pub fn push_tree(&self, tree: &str) -> String {
        let commit = git(&self.work, &["commit-tree", tree, "-m", "crafted tree"]);
        git(
            &self.work,
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("{commit}:refs/heads/main"),
            ],
        );
        commit
    }

    /// Rewrites history: resets the branch to a new root commit with `files` and force-pushes.
    pub fn force_push_new_root(&self, files: &[(&str, &str)]) -> String {
        git(&self.work, &["checkout", "-q", "--orphan", "rewritten"]);
        git(&self.work, &["rm", "-rq", "--cached", "."]);
        for entry in std::fs::read_dir(&self.work)
            .expect("read work dir")
            .flatten()
        {
            if entry.file_name() != ".git" {
                let path = entry.path();
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(path);
                } else {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        for (path, content) in files {
            let full = self.work.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("create dirs");
            }
            std::fs::write(full, content).expect("write file");
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", "rewritten history"]);
        git(&self.work, &["branch", "-M", "main"]);
        git(&self.work, &["push", "-q", "-f", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Large repositories for the source limit tests, generated once and cached (they take tens
/// of seconds to write): under `$GITOPS_FIXTURE_CACHE`, else `~/.cache/kubectl-gitops/
/// source-fixtures`, else the system temp dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeFixture {
    /// One commit: a 300 MiB file of incompressible bytes (`big.bin`) and a small manifest.
    Blob300M,
    /// One commit: 1 GiB of incompressible files, 128 files of 8 MiB in 8 directories.
    Tree1G,
}

impl LargeFixture {
    fn dir_name(self) -> &'static str {
        match self {
            Self::Blob300M => "blob-300m.git",
            Self::Tree1G => "tree-1g.git",
        }
    }

    /// The files of the fixture's commit: (path, size in bytes).
    pub fn files(self) -> Vec<(String, usize)> {
        match self {
            Self::Blob300M => vec![("big.bin".to_owned(), 300 << 20)],
            Self::Tree1G => (0..128)
                .map(|i| (format!("d{}/f{i}.bin", i % 8), 8 << 20))
                .collect(),
        }
    }

    /// Bytes of all files of the fixture's commit.
    pub fn tree_bytes(self) -> u64 {
        self.files().iter().map(|(_, n)| *n as u64).sum()
    }

    /// The bare repository (branch `main`), generated on first use.
    pub fn path(self) -> PathBuf {
        let cache = std::env::var_os("GITOPS_FIXTURE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/kubectl-gitops/source-fixtures"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("gitops-source-fixtures"));
        let path = cache.join(self.dir_name());
        if path.join("gitops-fixture-complete").exists() {
            return path;
        }
        std::fs::create_dir_all(&cache).expect("create fixture cache");
        // Build next to it and rename: concurrent test processes never see half a fixture.
        let building = cache.join(format!(
            "{}.building-{}-{}",
            self.dir_name(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).expect("create fixture dir");
        git(&building, &["init", "-q", "--bare", "-b", "main"]);
        self.fast_import(&building);
        std::fs::write(building.join("gitops-fixture-complete"), b"").expect("mark fixture");
        if std::fs::rename(&building, &path).is_err() {
            // Another process finished first.
            let _ = std::fs::remove_dir_all(&building);
        }
        path
    }

    /// Streams the fixture's commit into `git fast-import` (level-0 zlib: the bytes are
    /// incompressible anyway, and the server then sends them without recompressing).
    fn fast_import(self, bare: &Path) {
        use std::io::Write;
        let mut child = Command::new("git")
            .args([
                "-c",
                "core.compression=0",
                "-c",
                "pack.compression=0",
                "fast-import",
                "--quiet",
            ])
            .current_dir(bare)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run git fast-import");
        {
            let mut stdin = std::io::BufWriter::with_capacity(
                1 << 20,
                child.stdin.take().expect("stdin piped"),
            );
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let files = self.files();
            for (i, (_, size)) in files.iter().enumerate() {
                write!(stdin, "blob\nmark :{}\ndata {size}\n", i + 1).expect("write");
                let mut left = *size;
                let mut block = vec![0u8; 1 << 16];
                while left > 0 {
                    for chunk in block.chunks_mut(8) {
                        // xorshift64*: fast, incompressible enough for zlib.
                        state ^= state >> 12;
                        state ^= state << 25;
                        state ^= state >> 27;
                        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                        chunk.copy_from_slice(&v[..chunk.len()]);
                    }
                    let n = left.min(block.len());
                    stdin.write_all(&block[..n]).expect("write blob");
                    left -= n;
                }
                stdin.write_all(b"\n").expect("write");
            }
            let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: large\n";
            // A small parent first: a depth-1 fetch of the large commit then gets a shallow
            // boundary (and takes the shallow lock), as fetches of real histories do.
            write!(
                stdin,
                "commit refs/heads/main\nmark :{base}\ncommitter gitops-test <test@example.com> 0 +0000\n\
                 data 5\nbase\nM 100644 inline app.yaml\ndata {}\n{manifest}\n",
                manifest.len(),
                base = files.len() + 1
            )
            .expect("write");
            write!(
                stdin,
                "commit refs/heads/main\ncommitter gitops-test <test@example.com> 1 +0000\n\
                 data 14\nlarge fixture\nfrom :{}\n",
                files.len() + 1
            )
            .expect("write");
            for (i, (path, _)) in files.iter().enumerate() {
                writeln!(stdin, "M 100644 :{} {path}", i + 1).expect("write");
            }
            stdin.flush().expect("flush");
        }
        let status = child.wait().expect("git fast-import");
        assert!(status.success(), "git fast-import failed");
    }
}

impl GitServer {
    /// Serves `bare` (a repository outside this server's directory, e.g. a cached
    /// [`LargeFixture`]) as `<name>.git` through a repository of its own that borrows its
    /// objects (git alternates), so moving this one's branches never touches `bare`.
    pub fn serve_borrowed(&self, name: &str, bare: &Path) -> PathBuf {
        let own = self.repos.join(format!("{name}.git"));
        std::fs::create_dir_all(&own).expect("create bare dir");
        git(&own, &["init", "-q", "--bare", "-b", "main"]);
        std::fs::write(
            own.join("objects/info/alternates"),
            format!("{}\n", bare.join("objects").display()),
        )
        .expect("write alternates");
        let head = git(bare, &["rev-parse", "refs/heads/main"]);
        git(&own, &["update-ref", "refs/heads/main", &head]);
        // Large incompressible files are not worth a delta search (seconds per fetch on the
        // server before the first pack byte): send them as stored, as hosting services do.
        git(&own, &["config", "core.bigFileThreshold", "1m"]);
        own
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` (a port on 127.0.0.1) that counts the
/// bytes it passes from the server to the client.
pub struct CountingProxy {
    /// The port the proxy listens on (127.0.0.1).
    pub port: u16,
    downloaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    /// Starts the proxy on a free port in front of 127.0.0.1:`upstream`; it runs until the
    /// test process ends.
    pub fn start(upstream: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let downloaded = Arc::new(AtomicU64::new(0));
        let counter = downloaded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(mut client_read), Ok(mut server_write)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut server_write);
                    let _ = server_write.shutdown(std::net::Shutdown::Write);
                });
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let (mut server, mut client) = (server, client);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        use std::io::{Read, Write};
                        match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                                if client.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { port, downloaded }
    }

    /// A proxy in front of the server of `url` (`http://127.0.0.1:<port>/...`), and `url`
    /// through it.
    pub fn in_front_of(url: &str) -> (Self, String) {
        let port: u16 = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a http://127.0.0.1:<port>/ url");
        let proxy = Self::start(port);
        let proxied = url.replacen(&format!(":{port}/"), &format!(":{}/", proxy.port), 1);
        (proxy, proxied)
    }

    /// Waits until no byte has passed for 300 ms (connections of a finished client drain), at
    /// most 10 s; returns the count then.
    pub fn settled(&self) -> u64 {
        let started = std::time::Instant::now();
        let mut last = self.downloaded();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = self.downloaded();
            if now == last || started.elapsed() > std::time::Duration::from_secs(10) {
                return now;
            }
            last = now;
        }
    }

    /// Bytes passed from the server to clients so far.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with a chunked 200 and then the
/// start of a valid smart-HTTP ref advertisement, `step` bytes every `every`, for a long time.
pub fn slow_drip(every: std::time::Duration, step: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.read(&mut [0u8; 4096]);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let body = b"001e# service=git-upload-pack\n".repeat(1000);
                for piece in body.chunks(step.max(1)) {
                    std::thread::sleep(every);
                    let ok = stream
                        .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .is_ok()
                        && stream.write_all(piece).is_ok()
                        && stream.write_all(b"\r\n").is_ok();
                    if !ok {
                        return;
                    }
                }
            });
        }
    });
    port
}
