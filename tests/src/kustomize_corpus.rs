//! Helpers for the kustomize differential tests, the property test and the build bench: run
//! `kubectl kustomize` on a tree the way the engine sees it, and compare outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use gitops_reconciler::api::kustomization::{CommonMetadata, Image, Patch};
use gitops_reconciler::build::BuildOptions;
use serde::Deserialize;
use serde_json::Value;

/// Flux-style build fields of a corpus case (`options.json`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaseOptions {
    /// `spec.path`, relative to the case directory.
    #[serde(default)]
    pub path: String,
    /// `spec.namePrefix`.
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// `spec.nameSuffix`.
    #[serde(default)]
    pub name_suffix: Option<String>,
    /// `spec.patches`.
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// `spec.images`.
    #[serde(default)]
    pub images: Vec<Image>,
    /// `spec.components`.
    #[serde(default)]
    pub components: Vec<String>,
    /// `spec.commonMetadata`.
    #[serde(default)]
    pub common_metadata: Option<CommonMetadata>,
}

impl CaseOptions {
    /// Reads `options.json` of a case directory, or the defaults.
    pub fn read(case: &Path) -> Self {
        match std::fs::read_to_string(case.join("options.json")) {
            Ok(t) => serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("{}/options.json: {e}", case.display())),
            Err(_) => CaseOptions::default(),
        }
    }

    /// The reconciler's build options for these fields (no substitution).
    pub fn to_build_options(&self) -> BuildOptions {
        BuildOptions {
            path: self.path.clone(),
            name_prefix: self.name_prefix.clone(),
            name_suffix: self.name_suffix.clone(),
            patches: self.patches.clone(),
            images: self.images.clone(),
            components: self.components.clone(),
            common_metadata: self.common_metadata.clone(),
            ..Default::default()
        }
    }

    fn has_outer(&self) -> bool {
        self.name_prefix.is_some()
            || self.name_suffix.is_some()
            || !self.patches.is_empty()
            || !self.images.is_empty()
            || !self.components.is_empty()
            || self.common_metadata.is_some()
    }
}

/// The case directories of the committed corpus (`tests/kustomize/corpus/<case>/`), sorted.
pub fn corpus_cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kustomize/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// Panics with a clear message when kubectl is not installed.
pub fn require_kubectl() {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "kubectl is required for the kustomize differential tests (kubectl v1.32 with kustomize v5.5; \
         tests/setup.d installs it) but `kubectl version --client` failed"
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates a fresh, empty directory under the system temp dir, named after `tag`.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "gitops-kustomize-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let t = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).expect("copy");
        }
    }
}

fn has_kustomization(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Flux's generated kustomization for a directory without one.
fn flux_listing(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let shown = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.file_type().expect("type").is_dir() {
            if has_kustomization(&e.path()) {
                out.push(shown);
            } else {
                flux_listing(&e.path(), &shown, out);
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(shown);
        }
    }
}

/// Runs `kubectl kustomize` on what the engine builds for `options` under `root`.
pub fn kubectl_build(root: &Path, options: &CaseOptions) -> Result<Vec<Value>, String> {
    let path = options.path.trim_start_matches("./").trim_end_matches('/');
    let target = if path.is_empty() {
        root.to_path_buf()
    } else {
        root.join(path)
    };
    let needs_copy = options.has_outer() || !has_kustomization(&target);
    let scratch = Scratch::new("kubectl");
    let dir = if needs_copy {
        let tree = scratch.0.join("tree");
        copy_tree(root, &tree);
        let inner = if path.is_empty() {
            tree.clone()
        } else {
            tree.join(path)
        };
        if !has_kustomization(&inner) {
            let mut res = Vec::new();
            flux_listing(&inner, "", &mut res);
            let k = serde_json::json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": res,
            });
            std::fs::write(inner.join("kustomization.yaml"), k.to_string()).expect("write");
        }
        if options.has_outer() {
            let rel = if path.is_empty() {
                "tree".to_string()
            } else {
                format!("tree/{path}")
            };
            let mut k = serde_json::json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [rel.clone()],
            });
            if let Some(p) = &options.name_prefix {
                k["namePrefix"] = Value::String(p.clone());
            }
            if let Some(s) = &options.name_suffix {
                k["nameSuffix"] = Value::String(s.clone());
            }
            if !options.patches.is_empty() {
                k["patches"] = serde_json::to_value(&options.patches).expect("json");
            }
            if !options.images.is_empty() {
                k["images"] = serde_json::to_value(&options.images).expect("json");
            }
            if !options.components.is_empty() {
                k["components"] = options
                    .components
                    .iter()
                    .map(|c| Value::String(format!("{rel}/{c}")))
                    .collect();
            }
            if let Some(m) = &options.common_metadata {
                if !m.labels.is_empty() {
                    k["labels"] = serde_json::json!([{"pairs": m.labels}]);
                }
                if !m.annotations.is_empty() {
                    k["commonAnnotations"] = serde_json::to_value(&m.annotations).expect("json");
                }
            }
            std::fs::write(scratch.0.join("kustomization.yaml"), k.to_string()).expect("write");
            scratch.0.clone()
        } else {
            inner
        }
    } else {
        target
    };
    kubectl_kustomize(&dir)
}

/// `kubectl kustomize <dir>` parsed into JSON values.
pub fn kubectl_kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    gitops_reconciler::yaml::json_documents(&text).map_err(|e| e.to_string())
}

/// `None` if equal; otherwise a description of the first difference.
pub fn compare(expected: &[Value], actual: &[Value]) -> Option<String> {
    let id = |v: &Value| {
        format!(
            "{}/{} {}",
            v.get("kind").and_then(Value::as_str).unwrap_or("?"),
            v.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
        )
    };
    for (i, (e, a)) in expected.iter().zip(actual.iter()).enumerate() {
        if let Some((at, ev, av)) = first_difference(e, a, String::new()) {
            return Some(format!(
                "object #{i} ({}) differs at {at}:\n  kubectl: {ev}\n  engine:  {av}",
                id(e)
            ));
        }
    }
    if expected.len() != actual.len() {
        return Some(format!(
            "kubectl produced {} objects [{}], the engine {} [{}]",
            expected.len(),
            expected.iter().map(id).collect::<Vec<_>>().join(", "),
            actual.len(),
            actual.iter().map(id).collect::<Vec<_>>().join(", ")
        ));
    }
    None
}

/// Writes files (path → content) under `dir`.
pub fn write_tree(dir: &Path, files: &BTreeMap<String, String>) {
    for (p, c) in files {
        let full = dir.join(p);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(full, c).expect("write");
    }
}

/// The first field (JSON pointer, kubectl's value, the engine's value) where two objects
/// differ, comparing maps key by key and lists element by element, in order.
pub fn first_difference(e: &Value, a: &Value, at: String) -> Option<(String, String, String)> {
    let shown = |v: Option<&Value>| {
        v.map(|v| {
            let s = serde_json::to_string(v).unwrap_or_default();
            if s.len() > 300 {
                format!("{}…", &s[..s.floor_char_boundary(300)])
            } else {
                s
            }
        })
        .unwrap_or_else(|| "(absent)".to_string())
    };
    match (e, a) {
        (Value::Object(em), Value::Object(am)) => {
            let ek: Vec<&String> = em.keys().collect();
            let ak: Vec<&String> = am.keys().collect();
            // Each key once (a common key visited from both sides would double the work at
            // every level: exponential in the depth of a CRD schema).
            for k in em.keys().chain(am.keys().filter(|k| !em.contains_key(*k))) {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (em.get(k), am.get(k)) {
                    (Some(x), Some(y)) => {
                        if let Some(d) = first_difference(x, y, p) {
                            return Some(d);
                        }
                    }
                    (x, y) => return Some((p, shown(x), shown(y))),
                }
            }
            (ek != ak).then(|| (at, format!("{ek:?}"), format!("{ak:?}")))
        }
        (Value::Array(el), Value::Array(al)) => {
            for (i, (x, y)) in el.iter().zip(al.iter()).enumerate() {
                if let Some(d) = first_difference(x, y, format!("{at}/{i}")) {
                    return Some(d);
                }
            }
            (el.len() != al.len()).then(|| {
                (
                    format!("{at} (length {} vs {})", el.len(), al.len()),
                    shown(Some(e)),
                    shown(Some(a)),
                )
            })
        }
        _ => (e != a).then(|| (at, shown(Some(e)), shown(Some(a)))),
    }
}

/// A differences list (`case<TAB>reason` lines, `#` starts a comment) under `tests/`, as the
/// differential tests against kustomize's own tests and real-world trees keep them.
pub fn known_differences(rel: &str) -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (case, reason) = l.split_once('\t').unwrap_or((l, ""));
            (case.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}

/// Fails unless the cases that differ (`case` → what differs) are exactly those listed in the
/// differences list `rel` (see `known_differences`): an unlisted difference and a listed case
/// that no longer differs both fail, so the list stays exact.
pub fn assert_differences_listed(differing: &BTreeMap<String, String>, rel: &str) {
    let known = known_differences(rel);
    let unexpected: Vec<String> = differing
        .iter()
        .filter(|(n, _)| !known.contains_key(*n))
        .map(|(n, d)| format!("{n}: {d}"))
        .collect();
    let stale: Vec<&String> = known
        .keys()
        .filter(|n| !differing.contains_key(*n))
        .collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "{} cases differ from kubectl and are not listed in {rel}:\n{}\n\n\
         listed but no longer different (remove them): {stale:?}",
        unexpected.len(),
        unexpected.join("\n\n")
    );
}
