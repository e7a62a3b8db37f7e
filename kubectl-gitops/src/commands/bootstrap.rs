//! `bootstrap git`: the cluster manages itself from a git repository, as with `flux bootstrap
//! git`.
//!
//! Expected flow:
//! 1. the flags are checked (URL scheme, credentials for that scheme, `--path`, branch name)
//!    before anything is touched; then the `git` binary and the cluster must answer;
//! 2. the branch tip is fetched (depth 1) into a throwaway bare repository with the user's `git`;
//! 3. the files of [`generated_files`] replace `<path>/gitops-system/` in the tip's tree; the new
//!    tree and commit are written with gix. When the tree equals the tip's, nothing is committed
//!    (a second run is an idempotent upgrade);
//! 4. a new commit is pushed with `git push` (a fast-forward: a branch that moved meanwhile is
//!    refused by the server, and the user runs the command again);
//! 5. the same objects are applied to the cluster (CRDs, reconciler, then the Secret, the
//!    GitRepository and the Kustomization named `gitops-system`), and the command waits until
//!    both report Ready at the revision it pushed.
//!
//! Guarantees: credentials never reach argv, the URL, a file or the output. `git` gets them
//! through a credential helper that reads two environment variables of the git child only; for
//! ssh, `GIT_SSH_COMMAND` names the key file. Errors from git are redacted of the password before
//! they are shown. The Secret holding the credentials for the reconciler is applied to the
//! cluster only, never committed.
//!
//! Caveats: only the CLI spawns processes (`git`); the reconciler never does. The CRDs and the
//! Namespace in the committed manifests carry `kubectl-gitops.io/prune: disabled`, so deleting
//! the `gitops-system` Kustomization never deletes every custom object of the cluster with them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;
use gitops_reconciler::api::conditions::meta;
use gitops_reconciler::api::{GitRepository, Kustomization};
use kube::Api;
use serde_json::{Value, json};

use crate::cli::{BootstrapGitArgs, GlobalArgs};
use crate::cluster::{self, Outcome};
use crate::commands::install;
use crate::error::{Exit, Failure, fail};
use crate::ui::{Ui, escape};

/// Name of the self-managing GitRepository, Kustomization and Secret, and of the directory
/// under `--path` holding their manifests (flux's `flux-system`).
pub const SYNC_NAME: &str = "gitops-system";
/// The reconciler's install manifests (CRDs first).
pub const COMPONENTS_FILE: &str = "gitops-components.yaml";
/// The GitRepository and Kustomization that make the cluster follow the repository.
pub const SYNC_FILE: &str = "gitops-sync.yaml";
/// The kustomization file listing the two files above.
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";

/// Author and committer of bootstrap commits.
const AUTHOR_NAME: &str = "kubectl-gitops";
const AUTHOR_EMAIL: &str = "noreply@kubectl-gitops.io";

/// Environment variables read by the credential helper in the git child only.
const USERNAME_ENV: &str = "KUBECTL_GITOPS_GIT_USERNAME";
const PASSWORD_ENV: &str = "KUBECTL_GITOPS_GIT_PASSWORD";

/// How the CLI and the reconciler authenticate to the repository.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Ssh {
        key_file: PathBuf,
        known_hosts_file: PathBuf,
    },
}

/// The checked flags.
#[derive(Debug, Clone)]
pub struct Plan {
    url: String,
    branch: String,
    /// `--path` normalised: relative, no `./`, no trailing `/`; empty for the repository root.
    path: String,
    interval: String,
    auth: Auth,
    ca_file: Option<PathBuf>,
    image: Option<String>,
}

impl Plan {
    /// Checks every flag; each problem is an [`Exit::Usage`] naming the flag.
    pub fn from_args(args: &BootstrapGitArgs) -> anyhow::Result<Self> {
        let url = args.url.trim().to_owned();
        let ssh = url.starts_with("ssh://");
        let https = url.starts_with("https://");
        let http = url.starts_with("http://");
        if !(ssh || https || (http && args.allow_insecure_http)) {
            let hint = if http {
                "http:// sends content and credentials in clear text: use https://, or pass --allow-insecure-http for a test server"
            } else {
                "the URL must start with https:// or ssh://"
            };
            return Err(fail(
                Exit::Usage,
                format!("invalid --url '{}': {hint}", escape(&url)),
            ));
        }
        if !ssh && url_has_password(&url) {
            return Err(Failure::new(
                Exit::Usage,
                "invalid --url: it carries a password; pass the credentials with -u/-p instead",
            )
            .into());
        }
        let branch = args.branch.trim().to_owned();
        if gix::refs::FullName::try_from(format!("refs/heads/{branch}")).is_err()
            || branch.starts_with('-')
            || branch.is_empty()
        {
            return Err(fail(
                Exit::Usage,
                format!("invalid --branch '{}': not a branch name", escape(&branch)),
            ));
        }
        let path = normalise_path(&args.path)?;
        let auth = match (&args.username, &args.password, &args.private_key_file) {
            (Some(username), Some(password), None) => {
                if ssh {
                    return Err(fail(
                        Exit::Usage,
                        "-u/-p are for https URLs; ssh:// needs --private-key-file",
                    ));
                }
                if http {
                    return Err(fail(
                        Exit::Usage,
                        "-u/-p over http:// would send the password in clear text: use https://",
                    ));
                }
                Auth::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }
            }
            (None, None, Some(key_file)) => {
                if !ssh {
                    return Err(fail(Exit::Usage, "--private-key-file is for ssh:// URLs"));
                }
                let Some(known_hosts_file) = args.known_hosts_file.clone() else {
                    return Err(Failure::new(
                        Exit::Usage,
                        "an ssh bootstrap needs --known-hosts-file: git and the reconciler verify the server's host key",
                    )
                    .hint("create one with: ssh-keyscan -p PORT HOST > known_hosts")
                    .into());
                };
                Auth::Ssh {
                    key_file: key_file.clone(),
                    known_hosts_file,
                }
            }
            // clap enforces -u with -p and -u/-p against --private-key-file.
            _ => Auth::None,
        };
        if args.ca_file.is_some() && ssh {
            return Err(fail(Exit::Usage, "--ca-file is for https URLs"));
        }
        Ok(Self {
            url,
            branch,
            path,
            interval: args.interval.clone(),
            auth,
            ca_file: args.ca_file.clone(),
            image: args.image.clone(),
        })
    }

    /// `<path>/gitops-system`, the directory bootstrap owns in the repository.
    fn sync_dir(&self) -> String {
        if self.path.is_empty() {
            SYNC_NAME.to_owned()
        } else {
            format!("{}/{SYNC_NAME}", self.path)
        }
    }

    /// The secrets to redact from anything git prints.
    fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            Auth::Basic { password, .. } if !password.is_empty() => vec![password.as_str()],
            _ => Vec::new(),
        }
    }
}

/// `user:password@` in an http(s) URL.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `--path` as a clean relative directory ("" for the repository root).
fn normalise_path(text: &str) -> anyhow::Result<String> {
    let invalid = |why: &str| {
        fail(
            Exit::Usage,
            format!("invalid --path '{}': {why}", escape(text)),
        )
    };
    let trimmed = text.trim();
    if trimmed.starts_with('/') {
        return Err(invalid("it must be relative to the repository root"));
    }
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("it must not contain '..'")),
            ".git" => return Err(invalid("it must not point into .git")),
            p if p.chars().any(|c| c.is_control() || c == '\\') => {
                return Err(invalid("it contains a control character or a backslash"));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The files bootstrap writes under `<path>/gitops-system/` (name → content), deterministic
/// for given inputs so that a second run finds nothing to commit.
pub fn generated_files(
    namespace: &str,
    plan: &Plan,
    with_secret: bool,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut components = install::manifests(namespace, plan.image.as_deref(), false)?;
    for object in &mut components {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind == "CustomResourceDefinition" || kind == "Namespace" {
            object["metadata"]["annotations"][meta::PRUNE_ANNOTATION] =
                Value::from(meta::PRUNE_DISABLED);
        }
    }
    let sync = sync_objects(namespace, plan, with_secret);
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {COMPONENTS_FILE}\n- {SYNC_FILE}\n"
    );
    Ok(vec![
        (COMPONENTS_FILE, crate::objects::yaml_stream(&components)?),
        (SYNC_FILE, crate::objects::yaml_stream(&sync)?),
        (KUSTOMIZATION_FILE, kustomization),
    ])
}

/// The self-managing GitRepository and Kustomization.
fn sync_objects(namespace: &str, plan: &Plan, with_secret: bool) -> Vec<Value> {
    let mut source_spec = json!({
        "url": plan.url,
        "ref": {"branch": plan.branch},
        "interval": plan.interval,
    });
    if with_secret {
        source_spec["secretRef"] = json!({"name": SYNC_NAME});
    }
    if plan.url.starts_with("http://") {
        source_spec["insecure"] = json!(true);
    }
    let path = if plan.path.is_empty() {
        "./".to_owned()
    } else {
        format!("./{}", plan.path)
    };
    vec![
        json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1",
            "kind": "GitRepository",
            "metadata": {"name": SYNC_NAME, "namespace": namespace},
            "spec": source_spec,
        }),
        json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1",
            "kind": "Kustomization",
            "metadata": {"name": SYNC_NAME, "namespace": namespace},
            "spec": {
                "interval": plan.interval,
                "path": path,
                "prune": true,
                "sourceRef": {"kind": "GitRepository", "name": SYNC_NAME},
            },
        }),
    ]
}

/// The Secret the reconciler fetches with (never committed), if the repository needs one.
fn sync_secret(namespace: &str, plan: &Plan) -> anyhow::Result<Option<Value>> {
    use k8s_openapi::ByteString;
    let mut data = std::collections::BTreeMap::new();
    match &plan.auth {
        Auth::None => {}
        Auth::Basic { username, password } => {
            data.insert(
                "username".to_owned(),
                ByteString(username.clone().into_bytes()),
            );
            data.insert(
                "password".to_owned(),
                ByteString(password.clone().into_bytes()),
            );
        }
        Auth::Ssh {
            key_file,
            known_hosts_file,
        } => {
            data.insert(
                "identity".to_owned(),
                ByteString(read_flag_file(key_file, "--private-key-file")?),
            );
            data.insert(
                "known_hosts".to_owned(),
                ByteString(read_flag_file(known_hosts_file, "--known-hosts-file")?),
            );
        }
    }
    if let Some(ca) = &plan.ca_file {
        data.insert(
            "ca.crt".to_owned(),
            ByteString(read_flag_file(ca, "--ca-file")?),
        );
    }
    if data.is_empty() {
        return Ok(None);
    }
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SYNC_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret)?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    Ok(Some(value))
}

fn read_flag_file(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        fail(
            Exit::Usage,
            format!("cannot read {flag} {}: {e}", path.display()),
        )
    })
}

pub async fn git(
    global: &GlobalArgs,
    args: &BootstrapGitArgs,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let plan = Plan::from_args(args)?;
    let namespace = global.namespace.as_str();
    let secret = sync_secret(namespace, &plan)?;
    let files = generated_files(namespace, &plan, secret.is_some())?;
    let git = GitCommand::new(&plan)?;

    let client = cluster::connect(global).await?;
    client
        .apiserver_version()
        .await
        .context("checking the cluster before changing the repository")?;

    // 1. The repository.
    let shown_url = escape(&plan.url);
    ui.step(&format!(
        "cloning branch \"{}\" from {shown_url}",
        escape(&plan.branch)
    ))?;
    let work = tempfile::Builder::new()
        .prefix("kubectl-gitops-bootstrap-")
        .tempdir()
        .context("creating a temporary directory for the clone")?;
    let repo_dir = work.path().join("repo.git");
    let repo = gix::init_bare(&repo_dir).context("creating a temporary repository")?;
    let tip = git.fetch_tip(&repo_dir).await?;
    match &tip {
        Some(id) => ui.success(&format!("cloned repository at {}", short(id)))?,
        None => ui.success(&format!(
            "branch \"{}\" does not exist yet: it starts with this commit",
            escape(&plan.branch)
        ))?,
    }
    ui.step("generating the manifests of the reconciler and of the sync")?;
    let sync_dir = plan.sync_dir();
    let commit = build_commit(&repo, tip, &sync_dir, &files, &plan)?;
    let revision = match commit {
        Some(id) => {
            ui.success(&format!(
                "committed the manifests to \"{}\" ({})",
                escape(&plan.branch),
                short(&id)
            ))?;
            ui.step(&format!("pushing to {shown_url}"))?;
            git.push(&repo_dir, id).await?;
            ui.success(&format!(
                "pushed {} to \"{}\"",
                short(&id),
                escape(&plan.branch)
            ))?;
            id
        }
        None => {
            // build_commit commits whenever there is no tip, so a tip exists here.
            let Some(tip) = tip else {
                return Err(fail(Exit::Other, "internal error: no commit and no tip"));
            };
            ui.success(&format!(
                "the manifests in {sync_dir}/ are up to date: nothing to commit"
            ))?;
            tip
        }
    };
    let revision = format!("{}@sha1:{revision}", plan.branch);

    // 2. The cluster: the reconciler, then the objects that make it follow the repository.
    let components = install::manifests(namespace, plan.image.as_deref(), false)?;
    let (crds, rest): (Vec<Value>, Vec<Value>) = components
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    ui.step(&format!("installing the reconciler in {namespace}"))?;
    install::apply_all(&client, &crds, ui).await?;
    install::wait_established(&client, global.timeout, ui).await?;
    install::apply_all(&client, &rest, ui).await?;
    let name = crate::commands::shards::deployment_name(None);
    install::wait_rollout(&client, namespace, &name, global.timeout, ui).await?;
    ui.step("configuring the cluster to synchronize with the repository")?;
    if let Some(secret) = &secret {
        install::apply_all(&client, std::slice::from_ref(secret), ui).await?;
    }
    install::apply_all(
        &client,
        &sync_objects(namespace, &plan, secret.is_some()),
        ui,
    )
    .await?;

    // 3. Wait until the cluster reconciled itself from the pushed revision.
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), namespace);
    let outcome = {
        let _spinner = ui.waiting(&format!(
            "waiting for GitRepository {namespace}/{SYNC_NAME} to fetch {}",
            escape(&revision)
        ))?;
        let token = cluster::request_reconcile(&repos, namespace, SYNC_NAME).await?;
        cluster::wait_reconciled(&repos, namespace, SYNC_NAME, &token, global.timeout).await?
    };
    expect_revision::<GitRepository>(ui, namespace, &outcome, &revision)?;
    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), namespace);
    let outcome = {
        let _spinner = ui.waiting(&format!(
            "waiting for Kustomization {namespace}/{SYNC_NAME} to apply {}",
            escape(&revision)
        ))?;
        let token = cluster::request_reconcile(&kustomizations, namespace, SYNC_NAME).await?;
        cluster::wait_reconciled(
            &kustomizations,
            namespace,
            SYNC_NAME,
            &token,
            global.timeout,
        )
        .await?
    };
    expect_revision::<Kustomization>(ui, namespace, &outcome, &revision)?;
    ui.success(&format!(
        "bootstrap finished: the cluster reconciles itself from {shown_url} ({sync_dir}/ at {})",
        escape(&revision)
    ))?;
    Ok(Exit::Success)
}

/// Prints the outcome; anything but Ready at `revision` is an error naming the object.
fn expect_revision<K: cluster::Reconcilable>(
    ui: &mut Ui<'_>,
    namespace: &str,
    outcome: &Outcome,
    revision: &str,
) -> anyhow::Result<()> {
    let object = cluster::describe::<K>(namespace, SYNC_NAME);
    match outcome {
        Outcome::Ready(Some(got)) if got == revision => {
            ui.success(&format!("{}: {}", K::OUTCOME_VERB, escape(got)))?;
            Ok(())
        }
        Outcome::Ready(got) => Err(Failure::new(
            Exit::Failed,
            format!(
                "{object} is Ready at {} instead of the pushed {}",
                escape(got.as_deref().unwrap_or("no revision")),
                escape(revision)
            ),
        )
        .hint("the branch moved while bootstrapping: run bootstrap again")
        .into()),
        Outcome::NotReady { reason, message } => Err(Failure::new(
            Exit::Failed,
            format!(
                "{object} is not ready: {}: {}",
                escape(reason),
                escape(message)
            ),
        )
        .hint(format!(
            "see kubectl gitops events --for {}/{SYNC_NAME} -n {namespace}",
            K::kind(&())
        ))
        .into()),
    }
}

fn short(id: &gix::ObjectId) -> String {
    id.to_hex_with_len(12).to_string()
}

/// Replaces `sync_dir` in the tip's tree with `files` and writes a commit on top of the tip.
/// `None` when the resulting tree equals the tip's (nothing to commit).
fn build_commit(
    repo: &gix::Repository,
    tip: Option<gix::ObjectId>,
    sync_dir: &str,
    files: &[(&str, String)],
    plan: &Plan,
) -> anyhow::Result<Option<gix::ObjectId>> {
    let base_tree = match tip {
        Some(tip) => repo
            .find_commit(tip)
            .context("reading the tip of the branch")?
            .tree_id()
            .context("reading the tree of the branch tip")?
            .detach(),
        None => gix::ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = repo
        .edit_tree(base_tree)
        .context("reading the tree of the branch tip")?;
    editor
        .remove(sync_dir)
        .with_context(|| format!("replacing {sync_dir}/"))?;
    for (name, content) in files {
        let blob = repo
            .write_blob(content.as_bytes())
            .context("writing a blob")?
            .detach();
        editor
            .upsert(
                format!("{sync_dir}/{name}"),
                gix::object::tree::EntryKind::Blob,
                blob,
            )
            .with_context(|| format!("adding {sync_dir}/{name}"))?;
    }
    let tree = editor.write().context("writing the new tree")?.detach();
    if tip.is_some() && tree == base_tree {
        return Ok(None);
    }
    let signature = gix::actor::Signature {
        name: AUTHOR_NAME.into(),
        email: AUTHOR_EMAIL.into(),
        time: gix::date::Time::now_utc(),
    };
    let message = format!(
        "kubectl-gitops v{}: install and sync manifests in {sync_dir}/\n\nThe cluster follows {} (branch {}) from {}.\n",
        env!("CARGO_PKG_VERSION"),
        plan.url,
        plan.branch,
        if plan.path.is_empty() {
            "./"
        } else {
            &plan.path
        },
    );
    let commit = gix::objs::Commit {
        tree,
        parents: tip.into_iter().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let id = repo
        .write_object(&commit)
        .context("writing the commit")?
        .detach();
    Ok(Some(id))
}

/// The user's `git`, configured for one repository: credential helper, CA, ssh key.
struct GitCommand {
    program: OsString,
    url: String,
    branch: String,
    env: Vec<(String, OsString)>,
    secrets: Vec<String>,
}

impl GitCommand {
    /// Finds `git` on PATH (a clear error when it is missing) and prepares its environment.
    fn new(plan: &Plan) -> anyhow::Result<Self> {
        let program = OsString::from("git");
        match std::process::Command::new(&program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(fail(
                    Exit::Other,
                    format!(
                        "git --version failed: {}",
                        escape(String::from_utf8_lossy(&out.stderr).trim())
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::new(
                    Exit::Other,
                    "bootstrap git pushes with the git command-line tool, and there is no git on PATH",
                )
                .hint("install git (e.g. apt-get install git) and run bootstrap again")
                .into());
            }
            Err(e) => return Err(anyhow::Error::from(e).context("running git --version")),
        }
        // Configuration through the environment (GIT_CONFIG_COUNT), so that nothing lands in
        // argv: reset any credential helper of the user's, then ours, which answers `get` from
        // two variables set on the git child only.
        let mut config: Vec<(&str, String)> = vec![("credential.helper", String::new())];
        let mut env: Vec<(String, OsString)> = vec![
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_SSH_VARIANT".into(), "ssh".into()),
        ];
        match &plan.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                config.push((
                    "credential.helper",
                    format!(
                        "!f() {{ if [ \"$1\" = get ]; then printf 'username=%s\\npassword=%s\\n' \"${USERNAME_ENV}\" \"${PASSWORD_ENV}\"; fi; }}; f"
                    ),
                ));
                env.push((USERNAME_ENV.into(), username.into()));
                env.push((PASSWORD_ENV.into(), password.into()));
            }
            Auth::Ssh {
                key_file,
                known_hosts_file,
            } => {
                env.push((
                    "GIT_SSH_COMMAND".into(),
                    format!(
                        "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                        shell_quote(&key_file.to_string_lossy()),
                        shell_quote(&known_hosts_file.to_string_lossy()),
                    )
                    .into(),
                ));
            }
        }
        if let Some(ca) = &plan.ca_file {
            // The variable, not http.sslCAInfo: a GIT_SSL_CAINFO of the user's would win over
            // the config.
            let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
            env.push(("GIT_SSL_CAINFO".into(), ca.into_os_string()));
        }
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string().into()));
        for (i, (key, value)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), key.into()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), value.into()));
        }
        Ok(Self {
            program,
            url: plan.url.clone(),
            branch: plan.branch.clone(),
            env,
            secrets: plan.secrets().into_iter().map(str::to_owned).collect(),
        })
    }

    async fn run(&self, dir: &Path, args: &[&str], what: &str) -> anyhow::Result<Output> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("-C")
            .arg(dir)
            .args(args)
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running git to {what}"))?;
        if !out.status.success() {
            return Err(self.failure(what, &out.stderr));
        }
        Ok(out)
    }

    /// git's complaint as one line, classified, with the password redacted.
    fn failure(&self, what: &str, stderr: &[u8]) -> anyhow::Error {
        let mut text = String::from_utf8_lossy(stderr).into_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
            .collect();
        let detail = lines.join("; ");
        let lower = detail.to_ascii_lowercase();
        let hint = if lower.contains("authentication failed")
            || lower.contains("could not read username")
            || lower.contains("could not read password")
            || lower.contains("permission denied")
            // HTTP status as git reports it ("The requested URL returned error: 403"); a
            // bare " 403" would also match a port number such as 40327.
            || lower.contains("returned error: 401")
            || lower.contains("returned error: 403")
        {
            "the git server refused the credentials: check -u/-p or --private-key-file"
        } else if lower.contains("certificate") {
            "the server's certificate is not trusted here: pass its CA with --ca-file"
        } else if lower.contains("could not resolve")
            || lower.contains("failed to connect")
            || lower.contains("connection refused")
            || lower.contains("timed out")
            || lower.contains("unable to access")
        {
            "is the git server reachable from here? check --url (and --ca-file for a private CA)"
        } else if lower.contains("non-fast-forward")
            || lower.contains("fetch first")
            || lower.contains("rejected")
        {
            "the branch moved while bootstrapping: run bootstrap again"
        } else {
            "run the same git command yourself to see more"
        };
        Failure::new(
            Exit::Other,
            format!(
                "git could not {what} {}: {}",
                escape(&self.url),
                escape(&detail)
            ),
        )
        .hint(hint)
        .into()
    }

    /// The commit the branch points to (fetched, depth 1, into `dir`), or `None` when the
    /// repository has no such branch yet.
    async fn fetch_tip(&self, dir: &Path) -> anyhow::Result<Option<gix::ObjectId>> {
        let head = format!("refs/heads/{}", self.branch);
        let out = self
            .run(
                dir,
                &["ls-remote", &self.url, &head],
                "list the branches of",
            )
            .await?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let Some(advertised) = listing
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, name)| *name == head)
            .map(|(id, _)| id.to_owned())
        else {
            return Ok(None);
        };
        let refspec = format!("+{head}:refs/kubectl-gitops/tip");
        self.run(
            dir,
            &[
                "fetch",
                "-q",
                "--depth",
                "1",
                "--no-tags",
                &self.url,
                &refspec,
            ],
            "fetch the branch from",
        )
        .await?;
        let id = gix::ObjectId::from_hex(advertised.as_bytes())
            .map_err(|e| fail(Exit::Other, format!("git listed an invalid commit id: {e}")))?;
        Ok(Some(id))
    }

    /// Pushes `commit` to the branch (a fast-forward; the server refuses anything else).
    async fn push(&self, dir: &Path, commit: gix::ObjectId) -> anyhow::Result<()> {
        let refspec = format!("{commit}:refs/heads/{}", self.branch);
        self.run(dir, &["push", "-q", &self.url, &refspec], "push to")
            .await?;
        Ok(())
    }
}

/// `'text'` for a POSIX shell (GIT_SSH_COMMAND is run by one).
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{BootstrapCommand, Cli, Command};
    use clap::Parser as _;

    fn args(extra: &[&str]) -> BootstrapGitArgs {
        let mut argv = vec!["kubectl-gitops", "bootstrap", "git"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bootstrap(BootstrapCommand::Git(args)) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    fn usage_error(extra: &[&str]) -> String {
        let err = Plan::from_args(&args(extra)).unwrap_err();
        let report = crate::error::report(&err);
        assert_eq!(report.exit, Exit::Usage, "{}", report.line);
        report.line
    }

    #[test]
    fn flags_are_checked_before_anything_runs() {
        let base = [
            "--url",
            "https://git.example.com/fleet.git",
            "--path",
            "clusters/dev",
        ];
        let plan = Plan::from_args(&args(&base)).unwrap();
        assert_eq!(plan.sync_dir(), "clusters/dev/gitops-system");
        assert!(usage_error(&["--url", "http://h/r.git", "--path", "x"]).contains("clear text"));
        assert!(usage_error(&["--url", "file:///tmp/r", "--path", "x"]).contains("https://"));
        assert!(
            usage_error(&["--url", "https://u:secret@h/r.git", "--path", "x"])
                .contains("carries a password")
        );
        assert!(
            !usage_error(&["--url", "https://u:secret@h/r.git", "--path", "x"]).contains("secret")
        );
        assert!(usage_error(&["--url", "https://h/r.git", "--path", "../up"]).contains(".."));
        assert!(usage_error(&["--url", "https://h/r.git", "--path", "/abs"]).contains("relative"));
        assert!(
            usage_error(&[
                "--url",
                "https://h/r.git",
                "--path",
                "x",
                "--branch",
                "a..b"
            ])
            .contains("not a branch name")
        );
        assert!(
            usage_error(&[
                "--url",
                "http://h/r.git",
                "--allow-insecure-http",
                "--path",
                "x",
                "-u",
                "a",
                "-p",
                "b"
            ])
            .contains("clear text")
        );
        assert!(
            usage_error(&[
                "--url",
                "ssh://git@h/r.git",
                "--path",
                "x",
                "-u",
                "a",
                "-p",
                "b"
            ])
            .contains("-u/-p are for https")
        );
        assert!(
            usage_error(&[
                "--url",
                "https://h/r.git",
                "--path",
                "x",
                "--private-key-file",
                "k"
            ])
            .contains("for ssh://")
        );
        assert!(
            usage_error(&[
                "--url",
                "ssh://git@h/r.git",
                "--path",
                "x",
                "--private-key-file",
                "k"
            ])
            .contains("--known-hosts-file")
        );
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path("./clusters//dev/").unwrap(), "clusters/dev");
        assert_eq!(normalise_path(".").unwrap(), "");
        assert_eq!(normalise_path("").unwrap(), "");
        assert!(normalise_path("a/.git/b").is_err());
    }

    #[test]
    fn generated_files_are_deterministic_and_self_managing() {
        let plan = Plan::from_args(&args(&[
            "--url",
            "https://git.example.com/fleet.git",
            "--path",
            "./clusters/dev",
            "--interval",
            "30s",
        ]))
        .unwrap();
        let first = generated_files("gitops-system", &plan, true).unwrap();
        let second = generated_files("gitops-system", &plan, true).unwrap();
        assert_eq!(first, second);
        let names: Vec<&str> = first.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [COMPONENTS_FILE, SYNC_FILE, KUSTOMIZATION_FILE]);
        let sync: Vec<Value> = gitops_reconciler::yaml::from_str_multi(&first[1].1).unwrap();
        assert_eq!(sync[0]["kind"], "GitRepository");
        assert_eq!(sync[0]["spec"]["url"], "https://git.example.com/fleet.git");
        assert_eq!(sync[0]["spec"]["ref"]["branch"], "main");
        assert_eq!(sync[0]["spec"]["interval"], "30s");
        assert_eq!(sync[0]["spec"]["secretRef"]["name"], SYNC_NAME);
        assert_eq!(sync[1]["kind"], "Kustomization");
        assert_eq!(sync[1]["spec"]["path"], "./clusters/dev");
        assert_eq!(sync[1]["spec"]["prune"], true);
        let components: Vec<Value> = gitops_reconciler::yaml::from_str_multi(&first[0].1).unwrap();
        for object in &components {
            let protected =
                object["kind"] == "CustomResourceDefinition" || object["kind"] == "Namespace";
            assert_eq!(
                object["metadata"]["annotations"][meta::PRUNE_ANNOTATION] == meta::PRUNE_DISABLED,
                protected,
                "{}",
                object["metadata"]["name"]
            );
        }
        assert!(
            first[2]
                .1
                .contains("- gitops-components.yaml\n- gitops-sync.yaml\n")
        );
        // No credentials: no secretRef.
        let open = generated_files("gitops-system", &plan, false).unwrap();
        assert!(!open[1].1.contains("secretRef"), "{}", open[1].1);
    }

    #[test]
    fn the_commit_replaces_only_the_sync_directory_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path().join("r.git")).unwrap();
        let plan = Plan::from_args(&args(&[
            "--url",
            "https://git.example.com/fleet.git",
            "--path",
            "clusters/dev",
        ]))
        .unwrap();
        let files = vec![("a.yaml", "a: 1\n".to_owned())];
        let first = build_commit(&repo, None, &plan.sync_dir(), &files, &plan)
            .unwrap()
            .expect("a first commit");
        // Unchanged files: nothing to commit.
        assert_eq!(
            build_commit(&repo, Some(first), &plan.sync_dir(), &files, &plan).unwrap(),
            None
        );
        // A stale file in the directory goes, the new content lands, the rest stays.
        let mut editor = repo
            .edit_tree(repo.find_commit(first).unwrap().tree_id().unwrap())
            .unwrap();
        let other = repo.write_blob(b"keep").unwrap().detach();
        editor
            .upsert("README.md", gix::object::tree::EntryKind::Blob, other)
            .unwrap();
        editor
            .upsert(
                "clusters/dev/gitops-system/stale.yaml",
                gix::object::tree::EntryKind::Blob,
                other,
            )
            .unwrap();
        let tree = editor.write().unwrap().detach();
        let sig = gix::actor::Signature::default();
        let with_extra = repo
            .write_object(&gix::objs::Commit {
                tree,
                parents: [first].into_iter().collect(),
                author: sig.clone(),
                committer: sig,
                encoding: None,
                message: "user commit".into(),
                extra_headers: Vec::new(),
            })
            .unwrap()
            .detach();
        let files = vec![("a.yaml", "a: 2\n".to_owned())];
        let next = build_commit(&repo, Some(with_extra), &plan.sync_dir(), &files, &plan)
            .unwrap()
            .expect("a change");
        let commit = repo.find_commit(next).unwrap();
        assert_eq!(commit.parent_ids().next().unwrap().detach(), with_extra);
        let tree = commit.tree().unwrap();
        let read = |path: &str| {
            tree.lookup_entry_by_path(path)
                .unwrap()
                .map(|e| e.object().unwrap().data.clone())
        };
        assert_eq!(read("README.md").as_deref(), Some(&b"keep"[..]));
        assert_eq!(
            read("clusters/dev/gitops-system/a.yaml").as_deref(),
            Some(&b"a: 2\n"[..])
        );
        assert_eq!(read("clusters/dev/gitops-system/stale.yaml"), None);
    }

    #[test]
    fn passwords_are_redacted_from_git_errors() {
        let plan = Plan::from_args(&args(&[
            "--url",
            "https://git.example.com/fleet.git",
            "--path",
            "x",
            "-u",
            "me",
            "-p",
            "s3cr3t-pw",
        ]))
        .unwrap();
        let Ok(git) = GitCommand::new(&plan) else {
            return; // no git on this machine: nothing to run
        };
        assert!(
            git.env
                .iter()
                .all(|(k, v)| k == PASSWORD_ENV || !v.to_string_lossy().contains("s3cr3t-pw"))
        );
        let err = git.failure(
            "push to",
            b"fatal: Authentication failed for 'https://me:s3cr3t-pw@git.example.com/fleet.git/'\n",
        );
        let report = crate::error::report(&err);
        assert!(!report.line.contains("s3cr3t-pw"), "{}", report.line);
        assert!(report.hint.unwrap().contains("refused the credentials"));
    }
}
