//! postBuild variable substitution, applied per object after the build as Flux does (its
//! envsubst over each object's YAML): `${var}`, `${var:=default}`, `${var:-default}`,
//! `${var=default}`, `${var-default}`, `$${var}` for a literal `${var}`; strict mode makes an
//! unset variable without default an error naming the object. Objects annotated
//! `kustomize.toolkit.fluxcd.io/substitute: disabled` or `kubectl-gitops.io/substitute: disabled`
//! are left alone. Bare `$var` (without braces) is not substituted.

use std::collections::BTreeMap;

use serde_json::Value;

use super::BuildError;
use super::resource::ResId;

const DISABLE_KEYS: [&str; 2] = [
    "kustomize.toolkit.fluxcd.io/substitute",
    "kubectl-gitops.io/substitute",
];

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks variable names (Flux requires `^[_[:alpha:]][_[:alpha:][:digit:]]*$`).
pub(crate) fn check_names(vars: &BTreeMap<String, String>) -> Result<(), BuildError> {
    for k in vars.keys() {
        if !valid_name(k) {
            return Err(BuildError::Substitution {
                object: "postBuild.substitute".into(),
                message: format!("'{k}' is not a valid variable name"),
            });
        }
    }
    Ok(())
}

/// Substitutes into one object. Returns the object unchanged if it has no `${`.
pub(crate) fn substitute(
    obj: Value,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<Value, BuildError> {
    let disabled = obj
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .is_some_and(|a| {
            DISABLE_KEYS
                .iter()
                .any(|k| a.get(*k).and_then(Value::as_str) == Some("disabled"))
        });
    if disabled {
        return Ok(obj);
    }
    let id = ResId::of(&obj).to_string();
    let yaml = crate::yaml::to_string(&obj).map_err(|e| BuildError::Substitution {
        object: id.clone(),
        message: e.to_string(),
    })?;
    if !yaml.contains('$') {
        return Ok(obj);
    }
    let out = expand(&yaml, vars, strict).map_err(|message| BuildError::Substitution {
        object: id.clone(),
        message,
    })?;
    crate::yaml::from_str(&out).map_err(|e| BuildError::Substitution {
        object: id,
        message: format!("the result is not valid YAML: {e}"),
    })
}

/// Expands `${...}` references in `s`.
pub(crate) fn expand(
    s: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if bytes[i] == b'$' && s[i + 1..].starts_with("${") {
            // `$${` → literal `${`.
            out.push_str("${");
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && s[i + 1..].starts_with('{') {
            let Some(close) = s[i + 2..].find('}') else {
                return Err(format!("unterminated variable reference at '{}'", &s[i..]));
            };
            let body = &s[i + 2..i + 2 + close];
            out.push_str(&resolve(body, vars, strict)?);
            i += 3 + close;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    Ok(out)
}

fn resolve(body: &str, vars: &BTreeMap<String, String>, strict: bool) -> Result<String, String> {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_end);
    if !valid_name(name) {
        return Err(format!("invalid variable reference '${{{body}}}'"));
    }
    let value = vars.get(name);
    let (default, empty_counts) = if let Some(d) = op.strip_prefix(":=").or(op.strip_prefix(":-")) {
        (Some(d), true)
    } else if let Some(d) = op.strip_prefix('=').or(op.strip_prefix('-')) {
        (Some(d), false)
    } else if op.is_empty() {
        (None, false)
    } else {
        return Err(format!("unsupported variable expression '${{{body}}}'"));
    };
    match (value, default) {
        (Some(v), Some(d)) if empty_counts && v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v.clone()),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) if strict => Err(format!("variable '{name}' is not set")),
        (None, None) => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_forms() {
        let vars: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("e".to_string(), String::new()),
        ]
        .into();
        assert_eq!(expand("x${a}y", &vars, true).expect("ok"), "x1y");
        assert_eq!(expand("${b:=d}", &vars, true).expect("ok"), "d");
        assert_eq!(expand("${e:-d}", &vars, true).expect("ok"), "d");
        assert_eq!(expand("${e-d}", &vars, true).expect("ok"), "");
        assert_eq!(expand("$${a}", &vars, true).expect("ok"), "${a}");
        assert_eq!(expand("${b}", &vars, false).expect("ok"), "");
        assert!(expand("${b}", &vars, true).is_err());
        assert_eq!(expand("cost $5", &vars, true).expect("ok"), "cost $5");
    }
}
