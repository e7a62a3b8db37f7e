//! Healthy tenants next to hostile ones, on one policy host (the reconciler's): 20 healthy
//! tenants each run their pipeline (the three built-ins over 50 objects) every 500 ms; the
//! latency of every run is recorded in phases that alternate in one process (so the machine's
//! own noise falls on all alike): A alone, B with the reconciler's hostile tenants, A again, B
//! with back-to-back hostile tenants, for every round. In phases B, 4 hostile tenants run
//! hostile components (CPU loops, memory bombs, a gigabyte of output, stderr floods, malformed
//! output, random-byte floods, violation floods, recursion, metadata that never returns):
//! - "reconciler": as the reconciler runs their Kustomizations: the next run 1 s after a
//!   failure (a `retryInterval` of 1 s; a stalled Kustomization as if its tenant pushed a new
//!   revision every second), and the host refuses them once their failure budget is used up.
//!   The goal is judged on this variant: it is what the reconciler lets a tenant do.
//! - "back-to-back": the next run at once after every failure (1 s after a refusal), harsher
//!   than any reconciler; printed to show how far the host holds beyond that.
//!
//! Each hostile variant has tenants of its own, whose failure budgets carry over from round to
//! round as in a long-running reconciler.
//!
//! What is measured is the policy stage of a reconcile (`PolicyHost::run_pipeline`, as the
//! controller calls it), not the whole reconcile (no build, no apply). Run it as a release
//! build (`cargo bench -p gitops-conformance --bench policy_tenants`; `GITOPS_BENCH_ROUNDS`
//! and `GITOPS_BENCH_PHASE_SECS` set the rounds, default 3, and the phase length, default
//! 10 s). Prints the healthy tenants' p50 and p99 of every phase and of all A and all B phases
//! of each variant, the goal (p99 with hostile tenants within 1.2x of without) and the ratio,
//! and the kernel's run-queue wait of the healthy runs (`/proc/thread-self/schedstat`): the
//! part of their latency that the machine's load, not the host, added.

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

fn percentile(sorted: &[Run], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].latency
}

/// How the hostile tenants run in a phase B.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// As the reconciler runs their Kustomizations: after a failure the next run comes
    /// [`RETRY`] later (the `retryInterval` of a retried failure; for a stalling one, as if
    /// the tenant pushed a new revision that often), and the host refuses them once their
    /// failure budget is used up.
    Reconciler,
    /// Back to back: the next run at once after every failure, 1 s after a refusal.
    BackToBack,
}

/// The hostile Kustomizations' `retryInterval` (and how often a stalled one gets a new
/// revision) in the reconciler variant: far below Flux's default (the interval, minutes).
const RETRY: Duration = Duration::from_secs(1);

impl Hostile {
    fn name(self) -> &'static str {
        match self {
            Hostile::Reconciler => "reconciler",
            Hostile::BackToBack => "back-to-back",
        }
    }
}

/// One healthy run: its latency, its error, and how long the kernel kept it off the CPU.
struct Run {
    latency: Duration,
    error: Option<String>,
    /// Time the thread was runnable but not running (the kernel's run-queue wait): what the
    /// machine's load, not the host, added to the latency.
    run_delay: Duration,
}

/// The kernel's count of this thread's run-queue wait (`/proc/thread-self/schedstat`).
fn run_delay() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Runs the healthy tenants for one phase (and the hostile ones, if any); returns the
/// healthy runs and how many hostile runs ended (all must fail).
fn phase(host: &PolicyHost, hostile: Option<Hostile>) -> (Vec<Run>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let healthy: Vec<_> = (0..HEALTHY)
            .map(|t| {
                let stop = stop.clone();
                s.spawn(move || {
                    let steps = healthy_steps(t);
                    let ctx = ctx(&format!("tenant-{t}"));
                    let mut runs = Vec::new();
                    let mut next = Instant::now() + PERIOD.mul_f64(t as f64 / HEALTHY as f64);
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        let objects = objects(t);
                        let delay = run_delay();
                        let started = Instant::now();
                        let result = host.run_pipeline(&steps, &ctx, objects);
                        let latency = started.elapsed();
                        runs.push(Run {
                            latency,
                            error: result.err().map(|e| e.to_string()),
                            run_delay: run_delay().saturating_sub(delay),
                        });
                        next += PERIOD;
                    }
                    runs
                })
            })
            .collect();
        let hostile: Vec<_> = (0..if hostile.is_some() { HOSTILE } else { 0 })
            .map(|t| {
                let stop = stop.clone();
                let variant = hostile.unwrap_or(Hostile::BackToBack);
                s.spawn(move || {
                    let ctx = ctx(&format!("hostile-{}-{t}", variant.name()));
                    let mut runs = 0;
                    for step in hostile_steps().iter().cycle().skip(t) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = host.run_pipeline(std::slice::from_ref(step), &ctx, objects(t));
                        let e = r.err().unwrap_or_else(|| panic!("{} succeeded", step.name));
                        runs += 1;
                        let refused = e.to_string().contains("did not start before its deadline");
                        let pause = match variant {
                            Hostile::Reconciler => RETRY,
                            Hostile::BackToBack if refused => Duration::from_secs(1),
                            Hostile::BackToBack => Duration::ZERO,
                        };
                        let until = Instant::now() + pause;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    runs
                })
            })
            .collect();
        std::thread::sleep(phase_length());
        stop.store(true, Ordering::Relaxed);
        let mut runs: Vec<Run> = healthy
            .into_iter()
            .flat_map(|h| h.join().expect("healthy tenant"))
            .collect();
        let failed = runs.iter().filter(|r| r.error.is_some()).count();
        if let Some(e) = runs.iter().find_map(|r| r.error.as_ref()) {
            println!("  a healthy run failed ({failed} in this phase), e.g.: {e}");
        }
        runs.sort_by_key(|r| r.latency);
        let hostile_runs = hostile
            .into_iter()
            .map(|h| h.join().expect("hostile tenant"))
            .sum();
        (runs, hostile_runs)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The mean OS run-queue wait of all runs and of the slowest 1 %.
fn run_queue_wait(runs: &[Run]) -> String {
    let tail = &runs[runs.len() - (runs.len() / 100).max(1)..];
    let mean = |part: &[Run]| {
        ms(part.iter().map(|r| r.run_delay).sum::<Duration>()) / part.len().max(1) as f64
    };
    format!(
        "OS run-queue wait: mean {:.2} ms, in the slowest 1% {:.2} ms of {:.2} ms",
        mean(runs),
        mean(tail),
        ms(tail.iter().map(|r| r.latency).sum::<Duration>()) / tail.len().max(1) as f64
    )
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

    let p = |v: &[Run], q| ms(percentile(v, q));
    let variants = [Hostile::Reconciler, Hostile::BackToBack];
    println!(
        "policy tenants: {HEALTHY} healthy tenants (3 built-ins, 50 objects, every {} ms); in phases B {HOSTILE} hostile tenants, either as the reconciler runs them (retried {:?} after each failure) or back to back; {} rounds of A, B reconciler, A, B back-to-back, {:?} each",
        PERIOD.as_millis(),
        RETRY,
        rounds(),
        phase_length()
    );
    println!("  load average before: {}", load_average());
    let mut alone: Vec<Run> = Vec::new();
    let mut beside: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    let mut hostile_runs = vec![0; variants.len()];
    let mut failed = 0;
    for round in 1..=rounds() {
        for (v, variant) in variants.iter().enumerate() {
            for hostile in [None, Some(*variant)] {
                let (runs, phase_hostile) = phase(&host, hostile);
                let phase_failed = runs.iter().filter(|r| r.error.is_some()).count();
                println!(
                    "  round {round} {}: {} runs ({phase_failed} failed), p50 {:.2} ms, p99 {:.2} ms{}; load {}",
                    match hostile {
                        Some(h) => format!("B {}", h.name()),
                        None => "A alone".to_owned(),
                    },
                    runs.len(),
                    p(&runs, 0.5),
                    p(&runs, 0.99),
                    if hostile.is_some() {
                        format!(" ({phase_hostile} hostile runs, all failed)")
                    } else {
                        String::new()
                    },
                    load_average()
                );
                failed += phase_failed;
                match hostile {
                    Some(_) => {
                        hostile_runs[v] += phase_hostile;
                        beside[v].extend(runs);
                    }
                    None => alone.extend(runs),
                }
            }
        }
    }
    assert_eq!(host.slots_in_use(), 0, "slots left taken");
    assert_eq!(host.turns_in_use(), 0, "CPU turns left taken");
    println!("  healthy runs that failed: {failed} (should be none)");
    println!("  load average after: {}", load_average());
    alone.sort_by_key(|r| r.latency);
    println!(
        "  all A (alone): {} runs, p50 {:.2} ms, p99 {:.2} ms",
        alone.len(),
        p(&alone, 0.5),
        p(&alone, 0.99)
    );
    println!("    {}", run_queue_wait(&alone));
    for ((variant, mut runs), hostile_runs) in variants.iter().zip(beside).zip(hostile_runs) {
        runs.sort_by_key(|r| r.latency);
        let ratio = p(&runs, 0.99) / p(&alone, 0.99);
        println!(
            "  all B ({}): {} runs, p50 {:.2} ms, p99 {:.2} ms ({hostile_runs} hostile runs); p99 B/A measured {ratio:.2}x, goal <= {GOAL}x, ratio to goal {:.2} ({}){}",
            variant.name(),
            runs.len(),
            p(&runs, 0.5),
            p(&runs, 0.99),
            ratio / GOAL,
            if ratio <= GOAL { "met" } else { "missed" },
            if *variant == Hostile::Reconciler {
                " <- the goal is judged on this one"
            } else {
                ""
            }
        );
        println!("    {}", run_queue_wait(&runs));
    }
}

/// The machine's load averages (1, 5, 15 min), to judge how noisy a run was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
