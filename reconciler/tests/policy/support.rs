//! Shared helpers of the policy host tests.

use gitops_reconciler::api::FailurePolicy;
use gitops_reconciler::policy::{HostConfig, ModuleSource, PolicyHost, PolicyStep};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component as a step source with its real digest.
pub fn component(bytes: Vec<u8>) -> ModuleSource {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    ModuleSource::Component {
        bytes: Arc::from(bytes),
        sha256,
    }
}

/// The committed hostile test component.
pub fn hostile_bytes() -> Vec<u8> {
    dist("hostile")
}

/// A committed component of `policies/dist/`.
pub fn dist(name: &str) -> Vec<u8> {
    std::fs::read(repo().join(format!("policies/dist/{name}.wasm")))
        .unwrap_or_else(|e| panic!("policies/dist/{name}.wasm is committed: {e}"))
}

/// A step running the hostile component in `mode`.
pub fn hostile(mode: &str) -> PolicyStep {
    PolicyStep {
        name: format!("hostile-{mode}"),
        module: component(hostile_bytes()),
        config: json!({ "mode": mode }),
        failure_policy: FailurePolicy::Fail,
    }
}

/// A step running the component `bytes` (with their real digest) with no config.
pub fn bytes_step(name: &str, bytes: Vec<u8>) -> PolicyStep {
    PolicyStep {
        name: name.to_owned(),
        module: component(bytes),
        config: Value::Null,
        failure_policy: FailurePolicy::Fail,
    }
}

/// A step running a built-in.
pub fn builtin(name: &str, config: Value) -> PolicyStep {
    PolicyStep {
        name: name.to_owned(),
        module: ModuleSource::Builtin(name.to_owned()),
        config,
        failure_policy: FailurePolicy::Fail,
    }
}

/// A disk cache directory shared by the policy tests (also across runs: entries are keyed by
/// component digest and engine hash and integrity-checked, and writes are atomic). The cache
/// tests themselves use private directories.
pub fn shared_cache() -> PathBuf {
    std::env::temp_dir().join("gitops-policy-test-cache")
}

/// Compiles the hostile component and the built-ins once into the shared cache (tests run in
/// parallel; without this each would compile them itself).
fn warm_cache() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let host = PolicyHost::new(HostConfig {
            cache_dir: Some(shared_cache()),
            ..HostConfig::default()
        })
        .expect("host");
        let mut sources = vec![component(hostile_bytes())];
        sources.extend(
            gitops_reconciler::policy::BUILTINS
                .iter()
                .map(|(n, _)| ModuleSource::Builtin((*n).to_owned())),
        );
        for source in sources {
            host.load("warm-up", &source)
                .expect("committed components load");
        }
        // Compiled (and cached) although it never loads: its metadata never returns.
        let _ = host.load("warm-up", &component(dist("hostile-metadata")));
    });
}

/// A host with the default limits except those `f` changes, using the shared cache.
pub fn host_with(f: impl FnOnce(&mut HostConfig)) -> PolicyHost {
    warm_cache();
    let mut config = HostConfig {
        cache_dir: Some(shared_cache()),
        ..HostConfig::default()
    };
    f(&mut config);
    PolicyHost::new(config).expect("host")
}

/// Some ordinary objects.
pub fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "apps"}, "data": {"k": "v"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "apps"},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}),
    ]
}

/// Resident set size of this process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A component with one core function nesting `depth` blocks, `functions` times.
pub fn nested_blocks(depth: usize, functions: usize) -> Vec<u8> {
    let body = format!("{}{}", "block ".repeat(depth), "end ".repeat(depth));
    let funcs = format!("(func {body})").repeat(functions);
    wat::parse_str(format!("(component (core module {funcs}))")).expect("valid WAT")
}
