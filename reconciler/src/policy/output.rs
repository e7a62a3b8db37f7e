//! The complete check of a JSON object a transform returned, at the step that returned it:
//! it is parsed with the limits every later reader applies (serde_json's: nesting at most 128
//! levels, finite numbers, valid Unicode with no lone surrogates), must not exceed the size
//! the apiserver accepts for one object, and must be a JSON object with `apiVersion`, `kind`
//! and `metadata.name`. The parsed value is kept, so no later stage parses it again.

use super::ObjectRef;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Largest object a transform may return, in bytes of JSON: the apiserver's limit on a request
/// body (3 MiB), which no applied object can exceed.
pub(crate) const MAX_OBJECT_BYTES: usize = 3 << 20;

/// Why an output document was refused, with its identity when its head could be read.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) object: Option<ObjectRef>,
    pub(crate) reason: String,
}

/// Reads one output document completely (see the module docs).
pub(crate) fn read(document: &str) -> Result<(Value, ObjectRef), Malformed> {
    let malformed = |reason: String| Malformed {
        object: identify(document).ok(),
        reason,
    };
    if document.len() > MAX_OBJECT_BYTES {
        return Err(malformed(format!(
            "{} bytes of JSON, over the limit of {MAX_OBJECT_BYTES} bytes for one object",
            document.len()
        )));
    }
    let value: Value =
        serde_json::from_str(document).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let object = head(&value).map_err(|reason| Malformed {
        object: None,
        reason: reason.to_owned(),
    })?;
    Ok((value, object))
}

/// The identity of a parsed object, by the same rules as [`identify`].
fn head(value: &Value) -> Result<ObjectRef, &'static str> {
    let Value::Object(map) = value else {
        return Err("not a JSON object");
    };
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let api_version = text(map.get("apiVersion")).ok_or("apiVersion is missing")?;
    let kind = text(map.get("kind")).ok_or("kind is missing")?;
    let metadata = map.get("metadata").ok_or("metadata is missing")?;
    let name = text(metadata.get("name")).ok_or("metadata.name is missing")?;
    Ok(ObjectRef {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: text(metadata.get("namespace")).map(str::to_owned),
        name: name.to_owned(),
    })
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<MetaHead<'a>>,
}

#[derive(Deserialize)]
struct MetaHead<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
}

/// Reads only the identity of an object document (the rest is skipped, not checked): names a
/// document that [`read`] refuses.
fn identify(document: &str) -> Result<ObjectRef, String> {
    // A struct also deserializes from a JSON array; only an object is an object.
    if !document.trim_start().starts_with('{') {
        return Err("not a JSON object".to_owned());
    }
    let head: Head<'_> =
        serde_json::from_str(document).map_err(|e| format!("not a JSON object: {e}"))?;
    let api_version = head
        .api_version
        .filter(|s| !s.is_empty())
        .ok_or("apiVersion is missing")?;
    let kind = head
        .kind
        .filter(|s| !s.is_empty())
        .ok_or("kind is missing")?;
    let metadata = head.metadata.ok_or("metadata is missing")?;
    let name = metadata
        .name
        .filter(|s| !s.is_empty())
        .ok_or("metadata.name is missing")?;
    Ok(ObjectRef {
        api_version: api_version.into_owned(),
        kind: kind.into_owned(),
        namespace: metadata
            .namespace
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned),
        name: name.into_owned(),
    })
}

/// The API group of an `apiVersion` (`""` for the core group).
pub(crate) fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_refuses_what_later_readers_would_and_names_the_object() {
        let (value, r) = read(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"n":"1"}}"#,
        )
        .unwrap();
        assert_eq!(r.to_string(), "ConfigMap a");
        assert_eq!(value["data"]["n"], "1");
        let head = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"n"},"data":"#;
        for (tail, why) in [
            (
                format!("{}{}}}", "[".repeat(10_000), "]".repeat(10_000)),
                "recursion limit",
            ),
            ("1e400}".to_owned(), "number out of range"),
            (r#""\ud800"}"#.to_owned(), "hex escape"),
        ] {
            let e = read(&format!("{head}{tail}")).unwrap_err();
            assert!(e.reason.contains(why), "{why}: {}", e.reason);
            assert!(e.reason.starts_with("invalid JSON"), "{}", e.reason);
        }
        let e = read(&format!("{head}\"{}\"}}", "x".repeat(MAX_OBJECT_BYTES))).unwrap_err();
        assert_eq!(
            e.object.map(|o| o.to_string()).as_deref(),
            Some("ConfigMap n/a")
        );
        assert!(e.reason.contains("over the limit"), "{}", e.reason);
        let e = read(r#"{"kind":"ConfigMap","metadata":{"name":"x"}}"#).unwrap_err();
        assert_eq!(e.reason, "apiVersion is missing");
        assert_eq!(read("[1]").unwrap_err().reason, "not a JSON object");
    }

    #[test]
    fn identify_accepts_objects_and_names_what_is_missing() {
        let r = identify(r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a","namespace":"n","labels":{}},"spec":[1,2]}"#).unwrap();
        assert_eq!(r.to_string(), "Deployment n/a");
        assert_eq!(group(&r.api_version), "apps");
        assert!(
            identify(r#""just a string""#)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            identify(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#)
                .unwrap_err()
                .contains("metadata.name")
        );
        assert!(
            identify(r#"{"kind":"ConfigMap","metadata":{"name":"x"}}"#)
                .unwrap_err()
                .contains("apiVersion")
        );
        assert!(
            identify(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}"#).is_err()
        );
        assert!(
            identify(r#"["v1","ConfigMap",{"name":"x"}]"#)
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    /// A brief mutation fuzz of [`read`] (deterministic, so a failure reproduces): bytes of
    /// valid objects flipped, cut, duplicated and spliced with hostile fragments. `read` must
    /// never panic, and whatever it accepts must be a JSON object with the identity it
    /// reported, that serde_json writes and reads back to the same value.
    #[test]
    fn read_survives_mutated_documents() {
        let seeds = [
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"apps"},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v \u00e9 \ud83d\ude00"}}"#,
        ];
        let fragments: [&[u8]; 10] = [
            b"1e400",
            b"-1e999",
            br#""\ud800""#,
            b"[[[[[[[[",
            b"]]]]",
            br"\u0000",
            b"\xff\xfe",
            b"{\"metadata\":{}}",
            b"18446744073709551616",
            b"null",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        for round in 0..20_000 {
            let mut doc = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(doc.len() + 1);
                match next(4) {
                    0 if !doc.is_empty() => {
                        let i = at.min(doc.len() - 1);
                        doc[i] ^= 1 << next(8);
                    }
                    1 => doc.truncate(at),
                    2 => {
                        let piece = doc[at..].to_vec();
                        doc.extend_from_slice(&piece);
                    }
                    _ => {
                        let f = fragments[next(fragments.len())];
                        doc.splice(at..at, f.iter().copied());
                    }
                }
            }
            let Ok(text) = String::from_utf8(doc) else {
                continue;
            };
            if let Ok((value, r)) = read(&text) {
                assert_eq!(head(&value).ok(), Some(r), "{text}");
                let again: Value = serde_json::from_str(&value.to_string()).expect("round trip");
                assert_eq!(again, value, "{text}");
            }
        }
    }

    mod properties {
        use super::*;
        use crate::policy::strategies::{config, json_value};
        use proptest::prelude::*;
        use serde_json::json;

        proptest! {
            #![proptest_config(config(256))]

            /// Whatever a transform may legitimately return is read back as written, with the
            /// identity it declares, by both readers.
            #[test]
            fn a_well_formed_object_is_read_back_as_written(
                api_version in "[a-z0-9.-]{1,12}(/[a-z0-9]{1,6})?",
                kind in "\\PC{1,16}",
                name in ".{1,40}",
                namespace in proptest::option::of(".{0,20}"),
                body in json_value(),
            ) {
                let mut metadata = json!({"name": name});
                if let Some(ns) = &namespace {
                    metadata["namespace"] = json!(ns);
                }
                let object = json!({
                    "apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": body,
                });
                let text = object.to_string();
                let (value, r) = read(&text).map_err(|m| TestCaseError::fail(m.reason))?;
                prop_assert_eq!(&value, &object);
                prop_assert_eq!(&r.api_version, &api_version);
                prop_assert_eq!(&r.kind, &kind);
                prop_assert_eq!(&r.name, &name);
                prop_assert_eq!(r.namespace.clone(), namespace.filter(|n| !n.is_empty()));
                prop_assert_eq!(identify(&text), Ok(r));
            }

            /// Any text is read or refused, never a panic; what is accepted has the identity
            /// reported and survives a write and a read unchanged.
            #[test]
            fn any_text_is_read_or_refused(text in any::<String>()) {
                match read(&text) {
                    Ok((value, r)) => {
                        prop_assert_eq!(head(&value).ok(), Some(r));
                        let again: Value = serde_json::from_str(&value.to_string())
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(again, value);
                    }
                    Err(m) => prop_assert!(!m.reason.is_empty()),
                }
            }

            /// A valid object with hostile text spliced in anywhere: never a panic, and
            /// whatever is accepted is an object whose identity matches.
            #[test]
            fn a_valid_object_with_a_hostile_splice_is_read_or_refused(
                body in json_value(),
                at in any::<prop::sample::Index>(),
                splice in prop_oneof![
                    Just("1e400".to_owned()),
                    Just("\"\\ud800\"".to_owned()),
                    Just("[".repeat(200)),
                    Just("}".to_owned()),
                    Just("18446744073709551616".to_owned()),
                    any::<String>(),
                ],
            ) {
                let text = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a"}, "data": body}).to_string();
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let text = format!("{}{splice}{}", &text[..at], &text[at..]);
                if let Ok((value, r)) = read(&text) {
                    prop_assert_eq!(head(&value).ok(), Some(r));
                }
            }

            /// Nesting is refused past serde_json's limit with the reason, never overflowing
            /// the stack, whatever the depth.
            #[test]
            fn nesting_is_bounded(depth in 0usize..400, arrays in any::<bool>()) {
                let (open, close) = if arrays { ("[", "]") } else { ("{\"k\":", "}") };
                let text = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"a"}},"data":{}1{}}}"#,
                    open.repeat(depth),
                    close.repeat(depth)
                );
                match read(&text) {
                    Ok(_) => prop_assert!(depth < 128, "accepted {depth} levels"),
                    Err(m) => {
                        prop_assert!(depth >= 100, "refused {depth} levels: {}", m.reason);
                        prop_assert!(m.reason.contains("recursion limit"), "{}", m.reason);
                    }
                }
            }
        }
    }
}
