//! Hostile and malformed build inputs: each must fail with a typed error naming the file (and,
//! for YAML, the line), quickly and in bounded memory. Needs no cluster and no kubectl.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gitops_conformance::kustomize_corpus::{Scratch, write_tree};
use gitops_reconciler::build::{BuildError, BuildOptions, build};

fn tree(files: &[(&str, &str)]) -> Scratch {
    let s = Scratch::new("bad");
    let map: BTreeMap<String, String> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    write_tree(&s.0, &map);
    s
}

/// Builds the root of `dir`, asserting it fails within a time bound.
fn fails(dir: &Path) -> BuildError {
    fails_with(dir, &BuildOptions::default())
}

fn fails_with(dir: &Path, options: &BuildOptions) -> BuildError {
    let start = Instant::now();
    let result = build(dir, options);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    match result {
        Ok(objs) => panic!("expected an error, got {} objects", objs.len()),
        Err(e) => e,
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";

#[test]
fn resource_escaping_the_root_is_refused() {
    let t = tree(&[("app/kustomization.yaml", "resources:\n- ../../etc/passwd\n")]);
    let e = fails_with(
        &t.0,
        &BuildOptions {
            path: "app".into(),
            ..Default::default()
        },
    );
    assert!(
        matches!(&e, BuildError::EscapesRoot { file, path } if file == "app/kustomization.yaml" && path == "../../etc/passwd"),
        "{e}"
    );
}

#[test]
fn absolute_paths_are_refused() {
    let t = tree(&[("kustomization.yaml", "resources:\n- /etc/passwd\n")]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::EscapesRoot { path, .. } if path == "/etc/passwd"),
        "{e}"
    );
}

#[test]
fn patch_and_generator_files_escaping_the_root_are_refused() {
    let t = tree(&[
        (
            "a/kustomization.yaml",
            "resources: [cm.yaml]\npatches:\n- path: ../../secret.yaml\n",
        ),
        ("a/cm.yaml", CM),
    ]);
    let e = fails_with(
        &t.0,
        &BuildOptions {
            path: "a".into(),
            ..Default::default()
        },
    );
    assert!(
        matches!(&e, BuildError::EscapesRoot { file, .. } if file == "a/kustomization.yaml"),
        "{e}"
    );
    let t = tree(&[(
        "kustomization.yaml",
        "configMapGenerator:\n- name: x\n  files:\n  - ../outside.txt\n",
    )]);
    assert!(matches!(fails(&t.0), BuildError::EscapesRoot { .. }));
    let t = tree(&[(
        "kustomization.yaml",
        "configMapGenerator:\n- name: x\n  envs:\n  - /etc/environment\n",
    )]);
    assert!(matches!(fails(&t.0), BuildError::EscapesRoot { .. }));
}

#[test]
fn spec_path_escaping_the_root_is_refused() {
    let t = tree(&[("kustomization.yaml", "resources: []\n")]);
    let e = fails_with(
        &t.0,
        &BuildOptions {
            path: "../..".into(),
            ..Default::default()
        },
    );
    assert!(matches!(e, BuildError::EscapesRoot { .. }), "{e}");
}

#[test]
fn symlinks_are_not_followed() {
    let t = tree(&[
        ("kustomization.yaml", "resources:\n- link.yaml\n"),
        ("real.yaml", CM),
    ]);
    std::os::unix::fs::symlink("/etc/passwd", t.0.join("link.yaml")).expect("symlink");
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::Symlink { path, .. } if path == "link.yaml"),
        "{e}"
    );
    // A symlinked directory too, even pointing inside the tree.
    let t = tree(&[
        ("kustomization.yaml", "resources:\n- dirlink\n"),
        ("real/kustomization.yaml", "resources: []\n"),
    ]);
    std::os::unix::fs::symlink(t.0.join("real"), t.0.join("dirlink")).expect("symlink");
    assert!(matches!(fails(&t.0), BuildError::Symlink { .. }));
}

#[test]
fn cycles_between_kustomizations_are_reported() {
    let t = tree(&[
        ("a/kustomization.yaml", "resources: [../b]\n"),
        ("b/kustomization.yaml", "resources: [../c]\n"),
        ("c/kustomization.yaml", "resources: [../a]\n"),
    ]);
    let e = fails_with(
        &t.0,
        &BuildOptions {
            path: "a".into(),
            ..Default::default()
        },
    );
    match &e {
        BuildError::Cycle { file, chain } => {
            assert_eq!(file, "c/kustomization.yaml");
            assert_eq!(chain, "a -> b -> c -> a");
        }
        other => panic!("expected a cycle, got {other}"),
    }
}

#[test]
fn absurd_depth_is_refused() {
    let mut files = Vec::new();
    for i in 0..200 {
        files.push((
            format!("d{i}/kustomization.yaml"),
            format!("resources: [../d{}]\n", i + 1),
        ));
    }
    files.push(("d200/kustomization.yaml".into(), "resources: []\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let t = tree(&refs);
    let e = fails_with(
        &t.0,
        &BuildOptions {
            path: "d0".into(),
            ..Default::default()
        },
    );
    assert!(
        matches!(&e, BuildError::TooLarge { what, .. } if what.contains("depth")),
        "{e}"
    );
}

#[test]
fn duplicate_object_ids_are_refused() {
    let t = tree(&[
        ("kustomization.yaml", "resources: [a.yaml, b.yaml]\n"),
        ("a.yaml", CM),
        ("b.yaml", CM),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::DuplicateId { file, id } if file == "b.yaml" && id.contains("ConfigMap a")),
        "{e}"
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let t = tree(&[
        ("kustomization.yaml", "resources: [bad.yaml]\n"),
        (
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: [unclosed\n  j: v\n",
        ),
    ]);
    let e = fails(&t.0);
    match &e {
        BuildError::Yaml { file, line, .. } => {
            assert_eq!(file, "bad.yaml");
            assert!(line.is_some_and(|l| (6..=8).contains(&l)), "line {line:?}");
        }
        other => panic!("expected a YAML error, got {other}"),
    }
    assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    // A broken kustomization file names itself.
    let t = tree(&[("kustomization.yaml", "resources:\n  - a\n - b\n")]);
    let e = fails(&t.0);
    assert_eq!(e.file(), Some("kustomization.yaml"), "{e}");
}

#[test]
fn alias_bombs_fail_fast() {
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("  a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    let t = tree(&[
        ("kustomization.yaml", "resources: [bomb.yaml]\n"),
        ("bomb.yaml", &bomb),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::Yaml { file, .. } if file == "bomb.yaml"),
        "{e}"
    );
}

#[test]
fn deep_nesting_fails_fast() {
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let t = tree(&[
        ("kustomization.yaml", "resources: [deep.yaml]\n"),
        ("deep.yaml", &deep),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::Yaml { file, .. } if file == "deep.yaml"),
        "{e}"
    );
}

#[test]
fn huge_documents_are_refused_before_parsing() {
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  k: \"{}\"\n",
        "x".repeat(50 << 20)
    );
    let t = tree(&[
        ("kustomization.yaml", "resources: [big.yaml]\n"),
        ("big.yaml", &big),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::TooLarge { file, .. } if file == "big.yaml"),
        "{e}"
    );
}

#[test]
fn too_many_documents_are_refused() {
    let mut many = String::new();
    for i in 0..100_000 {
        many.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"
        ));
    }
    let t = tree(&[
        ("kustomization.yaml", "resources: [many.yaml]\n"),
        ("many.yaml", &many),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::TooLarge { file, what, .. } if file == "many.yaml" && what.contains("documents")),
        "{e}"
    );
}

#[test]
fn unknown_kustomization_fields_are_errors() {
    let t = tree(&[("kustomization.yaml", "resources: []\nnamePrefx: typo-\n")]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::InvalidKustomization { file, message } if file == "kustomization.yaml" && message.contains("namePrefx")),
        "{e}"
    );
}

#[test]
fn non_utf8_files_name_the_line() {
    let t = tree(&[("kustomization.yaml", "resources: [bin.yaml]\n")]);
    std::fs::write(
        t.0.join("bin.yaml"),
        b"apiVersion: v1\nkind: ConfigMap\n\xff\xfe\n",
    )
    .expect("write");
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::NotUtf8 { file, line } if file == "bin.yaml" && *line == 3),
        "{e}"
    );
}

#[test]
fn remote_bases_helm_and_functions_are_refused_by_name() {
    const EXEC: &str = "apiVersion: someteam.example.com/v1\nkind: Gen\nmetadata:\n  name: g\n";
    const FN: &str = "apiVersion: example.com/v1\nkind: Setter\nmetadata:\n  name: s\n  \
                      annotations:\n    config.kubernetes.io/function: |\n      container:\n        \
                      image: example.com/setter:v1\n";
    const BUILTIN: &str = "apiVersion: builtin\nkind: LabelTransformer\nmetadata:\n  name: l\n";
    for (k, feature, reason) in [
        (
            "resources:\n- https://github.com/org/repo//deploy?ref=v1\n",
            "remote resources",
            "only read the source artifact",
        ),
        (
            "resources:\n- github.com/org/repo/deploy?ref=main\n",
            "remote resources",
            "only read the source artifact",
        ),
        (
            "resources:\n- git@github.com:org/repo.git\n",
            "remote resources",
            "only read the source artifact",
        ),
        (
            "components:\n- https://example.com/comp\n",
            "remote components",
            "only read the source artifact",
        ),
        (
            "helmCharts:\n- name: nginx\n  repo: https://charts.example.com\n",
            "helmCharts",
            "runs the helm program",
        ),
        (
            "generators:\n- gen.yaml\n",
            "generators",
            "exec or Go plugin",
        ),
        (
            "transformers:\n- fn.yaml\n",
            "transformers",
            "is a KRM function",
        ),
        (
            "validators:\n- builtin.yaml\n",
            "validators",
            "not one of kustomize's built-in",
        ),
        (
            "configMapGenerator:\n- name: x\n  kvSources:\n  - pluginType: go\n",
            "kvSources",
            "plugins",
        ),
    ] {
        let t = tree(&[
            ("kustomization.yaml", k),
            ("gen.yaml", EXEC),
            ("fn.yaml", FN),
            ("builtin.yaml", BUILTIN),
        ]);
        let e = fails(&t.0);
        match &e {
            BuildError::Unsupported {
                file,
                feature: f,
                detail,
            } => {
                assert_eq!(file, "kustomization.yaml", "{k}");
                assert_eq!(*f, feature, "{k}");
                assert!(detail.contains(reason), "{k}: {detail}");
                assert!(!detail.contains("would run code"), "{k}: {detail}");
            }
            other => panic!("{k}: expected Unsupported, got {other}"),
        }
    }
}

#[test]
fn empty_kustomization_is_an_error() {
    for k in [
        "",
        "# nothing\n",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
        "resources:\nnamePrefix: \"\"\n",
    ] {
        let t = tree(&[("kustomization.yaml", k)]);
        let e = fails(&t.0);
        assert!(
            matches!(&e, BuildError::EmptyKustomization { file } if file == "kustomization.yaml"),
            "{k:?}: {e}"
        );
        assert!(e.to_string().contains("empty"), "{e}");
    }
    // An explicit empty list is a kustomization that builds nothing (kustomize agrees).
    let t = tree(&[("kustomization.yaml", "resources: []\n")]);
    assert_eq!(
        build(&t.0, &BuildOptions::default()).expect("builds"),
        Vec::<serde_json::Value>::new()
    );
}

#[test]
fn duplicate_keys_in_a_resource_name_the_key_and_line() {
    let t = tree(&[
        ("kustomization.yaml", "resources:\n- cm.yaml\n"),
        (
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: {}\ndata: {}\n",
        ),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::Yaml { file, line: Some(6), message } if file == "cm.yaml" && message.contains("\"data\" already defined")),
        "{e}"
    );
}

#[test]
fn a_component_must_be_a_component() {
    let t = tree(&[
        ("kustomization.yaml", "components: [c]\n"),
        ("c/kustomization.yaml", "resources: []\n"),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::InvalidKustomization { file, .. } if file == "c/kustomization.yaml"),
        "{e}"
    );
}

#[test]
fn missing_files_are_named() {
    let t = tree(&[("kustomization.yaml", "resources: [gone.yaml]\n")]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::NotFound { file, path } if file == "kustomization.yaml" && path == "gone.yaml"),
        "{e}"
    );
}

#[test]
fn strict_substitution_names_the_object() {
    let t = tree(&[(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: ns\ndata:\n  url: https://${HOST}/x\n",
    )]);
    let opts = BuildOptions {
        substitution_enabled: true,
        strict_substitution: true,
        ..Default::default()
    };
    let e = fails_with(&t.0, &opts);
    match &e {
        BuildError::Substitution { object, message } => {
            assert!(object.contains("ConfigMap ns/app"), "{object}");
            assert!(message.contains("HOST"), "{message}");
        }
        other => panic!("expected a substitution error, got {other}"),
    }
}

#[test]
fn substitution_forms_and_opt_out() {
    let t = tree(&[(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: ${A}\n  b: ${B:=dflt}\n  c: ${C:-other}\n  d: $${A}\n  e: ${UNSET}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  a: ${A}\n",
    )]);
    let opts = BuildOptions {
        substitution_enabled: true,
        substitute: [("A".to_string(), "one".to_string())].into(),
        ..Default::default()
    };
    let out = build(&t.0, &opts).expect("builds");
    let app = out
        .iter()
        .find(|o| o["metadata"]["name"] == "app")
        .expect("app");
    // An unset variable becomes empty text, so `e: ${UNSET}` reads back as null — as in Flux,
    // which substitutes in the object's YAML.
    assert_eq!(
        app["data"],
        serde_json::json!({"a": "one", "b": "dflt", "c": "other", "d": "${A}", "e": null})
    );
    let raw = out
        .iter()
        .find(|o| o["metadata"]["name"] == "raw")
        .expect("raw");
    assert_eq!(raw["data"]["a"], "${A}");
}

#[test]
fn namespace_moving_two_objects_onto_one_id_is_refused() {
    let t = tree(&[
        (
            "kustomization.yaml",
            "namespace: one\nresources: [cms.yaml]\n",
        ),
        (
            "cms.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: same\n  namespace: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: same\n  namespace: b\n",
        ),
    ]);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::DuplicateId { file, .. } if file == "kustomization.yaml"),
        "{e}"
    );
}

/// The types of a `crds` file: `App` whose `spec` is `Spec`, with `extra` as Spec's property.
fn crds_tree(extra: &str) -> Scratch {
    let types = format!(
        "x.v1.App:\n  Schema:\n    properties:\n      apiVersion: {{}}\n      kind: {{}}\n      \
         metadata: {{}}\n      spec:\n        $ref: x.v1.Spec\nx.v1.Spec:\n  Schema:\n    \
         properties:\n{extra}"
    );
    crds_file(&types)
}

/// A kustomization of one ConfigMap with `types` as its `crds` file.
fn crds_file(types: &str) -> Scratch {
    tree(&[
        (
            "kustomization.yaml",
            "crds:\n- types.yaml\nresources:\n- cm.yaml\n",
        ),
        ("types.yaml", types),
        ("cm.yaml", CM),
    ])
}

#[test]
fn crds_files_that_cannot_be_followed_are_refused_by_name() {
    // A type containing itself has no end (kustomize never finishes it).
    let t = crds_tree("      child:\n        $ref: x.v1.Spec\n");
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::InvalidKustomization { file, message }
            if file == "types.yaml" && message.contains("refers to itself")),
        "{e}"
    );
    // Not a map of definitions.
    let t = crds_file("- a\n- b\n");
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::InvalidKustomization { file, .. } if file == "types.yaml"),
        "{e}"
    );
}

#[test]
fn crds_files_whose_refs_fan_out_are_bounded() {
    // Each level refers to the next twice: 2^40 paths, cut off by the walk limit.
    let mut types = String::from(
        "x.v1.App:\n  Schema:\n    properties:\n      apiVersion: {}\n      kind: {}\n      \
         metadata: {}\n      spec:\n        $ref: x.v1.L0\n",
    );
    for i in 0..40 {
        types.push_str(&format!(
            "x.v1.L{i}:\n  Schema:\n    properties:\n      a:\n        $ref: x.v1.L{n}\n      \
             b:\n        $ref: x.v1.L{n}\n",
            n = i + 1
        ));
    }
    let t = crds_file(&types);
    let e = fails(&t.0);
    assert!(
        matches!(&e, BuildError::TooLarge { file, .. } if file == "types.yaml"),
        "{e}"
    );
}
