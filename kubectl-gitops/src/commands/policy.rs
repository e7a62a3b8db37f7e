//! `policy test --module FILE.wasm|builtin:NAME [--config FILE] -f DIR`: the policy author's
//! loop. Runs one policy over local manifests with the reconciler's own policy host (the same
//! engine, limits and pipeline as in the cluster, in a dry-run context without tenancy checks)
//! and prints what it did: a diff of every object the transform changed (or all objects with
//! `-o yaml|json`) and the violations as a table.
//!
//! Exit codes: 0 the objects are allowed, 1 the policy denied them, 2 the inputs are unusable
//! (module, config, manifests), 6 the policy failed to run (trap, deadline, memory, bad output).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{
    self, HostConfig, ModuleInfo, ModuleSource, PipelineError, PolicyContext, PolicyError,
    PolicyHost, PolicyKind, PolicyStep, Severity, Violation,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cli::{PolicyTestArgs, PolicyTestOutput};
use crate::error::{Exit, fail};
use crate::ui::{Ui, escape, render_table};

/// Runs `policy test`.
pub fn test(args: &PolicyTestArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let (step_name, module) = module_source(&args.module)?;
    let config = match &args.config {
        Some(path) => read_config(path)?,
        None => Value::Null,
    };
    let objects = policy::read_manifests(&args.filename).map_err(|e| {
        fail(
            Exit::Usage,
            format!("reading manifests from {}: {e}", args.filename.display()),
        )
    })?;

    let host = PolicyHost::new(HostConfig {
        cache_dir: cache_dir(),
        ..HostConfig::default()
    })
    .context("starting the policy host")?;
    let info = host
        .load(&step_name, &module)
        .map_err(|e| policy_failure(&e))?;
    let step = PolicyStep {
        name: step_name,
        module,
        config,
        failure_policy: FailurePolicy::Fail,
    };
    // The config is checked before anything is printed, so a refused one is the only line.
    host.validate_config(&step)
        .map_err(|e| policy_failure(&e))?;
    // A policy that declares kinds is given only the objects of those kinds.
    let given = match &info.kinds {
        None => format!("{} objects", objects.len()),
        Some(kinds) => format!(
            "{} of {} objects (of the kinds it declares: {})",
            objects.iter().filter(|o| info.is_given(o)).count(),
            objects.len(),
            escape(
                &kinds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        ),
    };
    ui.step(&format!(
        "running policy {} {} ({}) on {given} from {}",
        escape(&info.name),
        escape(&info.version),
        kind_text(info.kind),
        args.filename.display()
    ))?;

    let ctx = PolicyContext {
        target_namespace: args.target_namespace.clone(),
        dry_run: true,
        tenancy: None,
        ..PolicyContext::default()
    };
    let before = objects.clone();
    match host.run_pipeline(std::slice::from_ref(&step), &ctx, objects) {
        Ok(outcome) => {
            let changed = print_objects(args.output, &info, &before, &outcome.objects, ui)?;
            print_violations(args.output, &outcome.warnings, ui)?;
            let warnings = match outcome.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_owned(),
                n => format!(", {n} warnings"),
            };
            ui.success(&format!(
                "allowed: {} objects, {changed} changed{warnings}",
                outcome.objects.len()
            ))?;
            Ok(Exit::Success)
        }
        Err(PipelineError::Denied { violations }) => {
            print_violations(args.output, &violations, ui)?;
            let errors = violations
                .iter()
                .filter(|v| v.severity == Severity::Error)
                .count();
            ui.failure(&format!(
                "denied: {errors} violation{} of severity error",
                if errors == 1 { "" } else { "s" }
            ))?;
            Ok(Exit::Failed)
        }
        Err(PipelineError::Failed(e)) => Err(policy_failure(&e)),
    }
}

/// The step name and module of `--module`: `builtin:NAME` or a component file, whose sha256 is
/// computed here (there is no spec to declare one).
fn module_source(arg: &str) -> anyhow::Result<(String, ModuleSource)> {
    if let Some(name) = arg.strip_prefix("builtin:") {
        return Ok((name.to_owned(), ModuleSource::Builtin(name.to_owned())));
    }
    let path = Path::new(arg);
    let bytes =
        std::fs::read(path).map_err(|e| fail(Exit::Usage, format!("reading module {arg}: {e}")))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "module".to_owned());
    Ok((
        name,
        ModuleSource::Component {
            bytes: bytes.into(),
            sha256,
        },
    ))
}

/// The config file: one JSON or YAML document.
fn read_config(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            Exit::Usage,
            format!("reading config {}: {e}", path.display()),
        )
    })?;
    gitops_reconciler::yaml::from_str(&text).map_err(|e| {
        fail(
            Exit::Usage,
            format!("config {} is not JSON or YAML: {e}", path.display()),
        )
    })
}

/// Compiled components are cached like the reconciler does, under the user's cache directory
/// (`$XDG_CACHE_HOME/kubectl-gitops/policies` or `~/.cache/...`); none without a home.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("kubectl-gitops").join("policies"))
}

/// Exit 2 for what the user handed in (module, digest, config), 6 for a policy that failed to
/// run; one line naming the policy either way.
fn policy_failure(e: &PolicyError) -> anyhow::Error {
    let exit = match e {
        PolicyError::UnknownBuiltin { .. }
        | PolicyError::BadDigest { .. }
        | PolicyError::DigestMismatch { .. }
        | PolicyError::ModuleTooLarge { .. }
        | PolicyError::InvalidComponent { .. }
        | PolicyError::ImportDenied { .. }
        | PolicyError::InvalidConfig { .. } => Exit::Usage,
        _ => Exit::Other,
    };
    fail(exit, e.to_string())
}

fn kind_text(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Transform => "transform",
        PolicyKind::Validate => "validate",
        PolicyKind::Both => "transform + validate",
    }
}

/// `Kind namespace/name` (or `Kind name`) of an object.
fn label(object: &Value) -> String {
    let s = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    match s("/metadata/namespace") {
        "" => format!("{} {}", s("/kind"), s("/metadata/name")),
        ns => format!("{} {ns}/{}", s("/kind"), s("/metadata/name")),
    }
}

/// Identity of an object across a transform that may change its namespace.
fn same_object(a: &Value, b: &Value) -> bool {
    ["/apiVersion", "/kind", "/metadata/name"]
        .iter()
        .all(|p| a.pointer(p) == b.pointer(p))
}

fn yaml(object: &Value) -> anyhow::Result<String> {
    Ok(gitops_reconciler::yaml::to_string(object)?)
}

/// Prints the transformed objects: with the default output, a unified diff of each object the
/// policy changed, added or removed; with `-o yaml|json`, every object. Returns how many
/// objects differ from the input.
fn print_objects(
    output: PolicyTestOutput,
    info: &ModuleInfo,
    before: &[Value],
    after: &[Value],
    ui: &mut Ui<'_>,
) -> anyhow::Result<usize> {
    // Pair each output object with the input object it came from: same position if that is
    // the same object, else the first unpaired input object with the same identity.
    let mut used = vec![false; before.len()];
    let mut pairs: Vec<(Option<usize>, &Value)> = Vec::with_capacity(after.len());
    for (i, object) in after.iter().enumerate() {
        let source = if i < before.len() && !used[i] && same_object(&before[i], object) {
            Some(i)
        } else {
            (0..before.len()).find(|&j| !used[j] && same_object(&before[j], object))
        };
        if let Some(j) = source {
            used[j] = true;
        }
        pairs.push((source, object));
    }
    let mut changed = 0;
    let mut diff = String::new();
    for (source, object) in &pairs {
        let (old, old_name, header) = match source {
            Some(j) if before[*j] == **object => continue,
            Some(j) => (yaml(&before[*j])?, label(&before[*j]), "changed"),
            None => (String::new(), "(none)".to_owned(), "added"),
        };
        changed += 1;
        let name = label(object);
        let text = similar::TextDiff::from_lines(&old, &yaml(object)?)
            .unified_diff()
            .context_radius(3)
            .header(&format!("input {old_name}"), &format!("output {name}"))
            .to_string();
        diff.push_str(&format!("► {name} {header}\n{text}"));
    }
    for (object, _) in before.iter().zip(&used).filter(|(_, used)| !**used) {
        changed += 1;
        let name = label(object);
        let text = similar::TextDiff::from_lines(&yaml(object)?, "")
            .unified_diff()
            .context_radius(3)
            .header(&format!("input {name}"), "output (none)")
            .to_string();
        diff.push_str(&format!("► {name} removed\n{text}"));
    }
    match output {
        PolicyTestOutput::Diff => {
            if info.kind.transforms() && changed == 0 {
                writeln!(ui.out, "no object changed")?;
            }
            ui.diff(&diff)?;
        }
        PolicyTestOutput::Yaml => {
            for object in after {
                write!(ui.out, "---\n{}", yaml(object)?)?;
            }
        }
        PolicyTestOutput::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": after});
            writeln!(ui.out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
    }
    Ok(changed)
}

/// SEVERITY, OBJECT, FIELD and MESSAGE of a violation, as table cells.
pub(crate) fn violation_cells(v: &Violation) -> Vec<String> {
    vec![
        match v.severity {
            Severity::Error => "error".to_owned(),
            Severity::Warning => "warning".to_owned(),
        },
        v.object
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".to_owned()),
        v.field.clone().unwrap_or_else(|| "-".to_owned()),
        v.message.clone(),
    ]
}

/// The violations as a table: on stdout with the default output, on stderr when stdout holds
/// objects (`-o yaml|json`) so that it stays parseable.
fn print_violations(
    output: PolicyTestOutput,
    violations: &[Violation],
    ui: &mut Ui<'_>,
) -> anyhow::Result<()> {
    if violations.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = violations.iter().map(violation_cells).collect();
    let table = render_table(&["SEVERITY", "OBJECT", "FIELD", "MESSAGE"], &rows, false);
    match output {
        PolicyTestOutput::Diff => write!(ui.out, "{table}")?,
        PolicyTestOutput::Yaml | PolicyTestOutput::Json => write!(ui.err, "{table}")?,
    }
    Ok(())
}
