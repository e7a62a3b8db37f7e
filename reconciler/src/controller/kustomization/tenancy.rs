//! Who a Kustomization acts as: the impersonated ServiceAccount (one cached client per
//! identity) and the refusal of references into other namespaces.

use super::Context;
use super::status::{Run, StageError};
use crate::api::Kustomization;

impl Context {
    /// The client for every read and write of `ks`'s objects: the impersonated ServiceAccount
    /// (spec.serviceAccountName, else the default one) or the reconciler's own identity.
    ///
    /// Guarantee: when an identity is to be impersonated and its client cannot be built, the
    /// error is returned; the reconciler's own client is never used in its place.
    pub(super) fn tenant_client(
        &self,
        ks: &Kustomization,
        namespace: &str,
    ) -> Result<kube::Client, kube::Error> {
        let Some(user) = self.impersonated_user(ks, namespace) else {
            return Ok(self.client.clone());
        };
        let mut cache = self.impersonated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&user) {
            return Ok(client.clone());
        }
        let mut config = self.kube_config.clone();
        // Only the user: the apiserver adds the ServiceAccount's groups itself.
        config.auth_info.impersonate = Some(user.clone());
        let client = kube::Client::try_from(config)?;
        cache.insert(user, client.clone());
        Ok(client)
    }
}

impl Context {
    /// The user `ks` acts as when it is not the reconciler itself: its ServiceAccount
    /// (spec.serviceAccountName, else `--default-service-account`).
    pub(super) fn impersonated_user(&self, ks: &Kustomization, namespace: &str) -> Option<String> {
        let sa = ks
            .spec
            .service_account_name
            .clone()
            .or_else(|| self.config.default_service_account.clone())?;
        Some(format!("system:serviceaccount:{namespace}:{sa}"))
    }
}

impl Run<'_> {
    /// The namespace a reference points into (ours when unset); refused when it crosses
    /// namespaces while the reconciler runs with `--no-cross-namespace-refs`.
    pub(super) fn referenced_namespace(
        &self,
        field: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<String, StageError> {
        let ns = namespace.unwrap_or(&self.namespace).to_owned();
        if self.ctx.config.no_cross_namespace_refs && ns != self.namespace {
            return Err(StageError::InvalidSpec(format!(
                "{field}: cross-namespace reference to {kind} {ns}/{name} is not allowed (the reconciler runs with --no-cross-namespace-refs)"
            )));
        }
        Ok(ns)
    }

    /// The object of kind `K` that the reference `field` names (in the namespace
    /// [`Run::referenced_namespace`] allows), read with the reconciler's own identity. A failed
    /// read is a [`StageError::Read`] with `reason`; an absent object is `missing(message)`.
    pub(super) async fn referenced<K>(
        &self,
        field: &str,
        name: &str,
        namespace: Option<&str>,
        reason: &'static str,
        missing: fn(String) -> StageError,
    ) -> Result<(String, K), StageError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&());
        let ns = self.referenced_namespace(field, &kind, name, namespace)?;
        let api: kube::Api<K> = kube::Api::namespaced(self.ctx.client.clone(), &ns);
        let object = api
            .get_opt(name)
            .await
            .map_err(|source| StageError::Read {
                object: format!("{kind} {ns}/{name}"),
                reason,
                source,
            })?
            .ok_or_else(|| missing(format!("{kind} {ns}/{name} not found")))?;
        Ok((ns, object))
    }
}
