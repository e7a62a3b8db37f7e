//! Accumulating a kustomization: its resources (files and nested kustomizations), generators,
//! components, then its transformers in kustomize's order.

use std::collections::HashSet;

use super::BuildError;
use super::config::TransformerConfig;
use super::generators::{self, GenKind};
use super::kustomization::{self, Kustomization, SortOptions};
use super::loader::{self, Loader};
use super::patches;
use super::replacements;
use super::resource::Resource;
use super::transform;
use super::vars::{self, VarEntry};

/// Walks kustomization trees for one build. Holds the chain of directories being built to
/// detect cycles.
pub(crate) struct Builder<'a> {
    pub loader: Loader<'a>,
    stack: Vec<String>,
    objects: usize,
    /// The root's directory when its `buildMetadata` is set: kustomize then tracks origins
    /// and transformer runs during the build, and drops what the list does not ask for at
    /// the end (`finish_metadata`).
    origin_root: Option<String>,
    /// The root's `buildMetadata` options.
    build_metadata: Vec<String>,
}

/// The annotation kustomize records an object's origin in.
pub(crate) const ORIGIN: &str = "config.kubernetes.io/origin";
/// The annotation kustomize records the transformers that ran over an object in.
pub(crate) const TRANSFORMATIONS: &str = "alpha.config.kubernetes.io/transformations";

/// A transformer configuration as kustomize records it (its `Origin` without path/repo):
/// the file it is configured in and its apiVersion, kind and (for `transformers:` entries)
/// name and namespace.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TransformerOrigin<'a> {
    configured_in: String,
    configured_by: ConfiguredBy<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfiguredBy<'a> {
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
}

/// Records one transformer run over every object, as kustomize does after each transformer
/// (whether or not it changed the object): appended to the object's transformation list, or
/// taken as the object's origin when it has none (kustomize assumes the transformer made it).
/// A transformations annotation already on an object must be a list of records: kustomize
/// reads it before appending and refuses anything else.
fn note_transformer(
    rs: &mut [Resource],
    origin: &TransformerOrigin<'_>,
    file: &str,
) -> Result<(), BuildError> {
    let (Ok(item), Ok(list)) = (
        crate::yaml::to_string(origin),
        crate::yaml::to_string(&[origin]),
    ) else {
        return Ok(());
    };
    for r in rs {
        let prev = r
            .annotations()
            .and_then(|a| a.get(TRANSFORMATIONS))
            .and_then(serde_json::Value::as_str);
        if let Some(prev) = prev.filter(|p| !p.trim().is_empty()) {
            let is_list = crate::yaml::json_documents(prev).ok().is_some_and(|d| {
                d.len() == 1
                    && d[0]
                        .as_array()
                        .is_some_and(|l| l.iter().all(|x| x.is_object()))
            });
            if !is_list {
                return Err(BuildError::InvalidObject {
                    file: file.to_string(),
                    message: format!(
                        "{}: the annotation {TRANSFORMATIONS} is not a list of transformer \
                         records, so this build cannot append to it",
                        r.id()
                    ),
                });
            }
        }
        let has_origin = r.annotations().is_some_and(|a| a.contains_key(ORIGIN));
        if !has_origin {
            set_origin(r, item.clone());
            continue;
        }
        let Some(ann) = r
            .obj
            .pointer_mut("/metadata/annotations")
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        let text = match ann.get(TRANSFORMATIONS).and_then(serde_json::Value::as_str) {
            Some(prev) if !prev.is_empty() => {
                let sep = if prev.ends_with('\n') { "" } else { "\n" };
                format!("{prev}{sep}{list}")
            }
            _ => list.clone(),
        };
        ann.insert(TRANSFORMATIONS.into(), serde_json::Value::String(text));
    }
    Ok(())
}

/// `to` (a root-relative path) as seen from the directory `from`.
fn relative(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out: Vec<&str> = vec![".."; f.len() - common];
    out.extend(&t[common..]);
    out.join("/")
}

/// Sets the origin annotation (kustomize's YAML rendering of its `Origin`).
fn set_origin(r: &mut Resource, text: String) {
    let meta = super::resource::metadata_mut(&mut r.obj);
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if !ann.is_object() {
        *ann = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(m) = ann.as_object_mut() {
        m.entry(ORIGIN).or_insert(serde_json::Value::String(text));
    }
}

type Key = (String, String, String, String, String);

/// Resources being accumulated plus the ids already taken, and what travels upward with them:
/// transformer configurations and declared vars.
pub(crate) struct Accumulated {
    pub resources: Vec<Resource>,
    keys: HashSet<Key>,
    pub config: TransformerConfig,
    pub vars: Vec<VarEntry>,
}

impl Accumulated {
    pub fn new() -> Self {
        Accumulated {
            resources: Vec::new(),
            keys: HashSet::new(),
            config: TransformerConfig::default(),
            vars: Vec::new(),
        }
    }

    /// Takes in a sub-kustomization's result: its objects (ids must stay unique), its
    /// configuration and its vars (a var name reached twice, even through a diamond of bases,
    /// is an error, as in kustomize).
    fn absorb(&mut self, sub: Accumulated, file: &str) -> Result<(), BuildError> {
        for r in sub.resources {
            self.push(r, file)?;
        }
        self.config.merge(&sub.config);
        for v in sub.vars {
            if self.vars.iter().any(|x| x.name == v.name) {
                return Err(BuildError::Transform {
                    file: file.to_string(),
                    message: format!("var '{}' already encountered", v.name),
                });
            }
            self.vars.push(v);
        }
        Ok(())
    }

    fn push(&mut self, r: Resource, file: &str) -> Result<(), BuildError> {
        let id = r.id();
        if !self.keys.insert(id.key()) {
            return Err(BuildError::DuplicateId {
                file: file.to_string(),
                id: id.to_string(),
            });
        }
        self.resources.push(r);
        Ok(())
    }

    /// Recomputes the ids after transformers; two objects ending up with one id (e.g. a
    /// namespace moving two same-named objects together) is an error, as in kustomize.
    fn rekey(&mut self, file: &str) -> Result<(), BuildError> {
        let mut keys = HashSet::with_capacity(self.resources.len());
        for r in &self.resources {
            let id = r.id();
            if !keys.insert(id.key()) {
                return Err(BuildError::DuplicateId {
                    file: file.to_string(),
                    id: id.to_string(),
                });
            }
        }
        self.keys = keys;
        Ok(())
    }
}

impl<'a> Builder<'a> {
    pub fn new(loader: Loader<'a>) -> Self {
        Builder {
            loader,
            stack: Vec::new(),
            objects: 0,
            origin_root: None,
            build_metadata: Vec::new(),
        }
    }

    /// Reads the kustomization of `dir`. Without a kustomization file, the root of the build
    /// (`generate`) gets one listing its YAML files as Flux generates it; elsewhere it is an
    /// error.
    pub fn load(
        &self,
        dir: &str,
        referrer: &str,
        generate: bool,
    ) -> Result<(Kustomization, String), BuildError> {
        match self.loader.kustomization_file(dir)? {
            Some(file) => {
                let text = self.loader.read_text(&file, referrer)?;
                let k = kustomization::parse(&text, &file)?;
                if k.kind.as_deref() == Some("Component")
                    && k.api_version.as_deref() != Some("kustomize.config.k8s.io/v1alpha1")
                {
                    return Err(BuildError::InvalidKustomization {
                        file,
                        message:
                            "apiVersion for Component should be kustomize.config.k8s.io/v1alpha1"
                                .into(),
                    });
                }
                if let Some(so) = &k.sort_options {
                    let message = match so.order.as_deref() {
                        Some("fifo") if so.legacy_sort_options.is_some() => Some(
                            "the field 'sortOptions.legacySortOptions' is set but the selected \
                             sort order is 'fifo', not 'legacy'",
                        ),
                        Some("fifo" | "legacy") => None,
                        _ => Some("the field 'sortOptions.order' must be one of [fifo, legacy]"),
                    };
                    if let Some(message) = message {
                        return Err(BuildError::InvalidKustomization {
                            file,
                            message: message.into(),
                        });
                    }
                }
                self.load_openapi(&k, dir, &file)?;
                if let Some((field, why)) = k.refused_feature() {
                    return Err(BuildError::Unsupported {
                        file,
                        feature: field,
                        detail: why.to_string(),
                    });
                }
                Ok((k, file))
            }
            None if generate => Ok((
                Kustomization {
                    resources: self.scan(dir)?,
                    ..Default::default()
                },
                loader::join(dir, "kustomization.yaml"),
            )),
            None => Err(BuildError::NotFound {
                file: referrer.to_string(),
                path: format!("{}/kustomization.yaml", loader::display(dir)),
            }),
        }
    }

    /// Flux's generated kustomization: every `.yaml`/`.yml` file below `dir` in walk order,
    /// except that a subdirectory with its own kustomization file is listed as a whole.
    fn scan(&self, dir: &str) -> Result<Vec<String>, BuildError> {
        let mut out = Vec::new();
        self.scan_into(dir, "", &mut out, 0)?;
        Ok(out)
    }

    fn scan_into(
        &self,
        dir: &str,
        prefix: &str,
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), BuildError> {
        if depth > self.loader.limits.max_depth {
            return Err(BuildError::TooLarge {
                file: loader::display(dir).to_string(),
                what: "directory depth",
                limit: self.loader.limits.max_depth,
            });
        }
        for (name, is_dir) in self.loader.list_dir(dir)? {
            let rel = loader::join(dir, &name);
            let shown = loader::join(prefix, &name);
            if is_dir {
                if self.loader.kustomization_file(&rel)?.is_some() {
                    out.push(shown);
                } else {
                    self.scan_into(&rel, &shown, out, depth + 1)?;
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(shown);
            }
        }
        Ok(())
    }

    /// Builds the kustomization in `dir` (a `resources:` entry or the build root).
    pub fn accumulate_dir(
        &mut self,
        dir: &str,
        referrer: &str,
        generate: bool,
    ) -> Result<(Accumulated, Option<SortOptions>), BuildError> {
        if self.stack.iter().any(|d| d == dir) {
            let mut chain: Vec<&str> = self.stack.iter().map(|s| loader::display(s)).collect();
            chain.push(loader::display(dir));
            return Err(BuildError::Cycle {
                file: referrer.to_string(),
                chain: chain.join(" -> "),
            });
        }
        if self.stack.len() >= self.loader.limits.max_depth {
            return Err(BuildError::TooLarge {
                file: referrer.to_string(),
                what: "kustomization nesting depth",
                limit: self.loader.limits.max_depth,
            });
        }
        let (k, file) = self.load(dir, referrer, generate)?;
        // A Component may be the root of a build (kustomize builds it like a kustomization),
        // but not a `resources:` entry.
        if k.kind.as_deref() == Some("Component") && !generate {
            return Err(BuildError::InvalidKustomization {
                file,
                message: "a Component can only be used under 'components', not as a resource"
                    .into(),
            });
        }
        if generate && !k.build_metadata.is_empty() {
            self.origin_root = Some(dir.to_string());
            self.build_metadata = k.build_metadata.clone();
        }
        self.stack.push(dir.to_string());
        let acc = self.run(&k, dir, &file, Accumulated::new())?;
        self.stack.pop();
        Ok((acc, k.sort_options.clone()))
    }

    /// Applies one kustomization (or component) on top of `acc`.
    pub fn run(
        &mut self,
        k: &Kustomization,
        dir: &str,
        file: &str,
        mut acc: Accumulated,
    ) -> Result<Accumulated, BuildError> {
        // 1. resources (and the legacy `bases`).
        for entry in k.resources.iter().chain(k.bases.iter()) {
            if loader::is_remote(entry) {
                return Err(BuildError::Unsupported {
                    file: file.to_string(),
                    feature: "remote resources",
                    detail: format!("'{entry}': builds only read the source artifact"),
                });
            }
            let rel = self.loader.resolve(dir, entry, file)?;
            match self.loader.kind_of(&rel, file)? {
                None => {
                    return Err(BuildError::NotFound {
                        file: file.to_string(),
                        path: entry.clone(),
                    });
                }
                Some(true) => {
                    let (sub, _) = self.accumulate_dir(&rel, file, false)?;
                    acc.absorb(sub, file)?;
                }
                Some(false) => {
                    let text = self.loader.read_input_text(
                        &rel,
                        file,
                        crate::build::InputUse::Resource,
                    )?;
                    let objs = loader::parse_objects(&text, &rel, &self.loader.limits)?;
                    self.objects += objs.len();
                    if self.objects > self.loader.limits.max_objects {
                        return Err(BuildError::TooLarge {
                            file: rel,
                            what: "number of objects in the build",
                            limit: self.loader.limits.max_objects,
                        });
                    }
                    for (o, empty_nulls) in objs {
                        let mut r = Resource::new(o);
                        r.empty_nulls = empty_nulls;
                        r.file = rel.clone();
                        if let Some(root) = &self.origin_root {
                            set_origin(&mut r, format!("path: {}\n", relative(root, &rel)));
                        }
                        let id = r.id();
                        if super::schema::schema()
                            .root(&id.group, &id.version, &id.kind)
                            .is_none()
                        {
                            self.loader.builtin_schema_used.set(true);
                        }
                        acc.push(r, &rel)?;
                    }
                }
            }
        }
        // Transformer configurations apply from this level upward.
        self.merge_configurations(k, dir, file, &mut acc.config)?;
        // 2. generators.
        let global = k.generator_options.as_ref();
        for (kind, list) in [
            (GenKind::ConfigMap, &k.config_map_generator),
            (GenKind::Secret, &k.secret_generator),
        ] {
            for g in list {
                generators::generate(&self.loader, dir, file, kind, g, global, &mut acc.resources)?;
            }
        }
        if let Some(root) = &self.origin_root {
            // Every object without an origin now was generated (or replaced) here.
            for r in &mut acc.resources {
                if r.annotations().is_none_or(|a| !a.contains_key(ORIGIN)) {
                    let kind = r.kind().to_string();
                    set_origin(
                        r,
                        format!(
                            "configuredIn: {}\nconfiguredBy:\n  apiVersion: builtin\n  kind: {kind}Generator\n",
                            relative(root, file)
                        ),
                    );
                }
            }
        }
        let gen_sources = self.plugin_docs(dir, file, &k.generators)?;
        let gen_docs: Vec<serde_json::Value> = gen_sources.iter().map(|(d, _)| d.clone()).collect();
        let n = acc.resources.len();
        super::builtin::generate(&self.loader, dir, file, &gen_docs, &mut acc.resources)?;
        if let Some(root) = self
            .origin_root
            .as_ref()
            .filter(|_| acc.resources.len() - n == gen_docs.len())
        {
            // Built-in generator configurations: the file the configuration is in (the
            // kustomization for an inline one) and the configuration's kind and name.
            for (r, (d, from)) in acc.resources[n..].iter_mut().zip(&gen_sources) {
                let s = |p: &str| {
                    d.pointer(p)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                };
                set_origin(
                    r,
                    format!(
                        "configuredIn: {}\nconfiguredBy:\n  apiVersion: builtin\n  kind: {}\n  name: {}\n",
                        relative(root, from),
                        s("/kind"),
                        s("/metadata/name")
                    ),
                );
            }
        }
        acc.rekey(file)?;
        // 3. components.
        for c in &k.components {
            if loader::is_remote(c) {
                return Err(BuildError::Unsupported {
                    file: file.to_string(),
                    feature: "remote components",
                    detail: format!("'{c}': builds only read the source artifact"),
                });
            }
            let rel = self.loader.resolve(dir, c, file)?;
            if self.loader.kind_of(&rel, file)? != Some(true) {
                return Err(BuildError::NotFound {
                    file: file.to_string(),
                    path: c.clone(),
                });
            }
            if self.stack.contains(&rel) || self.stack.len() >= self.loader.limits.max_depth {
                return Err(BuildError::Cycle {
                    file: file.to_string(),
                    chain: format!("{} -> {}", loader::display(dir), rel),
                });
            }
            let (ck, cfile) = self.load(&rel, file, false)?;
            if ck.kind.as_deref() != Some("Component") {
                return Err(BuildError::InvalidKustomization {
                    file: cfile,
                    message: "listed under 'components' but its kind is not Component".into(),
                });
            }
            self.stack.push(rel.clone());
            acc = self.run(&ck, &rel, &cfile, acc)?;
            self.stack.pop();
        }
        // 4. transformers, in kustomize's order. With origin tracking on, each built-in
        // transformer instance kustomize configures from these fields (one per patch, label
        // entry, image, replica; one for a set namePrefix, ...) is recorded on every object.
        let images: Vec<_> = k
            .images
            .iter()
            .chain(k.image_tags.iter())
            .cloned()
            .collect();
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let label_runs = if k.labels.is_empty() && k.common_labels.is_empty() {
            0
        } else {
            k.labels.len() + 1
        };
        let runs = [
            (
                "PatchStrategicMergeTransformer",
                usize::from(!k.patches_strategic_merge.is_empty()),
            ),
            ("PatchTransformer", k.patches.len()),
            ("NamespaceTransformer", usize::from(set(&k.namespace))),
            ("PrefixTransformer", usize::from(set(&k.name_prefix))),
            ("SuffixTransformer", usize::from(set(&k.name_suffix))),
            ("LabelTransformer", label_runs),
            (
                "AnnotationsTransformer",
                usize::from(!k.common_annotations.is_empty()),
            ),
            ("PatchJson6902Transformer", k.patches_json6902.len()),
            ("ReplicaCountTransformer", k.replicas.len()),
            ("ImageTagTransformer", images.len()),
            (
                "ReplacementTransformer",
                usize::from(!k.replacements.is_empty()),
            ),
        ];
        let cfg = &acc.config;
        let rs = &mut acc.resources;
        patches::apply_legacy_smp(&self.loader, dir, file, &k.patches_strategic_merge, rs)?;
        patches::apply_entries(&self.loader, dir, file, &k.patches, rs)?;
        if let Some(ns) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
            let specs = transform::namespace_specs(&cfg.namespace);
            transform::namespace(rs, ns, &specs, Default::default());
        }
        if let Some(prefix) = k.name_prefix.as_deref().filter(|p| !p.is_empty()) {
            transform::affix(rs, prefix, "", &cfg.name_prefix);
        }
        if let Some(suffix) = k.name_suffix.as_deref().filter(|s| !s.is_empty()) {
            transform::affix(rs, "", suffix, &cfg.name_suffix);
        }
        transform::labels(rs, &k.common_labels, &k.labels, cfg);
        transform::annotations(rs, &k.common_annotations, &cfg.common_annotations);
        patches::apply_legacy_json(&self.loader, dir, file, &k.patches_json6902, rs)?;
        transform::replicas(rs, &k.replicas, &cfg.replicas, file)?;
        transform::images(rs, &images, &cfg.images);
        replacements::apply(&self.loader, dir, file, &k.replacements, rs)?;
        if let Some(root) = &self.origin_root {
            // Recording after the whole sequence gives the same lists as recording after each
            // transformer: a record is appended to every object present, whatever it changed.
            for (kind, n) in runs {
                let origin = TransformerOrigin {
                    configured_in: relative(root, file),
                    configured_by: ConfiguredBy {
                        api_version: "builtin",
                        kind,
                        name: "",
                        namespace: "",
                    },
                };
                for _ in 0..n {
                    note_transformer(rs, &origin, file)?;
                }
            }
        }
        self.run_configured(k, dir, file, &mut acc)?;
        acc.rekey(file)?;
        vars::declare(&k.vars, &mut acc.resources, &mut acc.vars, file)?;
        Ok(acc)
    }
}

impl Builder<'_> {
    /// Merges one level's `configurations` (with the default name fields every level merges,
    /// see `TransformerConfig::name_prefix`) and `crds` into `into`. Kept out of the
    /// recursive `run` so its frame stays small.
    #[inline(never)]
    fn merge_configurations(
        &self,
        k: &Kustomization,
        dir: &str,
        file: &str,
        into: &mut TransformerConfig,
    ) -> Result<(), BuildError> {
        let mut own = TransformerConfig::with_default_name_fields();
        own.merge(&TransformerConfig::load(
            &self.loader,
            dir,
            file,
            &k.configurations,
        )?);
        into.merge(&own);
        into.merge(&TransformerConfig::load_crds(
            &self.loader,
            dir,
            file,
            &k.crds,
        )?);
        Ok(())
    }

    /// Applies a kustomization that is no file of the source (the Kustomization's own build
    /// fields): its transformers are not recorded in origin or transformer annotations.
    pub fn run_untracked(
        &mut self,
        k: &Kustomization,
        dir: &str,
        file: &str,
        acc: Accumulated,
    ) -> Result<Accumulated, BuildError> {
        let root = self.origin_root.take();
        let out = self.run(k, dir, file, acc);
        self.origin_root = root;
        out
    }

    /// Drops the bookkeeping annotations the root's `buildMetadata` does not ask for (kustomize
    /// drops them from every object, also when an input file carried them).
    pub fn finish_metadata(&self, out: &mut [serde_json::Value]) {
        let keep = |opt: &str| self.build_metadata.iter().any(|m| m == opt);
        let drop: Vec<&str> = [
            (ORIGIN, kustomization::ORIGIN_ANNOTATIONS),
            (TRANSFORMATIONS, kustomization::TRANSFORMER_ANNOTATIONS),
        ]
        .into_iter()
        .filter(|(_, opt)| !keep(opt))
        .map(|(a, _)| a)
        .collect();
        for o in out {
            if let Some(ann) = o
                .pointer_mut("/metadata/annotations")
                .and_then(serde_json::Value::as_object_mut)
            {
                for a in &drop {
                    ann.remove(*a);
                }
            }
        }
    }

    /// `openapi: {path: file}`: the schema strategic merges of the kinds it defines use (the
    /// outermost kustomization's, when several set one). `openapi: {version: v1.21.2}` names kustomize's built-in schema (this engine's
    /// merge keys come from a newer one, which agrees for the kinds v1.21 has); other
    /// versions are refused.
    fn load_openapi(&self, k: &Kustomization, dir: &str, file: &str) -> Result<(), BuildError> {
        let Some(o) = k.openapi.as_ref().filter(|o| !o.is_null()) else {
            return Ok(());
        };
        let invalid = |message: String| BuildError::InvalidKustomization {
            file: file.to_string(),
            message,
        };
        let path = o.get("path").and_then(serde_json::Value::as_str);
        if path.is_some() && o.get("version").is_some() {
            return Err(invalid(
                "openapi: builtin version and custom schema provided, cannot use both".into(),
            ));
        }
        // The outermost kustomization is read first, and its choice (a schema file or a
        // built-in version) wins: a base's is ignored under an overlay that made one.
        if self.loader.openapi_chosen.replace(true) {
            return Ok(());
        }
        if let Some(p) = path {
            let rel = self.loader.resolve(dir, p, file)?;
            let text = self.loader.read_text(&rel, file)?;
            let doc = loader::parse_yaml(&text, &rel, &self.loader.limits)?
                .into_iter()
                .next()
                .ok_or_else(|| invalid(format!("openapi: {rel} is empty")))?;
            let builtin = self
                .loader
                .builtin_schema_used
                .get()
                .then(super::schema::schema);
            *self.loader.custom_schema.borrow_mut() =
                Some(std::rc::Rc::new(super::schema::from_openapi(&doc, builtin)));
            return Ok(());
        }
        match o.get("version").and_then(serde_json::Value::as_str) {
            Some("v1.21.2" | "v1_21_2") => Ok(()),
            Some(v) => Err(BuildError::Unsupported {
                file: file.to_string(),
                feature: "openapi",
                detail: format!("built-in schema version '{v}': only v1.21.2 is known"),
            }),
            None => Err(invalid("openapi: expected 'path' or 'version'".into())),
        }
    }

    /// The documents of `generators:`/`transformers:`/`validators:` entries: inline YAML, a
    /// file, or a directory built as a kustomization (as kustomize reads them).
    fn plugin_docs(
        &mut self,
        dir: &str,
        file: &str,
        entries: &[String],
    ) -> Result<Vec<(serde_json::Value, String)>, BuildError> {
        let mut out = Vec::new();
        for e in entries {
            if let Ok(docs) = crate::yaml::json_documents(e)
                && !docs.is_empty()
                && docs.iter().all(|d| d.get("kind").is_some())
            {
                out.extend(docs.into_iter().map(|d| (d, file.to_string())));
                continue;
            }
            if loader::is_remote(e) {
                return Err(BuildError::Unsupported {
                    file: file.to_string(),
                    feature: "remote resources",
                    detail: format!("'{e}': builds only read the source artifact"),
                });
            }
            let rel = self.loader.resolve(dir, e, file)?;
            match self.loader.kind_of(&rel, file)? {
                None => {
                    return Err(BuildError::NotFound {
                        file: file.to_string(),
                        path: e.clone(),
                    });
                }
                Some(true) => {
                    let (sub, _) = self.accumulate_dir(&rel, file, false)?;
                    // Each configuration is recorded as coming from its own file (kustomize's
                    // `configuredIn`); generated ones from the directory's kustomization.
                    let from = loader::join(&rel, "kustomization.yaml");
                    out.extend(sub.resources.into_iter().map(|r| {
                        let f = if r.file.is_empty() {
                            from.clone()
                        } else {
                            r.file
                        };
                        (r.obj, f)
                    }));
                }
                Some(false) => {
                    let text = self.loader.read_text(&rel, file)?;
                    let docs = loader::parse_yaml(&text, &rel, &self.loader.limits)?;
                    out.extend(docs.into_iter().map(|d| (d, rel.clone())));
                }
            }
        }
        Ok(out)
    }

    /// `transformers:` then `validators:` (after the kustomization's own transformers).
    fn run_configured(
        &mut self,
        k: &Kustomization,
        dir: &str,
        file: &str,
        acc: &mut Accumulated,
    ) -> Result<(), BuildError> {
        let docs = self.plugin_docs(dir, file, &k.transformers)?;
        for (doc, from) in &docs {
            super::builtin::transform(
                &self.loader,
                dir,
                file,
                std::slice::from_ref(doc),
                &mut acc.resources,
            )?;
            if let Some(root) = &self.origin_root {
                let s = |p: &str| doc.pointer(p).and_then(serde_json::Value::as_str);
                let origin = TransformerOrigin {
                    configured_in: relative(root, from),
                    configured_by: ConfiguredBy {
                        api_version: s("/apiVersion").unwrap_or(""),
                        kind: s("/kind").unwrap_or(""),
                        name: s("/metadata/name").unwrap_or(""),
                        namespace: s("/metadata/namespace").unwrap_or(""),
                    },
                };
                note_transformer(&mut acc.resources, &origin, file)?;
            }
        }
        let docs: Vec<_> = (self.plugin_docs(dir, file, &k.validators)?)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        super::builtin::refuse_validators(file, &docs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::resource::Resource;

    #[test]
    fn rekey_finds_collisions() {
        let mut acc = Accumulated::new();
        for ns in ["a", "b"] {
            let o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same", "namespace": ns}});
            acc.push(Resource::new(o), "f").expect("distinct");
        }
        crate::build::transform::namespace(&mut acc.resources, "one", &[], Default::default());
        let ids: Vec<_> = acc.resources.iter().map(|r| r.id().key()).collect();
        assert_eq!(ids[0], ids[1]);
        assert!(acc.rekey("k").is_err());
    }
}
