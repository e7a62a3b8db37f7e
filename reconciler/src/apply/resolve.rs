//! Discovery: from group/version/kind to the REST resource and its scope, cached per process.
//! Only hits are cached, so a kind created by a CRD earlier in the same apply resolves on the
//! next lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{ApiResource, GroupVersionKind};
use kube::discovery::{Scope, oneshot};

use super::object::ObjectRef;

/// A kind the cluster does not serve (or discovery failed for it).
#[derive(Debug, thiserror::Error)]
#[error("{object}: the cluster does not serve kind {kind} in {api_version}: {message}")]
pub struct ResolveError {
    pub object: String,
    pub kind: String,
    pub api_version: String,
    pub message: String,
}

type Key = (String, String, String);

/// The discovery cache. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<Key, (ApiResource, bool)>>,
}

impl Resolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resource of `object`'s kind and whether it is namespaced.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        object: &ObjectRef,
    ) -> Result<(ApiResource, bool), ResolveError> {
        let key = (
            object.group.clone(),
            object.version.clone(),
            object.kind.clone(),
        );
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
        let (resource, caps) =
            oneshot::pinned_kind(client, &gvk)
                .await
                .map_err(|e| ResolveError {
                    object: object.to_string(),
                    kind: object.kind.clone(),
                    api_version: object.api_version(),
                    message: e.to_string(),
                })?;
        let namespaced = matches!(caps.scope, Scope::Namespaced);
        self.lock().insert(key, (resource.clone(), namespaced));
        Ok((resource, namespaced))
    }

    /// Records a kind known from a CRD of the same build before the cluster serves it.
    pub fn scope_hint(&self, object: &ObjectRef) -> Option<bool> {
        self.lock()
            .get(&(
                object.group.clone(),
                object.version.clone(),
                object.kind.clone(),
            ))
            .map(|(_, namespaced)| *namespaced)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (ApiResource, bool)>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
