//! The structure check a component passes before it is compiled: binary components only, and
//! code whose shape keeps compilation time bounded.
//!
//! Cranelift's compile time grows with the square of control-flow nesting (100,000 nested
//! blocks take about 20 s, 250,000 over a minute, in a module far below the size cap), and a
//! compilation cannot be interrupted. So before compiling, every function body of every core
//! module inside the component is read with `wasmparser` and refused when it breaks one of the
//! [`CodeLimits`]; the compile-cost budget bounds the sum, over all operators, of the nesting
//! depth they sit at — the quantity the quadratic behaviour follows.

use wasmparser::{Encoding, Operator, Parser, Payload};

/// Limits on the code of a component (see the module docs). `Default` gives the documented
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLimits {
    /// Deepest control nesting (`block`, `loop`, `if`, `try_table`) in one function.
    pub max_nesting: u32,
    /// Largest function body, in bytes.
    pub max_function_bytes: usize,
    /// Most functions with a body, over all core modules of the component.
    pub max_functions: u32,
    /// Largest sum over all operators of the nesting depth they sit at.
    pub max_compile_cost: u64,
}

impl Default for CodeLimits {
    fn default() -> Self {
        CodeLimits {
            max_nesting: 2_000,
            max_function_bytes: 4 << 20,
            max_functions: 100_000,
            max_compile_cost: 200_000_000,
        }
    }
}

/// What the code of a component amounts to (reported in the refusal and by the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CodeShape {
    pub(crate) deepest_nesting: u32,
    pub(crate) largest_function_bytes: usize,
    pub(crate) functions: u32,
    pub(crate) compile_cost: u64,
}

/// Reads `bytes` as a binary component and checks its code against `limits`; the error says
/// which limit was broken (and in which function) or why the bytes are no component.
pub(crate) fn check(bytes: &[u8], limits: &CodeLimits) -> Result<CodeShape, String> {
    if !bytes.starts_with(b"\0asm") {
        return Err(
            "not a binary WebAssembly component (the reconciler accepts no text format)".to_owned(),
        );
    }
    let mut shape = CodeShape::default();
    let mut first = true;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid WebAssembly binary: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } if first => {
                first = false;
                if encoding != Encoding::Component {
                    return Err(
                        "a core WebAssembly module, not a component (build for wasm32-wasip2 or wrap it with `wasm-tools component new`)"
                            .to_owned(),
                    );
                }
            }
            Payload::CodeSectionEntry(body) => {
                shape.functions += 1;
                if shape.functions > limits.max_functions {
                    return Err(format!(
                        "more than {} functions (limit of the policy host)",
                        limits.max_functions
                    ));
                }
                let index = shape.functions - 1;
                let size = body.range().len();
                shape.largest_function_bytes = shape.largest_function_bytes.max(size);
                if size > limits.max_function_bytes {
                    return Err(format!(
                        "function {index} is {size} bytes, over the limit of {} bytes",
                        limits.max_function_bytes
                    ));
                }
                let mut ops = body
                    .get_operators_reader()
                    .map_err(|e| format!("function {index}: {e}"))?;
                // The function body itself is one level.
                let mut depth: u32 = 1;
                while !ops.eof() {
                    let op = ops.read().map_err(|e| format!("function {index}: {e}"))?;
                    match op {
                        Operator::Block { .. }
                        | Operator::Loop { .. }
                        | Operator::If { .. }
                        | Operator::TryTable { .. } => {
                            depth += 1;
                            shape.deepest_nesting = shape.deepest_nesting.max(depth - 1);
                            if depth - 1 > limits.max_nesting {
                                return Err(format!(
                                    "function {index} nests control flow deeper than {} levels",
                                    limits.max_nesting
                                ));
                            }
                        }
                        Operator::End => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    shape.compile_cost += u64::from(depth);
                }
                if shape.compile_cost > limits.max_compile_cost {
                    return Err(format!(
                        "its code is too expensive to compile: nesting-weighted size over {} (at function {index})",
                        limits.max_compile_cost
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_component(depth: usize) -> Vec<u8> {
        let body = format!("{}{}", "block ".repeat(depth), "end ".repeat(depth));
        wat::parse_str(format!("(component (core module (func {body})))")).expect("valid wat")
    }

    #[test]
    fn nesting_depth_and_compile_cost_are_bounded() {
        let ok = check(&nested_component(100), &CodeLimits::default()).expect("shallow is fine");
        assert_eq!(ok.deepest_nesting, 100);
        assert_eq!(ok.functions, 1);
        let e = check(&nested_component(5_000), &CodeLimits::default()).unwrap_err();
        assert!(
            e.contains("function 0 nests control flow deeper than 2000"),
            "{e}"
        );
        let tight = CodeLimits {
            max_compile_cost: 1_000,
            ..CodeLimits::default()
        };
        let e = check(&nested_component(100), &tight).unwrap_err();
        assert!(e.contains("too expensive to compile"), "{e}");
    }

    #[test]
    fn only_binary_components_are_accepted() {
        let e = check(b"(component)", &CodeLimits::default()).unwrap_err();
        assert!(e.contains("no text format"), "{e}");
        let module = wat::parse_str("(module)").expect("wat");
        let e = check(&module, &CodeLimits::default()).unwrap_err();
        assert!(
            e.contains("core WebAssembly module, not a component"),
            "{e}"
        );
        let e = check(b"\0asm\x0d\0\x01\0garbage", &CodeLimits::default()).unwrap_err();
        assert!(e.contains("not a valid WebAssembly binary"), "{e}");
    }
}
