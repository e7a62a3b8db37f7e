//! JSON Patch (RFC 6902) over a JSON value: add, remove, replace, move, copy, test.

use serde_json::Value;

/// Applies a list of operations (already parsed) to `doc`. Errors name the failing operation.
pub(crate) fn apply(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        apply_one(doc, op).map_err(|e| format!("operation {} ({}): {e}", i + 1, describe(op)))?;
    }
    Ok(())
}

fn describe(op: &Value) -> String {
    format!(
        "{} {}",
        op.get("op").and_then(Value::as_str).unwrap_or("?"),
        op.get("path").and_then(Value::as_str).unwrap_or("?")
    )
}

fn apply_one(doc: &mut Value, op: &Value) -> Result<(), String> {
    let name = op.get("op").and_then(Value::as_str).ok_or("missing 'op'")?;
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or("missing 'path'")?;
    let value = || {
        op.get("value")
            .cloned()
            .ok_or("missing 'value'".to_string())
    };
    match name {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            let v = value()?;
            // The JSON patch library kustomize uses replaces a missing key of an existing
            // object by adding it; in a list, or under a missing parent, the target must exist.
            let parent_is_object = path.is_empty()
                || split_last(path)
                    .and_then(|(parent, _)| get_mut(doc, &parent).map(|p| p.is_object()))
                    .unwrap_or(false);
            if parent_is_object {
                add(doc, path, v)
            } else {
                *get_mut(doc, path)? = v;
                Ok(())
            }
        }
        "move" => {
            let from = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or("missing 'from'")?;
            let v = remove(doc, from)?;
            add(doc, path, v)
        }
        "copy" => {
            let from = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or("missing 'from'")?;
            let v = get_mut(doc, from)?.clone();
            add(doc, path, v)
        }
        "test" => {
            let v = value()?;
            if *get_mut(doc, path)? == v {
                Ok(())
            } else {
                Err("test failed: value differs".into())
            }
        }
        other => Err(format!("unknown operation '{other}'")),
    }
}

fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path '{path}' does not start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_mut<'v>(doc: &'v mut Value, path: &str) -> Result<&'v mut Value, String> {
    let mut cur = doc;
    for t in tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t).ok_or_else(|| format!("no field '{t}'"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("bad index '{t}'"))?;
                let len = a.len();
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range (length {len})"))?
            }
            _ => return Err(format!("cannot descend into a scalar at '{t}'")),
        };
    }
    Ok(cur)
}

fn split_last(path: &str) -> Result<(String, String), String> {
    let mut t = tokens(path)?;
    let last = t.pop().ok_or("the document root cannot be the target")?;
    let parent: String = t
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok((parent, last))
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (parent, last) = split_last(path)?;
    match get_mut(doc, &parent)? {
        Value::Object(m) => {
            m.insert(last, v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("bad index '{last}'"))?;
            if i > a.len() {
                return Err(format!("index {i} out of range (length {})", a.len()));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!("parent of '{path}' is not an object or list")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_last(path)?;
    match get_mut(doc, &parent)? {
        Value::Object(m) => m.remove(&last).ok_or_else(|| format!("no field '{last}'")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad index '{last}'"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range (length {})", a.len()));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("parent of '{path}' is not an object or list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations() {
        let mut d = json!({"a": {"b": [1, 2]}, "c": "x"});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/a/e~1f"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "test", "path": "/c", "value": "y"}
        ]);
        apply(&mut d, ops.as_array().expect("array")).expect("applies");
        assert_eq!(d, json!({"a": {"b": [0, 2, 3], "e/f": "y"}, "c": "y"}));
        let missing_key = json!([{"op": "replace", "path": "/nope", "value": 1}]);
        apply(&mut d, missing_key.as_array().expect("array")).expect("acts as add");
        assert_eq!(d["nope"], json!(1));
        let bad = json!([{"op": "replace", "path": "/no/parent", "value": 1}]);
        assert!(apply(&mut d, bad.as_array().expect("array")).is_err());
    }
}
