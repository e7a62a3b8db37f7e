//! configMapGenerator / secretGenerator and the content hash kustomize appends to generated
//! names.
//!
//! The hash is kustomize v5's (kyaml `hasher`): sha256 over the JSON encoding (Go's
//! `encoding/json`: keys sorted, `<`, `>`, `&` escaped) of `{"data", "kind", "name"}` for a
//! ConfigMap (plus `binaryData` when it is a map) and `{"data", "kind", "name", "type"}` for a
//! Secret (plus `stringData`); the first ten hex digits with 0,1,3,a,e mapped to g,h,k,m,t.
//! Note: kyaml looks `metadata/name` up as one (nonexistent) key, so the name is always "" in
//! the hash input — matched here because the output must be identical.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::BuildError;
use super::kustomization::{GeneratorArgs, GeneratorOptions};
use super::loader::Loader;
use super::resource::{Generated, ResId, Resource};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum GenKind {
    ConfigMap,
    Secret,
}

impl GenKind {
    fn name(self) -> &'static str {
        match self {
            GenKind::ConfigMap => "ConfigMap",
            GenKind::Secret => "Secret",
        }
    }
}

/// Runs one generator entry: a new object (behavior create) or a merge/replace into an
/// existing one.
pub(crate) fn generate(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    kind: GenKind,
    args: &GeneratorArgs,
    global: Option<&GeneratorOptions>,
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    let err = |message: String| BuildError::Generator {
        file: file.to_string(),
        name: args.name.clone(),
        message,
    };
    if args.kv_sources.is_some() {
        return Err(BuildError::Unsupported {
            file: file.to_string(),
            feature: "kvSources",
            detail: format!("generator '{}' uses key-value source plugins", args.name),
        });
    }
    // Collect key/value pairs in kustomize's order: envs, literals, files.
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut envs: Vec<&String> = args.envs.iter().collect();
    if let Some(e) = &args.env {
        envs.insert(0, e);
    }
    for env in envs {
        let rel = loader.resolve(dir, env, file)?;
        let used_as = match kind {
            GenKind::Secret => super::InputUse::SecretEnv,
            GenKind::ConfigMap => super::InputUse::ConfigMapEnv,
        };
        let text = loader.read_input_text(&rel, file, used_as)?;
        for (i, line) in text.lines().enumerate() {
            let line = if i == 0 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => pairs.push((k.trim_start().to_string(), v.as_bytes().to_vec())),
                None => {
                    return Err(err(format!(
                        "{}:{}: '{}' has no '=' (reading values from the environment is not supported: builds are pure)",
                        rel,
                        i + 1,
                        trimmed
                    )));
                }
            }
        }
    }
    for lit in &args.literals {
        let Some((k, v)) = lit.split_once('=') else {
            return Err(err(format!("literal '{lit}' is not of the form key=value")));
        };
        let v = unquote(v);
        pairs.push((k.to_string(), v.as_bytes().to_vec()));
    }
    for f in &args.files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => {
                if k.is_empty() {
                    return Err(err(format!("file source '{f}' has an empty key")));
                }
                (k.to_string(), p)
            }
            None => {
                let base = f.rsplit('/').next().unwrap_or(f);
                (base.to_string(), f.as_str())
            }
        };
        let rel = loader.resolve(dir, path, file)?;
        if loader.kind_of(&rel, file)? == Some(true) {
            return Err(err(format!("file source '{path}' is a directory")));
        }
        let used_as = match kind {
            GenKind::Secret => super::InputUse::SecretFile { key: &key },
            GenKind::ConfigMap => super::InputUse::ConfigMapFile,
        };
        let bytes = loader.read_input(&rel, file, used_as)?;
        pairs.push((key, bytes));
    }
    for (k, _) in &pairs {
        if k.is_empty()
            || k.len() > 253
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(err(format!("'{k}' is not a valid ConfigMap/Secret key")));
        }
    }
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            return Err(err(format!("key '{k}' appears more than once")));
        }
        match kind {
            GenKind::Secret => {
                data.insert(k, Value::String(base64_wrapped(&v)));
            }
            GenKind::ConfigMap => match String::from_utf8(v) {
                Ok(s) => {
                    data.insert(k, Value::String(s));
                }
                Err(e) => {
                    binary.insert(k, Value::String(base64_wrapped(e.as_bytes())));
                }
            },
        }
    }

    // Options: the kustomization's generatorOptions, then the entry's own.
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut disable_hash = false;
    let mut immutable = false;
    for o in [global, args.options.as_ref()].into_iter().flatten() {
        labels.extend(o.labels.clone());
        annotations.extend(o.annotations.clone());
        if let Some(d) = o.disable_name_suffix_hash {
            disable_hash = d;
        }
        if let Some(i) = o.immutable {
            immutable = i;
        }
    }

    // kustomize reads an unknown behavior as unspecified, which creates.
    let behavior = args
        .behavior
        .as_deref()
        .filter(|b| matches!(*b, "merge" | "replace"))
        .unwrap_or("create");
    let ns = args.namespace.clone().unwrap_or_default();
    match behavior {
        "create" => {
            let mut meta = Map::new();
            meta.insert("name".into(), Value::String(args.name.clone()));
            if !ns.is_empty() {
                meta.insert("namespace".into(), Value::String(ns));
            }
            if !labels.is_empty() {
                meta.insert("labels".into(), string_map(&labels));
            }
            if !annotations.is_empty() {
                meta.insert("annotations".into(), string_map(&annotations));
            }
            let mut obj = Map::new();
            obj.insert("apiVersion".into(), Value::String("v1".into()));
            obj.insert("kind".into(), Value::String(kind.name().into()));
            obj.insert("metadata".into(), Value::Object(meta));
            // kustomize creates a Secret's `data` map even when it has no entries.
            if !data.is_empty() || kind == GenKind::Secret {
                obj.insert("data".into(), Value::Object(data));
            }
            if !binary.is_empty() {
                obj.insert("binaryData".into(), Value::Object(binary));
            }
            if kind == GenKind::Secret {
                let t = args.secret_type.clone().unwrap_or_else(|| "Opaque".into());
                obj.insert("type".into(), Value::String(t));
            }
            if immutable {
                obj.insert("immutable".into(), Value::Bool(true));
            }
            let mut r = Resource::new(Value::Object(obj));
            r.generated = Some(Generated {
                hash_suffix: !disable_hash,
            });
            let key = r.id().key();
            if resources.iter().any(|x| x.id().key() == key) {
                return Err(BuildError::DuplicateId {
                    file: file.to_string(),
                    id: r.id().to_string(),
                });
            }
            resources.push(r);
        }
        "merge" | "replace" => {
            let wanted = ResId {
                group: String::new(),
                version: "v1".into(),
                kind: kind.name().into(),
                namespace: ns,
                name: args.name.clone(),
            };
            let found = resources.iter_mut().find(|r| {
                let org = r.org_id();
                let cur = r.id();
                cur.kind == wanted.kind
                    && cur.group.is_empty()
                    && (org.name == wanted.name || cur.name == wanted.name)
                    && (wanted.namespace.is_empty()
                        || org.effective_namespace() == wanted.effective_namespace()
                        || cur.effective_namespace() == wanted.effective_namespace())
            });
            let Some(r) = found else {
                return Err(err(format!(
                    "behavior '{behavior}': no existing {} named '{}' to {behavior} with",
                    kind.name(),
                    args.name
                )));
            };
            let obj = r
                .obj
                .as_object_mut()
                .ok_or_else(|| err("not an object".into()))?;
            if behavior == "replace" {
                obj.remove("data");
                obj.remove("binaryData");
                // The replacement is a new object: its origin is recorded afresh.
                if let Some(Value::Object(a)) = obj
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut("annotations"))
                {
                    a.remove("config.kubernetes.io/origin");
                }
            }
            if !data.is_empty() {
                let d = obj
                    .entry("data")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = d {
                    d.extend(data);
                }
            }
            if !binary.is_empty() {
                let d = obj
                    .entry("binaryData")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = d {
                    d.extend(binary);
                }
            }
            if immutable {
                obj.insert("immutable".into(), Value::Bool(true));
            }
            let meta = super::resource::metadata_mut(&mut r.obj);
            for (key, add) in [("labels", &labels), ("annotations", &annotations)] {
                if add.is_empty() {
                    continue;
                }
                let m = meta.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = m {
                    for (k, v) in add {
                        m.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
            let prev_hash = r.generated.as_ref().is_some_and(|g| g.hash_suffix);
            r.generated = Some(Generated {
                hash_suffix: if args
                    .options
                    .as_ref()
                    .and_then(|o| o.disable_name_suffix_hash)
                    .is_some()
                    || global.and_then(|o| o.disable_name_suffix_hash).is_some()
                {
                    !disable_hash
                } else {
                    // Merging into a plain resource (not generated) keeps its name as is.
                    prev_hash
                },
            });
        }
        _ => unreachable!("behavior normalised above"),
    }
    Ok(())
}

/// Base64 as kustomize writes generated values: in lines of 70 characters, each ended by a
/// newline once the encoding reaches 70 characters (the hash covers the newlines too).
fn base64_wrapped(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    if enc.len() < LINE {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / LINE + 1);
    for chunk in enc.as_bytes().chunks(LINE) {
        // Base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn unquote(v: &str) -> &str {
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Go's encoding/json string escaping on top of serde_json's.
fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The value kyaml's hasher reads at a top-level field: a map as is, a scalar as a string,
/// nothing as "".
fn node_value(obj: &Value, key: &str) -> Value {
    match obj.get(key) {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(_)) => Value::Null,
        Some(other) => Value::String(other.to_string()),
    }
}

/// kustomize's name hash of a generated ConfigMap or Secret.
pub(crate) fn content_hash(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut m = serde_json::Map::new();
    // serde_json without preserve_order sorts keys, like Go's json.Marshal of a map.
    m.insert("kind".into(), Value::String(kind.to_string()));
    m.insert("name".into(), Value::String(String::new()));
    m.insert("data".into(), node_value(obj, "data"));
    if kind == "Secret" {
        m.insert("type".into(), node_value(obj, "type"));
        if let Some(Value::Object(sd)) = obj.get("stringData") {
            m.insert("stringData".into(), Value::Object(sd.clone()));
        }
    } else if let Some(Value::Object(b)) = obj.get("binaryData") {
        m.insert("binaryData".into(), Value::Object(b.clone()));
    }
    let encoded = go_json(&sorted(Value::Object(m)));
    let digest = Sha256::digest(encoded.as_bytes());
    let hex = hex::encode(digest);
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// A copy with every map's keys sorted (independent of serde_json's map feature flags).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

/// Appends the content hash to every generated object that wants one (end of the build).
pub(crate) fn add_hash_suffixes(resources: &mut [Resource]) {
    for r in resources.iter_mut() {
        if r.generated.as_ref().is_some_and(|g| g.hash_suffix) {
            let h = content_hash(&r.obj);
            let name = format!("{}-{}", r.name(), h);
            r.set_name(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_kustomize() {
        // Values observed from `kubectl kustomize` (kustomize v5.5).
        let cm = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "p-cfg"}, "data": {"a": "b"}});
        assert_eq!(content_hash(&cm), "4h2mbtbbt6");
        let empty = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "x"}});
        assert_eq!(content_hash(&empty), "6ct58987ht");
    }

    #[test]
    fn base64_wraps_at_70_columns_like_kustomize() {
        assert_eq!(base64_wrapped(b"abc"), "YWJj");
        let long = base64_wrapped(&[b'x'; 60]);
        let lines: Vec<&str> = long.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 70);
        assert!(long.ends_with('\n'));
        // 68 characters stay one line; 72 become 70 + newline + 2 + newline.
        assert_eq!(base64_wrapped(&[b'y'; 51]).len(), 68);
        assert_eq!(base64_wrapped(&[b'y'; 52]).len(), 74);
    }
}
