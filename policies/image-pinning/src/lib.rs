//! Built-in policy `image-pinning`: images must be pinned and come from allowed registries.
//!
//! Config (every field optional):
//! ```json
//! {"allowedRegistries": ["docker.io/library", "ghcr.io/acme"],
//!  "denyLatest": true, "denyUntagged": true,
//!  "digests": {"redis:7.2": "sha256:<64 hex>"}}
//! ```
//! - transform: an image whose reference (as written) is a key of `digests` is rewritten to
//!   `<name>@<digest>` (the tag is replaced, as kustomize's `images[].digest` does);
//! - validate: denies `:latest` (unless pinned by digest) and untagged images, and images whose
//!   registry/path is not under one of `allowedRegistries` (compared at path-segment boundaries
//!   after normalising Docker Hub short names: `redis` is `docker.io/library/redis`).
//!
//! Covers `initContainers`, `containers` and `ephemeralContainers` of Pods and of the pod
//! templates of Deployments, StatefulSets, DaemonSets, ReplicaSets (`apps`),
//! ReplicationControllers, Jobs and CronJobs (`batch`): the SDK's `POD_SPECS`, which are also
//! the kinds it declares, so the host gives it only those.

use gitops_policy_sdk::object::{POD_SPECS, container_images};
use gitops_policy_sdk::{
    ConfigError, Context, GroupKind, Metadata, Object, Policy, PolicyError, PolicyKind, Value,
    Violation, json,
};
use std::collections::BTreeMap;

/// The policy.
pub struct ImagePinning;

/// Parsed configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Allowed `registry[/path]` prefixes; empty allows every registry.
    pub allowed_registries: Vec<String>,
    /// Deny the `latest` tag.
    pub deny_latest: bool,
    /// Deny images without tag or digest.
    pub deny_untagged: bool,
    /// Image reference as written → digest to pin it to.
    pub digests: BTreeMap<String, String>,
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Everything before the tag/digest, as written.
    pub name: &'a str,
    /// The tag, if any.
    pub tag: Option<&'a str>,
    /// The digest (`sha256:...`), if any.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Splits `image` into name, tag and digest.
    pub fn parse(image: &'a str) -> ImageRef<'a> {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (image, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        ImageRef { name, tag, digest }
    }

    /// The fully qualified repository: `docker.io/library/redis` for `redis`.
    pub fn repository(&self) -> String {
        let first = self.name.split('/').next().unwrap_or_default();
        let has_registry = self.name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if has_registry {
            self.name.to_owned()
        } else if self.name.contains('/') {
            format!("docker.io/{}", self.name)
        } else {
            format!("docker.io/library/{}", self.name)
        }
    }
}

/// True if `repository` is `prefix` or below it (path-segment boundary).
fn under(repository: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    repository == prefix
        || repository
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The findings for one object.
pub fn check(object: &Object, config: &Config) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (field, image) in container_images(object) {
        let r = ImageRef::parse(&image);
        if r.digest.is_none() {
            match r.tag {
                None if config.deny_untagged => violations.push(Violation::deny(
                    object,
                    &field,
                    format!("image {image:?} has no tag or digest; pin it"),
                )),
                Some("latest") if config.deny_latest => violations.push(Violation::deny(
                    object,
                    &field,
                    format!("image {image:?} uses the tag latest; pin a version or digest"),
                )),
                _ => {}
            }
        }
        if !config.allowed_registries.is_empty() {
            let repository = r.repository();
            if !config
                .allowed_registries
                .iter()
                .any(|p| under(&repository, p))
            {
                violations.push(Violation::deny(
                    object,
                    &field,
                    format!(
                        "image {image:?} ({repository}) is not from an allowed registry ({})",
                        config.allowed_registries.join(", ")
                    ),
                ));
            }
        }
    }
    violations
}

/// Rewrites the images of one object that have an entry in `digests` (the object stays
/// unchanged if none has).
pub fn pin(object: &mut Object, config: &Config) {
    if config.digests.is_empty() {
        return;
    }
    for (field, image) in container_images(object) {
        if let Some(digest) = config.digests.get(&image) {
            let name = ImageRef::parse(&image).name.to_owned();
            object.replace_at(&field, Value::String(format!("{name}@{digest}")));
        }
    }
}

fn bool_field(
    map: &serde_json::Map<String, Value>,
    key: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match map.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ConfigError::at(
            format!("/{key}"),
            format!("{key} must be true or false"),
        )),
    }
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Policy for ImagePinning {
    type Config = Config;

    fn metadata() -> Metadata {
        Metadata {
            name: "image-pinning".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Pins images to digests from a map and denies :latest, untagged and \
                          disallowed-registry images."
                .to_owned(),
            kind: PolicyKind::Both,
            config_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "allowedRegistries": {"type": "array", "items": {"type": "string"}},
                        "denyLatest": {"type": "boolean", "default": true},
                        "denyUntagged": {"type": "boolean", "default": true},
                        "digests": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^sha256:[a-f0-9]{64}$"}}
                    },
                    "additionalProperties": false
                })
                .to_string(),
            ),
            kinds: Some(
                POD_SPECS
                    .iter()
                    .map(|&(group, kind, _)| GroupKind::new(group, kind))
                    .collect(),
            ),
        }
    }

    fn parse_config(config: &Value) -> Result<Config, ConfigError> {
        let empty = serde_json::Map::new();
        let map = match config {
            Value::Null => &empty,
            Value::Object(m) => m,
            _ => return Err(ConfigError::new("config must be an object")),
        };
        const KNOWN: [&str; 4] = ["allowedRegistries", "denyLatest", "denyUntagged", "digests"];
        if let Some(key) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ConfigError::at(
                format!("/{key}"),
                format!("unknown field {key:?}"),
            ));
        }
        let mut allowed_registries = Vec::new();
        if let Some(list) = map.get("allowedRegistries") {
            let list = list.as_array().ok_or_else(|| {
                ConfigError::at(
                    "/allowedRegistries",
                    "allowedRegistries must be a list of strings",
                )
            })?;
            for (i, r) in list.iter().enumerate() {
                match r.as_str() {
                    Some(s) if !s.trim_matches('/').is_empty() => {
                        allowed_registries.push(s.trim_end_matches('/').to_owned())
                    }
                    _ => {
                        return Err(ConfigError::at(
                            format!("/allowedRegistries/{i}"),
                            "must be a non-empty string like \"ghcr.io/acme\"",
                        ));
                    }
                }
            }
        }
        let mut digests = BTreeMap::new();
        if let Some(map) = map.get("digests") {
            let map = map.as_object().ok_or_else(|| {
                ConfigError::at(
                    "/digests",
                    "digests must map image references to sha256 digests",
                )
            })?;
            for (image, digest) in map {
                match digest.as_str() {
                    Some(d) if is_digest(d) => {
                        digests.insert(image.clone(), d.to_owned());
                    }
                    _ => {
                        return Err(ConfigError::at(
                            format!("/digests/{}", image.replace('~', "~0").replace('/', "~1")),
                            "must be \"sha256:\" followed by 64 lowercase hex characters",
                        ));
                    }
                }
            }
        }
        Ok(Config {
            allowed_registries,
            deny_latest: bool_field(map, "denyLatest", true)?,
            deny_untagged: bool_field(map, "denyUntagged", true)?,
            digests,
        })
    }

    fn transform(
        _ctx: &Context,
        config: &Config,
        mut objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        for object in objects.iter_mut() {
            pin(object, config);
        }
        Ok(objects)
    }

    fn validate(_ctx: &Context, config: &Config, objects: &[Object]) -> Vec<Violation> {
        objects.iter().flat_map(|o| check(o, config)).collect()
    }
}

gitops_policy_sdk::export_policy!(ImagePinning);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("localhost:5000/team/app:1.2@sha256:abc");
        assert_eq!(
            (r.name, r.tag, r.digest),
            ("localhost:5000/team/app", Some("1.2"), Some("sha256:abc"))
        );
        assert_eq!(r.repository(), "localhost:5000/team/app");
        let r = ImageRef::parse("localhost:5000/app");
        assert_eq!((r.name, r.tag), ("localhost:5000/app", None));
        assert_eq!(
            ImageRef::parse("redis").repository(),
            "docker.io/library/redis"
        );
        assert_eq!(
            ImageRef::parse("schooldevops/vote:v1").repository(),
            "docker.io/schooldevops/vote"
        );
        assert!(under("ghcr.io/acme/app", "ghcr.io/acme"));
        assert!(!under("ghcr.io/acmeevil/app", "ghcr.io/acme"));
    }

    #[test]
    fn config_errors_point_at_the_field() {
        let e = ImagePinning::parse_config(&json!({"digests": {"a/b:1": "md5:x"}})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/digests/a~1b:1"));
        let e = ImagePinning::parse_config(&json!({"denyLatest": "yes"})).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("/denyLatest"));
        assert!(ImagePinning::parse_config(&Value::Null).is_ok());
    }

    #[test]
    fn fixtures() {
        gitops_policy_sdk::testing::check_fixtures::<ImagePinning>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/image-pinning"
        ));
    }
}
