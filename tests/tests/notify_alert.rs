//! Alerts against the real apiserver, the Kustomization controller and real HTTP servers on
//! 127.0.0.1, one per Provider type: a PolicyDenied naming the policy and the violation
//! arrives at each in its shape, then the recovery; a duplicate within the window does not;
//! a failing endpoint is retried; a dead endpoint under a flood of events keeps the queue and
//! memory bounded.
//!
//! The Kustomization controller and the alert dispatcher run in-process; the controller's
//! events reach the dispatcher through the process's event queue, as in the reconciler binary.

mod kustomization_support;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitops_conformance::{TestNamespace, install_crds};
use gitops_reconciler::api::alert::EventSeverity;
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::notify::alert::{self, DispatchConfig, Event, EventQueue};
use kustomization_support::{PublishedSource, RunningController, eventually, kustomization, ready};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const HMAC_TOKEN: &str = "alert-hmac-token-51d0";
const QUEUE: usize = 64;
/// What the denial's message says (every provider carries the message).
const DENIAL: &str = "50 replicas is above the maximum of 5";

/// One request an endpoint received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The status the endpoint answered.
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A real HTTP server on 127.0.0.1 recording every request; it answers with the statuses of
/// `plan` in turn, then 200.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Endpoint {
    async fn start(plan: Vec<u16>) -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(VecDeque::from(plan)));
        let (server_seen, server_plan) = (seen.clone(), plan.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, plan) = (server_seen.clone(), server_plan.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, plan) = (seen.clone(), plan.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = plan.lock().unwrap().pop_front().unwrap_or(200);
                            seen.lock().unwrap().push(Received {
                                path,
                                headers,
                                body: body.to_vec(),
                                status,
                            });
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"ok"),
                            ));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { port, seen }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a request whose body contains `needle` arrived; returns it.
    async fn wait_for(&self, needle: &str, what: &str) -> Received {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .received()
                .into_iter()
                .find(|r| String::from_utf8_lossy(&r.body).contains(needle))
            {
                return r;
            }
            assert!(
                start.elapsed() < T,
                "{what}: nothing with {needle:?} arrived; got {:?}",
                self.received()
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn count(metrics: &Metrics, namespace: &str, name: &str, result: &str) -> u64 {
    let needle = format!(
        "gitops_alert_deliveries_total{{namespace=\"{namespace}\",name=\"{name}\",result=\"{result}\"}} "
    );
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs GITOPS_TEST_KUBECONFIG"]
async fn policy_denied_and_recovery_reach_every_provider_once() {
    install_crds();
    let ns = TestNamespace::new("alert");
    let label = ns.name.clone();
    let client = kustomization_support::client().await;
    let metrics = Arc::new(Metrics::default());
    let queue = Arc::new(EventQueue::new(QUEUE, metrics.clone()));
    assert!(alert::install(queue.clone()), "one queue per test process");
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = tokio::spawn(alert::run_alerts(
        client.clone(),
        DispatchConfig {
            queue_capacity: QUEUE,
            first_retry: Duration::from_millis(200),
            max_deliveries: 4,
            ..Default::default()
        },
        queue.clone(),
        metrics.clone(),
        Some(format!("gitops-test={label}")),
        stop.clone().cancelled_owned(),
    ));

    // One endpoint per provider type; the generic one fails twice before it accepts.
    let types = [
        "generic",
        "generic-hmac",
        "slack",
        "msteams",
        "discord",
        "googlechat",
        "alertmanager",
    ];
    let mut endpoints = BTreeMap::new();
    for t in types {
        let plan = if t == "generic" {
            vec![503, 503]
        } else {
            vec![]
        };
        endpoints.insert(t, Endpoint::start(plan).await);
    }
    gitops_conformance::kubectl_ok(
        &[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            "hmac",
            &format!("--from-literal=token={HMAC_TOKEN}"),
            "--from-literal=headers=X-Team: platform",
        ],
        None,
    );
    let mut manifests = String::new();
    for t in types {
        let port = endpoints[t].port;
        let secret = if t == "generic-hmac" {
            "\n  secretRef: {name: hmac}"
        } else {
            ""
        };
        manifests.push_str(&format!(
            "---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Provider\nmetadata:\n  name: {t}\n  labels: {{gitops-test: {label}}}\nspec:\n  type: {t}\n  address: http://127.0.0.1:{port}/hook/{t}{secret}\n---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Alert\nmetadata:\n  name: {t}\n  labels: {{gitops-test: {label}}}\nspec:\n  providerRef: {{name: {t}}}\n  eventSources:\n  - {{kind: Kustomization, name: '*'}}\n  eventMetadata: {{cluster: test-1}}\n  exclusionList: ['^ignored']\n"
        ));
    }
    let created = ns.create(&manifests);
    assert!(created.success, "{}", created.stderr);
    // The dispatcher's caches see them.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ctl = RunningController::start(&format!("alert-{}", std::process::id())).await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let files = |replicas| {
        vec![
            (
                "app/kustomization.yaml".to_owned(),
                "resources: [web.yaml]\n".to_owned(),
            ),
            ("app/web.yaml".to_owned(), deployment(replicas)),
        ]
    };
    let publish = |byte, replicas| {
        let owned = files(replicas);
        let borrowed: Vec<(&str, &str)> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        source.publish(byte, &borrowed)
    };
    let v1 = publish('1', 2);
    ns.create(&kustomization(
        "app",
        &ctl.shard,
        &format!("  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./app\n  targetNamespace: {}\n  prune: true\n  interval: 10m\n  retryInterval: 2s\n  timeout: 30s\n  policies:\n  - name: bounds\n    module: {{builtin: replica-bounds}}\n    config: {{bounds: {{Deployment: {{min: 1, max: 5}}}}, action: deny}}\n", ns.name),
    ));
    eventually(
        T,
        "Ready at v1",
        || ready(&ns.name, "app").filter(|(s, _, m)| s == "True" && m.ends_with(&v1)),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;

    // v2 asks for 50 replicas: denied by the policy 'bounds'.
    let v2 = publish('2', 50);
    let (_, _, denied) = eventually(
        T,
        "PolicyDenied",
        || ready(&ns.name, "app").filter(|(s, r, _)| s == "False" && r == "PolicyDenied"),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    assert!(denied.contains("bounds"), "{denied}");
    for t in types {
        let got = endpoints[t].wait_for(DENIAL, t).await;
        assert_eq!(
            got.path,
            format!("/hook/{t}").replace("/hook/discord", "/hook/discord/slack"),
            "{t}"
        );
        assert_eq!(
            got.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{t}"
        );
        let body = got.json();
        let text = body.to_string();
        assert!(
            text.contains("bounds"),
            "{t}: the policy is not named: {text}"
        );
        assert!(
            text.contains("50"),
            "{t}: the violation is not named: {text}"
        );
        assert!(text.contains(&v2), "{t}: the revision is missing: {text}");
        assert!(
            text.contains("test-1"),
            "{t}: the alert's metadata is missing: {text}"
        );
        match t {
            "generic" | "generic-hmac" => {
                assert_eq!(body["reason"], "PolicyDenied");
                assert_eq!(body["severity"], "error");
                assert_eq!(body["involvedObject"]["kind"], "Kustomization");
                assert_eq!(body["involvedObject"]["name"], "app");
                assert_eq!(body["metadata"]["revision"], v2);
            }
            "slack" | "discord" => {
                assert_eq!(body["attachments"][0]["color"], "danger");
                assert_eq!(
                    body["attachments"][0]["author_name"],
                    format!("kustomization/app.{}", ns.name)
                );
            }
            "msteams" => assert_eq!(body["attachments"][0]["content"]["type"], "AdaptiveCard"),
            "googlechat" => assert_eq!(
                body["cards"][0]["header"]["title"],
                format!("kustomization/app.{}", ns.name)
            ),
            "alertmanager" => {
                assert_eq!(
                    body[0]["labels"]["alertname"],
                    "FluxKustomizationPolicyDenied"
                );
                assert_eq!(body[0]["labels"]["severity"], "error");
                assert_eq!(body[0]["labels"]["revision"], v2);
                assert_eq!(body[0]["status"], "firing");
            }
            _ => unreachable!(),
        }
    }
    // generic-hmac: the signature is the HMAC of the raw body with the Secret's token; the
    // Secret's headers are sent.
    let signed = endpoints["generic-hmac"]
        .wait_for(DENIAL, "generic-hmac")
        .await;
    assert_eq!(
        signed.headers.get("x-signature"),
        gitops_reconciler::notify::verify::sign("sha256", HMAC_TOKEN.as_bytes(), &signed.body)
            .as_ref()
    );
    assert_eq!(
        signed.headers.get("x-team").map(String::as_str),
        Some("platform")
    );
    // generic answered its first two requests 503 (the v1 event's, unless an event came before
    // it on a slow machine): each refused delivery was retried until it got through, and every
    // event got through exactly once.
    let delivered = |needle: &str| {
        endpoints["generic"]
            .received()
            .iter()
            .filter(|r| r.status == 200 && String::from_utf8_lossy(&r.body).contains(needle))
            .count()
    };
    let refused = || {
        endpoints["generic"]
            .received()
            .into_iter()
            .filter(|r| r.status == 503)
            .map(|r| r.body)
            .collect::<Vec<_>>()
    };
    // The retries run next to the later deliveries: wait until each refused body got through.
    let got_through = |body: &Vec<u8>| {
        endpoints["generic"]
            .received()
            .iter()
            .any(|r| r.status == 200 && &r.body == body)
    };
    let start = Instant::now();
    while !(refused().len() == 2 && refused().iter().all(got_through)) && start.elapsed() < T {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused().len(), 2, "the endpoint answered 503 twice");
    for body in refused() {
        assert!(
            got_through(&body),
            "a delivery answered 503 was not retried until it got through: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(delivered(&format!("Applied revision: {v1}")), 1);
    assert_eq!(delivered(DENIAL), 1);

    // The same event again (a controller repeating itself): no second delivery.
    let before: BTreeMap<_, _> = types
        .iter()
        .map(|t| (*t, endpoints[t].received().len()))
        .collect();
    let repeat = Event {
        kind: "Kustomization".into(),
        namespace: ns.name.clone(),
        name: "app".into(),
        labels: BTreeMap::from([("conformance-shard".to_owned(), ctl.shard.clone())]),
        severity: EventSeverity::Error,
        reason: "PolicyDenied".into(),
        message: denied.clone(),
        metadata: BTreeMap::from([(alert::REVISION_KEY.to_owned(), v2.clone())]),
        timestamp: jiff::Timestamp::now(),
        reporting_controller: "gitops-reconciler".into(),
    };
    alert::submit(repeat.clone());
    // An excluded message goes nowhere either.
    alert::submit(Event {
        message: "ignored: noise".into(),
        ..repeat.clone()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in types {
        assert_eq!(
            endpoints[t].received().len(),
            before[t],
            "{t} got a duplicate"
        );
        assert!(count(&metrics, &ns.name, t, "rate_limited") >= 1, "{t}");
    }

    // Recovery: v3 within bounds is applied; every provider hears of it.
    let v3 = publish('3', 3);
    eventually(
        T,
        "Ready at v3",
        || ready(&ns.name, "app").filter(|(s, _, m)| s == "True" && m.ends_with(&v3)),
        || format!("{:?}", ready(&ns.name, "app")),
    )
    .await;
    for t in types {
        let got = endpoints[t].wait_for(&v3, t).await;
        let text = String::from_utf8_lossy(&got.body).into_owned();
        assert!(
            !text.contains("\"danger\"") && !text.contains("\"severity\":\"error\""),
            "{t}: {text}"
        );
        assert!(count(&metrics, &ns.name, t, "delivered") >= 2, "{t}");
    }
    let ignored = endpoints
        .values()
        .flat_map(|e| e.received())
        .filter(|r| String::from_utf8_lossy(&r.body).contains("ignored: noise"))
        .count();
    assert_eq!(ignored, 0);

    // A dead endpoint (nothing listens) under a flood of distinct events: the queue stays at
    // its capacity, the oldest are dropped and counted, memory stays flat.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Provider\nmetadata:\n  name: dead\n  labels: {{gitops-test: {label}}}\nspec:\n  type: generic\n  address: http://127.0.0.1:{dead_port}/\n---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Alert\nmetadata:\n  name: dead\n  labels: {{gitops-test: {label}}}\nspec:\n  providerRef: {{name: dead}}\n  eventSources:\n  - {{kind: GitRepository, name: flood}}\n"
    );
    let created = ns.create(&dead);
    assert!(created.success, "{}", created.stderr);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = gitops_conformance::proc_status_kib(std::process::id(), "VmRSS:");
    for i in 0..20_000 {
        alert::submit(Event {
            kind: "GitRepository".into(),
            name: "flood".into(),
            message: format!("fetch failed #{i}: {}", "x".repeat(200)),
            ..repeat.clone()
        });
        assert!(queue.len() <= QUEUE);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = gitops_conformance::proc_status_kib(std::process::id(), "VmRSS:");
    let text = metrics.encode();
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gitops_alert_events_dropped_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    assert!(dropped > 10_000, "dropped {dropped}");
    assert!(queue.len() <= QUEUE);
    assert!(
        count(&metrics, &ns.name, "dead", "failed") >= 1,
        "the dead endpoint was not retried to the end"
    );
    eprintln!(
        "flood of 20000 events at a dead endpoint: {dropped} dropped, queue {} (cap {QUEUE}), RSS {rss_before} -> {rss_after} KiB",
        queue.len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), dispatcher).await;
    drop(ctl);
}
