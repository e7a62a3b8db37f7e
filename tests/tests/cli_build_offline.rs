//! `kubectl gitops build kustomization` with no cluster: the Kustomization from
//! `--kustomization-file`, ClusterPolicies from `--cluster-policies`, substituteFrom objects
//! from `--substitute-from`. The kubeconfig names an unreachable server (and `--dry-run` runs
//! with none at all): any dial would fail the build. The reconciler's render runs: the
//! target namespace, owner labels and intent digest are in the output, and a ClusterPolicy's
//! denial exits 1 with the violation table. SOPS-encrypted values print masked as `flux build`
//! masks them (the CLI holds no keys).

mod cli_support;
mod sops_support;

use cli_support::*;

struct Repo {
    base: std::path::PathBuf,
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn repo(tag: &str, replicas: u32) -> Repo {
    let base = std::env::temp_dir().join(format!("cli-build-offline-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let app = base.join("deploy/vote");
    std::fs::create_dir_all(base.join(".git")).unwrap();
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(base.join("policies")).unwrap();
    std::fs::write(app.join("kustomization.yaml"), "resources:\n- vote.yaml\n").unwrap();
    std::fs::write(
        app.join("vote.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: vote}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: vote}}}}\n  template:\n    metadata: {{labels: {{app: vote}}}}\n    spec:\n      containers: [{{name: vote, image: \"schooldevops/vote:${{tag}}\"}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: vote}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: vote}}\nsubjects: [{{kind: ServiceAccount, name: vote}}]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        base.join("clusters-dev.yaml"),
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {name: other, namespace: gitops-system}\nspec: {sourceRef: {kind: GitRepository, name: instavote}, interval: 1m}\n---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {name: vote-dev, namespace: gitops-system}\nspec:\n  sourceRef: {kind: GitRepository, name: instavote}\n  interval: 1m\n  path: ./deploy/vote\n  targetNamespace: instavote\n  postBuild:\n    substituteFrom:\n    - {kind: ConfigMap, name: vars}\n",
    )
    .unwrap();
    std::fs::write(
        base.join("vars.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars, namespace: gitops-system}\ndata: {tag: v7}\n",
    )
    .unwrap();
    std::fs::write(
        base.join("policies/bounds.yaml"),
        "apiVersion: kubectl-gitops.io/v1alpha1\nkind: ClusterPolicy\nmetadata: {name: replica-bounds}\nspec:\n  module: {builtin: replica-bounds}\n  config: {bounds: {Deployment: {min: 1, max: 6}}, action: deny}\n",
    )
    .unwrap();
    Repo { base }
}

fn unreachable_kubeconfig(dir: &std::path::Path) -> String {
    let path = dir.join("unreachable-kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn build(repo: &Repo, extra: &[&str]) -> Run {
    let b = repo.base.to_string_lossy();
    let mut args: Vec<String> = [
        "kubectl-gitops",
        "build",
        "kustomization",
        "vote-dev",
        "--path",
        &format!("{b}/deploy/vote"),
        "--kustomization-file",
        &format!("{b}/clusters-dev.yaml"),
        "--cluster-policies",
        &format!("{b}/policies"),
        "--substitute-from",
        &format!("{b}/vars.yaml"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    gitops_raw(&args)
}

#[test]
fn build_runs_the_reconcilers_render_without_a_cluster() {
    let repo = repo("allowed", 2);
    let kubeconfig = unreachable_kubeconfig(&repo.base);
    let run = build(&repo, &["--kubeconfig", &kubeconfig]).expect(0);
    let out = &run.stdout;
    // Target namespace (the built-in policy: RoleBinding subjects too), the substitution, the
    // owner labels and the intent digest the reconciler's plan adds.
    assert!(out.contains("namespace: instavote"), "{out}");
    assert!(out.contains("image: schooldevops/vote:v7"), "{out}");
    assert!(out.contains("kubectl-gitops.io/name: vote-dev"), "{out}");
    assert!(
        out.contains("kubectl-gitops.io/namespace: gitops-system"),
        "{out}"
    );
    assert!(out.contains("kubectl-gitops.io/intent-digest:"), "{out}");
    let subjects = out.split("subjects:").nth(1).unwrap_or_default();
    assert!(subjects.contains("namespace: instavote"), "{out}");

    // --dry-run: no kubeconfig at all, and a missing substituteFrom source is skipped (Flux).
    let run = build(&repo, &["--dry-run"]).expect(0);
    assert!(run.stdout.contains("kind: Deployment"), "{}", run.stdout);
}

#[test]
fn a_cluster_policy_denial_exits_1_with_the_violation_table() {
    let repo = repo("denied", 50);
    let kubeconfig = unreachable_kubeconfig(&repo.base);
    let run = build(&repo, &["--kubeconfig", &kubeconfig]).expect(1);
    assert!(
        run.stdout.is_empty(),
        "a denied build printed objects:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("POLICY") && run.stderr.contains("replica-bounds"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Deployment instavote/vote"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("PolicyDenied"), "{}", run.stderr);

    // The same ClusterPolicy in audit mode: reported, nothing blocked.
    let audit = std::fs::read_to_string(repo.base.join("policies/bounds.yaml"))
        .unwrap()
        .replace("spec:\n", "spec:\n  mode: Audit\n");
    std::fs::write(repo.base.join("policies/bounds.yaml"), audit).unwrap();
    let run = build(&repo, &["--kubeconfig", &kubeconfig]).expect(0);
    assert!(run.stdout.contains("replicas: 50"), "{}", run.stdout);
    assert!(
        run.stderr.contains("replica-bounds") && run.stderr.contains("audit mode"),
        "{}",
        run.stderr
    );
}

#[test]
fn offline_errors_name_the_flag_and_the_cause() {
    let repo = repo("errors", 2);
    let b = repo.base.to_string_lossy().into_owned();
    // --dry-run needs the Kustomization from a file.
    let run = gitops_raw(
        &[
            "kubectl-gitops",
            "build",
            "ks",
            "vote-dev",
            "--path",
            &b,
            "--dry-run",
        ]
        .map(String::from),
    )
    .expect(2);
    assert!(
        run.stderr.contains("--kustomization-file"),
        "{}",
        run.stderr
    );
    // A name the file does not hold.
    let run = gitops_raw(
        &[
            "kubectl-gitops",
            "build",
            "ks",
            "nope",
            "--path",
            &b,
            "--dry-run",
            "--kustomization-file",
            &format!("{b}/clusters-dev.yaml"),
        ]
        .map(String::from),
    )
    .expect(3);
    assert!(
        run.stderr
            .contains("no kubectl-gitops.io Kustomization named nope"),
        "{}",
        run.stderr
    );
}

#[test]
fn sops_encrypted_values_print_masked_as_flux_build_prints_them() {
    let t = sops_support::tools();
    let (_, recipient) = sops_support::age_key(&t, "k");
    let repo = repo("sops", 2);
    let app = repo.base.join("deploy/vote");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n  password: cli-pass-Rt41-plaintext\n";
    let enc = t.encrypt(
        "db.enc.yaml",
        secret.as_bytes(),
        &[&recipient],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    std::fs::write(app.join("db.enc.yaml"), enc).unwrap();
    let env = t.encrypt(
        "app.enc.env",
        b"API_TOKEN=cli-token-Rt42-plaintext\n",
        &[&recipient],
        &[],
    );
    std::fs::write(app.join("app.enc.env"), env).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "resources:\n- vote.yaml\n- db.enc.yaml\nsecretGenerator:\n- {name: app-env, envs: [app.enc.env]}\n",
    )
    .unwrap();
    // Without spec.decryption the build fails as the reconciler's would, with Flux's message.
    let run = build(&repo, &["--dry-run"]).expect(1);
    assert!(
        run.stderr
            .contains("configuring decryption (spec.decryption) is required"),
        "{}",
        run.stderr
    );
    let file = repo.base.join("clusters-dev.yaml");
    let with_decryption = std::fs::read_to_string(&file).unwrap().replace(
        "  targetNamespace: instavote\n",
        "  targetNamespace: instavote\n  decryption: {provider: sops, secretRef: {name: sops-age}}\n",
    );
    std::fs::write(&file, with_decryption).unwrap();
    let run = build(&repo, &["--dry-run"]).expect(0);
    let out = &run.stdout;
    // base64 of **SOPS** (the plan writes stringData as data), for the encrypted Secret and
    // for the Secret generated from the encrypted dotenv.
    assert!(out.contains("password: KipTT1BTKio="), "{out}");
    assert!(out.contains("API_TOKEN: KipTT1BTKio="), "{out}");
    assert!(!out.contains("sops:"), "{out}");
    assert!(!out.contains("plaintext") && !run.stderr.contains("plaintext"));
}
