//! kustomize's own test suite as a differential corpus. The `krusty` tests of
//! `sigs.k8s.io/kustomize/api` (the version inside kubectl v1.32) are read from the Go module
//! cache at test time (see `gitops_conformance::krusty`); every build they make is written to
//! a scratch directory and built by the engine and by `kubectl kustomize`, and the outputs are
//! compared object by object, field by field and in order. A case kubectl refuses must be
//! refused by the engine too.
//!
//! Every case that differs must be listed, with its reason, in
//! `tests/kustomize/krusty-differences.txt`; a listed case that no longer differs fails the
//! test as well, so the list stays exact. The match rate is printed per test file (category),
//! with the slowest case's time ratio against kubectl.
//!
//! Needs kubectl and Go (for `go mod download`); fails loudly without them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gitops_conformance::krusty;
use gitops_conformance::kustomize_corpus::{self, Scratch};
use gitops_reconciler::build::{BuildOptions, build};

const DIFFERENCES: &str = "kustomize/krusty-differences.txt";

#[derive(Default)]
struct Tally {
    cases: usize,
    identical: usize,
    both_refused: usize,
    differ: usize,
}

#[test]
fn krusty_tests_build_as_kubectl_builds_them() {
    kustomize_corpus::require_kubectl();
    let dir = krusty::krusty_dir().unwrap_or_else(|e| panic!("{e}"));
    let (cases, skipped) = krusty::extract(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cases.len() >= 200,
        "only {} builds extracted from {} (skipped: {skipped:?})",
        cases.len(),
        dir.display()
    );
    let only = std::env::var("KRUSTY_CASE").ok();
    let mut per_category: BTreeMap<String, Tally> = BTreeMap::new();
    let mut differing: BTreeMap<String, String> = BTreeMap::new();
    let mut kubectl_time = Duration::ZERO;
    let mut engine_time = Duration::ZERO;
    let mut slowest: Option<(f64, String)> = None;
    for case in &cases {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let scratch = Scratch::new("krusty");
        kustomize_corpus::write_tree(&scratch.0, &case.files);
        let target = scratch.0.join(&case.path);
        std::fs::create_dir_all(&target).expect("create the build directory");
        let t = Instant::now();
        let expected = kustomize_corpus::kubectl_kustomize(&target);
        let kt = t.elapsed();
        // The engine takes milliseconds, so one descheduling on a loaded machine can dwarf
        // it: its time is the best of three builds. kubectl's is one run (its process
        // start-up dominates and varies less); the ratio therefore leans the engine's way.
        let options = BuildOptions {
            path: case.path.clone(),
            ..Default::default()
        };
        let mut et = Duration::MAX;
        let mut actual = None;
        for _ in 0..3 {
            let t = Instant::now();
            let result = build(&scratch.0, &options);
            et = et.min(t.elapsed());
            actual.get_or_insert(result);
        }
        let actual = actual.expect("built at least once");
        kubectl_time += kt;
        engine_time += et;
        let ratio = kt.as_secs_f64() / et.as_secs_f64().max(1e-9);
        if slowest.as_ref().is_none_or(|(r, _)| ratio < *r) {
            slowest = Some((ratio, case.name.clone()));
        }
        let tally = per_category.entry(case.category.clone()).or_default();
        tally.cases += 1;
        let diff = match (expected, actual) {
            (Ok(exp), Ok(act)) => {
                let d = kustomize_corpus::compare(&exp, &act);
                if d.is_none() {
                    tally.identical += 1;
                }
                d
            }
            (Err(_), Err(_)) => {
                tally.both_refused += 1;
                None
            }
            (Ok(_), Err(e)) => Some(format!("kubectl builds it, the engine fails: {e}")),
            (Err(e), Ok(_)) => Some(format!("kubectl fails ({e}), the engine builds it")),
        };
        if let Some(d) = diff {
            tally.differ += 1;
            differing.insert(case.name.clone(), d);
        }
    }
    let mut total = Tally::default();
    eprintln!(
        "{:<40} {:>5} {:>9} {:>8} {:>6}",
        "category", "cases", "identical", "refused", "differ"
    );
    for (cat, t) in &per_category {
        eprintln!(
            "{cat:<40} {:>5} {:>9} {:>8} {:>6}",
            t.cases, t.identical, t.both_refused, t.differ
        );
        total.cases += t.cases;
        total.identical += t.identical;
        total.both_refused += t.both_refused;
        total.differ += t.differ;
    }
    let matched = total.identical + total.both_refused;
    eprintln!(
        "krusty: {} builds extracted ({} tests skipped), {} match kubectl ({:.1} %): {} identical, \
         {} refused by both; {} differ",
        total.cases,
        skipped.len(),
        matched,
        100.0 * matched as f64 / total.cases.max(1) as f64,
        total.identical,
        total.both_refused,
        total.differ
    );
    eprintln!(
        "time: kubectl {:.2} s, engine {:.2} s ({} build); slowest case ratio {}",
        kubectl_time.as_secs_f64(),
        engine_time.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        slowest
            .map(|(r, n)| format!("{r:.1}x ({n})"))
            .unwrap_or_default()
    );
    if std::env::var_os("KRUSTY_VERBOSE").is_some() {
        for s in &skipped {
            eprintln!("skipped {}: {}", s.name, s.reason);
        }
    }
    if only.is_some() {
        for (n, d) in &differing {
            eprintln!("{n}: {d}\n");
        }
        return;
    }
    kustomize_corpus::assert_differences_listed(&differing, DIFFERENCES);
}
