//! The document tree SOPS encrypts: mappings keep their key order (the MAC is computed in
//! document order), scalars keep the type go-yaml v3 / encoding/json give them, because the MAC
//! hashes each value as Go formats that type.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::SopsError;

/// Nesting deeper than this is refused.
pub(crate) const MAX_DEPTH: usize = 128;

/// A scalar as the Go stores type it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Decrypted `type:bytes` (binary files).
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Scalar(Scalar),
}

impl Node {
    /// The value under `key` of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The JSON value a Kubernetes manifest reader sees once the file is decrypted: YAML merge
    /// keys (`<<`) applied, bytes as (lossy) text.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Map(items) => {
                let mut m = serde_json::Map::new();
                let mut merges = Vec::new();
                for (k, v) in items {
                    if k == "<<" {
                        merges.push(v.to_json());
                    } else {
                        m.insert(k.clone(), v.to_json());
                    }
                }
                crate::yaml::apply_merge_keys(&mut m, merges);
                Value::Object(m)
            }
            Node::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Scalar(s) => match s {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(*b),
                Scalar::Int(i) => Value::from(*i),
                Scalar::Float(f) => serde_json::Number::from_f64(*f)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(go_float(*f))),
                Scalar::Str(s) => Value::String(s.clone()),
                Scalar::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            },
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back as `f`,
/// never in exponent form.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's Display is also shortest-round-trip without an exponent.
        format!("{f}")
    }
}

/// Reads every YAML document of `text` as go-yaml v3's node API gives it to SOPS: plain scalars
/// typed by go-yaml's resolution (a timestamp stays a string, as it does when go-yaml decodes
/// into `interface{}`), aliases expanded, `<<` kept as a key, comments dropped (SOPS never
/// hashes them).
pub(crate) fn yaml_documents(file: &str, text: &str) -> Result<Vec<Node>, SopsError> {
    let mut r = YamlReader {
        file,
        parser: Parser::new_from_str(text),
        anchors: std::collections::HashMap::new(),
        budget: 100_000usize.saturating_add(text.len().saturating_mul(4)),
    };
    let mut docs = Vec::new();
    loop {
        let (ev, span) = r.next()?;
        match ev {
            Event::StreamEnd => return Ok(docs),
            Event::DocumentStart(_) => {
                let (ev, span) = r.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    continue;
                }
                let node = r.node(ev, span, 0)?;
                let (end, span) = r.next()?;
                if !matches!(end, Event::DocumentEnd) {
                    return Err(r.error("expected the end of the document", span));
                }
                match node {
                    Node::Map(_) => docs.push(node),
                    Node::Scalar(Scalar::Null) => {}
                    _ => return Err(r.error("a document is not a mapping", span)),
                }
            }
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            _ => return Err(r.error("unexpected YAML event", span)),
        }
    }
}

struct YamlReader<'a> {
    file: &'a str,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: std::collections::HashMap<usize, Node>,
    budget: usize,
}

impl<'a> YamlReader<'a> {
    fn error(&self, message: &str, span: Span) -> SopsError {
        SopsError::Parse {
            file: self.file.to_owned(),
            message: format!("{message} (line {})", span.start.line()),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), SopsError> {
        match self.parser.next() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(SopsError::Parse {
                file: self.file.to_owned(),
                message: e.to_string(),
            }),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn spend(&mut self, n: usize, span: Span) -> Result<(), SopsError> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or_else(|| self.error("YAML aliases expand to too many nodes", span))?;
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, SopsError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep", span));
        }
        self.spend(1, span)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag
                    .filter(|t| t.is_yaml_core_schema())
                    .map(|t| t.suffix.clone());
                (
                    Node::Scalar(yaml_scalar(&text, style, tag.as_deref())),
                    anchor,
                )
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.error("unknown YAML alias", span))?;
                self.spend(count(&node), span)?;
                return Ok(node);
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (Node::Seq(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut items: Vec<(String, Node)> = Vec::new();
                loop {
                    let (kev, kspan) = self.next()?;
                    if matches!(kev, Event::MappingEnd) {
                        break;
                    }
                    let key = match kev {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => return Err(self.error("a mapping key is not a string", kspan)),
                    };
                    if items.iter().any(|(k, _)| *k == key) {
                        return Err(
                            self.error(&format!("mapping key \"{key}\" already defined"), kspan)
                        );
                    }
                    let (vev, vspan) = self.next()?;
                    let value = self.node(vev, vspan, depth + 1)?;
                    items.push((key, value));
                }
                (Node::Map(items), anchor)
            }
            _ => return Err(self.error("unexpected YAML event", span)),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn count(node: &Node) -> usize {
    match node {
        Node::Map(items) => 1 + items.iter().map(|(_, v)| count(v)).sum::<usize>(),
        Node::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Node::Scalar(_) => 1,
    }
}

/// A scalar as go-yaml v3 decodes it into `interface{}`.
fn yaml_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Scalar {
    match tag {
        Some("str") | Some("binary") | Some("timestamp") => return Scalar::Str(text.to_owned()),
        Some("null") => return Scalar::Null,
        _ => {}
    }
    if style != ScalarStyle::Plain && tag.is_none() {
        return Scalar::Str(text.to_owned());
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    match crate::yaml::resolve_plain(text) {
        serde_json::Value::Null => Scalar::Null,
        serde_json::Value::Bool(b) => Scalar::Bool(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // go-yaml gives an int for a literal integer and a float64 for `1e3`, `1.0`;
                // both hash alike (FormatFloat of an integral float has no fraction).
                Scalar::Int(i)
            } else {
                Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        // Timestamps and everything else stay their source text.
        _ => Scalar::Str(text.to_owned()),
    }
}

/// Reads one JSON document keeping key order, numbers typed as the SOPS JSON store types them
/// (an integer in the int64 range is an int, anything else a float64).
pub(crate) fn json_document(file: &str, text: &str) -> Result<Node, SopsError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = Node::deserialize(&mut de).map_err(|e| SopsError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    de.end().map_err(|e| SopsError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    if !matches!(node, Node::Map(_)) {
        return Err(SopsError::Parse {
            file: file.to_owned(),
            message: "the document is not a JSON object".to_owned(),
        });
    }
    Ok(node)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Float(v as f64),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut items: Vec<(String, Node)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            items.push((k, v));
        }
        Ok(Node::Map(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_are_typed_as_go_yaml_types_them() {
        let docs = yaml_documents(
            "t.yaml",
            "a: 1\nb: 1.5\nc: true\nd: '1'\ne: 2024-01-02\nf: ~\ng: 0755\nh: [x, 2]\n",
        )
        .unwrap();
        let d = &docs[0];
        assert_eq!(d.get("a"), Some(&Node::Scalar(Scalar::Int(1))));
        assert_eq!(d.get("b"), Some(&Node::Scalar(Scalar::Float(1.5))));
        assert_eq!(d.get("c"), Some(&Node::Scalar(Scalar::Bool(true))));
        assert_eq!(d.get("d").and_then(Node::as_str), Some("1"));
        assert_eq!(d.get("e").and_then(Node::as_str), Some("2024-01-02"));
        assert_eq!(d.get("f"), Some(&Node::Scalar(Scalar::Null)));
        assert_eq!(d.get("g"), Some(&Node::Scalar(Scalar::Int(493))));
    }

    #[test]
    fn order_is_kept_and_depth_is_bounded() {
        let d = json_document("t.json", r#"{"z":1,"a":{"y":2,"b":3}}"#).unwrap();
        let Node::Map(items) = &d else { panic!() };
        assert_eq!(items[0].0, "z");
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(yaml_documents("t.yaml", &format!("a: {deep}")).is_err());
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1000.0), "1000");
        assert_eq!(go_float(0.1), "0.1");
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }
}
