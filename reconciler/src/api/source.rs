//! The seam between source kinds and what consumes them (the Kustomization controller, the
//! CLI): every kind a `spec.sourceRef` may name is one arm of [`SourceKind`], and every consumer
//! sees a source only as a [`SourceState`] — its ready artifact (revision, URL, digest), its
//! conditions and whether it is suspended.
//!
//! Adding a kind: its CRD type in its own module of `api`, an `impl From<&NewKind> for
//! SourceState` there, and one arm in each `match` of [`SourceKind`] below (the compiler lists
//! them). The Kustomization controller's lookup, its watch trigger and the CLI's `get`, `tree`,
//! `reconcile --with-source` and `create kustomization --source` derive from this table.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt as _;
use kube::api::{ApiResource, DynamicObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExternalArtifact, GitRepository};

/// Kinds of source a Kustomization can build from: `GitRepository` (fetched by this
/// reconciler) or `ExternalArtifact` (a tar.gz another tool publishes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SourceKind {
    /// A git repository this reconciler fetches and archives.
    GitRepository,
    /// A tar.gz that another tool publishes, with its digest, for this reconciler to use.
    ExternalArtifact,
}

impl SourceKind {
    /// Every source kind, in the order listings show them.
    pub const ALL: [SourceKind; 2] = [SourceKind::GitRepository, SourceKind::ExternalArtifact];

    /// The kind's name, as in `spec.sourceRef.kind`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "GitRepository",
            SourceKind::ExternalArtifact => "ExternalArtifact",
        }
    }

    /// Group, version and plural of the kind's CRD.
    pub fn api_resource(self) -> ApiResource {
        match self {
            SourceKind::GitRepository => ApiResource::erase::<GitRepository>(&()),
            SourceKind::ExternalArtifact => ApiResource::erase::<ExternalArtifact>(&()),
        }
    }

    /// The CLI's word for the kind: `get sources <noun>`, `reconcile source <noun>`.
    pub fn cli_noun(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "git",
            SourceKind::ExternalArtifact => "external-artifact",
        }
    }

    /// Whether a controller of this reconciler produces the kind's artifacts. Only such
    /// artifacts are read from the reconciler's own storage, and only such kinds answer a
    /// reconcile request; the others are written by their producer.
    pub fn produced_here(self) -> bool {
        match self {
            SourceKind::GitRepository => true,
            SourceKind::ExternalArtifact => false,
        }
    }

    /// `plural.group` of the kind's CRD, as watch errors name it.
    pub fn crd_name(self) -> &'static str {
        match self {
            SourceKind::GitRepository => GitRepository::crd_name(),
            SourceKind::ExternalArtifact => ExternalArtifact::crd_name(),
        }
    }

    /// The kind's CRD.
    pub fn crd(self) -> CustomResourceDefinition {
        match self {
            SourceKind::GitRepository => GitRepository::crd(),
            SourceKind::ExternalArtifact => ExternalArtifact::crd(),
        }
    }

    /// The kind `text` names: its name, plural, singular or a short name of its CRD, in any
    /// case.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| {
            let names = kind.crd().spec.names;
            std::iter::once(names.kind)
                .chain([names.plural])
                .chain(names.singular)
                .chain(names.short_names.into_iter().flatten())
                .any(|name| text.eq_ignore_ascii_case(&name))
        })
    }

    /// What consumers see of `object`, an object of this kind.
    pub fn state_of(self, object: &DynamicObject) -> Result<SourceState, SourceStateError> {
        let describe = || {
            format!(
                "{} {}/{}",
                self.name(),
                object.metadata.namespace.as_deref().unwrap_or_default(),
                object.metadata.name.as_deref().unwrap_or_default()
            )
        };
        let malformed = |source| SourceStateError {
            object: describe(),
            source,
        };
        let value = serde_json::to_value(object).map_err(malformed)?;
        Ok(match self {
            SourceKind::GitRepository => SourceState::from(
                &serde_json::from_value::<GitRepository>(value).map_err(malformed)?,
            ),
            SourceKind::ExternalArtifact => SourceState::from(
                &serde_json::from_value::<ExternalArtifact>(value).map_err(malformed)?,
            ),
        })
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A source object that is not of the shape its kind declares (a producer wrote a status the
/// CRD schema let through but the types refuse).
#[derive(Debug, thiserror::Error)]
#[error("{object} cannot be read: {source}")]
pub struct SourceStateError {
    /// `Kind namespace/name`.
    pub object: String,
    /// What the decoder refused.
    #[source]
    pub source: serde_json::Error,
}

/// What a consumer needs from a source of any kind.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceState {
    /// The source's kind.
    pub kind: SourceKind,
    /// The source's namespace.
    pub namespace: String,
    /// The source's name.
    pub name: String,
    /// The artifact to build from, once there is one.
    pub artifact: Option<SourceArtifact>,
    /// The source's conditions (Ready says why there is no artifact).
    pub conditions: Vec<Condition>,
    /// `spec.suspend` of kinds that have it.
    pub suspended: bool,
    /// Labelled spec fields that say where the content comes from (URL, branch, producer),
    /// for `tree`.
    pub origin: Vec<(&'static str, String)>,
}

/// The part of a source's `status.artifact` a consumer reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceArtifact {
    /// Revision, shown as the consumer's applied revision.
    pub revision: String,
    /// `sha256:<hex>` of the tar.gz, verified before unpacking.
    pub digest: String,
    /// Where the tar.gz is served.
    pub url: String,
    /// Path in this reconciler's storage, for kinds it produces ([`SourceKind::produced_here`]).
    pub stored_path: Option<String>,
}

impl SourceState {
    /// `Kind namespace/name`, the way messages name the source.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The artifact, or the message of a Kustomization whose source is not ready (with the
    /// source's own Ready message when it has one).
    pub fn ready_artifact(&self) -> Result<&SourceArtifact, String> {
        if let Some(artifact) = &self.artifact {
            return Ok(artifact);
        }
        let why = super::conditions::get(&self.conditions, super::conditions::types::READY)
            .filter(|c| !c.message.is_empty())
            .map(|c| format!(" ({})", c.message))
            .unwrap_or_default();
        Err(format!("{} has no artifact yet{why}", self.describe()))
    }

    /// Hash of what a consumer reacts to (artifact revision and digest); `None` without an
    /// artifact. A change re-queues the Kustomizations that use the source.
    pub fn trigger_hash(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let artifact = self.artifact.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        artifact.revision.hash(&mut hasher);
        artifact.digest.hash(&mut hasher);
        Some(hasher.finish())
    }
}

impl From<&GitRepository> for SourceState {
    fn from(repo: &GitRepository) -> Self {
        let status = repo.status.clone().unwrap_or_default();
        let mut origin = vec![("URL", repo.spec.url.clone())];
        if let Some(r) = &repo.spec.reference {
            for (label, value) in [
                ("Branch", &r.branch),
                ("Tag", &r.tag),
                ("Semver", &r.semver),
                ("Commit", &r.commit),
            ] {
                if let Some(value) = value {
                    origin.push((label, value.clone()));
                }
            }
        }
        SourceState {
            kind: SourceKind::GitRepository,
            namespace: repo.metadata.namespace.clone().unwrap_or_default(),
            name: repo.metadata.name.clone().unwrap_or_default(),
            artifact: status.artifact.map(|a| SourceArtifact {
                revision: a.revision,
                digest: a.digest,
                url: a.url,
                stored_path: Some(a.path),
            }),
            conditions: status.conditions,
            suspended: repo.spec.suspend == Some(true),
            origin,
        }
    }
}

impl From<&ExternalArtifact> for SourceState {
    fn from(ea: &ExternalArtifact) -> Self {
        let status = ea.status.clone().unwrap_or_default();
        let namespace = ea.metadata.namespace.clone().unwrap_or_default();
        let origin = ea
            .spec
            .source_ref
            .iter()
            .map(|p| {
                let ns = p.namespace.as_deref().unwrap_or(&namespace);
                ("Producer", format!("{}/{ns}/{}", p.kind, p.name))
            })
            .collect();
        SourceState {
            kind: SourceKind::ExternalArtifact,
            name: ea.metadata.name.clone().unwrap_or_default(),
            namespace,
            artifact: status.artifact.map(|a| SourceArtifact {
                revision: a.revision,
                digest: a.digest,
                url: a.url,
                stored_path: None,
            }),
            conditions: status.conditions,
            suspended: false,
            origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn every_kind_has_a_crd_of_its_name_and_parses_back() {
        let crds: Vec<String> = super::super::crd::all()
            .into_iter()
            .map(|(_, crd)| crd.spec.names.kind)
            .collect();
        for kind in SourceKind::ALL {
            assert!(crds.iter().any(|k| k == kind.name()), "{kind} has no CRD");
            assert_eq!(kind.api_resource().kind, kind.name());
            assert_eq!(kind.crd().spec.names.kind, kind.name());
            assert_eq!(kind.crd_name(), kind.crd().metadata.name.unwrap());
            assert_eq!(SourceKind::parse(kind.name()), Some(kind));
            assert_eq!(SourceKind::parse(&kind.name().to_lowercase()), Some(kind));
            assert_eq!(SourceKind::parse(&kind.api_resource().plural), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.name());
        }
        assert_eq!(GitRepository::crd().spec.names.plural, "gitrepositories");
        assert_eq!(
            SourceKind::parse("gitrepo"),
            Some(SourceKind::GitRepository)
        );
        assert_eq!(SourceKind::parse("Bucket"), None);
    }

    #[test]
    fn a_git_repository_reads_as_a_stored_artifact() {
        let object = dynamic(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": "team"},
            "spec": {"url": "https://example.invalid/app.git", "interval": "1m", "ref": {"branch": "main"}},
            "status": {"artifact": {"revision": "main@sha1:aaaa", "digest": "sha256:00",
                "size": 1, "url": "http://h/a.tar.gz", "path": "gitrepository/team/app/a.tar.gz",
                "lastUpdateTime": "2026-01-01T00:00:00Z"}}
        }));
        let state = SourceKind::GitRepository.state_of(&object).unwrap();
        assert_eq!(state.describe(), "GitRepository team/app");
        let artifact = state.ready_artifact().unwrap();
        assert_eq!(artifact.revision, "main@sha1:aaaa");
        assert_eq!(
            artifact.stored_path.as_deref(),
            Some("gitrepository/team/app/a.tar.gz")
        );
        assert_eq!(
            state.origin,
            vec![
                ("URL", "https://example.invalid/app.git".to_owned()),
                ("Branch", "main".to_owned())
            ]
        );
        assert!(state.trigger_hash().is_some());
    }

    #[test]
    fn an_external_artifact_is_never_read_from_local_storage() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let object = dynamic(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "ExternalArtifact",
            "metadata": {"name": "bundle", "namespace": "team"},
            "spec": {"sourceRef": {"apiVersion": "example.com/v1", "kind": "Builder", "name": "b"}},
            "status": {"artifact": {"revision": "v1", "digest": digest,
                "url": "https://artifacts.example/b.tar.gz",
                "path": "gitrepository/team/app/a.tar.gz"}}
        }));
        let state = SourceKind::ExternalArtifact.state_of(&object).unwrap();
        let artifact = state.ready_artifact().unwrap();
        assert_eq!(artifact.stored_path, None);
        assert_eq!(artifact.digest, digest);
        assert_eq!(
            state.origin,
            vec![("Producer", "Builder/team/b".to_owned())]
        );
    }

    #[test]
    fn no_artifact_says_which_source_and_why() {
        let object = dynamic(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "ExternalArtifact",
            "metadata": {"name": "bundle", "namespace": "team"}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed",
                "message": "the build broke", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }));
        let state = SourceKind::ExternalArtifact.state_of(&object).unwrap();
        assert_eq!(
            state.ready_artifact().unwrap_err(),
            "ExternalArtifact team/bundle has no artifact yet (the build broke)"
        );
        assert_eq!(state.trigger_hash(), None);
    }

    #[test]
    fn a_malformed_status_names_the_object() {
        let object = dynamic(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "ExternalArtifact",
            "metadata": {"name": "bundle", "namespace": "team"}, "spec": {},
            "status": {"artifact": {"revision": "v1"}}
        }));
        let err = SourceKind::ExternalArtifact.state_of(&object).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ExternalArtifact team/bundle cannot be read: "),
            "{err}"
        );
    }
}
