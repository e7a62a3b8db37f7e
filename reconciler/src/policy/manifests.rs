//! Reading plain YAML/JSON manifests from a file or directory, for `kubectl gitops policy test`
//! (which runs policies on local files without a kustomization).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not valid YAML/JSON.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: crate::yaml::YamlError,
    },
    /// A document is not a Kubernetes object (a mapping with apiVersion and kind).
    #[error("{path}: document {index} is not a Kubernetes object (needs apiVersion and kind)")]
    NotAnObject {
        /// The file or directory.
        path: PathBuf,
        /// Position of the document in the file, from 0.
        index: usize,
    },
}

/// Reads every `.yaml`, `.yml` and `.json` file under `path` (a file or a directory, walked
/// recursively in name order, symlinks not followed) and returns the objects in order. `List`
/// objects are flattened into their items; empty documents are skipped.
pub fn read_manifests(path: &Path) -> Result<Vec<Value>, ManifestError> {
    let mut files = Vec::new();
    let meta = std::fs::symlink_metadata(path).map_err(|source| io_error(path, source))?;
    if meta.is_dir() {
        collect(path, &mut files)?;
    } else {
        files.push(path.to_owned());
    }
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| io_error(&file, source))?;
        let docs: Vec<Value> =
            crate::yaml::from_str_multi(&text).map_err(|source| ManifestError::Parse {
                path: file.clone(),
                source,
            })?;
        for (index, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            if doc.get("apiVersion").and_then(Value::as_str).is_none()
                || doc.get("kind").and_then(Value::as_str).is_none()
            {
                return Err(ManifestError::NotAnObject {
                    path: file.clone(),
                    index,
                });
            }
            match (doc.get("kind").and_then(Value::as_str), doc.get("items")) {
                (Some("List"), Some(Value::Array(items))) => objects.extend(items.iter().cloned()),
                _ => objects.push(doc),
            }
        }
    }
    Ok(objects)
}

fn io_error(path: &Path, source: std::io::Error) -> ManifestError {
    ManifestError::Io {
        path: path.to_owned(),
        source,
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            collect(&path, files)?;
        } else if kind.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        {
            files.push(path);
        }
    }
    Ok(())
}
