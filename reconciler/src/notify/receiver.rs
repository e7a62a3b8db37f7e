//! The Receiver controller: reads each Receiver's token, derives its webhook path, registers
//! both for the webhook server and reports the path in status.
//!
//! Expected flow of one reconcile: read `spec.secretRef`'s `token` → path `/hook/<sha256(token
//! + name + namespace)>` → [`Registry::set`] → status (Ready, webhookPath, observedGeneration,
//! lastHandledReconcileAt) → requeue after `spec.interval` (10m) with jitter.
//!
//! Guarantees: the token lives only in the in-memory registry (zeroed when replaced or
//! dropped), never in status, events, logs or metrics. A Receiver whose Secret cannot be read
//! is unregistered at once (its path answers 404) and Ready=False/TokenNotFound with a retry.
//!
//! Caveats: a rotated token takes effect at the next reconcile of the Receiver (its interval,
//! a spec change or `kubectl gitops reconcile receiver`), as the path in status does in Flux.
//! The registry is per process: with leader election only the leader serves webhooks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::api::conditions::{self, meta, reasons, status, types};
use crate::api::receiver::{self, Receiver, ReceiverStatus};
use crate::controller::common::{self, Events, ReconcileTimer};
use crate::controller::metrics::Metrics;

/// The kind this controller reconciles (metric and span label).
pub const KIND: &str = "Receiver";

/// Retry delay after a Receiver's Secret could not be read.
pub const RETRY: Duration = Duration::from_secs(10);

/// Why a reconcile of a Receiver failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The Receiver's `secretRef` names no Secret that exists.
    #[error("Secret '{namespace}/{name}' not found")]
    SecretNotFound {
        /// The Secret's namespace (the Receiver's).
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// The Secret has no non-empty `token` key.
    #[error("Secret '{namespace}/{name}' has no 'token' key (or it is empty)")]
    NoToken {
        /// The Secret's namespace (the Receiver's).
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Reading the Secret failed for another reason than its absence.
    #[error("reading Secret '{namespace}/{name}': {source}")]
    SecretRead {
        /// The Secret's namespace (the Receiver's).
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// Another apiserver call (status write) failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Receiver object has no namespace (the API makes this impossible for a stored one).
    #[error("Receiver has no namespace")]
    NoNamespace,
}

/// A registered Receiver: where it is and the token its requests are checked with.
#[derive(Clone)]
pub struct Registered {
    /// The Receiver.
    pub object: ObjectRef<Receiver>,
    /// The token from its Secret, zeroed when the last copy is dropped.
    pub token: Arc<Zeroizing<Vec<u8>>>,
}

/// Webhook paths of the ready Receivers and their tokens, shared by the controller (writer)
/// and the webhook server (reader).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    by_path: HashMap<String, Registered>,
    path_of: HashMap<ObjectRef<Receiver>, String>,
}

impl Registry {
    /// Registers `object` under `path` with `token`, replacing what it had.
    pub fn set(&self, object: ObjectRef<Receiver>, path: String, token: Zeroizing<Vec<u8>>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.path_of.insert(object.clone(), path.clone()) {
            inner.by_path.remove(&old);
        }
        inner.by_path.insert(
            path,
            Registered {
                object,
                token: Arc::new(token),
            },
        );
    }

    /// Unregisters `object`.
    pub fn remove(&self, object: &ObjectRef<Receiver>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = inner.path_of.remove(object) {
            inner.by_path.remove(&path);
        }
    }

    /// The Receiver registered under `path`.
    pub fn lookup(&self, path: &str) -> Option<Registered> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_path.get(path).cloned()
    }

    /// How many Receivers are registered.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_path
            .len()
    }

    /// True when no Receiver is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the controller's reconciles share.
pub struct Context {
    /// The reconciler's own client (reads Secrets, writes status).
    pub client: kube::Client,
    /// Where ready Receivers are registered for the webhook server.
    pub registry: Registry,
    /// The reconciler's metrics.
    pub metrics: Arc<Metrics>,
    /// The controller's event recorder.
    pub events: Events,
}

/// The interval of `receiver` (its spec, else [`receiver::DEFAULT_INTERVAL`]).
fn interval(receiver: &Receiver) -> Duration {
    let text = receiver
        .spec
        .interval
        .as_deref()
        .unwrap_or(receiver::DEFAULT_INTERVAL);
    // The CRD's rule admits only valid durations; an object written around it gets the default.
    crate::api::duration::parse(text).unwrap_or(Duration::from_secs(600))
}

/// Reads the `token` key of the Secret `name` in `namespace`.
pub async fn read_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, ReceiverError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| ReceiverError::SecretRead {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| ReceiverError::SecretNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let token = secret
        .data
        .and_then(|mut data| data.remove("token"))
        .map(|bytes| Zeroizing::new(bytes.0))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ReceiverError::NoToken {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    Ok(token)
}

/// Reconciles one Receiver (see the module documentation).
pub async fn reconcile(
    receiver: Arc<Receiver>,
    ctx: Arc<Context>,
) -> Result<Action, ReceiverError> {
    let namespace = receiver.namespace().ok_or(ReceiverError::NoNamespace)?;
    let name = receiver.name_any();
    let span = common::reconcile_span(KIND, &namespace, &name);
    async move {
        let mut timer = ReconcileTimer::for_object(
            ctx.metrics.clone(),
            KIND,
            &namespace,
            &name,
            receiver.spec.suspend == Some(true),
        );
        let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &namespace);
        let object = ObjectRef::from_obj(receiver.as_ref());
        let old = receiver.status.clone().unwrap_or_default();
        let mut new = old.clone();
        if let Some(requested) = receiver
            .annotations()
            .get(meta::RECONCILE_REQUESTED_AT_ANNOTATION)
        {
            new.last_handled_reconcile_at = Some(requested.clone());
        }
        let generation = receiver.meta().generation;
        let result = read_token(&ctx.client, &namespace, &receiver.spec.secret_ref.name).await;
        let was_ready = conditions::get(&old.conditions, types::READY)
            .is_some_and(|c| c.status == status::TRUE);
        match result {
            Ok(token) => {
                let path = receiver::webhook_path(&token, &name, &namespace);
                ctx.registry.set(object, path.clone(), token);
                let message = format!("Receiver initialised for path: {path}");
                set_ready(
                    &mut new,
                    status::TRUE,
                    reasons::SUCCEEDED,
                    &message,
                    generation,
                );
                new.webhook_path = Some(path);
                conditions::remove(&mut new.conditions, types::RECONCILING);
                common::write_status(&api, receiver.as_ref(), &old, &new).await?;
                if !was_ready {
                    ctx.events
                        .publish(
                            receiver.as_ref(),
                            EventType::Normal,
                            reasons::SUCCEEDED,
                            "Reconcile",
                            &message,
                        )
                        .await;
                }
                ctx.metrics
                    .record_ready(KIND, &namespace, &name, Some(status::TRUE));
                timer.result(common::RESULT_SUCCESS);
                Ok(Action::requeue(common::jittered(interval(&receiver))))
            }
            Err(
                error @ (ReceiverError::SecretNotFound { .. }
                | ReceiverError::NoToken { .. }
                | ReceiverError::SecretRead { .. }),
            ) => {
                ctx.registry.remove(&object);
                let message = error.to_string();
                tracing::warn!(error = %message, "receiver not ready");
                set_ready(
                    &mut new,
                    status::FALSE,
                    reasons::TOKEN_NOT_FOUND,
                    &message,
                    generation,
                );
                new.webhook_path = None;
                conditions::set(
                    &mut new.conditions,
                    types::RECONCILING,
                    status::TRUE,
                    reasons::PROGRESSING_WITH_RETRY,
                    "retrying until the Secret has a token",
                    generation,
                );
                common::write_status(&api, receiver.as_ref(), &old, &new).await?;
                if was_ready || old.conditions.is_empty() || old.observed_generation != generation {
                    ctx.events
                        .publish(
                            receiver.as_ref(),
                            EventType::Warning,
                            reasons::TOKEN_NOT_FOUND,
                            "Reconcile",
                            &message,
                        )
                        .await;
                }
                ctx.metrics
                    .record_ready(KIND, &namespace, &name, Some(status::FALSE));
                timer.result(reasons::TOKEN_NOT_FOUND);
                Ok(Action::requeue(RETRY))
            }
            Err(other) => Err(other),
        }
    }
    .instrument(span)
    .await
}

fn set_ready(
    status: &mut ReceiverStatus,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    conditions::set(
        &mut status.conditions,
        types::READY,
        value,
        reason,
        message,
        generation,
    );
    status.observed_generation = generation;
}

/// Requeue after a controller error (a failed status write).
pub fn error_policy(receiver: Arc<Receiver>, error: &ReceiverError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = ?receiver.namespace(), name = %receiver.name_any(), error = %error, "receiver reconcile error; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectRef<Receiver> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn the_registry_keeps_one_path_per_receiver() {
        let registry = Registry::default();
        registry.set(
            object("a"),
            "/hook/1".into(),
            Zeroizing::new(b"t1".to_vec()),
        );
        registry.set(
            object("b"),
            "/hook/2".into(),
            Zeroizing::new(b"t2".to_vec()),
        );
        assert_eq!(registry.lookup("/hook/1").unwrap().object, object("a"));
        // A new token moves the receiver to a new path; the old one is gone.
        registry.set(
            object("a"),
            "/hook/3".into(),
            Zeroizing::new(b"t3".to_vec()),
        );
        assert!(registry.lookup("/hook/1").is_none());
        assert_eq!(registry.lookup("/hook/3").unwrap().token.as_slice(), b"t3");
        registry.remove(&object("b"));
        assert!(registry.lookup("/hook/2").is_none());
        assert_eq!(registry.len(), 1);
    }
}
