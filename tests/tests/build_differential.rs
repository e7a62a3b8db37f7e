//! Differential test of the native kustomize engine against `kubectl kustomize` (kustomize
//! v5.5 inside kubectl v1.32): every case under `tests/kustomize/corpus/<case>/` is built by
//! both, and the outputs are compared object by object and in order (as JSON values, so
//! formatting does not matter but every field, generated hash suffixes included, does).
//!
//! A case may have `options.json` with Flux-style build fields (`path`, `namePrefix`,
//! `nameSuffix`, `patches`, `images`, `components`, `commonMetadata`); for kubectl they are
//! written as an outer kustomization around the path, which is the semantics the engine
//! emulates. A path without a kustomization file gets, for kubectl, the kustomization Flux would
//! generate. When kubectl fails on a case, the engine must fail too.
//!
//! Not ignored: it needs only kubectl, which CI installs. It fails loudly without kubectl.

use std::process::Command;

use gitops_conformance::kustomize_corpus::{self, CaseOptions};
use gitops_reconciler::build::{BuildOptions, build};

#[test]
fn corpus_matches_kubectl_kustomize() {
    kustomize_corpus::require_kubectl();
    let cases = kustomize_corpus::corpus_cases();
    assert!(
        cases.len() >= 80,
        "the corpus has only {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut both_failed = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let options = CaseOptions::read(case);
        let expected = kustomize_corpus::kubectl_build(case, &options);
        let actual = build(case, &options.to_build_options());
        match (expected, actual) {
            (Ok(exp), Ok(act)) => {
                if let Some(diff) = kustomize_corpus::compare(&exp, &act) {
                    failures.push(format!("{name}: {diff}"));
                }
            }
            (Err(_), Err(_)) => both_failed.push(name),
            (Ok(_), Err(e)) => {
                failures.push(format!("{name}: kubectl builds it, the engine fails: {e}"))
            }
            (Err(e), Ok(_)) => {
                failures.push(format!("{name}: kubectl fails ({e}), the engine builds it"))
            }
        }
    }
    eprintln!(
        "{} cases, {} identical to kubectl, {} rejected by both, {} failing",
        cases.len(),
        cases.len() - failures.len() - both_failed.len(),
        both_failed.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn engine_options_round_trip() {
    // A case without options builds its root.
    let o = CaseOptions::default().to_build_options();
    assert_eq!(o, BuildOptions::default());
    let _ = Command::new("true");
}
