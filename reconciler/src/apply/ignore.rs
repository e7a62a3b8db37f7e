//! Drift rules (`spec.ignore`): JSON pointers per target whose live values are not fought.
//!
//! Semantics: for an object that already exists, every ignored path of a matching rule takes the
//! live value in the intent before it is compared or applied (so the apply neither changes it
//! nor gives up ownership, which would reset it); a path absent from the live object is removed
//! from the intent. A new object is created with the values from the build.

use regex::Regex;
use serde_json::Value;

use super::object::ObjectRef;
use crate::api::Selector;
use crate::api::kustomization::DriftIgnoreRule;

/// A rule that cannot be used (bad regular expression or selector).
#[derive(Debug, thiserror::Error)]
#[error("spec.ignore[{index}]: {message}")]
pub struct IgnoreRuleError {
    /// Position of the rule in `spec.ignore`, from 0.
    pub index: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Compiled drift rules.
#[derive(Debug, Default, Clone)]
pub struct DriftRules {
    rules: Vec<(Matcher, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct Matcher {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<Regex>,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    annotations: Vec<Requirement>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!(
                "selector '{text}': only equality-based requirements (k=v, k!=v, k, !k) are supported"
            ));
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

fn matches_requirements(map: Option<&Value>, reqs: &[Requirement]) -> bool {
    let get = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    })
}

impl Matcher {
    fn new(selector: &Selector) -> Result<Self, String> {
        let name = selector
            .name
            .as_deref()
            .map(|n| Regex::new(&format!("^(?:{n})$")).map_err(|e| format!("name: {e}")))
            .transpose()?;
        Ok(Self {
            group: selector.group.clone(),
            version: selector.version.clone(),
            kind: selector.kind.clone(),
            name,
            namespace: selector.namespace.clone(),
            labels: parse_selector(selector.label_selector.as_deref().unwrap_or(""))?,
            annotations: parse_selector(selector.annotation_selector.as_deref().unwrap_or(""))?,
        })
    }

    fn matches(&self, id: &ObjectRef, object: &Value) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.group, &id.group)
            && eq(&self.version, &id.version)
            && eq(&self.kind, &id.kind)
            && eq(&self.namespace, id.namespace.as_deref().unwrap_or(""))
            && self.name.as_ref().is_none_or(|r| r.is_match(&id.name))
            && matches_requirements(object.pointer("/metadata/labels"), &self.labels)
            && matches_requirements(object.pointer("/metadata/annotations"), &self.annotations)
    }
}

impl DriftRules {
    /// Compiles `spec.ignore`.
    pub fn new(rules: &[DriftIgnoreRule]) -> Result<Self, IgnoreRuleError> {
        let mut out = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let matcher = Matcher::new(&rule.target.clone().unwrap_or_default())
                .map_err(|message| IgnoreRuleError { index, message })?;
            if let Some(bad) = rule.paths.iter().find(|p| !p.starts_with('/')) {
                return Err(IgnoreRuleError {
                    index,
                    message: format!("path '{bad}' is not a JSON pointer"),
                });
            }
            out.push((matcher, rule.paths.clone()));
        }
        Ok(Self { rules: out })
    }

    /// True when there is no rule: every drifted field is reverted.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when a rule matches the object whose intent is `intent`: applying it needs the live
    /// object.
    pub fn applies_to(&self, id: &ObjectRef, intent: &Value) -> bool {
        self.rules
            .iter()
            .any(|(matcher, _)| matcher.matches(id, intent))
    }

    /// Replaces, in `intent`, each ignored path with the value in `live` (or removes it when
    /// `live` has none).
    pub fn adopt_live_values(&self, id: &ObjectRef, intent: &mut Value, live: &Value) {
        for (matcher, paths) in &self.rules {
            if !matcher.matches(id, intent) {
                continue;
            }
            for path in paths {
                match live.pointer(path) {
                    Some(value) => set_pointer(intent, path, value.clone()),
                    None => remove_pointer(intent, path),
                }
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Option<(&str, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((parent, unescape(last)))
}

/// Sets `path` in `target`, creating intermediate objects (never array elements).
fn set_pointer(target: &mut Value, path: &str, value: Value) {
    let Some((parent, last)) = split_pointer(path) else {
        return;
    };
    if target.pointer(parent).is_none() {
        set_pointer(target, parent, Value::Object(Default::default()));
    }
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
        }
        Some(Value::Array(items)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

fn remove_pointer(target: &mut Value, path: &str) {
    let Some((parent, last)) = split_pointer(path) else {
        return;
    };
    if let Some(Value::Object(map)) = target.pointer_mut(parent) {
        map.remove(&last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(paths: &[&str], target: Option<Selector>) -> DriftIgnoreRule {
        DriftIgnoreRule {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            target,
        }
    }

    #[test]
    fn ignored_paths_take_live_values_for_matching_targets() {
        let rules = DriftRules::new(&[rule(
            &["/spec/replicas", "/metadata/annotations/x~1y"],
            Some(Selector {
                kind: Some("Deployment".into()),
                name: Some("vo.*".into()),
                label_selector: Some("app=vote".into()),
                ..Default::default()
            }),
        )])
        .unwrap();
        let mut intent = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "vote", "labels": {"app": "vote"}}, "spec": {"replicas": 2}});
        let id = ObjectRef::from_object(&intent).unwrap();
        let live = json!({"metadata": {"annotations": {"x/y": "hpa"}}, "spec": {"replicas": 7}});
        rules.adopt_live_values(&id, &mut intent, &live);
        assert_eq!(intent.pointer("/spec/replicas"), Some(&json!(7)));
        assert_eq!(
            intent.pointer("/metadata/annotations/x~1y"),
            Some(&json!("hpa"))
        );

        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "redis", "labels": {"app": "vote"}}, "spec": {"replicas": 2}});
        let id = ObjectRef::from_object(&other).unwrap();
        rules.adopt_live_values(&id, &mut other, &live);
        assert_eq!(
            other.pointer("/spec/replicas"),
            Some(&json!(2)),
            "name does not match"
        );
    }

    #[test]
    fn path_missing_live_is_removed_and_bad_rules_refused() {
        let rules = DriftRules::new(&[rule(&["/spec/replicas"], None)]).unwrap();
        let mut intent = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"replicas": 1}});
        let id = ObjectRef::from_object(&intent).unwrap();
        rules.adopt_live_values(&id, &mut intent, &json!({"spec": {}}));
        assert_eq!(intent.pointer("/spec/replicas"), None);
        let bad = DriftRules::new(&[rule(
            &["/a"],
            Some(Selector {
                name: Some("(".into()),
                ..Default::default()
            }),
        )])
        .unwrap_err();
        assert_eq!(bad.index, 0);
        assert!(
            DriftRules::new(&[rule(
                &["/a"],
                Some(Selector {
                    label_selector: Some("app in (a,b)".into()),
                    ..Default::default()
                }),
            )])
            .is_err()
        );
    }
}
