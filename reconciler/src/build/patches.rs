//! `patches`, `patchesStrategicMerge` and `patchesJson6902`: loading a patch (inline or from a
//! file), telling strategic merge from JSON 6902, choosing targets and applying.

use serde_json::Value;

use super::BuildError;
use super::json6902;
use super::kustomization::{PatchEntry, Selector};
use super::loader::{self, Loader};
use super::resource::{CompiledSelector, ResId, Resource};
use super::smp;

/// A patch's text and where it came from (for errors).
struct PatchText {
    text: String,
    origin: String,
}

fn load(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    entry: &PatchEntry,
) -> Result<PatchText, BuildError> {
    match (&entry.path, &entry.patch) {
        (Some(p), None) => {
            let rel = loader.resolve(dir, p, file)?;
            Ok(PatchText {
                text: loader.read_input_text(&rel, file, crate::build::InputUse::Patch)?,
                origin: rel,
            })
        }
        (None, Some(t)) => Ok(PatchText {
            text: t.clone(),
            origin: file.to_string(),
        }),
        (Some(_), Some(_)) => Err(BuildError::Patch {
            file: file.to_string(),
            message: "a patch has both 'path' and 'patch'; give one".into(),
        }),
        (None, None) => Err(BuildError::Patch {
            file: file.to_string(),
            message: "a patch has neither 'path' nor 'patch'".into(),
        }),
    }
}

/// Applies `patches:` entries (and legacy `patchesJson6902:` when `json_only`).
pub(crate) fn apply_entries(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    entries: &[PatchEntry],
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    for entry in entries {
        let pt = load(loader, dir, file, entry)?;
        let docs = loader::parse_yaml(&pt.text, &pt.origin, &loader.limits)?;
        let perr = |message: String| BuildError::Patch {
            file: pt.origin.clone(),
            message,
        };
        let opts = entry.options.clone().unwrap_or_default();
        if docs.len() == 1 && docs[0].is_array() {
            let Some(target) = &entry.target else {
                return Err(perr("a JSON 6902 patch needs a 'target'".into()));
            };
            let sel = CompiledSelector::new(target).map_err(&perr)?;
            let ops = docs[0].as_array().map(Vec::as_slice).unwrap_or(&[]);
            for r in resources.iter_mut().filter(|r| r.matches(&sel)) {
                let before = r.id();
                json6902::apply(&mut r.obj, ops).map_err(|e| perr(format!("on {before}: {e}")))?;
                after_patch(r, &before);
            }
            continue;
        }
        for doc in &docs {
            if !doc.is_object() {
                return Err(perr(
                    "a strategic merge patch must be a YAML mapping".into(),
                ));
            }
            match &entry.target {
                Some(target) => {
                    let sel = CompiledSelector::new(target).map_err(&perr)?;
                    let custom = loader.custom_schema.borrow().clone();
                    apply_smp(
                        loader,
                        resources,
                        doc,
                        |r| r.matches(&sel),
                        &opts,
                        custom.as_deref(),
                    )?;
                }
                None => apply_smp_by_id(loader, resources, doc, &opts, &perr)?,
            }
        }
    }
    Ok(())
}

/// Legacy `patchesStrategicMerge:` entries: a file path or an inline patch.
pub(crate) fn apply_legacy_smp(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    entries: &[String],
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    for e in entries {
        let looks_inline = e.contains('\n') || e.trim_start().starts_with('{');
        let (text, origin) = if looks_inline {
            (e.clone(), file.to_string())
        } else {
            let rel = loader.resolve(dir, e, file)?;
            (loader.read_text(&rel, file)?, rel)
        };
        let docs = loader::parse_yaml(&text, &origin, &loader.limits)?;
        let perr = |message: String| BuildError::Patch {
            file: origin.clone(),
            message,
        };
        for doc in &docs {
            apply_smp_by_id(loader, resources, doc, &Default::default(), &perr)?;
        }
    }
    Ok(())
}

/// Legacy `patchesJson6902:` entries (target by group/version/kind/name/namespace).
pub(crate) fn apply_legacy_json(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    entries: &[PatchEntry],
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    for entry in entries {
        let Some(t) = &entry.target else {
            return Err(BuildError::Patch {
                file: file.to_string(),
                message: "patchesJson6902 entry without 'target'".into(),
            });
        };
        // Legacy targets match names exactly.
        let exact = Selector {
            name: t.name.as_ref().map(|n| regex::escape(n)),
            namespace: t.namespace.as_ref().map(|n| regex::escape(n)),
            ..t.clone()
        };
        let e = PatchEntry {
            target: Some(exact),
            ..entry.clone()
        };
        let pt = load(loader, dir, file, &e)?;
        let docs = loader::parse_yaml(&pt.text, &pt.origin, &loader.limits)?;
        if !(docs.len() == 1 && docs[0].is_array()) {
            return Err(BuildError::Patch {
                file: pt.origin,
                message: "patchesJson6902 expects a list of JSON patch operations".into(),
            });
        }
        apply_entries(loader, dir, file, std::slice::from_ref(&e), resources)?;
    }
    Ok(())
}

fn apply_smp_by_id(
    loader: &Loader<'_>,
    resources: &mut Vec<Resource>,
    doc: &Value,
    opts: &super::kustomization::PatchOptions,
    perr: &dyn Fn(String) -> BuildError,
) -> Result<(), BuildError> {
    let id = ResId::of(doc);
    if id.kind.is_empty() || id.name.is_empty() {
        return Err(perr(
            "a strategic merge patch without target needs kind and metadata.name".into(),
        ));
    }
    // The patch names the object by any id it has had (current, original or intermediate,
    // e.g. before an overlay's prefix or a kind change), as kustomize matches it.
    let id_ok = |x: &ResId| {
        x.kind == id.kind
            && (id.group.is_empty() && id.version.is_empty() || x.group == id.group)
            && x.name == id.name
            && (id.namespace.is_empty() || x.effective_namespace() == id.effective_namespace())
    };
    let matches = |r: &Resource| id_ok(&r.id()) || r.prev.iter().any(id_ok);
    let count = resources.iter().filter(|r| matches(r)).count();
    if count == 0 {
        return Err(perr(format!("no object matches the patch's id {id}")));
    }
    if count > 1 {
        return Err(perr(format!(
            "the patch's id {id} matches {count} objects; set metadata.namespace or a target"
        )));
    }
    let custom = loader.custom_schema.borrow().clone();
    apply_smp(loader, resources, doc, matches, opts, custom.as_deref())
}

fn apply_smp(
    loader: &Loader<'_>,
    resources: &mut Vec<Resource>,
    doc: &Value,
    select: impl Fn(&Resource) -> bool,
    opts: &super::kustomization::PatchOptions,
    custom: Option<&super::schema::Schema>,
) -> Result<(), BuildError> {
    if smp::is_delete(doc) {
        resources.retain(|r| !select(r));
        return Ok(());
    }
    // A merge needs the schema: kustomize loads the built-in one here unless a custom one
    // was already chosen.
    loader.builtin_schema_used.set(true);
    let patch_name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let patch_kind = doc.get("kind").and_then(Value::as_str).map(str::to_string);
    for r in resources.iter_mut().filter(|r| select(r)) {
        let before = r.id();
        let mut patch = doc.clone();
        if let Some(m) = patch.as_object_mut() {
            if !opts.allow_kind_change {
                m.remove("kind");
                m.remove("apiVersion");
            }
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                if !opts.allow_name_change {
                    meta.remove("name");
                }
                // kustomize restores the object's namespace after a strategic merge: a
                // patch found by an earlier id (`namespace: system` before the overlay's
                // `namespace:`) never moves the object back.
                meta.remove("namespace");
                if meta.is_empty() {
                    m.remove("metadata");
                }
            }
        }
        smp::merge(
            &mut r.obj,
            &patch,
            (&before.group, &before.version, &before.kind),
            custom,
        );
        let _ = (&patch_name, &patch_kind);
        drop_empty_nulls(r);
        after_patch(r, &before);
    }
    Ok(())
}

/// kustomize's strategic merge walks the object's maps and drops values written with no text
/// (`key:`), keeping an explicit `null`; values inside lists are not walked.
fn drop_empty_nulls(r: &mut Resource) {
    for p in std::mem::take(&mut r.empty_nulls) {
        let Some((parent, key)) = p.rsplit_once('/') else {
            continue;
        };
        let key = key.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(m)) = r.obj.pointer_mut(parent)
            && m.get(&key).is_some_and(Value::is_null)
        {
            m.remove(&key);
        }
    }
}

/// A patch that renamed an object keeps the old id for references.
fn after_patch(r: &mut Resource, before: &ResId) {
    let now = r.id();
    if (now.name != before.name || now.namespace != before.namespace || now.kind != before.kind)
        && r.prev.last() != Some(before)
    {
        r.prev.push(before.clone());
    }
}
