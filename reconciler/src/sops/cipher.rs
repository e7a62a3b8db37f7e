//! One encrypted value (`ENC[AES256_GCM,…]`), the rules that say which values are encrypted,
//! and the walk that decrypts a document while feeding the MAC.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use sha2::Digest as _;

use super::SopsError;
use super::tree::{Node, Scalar, go_float};

/// AES-256-GCM with SOPS's 32-byte nonce.
type Cipher = AesGcm<Aes256, U32>;
const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 16;

/// A decrypted value, typed by its `type:` field.
#[derive(Debug, PartialEq)]
pub(crate) enum Plain {
    Text(String),
    Value(Scalar),
    Comment,
}

pub(crate) struct EncryptedValue {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

/// Why one value could not be opened (never the value itself).
#[derive(Debug)]
pub(crate) struct OpenError(pub(crate) &'static str);

impl EncryptedValue {
    pub(crate) fn parse(text: &str) -> Result<EncryptedValue, OpenError> {
        let body = text
            .strip_prefix("ENC[AES256_GCM,data:")
            .ok_or(OpenError("not an ENC[AES256_GCM,…] value"))?;
        let end = body.rfind(']').ok_or(OpenError("no closing ]"))?;
        let body = &body[..end];
        let (data, rest) = body.split_once(",iv:").ok_or(OpenError("no iv"))?;
        let (iv, rest) = rest.split_once(",tag:").ok_or(OpenError("no tag"))?;
        let (tag, kind) = rest.split_once(",type:").ok_or(OpenError("no type"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str, what: &'static str| b64.decode(s).map_err(|_| OpenError(what));
        Ok(EncryptedValue {
            data: decode(data, "data is not base64")?,
            iv: decode(iv, "iv is not base64")?,
            tag: decode(tag, "tag is not base64")?,
            kind: kind.to_owned(),
        })
    }

    /// Authenticates and decrypts with the data key and the value's additional data.
    pub(crate) fn open(&self, key: &[u8; 32], aad: &[u8]) -> Result<Plain, OpenError> {
        if self.iv.len() != NONCE_BYTES || self.tag.len() != TAG_BYTES {
            return Err(OpenError("iv or tag has the wrong length"));
        }
        let cipher = Cipher::new(key.into());
        let mut sealed = Vec::with_capacity(self.data.len() + TAG_BYTES);
        sealed.extend_from_slice(&self.data);
        sealed.extend_from_slice(&self.tag);
        let plain = cipher
            .decrypt(self.iv.as_slice().into(), Payload { msg: &sealed, aad })
            .map_err(|_| {
                OpenError(
                    "authentication failed (wrong key, or the value or its place was changed)",
                )
            })?;
        let text = || String::from_utf8(plain.clone()).map_err(|_| OpenError("not UTF-8"));
        Ok(match self.kind.as_str() {
            // A Go string holds any bytes: a binary file's `data` is one.
            "str" => match String::from_utf8(plain.clone()) {
                Ok(t) => Plain::Text(t),
                Err(e) => Plain::Value(Scalar::Bytes(e.into_bytes())),
            },
            "bytes" => Plain::Value(Scalar::Bytes(plain.clone())),
            "int" => Plain::Value(Scalar::Int(
                text()?
                    .parse()
                    .map_err(|_| OpenError("type int but not an integer"))?,
            )),
            "float" => Plain::Value(Scalar::Float(
                text()?
                    .parse()
                    .map_err(|_| OpenError("type float but not a number"))?,
            )),
            "bool" => Plain::Value(Scalar::Bool(go_parse_bool(&text()?)?)),
            "time" => Plain::Value(Scalar::Str(text()?)),
            "comment" => Plain::Comment,
            _ => return Err(OpenError("unknown type")),
        })
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Result<bool, OpenError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(OpenError("type bool but not a boolean")),
    }
}

/// A scalar's bytes in the MAC, as SOPS's `ToBytes` writes them; `None` for null (never hashed).
pub(crate) fn to_bytes(s: &Scalar) -> Option<Vec<u8>> {
    Some(match s {
        Scalar::Null => return None,
        Scalar::Bool(true) => b"True".to_vec(),
        Scalar::Bool(false) => b"False".to_vec(),
        Scalar::Int(i) => i.to_string().into_bytes(),
        Scalar::Float(f) => go_float(*f).into_bytes(),
        Scalar::Str(s) => s.as_bytes().to_vec(),
        Scalar::Bytes(b) => b.clone(),
    })
}

/// Which values of a file are encrypted (SOPS's `shouldBeEncrypted` without the comment rules).
pub(crate) struct Rules {
    pub(crate) unencrypted_suffix: Option<String>,
    pub(crate) encrypted_suffix: Option<String>,
    pub(crate) unencrypted_regex: Option<regex::Regex>,
    pub(crate) encrypted_regex: Option<regex::Regex>,
    pub(crate) mac_only_encrypted: bool,
}

impl Rules {
    fn encrypted(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(s) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(s.as_str()))
        {
            encrypted = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|p| r.is_match(p))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| r.is_match(p));
        }
        encrypted
    }
}

/// Decrypts every value below `node` (whose keys are `path`) and adds each to the MAC in
/// document order, as SOPS's tree walk does. `None`: the value was an encrypted comment, which
/// is dropped.
pub(crate) fn walk(
    file: &str,
    node: Node,
    path: &mut Vec<String>,
    key: &[u8; 32],
    rules: &Rules,
    mac: &mut sha2::Sha512,
) -> Result<Option<Node>, SopsError> {
    match node {
        Node::Map(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (k, v) in items {
                path.push(k);
                let v = walk(file, v, path, key, rules, mac);
                let k = path.pop().unwrap_or_default();
                if let Some(v) = v? {
                    out.push((k, v));
                }
            }
            Ok(Some(Node::Map(out)))
        }
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                if let Some(v) = walk(file, v, path, key, rules, mac)? {
                    out.push(v);
                }
            }
            Ok(Some(Node::Seq(out)))
        }
        Node::Scalar(Scalar::Null) => Ok(Some(Node::Scalar(Scalar::Null))),
        Node::Scalar(s) => leaf(file, s, path, key, rules, mac),
    }
}

fn leaf(
    file: &str,
    s: Scalar,
    path: &[String],
    key: &[u8; 32],
    rules: &Rules,
    mac: &mut sha2::Sha512,
) -> Result<Option<Node>, SopsError> {
    let encrypted = rules.encrypted(path);
    let value = if encrypted {
        let failed = |reason: &str| SopsError::Value {
            file: file.to_owned(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path.join(".")
            },
            reason: reason.to_owned(),
        };
        let Scalar::Str(text) = s else {
            return Err(failed("expected an encrypted string, found a plain value"));
        };
        if text.is_empty() {
            // SOPS leaves empty strings as they are.
            Scalar::Str(text)
        } else {
            let aad = format!("{}:", path.join(":"));
            let opened = EncryptedValue::parse(&text)
                .and_then(|v| v.open(key, aad.as_bytes()))
                .map_err(|e| failed(e.0))?;
            match opened {
                Plain::Text(t) => Scalar::Str(t),
                Plain::Value(v) => v,
                Plain::Comment => return Ok(None),
            }
        }
    } else {
        s
    };
    if (!rules.mac_only_encrypted || encrypted)
        && let Some(bytes) = to_bytes(&value)
    {
        mac.update(&bytes);
    }
    Ok(Some(Node::Scalar(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8], kind: &str) -> String {
        let iv = [7u8; NONCE_BYTES];
        let out = Cipher::new(key.into())
            .encrypt(iv.as_slice().into(), Payload { msg: plain, aad })
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let (data, tag) = out.split_at(out.len() - TAG_BYTES);
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            b64.encode(data),
            b64.encode(iv),
            b64.encode(tag)
        )
    }

    #[test]
    fn a_value_opens_only_with_its_key_and_its_path() {
        let key = [1u8; 32];
        let enc = seal(&key, b"s3cret", b"data:password:", "str");
        let v = EncryptedValue::parse(&enc).unwrap();
        assert_eq!(
            v.open(&key, b"data:password:").unwrap(),
            Plain::Text("s3cret".into())
        );
        assert!(v.open(&key, b"data:other:").is_err());
        assert!(v.open(&[2u8; 32], b"data:password:").is_err());
        let typed = seal(&key, b"True", b"a:", "bool");
        assert_eq!(
            EncryptedValue::parse(&typed)
                .unwrap()
                .open(&key, b"a:")
                .unwrap(),
            Plain::Value(Scalar::Bool(true))
        );
    }

    #[test]
    fn rules_follow_sops() {
        let mut r = Rules {
            unencrypted_suffix: Some("_unencrypted".into()),
            encrypted_suffix: None,
            unencrypted_regex: None,
            encrypted_regex: None,
            mac_only_encrypted: false,
        };
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(r.encrypted(&p(&["data", "a"])));
        assert!(!r.encrypted(&p(&["x_unencrypted", "a"])));
        r.encrypted_regex = Some(regex::Regex::new("^(data|stringData)$").unwrap());
        assert!(r.encrypted(&p(&["data", "a"])));
        assert!(!r.encrypted(&p(&["metadata", "name"])));
    }

    #[test]
    fn mac_bytes_are_go_formatted() {
        assert_eq!(to_bytes(&Scalar::Bool(false)).unwrap(), b"False");
        assert_eq!(to_bytes(&Scalar::Float(1.5)).unwrap(), b"1.5");
        assert_eq!(to_bytes(&Scalar::Int(-3)).unwrap(), b"-3");
        assert!(to_bytes(&Scalar::Null).is_none());
    }
}
