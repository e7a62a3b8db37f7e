//! The build stage: a native kustomize engine. A pure function from a file tree plus the
//! Kustomization's build fields to an ordered list of Kubernetes objects.
//!
//! Semantics are kustomize v5.5's (as embedded in kubectl v1.32), checked differentially
//! against `kubectl kustomize` by `tests/tests/build_differential.rs`. Nothing outside the root
//! is read, symlinks are refused, nothing is fetched or executed, and every input is bounded
//! (see `loader::Limits`).
//!
//! Pipeline: load the kustomization at `path` (or generate one as Flux does when there is none)
//! → accumulate resources, generators, components and transformers level by level
//! (`target`) → apply the Flux-style fields from [`BuildOptions`] as an outer kustomization
//! → hash suffixes for generated ConfigMaps/Secrets → name-reference updates → sort →
//! postBuild substitution.

mod builtin;
mod config;
mod error;
mod fieldspec;
mod generators;
mod json6902;
mod kustomization;
mod loader;
mod nameref;
mod patches;
mod replacements;
pub(crate) mod resource;
mod schema;
mod smp;
mod sort;
mod substitute;
mod target;
mod transform;
mod vars;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub use error::BuildError;

use crate::api::kustomization::{CommonMetadata, Image, KustomizationSpec, Patch};

/// The build fields of a Kustomization (contract with the controller and the CLI).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildOptions {
    /// Directory to build, relative to the root; "" or "./" is the root.
    pub path: String,
    /// `spec.namePrefix`: prepended to every object's name.
    pub name_prefix: Option<String>,
    /// `spec.nameSuffix`: appended to every object's name.
    pub name_suffix: Option<String>,
    /// `spec.patches`: strategic merge or JSON 6902 patches with optional targets.
    pub patches: Vec<Patch>,
    /// `spec.images`: image name, tag and digest overrides.
    pub images: Vec<Image>,
    /// Component directories, relative to `path`.
    pub components: Vec<String>,
    /// `spec.commonMetadata`: labels and annotations for every object.
    pub common_metadata: Option<CommonMetadata>,
    /// Variables for postBuild substitution, already merged by the caller from `substitute`
    /// and `substituteFrom`.
    pub substitute: BTreeMap<String, String>,
    /// `spec.postBuild` is set: substitute variables after the build.
    pub substitution_enabled: bool,
    /// An unset variable without default is an error (otherwise it becomes "").
    pub strict_substitution: bool,
}

impl BuildOptions {
    /// Everything from the spec except the `substituteFrom` values (the controller reads those
    /// from ConfigMaps/Secrets and merges them into `substitute`).
    pub fn from_spec(spec: &KustomizationSpec) -> Self {
        BuildOptions {
            path: spec.path.clone().unwrap_or_default(),
            name_prefix: spec.name_prefix.clone(),
            name_suffix: spec.name_suffix.clone(),
            patches: spec.patches.clone(),
            images: spec.images.clone(),
            components: spec.components.clone(),
            common_metadata: spec.common_metadata.clone(),
            substitute: spec
                .post_build
                .as_ref()
                .map(|p| p.substitute.clone())
                .unwrap_or_default(),
            substitution_enabled: spec.post_build.is_some(),
            strict_substitution: false,
        }
    }

    fn has_outer_kustomization(&self) -> bool {
        self.name_prefix.as_deref().is_some_and(|s| !s.is_empty())
            || self.name_suffix.as_deref().is_some_and(|s| !s.is_empty())
            || !self.patches.is_empty()
            || !self.images.is_empty()
            || !self.components.is_empty()
            || self
                .common_metadata
                .as_ref()
                .is_some_and(|m| !m.labels.is_empty() || !m.annotations.is_empty())
    }

    /// The Flux-style fields as a kustomization wrapped around `path`.
    fn outer_kustomization(&self) -> kustomization::Kustomization {
        let meta = self.common_metadata.clone().unwrap_or_default();
        kustomization::Kustomization {
            name_prefix: self.name_prefix.clone(),
            name_suffix: self.name_suffix.clone(),
            components: self.components.clone(),
            patches: self
                .patches
                .iter()
                .map(|p| kustomization::PatchEntry {
                    patch: Some(p.patch.clone()),
                    target: p.target.as_ref().map(|t| kustomization::Selector {
                        group: t.group.clone(),
                        version: t.version.clone(),
                        kind: t.kind.clone(),
                        name: t.name.clone(),
                        namespace: t.namespace.clone(),
                        label_selector: t.label_selector.clone(),
                        annotation_selector: t.annotation_selector.clone(),
                    }),
                    ..Default::default()
                })
                .collect(),
            images: self
                .images
                .iter()
                .map(|i| kustomization::ImageEntry {
                    name: i.name.clone(),
                    new_name: i.new_name.clone(),
                    new_tag: i.new_tag.clone(),
                    digest: i.digest.clone(),
                    tag_suffix: None,
                })
                .collect(),
            labels: if meta.labels.is_empty() {
                Vec::new()
            } else {
                vec![kustomization::LabelEntry {
                    pairs: meta.labels,
                    ..Default::default()
                }]
            },
            common_annotations: meta.annotations,
            ..Default::default()
        }
    }
}

/// What a file the build reads is used as (told to the [`InputFilter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputUse<'a> {
    /// A file of `resources` (YAML objects).
    Resource,
    /// A `patches[].path` file.
    Patch,
    /// An `env`/`envs` file of a secretGenerator.
    SecretEnv,
    /// A `files` entry of a secretGenerator, stored under `key`.
    SecretFile {
        /// The key of the Secret's data the file's content is stored under.
        key: &'a str,
    },
    /// An `env`/`envs` file of a configMapGenerator.
    ConfigMapEnv,
    /// A `files` entry of a configMapGenerator.
    ConfigMapFile,
}

/// The caller's view of the files a build reads: it sees each resource, patch and generator
/// file (after the engine's bounds and confinement checks) and returns the bytes the engine
/// uses, or refuses the file with a message (the build then fails naming the file). This is
/// how encrypted inputs are decrypted in memory without the engine knowing about encryption.
pub trait InputFilter: Sync {
    /// The bytes to use for the file at `rel` (relative to the build root), given the bytes
    /// read and what the file is used as; `Err` refuses the file with a message.
    fn filter(&self, rel: &str, bytes: Vec<u8>, used_as: InputUse<'_>) -> Result<Vec<u8>, String>;
}

/// The filter that passes every file through as it is.
pub struct Unfiltered;

impl InputFilter for Unfiltered {
    fn filter(&self, _: &str, bytes: Vec<u8>, _: InputUse<'_>) -> Result<Vec<u8>, String> {
        Ok(bytes)
    }
}

/// Builds the kustomization at `options.path` under `root`, substituting postBuild variables
/// when `options` enables it.
///
/// Guarantees: reads nothing outside `root` and follows no symlink; runs nothing and fetches
/// nothing; bounded in input size, documents, objects and nesting (see `loader::Limits`);
/// output order is kustomize's (legacy sort unless the root kustomization sets sortOptions).
/// `targetNamespace` is not applied here (it is a policy step).
pub fn build(root: &Path, options: &BuildOptions) -> Result<Vec<Value>, BuildError> {
    let objects = build_with(root, options, &Unfiltered)?;
    substitute_objects(objects, options)
}

/// Builds as [`build`] does, with every resource, patch and generator file passed through
/// `inputs`, and without postBuild substitution (the caller runs [`substitute_objects`] when
/// it is ready to).
pub fn build_with(
    root: &Path,
    options: &BuildOptions,
    inputs: &dyn InputFilter,
) -> Result<Vec<Value>, BuildError> {
    let loader = loader::Loader::new(root, loader::Limits::default(), inputs);
    let path = match options.path.trim() {
        "" | "." | "./" => String::new(),
        p => loader.resolve("", p, "spec.path")?,
    };
    match loader.kind_of(&path, "spec.path")? {
        Some(true) => {}
        Some(false) => {
            return Err(BuildError::Io {
                file: path,
                message: "spec.path is a file, expected a directory".into(),
            });
        }
        None => {
            return Err(BuildError::NotFound {
                file: "spec.path".into(),
                path: loader::display(&path).to_string(),
            });
        }
    }
    let mut builder = target::Builder::new(loader);
    let (mut acc, sort_options) = builder.accumulate_dir(&path, "spec.path", true)?;
    let root_file = loader::join(&path, "kustomization.yaml");
    if options.has_outer_kustomization() {
        let outer = options.outer_kustomization();
        acc = builder.run_untracked(&outer, &path, "spec (Kustomization build fields)", acc)?;
    }
    let mut resources = std::mem::take(&mut acc.resources);
    generators::add_hash_suffixes(&mut resources);
    nameref::fix(&mut resources, &acc.config.name_reference, &root_file)?;
    vars::resolve(
        &acc.vars,
        &mut resources,
        &acc.config.var_reference,
        &root_file,
    )?;
    sort::sort(&mut resources, sort_options.as_ref());
    // Objects marked as local configuration (e.g. a replacement source that must not be
    // applied) are dropped from the output, as kustomize does.
    resources.retain(|r| {
        r.obj
            .pointer("/metadata/annotations/config.kubernetes.io~1local-config")
            .and_then(Value::as_str)
            != Some("true")
    });
    let mut out: Vec<Value> = resources.into_iter().map(|r| r.obj).collect();
    builder.finish_metadata(&mut out);
    for o in &mut out {
        drop_empty_annotations(o);
    }
    Ok(out)
}

/// postBuild substitution of `objects` with the variables of `options` (nothing when
/// `options.substitution_enabled` is false).
pub fn substitute_objects(
    objects: Vec<Value>,
    options: &BuildOptions,
) -> Result<Vec<Value>, BuildError> {
    if !options.substitution_enabled {
        return Ok(objects);
    }
    substitute::check_names(&options.substitute)?;
    objects
        .into_iter()
        .map(|o| substitute::substitute(o, &options.substitute, options.strict_substitution))
        .collect()
}

/// kustomize writes no `metadata.annotations` that is null or empty (it clears its own
/// bookkeeping annotations and drops the map when nothing is left), whether the input or a
/// patch had it so.
fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let empty = match meta.get("annotations") {
            Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
}
