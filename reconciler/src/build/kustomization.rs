//! The kustomization file (`kustomization.yaml`, kind Kustomization or Component) as kustomize
//! v5 reads it. Unknown fields are an error, as in kustomize.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `null` in YAML reads as the default (kustomize accepts `resources:` with nothing after it).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Kustomization {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub resources: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub bases: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub components: Vec<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name_prefix: Option<String>,
    #[serde(default)]
    pub name_suffix: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Vec<LabelEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub images: Vec<ImageEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub replicas: Vec<ReplicaEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub patches: Vec<PatchEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub patches_strategic_merge: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub patches_json6902: Vec<PatchEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub config_map_generator: Vec<GeneratorArgs>,
    #[serde(default, deserialize_with = "nullable")]
    pub secret_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    pub generator_options: Option<GeneratorOptions>,
    #[serde(default, deserialize_with = "nullable")]
    pub replacements: Vec<ReplacementEntry>,
    #[serde(default)]
    pub sort_options: Option<SortOptions>,
    // Fields kustomize knows that this engine refuses (checked in `refused_feature`).
    #[serde(default)]
    pub helm_charts: Option<Value>,
    #[serde(default)]
    pub helm_globals: Option<Value>,
    #[serde(default)]
    pub helm_chart_inflation_generator: Option<Value>,
    #[serde(default)]
    pub generators: Option<Value>,
    #[serde(default)]
    pub transformers: Option<Value>,
    #[serde(default)]
    pub validators: Option<Value>,
    #[serde(default)]
    pub vars: Option<Value>,
    #[serde(default)]
    pub crds: Option<Value>,
    #[serde(default)]
    pub configurations: Option<Value>,
    #[serde(default)]
    pub openapi: Option<Value>,
    #[serde(default)]
    pub build_metadata: Option<Value>,
    #[serde(default)]
    pub image_tags: Option<Value>,
}

impl Kustomization {
    /// The first field set that this engine refuses to build (rather than build differently).
    pub fn refused_feature(&self) -> Option<(&'static str, &'static str)> {
        let set = |v: &Option<Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        [
            (&self.helm_charts, "helmCharts", "helm chart inflation"),
            (&self.helm_globals, "helmGlobals", "helm chart inflation"),
            (
                &self.helm_chart_inflation_generator,
                "helmChartInflationGenerator",
                "helm chart inflation",
            ),
            (
                &self.generators,
                "generators",
                "generator plugins and KRM functions",
            ),
            (
                &self.transformers,
                "transformers",
                "transformer plugins and KRM functions",
            ),
            (
                &self.validators,
                "validators",
                "validator plugins and KRM functions",
            ),
            (&self.vars, "vars", "vars (deprecated; use replacements)"),
            (
                &self.crds,
                "crds",
                "crds (custom transformer configuration)",
            ),
            (
                &self.configurations,
                "configurations",
                "custom transformer configurations",
            ),
            (&self.openapi, "openapi", "custom OpenAPI schemas"),
            (&self.build_metadata, "buildMetadata", "buildMetadata"),
            (&self.image_tags, "imageTags", "imageTags (use images)"),
        ]
        .into_iter()
        .find(|(v, _, _)| set(v))
        .map(|(_, field, what)| (field, what))
    }
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelEntry {
    #[serde(default, deserialize_with = "nullable")]
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub fields: Vec<FieldSpec>,
}

/// A user-given field spec (`labels[].fields`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FieldSpec {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub path: String,
    #[serde(default)]
    pub create: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ImageEntry {
    pub name: String,
    #[serde(default)]
    pub new_name: Option<String>,
    #[serde(default)]
    pub new_tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Selector {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
    #[serde(default)]
    pub annotation_selector: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchOptions {
    #[serde(default)]
    pub allow_name_change: bool,
    #[serde(default)]
    pub allow_kind_change: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchEntry {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub target: Option<Selector>,
    #[serde(default)]
    pub options: Option<PatchOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorOptions {
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub disable_name_suffix_hash: Option<bool>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorArgs {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub behavior: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub literals: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub envs: Vec<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub options: Option<GeneratorOptions>,
    /// Secrets only.
    #[serde(default, rename = "type")]
    pub secret_type: Option<String>,
    #[serde(default)]
    pub kv_sources: Option<Value>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementEntry {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub source: Option<ReplacementSource>,
    #[serde(default, deserialize_with = "nullable")]
    pub targets: Vec<ReplacementTarget>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementSource {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub field_path: Option<String>,
    #[serde(default)]
    pub options: Option<FieldOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementTarget {
    #[serde(default)]
    pub select: Option<Selector>,
    #[serde(default, deserialize_with = "nullable")]
    pub reject: Vec<Selector>,
    #[serde(default, deserialize_with = "nullable")]
    pub field_paths: Vec<String>,
    #[serde(default)]
    pub options: Option<FieldOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FieldOptions {
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub index: i64,
    // Only meaningful for structured-data targets, which kustomize v5.5 does not support either.
    #[allow(dead_code)]
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub create: bool,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SortOptions {
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub legacy_sort_options: Option<LegacySortOptions>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LegacySortOptions {
    #[serde(default, deserialize_with = "nullable")]
    pub order_first: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub order_last: Vec<String>,
}
