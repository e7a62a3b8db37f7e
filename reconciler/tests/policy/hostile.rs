//! Hostile policy components against the host's limits. After every misbehaviour the next
//! call of a good policy on the same host must succeed.

use crate::support::*;
use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{
    PipelineError, PolicyContext, PolicyError, PolicyHost, PolicyStep,
};
use std::time::{Duration, Instant};

fn run(
    host: &PolicyHost,
    step: PolicyStep,
) -> Result<gitops_reconciler::policy::PipelineOutcome, PipelineError> {
    host.run_pipeline(&[step], &PolicyContext::default(), objects())
}

fn failure(host: &PolicyHost, step: PolicyStep) -> PolicyError {
    match run(host, step) {
        Err(PipelineError::Failed(e)) => e,
        other => panic!("expected a policy failure, got {other:?}"),
    }
}

/// The good call that must work after each hostile one.
fn still_works(host: &PolicyHost) {
    let outcome = run(host, hostile("ok")).expect("a good policy runs after a hostile one");
    assert_eq!(outcome.objects, objects());
    assert_eq!(outcome.warnings.len(), 1);
    assert_eq!(outcome.warnings[0].message, "hostile saw 2 objects");
}

/// Runs `step`, which must fail, between two good calls on `host`, and checks that refusing it
/// took under 5 s and grew the process RSS by less than `max_growth` bytes; returns its error.
fn refused_within_bounds(host: &PolicyHost, step: PolicyStep, max_growth: u64) -> PolicyError {
    still_works(host);
    let before = rss_bytes();
    let started = Instant::now();
    let e = failure(host, step);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < max_growth, "RSS grew by {grown} bytes: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_works(host);
    e
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let host = host_with(|c| c.deadline = Duration::from_millis(200));
    still_works(&host);
    let started = Instant::now();
    let e = failure(&host, hostile("loop"));
    let elapsed = started.elapsed();
    assert!(
        matches!(e, PolicyError::Timeout { ref policy, operation: "transform", deadline } if policy == "hostile-loop" && deadline == Duration::from_millis(200)),
        "{e:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    assert!(
        e.to_string().contains("hostile-loop") && e.to_string().contains("deadline"),
        "{e}"
    );
    still_works(&host);
}

#[test]
fn memory_bomb_is_stopped_at_the_cap_and_rss_stays_bounded() {
    let host = host_with(|_| {});
    still_works(&host);
    let before = rss_bytes();
    for _ in 0..3 {
        let e = failure(&host, hostile("memory"));
        assert!(
            matches!(e, PolicyError::MemoryExhausted { limit, .. } if limit == 64 << 20),
            "{e:?}"
        );
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    still_works(&host);
}

#[test]
fn deep_recursion_traps_without_aborting_the_process() {
    let host = host_with(|_| {});
    let e = failure(&host, hostile("recursion"));
    assert!(
        matches!(
            e,
            PolicyError::Trap {
                operation: "transform",
                ..
            }
        ),
        "{e:?}"
    );
    still_works(&host);
}

#[test]
fn panic_is_a_trap_error() {
    let host = host_with(|_| {});
    let e = failure(&host, hostile("panic"));
    assert!(
        matches!(e, PolicyError::Trap { ref policy, .. } if policy == "hostile-panic"),
        "{e:?}"
    );
    assert!(e.to_string().contains("trapped"), "{e}");
    still_works(&host);
}

#[test]
fn too_many_objects_are_refused() {
    let host = host_with(|_| {});
    let e = failure(&host, hostile("many-objects"));
    assert!(
        matches!(
            e,
            PolicyError::TooManyObjects {
                count: 200_000,
                limit: 100_000,
                ..
            }
        ),
        "{e:?}"
    );
    still_works(&host);
}

#[test]
fn oversized_output_is_refused_before_the_host_copies_it() {
    // 200,000 list slots alone need 4.8 MB of host memory: over a 1 MiB output cap.
    let host = host_with(|c| c.max_output_bytes = 1 << 20);
    let e = failure(&host, hostile("many-objects"));
    assert!(
        matches!(e, PolicyError::OutputTooLarge { limit, .. } if limit == 1 << 20),
        "{e:?}"
    );
    // One 24 MiB object against a 16 MiB cap (memory raised so the guest can build it).
    let host = host_with(|c| {
        c.max_output_bytes = 16 << 20;
        c.memory_limit = 256 << 20;
    });
    let before = rss_bytes();
    let e = failure(&host, hostile("big-object"));
    assert!(matches!(e, PolicyError::OutputTooLarge { .. }), "{e:?}");
    assert!(rss_bytes().saturating_sub(before) < 200 << 20);
    still_works(&host);
}

#[test]
fn a_gigabyte_of_output_is_refused_at_the_cap_with_bounded_host_memory() {
    // 2^20 strings of 1 KiB (1 GiB; they alias one guest buffer) against the default 64 MiB
    // cap: wasmtime charges each string against the cap before copying it, so the host holds
    // at most about the cap, never the gigabyte.
    let host = host_with(|_| {});
    let e = refused_within_bounds(&host, hostile("gigabyte-output"), 256 << 20);
    assert!(
        matches!(e, PolicyError::OutputTooLarge { ref policy, operation: "transform", limit } if policy == "hostile-gigabyte-output" && limit == 64 << 20),
        "{e:?}"
    );
}

/// A policy component in WAT whose `transform` returns a list of 10,000,000 empty strings: the
/// list header (80 MB of zero pages, never touched) is all there is in its memory. Its other
/// exports are valid, so the host loads it like any policy. It implements `@0.1.0` (its
/// metadata has no `kinds`).
pub(crate) fn ten_million_objects() -> String {
    wat_policy(
        1300,
        // Below the list.
        (65536, 4194304),
        r#"
    ;; metadata: name, version, description, kind transform, no schema
    (data (i32.const 256) "\00\04\00\00\0b\00\00\00\10\04\00\00\05\00\00\00\20\04\00\00\16\00\00\00")
    ;; transform: ok(list at 4 MiB with 10,000,000 elements)
    (data (i32.const 512) "\00\00\00\00\00\00\40\00\80\96\98\00")
    (data (i32.const 1024) "ten-million")
    (data (i32.const 1040) "0.0.0")
    (data (i32.const 1056) "returns 10M empty docs")"#,
        "",
        r#"(field "name" string) (field "version" string) (field "description" string)
    (field "kind" $kind) (field "config-schema" (option string))"#,
    )
}

#[test]
fn ten_million_objects_are_refused_before_the_host_allocates_them() {
    // The list header needs 80 MB of guest memory: raise the memory cap so the guest can
    // return it at all; the output cap stays at its default. wasmtime charges the list's host
    // slots (24 bytes each, 240 MB) against the output cap before it allocates them, so the
    // list is refused by the output cap, not the object count (which can only be read once
    // the list was lifted: the guest's post-return frees it right after).
    // Lifting the list into host strings would take 240 MB before a single string was
    // copied; nothing of the kind may happen.
    let host = host_with(|c| c.memory_limit = 128 << 20);
    let e = refused_within_bounds(
        &host,
        wat_step("ten-million", &ten_million_objects()),
        192 << 20,
    );
    assert!(
        matches!(
            e,
            PolicyError::OutputTooLarge {
                ref policy,
                operation: "transform",
                limit,
            } if policy == "ten-million" && limit == 64 << 20
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("ten-million"), "{e}");
}

#[test]
fn a_compile_past_the_timeout_is_refused_without_piling_up_threads() {
    // No disk cache and a 1 ms bound: compiling the hostile component takes far longer.
    let host = PolicyHost::new(gitops_reconciler::policy::HostConfig {
        compile_timeout: Duration::from_millis(1),
        ..Default::default()
    })
    .expect("host");
    let e = failure(&host, hostile("ok"));
    assert!(
        matches!(e, PolicyError::CompileTimeout { ref policy, limit } if policy == "hostile-ok" && limit == Duration::from_millis(1)),
        "{e:?}"
    );
    assert_eq!(
        host.overdue_compiles(),
        1,
        "the compile goes on in the background"
    );
    // Retrying the same module while that compile runs is refused at once (no second
    // compile is registered).
    let e = failure(&host, hostile("ok"));
    assert!(matches!(e, PolicyError::CompileTimeout { .. }), "{e:?}");
    assert_eq!(host.overdue_compiles(), 1);
    // The background compile ends (bounded by the module size cap) and is forgotten.
    let deadline = Instant::now() + Duration::from_secs(120);
    while host.overdue_compiles() > 0 {
        assert!(Instant::now() < deadline, "the overdue compile never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_output_names_the_policy_and_index() {
    let host = host_with(|_| {});
    let e = failure(&host, hostile("bad-json"));
    assert!(
        matches!(e, PolicyError::MalformedOutput { ref policy, step: 1, index: 0, ref reason, .. } if policy == "hostile-bad-json" && reason == "not a JSON object"),
        "{e:?}"
    );
    still_works(&host);
}

#[test]
fn log_flood_is_rate_limited_and_the_call_succeeds() {
    let host = host_with(|_| {});
    let started = Instant::now();
    let outcome = run(&host, hostile("log-flood")).expect("logging too much is not an error");
    assert_eq!(outcome.objects, objects());
    assert!(started.elapsed() < Duration::from_secs(1));
    still_works(&host);
}

#[test]
fn invalid_config_is_refused_by_validate_config() {
    let host = host_with(|_| {});
    let mut step = hostile("ok");
    step.config = serde_json::json!({"mode": "explode"});
    let e = failure(&host, step);
    assert!(
        matches!(e, PolicyError::InvalidConfig { ref path, ref message, .. } if path.as_deref() == Some("/mode") && message.contains("explode")),
        "{e:?}"
    );
    still_works(&host);
}

#[test]
fn digest_mismatch_is_refused_before_compiling() {
    let host = host_with(|_| {});
    let mut step = hostile("ok");
    if let gitops_reconciler::policy::ModuleSource::Component { sha256, .. } = &mut step.module {
        *sha256 = "0".repeat(64);
    }
    let e = failure(&host, step);
    assert!(
        matches!(e, PolicyError::DigestMismatch { ref expected, .. } if *expected == "0".repeat(64)),
        "{e:?}"
    );
    let mut step = hostile("ok");
    if let gitops_reconciler::policy::ModuleSource::Component { sha256, .. } = &mut step.module {
        *sha256 = "ABC".to_owned();
    }
    assert!(matches!(
        failure(&host, step),
        PolicyError::BadDigest { .. }
    ));
    still_works(&host);
}

/// A step whose component is `wat`, assembled to the binary format (the host accepts no text).
fn wat_step(name: &str, wat: &str) -> PolicyStep {
    bytes_step(name, wat::parse_str(wat).expect("valid WAT"))
}

#[test]
fn denied_wasi_import_is_refused_at_load_naming_it() {
    let host = host_with(|_| {});
    let e = failure(
        &host,
        wat_step(
            "sockets",
            r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#,
        ),
    );
    assert!(
        matches!(e, PolicyError::ImportDenied { ref import, .. } if import == "wasi:sockets/tcp@0.2.0"),
        "{e:?}"
    );
    assert!(e.to_string().contains("wasi:sockets/tcp@0.2.0"));
    let e = failure(
        &host,
        wat_step(
            "http",
            r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#,
        ),
    );
    assert!(matches!(e, PolicyError::ImportDenied { .. }), "{e:?}");
    still_works(&host);
}

#[test]
fn missing_exports_and_core_modules_are_not_policy_components() {
    let host = host_with(|_| {});
    let e = failure(&host, wat_step("empty", "(component)"));
    assert!(
        matches!(e, PolicyError::InvalidComponent { ref policy, ref reason } if policy == "empty" && !reason.is_empty()),
        "{e:?}"
    );
    let e = failure(&host, wat_step("core", "(module)"));
    assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{e:?}");
    let e = failure(&host, bytes_step("garbage", b"\0asm garbage".to_vec()));
    assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{e:?}");
    // The text format is never compiled, even when it is a valid component.
    let e = failure(&host, bytes_step("text", b"(component)".to_vec()));
    assert!(
        matches!(e, PolicyError::InvalidComponent { ref reason, .. } if reason.contains("no text format")),
        "{e:?}"
    );
    still_works(&host);
}

#[test]
fn oversized_module_is_refused() {
    let host = host_with(|c| c.max_module_bytes = 1024);
    let e = failure(&host, hostile("ok"));
    assert!(
        matches!(e, PolicyError::ModuleTooLarge { limit: 1024, .. }),
        "{e:?}"
    );
}

#[test]
fn failure_policy_ignore_skips_a_failing_policy_but_never_a_tenancy_breach() {
    // Deadlines are wall-clock: leave room for the good step on a loaded CI machine.
    let host = host_with(|c| c.deadline = Duration::from_millis(500));
    let mut looping = hostile("loop");
    looping.failure_policy = FailurePolicy::Ignore;
    let outcome = host
        .run_pipeline(
            &[looping, hostile("ok")],
            &PolicyContext::default(),
            objects(),
        )
        .expect("the failing step is ignored");
    assert_eq!(outcome.objects, objects());
    assert!(matches!(
        outcome.ignored_failures.as_slice(),
        [PolicyError::Timeout { .. }]
    ));

    let mut breach = hostile("add-cluster-object");
    breach.failure_policy = FailurePolicy::Ignore;
    let ctx = PolicyContext {
        tenancy: Some(Default::default()),
        ..PolicyContext::default()
    };
    match host.run_pipeline(&[breach], &ctx, objects()) {
        Err(PipelineError::Failed(PolicyError::Tenancy { policy, object, .. })) => {
            assert_eq!(policy, "hostile-add-cluster-object");
            assert_eq!(object.to_string(), "ClusterRoleBinding tenant-is-admin");
        }
        other => panic!("expected a tenancy failure, got {other:?}"),
    }
}

#[test]
fn concurrent_calls_are_isolated() {
    let host = host_with(|c| c.deadline = Duration::from_secs(2));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let host = host.clone();
            std::thread::spawn(move || {
                if i == 0 {
                    assert!(matches!(
                        failure(&host, hostile("loop")),
                        PolicyError::Timeout { .. }
                    ));
                } else {
                    for _ in 0..20 {
                        still_works(&host);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

/// Every call gets a fresh instance: what one call leaves in memory is gone for the next, also
/// now that pooled memories keep their pages resident between instances.
#[test]
fn no_state_survives_from_one_call_to_the_next() {
    let host = host_with(|_| {});
    for round in 0..20 {
        run(&host, hostile("remember"))
            .unwrap_or_else(|e| panic!("call {round} found an earlier call's state: {e}"));
        if round % 5 == 4 {
            // A call that grows memory well past what is kept resident, in between.
            let _ = failure(&host, hostile("memory"));
        }
    }
    still_works(&host);
}
