//! A hostile policy for the host's tests. Its config picks the misbehaviour of `transform`
//! (`{"mode": "<mode>"}`, one [`Mode`] each, in kebab case). `validate` reports one warning
//! (so a test can tell that the instance after a hostile one still works), except in mode
//! `violation-flood`.

use gitops_policy_sdk::{
    ConfigError, Context, Level, Metadata, Object, Policy, PolicyError, PolicyKind, Value,
    Violation, json, log,
};
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by a `remember` call; in wasm every call runs in a fresh instance, so no call may ever
/// find it set.
static REMEMBERED: AtomicBool = AtomicBool::new(false);

/// The hostile policy.
pub struct Hostile;

/// Misbehaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Returns the objects unchanged.
    Ok,
    /// Spins forever.
    Loop,
    /// Allocates without bound (towards 4 GiB).
    Memory,
    /// Recurses without bound.
    Recursion,
    /// Panics (a trap in wasm: `panic = "abort"`).
    Panic,
    /// Returns 200,000 (empty) objects.
    ManyObjects,
    /// Returns one 24 MiB object.
    BigObject,
    /// Returns 1 GiB: 2^20 strings of 1 KiB that all alias one buffer (see [`gigabyte`]).
    GigabyteOutput,
    /// Returns a string that is not JSON.
    BadJson,
    /// Writes 10,000 log lines.
    LogFlood,
    /// Appends a ClusterRoleBinding granting cluster-admin (a tenancy breach).
    AddClusterObject,
    /// Appends a cluster-scoped custom resource, a cert-manager `ClusterIssuer` (a tenancy
    /// breach only discovery can tell).
    AddClusterCustomObject,
    /// Fails if an earlier call left its mark in the instance's memory, then leaves it: proves
    /// the host gives every call fresh state.
    Remember,
    /// Sleeps 100 s (`wasi:clocks/monotonic-clock.subscribe-duration` + `pollable.block`).
    Sleep,
    /// Sleeps for `Duration::MAX`: a pollable that would never become ready.
    SleepForever,
    /// Asks `wasi:random/random.get-random-bytes` for 64 MiB in one call.
    RandomFlood,
    /// Writes 1 MiB to stderr, then panics.
    StderrFlood,
    /// Calls `wasi:cli/exit.exit` with status 3.
    Exit,
    /// Tries every WASI interface for something of the outside world (files, environment,
    /// arguments, stdin, clocks, randomness) and fails naming whatever it got.
    ProbeWasi,
    /// Returns an object nested 10,000 arrays deep.
    DeepArray,
    /// Returns an object with the number `1e400`.
    HugeNumber,
    /// Returns an object with a lone surrogate `\ud800`.
    LoneSurrogate,
    /// `validate` reports 20,000 violations of severity error.
    ViolationFlood,
}

/// `objects` with `object` added at the end.
fn appended(mut objects: Vec<Object>, object: Value) -> Vec<Object> {
    objects.push(Object::from(object));
    objects
}

/// One ConfigMap whose `data.x` is `tail` verbatim: the head is valid, the rest is what a
/// careless or hostile policy might write (the SDK hands such text back unparsed).
fn raw(tail: String) -> Result<Vec<Object>, PolicyError> {
    let text = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"malformed","namespace":"apps"}},"data":{{"x":{tail}}}}}"#
    );
    Object::from_json(text)
        .map(|o| vec![o])
        .map_err(|message| PolicyError {
            message,
            object: None,
        })
}

/// Everything the WASI interfaces give a guest that could come from outside; `Err` names what
/// did. The host's deny-all context gives nothing: no files, an empty environment and
/// arguments, an empty stdin, clocks at zero, constant random bytes.
fn probe_wasi() -> Result<(), String> {
    let mut found = Vec::new();
    for path in ["/etc/passwd", "/", ".", "/proc/self/environ"] {
        if std::fs::read_dir(path).is_ok() || std::fs::read(path).is_ok() {
            found.push(format!("file {path} is readable"));
        }
    }
    if std::fs::write("/tmp/hostile", b"x").is_ok() {
        found.push("a file could be written".to_owned());
    }
    if std::env::vars_os().next().is_some() {
        found.push("the environment is not empty".to_owned());
    }
    if std::env::args_os().next().is_some() {
        found.push("the arguments are not empty".to_owned());
    }
    let mut stdin = Vec::new();
    if std::io::stdin()
        .read_to_end(&mut stdin)
        .map_or(true, |n| n > 0)
    {
        found.push("stdin is not an empty stream".to_owned());
    }
    if std::time::SystemTime::now() != std::time::UNIX_EPOCH {
        found.push("the wall clock is not frozen at the epoch".to_owned());
    }
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(10));
    if start.elapsed() != Duration::ZERO {
        found.push("the monotonic clock moves".to_owned());
    }
    let random = random_bytes(16);
    if random.iter().any(|b| *b != 0) {
        found.push("random bytes are not constant".to_owned());
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

/// `wasi:random/random.get-random-bytes(len)`, called directly (the standard library only
/// ever asks for a few bytes).
#[cfg(target_arch = "wasm32")]
fn random_bytes(len: u64) -> Vec<u8> {
    wasi_random::wasi::random::random::get_random_bytes(len)
}

/// Natively there is no host to ask: as many zero bytes as the deny-all host returns.
#[cfg(not(target_arch = "wasm32"))]
fn random_bytes(len: u64) -> Vec<u8> {
    vec![0; len.min(4096) as usize]
}

#[cfg(target_arch = "wasm32")]
mod wasi_random {
    wit_bindgen::generate!({
        inline: "
            package hostile:imports;
            world random {
                import wasi:random/random@0.2.0;
            }
            package wasi:random@0.2.0 {
                interface random {
                    get-random-bytes: func(len: u64) -> list<u8>;
                    get-random-u64: func() -> u64;
                }
            }
        ",
        world: "hostile:imports/random",
        generate_all,
    });
}

#[inline(never)]
fn recurse(depth: u64, acc: &mut [u64; 8]) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    acc[(depth % 8) as usize] = black_box(depth);
    black_box(recurse(depth + 1, black_box(acc))) + acc[0]
}

impl Policy for Hostile {
    type Config = Mode;

    fn metadata() -> Metadata {
        Metadata {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            description: "Misbehaves on request; for tests only.".to_owned(),
            kind: PolicyKind::Both,
            config_schema: None,
            kinds: None,
        }
    }

    fn parse_config(config: &Value) -> Result<Mode, ConfigError> {
        Ok(
            match config.get("mode").and_then(Value::as_str).unwrap_or("ok") {
                "ok" => Mode::Ok,
                "loop" => Mode::Loop,
                "memory" => Mode::Memory,
                "recursion" => Mode::Recursion,
                "panic" => Mode::Panic,
                "many-objects" => Mode::ManyObjects,
                "big-object" => Mode::BigObject,
                "gigabyte-output" => Mode::GigabyteOutput,
                "bad-json" => Mode::BadJson,
                "log-flood" => Mode::LogFlood,
                "add-cluster-object" => Mode::AddClusterObject,
                "add-cluster-custom-object" => Mode::AddClusterCustomObject,
                "remember" => Mode::Remember,
                "sleep" => Mode::Sleep,
                "sleep-forever" => Mode::SleepForever,
                "random-flood" => Mode::RandomFlood,
                "stderr-flood" => Mode::StderrFlood,
                "exit" => Mode::Exit,
                "probe-wasi" => Mode::ProbeWasi,
                "deep-array" => Mode::DeepArray,
                "huge-number" => Mode::HugeNumber,
                "lone-surrogate" => Mode::LoneSurrogate,
                "violation-flood" => Mode::ViolationFlood,
                other => return Err(ConfigError::at("/mode", format!("unknown mode {other:?}"))),
            },
        )
    }

    fn transform(
        _ctx: &Context,
        mode: &Mode,
        objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        match mode {
            Mode::Ok => Ok(objects),
            Mode::Loop => loop {
                black_box(());
            },
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Mode::Recursion => {
                let mut acc = [0u64; 8];
                Ok(vec![json!(recurse(0, &mut acc)).into()])
            }
            Mode::Panic => panic!("hostile policy panics on purpose"),
            Mode::ManyObjects => Ok(vec![Object::from(json!({})); 200_000]),
            Mode::BigObject => Ok(vec![
                json!({"kind": "ConfigMap", "data": {"x": "x".repeat(24 << 20)}}).into(),
            ]),
            // Only reachable natively: the component's export answers this mode with
            // `gigabyte`; here it is the same object list in honest form, a few entries long.
            Mode::GigabyteOutput => Ok(vec![json!({"kind": "ConfigMap"}).into(); 4]),
            Mode::BadJson => Ok(vec![Value::String("not an object".to_owned()).into()]),
            Mode::AddClusterObject => Ok(appended(
                objects,
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "tenant-is-admin"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "apps"}]
                }),
            )),
            Mode::AddClusterCustomObject => Ok(appended(
                objects,
                json!({
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "ClusterIssuer",
                    "metadata": {"name": "tenant-issuer"},
                    "spec": {"selfSigned": {}}
                }),
            )),
            Mode::Remember => {
                if REMEMBERED.swap(true, Ordering::Relaxed) {
                    return Err(PolicyError {
                        message: "state survived from an earlier call".to_owned(),
                        object: None,
                    });
                }
                Ok(objects)
            }
            Mode::LogFlood => {
                for i in 0..10_000 {
                    log(Level::Info, &format!("line {i} {}", "y".repeat(4096)));
                }
                Ok(objects)
            }
            Mode::Sleep => {
                std::thread::sleep(Duration::from_secs(100));
                Ok(objects)
            }
            Mode::SleepForever => {
                std::thread::sleep(Duration::MAX);
                Ok(objects)
            }
            Mode::RandomFlood => {
                let bytes = random_bytes(64 << 20);
                Ok(vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "random"}, "data": {"n": bytes.len().to_string()}}).into()])
            }
            Mode::StderrFlood => {
                let line = "e".repeat(1023);
                let mut stderr = std::io::stderr();
                for _ in 0..1024 {
                    let _ = writeln!(stderr, "{line}");
                }
                panic!("hostile policy panics after flooding stderr")
            }
            Mode::Exit => std::process::exit(3),
            Mode::ProbeWasi => match probe_wasi() {
                Ok(()) => Ok(objects),
                Err(found) => Err(PolicyError {
                    message: found,
                    object: None,
                }),
            },
            Mode::DeepArray => raw(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            Mode::HugeNumber => raw("1e400".to_owned()),
            Mode::LoneSurrogate => raw(r#""\ud800""#.to_owned()),
            Mode::ViolationFlood => Ok(objects),
        }
    }

    fn validate(_ctx: &Context, mode: &Mode, objects: &[Object]) -> Vec<Violation> {
        if *mode == Mode::ViolationFlood {
            return (0..20_000)
                .map(|i| Violation {
                    object: None,
                    field: Some(format!("/spec/{i}")),
                    message: format!("violation {i}"),
                    severity: gitops_policy_sdk::Severity::Error,
                })
                .collect();
        }
        vec![Violation {
            object: None,
            field: None,
            message: format!("hostile saw {} objects", objects.len()),
            severity: gitops_policy_sdk::Severity::Warning,
        }]
    }
}

/// 2^20 JSON documents of 1 KiB each, 1 GiB in all, in about 1 KiB of guest memory plus the
/// list itself (24 MiB of `String` headers): every `String` aliases one leaked buffer.
///
/// Deliberately unsound, and only for this hostile fixture: the strings are handed to the
/// canonical ABI, which transfers them to the host; the host must refuse the output (its output
/// cap) before copying 1 GiB, and the instance is discarded without running its post-return
/// (which would free the aliases).
#[cfg(target_arch = "wasm32")]
fn gigabyte() -> Vec<String> {
    let doc: &'static mut str = Box::leak(
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"x"}},"data":{{"x":"{}"}}}}"#,
            "x".repeat(960)
        )
        .into_boxed_str(),
    );
    let (ptr, len) = (doc.as_mut_ptr(), doc.len());
    (0..1 << 20)
        // SAFETY: see above; the aliases are never used or freed by this instance.
        .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
        .collect()
}

/// The component's exports: the SDK's (as `export_policy!` generates them), except that
/// `transform` in mode `gigabyte-output` returns [`gigabyte`].
#[cfg(target_arch = "wasm32")]
const _: () = {
    use gitops_policy_sdk::bindings::kubectl_gitops::policy::types as wit;
    use gitops_policy_sdk::glue;

    struct Component;
    impl gitops_policy_sdk::bindings::Guest for Component {
        fn metadata() -> wit::Metadata {
            glue::metadata::<Hostile>()
        }
        fn validate_config(config: String) -> Result<(), wit::ConfigError> {
            glue::validate_config::<Hostile>(&config)
        }
        fn transform(
            context: wit::Context,
            config: String,
            objects: Vec<String>,
        ) -> Result<Vec<String>, wit::PolicyError> {
            let mode = gitops_policy_sdk::serde_json::from_str(&config)
                .ok()
                .and_then(|c| Hostile::parse_config(&c).ok());
            if mode == Some(Mode::GigabyteOutput) {
                return Ok(gigabyte());
            }
            glue::transform::<Hostile>(context, &config, objects)
        }
        fn validate(
            context: wit::Context,
            config: String,
            objects: Vec<String>,
        ) -> Vec<wit::Violation> {
            glue::validate::<Hostile>(context, &config, objects)
        }
    }
    gitops_policy_sdk::bindings::export_component!(Component with_types_in gitops_policy_sdk::bindings);
};
