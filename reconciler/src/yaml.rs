//! The one place YAML is parsed and written. serde_yaml is in maintenance mode; keeping every
//! call behind this module keeps a swap of the YAML crate to one file.

use serde::Deserialize as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A YAML document could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    message: String,
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<usize>,
}

impl YamlError {
    fn from_serde(err: serde_yaml::Error) -> Self {
        let line = err.location().map(|l| l.line());
        Self {
            message: err.to_string(),
            line,
        }
    }
}

/// Serializes a value as one YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(YamlError::from_serde)
}

/// Parses one YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(YamlError::from_serde)
}

/// Parses a multi-document YAML stream; empty documents are skipped.
pub fn from_str_multi<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, YamlError> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document).map_err(YamlError::from_serde)?;
        if value.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(value).map_err(YamlError::from_serde)?);
    }
    Ok(out)
}

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused (go-yaml's own limit is in the same range).
const MAX_DEPTH: usize = 128;
/// Nodes one stream may produce once aliases are expanded, per byte of input (plus a floor):
/// an alias bomb fails fast instead of exhausting memory.
const EXPANSION_PER_BYTE: usize = 4;
const EXPANSION_FLOOR: usize = 100_000;

/// What to do when a mapping repeats a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateKeys {
    /// An error naming the key and its line (go-yaml v3, as kustomize reads resources).
    Refuse,
    /// The later value wins (sigs.k8s.io/yaml, as kustomize reads kustomization files).
    LastWins,
}

/// Parses a multi-document YAML stream into JSON values as kustomize reads manifests: plain
/// scalars resolve as go-yaml v3 resolves them (`0755` is the integer 493, `0x1F` is 31,
/// `1_000` is 1000, `yes` is a string, a bare date is a timestamp string), integral floats
/// become integers (kustomize round-trips objects through JSON), aliases are expanded and
/// `<<` merge keys applied, and values under a document's `metadata.annotations` are strings
/// with their source text (`happy: true` is `"true"`). Empty documents are skipped. Used by
/// the build engine, where this is the hot path.
pub fn json_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    json_documents_with(text, DuplicateKeys::Refuse)
}

/// [`json_documents`] with a choice of duplicate-key handling.
pub fn json_documents_with(text: &str, dups: DuplicateKeys) -> Result<Vec<Value>, YamlError> {
    Ok(documents(text, dups, false)?
        .into_iter()
        .map(|(v, _)| v)
        .collect())
}

/// [`json_documents`], each document with the JSON pointers of its map values that have no
/// text at all (`key:` followed by nothing), reached from the top through maps only. go-yaml
/// reads them as null like `key: null`, but kustomize's strategic merge drops them where
/// an explicit `null` stays.
pub fn json_documents_marking_empty(text: &str) -> Result<Vec<(Value, Vec<String>)>, YamlError> {
    documents(text, DuplicateKeys::Refuse, true)
}

fn documents(
    text: &str,
    dups: DuplicateKeys,
    mark_empty: bool,
) -> Result<Vec<(Value, Vec<String>)>, YamlError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        budget: EXPANSION_FLOOR.saturating_add(text.len().saturating_mul(EXPANSION_PER_BYTE)),
        dups,
        empty_nulls: None,
        keys: Vec::new(),
    };
    let mut out = Vec::new();
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamEnd => return Ok(out),
            Event::DocumentStart(_) => {
                b.anchors.clear();
                b.empty_nulls = mark_empty.then(Vec::new);
                let (ev, span) = b.next()?;
                let v = if matches!(ev, Event::DocumentEnd) {
                    Value::Null
                } else {
                    let v = b.node(ev, span, 0, Path::Root, mark_empty)?;
                    let (end, _) = b.next()?;
                    if !matches!(end, Event::DocumentEnd) {
                        return Err(YamlError::at("expected the end of the document", span));
                    }
                    v
                };
                if !v.is_null() {
                    out.push((v, b.empty_nulls.take().unwrap_or_default()));
                }
            }
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            _ => return Err(YamlError::at("unexpected YAML event", span)),
        }
    }
}

impl YamlError {
    fn at(message: &str, span: Span) -> Self {
        YamlError {
            message: format!("{message} (line {})", span.start.line()),
            line: Some(span.start.line()),
        }
    }
}

/// Where a node sits, as far as the annotation rule cares.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Root,
    Metadata,
    Annotations,
    /// A value inside `metadata.annotations`.
    AnnotationValue,
    Other,
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    budget: usize,
    dups: DuplicateKeys,
    /// JSON pointers of the current document's map values written with no text at all
    /// (`key:`), reached through maps only; recorded when asked for.
    empty_nulls: Option<Vec<String>>,
    /// The keys from the document's top to the node being read, while it is reached
    /// through maps only and empty values are recorded.
    keys: Vec<String>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(YamlError {
                message: e.to_string(),
                line: Some(e.marker().line()),
            }),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn spend(&mut self, n: usize, span: Span) -> Result<(), YamlError> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or_else(|| YamlError::at("YAML aliases expand to too many nodes", span))?;
        Ok(())
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        depth: usize,
        path: Path,
        track: bool,
    ) -> Result<Value, YamlError> {
        if depth > MAX_DEPTH {
            return Err(YamlError::at("YAML nesting too deep", span));
        }
        self.spend(1, span)?;
        let (v, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                // Only the core schema's tags (`!!str`, `!!int`, ...) change resolution.
                let tag = tag
                    .filter(|t| t.is_yaml_core_schema())
                    .map(|t| t.suffix.clone());
                let empty = text.is_empty();
                let v = if path == Path::AnnotationValue {
                    Value::String(text.into_owned())
                } else {
                    scalar(&text, style, tag.as_deref())
                };
                if empty
                    && track
                    && style == ScalarStyle::Plain
                    && tag.is_none()
                    && !self.keys.is_empty()
                    && let Some(list) = self.empty_nulls.as_mut()
                {
                    let mut p = String::new();
                    for k in &self.keys {
                        p.push('/');
                        p.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    }
                    list.push(p);
                }
                (v, anchor)
            }
            Event::Alias(id) => {
                let v = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| YamlError::at("unknown YAML alias", span))?;
                self.spend(count(&v), span)?;
                return Ok(v);
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1, Path::Other, false)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut m = Map::new();
                let mut merges: Vec<Value> = Vec::new();
                loop {
                    let (kev, kspan) = self.next()?;
                    if matches!(kev, Event::MappingEnd) {
                        break;
                    }
                    let key = match kev {
                        Event::Scalar(text, ..) => text.into_owned(),
                        other => {
                            // A complex key: kustomize cannot represent it in JSON either.
                            let k = self.node(other, kspan, depth + 1, Path::Other, false)?;
                            serde_json::to_string(&k).unwrap_or_default()
                        }
                    };
                    let child_path = match (path, key.as_str()) {
                        (Path::Root, "metadata") => Path::Metadata,
                        (Path::Metadata, "annotations") => Path::Annotations,
                        (Path::Annotations, _) => Path::AnnotationValue,
                        _ => Path::Other,
                    };
                    let (vev, vspan) = self.next()?;
                    let (key, v) = if track {
                        self.keys.push(key);
                        let v = self.node(vev, vspan, depth + 1, child_path, true);
                        (self.keys.pop().unwrap_or_default(), v?)
                    } else {
                        let v = self.node(vev, vspan, depth + 1, child_path, false)?;
                        (key, v)
                    };
                    if key == "<<" {
                        merges.push(v);
                        continue;
                    }
                    if m.contains_key(&key) && self.dups == DuplicateKeys::Refuse {
                        return Err(YamlError::at(
                            &format!("mapping key \"{key}\" already defined"),
                            kspan,
                        ));
                    }
                    m.insert(key, v);
                }
                apply_merge_keys(&mut m, merges);
                (Value::Object(m), anchor)
            }
            _ => return Err(YamlError::at("unexpected YAML event", span)),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        Ok(v)
    }
}

/// YAML merge keys: `<<: *base` (or a list of them) gives `map` the keys it does not set
/// explicitly, from the merged maps, earlier maps first.
pub(crate) fn apply_merge_keys(map: &mut Map<String, Value>, merges: Vec<Value>) {
    for merged in merges {
        let maps = match merged {
            Value::Array(a) => a,
            other => vec![other],
        };
        for mm in maps {
            if let Value::Object(mm) = mm {
                for (k, v) in mm {
                    map.entry(k).or_insert(v);
                }
            }
        }
    }
}

fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

/// A scalar as go-yaml v3 resolves it (then as encoding/json would write it).
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") | Some("binary") => return Value::String(text.to_string()),
        Some("null") => return Value::Null,
        _ => {}
    }
    if style != ScalarStyle::Plain && tag.is_none() {
        return Value::String(text.to_string());
    }
    resolve_plain(text)
}

/// go-yaml v3's `resolve` for an untagged plain scalar.
pub(crate) fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON cannot carry these; encoding/json refuses them, kustomize keeps the text.
            return Value::String(text.to_string());
        }
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Value::String(text.to_string());
    }
    if let Some(ts) = timestamp(text) {
        return Value::String(ts);
    }
    let plain = text.replace('_', "");
    if let Some(i) = go_parse_int(&plain) {
        return Value::Number(i);
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && f.is_finite()
    {
        return json_float(f);
    }
    let (neg, digits) = match plain.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, plain.as_str()),
    };
    for (prefix, radix) in [("0b", 2), ("0o", 8)] {
        if let Some(d) = digits.strip_prefix(prefix)
            && let Ok(v) = i64::from_str_radix(d, radix)
        {
            return Value::Number(Number::from(if neg { -v } else { v }));
        }
    }
    Value::String(text.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint`: optional sign, `0x`/`0o`/`0b`
/// prefixes, and a leading `0` meaning octal.
fn go_parse_int(s: &str) -> Option<Number> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d.to_string(), 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d.to_string(), 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d.to_string(), 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (lower[1..].to_string(), 8)
    } else {
        (lower.clone(), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(&digits, radix).ok()?;
    if neg {
        if mag <= i64::MAX as u64 + 1 {
            return Some(Number::from((mag as i128).wrapping_neg() as i64));
        }
        return None;
    }
    Some(Number::from(mag))
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if int_digits == 0 && i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// A float as encoding/json writes it and a YAML reader reads it back: integral values below
/// 1e21 are integers.
fn json_float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if f >= 0.0 && f <= u64::MAX as f64 {
            return Value::Number(Number::from(f as u64));
        }
        if f < 0.0 && f >= i64::MIN as f64 {
            return Value::Number(Number::from(f as i64));
        }
    }
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// go-yaml v3's timestamp forms, written as encoding/json writes a `time.Time` (RFC 3339).
fn timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // Only the date part is checked strictly; go-yaml accepts 1-2 digit month/day.
    let mut parts = s.splitn(2, ['T', 't', ' ']);
    let date = parts.next()?;
    let rest = parts.next();
    let mut d = date.split('-');
    let (y, m, day) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some()
        || y.len() != 4
        || !(1..=2).contains(&m.len())
        || !(1..=2).contains(&day.len())
        || ![y, m, day]
            .iter()
            .all(|p| p.bytes().all(|c| c.is_ascii_digit()))
        || b.first().is_some_and(|c| !c.is_ascii_digit())
    {
        return None;
    }
    let (m, day): (u32, u32) = (m.parse().ok()?, day.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let days_in_month = match m {
        2 if y
            .parse::<u32>()
            .is_ok_and(|y| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > days_in_month {
        return None;
    }
    let date = format!("{y}-{m:02}-{day:02}");
    let Some(rest) = rest else {
        return Some(format!("{date}T00:00:00Z"));
    };
    // go-yaml's forms with a clock: `T`/`t` then `h:m:s[.frac]` and `Z` or `±hh:mm`, or a
    // space then `h:m:s[.frac]` in UTC; encoding/json then writes RFC 3339 with the
    // fraction's trailing zeros dropped and `Z` for a zero offset.
    let sep = b.get(date_len(s)?).copied()?;
    let (clock, zone) = if sep == b' ' {
        (rest, "Z".to_string())
    } else {
        let at = rest.find(['Z', '+', '-'])?;
        let (clock, zone) = rest.split_at(at);
        let zone = match zone {
            "Z" => "Z".to_string(),
            z => {
                let (sign, hm) = z.split_at(1);
                let (h, mi) = hm.split_once(':')?;
                if h.len() != 2 || mi.len() != 2 {
                    return None;
                }
                let (h, mi): (u32, u32) = (h.parse().ok()?, mi.parse().ok()?);
                if h > 23 || mi > 59 {
                    return None;
                }
                if h == 0 && mi == 0 {
                    "Z".to_string()
                } else {
                    format!("{sign}{h:02}:{mi:02}")
                }
            }
        };
        (clock, zone)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, f))
            if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) =>
        {
            (hms, f.trim_end_matches('0'))
        }
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut fields = hms.split(':');
    let (h, mi, sec) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some()
        || ![h, mi, sec]
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let (h, mi, sec): (u32, u32, u32) = (h.parse().ok()?, mi.parse().ok()?, sec.parse().ok()?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!("{date}T{h:02}:{mi:02}:{sec:02}{frac}{zone}"))
}

/// Length of the date part of a timestamp candidate (up to the first `T`, `t` or space).
fn date_len(s: &str) -> Option<usize> {
    s.find(['T', 't', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_resolve_as_go_yaml_v3() {
        let docs = json_documents(
            "a: 0755\nb: 0o600\nc: 0x1F\nd: 1_000\ne: 1e3\nf: 1.5\ng: yes\nh: '0755'\n\
             i: ~\nj: 2001-12-14\nk: -0b101\nl: .inf\nm: 08\nn: !!str 12\no: +12\n",
        )
        .expect("parses");
        assert_eq!(
            docs[0],
            json!({"a": 493, "b": 384, "c": 31, "d": 1000, "e": 1000, "f": 1.5, "g": "yes",
                   "h": "0755", "i": null, "j": "2001-12-14T00:00:00Z", "k": -5, "l": ".inf",
                   "m": 8, "n": "12", "o": 12})
        );
    }

    #[test]
    fn annotation_values_keep_their_text() {
        let docs = json_documents(
            "metadata:\n  annotations:\n    a: true\n    b: 1.0\n    c: ~\n  labels:\n    d: true\n",
        )
        .expect("parses");
        assert_eq!(
            docs[0],
            json!({"metadata": {"annotations": {"a": "true", "b": "1.0", "c": "~"},
                                "labels": {"d": true}}})
        );
    }

    #[test]
    fn empty_map_values_are_marked() {
        let docs = json_documents_marking_empty("a:\nb: null\nc:\n  d:\n  e: ~\nl:\n- x:\n")
            .expect("parses");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].1, vec!["/a".to_string(), "/c/d".to_string()]);
        assert!(docs[0].0["c"]["d"].is_null() && docs[0].0["l"][0]["x"].is_null());
    }

    #[test]
    fn duplicate_keys_and_aliases() {
        let err = json_documents("a: 1\nb: 2\na: 3\n").expect_err("duplicate refused");
        assert!(
            err.to_string()
                .contains("mapping key \"a\" already defined"),
            "{err}"
        );
        assert_eq!(err.line, Some(3));
        let last = json_documents_with("a: 1\na: 3\n", DuplicateKeys::LastWins).expect("ok");
        assert_eq!(last[0], json!({"a": 3}));
        let merged = json_documents("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n").expect("ok");
        assert_eq!(merged[0]["use"], json!({"x": 1, "y": 3}));
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        let err = json_documents(bomb).expect_err("alias bomb refused");
        assert!(err.to_string().contains("too many nodes"), "{err}");
    }
}
