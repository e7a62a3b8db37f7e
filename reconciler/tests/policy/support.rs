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

/// A policy component written by hand: a core module with `pages` pages of memory, a bump
/// allocator from `heap.0` to `heap.1` for what the host passes in, and exports that each
/// return a pointer to their result, laid out by the data segments `data`: `metadata`'s at 256,
/// `transform`'s at 512, `validate-config`'s at 640, `validate`'s at 768 (all-zero results are
/// `ok(())`, `ok([])` and `[]`); lifted to the `policy` world's exports. `metadata` returns a
/// record of `metadata_fields` (those of `@0.1.0`, or of `@0.2.0` with `kinds`), which may use
/// the types `types` declares besides the world's own.
pub fn wat_policy(
    pages: u32,
    heap: (u32, u32),
    data: &str,
    types: &str,
    metadata_fields: &str,
) -> String {
    let (heap_start, heap_end) = heap;
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") {pages})
    (global $next (mut i32) (i32.const {heap_start}))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.const {heap_end})) (then unreachable))
      (local.get $p))
    (func (export "metadata") (result i32) (i32.const 256))
    (func (export "validate-config") (param i32 i32) (result i32) (i32.const 640))
    (func (export "transform")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 512))
    (func (export "validate")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 768))
{data}
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "realloc" (core func $realloc))
  (alias core export $i "metadata" (core func $c-metadata))
  (alias core export $i "validate-config" (core func $c-validate-config))
  (alias core export $i "transform" (core func $c-transform))
  (alias core export $i "validate" (core func $c-validate))

  (type $kind' (enum "transform" "validate" "both"))
  (export $kind "policy-kind" (type $kind'))
  {types}
  (type $metadata' (record {metadata_fields}))
  (export $metadata "metadata-record" (type $metadata'))
  (type $context' (record (field "kustomization-namespace" string)
    (field "kustomization-name" string) (field "source-revision" string)
    (field "target-namespace" (option string)) (field "dry-run" bool)))
  (export $context "context" (type $context'))
  (type $object-ref' (record (field "api-version" string) (field "kind" string)
    (field "namespace" (option string)) (field "name" string)))
  (export $object-ref "object-ref" (type $object-ref'))
  (type $config-error' (record (field "message" string) (field "path" (option string))))
  (export $config-error "config-error" (type $config-error'))
  (type $policy-error' (record (field "message" string) (field "object" (option $object-ref))))
  (export $policy-error "policy-error" (type $policy-error'))
  (type $severity' (enum "error" "warning"))
  (export $severity "severity" (type $severity'))
  (type $violation' (record (field "object" (option $object-ref)) (field "field" (option string))
    (field "message" string) (field "severity" $severity)))
  (export $violation "violation" (type $violation'))

  (func $metadata (result $metadata) (canon lift (core func $c-metadata) (memory $mem)))
  (export "metadata" (func $metadata))
  (func $validate-config (param "config" string) (result (result (error $config-error)))
    (canon lift (core func $c-validate-config) (memory $mem) (realloc $realloc)))
  (export "validate-config" (func $validate-config))
  (func $transform (param "context" $context) (param "config" string)
    (param "objects" (list string)) (result (result (list string) (error $policy-error)))
    (canon lift (core func $c-transform) (memory $mem) (realloc $realloc)))
  (export "transform" (func $transform))
  (func $validate (param "context" $context) (param "config" string)
    (param "objects" (list string)) (result (list $violation))
    (canon lift (core func $c-validate) (memory $mem) (realloc $realloc)))
  (export "validate" (func $validate))
)"#
    )
}
