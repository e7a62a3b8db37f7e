//! Transformer configurations (`configurations:` files): field specs that extend where
//! kustomize's built-in transformers look — name references to custom kinds, extra namespace,
//! label, annotation, image and replica fields, and where vars are substituted. As in
//! kustomize, a kustomization's configuration applies to its own transformers and to those of
//! every kustomization above it (it is merged upward with the resources).

use serde::Deserialize;
use serde_json::Value;

use super::BuildError;
use super::kustomization::FieldSpec;
use super::kustomization::nullable;
use super::loader::Loader;
use super::resource::ResId;
use super::sort;

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

/// kustomize's `TransformerConfig`. Most lists hold only what users add to the built-in
/// defaults (those live with each transformer); the name prefix/suffix lists are kustomize's
/// whole lists, defaults included, because a configured name field can displace the default
/// one (see `merge_name_specs`). Unknown keys are ignored, as kustomize does.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransformerConfig {
    /// Where `namePrefix` goes, in kustomize's order (it is applied in this order).
    #[serde(default, deserialize_with = "nullable")]
    pub name_prefix: Vec<FieldSpec>,
    /// Where `nameSuffix` goes, in kustomize's order.
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

/// kustomize's merge of name field specs: a spec is dropped when one already there has its
/// path and matches at least its group, version and kind (so a configured `metadata/name` for
/// some kind, once sorted before the default, makes the default's entry for every kind
/// redundant); the result is ordered by kind rank, then group/version/kind with unset parts
/// last, as kustomize sorts every merged configuration.
fn merge_name_specs(into: &mut Vec<FieldSpec>, from: &[FieldSpec]) {
    let covers = |e: &FieldSpec, x: &FieldSpec| {
        let part = |want: &Option<String>, have: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| w.is_empty() || Some(w) == have.as_deref())
        };
        e.path == x.path
            && part(&x.group, &e.group)
            && part(&x.version, &e.version)
            && part(&x.kind, &e.kind)
    };
    for x in from {
        if !into.iter().any(|e| covers(e, x)) {
            into.push(x.clone());
        }
    }
    let part = |s: &Option<String>| s.clone().unwrap_or_default();
    into.sort_by_cached_key(|f| sort::gvk_key(&part(&f.group), &part(&f.version), &part(&f.kind)));
}

impl TransformerConfig {
    /// kustomize's defaults for the name fields: `metadata/name` of every kind. Every
    /// kustomization level merges them with its own configuration.
    pub fn with_default_name_fields() -> TransformerConfig {
        let name = vec![FieldSpec {
            path: "metadata/name".into(),
            ..Default::default()
        }];
        TransformerConfig {
            name_prefix: name.clone(),
            name_suffix: name,
            ..Default::default()
        }
    }

    /// Adds another configuration (duplicates are dropped, so a base reached twice through a
    /// diamond does not apply its fields twice).
    pub fn merge(&mut self, o: &TransformerConfig) {
        merge_name_specs(&mut self.name_prefix, &o.name_prefix);
        merge_name_specs(&mut self.name_suffix, &o.name_suffix);
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
        load_each(loader, dir, file, paths, |rel, docs| {
            let mut out = TransformerConfig::default();
            for doc in docs {
                let c: TransformerConfig =
                    serde_json::from_value(doc).map_err(|e| BuildError::InvalidKustomization {
                        file: rel.to_string(),
                        message: format!("invalid transformer configuration: {e}"),
                    })?;
                out.merge(&c);
            }
            Ok(out)
        })
    }
}

/// The OpenAPI extensions of a `crds` file's property that add it to a transformer's fields.
const X_ANNOTATION: &str = "x-kubernetes-annotation";
const X_LABEL_SELECTOR: &str = "x-kubernetes-label-selector";
const X_IDENTITY: &str = "x-kubernetes-identity";
const X_REF_VERSION: &str = "x-kubernetes-object-ref-api-version";
const X_REF_KIND: &str = "x-kubernetes-object-ref-kind";
const X_REF_NAME_KEY: &str = "x-kubernetes-object-ref-name-key";

/// One `crds` file: OpenAPI definitions keyed by Go type name (`<package>.<Kind>`), each
/// `{Schema, Dependencies}` as kustomize reads them.
struct CrdWalk<'a> {
    defs: &'a serde_json::Map<String, Value>,
    file: &'a str,
    steps: usize,
    max_steps: usize,
    max_depth: usize,
    out: TransformerConfig,
}

/// A key of `m` matched without regard to case (Go's JSON decoding into struct fields, and
/// the OpenAPI library's lower-cased extension names).
fn get_ci<'v>(m: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl<'a> CrdWalk<'a> {
    fn invalid(&self, message: String) -> BuildError {
        BuildError::InvalidKustomization {
            file: self.file.to_string(),
            message: format!("unable to parse open API definition: {message}"),
        }
    }

    /// The `Schema.properties` of the definition `name`, if it is defined.
    fn properties(
        &self,
        name: &str,
    ) -> Result<Option<&'a serde_json::Map<String, Value>>, BuildError> {
        let defs: &'a serde_json::Map<String, Value> = self.defs;
        let Some(def) = defs.get(name) else {
            return Ok(None);
        };
        let def = def
            .as_object()
            .ok_or_else(|| self.invalid(format!("'{name}' is not a map")))?;
        let props = get_ci(def, "Schema")
            .and_then(Value::as_object)
            .and_then(|s| s.get("properties"));
        match props {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(p)) => Ok(Some(p)),
            Some(_) => Err(self.invalid(format!("'{name}': properties is not a map"))),
        }
    }

    /// Adds the fields of the type `name` (reached at `path` inside objects of `kind`),
    /// following `$ref`s of properties. `chain` holds the types being walked: a type that
    /// contains itself is an error (kustomize never finishes such a walk).
    fn walk(
        &mut self,
        kind: &str,
        name: &str,
        path: &mut Vec<String>,
        chain: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        let Some(props) = self.properties(name)? else {
            return Ok(());
        };
        if chain.iter().any(|c| c == name) {
            return Err(self.invalid(format!(
                "the type '{name}' refers to itself (through {})",
                chain.join(" -> ")
            )));
        }
        if chain.len() >= self.max_depth {
            return Err(BuildError::TooLarge {
                file: self.file.to_string(),
                what: "$ref nesting in a crds file",
                limit: self.max_depth,
            });
        }
        chain.push(name.to_string());
        for (prop, schema) in props {
            self.steps += 1;
            if self.steps > self.max_steps {
                return Err(BuildError::TooLarge {
                    file: self.file.to_string(),
                    what: "properties visited in a crds file",
                    limit: self.max_steps,
                });
            }
            let Some(schema) = schema.as_object() else {
                continue;
            };
            let ext = |key: &str| get_ci(schema, key).and_then(Value::as_str);
            path.push(prop.clone());
            let spec = |p: &[String]| FieldSpec {
                kind: Some(kind.to_string()),
                path: p.join("/"),
                ..Default::default()
            };
            if ext(X_ANNOTATION).is_some() {
                let s = spec(path);
                self.out.merge(&TransformerConfig {
                    common_annotations: vec![s],
                    ..Default::default()
                });
            }
            if ext(X_LABEL_SELECTOR).is_some() {
                self.out.merge(&TransformerConfig {
                    common_labels: vec![spec(path)],
                    ..Default::default()
                });
            }
            if ext(X_IDENTITY).is_some() {
                self.out.merge(&TransformerConfig {
                    name_prefix: vec![spec(path)],
                    ..Default::default()
                });
            }
            if let (Some(version), Some(target)) = (ext(X_REF_VERSION), ext(X_REF_KIND)) {
                let mut at = path.clone();
                at.push(ext(X_REF_NAME_KEY).unwrap_or("name").to_string());
                self.out.merge(&TransformerConfig {
                    name_reference: vec![NameBackRef {
                        group: None,
                        version: Some(version.to_string()),
                        kind: Some(target.to_string()),
                        field_specs: vec![spec(&at)],
                    }],
                    ..Default::default()
                });
            }
            if let Some(r) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                self.walk(kind, r, path, chain)?;
            }
            path.pop();
        }
        chain.pop();
        Ok(())
    }
}

impl TransformerConfig {
    /// Reads the `crds:` files of one kustomization: OpenAPI definitions (JSON or YAML, keyed
    /// by Go type name) whose properties carry kustomize's `x-kubernetes-*` extensions. Each
    /// definition that looks like an object (has `kind`, `apiVersion` and `metadata`
    /// properties) is walked, following `$ref`s to other definitions of the file; an
    /// `x-kubernetes-object-ref-kind` + `-api-version` property (its `name` key, or the one
    /// `x-kubernetes-object-ref-name-key` names) refers to objects of that kind by name,
    /// `x-kubernetes-annotation` and `-label-selector` properties get common annotations and
    /// common labels, `x-kubernetes-identity` ones are name-prefix fields. The
    /// referring kind is the type name's last dot-separated part.
    pub fn load_crds(
        loader: &Loader<'_>,
        dir: &str,
        file: &str,
        paths: &[String],
    ) -> Result<TransformerConfig, BuildError> {
        load_each(loader, dir, file, paths, |rel, docs| {
            let invalid = |message: String| BuildError::InvalidKustomization {
                file: rel.to_string(),
                message: format!("unable to parse open API definition: {message}"),
            };
            let doc = docs
                .into_iter()
                .next()
                .ok_or_else(|| invalid("the file is empty".into()))?;
            let defs = doc
                .as_object()
                .ok_or_else(|| invalid("expected a map of type names to definitions".into()))?;
            let mut walk = CrdWalk {
                defs,
                file: rel,
                steps: 0,
                max_steps: loader.limits.max_schema_steps,
                max_depth: loader.limits.max_depth,
                out: TransformerConfig::default(),
            };
            for name in defs.keys() {
                let Some(props) = walk.properties(name)? else {
                    continue;
                };
                if !["kind", "apiVersion", "metadata"]
                    .iter()
                    .all(|k| props.contains_key(*k))
                {
                    continue;
                }
                let kind = name.rsplit('.').next().unwrap_or(name);
                walk.walk(kind, name, &mut Vec::new(), &mut Vec::new())?;
            }
            Ok(walk.out)
        })
    }
}

/// Reads each file of `paths` (relative to `dir`, listed in `file`) and merges what `read`
/// makes of its documents.
fn load_each(
    loader: &Loader<'_>,
    dir: &str,
    file: &str,
    paths: &[String],
    read: impl Fn(&str, Vec<Value>) -> Result<TransformerConfig, BuildError>,
) -> Result<TransformerConfig, BuildError> {
    let mut out = TransformerConfig::default();
    for p in paths {
        let rel = loader.resolve(dir, p, file)?;
        let text = loader.read_text(&rel, file)?;
        let docs = super::loader::parse_yaml(&text, &rel, &loader.limits)?;
        out.merge(&read(&rel, docs)?);
    }
    Ok(out)
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
