//! The kustomization file (`kustomization.yaml`, kind Kustomization or Component) as kustomize
//! v5 reads it. Unknown fields are an error, as in kustomize.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::BuildError;

/// `null` in YAML reads as the default (kustomize accepts `resources:` with nothing after it).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Kustomization {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    pub resources: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub bases: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub components: Vec<String>,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub common_labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub labels: Vec<LabelEntry>,
    #[serde(deserialize_with = "nullable")]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub images: Vec<ImageEntry>,
    #[serde(deserialize_with = "nullable")]
    pub replicas: Vec<ReplicaEntry>,
    #[serde(deserialize_with = "nullable")]
    pub patches: Vec<PatchEntry>,
    #[serde(deserialize_with = "nullable")]
    pub patches_strategic_merge: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub patches_json6902: Vec<PatchEntry>,
    #[serde(deserialize_with = "nullable")]
    pub config_map_generator: Vec<GeneratorArgs>,
    #[serde(deserialize_with = "nullable")]
    pub secret_generator: Vec<GeneratorArgs>,
    pub generator_options: Option<GeneratorOptions>,
    #[serde(deserialize_with = "nullable")]
    pub replacements: Vec<ReplacementEntry>,
    pub sort_options: Option<SortOptions>,
    /// Transformer configuration files (see `config`).
    #[serde(deserialize_with = "nullable")]
    pub configurations: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub vars: Vec<super::vars::VarEntry>,
    /// The deprecated spelling of `images`.
    #[serde(deserialize_with = "nullable")]
    pub image_tags: Vec<ImageEntry>,
    /// Transformer, generator and validator configurations: files or inline documents. Only
    /// kustomize's built-in kinds are run (see `builtin`).
    #[serde(deserialize_with = "nullable")]
    pub generators: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub transformers: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub validators: Vec<String>,
    // Fields kustomize knows that this engine refuses (checked in `refused_feature`).
    pub helm_charts: Option<Value>,
    pub helm_globals: Option<Value>,
    pub helm_chart_inflation_generator: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    pub crds: Vec<String>,
    pub openapi: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    pub build_metadata: Vec<String>,
}

/// Reads a kustomization file as kustomize does: an error when it sets nothing at all (kustomize
/// refuses an empty kustomization, and building it as nothing would prune everything), unknown
/// fields refused, and a repeated key taken as its last value (kustomize reads this file with
/// sigs.k8s.io/yaml, which accepts repeated keys).
pub(crate) fn parse(text: &str, file: &str) -> Result<Kustomization, BuildError> {
    let invalid = |message: String| BuildError::InvalidKustomization {
        file: file.to_string(),
        message,
    };
    let yaml_err = |e: crate::yaml::YamlError| BuildError::Yaml {
        file: file.to_string(),
        line: e.line,
        message: e.to_string(),
    };
    let docs = crate::yaml::json_documents_with(text, crate::yaml::DuplicateKeys::LastWins)
        .map_err(yaml_err)?;
    let raw = match docs.as_slice() {
        [] => Value::Null,
        [one] => one.clone(),
        _ => {
            return Err(invalid(
                "a kustomization file holds one YAML document".into(),
            ));
        }
    };
    // kustomize compares the parsed file with an empty one: null and "" count as unset, while
    // an empty list or map (`resources: []`) counts as set.
    let sets_something = match &raw {
        Value::Object(m) => m.iter().any(|(k, v)| {
            k != "apiVersion" && k != "kind" && !v.is_null() && v.as_str() != Some("")
        }),
        Value::Null => false,
        _ => return Err(invalid("the file is not a YAML mapping".into())),
    };
    if !sets_something {
        return Err(BuildError::EmptyKustomization {
            file: file.to_string(),
        });
    }
    // serde_yaml reads scalars into string fields leniently (`commonLabels: {v: 1}` is "1",
    // as sigs.k8s.io/yaml converts it); the first parse keeps that. Only a file with repeated
    // keys, which serde_yaml refuses, goes through the JSON value (where the last one won).
    //
    // kustomize matches field names case-insensitively (Go's encoding/json), so
    // `patchesJSON6902` is `patchesJson6902`: a top-level key serde does not know is renamed
    // to the field it matches ignoring case, and the file read again.
    let mut raw = raw;
    let mut first = crate::yaml::from_str::<Kustomization>(text);
    for _ in 0..KNOWN_FIELD_RETRIES {
        let message = match &first {
            Ok(_) => break,
            Err(e) => e.to_string(),
        };
        let renamed = message.contains("unknown field") && rename_case_variant(&mut raw, &message);
        if !renamed && !message.contains("duplicate") {
            break;
        }
        let again = crate::yaml::to_string(&raw).map_err(yaml_err)?;
        first = crate::yaml::from_str::<Kustomization>(&again);
    }
    match first {
        Ok(k) => Ok(k),
        Err(e) if e.line.is_some() && !e.to_string().contains("unknown field") => Err(yaml_err(e)),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// How many case-variant field names one kustomization file may use.
const KNOWN_FIELD_RETRIES: usize = 16;

/// Renames the top-level key serde reported as unknown (`unknown field `x`, expected one of
/// `a`, `b`, ...`) to the expected field it equals ignoring ASCII case. False if none does.
fn rename_case_variant(raw: &mut Value, message: &str) -> bool {
    let Some(rest) = message.split_once("unknown field `").map(|(_, r)| r) else {
        return false;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return false;
    };
    let Some(canonical) = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|e| e.eq_ignore_ascii_case(unknown) && *e != unknown)
    else {
        return false;
    };
    let Some(m) = raw.as_object_mut() else {
        return false;
    };
    match m.remove(unknown) {
        Some(v) => {
            m.insert(canonical.to_string(), v);
            true
        }
        None => false,
    }
}

/// The `buildMetadata` option that records where each object came from.
pub(crate) const ORIGIN_ANNOTATIONS: &str = "originAnnotations";
/// The `buildMetadata` option that records every transformer that ran over each object.
pub(crate) const TRANSFORMER_ANNOTATIONS: &str = "transformerAnnotations";

impl Kustomization {
    /// The first field set that this engine refuses to build (rather than build differently),
    /// with the reason.
    pub fn refused_feature(&self) -> Option<(&'static str, &'static str)> {
        let set = |v: &Option<Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        const HELM: &str = "inflating a Helm chart runs the helm program and fetches the chart \
            from outside the source; Flux's kustomize build refuses it too (use a HelmRelease)";
        [
            (&self.helm_charts, "helmCharts", HELM),
            (&self.helm_globals, "helmGlobals", HELM),
            (
                &self.helm_chart_inflation_generator,
                "helmChartInflationGenerator",
                HELM,
            ),
        ]
        .into_iter()
        .find(|(v, _, _)| set(v))
        .map(|(_, field, why)| (field, why))
        .or_else(|| {
            self.build_metadata
                .iter()
                .any(|m| m != ORIGIN_ANNOTATIONS && m != TRANSFORMER_ANNOTATIONS)
                .then_some((
                    "buildMetadata",
                    "only originAnnotations and transformerAnnotations are implemented; \
                     managedByLabel is not",
                ))
        })
    }
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelEntry {
    #[serde(deserialize_with = "nullable")]
    pub pairs: BTreeMap<String, String>,
    pub include_selectors: bool,
    pub include_templates: bool,
    #[serde(deserialize_with = "nullable")]
    pub fields: Vec<FieldSpec>,
}

/// A field spec: `labels[].fields` and transformer configurations. Unknown keys are ignored
/// (kustomize reads plugin and transformer configurations leniently).
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FieldSpec {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub path: String,
    #[serde(default)]
    pub create: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ImageEntry {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
    pub tag_suffix: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplicaEntry {
    pub name: String,
    pub count: i64,
}

/// A target selector (`patches[].target`, replacement `select`/`reject`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Selector {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchOptions {
    pub allow_name_change: bool,
    pub allow_kind_change: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchEntry {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<Selector>,
    pub options: Option<PatchOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorOptions {
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorArgs {
    pub name: String,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub literals: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub envs: Vec<String>,
    pub env: Option<String>,
    pub options: Option<GeneratorOptions>,
    /// Secrets only.
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    pub kv_sources: Option<Value>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementEntry {
    pub path: Option<String>,
    pub source: Option<ReplacementSource>,
    #[serde(deserialize_with = "nullable")]
    pub targets: Vec<ReplacementTarget>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementSource {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub field_path: Option<String>,
    pub options: Option<FieldOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementTarget {
    pub select: Option<Selector>,
    #[serde(deserialize_with = "nullable")]
    pub reject: Vec<Selector>,
    #[serde(deserialize_with = "nullable")]
    pub field_paths: Vec<String>,
    pub options: Option<FieldOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FieldOptions {
    pub delimiter: Option<String>,
    pub index: i64,
    // Only meaningful for structured-data targets, which kustomize v5.5 does not support either.
    #[allow(dead_code)]
    pub encoding: Option<String>,
    pub create: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SortOptions {
    pub order: Option<String>,
    pub legacy_sort_options: Option<LegacySortOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LegacySortOptions {
    #[serde(deserialize_with = "nullable")]
    pub order_first: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub order_last: Vec<String>,
}
