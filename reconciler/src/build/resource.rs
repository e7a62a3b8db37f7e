//! One object under construction plus what kustomize remembers about it: its earlier ids (for
//! name-reference updates), the prefixes/suffixes applied, and generator bookkeeping.

use serde_json::{Map, Value};

use super::kustomization::Selector;
use super::schema;

/// An object id as kustomize sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResId {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ResId {
    pub fn of(obj: &Value) -> ResId {
        let (group, version) = split_api_version(str_at(obj, &["apiVersion"]));
        ResId {
            group: group.to_string(),
            version: version.to_string(),
            kind: str_at(obj, &["kind"]).to_string(),
            namespace: str_at(obj, &["metadata", "namespace"]).to_string(),
            name: str_at(obj, &["metadata", "name"]).to_string(),
        }
    }

    /// The namespace with kustomize's equivalence of "" and "default".
    pub fn effective_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }

    pub fn is_cluster_scoped(&self) -> bool {
        schema::is_cluster_scoped(&self.group, &self.version, &self.kind)
    }

    /// Identity used for duplicate detection: group, version, kind, namespace (cluster-scoped:
    /// none), name. The version is part of it, as in kustomize: the same kind and name in two
    /// API versions are two objects.
    pub fn key(&self) -> (String, String, String, String, String) {
        let ns = if self.is_cluster_scoped() {
            String::new()
        } else {
            self.effective_namespace().to_string()
        };
        (
            self.group.clone(),
            self.version.clone(),
            self.kind.clone(),
            ns,
            self.name.clone(),
        )
    }
}

impl std::fmt::Display for ResId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gv = if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        if self.namespace.is_empty() {
            write!(f, "{} {} {}", gv, self.kind, self.name)
        } else {
            write!(f, "{} {} {}/{}", gv, self.kind, self.namespace, self.name)
        }
    }
}

pub(crate) fn split_api_version(av: &str) -> (&str, &str) {
    match av.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    }
}

/// A string at a path of map keys, or "".
pub(crate) fn str_at<'v>(obj: &'v Value, path: &[&str]) -> &'v str {
    let mut cur = obj;
    for p in path {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// Generator bookkeeping.
#[derive(Clone, Debug, Default)]
pub(crate) struct Generated {
    /// Append the content hash to the name at the end of the build.
    pub hash_suffix: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Resource {
    pub obj: Value,
    /// Ids this object had before renames, oldest first (the original id is `prev[0]`, or the
    /// current id when it was never renamed).
    pub prev: Vec<ResId>,
    /// Prefixes and suffixes applied so far (outermost last), to disambiguate references.
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
    pub generated: Option<Generated>,
    /// Names of the vars bound to this object (see `vars`).
    pub vars: Vec<String>,
    /// JSON pointers of map values its file wrote with no text (`key:`): null like
    /// `key: null`, but kustomize's first strategic merge into the object drops them.
    pub empty_nulls: Vec<String>,
    /// The file it was read from (root-relative); empty for generated objects.
    pub file: String,
}

impl Resource {
    pub fn new(obj: Value) -> Self {
        Resource {
            obj,
            prev: Vec::new(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            generated: None,
            vars: Vec::new(),
            empty_nulls: Vec::new(),
            file: String::new(),
        }
    }

    pub fn id(&self) -> ResId {
        ResId::of(&self.obj)
    }

    /// The id the object had when it was read or generated.
    pub fn org_id(&self) -> ResId {
        self.prev.first().cloned().unwrap_or_else(|| self.id())
    }

    pub fn kind(&self) -> &str {
        str_at(&self.obj, &["kind"])
    }

    pub fn name(&self) -> &str {
        str_at(&self.obj, &["metadata", "name"])
    }

    pub fn namespace(&self) -> &str {
        str_at(&self.obj, &["metadata", "namespace"])
    }

    /// Records the current id before a rename (name or namespace change).
    pub fn remember_id(&mut self) {
        let id = self.id();
        if self.prev.last() != Some(&id) {
            self.prev.push(id);
        }
    }

    pub fn set_name(&mut self, name: &str) {
        self.remember_id();
        *metadata_mut(&mut self.obj)
            .entry("name")
            .or_insert(Value::Null) = Value::String(name.to_string());
    }

    pub fn set_namespace(&mut self, ns: &str) {
        if self.namespace() == ns {
            return;
        }
        self.remember_id();
        *metadata_mut(&mut self.obj)
            .entry("namespace")
            .or_insert(Value::Null) = Value::String(ns.to_string());
    }

    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.obj.get("metadata")?.get("labels")?.as_object()
    }

    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.obj.get("metadata")?.get("annotations")?.as_object()
    }

    /// Whether a selector picks this object by any id it has had (current, original or
    /// intermediate), as kustomize's replacements select sources and targets.
    pub fn matches_any_id(&self, sel: &CompiledSelector) -> bool {
        let id_ok = |id: &ResId| {
            let re_ok =
                |re: &Option<regex::Regex>, v: &str| re.as_ref().is_none_or(|re| re.is_match(v));
            re_ok(&sel.kind, &id.kind)
                && re_ok(&sel.group, &id.group)
                && re_ok(&sel.version, &id.version)
                && re_ok(&sel.name, &id.name)
                && re_ok(&sel.namespace, id.effective_namespace())
        };
        (id_ok(&self.id()) || self.prev.iter().any(id_ok))
            && sel
                .labels
                .as_ref()
                .is_none_or(|ls| ls.matches(self.labels()))
            && sel
                .annotations
                .as_ref()
                .is_none_or(|ls| ls.matches(self.annotations()))
    }

    /// Whether a target selector picks this object (original or current name/namespace).
    pub fn matches(&self, sel: &CompiledSelector) -> bool {
        let id = self.id();
        let gvk_ok = [
            (&sel.kind, &id.kind),
            (&sel.group, &id.group),
            (&sel.version, &id.version),
        ]
        .iter()
        .all(|(re, v)| re.as_ref().is_none_or(|re| re.is_match(v)));
        if !gvk_ok {
            return false;
        }
        let org = self.org_id();
        if let Some(re) = &sel.name
            && !re.is_match(&org.name)
            && !re.is_match(&id.name)
        {
            return false;
        }
        if let Some(re) = &sel.namespace
            && !re.is_match(org.effective_namespace())
            && !re.is_match(id.effective_namespace())
        {
            return false;
        }
        if let Some(ls) = &sel.labels
            && !ls.matches(self.labels())
        {
            return false;
        }
        if let Some(ls) = &sel.annotations
            && !ls.matches(self.annotations())
        {
            return false;
        }
        true
    }
}

/// The `metadata` map of an object, created if missing.
pub(crate) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    map_entry(obj, "metadata")
}

/// The map under `key` in `obj` (which must be a map), created (or replaced if not a map).
pub(crate) fn map_entry<'v>(obj: &'v mut Value, key: &str) -> &'v mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(m) = obj else {
        unreachable!("just made an object")
    };
    let v = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// A selector with its regular expressions compiled once.
pub(crate) struct CompiledSelector {
    pub group: Option<regex::Regex>,
    pub version: Option<regex::Regex>,
    pub kind: Option<regex::Regex>,
    pub name: Option<regex::Regex>,
    pub namespace: Option<regex::Regex>,
    pub labels: Option<LabelSelector>,
    pub annotations: Option<LabelSelector>,
}

impl CompiledSelector {
    pub fn new(s: &Selector) -> Result<Self, String> {
        let re = |p: &Option<String>| -> Result<Option<regex::Regex>, String> {
            match p.as_deref() {
                None | Some("") => Ok(None),
                Some(p) => regex::Regex::new(&format!("^(?:{p})$"))
                    .map(Some)
                    .map_err(|e| format!("invalid name pattern '{p}': {e}")),
            }
        };
        Ok(CompiledSelector {
            group: re(&s.group)?,
            version: re(&s.version)?,
            kind: re(&s.kind)?,
            name: re(&s.name)?,
            namespace: re(&s.namespace)?,
            labels: match s.label_selector.as_deref() {
                None | Some("") => None,
                Some(l) => Some(LabelSelector::parse(l)?),
            },
            annotations: match s.annotation_selector.as_deref() {
                None | Some("") => None,
                Some(l) => Some(LabelSelector::parse(l)?),
            },
        })
    }
}

/// A Kubernetes label selector in its string form (`a=b,c!=d,e in (x,y),!f,g`).
pub(crate) struct LabelSelector {
    reqs: Vec<(String, Op, Vec<String>)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Exists,
    NotExists,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for part in parts {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let bad = || format!("invalid label selector '{s}'");
            if let Some(k) = p.strip_prefix('!') {
                reqs.push((k.trim().to_string(), Op::NotExists, vec![]));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push((k.trim().to_string(), Op::Ne, vec![v.trim().to_string()]));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push((k.trim().to_string(), Op::Eq, vec![v.trim().to_string()]));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push((k.trim().to_string(), Op::Eq, vec![v.trim().to_string()]));
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                reqs.push((k.trim().to_string(), Op::NotIn, set(rest).ok_or_else(bad)?));
            } else if let Some((k, rest)) = p.split_once(" in ") {
                reqs.push((k.trim().to_string(), Op::In, set(rest).ok_or_else(bad)?));
            } else if p.contains(' ') || p.contains('(') {
                return Err(bad());
            } else {
                reqs.push((p.to_string(), Op::Exists, vec![]));
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.reqs.iter().all(|(k, op, vals)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                Op::Eq => v == Some(vals[0].as_str()),
                Op::Ne => v != Some(vals[0].as_str()),
                Op::In => v.is_some_and(|v| vals.iter().any(|x| x == v)),
                Op::NotIn => !v.is_some_and(|v| vals.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

fn set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}
