//! The keys of `spec.decryption`: read from the cluster with the reconciler's own identity (as
//! Flux reads them: the Secret is always in the Kustomization's namespace, so a tenant can
//! only name its own), or absent where the render runs without a cluster's keys (the CLI),
//! where encrypted values are masked.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{Cluster, Lookups};
use crate::api::Kustomization;
use crate::sops::Identities;
use crate::sops::decryptor::{Decryptor, KeyError, identities_from_secret};

/// Where the render finds decryption keys.
#[derive(Clone, Debug, Default)]
pub enum Keys {
    /// In the cluster: `spec.decryption.secretRef` (the Kustomization's namespace), else the
    /// reconciler-wide Secret (`--sops-age-secret`) given here as (namespace, name).
    Cluster {
        /// The reconciler-wide Secret as (namespace, name), if one is configured.
        default_secret: Option<(String, String)>,
    },
    /// Nowhere (the CLI): encrypted values are masked, as `flux build` masks them.
    #[default]
    Masked,
}

/// Why the keys of `spec.decryption` could not be read (BuildFailed; retried, since the
/// Secret may be created or fixed).
#[derive(Debug, thiserror::Error)]
pub enum DecryptionKeysError {
    /// Reading the Secret failed (other than not found).
    #[error("decryption Secret {secret}: {source}")]
    Read {
        /// The Secret, `namespace/name`.
        secret: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// `spec.decryption.secretRef` names a Secret that does not exist.
    #[error("decryption Secret {secret} not found")]
    NotFound {
        /// The Secret, `namespace/name`.
        secret: String,
    },
    /// The Secret holds no usable age identity.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// The decryptor of one render of `ks`.
pub(super) async fn decryptor(
    ks: &Kustomization,
    namespace: &str,
    lookups: &Lookups<'_>,
) -> Result<Decryptor, DecryptionKeysError> {
    let Some(decryption) = &ks.spec.decryption else {
        return Ok(Decryptor::off());
    };
    let (Keys::Cluster { default_secret }, Some(cluster)) = (&lookups.keys, lookups.cluster) else {
        return Ok(Decryptor::masked());
    };
    let (secret_ns, secret_name, own) = match (&decryption.secret_ref, default_secret) {
        (Some(r), _) => (namespace.to_owned(), r.name.clone(), true),
        (None, Some((ns, name))) => (ns.clone(), name.clone(), false),
        // Flux imports no key then, and every encrypted input fails to open.
        (None, None) => return Ok(Decryptor::with_keys(Identities::default())),
    };
    let ids = read_keys(cluster, &secret_ns, &secret_name, own).await?;
    Ok(Decryptor::with_keys(ids))
}

async fn read_keys(
    cluster: Cluster<'_>,
    namespace: &str,
    name: &str,
    own: bool,
) -> Result<Identities, DecryptionKeysError> {
    let secret = format!("{namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(cluster.admin.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| DecryptionKeysError::Read {
            secret: secret.clone(),
            source,
        })?
        .ok_or_else(|| DecryptionKeysError::NotFound {
            secret: secret.clone(),
        })?;
    let data = found.data.unwrap_or_default();
    let ids = identities_from_secret(
        &secret,
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
        own,
    )?;
    Ok(ids)
}
