//! Strategic merge patch, as kustomize (kyaml merge2) applies it: maps merge, `null` deletes,
//! lists merge by the schema's merge key (the patch's elements first, in patch order), other lists — including every
//! list of a custom resource — are replaced. Directives:
//! `$patch: delete|replace|merge`, `$deleteFromPrimitiveList/<list>`, `$retainKeys` (dropped).
//! `$setElementOrder/<list>` is NOT interpreted: kustomize v5.5 copies it into the object as a
//! plain field (unlike `kubectl patch`), and the output must match.

use serde_json::{Map, Value};

use super::schema::{self, Field, Schema, Shape};

/// The schema type of a node being merged.
#[derive(Clone, Copy)]
enum Ty {
    /// A known object type.
    Known(usize),
    /// A map whose values are of a known type.
    MapOf(usize),
    Unknown,
}

/// Whether a patch document asks to delete the whole object (`$patch: delete` at the top).
pub(crate) fn is_delete(patch: &Value) -> bool {
    patch.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// Merges `patch` into the object `dest` of the given group/version/kind.
/// `custom` is the kustomization's own OpenAPI schema (`openapi:`), consulted for kinds it
/// defines before the built-in table.
pub(crate) fn merge(
    dest: &mut Value,
    patch: &Value,
    (group, version, kind): (&str, &str, &str),
    custom: Option<&Schema>,
) {
    let (s, ty) = match custom.and_then(|c| c.root(group, version, kind).map(|t| (c, t))) {
        Some((c, t)) => (c, Ty::Known(t)),
        None => {
            let s = schema::schema();
            match s.root(group, version, kind) {
                Some(t) => (s, Ty::Known(t)),
                None => (s, Ty::Unknown),
            }
        }
    };
    match (dest, patch) {
        (Value::Object(d), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let keep_meta: Vec<(String, Value)> = ["apiVersion", "kind"]
                    .iter()
                    .filter_map(|k| d.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                *d = clean_map(p);
                for (k, v) in keep_meta {
                    d.entry(k).or_insert(v);
                }
            } else {
                merge_map(s, d, p, ty);
            }
        }
        (d, p) => *d = clean(p),
    }
}

fn field<'s>(s: &'s Schema, ty: Ty, name: &str) -> (Option<&'s Field>, Ty) {
    let f = match ty {
        Ty::Known(t) => s.field(Some(t), name),
        Ty::MapOf(t) => return (None, Ty::Known(t)),
        Ty::Unknown => None,
    };
    let child = match f {
        Some(f) => match (f.shape, f.ty) {
            (Shape::Object, Some(t)) | (Shape::List, Some(t)) => Ty::Known(t),
            (Shape::Map, Some(t)) => Ty::MapOf(t),
            _ => Ty::Unknown,
        },
        None => Ty::Unknown,
    };
    (f, child)
}

fn merge_map(s: &Schema, dest: &mut Map<String, Value>, patch: &Map<String, Value>, ty: Ty) {
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(d)), Value::Array(del)) = (dest.get_mut(list), pv) {
                d.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            dest.remove(k);
            continue;
        }
        let (f, child) = field(s, ty, k);
        match (dest.get_mut(k), pv) {
            (Some(Value::Object(d)), Value::Object(p)) => {
                match p.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        dest.remove(k);
                    }
                    Some("replace") => {
                        *d = clean_map(p);
                    }
                    _ => merge_map(s, d, p, child),
                }
            }
            (Some(Value::Array(d)), Value::Array(p)) => merge_list(s, d, p, f, child),
            (_, Value::Object(p)) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                dest.remove(k);
            }
            (_, pv) => {
                let v = clean(pv);
                dest.insert(k.clone(), v);
            }
        }
    }
}

fn merge_list(s: &Schema, dest: &mut Vec<Value>, patch: &[Value], f: Option<&Field>, elem: Ty) {
    // `- $patch: replace` anywhere in the patch list replaces the whole list.
    let replace_all = patch.iter().any(|e| {
        e.get("$patch").and_then(Value::as_str) == Some("replace")
            && e.as_object().is_some_and(|m| m.len() == 1)
    });
    if replace_all {
        *dest = patch
            .iter()
            .filter(|e| !(e.get("$patch").is_some() && e.as_object().is_some_and(|m| m.len() == 1)))
            .map(clean)
            .collect();
        return;
    }
    let key: Option<Vec<String>> = match f {
        Some(f) if f.merge && !f.keys.is_empty() => Some(vec![f.keys[0].clone()]),
        Some(f) if f.merge => {
            // A set of scalars: union, in order.
            for p in patch {
                if !dest.contains(p) {
                    dest.push(clean(p));
                }
            }
            return;
        }
        // Without schema information kyaml (as kustomize v5.5 runs it) replaces the list.
        _ => None,
    };
    let Some(keys) = key else {
        *dest = patch.iter().map(clean).collect();
        return;
    };
    // kustomize v5.5 emits the patch's elements first, in patch order (merged into the
    // existing element with the same key where there is one), then the remaining existing
    // elements in their order. Order matters: env entries refer to earlier ones by $(VAR).
    let mut taken = vec![false; dest.len()];
    let mut out: Vec<Value> = Vec::with_capacity(dest.len() + patch.len());
    for p in patch {
        let Some(pm) = p.as_object() else {
            out.push(clean(p));
            continue;
        };
        let pos = dest
            .iter()
            .enumerate()
            .position(|(i, d)| !taken[i] && same_key(d, p, &keys));
        let directive = pm.get("$patch").and_then(Value::as_str);
        if let Some(i) = pos {
            taken[i] = true;
        }
        match (pos, directive) {
            (_, Some("delete")) => {}
            (Some(_), Some("replace")) => out.push(clean(p)),
            (Some(i), _) => {
                let mut merged = std::mem::take(&mut dest[i]);
                if let Value::Object(dm) = &mut merged {
                    merge_map(s, dm, pm, elem);
                }
                out.push(merged);
            }
            (None, _) => out.push(clean(p)),
        }
    }
    out.extend(
        std::mem::take(dest)
            .into_iter()
            .zip(taken)
            .filter(|(_, t)| !t)
            .map(|(d, _)| d),
    );
    *dest = out;
}

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().all(|k| {
        let (x, y) = (a.get(k), b.get(k));
        x.is_some() && x == y
    })
}

/// A patch value with directives and null fields removed, for inserting where nothing was.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(clean)
                .collect(),
        ),
        v => v.clone(),
    }
}

/// Directive keys kyaml consumes. (`$setElementOrder/...` is not one: kustomize v5.5 keeps it
/// in the output as an ordinary field, and so does this engine.)
fn is_directive(k: &str) -> bool {
    k == "$patch" || k == "$retainKeys" || k.starts_with("$deleteFromPrimitiveList/")
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !is_directive(k) && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_null_deletes() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "y"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "z"},
            {"name": "a", "env": [{"name": "F", "value": "2"}], "image": null}]}}}});
        merge(&mut d, &p, ("apps", "v1", "Deployment"), None);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "z"},
                   {"name": "a", "env": [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}]}])
        );
    }

    #[test]
    fn unknown_lists_are_replaced() {
        let mut d = json!({"spec": {"args": ["a", "b"], "items": [{"name": "x", "v": 1}]}});
        let p = json!({"spec": {"args": ["c"], "items": [{"name": "x", "w": 2}]}});
        merge(&mut d, &p, ("example.com", "v1", "Foo"), None);
        assert_eq!(d["spec"]["args"], json!(["c"]));
        assert_eq!(d["spec"]["items"], json!([{"name": "x", "w": 2}]));
    }
}
