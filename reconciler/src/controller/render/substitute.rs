//! postBuild variables: `substituteFrom` entries in order (a later entry overriding an earlier
//! one on a common key), then inline `substitute` over them all; from the cluster or from
//! local files (see [`Lookups`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use serde_json::Value;

use super::Lookups;
use crate::api::Kustomization;
use crate::api::kustomization::SubstituteKind;

/// Why the variables of `postBuild.substituteFrom` could not be read (BuildFailed).
#[derive(Debug, thiserror::Error)]
pub enum SubstituteError {
    /// The ConfigMap or Secret could not be read from the cluster.
    #[error("postBuild.substituteFrom {what}: {source}")]
    Read {
        /// The object, `ConfigMap namespace/name` or `Secret namespace/name`.
        what: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// Its data cannot be variables.
    #[error("postBuild.substituteFrom {what}: {problem}")]
    Data {
        /// The object, `ConfigMap namespace/name` or `Secret namespace/name`.
        what: String,
        /// What is wrong with its data.
        problem: DataProblem,
    },
    /// It does not exist and is not optional.
    #[error("postBuild.substituteFrom: {what} not found")]
    NotFound {
        /// The object, `ConfigMap namespace/name` or `Secret namespace/name`.
        what: String,
    },
}

/// What is wrong with the data of a substitution source.
#[derive(Debug, thiserror::Error)]
pub enum DataProblem {
    /// A value (named by its key) does not decode to UTF-8 text.
    #[error("key {0} is not UTF-8")]
    NotUtf8(String),
    /// A Secret's `data` value (named by its key) is not base64.
    #[error("data.{0} is not base64")]
    NotBase64(String),
    /// A value of a `data`-like map is not a string.
    #[error("{field}.{key} is not a string")]
    NotString {
        /// The map: `data` or `stringData`.
        field: &'static str,
        /// The key whose value is not a string.
        key: String,
    },
    /// The field (`data` or `stringData`) is not a map.
    #[error("{0} is not a map of strings")]
    NotAMap(&'static str),
}

/// postBuild variables: `substituteFrom` in order (later entries win), then `substitute`.
pub(super) async fn substitutions(
    ks: &Kustomization,
    namespace: &str,
    lookups: &Lookups<'_>,
    notices: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, SubstituteError> {
    let mut vars = BTreeMap::new();
    let Some(post) = &ks.spec.post_build else {
        return Ok(vars);
    };
    for reference in &post.substitute_from {
        let what = format!("{:?} {namespace}/{}", reference.kind, reference.name);
        let data =
            match (&lookups.substitute_from, lookups.cluster) {
                (Some(objects), _) => local_data(objects, reference.kind, &reference.name)
                    .map_err(|problem| SubstituteError::Data {
                        what: what.clone(),
                        problem,
                    })?,
                (None, Some(cluster)) => {
                    match cluster_data(cluster.tenant, reference.kind, namespace, &reference.name)
                        .await
                    {
                        Ok(data) => data,
                        Err(ClusterDataError::Read(source)) => {
                            return Err(SubstituteError::Read { what, source });
                        }
                        Err(ClusterDataError::Data(problem)) => {
                            return Err(SubstituteError::Data { what, problem });
                        }
                    }
                }
                (None, None) => None,
            };
        match data {
            Some(data) => vars.extend(data),
            None if reference.optional == Some(true) => {}
            None if lookups.skip_missing_substitutions => notices.push(format!(
                "postBuild.substituteFrom {what} was not looked up (dry run): its variables are not substituted"
            )),
            None => return Err(SubstituteError::NotFound { what }),
        }
    }
    vars.extend(post.substitute.clone());
    Ok(vars)
}

/// Why [`cluster_data`] failed.
enum ClusterDataError {
    Read(kube::Error),
    Data(DataProblem),
}

fn secret_text(key: &str, bytes: Vec<u8>) -> Result<String, DataProblem> {
    String::from_utf8(bytes).map_err(|_| DataProblem::NotUtf8(key.to_owned()))
}

/// The data of the ConfigMap or Secret `name` in the cluster (a Secret's values decoded).
async fn cluster_data(
    client: &kube::Client,
    kind: SubstituteKind,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, ClusterDataError> {
    match kind {
        SubstituteKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let cm = api.get_opt(name).await.map_err(ClusterDataError::Read)?;
            Ok(cm.map(|cm| cm.data.unwrap_or_default()))
        }
        SubstituteKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let Some(secret) = api.get_opt(name).await.map_err(ClusterDataError::Read)? else {
                return Ok(None);
            };
            let mut out = BTreeMap::new();
            for (k, v) in secret.data.unwrap_or_default() {
                let text = secret_text(&k, v.0).map_err(ClusterDataError::Data)?;
                out.insert(k, text);
            }
            Ok(Some(out))
        }
    }
}

/// The data of the ConfigMap or Secret `name` among local manifests (a Secret's `data` is
/// base64, its `stringData` plain and winning, as in the apiserver).
fn local_data(
    objects: &[Value],
    kind: SubstituteKind,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, DataProblem> {
    use base64::Engine as _;
    let kind_name = match kind {
        SubstituteKind::ConfigMap => "ConfigMap",
        SubstituteKind::Secret => "Secret",
    };
    let Some(object) = objects.iter().find(|o| {
        o["kind"] == kind_name && o["apiVersion"] == "v1" && o["metadata"]["name"] == name
    }) else {
        return Ok(None);
    };
    let strings = |field: &'static str| -> Result<Vec<(String, String)>, DataProblem> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(DataProblem::NotString {
                        field,
                        key: k.clone(),
                    }),
                })
                .collect(),
            Some(_) => Err(DataProblem::NotAMap(field)),
        }
    };
    let mut out = BTreeMap::new();
    match kind {
        SubstituteKind::ConfigMap => out.extend(strings("data")?),
        SubstituteKind::Secret => {
            for (k, v) in strings("data")? {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| DataProblem::NotBase64(k.clone()))?;
                let text = secret_text(&k, bytes)?;
                out.insert(k, text);
            }
            out.extend(strings("stringData")?);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::render::Lookups;

    fn ks(yaml: &str) -> Kustomization {
        crate::yaml::from_str(yaml).unwrap()
    }

    const HEAD: &str = "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {name: app, namespace: team, labels: {tier: web}}\nspec:\n  sourceRef: {kind: GitRepository, name: repo}\n  interval: 1m\n";

    fn cm(name: &str, data: &str) -> Value {
        crate::yaml::from_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {data}\n"
        ))
        .unwrap()
    }

    /// Flux: "the values from the later entries of substituteFrom override the earlier ones,
    /// and the inline substitute values override all of them".
    #[tokio::test]
    async fn later_substitute_from_entries_win_and_inline_substitute_wins_over_all() {
        let ks = ks(&format!(
            "{HEAD}  postBuild:\n    substitute: {{inline: yes}}\n    substituteFrom:\n    - {{kind: ConfigMap, name: first}}\n    - {{kind: ConfigMap, name: second}}\n"
        ));
        let lookups = Lookups {
            substitute_from: Some(vec![
                cm("first", "{a: first, b: first, inline: first}"),
                cm("second", "{a: second, inline: second}"),
            ]),
            ..Default::default()
        };
        let vars = substitutions(&ks, "team", &lookups, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(vars["a"], "second");
        assert_eq!(vars["b"], "first");
        assert_eq!(vars["inline"], "yes");
    }

    #[tokio::test]
    async fn missing_substitution_source_fails_unless_optional_or_a_dry_run() {
        let ks = ks(&format!(
            "{HEAD}  postBuild:\n    substituteFrom:\n    - {{kind: Secret, name: gone}}\n"
        ));
        let mut lookups = Lookups {
            substitute_from: Some(Vec::new()),
            ..Default::default()
        };
        let err = substitutions(&ks, "team", &lookups, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("Secret team/gone not found"),
            "{err}"
        );
        lookups.skip_missing_substitutions = true;
        let mut notices = Vec::new();
        substitutions(&ks, "team", &lookups, &mut notices)
            .await
            .unwrap();
        assert!(notices[0].contains("Secret team/gone"), "{notices:?}");
    }

    #[test]
    fn local_secrets_decode_base64_and_string_data_wins() {
        let secret: Value = crate::yaml::from_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGVsbG8=, b: eA==}\nstringData: {b: plain}\n",
        )
        .unwrap();
        let data = local_data(&[secret], SubstituteKind::Secret, "s")
            .unwrap()
            .unwrap();
        assert_eq!(data["a"], "hello");
        assert_eq!(data["b"], "plain");
    }
}
