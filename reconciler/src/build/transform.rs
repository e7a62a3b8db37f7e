//! The simple built-in transformers: namespace, name prefix/suffix, labels, annotations,
//! images and replicas — kustomize v5 semantics.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::BuildError;
use super::config::TransformerConfig;
use super::fieldspec::{self, SELECTOR_LABELS, TEMPLATE_ANNOTATIONS, TEMPLATE_LABELS};
use super::kustomization::{FieldSpec, ImageEntry, LabelEntry, ReplicaEntry};
use super::resource::Resource;

/// Which (Cluster)RoleBinding subjects get the namespace (NamespaceTransformer's
/// `setRoleBindingSubjects`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SubjectMode {
    /// Every subject *named* `default`, whatever its kind (kustomize's default).
    #[default]
    NamedDefault,
    /// Every ServiceAccount subject.
    AllServiceAccounts,
    /// None.
    None,
}

impl SubjectMode {
    /// kustomize's names: `defaultOnly` (or empty), `allServiceAccounts`, `none`.
    pub fn parse(s: &str) -> Option<SubjectMode> {
        match s {
            "" | "defaultOnly" => Some(SubjectMode::NamedDefault),
            "allServiceAccounts" => Some(SubjectMode::AllServiceAccounts),
            "none" => Some(SubjectMode::None),
            _ => None,
        }
    }
}

/// How the namespace transformer sets fields.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NamespaceMode {
    /// Only fields that are absent or empty get the namespace (`unsetOnly`).
    pub unset_only: bool,
    pub subjects: SubjectMode,
}

/// kustomize's default namespace field specs (group, kind, path, create): the name of `v1`
/// Namespace objects, the service namespace of APIServices (created) and of CRD conversion
/// webhooks (only where set). `metadata/namespace` itself is always handled.
const NAMESPACE_FIELDS: [(&str, &str, &str, bool); 3] = [
    ("", "Namespace", "metadata/name", true),
    (
        "apiregistration.k8s.io",
        "APIService",
        "spec/service/namespace",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "spec/conversion/webhook/clientConfig/service/namespace",
        false,
    ),
];

/// The field specs of a kustomization's `namespace:`: kustomize's defaults, then the
/// configured ones.
pub(crate) fn namespace_specs(configured: &[FieldSpec]) -> Vec<FieldSpec> {
    NAMESPACE_FIELDS
        .iter()
        .map(|(group, kind, path, create)| FieldSpec {
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(kind.to_string()),
            path: path.to_string(),
            create: *create,
            ..Default::default()
        })
        .chain(configured.iter().cloned())
        .collect()
}

/// The namespace transformer as kustomize v5 applies it: `metadata.namespace` on every object
/// its schema does not know as cluster-scoped; (Cluster)RoleBinding subjects per
/// `mode.subjects` (by default every subject *named* `default`, kustomize's rule, whatever
/// the subject's kind or namespace); then the field `specs` (see `namespace_specs`) — a
/// `metadata/name` spec renames only objects of apiVersion `v1`. With `mode.unset_only`,
/// only fields that are absent or empty are set (so no Namespace object is renamed).
pub(crate) fn namespace(
    resources: &mut [Resource],
    ns: &str,
    specs: &[FieldSpec],
    mode: NamespaceMode,
) {
    let set = |m: &mut Map<String, Value>| {
        let current = m.get("namespace");
        if !mode.unset_only || current.is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        }
    };
    for r in resources.iter_mut() {
        let id = r.id();
        if !id.is_cluster_scoped() && (!mode.unset_only || r.namespace().is_empty()) {
            r.set_namespace(ns);
        }
        let binding = id.kind == "RoleBinding" || id.kind == "ClusterRoleBinding";
        if binding && let Some(Value::Array(subjects)) = r.obj.get_mut("subjects") {
            for s in subjects {
                let (key, want) = match mode.subjects {
                    SubjectMode::NamedDefault => ("name", "default"),
                    SubjectMode::AllServiceAccounts => ("kind", "ServiceAccount"),
                    SubjectMode::None => break,
                };
                if s.get(key).and_then(Value::as_str) == Some(want)
                    && let Some(m) = s.as_object_mut()
                {
                    set(m);
                }
            }
        }
        for f in specs.iter().filter(|f| f.selects(&id)) {
            match f.path.as_str() {
                "metadata/namespace" => {}
                "subjects/namespace" if binding => {}
                "metadata/name" => {
                    let v1 = id.group.is_empty() && id.version == "v1";
                    if v1 && !mode.unset_only && r.name() != ns {
                        r.set_name(ns);
                    }
                }
                path => set_string_at(&mut r.obj, path, f.create, ns, mode.unset_only),
            }
        }
    }
}

/// Kinds whose names prefixes and suffixes never touch.
fn keeps_name(group: &str, kind: &str) -> bool {
    kind == "CustomResourceDefinition"
        || kind == "Namespace"
        || (kind == "APIService" && group == "apiregistration.k8s.io")
}

pub(crate) fn prefix_suffix(resources: &mut [Resource], prefix: &str, suffix: &str) {
    if prefix.is_empty() && suffix.is_empty() {
        return;
    }
    for r in resources.iter_mut() {
        let id = r.id();
        if keeps_name(&id.group, &id.kind) {
            continue;
        }
        let name = format!("{prefix}{}{suffix}", id.name);
        r.set_name(&name);
        if !prefix.is_empty() {
            r.prefixes.push(prefix.to_string());
        }
        if !suffix.is_empty() {
            r.suffixes.push(suffix.to_string());
        }
    }
}

/// The prefix/suffix transformers with their field specs: `metadata/name` renames the object
/// (tracked for name references), other field specs get the affix on the string there. The
/// kinds kustomize never renames are skipped whatever the spec.
pub(crate) fn affix(resources: &mut [Resource], prefix: &str, suffix: &str, specs: &[FieldSpec]) {
    for r in resources.iter_mut() {
        let id = r.org_id();
        if keeps_name(&id.group, &id.kind) {
            continue;
        }
        for spec in specs.iter().filter(|s| s.selects(&id)) {
            if spec.path == "metadata/name" {
                prefix_suffix(std::slice::from_mut(r), prefix, suffix);
                continue;
            }
            let segs: Vec<&str> = spec
                .path
                .split('/')
                .map(|s| s.trim_end_matches("[]"))
                .collect();
            fieldspec::visit_values(&mut r.obj, &segs, &mut |v| {
                if let Value::String(s) = v {
                    *s = format!("{prefix}{s}{suffix}");
                }
            });
        }
    }
}

fn set_all(m: &mut Map<String, Value>, pairs: &BTreeMap<String, String>) {
    for (k, v) in pairs {
        m.insert(k.clone(), Value::String(v.clone()));
    }
}

/// `commonLabels` (everywhere incl. selectors) and `labels` entries.
pub(crate) fn labels(
    resources: &mut [Resource],
    common: &BTreeMap<String, String>,
    entries: &[LabelEntry],
    cfg: &TransformerConfig,
) {
    // Configured label fields: `commonLabels` ones wherever selectors are labelled,
    // `templateLabels` ones wherever templates are, `labels` ones always.
    let with_selectors: Vec<FieldSpec> = cfg
        .common_labels
        .iter()
        .chain(&cfg.template_labels)
        .chain(&cfg.labels)
        .cloned()
        .collect();
    let with_templates: Vec<FieldSpec> = cfg
        .template_labels
        .iter()
        .chain(&cfg.labels)
        .cloned()
        .collect();
    if !common.is_empty() {
        apply_labels(resources, common, true, true, &user_specs(&with_selectors));
    }
    for e in entries {
        if e.pairs.is_empty() {
            continue;
        }
        let configured = if e.include_selectors {
            &with_selectors
        } else if e.include_templates {
            &with_templates
        } else {
            &cfg.labels
        };
        let mut specs = user_specs(&e.fields);
        specs.extend(user_specs(configured));
        apply_labels(
            resources,
            &e.pairs,
            e.include_selectors,
            e.include_selectors || e.include_templates,
            &specs,
        );
    }
}

fn user_specs(specs: &[FieldSpec]) -> Vec<UserSpec<'_>> {
    specs
        .iter()
        .map(|f| {
            (
                f.group.as_deref(),
                f.version.as_deref(),
                f.kind.as_deref(),
                f.path.as_str(),
                f.create,
            )
        })
        .collect()
}

type UserSpec<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    bool,
);

fn apply_labels(
    resources: &mut [Resource],
    pairs: &BTreeMap<String, String>,
    selectors: bool,
    templates: bool,
    user: &[UserSpec<'_>],
) {
    for r in resources.iter_mut() {
        let id = r.id();
        fieldspec::visit_maps(&mut r.obj, "metadata/labels", true, &mut |m| {
            set_all(m, pairs)
        });
        if templates {
            for s in TEMPLATE_LABELS.iter().filter(|s| s.applies_to(&id)) {
                fieldspec::visit_maps(&mut r.obj, s.path, s.create, &mut |m| set_all(m, pairs));
            }
        }
        if selectors {
            for s in SELECTOR_LABELS.iter().filter(|s| s.applies_to(&id)) {
                fieldspec::visit_maps(&mut r.obj, s.path, s.create, &mut |m| set_all(m, pairs));
            }
        }
        for (g, v, k, path, create) in user {
            let ok = g.is_none_or(|g| g == id.group)
                && v.is_none_or(|v| v == id.version)
                && k.is_none_or(|k| k == id.kind);
            if ok {
                fieldspec::visit_maps(&mut r.obj, path, *create, &mut |m| set_all(m, pairs));
            }
        }
    }
}

pub(crate) fn annotations(
    resources: &mut [Resource],
    pairs: &BTreeMap<String, String>,
    extra: &[FieldSpec],
) {
    if pairs.is_empty() {
        return;
    }
    for r in resources.iter_mut() {
        let id = r.id();
        for f in extra.iter().filter(|f| f.selects(&id)) {
            fieldspec::visit_maps(&mut r.obj, &f.path, f.create, &mut |m| set_all(m, pairs));
        }
        fieldspec::visit_maps(&mut r.obj, "metadata/annotations", true, &mut |m| {
            set_all(m, pairs)
        });
        for s in TEMPLATE_ANNOTATIONS.iter().filter(|s| s.applies_to(&id)) {
            fieldspec::visit_maps(&mut r.obj, s.path, s.create, &mut |m| set_all(m, pairs));
        }
    }
}

/// Splits an image reference into name, tag and digest, as kustomize does.
pub(crate) fn split_image(image: &str) -> (&str, &str, &str) {
    let slash = image.find('/').filter(|i| *i > 0).unwrap_or(0);
    let search = &image[slash..];
    let at = search.find('@');
    let colon = search.find(':');
    match (colon, at) {
        (None, None) => (image, "", ""),
        (c, Some(a)) if c.is_none_or(|c| a < c) => {
            let a = a + slash;
            (&image[..a], "", &image[a + 1..])
        }
        (Some(c), Some(a)) => {
            let (c, a) = (c + slash, a + slash);
            (&image[..c], &image[c + 1..a], &image[a + 1..])
        }
        (Some(c), None) => {
            let c = c + slash;
            (&image[..c], &image[c + 1..], "")
        }
        (None, Some(_)) => unreachable!("covered by the digest-only arm"),
    }
}

/// kustomize matches `^<name>(@sha256)?(:[a-zA-Z0-9_.{}-]*)?$` (name not escaped).
fn image_matches(value: &str, name: &str) -> bool {
    let Some(mut rest) = value.strip_prefix(name) else {
        return false;
    };
    if let Some(r) = rest.strip_prefix("@sha256") {
        rest = r;
    }
    if rest.is_empty() {
        return true;
    }
    match rest.strip_prefix(':') {
        Some(tag) => tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.{}-".contains(c)),
        None => false,
    }
}

fn update_image(value: &str, e: &ImageEntry) -> Option<String> {
    if !image_matches(value, &e.name) {
        return None;
    }
    let (name, tag, digest) = split_image(value);
    let mut name = name.to_string();
    let mut tag = tag.to_string();
    let mut digest = digest.to_string();
    if let Some(n) = e.new_name.as_deref().filter(|n| !n.is_empty()) {
        name = n.to_string();
    }
    let new_tag = e.new_tag.as_deref().unwrap_or("");
    let new_digest = e.digest.as_deref().unwrap_or("");
    if !new_tag.is_empty() && !new_digest.is_empty() {
        tag = new_tag.to_string();
        digest = new_digest.to_string();
    } else if !new_tag.is_empty() {
        tag = new_tag.to_string();
        digest.clear();
    } else if !new_digest.is_empty() {
        tag.clear();
        digest = new_digest.to_string();
    }
    if let Some(s) = e.tag_suffix.as_deref().filter(|s| !s.is_empty()) {
        tag.push_str(s);
    }
    if !tag.is_empty() {
        name.push(':');
        name.push_str(&tag);
    }
    if !digest.is_empty() {
        name.push('@');
        name.push_str(&digest);
    }
    Some(name)
}

/// `images:` — every `containers`/`initContainers` list anywhere in an object has its images
/// rewritten (kustomize's legacy walk), and so do the `image` fields of pod specs.
pub(crate) fn images(resources: &mut [Resource], entries: &[ImageEntry], extra: &[FieldSpec]) {
    if entries.is_empty() {
        return;
    }
    for r in resources.iter_mut() {
        walk_images(&mut r.obj, entries);
        let id = r.id();
        for f in extra.iter().filter(|f| f.selects(&id)) {
            let segs: Vec<&str> = f
                .path
                .split('/')
                .map(|s| s.trim_end_matches("[]"))
                .collect();
            fieldspec::visit_values(&mut r.obj, &segs, &mut |v| {
                if let Value::String(image) = v {
                    for e in entries {
                        if let Some(new) = update_image(image, e) {
                            *image = new;
                            break;
                        }
                    }
                }
            });
        }
    }
}

/// Sets a string at a `/` path (lists on the way are entered; missing maps are created when
/// `create`). With `unset_only`, a value already there and not empty is kept.
fn set_string_at(obj: &mut Value, path: &str, create: bool, value: &str, unset_only: bool) {
    let (parent, last) = match path.rsplit_once('/') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let mut set = |m: &mut Map<String, Value>| {
        let current = m.get(last);
        if unset_only && current.is_some_and(|v| !v.is_null() && v.as_str() != Some("")) {
            return;
        }
        if create || current.is_some() {
            m.insert(last.to_string(), Value::String(value.to_string()));
        }
    };
    match parent {
        Some(p) => fieldspec::visit_maps(obj, p, create, &mut set),
        None => {
            if let Value::Object(m) = obj {
                set(m);
            }
        }
    }
}

fn walk_images(v: &mut Value, entries: &[ImageEntry]) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if (k == "containers" || k == "initContainers")
                    && child.is_array()
                    && let Value::Array(items) = child
                {
                    for c in items.iter_mut() {
                        if let Some(Value::String(image)) = c.get_mut("image") {
                            for e in entries {
                                if let Some(new) = update_image(image, e) {
                                    *image = new;
                                    break;
                                }
                            }
                        }
                    }
                }
                walk_images(child, entries);
            }
        }
        Value::Array(items) => {
            for i in items {
                walk_images(i, entries);
            }
        }
        _ => {}
    }
}

pub(crate) fn replicas(
    resources: &mut [Resource],
    entries: &[ReplicaEntry],
    extra: &[FieldSpec],
    file: &str,
) -> Result<(), BuildError> {
    for e in entries {
        let mut found = false;
        for r in resources.iter_mut() {
            if r.name() != e.name && r.org_id().name != e.name {
                continue;
            }
            let id = r.id();
            let configured: Vec<&FieldSpec> = extra.iter().filter(|f| f.selects(&id)).collect();
            if !fieldspec::REPLICAS_KINDS.contains(&r.kind()) && configured.is_empty() {
                continue;
            }
            found = true;
            if fieldspec::REPLICAS_KINDS.contains(&r.kind()) {
                let spec = super::resource::map_entry(&mut r.obj, "spec");
                spec.insert("replicas".into(), Value::from(e.count));
            }
            for f in configured {
                let (parent, last) = f.path.rsplit_once('/').unwrap_or(("", f.path.as_str()));
                let mut set = |m: &mut Map<String, Value>| {
                    if f.create || m.contains_key(last) {
                        m.insert(last.to_string(), Value::from(e.count));
                    }
                };
                if parent.is_empty() {
                    if let Value::Object(m) = &mut r.obj {
                        set(m);
                    }
                } else {
                    fieldspec::visit_maps(&mut r.obj, parent, f.create, &mut set);
                }
            }
        }
        if !found {
            return Err(BuildError::Transform {
                file: file.to_string(),
                message: format!(
                    "replicas: no Deployment, ReplicationController, ReplicaSet or StatefulSet named '{}'",
                    e.name
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_images_like_kustomize() {
        assert_eq!(split_image("nginx"), ("nginx", "", ""));
        assert_eq!(split_image("nginx:1.2"), ("nginx", "1.2", ""));
        assert_eq!(split_image("reg:5000/app:v1"), ("reg:5000/app", "v1", ""));
        assert_eq!(split_image("app@sha256:abc"), ("app", "", "sha256:abc"));
        assert_eq!(split_image("app:v@sha256:abc"), ("app", "v", "sha256:abc"));
        assert!(image_matches("nginx:1.2", "nginx"));
        assert!(!image_matches("nginx-x:1.2", "nginx"));
        assert!(image_matches("nginx@sha256:abcd", "nginx"));
    }
}
