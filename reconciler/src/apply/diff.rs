//! Drift detection without a request: is everything the intent says present in the live object?

use serde_json::Value;

/// True when every field of `intent` has the same value in `live` (fields the apiserver or other
/// managers added to `live` are ignored). Lists must have the same length and match element by
/// element. `apiVersion`/`kind` at the top level are not compared (list items lack them), nor is
/// a Secret's write-only `stringData` (its content lands in `data`).
pub fn is_subset(intent: &Value, live: &Value) -> bool {
    match (intent, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(k, v)| {
            if k == "apiVersion" || k == "kind" || k == "stringData" || k == "status" {
                return true;
            }
            match have.get(k) {
                Some(h) => field_subset(v, h),
                None => v.is_null(),
            }
        }),
        _ => field_subset(intent, live),
    }
}

fn field_subset(intent: &Value, live: &Value) -> bool {
    match (intent, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(k, v)| match have.get(k) {
            Some(h) => field_subset(v, h),
            None => v.is_null(),
        }),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| field_subset(w, h))
        }
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_drift() {
        let intent = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "1"}},
            "spec": {"ports": [{"port": 80}]}});
        let live = json!({"metadata": {"name": "s", "uid": "x", "labels": {"a": "1", "b": "2"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.5"}});
        assert!(is_subset(&intent, &live));
    }

    #[test]
    fn changed_or_missing_fields_are_drift() {
        let intent = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(!is_subset(
            &intent,
            &json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}})
        ));
        assert!(!is_subset(
            &intent,
            &json!({"spec": {"ports": [{"port": 80}]}})
        ));
        assert!(!is_subset(
            &intent,
            &json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}})
        ));
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1.0})));
    }
}
