//! `kubectl gitops logs [-f] [--level L] [--kind K] [--name N]`: the logs of the reconciler
//! pods (every shard's), filtered. The reconciler logs JSON lines (`--log-format json`); a line
//! that is not JSON is shown unless a filter needs a field it lacks.

use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt as _};

use crate::cli::{GlobalArgs, LogLevel, LogsArgs};
use crate::cluster;
use crate::error::{Exit, Failure};
use crate::ui::{Ui, escape};

/// Label selecting the reconciler's pods (install manifests), the shards' included.
pub const RECONCILER_SELECTOR: &str = "app.kubernetes.io/part-of=kubectl-gitops";

pub async fn run(global: &GlobalArgs, args: &LogsArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let client = cluster::connect(global).await?;
    let pods: Api<Pod> = Api::namespaced(client, &global.namespace);
    let list = pods
        .list(&ListParams::default().labels(RECONCILER_SELECTOR))
        .await?;
    if list.items.is_empty() {
        return Err(Failure::new(Exit::NotFound, format!("no reconciler pods ({RECONCILER_SELECTOR}) in namespace {}", global.namespace))
            .hint("is the reconciler installed? run kubectl gitops check (a reconciler running outside the cluster logs to its own terminal)")
            .into());
    }
    let mut streams = Vec::new();
    for pod in &list.items {
        let params = LogParams {
            follow: args.follow,
            tail_lines: Some(args.tail),
            ..LogParams::default()
        };
        let reader = pods.log_stream(&pod.name_any(), &params).await?;
        streams.push(reader.lines().boxed());
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(line) = merged.next().await {
        let line = line?;
        if keep(&line, args) {
            writeln!(ui.out, "{}", escape(&line))?;
            ui.out.flush()?;
        }
    }
    Ok(Exit::Success)
}

/// Whether a log line passes the filters.
pub fn keep(line: &str, args: &LogsArgs) -> bool {
    let parsed: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let field = |keys: &[&str]| -> Option<String> {
        let v = parsed.as_ref()?;
        keys.iter().find_map(|k| {
            v.get(*k)
                .or_else(|| v.get("fields").and_then(|f| f.get(*k)))
                .or_else(|| v.get("span").and_then(|f| f.get(*k)))
                .and_then(|x| x.as_str().map(str::to_owned))
        })
    };
    if let Some(min) = args.level {
        let Some(level) = field(&["level"]) else {
            return false;
        };
        let level = match level.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            _ => LogLevel::Error,
        };
        if level < min {
            return false;
        }
    }
    if let Some(kind) = &args.kind
        && !field(&["kind"]).is_some_and(|k| k.eq_ignore_ascii_case(kind))
        && !line.contains(kind.as_str())
    {
        return false;
    }
    if let Some(name) = &args.name
        && field(&["name"]).is_none_or(|n| &n != name)
        && !line.contains(name.as_str())
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_level_kind_and_name() {
        let args = |level, kind: Option<&str>, name: Option<&str>| LogsArgs {
            follow: false,
            level,
            kind: kind.map(Into::into),
            name: name.map(Into::into),
            tail: 10,
        };
        let info = r#"{"level":"INFO","fields":{"message":"applied"},"span":{"kind":"Kustomization","name":"vote-dev"}}"#;
        let error = r#"{"level":"ERROR","fields":{"message":"fetch failed"},"span":{"kind":"GitRepository","name":"instavote"}}"#;
        assert!(keep(info, &args(None, None, None)));
        assert!(!keep(info, &args(Some(LogLevel::Warn), None, None)));
        assert!(keep(error, &args(Some(LogLevel::Warn), None, None)));
        assert!(keep(
            info,
            &args(None, Some("kustomization"), Some("vote-dev"))
        ));
        assert!(!keep(error, &args(None, Some("Kustomization"), None)));
        assert!(!keep("plain text", &args(Some(LogLevel::Info), None, None)));
        assert!(keep("plain text", &args(None, None, None)));
    }
}
