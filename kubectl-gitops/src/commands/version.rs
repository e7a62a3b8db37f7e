//! `kubectl gitops version`: the client's version, and when a cluster answers, the Kubernetes
//! version and the reconciler image running there.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;

use crate::cli::{GlobalArgs, OutputFormat, VersionArgs};
use crate::error::Exit;
use crate::ui::{Ui, escape};

/// Name of the reconciler's Deployment (install manifests).
pub const RECONCILER_DEPLOYMENT: &str = "gitops-reconciler";

/// The client version string.
pub fn client_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// `version --client`: no runtime, no cluster.
pub fn run_client(args: &VersionArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    print(args.output, &json!({"client": client_version()}), ui)?;
    Ok(Exit::Success)
}

/// `version`: the client, then the server parts that answer within a few seconds. An
/// unreachable cluster is a warning, not a failure: the client version was still printed.
pub async fn run(global: &GlobalArgs, args: &VersionArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let mut info = serde_json::Map::new();
    info.insert("client".into(), json!(client_version()));
    let limit = global.timeout.min(Duration::from_secs(5));
    let server = tokio::time::timeout(limit, server_info(global)).await;
    match server {
        Ok(Ok((kubernetes, reconciler))) => {
            info.insert("kubernetes".into(), json!(kubernetes));
            if let Some(image) = reconciler {
                info.insert("reconciler".into(), json!(image));
            }
        }
        Ok(Err(e)) => {
            let report = crate::error::report(&e);
            ui.warning(&format!("server version unavailable: {}", report.line))?;
        }
        Err(_) => ui.warning("server version unavailable: the cluster did not answer in time")?,
    }
    print(args.output, &serde_json::Value::Object(info), ui)?;
    Ok(Exit::Success)
}

async fn server_info(global: &GlobalArgs) -> anyhow::Result<(String, Option<String>)> {
    let client = crate::cluster::connect(global).await?;
    let version = client.apiserver_version().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, &global.namespace);
    let image = deployments
        .get_opt(RECONCILER_DEPLOYMENT)
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone());
    Ok((version.git_version, image))
}

fn print(format: OutputFormat, info: &serde_json::Value, ui: &mut Ui<'_>) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            if let Some(map) = info.as_object() {
                for (key, value) in map {
                    let value = value.as_str().unwrap_or_default();
                    let label = match key.as_str() {
                        "client" => "kubectl-gitops",
                        other => other,
                    };
                    writeln!(ui.out, "{label}: {}", escape(value))?;
                }
            }
        }
        OutputFormat::Json => writeln!(ui.out, "{}", serde_json::to_string_pretty(info)?)?,
        OutputFormat::Yaml => write!(ui.out, "{}", gitops_reconciler::yaml::to_string(info)?)?,
    }
    Ok(())
}
