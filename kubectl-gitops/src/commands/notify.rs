//! `create receiver | alert | alert-provider`: the notification objects from flags (the flag
//! names of `flux create receiver/alert/alert-provider`), printed with `--export` or applied.
//! A Receiver is applied and waited for like a source (its outcome line is the webhook path);
//! Alerts and Providers have no status, so applying them is the outcome.

use gitops_reconciler::api::alert::{
    AlertSpec, EventSeverity, EventSource, EventSourceKind, ProviderSpec, ProviderType,
};
use gitops_reconciler::api::common::LocalObjectReference;
use gitops_reconciler::api::receiver::{
    ReceiverResource, ReceiverResourceKind, ReceiverSpec, ReceiverType,
};
use gitops_reconciler::api::{Alert, Provider, Receiver};
use kube::Api;

use crate::cli::{CreateAlertArgs, CreateAlertProviderArgs, CreateReceiverArgs, GlobalArgs};
use crate::cluster;
use crate::error::{Exit, fail};
use crate::ui::{Ui, escape};

/// `Kind/name[.namespace]` (Flux's syntax); the kind is parsed by `kind`.
fn parse_reference<K>(
    flag: &str,
    text: &str,
    kind: impl Fn(&str) -> Option<K>,
    kinds: &str,
) -> anyhow::Result<(K, String, Option<String>)> {
    let usage = |why: &str| {
        fail(
            Exit::Usage,
            format!(
                "invalid {flag} '{}': {why} (expected Kind/name[.namespace], Kind one of {kinds})",
                escape(text)
            ),
        )
    };
    let (kind_text, rest) = text.split_once('/').ok_or_else(|| usage("no '/'"))?;
    let kind = kind(kind_text).ok_or_else(|| usage("unknown kind"))?;
    let (name, namespace) = match rest.split_once('.') {
        Some((name, ns)) if !ns.is_empty() => (name, Some(ns.to_owned())),
        Some(_) => return Err(usage("empty namespace")),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(usage("empty name"));
    }
    Ok((kind, name.to_owned(), namespace))
}

fn metadata(namespace: &str, name: &str) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    }
}

/// One of `names`, by its command-line name.
fn choose<T: Copy>(
    flag: &str,
    text: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> anyhow::Result<T> {
    all.iter()
        .copied()
        .find(|t| name(*t) == text)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
            fail(
                Exit::Usage,
                format!(
                    "invalid {flag} '{}': expected one of {}",
                    escape(text),
                    names.join(", ")
                ),
            )
        })
}

/// The Receiver the flags describe.
pub fn receiver(namespace: &str, args: &CreateReceiverArgs) -> anyhow::Result<Receiver> {
    let type_ = choose(
        "--type",
        &args.type_,
        &ReceiverType::ALL,
        ReceiverType::as_str,
    )?;
    let resources = args
        .resources
        .iter()
        .map(|text| {
            let (kind, name, namespace) = parse_reference(
                "--resource",
                text,
                |k| match k {
                    "GitRepository" => Some(ReceiverResourceKind::GitRepository),
                    "Kustomization" => Some(ReceiverResourceKind::Kustomization),
                    _ => None,
                },
                "GitRepository, Kustomization",
            )?;
            if name == "*" {
                return Err(fail(
                    Exit::Usage,
                    format!("invalid --resource '{}': '*' needs matchLabels, which only a manifest can set", escape(text)),
                ));
            }
            Ok(ReceiverResource {
                api_version: None,
                kind,
                name,
                namespace,
                match_labels: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Receiver {
        metadata: metadata(namespace, &args.name),
        spec: ReceiverSpec {
            type_,
            interval: None,
            events: args.events.clone(),
            resources,
            secret_ref: LocalObjectReference {
                name: args.secret_ref.clone(),
            },
            suspend: None,
        },
        status: None,
    })
}

/// The Alert the flags describe.
pub fn alert(namespace: &str, args: &CreateAlertArgs) -> anyhow::Result<Alert> {
    let event_severity = match args.event_severity.as_str() {
        "info" => EventSeverity::Info,
        "error" => EventSeverity::Error,
        other => {
            return Err(fail(
                Exit::Usage,
                format!(
                    "invalid --event-severity '{}': expected info or error",
                    escape(other)
                ),
            ));
        }
    };
    let event_sources = args
        .event_sources
        .iter()
        .map(|text| {
            let (kind, name, namespace) = parse_reference(
                "--event-source",
                text,
                |k| match k {
                    "GitRepository" => Some(EventSourceKind::GitRepository),
                    "Kustomization" => Some(EventSourceKind::Kustomization),
                    "Receiver" => Some(EventSourceKind::Receiver),
                    _ => None,
                },
                "GitRepository, Kustomization, Receiver",
            )?;
            Ok(EventSource {
                kind,
                name,
                namespace,
                match_labels: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut alert = Alert::new(
        &args.name,
        AlertSpec {
            provider_ref: LocalObjectReference {
                name: args.provider_ref.clone(),
            },
            event_severity,
            event_sources,
            inclusion_list: Vec::new(),
            exclusion_list: Vec::new(),
            event_metadata: None,
            summary: None,
            suspend: None,
        },
    );
    alert.metadata.namespace = Some(namespace.to_owned());
    Ok(alert)
}

/// The Provider the flags describe.
pub fn provider(namespace: &str, args: &CreateAlertProviderArgs) -> anyhow::Result<Provider> {
    let type_ = choose(
        "--type",
        &args.type_,
        &ProviderType::ALL,
        ProviderType::as_str,
    )?;
    if args.address.is_none() && args.secret_ref.is_none() {
        return Err(fail(
            Exit::Usage,
            "set --address, or --secret-ref to a Secret with an 'address' key",
        ));
    }
    if let Some(address) = &args.address
        && !(address.starts_with("https://") || address.starts_with("http://"))
    {
        return Err(fail(
            Exit::Usage,
            format!(
                "invalid --address '{}': expected an http:// or https:// URL",
                escape(address)
            ),
        ));
    }
    let mut provider = Provider::new(
        &args.name,
        ProviderSpec {
            type_,
            address: args.address.clone(),
            channel: args.channel.clone(),
            username: args.username.clone(),
            timeout: None,
            secret_ref: args
                .secret_ref
                .clone()
                .map(|name| LocalObjectReference { name }),
            cert_secret_ref: None,
            proxy: None,
            proxy_secret_ref: None,
            suspend: None,
        },
    );
    provider.metadata.namespace = Some(namespace.to_owned());
    Ok(provider)
}

/// Runs `create receiver`.
pub async fn create_receiver(
    global: &GlobalArgs,
    args: &CreateReceiverArgs,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let object = receiver(&global.namespace, args)?;
    if args.export {
        super::create::export(ui, &[serde_json::to_value(&object)?])?;
        return Ok(Exit::Success);
    }
    let client = cluster::connect(global).await?;
    super::create::apply_and_wait(
        global,
        Api::namespaced(client, &global.namespace),
        &object,
        ui,
    )
    .await
}

/// Runs `create alert` or `create alert-provider` (objects without status).
pub async fn create_static<K>(
    global: &GlobalArgs,
    object: K,
    export: bool,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if export {
        super::create::export(ui, &[serde_json::to_value(&object)?])?;
        return Ok(Exit::Success);
    }
    let client = cluster::connect(global).await?;
    let kind = K::kind(&());
    let name = object.meta().name.clone().unwrap_or_default();
    ui.step(&format!("applying {kind} {}/{name}", global.namespace))?;
    cluster::apply(&Api::<K>::namespaced(client, &global.namespace), &object).await?;
    ui.success(&format!("{kind} {name} applied"))?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command, CreateCommand};
    use crate::ui::Ui;

    /// Runs the CLI in process; returns (exit code, stdout, stderr).
    fn run(args: &[&str]) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = {
            let mut ui = Ui::plain(&mut out, &mut err);
            crate::run(args, &mut ui)
        };
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn golden_create_receiver_export() {
        let (code, out, err) = run(&[
            "kubectl-gitops",
            "create",
            "receiver",
            "github",
            "-n",
            "apps",
            "--type",
            "github",
            "--event",
            "ping",
            "--event",
            "push",
            "--resource",
            "GitRepository/webapp",
            "--resource",
            "Kustomization/webapp.prod",
            "--secret-ref",
            "webhook-token",
            "--export",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, include_str!("../../tests/golden/create-receiver.yaml"));
    }

    #[test]
    fn golden_create_alert_export() {
        let (code, out, err) = run(&[
            "kubectl-gitops",
            "create",
            "alert",
            "on-call",
            "--event-severity",
            "error",
            "--event-source",
            "Kustomization/*,GitRepository/app",
            "--provider-ref",
            "slack",
            "--export",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, include_str!("../../tests/golden/create-alert.yaml"));
    }

    #[test]
    fn golden_create_alert_provider_export() {
        let (code, out, err) = run(&[
            "kubectl-gitops",
            "create",
            "alert-provider",
            "slack",
            "--type",
            "slack",
            "--channel",
            "#ops",
            "--username",
            "gitops",
            "--secret-ref",
            "slack-url",
            "--export",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            include_str!("../../tests/golden/create-alert-provider.yaml")
        );
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (
                vec![
                    "create",
                    "receiver",
                    "r",
                    "--type",
                    "svn",
                    "--resource",
                    "GitRepository/a",
                    "--secret-ref",
                    "s",
                ],
                "--type",
            ),
            (
                vec![
                    "create",
                    "receiver",
                    "r",
                    "--type",
                    "github",
                    "--resource",
                    "Deployment/a",
                    "--secret-ref",
                    "s",
                ],
                "--resource",
            ),
            (
                vec![
                    "create",
                    "receiver",
                    "r",
                    "--type",
                    "github",
                    "--resource",
                    "GitRepository/*",
                    "--secret-ref",
                    "s",
                ],
                "--resource",
            ),
            (
                vec![
                    "create",
                    "alert",
                    "a",
                    "--event-source",
                    "Kustomization",
                    "--provider-ref",
                    "p",
                ],
                "--event-source",
            ),
            (
                vec![
                    "create",
                    "alert",
                    "a",
                    "--event-source",
                    "Kustomization/*",
                    "--provider-ref",
                    "p",
                    "--event-severity",
                    "warn",
                ],
                "--event-severity",
            ),
            (
                vec![
                    "create",
                    "alert-provider",
                    "p",
                    "--type",
                    "pager",
                    "--address",
                    "https://x",
                ],
                "--type",
            ),
            (
                vec![
                    "create",
                    "alert-provider",
                    "p",
                    "--type",
                    "slack",
                    "--address",
                    "ftp://x",
                ],
                "--address",
            ),
        ] {
            let mut full = vec!["kubectl-gitops"];
            full.extend(args.iter().copied());
            full.push("--export");
            let (code, out, err) = run(&full);
            assert_eq!(code, 2, "{full:?}: {err}");
            assert!(out.is_empty());
            assert!(err.contains(flag), "{full:?}: {err}");
        }
        let (code, _, err) = run(&[
            "kubectl-gitops",
            "create",
            "alert-provider",
            "p",
            "--type",
            "slack",
            "--export",
        ]);
        assert_eq!(code, 2, "{err}");
    }

    #[test]
    fn flags_parse_into_the_commands() {
        let cli = Cli::try_parse_from([
            "kubectl-gitops",
            "create",
            "alert-provider",
            "x",
            "--type",
            "generic",
            "--address",
            "http://a",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Create(CreateCommand::AlertProvider(_))
        ));
    }
}
