//! Transformer configurations (`configurations:` files): field specs that extend where
//! kustomize's built-in transformers look — name references to custom kinds, extra namespace,
//! label, annotation, image and replica fields, and where vars are substituted. As in
//! kustomize, a kustomization's configuration applies to its own transformers and to those of
//! every kustomization above it (it is merged upward with the resources).

use serde::Deserialize;

use super::BuildError;
use super::kustomization::FieldSpec;
use super::kustomization::nullable;
use super::loader::Loader;
use super::resource::ResId;

/// One `nameReference` entry: objects of this kind are referred to by name at these fields.
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NameBackRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub field_specs: Vec<FieldSpec>,
}

/// kustomize's `TransformerConfig`, holding only what users add to the built-in defaults
/// (the defaults live with each transformer). Unknown keys are ignored, as kustomize does.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransformerConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub name_prefix: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub name_suffix: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub common_labels: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub template_labels: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub common_annotations: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub name_reference: Vec<NameBackRef>,
    #[serde(default, deserialize_with = "nullable")]
    pub var_reference: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub images: Vec<FieldSpec>,
    #[serde(default, deserialize_with = "nullable")]
    pub replicas: Vec<FieldSpec>,
}

fn merge_specs(into: &mut Vec<FieldSpec>, from: &[FieldSpec]) {
    for f in from {
        if !into.contains(f) {
            into.push(f.clone());
        }
    }
}

impl TransformerConfig {
    /// Adds another configuration (duplicates are dropped, so a base reached twice through a
    /// diamond does not apply its fields twice).
    pub fn merge(&mut self, o: &TransformerConfig) {
        merge_specs(&mut self.name_prefix, &o.name_prefix);
        merge_specs(&mut self.name_suffix, &o.name_suffix);
        merge_specs(&mut self.namespace, &o.namespace);
        merge_specs(&mut self.common_labels, &o.common_labels);
        merge_specs(&mut self.template_labels, &o.template_labels);
        merge_specs(&mut self.labels, &o.labels);
        merge_specs(&mut self.common_annotations, &o.common_annotations);
        merge_specs(&mut self.var_reference, &o.var_reference);
        merge_specs(&mut self.images, &o.images);
        merge_specs(&mut self.replicas, &o.replicas);
        for r in &o.name_reference {
            match self
                .name_reference
                .iter_mut()
                .find(|x| x.group == r.group && x.version == r.version && x.kind == r.kind)
            {
                Some(x) => merge_specs(&mut x.field_specs, &r.field_specs),
                None => self.name_reference.push(r.clone()),
            }
        }
    }

    /// Reads the `configurations:` files of one kustomization.
    pub fn load(
        loader: &Loader<'_>,
        dir: &str,
        file: &str,
        paths: &[String],
    ) -> Result<TransformerConfig, BuildError> {
        let mut out = TransformerConfig::default();
        for p in paths {
            let rel = loader.resolve(dir, p, file)?;
            let text = loader.read_text(&rel, file)?;
            let docs = super::loader::parse_yaml(&text, &rel, &loader.limits)?;
            for doc in docs {
                let c: TransformerConfig =
                    serde_json::from_value(doc).map_err(|e| BuildError::InvalidKustomization {
                        file: rel.clone(),
                        message: format!("invalid transformer configuration: {e}"),
                    })?;
                out.merge(&c);
            }
        }
        Ok(out)
    }
}

impl FieldSpec {
    /// Whether this spec's group/version/kind (each optional) selects `id`.
    pub fn selects(&self, id: &ResId) -> bool {
        let ok = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.is_empty() || w == have)
        };
        ok(&self.group, &id.group) && ok(&self.version, &id.version) && ok(&self.kind, &id.kind)
    }
}
