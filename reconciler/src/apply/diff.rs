//! Drift detection without a request: is everything the intent says present in the live object?

use serde_json::Value;

/// True when every field of `intent` has the same value in `live` (fields the apiserver or other
/// managers added to `live` are ignored). Lists must have the same length and match element by
/// element. `apiVersion`/`kind` at the top level are not compared (list items lack them), nor
/// is `status`. Resource quantities (in `limits`, `requests`, `hard`, ... maps, and `sizeLimit`)
/// compare by value, since the apiserver rewrites them to canonical form (`0.5` → `500m`).
pub fn is_subset(intent: &Value, live: &Value) -> bool {
    match (intent, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(k, v)| {
            if k == "apiVersion" || k == "kind" || k == "status" {
                return true;
            }
            match have.get(k) {
                Some(h) => field_subset(v, h, k, false),
                None => v.is_null(),
            }
        }),
        _ => field_subset(intent, live, "", false),
    }
}

/// Map keys whose values are maps of resource quantities.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "hard",
    "used",
    "capacity",
    "allocatable",
    "overhead",
];

/// `key` is the field's name in its parent; `quantities` says the parent is a quantity map.
fn field_subset(intent: &Value, live: &Value, key: &str, quantities: bool) -> bool {
    match (intent, live) {
        (Value::Object(want), Value::Object(have)) => {
            let inner = QUANTITY_MAPS.contains(&key);
            want.iter().all(|(k, v)| match have.get(k) {
                Some(h) => field_subset(v, h, k, inner),
                None => v.is_null(),
            })
        }
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len()
                && want
                    .iter()
                    .zip(have)
                    .all(|(w, h)| field_subset(w, h, key, false))
        }
        (Value::Number(a), Value::Number(b)) if a == b || a.as_f64() == b.as_f64() => true,
        (a, b) if a == b => true,
        (a, b) if quantities || key == "sizeLimit" => {
            match (quantity_nanos(a), quantity_nanos(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    }
}

/// A Kubernetes resource quantity (`500m`, `1.5Gi`, `2e3`, `128974848`) in billionths, exactly;
/// `None` when `value` is not one (or is too large to represent).
fn quantity_nanos(value: &Value) -> Option<i128> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || fraction.len() > 9 {
        return None;
    }
    let mut nanos: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    nanos = nanos.checked_mul(1_000_000_000)?;
    if !fraction.is_empty() {
        let padded = format!("{fraction:0<9}");
        nanos = nanos.checked_add(padded.parse::<i128>().ok()?)?;
    }
    // Binary suffixes multiply; decimal ones scale by powers of ten (m, u, n divide).
    let (multiplier, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            (1, exp.parse::<i32>().ok()?)
        }
    };
    nanos = nanos.checked_mul(multiplier)?;
    if exponent >= 0 {
        nanos = nanos.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)?;
    } else {
        let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
        // Below a billionth: the apiserver rounds up; unequal remainders are still different.
        if nanos % divisor != 0 {
            return None;
        }
        nanos /= divisor;
    }
    Some(if negative { -nanos } else { nanos })
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

    #[test]
    fn quantities_compare_by_value_only_where_they_are_quantities() {
        let intent = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 1, "memory": "1e3"}}}],
            "volumes": [{"emptyDir": {"sizeLimit": "1Gi"}}]}});
        let live = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1k"}}}],
            "volumes": [{"emptyDir": {"sizeLimit": "1073741824"}}]}});
        assert!(is_subset(&intent, &live));
        let more = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "501m", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1k"}}}],
            "volumes": [{"emptyDir": {"sizeLimit": "1073741824"}}]}});
        assert!(!is_subset(&intent, &more));
        // Elsewhere a string is a string: "0.5" and "500m" in a ConfigMap are different data.
        assert!(!is_subset(
            &json!({"data": {"cpu": "0.5"}}),
            &json!({"data": {"cpu": "500m"}})
        ));
    }

    #[test]
    fn quantity_parsing() {
        assert_eq!(quantity_nanos(&json!("500m")), Some(500_000_000));
        assert_eq!(quantity_nanos(&json!("0.5")), Some(500_000_000));
        assert_eq!(quantity_nanos(&json!(".5")), Some(500_000_000));
        assert_eq!(quantity_nanos(&json!("1Ki")), Some(1024 * 1_000_000_000));
        assert_eq!(quantity_nanos(&json!("2e3")), Some(2_000 * 1_000_000_000));
        assert_eq!(quantity_nanos(&json!("-1")), Some(-1_000_000_000));
        assert_eq!(quantity_nanos(&json!("1n")), Some(1));
        assert_eq!(quantity_nanos(&json!("abc")), None);
        assert_eq!(quantity_nanos(&json!("1Xi")), None);
        assert_eq!(quantity_nanos(&json!("")), None);
        assert_eq!(quantity_nanos(&json!(true)), None);
    }
}
