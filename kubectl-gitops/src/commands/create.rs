//! `kubectl gitops create source git | kustomization | secret git | secret age`: build the object from flags,
//! print it (`--export`) or server-side apply it and wait for the first reconcile's outcome.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use gitops_reconciler::api::common::{
    ConfigMapKeyReference, LocalObjectReference, NamespacedObjectKindReference,
    NamespacedObjectReference, PolicyModule,
};
use gitops_reconciler::api::kustomization::{
    Decryption, DecryptionProvider, PolicyReference, SourceKind, SourceReference,
};
use gitops_reconciler::api::{
    GitRepository, GitRepositoryRef, GitRepositorySpec, Kustomization, KustomizationSpec,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use kube::{Api, ResourceExt as _};
use sha2::Digest as _;

use crate::cli::{
    CreateCommand, CreateKustomizationArgs, CreateSecretAgeArgs, CreateSecretCommand,
    CreateSecretGitArgs, CreateSourceCommand, CreateSourceGitArgs, DecryptionProviderArg,
    GlobalArgs,
};
use crate::cluster::{self, Outcome, Reconcilable};
use crate::error::{Exit, fail};
use crate::ui::{Ui, escape};

pub async fn run(
    global: &GlobalArgs,
    command: CreateCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    match command {
        CreateCommand::Source(CreateSourceCommand::Git(args)) => {
            let repo = git_repository(&global.namespace, &args)?;
            if args.export {
                export(ui, &[serde_json::to_value(&repo)?])?;
                return Ok(Exit::Success);
            }
            let client = cluster::connect(global).await?;
            apply_and_wait(
                global,
                Api::namespaced(client, &global.namespace),
                &repo,
                ui,
            )
            .await
        }
        CreateCommand::Kustomization(args) => {
            let (ks, config_maps) = kustomization(&global.namespace, &args)?;
            if args.export {
                let mut docs = Vec::new();
                for cm in &config_maps {
                    docs.push(serde_json::to_value(cm)?);
                }
                docs.push(serde_json::to_value(&ks)?);
                export(ui, &docs)?;
                return Ok(Exit::Success);
            }
            let client = cluster::connect(global).await?;
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &global.namespace);
            for cm in &config_maps {
                ui.step(&format!(
                    "applying ConfigMap {} (policy component)",
                    cm.name_any()
                ))?;
                cluster::apply(&cms, cm).await?;
            }
            apply_and_wait(global, Api::namespaced(client, &global.namespace), &ks, ui).await
        }
        CreateCommand::Receiver(args) => super::notify::create_receiver(global, &args, ui).await,
        CreateCommand::Alert(args) => {
            let alert = super::notify::alert(&global.namespace, &args)?;
            super::notify::create_static(global, alert, args.export, ui).await
        }
        CreateCommand::AlertProvider(args) => {
            let provider = super::notify::provider(&global.namespace, &args)?;
            super::notify::create_static(global, provider, args.export, ui).await
        }
        CreateCommand::Secret(CreateSecretCommand::Git(args)) => {
            let secret = git_secret(&global.namespace, &args)?;
            apply_secret(global, &secret, args.export, ui).await
        }
        CreateCommand::Secret(CreateSecretCommand::Age(args)) => {
            let secret = age_secret(&global.namespace, &args)?;
            apply_secret(global, &secret, args.export, ui).await
        }
    }
}

/// Prints (`--export`) or applies a Secret; never echoes its data, only its keys.
async fn apply_secret(
    global: &GlobalArgs,
    secret: &Secret,
    export_only: bool,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    if export_only {
        export(ui, &[serde_json::to_value(secret)?])?;
        return Ok(Exit::Success);
    }
    let client = cluster::connect(global).await?;
    let api: Api<Secret> = Api::namespaced(client, &global.namespace);
    let name = secret.name_any();
    ui.step(&format!("applying Secret {}/{name}", global.namespace))?;
    cluster::apply(&api, secret).await?;
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .map(|d| d.keys().map(String::as_str).collect())
        .unwrap_or_default();
    ui.success(&format!(
        "Secret {name} applied with keys: {}",
        keys.join(", ")
    ))?;
    Ok(Exit::Success)
}

pub fn export(ui: &mut Ui<'_>, docs: &[serde_json::Value]) -> anyhow::Result<()> {
    let docs: Vec<_> = docs.iter().map(crate::objects::exportable).collect();
    write!(ui.out, "{}", crate::objects::yaml_stream(&docs)?)?;
    Ok(())
}

/// Applies `object`, then waits for the reconcile of the generation just written.
pub async fn apply_and_wait<K: Reconcilable>(
    global: &GlobalArgs,
    api: Api<K>,
    object: &K,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let kind = K::kind(&());
    let name = object.name_any();
    let namespace = &global.namespace;
    ui.step(&format!("applying {kind} {namespace}/{name}"))?;
    let applied = cluster::apply(&api, object).await?;
    ui.success(&format!("{kind} applied"))?;
    let generation = applied.meta().generation;
    let outcome = {
        let _spinner = ui.waiting(&format!("waiting for {kind} reconciliation"))?;
        cluster::wait_for(&api, namespace, &name, global.timeout, |live: &K| {
            if live.observed_generation() < generation {
                return None;
            }
            cluster::finished_outcome(live)
        })
        .await?
    };
    report_outcome::<K>(ui, &outcome)
}

/// Prints `✔ <verb>: <revision>` or `✗ <reason>: <message>`; the exit code follows.
pub fn report_outcome<K: Reconcilable>(ui: &mut Ui<'_>, outcome: &Outcome) -> anyhow::Result<Exit> {
    let kind = K::kind(&());
    match outcome {
        Outcome::Ready(revision) => {
            ui.success(&format!("{kind} reconciliation completed"))?;
            if let Some(revision) = revision {
                ui.success(&format!("{}: {}", K::OUTCOME_VERB, escape(revision)))?;
            }
            Ok(Exit::Success)
        }
        Outcome::NotReady { reason, message } => {
            ui.failure(&format!(
                "{kind} reconciliation failed: {}: {}",
                escape(reason),
                escape(message)
            ))?;
            Ok(Exit::Failed)
        }
    }
}

/// The GitRepository the flags describe.
pub fn git_repository(
    namespace: &str,
    args: &CreateSourceGitArgs,
) -> anyhow::Result<GitRepository> {
    let url = args.url.trim();
    let scheme_ok = ["https://", "ssh://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
        || (url.starts_with("http://") && args.insecure);
    if !scheme_ok {
        let hint = if url.starts_with("http://") {
            "http:// sends content in clear text: use https://, or pass --insecure"
        } else {
            "the URL must start with https://, ssh:// or http:// (with --insecure)"
        };
        return Err(fail(
            Exit::Usage,
            format!("invalid --url '{}': {hint}", escape(url)),
        ));
    }
    let reference = GitRepositoryRef {
        branch: args.branch.clone(),
        tag: args.tag.clone(),
        semver: args.tag_semver.clone(),
        name: None,
        commit: args.commit.clone(),
    };
    let reference = if reference == GitRepositoryRef::default() {
        None
    } else {
        Some(reference)
    };
    let ignore = if args.ignore_paths.is_empty() {
        None
    } else {
        Some(args.ignore_paths.join("\n"))
    };
    let mut repo = GitRepository::new(
        &args.name,
        GitRepositorySpec {
            url: url.to_owned(),
            reference,
            interval: args.interval.clone(),
            timeout: args.fetch_timeout.clone(),
            secret_ref: args
                .secret_ref
                .clone()
                .map(|name| LocalObjectReference { name }),
            ignore,
            insecure: args.insecure.then_some(true),
            suspend: None,
            limits: None,
        },
    );
    repo.metadata.namespace = Some(namespace.to_owned());
    Ok(repo)
}

/// The Kustomization the flags describe, plus the ConfigMaps holding `--policy-module` files.
pub fn kustomization(
    namespace: &str,
    args: &CreateKustomizationArgs,
) -> anyhow::Result<(Kustomization, Vec<ConfigMap>)> {
    let source_ref = parse_source(&args.source)?;
    let depends_on = args
        .depends_on
        .iter()
        .map(|d| {
            let (ns, name) = match d.split_once('/') {
                Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
                None => (None, d.clone()),
            };
            if name.is_empty() {
                return Err(fail(
                    Exit::Usage,
                    format!("invalid --depends-on '{d}': expected [namespace/]name"),
                ));
            }
            Ok(NamespacedObjectReference {
                name,
                namespace: ns,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let health_checks = args
        .health_check
        .iter()
        .map(|h| parse_health_check(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut policies = Vec::new();
    for policy in &args.policy {
        policies.push(parse_builtin_policy(policy)?);
    }
    let mut config_maps = Vec::new();
    for module in &args.policy_module {
        let (policy, cm) = policy_module(namespace, &args.name, module)?;
        policies.push(policy);
        config_maps.push(cm);
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &policies {
        if !seen.insert(p.name.clone()) {
            return Err(fail(
                Exit::Usage,
                format!(
                    "two policies are named '{}': policy names must be unique",
                    p.name
                ),
            ));
        }
    }
    let path = args.path.trim();
    if path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --path '{}': it must be relative to the source root and must not contain '..'",
                escape(path)
            ),
        ));
    }
    let mut ks = Kustomization::new(
        &args.name,
        KustomizationSpec {
            source_ref,
            path: Some(path.to_owned()),
            interval: args.interval.clone(),
            retry_interval: None,
            timeout: args.apply_timeout.clone(),
            prune: args.prune,
            wait: args.wait.then_some(true),
            health_checks,
            depends_on,
            target_namespace: args.target_namespace.clone(),
            name_prefix: None,
            name_suffix: None,
            patches: Vec::new(),
            images: Vec::new(),
            components: Vec::new(),
            common_metadata: None,
            post_build: None,
            policies,
            service_account_name: args.service_account.clone(),
            force: None,
            suspend: None,
            deletion_policy: None,
            allow_empty: None,
            ignore: Vec::new(),
            decryption: args.decryption_provider.map(|p| Decryption {
                provider: match p {
                    DecryptionProviderArg::Sops => DecryptionProvider::Sops,
                },
                secret_ref: args
                    .decryption_secret
                    .clone()
                    .map(|name| LocalObjectReference { name }),
            }),
        },
    );
    ks.metadata.namespace = Some(namespace.to_owned());
    Ok((ks, config_maps))
}

/// `[KIND/][namespace/]name`, or Flux's `[KIND/]name.namespace`; KIND is a source kind
/// (default GitRepository).
fn parse_source(text: &str) -> anyhow::Result<SourceReference> {
    let invalid = || {
        fail(
            Exit::Usage,
            format!(
                "invalid --source '{}': expected [KIND/][namespace/]name",
                escape(text)
            ),
        )
    };
    let exact_kind = |word: &str| {
        SourceKind::ALL
            .into_iter()
            .find(|k| word.eq_ignore_ascii_case(k.name()))
    };
    let parts: Vec<&str> = text.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [name] => (None, None, *name),
        // A namespace may be spelled like a kind's plural or short name: only the kind's name
        // itself makes the first of two parts a kind.
        [first, name] if exact_kind(first).is_some() => (Some(*first), None, *name),
        [ns, name] => (None, Some(*ns), *name),
        [kind, ns, name] => (Some(*kind), Some(*ns), *name),
        _ => return Err(invalid()),
    };
    let kind = match kind {
        None => SourceKind::GitRepository,
        Some(word) => SourceKind::parse(word).ok_or_else(|| {
            let known: Vec<&str> = SourceKind::ALL.iter().map(|k| k.name()).collect();
            fail(
                Exit::Usage,
                format!(
                    "invalid --source '{}': unknown source kind '{}'; expected one of {}",
                    escape(text),
                    escape(word),
                    known.join(", ")
                ),
            )
        })?,
    };
    // Flux's form: the namespace after the first dot. A name with more dots is ambiguous (Flux
    // would silently drop the rest): spell it NAMESPACE/NAME instead.
    let (name, namespace) = match (namespace, name.split_once('.')) {
        (None, Some((_, ns))) if ns.contains('.') => {
            return Err(fail(
                Exit::Usage,
                format!(
                    "invalid --source '{}': more than one '.'; use [KIND/]NAMESPACE/NAME for names with dots",
                    escape(text)
                ),
            ));
        }
        (None, Some((name, ns))) => (name, Some(ns)),
        (namespace, _) => (name, namespace),
    };
    if name.is_empty() || namespace.is_some_and(str::is_empty) {
        return Err(invalid());
    }
    Ok(SourceReference {
        api_version: None,
        kind,
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
    })
}

/// `Kind/name[.namespace]`, Flux's syntax; the API version is inferred for common kinds.
fn parse_health_check(text: &str) -> anyhow::Result<NamespacedObjectKindReference> {
    let Some((kind, rest)) = text.split_once('/') else {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --health-check '{}': expected Kind/name[.namespace]",
                escape(text)
            ),
        ));
    };
    let (name, namespace) = match rest.split_once('.') {
        Some((name, ns)) => (name, Some(ns.to_owned())),
        None => (rest, None),
    };
    let api_version = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => Some("apps/v1"),
        "Job" | "CronJob" => Some("batch/v1"),
        "Service" | "Pod" | "ConfigMap" | "PersistentVolumeClaim" => Some("v1"),
        "Kustomization" | "GitRepository" => Some("kubectl-gitops.io/v1alpha1"),
        _ => None,
    };
    if kind.is_empty() || name.is_empty() {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --health-check '{}': expected Kind/name[.namespace]",
                escape(text)
            ),
        ));
    }
    Ok(NamespacedObjectKindReference {
        api_version: api_version.map(str::to_owned),
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace,
    })
}

/// Reads a policy config: inline JSON (`{...}`) or a JSON file.
fn read_config(text: &str) -> anyhow::Result<serde_json::Value> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| {
            fail(
                Exit::Usage,
                format!("invalid inline policy config '{}': {e}", escape(trimmed)),
            )
        });
    }
    let bytes = std::fs::read(trimmed).map_err(|e| {
        fail(
            Exit::Usage,
            format!("cannot read policy config {trimmed}: {e}"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        fail(
            Exit::Usage,
            format!("policy config {trimmed} is not valid JSON: {e}"),
        )
    })
}

/// `builtin:NAME[:CONFIG]`.
fn parse_builtin_policy(text: &str) -> anyhow::Result<PolicyReference> {
    let Some(rest) = text.strip_prefix("builtin:") else {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --policy '{}': expected builtin:NAME[:CONFIG] (use --policy-module for a .wasm file)",
                escape(text)
            ),
        ));
    };
    let (name, config) = match rest.split_once(':') {
        Some((name, config)) => (name, Some(read_config(config)?)),
        None => (rest, None),
    };
    let builtins: Vec<&str> = gitops_reconciler::policy::BUILTINS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    if !builtins.contains(&name) {
        return Err(fail(
            Exit::Usage,
            format!(
                "unknown builtin policy '{}': expected one of {}",
                escape(name),
                builtins.join(", ")
            ),
        ));
    }
    Ok(PolicyReference {
        name: name.to_owned(),
        module: PolicyModule {
            builtin: Some(name.to_owned()),
            path: None,
            config_map_ref: None,
            url: None,
            sha256: None,
        },
        config,
        failure_policy: None,
        mode: None,
    })
}

/// `FILE.wasm[:CONFIG]`: the component goes into a ConfigMap `<ks>-policy-<stem>` (binaryData),
/// referenced with its sha256.
fn policy_module(
    namespace: &str,
    ks_name: &str,
    spec: &Path,
) -> anyhow::Result<(PolicyReference, ConfigMap)> {
    let text = spec.to_string_lossy();
    let (file, config) = match text.split_once(".wasm:") {
        Some((file, config)) => (format!("{file}.wasm"), Some(read_config(config)?)),
        None => (text.to_string(), None),
    };
    let bytes = std::fs::read(&file).map_err(|e| {
        fail(
            Exit::Usage,
            format!("cannot read policy module {file}: {e}"),
        )
    })?;
    if bytes.len() > 900 * 1024 {
        return Err(fail(
            Exit::Usage,
            format!(
                "policy module {file} is {} bytes: a ConfigMap holds at most ~1 MiB; publish it at an https URL instead",
                bytes.len()
            ),
        ));
    }
    let stem = Path::new(&file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let policy_name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned();
    if policy_name.is_empty() {
        return Err(fail(
            Exit::Usage,
            format!("cannot derive a policy name from {file}"),
        ));
    }
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let key = format!("{policy_name}.wasm");
    let cm_name = format!("{ks_name}-policy-{policy_name}");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(key.clone(), ByteString(bytes))])),
        ..ConfigMap::default()
    };
    let policy = PolicyReference {
        name: policy_name,
        module: PolicyModule {
            builtin: None,
            path: None,
            config_map_ref: Some(ConfigMapKeyReference {
                name: cm_name,
                namespace: None,
                key,
            }),
            url: None,
            sha256: Some(sha256),
        },
        config,
        failure_policy: None,
        mode: None,
    };
    Ok((policy, cm))
}

/// The Secret the flags describe, with Flux's key names.
/// The key of the age identity in a Secret made by `create secret age` (any key ending in
/// `.agekey` is read).
pub const AGE_IDENTITY_KEY: &str = "identity.agekey";

/// A Secret holding the age identity file `--age-key-file`, checked with the reconciler's own
/// reader (so a file it would refuse is refused here); errors never quote the file.
pub fn age_secret(namespace: &str, args: &CreateSecretAgeArgs) -> anyhow::Result<Secret> {
    let path = &args.age_key_file;
    let bytes = std::fs::read(path).map_err(|e| {
        fail(
            Exit::Usage,
            format!("cannot read --age-key-file {}: {e}", path.display()),
        )
    })?;
    if !bytes
        .windows(b"AGE-SECRET-KEY-1".len())
        .any(|w| w.eq_ignore_ascii_case(b"AGE-SECRET-KEY-1"))
    {
        return Err(crate::error::Failure::new(
            Exit::Usage,
            format!(
                "--age-key-file {} holds no AGE-SECRET-KEY-1 line: not an age identity file",
                path.display()
            ),
        )
        .hint("create one with: age-keygen -o age.agekey")
        .into());
    }
    gitops_reconciler::sops::decryptor::identities_from_secret(
        &format!("--age-key-file {}", path.display()),
        [(AGE_IDENTITY_KEY, bytes.as_slice())],
        true,
    )
    .map_err(|e| fail(Exit::Usage, e.to_string()))?;
    Ok(opaque_secret(
        namespace,
        &args.name,
        BTreeMap::from([(AGE_IDENTITY_KEY.to_owned(), ByteString(bytes))]),
    ))
}

pub fn git_secret(namespace: &str, args: &CreateSecretGitArgs) -> anyhow::Result<Secret> {
    let url = args.url.trim();
    let ssh = url.starts_with("ssh://");
    let https = url.starts_with("https://") || url.starts_with("http://");
    if !ssh && !https {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --url '{}': expected https:// or ssh://",
                escape(url)
            ),
        ));
    }
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        if ssh {
            return Err(fail(
                Exit::Usage,
                "-u/-p are for https URLs; ssh:// needs --private-key-file",
            ));
        }
        data.insert("username".into(), ByteString(user.clone().into_bytes()));
        data.insert("password".into(), ByteString(password.clone().into_bytes()));
    }
    if let Some(token) = &args.bearer_token {
        if ssh {
            return Err(fail(
                Exit::Usage,
                "--bearer-token is for https URLs; ssh:// needs --private-key-file",
            ));
        }
        data.insert("bearerToken".into(), ByteString(token.clone().into_bytes()));
    }
    if let Some(key_file) = &args.private_key_file {
        if !ssh {
            return Err(fail(Exit::Usage, "--private-key-file is for ssh:// URLs"));
        }
        let key = std::fs::read(key_file)
            .with_context(|| format!("reading private key {}", key_file.display()))
            .map_err(|e| fail(Exit::Usage, format!("{e:#}")))?;
        let Some(hosts_file) = &args.known_hosts_file else {
            return Err(crate::error::Failure::new(Exit::Usage, "an ssh secret needs --known-hosts-file: the reconciler verifies the server's host key")
                .hint("create one with: ssh-keyscan -p PORT HOST > known_hosts")
                .into());
        };
        let hosts = std::fs::read(hosts_file).map_err(|e| {
            fail(
                Exit::Usage,
                format!("cannot read known_hosts {}: {e}", hosts_file.display()),
            )
        })?;
        data.insert("identity".into(), ByteString(key));
        data.insert("known_hosts".into(), ByteString(hosts));
    }
    Ok(opaque_secret(namespace, &args.name, data))
}

/// An Opaque Secret holding `data`.
fn opaque_secret(namespace: &str, name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    /// Flux: `--source` is `[<kind>/]<name>.<namespace>`.
    #[test]
    fn source_accepts_fluxs_name_dot_namespace_form() {
        let parsed = |t: &str| {
            let s = parse_source(t).unwrap();
            (s.name, s.namespace)
        };
        assert_eq!(
            parsed("GitRepository/app.flux-system"),
            ("app".to_owned(), Some("flux-system".to_owned()))
        );
        let kind = |t: &str| parse_source(t).unwrap().kind;
        assert_eq!(
            kind("ExternalArtifact/team/app"),
            SourceKind::ExternalArtifact
        );
        assert_eq!(
            kind("externalartifact/app.team"),
            SourceKind::ExternalArtifact
        );
        assert_eq!(kind("gitrepo/team/app"), SourceKind::GitRepository);
        assert_eq!(kind("gitrepo/app"), SourceKind::GitRepository);
        assert_eq!(
            parse_source("gitrepo/app").unwrap().namespace.as_deref(),
            Some("gitrepo")
        );
        assert_eq!(
            parsed("app.team"),
            ("app".to_owned(), Some("team".to_owned()))
        );
        assert_eq!(
            parsed("team/app.v2"),
            ("app.v2".to_owned(), Some("team".to_owned()))
        );
        assert_eq!(parsed("app"), ("app".to_owned(), None));
        assert!(parse_source("a.b.c").is_err());
        assert!(parse_source("app.").is_err());
    }
    use clap::Parser as _;

    fn parse_ks(extra: &[&str]) -> anyhow::Result<(Kustomization, Vec<ConfigMap>)> {
        let mut args = vec!["kubectl-gitops", "create", "kustomization", "vote-dev"];
        if !extra.contains(&"--source") {
            args.extend_from_slice(&["--source", "instavote"]);
        }
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Create(CreateCommand::Kustomization(a)) => kustomization("gitops-system", &a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn kustomization_from_the_seed_story() {
        let (ks, cms) = parse_ks(&[
            "--path=./deploy/vote",
            "--interval=1m",
            "--target-namespace=instavote",
            "--prune",
            "--policy",
            r#"builtin:replica-bounds:{"max": 3}"#,
            "--depends-on",
            "infra/base",
            "--health-check",
            "Deployment/vote.instavote",
        ])
        .unwrap();
        assert!(cms.is_empty());
        let value = serde_json::to_value(&ks).unwrap();
        assert_eq!(
            value["spec"],
            serde_json::json!({
                "sourceRef": {"kind": "GitRepository", "name": "instavote"},
                "path": "./deploy/vote", "interval": "1m", "prune": true,
                "targetNamespace": "instavote",
                "dependsOn": [{"name": "base", "namespace": "infra"}],
                "healthChecks": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "vote", "namespace": "instavote"}],
                "policies": [{"name": "replica-bounds", "module": {"builtin": "replica-bounds"}, "config": {"max": 3}}],
            })
        );
        assert_eq!(value["metadata"]["namespace"], "gitops-system");
    }

    #[test]
    fn bad_kustomization_flags_are_usage_errors_naming_the_flag() {
        for (extra, expected) in [
            (
                &["--source", "HelmRepository/x/y"][..],
                "unknown source kind 'HelmRepository'; expected one of GitRepository, ExternalArtifact",
            ),
            (&["--path", "../../etc"], "invalid --path"),
            (
                &["--policy", "builtin:no-such"],
                "unknown builtin policy 'no-such'",
            ),
            (&["--policy", "replica-bounds"], "expected builtin:NAME"),
            (
                &["--policy", "builtin:replica-bounds:{nope"],
                "invalid inline policy config",
            ),
            (
                &[
                    "--policy",
                    "builtin:replica-bounds",
                    "--policy",
                    "builtin:replica-bounds",
                ],
                "must be unique",
            ),
            (
                &["--policy-module", "/no/such/file.wasm"],
                "cannot read policy module /no/such/file.wasm",
            ),
            (&["--health-check", "vote"], "invalid --health-check"),
        ] {
            let err = parse_ks(extra).unwrap_err();
            let report = crate::error::report(&err);
            assert_eq!(report.exit, Exit::Usage, "{extra:?}");
            assert!(report.line.contains(expected), "{extra:?}: {}", report.line);
        }
    }

    #[test]
    fn policy_modules_travel_in_a_config_map_with_their_digest() {
        let dir = std::env::temp_dir().join(format!("kgo-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("No_Latest.wasm");
        std::fs::write(&file, b"\0asm fake component").unwrap();
        let spec = format!("{}:{{\"x\":1}}", file.display());
        let (ks, cms) = parse_ks(&["--policy-module", &spec]).unwrap();
        let policy = &ks.spec.policies[0];
        assert_eq!(policy.name, "no-latest");
        assert_eq!(policy.config, Some(serde_json::json!({"x": 1})));
        assert_eq!(
            policy.module.sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(b"\0asm fake component")).as_str())
        );
        let cm_ref = policy.module.config_map_ref.as_ref().unwrap();
        assert_eq!(cm_ref.name, "vote-dev-policy-no-latest");
        assert_eq!(
            cms[0].binary_data.as_ref().unwrap()[&cm_ref.key].0,
            b"\0asm fake component"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `kubectl gitops create ARGS…` as clap parses it.
    fn create(args: &[&str]) -> CreateCommand {
        let mut full = vec!["kubectl-gitops", "create"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Create(command) => command,
            _ => unreachable!(),
        }
    }

    fn parse_repo(extra: &[&str]) -> anyhow::Result<GitRepository> {
        let mut args = vec!["source", "git", "instavote"];
        args.extend_from_slice(extra);
        match create(&args) {
            CreateCommand::Source(CreateSourceCommand::Git(a)) => {
                git_repository("gitops-system", &a)
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn git_repository_from_flags() {
        let repo = parse_repo(&[
            "--url",
            "https://git.example.com/instavote.git",
            "--branch",
            "main",
            "--interval",
            "30s",
            "--ignore-paths",
            "/docs,*.md",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(&repo.spec).unwrap(),
            serde_json::json!({"url": "https://git.example.com/instavote.git", "ref": {"branch": "main"}, "interval": "30s", "ignore": "/docs\n*.md"})
        );
        let err = parse_repo(&["--url", "http://127.0.0.1/r.git"]).unwrap_err();
        assert!(crate::error::report(&err).line.contains("--insecure"));
        let repo = parse_repo(&["--url", "http://127.0.0.1/r.git", "--insecure"]).unwrap();
        assert_eq!(repo.spec.insecure, Some(true));
        assert!(parse_repo(&["--url", "ext::sh -c evil"]).is_err());
    }

    fn parse_age(file: &Path) -> anyhow::Result<Secret> {
        let file = file.to_str().unwrap();
        match create(&["secret", "age", "sops-age", "--age-key-file", file]) {
            CreateCommand::Secret(CreateSecretCommand::Age(a)) => age_secret("team", &a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn age_secrets_hold_the_identity_file_and_refuse_anything_else() {
        use age::secrecy::ExposeSecret as _;
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let secret_text = key.to_string().expose_secret().to_owned();
        let file = dir.path().join("age.agekey");
        let text = format!("# public key: {}\n{secret_text}\n", key.to_public());
        std::fs::write(&file, &text).unwrap();
        let secret = parse_age(&file).unwrap();
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team"));
        let data = secret.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [AGE_IDENTITY_KEY]);
        assert_eq!(data[AGE_IDENTITY_KEY].0, text.as_bytes());

        // No AGE-SECRET-KEY line: refused, naming the file, with a hint.
        std::fs::write(&file, "# public key: age1abc\n").unwrap();
        let line = crate::error::report(&parse_age(&file).unwrap_err()).line;
        assert!(line.contains("no AGE-SECRET-KEY-1 line"), "{line}");
        // A damaged key (its last checksum character changed): refused without echoing it.
        let (kept, last) = secret_text.split_at(secret_text.len() - 1);
        let damaged = format!("{kept}{}\n", if last == "X" { "Y" } else { "X" });
        std::fs::write(&file, &damaged).unwrap();
        let line = crate::error::report(&parse_age(&file).unwrap_err()).line;
        assert!(line.contains("not an AGE-SECRET-KEY-1 identity"), "{line}");
        assert!(!line.contains(&secret_text[20..]), "{line}");
    }

    #[test]
    fn kustomization_decryption_flags_are_fluxs() {
        let (ks, _) = parse_ks(&[
            "--decryption-provider",
            "sops",
            "--decryption-secret",
            "sops-age",
        ])
        .unwrap();
        let decryption = ks.spec.decryption.unwrap();
        assert_eq!(decryption.provider, DecryptionProvider::Sops);
        assert_eq!(decryption.secret_ref.unwrap().name, "sops-age");
        let (ks, _) = parse_ks(&["--decryption-provider", "sops"]).unwrap();
        assert!(ks.spec.decryption.unwrap().secret_ref.is_none());
        assert!(parse_ks(&[]).unwrap().0.spec.decryption.is_none());
    }

    #[test]
    fn secrets_match_the_url_scheme() {
        let parse = |extra: &[&str]| -> anyhow::Result<Secret> {
            let mut args = vec!["kubectl-gitops", "create", "secret", "git", "creds"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Create(CreateCommand::Secret(CreateSecretCommand::Git(a))) => {
                    git_secret("ns", &a)
                }
                _ => unreachable!(),
            }
        };
        let secret = parse(&["--url", "https://h/r.git", "-u", "me", "-p", "pw"]).unwrap();
        let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
        assert_eq!(keys, ["password", "username"]);
        let secret = parse(&["--url", "https://h/r.git", "--bearer-token", "t"]).unwrap();
        assert!(secret.data.unwrap().contains_key("bearerToken"));
        assert!(parse(&["--url", "ssh://git@h/r.git", "-u", "me", "-p", "pw"]).is_err());
        let err = parse(&[
            "--url",
            "ssh://git@h/r.git",
            "--private-key-file",
            "/etc/hostname",
        ])
        .unwrap_err();
        assert!(
            crate::error::report(&err)
                .line
                .contains("--known-hosts-file")
        );
    }
}
