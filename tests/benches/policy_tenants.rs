//! Healthy tenants next to hostile ones, on one policy host (the reconciler's): 20 healthy
//! tenants each run their pipeline (the three built-ins over 50 objects) every 500 ms; the
//! latency of every run is recorded in phases that alternate A/B/A/B... in one process (so
//! the machine's own noise falls on both alike): A alone, B while 4 hostile tenants run
//! hostile components back to back (CPU loops, memory bombs, a gigabyte of output, stderr
//! floods, malformed output, random-byte floods, violation floods, recursion, metadata that
//! never returns), retrying at once after every failure and after 1 s when the host refuses
//! them for their failure budget. That is harsher than a reconciler, which backs a failing
//! Kustomization off and stalls it.
//!
//! What is measured is the policy stage of a reconcile (`PolicyHost::run_pipeline`, as the
//! controller calls it), not the whole reconcile (no build, no apply). Run it as a release
//! build (`cargo bench -p gitops-conformance --bench policy_tenants`). Prints the healthy
//! tenants' p50 and p99 of every phase and of all A and all B phases, the goal (p99 with
//! hostile tenants within 1.2x of without), and the ratio.

use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{HostConfig, ModuleSource, PolicyContext, PolicyHost, PolicyStep};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HEALTHY: usize = 20;
const HOSTILE: usize = 4;
const PERIOD: Duration = Duration::from_millis(500);
/// Length of each measured phase, in seconds (`GITOPS_BENCH_PHASE_SECS`, default 10).
fn phase_length() -> Duration {
    Duration::from_secs(env_number("GITOPS_BENCH_PHASE_SECS", 10))
}
/// A/B pairs of phases (`GITOPS_BENCH_ROUNDS`, default 3).
fn rounds() -> u64 {
    env_number("GITOPS_BENCH_ROUNDS", 3).max(1)
}
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
const GOAL: f64 = 1.2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn objects(tenant: usize) -> Vec<Value> {
    (0..50)
        .map(|i| match i % 2 {
            0 => json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("web-{i}"), "namespace": format!("tenant-{tenant}")},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
            _ => json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": format!("tenant-{tenant}")},
                "data": {"k": "v"}}),
        })
        .collect()
}

fn healthy_steps(tenant: usize) -> Vec<PolicyStep> {
    [
        (
            "target-namespace",
            json!({"namespace": format!("tenant-{tenant}")}),
        ),
        (
            "image-pinning",
            json!({"allowedRegistries": ["docker.io/library"]}),
        ),
        (
            "replica-bounds",
            json!({"bounds": {"Deployment": {"min": 1, "max": 10}}, "action": "clamp"}),
        ),
    ]
    .into_iter()
    .map(|(name, config)| PolicyStep {
        name: name.to_owned(),
        module: ModuleSource::Builtin(name.to_owned()),
        config,
        failure_policy: FailurePolicy::Fail,
    })
    .collect()
}

fn component(file: &str) -> ModuleSource {
    let bytes = std::fs::read(repo().join("policies/dist").join(file)).expect("committed");
    let sums = std::fs::read_to_string(repo().join("policies/dist/SHA256SUMS")).expect("sums");
    let sha256 = sums
        .lines()
        .find_map(|l| l.strip_suffix(&format!("  {file}")))
        .expect("listed")
        .to_owned();
    ModuleSource::Component {
        bytes: Arc::from(bytes),
        sha256,
    }
}

fn hostile_steps() -> Vec<PolicyStep> {
    let hostile = component("hostile.wasm");
    let mut steps: Vec<PolicyStep> = [
        "loop",
        "stderr-flood",
        "memory",
        "gigabyte-output",
        "huge-number",
        "random-flood",
        "violation-flood",
        "recursion",
    ]
    .into_iter()
    .map(|mode| PolicyStep {
        name: format!("hostile-{mode}"),
        module: hostile.clone(),
        config: json!({ "mode": mode }),
        failure_policy: FailurePolicy::Fail,
    })
    .collect();
    steps.push(PolicyStep {
        name: "hostile-metadata".to_owned(),
        module: component("hostile-metadata.wasm"),
        config: Value::Null,
        failure_policy: FailurePolicy::Fail,
    });
    steps
}

fn ctx(tenant: &str) -> PolicyContext {
    PolicyContext {
        kustomization_namespace: tenant.to_owned(),
        kustomization_name: "app".to_owned(),
        ..PolicyContext::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the healthy tenants for one phase (and the hostile ones when `hostile`); returns the
/// healthy runs' latencies, sorted, how many healthy runs failed (none should), and how many
/// hostile runs ended (all must fail).
fn phase(host: &PolicyHost, hostile: bool) -> (Vec<Duration>, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let healthy: Vec<_> = (0..HEALTHY)
            .map(|t| {
                let stop = stop.clone();
                s.spawn(move || {
                    let steps = healthy_steps(t);
                    let ctx = ctx(&format!("tenant-{t}"));
                    let mut latencies = Vec::new();
                    let mut next = Instant::now() + PERIOD.mul_f64(t as f64 / HEALTHY as f64);
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        let started = Instant::now();
                        let result = host.run_pipeline(&steps, &ctx, objects(t));
                        latencies.push((started.elapsed(), result.err().map(|e| e.to_string())));
                        next += PERIOD;
                    }
                    latencies
                })
            })
            .collect();
        let hostile: Vec<_> = (0..if hostile { HOSTILE } else { 0 })
            .map(|t| {
                let stop = stop.clone();
                s.spawn(move || {
                    let ctx = ctx(&format!("hostile-{t}"));
                    let mut runs = 0;
                    for step in hostile_steps().iter().cycle().skip(t) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = host.run_pipeline(std::slice::from_ref(step), &ctx, objects(t));
                        let e = r.err().unwrap_or_else(|| panic!("{} succeeded", step.name));
                        runs += 1;
                        // Refused (its failure budget is used up): a reconciler retries such a
                        // Kustomization after its retryInterval, not at once.
                        if e.to_string().contains("did not start before its deadline") {
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                    runs
                })
            })
            .collect();
        std::thread::sleep(phase_length());
        stop.store(true, Ordering::Relaxed);
        let runs: Vec<(Duration, Option<String>)> = healthy
            .into_iter()
            .flat_map(|h| h.join().expect("healthy tenant"))
            .collect();
        let failed = runs.iter().filter(|(_, e)| e.is_some()).count();
        if let Some(e) = runs.iter().find_map(|(_, e)| e.as_ref()) {
            println!("  a healthy run failed ({failed} in this phase), e.g.: {e}");
        }
        let mut all: Vec<Duration> = runs.into_iter().map(|(d, _)| d).collect();
        all.sort();
        let hostile_runs = hostile
            .into_iter()
            .map(|h| h.join().expect("hostile tenant"))
            .sum();
        (all, failed, hostile_runs)
    })
}

fn main() {
    let cache = std::env::temp_dir().join("gitops-policy-tenants-bench-cache");
    let host = PolicyHost::new(HostConfig {
        cache_dir: Some(cache),
        ..HostConfig::default()
    })
    .expect("host");
    // Compile everything once, outside the measured phases.
    for t in 0..HEALTHY {
        host.run_pipeline(&healthy_steps(t), &ctx("warm-up"), objects(t))
            .expect("healthy");
    }
    for step in hostile_steps() {
        let _ = host.run_pipeline(std::slice::from_ref(&step), &ctx("warm-up"), objects(0));
    }

    let p = |v: &[Duration], q| percentile(v, q).as_secs_f64() * 1000.0;
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    let (mut failed, mut hostile_runs) = (0, 0);
    println!(
        "policy tenants: {HEALTHY} healthy tenants (3 built-ins, 50 objects, every {} ms), {HOSTILE} hostile tenants back to back in phase B; {} A/B rounds of {:?} phases",
        PERIOD.as_millis(),
        rounds(),
        phase_length()
    );
    println!("  load average before: {}", load_average());
    for round in 1..=rounds() {
        for with_hostile in [false, true] {
            let (runs, phase_failed, phase_hostile) = phase(&host, with_hostile);
            println!(
                "  round {round} {}: {} runs ({phase_failed} failed), p50 {:.2} ms, p99 {:.2} ms{}",
                if with_hostile {
                    "B with hostile"
                } else {
                    "A alone"
                },
                runs.len(),
                p(&runs, 0.5),
                p(&runs, 0.99),
                if with_hostile {
                    format!(" ({phase_hostile} hostile runs, all failed)")
                } else {
                    String::new()
                }
            );
            failed += phase_failed;
            hostile_runs += phase_hostile;
            if with_hostile {
                &mut beside
            } else {
                &mut alone
            }
            .extend(runs);
        }
    }
    assert_eq!(host.slots_in_use(), 0, "slots left taken");
    assert_eq!(host.turns_in_use(), 0, "CPU turns left taken");
    println!("  healthy runs that failed: {failed} (should be none)");
    println!("  load average after: {}", load_average());
    alone.sort();
    beside.sort();
    println!(
        "  all A (alone):        {} runs, p50 {:.2} ms, p99 {:.2} ms",
        alone.len(),
        p(&alone, 0.5),
        p(&alone, 0.99)
    );
    println!(
        "  all B (with hostile): {} runs, p50 {:.2} ms, p99 {:.2} ms ({hostile_runs} hostile runs)",
        beside.len(),
        p(&beside, 0.5),
        p(&beside, 0.99)
    );
    let ratio = p(&beside, 0.99) / p(&alone, 0.99);
    println!(
        "  p99 with / without hostile tenants: measured {ratio:.2}x, goal <= {GOAL}x, ratio to goal {:.2} ({})",
        ratio / GOAL,
        if ratio <= GOAL { "met" } else { "missed" }
    );
}

/// The machine's load averages (1, 5, 15 min), to judge how noisy a run was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
