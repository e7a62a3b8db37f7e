//! A native harness to unit-test policy logic with the same steps the host performs:
//! config check, transform, validate. Use it from `#[test]`s in the policy crate.

use crate::object::Identity;
use crate::{
    ConfigError, Context, Level, Metadata, Object, Policy, PolicyError, Severity, Value, Violation,
    given,
};
use std::cell::RefCell;

/// What running a policy on some objects produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The objects after `transform` (the input unchanged for validate-only policies).
    pub objects: Vec<Value>,
    /// Every finding of `validate`.
    pub violations: Vec<Violation>,
}

impl Outcome {
    /// True if no finding denies.
    pub fn allowed(&self) -> bool {
        self.violations
            .iter()
            .all(|v| v.severity != Severity::Error)
    }
}

/// Why [`run`] stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum RunError {
    /// `parse_config` refused the config.
    Config(ConfigError),
    /// `transform` failed.
    Transform(PolicyError),
}

/// Runs `P` on `objects` as the host would: parse the config, transform (if the policy
/// transforms), then validate (if it validates), each given only the objects of the kinds the
/// policy declares ([`crate::given`]), with the objects handed over as JSON text.
pub fn run<P: Policy>(
    ctx: &Context,
    config: &Value,
    objects: Vec<Value>,
) -> Result<Outcome, RunError> {
    let parsed = P::parse_config(config).map_err(RunError::Config)?;
    let Metadata { kind, kinds, .. } = P::metadata();
    let kinds = kinds.as_deref();
    // As JSON text, as the host hands them over (so the lazy paths of `Object` are the ones
    // tested); a value that is not a JSON object is passed as it is.
    let objects: Vec<Object> = objects
        .into_iter()
        .map(|v| Object::from_json(v.to_string()).unwrap_or_else(|_| Object::from(v)))
        .collect();
    let positions = |objects: &[Object]| {
        given::positions(kinds, objects.iter().map(|o| (o.api_version(), o.kind())))
    };
    let objects = match kind {
        crate::PolicyKind::Validate => objects,
        _ => {
            let at = positions(&objects);
            given::transform_given(objects, &at, |sent| P::transform(ctx, &parsed, sent))
                .map_err(RunError::Transform)?
        }
    };
    let violations = match kind {
        crate::PolicyKind::Transform => Vec::new(),
        _ => {
            let at = positions(&objects);
            let sent: Vec<Object> = at.iter().map(|&i| objects[i].clone()).collect();
            P::validate(ctx, &parsed, &sent)
        }
    };
    Ok(Outcome {
        objects: objects.into_iter().map(Object::into_value).collect(),
        violations,
    })
}

/// A context for tests: Kustomization `flux-system/apps`, revision `main@sha1:0…0`.
pub fn context() -> Context {
    Context {
        kustomization_namespace: "flux-system".to_owned(),
        kustomization_name: "apps".to_owned(),
        source_revision: format!("main@sha1:{}", "0".repeat(40)),
        target_namespace: None,
        dry_run: false,
    }
}

thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Records a log line written natively (see [`crate::log`]).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str) {
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}

/// Returns and clears the log lines this thread's policy code wrote.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A test case shared by the native tests of a policy crate and the host's tests of the same
/// policy as a component (`policies/fixtures/<policy>/*.json`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the case shows.
    pub description: String,
    /// The policy's config.
    #[serde(default)]
    pub config: Value,
    /// `spec.targetNamespace` for the context, if any.
    #[serde(default, rename = "targetNamespace")]
    pub target_namespace: Option<String>,
    /// The objects going in.
    pub input: Vec<Value>,
    /// What must come out.
    pub expect: Expect,
}

/// The expected result of a [`Fixture`].
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The exact objects after transform; unchecked when absent.
    #[serde(default)]
    pub objects: Option<Vec<Value>>,
    /// The violations, in order (none when absent).
    #[serde(default)]
    pub violations: Vec<ExpectedViolation>,
    /// The config is refused, at this JSON pointer (`""` for the whole config).
    #[serde(default, rename = "configError")]
    pub config_error: Option<String>,
}

/// One expected violation.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedViolation {
    /// The object as `Kind namespace/name` (or `Kind name`).
    pub object: String,
    /// JSON pointer of the field.
    pub field: String,
    /// `error` or `warning`.
    pub severity: String,
    /// A substring of the message.
    #[serde(default)]
    pub message: String,
}

impl ExpectedViolation {
    /// Compares with an actual violation given as its parts; returns what differs.
    pub fn matches(
        &self,
        object: &str,
        field: &str,
        severity: &str,
        message: &str,
    ) -> Result<(), String> {
        if self.object != object
            || self.field != field
            || self.severity != severity
            || !message.contains(&self.message)
        {
            return Err(format!(
                "expected {} {} {} containing {:?}, got {object} {field} {severity} {message:?}",
                self.object, self.field, self.severity, self.message
            ));
        }
        Ok(())
    }
}

/// Every `*.json` fixture in `dir`, sorted by file name. Panics (test helper) on unreadable or
/// malformed fixtures, naming the file.
pub fn load_fixtures(dir: &str) -> Vec<(String, Fixture)> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading fixtures {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {dir}");
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let fixture = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()));
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                fixture,
            )
        })
        .collect()
}

/// Runs every fixture in `dir` through `P` natively and panics with the differences.
pub fn check_fixtures<P: Policy>(dir: &str) {
    let mut failures = Vec::new();
    for (name, f) in load_fixtures(dir) {
        let ctx = Context {
            target_namespace: f.target_namespace.clone(),
            ..context()
        };
        let result = run::<P>(&ctx, &f.config, f.input.clone());
        let problem = match (result, &f.expect.config_error) {
            (Err(RunError::Config(e)), Some(path)) => (e.path.as_deref().unwrap_or("") != path)
                .then(|| {
                    format!(
                        "config error at {:?}, expected {path:?}: {}",
                        e.path, e.message
                    )
                }),
            (Err(e), _) => Some(format!("unexpected error {e:?}")),
            (Ok(_), Some(path)) => Some(format!("config accepted, expected an error at {path:?}")),
            (Ok(outcome), None) => {
                let mut problems = Vec::new();
                if let Some(objects) = &f.expect.objects
                    && *objects != outcome.objects
                {
                    problems.push(format!(
                        "objects differ:\n got: {}\nwant: {}",
                        Value::Array(outcome.objects.clone()),
                        Value::Array(objects.clone())
                    ));
                }
                if outcome.violations.len() != f.expect.violations.len() {
                    problems.push(format!(
                        "{} violations, expected {}: {:?}",
                        outcome.violations.len(),
                        f.expect.violations.len(),
                        outcome.violations
                    ));
                }
                for (want, got) in f.expect.violations.iter().zip(&outcome.violations) {
                    let object = got
                        .object
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let severity = match got.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    };
                    if let Err(e) = want.matches(
                        &object,
                        got.field.as_deref().unwrap_or(""),
                        severity,
                        &got.message,
                    ) {
                        problems.push(e);
                    }
                }
                (!problems.is_empty()).then(|| problems.join("\n"))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{name} ({}): {p}", f.description));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n\n")
    );
}
