//! The complete check of a JSON object a transform returned, at the step that returned it:
//! it is parsed with the limits every later reader applies (serde_json's: nesting at most 128
//! levels, finite numbers, valid Unicode with no lone surrogates), must not exceed the size
//! the apiserver accepts for one object, and must be a JSON object with `apiVersion`, `kind`
//! and `metadata.name`. [`check`] does this without building the document (a later transform
//! may replace it anyway); [`parse`] builds the value of a checked document, once, for the
//! pipeline's result.

use super::ObjectRef;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Largest object a transform may return, in bytes of JSON: the apiserver's limit on a request
/// body (3 MiB), which no applied object can exceed.
pub(crate) const MAX_OBJECT_BYTES: usize = 3 << 20;

/// Why an output document was refused, with its identity when its head could be read.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) object: Option<ObjectRef>,
    pub(crate) reason: String,
}

/// Checks one output document completely (see the module docs) and returns its identity.
pub(crate) fn check(document: &str) -> Result<ObjectRef, Malformed> {
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
    let mut de = serde_json::Deserializer::from_str(document);
    let top = Top::deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    top.identity().map_err(|reason| Malformed {
        object: None,
        reason: reason.to_owned(),
    })
}

/// The value of a document [`check`] accepted (the same parser and limits, so it does not
/// fail on one).
pub(crate) fn parse(document: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(document)
}

/// [`check`], then [`parse`].
#[cfg(test)]
fn read(document: &str) -> Result<(Value, ObjectRef), Malformed> {
    let object = check(document)?;
    let value = parse(document).map_err(|e| Malformed {
        object: Some(object.clone()),
        reason: format!("invalid JSON: {e}"),
    })?;
    Ok((value, object))
}

/// What [`check`] keeps of a whole document: for a JSON object, the last value of each
/// identity key (as a `Value` would), each a non-empty string or nothing.
enum Top {
    NotAnObject,
    Object {
        api_version: Option<String>,
        kind: Option<String>,
        /// `None` without a `metadata` key; otherwise its `name` and `namespace`.
        metadata: Option<(Option<String>, Option<String>)>,
    },
}

impl Top {
    /// The identity: `apiVersion`, `kind` and `metadata.name` are required (the rules of both
    /// [`check`] and [`identify`]).
    fn identity(self) -> Result<ObjectRef, &'static str> {
        let Top::Object {
            api_version,
            kind,
            metadata,
        } = self
        else {
            return Err("not a JSON object");
        };
        let api_version = api_version.ok_or("apiVersion is missing")?;
        let kind = kind.ok_or("kind is missing")?;
        let (name, namespace) = metadata.ok_or("metadata is missing")?;
        Ok(ObjectRef {
            api_version,
            kind,
            namespace,
            name: name.ok_or("metadata.name is missing")?,
        })
    }
}

/// The keys [`check`] looks at; any other key is [`Key::Other`].
enum Key {
    ApiVersion,
    Kind,
    Metadata,
    Name,
    Namespace,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "apiVersion" => Key::ApiVersion,
                    "kind" => Key::Kind,
                    "metadata" => Key::Metadata,
                    "name" => Key::Name,
                    "namespace" => Key::Namespace,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Any JSON value, walked completely through serde_json's `deserialize_any` (the path a
/// `Value` is built on, with its recursion limit and checks of numbers and strings), and
/// dropped.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(Walk(Level::Inner, |_: Option<&str>| Skip, |_| Skip))
    }
}

/// A value that counts only as a non-empty string.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_any(Walk(
            Level::Inner,
            |s: Option<&str>| Text(s.filter(|s| !s.is_empty()).map(str::to_owned)),
            |_| Text(None),
        ))
    }
}

/// `metadata`: its `name` and `namespace` when it is an object.
struct Meta(Option<String>, Option<String>);

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Meta, D::Error> {
        deserializer.deserialize_any(Walk(
            Level::Metadata,
            |_: Option<&str>| Meta(None, None),
            |fields: Fields| Meta(fields.name, fields.namespace),
        ))
    }
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Top, D::Error> {
        deserializer.deserialize_any(Walk(
            Level::Top,
            |_: Option<&str>| Top::NotAnObject,
            |fields: Fields| Top::Object {
                api_version: fields.api_version,
                kind: fields.kind,
                metadata: fields.metadata,
            },
        ))
    }
}

/// The identity keys of a JSON object, the last of each.
#[derive(Default)]
struct Fields {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<(Option<String>, Option<String>)>,
    name: Option<String>,
    namespace: Option<String>,
}

/// Where a value is in the document: which of its keys are identity keys.
#[derive(Clone, Copy)]
enum Level {
    /// The document: `apiVersion`, `kind`, `metadata`.
    Top,
    /// `metadata`: `name`, `namespace`.
    Metadata,
    /// Anywhere else: none.
    Inner,
}

/// Visits any value: a scalar or an array (walked through) gives the first function (`Some`
/// text for a string), an object (walked through, the identity keys of its level kept) the
/// second.
struct Walk<S, O>(Level, S, O);

impl<'de, T, S, O> Visitor<'de> for Walk<S, O>
where
    S: FnOnce(Option<&str>) -> T,
    O: FnOnce(Fields) -> T,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_str<E>(self, s: &str) -> Result<T, E> {
        Ok((self.1)(Some(s)))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok((self.1)(None))
    }
    fn visit_seq<Q: SeqAccess<'de>>(self, mut seq: Q) -> Result<T, Q::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok((self.1)(None))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<T, M::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match (self.0, key) {
                (Level::Top, Key::ApiVersion) => fields.api_version = map.next_value::<Text>()?.0,
                (Level::Top, Key::Kind) => fields.kind = map.next_value::<Text>()?.0,
                (Level::Top, Key::Metadata) => {
                    let Meta(name, namespace) = map.next_value()?;
                    fields.metadata = Some((name, namespace));
                }
                (Level::Metadata, Key::Name) => fields.name = map.next_value::<Text>()?.0,
                (Level::Metadata, Key::Namespace) => fields.namespace = map.next_value::<Text>()?.0,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok((self.2)(fields))
    }
}

/// The identity of a parsed object, by the same rules as [`identify`] (the reference
/// [`check`] is tested against).
#[cfg(test)]
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
/// document that [`check`] refuses.
fn identify(document: &str) -> Result<ObjectRef, String> {
    // A struct also deserializes from a JSON array; only an object is an object.
    if !document.trim_start().starts_with('{') {
        return Err("not a JSON object".to_owned());
    }
    let head: Head<'_> =
        serde_json::from_str(document).map_err(|e| format!("not a JSON object: {e}"))?;
    let text = |s: Option<Cow<'_, str>>| s.filter(|s| !s.is_empty()).map(Cow::into_owned);
    Top::Object {
        api_version: text(head.api_version),
        kind: text(head.kind),
        metadata: head.metadata.map(|m| (text(m.name), text(m.namespace))),
    }
    .identity()
    .map_err(str::to_owned)
}

pub(crate) use gitops_policy_sdk::object::api_group as group;

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`check`] must agree with: the document parsed into a `Value`, then [`head`].
    fn reference(document: &str) -> Result<ObjectRef, String> {
        if document.len() > MAX_OBJECT_BYTES {
            return Err("too large".to_owned());
        }
        let value: Value = serde_json::from_str(document).map_err(|e| e.to_string())?;
        head(&value).map_err(str::to_owned)
    }

    /// [`check`] accepts exactly what [`reference`] accepts, with the same identity, and a
    /// document it accepts parses.
    fn agrees(document: &str) -> Result<(), String> {
        let checked = check(document);
        match (&checked, reference(document)) {
            (Ok(a), Ok(b)) if *a == b => parse(document).map(drop).map_err(|e| e.to_string()),
            (Err(_), Err(_)) => Ok(()),
            (a, b) => Err(format!(
                "check {:?} but a Value reads {b:?}: {document}",
                a.as_ref().map_err(|m| &m.reason)
            )),
        }
    }

    #[test]
    fn check_keeps_the_last_of_repeated_keys_as_a_value_does() {
        for (document, identity) in [
            (
                r#"{"apiVersion":"v1","kind":"A","kind":"B","metadata":{"name":"a"}}"#,
                Ok("B a"),
            ),
            (
                r#"{"apiVersion":"v1","kind":"A","kind":5,"metadata":{"name":"a"}}"#,
                Err("kind is missing"),
            ),
            (
                r#"{"apiVersion":"v1","kind":"A","metadata":{"name":"a"},"metadata":{"namespace":"n"}}"#,
                Err("metadata.name is missing"),
            ),
            (
                r#"{"apiVersion":"v1","kind":"A","metadata":{"name":"a","namespace":"n","namespace":""}}"#,
                Ok("A a"),
            ),
            (
                r#"{"apiVersion":"v1","kind":"A","metadata":null}"#,
                Err("metadata.name is missing"),
            ),
            (
                r#"{"apiVersion":"v1","kind":"A","spec":{"metadata":{"name":"x"}},"metadata":{"name":"a","labels":{"name":"b"}}}"#,
                Ok("A a"),
            ),
        ] {
            let checked = check(document).map(|r| r.to_string()).map_err(|m| m.reason);
            assert_eq!(
                checked.as_deref().map_err(String::as_str),
                identity,
                "{document}"
            );
            agrees(document).unwrap();
        }
    }

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
            agrees(&text).unwrap();
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
                agrees(&text).map_err(TestCaseError::fail)?;
            }

            /// Any text is read or refused, never a panic; what is accepted has the identity
            /// reported and survives a write and a read unchanged.
            #[test]
            fn any_text_is_read_or_refused(text in any::<String>()) {
                agrees(&text).map_err(TestCaseError::fail)?;
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
                agrees(&text).map_err(TestCaseError::fail)?;
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
                agrees(&text).map_err(TestCaseError::fail)?;
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
