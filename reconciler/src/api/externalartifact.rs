//! ExternalArtifact: a source whose artifact some other tool produces. The shape of Flux's
//! source.toolkit.fluxcd.io/v1 ExternalArtifact: the spec only says where the artifact comes from
//! (`spec.sourceRef`, informative); the producer writes `status.artifact` (an http(s) URL of a
//! tar.gz with its digest) and `status.conditions`. No controller of this project writes it; a
//! Kustomization that names it downloads the tar.gz, verifies the digest and applies it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::NamespacedObjectKindReference;

/// The desired state of an ExternalArtifact: where it comes from.
// Each printcolumn names its `type_`: not a duplicate, though the lint reads it as one once
// rustfmt puts the arguments on lines of their own.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "kubectl-gitops.io",
    version = "v1alpha1",
    kind = "ExternalArtifact",
    namespaced,
    status = "ExternalArtifactStatus",
    category = "gitops",
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.artifact.revision"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactSpec {
    /// The object the artifact is produced from, of any kind (informative; nothing here reads
    /// it); its namespace defaults to the ExternalArtifact's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<NamespacedObjectKindReference>,
}

/// The observed state of an ExternalArtifact, written by its producer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactStatus {
    /// The artifact the producer published last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ExternalArtifactArtifact>,
    /// The producer's conditions (Ready, ...). Informative: a Kustomization uses
    /// `status.artifact` whenever it is set, as Flux's does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A tar.gz published by a producer: Flux's Artifact fields, of which a Kustomization reads
/// `url`, `digest` and `revision`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactArtifact {
    /// Human-readable identifier of the content, e.g. `v1.0.0@sha256:<hex>`; shown as the
    /// Kustomization's applied revision.
    #[schemars(length(min = 1, max = 1024))]
    pub revision: String,
    /// `sha256:<64 lowercase hex>` of the tar.gz; the download is refused when it differs.
    /// Required and sha256 only here (Flux also names other algorithms).
    #[schemars(length(min = 71, max = 71))]
    #[x_kube(validation = Rule::new("self.matches('^sha256:[a-f0-9]{64}$')").message("digest must be sha256:<64 lowercase hex>"))]
    pub digest: String,
    /// Where the tar.gz is served: an `http://` or `https://` URL without user information.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^@/\\\\s]+(/\\\\S*)?$')").message("url must be an http:// or https:// URL without user information"))]
    pub url: String,
    /// Path of the artifact in the producer's storage (informative; optional here, required in
    /// Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub path: Option<String>,
    /// Size of the tar.gz in bytes (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// RFC 3339 time the producer published it (informative; optional here, required in Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Producer-defined metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}
