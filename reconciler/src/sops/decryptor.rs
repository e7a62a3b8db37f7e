//! `spec.decryption` of a Kustomization: which files and objects of a build are decrypted, with
//! which keys, and what happens to encrypted input when there are no keys. Follows Flux's
//! kustomize-controller (`internal/decryptor`):
//!
//! - during the build ([`crate::build::InputFilter`]): the `envs` and `files` of secretGenerators and
//!   the `patches[].path` files that are SOPS-encrypted are decrypted in memory before the
//!   engine uses them (Flux decrypts them on disk before running kustomize);
//! - after the build ([`Decryptor::decrypt_objects`]), before substitution and the policies:
//!   every object that carries SOPS metadata (`sops.mac`) is decrypted, whatever its kind,
//!   unless annotated `kubectl-gitops.io/decrypt: disabled`; and every `data` value of a Secret
//!   that is a whole SOPS file is decrypted, in the format its key names.
//!
//! Beyond Flux: the MAC of each encrypted resource file is verified when the build reads it
//! (Flux never checks it: kustomize's own changes to an object — a namespace, labels — would
//! fail a check made after the build, so the object stage skips it and the file stage, on the
//! bytes as committed, does it); a file that holds `ENC[…]` values but no SOPS metadata (a
//! truncated file) is refused instead of being applied as ciphertext; an encrypted
//! secretGenerator input without `spec.decryption` is refused instead of being put in the
//! Secret as ciphertext.
//!
//! Keys: only age identities (Secret keys ending in `.agekey`). A Secret that carries a PGP key,
//! a Vault token or cloud KMS credentials is refused, naming the key.
//!
//! Masked mode (the CLI's `build`/`diff`, which hold no keys): as `flux build`, encrypted values
//! become [`MASK`] instead of being decrypted.
//!
//! Nothing decrypted is logged or put into an error; what a policy might quote from the
//! decrypted objects is removed from its messages by the [`Redactor`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use base64::Engine as _;
use serde_json::Value;

use super::{Format, Identities, SopsError};
use crate::api::conditions::meta;
use crate::build::{InputFilter, InputUse};

/// What stands for an encrypted value where it cannot be decrypted (the CLI), as `flux build`
/// writes it.
pub const MASK: &str = "**SOPS**";

/// Whether a value is [`MASK`], as text (`stringData`) or base64 (`data`).
pub fn is_sops_mask(text: &str) -> bool {
    text == MASK || base64::engine::general_purpose::STANDARD.encode(MASK) == text
}

/// Where the `.agekey` suffix and the other key kinds of a decryption Secret are told apart
/// (Flux's names); every kind but age is refused.
const AGE_KEY_SUFFIX: &str = ".agekey";
const UNSUPPORTED_KEYS: [(&str, &str); 5] = [
    ("sops.vault-token", "a HashiCorp Vault token"),
    ("sops.aws-kms", "AWS KMS credentials"),
    ("sops.azure-kv", "Azure Key Vault credentials"),
    ("sops.gcp-kms", "GCP KMS credentials"),
    (".asc", "a PGP key"),
];

/// Why a decryption Secret cannot give keys. Names the Secret and the key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key whose name says it holds KMS, Vault or PGP material, which is not supported.
    #[error(
        "decryption Secret {secret}: key '{key}' holds {kind}, which is not supported (age keys only, in keys ending in .agekey)"
    )]
    Unsupported {
        /// The Secret, `namespace/name`.
        secret: String,
        /// The data key.
        key: String,
        /// What the key's name says it holds (KMS credentials, a PGP key, ...).
        kind: &'static str,
    },
    /// A `.agekey` key that holds no usable identity.
    #[error("decryption Secret {secret}: key '{key}': {source}")]
    Invalid {
        /// The Secret, `namespace/name`.
        secret: String,
        /// The data key.
        key: String,
        /// What is wrong with it.
        #[source]
        source: Box<SopsError>,
    },
    /// No key of the Secret ends in `.agekey`.
    #[error("decryption Secret {secret} holds no age identity (no key ending in .agekey)")]
    NoAgeKey {
        /// The Secret, `namespace/name`.
        secret: String,
    },
}

/// Reads the age identities of a decryption Secret's `data` (decoded bytes per key). With
/// `refuse_others`, keys of other kinds are an error (a Kustomization's own Secret); without,
/// they are ignored (the reconciler's `--sops-age-secret`, where Flux reads only `.agekey`).
pub fn identities_from_secret<'a>(
    secret: &str,
    data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    refuse_others: bool,
) -> Result<Identities, KeyError> {
    let mut ids = Identities::default();
    for (key, value) in data {
        if key.ends_with(AGE_KEY_SUFFIX) {
            let text = std::str::from_utf8(value).map_err(|_| KeyError::Invalid {
                secret: secret.to_owned(),
                key: key.to_owned(),
                source: Box::new(SopsError::Identity {
                    name: key.to_owned(),
                    message: "not UTF-8 text".to_owned(),
                }),
            })?;
            ids.add(key, text).map_err(|source| KeyError::Invalid {
                secret: secret.to_owned(),
                key: key.to_owned(),
                source: Box::new(source),
            })?;
        } else if refuse_others
            && let Some((_, kind)) = UNSUPPORTED_KEYS
                .iter()
                .find(|(name, _)| key == *name || (name.starts_with('.') && key.ends_with(name)))
        {
            return Err(KeyError::Unsupported {
                secret: secret.to_owned(),
                key: key.to_owned(),
                kind,
            });
        }
    }
    if ids.is_empty() {
        return Err(KeyError::NoAgeKey {
            secret: secret.to_owned(),
        });
    }
    Ok(ids)
}

/// Why an object of the build cannot be decrypted. Names the object; never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// An encrypted Secret and no `spec.decryption` (Flux's message).
    #[error(
        "{object} is SOPS encrypted, configuring decryption is required for this secret to be reconciled"
    )]
    NotConfigured {
        /// The object, `Kind namespace/name`.
        object: String,
    },
    /// The object's values (the source names the object).
    #[error("{source}")]
    Object {
        /// The object, `Kind namespace/name`.
        object: String,
        /// What failed (names the file, never a value).
        #[source]
        source: Box<SopsError>,
    },
    /// A `data` value holding a whole SOPS file (the source names the object and the key).
    #[error("{source}")]
    Field {
        /// The object, `Kind namespace/name`.
        object: String,
        /// The `data` key holding the SOPS file.
        key: String,
        /// What failed (names the file, never a value).
        #[source]
        source: Box<SopsError>,
    },
    /// A decrypted `data` value that cannot be written; `field` is `Kind/ns/name data.KEY`.
    #[error("{field}: {message}")]
    FieldFormat {
        /// The value, `Kind/ns/name data.KEY`.
        field: String,
        /// Why it cannot be written.
        message: String,
    },
}

enum Mode {
    /// No `spec.decryption`.
    Off,
    Keys(Identities),
    /// No keys here: encrypted values are masked.
    Masked,
}

/// The decryption of one render.
pub struct Decryptor {
    mode: Mode,
    /// Every plaintext value this decryptor produced (see [`Redactor`]).
    revealed: Mutex<BTreeSet<String>>,
}

/// Plaintext values shorter than this are not redacted from messages (they would blank out
/// ordinary words and numbers).
const MIN_REDACTED_CHARS: usize = 4;

/// What replaces a decrypted value found in a message.
pub const REDACTED: &str = "<redacted>";

/// Removes the plaintext a render decrypted from text that leaves it (policy messages reach
/// the status and events; a policy sees decrypted objects and may quote them). Best effort: a
/// value is found as it was decrypted (and as base64 of it), not transformed.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Longest first, so a value containing another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// `text` with every decrypted value (and its base64 form) replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), REDACTED);
            }
        }
        out
    }
}

impl Decryptor {
    fn new(mode: Mode) -> Self {
        Decryptor {
            mode,
            revealed: Mutex::new(BTreeSet::new()),
        }
    }

    /// No `spec.decryption`: an encrypted Secret or secretGenerator input is an error.
    pub fn off() -> Self {
        Self::new(Mode::Off)
    }

    /// Decrypts with `ids`.
    pub fn with_keys(ids: Identities) -> Self {
        Self::new(Mode::Keys(ids))
    }

    /// Masks encrypted values instead of decrypting them (a render without keys).
    pub fn masked() -> Self {
        Self::new(Mode::Masked)
    }

    /// The redactor of every value decrypted so far.
    pub fn redactor(&self) -> Redactor {
        let revealed = self.revealed.lock().unwrap_or_else(|e| e.into_inner());
        let mut values: Vec<String> = revealed.iter().cloned().collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    fn remember(&self, text: &str) {
        let text = text.trim();
        if text.chars().count() < MIN_REDACTED_CHARS {
            return;
        }
        let mut revealed = self.revealed.lock().unwrap_or_else(|e| e.into_inner());
        revealed.insert(text.to_owned());
        revealed.insert(base64::engine::general_purpose::STANDARD.encode(text));
    }

    /// Remembers the values of a decrypted file: string leaves of YAML/JSON documents, dotenv
    /// values, the lines (and whole text) of anything else.
    fn remember_file(&self, format: Format, plain: &[u8]) {
        let text = String::from_utf8_lossy(plain);
        match format {
            Format::Yaml | Format::Json => {
                if let Ok(docs) = crate::yaml::json_documents(&text) {
                    for doc in &docs {
                        self.remember_leaves(doc);
                    }
                }
            }
            Format::Dotenv => {
                for line in text.lines() {
                    if let Some((_, v)) = line.split_once('=') {
                        self.remember(v);
                    }
                }
            }
            Format::Binary => {
                self.remember(&text);
                for line in text.lines() {
                    self.remember(line);
                }
            }
        }
    }

    fn remember_leaves(&self, value: &Value) {
        match value {
            Value::String(s) => self.remember(s),
            Value::Array(items) => items.iter().for_each(|v| self.remember_leaves(v)),
            Value::Object(map) => map.values().for_each(|v| self.remember_leaves(v)),
            _ => {}
        }
    }

    /// Remembers the values of `after` whose counterpart in `before` was encrypted.
    fn remember_decrypted(&self, before: &Value, after: &Value) {
        match (before, after) {
            (Value::String(enc), _) if enc.starts_with("ENC[AES256_GCM,") => match after {
                Value::String(s) => self.remember(s),
                other => self.remember(&other.to_string()),
            },
            (Value::Object(b), Value::Object(a)) => {
                for (k, v) in b {
                    if let Some(av) = a.get(k) {
                        self.remember_decrypted(v, av);
                    }
                }
            }
            (Value::Array(b), Value::Array(a)) => {
                for (bv, av) in b.iter().zip(a) {
                    self.remember_decrypted(bv, av);
                }
            }
            _ => {}
        }
    }

    /// Decrypts (or masks) the objects of a build; see the module docs for which.
    pub fn decrypt_objects(&self, objects: Vec<Value>) -> Result<Vec<Value>, DecryptError> {
        objects
            .into_iter()
            .map(|o| self.decrypt_object(o))
            .collect()
    }

    fn decrypt_object(&self, mut object: Value) -> Result<Value, DecryptError> {
        let disabled = object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(meta::DECRYPT_ANNOTATION))
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(meta::DECRYPT_DISABLED));
        let is_secret = object["kind"] == "Secret" && object["apiVersion"] == "v1";
        let encrypted = object
            .get("sops")
            .and_then(|s| s.get("mac"))
            .is_some_and(|m| !m.is_null() && m != "");
        if encrypted {
            return match &self.mode {
                // As Flux: only a v1 Secret is an error; another kind carrying a `sops` field
                // (e.g. an operator's own encrypted custom resource) is applied as it is.
                Mode::Off if is_secret => Err(DecryptError::NotConfigured {
                    object: describe(&object),
                }),
                Mode::Off => Ok(object),
                _ if disabled => Ok(object),
                Mode::Masked => Ok(if is_secret {
                    mask_secret(object)
                } else {
                    object
                }),
                Mode::Keys(ids) => {
                    let decrypted = decrypt_whole(&object, ids)?;
                    self.remember_decrypted(&object, &decrypted);
                    Ok(decrypted)
                }
            };
        }
        if !is_secret || disabled || matches!(self.mode, Mode::Off) {
            return Ok(object);
        }
        let name = describe(&object);
        let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) else {
            return Ok(object);
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        for (key, value) in data.iter_mut() {
            let Some(bytes) = value.as_str().and_then(|s| b64.decode(s).ok()) else {
                continue;
            };
            let Some(format) = file_format(&bytes, key) else {
                continue;
            };
            let plain = match &self.mode {
                Mode::Keys(ids) => {
                    let field = format!("{name} data.{key}");
                    let output = key_format(key);
                    let plain =
                        plain_file(&field, &bytes, format, output, ids).map_err(|e| match e {
                            PlainError::Sops(source) => DecryptError::Field {
                                object: name.clone(),
                                key: key.clone(),
                                source: Box::new(source),
                            },
                            PlainError::Emit(message) => DecryptError::FieldFormat {
                                field: field.clone(),
                                message,
                            },
                        })?;
                    self.remember_file(output, &plain);
                    plain
                }
                _ => MASK.as_bytes().to_vec(),
            };
            *value = Value::String(b64.encode(plain));
        }
        Ok(object)
    }
}

/// `Kind/namespace/name` (as Flux names objects in messages).
fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

/// Decrypts an object that carries SOPS metadata, without the MAC check (the build may have
/// changed its plain values; the file's MAC was checked when it was read).
fn decrypt_whole(object: &Value, ids: &Identities) -> Result<Value, DecryptError> {
    let name = describe(object);
    let err = |source| DecryptError::Object {
        object: name.clone(),
        source: Box::new(source),
    };
    let text = serde_json::to_string(object).map_err(|e| {
        err(SopsError::Parse {
            file: name.clone(),
            message: e.to_string(),
        })
    })?;
    let doc = super::tree::json_document(&name, &text).map_err(err)?;
    let mut docs = super::decrypt_tree(&name, vec![doc], ids, false).map_err(err)?;
    match docs.pop() {
        Some(doc) => Ok(doc.to_json()),
        None => Err(err(SopsError::NotEncrypted { file: name.clone() })),
    }
}

/// Replaces a Secret's values by the mask and drops its SOPS metadata (as `flux build`).
fn mask_secret(mut object: Value) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(o) = object.as_object_mut() {
        o.remove("sops");
        for (field, mask) in [("data", b64.encode(MASK)), ("stringData", MASK.to_owned())] {
            if let Some(values) = o.get_mut(field).and_then(Value::as_object_mut) {
                for v in values.values_mut() {
                    *v = Value::String(mask.clone());
                }
            }
        }
    }
    object
}

/// The format a file is read in, chosen by the name it is stored under (Flux's
/// `formatForPath`: a `.dockerconfigjson` key is JSON).
fn key_format(name: &str) -> Format {
    if name.ends_with(".dockerconfigjson") {
        Format::Json
    } else {
        Format::from_path(name)
    }
}

/// The marker of an encrypted file of each format (Flux's, which `sops` always writes).
fn marker(format: Format) -> &'static [u8] {
    match format {
        Format::Yaml => b"mac: ENC[",
        Format::Json | Format::Binary => b"\"mac\": \"ENC[",
        Format::Dotenv => b"sops_mac=ENC[",
    }
}

/// The format an encrypted file is stored in, from its marker (`None`: not encrypted). A JSON
/// envelope is a binary file unless the name says JSON.
fn file_format(bytes: &[u8], name: &str) -> Option<Format> {
    let has = |m: &[u8]| bytes.windows(m.len()).any(|w| w == m);
    if has(marker(Format::Dotenv)) {
        Some(Format::Dotenv)
    } else if has(marker(Format::Json)) {
        Some(if key_format(name) == Format::Json {
            Format::Json
        } else {
            Format::Binary
        })
    } else if has(marker(Format::Yaml)) {
        Some(Format::Yaml)
    } else {
        None
    }
}

/// Values SOPS encrypted, whatever the file's format.
const ENCRYPTED_VALUE: &[u8] = b"ENC[AES256_GCM,";

fn holds_encrypted_values(bytes: &[u8]) -> bool {
    bytes
        .windows(ENCRYPTED_VALUE.len())
        .any(|w| w == ENCRYPTED_VALUE)
}

enum PlainError {
    Sops(SopsError),
    Emit(String),
}

/// The plaintext of an encrypted file stored as `input`, written as `output` (YAML and JSON
/// documents are written by this crate's emitters: the same data as `sops -d`, not byte for
/// byte its layout; dotenv and binary files are byte for byte).
fn plain_file(
    file: &str,
    bytes: &[u8],
    input: Format,
    output: Format,
    ids: &Identities,
) -> Result<Vec<u8>, PlainError> {
    match input {
        Format::Dotenv | Format::Binary => {
            super::decrypt_bytes(file, bytes, input, ids).map_err(PlainError::Sops)
        }
        Format::Yaml | Format::Json => {
            let docs =
                super::decrypt_documents(file, bytes, input, ids).map_err(PlainError::Sops)?;
            let emit = |e: String| PlainError::Emit(format!("cannot write it decrypted: {e}"));
            let mut out = String::new();
            for (i, doc) in docs.iter().enumerate() {
                if output == Format::Json {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(
                        &serde_json::to_string_pretty(doc).map_err(|e| emit(e.to_string()))?,
                    );
                    out.push('\n');
                } else {
                    if i > 0 {
                        out.push_str("---\n");
                    }
                    out.push_str(&crate::yaml::to_string(doc).map_err(|e| emit(e.to_string()))?);
                }
            }
            Ok(out.into_bytes())
        }
    }
}

impl InputFilter for Decryptor {
    fn filter(&self, rel: &str, bytes: Vec<u8>, used_as: InputUse<'_>) -> Result<Vec<u8>, String> {
        let (format, decrypt) = match used_as {
            InputUse::Resource => (resource_format(rel), false),
            InputUse::Patch => (resource_format(rel), true),
            InputUse::SecretEnv => (
                match Format::from_path(rel) {
                    Format::Binary => Format::Dotenv,
                    f => f,
                },
                true,
            ),
            InputUse::SecretFile { key } => (key_format(key), true),
            // As Flux: configMapGenerator inputs are never decrypted.
            InputUse::ConfigMapEnv | InputUse::ConfigMapFile => return Ok(bytes),
        };
        let encrypted = match used_as {
            InputUse::SecretFile { key } => file_format(&bytes, key).is_some(),
            _ => {
                let m = marker(format);
                bytes.windows(m.len()).any(|w| w == m)
            }
        };
        if !encrypted {
            if matches!(format, Format::Yaml | Format::Json | Format::Dotenv)
                && holds_encrypted_values(&bytes)
            {
                return Err(
                    "holds SOPS-encrypted values (ENC[AES256_GCM,…]) but no SOPS metadata and MAC: a truncated or damaged SOPS file"
                        .to_owned(),
                );
            }
            return Ok(bytes);
        }
        let ids = match &self.mode {
            Mode::Keys(ids) => ids,
            Mode::Off if decrypt => {
                return Err("is SOPS encrypted, configuring decryption (spec.decryption) is required to build with it".to_owned());
            }
            Mode::Off => return Ok(bytes),
            Mode::Masked => {
                return match used_as {
                    InputUse::Resource => Ok(bytes),
                    InputUse::SecretEnv => Ok(masked_dotenv(&bytes)),
                    InputUse::SecretFile { .. } => Ok(MASK.as_bytes().to_vec()),
                    _ => Err(
                        "is SOPS encrypted, and no decryption keys are available here (the CLI never holds them)"
                            .to_owned(),
                    ),
                };
            }
        };
        if !decrypt {
            // The MAC is checked on the file as committed; the objects are decrypted after the
            // build (kustomize may change their plain values). A file that opts an object out
            // of decryption (e.g. an operator's own encrypted resource, for another key) is
            // left to the object stage, which honours the annotation per object.
            let opted_out = bytes
                .windows(meta::DECRYPT_ANNOTATION.len())
                .any(|w| w == meta::DECRYPT_ANNOTATION.as_bytes());
            if !opted_out {
                super::decrypt_documents(rel, &bytes, format, ids)
                    .map_err(|e| without_file(e, rel))?;
            }
            return Ok(bytes);
        }
        let input = match used_as {
            InputUse::SecretFile { key } => file_format(&bytes, key).unwrap_or(format),
            _ => format,
        };
        let plain = plain_file(rel, &bytes, input, format, ids).map_err(|e| match e {
            PlainError::Sops(e) => without_file(e, rel),
            PlainError::Emit(m) => m,
        })?;
        self.remember_file(format, &plain);
        Ok(plain)
    }
}

/// A resource or patch file is YAML unless it is named `.json`.
fn resource_format(rel: &str) -> Format {
    match Format::from_path(rel) {
        Format::Json => Format::Json,
        _ => Format::Yaml,
    }
}

/// The message of a file's error without its leading `file: ` (the build error names it).
fn without_file(e: SopsError, rel: &str) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{rel}: "))
        .map(str::to_owned)
        .unwrap_or(text)
}

/// An encrypted dotenv file with every value masked (its keys are in the clear).
fn masked_dotenv(bytes: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        if let Some((k, _)) = line.split_once('=')
            && !k.starts_with("sops_")
            && !k.trim_start().starts_with('#')
        {
            out.push_str(&format!("{k}={MASK}\n"));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_key_kinds_are_refused_by_name() {
        for key in [
            "identity.asc",
            "sops.vault-token",
            "sops.aws-kms",
            "sops.gcp-kms",
        ] {
            let err = identities_from_secret("ns/keys", [(key, b"x".as_slice())], true)
                .err()
                .unwrap();
            let text = err.to_string();
            assert!(matches!(err, KeyError::Unsupported { .. }), "{text}");
            assert!(text.contains("ns/keys") && text.contains(key), "{text}");
        }
        let err = identities_from_secret("ns/keys", [("readme.txt", b"x".as_slice())], true)
            .err()
            .unwrap();
        assert!(matches!(err, KeyError::NoAgeKey { .. }), "{err}");
        // The reconciler-wide Secret is read for its age keys only, as Flux reads it.
        let err =
            identities_from_secret("gitops-system/global", [("a.asc", b"x".as_slice())], false)
                .err()
                .unwrap();
        assert!(matches!(err, KeyError::NoAgeKey { .. }), "{err}");
    }

    #[test]
    fn a_bad_age_key_names_the_secret_and_key_but_not_the_value() {
        let value = b"AGE-SECRET-KEY-1NOTAKEYATALL";
        let err = identities_from_secret("ns/keys", [("id.agekey", value.as_slice())], true)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("ns/keys") && text.contains("id.agekey"),
            "{text}"
        );
        assert!(!text.contains("NOTAKEY"), "{text}");
    }

    #[test]
    fn an_encrypted_secret_without_decryption_is_refused_as_flux_refuses_it() {
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "app"},
            "stringData": {"password": "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]"},
            "sops": {"mac": "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]"}
        });
        let err = Decryptor::off()
            .decrypt_objects(vec![secret.clone()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Secret/app/db is SOPS encrypted, configuring decryption is required for this secret to be reconciled"
        );
        // Another kind with a `sops` field passes through untouched, as in Flux.
        let mut other = secret.clone();
        other["kind"] = "SopsSecret".into();
        other["apiVersion"] = "isindir.github.com/v1alpha3".into();
        assert_eq!(
            Decryptor::off()
                .decrypt_objects(vec![other.clone()])
                .unwrap(),
            vec![other]
        );
        // Masked (the CLI): values replaced, metadata dropped.
        let masked = Decryptor::masked().decrypt_objects(vec![secret]).unwrap();
        assert_eq!(masked[0]["stringData"]["password"], MASK);
        assert!(masked[0].get("sops").is_none());
    }

    #[test]
    fn the_redactor_removes_what_was_decrypted_and_nothing_else() {
        let d = Decryptor::masked();
        d.remember_file(Format::Dotenv, b"A=s3cr3t-value\nB=ok\n");
        d.remember_decrypted(
            &serde_json::json!({"a": "ENC[AES256_GCM,data:x]", "b": "plain-text", "n": {"c": "ENC[AES256_GCM,y]"}}),
            &serde_json::json!({"a": "another-secret", "b": "plain-text", "n": {"c": "nested-secret"}}),
        );
        let r = d.redactor();
        assert_eq!(
            r.redact("saw s3cr3t-value, another-secret, nested-secret and plain-text; ok"),
            "saw <redacted>, <redacted>, <redacted> and plain-text; ok"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(r.redact(&b64.encode("s3cr3t-value")), REDACTED);
    }

    #[test]
    fn an_oversized_encrypted_file_is_refused_naming_the_limit() {
        let mut big = b"# ".to_vec();
        big.resize(super::super::MAX_FILE_BYTES + 10, b'a');
        big.extend_from_slice(
            b"\nsops:\n  mac: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n",
        );
        let d = Decryptor::with_keys(Identities::default());
        for used_as in [InputUse::Resource, InputUse::Patch] {
            let err = d.filter("big.yaml", big.clone(), used_as).unwrap_err();
            assert!(err.contains("over the limit of 8388608 bytes"), "{err}");
        }
    }

    #[test]
    fn an_object_opted_out_of_decryption_is_left_encrypted() {
        let file = "apiVersion: isindir.github.com/v1alpha3\nkind: SopsSecret\nmetadata:\n  name: op\n  annotations:\n    kubectl-gitops.io/decrypt: disabled\nspec:\n  x: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops:\n  mac: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n  lastmodified: '2024-01-01T00:00:00Z'\n";
        // No key opens it, yet neither the file nor the object stage fails.
        let d = Decryptor::with_keys(Identities::default());
        let bytes = d
            .filter("op.yaml", file.as_bytes().to_vec(), InputUse::Resource)
            .unwrap();
        assert_eq!(bytes, file.as_bytes());
        let object: Value = crate::yaml::from_str(file).unwrap();
        assert_eq!(
            d.decrypt_objects(vec![object.clone()]).unwrap(),
            vec![object]
        );
        // Without the annotation the same file is refused at once, naming why.
        let plain = file.replace("    kubectl-gitops.io/decrypt: disabled\n", "    note: x\n");
        let err = d
            .filter("op.yaml", plain.into_bytes(), InputUse::Resource)
            .unwrap_err();
        assert!(
            err.contains("no key at all") || err.contains("age"),
            "{err}"
        );
    }

    #[test]
    fn truncated_files_and_missing_keys_are_refused_before_the_engine_uses_them() {
        let truncated = b"apiVersion: v1\nkind: Secret\nstringData:\n  a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n";
        let err = Decryptor::off()
            .filter("s.yaml", truncated.to_vec(), InputUse::Resource)
            .unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let env = b"A=ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops_mac=ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n";
        let err = Decryptor::off()
            .filter("app.env", env.to_vec(), InputUse::SecretEnv)
            .unwrap_err();
        assert!(err.contains("configuring decryption"), "{err}");
        let masked = Decryptor::masked()
            .filter("app.env", env.to_vec(), InputUse::SecretEnv)
            .unwrap();
        assert_eq!(masked, b"A=**SOPS**\n");
        // ConfigMap inputs are never touched.
        assert_eq!(
            Decryptor::off()
                .filter("app.env", env.to_vec(), InputUse::ConfigMapEnv)
                .unwrap(),
            env.to_vec()
        );
    }
}
