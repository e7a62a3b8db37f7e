//! A Kustomization whose source is an ExternalArtifact, against a real apiserver and a real HTTP
//! server on 127.0.0.1: the test plays the producer (it packs a tar.gz with the system's `tar`,
//! serves it and writes the ExternalArtifact's status). Covered: no artifact yet, apply, a new
//! revision+digest re-applied through the source watch alone, a wrong digest refused with
//! nothing applied, an unreachable URL, and the CLI's `get sources external-artifact` and
//! `trace` showing the source.

mod cli_support;
mod kustomization_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds};
use kustomization_support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const T: Duration = Duration::from_secs(60);

/// A minimal HTTP/1.1 file server on 127.0.0.1: GET of a published path answers its bytes,
/// anything else 404.
struct Server {
    base: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = files.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let files = served.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let body = files.lock().unwrap().get(&path).cloned();
                    let (status, body) = match body {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        Self { base, files }
    }

    /// Serves `bytes` at `/path`; returns the URL.
    fn publish(&self, path: &str, bytes: Vec<u8>) -> String {
        self.files.lock().unwrap().insert(format!("/{path}"), bytes);
        format!("{}/{path}", self.base)
    }
}

/// `tar -czf - -C <dir> .` of `files`, as a producer would pack them (entries named `./…`).
fn tar_gz(files: &[(&str, String)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let out = std::process::Command::new("tar")
        .args(["-czf", "-", "-C"])
        .arg(dir.path())
        .arg(".")
        .output()
        .expect("the system's tar runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Writes the ExternalArtifact's status as its producer would (`path` and `lastUpdateTime`
/// too, except for revisions starting with `bare`, which remove them: they are optional here).
fn produce(ns: &str, name: &str, revision: &str, digest: &str, url: &str) {
    let mut artifact = serde_json::json!({"revision": revision, "digest": digest, "url": url,
        "path": null, "lastUpdateTime": null});
    if !revision.starts_with("bare") {
        artifact["path"] = format!("{name}.tar.gz").into();
        artifact["lastUpdateTime"] = "2026-01-01T00:00:00Z".into();
    }
    cli_support::set_status(
        ns,
        "externalartifacts.kubectl-gitops.io",
        name,
        serde_json::json!({
            "artifact": artifact,
            "conditions": [cli_support::ready("True", "Succeeded",
                &format!("stored artifact for revision '{revision}'"))],
        }),
    );
}

fn cm(ns: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{value: \"{value}\"}}\n"
    )
}

fn value_of(ns: &str, name: &str) -> Option<String> {
    get(ns, "configmap", name).and_then(|c| c["data"]["value"].as_str().map(str::to_owned))
}

/// `kubectl gitops ARGS` on a thread of its own (it runs its own runtime).
async fn gitops(args: &[&str]) -> cli_support::Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_support::gitops(&args)
    })
    .await
    .expect("the CLI thread")
}

/// Waits until Kustomization `app` in `ns` is Ready=`status` with `reason` and a message that
/// contains `part`; returns the message.
async fn wait_for(ns: &str, status: &str, reason: &str, part: &str) -> String {
    eventually(
        T,
        &format!("Ready={status} {reason} '{part}'"),
        || match ready(ns, "app") {
            Some((s, r, m)) if s == status && r == reason && m.contains(part) => Some(m),
            _ => None,
        },
        || format!("{:?}", ready(ns, "app")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn applies_external_artifacts_and_refuses_bad_digests_and_urls() {
    install_crds();
    let ns = TestNamespace::new("ksc-extart");
    let ctl = RunningController::start(&ns.name).await;
    let server = Server::start().await;
    let n = ns.name.as_str();
    let res = ns.create(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: ExternalArtifact\nmetadata: {name: bundle}\nspec:\n  sourceRef: {apiVersion: example.com/v1, kind: Builder, name: app}\n",
    );
    assert!(res.success, "{}", res.stderr);
    // The interval is long: only the source watch can bring a new revision in time.
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        "  sourceRef: {kind: ExternalArtifact, name: bundle}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 20s\n",
    ));

    // No artifact yet.
    let message = wait_for(n, "False", "SourceNotReady", "").await;
    assert_eq!(
        message,
        format!("ExternalArtifact {n}/bundle has no artifact yet")
    );

    // v1 applies.
    let v1 = tar_gz(&[
        (
            "app/kustomization.yaml",
            "resources: [a.yaml, b.yaml]\n".into(),
        ),
        ("app/a.yaml", cm(n, "a", "one")),
        ("app/b.yaml", cm(n, "b", "one")),
    ]);
    let (d1, url1) = (sha256(&v1), server.publish("v1.tar.gz", v1));
    let rev1 = format!("v1@{d1}");
    produce(n, "bundle", &rev1, &d1, &url1);
    let message = wait_for(n, "True", "ReconciliationSucceeded", "").await;
    assert_eq!(message, format!("Applied revision: {rev1}"));
    assert_eq!(value_of(n, "a").as_deref(), Some("one"));
    assert_eq!(value_of(n, "b").as_deref(), Some("one"));

    // A new revision and digest: re-applied, b pruned.
    let v2 = tar_gz(&[
        ("app/kustomization.yaml", "resources: [a.yaml]\n".into()),
        ("app/a.yaml", cm(n, "a", "two")),
    ]);
    let (d2, url2) = (sha256(&v2), server.publish("v2.tar.gz", v2));
    let rev2 = format!("v2@{d2}");
    produce(n, "bundle", &rev2, &d2, &url2);
    wait_for(
        n,
        "True",
        "ReconciliationSucceeded",
        &format!("Applied revision: {rev2}"),
    )
    .await;
    assert_eq!(value_of(n, "a").as_deref(), Some("two"));
    assert!(get(n, "configmap", "b").is_none(), "b was pruned");

    // A digest that is not the served tar.gz's: refused, nothing applied.
    let v3 = tar_gz(&[
        (
            "app/kustomization.yaml",
            "resources: [a.yaml, c.yaml]\n".into(),
        ),
        ("app/a.yaml", cm(n, "a", "three")),
        ("app/c.yaml", cm(n, "c", "three")),
    ]);
    let (actual3, url3) = (sha256(&v3), server.publish("v3.tar.gz", v3));
    let declared3 = sha256(b"something else");
    produce(n, "bundle", "v3", &declared3, &url3);
    let message = wait_for(n, "False", "ArtifactFailed", "").await;
    for wanted in [
        &format!("ExternalArtifact {n}/bundle"),
        &declared3,
        &actual3,
    ] {
        assert!(
            message.contains(wanted.as_str()),
            "{wanted} not in: {message}"
        );
    }
    assert_eq!(value_of(n, "a").as_deref(), Some("two"), "nothing applied");
    assert!(get(n, "configmap", "c").is_none(), "nothing applied");
    let status = ks_status(n, "app");
    assert_eq!(status["lastAppliedRevision"], rev2.as_str());
    assert_eq!(status["lastAttemptedRevision"], "v3");

    // An unreachable URL: a clear Ready=False, the last applied state kept.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    produce(
        n,
        "bundle",
        "bare-v4",
        &d2,
        &format!("http://127.0.0.1:{port}/v4.tar.gz?token=s3cr3t"),
    );
    let message = wait_for(n, "False", "ArtifactFailed", &format!("127.0.0.1:{port}")).await;
    assert!(
        message.starts_with(&format!("ExternalArtifact {n}/bundle: artifact bare-v4: downloading http://127.0.0.1:{port}/v4.tar.gz")),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
    assert_eq!(value_of(n, "a").as_deref(), Some("two"));
    let published = get(n, "externalartifacts.kubectl-gitops.io", "bundle").unwrap();
    assert!(
        published["status"]["artifact"].get("path").is_none(),
        "{published}"
    );

    // The CLI shows the source and where a Kustomization's content comes from.
    produce(n, "bundle", &rev2, &d2, &url2);
    let run = gitops(&["get", "sources", "external-artifact", "-n", n])
        .await
        .expect(0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("bundle "))
        .unwrap_or_else(|| panic!("no bundle row:\n{}", run.stdout));
    assert!(line.contains(&rev2) && line.contains("True"), "{line}");
    let run = gitops(&["get", "all", "-n", n, "--no-header"])
        .await
        .expect(0);
    for wanted in ["externalartifact/bundle ", "kustomization/app "] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(wanted)),
            "{wanted} not in:\n{}",
            run.stdout
        );
    }
    let run = gitops(&["get", "ks", "app", "-n", n, "--show-source"])
        .await
        .expect(0);
    assert!(
        run.stdout.contains(&format!("ExternalArtifact/{n}/bundle")),
        "{}",
        run.stdout
    );
    wait_for(
        n,
        "True",
        "ReconciliationSucceeded",
        &format!("Applied revision: {rev2}"),
    )
    .await;
    let run = gitops(&["reconcile", "ks", "app", "--with-source", "-n", n])
        .await
        .expect(0);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(&format!(
            "ExternalArtifact {n}/bundle is published by its producer"
        )),
        "{said}"
    );
    let run = gitops(&["trace", "configmap/a", "-n", n]).await.expect(0);
    for wanted in [
        "ExternalArtifact:",
        "bundle",
        "Producer:",
        "Builder/",
        &rev2,
    ] {
        assert!(
            run.stdout.contains(wanted),
            "{wanted} not in:\n{}",
            run.stdout
        );
    }
}
