//! Receivers against the real apiserver and a real git server: a `git push` over HTTP to
//! git-http-backend runs the bare repository's post-receive hook, which sends what GitHub (and
//! then GitLab) sends — the documented headers, an HMAC over the raw body — with curl to the
//! webhook server on 127.0.0.1; the GitRepository, polling only every hour, follows within 2 s.
//! Forged signatures, events outside `spec.events`, oversized bodies and wrong methods change
//! nothing and are counted.
//!
//! The GitRepository controller, the artifact server and the notification controller run
//! in-process (the library functions the reconciler binary wires), watching only this test's
//! objects (label selector).

mod kustomization_support;
mod notify_support;

use std::time::{Duration, Instant};

use gitops_conformance::git::{GitServer, ServerKind, temp_dir};
use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};
use gitops_reconciler::api::conditions::meta;
use gitops_reconciler::api::{GitRepository, Kustomization, Receiver};
use gitops_reconciler::notify::ReceiverLimits;
use kube::Api;
use notify_support::{
    GITHUB_HOOK, GITLAB_HOOK, Reconciler, TOKEN, applied, commit_change, config_map,
    create_token_secret, curl, delivered, git_repository, has_webhook_path, install_hook,
    kustomization, percentile, poll, pushable_repo, pushed_n, request, requested_at, revision,
    sign,
};

/// The body limit of this test's webhook server.
const MAX_BODY: usize = 64 * 1024;
const PUSHES: usize = 20;

/// The webhook server's limits here: the refusals below must meet their own checks, not the
/// rate limit (which the unit tests cover).
fn limits() -> ReceiverLimits {
    ReceiverLimits {
        max_body_bytes: MAX_BODY,
        requests_per_minute: 6000,
        ..ReceiverLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs GITOPS_TEST_KUBECONFIG and the git servers"]
async fn a_push_reconciles_through_a_receiver_and_forgeries_change_nothing() {
    install_crds();
    let ns = TestNamespace::new("receiver");
    let label = ns.name.clone();
    let client = kustomization_support::client().await;
    let server = GitServer::start(ServerKind::Http);
    let (repo, first) = pushable_repo(&server, "app");

    let reconciler = Reconciler::start(client.clone(), &label, limits()).await;
    create_token_secret(&ns.name);
    let receivers = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Receiver\nmetadata:\n  name: github\n  labels:\n    gitops-test: {label}\nspec:\n  type: github\n  events: [ping, push]\n  secretRef:\n    name: webhook-token\n  resources:\n  - kind: GitRepository\n    name: app\n---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Receiver\nmetadata:\n  name: gitlab\n  labels:\n    gitops-test: {label}\nspec:\n  type: gitlab\n  events: [Push Hook]\n  secretRef:\n    name: webhook-token\n  resources:\n  - kind: GitRepository\n    name: '*'\n    matchLabels:\n      gitops-test: {label}\n"
    );
    let created = ns.create(&receivers);
    assert!(created.success, "{}", created.stderr);
    let source = git_repository(&label, "app", &server.url("app"));
    let created = ns.create(&source);
    assert!(created.success, "{}", created.stderr);

    let ks = kustomization(&label, "app", &ns.name);
    let created = ns.create(&ks);
    assert!(created.success, "{}", created.stderr);
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &ns.name);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    let (initial, ok) = poll(&repos, "app", Duration::from_secs(60), |r| {
        revision(r) == Some(&format!("main@sha1:{first}"))
    })
    .await;
    assert!(ok, "first revision not fetched: {:?}", initial.status);
    let mut paths = Vec::new();
    for name in ["github", "gitlab"] {
        let (receiver, ok) =
            poll(&receivers, name, Duration::from_secs(30), has_webhook_path).await;
        assert!(ok, "receiver {name} not ready: {:?}", receiver.status);
        let status = receiver.status.unwrap();
        let path = status.webhook_path.unwrap();
        // As Flux: /hook/ + sha256(token + name + namespace).
        assert_eq!(
            path,
            gitops_reconciler::api::receiver::webhook_path(TOKEN.as_bytes(), name, &ns.name)
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "{ready:?}");
        assert!(ready.message.contains(&path), "{ready:?}");
        assert!(
            !serde_json::to_string(&receiver.metadata)
                .unwrap()
                .contains(TOKEN)
        );
        paths.push(path);
    }
    let github_url = format!("{}{}", reconciler.webhook, paths[0]);
    let gitlab_url = format!("{}{}", reconciler.webhook, paths[1]);

    // GitHub: PUSHES pushes, each followed within 2 s although the interval is an hour.
    let hook_log = temp_dir("receiver-hook").join("hook.log");
    install_hook(&repo.bare, GITHUB_HOOK, &github_url, &hook_log);
    let (initial, ok) = poll(&kss, "app", Duration::from_secs(60), |k| {
        applied(k) == Some(&format!("main@sha1:{first}"))
    })
    .await;
    assert!(ok, "first revision not applied: {:?}", initial.status);
    let mut latencies = Vec::new();
    let mut applied_latencies = Vec::new();
    for i in 0..PUSHES {
        let commit = commit_change(&repo, &(i + 2).to_string());
        let started = Instant::now();
        repo.git(&["push", "-q", "origin", "main"]);
        let (object, ok) = poll(&repos, "app", Duration::from_secs(2), |r| {
            revision(r) == Some(&format!("main@sha1:{commit}"))
        })
        .await;
        let took = started.elapsed();
        assert!(
            ok,
            "push {i} not reconciled within 2 s: {:?}\nhook log: {}",
            object.status,
            std::fs::read_to_string(&hook_log).unwrap_or_default()
        );
        latencies.push(took);
        let (object, ok) = poll(&kss, "app", Duration::from_secs(10), |k| {
            applied(k) == Some(&format!("main@sha1:{commit}"))
        })
        .await;
        assert!(ok, "push {i} not applied within 10 s: {:?}", object.status);
        applied_latencies.push(started.elapsed());
    }
    latencies.sort();
    applied_latencies.sort();
    eprintln!(
        "through the github receiver over {PUSHES} pushes (poll interval 1h): push-to-artifact median {:?}, p99 {:?}; push-to-applied median {:?}, p99 {:?}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&applied_latencies, 50.0),
        percentile(&applied_latencies, 99.0),
    );
    assert_eq!(pushed_n(&ns.name), (PUSHES + 1).to_string());
    let (ok, log) = delivered(&hook_log);
    assert_eq!(ok, PUSHES, "{log}");
    assert_eq!(
        reconciler.count(&ns.name, "github", "accepted"),
        PUSHES as u64
    );

    // GitLab: the token header, a label-selected GitRepository.
    install_hook(&repo.bare, GITLAB_HOOK, &gitlab_url, &hook_log);
    // Repo::commit pushes over HTTP (origin is the server now): the hook runs.
    let later = repo.commit(
        &[("deploy/cm.yaml", Some(&config_map("gitlab")))],
        "gitlab push",
    );
    let (object, ok) = poll(&repos, "app", Duration::from_secs(5), |r| {
        revision(r) == Some(&format!("main@sha1:{later}"))
    })
    .await;
    assert!(
        ok,
        "gitlab push not reconciled: {:?}\nhook log: {}",
        object.status,
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    );
    assert_eq!(reconciler.count(&ns.name, "gitlab", "accepted"), 1);

    // What must change nothing: the annotation stays as the last accepted request left it.
    let before = requested_at(&repos.get("app").await.unwrap());
    assert!(before.is_some());
    let body = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let good = sign(body);
    let forged = sign(&format!("{body} "));
    let signed = format!("X-Hub-Signature-256: {good}");
    let forged = format!("X-Hub-Signature-256: {forged}");
    let push = "X-GitHub-Event: push";
    let cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "forged signature",
            request("POST", &[push, &forged], Some(body), &github_url),
            400,
            "invalid_signature",
        ),
        (
            "no signature",
            request("POST", &[push], Some(body), &github_url),
            400,
            "invalid_signature",
        ),
        (
            "event outside spec.events, validly signed",
            request(
                "POST",
                &["X-GitHub-Event: issues", &signed],
                Some(body),
                &github_url,
            ),
            400,
            "event_not_allowed",
        ),
        (
            "wrong method",
            request("GET", &[push, &signed], None, &github_url),
            405,
            "method_not_allowed",
        ),
        (
            "wrong GitLab token",
            request(
                "POST",
                &[
                    "X-Gitlab-Event: Push Hook",
                    "X-Gitlab-Token: receiver-token-7c1f3e9b",
                ],
                Some(body),
                &gitlab_url,
            ),
            400,
            "invalid_token",
        ),
    ];
    for (what, args, status, result) in &cases {
        let receiver = if args.last().unwrap().ends_with(&paths[1]) {
            "gitlab"
        } else {
            "github"
        };
        let counted = reconciler.count(&ns.name, receiver, result);
        assert_eq!(curl(args), *status, "{what}");
        assert_eq!(
            reconciler.count(&ns.name, receiver, result),
            counted + 1,
            "{what}"
        );
    }
    // An oversized body, announced (Content-Length) and streamed (chunked), signed correctly.
    let big_dir = temp_dir("receiver-big");
    let big = big_dir.join("body.json");
    let big_body = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY));
    std::fs::write(&big, &big_body).unwrap();
    let big_sig = sign(&big_body);
    let at_file = format!("@{}", big.display());
    let sig_header = format!("X-Hub-Signature-256: {big_sig}");
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let counted = reconciler.count(&ns.name, "github", "too_large");
        let mut headers = vec![push, sig_header.as_str()];
        headers.extend(extra);
        let args = request("POST", &headers, Some(&at_file), &github_url);
        assert_eq!(curl(&args), 413, "{extra:?}");
        assert_eq!(
            reconciler.count(&ns.name, "github", "too_large"),
            counted + 1
        );
    }
    // An unknown path.
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "--data-binary",
            body,
            &format!("{}/hook/{}", reconciler.webhook, "0".repeat(64))
        ]),
        404
    );
    // A request sent before the annotation check could race: give the controllers time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = repos.get("app").await.unwrap();
    assert_eq!(
        requested_at(&after),
        before,
        "a refused request annotated the source"
    );
    assert_eq!(
        revision(&after),
        Some(format!("main@sha1:{later}").as_str())
    );

    // The token never reaches the metrics.
    assert!(!reconciler.metrics.encode().contains(TOKEN));
    let _ = std::fs::remove_dir_all(big_dir);
    reconciler.shutdown().await;
    // The namespace can go once no controller holds the Kustomization.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "patch",
            "kustomizations.kubectl-gitops.io",
            "app",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GITOPS_TEST_KUBECONFIG"]
async fn a_receiver_without_its_secret_is_not_ready_and_serves_nothing() {
    install_crds();
    let ns = TestNamespace::new("receiver-nosecret");
    let label = ns.name.clone();
    let client = kustomization_support::client().await;
    let reconciler = Reconciler::start(client.clone(), &label, limits()).await;
    let manifest = format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Receiver\nmetadata:\n  name: lost\n  labels:\n    gitops-test: {label}\nspec:\n  type: generic\n  secretRef:\n    name: missing\n  resources:\n  - kind: Kustomization\n    name: app\n"
    );
    let created = ns.create(&manifest);
    assert!(created.success, "{}", created.stderr);
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    let (receiver, ok) = poll(&receivers, "lost", Duration::from_secs(30), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "False" && c.reason == "TokenNotFound")
    })
    .await;
    assert!(ok, "{:?}", receiver.status);
    let status = receiver.status.unwrap();
    assert!(status.webhook_path.is_none());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("missing"), "{ready:?}");

    // The Secret appears with an empty token: still not ready; with a token: ready.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            "missing",
            "--from-literal=other=x",
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "receiver.kubectl-gitops.io/lost",
            &format!("{}=1", meta::RECONCILE_REQUESTED_AT_ANNOTATION),
        ],
        None,
    );
    let (receiver, ok) = poll(&receivers, "lost", Duration::from_secs(30), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("1")
    })
    .await;
    assert!(ok, "{:?}", receiver.status);
    let ready = receiver
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("no 'token' key"), "{ready:?}");
    kubectl_ok(&["-n", &ns.name, "delete", "secret", "missing"], None);
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            "missing",
            &format!("--from-literal=token={TOKEN}"),
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "annotate",
            "--overwrite",
            "receiver.kubectl-gitops.io/lost",
            &format!("{}=2", meta::RECONCILE_REQUESTED_AT_ANNOTATION),
        ],
        None,
    );
    let (receiver, ok) = poll(
        &receivers,
        "lost",
        Duration::from_secs(30),
        has_webhook_path,
    )
    .await;
    assert!(ok, "{:?}", receiver.status);
    // A generic receiver whose Kustomization does not exist: verified, but 500 and counted.
    let path = receiver.status.unwrap().webhook_path.unwrap();
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-d",
            "{}",
            &format!("{}{path}", reconciler.webhook)
        ]),
        500
    );
    assert_eq!(reconciler.count(&ns.name, "lost", "annotate_failed"), 1);
    // Suspended: 503 and nothing else.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "patch",
            "receiver.kubectl-gitops.io/lost",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
        None,
    );
    let (_, ok) = poll(&receivers, "lost", Duration::from_secs(10), |r| {
        r.spec.suspend == Some(true)
    })
    .await;
    assert!(ok);
    let started = Instant::now();
    loop {
        let status = curl(&[
            "-X",
            "POST",
            "-d",
            "{}",
            &format!("{}{path}", reconciler.webhook),
        ]);
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "suspension not seen: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reconciler.count(&ns.name, "lost", "suspended") >= 1);
    reconciler.shutdown().await;
}

#[test]
#[ignore = "needs GITOPS_TEST_KUBECONFIG"]
fn the_schema_refuses_bad_notification_objects_with_a_reason() {
    install_crds();
    let ns = TestNamespace::new("notify-schema");
    let receiver = |spec: &str| {
        format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Receiver\nmetadata:\n  name: r\nspec:\n{spec}"
        )
    };
    let alert = |spec: &str| {
        format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Alert\nmetadata:\n  name: a\nspec:\n{spec}"
        )
    };
    let provider = |spec: &str| {
        format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n{spec}"
        )
    };
    let refused = [
        (
            receiver(
                "  type: svn\n  secretRef: {name: t}\n  resources: [{kind: GitRepository, name: a}]\n",
            ),
            "spec.type",
        ),
        (
            receiver(
                "  type: github\n  secretRef: {name: t}\n  resources: [{kind: GitRepository, name: '*'}]\n",
            ),
            "name '*' needs matchLabels",
        ),
        (
            receiver(
                "  type: github\n  secretRef: {name: t}\n  resources: [{kind: GitRepository, name: a, matchLabels: {team: web}}]\n",
            ),
            "matchLabels needs name '*'",
        ),
        (
            receiver(
                "  type: github\n  secretRef: {name: t}\n  resources: [{kind: Deployment, name: a}]\n",
            ),
            "kind",
        ),
        (
            receiver("  type: github\n  secretRef: {name: t}\n  resources: []\n"),
            "resources",
        ),
        (
            receiver(
                "  type: github\n  secretRef: {name: t}\n  interval: 0s\n  resources: [{kind: GitRepository, name: a}]\n",
            ),
            "interval",
        ),
        (
            alert(
                "  providerRef: {name: p}\n  eventSeverity: warning\n  eventSources: [{kind: Kustomization, name: '*'}]\n",
            ),
            "eventSeverity",
        ),
        (
            alert("  providerRef: {name: p}\n  eventSources: []\n"),
            "eventSources",
        ),
        (
            provider("  type: pagerduty\n  address: https://x.example\n"),
            "spec.type",
        ),
        (provider("  type: slack\n"), "set address, or secretRef"),
        (
            provider("  type: generic\n  address: ftp://x.example/\n"),
            "address",
        ),
    ];
    for (manifest, reason) in &refused {
        let res = ns.create(manifest);
        assert!(!res.success, "accepted:\n{manifest}");
        assert!(
            res.stderr.contains(reason),
            "{reason} not in: {}",
            res.stderr
        );
    }
    for manifest in [
        receiver(
            "  type: gitlab\n  events: [Push Hook]\n  secretRef: {name: t}\n  resources: [{kind: Kustomization, name: '*', matchLabels: {team: a}}]\n",
        ),
        alert(
            "  providerRef: {name: p}\n  eventSeverity: error\n  eventSources: [{kind: GitRepository, name: app}]\n  inclusionList: ['.*failed.*']\n",
        ),
        provider(
            "  type: alertmanager\n  address: http://alertmanager.monitoring:9093/api/v2/alerts\n",
        ),
    ] {
        let res = ns.create(&manifest);
        assert!(res.success, "refused:\n{manifest}\n{}", res.stderr);
    }
}
