//! Policy modules from `module.url`, against a real https server on 127.0.0.1 whose certificate
//! is issued by a throwaway CA (made with openssl at test time) that only the fetcher under test
//! trusts: a module is downloaded, verified and cached by digest; a digest mismatch, a module
//! too big, a server too slow, a redirect loop, a redirect to http, a 404 and an untrusted
//! server each fail with an error naming the policy and the URL without its credentials. With a
//! cluster, a Kustomization whose policy is a `module.url` runs it (the replica-bounds component
//! served over https denies), and one whose sha256 does not match fails with PolicyFailed.

mod kustomization_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitops_reconciler::policy::fetch::{FetchCause, FetchConfig, ModuleFetcher};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What a failure's cause must look like.
type CauseCheck<'a> = Box<dyn Fn(&FetchCause) -> bool + 'a>;

/// A real component, served as a remote module.
const REPLICA_BOUNDS: &[u8] = include_bytes!("../../policies/dist/replica-bounds.wasm");

const MODULE: &[u8] = b"\0asm pretend component bytes, long enough to be worth caching";

/// Serves the routes of this test over TLS until the runtime ends; counts module downloads.
async fn serve(dir: &Path, downloads: Arc<AtomicUsize>) -> u16 {
    use rustls_pki_types::pem::PemObject as _;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let downloads = downloads.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let path = path.split('?').next().unwrap_or("/").to_owned();
                let head = |status: &str, extra: &str, len: Option<usize>| {
                    let len = len
                        .map(|l| format!("Content-Length: {l}\r\n"))
                        .unwrap_or_default();
                    format!("HTTP/1.1 {status}\r\n{extra}{len}Connection: close\r\n\r\n")
                };
                let _ = match path.as_str() {
                    "/module.wasm" => {
                        downloads.fetch_add(1, Ordering::SeqCst);
                        let mut out = head("200 OK", "", Some(MODULE.len())).into_bytes();
                        out.extend_from_slice(MODULE);
                        tls.write_all(&out).await
                    }
                    "/replica-bounds.wasm" => {
                        let mut out = head("200 OK", "", Some(REPLICA_BOUNDS.len())).into_bytes();
                        out.extend_from_slice(REPLICA_BOUNDS);
                        tls.write_all(&out).await
                    }
                    "/moved" => {
                        tls.write_all(
                            head("302 Found", "Location: /module.wasm\r\n", Some(0)).as_bytes(),
                        )
                        .await
                    }
                    "/loop" => {
                        tls.write_all(head("302 Found", "Location: /loop\r\n", Some(0)).as_bytes())
                            .await
                    }
                    "/to-http" => {
                        tls.write_all(
                            head(
                                "301 Moved Permanently",
                                "Location: http://127.0.0.1/module.wasm\r\n",
                                Some(0),
                            )
                            .as_bytes(),
                        )
                        .await
                    }
                    "/big-declared" => {
                        tls.write_all(head("200 OK", "", Some(10 << 20)).as_bytes())
                            .await
                    }
                    "/big-streamed" => {
                        // No length: the body only ends when the connection closes.
                        let _ = tls.write_all(head("200 OK", "", None).as_bytes()).await;
                        let chunk = vec![b'x'; 16 << 10];
                        for _ in 0..64 {
                            if tls.write_all(&chunk).await.is_err() {
                                break;
                            }
                        }
                        Ok(())
                    }
                    "/slow" => {
                        let _ = tls
                            .write_all(head("200 OK", "", Some(1000)).as_bytes())
                            .await;
                        for _ in 0..1000 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if tls.write_all(b"x").await.is_err() {
                                break;
                            }
                        }
                        Ok(())
                    }
                    _ => {
                        tls.write_all(head("404 Not Found", "", Some(0)).as_bytes())
                            .await
                    }
                };
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn url_modules_are_verified_cached_and_bounded_with_clear_errors() {
    let pki = tempfile_dir("pki");
    gitops_conformance::pki::make(&pki, "policy-url-test-ca");
    let downloads = Arc::new(AtomicUsize::new(0));
    let port = serve(&pki, downloads.clone()).await;
    let base = format!("https://127.0.0.1:{port}");
    let digest = hex::encode(Sha256::digest(MODULE));
    let cache = tempfile_dir("cache");
    let config = FetchConfig {
        ca_pem: Some(std::fs::read(pki.join("ca.crt")).unwrap()),
        cache_dir: Some(cache.clone()),
        max_bytes: 256 << 10,
        timeout: Duration::from_secs(2),
        max_redirects: 3,
        ..FetchConfig::default()
    };
    let fetcher = ModuleFetcher::new(config.clone());

    // Downloaded through a redirect, verified, then served from the cache by digest.
    let bytes = fetcher
        .fetch("pinned", &format!("{base}/moved"), &digest)
        .await
        .unwrap();
    assert_eq!(&bytes[..], MODULE);
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
    fetcher
        .fetch("pinned", &format!("{base}/module.wasm"), &digest)
        .await
        .unwrap();
    assert_eq!(
        downloads.load(Ordering::SeqCst),
        1,
        "the memory cache answers"
    );
    assert_eq!(std::fs::read(cache.join(&digest)).unwrap(), MODULE);
    let restarted = ModuleFetcher::new(config.clone());
    restarted
        .fetch("pinned", &format!("{base}/module.wasm"), &digest)
        .await
        .unwrap();
    assert_eq!(
        downloads.load(Ordering::SeqCst),
        1,
        "the disk cache answers after a restart"
    );

    // Every failure names the policy and the URL, never the query string (credentials).
    let fresh = ModuleFetcher::new(FetchConfig {
        cache_dir: None,
        ..config.clone()
    });
    let wrong = "0".repeat(64);
    let cases: Vec<(&str, &str, CauseCheck)> = vec![
        (
            "/module.wasm?token=s3cr3t",
            &wrong,
            Box::new(
                |c| matches!(c, FetchCause::DigestMismatch { actual, .. } if *actual == digest),
            ),
        ),
        (
            "/big-declared",
            &digest,
            Box::new(|c| matches!(c, FetchCause::TooLarge { limit } if *limit == 256 << 10)),
        ),
        (
            "/big-streamed",
            &digest,
            Box::new(|c| matches!(c, FetchCause::TooLarge { .. })),
        ),
        (
            "/slow",
            &digest,
            Box::new(|c| matches!(c, FetchCause::Timeout(d) if *d == Duration::from_secs(2))),
        ),
        (
            "/loop",
            &digest,
            Box::new(|c| matches!(c, FetchCause::TooManyRedirects { limit: 3 })),
        ),
        (
            "/to-http",
            &digest,
            Box::new(
                |c| matches!(c, FetchCause::RedirectNotHttps(to) if to == "http://127.0.0.1/module.wasm"),
            ),
        ),
        (
            "/missing.wasm?sig=s3cr3t",
            &digest,
            Box::new(|c| *c == FetchCause::Status(404)),
        ),
    ];
    for (path, sha, expected) in &cases {
        let url = format!("{base}{path}");
        let started = Instant::now();
        let err = fresh.fetch("team-policy", &url, sha).await.unwrap_err();
        let text = err.to_string();
        assert!(expected(&err.cause), "{path}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path} took {:?}",
            started.elapsed()
        );
        assert!(
            text.starts_with("policy team-policy: module.url "),
            "{text}"
        );
        assert!(
            text.contains(&format!("{base}{}", path.split('?').next().unwrap())),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "credentials leaked: {text}");
    }

    // A server whose CA the fetcher was not given is not trusted.
    let untrusting = ModuleFetcher::new(FetchConfig {
        ca_pem: None,
        cache_dir: None,
        ..config
    });
    let err = untrusting
        .fetch("team-policy", &format!("{base}/module.wasm"), &digest)
        .await
        .unwrap_err();
    assert!(
        matches!(&err.cause, FetchCause::Request(m) if m.to_lowercase().contains("certificate"))
            || matches!(err.cause, FetchCause::Trust(_)),
        "{err}"
    );
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("policy-url-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn a_kustomization_runs_a_policy_from_an_https_url() {
    use kustomization_support::*;
    let pki = tempfile_dir("pki-e2e");
    gitops_conformance::pki::make(&pki, "policy-url-test-ca");
    let port = serve(&pki, Arc::new(AtomicUsize::new(0))).await;
    // The reconciler's --policy-module-ca-file, in this process.
    assert!(ModuleFetcher::install(FetchConfig {
        ca_pem: Some(std::fs::read(pki.join("ca.crt")).unwrap()),
        ..FetchConfig::default()
    }));
    gitops_conformance::install_crds();
    let ns = gitops_conformance::TestNamespace::new("purl");
    let ctl = RunningController::start(&ns.name).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let revision = source.publish(
        '1',
        &[
            ("app/kustomization.yaml", "resources: [web.yaml]\n"),
            (
                "app/web.yaml",
                &format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {}\nspec:\n  replicas: 50\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n",
                    ns.name
                ),
            ),
        ],
    );
    let digest = hex::encode(Sha256::digest(REPLICA_BOUNDS));
    let url = format!("https://127.0.0.1:{port}/replica-bounds.wasm");
    let spec = |sha: &str| {
        format!(
            "  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./app\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  policies:\n  - name: remote-bounds\n    module: {{url: '{url}?token=s3cr3t', sha256: '{sha}'}}\n    config: {{bounds: {{Deployment: {{min: 1, max: 5}}}}, action: deny}}\n"
        )
    };
    let created = ns.create(&kustomization("pinned", &ctl.shard, &spec(&digest)));
    assert!(created.success, "{}", created.stderr);
    let wrong = "1".repeat(64);
    let created = ns.create(&kustomization("mismatch", &ctl.shard, &spec(&wrong)));
    assert!(created.success, "{}", created.stderr);

    let (_, _, denied) = eventually(
        Duration::from_secs(90),
        "the remote policy to deny",
        || ready(&ns.name, "pinned").filter(|(s, r, _)| s == "False" && r == "PolicyDenied"),
        || format!("{:?}", ready(&ns.name, "pinned")),
    )
    .await;
    assert!(
        denied.contains("remote-bounds") && denied.contains("web"),
        "{denied}"
    );
    assert!(revision.starts_with("main@sha1:"));

    let (_, _, failed) = eventually(
        Duration::from_secs(90),
        "the digest mismatch",
        || ready(&ns.name, "mismatch").filter(|(s, r, _)| s == "False" && r == "PolicyFailed"),
        || format!("{:?}", ready(&ns.name, "mismatch")),
    )
    .await;
    assert!(
        failed.contains("policy remote-bounds: module.url"),
        "{failed}"
    );
    assert!(
        failed.contains(&format!(
            "sha256 mismatch: declared {wrong}, downloaded {digest}"
        )),
        "{failed}"
    );
    assert!(
        failed.contains(&url) && !failed.contains("s3cr3t"),
        "{failed}"
    );
    drop(ctl);
}
