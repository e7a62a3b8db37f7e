//! `replacements:` — copy a value from one object's field into fields of other objects.

use serde_json::{Map, Value};

use super::BuildError;
use super::kustomization::{FieldOptions, ReplacementEntry, Selector};
use super::loader::{self, Loader};
use super::resource::{CompiledSelector, Resource};

/// One step of a replacement field path.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Match(String, String),
    All,
}

/// Splits a dotted field path on the dots outside brackets (`a.[name=x.y].b`).
pub(crate) fn split_dotted(p: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in p.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            '.' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn parse_path(p: &str) -> Vec<Step> {
    split_dotted(p)
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                match inner.split_once('=') {
                    Some((k, v)) => Step::Match(k.to_string(), v.to_string()),
                    None => Step::Key(inner.to_string()),
                }
            } else if s == "*" {
                Step::All
            } else if let Ok(i) = s.parse::<usize>() {
                Step::Index(i)
            } else {
                Step::Key(s)
            }
        })
        .collect()
}

fn get<'v>(v: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    let Some((first, rest)) = steps.split_first() else {
        return Some(v);
    };
    match (first, v) {
        (Step::Key(k), Value::Object(m)) => get(m.get(k)?, rest),
        (Step::Index(i), Value::Array(a)) => get(a.get(*i)?, rest),
        (Step::Match(k, val), Value::Array(a)) => a
            .iter()
            .find(|e| e.get(k).is_some_and(|x| scalar_eq(x, val)))
            .and_then(|e| get(e, rest)),
        (Step::All, Value::Array(a)) => a.first().and_then(|e| get(e, rest)),
        _ => None,
    }
}

fn scalar_eq(x: &Value, s: &str) -> bool {
    match x {
        Value::String(v) => v == s,
        Value::Number(n) => n.to_string() == s,
        Value::Bool(b) => b.to_string() == s,
        _ => false,
    }
}

/// Sets `value` at every node the path reaches; returns how many were set.
fn set(v: &mut Value, steps: &[Step], create: bool, f: &mut dyn FnMut(&mut Value)) -> usize {
    let Some((first, rest)) = steps.split_first() else {
        f(v);
        return 1;
    };
    match (first, v) {
        (Step::Key(k), Value::Object(m)) => match m.get_mut(k) {
            Some(child) => set(child, rest, create, f),
            None if create => {
                let child = m.entry(k.clone()).or_insert(if rest.is_empty() {
                    Value::Null
                } else {
                    Value::Object(Map::new())
                });
                set(child, rest, create, f)
            }
            None => 0,
        },
        (Step::Index(i), Value::Array(a)) => match a.get_mut(*i) {
            Some(child) => set(child, rest, create, f),
            None => 0,
        },
        (Step::Match(k, val), Value::Array(a)) => {
            let mut n = 0;
            for e in a.iter_mut() {
                if e.get(k.as_str()).is_some_and(|x| scalar_eq(x, val)) {
                    n += set(e, rest, create, f);
                }
            }
            n
        }
        (Step::All, Value::Array(a)) => a.iter_mut().map(|e| set(e, rest, create, f)).sum(),
        (Step::All, Value::Object(m)) => m.values_mut().map(|e| set(e, rest, create, f)).sum(),
        (_, v) if v.is_null() && create => {
            *v = Value::Object(Map::new());
            set(v, steps, create, f)
        }
        _ => 0,
    }
}

/// Replacement selectors match group, version, kind, name and namespace exactly (no regular
/// expressions, unlike patch targets).
fn exact(s: &Selector) -> Selector {
    let esc = |v: &Option<String>| v.as_ref().map(|x| regex::escape(x));
    Selector {
        group: esc(&s.group),
        version: esc(&s.version),
        kind: esc(&s.kind),
        name: esc(&s.name),
        namespace: esc(&s.namespace),
        label_selector: s.label_selector.clone(),
        annotation_selector: s.annotation_selector.clone(),
    }
}

/// A string as YAML would read it unquoted (numbers, booleans, null become typed).
fn retyped(v: &Value) -> Value {
    match v {
        Value::String(s) => match crate::yaml::from_str::<Value>(s) {
            Ok(t @ (Value::Number(_) | Value::Bool(_))) => t,
            _ => v.clone(),
        },
        v => v.clone(),
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn apply(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    entries: &[ReplacementEntry],
    resources: &mut [Resource],
) -> Result<(), BuildError> {
    let err = |message: String| BuildError::Transform {
        file: file.to_string(),
        message: format!("replacements: {message}"),
    };
    let mut all: Vec<ReplacementEntry> = Vec::new();
    for e in entries {
        if let Some(p) = &e.path {
            let rel = loader.resolve(dir, p, file)?;
            let text = loader.read_text(&rel, file)?;
            for doc in loader::parse_yaml(&text, &rel, &loader.limits)? {
                let items = match doc {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for item in items {
                    let r: ReplacementEntry = serde_json::from_value(item).map_err(|e| {
                        BuildError::InvalidKustomization {
                            file: rel.clone(),
                            message: format!("replacement: {e}"),
                        }
                    })?;
                    all.push(r);
                }
            }
        } else {
            all.push(e.clone());
        }
    }
    for rep in &all {
        let Some(src) = &rep.source else {
            return Err(err("a replacement has no source".into()));
        };
        let sel = CompiledSelector::new(&Selector {
            group: src.group.clone(),
            version: src.version.clone(),
            kind: src.kind.clone(),
            name: src.name.as_ref().map(|n| regex::escape(n)),
            namespace: src.namespace.as_ref().map(|n| regex::escape(n)),
            ..Default::default()
        })
        .map_err(&err)?;
        let matched: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.matches_any_id(&sel))
            .collect();
        if matched.len() != 1 {
            return Err(err(format!(
                "source {}/{} matches {} objects, expected exactly one",
                src.kind.as_deref().unwrap_or("*"),
                src.name.as_deref().unwrap_or("*"),
                matched.len()
            )));
        }
        let path = src.field_path.as_deref().unwrap_or("metadata.name");
        let Some(mut value) = get(&matched[0].obj, &parse_path(path)).cloned() else {
            return Err(err(format!(
                "field '{path}' not found in source {}",
                matched[0].id()
            )));
        };
        if let Some(FieldOptions {
            delimiter: Some(d),
            index,
            ..
        }) = &src.options
        {
            let text = as_text(&value).ok_or_else(|| err("delimiter on a non-scalar".into()))?;
            let parts: Vec<&str> = text.split(d.as_str()).collect();
            let part = usize::try_from(*index)
                .ok()
                .and_then(|i| parts.get(i))
                .ok_or_else(|| err(format!("options.index {index} out of bounds")))?;
            value = Value::String(part.to_string());
        }
        for t in &rep.targets {
            let Some(select) = &t.select else {
                return Err(err("a replacement target has no select".into()));
            };
            let sel = CompiledSelector::new(&exact(select)).map_err(&err)?;
            let rejects: Vec<CompiledSelector> = t
                .reject
                .iter()
                .map(|r| CompiledSelector::new(&exact(r)))
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            let opts = t.options.clone().unwrap_or_default();
            for r in resources.iter_mut() {
                if !r.matches_any_id(&sel) || rejects.iter().any(|x| r.matches_any_id(x)) {
                    continue;
                }
                for fp in &t.field_paths {
                    let steps = parse_path(fp);
                    let mut failure = None;
                    let n = set(&mut r.obj, &steps, opts.create, &mut |node| {
                        match &opts.delimiter {
                            Some(d) => {
                                let cur = as_text(node).unwrap_or_default();
                                let mut parts: Vec<String> =
                                    cur.split(d.as_str()).map(str::to_string).collect();
                                let Some(newpart) = as_text(&value) else {
                                    failure =
                                        Some("delimiter with a non-scalar source".to_string());
                                    return;
                                };
                                match usize::try_from(opts.index) {
                                    Ok(i) if i < parts.len() => parts[i] = newpart,
                                    Ok(_) => parts.push(newpart),
                                    Err(_) => parts.insert(0, newpart),
                                }
                                *node = Value::String(parts.join(d));
                            }
                            // A created field gets a plain scalar: kustomize emits it unquoted,
                            // so "1" reads back as a number.
                            None if node.is_null() => *node = retyped(&value),
                            None => *node = value.clone(),
                        }
                    });
                    if let Some(f) = failure {
                        return Err(err(f));
                    }
                    if n == 0 && !opts.create {
                        return Err(err(format!(
                            "unable to find field '{fp}' in replacement target {}",
                            r.id()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("spec.containers.[name=app].image"),
            vec![
                Step::Key("spec".into()),
                Step::Key("containers".into()),
                Step::Match("name".into(), "app".into()),
                Step::Key("image".into())
            ]
        );
        assert_eq!(
            parse_path("metadata.annotations.[a.b/c]"),
            vec![
                Step::Key("metadata".into()),
                Step::Key("annotations".into()),
                Step::Key("a.b/c".into())
            ]
        );
    }
}
