//! The one place YAML is parsed and written. serde_yaml is in maintenance mode; keeping every
//! call behind this module keeps a swap of the YAML crate to one file.

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

use serde::Deserialize as _;

/// Parses a multi-document YAML stream straight into JSON values (no intermediate YAML tree);
/// empty documents are skipped. Used by the build engine, where this is the hot path.
/// serde_yaml bounds nesting depth (128) and alias expansion, so hostile input fails fast.
pub fn json_documents(text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document).map_err(YamlError::from_serde)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}
