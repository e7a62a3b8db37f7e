//! `generators:`, `transformers:` and `validators:` entries whose documents are kustomize's
//! built-in plugin configurations (`apiVersion: builtin`, e.g. `kind: PatchTransformer`). They
//! are plain YAML interpreted by the same code as the kustomization fields, so they run here
//! exactly like `patches:`, `labels:` and friends — no code is loaded or executed.
//!
//! Everything else in those fields is refused with the reason: a KRM function (a container
//! or an executable named in a `config.kubernetes.io/function` annotation) or an exec/Go
//! plugin would run a program, which builds never do (kustomize inside kubectl refuses
//! them too, having plugins disabled); the Helm inflator runs helm.

use serde::Deserialize;
use serde_json::Value;

use super::BuildError;
use super::generators::{self, GenKind};
use super::kustomization::nullable;
use super::kustomization::{
    FieldSpec, GeneratorArgs, GeneratorOptions, ImageEntry, PatchEntry, PatchOptions,
    ReplacementEntry, ReplicaEntry, Selector,
};
use super::loader::Loader;
use super::resource::Resource;
use super::{fieldspec, patches, replacements, transform};

/// The built-in plugin apiVersion (kustomize's `konfig.BuiltinPluginApiVersion`).
const BUILTIN: &str = "builtin";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// The fields of every supported built-in configuration, read leniently (kustomize ignores
/// fields a plugin does not know).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    metadata: Meta,
    #[serde(default, deserialize_with = "nullable")]
    field_specs: Vec<FieldSpec>,
    // PatchTransformer / PatchJson6902Transformer
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    target: Option<Selector>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    json_op: Option<String>,
    // PatchStrategicMergeTransformer
    #[serde(default, deserialize_with = "nullable")]
    paths: Vec<String>,
    #[serde(default)]
    patches: Option<String>,
    // Prefix/Suffix
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    // Label/Annotations
    #[serde(default, deserialize_with = "nullable")]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    annotations: std::collections::BTreeMap<String, String>,
    // ImageTag / ReplicaCount / Replacement
    #[serde(default)]
    image_tag: Option<ImageEntry>,
    #[serde(default)]
    replica: Option<ReplicaEntry>,
    #[serde(default, deserialize_with = "nullable")]
    replacements: Vec<ReplacementEntry>,
    // Namespace
    #[serde(default)]
    unset_only: bool,
    #[serde(default)]
    set_role_binding_subjects: Option<String>,
}

fn kind_of(doc: &Value) -> (&str, &str) {
    (
        doc.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
        doc.get("kind").and_then(Value::as_str).unwrap_or(""),
    )
}

/// Why a non-built-in document cannot run, naming the field.
fn refusal(field: &'static str, file: &str, doc: &Value) -> BuildError {
    let (api_version, kind) = kind_of(doc);
    let function = doc
        .pointer("/metadata/annotations/config.kubernetes.io~1function")
        .is_some();
    let detail = if function {
        format!(
            "{api_version}/{kind} is a KRM function: it runs a container or an executable, and \
             builds never run programs"
        )
    } else if kind == "HelmChartInflationGenerator" {
        "inflating a Helm chart runs the helm program; Flux refuses it too (use a HelmRelease)"
            .to_string()
    } else if api_version == BUILTIN {
        format!("'{kind}' is not one of kustomize's built-in plugins")
    } else {
        format!(
            "{api_version}/{kind} is an exec or Go plugin: it runs a program, and builds never \
             run programs (kubectl kustomize refuses it too)"
        )
    };
    BuildError::Unsupported {
        file: file.to_string(),
        feature: field,
        detail,
    }
}

fn parse(doc: &Value, file: &str) -> Result<Config, BuildError> {
    serde_json::from_value(doc.clone()).map_err(|e| BuildError::InvalidKustomization {
        file: file.to_string(),
        message: format!("{}: {e}", kind_of(doc).1),
    })
}

/// Runs `generators:` documents (ConfigMapGenerator, SecretGenerator).
pub(crate) fn generate(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    docs: &[Value],
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    for doc in docs {
        let (api_version, kind) = kind_of(doc);
        let gen_kind = match (api_version, kind) {
            (BUILTIN, "ConfigMapGenerator") => GenKind::ConfigMap,
            (BUILTIN, "SecretGenerator") => GenKind::Secret,
            (BUILTIN, "IAMPolicyGenerator") => {
                resources.push(Resource::new(iam_service_account(doc, file)?));
                continue;
            }
            _ => return Err(refusal("generators", file, doc)),
        };
        let mut fields = doc.clone();
        let meta = parse(doc, file)?.metadata;
        if let Some(m) = fields.as_object_mut() {
            // Plugin configurations are read leniently: fields the generator does not know
            // are ignored.
            m.retain(|k, _| GENERATOR_FIELDS.contains(&k.as_str()));
            // A top-level `name`/`namespace` (the generator arguments) wins over metadata's.
            if !m.contains_key("name") {
                m.insert("name".into(), Value::String(meta.name.unwrap_or_default()));
            }
            if let Some(ns) = meta.namespace.filter(|_| !m.contains_key("namespace")) {
                m.insert("namespace".into(), Value::String(ns));
            }
        }
        let args: GeneratorArgs =
            serde_json::from_value(fields).map_err(|e| BuildError::InvalidKustomization {
                file: file.to_string(),
                message: format!("{kind}: {e}"),
            })?;
        let none: Option<&GeneratorOptions> = None;
        generators::generate(loader, dir, file, gen_kind, &args, none, resources)?;
    }
    Ok(())
}

/// The fields of ConfigMapGenerator/SecretGenerator configurations besides `metadata`.
const GENERATOR_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "behavior",
    "literals",
    "files",
    "envs",
    "env",
    "options",
    "type",
    "kvSources",
];

/// IAMPolicyGenerator (only `cloud: gke` exists): a ServiceAccount annotated with the Google
/// service account it may act as.
fn iam_service_account(doc: &Value, file: &str) -> Result<Value, BuildError> {
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or("");
    if s("/cloud") != "gke" {
        return Err(BuildError::InvalidKustomization {
            file: file.to_string(),
            message: format!(
                "IAMPolicyGenerator: cloud provider '{}' not supported",
                s("/cloud")
            ),
        });
    }
    let mut meta = serde_json::json!({
        "annotations": {
            "iam.gke.io/gcp-service-account": format!(
                "{}@{}.iam.gserviceaccount.com",
                s("/serviceAccount/name"),
                s("/serviceAccount/projectId")
            ),
        },
        "name": s("/kubernetesService/name"),
    });
    if !s("/kubernetesService/namespace").is_empty() {
        meta["namespace"] = Value::String(s("/kubernetesService/namespace").to_string());
    }
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}))
}

/// Runs `transformers:` documents in order.
pub(crate) fn transform(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    docs: &[Value],
    resources: &mut Vec<Resource>,
) -> Result<(), BuildError> {
    for doc in docs {
        let (api_version, kind) = kind_of(doc);
        if api_version != BUILTIN {
            return Err(refusal("transformers", file, doc));
        }
        let c = parse(doc, file)?;
        let options =
            match &c.options {
                Some(o) => Some(serde_json::from_value::<PatchOptions>(o.clone()).map_err(
                    |e| BuildError::InvalidKustomization {
                        file: file.to_string(),
                        message: format!("{kind}: options: {e}"),
                    },
                )?),
                None => None,
            };
        match kind {
            "PatchTransformer" => {
                let entry = PatchEntry {
                    path: c.path,
                    patch: c.patch,
                    target: c.target,
                    options,
                };
                patches::apply_entries(loader, dir, file, std::slice::from_ref(&entry), resources)?;
            }
            "PatchStrategicMergeTransformer" => {
                let mut entries = c.paths;
                entries.extend(c.patches);
                patches::apply_legacy_smp(loader, dir, file, &entries, resources)?;
            }
            "PatchJson6902Transformer" => {
                let entry = PatchEntry {
                    path: c.path,
                    patch: c.json_op,
                    target: c.target,
                    options: None,
                };
                patches::apply_legacy_json(
                    loader,
                    dir,
                    file,
                    std::slice::from_ref(&entry),
                    resources,
                )?;
            }
            "PrefixTransformer" | "SuffixTransformer" | "PrefixSuffixTransformer" => {
                let prefix = c.prefix.unwrap_or_default();
                let suffix = c.suffix.unwrap_or_default();
                transform::affix(resources, &prefix, &suffix, &c.field_specs);
            }
            "LabelTransformer" | "AnnotationsTransformer" => {
                let pairs = if kind == "LabelTransformer" {
                    &c.labels
                } else {
                    &c.annotations
                };
                for r in resources.iter_mut() {
                    let id = r.id();
                    for f in c.field_specs.iter().filter(|f| f.selects(&id)) {
                        fieldspec::visit_maps(&mut r.obj, &f.path, f.create, &mut |m| {
                            for (k, v) in pairs {
                                m.insert(k.clone(), Value::String(v.clone()));
                            }
                        });
                    }
                }
            }
            "NamespaceTransformer" => {
                let ns = c.metadata.namespace.unwrap_or_default();
                let mode = c.set_role_binding_subjects.as_deref().unwrap_or("");
                let subjects = transform::SubjectMode::parse(mode).ok_or_else(|| {
                    BuildError::InvalidKustomization {
                        file: file.to_string(),
                        message: format!(
                            "NamespaceTransformer: invalid value '{mode}' for \
                             setRoleBindingSubjects: must be one of defaultOnly, none or \
                             allServiceAccounts"
                        ),
                    }
                })?;
                if !ns.is_empty() {
                    let mode = transform::NamespaceMode {
                        unset_only: c.unset_only,
                        subjects,
                    };
                    transform::namespace(resources, &ns, &c.field_specs, mode);
                }
            }
            "ImageTagTransformer" => {
                if let Some(image) = c.image_tag {
                    transform::images(resources, std::slice::from_ref(&image), &c.field_specs);
                }
            }
            "ReplicaCountTransformer" => {
                if let Some(rep) = c.replica {
                    transform::replicas(
                        resources,
                        std::slice::from_ref(&rep),
                        &c.field_specs,
                        file,
                    )?;
                }
            }
            "ReplacementTransformer" => {
                replacements::apply(loader, dir, file, &c.replacements, resources)?;
            }
            _ => return Err(refusal("transformers", file, doc)),
        }
    }
    Ok(())
}

/// Validators: kustomize has no built-in validator, so every entry is a plugin.
pub(crate) fn refuse_validators(file: &str, docs: &[Value]) -> Result<(), BuildError> {
    match docs.first() {
        Some(doc) => Err(refusal("validators", file, doc)),
        None => Ok(()),
    }
}
