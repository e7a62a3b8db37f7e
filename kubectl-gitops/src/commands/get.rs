//! `kubectl gitops get sources git | external-artifact | all`, `get kustomizations`, `get all`,
//! `get receivers | alerts | alert-providers`: status tables (NAME REVISION SUSPENDED READY
//! MESSAGE, with NAMESPACE for -A, SOURCE for --show-source, REASON and SHARD for -o wide; no
//! REVISION for the notification kinds, which have none, as in `flux get`), YAML/JSON, label
//! and status selectors, and `-w` to keep printing changes.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use gitops_reconciler::api::{Alert, Kustomization, Provider, Receiver, SourceKind};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::cli::{GetCommand, GetSourcesCommand, GlobalArgs, ListArgs, ListOutput};
use crate::error::{Exit, fail};
use crate::objects::{self, StatusRow};
use crate::ui::{Ui, escape, render_table};

pub async fn run(
    global: &GlobalArgs,
    command: GetCommand,
    ui: &mut Ui<'_>,
) -> anyhow::Result<Exit> {
    let sources = SourceKind::ALL.into_iter().map(Kind::Source);
    let (args, kinds): (ListArgs, Vec<Kind>) = match command {
        GetCommand::Sources(GetSourcesCommand::Git(args)) => {
            (args, vec![Kind::Source(SourceKind::GitRepository)])
        }
        GetCommand::Sources(GetSourcesCommand::ExternalArtifact(args)) => {
            (args, vec![Kind::Source(SourceKind::ExternalArtifact)])
        }
        GetCommand::Sources(GetSourcesCommand::All(args)) => (args, sources.collect()),
        GetCommand::Kustomizations(args) => (args, vec![Kind::Kustomization]),
        GetCommand::All(args) => (args, sources.chain([Kind::Kustomization]).collect()),
        GetCommand::Receivers(args) => (args, vec![Kind::Receiver]),
        GetCommand::Alerts(args) => (args, vec![Kind::Alert]),
        GetCommand::AlertProviders(args) => (args, vec![Kind::Provider]),
    };
    let kinds = &kinds[..];
    let selector = match &args.status_selector {
        Some(text) => Some(StatusSelector::parse(text)?),
        None => None,
    };
    if args.watch && !matches!(args.output, ListOutput::Table | ListOutput::Wide) {
        return Err(fail(
            Exit::Usage,
            "--watch prints tables only: drop -o or use -o wide",
        ));
    }
    let client = crate::cluster::connect(global).await?;
    let options = Listing {
        args: &args,
        selector: selector.as_ref(),
        prefix_kind: kinds.len() > 1,
        revision: kinds.iter().any(|kind| kind.has_revision()),
    };
    let mut items = Vec::new();
    let mut sections = Vec::new();
    let mut listed = Vec::new();
    for kind in kinds {
        // A listing of several kinds skips one whose CRD an older install lacks.
        let Some((rows, raw)) = list(&client, global, &args, *kind, kinds.len() > 1).await? else {
            ui.warning(&format!(
                "the cluster does not know the kind {}: skipped (kubectl gitops check)",
                kind.api_resource().kind
            ))?;
            continue;
        };
        listed.push(*kind);
        let (rows, raw): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .zip(raw)
            .filter(|(row, _)| selector.as_ref().is_none_or(|s| s.matches(row)))
            .unzip();
        items.extend(raw);
        sections.push((*kind, rows));
    }
    match args.output {
        ListOutput::Table | ListOutput::Wide => {
            let mut printed_any = false;
            for (i, (kind, rows)) in sections.iter().enumerate() {
                if rows.is_empty() && kinds.len() > 1 {
                    continue;
                }
                if i > 0 && printed_any {
                    writeln!(ui.out)?;
                }
                write!(ui.out, "{}", table(&options, rows))?;
                printed_any |= !rows.is_empty();
                if rows.is_empty() && !args.watch {
                    let scope = if args.all_namespaces {
                        "any namespace".to_owned()
                    } else {
                        format!("namespace {}", global.namespace)
                    };
                    ui.warning(&format!("no {} found in {scope}", kind.plural()))?;
                }
            }
        }
        ListOutput::Name => {
            for (kind, rows) in &sections {
                for row in rows {
                    writeln!(ui.out, "{}", escape(&kind.qualified_name(&row.name)))?;
                }
            }
        }
        ListOutput::Json => {
            let list = list_object(items);
            writeln!(ui.out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        ListOutput::Yaml => {
            let list = list_object(items);
            write!(ui.out, "{}", gitops_reconciler::yaml::to_string(&list)?)?;
        }
    }
    ui.out.flush()?;
    if args.watch {
        watch(&client, global, &options, &listed, ui).await?;
    }
    Ok(Exit::Success)
}

/// What a listing lists: a source kind (any arm of the source table) or Kustomizations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Source(SourceKind),
    Kustomization,
    Receiver,
    Alert,
    Provider,
}

impl Kind {
    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Source(kind) => kind.api_resource(),
            Kind::Kustomization => ApiResource::erase::<Kustomization>(&()),
            Kind::Receiver => ApiResource::erase::<Receiver>(&()),
            Kind::Alert => ApiResource::erase::<Alert>(&()),
            Kind::Provider => ApiResource::erase::<Provider>(&()),
        }
    }

    /// Whether objects of this kind have a revision: sources and Kustomizations do; Receivers,
    /// Alerts and Providers do not, and their tables have no REVISION column.
    fn has_revision(self) -> bool {
        matches!(self, Kind::Source(_) | Kind::Kustomization)
    }

    /// `GitRepositories`, `ExternalArtifacts`, `Kustomizations`: for messages.
    fn plural(self) -> String {
        let kind = self.api_resource().kind;
        match kind.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None => format!("{kind}s"),
        }
    }

    /// `kind.group/name`, as `kubectl get -o name` prints it: unambiguous next to Flux's
    /// `kustomization.kustomize.toolkit.fluxcd.io/name`, and accepted by kubectl as is.
    fn qualified_name(self, name: &str) -> String {
        let resource = self.api_resource();
        format!(
            "{}.{}/{name}",
            resource.kind.to_ascii_lowercase(),
            resource.group
        )
    }

    /// The status row of `object`, an object of this kind.
    fn row(self, object: &DynamicObject) -> anyhow::Result<StatusRow> {
        let mut row = match self {
            Kind::Source(kind) => objects::source_row(&kind.state_of(object)?),
            Kind::Kustomization => objects::kustomization_row(&typed(object)?),
            Kind::Receiver => objects::receiver_row(&typed(object)?),
            Kind::Alert => objects::alert_row(&typed(object)?),
            Kind::Provider => objects::provider_row(&typed(object)?),
        };
        row.shard = object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(gitops_reconciler::api::SHARD_LABEL))
            .cloned()
            .unwrap_or_default();
        Ok(row)
    }
}

/// `object` read as its typed kind `K`.
fn typed<K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned>(
    object: &DynamicObject,
) -> anyhow::Result<K> {
    serde_json::from_value(serde_json::to_value(object)?).with_context(|| {
        format!(
            "reading {} {}/{}",
            K::kind(&()),
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// What decides the shape of the table.
pub struct Listing<'a> {
    pub args: &'a ListArgs,
    pub selector: Option<&'a StatusSelector>,
    /// `get all`: names are printed as `gitrepository/name`.
    pub prefix_kind: bool,
    /// The REVISION column (not for kinds without revisions).
    pub revision: bool,
}

fn api(client: &Client, global: &GlobalArgs, all: bool, kind: Kind) -> Api<DynamicObject> {
    let resource = kind.api_resource();
    if all {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), &global.namespace, &resource)
    }
}

/// The rows and raw objects of `kind`; `None` when its CRD is not installed and
/// `skip_missing` (a listing of several kinds goes on without it).
async fn list(
    client: &Client,
    global: &GlobalArgs,
    args: &ListArgs,
    kind: Kind,
    skip_missing: bool,
) -> anyhow::Result<Option<(Vec<StatusRow>, Vec<serde_json::Value>)>> {
    let api = api(client, global, args.all_namespaces, kind);
    let kind_name = kind.api_resource().kind;
    let items: Vec<DynamicObject> = match &args.name {
        Some(name) => {
            if args.all_namespaces {
                return Err(fail(Exit::Usage, "a NAME cannot be combined with -A"));
            }
            vec![crate::cluster::get_kind(&api, &kind_name, &global.namespace, name).await?]
        }
        None => {
            let mut params = ListParams::default();
            if let Some(labels) = &args.label_selector {
                params = params.labels(labels);
            }
            match api.list(&params).await {
                Ok(list) => list.items,
                Err(e) if skip_missing && crate::cluster::is_missing_crd(&e) => return Ok(None),
                Err(e) => {
                    return Err(crate::cluster::map_missing_crd(e, &kind_name))
                        .with_context(|| format!("listing {}", kind.plural()));
                }
            }
        }
    };
    let mut pairs: Vec<(StatusRow, serde_json::Value)> = items
        .iter()
        .map(|item| {
            let value = serde_json::to_value(item).map(objects::without_managed_fields)?;
            Ok((kind.row(item)?, value))
        })
        .collect::<anyhow::Result<_>>()?;
    pairs.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    Ok(Some(pairs.into_iter().unzip()))
}

fn list_object(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The header of a listing.
pub fn header(listing: &Listing<'_>) -> Vec<&'static str> {
    let mut header = Vec::new();
    if listing.args.all_namespaces {
        header.push("NAMESPACE");
    }
    header.push("NAME");
    if shows_source(listing.args) {
        header.push("SOURCE");
    }
    if listing.revision {
        header.push("REVISION");
    }
    header.extend(["SUSPENDED", "READY"]);
    if listing.args.output == ListOutput::Wide {
        header.extend(["REASON", "SHARD"]);
    }
    header.push("MESSAGE");
    header
}

/// The cells of one row, in [`header`] order.
pub fn cells(listing: &Listing<'_>, row: &StatusRow) -> Vec<String> {
    let mut cells = Vec::new();
    if listing.args.all_namespaces {
        cells.push(row.namespace.clone());
    }
    if listing.prefix_kind {
        cells.push(format!("{}/{}", row.kind.to_ascii_lowercase(), row.name));
    } else {
        cells.push(row.name.clone());
    }
    if shows_source(listing.args) {
        cells.push(row.source.clone());
    }
    if listing.revision {
        cells.push(row.revision.clone());
    }
    cells.push(if row.suspended { "True" } else { "False" }.to_owned());
    cells.push(row.ready.clone());
    if listing.args.output == ListOutput::Wide {
        cells.push(row.reason.clone());
        // The main reconciler's objects carry no shard label.
        cells.push(if row.shard.is_empty() {
            "-".to_owned()
        } else {
            row.shard.clone()
        });
    }
    cells.push(row.message.clone());
    cells
}

/// `--show-source`, or `-o wide` which includes it.
fn shows_source(args: &ListArgs) -> bool {
    args.show_source || args.output == ListOutput::Wide
}

/// The table of `rows` (escaped, aligned).
pub fn table(listing: &Listing<'_>, rows: &[StatusRow]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(listing, r)).collect();
    render_table(&header(listing), &body, listing.args.no_header)
}

/// `--status-selector ready=false`: a condition type and the status it must have
/// (case-insensitive; an absent condition counts as `Unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSelector {
    pub condition: String,
    pub status: String,
}

impl StatusSelector {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let Some((condition, status)) = text.split_once('=') else {
            return Err(fail(
                Exit::Usage,
                format!(
                    "invalid --status-selector '{text}': expected CONDITION=STATUS, e.g. ready=false"
                ),
            ));
        };
        let status = status.trim().to_ascii_lowercase();
        if condition.trim().is_empty() || !["true", "false", "unknown"].contains(&status.as_str()) {
            return Err(fail(
                Exit::Usage,
                format!(
                    "invalid --status-selector '{text}': STATUS must be true, false or unknown"
                ),
            ));
        }
        Ok(Self {
            condition: condition.trim().to_owned(),
            status,
        })
    }

    pub fn matches(&self, row: &StatusRow) -> bool {
        row.condition_status(&self.condition)
            .eq_ignore_ascii_case(&self.status)
    }
}

/// After the listing: one row per change, without header, until Ctrl-C or --timeout.
async fn watch(
    client: &Client,
    global: &GlobalArgs,
    listing: &Listing<'_>,
    kinds: &[Kind],
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    let mut config = watcher::Config::default();
    if let Some(labels) = &listing.args.label_selector {
        config = config.labels(labels);
    }
    if let Some(name) = &listing.args.name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let all = listing.args.all_namespaces;
    let mut stream = futures::stream::select_all(kinds.iter().map(|kind| {
        let kind = *kind;
        watcher(api(client, global, all, kind), config.clone())
            .filter_map(move |e| async move { row_of(e, kind) })
            .boxed()
    }));
    let quiet = Listing {
        args: &ListArgs {
            no_header: true,
            ..listing.args.clone()
        },
        selector: listing.selector,
        prefix_kind: listing.prefix_kind,
        revision: listing.revision,
    };
    // The first events replay the initial listing; print changes only after it settled.
    let settle = tokio::time::Instant::now() + Duration::from_millis(500);
    let deadline = tokio::time::sleep(global.timeout);
    tokio::pin!(deadline);
    let mut last: std::collections::HashMap<(String, String, String), Vec<String>> =
        std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            event = stream.next() => {
                let Some(event) = event else { return Ok(()) };
                let row = event?;
                if listing.selector.is_some_and(|s| !s.matches(&row)) {
                    continue;
                }
                let key = (row.kind.to_owned(), row.namespace.clone(), row.name.clone());
                let line = cells(&quiet, &row);
                let changed = last.get(&key) != Some(&line);
                last.insert(key, line);
                if changed && tokio::time::Instant::now() >= settle {
                    write!(ui.out, "{}", table(&quiet, std::slice::from_ref(&row)))?;
                    ui.out.flush()?;
                }
            }
        }
    }
}

fn row_of(
    event: Result<watcher::Event<DynamicObject>, watcher::Error>,
    kind: Kind,
) -> Option<anyhow::Result<StatusRow>> {
    match event {
        Ok(watcher::Event::Apply(object)) | Ok(watcher::Event::InitApply(object)) => {
            Some(kind.row(&object))
        }
        Ok(_) => None,
        Err(e) => Some(Err(anyhow::Error::from(e).context("watching for changes"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitops_reconciler::api::conditions;
    use serde_json::json;

    fn repo(
        ns: &str,
        name: &str,
        revision: Option<&str>,
        ready: Option<(&str, &str)>,
    ) -> StatusRow {
        let mut status = json!({"observedGeneration": 1});
        if let Some(rev) = revision {
            status["artifact"] = json!({"revision": rev, "digest": "sha256:00", "size": 1,
                "url": "http://x", "path": "p", "lastUpdateTime": "2026-01-01T00:00:00Z"});
        }
        if let Some((s, message)) = ready {
            let mut conds = Vec::new();
            conditions::set(&mut conds, "Ready", s, "Succeeded", message, Some(1));
            status["conditions"] = serde_json::to_value(conds).unwrap();
        }
        let object: gitops_reconciler::api::GitRepository = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"url": "https://example.com/r.git", "interval": "1m"},
            "status": status,
        }))
        .unwrap();
        objects::source_row(&(&object).into())
    }

    fn ks(ns: &str, name: &str, suspended: bool) -> StatusRow {
        let object: Kustomization = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "instavote"},
                     "interval": "1m", "suspend": suspended},
        }))
        .unwrap();
        objects::kustomization_row(&object)
    }

    fn golden(args: ListArgs, prefix_kind: bool, rows: &[StatusRow]) -> String {
        let notifications = ["Receiver", "Alert", "Provider"];
        table(
            &Listing {
                args: &args,
                selector: None,
                prefix_kind,
                revision: !rows.iter().any(|row| notifications.contains(&row.kind)),
            },
            rows,
        )
    }

    const REV: &str = "main@sha1:4f1c2e6bd8f1a0f3b2c9f7e4d3a2b1c0e9f8d7c6";

    #[test]
    fn golden_sources_table() {
        let rows = [
            repo(
                "gitops-system",
                "instavote",
                Some(REV),
                Some(("True", &format!("stored artifact for revision '{REV}'"))),
            ),
            repo(
                "gitops-system",
                "broken",
                None,
                Some((
                    "False",
                    "failed to checkout and determine revision: unable to clone: authentication required",
                )),
            ),
            repo("gitops-system", "new", None, None),
        ];
        assert_eq!(
            golden(ListArgs::default(), false, &rows),
            include_str!("../../tests/golden/get-sources-git.txt")
        );
    }

    #[test]
    fn golden_kustomizations_all_namespaces_with_source() {
        let rows = [ks("apps", "vote-dev", false), ks("team-b", "redis", true)];
        let args = ListArgs {
            all_namespaces: true,
            show_source: true,
            ..ListArgs::default()
        };
        assert_eq!(
            golden(args, false, &rows),
            include_str!("../../tests/golden/get-kustomizations-all-namespaces.txt")
        );
    }

    #[test]
    fn golden_get_all_prefixes_kinds_and_no_header_drops_the_header() {
        let rows = [repo(
            "gitops-system",
            "instavote",
            Some(REV),
            Some(("True", "ok")),
        )];
        let args = ListArgs {
            no_header: true,
            ..ListArgs::default()
        };
        assert_eq!(
            golden(args, true, &rows),
            format!("gitrepository/instavote   {REV}   False   True   ok\n")
        );
    }

    #[test]
    fn wide_adds_source_reason_and_shard_and_name_is_fully_qualified() {
        let mut rows = [ks("apps", "vote-dev", false)];
        let args = ListArgs {
            output: ListOutput::Wide,
            ..ListArgs::default()
        };
        let listing = Listing {
            args: &args,
            selector: None,
            prefix_kind: false,
            revision: true,
        };
        assert_eq!(
            header(&listing),
            [
                "NAME",
                "SOURCE",
                "REVISION",
                "SUSPENDED",
                "READY",
                "REASON",
                "SHARD",
                "MESSAGE"
            ]
        );
        assert_eq!(
            cells(&listing, &rows[0]),
            [
                "vote-dev",
                "GitRepository/apps/instavote",
                "",
                "False",
                "Unknown",
                "",
                "-",
                "waiting to be reconciled"
            ]
        );
        rows[0].shard = "shard1".to_owned();
        assert_eq!(cells(&listing, &rows[0])[6], "shard1");
        let failing = repo("n", "b", None, Some(("False", "no such host")));
        assert_eq!(cells(&listing, &failing)[5], "Succeeded");
        assert_eq!(
            Kind::Kustomization.qualified_name("vote-dev"),
            "kustomization.kubectl-gitops.io/vote-dev"
        );
        assert_eq!(
            Kind::Source(SourceKind::GitRepository).qualified_name("instavote"),
            "gitrepository.kubectl-gitops.io/instavote"
        );
    }

    #[test]
    fn status_selector_matches_conditions_case_insensitively() {
        let ready = repo("n", "a", None, Some(("True", "ok")));
        let failing = repo("n", "b", None, Some(("False", "bad")));
        let fresh = repo("n", "c", None, None);
        let not_ready = StatusSelector::parse("ready=false").unwrap();
        assert!(!not_ready.matches(&ready));
        assert!(not_ready.matches(&failing));
        assert!(!not_ready.matches(&fresh));
        assert!(
            StatusSelector::parse("Ready=Unknown")
                .unwrap()
                .matches(&fresh)
        );
        for bad in ["ready", "=true", "ready=maybe"] {
            let err = StatusSelector::parse(bad).unwrap_err();
            assert_eq!(crate::error::report(&err).exit, Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn golden_notification_tables() {
        let receiver: Receiver = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "github", "namespace": "gitops-system"},
            "spec": {"type": "github", "resources": [{"kind": "GitRepository", "name": "app"}],
                     "secretRef": {"name": "token"}},
            "status": {"webhookPath": "/hook/ab12", "conditions": [{"type": "Ready",
                "status": "True", "reason": "Succeeded",
                "message": "Receiver initialised for path: /hook/ab12",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        let lost: Receiver = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "lost", "namespace": "gitops-system"},
            "spec": {"type": "generic", "resources": [{"kind": "Kustomization", "name": "app"}],
                     "secretRef": {"name": "missing"}, "suspend": true},
        }))
        .unwrap();
        let alert: Alert = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Alert",
            "metadata": {"name": "on-call", "namespace": "gitops-system"},
            "spec": {"providerRef": {"name": "slack"},
                     "eventSources": [{"kind": "Kustomization", "name": "*"}]},
        }))
        .unwrap();
        let provider: Provider = serde_json::from_value(json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "Provider",
            "metadata": {"name": "slack", "namespace": "gitops-system"},
            "spec": {"type": "slack", "secretRef": {"name": "slack-url"}},
        }))
        .unwrap();
        let text = [
            golden(
                ListArgs::default(),
                false,
                &[
                    objects::receiver_row(&receiver),
                    objects::receiver_row(&lost),
                ],
            ),
            golden(ListArgs::default(), false, &[objects::alert_row(&alert)]),
            golden(
                ListArgs::default(),
                false,
                &[objects::provider_row(&provider)],
            ),
        ]
        .join("\n");
        assert_eq!(
            text,
            include_str!("../../tests/golden/get-notifications.txt")
        );
    }
}
