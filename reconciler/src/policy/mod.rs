//! The policy stage: the wasmtime host for WebAssembly policy components (issue 5).
