//! Build-engine bench: an overlay producing 4,000 objects (1,000 apps × Deployment, Service,
//! ConfigMap, ServiceAccount) with namespace, namePrefix, labels, an image override and a JSON
//! 6902 patch over every Deployment, built by the native engine and by `kubectl kustomize` in the
//! same run. Asserts identical output, prints the speed-up (goal ≥ 50×), the engine's peak RSS
//! (goal < 200 MiB, measured in a child process) and builds/s for a 10-object overlay.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_conformance::kustomize_corpus::{self, Scratch, compare, write_tree};
use gitops_reconciler::build::{BuildOptions, build};

const APPS: usize = 1000;

fn app(i: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  labels:
    app: app-{i}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: app-{i}
  template:
    metadata:
      labels:
        app: app-{i}
    spec:
      serviceAccountName: app-{i}
      containers:
      - name: main
        image: registry.example.com/team/app:1.0.{i}
        ports:
        - containerPort: 8080
        envFrom:
        - configMapRef:
            name: app-{i}
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: app-{i}
spec:
  selector:
    app: app-{i}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-{i}
data:
  LOG_LEVEL: info
  INDEX: "{i}"
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app-{i}
"#
    )
}

const OVERLAY: &str = r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../base
namespace: bench
namePrefix: prod-
commonLabels:
  env: prod
images:
- name: registry.example.com/team/app
  newTag: "2.0"
patches:
- target:
    kind: Deployment
  patch: |-
    - op: replace
      path: /spec/replicas
      value: 3
    - op: add
      path: /spec/template/metadata/annotations
      value:
        bench: "true"
"#;

fn large_tree(dir: &Path) {
    let mut files = BTreeMap::new();
    let mut resources = String::from("resources:\n");
    for i in 0..APPS {
        files.insert(format!("base/app-{i}.yaml"), app(i));
        resources.push_str(&format!("- app-{i}.yaml\n"));
    }
    files.insert("base/kustomization.yaml".to_string(), resources);
    files.insert(
        "overlay/kustomization.yaml".to_string(),
        OVERLAY.to_string(),
    );
    write_tree(dir, &files);
}

fn small_tree(dir: &Path) {
    let mut files = BTreeMap::new();
    files.insert(
        "base/apps.yaml".to_string(),
        format!("{}---\n{}", app(1), app(2)),
    );
    files.insert(
        "base/kustomization.yaml".to_string(),
        "resources: [apps.yaml]\nconfigMapGenerator:\n- name: settings\n  literals: [a=1]\nsecretGenerator:\n- name: creds\n  literals: [p=x]\n".to_string(),
    );
    files.insert(
        "overlay/kustomization.yaml".to_string(),
        OVERLAY.to_string(),
    );
    write_tree(dir, &files);
}

fn opts() -> BuildOptions {
    BuildOptions {
        path: "overlay".into(),
        ..Default::default()
    }
}

/// Child mode: one build of the large tree, then print the peak RSS (VmHWM) in KiB.
fn child(root: &Path) {
    let out = build(root, &opts()).expect("engine builds the bench tree");
    assert_eq!(out.len(), APPS * 4);
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("VmHWM line");
    println!("VMHWM_KIB {hwm}");
}

fn main() {
    if let Some(root) = std::env::var_os("GITOPS_BUILD_BENCH_CHILD") {
        child(Path::new(&root));
        return;
    }
    kustomize_corpus::require_kubectl();
    let scratch = Scratch::new("bench");
    large_tree(&scratch.0);

    // kubectl kustomize, once (it takes long).
    let t = Instant::now();
    let expected = kustomize_corpus::kubectl_kustomize(&scratch.0.join("overlay"))
        .expect("kubectl kustomize builds the bench tree");
    let kubectl_time = t.elapsed();

    // The engine: warm-up plus the median of a few runs.
    let actual = build(&scratch.0, &opts()).expect("engine builds the bench tree");
    assert_eq!(actual.len(), APPS * 4, "4,000 objects expected");
    if let Some(diff) = compare(&expected, &actual) {
        panic!("engine output differs from kubectl kustomize: {diff}");
    }
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let out = build(&scratch.0, &opts()).expect("builds");
            assert_eq!(out.len(), APPS * 4);
            t.elapsed()
        })
        .collect();
    times.sort();
    let engine_time = times[times.len() / 2];
    let ratio = kubectl_time.as_secs_f64() / engine_time.as_secs_f64();
    println!(
        "build/4000-objects: engine {:.1} ms, kubectl kustomize {:.1} ms, speed-up {:.0}x (goal >= 50x) {}",
        engine_time.as_secs_f64() * 1e3,
        kubectl_time.as_secs_f64() * 1e3,
        ratio,
        if ratio >= 50.0 { "MET" } else { "NOT MET" }
    );

    // Peak RSS of one build, in a fresh process.
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .env("GITOPS_BUILD_BENCH_CHILD", &scratch.0)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kib: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VMHWM_KIB "))
        .and_then(|v| v.trim().parse().ok())
        .expect("child printed VmHWM");
    let mib = kib / 1024.0;
    println!(
        "build/4000-objects peak RSS: {mib:.1} MiB (goal < 200 MiB) {}",
        if mib < 200.0 { "MET" } else { "NOT MET" }
    );

    // Small overlay throughput.
    let small = Scratch::new("bench-small");
    small_tree(&small.0);
    let expected =
        kustomize_corpus::kubectl_kustomize(&small.0.join("overlay")).expect("kubectl builds");
    let got = build(&small.0, &opts()).expect("builds");
    assert_eq!(got.len(), 10);
    if let Some(diff) = compare(&expected, &got) {
        panic!("small overlay differs from kubectl kustomize: {diff}");
    }
    let kt = Instant::now();
    kustomize_corpus::kubectl_kustomize(&small.0.join("overlay")).expect("kubectl builds");
    let kubectl_small = kt.elapsed();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        build(&small.0, &opts()).expect("builds");
        n += 1;
    }
    let per_sec = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "build/10-objects: {per_sec:.0} builds/s (kubectl kustomize: {:.1} builds/s, ratio {:.0}x)",
        1.0 / kubectl_small.as_secs_f64(),
        per_sec * kubectl_small.as_secs_f64()
    );
}
