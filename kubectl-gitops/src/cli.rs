//! The command line: clap types only. Parsing lives here so that every command module receives
//! plain option structs and can be tested without building argument vectors.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Documented exit codes, printed at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (diff: no differences)
  1  the operation ran and reports a failure: a reconcile ended not Ready, check found a problem,
     build was denied by a policy, diff found differences
  2  invalid usage: unknown or conflicting flags, malformed values
  3  an object named on the command line does not exist
  4  the cluster cannot be reached or refused the credentials
  5  timed out waiting for the cluster or the reconciler
  6  any other error";

/// GitOps for Kubernetes with WebAssembly policies.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-gitops",
    bin_name = "kubectl gitops",
    version,
    about = "GitOps for Kubernetes with WebAssembly policies",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Flags that apply to every command (kubeconfig, namespace, timeouts, verbosity).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts (the same names as flux and kubectl).
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// User to impersonate for the operation (a user or a service account,
    /// system:serviceaccount:NS:NAME).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for the operation (repeatable).
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        requires = "as_user"
    )]
    pub as_group: Vec<String>,
    /// UID to impersonate for the operation.
    #[arg(
        long = "as-uid",
        global = true,
        value_name = "UID",
        requires = "as_user"
    )]
    pub as_uid: Option<String>,
    /// Do not verify the API server's certificate (insecure: for test clusters only).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// How long to wait for one request to the API server: a duration (1s, 2m) or a number of
    /// seconds; 0 (the default) bounds requests by --timeout only.
    #[arg(long, global = true, default_value = "0", value_parser = parse_request_timeout, value_name = "DURATION")]
    pub request_timeout: RequestTimeout,
    /// The namespace of the kubectl-gitops objects.
    #[arg(
        short = 'n',
        long,
        global = true,
        default_value = "gitops-system",
        value_name = "NS"
    )]
    pub namespace: String,
    /// How long to wait for the cluster and the reconciler (Go duration: 30s, 5m, 1h).
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// More output on stderr (-v: debug, -vv: trace).
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

/// `--request-timeout`: `None` (kubectl's `0`) leaves single requests bounded by `--timeout`
/// only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTimeout(pub Option<Duration>);

/// kubectl's `--request-timeout` grammar: `0` (no limit), a whole number of seconds, or a
/// duration with a unit.
pub fn parse_request_timeout(text: &str) -> Result<RequestTimeout, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text
            .parse()
            .map_err(|_| format!("'{text}' is too large a number of seconds"))?;
        return Ok(RequestTimeout(
            (secs > 0).then(|| Duration::from_secs(secs)),
        ));
    }
    match gitops_reconciler::api::duration::parse(text) {
        Ok(duration) => Ok(RequestTimeout(Some(duration))),
        // `0s`, `0m`: zero with a unit is "no limit" too.
        Err(gitops_reconciler::api::duration::DurationError::NotPositive(_)) => {
            Ok(RequestTimeout(None))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A Go-style duration, validated with the same parser the reconciler uses.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    gitops_reconciler::api::duration::parse(text).map_err(|e| e.to_string())
}

/// How listing commands print objects.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The objects as YAML (a List).
    Yaml,
    /// The objects as JSON (a List).
    Json,
}

/// How `get` prints objects (kubectl's `-o` values).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListOutput {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The table with more columns: SOURCE (Kustomizations), REASON of the Ready condition and
    /// SHARD (the shard whose reconciler owns the object, `-` for the main one).
    Wide,
    /// One `resource.group/name` per line, fully qualified so that it is unambiguous next to
    /// Flux's kinds of the same names.
    Name,
    /// The objects as YAML (a List).
    Yaml,
    /// The objects as JSON (a List).
    Json,
}

/// Every top-level command. The doc comment of each variant is its one-line `--help` text.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the client version, and the server's when a cluster is reachable.
    Version(VersionArgs),
    /// Check the cluster: prerequisites (--pre) or the installed CRDs and reconciler.
    Check(CheckArgs),
    /// Install the CRDs and the reconciler (or print the manifests with --export).
    Install(InstallArgs),
    /// Remove the reconciler, the CRDs and every kubectl-gitops object.
    Uninstall(UninstallArgs),
    /// Commit the install manifests to a git repository and let the cluster manage itself from it.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Create or update sources, kustomizations and secrets.
    #[command(subcommand)]
    Create(CreateCommand),
    /// List sources and kustomizations with their status.
    #[command(subcommand)]
    Get(GetCommand),
    /// Ask the reconciler to reconcile an object now and wait for the outcome.
    #[command(subcommand)]
    Reconcile(ReconcileCommand),
    /// Stop reconciling objects (the cluster keeps its current state).
    #[command(subcommand)]
    Suspend(SelectCommand),
    /// Resume reconciling suspended objects and wait for the outcome.
    #[command(subcommand)]
    Resume(SelectCommand),
    /// Delete sources and kustomizations.
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Print objects as clean YAML to commit to git.
    #[command(subcommand)]
    Export(SelectCommand),
    /// Show what a kustomization would change in the cluster (exit 1 when it differs).
    #[command(subcommand)]
    Diff(LocalBuildCommand),
    /// Print the objects a kustomization renders, after its policies.
    #[command(subcommand)]
    Build(LocalBuildCommand),
    /// Show the objects a kustomization manages, as a tree.
    #[command(subcommand)]
    Tree(TreeCommand),
    /// Show which kustomization and source manage an object.
    Trace(TraceArgs),
    /// Show the Kubernetes events of kubectl-gitops objects.
    Events(EventsArgs),
    /// Show the reconciler's logs.
    Logs(LogsArgs),
    /// Work with WebAssembly policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Completions of the words of a command line, in the protocol kubectl's plugin completion
    /// (kubectl >= 1.26, through a `kubectl_complete-gitops` executable) and cobra use.
    #[command(name = "__complete", hide = true)]
    Complete(CompleteArgs),
}

/// `version`: the client's version and, unless `--client`, the reconciler's.
#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Print only the client version (no cluster access).
    #[arg(long)]
    pub client: bool,
    /// How to print the versions.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `check`: prerequisites of an install, or the health of one.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Check only the prerequisites of an install: Kubernetes version and permissions.
    #[arg(long)]
    pub pre: bool,
}

/// `install`: applies the embedded CRDs and reconciler manifests, or prints them.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Print the manifests instead of applying them.
    #[arg(long)]
    pub export: bool,
    /// Reconciler image reference, e.g. NAME@sha256:DIGEST (default: the image this release was
    /// built with).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Install only the CRDs (for a reconciler run outside the cluster).
    #[arg(long)]
    pub crds_only: bool,
    /// Also run a reconciler for shard NAME, reconciling the objects labelled
    /// sharding.kubectl-gitops.io/key=NAME (the main reconciler takes every other object).
    /// Repeat or separate with commas; shards installed earlier and not given are removed.
    #[arg(long = "shard", value_name = "NAME", value_delimiter = ',')]
    pub shards: Vec<String>,
}

/// `uninstall`: removes the reconciler and the CRDs, leaving the applied workloads in place.
#[derive(Args, Debug, Clone)]
pub struct UninstallArgs {
    /// Keep the namespace.
    #[arg(long)]
    pub keep_namespace: bool,
    /// Do not ask for confirmation.
    #[arg(short = 's', long)]
    pub silent: bool,
}

/// `bootstrap` targets. Only plain git for now (no hosting-provider API).
#[derive(Subcommand, Debug)]
pub enum BootstrapCommand {
    /// Bootstrap from any git server reachable with git (https or ssh).
    Git(BootstrapGitArgs),
}

/// `bootstrap git`: where to commit the cluster's manifests and how to reach the repository.
#[derive(Args, Debug, Clone)]
pub struct BootstrapGitArgs {
    /// Repository URL (https://, http:// with --allow-insecure-http, or ssh://).
    #[arg(long)]
    pub url: String,
    /// Branch to commit to and reconcile from.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory of the cluster's manifests inside the repository.
    #[arg(long, value_name = "DIR")]
    pub path: String,
    /// User name for https.
    #[arg(
        short = 'u',
        long,
        requires = "password",
        conflicts_with = "private_key_file"
    )]
    pub username: Option<String>,
    /// Password or token for https.
    #[arg(short = 'p', long, requires = "username")]
    pub password: Option<String>,
    /// SSH private key for ssh:// URLs.
    #[arg(long, value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,
    /// Reconcile interval of the self-managing objects.
    #[arg(long, default_value = "1m", value_parser = parse_duration_text)]
    pub interval: String,
    /// Allow a plain http:// URL (test servers only).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// known_hosts file with the ssh server's host key (ssh:// URLs).
    #[arg(long, value_name = "FILE")]
    pub known_hosts_file: Option<PathBuf>,
    /// CA certificate (PEM) of an https server with a private CA; stored for the reconciler too.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Reconciler image reference, e.g. NAME@sha256:DIGEST (default: the image this release was
    /// built with).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

/// Validates a duration but keeps the user's spelling for the object (`30s` stays `30s`).
pub fn parse_duration_text(text: &str) -> Result<String, String> {
    parse_duration(text).map(|_| text.to_owned())
}

/// `create` targets: sources, Kustomizations, secrets and notification objects.
#[derive(Subcommand, Debug)]
pub enum CreateCommand {
    /// Create or update a source.
    #[command(subcommand)]
    Source(CreateSourceCommand),
    /// Create or update a Kustomization.
    #[command(visible_alias = "ks")]
    Kustomization(CreateKustomizationArgs),
    /// Create or update a secret.
    #[command(subcommand)]
    Secret(CreateSecretCommand),
    /// Create or update a Receiver (an incoming webhook that requests reconciles).
    Receiver(CreateReceiverArgs),
    /// Create or update an Alert (which events go to a Provider).
    Alert(CreateAlertArgs),
    /// Create or update a Provider (where Alerts deliver events).
    AlertProvider(CreateAlertProviderArgs),
}

/// `create receiver`, with the flags of `flux create receiver`.
#[derive(Args, Debug, Clone)]
pub struct CreateReceiverArgs {
    /// Name of the Receiver.
    pub name: String,
    /// Who sends the webhook: generic, generic-hmac, github (also Gitea), gitlab, bitbucket.
    #[arg(long = "type", value_name = "TYPE")]
    pub type_: String,
    /// An event type to act on, e.g. push, ping, 'Push Hook' (repeatable; none: all).
    #[arg(long = "event", value_delimiter = ',')]
    pub events: Vec<String>,
    /// An object to reconcile: Kind/name[.namespace], Kind GitRepository or Kustomization
    /// (repeatable).
    #[arg(long = "resource", value_delimiter = ',', required = true)]
    pub resources: Vec<String>,
    /// Secret in the namespace whose 'token' key verifies requests.
    #[arg(long, value_name = "NAME")]
    pub secret_ref: String,
    /// Print the object as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// `create alert`, with the flags of `flux create alert`.
#[derive(Args, Debug, Clone)]
pub struct CreateAlertArgs {
    /// Name of the Alert.
    pub name: String,
    /// The Provider (same namespace) that delivers the events.
    #[arg(long, value_name = "NAME")]
    pub provider_ref: String,
    /// info (every event) or error (failures only).
    #[arg(long, default_value = "info")]
    pub event_severity: String,
    /// Whose events: Kind/name[.namespace], name '*' for all of a kind (repeatable).
    #[arg(long = "event-source", value_delimiter = ',', required = true)]
    pub event_sources: Vec<String>,
    /// Print the object as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// `create alert-provider`, with the flags of `flux create alert-provider`.
#[derive(Args, Debug, Clone)]
pub struct CreateAlertProviderArgs {
    /// Name of the Provider.
    pub name: String,
    /// generic, generic-hmac, slack, msteams, discord, googlechat, alertmanager, or the commit
    /// status types github and gitea.
    #[arg(long = "type", value_name = "TYPE")]
    pub type_: String,
    /// Where to POST, or the repository's URL for github and gitea (keep URLs that carry a
    /// secret in the Secret's 'address' key instead).
    #[arg(long)]
    pub address: Option<String>,
    /// Slack channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// The name messages are posted as.
    #[arg(long)]
    pub username: Option<String>,
    /// Secret with address, token, username/password or headers.
    #[arg(long, value_name = "NAME")]
    pub secret_ref: Option<String>,
    /// Print the object as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// `create source` kinds.
#[derive(Subcommand, Debug)]
pub enum CreateSourceCommand {
    /// Create or update a GitRepository.
    Git(CreateSourceGitArgs),
}

/// `create secret` kinds.
#[derive(Subcommand, Debug)]
pub enum CreateSecretCommand {
    /// Create or update a Secret with git credentials.
    Git(CreateSecretGitArgs),
    /// Create or update a Secret with an age identity for spec.decryption (key identity.agekey).
    Age(CreateSecretAgeArgs),
}

/// `create source git`: the GitRepository's spec as flags (`flux create source git` names).
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("git_ref").args(["branch", "tag", "tag_semver", "commit"])))]
pub struct CreateSourceGitArgs {
    /// Name of the GitRepository.
    pub name: String,
    /// Repository URL (https://, ssh://, http:// with --insecure).
    #[arg(long)]
    pub url: String,
    /// Branch to follow.
    #[arg(long)]
    pub branch: Option<String>,
    /// Tag to check out.
    #[arg(long)]
    pub tag: Option<String>,
    /// Semver range of tags to follow, e.g. '>=1.0.0'.
    #[arg(long)]
    pub tag_semver: Option<String>,
    /// Commit SHA-1 to check out.
    #[arg(long)]
    pub commit: Option<String>,
    /// How often to check the remote for changes.
    #[arg(long, default_value = "1m", value_parser = parse_duration_text)]
    pub interval: String,
    /// Timeout of git operations (spec.timeout).
    #[arg(long = "fetch-timeout", value_parser = parse_duration_text)]
    pub fetch_timeout: Option<String>,
    /// Secret with the git credentials (see `create secret git`).
    #[arg(long, value_name = "NAME")]
    pub secret_ref: Option<String>,
    /// Paths to leave out of the artifact, gitignore syntax (comma separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "PATTERN")]
    pub ignore_paths: Vec<String>,
    /// Allow a plain http:// URL.
    #[arg(long)]
    pub insecure: bool,
    /// Print the object as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// `create kustomization`: the Kustomization's spec as flags (`flux create kustomization` names).
#[derive(Args, Debug, Clone)]
pub struct CreateKustomizationArgs {
    /// Name of the Kustomization.
    pub name: String,
    /// The source: [KIND/][namespace/]name, KIND GitRepository (the default) or
    /// ExternalArtifact.
    #[arg(long)]
    pub source: String,
    /// Directory inside the source to build.
    #[arg(long, default_value = "./")]
    pub path: String,
    /// How often to reconcile the cluster with the source.
    #[arg(long, default_value = "1m", value_parser = parse_duration_text)]
    pub interval: String,
    /// Delete objects that leave the source.
    #[arg(long)]
    pub prune: bool,
    /// Wait for every applied object to become ready.
    #[arg(long)]
    pub wait: bool,
    /// Namespace every namespaced object is placed in.
    #[arg(long, value_name = "NS")]
    pub target_namespace: Option<String>,
    /// Kustomizations that must be ready first: [namespace/]name (repeatable).
    #[arg(long, value_delimiter = ',')]
    pub depends_on: Vec<String>,
    /// Objects whose health gates readiness: Kind/name[.namespace] (repeatable).
    #[arg(long, value_delimiter = ',')]
    pub health_check: Vec<String>,
    /// ServiceAccount to impersonate when applying.
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// A built-in policy: builtin:NAME[:CONFIG] where CONFIG is a JSON file or inline JSON.
    #[arg(long, value_name = "builtin:NAME[:CONFIG]")]
    pub policy: Vec<String>,
    /// A policy component from a local file: FILE.wasm[:CONFIG] (stored in a ConfigMap).
    #[arg(long, value_name = "FILE.wasm[:CONFIG]")]
    pub policy_module: Vec<PathBuf>,
    /// Reconcile timeout (spec.timeout).
    #[arg(long = "apply-timeout", value_parser = parse_duration_text)]
    pub apply_timeout: Option<String>,
    /// Decrypt SOPS-encrypted files of the build: the provider (spec.decryption.provider).
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub decryption_provider: Option<DecryptionProviderArg>,
    /// Secret with the age identities (spec.decryption.secretRef; see `create secret age`).
    #[arg(long, value_name = "NAME", requires = "decryption_provider")]
    pub decryption_secret: Option<String>,
    /// Print the objects as YAML instead of applying them.
    #[arg(long)]
    pub export: bool,
}

/// `--decryption-provider` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptionProviderArg {
    /// SOPS-encrypted files, decrypted with the age identities of `--decryption-secret`.
    Sops,
}

/// `create secret age`: a Secret holding an age identity file for SOPS decryption.
#[derive(Args, Debug, Clone)]
pub struct CreateSecretAgeArgs {
    /// Name of the Secret.
    pub name: String,
    /// age identity file, as age-keygen writes it (AGE-SECRET-KEY-1… lines).
    #[arg(long, value_name = "FILE")]
    pub age_key_file: PathBuf,
    /// Print the Secret as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// `create secret git`: a Secret with https basic auth, a bearer token or an ssh key.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["username", "bearer_token", "private_key_file"])))]
pub struct CreateSecretGitArgs {
    /// Name of the Secret.
    pub name: String,
    /// URL of the repository the credentials are for (decides which kind of credentials fit).
    #[arg(long)]
    pub url: String,
    /// User name for https basic auth.
    #[arg(short = 'u', long, requires = "password")]
    pub username: Option<String>,
    /// Password for https basic auth.
    #[arg(short = 'p', long, requires = "username")]
    pub password: Option<String>,
    /// Bearer token for https.
    #[arg(long)]
    pub bearer_token: Option<String>,
    /// SSH private key file for ssh:// URLs.
    #[arg(long, value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,
    /// known_hosts file for ssh:// URLs.
    #[arg(long, value_name = "FILE", requires = "private_key_file")]
    pub known_hosts_file: Option<PathBuf>,
    /// Print the Secret as YAML instead of applying it.
    #[arg(long)]
    pub export: bool,
}

/// Flags shared by the listing commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ListArgs {
    /// Only this object.
    pub name: Option<String>,
    /// List in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, watch for changes (until Ctrl-C or --timeout).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Only objects whose condition has this status, e.g. ready=false.
    #[arg(long, value_name = "CONDITION=STATUS")]
    pub status_selector: Option<String>,
    /// Label selector, e.g. team=web.
    #[arg(short = 'l', long = "label-selector", value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// Add a SOURCE column (kustomizations).
    #[arg(long)]
    pub show_source: bool,
    /// How to print the objects (kubectl's `-o`).
    #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,
    /// Do not print the header line.
    #[arg(long)]
    pub no_header: bool,
}

/// `get` targets.
#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// List sources.
    #[command(subcommand)]
    Sources(GetSourcesCommand),
    /// List Kustomizations.
    #[command(visible_alias = "ks", alias = "kustomization")]
    Kustomizations(ListArgs),
    /// List every source and Kustomization.
    All(ListArgs),
    /// List Receivers.
    #[command(alias = "receiver")]
    Receivers(ListArgs),
    /// List Alerts.
    #[command(alias = "alert")]
    Alerts(ListArgs),
    /// List alert Providers.
    #[command(alias = "alert-provider")]
    AlertProviders(ListArgs),
}

/// `get sources` kinds.
#[derive(Subcommand, Debug)]
pub enum GetSourcesCommand {
    /// List GitRepositories.
    Git(ListArgs),
    /// List ExternalArtifacts (tar.gz artifacts published by other tools).
    #[command(visible_alias = "external")]
    ExternalArtifact(ListArgs),
    /// List sources of every kind.
    All(ListArgs),
}

/// `reconcile` targets: each sets the reconcile-request annotation and waits for the outcome.
#[derive(Subcommand, Debug)]
pub enum ReconcileCommand {
    /// Reconcile a source.
    #[command(subcommand)]
    Source(ReconcileSourceCommand),
    /// Reconcile a Kustomization.
    #[command(visible_alias = "ks")]
    Kustomization(ReconcileKustomizationArgs),
    /// Reconcile a Receiver (re-read its Secret, recompute its webhook path).
    Receiver(NameArgs),
}

/// `reconcile source` kinds.
#[derive(Subcommand, Debug)]
pub enum ReconcileSourceCommand {
    /// Reconcile a GitRepository.
    Git(NameArgs),
}

/// A command that takes the name of one object in `--namespace`.
#[derive(Args, Debug, Clone)]
pub struct NameArgs {
    /// Name of the object.
    pub name: String,
}

/// `reconcile kustomization`.
#[derive(Args, Debug, Clone)]
pub struct ReconcileKustomizationArgs {
    /// Name of the Kustomization.
    pub name: String,
    /// Reconcile the source first.
    #[arg(long)]
    pub with_source: bool,
}

/// `suspend`, `resume` and `export` select one object or all of a kind.
#[derive(Subcommand, Debug)]
pub enum SelectCommand {
    /// Sources.
    #[command(subcommand)]
    Source(SelectSourceCommand),
    /// Kustomizations.
    #[command(visible_alias = "ks")]
    Kustomization(Selection),
}

/// Source kinds `suspend`, `resume` and `export` select from.
#[derive(Subcommand, Debug)]
pub enum SelectSourceCommand {
    /// GitRepositories.
    Git(Selection),
}

/// One object by name, or every object of the kind with `--all` (exactly one of the two).
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "all"])))]
pub struct Selection {
    /// Name of the object.
    pub name: Option<String>,
    /// Every object of this kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

/// `delete` targets.
#[derive(Subcommand, Debug)]
pub enum DeleteCommand {
    /// Delete a source.
    #[command(subcommand)]
    Source(DeleteSourceCommand),
    /// Delete a Kustomization.
    #[command(visible_alias = "ks")]
    Kustomization(DeleteArgs),
}

/// `delete source` kinds.
#[derive(Subcommand, Debug)]
pub enum DeleteSourceCommand {
    /// Delete a GitRepository.
    Git(DeleteArgs),
}

/// `delete`: one object by name, after a confirmation unless `--silent`.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// Name of the object.
    pub name: String,
    /// Do not ask for confirmation.
    #[arg(short = 's', long)]
    pub silent: bool,
}

/// What `build` and `diff` render locally: only Kustomizations.
#[derive(Subcommand, Debug)]
pub enum LocalBuildCommand {
    /// A Kustomization.
    #[command(visible_alias = "ks")]
    Kustomization(LocalBuildArgs),
}

/// `build kustomization` and `diff kustomization`: where the spec, source tree and cluster inputs
/// come from.
#[derive(Args, Debug, Clone)]
pub struct LocalBuildArgs {
    /// Name of the Kustomization.
    pub name: String,
    /// The local directory that stands for the Kustomization's spec.path (module paths and
    /// kustomize's file access are relative to the git checkout that holds it).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Read the Kustomization from this manifest instead of the cluster (as in Flux).
    #[arg(long, value_name = "FILE")]
    pub kustomization_file: Option<PathBuf>,
    /// ClusterPolicy (and Namespace) manifests, a file or a directory of .yaml/.yml/.json
    /// files, standing for the cluster's ClusterPolicies.
    #[arg(long, value_name = "DIR")]
    pub cluster_policies: Option<PathBuf>,
    /// ConfigMap and Secret manifests standing for the cluster's in postBuild.substituteFrom.
    #[arg(long, value_name = "FILE")]
    pub substitute_from: Option<PathBuf>,
    /// Never contact a cluster (needs --kustomization-file): what no flag provides is absent,
    /// and substituteFrom objects not in --substitute-from are skipped, as in Flux.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tree` targets.
#[derive(Subcommand, Debug)]
pub enum TreeCommand {
    /// The inventory of a Kustomization.
    #[command(visible_alias = "ks")]
    Kustomization(NameArgs),
}

/// `trace`: the object to trace back to its Kustomization and source.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// The object: KIND/NAME (e.g. deployment/vote) or KIND NAME.
    #[arg(num_args = 1..=2, required = true)]
    pub object: Vec<String>,
    /// API version of the kind when its name is ambiguous, e.g. apps/v1.
    #[arg(long)]
    pub api_version: Option<String>,
}

/// `events`: which events to show and whether to follow them.
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Only events of this object: Kind/name.
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
    /// Keep printing new events (until Ctrl-C or --timeout).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Events in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Do not print the header line.
    #[arg(long)]
    pub no_header: bool,
}

/// `logs`: filters over the reconciler's JSON log lines.
#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// Keep streaming.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines of this level or more severe.
    #[arg(long, value_enum)]
    pub level: Option<LogLevel>,
    /// Only lines about objects of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only lines about objects with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Lines from the end of the log to start with.
    #[arg(long, default_value_t = 100)]
    pub tail: i64,
}

/// `--level` values, least severe first (the derived order is severity).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Every line, down to the reconciler's trace output.
    Trace,
    /// Debug lines and everything more severe.
    Debug,
    /// Info lines, warnings and errors.
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

/// `policy` subcommands.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Run a policy over local manifests and print the outcome.
    Test(PolicyTestArgs),
}

/// `policy test`: a policy, its configuration and the manifests to run it over.
#[derive(Args, Debug, Clone)]
pub struct PolicyTestArgs {
    /// The policy: a component file (.wasm) or builtin:NAME.
    #[arg(long)]
    pub module: String,
    /// Policy configuration (a JSON or YAML file).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory (or file) of manifests to run the policy over.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub filename: PathBuf,
    /// Target namespace given to the policy context.
    #[arg(long)]
    pub target_namespace: Option<String>,
    /// What to print: a diff of the objects the policy changed, or every object after it.
    #[arg(short = 'o', long, value_enum, default_value_t = PolicyTestOutput::Diff)]
    pub output: PolicyTestOutput,
}

/// Output of `policy test`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyTestOutput {
    /// A unified diff per changed object, then the violations table.
    #[default]
    Diff,
    /// Every object after the policy, as YAML (violations on stderr).
    Yaml,
    /// Every object after the policy, as a JSON List (violations on stderr).
    Json,
}

/// `__complete`: the words of a partial command line (shell completion protocol).
#[derive(Args, Debug, Clone)]
pub struct CompleteArgs {
    /// The words after `gitops`; the last one is the word being completed (empty for a new one).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub words: Vec<String>,
}

/// `completion`: which shell to print a completion script for.
#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to print the completion script for.
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_have_flux_defaults() {
        let cli = Cli::try_parse_from(["kubectl-gitops", "get", "ks"]).unwrap();
        assert_eq!(cli.global.namespace, "gitops-system");
        assert_eq!(cli.global.timeout, Duration::from_secs(300));
        let cli = Cli::try_parse_from([
            "kubectl-gitops",
            "get",
            "sources",
            "git",
            "-n",
            "apps",
            "--timeout",
            "30s",
            "-A",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace, "apps");
        assert_eq!(cli.global.timeout, Duration::from_secs(30));
        match cli.command {
            Command::Get(GetCommand::Sources(GetSourcesCommand::Git(list))) => {
                assert!(list.all_namespaces);
                assert_eq!(list.output, ListOutput::Json);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn conflicting_and_invalid_flags_are_usage_errors() {
        for args in [
            &[
                "kubectl-gitops",
                "create",
                "source",
                "git",
                "a",
                "--url",
                "https://x/y",
                "--branch",
                "main",
                "--tag",
                "v1",
            ][..],
            &[
                "kubectl-gitops",
                "create",
                "secret",
                "git",
                "s",
                "--url",
                "https://x/y",
            ],
            &[
                "kubectl-gitops",
                "create",
                "secret",
                "git",
                "s",
                "--url",
                "https://x/y",
                "-u",
                "me",
            ],
            &["kubectl-gitops", "get", "ks", "--timeout", "0s"],
            &["kubectl-gitops", "get", "ks", "-o", "xml"],
            &["kubectl-gitops", "suspend", "ks"],
            &["kubectl-gitops", "suspend", "ks", "a", "--all"],
        ] {
            let err = Cli::try_parse_from(args).expect_err(&format!("{args:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }
}
