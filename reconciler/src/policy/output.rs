//! Cheap checks of the JSON objects a transform returned: each must be a JSON object with
//! `apiVersion`, `kind` and `metadata.name`. Only those fields are materialised (borrowed),
//! the rest is validated and skipped, so checking is much cheaper than parsing.

use super::ObjectRef;
use serde::Deserialize;
use std::borrow::Cow;

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

/// Checks one object document and returns its identity.
pub(crate) fn identify(document: &str) -> Result<ObjectRef, String> {
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
}
