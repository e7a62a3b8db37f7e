//! Discovery: from group/version/kind to the REST resource and its scope, cached per process.
//! Only hits are cached, so a kind created by a CRD earlier in the same apply resolves on the
//! next lookup.
//!
//! The apiserver reports a CRD `Established` slightly before discovery serves its group, so a
//! kind announced with [`Resolver::expect_kinds`] (defined by a CRD of the build being applied)
//! is retried for a bounded time when discovery answers "not found".

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{ApiResource, GroupVersionKind};
use kube::discovery::{Scope, oneshot};

use super::object::ObjectRef;

/// A kind the cluster does not serve (or discovery failed for it).
#[derive(Debug, thiserror::Error)]
#[error("{object}: the cluster does not serve kind {kind} in {api_version}: {message}")]
pub struct ResolveError {
    /// The object whose kind was looked up.
    pub object: String,
    /// The kind.
    pub kind: String,
    /// The apiVersion the object names.
    pub api_version: String,
    /// Discovery's answer (not found, or the request's error).
    pub message: String,
}

type Key = (String, String, String);

/// How long discovery may keep answering "not found" for a kind defined by a CRD of the build.
const NEW_KIND_GRACE: Duration = Duration::from_secs(30);

/// The discovery cache. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<Key, (ApiResource, bool)>>,
    /// (group, kind) pairs defined by CRDs of a build: discovery may lag behind them.
    expected: Mutex<HashSet<(String, String)>>,
}

impl Resolver {
    /// An empty cache expecting no kinds.
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
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(object.group.clone(), object.kind.clone()));
        let deadline = tokio::time::Instant::now() + NEW_KIND_GRACE;
        let mut pause = Duration::from_millis(50);
        let (resource, caps) = loop {
            match oneshot::pinned_kind(client, &gvk).await {
                Ok(found) => break found,
                Err(kube::Error::Api(status))
                    // Discovery's 404 is a plain "404 page not found", not a Status with
                    // reason NotFound: match on the code.
                    if expected
                        && status.code == 404
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(ResolveError {
                        object: object.to_string(),
                        kind: object.kind.clone(),
                        api_version: object.api_version(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let namespaced = matches!(caps.scope, Scope::Namespaced);
        self.lock().insert(key, (resource.clone(), namespaced));
        Ok((resource, namespaced))
    }

    /// Announces kinds (group, kind) defined by CRDs of the build about to be applied: until
    /// discovery serves them, "not found" answers for them are retried (bounded).
    pub fn expect_kinds(&self, kinds: impl IntoIterator<Item = (String, String)>) {
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kinds);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (ApiResource, bool)>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
