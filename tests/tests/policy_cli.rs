//! `kubectl gitops policy test`: the policy author's loop, run in process exactly as the binary
//! runs it (no cluster needed), on the manifests in `policies/fixtures/cli/manifests`. Golden
//! files in `policies/fixtures/cli/golden` hold the expected stdout; regenerate them with
//! `GITOPS_UPDATE_GOLDEN=1 cargo test -p gitops-conformance --test policy_cli` and review the
//! diff.

mod cli_support;

use cli_support::{Run, gitops_raw};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/fixtures/cli")
}

/// `kubectl gitops policy test ARGS`, with paths relative to the fixture directory.
fn policy_test(args: &[&str]) -> Run {
    let dir = fixtures();
    let mut full = vec!["kubectl-gitops".to_owned(), "policy".into(), "test".into()];
    for a in args {
        full.push(match a.strip_prefix('@') {
            Some(rel) => dir.join(rel).to_string_lossy().into_owned(),
            None => (*a).to_owned(),
        });
    }
    gitops_raw(&full)
}

/// Compares `actual` with golden file `name` (fixture paths replaced by `<fixtures>`).
fn golden(name: &str, actual: &str) {
    let dir = fixtures();
    let prefix = dir.to_string_lossy().into_owned();
    let actual = actual.replace(&prefix, "<fixtures>");
    let path = dir.join("golden").join(name);
    if std::env::var_os("GITOPS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading golden {}: {e}", path.display()));
    assert_eq!(
        actual,
        want,
        "output differs from {} (GITOPS_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

#[test]
fn a_transform_prints_a_diff_of_each_changed_object() {
    let run = policy_test(&[
        "--module",
        "builtin:target-namespace",
        "--config",
        "@target-namespace.json",
        "-f",
        "@manifests",
    ])
    .expect(0);
    golden("target-namespace.txt", &run.stdout);
    assert!(
        run.stderr
            .starts_with("► running policy target-namespace 0.1.0 (transform) on 5 objects from "),
        "{}",
        run.stderr
    );
    // Namespace and ClusterRole are cluster-scoped: untouched.
    assert_eq!(last_line(&run.stderr), "✔ allowed: 5 objects, 3 changed");
}

#[test]
fn objects_are_printed_whole_with_output_yaml() {
    let run = policy_test(&[
        "--module",
        "builtin:target-namespace",
        "--config",
        "@target-namespace.json",
        "-f",
        "@manifests/apps/worker.yaml",
        "-o",
        "yaml",
    ])
    .expect(0);
    let objects: Vec<serde_json::Value> =
        gitops_reconciler::yaml::from_str_multi(&run.stdout).unwrap();
    assert_eq!(objects.len(), 1, "{}", run.stdout);
    assert_eq!(objects[0]["metadata"]["namespace"], "team-a");
    assert_eq!(objects[0]["metadata"]["name"], "worker");
}

#[test]
fn an_allowing_policy_exits_0_with_its_rewrites() {
    let run = policy_test(&[
        "--module",
        "builtin:image-pinning",
        "--config",
        "@image-pinning-allow.json",
        "-f",
        "@manifests",
    ])
    .expect(0);
    golden("image-pinning-allow.txt", &run.stdout);
    assert!(
        run.stderr.starts_with(
            "► running policy image-pinning 0.1.0 (transform + validate) on 2 of 5 objects (of the kinds it \
             declares: Pod, Deployment.apps, StatefulSet.apps, DaemonSet.apps, ReplicaSet.apps, \
             ReplicationController, Job.batch, CronJob.batch) from "
        ),
        "{}",
        run.stderr
    );
    assert_eq!(last_line(&run.stderr), "✔ allowed: 5 objects, 1 changed");
}

#[test]
fn a_denying_policy_exits_1_with_a_violation_table() {
    let run = policy_test(&[
        "--module",
        "builtin:image-pinning",
        "--config",
        "@image-pinning-deny.yaml",
        "-f",
        "@manifests",
    ])
    .expect(1);
    golden("image-pinning-deny.txt", &run.stdout);
    assert_eq!(
        last_line(&run.stderr),
        "✗ denied: 3 violations of severity error"
    );
}

#[test]
fn a_component_file_runs_like_the_builtin() {
    // The committed built-in as a plain file: the digest is computed locally.
    let run = policy_test(&[
        "--module",
        "@../../dist/target-namespace.wasm",
        "--config",
        "@target-namespace.json",
        "-f",
        "@manifests",
    ])
    .expect(0);
    golden("target-namespace.txt", &run.stdout);
}

#[test]
fn a_refused_config_exits_2_naming_the_field() {
    let run = policy_test(&[
        "--module",
        "builtin:replica-bounds",
        "--config",
        "@replica-bounds-bad.json",
        "-f",
        "@manifests",
    ])
    .expect(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("✗ policy replica-bounds: invalid config at /bounds/Deployment: "),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unparsable_or_missing_config_exits_2() {
    let run = policy_test(&[
        "--module",
        "builtin:replica-bounds",
        "--config",
        "@broken-config.json",
        "-f",
        "@manifests",
    ])
    .expect(2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("✗ config ") && run.stderr.contains("is not JSON or YAML"),
        "{}",
        run.stderr
    );
    // A document that parses but is not what the policy takes: the policy's own message.
    let run = policy_test(&[
        "--module",
        "builtin:replica-bounds",
        "--config",
        "@not-a-component.wasm",
        "-f",
        "@manifests",
    ])
    .expect(2);
    assert!(
        run.stderr
            .starts_with("✗ policy replica-bounds: invalid config: config must be an object"),
        "{}",
        run.stderr
    );
    let run = policy_test(&[
        "--module",
        "builtin:replica-bounds",
        "--config",
        "@missing.json",
        "-f",
        "@manifests",
    ])
    .expect(2);
    assert!(
        run.stderr.starts_with("✗ reading config ") && run.stderr.contains("missing.json: "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_bad_module_exits_2_with_one_line() {
    let run = policy_test(&["--module", "@not-a-component.wasm", "-f", "@manifests"]).expect(2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("✗ policy not-a-component: not a valid policy component: "),
        "{}",
        run.stderr
    );
    let run = policy_test(&["--module", "builtin:nope", "-f", "@manifests"]).expect(2);
    assert!(
        run.stderr
            .starts_with("✗ policy nope: unknown builtin \"nope\""),
        "{}",
        run.stderr
    );
    let run = policy_test(&["--module", "@missing.wasm", "-f", "@manifests"]).expect(2);
    assert!(
        run.stderr.starts_with("✗ reading module "),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreadable_manifest_directory_exits_2() {
    let run = policy_test(&[
        "--module",
        "builtin:target-namespace",
        "--config",
        "@target-namespace.json",
        "-f",
        "@no-such-dir",
    ])
    .expect(2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("✗ reading manifests from "),
        "{}",
        run.stderr
    );
}

/// The hostile components through `policy test`, as a policy author would run them: every run
/// ends within the deadline (1 s) plus 1 s of slack — loading from the compiled-module cache
/// included — with one line naming the policy and what it did, and the exit code of a policy
/// that failed to run (6), denied (1), or passed (0: a sleep returns at once).
#[test]
fn hostile_policies_end_in_time_with_one_line() {
    let dist = fixtures().join("../../dist");
    let configs = std::env::temp_dir().join(format!("policy-cli-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&configs).expect("temp dir");
    let hostile = dist.join("hostile.wasm").to_string_lossy().into_owned();
    let run = |module: &str, mode: &str| {
        let config = configs.join(format!("{mode}.json"));
        std::fs::write(&config, format!(r#"{{"mode": "{mode}"}}"#)).expect("config");
        let config = config.to_string_lossy().into_owned();
        let started = std::time::Instant::now();
        let run = policy_test(&["--module", module, "--config", &config, "-f", "@manifests"]);
        (run, started.elapsed())
    };
    // Compiled (or taken from the cache) once, outside the timed runs.
    let _ = run(&hostile, "ok");
    let cases: &[(&str, i32, &str)] = &[
        (
            "loop",
            6,
            "✗ policy hostile: transform exceeded its deadline of 1s",
        ),
        ("sleep-forever", 0, "hostile saw 5 objects"),
        ("random-flood", 6, "exceeds limit 4096"),
        ("panic", 6, "hostile policy panics on purpose"),
        ("huge-number", 6, "number out of range"),
        ("lone-surrogate", 6, "hex escape"),
        ("deep-array", 6, "recursion limit exceeded"),
        ("memory", 6, "exceeded its memory limit of 67108864 bytes"),
        (
            "gigabyte-output",
            6,
            "more than the output limit of 67108864 bytes",
        ),
        ("violation-flood", 1, "19000 more violations not shown"),
    ];
    for (mode, code, text) in cases {
        let (result, elapsed) = run(&hostile, mode);
        let result = result.expect(*code);
        let said = format!("{}{}", result.stdout, result.stderr);
        assert!(said.contains(text), "{mode}: {said}");
        assert!(
            elapsed < std::time::Duration::from_secs(2),
            "{mode} took {elapsed:?}"
        );
        if *code == 6 {
            // The step line, then one line saying what the policy did.
            let failure = last_line(&result.stderr);
            assert!(
                failure.starts_with("✗ policy hostile") && failure.contains(text),
                "{mode}: {}",
                result.stderr
            );
            assert_eq!(
                result.stderr.matches('✗').count(),
                1,
                "{mode}: {}",
                result.stderr
            );
        } else {
            assert!(
                result.stdout.len() < 2 << 20,
                "{mode}: {} bytes of output",
                result.stdout.len()
            );
        }
    }
    // A component whose metadata never returns is refused at load, within the deadline.
    let sleepy = dist
        .join("hostile-metadata.wasm")
        .to_string_lossy()
        .into_owned();
    let _ = run(&sleepy, "ok");
    let (result, elapsed) = run(&sleepy, "ok");
    let result = result.expect(6);
    assert!(
        result
            .stderr
            .starts_with("✗ policy hostile-metadata: metadata exceeded its deadline of 1s"),
        "{}",
        result.stderr
    );
    assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    let _ = std::fs::remove_dir_all(&configs);
}
