//! Compiling a tenant's component in a child process that is killed at the compile deadline.
//!
//! Cranelift cannot be interrupted, so a compilation running in the reconciler's own process
//! can only be abandoned, not stopped: it keeps a thread and a CPU busy until it ends. In the
//! reconciler, a tenant's component is therefore compiled by the reconciler binary itself,
//! re-executed with the hidden first argument [`COMPILE_WORKER_ARG`]: the child builds an
//! engine with the same configuration ([`super::host::engine_config`]), checks the code
//! limits again, and writes `Engine::precompile_component` output to its stdout; the parent
//! reads it (bounded), and kills and reaps the child when the deadline passes first. The
//! child runs at a lower CPU priority and dies with its parent.

use super::host::{HostConfig, engine_config};
use super::structure::{self, CodeLimits};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The hidden first argument that makes the reconciler binary a compile worker.
pub const COMPILE_WORKER_ARG: &str = "__compile-policy-component";

/// Bytes of the worker's stderr kept for the error message.
const STDERR_BYTES: u64 = 4096;
/// Precompiled code is larger than the component; what the parent reads at most, as a multiple
/// of the component size cap.
const OUTPUT_FACTOR: usize = 16;
/// CPU priority (nice value) of the worker: compiling yields to running policies.
const WORKER_NICE: i32 = 10;

/// Why a compilation in a worker produced nothing.
#[derive(Debug)]
pub(crate) enum WorkerError {
    /// The deadline passed; the worker was killed.
    Timeout,
    /// The worker refused the component or failed, with why.
    Failed(String),
}

/// The settings the worker must share with the parent, as arguments.
fn worker_args(config: &HostConfig) -> Vec<String> {
    let c = &config.code;
    [
        config.memory_limit as u64,
        u64::from(config.max_instances),
        config.max_module_bytes as u64,
        u64::from(c.max_nesting),
        c.max_function_bytes as u64,
        u64::from(c.max_functions),
        c.max_compile_cost,
    ]
    .iter()
    .map(u64::to_string)
    .collect()
}

/// The parent side: compiles `bytes` with `program` as the worker, for at most `timeout`.
/// Returns the precompiled component.
pub(crate) fn compile(
    program: &Path,
    config: &HostConfig,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WorkerError> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .arg(COMPILE_WORKER_ARG)
        .args(worker_args(config))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            WorkerError::Failed(format!(
                "starting the compile worker {}: {e}",
                program.display()
            ))
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(WorkerError::Failed(
            "the compile worker has no pipes".to_owned(),
        ));
    };
    let cap = (config.max_module_bytes.saturating_mul(OUTPUT_FACTOR) + 1) as u64;
    let outcome = std::thread::scope(|s| {
        // The pipes are served by threads so neither side blocks the other; they end when the
        // child exits or is killed (its ends of the pipes close).
        s.spawn(move || {
            // A worker that exits early (refusing the bytes) closes stdin: not an error here.
            let _ = stdin.write_all(bytes);
        });
        let output = s.spawn(move || {
            let mut out = Vec::new();
            stdout.take(cap).read_to_end(&mut out).map(|_| out)
        });
        let errors = s.spawn(move || {
            let mut text = String::new();
            let _ = stderr.take(STDERR_BYTES).read_to_string(&mut text);
            text
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(WorkerError::Timeout);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(WorkerError::Failed(format!(
                        "waiting for the compile worker: {e}"
                    )));
                }
            }
        };
        let output = output.join();
        let errors = errors.join().unwrap_or_default();
        (status, output, errors)
    });
    let (status, output, errors) = outcome;
    let status = status?;
    if !status.success() {
        let said = errors.trim();
        return Err(WorkerError::Failed(if said.is_empty() {
            format!("the compile worker ended with {status}")
        } else {
            said.to_owned()
        }));
    }
    match output {
        Ok(Ok(out)) if (out.len() as u64) < cap => Ok(out),
        Ok(Ok(_)) => Err(WorkerError::Failed(format!(
            "the compiled code is larger than {} bytes",
            cap - 1
        ))),
        Ok(Err(e)) => Err(WorkerError::Failed(format!(
            "reading the compile worker's output: {e}"
        ))),
        Err(_) => Err(WorkerError::Failed(
            "reading the compile worker's output failed".to_owned(),
        )),
    }
}

/// The worker side: run by the reconciler binary when its first argument is
/// [`COMPILE_WORKER_ARG`]. Reads the component from stdin and writes the precompiled code to
/// stdout; a refusal goes to stderr with a failure exit.
pub fn compile_worker_main() -> ExitCode {
    lower_priority_and_die_with_parent();
    match worker() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn worker() -> Result<(), String> {
    let numbers: Vec<u64> = std::env::args()
        .skip(2)
        .map(|a| {
            a.parse::<u64>()
                .map_err(|e| format!("bad argument {a:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let [
        memory_limit,
        max_instances,
        max_module_bytes,
        max_nesting,
        max_function_bytes,
        max_functions,
        max_compile_cost,
    ] = numbers[..]
    else {
        return Err(format!("expected 7 numbers, got {}", numbers.len()));
    };
    let size = |n: u64| usize::try_from(n).map_err(|e| e.to_string());
    let count = |n: u64| u32::try_from(n).map_err(|e| e.to_string());
    let config = HostConfig {
        memory_limit: size(memory_limit)?,
        max_instances: count(max_instances)?,
        max_module_bytes: size(max_module_bytes)?,
        code: CodeLimits {
            max_nesting: count(max_nesting)?,
            max_function_bytes: size(max_function_bytes)?,
            max_functions: count(max_functions)?,
            max_compile_cost,
        },
        ..HostConfig::default()
    };
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(config.max_module_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the component: {e}"))?;
    if bytes.len() > config.max_module_bytes {
        return Err(format!(
            "the component is larger than {} bytes",
            config.max_module_bytes
        ));
    }
    structure::check(&bytes, &config.code)?;
    let engine = wasmtime::Engine::new(&engine_config(&config)).map_err(|e| format!("{e:#}"))?;
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(|e| format!("{e:#}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&compiled)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the compiled code: {e}"))
}

/// The worker yields the CPU to everything else of the reconciler, and is killed when the
/// reconciler dies (so no compilation outlives it).
fn lower_priority_and_die_with_parent() {
    // SAFETY: plain system calls on this process with constant arguments; no memory is shared.
    #[allow(unsafe_code)]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, WORKER_NICE);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}
