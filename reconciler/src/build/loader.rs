//! Reading the file tree: every path is resolved lexically inside the build root, symlinks are
//! refused, and sizes are bounded before anything is parsed.

use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::BuildError;

/// Bounds on what one build reads. Hostile trees hit these long before memory or time run out.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Largest single file read.
    pub max_file_bytes: usize,
    /// Total bytes read by one build.
    pub max_total_bytes: usize,
    /// Documents in one file.
    pub max_documents_per_file: usize,
    /// Objects one build may produce.
    pub max_objects: usize,
    /// Kustomizations nested inside each other (also the `$ref` nesting followed in a `crds`
    /// file).
    pub max_depth: usize,
    /// Properties visited while reading one `crds` file (`$ref`s may share types, so the walk
    /// can be far larger than the file).
    pub max_schema_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 16 << 20,
            max_total_bytes: 128 << 20,
            max_documents_per_file: 20_000,
            max_objects: 50_000,
            max_depth: 64,
            max_schema_steps: 100_000,
        }
    }
}

/// The names kustomize recognises as a kustomization file, in its order of preference.
pub(crate) const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Confined access to the build root.
pub(crate) struct Loader<'a> {
    root: &'a Path,
    /// Sees (and may rewrite) every resource, patch and generator file the build reads.
    inputs: &'a dyn super::InputFilter,
    pub limits: Limits,
    total_bytes: Cell<usize>,
    /// The OpenAPI schema a kustomization gave with `openapi: {path: ...}` (the first one
    /// read, the outermost, wins over its bases'), for strategic merges.
    pub custom_schema: std::cell::RefCell<Option<std::rc::Rc<super::schema::Schema>>>,
    /// Some kustomization already chose the schema (`openapi:` path or version).
    pub openapi_chosen: Cell<bool>,
    /// The build already needed the built-in schema (an object of a kind it does not know
    /// was read, or a strategic merge ran). kustomize then keeps the built-in definitions
    /// next to a custom schema chosen later, so the custom one's `$ref`s to Kubernetes
    /// types resolve; a custom schema chosen before stands alone.
    pub builtin_schema_used: Cell<bool>,
}

/// Joins two `/`-separated relative paths.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Shows a root-relative path in messages (`.` for the root itself).
pub(crate) fn display(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// Whether a resource entry names something remote (a URL, a git repository, an OCI image).
pub(crate) fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
        || entry.starts_with("oci:")
}

impl<'a> Loader<'a> {
    pub fn new(root: &'a Path, limits: Limits, inputs: &'a dyn super::InputFilter) -> Self {
        Loader {
            root,
            inputs,
            limits,
            total_bytes: Cell::new(0),
            custom_schema: std::cell::RefCell::new(None),
            openapi_chosen: Cell::new(false),
            builtin_schema_used: Cell::new(false),
        }
    }

    /// Resolves `entry` (as written in the kustomization file `file`, which lives in `dir`) to a
    /// normalised root-relative path, refusing absolute paths and `..` past the root.
    pub fn resolve(&self, dir: &str, entry: &str, file: &str) -> Result<String, BuildError> {
        let escapes = || BuildError::EscapesRoot {
            file: file.to_string(),
            path: entry.to_string(),
        };
        if entry.is_empty() {
            return Err(BuildError::InvalidKustomization {
                file: file.to_string(),
                message: "empty path".to_string(),
            });
        }
        if entry.contains('\0') || entry.contains('\\') {
            return Err(escapes());
        }
        let p = Path::new(entry);
        if p.is_absolute() {
            return Err(escapes());
        }
        let mut parts: Vec<&str> = if dir.is_empty() {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(escapes());
                    }
                }
                Component::Normal(s) => parts.push(s.to_str().ok_or_else(escapes)?),
                Component::RootDir | Component::Prefix(_) => return Err(escapes()),
            }
        }
        Ok(parts.join("/"))
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    /// What is at `rel`: `Some(true)` a directory, `Some(false)` a regular file, `None` nothing.
    /// Every component of the path is checked: a symlink anywhere is an error.
    pub fn kind_of(&self, rel: &str, file: &str) -> Result<Option<bool>, BuildError> {
        let mut cur = self.root.to_path_buf();
        let mut is_dir = true;
        if rel.is_empty() {
            return Ok(Some(true));
        }
        for part in rel.split('/') {
            cur.push(part);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(BuildError::Symlink {
                        file: file.to_string(),
                        path: rel.to_string(),
                    });
                }
                Ok(m) => is_dir = m.is_dir(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(BuildError::Io {
                        file: rel.to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(Some(is_dir))
    }

    /// The kustomization file in directory `dir`, if it has one.
    pub fn kustomization_file(&self, dir: &str) -> Result<Option<String>, BuildError> {
        let mut found: Option<String> = None;
        for name in KUSTOMIZATION_FILES {
            let rel = join(dir, name);
            if self.kind_of(&rel, &rel)? == Some(false) {
                // Two of them is ambiguous; kustomize refuses it rather than pick one.
                if let Some(first) = &found {
                    return Err(BuildError::InvalidKustomization {
                        file: first.clone(),
                        message: format!(
                            "found multiple kustomization files in {}: {} and {name}",
                            display(dir),
                            first.rsplit('/').next().unwrap_or(first)
                        ),
                    });
                }
                found = Some(rel);
            }
        }
        Ok(found)
    }

    /// Reads a whole file (bounded), as bytes.
    pub fn read_bytes(&self, rel: &str, referrer: &str) -> Result<Vec<u8>, BuildError> {
        match self.kind_of(rel, referrer)? {
            Some(false) => {}
            Some(true) => {
                return Err(BuildError::Io {
                    file: rel.to_string(),
                    message: "is a directory, expected a file".to_string(),
                });
            }
            None => {
                return Err(BuildError::NotFound {
                    file: referrer.to_string(),
                    path: rel.to_string(),
                });
            }
        }
        let io = |e: std::io::Error| BuildError::Io {
            file: rel.to_string(),
            message: e.to_string(),
        };
        let f = std::fs::File::open(self.abs(rel)).map_err(io)?;
        let limit = self.limits.max_file_bytes;
        let mut buf = Vec::new();
        f.take(limit as u64 + 1).read_to_end(&mut buf).map_err(io)?;
        if buf.len() > limit {
            return Err(BuildError::TooLarge {
                file: rel.to_string(),
                what: "file size in bytes",
                limit,
            });
        }
        let total = self.total_bytes.get() + buf.len();
        if total > self.limits.max_total_bytes {
            return Err(BuildError::TooLarge {
                file: rel.to_string(),
                what: "total bytes read by the build",
                limit: self.limits.max_total_bytes,
            });
        }
        self.total_bytes.set(total);
        Ok(buf)
    }

    /// Reads a file the build uses as `used_as` (bounded), through the caller's input filter.
    pub fn read_input(
        &self,
        rel: &str,
        referrer: &str,
        used_as: super::InputUse<'_>,
    ) -> Result<Vec<u8>, BuildError> {
        let bytes = self.read_bytes(rel, referrer)?;
        self.inputs
            .filter(rel, bytes, used_as)
            .map_err(|message| BuildError::Input {
                file: rel.to_string(),
                message,
            })
    }

    /// Reads a UTF-8 text file used as `used_as` (bounded), through the input filter.
    pub fn read_input_text(
        &self,
        rel: &str,
        referrer: &str,
        used_as: super::InputUse<'_>,
    ) -> Result<String, BuildError> {
        text(self.read_input(rel, referrer, used_as)?, rel)
    }

    /// Reads a UTF-8 text file (bounded).
    pub fn read_text(&self, rel: &str, referrer: &str) -> Result<String, BuildError> {
        let bytes = self.read_bytes(rel, referrer)?;
        text(bytes, rel)
    }

    /// Lists a directory's entries sorted by name: (name, is_dir). Symlinks are skipped.
    pub fn list_dir(&self, rel: &str) -> Result<Vec<(String, bool)>, BuildError> {
        let io = |e: std::io::Error| BuildError::Io {
            file: display(rel).to_string(),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.abs(rel)).map_err(io)? {
            let entry = entry.map_err(io)?;
            let ft = entry.file_type().map_err(io)?;
            if ft.is_symlink() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), ft.is_dir()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Bytes to text, naming the first bad line.
pub(crate) fn text(bytes: Vec<u8>, rel: &str) -> Result<String, BuildError> {
    String::from_utf8(bytes).map_err(|e| {
        let upto = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count() + 1;
        BuildError::NotUtf8 {
            file: rel.to_string(),
            line,
        }
    })
}

/// Parses a YAML stream into objects: each must be a mapping; `*List` kinds with `items` are
/// flattened as kustomize does.
///
/// Each object comes with the JSON pointers of its map values written with no text (see
/// `yaml::json_documents_marking_empty`; none for the items of a `List`).
pub(crate) fn parse_objects(
    text: &str,
    rel: &str,
    limits: &Limits,
) -> Result<Vec<(Value, Vec<String>)>, BuildError> {
    check_document_count(text, rel, limits)?;
    let docs = crate::yaml::json_documents_marking_empty(text).map_err(|e| yaml_error(e, rel))?;
    let mut out = Vec::with_capacity(docs.len());
    for (doc, empty) in docs {
        let start = out.len();
        flatten(doc, rel, &mut out)?;
        if out.len() == start + 1
            && let Some((_, marks)) = out.last_mut()
        {
            *marks = empty;
        }
    }
    Ok(out)
}

fn check_document_count(text: &str, rel: &str, limits: &Limits) -> Result<(), BuildError> {
    // A cheap upper bound on the document count before parsing anything.
    let separators = text.matches("\n---").count() + 1;
    if separators > limits.max_documents_per_file {
        return Err(BuildError::TooLarge {
            file: rel.to_string(),
            what: "number of YAML documents in one file",
            limit: limits.max_documents_per_file,
        });
    }
    Ok(())
}

fn yaml_error(e: crate::yaml::YamlError, rel: &str) -> BuildError {
    BuildError::Yaml {
        file: rel.to_string(),
        line: e.line,
        message: e.to_string(),
    }
}

/// Parses a YAML stream into JSON values with the per-file document cap.
pub(crate) fn parse_yaml(text: &str, rel: &str, limits: &Limits) -> Result<Vec<Value>, BuildError> {
    check_document_count(text, rel, limits)?;
    crate::yaml::json_documents(text).map_err(|e| yaml_error(e, rel))
}

fn flatten(doc: Value, rel: &str, out: &mut Vec<(Value, Vec<String>)>) -> Result<(), BuildError> {
    let Value::Object(map) = doc else {
        return Err(BuildError::InvalidObject {
            file: rel.to_string(),
            message: "a document is not a YAML mapping (expected a Kubernetes object)".to_string(),
        });
    };
    let is_list = map
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && map.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = map.get("items") {
            for item in items.clone() {
                flatten(item, rel, out)?;
            }
        }
        return Ok(());
    }
    let kind_ok = map
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    if !kind_ok {
        return Err(BuildError::InvalidObject {
            file: rel.to_string(),
            message: "an object has no 'kind'".to_string(),
        });
    }
    let name_ok = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !name_ok {
        return Err(BuildError::InvalidObject {
            file: rel.to_string(),
            message: format!(
                "a {} object has no metadata.name",
                map.get("kind").and_then(Value::as_str).unwrap_or("?")
            ),
        });
    }
    out.push((Value::Object(map), Vec::new()));
    Ok(())
}
