//! The source of a Kustomization, of whichever kind `spec.sourceRef.kind` names, seen through
//! [`SourceState`]: the lookup of the source stage, the current revision a dependency must be
//! Ready at, and the watches that re-queue Kustomizations when a source's artifact changes.
//!
//! The watch of each source kind also keeps a store of its objects ([`SourceStores`]), and
//! lookups read it instead of the apiserver once it has listed: a reconcile a new artifact
//! triggered sees that artifact (the store applies an event before the trigger is passed on);
//! one started otherwise may see a source a moment old, whose newer artifact then triggers the
//! next reconcile. Until the first list completed, lookups GET the source.

use std::collections::HashMap;

use futures::{FutureExt, Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef as StoreRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::status::{Run, StageError};
use crate::api::conditions::reasons;
use crate::api::kustomization::SourceReference;
use crate::api::{Kustomization, SourceArtifact, SourceKind, SourceState};
use crate::backoff;
use crate::controller::watch::{self, logged};

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
        let object = self
            .ctx
            .sources
            .get(&self.ctx.client, kind, &ns, &reference.name)
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
        let object = self
            .ctx
            .sources
            .get(&self.ctx.client, kind, ns, &reference.name)
            .await
            .ok()
            .flatten()?;
        kind.state_of(&object).ok()?.artifact.map(|a| a.revision)
    }
}

/// The sources of every kind, as their watches (see [`changes`]) last saw them.
#[derive(Clone, Default)]
pub(super) struct SourceStores(HashMap<SourceKind, Store<DynamicObject>>);

impl SourceStores {
    /// The source `kind` `namespace/name`, read as `client` (the reconciler's own identity,
    /// which the watches use too): from the kind's store once it has listed, else with a GET.
    async fn get(
        &self,
        client: &kube::Client,
        kind: SourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        if let Some(store) = self.0.get(&kind)
            && let Some(Ok(())) = store.wait_until_ready().now_or_never()
        {
            let key = StoreRef::new_with(name, kind.api_resource()).within(namespace);
            return Ok(store.get(&key).map(|o| (*o).clone()));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        api.get_opt(name).await
    }
}

/// For each source kind, the sources whose artifact changed (see [`changes`]); the stores
/// those watches keep.
#[allow(clippy::type_complexity)]
pub(super) fn watch_all(
    client: &kube::Client,
) -> (
    SourceStores,
    Vec<(
        SourceKind,
        impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static,
    )>,
) {
    let mut stores = SourceStores::default();
    let streams = SourceKind::ALL
        .into_iter()
        .map(|kind| {
            let writer = reflector::store::Writer::new(kind.api_resource());
            stores.0.insert(kind, writer.as_reader());
            (kind, changes(client, kind, writer))
        })
        .collect();
    (stores, streams)
}

/// The sources of `kind` whose artifact changed (revision or digest), from a watch of every
/// namespace that reconnects with [`backoff::backoff`] and keeps `writer`'s store (without
/// what [`watch::slim`] drops, which no lookup reads).
fn changes(
    client: &kube::Client,
    kind: SourceKind,
    writer: reflector::store::Writer<DynamicObject>,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
    logged(
        watcher(api, watcher::Config::default().any_semantic()),
        kind.crd_name(),
    )
    .backoff(backoff::backoff())
    .modify(watch::slim::<DynamicObject>)
    .reflect(writer)
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

    /// Lookups read a kind's store once it has listed, and only then: the client here answers
    /// nothing (nothing listens on port 1), so any request it sends fails.
    #[tokio::test]
    async fn lookups_read_the_store_once_it_has_listed() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let kind = SourceKind::GitRepository;
        let mut writer = reflector::store::Writer::new(kind.api_resource());
        let mut stores = SourceStores::default();
        stores.0.insert(kind, writer.as_reader());
        let repo: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubectl-gitops.io/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": "n"}
        }))
        .unwrap();
        // Not listed yet: the lookup goes to the apiserver (and fails here).
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(repo));
        assert!(stores.get(&client, kind, "n", "app").await.is_err());
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let found = stores.get(&client, kind, "n", "app").await.unwrap();
        assert_eq!(found.and_then(|o| o.metadata.name).as_deref(), Some("app"));
        assert!(
            stores
                .get(&client, kind, "other", "app")
                .await
                .unwrap()
                .is_none()
        );
        // A kind without a store is read from the apiserver.
        let empty = SourceStores::default();
        assert!(empty.get(&client, kind, "n", "app").await.is_err());
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
