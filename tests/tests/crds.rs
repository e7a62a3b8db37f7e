//! The CRDs install, accept valid objects and make the apiserver itself refuse nonsense with a
//! message that says what is wrong.

use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};

fn git_repository(spec: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: GitRepository\nmetadata:\n  name: repo\nspec:\n{spec}"
    )
}

fn kustomization(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn cluster_policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: ClusterPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const KS_BASE: &str = "  sourceRef: {kind: GitRepository, name: repo}\n  interval: 1m\n";

/// Asserts that creating `manifest` fails and that the error contains every `expected` piece.
fn assert_rejected(ns: &TestNamespace, manifest: &str, expected: &[&str]) {
    let res = ns.create(manifest);
    assert!(
        !res.success,
        "the apiserver accepted an invalid object:\n{manifest}"
    );
    for piece in expected {
        assert!(
            res.stderr.contains(piece),
            "error for\n{manifest}\ndoes not mention {piece:?}; kubectl said:\n{}",
            res.stderr
        );
    }
    eprintln!("refused as expected: {}", res.stderr.trim());
}

#[test]
#[ignore = "needs a cluster"]
fn crds_install_and_are_listed_with_short_names() {
    install_crds();
    let names = kubectl_ok(
        &[
            "api-resources",
            "--api-group=kubectl-gitops.io",
            "-o",
            "wide",
        ],
        None,
    );
    for want in [
        "gitrepositories",
        "gitrepo",
        "kustomizations",
        "ks",
        "clusterpolicies",
    ] {
        assert!(names.contains(want), "api-resources lacks {want}:\n{names}");
    }
}

#[test]
#[ignore = "needs a cluster"]
fn valid_objects_are_accepted_and_printed() {
    install_crds();
    let ns = TestNamespace::new("valid");
    let repo = git_repository(
        "  url: https://git.example.com/org/app.git\n  interval: 30s\n  timeout: 2m\n  ref:\n    branch: main\n  secretRef: {name: git-creds}\n  ignore: |\n    /docs\n",
    );
    let ssh_repo = repo.replace("name: repo", "name: repo-ssh").replace(
        "https://git.example.com/org/app.git",
        "ssh://git@git.example.com/org/app.git",
    );
    let pinned = git_repository("  url: https://git.example.com/app.git\n  interval: 1h\n  ref:\n    branch: main\n    commit: 0123456789abcdef0123456789abcdef01234567\n")
        .replace("name: repo", "name: repo-pinned");
    let plain_http =
        git_repository("  url: http://127.0.0.1:8080/app.git\n  insecure: true\n  interval: 1m\n")
            .replace("name: repo", "name: repo-http");
    let ks = kustomization(
        "vote-dev",
        &format!(
            "{KS_BASE}  path: ./deploy/vote\n  prune: true\n  wait: true\n  timeout: 3m\n  targetNamespace: instavote\n  dependsOn: [{{name: infra}}]\n  images: [{{name: schooldevops/vote, newTag: v2}}]\n  postBuild:\n    substitute: {{cluster: dev}}\n    substituteFrom: [{{kind: ConfigMap, name: vars}}]\n  policies:\n  - name: bounds\n    module: {{builtin: replica-bounds}}\n    config: {{max: 5, mode: clamp}}\n  - name: custom\n    module:\n      path: policies/custom.wasm\n      sha256: {}\n    failurePolicy: Ignore\n  ignore:\n  - paths: [/spec/replicas]\n    target: {{kind: Deployment}}\n",
            "a".repeat(64)
        ),
    );
    let policy = cluster_policy(
        &format!("{}-pin", ns.name),
        "  module: {builtin: image-pinning}\n  config: {allowedRegistries: [docker.io]}\n  selector:\n    namespaceSelector:\n      matchLabels: {team: web}\n",
    );
    for manifest in [&repo, &ssh_repo, &pinned, &plain_http, &ks] {
        let res = ns.create(manifest);
        assert!(
            res.success,
            "valid object refused:\n{manifest}\n{}",
            res.stderr
        );
    }
    let res = ns.create(&policy);
    assert!(res.success, "valid ClusterPolicy refused: {}", res.stderr);
    let table = ns.kubectl(&["get", "gitrepositories.kubectl-gitops.io"], None);
    assert!(table.success, "{}", table.stderr);
    for column in ["NAME", "URL", "REVISION", "READY", "STATUS", "AGE"] {
        assert!(
            table.stdout.contains(column),
            "no {column} column:\n{}",
            table.stdout
        );
    }
    let table = ns.kubectl(&["get", "kustomizations.kubectl-gitops.io"], None);
    assert!(table.stdout.contains("vote-dev"), "{}", table.stdout);
    assert!(table.stdout.contains("REVISION"), "{}", table.stdout);
    kubectl_ok(
        &[
            "delete",
            "clusterpolicies.kubectl-gitops.io",
            &format!("{}-pin", ns.name),
        ],
        None,
    );
}

#[test]
#[ignore = "needs a cluster"]
fn invalid_git_repositories_are_refused_with_a_reason() {
    install_crds();
    let ns = TestNamespace::new("badrepo");
    let cases: &[(&str, &[&str])] = &[
        (
            "  url: ftp://example.com/repo.git\n  interval: 1m\n",
            &["spec.url", "https://"],
        ),
        (
            "  url: ssh://-oProxyCommand=evil/repo.git\n  interval: 1m\n",
            &["spec.url", "must not start with '-'"],
        ),
        (
            "  url: https://-oProxyCommand=evil/repo.git\n  interval: 1m\n",
            &["spec.url", "must not start with '-'"],
        ),
        ("  url: ext::sh -c evil\n  interval: 1m\n", &["spec.url"]),
        (
            "  url: http://example.com/repo.git\n  interval: 1m\n",
            &["insecure: true"],
        ),
        (
            "  url: git://example.com/repo.git\n  interval: 1m\n",
            &["git://", "insecure: true"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 0s\n",
            &["spec.interval", "greater than 0"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: -5m\n",
            &["spec.interval", "Go duration"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 5 minutes\n",
            &["spec.interval", "Go duration"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 10000h\n",
            &["spec.interval", "at most 720h"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  timeout: 1d\n",
            &["spec.timeout", "Go duration"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  ref: {tag: v1, semver: '>=1.0.0'}\n",
            &["spec.ref", "at most one of tag, semver, name or commit"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  ref: {branch: main, tag: v1}\n",
            &["spec.ref", "branch cannot be combined"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  ref: {commit: abc}\n",
            &["spec.ref.commit"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  ref: {branch: '-upload-pack=evil'}\n",
            &["spec.ref.branch", "no leading '-'"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  ref: {name: 'heads/main'}\n",
            &["spec.ref.name", "refs/"],
        ),
        (
            "  url: https://example.com/repo.git\n  interval: 1m\n  secretRef: {name: Bad_Name}\n",
            &["spec.secretRef.name", "RFC 1123"],
        ),
        ("  interval: 1m\n", &["spec.url", "Required"]),
    ];
    for (spec, expected) in cases {
        assert_rejected(&ns, &git_repository(spec), expected);
    }
    let long_name = git_repository("  url: https://example.com/repo.git\n  interval: 1m\n")
        .replace("name: repo", &format!("name: {}", "r".repeat(64)));
    assert_rejected(
        &ns,
        &long_name,
        &["metadata.name must be at most 63 characters"],
    );
}

#[test]
#[ignore = "needs a cluster"]
fn invalid_kustomizations_are_refused_with_a_reason() {
    install_crds();
    let ns = TestNamespace::new("badks");
    let sha = "b".repeat(64);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{KS_BASE}  path: ../../etc\n"),
            vec!["spec.path", "must not contain '..'"],
        ),
        (
            format!("{KS_BASE}  path: /etc\n"),
            vec!["spec.path", "relative"],
        ),
        (
            "  sourceRef: {kind: GitRepository, name: repo}\n  interval: 0s\n".into(),
            vec!["spec.interval", "greater than 0"],
        ),
        (
            format!("{KS_BASE}  retryInterval: soon\n"),
            vec!["spec.retryInterval", "Go duration"],
        ),
        (
            "  sourceRef: {kind: HelmRepository, name: repo}\n  interval: 1m\n".into(),
            vec!["spec.sourceRef.kind", "GitRepository"],
        ),
        (
            format!("{KS_BASE}  targetNamespace: Not_A_Namespace\n"),
            vec!["spec.targetNamespace", "RFC 1123 label"],
        ),
        (
            format!("{KS_BASE}  deletionPolicy: Explode\n"),
            vec!["spec.deletionPolicy", "MirrorPrune"],
        ),
        (
            format!("{KS_BASE}  policies:\n  - name: p\n    module: {{builtin: no-such-policy}}\n"),
            vec!["spec.policies[0].module.builtin", "unknown builtin policy"],
        ),
        (
            format!("{KS_BASE}  policies:\n  - name: p\n    module: {{path: p.wasm}}\n"),
            vec!["spec.policies[0].module", "sha256 is required"],
        ),
        (
            format!(
                "{KS_BASE}  policies:\n  - name: p\n    module: {{builtin: replica-bounds, path: p.wasm}}\n"
            ),
            vec![
                "spec.policies[0].module",
                "exactly one of builtin, path, configMapRef or url",
            ],
        ),
        (
            format!(
                "{KS_BASE}  policies:\n  - name: p\n    module: {{url: 'http://example.com/p.wasm', sha256: {sha}}}\n"
            ),
            vec!["spec.policies[0].module.url", "https://"],
        ),
        (
            format!(
                "{KS_BASE}  policies:\n  - name: p\n    module: {{path: p.wasm, sha256: XYZ}}\n"
            ),
            vec!["spec.policies[0].module.sha256"],
        ),
        (
            format!(
                "{KS_BASE}  policies:\n  - name: p\n    module: {{builtin: replica-bounds}}\n  - name: p\n    module: {{builtin: image-pinning}}\n"
            ),
            vec!["spec.policies", "unique"],
        ),
        (
            format!("{KS_BASE}  images: [{{name: nginx}}]\n"),
            vec!["spec.images[0]", "newName, newTag or digest"],
        ),
        (
            format!("{KS_BASE}  images: [{{name: nginx, digest: 'md5:abc'}}]\n"),
            vec!["spec.images[0].digest"],
        ),
        (
            format!("{KS_BASE}  ignore: [{{paths: [spec/replicas]}}]\n"),
            vec!["spec.ignore[0].paths", "JSON pointer"],
        ),
        (
            format!("{KS_BASE}  dependsOn: [{{name: 'UPPER'}}]\n"),
            vec!["spec.dependsOn[0].name", "RFC 1123"],
        ),
    ];
    for (spec, expected) in &cases {
        assert_rejected(&ns, &kustomization("ks", spec), expected);
    }
}

#[test]
#[ignore = "needs a cluster"]
fn invalid_cluster_policies_are_refused_with_a_reason() {
    install_crds();
    let sha = "c".repeat(64);
    let ns = TestNamespace::new("badcpol");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("  module: {{path: p.wasm, sha256: {sha}}}\n"),
            vec!["module.path is not available to a ClusterPolicy"],
        ),
        (
            format!("  module: {{configMapRef: {{name: p, key: p.wasm}}, sha256: {sha}}}\n"),
            vec!["module.configMapRef.namespace is required"],
        ),
        (
            "  module: {builtin: image-pinning}\n  failurePolicy: Sometimes\n".into(),
            vec!["spec.failurePolicy"],
        ),
        ("  config: {}\n".into(), vec!["spec.module", "Required"]),
    ];
    for (i, (spec, expected)) in cases.iter().enumerate() {
        assert_rejected(
            &ns,
            &cluster_policy(&format!("{}-{i}", ns.name), spec),
            expected,
        );
    }
}
