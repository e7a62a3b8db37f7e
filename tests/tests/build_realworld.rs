//! Real-world kustomize trees as a differential corpus. Well-known public projects' Go
//! modules (operator scaffolds, GitOps examples, platform installs) are fetched into the Go
//! module cache at test time with `go mod download` (pinned versions, never committed), every
//! directory holding a kustomization file is built by the engine and by
//! `kubectl kustomize --load-restrictor LoadRestrictionsNone` (Flux builds without kustomize's
//! load restrictions), and the outputs are compared object by object, field by field and in
//! order. A directory kubectl refuses must be refused by the engine too.
//!
//! Directories that reach remote bases (URLs, git) are not given to kubectl: tests send no
//! traffic off the machine (kubectl also runs with its proxies pointed at a closed local
//! port). The engine must refuse them, naming the remote entry.
//!
//! Every directory that differs must be listed, with its reason, in
//! `tests/kustomize/realworld-differences.txt`; a listed one that no longer differs fails the
//! test as well. The match rate is printed per module, with the slowest directory's time
//! ratio against kubectl.
//!
//! Needs kubectl and Go (the module proxy or a warm module cache); fails loudly without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_conformance::kustomize_corpus;
use gitops_reconciler::build::{BuildError, BuildOptions, build};
use rayon::prelude::*;
use serde_json::Value;

/// The modules read, `path@version`. Each carries kustomize trees in its module zip.
const MODULES: &[&str] = &[
    "sigs.k8s.io/cluster-api@v1.14.2",
    "sigs.k8s.io/cluster-api/test@v1.13.7",
    "sigs.k8s.io/kueue@v0.17.0",
    "sigs.k8s.io/gateway-api@v1.6.3",
    "sigs.k8s.io/kwok@v0.7.0",
    "sigs.k8s.io/descheduler@v0.36.0",
    "github.com/fluxcd/flux2/v2@v2.9.5",
    "github.com/argoproj/argo-cd/v2@v2.14.21",
    "github.com/open-policy-agent/gatekeeper/v3@v3.23.1",
    "github.com/prometheus-operator/prometheus-operator@v0.85.0",
    "github.com/kubeflow/katib@v0.19.0",
    "github.com/metallb/frr-k8s@v0.0.21",
    "github.com/external-secrets/external-secrets@v0.16.2",
];

const DIFFERENCES: &str = "kustomize/realworld-differences.txt";
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
/// Longest a `go mod download` of one module may take.
const DOWNLOAD_TIMEOUT: &str = "600";
/// Longest one `kubectl kustomize` may take.
const KUBECTL_TIMEOUT: &str = "120";

/// The module's directory in the Go module cache, downloading it when missing.
fn module_dir(module: &str) -> Result<PathBuf, String> {
    let out = Command::new("timeout")
        .args([DOWNLOAD_TIMEOUT, "go", "mod", "download", "-json", module])
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("running `go mod download`: {e} (Go is needed here)"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "go mod download {module} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(err) = v.get("Error").and_then(Value::as_str) {
        return Err(format!("go mod download {module}: {err}"));
    }
    v.get("Dir")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| format!("go mod download {module} did not report the module directory"))
}

/// Every directory under `root` (relative, `/`-separated, sorted) holding a kustomization.
fn kustomization_dirs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('.') {
                stack.push(e.path());
            }
        }
        if KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file()) {
            let rel = dir
                .strip_prefix(root)
                .unwrap_or(&dir)
                .to_string_lossy()
                .replace('\\', "/");
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// `kubectl kustomize` as Flux builds (no load restrictions), with no way off the machine.
fn kubectl(dir: &Path) -> Result<Vec<Value>, String> {
    let closed = "http://127.0.0.1:9";
    let out = Command::new("timeout")
        .args([KUBECTL_TIMEOUT, "kubectl", "kustomize"])
        .args(["--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir)
        .env("HTTPS_PROXY", closed)
        .env("HTTP_PROXY", closed)
        .env("https_proxy", closed)
        .env("http_proxy", closed)
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(msg.lines().last().unwrap_or("").chars().take(300).collect());
    }
    let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    gitops_reconciler::yaml::json_documents(&text).map_err(|e| e.to_string())
}

/// kubectl's results, kept per kubectl version, module version and directory: a module
/// version's tree never changes, so a warm run only builds with the engine. The time kubectl
/// took is kept with the result for the speed ratio. `GITOPS_REALWORLD_FRESH=1` ignores it.
struct KubectlCache {
    dir: Option<PathBuf>,
}

impl KubectlCache {
    fn new() -> Self {
        let base = std::env::var_os("GITOPS_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("kubectl-gitops"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kubectl-gitops"))
            });
        let version = Command::new("kubectl")
            .args(["version", "--client", "-o", "json"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .and_then(|v| {
                v.pointer("/kustomizeVersion")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
        let fresh = std::env::var_os("GITOPS_REALWORLD_FRESH").is_some();
        let dir = match (base, version) {
            (Some(b), Some(v)) if !fresh => Some(b.join("kustomize-realworld").join(v)),
            _ => None,
        };
        KubectlCache { dir }
    }

    fn file(&self, module: &str, rel: &str) -> Option<PathBuf> {
        let key: String = format!("{module}/{rel}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.as_ref().map(|d| d.join(format!("{key}.json")))
    }

    fn build(&self, module: &str, rel: &str, dir: &Path) -> (Result<Vec<Value>, String>, Duration) {
        let file = self.file(module, rel);
        if let Some(f) = &file
            && let Ok(bytes) = std::fs::read(f)
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        {
            let secs = v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
            let result = match (v.get("objects"), v.get("error")) {
                (Some(Value::Array(o)), _) => Ok(o.clone()),
                (_, Some(Value::String(e))) => Err(e.clone()),
                _ => Err("unreadable cache entry".into()),
            };
            return (result, Duration::from_secs_f64(secs));
        }
        let t = Instant::now();
        let result = kubectl(dir);
        let took = t.elapsed();
        if let Some(f) = &file {
            let entry = match &result {
                Ok(o) => serde_json::json!({"seconds": took.as_secs_f64(), "objects": o}),
                Err(e) => serde_json::json!({"seconds": took.as_secs_f64(), "error": e}),
            };
            if let Some(parent) = f.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(f, entry.to_string());
        }
        (result, took)
    }
}

fn is_remote_refusal(e: &BuildError) -> bool {
    matches!(e, BuildError::Unsupported { feature, .. } if feature.starts_with("remote"))
}

enum Outcome {
    Identical,
    /// Both refused; the engine's message and kubectl's.
    BothRefused(String, String),
    /// The engine refused a remote base; kubectl was not run.
    Remote,
    Differs(String),
}

struct Case {
    module: String,
    name: String,
    outcome: Outcome,
    kubectl: Duration,
    engine: Duration,
}

fn run_case(cache: &KubectlCache, module: &str, root: &Path, rel: &str) -> Case {
    let short = module.split('@').next().unwrap_or(module);
    let name = if rel.is_empty() {
        short.to_string()
    } else {
        format!("{short}/{rel}")
    };
    let options = BuildOptions {
        path: rel.to_string(),
        ..Default::default()
    };
    // The engine takes milliseconds, so one descheduling can dwarf it: best of three.
    let mut engine = Duration::MAX;
    let mut actual = None;
    for _ in 0..3 {
        let t = Instant::now();
        let result = build(root, &options);
        engine = engine.min(t.elapsed());
        actual.get_or_insert(result);
    }
    let actual = actual.expect("built at least once");
    if let Err(e) = &actual
        && is_remote_refusal(e)
    {
        return Case {
            module: module.to_string(),
            name,
            outcome: Outcome::Remote,
            kubectl: Duration::ZERO,
            engine,
        };
    }
    let (expected, kubectl_time) = cache.build(module, rel, &root.join(rel));
    let outcome = match (expected, actual) {
        (Ok(exp), Ok(act)) => match kustomize_corpus::compare(&exp, &act) {
            None => Outcome::Identical,
            Some(d) => Outcome::Differs(d),
        },
        (Err(k), Err(e)) => Outcome::BothRefused(e.to_string(), k),
        (Ok(_), Err(e)) => Outcome::Differs(format!("kubectl builds it, the engine fails: {e}")),
        (Err(e), Ok(_)) => Outcome::Differs(format!("kubectl fails ({e}), the engine builds it")),
    };
    Case {
        module: module.to_string(),
        name,
        outcome,
        kubectl: kubectl_time,
        engine,
    }
}

#[derive(Default)]
struct Tally {
    dirs: usize,
    identical: usize,
    both_refused: usize,
    remote: usize,
    differ: usize,
}

#[test]
fn real_world_trees_build_as_kubectl_builds_them() {
    kustomize_corpus::require_kubectl();
    let only = std::env::var("REALWORLD_CASE").ok();
    let mut work: Vec<(String, PathBuf, String)> = Vec::new();
    for module in MODULES {
        let root = module_dir(module).unwrap_or_else(|e| panic!("{e}"));
        for rel in kustomization_dirs(&root) {
            work.push((module.to_string(), root.clone(), rel));
        }
    }
    assert!(
        work.len() >= 200,
        "only {} kustomization directories found in {} modules",
        work.len(),
        MODULES.len()
    );
    let started = Instant::now();
    let cache = KubectlCache::new();
    let cases: Vec<Case> = work
        .par_iter()
        .filter(|(m, _, rel)| {
            only.as_deref()
                .is_none_or(|o| format!("{}/{rel}", m.split('@').next().unwrap_or(m)).contains(o))
        })
        .map(|(m, root, rel)| run_case(&cache, m, root, rel))
        .collect();
    let known = kustomize_corpus::known_differences(DIFFERENCES);
    let mut per_module: BTreeMap<String, Tally> = BTreeMap::new();
    let mut differing: BTreeMap<String, String> = BTreeMap::new();
    let mut slowest: Option<(f64, String)> = None;
    let (mut kubectl_time, mut engine_time) = (Duration::ZERO, Duration::ZERO);
    for c in &cases {
        let t = per_module.entry(c.module.clone()).or_default();
        t.dirs += 1;
        match &c.outcome {
            Outcome::Identical => t.identical += 1,
            Outcome::BothRefused(..) => t.both_refused += 1,
            Outcome::Remote => t.remote += 1,
            Outcome::Differs(d) => {
                t.differ += 1;
                differing.insert(c.name.clone(), d.clone());
            }
        }
        if !matches!(c.outcome, Outcome::Remote) {
            kubectl_time += c.kubectl;
            engine_time += c.engine;
            let ratio = c.kubectl.as_secs_f64() / c.engine.as_secs_f64().max(1e-9);
            if slowest.as_ref().is_none_or(|(r, _)| ratio < *r) {
                slowest = Some((ratio, c.name.clone()));
            }
        }
    }
    eprintln!(
        "{:<60} {:>5} {:>9} {:>8} {:>7} {:>6}",
        "module", "dirs", "identical", "refused", "remote", "differ"
    );
    let mut total = Tally::default();
    for (m, t) in &per_module {
        eprintln!(
            "{m:<60} {:>5} {:>9} {:>8} {:>7} {:>6}",
            t.dirs, t.identical, t.both_refused, t.remote, t.differ
        );
        total.dirs += t.dirs;
        total.identical += t.identical;
        total.both_refused += t.both_refused;
        total.remote += t.remote;
        total.differ += t.differ;
    }
    let compared = total.dirs - total.remote;
    let matched = total.identical + total.both_refused;
    eprintln!(
        "real-world: {} kustomization directories in {} modules; {} compared with kubectl, {} \
         match ({:.1} %): {} identical, {} refused by both; {} differ; {} reach remote bases \
         (refused by the engine, not given to kubectl)",
        total.dirs,
        per_module.len(),
        compared,
        matched,
        100.0 * matched as f64 / compared.max(1) as f64,
        total.identical,
        total.both_refused,
        total.differ,
        total.remote
    );
    eprintln!(
        "time: kubectl {:.2} s, engine {:.2} s (this build's profile, {:.0} s wall); slowest \
         directory ratio {}",
        kubectl_time.as_secs_f64(),
        engine_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        slowest
            .map(|(r, n)| format!("{r:.1}x ({n})"))
            .unwrap_or_default()
    );
    // What each refusal says, so a refusal for the wrong reason is visible.
    for c in &cases {
        if let Outcome::BothRefused(engine, kubectl) = &c.outcome {
            eprintln!(
                "[refused by both] {}\n  engine:  {engine}\n  kubectl: {kubectl}",
                c.name
            );
        }
    }
    for (n, d) in &differing {
        let listed = if known.contains_key(n) {
            "listed"
        } else {
            "NOT LISTED"
        };
        eprintln!("[{listed}] {n}: {d}\n");
    }
    if only.is_some() {
        return;
    }
    kustomize_corpus::assert_differences_listed(&differing, DIFFERENCES);
}
