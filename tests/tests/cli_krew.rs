//! krew packaging: the archive `kubectl-gitops/krew/package.sh` builds installs with real krew
//! (built from its Go module) offline, `kubectl gitops version` runs through kubectl's plugin
//! lookup, and the plugin is listed and uninstalled with a local git index in place.

use std::path::PathBuf;
use std::process::Command;

use gitops_conformance::repo_root;

fn run(cmd: &mut Command) -> String {
    gitops_conformance::run_ok(cmd)
}

/// Builds the plugin binary (debug: the release build is the release job's) and returns it.
fn plugin_binary() -> PathBuf {
    gitops_conformance::cargo_binary("kubectl-gitops", "kubectl-gitops")
}

/// kubectl-krew v0.4.3, built (once, cached) by tests/cluster/build.sh.
fn krew_binary() -> PathBuf {
    run(Command::new("bash")
        .arg(repo_root().join("tests/cluster/build.sh"))
        .arg("krew"));
    let versions = std::fs::read_to_string(repo_root().join("tests/cluster/versions.sh")).unwrap();
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("KREW_VERSION="))
        .expect("KREW_VERSION in versions.sh");
    let cache = std::env::var_os("GITOPS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/kubectl-gitops")
        });
    let bin = cache.join(format!("bin/krew-{version}/kubectl-krew"));
    assert!(bin.is_file(), "no krew at {}", bin.display());
    bin
}

#[test]
#[ignore = "builds krew from its Go module"]
fn krew_installs_lists_and_uninstalls_the_plugin_offline() {
    let work = std::env::temp_dir().join(format!("cli-krew-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let dist = work.join("dist");
    let archive = run(Command::new("bash")
        .arg(repo_root().join("kubectl-gitops/krew/package.sh"))
        .arg(&dist)
        .env("KUBECTL_GITOPS_BIN", plugin_binary()));
    let archive = PathBuf::from(archive.trim());
    let manifest = dist.join("gitops.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sum = run(Command::new("sha256sum").arg(&archive));
    let sum = sum.split_whitespace().next().unwrap();
    assert!(
        text.contains(&format!("sha256: \"{sum}\"")),
        "the manifest lacks the archive's sha256:\n{text}"
    );
    for platform in ["linux", "darwin", "windows"] {
        for arch in ["amd64", "arm64"] {
            assert!(
                text.contains(&format!("kubectl-gitops_{platform}_{arch}.tar.gz")),
                "no {platform}/{arch} entry"
            );
        }
    }

    // kubectl finds plugins on PATH: krew's bin dir, then kubectl-krew itself, then the system.
    let krew_root = work.join("krew");
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(krew_binary(), bin_dir.join("kubectl-krew")).unwrap();
    let path = format!(
        "{}:{}:{}",
        krew_root.join("bin").display(),
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("PATH", &path)
            .env("KREW_ROOT", &krew_root)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("HOME", &work);
        cmd
    };

    // A local index (krew needs one for list/search): a local git repository whose manifest
    // points at the archive served by a loopback HTTP server, so krew's own download and sha256
    // check run without the network.
    let server = ArchiveServer::start(std::fs::read(&archive).unwrap());
    let index = work.join("index");
    std::fs::create_dir_all(index.join("plugins")).unwrap();
    let uri_prefix = "https://github.com/kubectl-gitops/kubectl-gitops/releases/download/";
    assert!(
        text.contains(uri_prefix),
        "unexpected release URI in\n{text}"
    );
    let served = text.replace(
        &format!(
            "{uri_prefix}v{}/{}",
            env!("CARGO_PKG_VERSION"),
            archive.file_name().unwrap().to_string_lossy()
        ),
        &server.url,
    );
    std::fs::write(index.join("plugins/gitops.yaml"), served).unwrap();
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.current_dir(&index).args(args).env("HOME", &work);
        run(&mut cmd)
    };
    git(&["init", "-q", "-b", "master"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "index",
    ]);
    run(&mut kubectl(&[
        "krew",
        "index",
        "add",
        "local",
        index.to_str().unwrap(),
    ]));
    // Install offline from the manifest and archive (krew checks the sha256).
    run(&mut kubectl(&[
        "krew",
        "install",
        "--manifest",
        manifest.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
    ]));
    let version = run(&mut kubectl(&["gitops", "version", "--client"]));
    assert_eq!(
        version.trim(),
        format!("kubectl-gitops: v{}", env!("CARGO_PKG_VERSION"))
    );
    let store = krew_root
        .join("store/gitops")
        .join(format!("v{}", env!("CARGO_PKG_VERSION")));
    for file in ["LICENSE", "README.md"] {
        assert!(
            store.join(file).is_file(),
            "krew did not install {file} into {}",
            store.display()
        );
    }
    let listed = run(&mut kubectl(&["krew", "list"]));
    assert!(
        listed.lines().any(|l| l.trim() == "detached/gitops"),
        "krew list:\n{listed}"
    );
    let plugins = run(&mut kubectl(&["plugin", "list", "--name-only"]));
    assert!(
        plugins.contains("kubectl-gitops"),
        "kubectl plugin list:\n{plugins}"
    );
    run(&mut kubectl(&["krew", "uninstall", "gitops"]));
    assert!(
        !kubectl(&["gitops", "version", "--client"])
            .output()
            .unwrap()
            .status
            .success()
    );

    // Through the index.
    let search = run(&mut kubectl(&["krew", "search", "gitops"]));
    assert!(search.contains("local/gitops"), "krew search:\n{search}");
    run(&mut kubectl(&["krew", "install", "local/gitops"]));
    assert!(
        server.requests() >= 1,
        "krew did not download from the index's URI"
    );
    let version = run(&mut kubectl(&["gitops", "version", "--client"]));
    assert!(version.starts_with("kubectl-gitops: v"), "{version}");
    let listed = run(&mut kubectl(&["krew", "list"]));
    assert!(
        listed.lines().any(|l| l.trim() == "local/gitops"),
        "krew list:\n{listed}"
    );
    run(&mut kubectl(&["krew", "uninstall", "gitops"]));
    let listed = run(&mut kubectl(&["krew", "list"]));
    assert!(!listed.contains("gitops"), "still listed:\n{listed}");
    let after = kubectl(&["gitops", "version", "--client"])
        .output()
        .unwrap();
    assert!(
        !after.status.success(),
        "kubectl still finds the plugin after uninstall"
    );

    // A tampered archive is refused by its sha256.
    let bad = work.join("bad.tar.gz");
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let out = kubectl(&[
        "krew",
        "install",
        "--manifest",
        manifest.to_str().unwrap(),
        "--archive",
        bad.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success(), "krew installed a tampered archive");
    let _ = std::fs::remove_dir_all(&work);
}

/// Serves one file over HTTP on a loopback port, counting requests (krew's download).
struct ArchiveServer {
    url: String,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ArchiveServer {
    fn start(body: Vec<u8>) -> Self {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/kubectl-gitops.tar.gz",
            listener.local_addr().unwrap()
        );
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // Read the request head up to the blank line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Self { url, count }
    }

    fn requests(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}
