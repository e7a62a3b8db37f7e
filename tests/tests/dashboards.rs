//! The monitoring files in docs/dashboards stay true to the code (no cluster needed): the
//! Grafana dashboard parses and queries only metrics the reconciler registers (read from
//! `Metrics::default()`'s exposition) or the kube-state-metrics config defines, and that config
//! covers every kind of `api::crd::all()` with label paths that exist in each kind's schema.

use std::collections::BTreeSet;
use std::sync::Arc;

use gitops_conformance::repo_root;
use gitops_reconciler::controller::common::ReconcileTimer;
use gitops_reconciler::controller::metrics::Metrics;
use serde_json::Value;

const DASHBOARD: &str = "docs/dashboards/kubectl-gitops.json";
const KSM_CONFIG: &str = "docs/dashboards/kube-state-metrics.yaml";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const METRICS_SOURCE: &str = "reconciler/src/controller/metrics.rs";

/// The reconciler's metrics with one sample in every family, recorded through the calls the
/// controllers make (the exposition leaves out families without samples).
fn sampled_metrics() -> String {
    let metrics = Arc::new(Metrics::default());
    {
        let mut timer =
            ReconcileTimer::for_object(metrics.clone(), "Kustomization", "ns", "app", true);
        timer.result("success");
    }
    metrics.record_ready("Kustomization", "ns", "app", Some("True"));
    metrics.count_objects("created", 1);
    metrics.count_aborted_fetch("timeout");
    metrics.count_audit_violation("ns", "app", "bounds");
    metrics.count_receiver_request("ns", "github", "accepted");
    metrics.count_alert_delivery("ns", "slack", "delivered");
    metrics.source_storage_bytes.set(1);
    metrics.alert_events_dropped.inc();
    metrics.alert_queue_length.set(1);
    metrics.encode()
}

/// The names `Metrics::default()` registers, read from its source: the first string literal
/// after each `registry.register(`, with the registry's `gitops` prefix.
fn registered_names() -> BTreeSet<String> {
    let source = read(METRICS_SOURCE);
    let names: BTreeSet<String> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1))
        .map(|name| format!("gitops_{name}"))
        .collect();
    assert!(
        !names.is_empty(),
        "no registry.register( in {METRICS_SOURCE}"
    );
    names
}

/// The series names a Prometheus scraping the reconciler stores, from the `# TYPE` lines of
/// the exposition (counters gain `_total`, histograms `_bucket`, `_sum` and `_count`).
fn reconciler_series() -> BTreeSet<String> {
    let text = sampled_metrics();
    let mut families = BTreeSet::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("odd TYPE line: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" => &[""],
            "info" => &["_info"],
            other => panic!("metric type {other} of {name} not handled here"),
        };
        families.insert(name.to_owned());
        out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    assert_eq!(
        families,
        registered_names(),
        "sampled_metrics() must record a sample in every family {METRICS_SOURCE} registers"
    );
    out
}

fn ksm_config() -> Value {
    let docs: Vec<Value> =
        gitops_reconciler::yaml::from_str_multi(&read(KSM_CONFIG)).expect("the KSM config parses");
    assert_eq!(docs.len(), 1, "one document");
    let doc = docs.into_iter().next().unwrap();
    assert_eq!(doc["kind"], "CustomResourceStateMetrics");
    doc
}

fn ksm_resources(config: &Value) -> &Vec<Value> {
    config["spec"]["resources"]
        .as_array()
        .expect("spec.resources is a list")
}

/// The series kube-state-metrics makes from the config: `<metricNamePrefix>_<name>`.
fn ksm_series(config: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for resource in ksm_resources(config) {
        let prefix = resource["metricNamePrefix"]
            .as_str()
            .expect("metricNamePrefix");
        for metric in resource["metrics"].as_array().expect("metrics") {
            out.insert(format!(
                "{prefix}_{}",
                metric["name"].as_str().expect("name")
            ));
        }
    }
    out
}

/// The metric names a PromQL expression refers to: identifiers outside string literals that
/// start with `gitops_` (every metric of ours, and of the KSM config, has that prefix).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            names.push(std::mem::take(&mut word));
        }
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    if !word.is_empty() {
        names.push(word);
    }
    names.retain(|w| w.starts_with("gitops_"));
    names
}

/// Every PromQL text of the dashboard: panel targets (rows' nested panels too) and template
/// variable queries, each with where it is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            if panel["type"] == "row" {
                panels(&panel["panels"], out);
                continue;
            }
            let targets = panel["targets"].as_array();
            assert!(
                targets.is_some_and(|t| !t.is_empty()),
                "panel {title:?} has no query"
            );
            for target in targets.into_iter().flatten() {
                let expr = target["expr"].as_str().expect("target.expr");
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("variable query");
        out.push((format!("variable {}", variable["name"]), query.to_owned()));
    }
    out
}

#[test]
fn the_dashboard_queries_only_metrics_that_exist() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard parses");
    let ours = reconciler_series();
    let ksm = ksm_series(&ksm_config());
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "{queries:?}");
    let mut used = BTreeSet::new();
    for (where_, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{where_} queries no metric: {expr}");
        for name in names {
            assert!(
                ours.contains(&name) || ksm.contains(&name),
                "{where_} queries {name}, which neither the reconciler ({ours:?}) nor the KSM config ({ksm:?}) exports"
            );
            used.insert(name);
        }
    }
    // Every family the reconciler registers is on the dashboard, by at least one of its series.
    for family in registered_names() {
        assert!(
            used.iter().any(|u| u.starts_with(&family)),
            "metric {family} is on no panel"
        );
    }
    // Panel ids are unique (Grafana links and edits panels by id).
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
    }
}

#[test]
fn the_metric_name_scanner_skips_strings_and_functions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(gitops_a_bucket{x="gitops_b"}[5m]))) / gitops_c"#
        ),
        ["gitops_a_bucket", "gitops_c"]
    );
}

/// Walks `path` (kube-state-metrics' `labelsFromPath`) in a CRD's schema; `[key=value]`
/// selects an element of a list. `metadata` paths are the object's own.
fn schema_has(schema: &Value, path: &[Value]) -> bool {
    let segments: Vec<&str> = path.iter().map(|s| s.as_str().unwrap_or("")).collect();
    if segments.first() == Some(&"metadata") {
        return matches!(segments.as_slice(), ["metadata", "name" | "namespace"]);
    }
    let mut node = schema;
    for segment in segments {
        node = if segment.starts_with('[') {
            &node["items"]
        } else {
            &node["properties"][segment]
        };
        if node.is_null() {
            return false;
        }
    }
    true
}

#[test]
fn the_kube_state_metrics_config_covers_every_kind() {
    let config = ksm_config();
    let resources = ksm_resources(&config);
    let mut covered = BTreeSet::new();
    for (file, crd) in gitops_reconciler::api::crd::all() {
        let crd = serde_json::to_value(&crd).expect("CRD serializes");
        let spec = &crd["spec"];
        let kind = spec["names"]["kind"].as_str().expect("kind");
        let group = spec["group"].as_str().expect("group");
        let version = spec["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .find(|v| v["storage"] == true)
            .unwrap_or_else(|| panic!("{file}: no storage version"));
        let resource = resources
            .iter()
            .find(|r| {
                let gvk = &r["groupVersionKind"];
                gvk["group"] == group && gvk["kind"] == kind && gvk["version"] == version["name"]
            })
            .unwrap_or_else(|| {
                panic!(
                    "{KSM_CONFIG} has no resource for {group}/{}/{kind}",
                    version["name"]
                )
            });
        covered.insert(kind.to_owned());
        let schema = &version["schema"]["openAPIV3Schema"];
        let namespaced = spec["scope"] == "Namespaced";
        for metric in resource["metrics"].as_array().expect("metrics") {
            let labels = [
                &metric["labelsFromPath"],
                &metric["each"]["info"]["labelsFromPath"],
            ];
            let mut names = BTreeSet::new();
            for (label, path) in labels
                .iter()
                .filter_map(|l| l.as_object())
                .flat_map(|m| m.iter())
            {
                let path = path.as_array().expect("a path is a list");
                assert!(
                    schema_has(schema, path),
                    "{kind}: label {label} reads {path:?}, which is not in the schema"
                );
                names.insert(label.as_str());
            }
            assert!(names.contains("name"), "{kind}: no name label");
            assert_eq!(
                names.contains("exported_namespace"),
                namespaced,
                "{kind}: exported_namespace exactly when namespaced"
            );
            let has_ready = schema_has(
                schema,
                &["status".into(), "conditions".into(), "[type=Ready]".into()],
            );
            assert_eq!(names.contains("ready"), has_ready, "{kind}: ready label");
            let has_suspend = schema_has(schema, &["spec".into(), "suspend".into()]);
            assert_eq!(
                names.contains("suspended"),
                has_suspend,
                "{kind}: suspended label"
            );
        }
    }
    assert_eq!(
        covered.len(),
        resources.len(),
        "{KSM_CONFIG} lists a kind the reconciler does not define"
    );
}
