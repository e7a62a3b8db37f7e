//! The connection to the cluster: a kube client from the global flags, plus the few operations
//! several commands share (read an object with a useful error, request a reconcile, wait for its
//! outcome).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitops_reconciler::api::conditions::{self, meta, reasons, types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::GlobalArgs;
use crate::error::{Exit, Failure, HINT_CHECK};

/// Field manager of every server-side apply the CLI makes.
pub const FIELD_MANAGER: &str = "kubectl-gitops";

/// Connects with the kubeconfig, context, cluster, user, impersonation, TLS and timeout
/// settings chosen by the global flags (kubectl's flags, with kubectl's meaning).
pub async fn connect(global: &GlobalArgs) -> anyhow::Result<Client> {
    let config = client_config(global).await?;
    Client::try_from(config).context("creating the Kubernetes client")
}

/// The client configuration [`connect`] uses: the kubeconfig entries the flags select, then
/// the flags that override single settings.
pub async fn client_config(global: &GlobalArgs) -> anyhow::Result<kube::Config> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        cluster: global.cluster.clone(),
        user: global.user.clone(),
    };
    let chooses_entries =
        options.context.is_some() || options.cluster.is_some() || options.user.is_some();
    let mut config = match &global.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                Failure::new(
                    Exit::Unreachable,
                    format!("cannot read kubeconfig {}: {e}", path.display()),
                )
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Failure::new(Exit::Unreachable, format!("invalid kubeconfig: {e}")))?
        }
        None if chooses_entries => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Failure::new(Exit::Unreachable, format!("invalid kubeconfig: {e}")))?,
        None => kube::Config::infer().await.map_err(|e| {
            Failure::new(Exit::Unreachable, format!("no cluster configured: {e}"))
                .hint("set KUBECONFIG or pass --kubeconfig")
        })?,
    };
    apply_overrides(&mut config, global);
    Ok(config)
}

/// The flags that override one setting of the kubeconfig's.
fn apply_overrides(config: &mut kube::Config, global: &GlobalArgs) {
    if let Some(user) = &global.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!global.as_group.is_empty()).then(|| global.as_group.clone());
        config.auth_info.impersonate_uid = global.as_uid.clone();
    }
    if global.insecure_skip_tls_verify {
        // As kubectl: the flag wins over a CA of the kubeconfig, which no longer applies.
        config.accept_invalid_certs = true;
        config.root_cert = None;
    }
    match global.request_timeout.0 {
        Some(limit) => {
            config.connect_timeout = Some(limit.min(Duration::from_secs(10)));
            config.read_timeout = Some(limit);
            config.write_timeout = Some(limit);
        }
        None => {
            config.connect_timeout = Some(global.timeout.min(Duration::from_secs(10)));
            config.read_timeout = Some(global.timeout.max(Duration::from_secs(30)));
        }
    }
}

/// `Kind namespace/name` for messages.
pub fn describe<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", K::kind(&()))
}

/// Reads one object; a missing object is an [`Exit::NotFound`] naming kind, namespace and name.
pub async fn get<K>(api: &Api<K>, namespace: &str, name: &str) -> anyhow::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    get_kind(api, &K::kind(&()), namespace, name).await
}

/// [`get`] for any resource, `kind` naming it in messages.
pub async fn get_kind<K>(api: &Api<K>, kind: &str, namespace: &str, name: &str) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(Failure::new(
            Exit::NotFound,
            format!("{kind} {namespace}/{name} not found"),
        )
        .hint(format!(
            "list them with kubectl gitops get {} -n {namespace}",
            list_command(kind)
        ))
        .into()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("reading {kind} {namespace}/{name}"))),
    }
}

/// The `get` subcommand that lists objects of `kind`.
fn list_command(kind: &str) -> String {
    match gitops_reconciler::api::SourceKind::parse(kind) {
        Some(source) => format!("sources {}", source.cli_noun()),
        None if kind == "Kustomization" => "kustomizations".to_owned(),
        None => "all".to_owned(),
    }
}

/// Server-side applies `object` with the CLI's field manager (create or update).
pub async fn apply<K>(api: &Api<K>, object: &K) -> anyhow::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| map_missing_crd(e, K::kind(&()).as_ref()))
    .with_context(|| format!("applying {}", describe::<K>(&namespace, &name)))
}

/// Whether `error` is the 404 of a whole resource type (its CRD is not installed).
pub fn is_missing_crd(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404 && status.message.contains("could not find the requested resource"))
}

/// A 404 for a whole resource type means the CRDs are not installed: say so.
pub fn map_missing_crd(error: kube::Error, kind: &str) -> anyhow::Error {
    if is_missing_crd(&error) {
        return Failure::new(
            Exit::NotFound,
            format!("the cluster does not know the kind {kind}"),
        )
        .hint(HINT_CHECK)
        .into();
    }
    error.into()
}

/// What the CLI needs from the status of a reconciled kind.
pub trait Reconcilable:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + 'static
{
    fn conditions(&self) -> &[Condition];
    fn last_handled_reconcile_at(&self) -> Option<&str>;
    fn observed_generation(&self) -> Option<i64>;
    fn suspended(&self) -> bool;
    /// The revision to report in the outcome line.
    fn revision(&self) -> Option<&str>;
    /// `fetched revision` / `applied revision`.
    const OUTCOME_VERB: &'static str;
}

/// The accessors every reconciled kind shares: their status and spec use the same field names.
macro_rules! status_accessors {
    () => {
        fn conditions(&self) -> &[Condition] {
            self.status.as_ref().map_or(&[], |s| &s.conditions)
        }
        fn last_handled_reconcile_at(&self) -> Option<&str> {
            self.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
        }
        fn observed_generation(&self) -> Option<i64> {
            self.status.as_ref().and_then(|s| s.observed_generation)
        }
        fn suspended(&self) -> bool {
            self.spec.suspend == Some(true)
        }
    };
}

impl Reconcilable for gitops_reconciler::api::GitRepository {
    status_accessors!();
    fn revision(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .map(|a| a.revision.as_str())
    }
    const OUTCOME_VERB: &'static str = "fetched revision";
}

impl Reconcilable for gitops_reconciler::api::Kustomization {
    status_accessors!();
    fn revision(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
    }
    const OUTCOME_VERB: &'static str = "applied revision";
}

impl Reconcilable for gitops_reconciler::api::Receiver {
    status_accessors!();
    fn revision(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.webhook_path.as_deref())
    }
    const OUTCOME_VERB: &'static str = "generated webhook path";
}

/// Where a reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ready=True; the revision, if the status names one.
    Ready(Option<String>),
    /// Ready=False (or Stalled): the reason and message of the condition.
    NotReady { reason: String, message: String },
}

/// The outcome of the last finished reconcile of `object`, if the current generation finished
/// one: `Ready` decided (True/False) and no `Reconciling` condition, or `Stalled`.
pub fn finished_outcome<K: Reconcilable>(object: &K) -> Option<Outcome> {
    let conds = object.conditions();
    let generation = object.meta().generation;
    if let (Some(generation), Some(observed)) = (generation, object.observed_generation())
        && observed < generation
    {
        return None;
    }
    object.observed_generation()?;
    if let Some(stalled) = conditions::get(conds, types::STALLED)
        && stalled.status == conditions::status::TRUE
    {
        return Some(Outcome::NotReady {
            reason: stalled.reason.clone(),
            message: stalled.message.clone(),
        });
    }
    // Still at work, unless the attempt failed and only a retry is pending.
    if conditions::get(conds, types::RECONCILING).is_some_and(|c| {
        c.status == conditions::status::TRUE && c.reason != reasons::PROGRESSING_WITH_RETRY
    }) {
        return None;
    }
    let ready = conditions::get(conds, types::READY)?;
    match ready.status.as_str() {
        conditions::status::TRUE => Some(Outcome::Ready(object.revision().map(str::to_owned))),
        conditions::status::FALSE => Some(Outcome::NotReady {
            reason: ready.reason.clone(),
            message: ready.message.clone(),
        }),
        _ => None,
    }
}

/// Polls `name` every `every` until `done` returns `Some`, or fails with [`Exit::Timeout`]
/// after `timeout`. A missing object is an error.
pub async fn wait_for<K, T>(
    api: &Api<K>,
    namespace: &str,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(&K) -> Option<T>,
) -> anyhow::Result<T>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let start = Instant::now();
    let every = Duration::from_millis(250);
    loop {
        let object = get(api, namespace, name).await?;
        if let Some(value) = done(&object) {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "timed out after {} waiting for {}",
                    human_duration(timeout),
                    describe::<K>(namespace, name)
                ),
            )
            .hint("is the reconciler running? run kubectl gitops check")
            .into());
        }
        tokio::time::sleep(every).await;
    }
}

/// Sets the reconcile-requested-at annotation to now and returns the value written.
pub async fn request_reconcile<K: Reconcilable>(
    api: &Api<K>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let token = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({
        "metadata": {"annotations": {meta::RECONCILE_REQUESTED_AT_ANNOTATION: token}}
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(token),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // Distinguish a missing object from missing CRDs.
            get(api, namespace, name).await?;
            Err(kube::Error::Api(status).into())
        }
        Err(e) => Err(map_missing_crd(e, K::kind(&()).as_ref())
            .context(format!("annotating {}", describe::<K>(namespace, name)))),
    }
}

/// Waits until the status echoes `token` in `lastHandledReconcileAt` and the reconcile finished.
pub async fn wait_reconciled<K: Reconcilable>(
    api: &Api<K>,
    namespace: &str,
    name: &str,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    wait_for(api, namespace, name, timeout, |object: &K| {
        if object.last_handled_reconcile_at() != Some(token) {
            return None;
        }
        finished_outcome(object)
    })
    .await
}

/// `2s`, `1m30s`, `5m`: durations as people write them.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || text.is_empty() {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use gitops_reconciler::api::{GitRepository, GitRepositoryStatus};

    /// What the apiserver answers for a kind it does not serve, next to a missing object.
    #[test]
    fn a_missing_crd_is_told_apart_from_a_missing_object() {
        let error = |message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, "NotFound")
                    .with_code(404)
                    .boxed(),
            )
        };
        assert!(is_missing_crd(&error(
            "the server could not find the requested resource"
        )));
        assert!(!is_missing_crd(&error(
            "externalartifacts.kubectl-gitops.io \"x\" not found"
        )));
        let failure = map_missing_crd(
            error("the server could not find the requested resource"),
            "ExternalArtifact",
        );
        assert_eq!(crate::error::report(&failure).exit, Exit::NotFound);
        assert!(
            failure
                .to_string()
                .contains("does not know the kind ExternalArtifact")
        );
    }

    fn repo(generation: i64, status: GitRepositoryStatus) -> GitRepository {
        let mut repo: GitRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "r", "namespace": "n", "generation": generation},
            "spec": {"url": "https://example.com/r.git", "interval": "1m"}
        }))
        .unwrap();
        repo.status = Some(status);
        repo
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        let mut v = Vec::new();
        conditions::set(&mut v, type_, status, reason, message, Some(1));
        v.remove(0)
    }

    #[test]
    fn outcome_waits_for_the_current_generation_and_the_end_of_reconciling() {
        let ready = cond("Ready", "True", "Succeeded", "stored artifact");
        let reconciling = cond("Reconciling", "True", "Progressing", "fetching");
        let old = repo(
            2,
            GitRepositoryStatus {
                observed_generation: Some(1),
                conditions: vec![ready.clone()],
                ..Default::default()
            },
        );
        assert_eq!(finished_outcome(&old), None);
        let busy = repo(
            2,
            GitRepositoryStatus {
                observed_generation: Some(2),
                conditions: vec![ready.clone(), reconciling],
                ..Default::default()
            },
        );
        assert_eq!(finished_outcome(&busy), None);
        let done = repo(
            2,
            GitRepositoryStatus {
                observed_generation: Some(2),
                conditions: vec![ready],
                ..Default::default()
            },
        );
        assert_eq!(finished_outcome(&done), Some(Outcome::Ready(None)));
        let failed = repo(
            1,
            GitRepositoryStatus {
                observed_generation: Some(1),
                conditions: vec![cond("Ready", "False", "GitOperationFailed", "no such host")],
                ..Default::default()
            },
        );
        assert_eq!(
            finished_outcome(&failed),
            Some(Outcome::NotReady {
                reason: "GitOperationFailed".into(),
                message: "no such host".into()
            })
        );
        // A failed attempt with a retry pending is an outcome, not work in progress.
        let retrying = repo(
            1,
            GitRepositoryStatus {
                observed_generation: Some(1),
                conditions: vec![
                    cond("Ready", "False", "PolicyDenied", "denied by policy"),
                    cond(
                        "Reconciling",
                        "True",
                        "ProgressingWithRetry",
                        "retrying after PolicyDenied",
                    ),
                ],
                ..Default::default()
            },
        );
        assert_eq!(
            finished_outcome(&retrying),
            Some(Outcome::NotReady {
                reason: "PolicyDenied".into(),
                message: "denied by policy".into()
            })
        );
    }

    const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
current-context: main
clusters:
- name: main
  cluster: {server: 'https://127.0.0.1:6443', certificate-authority-data: ''}
- name: other
  cluster: {server: 'https://127.0.0.2:7443'}
users:
- name: admin
  user: {username: admin-user}
- name: viewer
  user: {username: viewer-user}
contexts:
- name: main
  context: {cluster: main, user: admin, namespace: apps}
";

    async fn config_for(flags: &[&str]) -> anyhow::Result<kube::Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG)?;
        let mut args = vec![
            "kubectl-gitops",
            "--kubeconfig",
            path.to_str().unwrap_or(""),
        ];
        args.extend_from_slice(flags);
        args.extend(["get", "ks"]);
        let cli = crate::cli::Cli::try_parse_from(args)?;
        client_config(&cli.global).await
    }

    #[tokio::test]
    async fn kubectl_client_flags_select_and_override_kubeconfig_entries() {
        let plain = config_for(&[]).await.unwrap();
        assert_eq!(plain.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert!(plain.auth_info.impersonate.is_none());
        assert!(!plain.accept_invalid_certs);
        assert_eq!(plain.read_timeout, Some(Duration::from_secs(300)));

        let chosen = config_for(&[
            "--cluster",
            "other",
            "--user",
            "viewer",
            "--as",
            "system:serviceaccount:team-a:deployer",
            "--as-group",
            "team-a",
            "--as-group",
            "system:authenticated",
            "--as-uid",
            "1234",
            "--insecure-skip-tls-verify",
            "--request-timeout",
            "7",
        ])
        .await
        .unwrap();
        assert_eq!(chosen.cluster_url.to_string(), "https://127.0.0.2:7443/");
        assert_eq!(chosen.auth_info.username.as_deref(), Some("viewer-user"));
        assert_eq!(
            chosen.auth_info.impersonate.as_deref(),
            Some("system:serviceaccount:team-a:deployer")
        );
        assert_eq!(
            chosen.auth_info.impersonate_groups,
            Some(vec!["team-a".to_owned(), "system:authenticated".to_owned()])
        );
        assert_eq!(chosen.auth_info.impersonate_uid.as_deref(), Some("1234"));
        assert!(chosen.accept_invalid_certs);
        assert!(chosen.root_cert.is_none());
        assert_eq!(chosen.read_timeout, Some(Duration::from_secs(7)));
        assert_eq!(chosen.write_timeout, Some(Duration::from_secs(7)));
        assert_eq!(chosen.connect_timeout, Some(Duration::from_secs(7)));

        // A cluster or user the kubeconfig lacks is refused, naming the cause.
        let missing = config_for(&["--cluster", "nowhere"]).await.unwrap_err();
        let report = crate::error::report(&missing);
        assert_eq!(report.exit, Exit::Unreachable);
        assert!(report.line.contains("nowhere"), "{}", report.line);
    }

    #[test]
    fn request_timeout_follows_kubectl_grammar() {
        use crate::cli::{RequestTimeout, parse_request_timeout};
        assert_eq!(parse_request_timeout("0"), Ok(RequestTimeout(None)));
        assert_eq!(parse_request_timeout("0s"), Ok(RequestTimeout(None)));
        assert_eq!(
            parse_request_timeout("15"),
            Ok(RequestTimeout(Some(Duration::from_secs(15))))
        );
        assert_eq!(
            parse_request_timeout("1m30s"),
            Ok(RequestTimeout(Some(Duration::from_secs(90))))
        );
        for bad in ["", "-1", "5x", "99999999999999999999999"] {
            assert!(parse_request_timeout(bad).is_err(), "{bad}");
        }
        // --as-group needs --as, as in kubectl.
        assert!(
            crate::cli::Cli::try_parse_from(["kubectl-gitops", "--as-group", "g", "get", "ks"])
                .is_err()
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
    }
}
