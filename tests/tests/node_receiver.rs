//! Receivers through the `webhook-receiver` Service on a real node: the reconciler runs as a Pod
//! (installed by digest as in `node_reconciler.rs`), a GitRepository polls the host's git server
//! only every hour, and a real `git push` to that server runs the bare repository's post-receive
//! hook, which sends what GitHub (then GitLab) sends — documented headers, HMAC over the raw body
//! — with curl to the Service. The pushed commit must be applied within 2 s; forged, unknown,
//! oversized and wrong-method requests get their status codes through the Service and change
//! nothing.
//!
//! How the hook reaches the Service: the git server runs on the host, outside the cluster (like
//! GitHub), and a git host outside a cluster reaches a Service only through what exposes it on a
//! node (NodePort, LoadBalancer, an Ingress controller's own NodePort). So the test makes
//! `webhook-receiver` a NodePort Service for its duration (the install manifests keep ClusterIP;
//! `docs/notifications.md` says how to expose it) and the hook posts to the node's address, where
//! kube-proxy's rules (in the node's network namespace) lead to the pod's receiver port. One
//! request also goes to the Service's cluster address from a pod, the path an in-cluster Ingress
//! controller takes. (Not from the node's namespace itself: it has no default route, so a
//! connection to a ClusterIP fails there before kube-proxy's rules could rewrite it.)
//!
//! Prints why and returns when the cluster has no real node, like the other node tests.

mod cli_support;
#[path = "notify_support/hooks.rs"]
mod hooks;
mod node_support;

use std::process::Command;
use std::time::{Duration, Instant};

use gitops_conformance::git::temp_dir;
use gitops_conformance::{TestNamespace, kubectl, kubectl_ok};
use gitops_reconciler::api::{GitRepository, Kustomization};
use gitops_reconciler::notify::ReceiverLimits;
use hooks::{
    GITHUB_HOOK, GITLAB_HOOK, TOKEN, applied, commit_change, config_map, create_token_secret, curl,
    delivered, git_repository, install_hook, kustomization, percentile, pushable_repo, pushed_n,
    request, requested_at, revision, sign,
};
use kube::Api;
use node_support::{
    GitForPods, busybox_output, cluster_setting, install, json, ready_condition, real_node,
    reconciler_pods, serial, wait_for,
};

/// Pushes measured through the GitHub receiver.
const PUSHES: usize = 20;
/// The issue's bound from `git push` returning to the Kustomization's lastAppliedRevision.
const PUSH_TO_APPLIED: Duration = Duration::from_secs(2);
const SERVICE: &str = "webhook-receiver";
const SYSTEM: &str = "gitops-system";

/// `/hook/` + hex(sha256(token + name + namespace)), computed with coreutils' `sha256sum`, not
/// with the reconciler's code, so that a change of its formula shows.
fn flux_webhook_path(name: &str, namespace: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("sha256sum's stdin");
        write!(stdin, "{TOKEN}{name}{namespace}").expect("write to sha256sum");
    }
    let out = child.wait_with_output().expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "/hook/{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// Makes `webhook-receiver` a NodePort Service while it lives, and ClusterIP (as installed)
/// again when dropped.
struct NodePort {
    port: u16,
}

impl NodePort {
    fn open() -> Self {
        if let Err(e) = patch_service(r#"{"spec":{"type":"NodePort"}}"#) {
            panic!("cannot make {SERVICE} a NodePort Service: {e}");
        }
        let port = kubectl_ok(
            &[
                "-n",
                SYSTEM,
                "get",
                "service",
                SERVICE,
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            None,
        );
        let port = port
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no nodePort allocated: {port:?}"));
        Self { port }
    }
}

impl Drop for NodePort {
    fn drop(&mut self) {
        // Best effort (it may run while a failed test unwinds); the next install resets it too.
        let _ =
            patch_service(r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":null}]}}"#);
    }
}

/// A strategic merge patch of the `webhook-receiver` Service; kubectl's error when refused.
fn patch_service(patch: &str) -> Result<(), String> {
    let run = kubectl(
        &["-n", SYSTEM, "patch", "service", SERVICE, "-p", patch],
        None,
    );
    if run.success { Ok(()) } else { Err(run.stderr) }
}

/// `gitops_receiver_requests_total` of Receiver `name` in `namespace` with `result`, read from
/// the reconciler pod's metrics port through the apiserver's pod proxy.
fn counted(pod: &str, namespace: &str, name: &str, result: &str) -> u64 {
    let metrics = kubectl_ok(
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{SYSTEM}/pods/{pod}:8080/proxy/metrics"),
        ],
        None,
    );
    let needle = format!(
        "gitops_receiver_requests_total{{namespace=\"{namespace}\",name=\"{name}\",result=\"{result}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a count: {v}"))
        })
        .unwrap_or(0)
}

/// Polls Kustomization `name` every 25 ms until it applied `commit`; the time from `since` then,
/// or `None` after `timeout`.
async fn applied_within(
    kss: &Api<Kustomization>,
    name: &str,
    commit: &str,
    since: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let want = format!("main@sha1:{commit}");
    loop {
        let ks = kss.get(name).await.expect("get Kustomization");
        if applied(&ks) == Some(want.as_str()) {
            return Some(since.elapsed());
        }
        if since.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(gitops_conformance::kubeconfig())
        .expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("usable kubeconfig");
    kube::Client::try_from(config).expect("client")
}

#[test]
#[ignore = "needs a cluster; skips without a real node"]
fn a_push_reaches_the_receiver_pod_through_its_service_and_forgeries_change_nothing() {
    if real_node("a_push_reaches_the_receiver_pod_through_its_service_and_forgeries_change_nothing")
        .is_none()
    {
        return;
    }
    let _serial = serial();
    // The CLI (install) runs its own runtime: the kube client's calls get one of their own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    install();
    let pod = reconciler_pods()
        .first()
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .expect("a reconciler pod");
    let git = GitForPods::start();
    let (repo, first) = pushable_repo(&git.server, "app");
    let ns = TestNamespace::new("node-receiver");
    let label = ns.name.clone();
    create_token_secret(&ns.name);
    let receivers = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1
kind: Receiver
metadata: {{name: github}}
spec:
  type: github
  events: [ping, push]
  secretRef: {{name: webhook-token}}
  resources: [{{kind: GitRepository, name: app}}]
---
apiVersion: kubectl-gitops.io/v1alpha1
kind: Receiver
metadata: {{name: gitlab}}
spec:
  type: gitlab
  events: [Push Hook]
  secretRef: {{name: webhook-token}}
  resources: [{{kind: GitRepository, name: '*', matchLabels: {{gitops-test: {label}}}}}]
---
{source}---
{ks}",
        source = git_repository(&label, "app", &format!("{}app.git", git.base)),
        ks = kustomization(&label, "app", &ns.name),
    );
    let created = ns.create(&receivers);
    assert!(created.success, "{}", created.stderr);

    // status.webhookPath as Flux computes it, and Ready naming it.
    let mut urls = Vec::new();
    let node_port = NodePort::open();
    let node_ip = cluster_setting("NODE_IP");
    for name in ["github", "gitlab"] {
        let status = wait_for(
            &format!("Receiver {name} Ready with a webhook path"),
            Duration::from_secs(60),
            || {
                let status =
                    json(&["-n", &ns.name, "get", "receivers.kubectl-gitops.io", name])["status"]
                        .clone();
                if status["webhookPath"].is_string() {
                    Ok(status)
                } else {
                    Err(status.to_string())
                }
            },
        );
        let path = flux_webhook_path(name, &ns.name);
        assert_eq!(status["webhookPath"], path.as_str(), "{name}: {status}");
        let ready = ready_condition(&status);
        assert_eq!(ready["status"], "True", "{name}: {ready}");
        assert!(
            ready["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&path),
            "{name}: {ready}"
        );
        assert!(!status.to_string().contains(TOKEN), "{status}");
        urls.push(format!("http://{node_ip}:{}{path}", node_port.port));
    }
    let (github_url, gitlab_url) = (urls[0].clone(), urls[1].clone());

    // kube-proxy programs the node port within a moment of the patch: wait for an answer from
    // the receiver (an unknown hook path: 404) rather than sleeping.
    let unknown = format!(
        "http://{node_ip}:{}/hook/{}",
        node_port.port,
        "0".repeat(64)
    );
    wait_for(
        "the receiver answering on the node port",
        Duration::from_secs(30),
        || match curl(&["-X", "POST", "--max-time", "2", "-d", "{}", &unknown]) {
            404 => Ok(()),
            other => Err(other.to_string()),
        },
    );

    let client = rt.block_on(client());
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &ns.name);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    rt.block_on(applied_within(
        &kss,
        "app",
        &first,
        Instant::now(),
        Duration::from_secs(120),
    ))
    .unwrap_or_else(|| panic!("the first commit {first} was not applied within 120 s"));

    // GitHub: each push applied within 2 s, the GitRepository polling every hour.
    let hook_log = temp_dir("node-receiver-hook").join("hook.log");
    install_hook(&repo.bare, GITHUB_HOOK, &github_url, &hook_log);
    let accepted = counted(&pod, &ns.name, "github", "accepted");
    let mut latencies = Vec::new();
    for i in 0..PUSHES {
        let commit = commit_change(&repo, &(i + 2).to_string());
        // git push returns once the post-receive hook (and so the webhook) has run.
        let started = Instant::now();
        repo.git(&["push", "-q", "origin", "main"]);
        let Some(took) = rt.block_on(applied_within(
            &kss,
            "app",
            &commit,
            started,
            PUSH_TO_APPLIED,
        )) else {
            panic!(
                "push {i} ({commit}) not applied within {PUSH_TO_APPLIED:?}: {:?}\nhook log:\n{}",
                rt.block_on(applied_now(&kss)),
                std::fs::read_to_string(&hook_log).unwrap_or_default()
            )
        };
        latencies.push(took);
    }
    latencies.sort();
    eprintln!(
        "through the webhook-receiver Service (NodePort) on the real node, {PUSHES} pushes, \
         poll interval 1h: push-to-applied median {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
    );
    let (ok, log) = delivered(&hook_log);
    assert_eq!(ok, PUSHES, "{log}");
    assert_eq!(
        counted(&pod, &ns.name, "github", "accepted"),
        accepted + PUSHES as u64
    );
    assert_eq!(pushed_n(&ns.name), (PUSHES + 1).to_string());

    // GitLab: the token header, a label-selected GitRepository; Repo::commit pushes.
    install_hook(&repo.bare, GITLAB_HOOK, &gitlab_url, &hook_log);
    let started = Instant::now();
    let later = repo.commit(
        &[("deploy/cm.yaml", Some(&config_map("gitlab")))],
        "gitlab push",
    );
    let Some(took) = rt.block_on(applied_within(
        &kss,
        "app",
        &later,
        started,
        PUSH_TO_APPLIED,
    )) else {
        panic!(
            "the gitlab push was not applied within {PUSH_TO_APPLIED:?} of the commit: {:?}\nhook log:\n{}",
            rt.block_on(applied_now(&kss)),
            std::fs::read_to_string(&hook_log).unwrap_or_default()
        )
    };
    eprintln!("gitlab push (commit and push) to applied: {took:?}");
    assert_eq!(counted(&pod, &ns.name, "gitlab", "accepted"), 1);

    // What must change nothing, each answered through the Service and counted.
    let before = rt.block_on(repos.get("app")).expect("get GitRepository");
    assert!(requested_at(&before).is_some(), "{:?}", before.metadata);
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{first}"}}"#);
    let signed = format!("X-Hub-Signature-256: {}", sign(&body));
    let forged = format!("X-Hub-Signature-256: {}", sign(&format!("{body} ")));
    let push = "X-GitHub-Event: push";
    let mut cases: Vec<(&str, &str, Vec<String>, u16, &str)> = vec![
        (
            "forged signature",
            "github",
            request("POST", &[push, &forged], Some(&body), &github_url),
            400,
            "invalid_signature",
        ),
        (
            "unknown event, validly signed (a replayed body with another event)",
            "github",
            request(
                "POST",
                &["X-GitHub-Event: issues", &signed],
                Some(&body),
                &github_url,
            ),
            400,
            "event_not_allowed",
        ),
        (
            "wrong method",
            "github",
            request("GET", &[push, &signed], None, &github_url),
            405,
            "method_not_allowed",
        ),
        (
            "wrong GitLab token",
            "gitlab",
            request(
                "POST",
                &[
                    "X-Gitlab-Event: Push Hook",
                    &format!("X-Gitlab-Token: {TOKEN}x"),
                ],
                Some(&body),
                &gitlab_url,
            ),
            400,
            "invalid_token",
        ),
    ];
    // A body over the installed reconciler's limit (the flag's default), signed correctly,
    // announced (Content-Length) and streamed (chunked).
    let big_dir = temp_dir("node-receiver-big");
    let big = big_dir.join("body.json");
    let big_body = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(ReceiverLimits::default().max_body_bytes)
    );
    std::fs::write(&big, &big_body).expect("write the big body");
    let big_signature = format!("X-Hub-Signature-256: {}", sign(&big_body));
    let at_file = format!("@{}", big.display());
    for (what, extra) in [
        ("oversized body", None),
        (
            "oversized body, chunked",
            Some("Transfer-Encoding: chunked"),
        ),
    ] {
        let mut headers = vec![push, big_signature.as_str()];
        headers.extend(extra);
        cases.push((
            what,
            "github",
            request("POST", &headers, Some(&at_file), &github_url),
            413,
            "too_large",
        ));
    }
    for (what, receiver, args, status, result) in &cases {
        let before = counted(&pod, &ns.name, receiver, result);
        assert_eq!(curl(args), *status, "{what}");
        assert_eq!(
            counted(&pod, &ns.name, receiver, result),
            before + 1,
            "{what}: not counted as {result}"
        );
    }
    let _ = std::fs::remove_dir_all(big_dir);

    // In the cluster, by the Service's name and port 80 (the path of an Ingress controller's
    // pod), from a pod in the Receivers' namespace: a GET is refused there too.
    let github_path = flux_webhook_path("github", &ns.name);
    let out = busybox_output(
        &ns.name,
        "webhook-client",
        &format!(
            "printf 'GET {github_path} HTTP/1.0\\r\\n\\r\\n' | \
             busybox nc -w 10 {SERVICE}.{SYSTEM}.svc.cluster.local 80"
        ),
    );
    assert!(
        out.lines().next().is_some_and(|l| l.contains(" 405")),
        "GET through the Service's cluster address:\n{out}"
    );

    // Nothing changed: no new reconcile request, the same revision fetched and applied.
    std::thread::sleep(Duration::from_secs(1));
    let after = rt.block_on(repos.get("app")).expect("get GitRepository");
    assert_eq!(
        requested_at(&after),
        requested_at(&before),
        "a refused request annotated the source"
    );
    let want = format!("main@sha1:{later}");
    assert_eq!(revision(&after), Some(want.as_str()));
    assert_eq!(
        rt.block_on(applied_now(&kss)).as_deref(),
        Some(want.as_str())
    );

    // The token is in no log line of the reconciler.
    let logs = kubectl_ok(&["-n", SYSTEM, "logs", &pod], None);
    assert!(!logs.contains(TOKEN), "the token reached the log");

    // A later install puts the Service back as installed (docs/notifications.md says so).
    install();
    let service = json(&["-n", SYSTEM, "get", "service", SERVICE])["spec"].clone();
    assert_eq!(service["type"], "ClusterIP", "{service}");
    assert!(service["ports"][0]["nodePort"].is_null(), "{service}");
}

async fn applied_now(kss: &Api<Kustomization>) -> Option<String> {
    kss.get("app")
        .await
        .ok()
        .as_ref()
        .and_then(applied)
        .map(str::to_owned)
}
