//! Compiling tenants' components in worker processes (the reconciler binary re-executed):
//! a compile past the timeout is killed, and meanwhile built-ins and other tenants compile.

use crate::support::*;
use gitops_reconciler::policy::{
    CodeLimits, HostConfig, PipelineError, PolicyContext, PolicyError, PolicyHost,
};
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_gitops-reconciler");
const COMPILE_TIMEOUT: Duration = Duration::from_secs(5);

fn tenant(namespace: &str) -> PolicyContext {
    PolicyContext {
        kustomization_namespace: namespace.to_owned(),
        kustomization_name: "app".to_owned(),
        ..PolicyContext::default()
    }
}

/// Child processes of this test process running the worker binary.
fn workers() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                    // pid (comm) state ppid ...: the fields after the command name.
                    let parent = stat.rsplit_once(')').map(|(_, rest)| rest);
                    let is_child = parent
                        .and_then(|rest| rest.split_whitespace().nth(1))
                        .is_some_and(|ppid| ppid == me);
                    is_child
                        && std::fs::read_link(e.path().join("exe"))
                            .is_ok_and(|exe| exe.ends_with("gitops-reconciler"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn failure(r: Result<gitops_reconciler::policy::PipelineOutcome, PipelineError>) -> PolicyError {
    match r {
        Err(PipelineError::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// One test, so no other test of this binary starts worker processes meanwhile (it counts the
/// children of this process).
#[test]
fn compile_workers() {
    a_compile_past_its_timeout_is_killed_while_built_ins_and_other_tenants_compile();
    a_component_compiled_by_a_worker_runs_and_is_cached();
}

fn a_compile_past_its_timeout_is_killed_while_built_ins_and_other_tenants_compile() {
    // The built-ins come from the shared disk cache (compiling them here in a debug build
    // would take about as long as the timeout on a loaded machine).
    let host = host_with(|c| {
        c.compile_worker = Some(WORKER.into());
        c.compile_timeout = COMPILE_TIMEOUT;
        // Nesting this deep is refused by the default limits; raised here, it makes a
        // compilation that takes far longer than the timeout (compile time is quadratic in
        // nesting).
        c.code = CodeLimits {
            max_nesting: 1_000_000,
            max_compile_cost: u64::MAX,
            ..CodeLimits::default()
        };
    });
    // Not in the disk cache: a nesting depth of its own in every run.
    let other_depth = 3 + std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize % 1_000);
    let slow = bytes_step("slow", nested_blocks(150_000, 1));
    std::thread::scope(|s| {
        let (host, slow) = (&host, &slow);
        let started = Instant::now();
        let slow_run = s.spawn(move || {
            let r = host.run_pipeline(std::slice::from_ref(slow), &tenant("slow"), objects());
            (started.elapsed(), r)
        });
        // The compilation runs in a child process.
        let deadline = Instant::now() + Duration::from_secs(1);
        while workers() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(workers(), 1, "no compile worker process");
        assert_eq!(host.compile_workers(), 1);

        // The same tenant compiles one component at a time.
        let e = failure(host.run_pipeline(
            &[bytes_step("second", nested_blocks(3, 1))],
            &tenant("slow"),
            objects(),
        ));
        assert!(
            e.to_string().contains("is compiling another component"),
            "{e}"
        );
        // Another tenant's compilation proceeds (it compiles, then fails the world check)...
        let e = failure(host.run_pipeline(
            &[bytes_step("other", nested_blocks(other_depth, 1))],
            &tenant("other"),
            objects(),
        ));
        assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{e}");
        // ...and so does a built-in (compiled in this process).
        host.run_pipeline(
            &[builtin("replica-bounds", serde_json::json!({"bounds": {}}))],
            &tenant("other"),
            objects(),
        )
        .expect("a built-in runs");
        assert!(
            !slow_run.is_finished(),
            "the slow compilation ended before the others were done"
        );

        let (elapsed, r) = slow_run.join().expect("slow tenant");
        println!("the slow compilation ended after {elapsed:?}");
        let e = failure(r);
        assert!(matches!(e, PolicyError::CompileTimeout { .. }), "{e}");
        assert!(e.to_string().contains("policy slow"), "{e}");
        // The slack covers what comes before the worker starts (digest, structure check)
        // on a loaded machine.
        assert!(
            elapsed < COMPILE_TIMEOUT + Duration::from_secs(2),
            "{elapsed:?}"
        );
    });
    // Killed and reaped: no worker process is left, none is counted.
    assert_eq!(workers(), 0);
    assert_eq!(host.compile_workers(), 0);
    assert_eq!(host.overdue_compiles(), 0);
}

fn a_component_compiled_by_a_worker_runs_and_is_cached() {
    let dir = std::env::temp_dir().join(format!("gitops-policy-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let host = PolicyHost::new(HostConfig {
        compile_worker: Some(WORKER.into()),
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    })
    .expect("host");
    let outcome = host
        .run_pipeline(&[hostile("ok")], &tenant("worker"), objects())
        .expect("runs");
    assert_eq!(outcome.objects, objects());
    let cached = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        cached, 1,
        "the worker's output was not written to the cache"
    );
    assert_eq!(host.compile_workers(), 0);
    // Bytes the structure check refuses never reach a worker.
    let e = failure(host.run_pipeline(
        &[bytes_step("text", b"(component)".to_vec())],
        &tenant("worker"),
        objects(),
    ));
    assert!(
        e.to_string().contains("not a binary WebAssembly component"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
