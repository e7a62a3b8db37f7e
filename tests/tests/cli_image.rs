//! The reconciler's OCI image, built without a container engine by
//! `kubectl-gitops/image/build.sh` (dev profile here: the release job builds the release one):
//! a valid image layout (skopeo recomputes every digest while copying it), reproducible bytes, a
//! statically linked `gitops-reconciler` that runs, a non-root user, a CA bundle, and install
//! manifests that reference the image by digest. With a cluster, the binary runs from the
//! unpacked image root (chroot, user 65532, nothing of the host but /etc/hosts and the basic
//! device nodes a container runtime provides) and fetches from
//! an https git server with a private CA through its static libcurl + OpenSSL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, ServerKind, temp_dir};
use gitops_conformance::{TestNamespace, install_crds, kubectl, kubectl_ok, repo_root};

fn run(cmd: &mut Command) -> String {
    gitops_conformance::run_ok(cmd)
}

/// What `build.sh` printed, plus where it wrote.
struct Image {
    dir: PathBuf,
    archive: String,
    digest: String,
    reference: String,
}

fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{out}"))
        .to_owned()
}

/// Builds the image once per test process (the static build is the slow part; cargo caches it
/// in the target dir across runs).
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = temp_dir("image");
        let out = run(gitops_conformance::cargo_command("bash")
            .arg(repo_root().join("kubectl-gitops/image/build.sh"))
            .arg(&dir)
            .env("GITOPS_IMAGE_PROFILE", "dev"));
        Image {
            archive: field(&out, "archive"),
            digest: field(&out, "digest"),
            reference: field(&out, "ref"),
            dir,
        }
    })
}

/// The image's root filesystem, unpacked from the layer skopeo copied out of the archive.
fn rootfs(image: &Image, into: &Path) -> PathBuf {
    let copy = into.join("copy");
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "-q",
        &format!("oci-archive:{}", image.archive),
        &format!("dir:{}", copy.display()),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("manifest.json")).unwrap())
            .unwrap();
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = layers[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let root = into.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    // As root, tar keeps the owners recorded in the layer (65532 for /data and the home).
    run(Command::new("tar")
        .arg("-xzf")
        .arg(copy.join(&layer))
        .arg("-C")
        .arg(&root));
    root
}

#[test]
#[ignore = "builds a static reconciler"]
fn the_image_archive_is_valid_reproducible_static_non_root_and_installed_by_digest() {
    let image = image();
    assert!(
        image.digest.starts_with("sha256:") && image.digest.len() == 71,
        "{}",
        image.digest
    );
    assert!(
        image
            .reference
            .ends_with(&format!("gitops-reconciler@{}", image.digest)),
        "{}",
        image.reference
    );
    let digest_file = std::fs::read_to_string(image.dir.join("digest")).unwrap();
    assert_eq!(digest_file.trim(), image.digest);

    // skopeo reads it as an OCI archive and as a Docker archive (docker load, kind load).
    let inspect =
        run(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", image.archive)]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    let config = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}", image.archive),
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/gitops-reconciler"])
    );
    let docker =
        run(Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", image.archive)]));
    let docker: serde_json::Value = serde_json::from_str(&docker).unwrap();
    // A Docker archive names layers by their uncompressed digest: the config's diff_id.
    assert_eq!(docker["Layers"], config["rootfs"]["diff_ids"]);
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(1));

    // Unpacked: the binary is static and runs; the user, /tmp, /data and the CA bundle exist.
    let work = temp_dir("image-rootfs");
    let root = rootfs(image, &work);
    let bin = root.join("gitops-reconciler");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"),
        "the reconciler is dynamically linked:\n{ldd_text}"
    );
    let help = run(Command::new(&bin).arg("--help"));
    assert!(help.contains("--storage-path"), "{help}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE"));
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(root.join("data")).unwrap().uid(), 65532);
    assert_eq!(
        std::fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );

    // Reproducible: the same binary packs to the same bytes, hence the same digest.
    let again_dir = temp_dir("image-again");
    let again = run(gitops_conformance::cargo_command("bash")
        .arg(repo_root().join("kubectl-gitops/image/build.sh"))
        .arg(&again_dir)
        .env("GITOPS_RECONCILER_BIN", &bin));
    assert_eq!(field(&again, "digest"), image.digest);
    assert_eq!(
        std::fs::read(field(&again, "archive")).unwrap(),
        std::fs::read(&image.archive).unwrap()
    );

    // The install manifests reference the image by digest.
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = {
        let mut ui = kubectl_gitops::ui::Ui::plain(&mut o, &mut e);
        kubectl_gitops::run(
            [
                "kubectl-gitops",
                "install",
                "--export",
                "--image",
                &image.reference,
            ],
            &mut ui,
        )
    };
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&e));
    let manifests = String::from_utf8(o).unwrap();
    assert!(
        manifests.contains(&format!("image: {}", image.reference)),
        "{manifests}"
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&again_dir);
}

/// The reconciler running from the image root, stopped when dropped.
struct Chrooted {
    child: Child,
    log: PathBuf,
}

impl Drop for Chrooted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs a cluster"]
fn the_image_binary_fetches_over_https_from_its_own_root_as_non_root() {
    install_crds();
    let image = image();
    let work = temp_dir("image-run");
    let root = rootfs(image, &work);

    // A kubeconfig reaching the API server by the name `localhost` (resolved from /etc/hosts by
    // the static binary), credentials embedded.
    let flat = kubectl_ok(&["config", "view", "--raw", "--minify", "--flatten"], None);
    let mut kubeconfig = String::new();
    for line in flat.lines() {
        match line.trim_start().strip_prefix("server: https://127.0.0.1:") {
            Some(port) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                kubeconfig.push_str(&format!("{indent}server: https://localhost:{port}\n"));
            }
            None => {
                kubeconfig.push_str(line);
                kubeconfig.push('\n');
            }
        }
    }
    assert!(kubeconfig.contains("https://localhost:"), "{kubeconfig}");
    std::fs::write(root.join("kubeconfig"), &kubeconfig).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    // What a container runtime gives every container: the basic device nodes (getrandom falls
    // back to /dev/urandom).
    std::fs::create_dir_all(root.join("dev")).unwrap();
    for (name, minor) in [
        ("null", "3"),
        ("zero", "5"),
        ("random", "8"),
        ("urandom", "9"),
    ] {
        run(Command::new("mknod")
            .args(["-m", "666"])
            .arg(root.join("dev").join(name))
            .args(["c", "1", minor]));
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        root.join("kubeconfig"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let server = GitServer::start(ServerKind::Https);
    let repo = server.repo("app");
    let commit = repo.commit(&[("deploy/cm.yaml", Some("kind: ConfigMap\n"))], "app");
    let url = server
        .url("app")
        .replace("https://127.0.0.1:", "https://localhost:");
    let ns = TestNamespace::new("image-run");
    let ca = std::fs::read_to_string(server.get("ca")).unwrap();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app-auth", "namespace": ns.name},
        "stringData": {"username": server.get("username"), "password": server.get("password"), "ca.crt": ca},
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&secret.to_string()));
    let source = serde_json::json!({
        "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "app", "namespace": ns.name},
        "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1m", "secretRef": {"name": "app-auth"}},
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&source.to_string()));

    let port = |_: ()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let storage = port(());
    let log = work.join("reconciler.log");
    // Resolved here: the child's environment is cleared.
    let chroot = run(Command::new("sh").args(["-c", "command -v chroot"]));
    let child = Command::new(chroot.trim())
        .arg("--userspec=65532:65532")
        .arg(&root)
        .args([
            "/gitops-reconciler",
            "--storage-path",
            "/data",
            "--storage-addr",
            &format!("127.0.0.1:{storage}"),
            "--storage-adv-addr",
            &format!("localhost:{storage}"),
            "--metrics-addr",
            &format!("127.0.0.1:{}", port(())),
            "--health-addr",
            &format!("127.0.0.1:{}", port(())),
            "--receiver-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env_clear()
        .env("KUBECONFIG", "/kubeconfig")
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .env("HOME", "/home/nonroot")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chroot (run the conformance suite as root)");
    let reconciler = Chrooted { child, log };

    let wanted = format!("main@sha1:{commit}");
    let start = Instant::now();
    loop {
        let status = kubectl(
            &[
                "-n",
                &ns.name,
                "get",
                "gitrepositories.kubectl-gitops.io",
                "app",
                "-o",
                "jsonpath={.status.artifact.revision} {.status.conditions[?(@.type==\"Ready\")].message}",
            ],
            None,
        );
        if status.stdout.starts_with(&wanted) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the chrooted reconciler did not fetch {wanted}: {}\nlog:\n{}",
            status.stdout,
            std::fs::read_to_string(&reconciler.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The artifact landed in the image's /data, written by user 65532.
    use std::os::unix::fs::MetadataExt as _;
    let stored: Vec<_> = walk(&root.join("data"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    assert!(!stored.is_empty(), "no artifact under /data");
    assert_eq!(std::fs::metadata(&stored[0]).unwrap().uid(), 65532);
    drop(reconciler);
    let _ = std::fs::remove_dir_all(&work);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
