//! Provider `certSecretRef` and proxies against the real apiserver, the alert dispatcher and
//! real endpoints on 127.0.0.1: an https endpoint whose certificate a test CA (openssl, made at
//! test time) signed is reached only with `certSecretRef` (`ca.crt`, or Flux's older `caFile`);
//! an endpoint that demands a client certificate only with `tls.crt`/`tls.key`; a CONNECT proxy
//! written here (it checks `Proxy-Authorization` and records what it relayed) carries https
//! deliveries through a tunnel and forwards http ones, with Flux's precedence of
//! `proxySecretRef` over the Secret's `proxy` key over `spec.proxy`. Bad Secrets fail with errors
//! naming the Provider, the Secret and the key; no credential reaches the logs. The `github` and
//! `gitea` commit status Providers post to a real endpoint standing for the API.

mod kustomization_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitops_conformance::pki::{CA_CERT, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY};
use gitops_conformance::{TestNamespace, install_crds};
use gitops_reconciler::api::alert::{EventSeverity, Provider};
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::notify::alert::{self, DispatchConfig, Event, EventQueue};
use gitops_reconciler::notify::provider::{self, Delivery, DeliveryError};
use kube::Api;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);
const PROXY_USER: &str = "relay";
const PROXY_PASSWORD: &str = "pr0xy-s3cret-9d2e";

/// One request an endpoint received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The TLS client presented a certificate.
    client_cert: bool,
}

/// How an endpoint speaks.
#[derive(Clone, Copy, PartialEq)]
enum Tls {
    Plain,
    Server,
    /// The server demands a client certificate the test CA signed.
    Mutual,
}

/// A real HTTP(S) server on 127.0.0.1 that records every request and answers 200.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Endpoint {
    async fn start(pki: &Path, tls: Tls) -> Self {
        let acceptor = (tls != Tls::Plain).then(|| {
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config(pki, tls == Tls::Mutual)))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(hyper_util::rt::TokioIo::new(tcp), recorded, false).await,
                        Some(acceptor) => {
                            // A refused handshake (no or unknown client certificate) ends here,
                            // before any request is read.
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let client_cert = stream.get_ref().1.peer_certificates().is_some();
                            serve(hyper_util::rt::TokioIo::new(stream), recorded, client_cert)
                                .await;
                        }
                    }
                });
            }
        });
        Self { port, seen }
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str) -> Received {
        let start = Instant::now();
        loop {
            if let Some(r) = self.received(path).into_iter().next() {
                return r;
            }
            assert!(
                start.elapsed() < T,
                "nothing arrived at {path}; got {:?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn serve<I>(io: I, seen: Arc<Mutex<Vec<Received>>>, client_cert: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            use http_body_util::BodyExt as _;
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            seen.lock().unwrap().push(Received {
                method,
                path,
                headers,
                body,
                client_cert,
            });
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

fn server_config(pki: &Path, mutual: bool) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = CertificateDer::pem_file_iter(pki.join(SERVER_CERT))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join(SERVER_KEY)).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join(CA_CERT)).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).unwrap()
}

/// What the proxy was asked.
#[derive(Clone, Debug)]
struct Relayed {
    method: String,
    /// `host:port` of a CONNECT, the absolute URL of a forwarded request.
    target: String,
    authorized: bool,
}

/// An HTTP proxy on 127.0.0.1 wanting `PROXY_USER`/`PROXY_PASSWORD`: CONNECT tunnels and
/// absolute-form forwarding, to 127.0.0.1 only; 407 without the right credentials.
struct ConnectProxy {
    port: u16,
    relayed: Arc<Mutex<Vec<Relayed>>>,
}

impl ConnectProxy {
    async fn start() -> Self {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let log = relayed.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(relay(tcp, log.clone(), expected.clone()));
            }
        });
        Self { port, relayed }
    }

    fn relayed(&self) -> Vec<Relayed> {
        self.relayed.lock().unwrap().clone()
    }
}

async fn relay(mut client: TcpStream, log: Arc<Mutex<Vec<Relayed>>>, expected: String) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match client.read(&mut buf).await {
            Ok(n) if n > 0 && head.len() < 16 << 10 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let authorization = lines.find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, v)| v.trim().to_owned())
    });
    let authorized = authorization.as_deref() == Some(expected.as_str());
    log.lock().unwrap().push(Relayed {
        method: method.clone(),
        target: target.clone(),
        authorized,
    });
    if !authorized {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let authority = if method == "CONNECT" {
        target
    } else {
        target
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned()
    };
    // A test sends traffic to 127.0.0.1 only.
    if !authority.starts_with("127.0.0.1:") {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&authority).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let sent = if method == "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await;
        upstream.write_all(&head[end..]).await
    } else {
        // One request per connection: the proxy reads only the first request's head and then
        // copies bytes, so a second request on a kept-alive connection would pass unrecorded.
        let mut forwarded: Vec<u8> = text
            .split("\r\n")
            .filter(|l| {
                !l.is_empty()
                    && !l.split_once(':').is_some_and(|(k, _)| {
                        let k = k.trim();
                        k.eq_ignore_ascii_case("connection")
                            || k.eq_ignore_ascii_case("proxy-connection")
                    })
            })
            .flat_map(|l| [l.as_bytes(), b"\r\n"].concat())
            .collect();
        forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
        forwarded.extend_from_slice(&head[end..]);
        upstream.write_all(&forwarded).await
    };
    if sent.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

fn event(namespace: &str, name: &str) -> Event {
    Event {
        kind: "GitRepository".into(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: BTreeMap::new(),
        severity: EventSeverity::Info,
        reason: "NewArtifact".into(),
        message: format!("stored artifact for {name}"),
        metadata: BTreeMap::from([(alert::REVISION_KEY.to_owned(), "main@sha1:1234".to_owned())]),
        timestamp: jiff::Timestamp::now(),
        reporting_controller: "gitops-reconciler".into(),
    }
}

/// A generic Provider `name` posting to `base` + `/hook/<name>`, and an Alert forwarding the
/// events of GitRepository `name` to it.
fn provider_and_alert(name: &str, label: &str, base: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Provider\nmetadata:\n  name: {name}\n  labels: {{gitops-test: {label}}}\nspec:\n  type: generic\n  address: {base}/hook/{name}\n{extra}---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Alert\nmetadata:\n  name: {name}\n  labels: {{gitops-test: {label}}}\nspec:\n  providerRef: {{name: {name}}}\n  eventSources:\n  - {{kind: GitRepository, name: {name}}}\n"
    )
}

fn secret(ns: &TestNamespace, name: &str, args: &[String]) {
    let mut full = vec!["create", "secret", "generic", name];
    full.extend(args.iter().map(String::as_str));
    let created = ns.kubectl(&full, None);
    assert!(created.success, "{}", created.stderr);
}

/// One delivery attempt of Provider `name`, as the dispatcher makes it.
async fn deliver(client: &kube::Client, ns: &str, name: &str) -> Result<(), DeliveryError> {
    let provider = Api::<Provider>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    provider::deliver(&Delivery {
        client: client.clone(),
        provider: Arc::new(provider),
        event: event(ns, name),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs GITOPS_TEST_KUBECONFIG"]
async fn providers_reach_private_tls_endpoints_and_go_through_proxies() {
    let logs = kustomization_support::captured_logs(
        "info,gitops_reconciler=debug,kube_runtime::watcher=error",
    );
    install_crds();
    let ns = TestNamespace::new("ntls");
    let label = ns.name.clone();
    let client = kustomization_support::client().await;
    let metrics = Arc::new(Metrics::default());
    let queue = Arc::new(EventQueue::new(256, metrics.clone()));
    assert!(alert::install(queue.clone()), "one queue per test process");
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = tokio::spawn(alert::run_alerts(
        client.clone(),
        DispatchConfig {
            attempts: 2,
            first_retry: Duration::from_millis(200),
            ..Default::default()
        },
        queue.clone(),
        metrics.clone(),
        Some(format!("gitops-test={label}")),
        stop.clone().cancelled_owned(),
    ));

    let pki = std::env::temp_dir().join(format!("notify-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pki);
    std::fs::create_dir_all(&pki).unwrap();
    gitops_conformance::pki::make(&pki, "notify-tls-test-ca");
    let file = |name: &str| pki.join(name).display().to_string();
    let tls = Endpoint::start(&pki, Tls::Server).await;
    let mutual = Endpoint::start(&pki, Tls::Mutual).await;
    let plain = Endpoint::start(&pki, Tls::Plain).await;
    let proxy = ConnectProxy::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let https = |e: &Endpoint| format!("https://127.0.0.1:{}", e.port);
    let http = format!("http://127.0.0.1:{}", plain.port);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let proxy_with_credentials = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port
    );

    // The Secrets.
    secret(
        &ns,
        "ca",
        &[format!("--from-file=ca.crt={}", file(CA_CERT))],
    );
    secret(
        &ns,
        "legacy-ca",
        &[format!("--from-file=caFile={}", file(CA_CERT))],
    );
    secret(
        &ns,
        "client",
        &[
            "--type=kubernetes.io/tls".into(),
            format!("--from-file=ca.crt={}", file(CA_CERT)),
            format!("--from-file=tls.crt={}", file(CLIENT_CERT)),
            format!("--from-file=tls.key={}", file(CLIENT_KEY)),
        ],
    );
    secret(
        &ns,
        "proxy",
        &[
            format!("--from-literal=address={proxy_url}"),
            format!("--from-literal=username={PROXY_USER}"),
            format!("--from-literal=password={PROXY_PASSWORD}"),
        ],
    );
    secret(
        &ns,
        "proxy-key",
        &[format!("--from-literal=proxy={proxy_with_credentials}")],
    );
    secret(
        &ns,
        "dead-proxy-key",
        &[format!("--from-literal=proxy=http://127.0.0.1:{dead}")],
    );
    secret(
        &ns,
        "wrong-password",
        &[
            format!("--from-literal=address={proxy_url}"),
            format!("--from-literal=username={PROXY_USER}"),
            "--from-literal=password=not-the-password".into(),
        ],
    );
    secret(
        &ns,
        "half",
        &[format!("--from-file=tls.crt={}", file(CLIENT_CERT))],
    );
    secret(
        &ns,
        "junk-ca",
        &["--from-literal=ca.crt=not a certificate".into()],
    );
    secret(
        &ns,
        "junk-key",
        &[
            format!("--from-file=tls.crt={}", file(CLIENT_CERT)),
            "--from-literal=tls.key=junk-key-material-41f7".into(),
        ],
    );
    secret(
        &ns,
        "wrong-key",
        &[
            format!("--from-file=tls.crt={}", file(CLIENT_CERT)),
            format!("--from-file=tls.key={}", file(SERVER_KEY)),
        ],
    );

    // Providers the dispatcher delivers to, and the ones whose deliveries fail.
    let cert = |s: &str| format!("  certSecretRef: {{name: {s}}}\n");
    let manifests = [
        provider_and_alert("private-ca", &label, &https(&tls), &cert("ca")),
        provider_and_alert("legacy-ca", &label, &https(&tls), &cert("legacy-ca")),
        provider_and_alert("mutual", &label, &https(&mutual), &cert("client")),
        provider_and_alert(
            "tunnel",
            &label,
            &https(&tls),
            &format!("{}  proxySecretRef: {{name: proxy}}\n", cert("ca")),
        ),
        // The Secret's `proxy` key wins over spec.proxy (a dead port).
        provider_and_alert(
            "forward",
            &label,
            &http,
            &format!("  proxy: http://127.0.0.1:{dead}\n  secretRef: {{name: proxy-key}}\n"),
        ),
        // proxySecretRef wins over the Secret's `proxy` key (a dead port).
        provider_and_alert(
            "proxy-ref-wins",
            &label,
            &http,
            "  secretRef: {name: dead-proxy-key}\n  proxySecretRef: {name: proxy}\n",
        ),
        provider_and_alert(
            "wrong-password",
            &label,
            &https(&tls),
            &format!("{}  proxySecretRef: {{name: wrong-password}}\n", cert("ca")),
        ),
        provider_and_alert("no-ca", &label, &https(&tls), ""),
        provider_and_alert("mutual-without-cert", &label, &https(&mutual), &cert("ca")),
        provider_and_alert(
            "dead-proxy",
            &label,
            &https(&tls),
            &format!("{}  proxy: http://127.0.0.1:{dead}\n", cert("ca")),
        ),
        provider_and_alert("half", &label, &https(&tls), &cert("half")),
        provider_and_alert("junk-ca", &label, &https(&tls), &cert("junk-ca")),
        provider_and_alert("junk-key", &label, &https(&mutual), &cert("junk-key")),
        provider_and_alert("wrong-key", &label, &https(&mutual), &cert("wrong-key")),
        provider_and_alert("missing", &label, &https(&tls), &cert("nothing-here")),
        provider_and_alert(
            "https-proxy",
            &label,
            &https(&tls),
            "  proxy: https://127.0.0.1:3128\n",
        ),
    ]
    .concat();
    let created = ns.create(&manifests);
    assert!(created.success, "{}", created.stderr);
    // The dispatcher's caches see them.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for name in [
        "private-ca",
        "legacy-ca",
        "mutual",
        "tunnel",
        "forward",
        "proxy-ref-wins",
        "wrong-password",
    ] {
        alert::submit(event(&ns.name, name));
    }

    // certSecretRef: the private CA (ca.crt, or caFile) makes the endpoint trusted.
    tls.wait_for("/hook/private-ca").await;
    tls.wait_for("/hook/legacy-ca").await;
    // Mutual TLS: the endpoint saw the client certificate.
    let got = mutual.wait_for("/hook/mutual").await;
    assert!(got.client_cert);

    // https through the proxy: one CONNECT to the endpoint with the credentials of
    // proxySecretRef; the endpoint never sees them (they stay in the CONNECT request).
    let got = tls.wait_for("/hook/tunnel").await;
    assert!(!got.headers.contains_key("proxy-authorization"));
    let tunnels: Vec<_> = proxy
        .relayed()
        .into_iter()
        .filter(|r| r.method == "CONNECT" && r.target == format!("127.0.0.1:{}", tls.port))
        .collect();
    assert!(
        tunnels.iter().any(|r| r.authorized),
        "no authorized CONNECT: {tunnels:?}"
    );
    // http through the proxy: forwarded in absolute form; the Secret's `proxy` key beat the
    // dead spec.proxy, proxySecretRef beat the dead `proxy` key.
    plain.wait_for("/hook/forward").await;
    plain.wait_for("/hook/proxy-ref-wins").await;
    let forwarded: Vec<_> = proxy
        .relayed()
        .into_iter()
        .filter(|r| r.method == "POST" && r.authorized)
        .map(|r| r.target)
        .collect();
    assert!(
        forwarded.contains(&format!("{http}/hook/forward")),
        "{forwarded:?}"
    );

    // The wrong proxy password: 407, the delivery fails, the endpoint never hears of it.
    let start = Instant::now();
    while !proxy.relayed().iter().any(|r| !r.authorized) && start.elapsed() < T {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.relayed().iter().any(|r| !r.authorized));
    let err = deliver(&client, &ns.name, "wrong-password")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("proxy authorization required"),
        "{err}"
    );
    eprintln!("a wrong proxy password: {err}");
    assert!(tls.received("/hook/wrong-password").is_empty());

    // Without certSecretRef the test CA is unknown: a certificate error naming the Provider.
    let err = deliver(&client, &ns.name, "no-ca").await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, DeliveryError::Transport { .. }) && text.contains("certificate"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Provider '{}/no-ca'", ns.name)),
        "{text}"
    );
    eprintln!("without certSecretRef: {text}");
    assert!(err.is_transient());
    // A server demanding a client certificate refuses a client without one.
    let err = deliver(&client, &ns.name, "mutual-without-cert")
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transport { .. }), "{err}");
    eprintln!("without a client certificate: {err}");
    assert!(mutual.received("/hook/mutual-without-cert").is_empty());
    // Through a dead proxy nothing arrives: the delivery really takes the proxy.
    let err = deliver(&client, &ns.name, "dead-proxy").await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transport { .. }), "{err}");
    assert!(tls.received("/hook/dead-proxy").is_empty());

    // Unusable Secrets: errors name the Provider, the Secret and the key; never a value.
    let expect = |name: &str, secret: &str, cause: &str| {
        format!("Provider '{}/{name}': Secret '{secret}': {cause}", ns.name)
    };
    for (name, secret, cause) in [
        (
            "half",
            "half",
            "key 'tls.crt' is set but 'tls.key' is missing",
        ),
        ("junk-ca", "junk-ca", "key 'ca.crt' holds no certificate"),
        (
            "junk-key",
            "junk-key",
            "key 'tls.key' holds no PEM private key",
        ),
        ("missing", "nothing-here", "not found"),
    ] {
        let err = deliver(&client, &ns.name, name).await.unwrap_err();
        assert_eq!(err.to_string(), expect(name, secret, cause));
        assert_eq!(err.is_transient(), name == "missing", "{name}");
    }
    let err = deliver(&client, &ns.name, "wrong-key").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&expect(
            "wrong-key",
            "wrong-key",
            "key 'tls.crt' and key 'tls.key' were refused"
        )),
        "{text}"
    );
    eprintln!("a key of another certificate: {text}");
    let key_pem = std::fs::read_to_string(pki.join(SERVER_KEY)).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!text.contains(key_line));
    let err = deliver(&client, &ns.name, "https-proxy").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Provider '{}/https-proxy': proxy https://127.0.0.1:3128 (spec.proxy): only http:// proxies are supported",
            ns.name
        )
    );

    // The logs: the dispatcher's failure of the wrong password is there, without any secret.
    let start = Instant::now();
    let text = loop {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        if text.contains("proxy authorization required") || start.elapsed() > T {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("proxy authorization required"), "{text}");
    assert!(text.contains("'caFile' is deprecated"), "{text}");
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    for secret in [
        PROXY_PASSWORD,
        "not-the-password",
        basic.as_str(),
        "junk-key-material-41f7",
        key_line,
    ] {
        assert!(
            !text.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), dispatcher).await;
    let _ = std::fs::remove_dir_all(&pki);
}

/// The `github` and `gitea` Providers against a real HTTP endpoint standing for the API: the
/// status goes to `/api/v3` (GitHub Enterprise: the address is not github.com) or `/api/v1`
/// (Gitea) `/repos/{owner}/{repo}/statuses/{sha}` with the token and Flux's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GITOPS_TEST_KUBECONFIG"]
async fn commit_status_providers_post_to_the_repository_api() {
    install_crds();
    let ns = TestNamespace::new("ncs");
    let client = kustomization_support::client().await;
    let pki = std::env::temp_dir().join(format!("notify-cs-{}", std::process::id()));
    let api = Endpoint::start(&pki, Tls::Plain).await;
    let repo = format!("http://127.0.0.1:{}/org/app", api.port);
    secret(
        &ns,
        "gh",
        &["--from-literal=token=ghp_status_token_1".into()],
    );
    secret(
        &ns,
        "gt",
        &["--from-literal=token=gitea_status_token_2".into()],
    );
    secret(&ns, "empty", &["--from-literal=username=status-bot".into()]);
    let provider = |name: &str, type_: &str, secret: &str| {
        format!(
            "---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Provider\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  address: {repo}\n  secretRef: {{name: {secret}}}\n"
        )
    };
    let created = ns.create(
        &[
            provider("github", "github", "gh"),
            provider("gitea", "gitea", "gt"),
            provider("no-token", "github", "empty"),
        ]
        .concat(),
    );
    assert!(created.success, "{}", created.stderr);
    let providers = Api::<Provider>::namespaced(client.clone(), &ns.name);
    let sha = "0c9c2e41ab2f0e3b1d2c4a5b6e7f8091a2b3c4d5";
    let failed = Event {
        severity: EventSeverity::Error,
        reason: "HealthCheckFailed".into(),
        metadata: BTreeMap::from([(alert::REVISION_KEY.to_owned(), format!("main@sha1:{sha}"))]),
        ..event(&ns.name, "app")
    };
    let post = |name: &'static str, event: Event| {
        let (client, providers) = (client.clone(), providers.clone());
        async move {
            provider::deliver(&Delivery {
                client,
                provider: Arc::new(providers.get(name).await.unwrap()),
                event,
            })
            .await
        }
    };
    for (name, api_path, authorization) in [
        ("github", "/api/v3", "Bearer ghp_status_token_1"),
        ("gitea", "/api/v1", "token gitea_status_token_2"),
    ] {
        post(name, failed.clone()).await.unwrap();
        let path = format!("{api_path}/repos/org/app/statuses/{sha}");
        let got = api.wait_for(&path).await;
        assert_eq!(got.method, "POST");
        assert_eq!(got.headers["authorization"], authorization);
        assert_eq!(got.headers["content-type"], "application/json");
        let uid = providers
            .get(name)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "state": "failure",
                "context": format!("gitrepository/app/{}", uid.split('-').next().unwrap()),
                "description": "health check failed",
            })
        );
    }
    assert_eq!(
        api.received(&format!("/api/v3/repos/org/app/statuses/{sha}"))[0].headers["accept"],
        "application/vnd.github+json"
    );

    // Progressing is skipped; no revision and no token are errors that name the Provider.
    let before = api.seen.lock().unwrap().len();
    post(
        "github",
        Event {
            reason: "Progressing".into(),
            ..failed.clone()
        },
    )
    .await
    .unwrap();
    let err = post(
        "github",
        Event {
            metadata: BTreeMap::new(),
            ..failed.clone()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Provider '{}/github': the event has no revision metadata to set a commit status on",
            ns.name
        )
    );
    let err = post("no-token", failed.clone()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Provider '{}/no-token': type github needs a 'token' key in the secretRef Secret",
            ns.name
        )
    );
    assert!(!err.is_transient());
    assert_eq!(api.seen.lock().unwrap().len(), before);
}
