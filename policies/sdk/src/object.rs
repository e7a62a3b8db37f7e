//! Kubernetes objects as a policy sees them: [`Object`] (lazily parsed JSON) and helpers to
//! read and edit them, which work on an [`Object`] and on a plain `serde_json::Value` alike.

use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::{Deref, DerefMut, Range};

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
    /// Where `metadata`'s value is in the text, if it is a JSON object.
    metadata: Option<Range<usize>>,
    /// Where `metadata.namespace`'s value is in the text, if the key is present.
    namespace_value: Option<Range<usize>>,
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
        text,
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

struct HeadVisitor<'h, 'de> {
    /// The whole document (spans are offsets into it).
    text: &'de str,
    head: &'h mut Head,
    seen: &'h mut Seen,
}

/// The byte range of `part`, a slice of `whole`, within `whole`.
fn span_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

impl<'de> DeserializeSeed<'de> for HeadVisitor<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadVisitor<'_, 'de> {
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
                    let raw = map.next_value::<&'de RawValue>()?;
                    let meta: Option<RawMeta<'de>> =
                        serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
                    if let Some(meta) = meta {
                        self.head.name = meta.name.and_then(raw_str).unwrap_or_default();
                        self.head.namespace =
                            meta.namespace.and_then(raw_str).filter(|n| !n.is_empty());
                        // Spans only of an object (a struct also reads from an array).
                        if raw.get().starts_with('{') {
                            self.head.metadata = Some(span_in(self.text, raw.get()));
                            self.head.namespace_value =
                                meta.namespace.map(|n| span_in(self.text, n.get()));
                        }
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

/// `metadata` with `name` and `namespace` as raw JSON (any type: a non-string reads as unset,
/// as with a `Value`), so the namespace can be edited in place.
#[derive(Deserialize)]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    namespace: Option<&'a RawValue>,
}

/// The string a raw JSON value holds, if it is one.
fn raw_str(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Option<String>>(raw.get())
        .ok()
        .flatten()
}

/// In the lenient readers of this module (the pointer walk, the container-image readers), a JSON
/// value of another type than expected reads as absent (as `Value` accessors would see it);
/// these are the visits of the scalar types.
macro_rules! scalars_read_as {
    ($absent:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
}

/// What a JSON pointer leads to in a document's text.
enum Found<V> {
    /// The value (its text, for `find`).
    Value(V),
    /// Nothing: a key or index is missing, or the path runs into a scalar.
    Absent,
    /// A key on the way occurs twice in one object (a `Value` keeps the last one): the text
    /// cannot be read or edited in place faithfully.
    Ambiguous,
}

/// Finds the value at `pointer` (RFC 6901) in a JSON document without building the document:
/// its text.
fn find<'t>(text: &'t str, pointer: &str) -> Found<&'t RawValue> {
    walk(text, pointer)
}

/// Reads the value at `pointer` (RFC 6901) in a JSON document as a `V` in one pass, without
/// building the document. A value that is not a `V` stops the walk and counts as ambiguous.
fn walk<'t, V: Deserialize<'t>>(text: &'t str, pointer: &str) -> Found<V> {
    let Some(path) = pointer_tokens(pointer) else {
        return Found::Absent;
    };
    let mut found = Found::Absent;
    let mut de = serde_json::Deserializer::from_str(text);
    let walked = Walk {
        path: &path,
        found: &mut found,
    }
    .deserialize(&mut de);
    if walked.is_err() {
        return Found::Ambiguous;
    }
    found
}

/// The reference tokens of a JSON pointer; `None` if it is not one. Tokens without escapes
/// borrow from the pointer.
fn pointer_tokens(pointer: &str) -> Option<Vec<Cow<'_, str>>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| {
                if t.contains('~') {
                    Cow::Owned(t.replace("~1", "/").replace("~0", "~"))
                } else {
                    Cow::Borrowed(t)
                }
            })
            .collect(),
    )
}

/// Walks one step of a pointer's path; at its end reads the value as a `V`.
struct Walk<'a, V> {
    path: &'a [Cow<'a, str>],
    found: &'a mut Found<V>,
}

impl<'t, V: Deserialize<'t>> DeserializeSeed<'t> for Walk<'_, V> {
    type Value = ();
    fn deserialize<D: Deserializer<'t>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            let value = V::deserialize(deserializer)?;
            if matches!(self.found, Found::Absent) {
                *self.found = Found::Value(value);
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'t, V: Deserialize<'t>> Visitor<'t> for Walk<'_, V> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'t>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((token, rest)) = self.path.split_first() else {
            return Ok(());
        };
        let mut matched = false;
        while let Some(key) = map.next_key::<Cow<'t, str>>()? {
            if *key == **token {
                if matched {
                    *self.found = Found::Ambiguous;
                    map.next_value::<IgnoredAny>()?;
                } else {
                    matched = true;
                    map.next_value_seed(Walk {
                        path: rest,
                        found: &mut *self.found,
                    })?;
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'t>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((token, rest)) = self.path.split_first() else {
            return Ok(());
        };
        // Like `Value::pointer`: a decimal index without leading zeros.
        let index = (!token.starts_with('+') && (token == "0" || !token.starts_with('0')))
            .then(|| token.parse::<usize>().ok())
            .flatten();
        let mut i = 0;
        loop {
            if Some(i) == index {
                if seq
                    .next_element_seed(Walk {
                        path: rest,
                        found: &mut *self.found,
                    })?
                    .is_none()
                {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    // The path runs into a scalar: nothing there.
    scalars_read_as!(());
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
    /// Read from the text on first use (see [`Object::from_host_json`]).
    head: OnceCell<Head>,
    /// The document as received, while it is unchanged.
    text: Option<String>,
    value: OnceCell<Value>,
}

impl Object {
    /// Reads the identity of a JSON document (see the type's docs); the rest is neither built
    /// nor, past `metadata`, scanned. Fails if `text` is not a JSON object.
    pub fn from_json(text: String) -> Result<Object, String> {
        Ok(Object {
            head: OnceCell::from(read_head(&text)?),
            text: Some(text),
            value: OnceCell::new(),
        })
    }

    /// Like [`Object::from_json`] for a document the host handed over, which is a valid JSON
    /// object by the contract: nothing is read until the object is used, so a policy that
    /// skips objects (or all of them, for a configuration it has nothing to do in) does not
    /// pay for reading them. Only checks that the text starts like a JSON object.
    pub fn from_host_json(text: String) -> Result<Object, String> {
        if !text.trim_start().starts_with('{') {
            return Err("not a JSON object".to_owned());
        }
        Ok(Object {
            head: OnceCell::new(),
            text: Some(text),
            value: OnceCell::new(),
        })
    }

    /// The identity read from the text (empty for an object built from a value, whose value
    /// is the authority).
    fn head(&self) -> &Head {
        self.head.get_or_init(|| {
            self.text
                .as_deref()
                .and_then(|t| read_head(t).ok())
                .unwrap_or_default()
        })
    }

    /// The head, for updating it after an edit of the text.
    fn head_mut(&mut self) -> &mut Head {
        self.head();
        self.head.get_mut().expect("head() fills the cell")
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

    /// Reads the value at JSON pointer `pointer` as a `T`, without building the document if
    /// it was not parsed yet (only the value itself is deserialized). `None` if there is no
    /// value there or it is not a `T`. Same result as `T::deserialize` on
    /// `object.pointer(pointer)`.
    pub fn read_at<T: DeserializeOwned>(&self, pointer: &str) -> Option<T> {
        if let (Some(text), None) = (&self.text, self.value.get()) {
            match walk::<T>(text, pointer) {
                Found::Value(value) => return Some(value),
                Found::Absent => return None,
                // Not a `T`, or a repeated key: tell them apart by the value's text.
                Found::Ambiguous => match find(text, pointer) {
                    Found::Value(raw) => return serde_json::from_str(raw.get()).ok(),
                    Found::Absent => return None,
                    Found::Ambiguous => {}
                },
            }
        }
        T::deserialize(self.value().pointer(pointer)?).ok()
    }

    /// Replaces the value at JSON pointer `pointer` (which must exist; returns false and
    /// changes nothing otherwise). An object that was not parsed yet is edited as text, so it
    /// is neither parsed nor serialized again.
    pub fn replace_at(&mut self, pointer: &str, value: Value) -> bool {
        if let (Some(text), None) = (&self.text, self.value.get()) {
            match find(text, pointer) {
                Found::Value(raw) => {
                    let span = span_in(text, raw.get());
                    self.splice(span, &value.to_string());
                    if ["/apiVersion", "/kind", "/metadata"]
                        .iter()
                        .any(|p| pointer == *p || pointer.starts_with(&format!("{p}/")))
                    {
                        self.reread_head();
                    }
                    return true;
                }
                Found::Absent => return false,
                Found::Ambiguous => {}
            }
        }
        match self.value_mut().pointer_mut(pointer) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// Sets `metadata.namespace` (see [`set_namespace`]); an object that was not parsed yet is
    /// edited as text.
    pub fn set_namespace(&mut self, namespace: &str) {
        if let (Some(_), None, Some(metadata)) =
            (&self.text, self.value.get(), self.head().metadata.clone())
        {
            let quoted = Value::String(namespace.to_owned()).to_string();
            // The identity stays what it was but for the namespace, so the head is updated
            // here rather than read again (`splice` moves its spans).
            let value_at = match self.head().namespace_value.clone() {
                Some(span) => {
                    self.splice(span.clone(), &quoted);
                    span.start
                }
                None => {
                    // Insert as the first key: after `{`, with a comma unless it is empty.
                    let text = self.text.as_deref().unwrap_or_default();
                    let inner = &text[metadata.start + 1..metadata.end - 1];
                    let key = "\"namespace\":";
                    let member = if inner.trim().is_empty() {
                        format!("{key}{quoted}")
                    } else {
                        format!("{key}{quoted},")
                    };
                    let at = metadata.start + 1;
                    self.splice(at..at, &member);
                    at + key.len()
                }
            };
            let head = self.head_mut();
            head.namespace_value = Some(value_at..value_at + quoted.len());
            head.namespace = Some(namespace.to_owned()).filter(|n| !n.is_empty());
            return;
        }
        set_namespace(self.value_mut(), namespace);
    }

    /// Moves the head's spans for an edit that replaced `edit` of the text by `new_len` bytes;
    /// false if the edit cut into one of them (then the head must be read again). A head not
    /// read yet is read from the edited text when needed.
    fn head_follows(&mut self, edit: &Range<usize>, new_len: usize) -> bool {
        let Some(head) = self.head.get_mut() else {
            return true;
        };
        let follow = |span: &mut Range<usize>| {
            let moved = |at: usize| (at - edit.end) + edit.start + new_len;
            if span.start >= edit.end {
                *span = moved(span.start)..moved(span.end);
            } else if span.start <= edit.start && span.end >= edit.end {
                span.end = moved(span.end);
            } else if span.end > edit.start {
                return false;
            }
            true
        };
        head.metadata.as_mut().is_none_or(follow)
            && head.namespace_value.as_mut().is_none_or(follow)
    }

    /// Replaces `span` of the (unparsed) text with `with`, and moves the head's spans with
    /// the text (keys need not be in any order: `spec` may come before `metadata`); if the
    /// edit cut into one of them, the head is read again.
    fn splice(&mut self, span: Range<usize>, with: &str) {
        if let Some(text) = &mut self.text {
            text.replace_range(span.clone(), with);
        }
        if !self.head_follows(&span, with.len()) {
            self.reread_head();
        }
    }

    /// Reads the identity again after the text was edited. The edit kept the text a JSON
    /// object, so this does not fail; if it did, the document is parsed and becomes the
    /// authority.
    fn reread_head(&mut self) {
        match self.text.as_deref().map(read_head) {
            Some(Ok(head)) => self.head = OnceCell::from(head),
            _ => {
                self.value_mut();
            }
        }
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
            head: OnceCell::from(Head::default()),
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
            None => &self.head().api_version,
        }
    }
    fn kind(&self) -> &str {
        match self.value.get() {
            Some(v) => v.kind(),
            None => &self.head().kind,
        }
    }
    fn name(&self) -> &str {
        match self.value.get() {
            Some(v) => v.name(),
            None => &self.head().name,
        }
    }
    fn namespace(&self) -> Option<&str> {
        match self.value.get() {
            Some(v) => v.namespace(),
            None => self.head().namespace.as_deref(),
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

/// The API group of the object's `apiVersion` (`""` for the core group).
pub fn group<O: Identity + ?Sized>(object: &O) -> &str {
    api_group(object.api_version())
}

/// The API group of an `apiVersion`: what comes before the `/` (`""` for the core group).
pub fn api_group(api_version: &str) -> &str {
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

/// The kinds that carry a pod spec, as `(group, kind, JSON pointer of the pod spec)`.
pub const POD_SPECS: [(&str, &str, &str); 8] = [
    ("", "Pod", "/spec"),
    ("apps", "Deployment", "/spec/template/spec"),
    ("apps", "StatefulSet", "/spec/template/spec"),
    ("apps", "DaemonSet", "/spec/template/spec"),
    ("apps", "ReplicaSet", "/spec/template/spec"),
    ("", "ReplicationController", "/spec/template/spec"),
    ("batch", "Job", "/spec/template/spec"),
    ("batch", "CronJob", "/spec/jobTemplate/spec/template/spec"),
];

/// The JSON pointer of the pod spec of a workload or Pod (one of [`POD_SPECS`], matched by
/// group and kind); `None` for other kinds.
pub fn pod_spec_pointer<O: Identity + ?Sized>(object: &O) -> Option<&'static str> {
    let (kind, group) = (kind(object), group(object));
    POD_SPECS
        .iter()
        .find(|(g, k, _)| *k == kind && *g == group)
        .map(|(_, _, pointer)| *pointer)
}

/// The container lists of a pod spec, in order.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// The images of every container of a workload or Pod (see [`pod_spec_pointer`] and
/// [`CONTAINER_LISTS`]), in order, each with the JSON pointer of its `image` field. Entries
/// without a string `image` are skipped. Reads only the container lists, without building the
/// document if it was not parsed yet.
pub fn container_images(object: &Object) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Some(spec_ptr) = pod_spec_pointer(object) else {
        return found;
    };
    let Some(lists) = object.read_at::<PodImages>(spec_ptr) else {
        return found;
    };
    for (list, images) in CONTAINER_LISTS.iter().zip(lists.0) {
        for (i, image) in images.into_iter().enumerate() {
            if let Some(image) = image {
                found.push((format!("{spec_ptr}/{list}/{i}/image"), image));
            }
        }
    }
    found
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The `image` of each entry of the three container lists of a pod spec (indexed like
/// [`CONTAINER_LISTS`]). Reads any JSON the way `Value` accessors would: a list that is not an
/// array, or an entry that is not an object or whose `image` is not a string, counts as absent;
/// of a repeated key the last one counts.
struct PodImages([Vec<Option<String>>; 3]);

impl<'de> Deserialize<'de> for PodImages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PodImages, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PodImages;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a pod spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PodImages, A::Error> {
                let mut lists: [Vec<Option<String>>; 3] = Default::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match CONTAINER_LISTS.iter().position(|l| *l == key) {
                        Some(i) => lists[i] = map.next_value::<Entries>()?.0,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(PodImages(lists))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PodImages, A::Error> {
                skip_seq(seq).map(|()| PodImages(Default::default()))
            }
            scalars_read_as!(PodImages(Default::default()));
        }
        deserializer.deserialize_any(V)
    }
}

/// The images of one container list (see [`PodImages`]).
struct Entries(Vec<Option<String>>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of containers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                let mut images = Vec::new();
                while let Some(ImageOf(image)) = seq.next_element::<ImageOf>()? {
                    images.push(image);
                }
                Ok(Entries(images))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entries, A::Error> {
                skip_map(map).map(|()| Entries(Vec::new()))
            }
            scalars_read_as!(Entries(Vec::new()));
        }
        deserializer.deserialize_any(V)
    }
}

/// The `image` of one container (see [`PodImages`]).
struct ImageOf(Option<String>);

impl<'de> Deserialize<'de> for ImageOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageOf, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ImageOf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a container")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ImageOf, A::Error> {
                let mut image = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "image" {
                        image = match map.next_value::<Value>()? {
                            Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ImageOf(image))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ImageOf, A::Error> {
                skip_seq(seq).map(|()| ImageOf(None))
            }
            scalars_read_as!(ImageOf(None));
        }
        deserializer.deserialize_any(V)
    }
}

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
    fn fields_are_read_and_edited_in_the_text_like_on_a_value() {
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"a":"b"},"name":"web"},"spec":{"replicas":3,"template":{"spec":{"containers":[{"image":"a:1","name":"x"},"bad",{"image":7},{"image":"b\u0041:2"}],"initContainers":{"image":"no"}}}}}"#;
        let mut object = Object::from_json(text.to_owned()).unwrap();
        assert_eq!(object.read_at::<u64>("/spec/replicas"), Some(3));
        assert_eq!(object.read_at::<u64>("/spec/nothing"), None);
        assert_eq!(
            object.read_at::<u64>("/metadata/name"),
            None,
            "not a number"
        );
        assert_eq!(
            container_images(&object),
            vec![
                (
                    "/spec/template/spec/containers/0/image".to_owned(),
                    "a:1".to_owned()
                ),
                (
                    "/spec/template/spec/containers/3/image".to_owned(),
                    "bA:2".to_owned()
                ),
            ]
        );
        assert!(object.replace_at("/spec/replicas", json!(5)));
        assert!(object.replace_at(
            "/spec/template/spec/containers/3/image",
            json!("c@sha256:x")
        ));
        assert!(
            !object.replace_at("/spec/paused", json!(true)),
            "absent: not added"
        );
        object.set_namespace("team \"a\"");
        assert!(!object.is_changed(), "edited as text, never parsed");
        assert!(object.value.get().is_none());
        assert_eq!(namespace(&object), Some("team \"a\""));
        let expected = {
            let mut v: Value = serde_json::from_str(text).unwrap();
            v["spec"]["replicas"] = json!(5);
            v["spec"]["template"]["spec"]["containers"][3]["image"] = json!("c@sha256:x");
            v["metadata"]["namespace"] = json!("team \"a\"");
            v
        };
        let edited: Value = serde_json::from_str(&object.clone().into_json()).unwrap();
        assert_eq!(edited, expected);
        object.set_namespace("b");
        assert_eq!(namespace(&object), Some("b"));
        assert_eq!(
            object.value().pointer("/metadata/namespace"),
            Some(&json!("b"))
        );

        let mut empty =
            Object::from_json(r#"{"kind":"ConfigMap","metadata":{ }}"#.to_owned()).unwrap();
        empty.set_namespace("n");
        assert_eq!(
            empty.into_json(),
            r#"{"kind":"ConfigMap","metadata":{"namespace":"n" }}"#
        );
    }

    /// `set_namespace` on text updates the head in place instead of reading it again; what it
    /// computes must be what reading the edited text gives.
    #[test]
    fn the_head_after_a_namespace_edit_is_the_head_of_the_edited_text() {
        let texts = [
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"}}"#,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"old-and-long"}}"#,
            r#"{"kind":"ConfigMap","metadata":{"namespace":"","name":"c"}}"#,
            r#"{"kind":"ConfigMap","metadata":{ },"spec":{"metadata":{"namespace":"inner"}}}"#,
            r#"{"metadata":{"name":"x","namespace":"ab"},"kind":"Pod","apiVersion":"v1"}"#,
        ];
        for text in texts {
            for namespace in ["n", "", "a much longer namespace \"quoted\" ü", "n"] {
                let mut object = Object::from_json(text.to_owned()).unwrap();
                object.set_namespace(namespace);
                object.set_namespace(namespace);
                let edited = object.text.clone().expect("edited as text");
                assert_eq!(
                    object.head.get(),
                    Some(&read_head(&edited).unwrap()),
                    "{text} / {namespace}"
                );
                let value: Value = serde_json::from_str(&edited).unwrap();
                assert_eq!(value["metadata"]["namespace"], json!(namespace), "{edited}");
            }
        }
    }

    /// Keys in any order: an edit before `metadata` moves it, and a later namespace edit must
    /// still land inside it.
    #[test]
    fn edits_before_metadata_keep_the_namespace_edit_in_place() {
        let text = r#"{"spec":{"replicas":3,"template":{"metadata":{"name":"t"}}},"metadata":{"name":"x","namespace":"a"},"kind":"Deployment","apiVersion":"apps/v1"}"#;
        for first_read in [false, true] {
            let mut object = Object::from_host_json(text.to_owned()).unwrap();
            if first_read {
                assert_eq!(namespace(&object), Some("a"));
            }
            assert!(object.replace_at("/spec/replicas", json!(100)));
            assert!(object.replace_at("/spec/template/metadata/name", json!("a-longer-name")));
            object.set_namespace("ns");
            assert!(object.replace_at("/spec/replicas", json!(1)));
            object.set_namespace("other");
            assert_eq!(namespace(&object), Some("other"));
            assert!(!object.is_changed(), "edited as text");
            let edited = object.text.clone().expect("text");
            assert_eq!(object.head.get(), Some(&read_head(&edited).unwrap()));
            let v: Value = serde_json::from_str(&edited).unwrap();
            assert_eq!(v["metadata"], json!({"name": "x", "namespace": "other"}));
            assert_eq!(v["spec"]["replicas"], json!(1));
            assert_eq!(
                v["spec"]["template"]["metadata"]["name"],
                json!("a-longer-name")
            );
        }
    }

    #[test]
    fn repeated_keys_are_read_as_a_value_reads_them() {
        // A `Value` keeps the last of repeated keys; the text readers must not see the first.
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":1,"template":{"spec":{"containers":[{"image":"a:1"}],"containers":[{"image":"evil:latest","image":"b:2"}]}},"replicas":100}}"#;
        let mut object = Object::from_json(text.to_owned()).unwrap();
        assert_eq!(object.read_at::<u64>("/spec/replicas"), Some(100));
        assert!(object.replace_at("/spec/replicas", json!(10)));
        assert_eq!(object.read_at::<u64>("/spec/replicas"), Some(10));
        assert_eq!(
            container_images(&object),
            vec![(
                "/spec/template/spec/containers/0/image".to_owned(),
                "b:2".to_owned()
            )]
        );
        let v: Value = serde_json::from_str(&object.into_json()).unwrap();
        assert_eq!(v.pointer("/spec/replicas"), Some(&json!(10)));
        // Array indices as `Value::pointer` reads them.
        let list = Object::from_json(r#"{"a":[10,11,12]}"#.to_owned()).unwrap();
        assert_eq!(list.read_at::<u64>("/a/1"), Some(11));
        for bad in ["/a/01", "/a/+1", "/a/3", "/a/-"] {
            assert_eq!(list.read_at::<u64>(bad), None, "{bad}");
        }
        // A value of another type, then the same key again with a number: the last counts.
        let retyped =
            Object::from_json(r#"{"spec":{"replicas":"x","replicas":3}}"#.to_owned()).unwrap();
        assert_eq!(retyped.read_at::<u64>("/spec/replicas"), Some(3));
        let mistyped = Object::from_json(r#"{"spec":{"replicas":"x"}}"#.to_owned()).unwrap();
        assert_eq!(mistyped.read_at::<u64>("/spec/replicas"), None);
        assert!(
            mistyped.value.get().is_none(),
            "a mistyped value needs no parse"
        );
        let escaped = Object::from_json(r#"{"a/b":{"~":4}}"#.to_owned()).unwrap();
        assert_eq!(escaped.read_at::<u64>("/a~1b/~0"), Some(4));
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
