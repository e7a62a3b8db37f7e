//! Kubernetes objects as a policy sees them: [`Object`] (lazily parsed JSON) and helpers to
//! read and edit them, which work on an [`Object`] and on a plain `serde_json::Value` alike.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::{Deref, DerefMut};

/// The identity fields of an object: `apiVersion`, `kind`, `metadata.name` and
/// `metadata.namespace`. Implemented by [`Object`] (without parsing the rest of the document)
/// and by `serde_json::Value`.
pub trait Identity {
    /// `apiVersion`, or `""`.
    fn api_version(&self) -> &str;
    /// `kind`, or `""`.
    fn kind(&self) -> &str;
    /// `metadata.name`, or `""`.
    fn name(&self) -> &str;
    /// `metadata.namespace`, if set and non-empty.
    fn namespace(&self) -> Option<&str>;
}

impl Identity for Value {
    fn api_version(&self) -> &str {
        str_at(self, "/apiVersion").unwrap_or_default()
    }
    fn kind(&self) -> &str {
        str_at(self, "/kind").unwrap_or_default()
    }
    fn name(&self) -> &str {
        str_at(self, "/metadata/name").unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        str_at(self, "/metadata/namespace").filter(|s| !s.is_empty())
    }
}

impl<T: Identity + ?Sized> Identity for &T {
    fn api_version(&self) -> &str {
        (**self).api_version()
    }
    fn kind(&self) -> &str {
        (**self).kind()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn namespace(&self) -> Option<&str> {
        (**self).namespace()
    }
}

/// The identity fields read from a JSON document without building the rest of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Head {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
}

/// Reads the identity of a JSON object document, and stops reading as soon as `apiVersion`,
/// `kind` and `metadata` were seen: with the keys in the host's (sorted) order that is before
/// `spec`, `data` and `status` of most objects, so most of the text is not even scanned. The
/// host only hands over valid JSON, so the rest need not be checked here.
fn read_head(text: &str) -> Result<Head, String> {
    if !text.trim_start().starts_with('{') {
        // A struct would also deserialize from an array; only an object is an object.
        return Err("not a JSON object".to_owned());
    }
    let mut head = Head::default();
    let mut seen = Seen::default();
    let mut de = serde_json::Deserializer::from_str(text);
    match (HeadVisitor {
        head: &mut head,
        seen: &mut seen,
    })
    .deserialize(&mut de)
    {
        Ok(()) => {}
        // The visitor stops the deserializer with an error once it has everything.
        Err(_) if seen.all() => {}
        Err(e) => return Err(format!("not a JSON object: {e}")),
    }
    Ok(head)
}

#[derive(Default)]
struct Seen {
    api_version: bool,
    kind: bool,
    metadata: bool,
}

impl Seen {
    fn all(&self) -> bool {
        self.api_version && self.kind && self.metadata
    }
}

struct HeadVisitor<'h> {
    head: &'h mut Head,
    seen: &'h mut Seen,
}

impl<'de> DeserializeSeed<'de> for HeadVisitor<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "apiVersion" => {
                    self.head.api_version = map.next_value::<Option<String>>()?.unwrap_or_default();
                    self.seen.api_version = true;
                }
                "kind" => {
                    self.head.kind = map.next_value::<Option<String>>()?.unwrap_or_default();
                    self.seen.kind = true;
                }
                "metadata" => {
                    if let Some(meta) = map.next_value::<Option<RawMeta<'de>>>()? {
                        self.head.name = meta.name.map(Cow::into_owned).unwrap_or_default();
                        self.head.namespace = meta
                            .namespace
                            .filter(|n| !n.is_empty())
                            .map(Cow::into_owned);
                    }
                    self.seen.metadata = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if self.seen.all() {
                return Err(serde::de::Error::custom("identity complete"));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
}

/// One Kubernetes object handed to a policy.
///
/// It arrives as JSON text. Its identity ([`Identity`]: `api_version`, `kind`, `name`,
/// `namespace`) is read without building the document; the document is parsed into a
/// `serde_json::Value` on first use through `Deref` (`object.get("spec")`,
/// `object.pointer(..)`, `&*object`), and an object that was never changed (never used through
/// `DerefMut`) is handed back as the very text it came in. So a policy pays only for the
/// objects it looks into: check the identity first, then read the document.
#[derive(Clone)]
pub struct Object {
    head: Head,
    /// The document as received, while it is unchanged.
    text: Option<String>,
    value: OnceCell<Value>,
}

impl Object {
    /// Reads the identity of a JSON document (see the type's docs); the rest is neither built
    /// nor, past `metadata`, scanned. Fails if `text` is not a JSON object.
    pub fn from_json(text: String) -> Result<Object, String> {
        Ok(Object {
            head: read_head(&text)?,
            text: Some(text),
            value: OnceCell::new(),
        })
    }

    /// The document as a `Value` (parsed now if it was not yet).
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| match &self.text {
            // The host hands over valid JSON objects only, and a `Value` accepts any JSON, so
            // this parse does not fail; `Null` keeps it total all the same.
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => Value::Null,
        })
    }

    /// The document for editing; the object is then serialized again when handed back.
    pub fn value_mut(&mut self) -> &mut Value {
        self.value();
        self.text = None;
        // `value()` just filled the cell.
        self.value.get_mut().expect("parsed above")
    }

    /// True if the document is a JSON object (always, for an object received as text).
    pub fn is_object(&self) -> bool {
        self.text.is_some() || self.value().is_object()
    }

    /// True once the document was borrowed mutably (it will be serialized again).
    pub fn is_changed(&self) -> bool {
        self.text.is_none()
    }

    /// The document as a `Value`.
    pub fn into_value(self) -> Value {
        self.value();
        self.value.into_inner().unwrap_or(Value::Null)
    }

    /// The document as JSON text: the original text if it was never changed.
    pub fn into_json(self) -> String {
        match self.text {
            Some(text) => text,
            None => self.value.get().map(Value::to_string).unwrap_or_default(),
        }
    }
}

impl From<Value> for Object {
    fn from(value: Value) -> Object {
        Object {
            head: Head::default(),
            text: None,
            value: OnceCell::from(value),
        }
    }
}

impl Deref for Object {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

impl DerefMut for Object {
    fn deref_mut(&mut self) -> &mut Value {
        self.value_mut()
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.value() == other.value()
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl Identity for Object {
    // Once parsed the document is the authority (it may have been edited); before that, the
    // head read from the text is.
    fn api_version(&self) -> &str {
        match self.value.get() {
            Some(v) => v.api_version(),
            None => &self.head.api_version,
        }
    }
    fn kind(&self) -> &str {
        match self.value.get() {
            Some(v) => v.kind(),
            None => &self.head.kind,
        }
    }
    fn name(&self) -> &str {
        match self.value.get() {
            Some(v) => v.name(),
            None => &self.head.name,
        }
    }
    fn namespace(&self) -> Option<&str> {
        match self.value.get() {
            Some(v) => v.namespace(),
            None => self.head.namespace.as_deref(),
        }
    }
}

/// The string at JSON pointer `pointer`, if there is one.
pub fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// `kind`, or `""`.
pub fn kind<O: Identity + ?Sized>(object: &O) -> &str {
    object.kind()
}

/// `metadata.name`, or `""`.
pub fn name<O: Identity + ?Sized>(object: &O) -> &str {
    object.name()
}

/// `metadata.namespace`, if set and non-empty.
pub fn namespace<O: Identity + ?Sized>(object: &O) -> Option<&str> {
    object.namespace()
}

/// The API group of `apiVersion` (`""` for the core group).
pub fn group<O: Identity + ?Sized>(object: &O) -> &str {
    let api_version = object.api_version();
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// The object's `metadata` map, created if missing (replacing a non-object `metadata`).
pub fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut()
}

/// Sets `metadata.namespace`.
pub fn set_namespace(object: &mut Value, namespace: &str) {
    if let Some(metadata) = metadata_mut(object) {
        metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
    }
}

/// The value of label `key`, if set.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// The pod spec of a workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// ReplicationController, Job, CronJob) and its JSON pointer; `None` for other kinds.
pub fn pod_spec_pointer<O: Identity + ?Sized>(object: &O) -> Option<&'static str> {
    match kind(object) {
        "Pod" => Some("/spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The container lists of a pod spec, in order.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_is_read_without_parsing_and_unchanged_objects_keep_their_text() {
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"namespace":"a","name":"web"},"spec":{"replicas":3}}"#;
        let object = Object::from_json(text.to_owned()).unwrap();
        assert_eq!(
            (object.api_version(), group(&object), kind(&object)),
            ("apps/v1", "apps", "Deployment")
        );
        assert_eq!((name(&object), namespace(&object)), ("web", Some("a")));
        assert!(object.value.get().is_none(), "identity must not parse");
        assert_eq!(object.pointer("/spec/replicas"), Some(&json!(3)));
        assert!(!object.is_changed());
        assert_eq!(
            object.into_json(),
            text,
            "read-only use keeps the exact text"
        );
    }

    #[test]
    fn edits_are_serialized_and_seen_by_identity() {
        let mut object =
            Object::from_json(r#"{"kind":"ConfigMap","metadata":{"name":"c"}}"#.to_owned())
                .unwrap();
        set_namespace(&mut object, "team");
        assert!(object.is_changed());
        assert_eq!(namespace(&object), Some("team"));
        assert_eq!(
            object.into_json(),
            r#"{"kind":"ConfigMap","metadata":{"name":"c","namespace":"team"}}"#
        );
        let from_value = Object::from(json!({"kind": "Pod", "metadata": {"name": "p"}}));
        assert_eq!((kind(&from_value), name(&from_value)), ("Pod", "p"));
    }

    #[test]
    fn only_json_objects_are_objects() {
        for bad in ["[\"v1\",\"Pod\",{}]", "\"text\"", "{\"kind\":", "3"] {
            assert!(Object::from_json(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(Object::from_json(" {}".to_owned()).unwrap().is_object());
    }

    #[test]
    fn identity_is_found_in_any_key_order() {
        let text = r#"{"spec":{"x":[1,{"kind":"no"}]},"metadata":{"labels":{"a":"b"},"name":"n"},"status":{},"kind":"Pod","apiVersion":"v1"}"#;
        let object = Object::from_json(text.to_owned()).unwrap();
        assert_eq!(
            (object.api_version(), kind(&object), name(&object)),
            ("v1", "Pod", "n")
        );
        assert_eq!(namespace(&object), None);
        let bare = Object::from_json(r#"{"data":{"k":"v"}}"#.to_owned()).unwrap();
        assert_eq!((kind(&bare), name(&bare)), ("", ""));
    }
}
