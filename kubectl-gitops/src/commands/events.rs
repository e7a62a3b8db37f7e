//! `kubectl gitops events [--for Kind/name] [-A] [-w]`: the Kubernetes events the reconciler
//! records on GitRepositories and Kustomizations (or on any object named with --for), oldest
//! first, with control characters in messages escaped.

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};

use crate::cli::{EventsArgs, GlobalArgs};
use crate::cluster;
use crate::error::{Exit, fail};
use crate::ui::{Ui, render_table};

const HEADER: [&str; 5] = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];

pub async fn run(global: &GlobalArgs, args: &EventsArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let mut fields = Vec::new();
    if let Some(target) = &args.for_object {
        let Some((kind, name)) = target.split_once('/') else {
            return Err(fail(
                Exit::Usage,
                format!("invalid --for '{target}': expected Kind/name"),
            ));
        };
        fields.push(format!("involvedObject.kind={}", canonical_kind(kind)));
        fields.push(format!("involvedObject.name={name}"));
    }
    let client = cluster::connect(global).await?;
    let api: Api<Event> = if args.all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &global.namespace)
    };
    let mut params = ListParams::default();
    if !fields.is_empty() {
        params = params.fields(&fields.join(","));
    }
    let mut events: Vec<Event> = api
        .list(&params)
        .await
        .context("listing events")?
        .items
        .into_iter()
        .filter(|e| args.for_object.is_some() || is_ours(e))
        .collect();
    events.sort_by_key(last_seen);
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| row(e, now, args.all_namespaces))
        .collect();
    let header = header(args.all_namespaces);
    if rows.is_empty() && !args.watch {
        ui.warning("no events found")?;
    } else {
        write!(ui.out, "{}", render_table(&header, &rows, args.no_header))?;
    }
    ui.out.flush()?;
    if !args.watch {
        return Ok(Exit::Success);
    }
    let mut config = watcher::Config::default();
    if !fields.is_empty() {
        config = config.fields(&fields.join(","));
    }
    let seen: std::collections::HashSet<String> = events
        .iter()
        .filter_map(|e| e.metadata.uid.clone())
        .collect();
    let mut stream = watcher(api, config).boxed();
    let deadline = tokio::time::sleep(global.timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(Exit::Success),
            event = stream.next() => {
                let Some(event) = event else { return Ok(Exit::Success) };
                if let watcher::Event::Apply(e) | watcher::Event::InitApply(e) = event.context("watching events")?
                    && (args.for_object.is_some() || is_ours(&e))
                    && e.metadata.uid.as_ref().is_none_or(|uid| !seen.contains(uid))
                {
                    let line = row(&e, jiff::Timestamp::now(), args.all_namespaces);
                    write!(ui.out, "{}", render_table(&header, &[line], true))?;
                    ui.out.flush()?;
                }
            }
        }
    }
}

fn header(all: bool) -> Vec<&'static str> {
    let mut h = Vec::new();
    if all {
        h.push("NAMESPACE");
    }
    h.extend(HEADER);
    h
}

fn canonical_kind(kind: &str) -> String {
    if let Some(source) = gitops_reconciler::api::SourceKind::parse(kind) {
        return source.name().to_owned();
    }
    match kind.to_ascii_lowercase().as_str() {
        "ks" | "kustomization" | "kustomizations" => "Kustomization".into(),
        _ => kind.to_owned(),
    }
}

fn is_ours(event: &Event) -> bool {
    event
        .involved_object
        .api_version
        .as_deref()
        .is_some_and(|v| v.starts_with(gitops_reconciler::api::GROUP))
}

fn last_seen(event: &Event) -> Option<jiff::Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// `5s`, `3m`, `2h`, `4d`: kubectl's short ages.
pub fn age(since: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let secs = now.as_second().saturating_sub(since.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn row(event: &Event, now: jiff::Timestamp, all: bool) -> Vec<String> {
    let mut cells = Vec::new();
    if all {
        cells.push(event.namespace().unwrap_or_default());
    }
    let object = &event.involved_object;
    cells.push(
        last_seen(event)
            .map(|t| age(t, now))
            .unwrap_or_else(|| "<unknown>".into()),
    );
    cells.push(event.type_.clone().unwrap_or_default());
    cells.push(event.reason.clone().unwrap_or_default());
    cells.push(format!(
        "{}/{}",
        object.kind.clone().unwrap_or_default(),
        object.name.clone().unwrap_or_default()
    ));
    cells.push(
        event
            .message
            .clone()
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    );
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        let now: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        assert_eq!(age(at("2026-01-01T23:59:30Z"), now), "30s");
        assert_eq!(age(at("2026-01-01T23:50:00Z"), now), "10m");
        assert_eq!(age(at("2026-01-01T20:00:00Z"), now), "4h");
        assert_eq!(age(at("2025-12-28T00:00:00Z"), now), "5d");
        assert_eq!(canonical_kind("ks"), "Kustomization");
        assert_eq!(canonical_kind("gitrepo"), "GitRepository");
        assert_eq!(canonical_kind("externalartifacts"), "ExternalArtifact");
        assert_eq!(canonical_kind("Deployment"), "Deployment");
    }
}
