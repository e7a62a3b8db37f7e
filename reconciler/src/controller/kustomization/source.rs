//! The source of a Kustomization, of whichever kind `spec.sourceRef.kind` names, seen through
//! [`SourceState`]: the lookup of the source stage, the current revision a dependency must be
//! Ready at, and the watches that re-queue Kustomizations when a source's artifact changes.

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::status::{Run, StageError};
use crate::api::conditions::reasons;
use crate::api::kustomization::SourceReference;
use crate::api::{Kustomization, SourceArtifact, SourceKind, SourceState};
use crate::backoff;
use crate::controller::watch::logged;

impl Run<'_> {
    /// The source `reference` names (from a Kustomization in `namespace`), read with the
    /// reconciler's own identity. `None` when it does not exist.
    pub(super) async fn source_state(
        &self,
        field: &str,
        reference: &SourceReference,
        namespace: &str,
    ) -> Result<Option<SourceState>, StageError> {
        let kind = reference.kind;
        let ns = self.referenced_namespace(
            field,
            kind.name(),
            &reference.name,
            Some(reference.namespace.as_deref().unwrap_or(namespace)),
        )?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &ns, &kind.api_resource());
        let object = api
            .get_opt(&reference.name)
            .await
            .map_err(|source| StageError::Read {
                object: format!("{kind} {ns}/{}", reference.name),
                reason: reasons::SOURCE_NOT_READY,
                source,
            })?;
        object
            .map(|o| kind.state_of(&o))
            .transpose()
            .map_err(|e| StageError::SourceNotReady(e.to_string()))
    }

    /// Stage 1: this Kustomization's source (`Kind namespace/name`) and its artifact.
    pub(super) async fn source(&self) -> Result<(String, SourceArtifact), StageError> {
        let reference = &self.ks.spec.source_ref;
        let state = self
            .source_state("spec.sourceRef", reference, &self.namespace)
            .await?
            .ok_or_else(|| {
                let ns = reference.namespace.as_deref().unwrap_or(&self.namespace);
                StageError::SourceNotReady(format!(
                    "{} {ns}/{} not found",
                    reference.kind, reference.name
                ))
            })?;
        let artifact = state.ready_artifact().map_err(StageError::SourceNotReady)?;
        Ok((state.describe(), artifact.clone()))
    }

    /// The revision of the artifact the source of `dependency` (in `namespace`) offers now;
    /// `None` when it cannot be read or has none.
    pub(super) async fn current_revision(
        &self,
        dependency: &Kustomization,
        namespace: &str,
    ) -> Option<String> {
        // A dependency's source is the dependency's business: read it even across namespaces.
        let reference = &dependency.spec.source_ref;
        let kind = reference.kind;
        let ns = reference.namespace.as_deref().unwrap_or(namespace);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), ns, &kind.api_resource());
        let object = api.get_opt(&reference.name).await.ok().flatten()?;
        kind.state_of(&object).ok()?.artifact.map(|a| a.revision)
    }
}

/// The sources of `kind` whose artifact changed (revision or digest), from a watch of every
/// namespace that reconnects with [`backoff::backoff`].
pub(super) fn changes(
    client: &kube::Client,
    kind: SourceKind,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
    logged(
        watcher(api, watcher::Config::default().any_semantic()),
        kind.crd_name(),
    )
    .backoff(backoff::backoff())
    .applied_objects()
    .predicate_filter(
        move |object: &DynamicObject| kind.state_of(object).ok()?.trigger_hash(),
        Default::default(),
    )
    .boxed()
}

/// The Kustomizations in `store` whose source is `object`, a source of `kind`.
pub(super) fn users_of(
    store: &Store<Kustomization>,
    kind: SourceKind,
    object: &DynamicObject,
) -> Vec<StoreRef<Kustomization>> {
    super::referring(store, &object.metadata, |ks| {
        let src = &ks.spec.source_ref;
        if src.kind == kind {
            vec![(src.namespace.as_deref(), src.name.as_str())]
        } else {
            Vec::new()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(name: &str, kind: &str) -> Kustomization {
        crate::yaml::from_str(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: n}}\nspec:\n  sourceRef: {{kind: {kind}, name: app}}\n  interval: 1m\n"
        ))
        .unwrap()
    }

    /// A GitRepository and an ExternalArtifact of the same name trigger only their own users.
    #[test]
    fn users_are_matched_by_kind_as_well_as_name() {
        let (reader, mut writer) = kube::runtime::reflector::store();
        for object in [
            ks("from-git", "GitRepository"),
            ks("from-ea", "ExternalArtifact"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let source = |kind: SourceKind| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": kind.name(),
                "metadata": {"name": "app", "namespace": "n"}
            }))
            .unwrap()
        };
        for (kind, user) in [
            (SourceKind::GitRepository, "from-git"),
            (SourceKind::ExternalArtifact, "from-ea"),
        ] {
            let users: Vec<String> = users_of(&reader, kind, &source(kind))
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(users, [user]);
        }
    }
}
