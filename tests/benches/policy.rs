//! Policy pipeline bench: 10,000 mixed objects through the three built-in policies
//! as wasm components in the reconciler's host, against native baselines in the same run.
//! Also: instantiate latency with pooling + pre-instantiation, and how fast a restarted host
//! has a module ready from a warm disk cache.
//!
//! The baseline of the goal is what a user would write natively: the three policies' logic
//! on parsed `serde_json::Value`s, in process, with no JSON text and no contract. A second
//! native figure, for reference, runs exactly the code that is compiled into the components
//! (the SDK's export functions, `gitops_policy_sdk::glue`, with each policy) on the same JSON
//! documents in the host's order, with the same conversions at both ends: the ratio to it is
//! the cost of the sandbox alone (wasm execution, copying across the component boundary, the
//! host's checks of each output), the ratio to the first the whole cost of the contract.
//!
//! Each pipeline is timed from the call to its result in hand; dropping the result (10,000
//! values) is the consumer's work and is printed apart.
//!
//! Prints, per figure: measured, goal, and the ratio to the goal (or to the native baseline).

use gitops_policy_sdk::bindings::kubectl_gitops::policy::types as wit;
use gitops_policy_sdk::object::Identity;
use gitops_policy_sdk::{Object, Policy, PolicyKind, Value, given, glue, json, testing};
use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{HostConfig, ModuleSource, PolicyContext, PolicyHost, PolicyStep};
use std::time::{Duration, Instant};

const OBJECTS: usize = 10_000;
const RUNS: usize = 15;

fn objects() -> Vec<Value> {
    (0..OBJECTS)
        .map(|i| match i % 4 {
            0 => json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("web-{i}"), "labels": {"app": format!("web-{i}"), "tier": "frontend"}},
                "spec": {"replicas": i % 15, "selector": {"matchLabels": {"app": format!("web-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("web-{i}")}},
                        "spec": {"containers": [
                            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                             "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
                            {"name": "sidecar", "image": "redis:7.2", "args": ["--save", ""]}]}}}}),
            1 => json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("web-{i}")},
                "spec": {"type": "ClusterIP", "selector": {"app": format!("web-{i}")}, "ports": [{"port": 80, "targetPort": 80}]}}),
            2 => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("settings-{i}")},
                "data": {"LOG_LEVEL": "info", "FEATURE_X": "true", "GREETING": "hello from the bench"}}),
            _ => json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": format!("db-{i}")},
                "spec": {"replicas": i % 7, "serviceName": format!("db-{i}"),
                    "template": {"spec": {"initContainers": [{"name": "init", "image": "busybox:1.36"}],
                        "containers": [{"name": "db", "image": "postgres:16.4"}]}}}}),
        })
        .collect()
}

fn configs() -> [(&'static str, Value); 3] {
    [
        ("target-namespace", json!({"namespace": "bench"})),
        (
            "image-pinning",
            json!({"allowedRegistries": ["docker.io/library"], "digests": {"redis:7.2": format!("sha256:{}", "a".repeat(64))}}),
        ),
        (
            "replica-bounds",
            json!({"bounds": {"Deployment": {"min": 1, "max": 10}, "StatefulSet": {"max": 5}}, "action": "clamp"}),
        ),
    ]
}

fn steps() -> Vec<PolicyStep> {
    configs()
        .into_iter()
        .map(|(name, config)| PolicyStep {
            name: name.to_owned(),
            module: ModuleSource::Builtin(name.to_owned()),
            config,
            failure_policy: FailurePolicy::Fail,
        })
        .collect()
}

fn wit_context() -> wit::Context {
    wit::Context {
        kustomization_namespace: String::new(),
        kustomization_name: String::new(),
        source_revision: String::new(),
        target_namespace: Some("bench".to_owned()),
        dry_run: false,
    }
}

/// The positions of the objects a policy `P` is given (its declared kinds, as the host reads
/// them from its metadata). The bench's transforms keep every object's kind and place, so the
/// input's kinds hold at every step.
fn given_to<P: Policy>(objects: &[Value]) -> Vec<usize> {
    given::positions(
        P::metadata().kinds.as_deref(),
        objects.iter().map(|o| (o.api_version(), o.kind())),
    )
}

/// `transform` of `P` natively on the documents it is given, spliced back as the host does.
fn native_transform<P: Policy>(objects: &[Value], config: &str, docs: Vec<String>) -> Vec<String> {
    given::transform_given(docs, &given_to::<P>(objects), |sent| {
        glue::transform::<P>(wit_context(), config, sent)
    })
    .expect("transform")
}

/// `validate` of `P` natively on the documents it is given.
fn native_validate<P: Policy>(
    objects: &[Value],
    config: &str,
    docs: &[String],
) -> Vec<gitops_policy_sdk::bindings::kubectl_gitops::policy::types::Violation> {
    let sent = given_to::<P>(objects)
        .into_iter()
        .map(|i| docs[i].clone())
        .collect();
    glue::validate::<P>(wit_context(), config, sent)
}

/// For reference, the components' code natively: the export functions of the three policies
/// on JSON text, in the host's order, each given the objects of its kinds, with the host's
/// conversions at both ends (objects no transform changed are the input values; changed ones
/// are parsed again) and the host's parallelism (input serialised on the rayon pool; the
/// validations side by side, next to reading back).
fn native_exports(objects: Vec<Value>) -> Vec<Value> {
    use gitops_policy_image_pinning::ImagePinning as Ip;
    use gitops_policy_replica_bounds::ReplicaBounds as Rb;
    use gitops_policy_target_namespace::TargetNamespace as Tn;
    use rayon::prelude::*;
    let [(_, tn), (_, ip), (_, rb)] = configs().map(|(n, c)| (n, c.to_string()));
    let input: Vec<String> = objects.par_iter().map(Value::to_string).collect();
    let mut docs = input.clone();
    docs = native_transform::<Tn>(&objects, &tn, docs);
    docs = native_transform::<Ip>(&objects, &ip, docs);
    docs = native_transform::<Rb>(&objects, &rb, docs);
    assert_eq!(
        docs.len(),
        objects.len(),
        "the bench's transforms keep every object"
    );
    let (violations, reread) = rayon::join(
        || {
            let (mut a, b) = rayon::join(
                || native_validate::<Ip>(&objects, &ip, &docs),
                || native_validate::<Rb>(&objects, &rb, &docs),
            );
            a.extend(b);
            a
        },
        || {
            docs.par_iter()
                .zip(input.par_iter())
                .map(|(d, before)| {
                    (d != before).then(|| serde_json::from_str(d).expect("policy output is JSON"))
                })
                .collect::<Vec<Option<Value>>>()
        },
    );
    assert!(violations.is_empty(), "bench objects must pass");
    reread
        .into_iter()
        .zip(objects)
        .map(|(changed, original)| changed.unwrap_or(original))
        .collect()
}

fn native_values<P: Policy>(config: &Value, objects: Vec<Object>) -> Vec<Object> {
    let config = P::parse_config(config).expect("bench config");
    let kind = P::metadata().kind;
    let objects = match kind {
        PolicyKind::Validate => objects,
        _ => P::transform(&testing::context(), &config, objects).expect("transform"),
    };
    if kind != PolicyKind::Transform {
        let violations = P::validate(&testing::context(), &config, &objects);
        assert!(
            violations.is_empty(),
            "bench objects must pass: {violations:?}"
        );
    }
    objects
}

/// The goal's baseline: the three policies' logic on `serde_json::Value`s, no JSON text at
/// all (what a native plugin without the contract would do). Transform-then-validate per
/// policy, which for these policies finds the same as the host's order.
fn native_pipeline(objects: Vec<Value>) -> Vec<Value> {
    let [(_, tn), (_, ip), (_, rb)] = configs();
    let objects = objects.into_iter().map(Object::from).collect();
    let objects = native_values::<gitops_policy_target_namespace::TargetNamespace>(&tn, objects);
    let objects = native_values::<gitops_policy_image_pinning::ImagePinning>(&ip, objects);
    native_values::<gitops_policy_replica_bounds::ReplicaBounds>(&rb, objects)
        .into_iter()
        .map(Object::into_value)
        .collect()
}

/// Medians of `RUNS` runs of `f` and its mean CPU time.
struct Timing {
    /// Wall time from the call to the result in hand.
    wall: Duration,
    /// CPU time (all threads of the process) over the same span, mean per run. The host
    /// spreads large pipelines over two threads, so CPU can exceed wall time.
    cpu: Duration,
    /// Dropping the result afterwards (not part of `wall` or `cpu`: it is its consumer's).
    drop: Duration,
}

/// Runs `f` `RUNS` times, each on a fresh copy of `input`; each result is spot-checked and
/// dropped outside the timed span.
fn time_runs(f: impl Fn(Vec<Value>) -> Vec<Value>, input: &[Value]) -> Timing {
    let mut cpu = Duration::ZERO;
    let mut walls = Vec::with_capacity(RUNS);
    let mut drops = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let objects = input.to_vec();
        let cpu_before = gitops_conformance::cpu_time(std::process::id());
        let t = Instant::now();
        let out = f(objects);
        walls.push(t.elapsed());
        cpu += gitops_conformance::cpu_time(std::process::id()) - cpu_before;
        assert_eq!(out.len(), OBJECTS);
        spot_check(&out);
        let t = Instant::now();
        drop(out);
        drops.push(t.elapsed());
    }
    Timing {
        wall: median(walls),
        cpu: cpu / RUNS as u32,
        drop: median(drops),
    }
}

/// The spot check of the pipeline's output: the first object (Deployment `web-0`, 0 replicas,
/// a redis sidecar) moved into the target namespace, clamped to 1 replica, sidecar pinned.
fn spot_check(objects: &[Value]) {
    let first = &objects[0];
    assert_eq!(first.pointer("/metadata/name"), Some(&json!("web-0")));
    assert_eq!(first.pointer("/metadata/namespace"), Some(&json!("bench")));
    assert_eq!(first.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(
        first.pointer("/spec/template/spec/containers/1/image"),
        Some(&json!(format!("redis@sha256:{}", "a".repeat(64))))
    );
    assert_eq!(
        first.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("nginx:1.27"))
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, measured: String, goal: &str, ratio: f64, pass: bool) {
    println!(
        "{what:<58} measured {measured:>12}   goal {goal:<14} ratio {ratio:>6.2}  {}",
        if pass { "ok" } else { "MISSED" }
    );
}

fn main() {
    let cache = std::env::temp_dir().join(format!("gitops-policy-bench-{}", std::process::id()));
    let config = HostConfig {
        cache_dir: Some(cache.clone()),
        ..HostConfig::default()
    };
    let input = objects();
    let steps = steps();
    let ctx = PolicyContext {
        target_namespace: Some("bench".to_owned()),
        tenancy: Some(Default::default()),
        ..PolicyContext::default()
    };

    // Cold: compile the three components (and fill the disk cache).
    let started = Instant::now();
    let host = PolicyHost::new(config.clone()).expect("host");
    for s in &steps {
        host.load(&s.name, &s.module).expect("built-in loads");
    }
    let cold = started.elapsed();

    // All three pipelines must agree before they are timed.
    let wasm_out = host
        .run_pipeline(&steps, &ctx, input.clone())
        .expect("wasm pipeline")
        .objects;
    assert_eq!(wasm_out.len(), OBJECTS);
    spot_check(&wasm_out);
    assert_eq!(
        wasm_out,
        native_exports(input.clone()),
        "wasm and native pipelines disagree"
    );
    assert_eq!(
        wasm_out,
        native_pipeline(input.clone()),
        "wasm and native pipelines disagree"
    );

    let load_before = gitops_conformance::load_average();
    let wasm = time_runs(
        |objects| {
            host.run_pipeline(&steps, &ctx, objects)
                .expect("wasm pipeline")
                .objects
        },
        &input,
    );
    let native = time_runs(native_exports, &input);
    let values = time_runs(native_pipeline, &input);

    // Instantiate: a fresh instance per call. Measured as instantiate + an empty transform
    // call (an upper bound of instantiation alone).
    let empty_step = &steps[..1];
    let probes: Vec<Duration> = (0..2_000)
        .map(|_| {
            let t = Instant::now();
            host.run_pipeline(empty_step, &ctx, Vec::new())
                .expect("empty call");
            t.elapsed()
        })
        .collect();
    let p50 = percentile(probes.clone(), 0.50);
    let p99 = percentile(probes, 0.99);

    // Restart with a warm disk cache: a new host, modules ready from disk.
    let mut restarts = Vec::new();
    let mut engine_starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let fresh = PolicyHost::new(config.clone()).expect("host");
        engine_starts.push(t.elapsed());
        let t = Instant::now();
        for s in &steps {
            fresh.load(&s.name, &s.module).expect("from disk");
        }
        restarts.push(t.elapsed() / steps.len() as u32);
    }
    let restart = median(restarts);
    let engine_start = median(engine_starts);

    println!(
        "policy bench: {OBJECTS} objects (Deployments, Services, ConfigMaps, StatefulSets), 3 built-ins in sequence, median of {RUNS}"
    );
    println!(
        "load average (1/5/15 min) before the timed runs: {load_before}; after: {}",
        gitops_conformance::load_average()
    );
    report(
        "pipeline, wasm (target-namespace, image-pinning, replica-bounds)",
        format!("{:.1} ms", ms(wasm.wall)),
        "< 150 ms",
        ms(wasm.wall) / 150.0,
        ms(wasm.wall) < 150.0,
    );
    println!(
        "{:<58} CPU per pipeline (all threads, mean) {:.0} ms",
        "",
        ms(wasm.cpu)
    );
    let ratio = wasm.wall.as_secs_f64() / values.wall.as_secs_f64();
    report(
        &format!(
            "wasm / native (native: the logic on Values, {:.1} ms)",
            ms(values.wall)
        ),
        format!("{ratio:.2}x"),
        "<= 3x",
        ratio / 3.0,
        ratio <= 3.0,
    );
    println!(
        "{:<58} CPU: wasm {:.0} ms / native on Values {:.0} ms = {:.2}x",
        "",
        ms(wasm.cpu),
        ms(values.cpu),
        wasm.cpu.as_secs_f64() / values.cpu.as_secs_f64()
    );
    println!(
        "{:<58} for reference: the components' code natively on JSON text {:.1} ms (wasm {:.2}x that; CPU {:.0} ms)",
        "",
        ms(native.wall),
        wasm.wall.as_secs_f64() / native.wall.as_secs_f64(),
        ms(native.cpu)
    );
    println!(
        "{:<58} dropping the result afterwards (not timed above): wasm {:.1} ms, on values {:.1} ms, same code {:.1} ms",
        "",
        ms(wasm.drop),
        ms(values.drop),
        ms(native.drop)
    );
    report(
        "instantiate + empty call, p99 (p50 in parentheses)",
        format!("{:.1} us", p99.as_secs_f64() * 1e6),
        "< 50 us",
        p99.as_secs_f64() * 1e6 / 50.0,
        p99 < Duration::from_micros(50),
    );
    println!("{:<58} p50 {:.1} us", "", p50.as_secs_f64() * 1e6);
    report(
        "restart, warm disk cache: module ready (per module)",
        format!("{:.2} ms", ms(restart)),
        "< 10 ms",
        ms(restart) / 10.0,
        restart < Duration::from_millis(10),
    );
    println!(
        "{:<58} engine start {:.2} ms; cold compile of all three {:.0} ms",
        "",
        ms(engine_start),
        ms(cold)
    );
    let _ = std::fs::remove_dir_all(&cache);
}
