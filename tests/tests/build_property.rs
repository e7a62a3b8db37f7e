//! Property test: random kustomization layouts assembled from building blocks (resources,
//! generators, bases and overlays, components, namespace, prefixes/suffixes, labels,
//! annotations, images, replicas, strategic-merge and JSON 6902 patches, Flux-style options)
//! are built by the engine and by `kubectl kustomize`; the outputs must be identical.
//!
//! Deterministic: cases come from a seeded generator. `GITOPS_BUILD_PROP_SEED` picks another
//! seed, `GITOPS_BUILD_PROP_CASES` the number of cases (default 40). A failure prints the seed,
//! the case number and the generated tree.

use std::collections::BTreeMap;

use gitops_conformance::kustomize_corpus::{self, CaseOptions, Scratch, compare, write_tree};
use gitops_reconciler::api::kustomization::{CommonMetadata, Image};
use gitops_reconciler::build::build;
use serde_json::{Value, json};

/// xorshift64*: small, deterministic, good enough to pick building blocks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: runner
      containers:
      - name: app
        image: nginx:1.25
        envFrom:
        - configMapRef: {name: settings}
        env:
        - name: PW
          valueFrom:
            secretKeyRef: {name: creds, key: pw}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
";
const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
";
const SA: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: runner\n";
const PVC: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storage: 1Gi}\n";
const RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: ServiceAccount, name: runner}
";
const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: gear\nspec:\n  size: 1\n  parts: [{name: a}]\n";

fn kust(v: Value) -> String {
    let mut v = v;
    if v.get("kind").is_none() {
        v["kind"] = json!("Kustomization");
        v["apiVersion"] = json!("kustomize.config.k8s.io/v1beta1");
    } else {
        v["apiVersion"] = json!("kustomize.config.k8s.io/v1alpha1");
    }
    v.to_string()
}

/// One random layout: files plus Flux-style options.
fn layout(rng: &mut Rng) -> (BTreeMap<String, String>, CaseOptions) {
    let mut files = BTreeMap::new();
    let mut resources = Vec::new();
    for (name, body, pct) in [
        ("deployment.yaml", DEPLOYMENT, 90),
        ("service.yaml", SERVICE, 60),
        ("sa.yaml", SA, 60),
        ("pvc.yaml", PVC, 40),
        ("rbac.yaml", RBAC, 40),
        ("widget.yaml", WIDGET, 30),
    ] {
        if rng.chance(pct) {
            files.insert(format!("base/{name}"), body.to_string());
            resources.push(json!(name));
        }
    }
    let mut base = json!({"resources": resources});
    if rng.chance(70) {
        base["configMapGenerator"] = json!([{"name": "settings", "literals": [format!("MODE={}", rng.pick(&["a", "b", "c<&>"]))]}]);
    }
    if rng.chance(50) {
        base["secretGenerator"] = json!([{"name": "creds", "literals": ["pw=secret"]}]);
    }
    if rng.chance(30) {
        base["namePrefix"] = json!("base-");
    }
    files.insert("base/kustomization.yaml".into(), kust(base));

    let levels = 1 + rng.below(2);
    let mut below = "base".to_string();
    for level in 0..levels {
        let dir = format!("overlay{level}");
        let mut k = json!({"resources": [format!("../{below}")]});
        if rng.chance(40) {
            k["namespace"] = json!(rng.pick(&["dev", "prod", "team-a"]));
        }
        if rng.chance(40) {
            k["namePrefix"] = json!(rng.pick(&["p-", "x-", "long-prefix-"]));
        }
        if rng.chance(30) {
            k["nameSuffix"] = json!(rng.pick(&["-s", "-v2"]));
        }
        if rng.chance(30) {
            k["commonLabels"] = json!({"tier": rng.pick(&["front", "back"])});
        }
        if rng.chance(30) {
            k["labels"] = json!([{"pairs": {"team": "t"}, "includeTemplates": rng.chance(50), "includeSelectors": rng.chance(30)}]);
        }
        if rng.chance(30) {
            k["commonAnnotations"] = json!({"note": rng.pick(&["x", "y z"])});
        }
        if rng.chance(40) {
            k["images"] = json!([{"name": "nginx", "newTag": rng.pick(&["1.26", "1.27"])}]);
        }
        let has_dep = files.contains_key("base/deployment.yaml");
        let mut patches = Vec::new();
        if has_dep && rng.chance(40) {
            patches.push(json!({"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        env:\n        - name: EXTRA\n          value: \"1\"\n"}));
        }
        if has_dep && rng.chance(40) {
            patches.push(json!({"target": {"kind": "Deployment"}, "patch": "- op: replace\n  path: /spec/replicas\n  value: 3\n"}));
        }
        if files.contains_key("base/widget.yaml") && rng.chance(40) {
            patches.push(json!({"patch": "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: gear\nspec:\n  parts: [{name: b}]\n"}));
        }
        if !patches.is_empty() {
            k["patches"] = Value::Array(patches);
        }
        if has_dep && rng.chance(20) {
            k["replicas"] = json!([{"name": "web", "count": 5}]);
        }
        if rng.chance(25) {
            k["configMapGenerator"] =
                json!([{"name": "settings", "behavior": "merge", "literals": ["LEVEL=1"]}]);
            // Merging needs the base generator.
            let b = files
                .get("base/kustomization.yaml")
                .cloned()
                .unwrap_or_default();
            if !b.contains("settings") {
                k.as_object_mut().map(|m| m.remove("configMapGenerator"));
            }
        }
        if rng.chance(25) {
            files.insert(
                format!("{dir}/comp/kustomization.yaml"),
                kust(json!({"kind": "Component", "commonAnnotations": {"component": "on"}, "resources": ["extra.yaml"]})),
            );
            files.insert(
                format!("{dir}/comp/extra.yaml"),
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {x: y}\n"
                    .to_string(),
            );
            k["components"] = json!(["comp"]);
        }
        files.insert(format!("{dir}/kustomization.yaml"), kust(k));
        below = dir;
    }
    let mut options = CaseOptions {
        path: below,
        ..Default::default()
    };
    if rng.chance(30) {
        options.name_prefix = Some("flux-".into());
    }
    if rng.chance(20) {
        options.images = vec![Image {
            name: "nginx".into(),
            new_name: Some("mirror/nginx".into()),
            new_tag: None,
            digest: None,
        }];
    }
    if rng.chance(20) {
        options.common_metadata = Some(CommonMetadata {
            labels: [("owner".to_string(), "flux".to_string())].into(),
            annotations: Default::default(),
        });
    }
    (files, options)
}

#[test]
fn random_layouts_match_kubectl_kustomize() {
    kustomize_corpus::require_kubectl();
    let seed: u64 = std::env::var("GITOPS_BUILD_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_0004);
    let cases: usize = std::env::var("GITOPS_BUILD_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = Rng(seed);
    let mut built = 0;
    for case in 0..cases {
        let (files, options) = layout(&mut rng);
        let scratch = Scratch::new("prop");
        write_tree(&scratch.0, &files);
        let expected = kustomize_corpus::kubectl_build(&scratch.0, &options);
        let actual = build(&scratch.0, &options.to_build_options());
        let dump = || {
            files
                .iter()
                .map(|(p, c)| format!("--- {p}\n{c}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        match (expected, actual) {
            (Ok(e), Ok(a)) => {
                built += 1;
                if let Some(diff) = compare(&e, &a) {
                    panic!(
                        "seed {seed} case {case}: {diff}\noptions: {options:?}\n{}",
                        dump()
                    );
                }
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!(
                "seed {seed} case {case}: engine fails: {e}\noptions: {options:?}\n{}",
                dump()
            ),
            (Err(e), Ok(_)) => panic!(
                "seed {seed} case {case}: kubectl fails ({e}), engine builds\noptions: {options:?}\n{}",
                dump()
            ),
        }
    }
    assert!(
        built * 2 >= cases,
        "only {built} of {cases} random layouts built; the generator is broken"
    );
}
