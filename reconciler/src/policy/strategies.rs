//! Generators for the property tests of the policy host (compiled only for tests: the unit
//! tests declare it in `policy/mod.rs`, the policy test binary includes the same file).

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value that serde_json writes and reads back exactly: every kind of value, any
/// Unicode text (control characters included) as keys and strings, integers of the whole i64
/// and u64 range, and short binary fractions. (Not any float: serde_json, as built here, may
/// read a float of 16 or more significant digits back one unit in the last place off.)
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i16>().prop_map(|n| Value::from(f64::from(n) / 64.0)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `cases` cases, brief enough for every test run, and no regression files written into the
/// source tree.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
