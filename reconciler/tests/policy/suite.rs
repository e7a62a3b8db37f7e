//! The hostile-component suite: one row per way a policy can misbehave (the failure classes of
//! the reliability rules and the host-hardening cases), each run on one host with the default
//! limits, between good calls. Every row asserts that the call ended within the deadline plus
//! [`SLACK`], its outcome and error text (naming the policy), that no instance slot and no
//! overdue compilation is left behind, and that the process RSS grew by less than
//! [`MAX_RSS_GROWTH`]. The table is printed (`cargo test ... suite -- --nocapture`).

use crate::hostile::ten_million_objects;
use crate::support::*;
use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{
    PipelineError, PipelineOutcome, PolicyContext, PolicyHost, PolicyStep, Severity, Tenancy,
};
use std::time::{Duration, Instant};

/// How far past the deadline a case may end.
const SLACK: Duration = Duration::from_secs(1);
/// How much a case may grow the process RSS.
const MAX_RSS_GROWTH: u64 = 256 << 20;

/// What a case must end with.
enum Expect {
    /// Succeeds (the misbehaviour is harmless by construction).
    Ok,
    /// Fails; the error text contains each of these.
    Fails(&'static [&'static str]),
    /// Is denied; `check` looks at the violations.
    Denied(fn(&[gitops_reconciler::policy::Violation]) -> Result<(), String>),
}

struct Case {
    name: &'static str,
    step: PolicyStep,
    ctx: PolicyContext,
    expect: Expect,
}

fn tenant(namespace: &str) -> PolicyContext {
    PolicyContext {
        kustomization_namespace: namespace.to_owned(),
        kustomization_name: "app".to_owned(),
        ..PolicyContext::default()
    }
}

/// A case, run as a tenant of its own (so the failure budget of one case never refuses
/// another).
fn case(name: &'static str, step: PolicyStep, expect: Expect) -> Case {
    Case {
        name,
        ctx: tenant(&step.name),
        step,
        expect,
    }
}

/// The policy component of [`ten_million_objects`] with another metadata name and version
/// (each at most 16 bytes).
fn metadata_component(name: &str, version: &str) -> Vec<u8> {
    // Its memory made small enough for the pool (the transform that needs 80 MB is never
    // called: loading fails at the metadata).
    let original = ten_million_objects();
    let wat = original
        .replace(
            r#"(memory (export "memory") 1300)"#,
            r#"(memory (export "memory") 100)"#,
        )
        .replace(
            r"\0b\00\00\00\10\04",
            &format!(r"\{:02x}\00\00\00\10\04", name.len()),
        )
        .replace(
            r"\05\00\00\00\20\04",
            &format!(r"\{:02x}\00\00\00\20\04", version.len()),
        )
        .replace(r#""ten-million""#, &format!("{name:?}"))
        .replace(r#""0.0.0""#, &format!("{version:?}"));
    assert_ne!(wat, original);
    wat::parse_str(wat).expect("valid WAT")
}

fn cases() -> Vec<Case> {
    let fails = Expect::Fails;
    let mut cases = vec![
        case(
            "cpu loop",
            hostile("loop"),
            fails(&["hostile-loop: transform exceeded its deadline of 1s"]),
        ),
        case("sleep 100 s", hostile("sleep"), Expect::Ok),
        case(
            "sleep for Duration::MAX",
            hostile("sleep-forever"),
            Expect::Ok,
        ),
        case(
            "64 MiB of random bytes",
            hostile("random-flood"),
            fails(&[
                "hostile-random-flood: transform trapped",
                "exceeds limit 4096",
            ]),
        ),
        case(
            "memory bomb",
            hostile("memory"),
            fails(&["hostile-memory: transform exceeded its memory limit of 67108864 bytes"]),
        ),
        case(
            "deep recursion",
            hostile("recursion"),
            fails(&[
                "hostile-recursion: transform trapped",
                "call stack exhausted",
            ]),
        ),
        case(
            "panic",
            hostile("panic"),
            fails(&[
                "hostile-panic: transform trapped",
                "hostile policy panics on purpose",
            ]),
        ),
        case(
            "1 MiB to stderr, then panic",
            hostile("stderr-flood"),
            fails(&[
                "hostile-stderr-flood: transform trapped",
                "hostile policy panics after flooding stderr",
            ]),
        ),
        case(
            "exit(3)",
            hostile("exit"),
            fails(&["hostile-exit: transform trapped: Exited with i32 exit status 1"]),
        ),
        case(
            "probe every WASI interface",
            hostile("probe-wasi"),
            Expect::Ok,
        ),
        case("log flood", hostile("log-flood"), Expect::Ok),
        case(
            "200,000 objects",
            hostile("many-objects"),
            fails(&[
                "hostile-many-objects: transform returned 200000 objects, over the limit of 100000",
            ]),
        ),
        case(
            "1 GiB of output",
            hostile("gigabyte-output"),
            fails(&[
                "hostile-gigabyte-output: transform returned more than the output limit of 67108864 bytes",
            ]),
        ),
        case(
            "not JSON",
            hostile("bad-json"),
            fails(&[
                "hostile-bad-json (step 1 of the pipeline): transform returned a malformed object at index 0",
            ]),
        ),
        case(
            "10,000-deep arrays",
            hostile("deep-array"),
            fails(&[
                "hostile-deep-array (step 1 of the pipeline)",
                "(ConfigMap apps/malformed)",
                "recursion limit exceeded",
            ]),
        ),
        case(
            "number 1e400",
            hostile("huge-number"),
            fails(&[
                "hostile-huge-number (step 1 of the pipeline)",
                "(ConfigMap apps/malformed)",
                "number out of range",
            ]),
        ),
        case(
            "lone surrogate",
            hostile("lone-surrogate"),
            fails(&[
                "hostile-lone-surrogate (step 1 of the pipeline)",
                "(ConfigMap apps/malformed)",
                "hex escape",
            ]),
        ),
        case(
            "20,000 violations",
            hostile("violation-flood"),
            Expect::Denied(|v| {
                let errors = v.iter().filter(|v| v.severity == Severity::Error).count();
                let last = v.last().map(|v| v.message.as_str()).unwrap_or_default();
                (v.len() == 1001
                    && errors == 1001
                    && last.starts_with(
                        "19000 more violations not shown (19000 of them of severity error)",
                    ))
                .then_some(())
                .ok_or_else(|| format!("{} violations ({errors} errors), last: {last}", v.len()))
            }),
        ),
        case(
            "metadata that never returns",
            bytes_step("sleepy-metadata", dist("hostile-metadata")),
            fails(&["sleepy-metadata: metadata exceeded its deadline of 1s"]),
        ),
        case(
            "metadata: bad name",
            bytes_step("bad-name", metadata_component("Bad Name", "1.0.0")),
            fails(&[
                "bad-name: not a valid policy component: its metadata name \"Bad Name\" is not",
            ]),
        ),
        case(
            "metadata: bad version",
            bytes_step("bad-version", metadata_component("ok", "one")),
            fails(&[
                "bad-version: not a valid policy component: its metadata version \"one\" is not a semantic version",
            ]),
        ),
        case(
            "100,000 nested blocks",
            bytes_step("nest-bomb", nested_blocks(100_000, 1)),
            fails(&[
                "nest-bomb: not a valid policy component: function 0 nests control flow deeper than 2000 levels",
            ]),
        ),
        case(
            "200 functions of 1,900 nested blocks",
            bytes_step("cost-bomb", nested_blocks(1_900, 200)),
            fails(&[
                "cost-bomb: not a valid policy component: its code is too expensive to compile",
            ]),
        ),
        case(
            "text format",
            bytes_step("text", b"(component)".to_vec()),
            fails(&["text: not a valid policy component: not a binary WebAssembly component"]),
        ),
    ];
    let mut breach = hostile("add-cluster-object");
    breach.failure_policy = FailurePolicy::Ignore;
    cases.push(Case {
        name: "adds a ClusterRoleBinding (failurePolicy Ignore)",
        step: breach,
        ctx: PolicyContext {
            tenancy: Some(Tenancy::default()),
            ..tenant("suite-tenancy")
        },
        expect: fails(&["hostile-add-cluster-object: transform output breaks tenancy: ClusterRoleBinding tenant-is-admin"]),
    });
    cases.push(Case {
        name: "adds a ClusterIssuer (cluster-scoped CRD)",
        step: hostile("add-cluster-custom-object"),
        ctx: PolicyContext {
            tenancy: Some(Tenancy {
                cluster_scoped_kinds: vec!["ClusterIssuer.cert-manager.io".to_owned()],
                ..Tenancy::default()
            }),
            ..tenant("suite-tenancy")
        },
        expect: fails(&["hostile-add-cluster-custom-object: transform output breaks tenancy: ClusterIssuer tenant-issuer"]),
    });
    let mut ignored = hostile("huge-number");
    ignored.failure_policy = FailurePolicy::Ignore;
    cases.push(case(
        "number 1e400 (failurePolicy Ignore)",
        ignored,
        Expect::Ok,
    ));
    cases
}

/// The good call that must work after each hostile one.
fn still_works(host: &PolicyHost) -> Result<(), String> {
    let outcome = host
        .run_pipeline(&[hostile("ok")], &tenant("suite-good"), objects())
        .map_err(|e| format!("a good policy failed after a hostile one: {e}"))?;
    (outcome.objects == objects())
        .then_some(())
        .ok_or_else(|| "a good policy changed the objects".to_owned())
}

fn judge(case: &Case, result: &Result<PipelineOutcome, PipelineError>) -> Result<(), String> {
    match (&case.expect, result) {
        (Expect::Ok, Ok(_)) => Ok(()),
        (Expect::Fails(texts), Err(PipelineError::Failed(e))) => {
            let text = e.to_string();
            match texts.iter().find(|t| !text.contains(**t)) {
                None => Ok(()),
                Some(missing) => Err(format!("error lacks {missing:?}")),
            }
        }
        (Expect::Denied(check), Err(PipelineError::Denied { violations })) => check(violations),
        _ => Err("unexpected outcome".to_owned()),
    }
}

#[test]
fn every_hostile_case_ends_bounded_with_a_clear_error_and_leaves_nothing_behind() {
    let host = host_with(|_| {});
    let deadline = host.config().deadline;
    let mut problems = Vec::new();
    let mut table = vec![format!(
        "{:<48} {:>9} {:>8}  {}",
        "case", "ms", "RSS MiB", "outcome"
    )];
    for case in cases() {
        if let Err(e) = still_works(&host) {
            problems.push(format!("before {}: {e}", case.name));
        }
        let rss = rss_bytes();
        let started = Instant::now();
        let result = host.run_pipeline(std::slice::from_ref(&case.step), &case.ctx, objects());
        let elapsed = started.elapsed();
        let grown = rss_bytes().saturating_sub(rss);
        let outcome = match &result {
            Ok(o) if o.ignored_failures.is_empty() => "ok".to_owned(),
            Ok(o) => format!("ok, ignored: {}", o.ignored_failures[0]),
            Err(PipelineError::Denied { violations }) => {
                format!("denied: {} violations", violations.len())
            }
            Err(e) => e.to_string(),
        };
        table.push(format!(
            "{:<48} {:>9} {:>8}  {}",
            case.name,
            elapsed.as_millis(),
            grown >> 20,
            outcome.chars().take(220).collect::<String>()
        ));
        let mut fail = |what: String| problems.push(format!("{}: {what} ({outcome})", case.name));
        if let Err(e) = judge(&case, &result) {
            fail(e);
        }
        if elapsed > deadline + SLACK {
            fail(format!(
                "took {elapsed:?}, over the deadline {deadline:?} + {SLACK:?}"
            ));
        }
        if grown > MAX_RSS_GROWTH {
            fail(format!("RSS grew by {} MiB", grown >> 20));
        }
        if host.slots_in_use() != 0 {
            fail(format!("{} instance slots left taken", host.slots_in_use()));
        }
        if host.overdue_compiles() != 0 {
            fail(format!(
                "{} compilations left running",
                host.overdue_compiles()
            ));
        }
        if let Err(e) = still_works(&host) {
            fail(e);
        }
    }
    println!("{}", table.join("\n"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One tenant whose policies all run into their deadline holds at most its share of the
/// instance slots: another tenant's policies keep running at once, the stuck tenant's calls
/// beyond its share wait at most until their own deadlines, and every slot comes back.
#[test]
fn a_stuck_tenant_cannot_take_the_slots_of_another() {
    let deadline = Duration::from_secs(2);
    // One slot per tenant, so only one looping call burns a core while the good tenant runs;
    // two CPU turns, fewer than the stuck tenant's pipelines, so a pipeline that kept its turn
    // while waiting for its tenant's slot would leave none for the good tenant.
    let host = host_with(|c| {
        c.deadline = deadline;
        c.max_instances = 3;
        c.max_instances_per_tenant = 1;
        c.cpu_turns = 2;
    });
    still_works_for(&host, "good");
    std::thread::scope(|s| {
        let stuck: Vec<_> = (0..3)
            .map(|_| {
                let host = host.clone();
                s.spawn(move || {
                    let started = Instant::now();
                    let r = host.run_pipeline(&[hostile("loop")], &tenant("evil"), objects());
                    (r, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            host.slots_in_use(),
            1,
            "the stuck tenant holds more than its share"
        );
        for _ in 0..5 {
            let started = Instant::now();
            still_works_for(&host, "good");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a good tenant waited {:?} next to a stuck one",
                started.elapsed()
            );
            // The good tenant's call gave its slot back; the stuck tenant never holds more than
            // its one (none once its calls reached their deadline).
            assert!(
                host.slots_in_use() <= 1,
                "the stuck tenant holds more than its share"
            );
        }
        for handle in stuck {
            let (r, elapsed) = handle.join().expect("thread");
            let e = match r {
                Err(PipelineError::Failed(e)) => e.to_string(),
                other => panic!("a stuck call did not fail: {other:?}"),
            };
            // A call that waited for its tenant's slot is refused at its deadline, or (when the
            // slot came free just before it) starts and is interrupted there.
            assert!(
                e.contains("did not start before its deadline: its tenant (namespace \"evil\") already runs 1 policy instances, its limit")
                    || e.contains("hostile-loop: transform exceeded its deadline of 2s"),
                "{e}"
            );
            assert!(elapsed < deadline + SLACK, "{elapsed:?}: {e}");
        }
    });
    assert_eq!(host.slots_in_use(), 0);
}

fn still_works_for(host: &PolicyHost, namespace: &str) {
    let outcome = host
        .run_pipeline(&[hostile("ok")], &tenant(namespace), objects())
        .expect("a good policy runs");
    assert_eq!(outcome.objects, objects());
}

/// The code limits bound compile time: the most expensive component they accept (deepest
/// nesting in as many functions as the compile-cost budget allows) compiles in seconds, not
/// the minutes a nesting bomb below the size cap would take.
#[test]
fn the_most_expensive_accepted_code_compiles_in_seconds() {
    let host = gitops_reconciler::policy::PolicyHost::new(Default::default()).expect("host");
    // 2,000 nested blocks cost about 4,000,000 each: 49 of them stay under the budget.
    let bytes = nested_blocks(2_000, 49);
    let started = Instant::now();
    let e = host
        .load("costly", &component(bytes))
        .expect_err("compiles, then fails the world check");
    let elapsed = started.elapsed();
    println!("compiling 49 functions of 2,000 nested blocks took {elapsed:?}");
    assert!(
        e.to_string()
            .contains("costly: not a valid policy component")
            && !e.to_string().contains("too expensive")
            && !e.to_string().contains("nests control flow"),
        "the code limits refused it: {e}"
    );
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

/// A tenant whose calls keep failing uses up its failure budget and is then refused at once,
/// naming why; another tenant is not affected, and the slots all come back.
#[test]
fn a_tenant_whose_policies_keep_failing_is_refused_until_its_budget_drains() {
    let host = host_with(|c| {
        c.deadline = Duration::from_millis(500);
        c.tenant_failure_budget = Duration::from_millis(800);
    });
    for _ in 0..2 {
        let e = host
            .run_pipeline(&[hostile("loop")], &tenant("evil"), objects())
            .expect_err("loops");
        assert!(e.to_string().contains("exceeded its deadline"), "{e}");
    }
    let started = Instant::now();
    let e = host
        .run_pipeline(&[hostile("loop")], &tenant("evil"), objects())
        .expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.to_string().contains(
            "did not start before its deadline: the policies of its tenant (namespace \"evil\") failed for more than 800ms in the last minute"
        ),
        "{e}"
    );
    still_works_for(&host, "good");
    assert_eq!(host.slots_in_use(), 0);
}

/// A config the policy refuses and a module whose metadata is invalid fail before any call
/// runs; their time counts against the tenant's failure budget all the same, so a tenant
/// retrying them is refused at once after a while, naming why. Another tenant is not affected.
#[test]
fn refused_configs_and_failed_loads_use_up_the_failure_budget() {
    let host = host_with(|c| c.tenant_failure_budget = Duration::from_millis(30));
    let refused = |e: &PipelineError| {
        let text = e.to_string();
        text.contains("did not start before its deadline: the policies of its tenant")
            && text.contains("failed for more than 30ms")
    };
    let bad_config = PolicyStep {
        config: serde_json::json!({"mode": "no-such-mode"}),
        ..hostile("ok")
    };
    let bad_metadata = bytes_step("bad-metadata", metadata_component("Bad_Name", "1.0.0"));
    for (step, failure) in [
        (&bad_config, "unknown mode"),
        (&bad_metadata, "its metadata name \"Bad_Name\""),
    ] {
        let ns = format!("retrying-{}", step.name);
        let attempts = (1..=500)
            .find(|_| {
                let e = host
                    .run_pipeline(std::slice::from_ref(step), &tenant(&ns), objects())
                    .expect_err("fails");
                if refused(&e) {
                    return true;
                }
                assert!(e.to_string().contains(failure), "{e}");
                false
            })
            .unwrap_or_else(|| panic!("{} was never refused", step.name));
        assert!(attempts > 1, "refused before any failure");
        // Refused from now on, before compiling or calling anything (the refusal names the
        // load for a module not loaded yet, the call for a loaded one).
        let e = host
            .run_pipeline(std::slice::from_ref(step), &tenant(&ns), objects())
            .expect_err("refused");
        assert!(refused(&e), "{e}");
    }
    still_works_for(&host, "not-retrying");
    assert_eq!(host.slots_in_use(), 0);
}

/// A module whose load failed for a reason of its own (here `metadata` running into its
/// deadline) is not loaded again when retried: the retry gets the same error at once, without
/// a second `metadata` call burning a second of CPU, and is still charged to its tenant's
/// failure budget with the time the load took, so retrying it uses the budget up as before.
/// Another tenant is not affected.
#[test]
fn a_failed_load_is_answered_from_memory_and_still_charged() {
    let host = host_with(|c| c.tenant_failure_budget = Duration::from_secs(3));
    let step = bytes_step("sleepy-retried", dist("hostile-metadata"));
    let retry = || {
        let started = Instant::now();
        let e = host
            .run_pipeline(std::slice::from_ref(&step), &tenant("retrying"), objects())
            .expect_err("never loads");
        (e.to_string(), started.elapsed())
    };
    let (first, took) = retry();
    assert!(
        first.contains("sleepy-retried: metadata exceeded its deadline of 1s"),
        "{first}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let mut refused = false;
    for _ in 0..5 {
        let (again, took) = retry();
        assert!(
            took < Duration::from_millis(500),
            "a retry took {took:?}: {again}"
        );
        if again.contains("did not start before its deadline: the policies of its tenant") {
            refused = true;
            break;
        }
        assert_eq!(again, first);
    }
    assert!(refused, "the remembered failures were not charged");
    still_works_for(&host, "not-retrying");
    assert_eq!(host.slots_in_use(), 0);
}

/// Time the calling thread has spent on a CPU and runnable but waiting for one, so far (the
/// kernel's scheduler statistics); the rest of its life it slept.
fn thread_sched() -> (Duration, Duration) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let mut fields = text
        .split_whitespace()
        .map(|n| n.parse().expect("nanoseconds"));
    let mut next = || Duration::from_nanos(fields.next().expect("a schedstat field"));
    (next(), next())
}

/// A tenant whose policies failed recently runs on probation: after the first quarter of its
/// deadline, a call that loops sleeps off the CPU at every epoch check, so a tenant looping over
/// and over leaves
/// the CPUs to the others: its thread sleeps longer than it runs, where the loop of a tenant
/// that never failed, at the same time, runs all along. (Time runnable but waiting for a CPU
/// depends on the machine's load and is left out of both.)
#[test]
fn a_tenant_that_failed_recently_loops_on_a_fraction_of_a_cpu() {
    let host = host_with(|c| c.deadline = Duration::from_millis(600));
    let looped = |namespace: &str| {
        let ((cpu, runnable), started) = (thread_sched(), Instant::now());
        let e = host
            .run_pipeline(&[hostile("loop")], &tenant(namespace), objects())
            .expect_err("loops");
        assert!(e.to_string().contains("exceeded its deadline"), "{e}");
        let wall = started.elapsed();
        let (cpu_after, runnable_after) = thread_sched();
        let on_cpu = cpu_after - cpu;
        let slept = wall.saturating_sub(on_cpu + (runnable_after - runnable));
        (slept, on_cpu, wall)
    };
    // Loaded and compiled before anything is measured.
    still_works_for(&host, "warm-up");
    looped("failed-before");
    let (probation, fresh) = std::thread::scope(|s| {
        let probation = s.spawn(|| looped("failed-before"));
        let fresh = s.spawn(|| looped("never-failed"));
        (
            probation.join().expect("probation thread"),
            fresh.join().expect("fresh thread"),
        )
    });
    let report = format!(
        "on probation: slept {:?}, on a CPU {:?}, in {:?}; never failed: slept {:?}, on a CPU {:?}, in {:?}",
        probation.0, probation.1, probation.2, fresh.0, fresh.1, fresh.2
    );
    assert!(
        probation.2 >= Duration::from_millis(550)
            && probation.2 < Duration::from_millis(600) + SLACK,
        "the call on probation still ends at its deadline: {report}"
    );
    assert!(probation.0 > probation.1, "{report}");
    // Its earlier failure ran to the deadline, so it pauses from its start: well under the
    // first quarter of the deadline (150 ms) that a tenant with only short failures runs freely.
    assert!(probation.1 < Duration::from_millis(120), "{report}");
    assert!(fresh.0 * 4 < fresh.1, "{report}");
    still_works_for(&host, "not-looping");
    assert_eq!(host.slots_in_use(), 0);
}
