//! SOPS decryption (the file format of github.com/getsops/sops v3) with age identities, in
//! memory. A SOPS file keeps its structure in the clear and replaces each value with
//! `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, encrypted under one 256-bit data key with the
//! value's path (`key:key:`) as additional data; the data key itself is stored once per
//! recipient (for age: an armored age file per recipient). A MAC (SHA-512 over every value in
//! document order, encrypted with the data key and `lastmodified` as additional data) makes a
//! changed, added, removed or reordered value an error.
//!
//! Supported: YAML, JSON, dotenv and binary files; age recipients (X25519, and ssh-ed25519 /
//! ssh-rsa through age's ssh support); `unencrypted_suffix`, `encrypted_suffix`,
//! `unencrypted_regex`, `encrypted_regex` and `mac_only_encrypted`. Refused with a message
//! naming the file: PGP, cloud KMS and Vault keys (no age recipient in the file), Shamir key
//! groups, the comment-regex options (they depend on YAML comments, which are not kept), INI.
//!
//! Nothing here logs or returns a decrypted value in an error.

mod cipher;
pub mod decryptor;
pub(crate) mod tree;

use std::io::Read as _;

use cipher::{EncryptedValue, Plain};
use sha2::Digest as _;
use tree::{Node, Scalar};

/// The largest encrypted file read (bytes); a bigger one is refused before it is parsed.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Prefix of the MAC input when `mac_only_encrypted` is set, as SOPS defines it.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Why a file could not be decrypted. Each variant names the file; none carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    /// The file is not valid YAML, JSON or dotenv.
    #[error("{file}: {message}")]
    Parse {
        /// Path of the file in the source.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// The file is over [`MAX_FILE_BYTES`].
    #[error("{file}: {size} bytes, over the limit of {MAX_FILE_BYTES} bytes for an encrypted file")]
    TooLarge {
        /// Path of the file in the source.
        file: String,
        /// Its size in bytes.
        size: usize,
    },
    /// The file has no `sops` metadata.
    #[error("{file}: not a SOPS file (no sops metadata)")]
    NotEncrypted {
        /// Path of the file in the source.
        file: String,
    },
    /// The `sops` metadata is malformed or incomplete (no MAC, a bad data-key stanza, ...).
    #[error("{file}: sops metadata: {message}")]
    Metadata {
        /// Path of the file in the source.
        file: String,
        /// What is wrong with the metadata.
        message: String,
    },
    /// The data key is wrapped only for key kinds other than age (KMS, PGP, Vault, ...).
    #[error(
        "{file}: encrypted only for {kinds}, which the reconciler does not support (age keys only)"
    )]
    UnsupportedKeyType {
        /// Path of the file in the source.
        file: String,
        /// The key kinds the file is encrypted for, comma separated.
        kinds: String,
    },
    /// No identity of the decryption Secret unwraps the data key.
    #[error(
        "{file}: none of the {identities} age identities decrypts the data key (recipients: {recipients})"
    )]
    NoMatchingKey {
        /// Path of the file in the source.
        file: String,
        /// How many identities were tried.
        identities: usize,
        /// The age recipients the file is encrypted for (public keys only).
        recipients: String,
    },
    /// One encrypted value is malformed or fails authentication.
    #[error("{file}: the value at {path} cannot be decrypted: {reason}")]
    Value {
        /// Path of the file in the source.
        file: String,
        /// Where the value is in the document (keys joined by `.`, `/` for the root), never the
        /// value.
        path: String,
        /// Why it cannot be decrypted.
        reason: String,
    },
    /// The decrypted content does not match the file's MAC.
    #[error("{file}: MAC mismatch: the file was changed after it was encrypted")]
    MacMismatch {
        /// Path of the file in the source.
        file: String,
    },
    /// A key file of the decryption Secret holds no usable identity.
    #[error("age identity {name}: {message}")]
    Identity {
        /// The key file's name (the Secret's data key).
        name: String,
        /// What is wrong with it (never the key material).
        message: String,
    },
}

/// How a file is stored, chosen by its name as `sops` chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` and `.yml`: values encrypted in place.
    Yaml,
    /// `.json`: values encrypted in place.
    Json,
    /// `.env`: `KEY=value` lines, each value encrypted.
    Dotenv,
    /// Anything else: the whole content as one encrypted `data` value.
    Binary,
}

impl Format {
    /// `.yaml`/`.yml`, `.json`, `.env`; anything else is binary.
    pub fn from_path(path: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".env") {
            Format::Dotenv
        } else {
            Format::Binary
        }
    }
}

/// The age identities decryption may use.
#[derive(Default)]
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// Adds the identities of one key file: `AGE-SECRET-KEY-1…` lines (comments allowed), or an
    /// unencrypted OpenSSH ed25519 / RSA private key. `name` is used in errors only.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), SopsError> {
        let err = |message: String| SopsError::Identity {
            name: name.to_owned(),
            message,
        };
        if text.contains("-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(text.as_bytes(), Some(name.to_owned()))
                .map_err(|e| err(format!("not a usable ssh private key: {e}")))?;
            match id {
                age::ssh::Identity::Unencrypted(_) => self.keys.push(Box::new(id)),
                age::ssh::Identity::Encrypted(_) => {
                    return Err(err("the ssh key is passphrase-protected".to_owned()));
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(err(
                        "unsupported ssh key type (ed25519 or RSA only)".to_owned()
                    ));
                }
            }
            return Ok(());
        }
        let mut found = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id: age::x25519::Identity = line.parse().map_err(|_| {
                err(format!(
                    "line {} is not an AGE-SECRET-KEY-1 identity",
                    n + 1
                ))
            })?;
            self.keys.push(Box::new(id));
            found += 1;
        }
        if found == 0 {
            return Err(err("holds no AGE-SECRET-KEY".to_owned()));
        }
        Ok(())
    }

    /// How many identities were added (an ssh key counts as one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True before any identity was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Decrypts a YAML or JSON file of Kubernetes objects into the documents it holds.
pub fn decrypt_documents(
    file: &str,
    bytes: &[u8],
    format: Format,
    ids: &Identities,
) -> Result<Vec<serde_json::Value>, SopsError> {
    let docs = load(file, bytes, format)?;
    let docs = decrypt_tree(file, docs, ids, true)?;
    Ok(docs.iter().map(Node::to_json).collect())
}

/// Decrypts a file to the bytes `sops -d` prints for it: a dotenv file as `KEY=value` lines,
/// a binary file as its original bytes. YAML and JSON are decrypted with
/// [`decrypt_documents`] instead.
pub fn decrypt_bytes(
    file: &str,
    bytes: &[u8],
    format: Format,
    ids: &Identities,
) -> Result<Vec<u8>, SopsError> {
    match format {
        Format::Dotenv => {
            let docs = decrypt_tree(file, load(file, bytes, format)?, ids, true)?;
            let mut out = Vec::new();
            if let Some(Node::Map(items)) = docs.first() {
                for (k, v) in items {
                    let value = match v {
                        Node::Scalar(Scalar::Str(s)) => s.replace('\n', "\\n"),
                        Node::Scalar(s) => cipher::to_bytes(s)
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default(),
                        _ => {
                            return Err(SopsError::Parse {
                                file: file.to_owned(),
                                message: format!("dotenv key {k} holds a complex value"),
                            });
                        }
                    };
                    out.extend_from_slice(format!("{k}={value}\n").as_bytes());
                }
            }
            Ok(out)
        }
        Format::Binary => {
            let docs = decrypt_tree(file, load(file, bytes, format)?, ids, true)?;
            match docs.first().and_then(|d| d.get("data")) {
                Some(Node::Scalar(Scalar::Bytes(b))) => Ok(b.clone()),
                Some(Node::Scalar(Scalar::Str(s))) => Ok(s.clone().into_bytes()),
                _ => Err(SopsError::Parse {
                    file: file.to_owned(),
                    message: "a binary SOPS file needs a `data` value".to_owned(),
                }),
            }
        }
        Format::Yaml | Format::Json => Err(SopsError::Parse {
            file: file.to_owned(),
            message: "YAML and JSON files decrypt to objects, not bytes".to_owned(),
        }),
    }
}

/// Reads the file's documents, with the `sops` metadata still in the first one.
fn load(file: &str, bytes: &[u8], format: Format) -> Result<Vec<Node>, SopsError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SopsError::TooLarge {
            file: file.to_owned(),
            size: bytes.len(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SopsError::Parse {
        file: file.to_owned(),
        message: "not UTF-8 text".to_owned(),
    })?;
    match format {
        Format::Yaml => tree::yaml_documents(file, text),
        Format::Json | Format::Binary => Ok(vec![tree::json_document(file, text)?]),
        Format::Dotenv => Ok(vec![dotenv_document(file, text)?]),
    }
}

/// A dotenv file as the SOPS dotenv store reads it: `KEY=value` lines (`\n` in a value is a
/// newline), `#` comments dropped; the metadata is flattened into `sops_*` keys and unflattened
/// here (`__map_` and `__list_N__` separators).
fn dotenv_document(file: &str, text: &str) -> Result<Node, SopsError> {
    let mut items = Vec::new();
    let mut meta: Vec<(String, Node)> = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(SopsError::Parse {
                file: file.to_owned(),
                message: "a line without `=`".to_owned(),
            });
        };
        let v = v.replace("\\n", "\n");
        if let Some(flat) = k.strip_prefix("sops_") {
            insert_flat(&mut meta, flat, Node::Scalar(Scalar::Str(v)));
        } else {
            items.push((k.to_owned(), Node::Scalar(Scalar::Str(v))));
        }
    }
    if !meta.is_empty() {
        items.push(("sops".to_owned(), Node::Map(meta)));
    }
    Ok(Node::Map(items))
}

/// Puts `value` at the flattened path `flat` (`age__list_0__map_enc`) of `map`.
fn insert_flat(map: &mut Vec<(String, Node)>, flat: &str, value: Node) {
    let (head, rest) = match flat.find("__") {
        Some(i) => (&flat[..i], Some(&flat[i..])),
        None => (flat, None),
    };
    let Some(rest) = rest else {
        map.push((head.to_owned(), value));
        return;
    };
    let slot = match map.iter().position(|(k, _)| k == head) {
        Some(i) => i,
        None => {
            map.push((head.to_owned(), Node::Seq(Vec::new())));
            map.len() - 1
        }
    };
    insert_flat_node(&mut map[slot].1, rest, value);
}

fn insert_flat_node(node: &mut Node, rest: &str, value: Node) {
    if let Some(r) = rest.strip_prefix("__list_") {
        let (idx, tail) = match r.find("__") {
            Some(i) => (&r[..i], Some(&r[i..])),
            None => (r, None),
        };
        let idx: usize = idx.parse().unwrap_or(0);
        if !matches!(node, Node::Seq(_)) {
            *node = Node::Seq(Vec::new());
        }
        if let Node::Seq(items) = node {
            while items.len() <= idx {
                items.push(Node::Map(Vec::new()));
            }
            match tail {
                Some(t) => insert_flat_node(&mut items[idx], t, value),
                None => items[idx] = value,
            }
        }
    } else if let Some(r) = rest.strip_prefix("__map_") {
        if !matches!(node, Node::Map(_)) {
            *node = Node::Map(Vec::new());
        }
        if let Node::Map(items) = node {
            insert_flat(items, r, value);
        }
    }
}

/// The metadata fields decryption reads.
struct Metadata {
    /// Armored age files holding the data key, with their recipient.
    age: Vec<(String, String)>,
    other_key_kinds: Vec<&'static str>,
    last_modified: String,
    mac: String,
    rules: cipher::Rules,
}

fn metadata(file: &str, meta: &Node) -> Result<Metadata, SopsError> {
    let bad = |message: &str| SopsError::Metadata {
        file: file.to_owned(),
        message: message.to_owned(),
    };
    let text = |key: &str| meta.get(key).and_then(Node::as_str).map(str::to_owned);
    let mut age = Vec::new();
    let mut other = Vec::new();
    let mut collect = |group: &Node| {
        if let Some(Node::Seq(entries)) = group.get("age") {
            for e in entries {
                if let (Some(r), Some(enc)) = (
                    e.get("recipient").and_then(Node::as_str),
                    e.get("enc").and_then(Node::as_str),
                ) {
                    age.push((r.to_owned(), enc.to_owned()));
                }
            }
        }
        for (key, kind) in [
            ("pgp", "PGP"),
            ("kms", "AWS KMS"),
            ("gcp_kms", "GCP KMS"),
            ("azure_kv", "Azure Key Vault"),
            ("hc_vault", "HashiCorp Vault"),
            ("hckms", "HuaweiCloud KMS"),
        ] {
            if matches!(group.get(key), Some(Node::Seq(s)) if !s.is_empty()) {
                other.push(kind);
            }
        }
    };
    collect(meta);
    if let Some(Node::Seq(groups)) = meta.get("key_groups") {
        if groups.len() > 1 {
            return Err(bad(
                "Shamir key groups (more than one key group) are not supported",
            ));
        }
        for g in groups {
            collect(g);
        }
    }
    for unsupported in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
        if text(unsupported).is_some_and(|s| !s.is_empty()) {
            return Err(bad(&format!("{unsupported} is not supported")));
        }
    }
    let regex = |key: &str| -> Result<Option<regex::Regex>, SopsError> {
        match text(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(r) => regex::Regex::new(&r)
                .map(Some)
                .map_err(|e| bad(&format!("{key} is not a valid regular expression: {e}"))),
        }
    };
    let rules = cipher::Rules {
        unencrypted_suffix: text("unencrypted_suffix").filter(|s| !s.is_empty()),
        encrypted_suffix: text("encrypted_suffix").filter(|s| !s.is_empty()),
        unencrypted_regex: regex("unencrypted_regex")?,
        encrypted_regex: regex("encrypted_regex")?,
        mac_only_encrypted: match meta.get("mac_only_encrypted") {
            Some(Node::Scalar(Scalar::Bool(b))) => *b,
            Some(Node::Scalar(Scalar::Str(s))) => s == "true" || s == "True",
            _ => false,
        },
    };
    Ok(Metadata {
        age,
        other_key_kinds: other,
        last_modified: text("lastmodified").ok_or_else(|| bad("no lastmodified"))?,
        mac: text("mac").ok_or_else(|| bad("no mac"))?,
        rules,
    })
}

/// Removes the metadata, finds the data key, decrypts every value and, with `verify_mac`,
/// checks the MAC.
fn decrypt_tree(
    file: &str,
    mut docs: Vec<Node>,
    ids: &Identities,
    verify_mac: bool,
) -> Result<Vec<Node>, SopsError> {
    let mut meta_node = None;
    for (i, doc) in docs.iter_mut().enumerate() {
        if let Node::Map(items) = doc
            && let Some(pos) = items.iter().position(|(k, _)| k == "sops")
        {
            let (_, m) = items.remove(pos);
            if i == 0 {
                meta_node = Some(m);
            }
        }
    }
    let meta_node = meta_node.ok_or_else(|| SopsError::NotEncrypted {
        file: file.to_owned(),
    })?;
    let meta = metadata(file, &meta_node)?;
    let key = data_key(file, &meta, ids)?;

    let mut hasher = sha2::Sha512::new();
    if meta.rules.mac_only_encrypted {
        hasher.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut path = Vec::new();
        if let Some(doc) = cipher::walk(file, doc, &mut path, &key, &meta.rules, &mut hasher)? {
            out.push(doc);
        }
    }
    if !verify_mac {
        return Ok(out);
    }
    let computed = hex::encode_upper(hasher.finalize());

    let aad = rfc3339(&meta.last_modified);
    let stored = EncryptedValue::parse(&meta.mac)
        .and_then(|v| v.open(&key, aad.as_bytes()))
        .map_err(|_| SopsError::MacMismatch {
            file: file.to_owned(),
        })?;
    match stored {
        Plain::Text(t) if t == computed => Ok(out),
        _ => Err(SopsError::MacMismatch {
            file: file.to_owned(),
        }),
    }
}

/// `lastmodified` as Go's `time.Parse(RFC3339)` then `Format(RFC3339)` writes it: fractional
/// seconds dropped, a zero offset written `Z`.
fn rfc3339(s: &str) -> String {
    let (main, zone) = match s.find(['Z', 'z']) {
        Some(i) => (&s[..i], "Z".to_owned()),
        None => match s.rfind(['+', '-']).filter(|&i| i > 10) {
            Some(i) => {
                let z = &s[i..];
                (
                    &s[..i],
                    if z == "+00:00" || z == "-00:00" {
                        "Z".to_owned()
                    } else {
                        z.to_owned()
                    },
                )
            }
            None => (s, String::new()),
        },
    };
    let main = main.split('.').next().unwrap_or(main);
    format!("{main}{zone}")
}

/// The 32-byte data key, from the first age recipient one of `ids` can open.
fn data_key(file: &str, meta: &Metadata, ids: &Identities) -> Result<[u8; 32], SopsError> {
    if meta.age.is_empty() {
        return Err(SopsError::UnsupportedKeyType {
            file: file.to_owned(),
            kinds: if meta.other_key_kinds.is_empty() {
                "no key at all".to_owned()
            } else {
                meta.other_key_kinds.join(", ")
            },
        });
    }
    for (_, enc) in &meta.age {
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let Ok(decryptor) = age::Decryptor::new(reader) else {
            continue;
        };
        let Ok(mut plain) =
            decryptor.decrypt(ids.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
        else {
            continue;
        };
        let mut key = Vec::with_capacity(32);
        if plain.by_ref().take(64).read_to_end(&mut key).is_ok()
            && let Ok(key) = <[u8; 32]>::try_from(key.as_slice())
        {
            return Ok(key);
        }
    }
    Err(SopsError::NoMatchingKey {
        file: file.to_owned(),
        identities: ids.len(),
        recipients: meta
            .age
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_file_name() {
        assert_eq!(Format::from_path("a/secret.enc.yaml"), Format::Yaml);
        assert_eq!(Format::from_path("x.YML"), Format::Yaml);
        assert_eq!(Format::from_path("x.json"), Format::Json);
        assert_eq!(Format::from_path("app.env"), Format::Dotenv);
        assert_eq!(Format::from_path("key.bin"), Format::Binary);
    }

    #[test]
    fn last_modified_is_normalised_as_go_formats_it() {
        assert_eq!(rfc3339("2024-09-04T13:43:30Z"), "2024-09-04T13:43:30Z");
        assert_eq!(
            rfc3339("2024-09-04T13:43:30.123456Z"),
            "2024-09-04T13:43:30Z"
        );
        assert_eq!(rfc3339("2024-09-04T13:43:30+00:00"), "2024-09-04T13:43:30Z");
        assert_eq!(
            rfc3339("2024-09-04T13:43:30+02:00"),
            "2024-09-04T13:43:30+02:00"
        );
    }

    #[test]
    fn dotenv_metadata_is_unflattened() {
        let doc = dotenv_document(
            "a.env",
            "A=ENC[x]\nsops_age__list_0__map_recipient=age1x\nsops_age__list_0__map_enc=line1\\nline2\nsops_mac=m\n",
        )
        .unwrap();
        let meta = doc.get("sops").unwrap();
        let Node::Seq(age) = meta.get("age").unwrap() else {
            panic!("{meta:?}")
        };
        assert_eq!(
            age[0].get("recipient").and_then(Node::as_str),
            Some("age1x")
        );
        assert_eq!(
            age[0].get("enc").and_then(Node::as_str),
            Some("line1\nline2")
        );
        assert_eq!(meta.get("mac").and_then(Node::as_str), Some("m"));
    }

    #[test]
    fn a_file_without_age_keys_names_what_it_has() {
        let doc = tree::yaml_documents(
            "s.yaml",
            "a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops:\n  pgp:\n  - fp: ABC\n    enc: x\n  lastmodified: '2024-01-01T00:00:00Z'\n  mac: x\n",
        )
        .unwrap();
        let err = decrypt_tree("s.yaml", doc, &Identities::default(), true).unwrap_err();
        assert!(err.to_string().contains("PGP"), "{err}");
        assert!(err.to_string().contains("s.yaml"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let big = vec![b' '; MAX_FILE_BYTES + 1];
        let err =
            decrypt_documents("big.yaml", &big, Format::Yaml, &Identities::default()).unwrap_err();
        assert!(matches!(err, SopsError::TooLarge { .. }), "{err}");
    }
}
