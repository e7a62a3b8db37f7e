//! GitRepository: where manifests come from. Field names follow Flux's source.toolkit.fluxcd.io/v1.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_MESSAGE, DURATION_RULE, LocalObjectReference};
use crate::source::limits::Limit;

/// URL schemes allowed in `spec.url`. `file://` is accepted by the schema but only honoured by a
/// reconciler started with its test-only flag; `http://` and `git://` need `spec.insecure: true`.
pub const URL_RULE: &str = "self.matches('^(https?|ssh|git)://([^@/\\\\s]+@)?[^-@/\\\\s][^/\\\\s]*(/\\\\S*)?$') || self.matches('^file:///\\\\S*$')";
/// The message of a [`URL_RULE`] violation.
pub const URL_MESSAGE: &str = "url must use https://, http:// or git:// (with insecure: true), ssh:// or file:// (test reconcilers only), and its host must not start with '-'";

/// The desired state of a GitRepository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "GitRepository",
    namespaced,
    status = "GitRepositoryStatus",
    shortname = "gitrepo",
    category = "gitops",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.artifact.revision"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].message"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters (it is used in artifact paths and labels)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.url.startsWith('http://') || self.url.startsWith('git://')) || (has(self.insecure) && self.insecure)").message("http:// and git:// send content in clear text: use https://, or set insecure: true to allow it"))]
pub struct GitRepositorySpec {
    /// Repository URL: `https://host/org/repo.git`, `ssh://git@host/org/repo.git`.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    pub url: String,
    /// Which commit to check out. Precedence: commit > name > semver > tag > branch; none set
    /// means the remote's HEAD.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRepositoryRef>,
    /// How often the remote is checked for a new commit.
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: String,
    /// Bound on a whole fetch (connect, negotiate, download, store). Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Secret with credentials: `username` + `password` (a token goes in password), or
    /// `bearerToken`, or `identity` + `known_hosts` for ssh; optionally `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Exclusions in gitignore syntax. With at least one pattern they replace the default
    /// exclusion list (CI files, archives, images), as in Flux; version-control files stay
    /// excluded and `.sourceignore` files still apply. Deliberate difference from Flux: a
    /// `.sourceignore` file adds to the defaults (in Flux any `.sourceignore` pattern drops
    /// them, so adding one file to a repository would silently re-include every archive and
    /// image); use `!pattern` in it to re-include a default exclusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ignore: Option<String>,
    /// Allow a plain `http://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Stop reconciling this source; the last artifact stays available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Tighter size limits for this source than the reconciler's (a value above the
    /// reconciler's has no effect). Not in Flux. See docs/sources.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<GitRepositoryLimits>,
}

/// Per-GitRepository size limits (bytes or counts); each only lowers the reconciler's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryLimits {
    /// Bytes received from the server over a whole fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_received_bytes: Option<u64>,
    /// Objects in the pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_objects: Option<u64>,
    /// Bytes of the largest single object (a file's content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_file_size: Option<u64>,
    /// Bytes of all files of the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tree_size: Option<u64>,
    /// Files and directories in the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_files: Option<u64>,
}

impl GitRepositoryLimits {
    /// The value set for `limit`, if any.
    pub fn get(&self, limit: Limit) -> Option<u64> {
        match limit {
            Limit::ReceivedBytes => self.max_received_bytes,
            Limit::Objects => self.max_objects,
            Limit::FileSize => self.max_file_size,
            Limit::TreeSize => self.max_tree_size,
            Limit::Files => self.max_files,
        }
    }
}

/// The Git reference to check out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.tag), has(self.semver), has(self.name), has(self.commit)].filter(x, x).size() <= 1").message("set at most one of tag, semver, name or commit (branch may accompany commit)"))]
#[x_kube(validation = Rule::new("!has(self.branch) || [has(self.tag), has(self.semver), has(self.name)].filter(x, x).size() == 0").message("branch cannot be combined with tag, semver or name"))]
pub struct GitRepositoryRef {
    /// Branch to follow, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 250))]
    #[x_kube(validation = Rule::new(REF_NAME_RULE).message(REF_NAME_MESSAGE))]
    pub branch: Option<String>,
    /// Tag to check out, e.g. `v1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 250))]
    #[x_kube(validation = Rule::new(REF_NAME_RULE).message(REF_NAME_MESSAGE))]
    pub tag: Option<String>,
    /// Semver constraint over tags in Flux's (Masterminds) grammar, e.g. `>=1.0.0 <2.0.0`,
    /// `~1.2`, `^1.2.3`, `1.2.x`, `1.2 - 1.4`, `<1 || >=3`; a bare `1.2.3` is exact, and
    /// prerelease tags match only a constraint that names a prerelease. The highest matching
    /// tag wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 250))]
    pub semver: Option<String>,
    /// A full reference name, e.g. `refs/pull/1/head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 6, max = 250))]
    #[x_kube(validation = Rule::new("self.startsWith('refs/') && !self.contains('..') && !self.contains(' ')").message("name must be a full reference starting with refs/, without '..' or spaces"))]
    pub name: Option<String>,
    /// A commit SHA-1 (40 hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 40, max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{40}$')").message("commit must be a full 40-character lowercase hex SHA-1"))]
    pub commit: Option<String>,
}

/// Branch and tag names: no leading '-', no '..', no spaces or control characters.
pub const REF_NAME_RULE: &str = "!self.startsWith('-') && !self.contains('..') && self.matches('^[^\\\\s~^:?*\\\\[\\\\\\\\]+$')";
/// The message of a [`REF_NAME_RULE`] violation.
pub const REF_NAME_MESSAGE: &str =
    "must be a valid git reference name: no leading '-', no '..', no spaces or any of ~^:?*[\\";

/// The observed state of a GitRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, ArtifactInStorage, FetchFailed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last artifact stored for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The value of the reconcile-requested-at annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A stored, content-addressed tarball of a source revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// `main@sha1:<40 hex>`, `v1.2.0@sha1:<40 hex>` or `sha1:<40 hex>` for a bare commit.
    pub revision: String,
    /// `sha256:<64 hex>` of the tar.gz.
    pub digest: String,
    /// Size of the tar.gz in bytes.
    pub size: i64,
    /// Where the reconciler serves it over HTTP.
    pub url: String,
    /// Path relative to the storage root.
    pub path: String,
    /// RFC 3339 time the artifact was stored.
    pub last_update_time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_fields_carry_the_names_of_the_limits_table() {
        for (i, limit) in Limit::ALL.into_iter().enumerate() {
            let value = 100 + i as u64;
            let limits: GitRepositoryLimits =
                serde_json::from_value(serde_json::json!({ limit.field(): value }))
                    .expect("known field");
            assert_eq!(limits.get(limit), Some(value), "{}", limit.field());
            for other in Limit::ALL.into_iter().filter(|l| *l != limit) {
                assert_eq!(limits.get(other), None);
            }
        }
    }
}
