//! `ref.semver` constraints in the grammar Flux uses (Masterminds/semver v3), evaluated with
//! the `semver` crate's versions:
//!
//! - `||` separates alternatives; within one, constraints separated by commas or spaces must
//!   all hold (`>=1.0.0 <2.0.0`, `>= 1.2, < 3`);
//! - operators `=` (or none), `!=`, `>`, `<`, `>=` (`=>`), `<=` (`=<`), `~` (`~>`), `^`;
//! - partial versions and wildcards `x`, `X`, `*`: `1.2` and `1.2.x` mean `>=1.2.0 <1.3.0`,
//!   `*` any version; a bare full version (`1.2.3`) is exact;
//! - hyphen ranges `1.2 - 1.4.5` mean `>=1.2 <=1.4.5`;
//! - a version with a prerelease matches a comparison only when that comparison names a
//!   prerelease itself (`>=1.2.3-0`), except an exact `!=`;
//! - an empty constraint (or alternative) means any release.
//! - a leading `v` is allowed; build metadata is ignored.

use std::cmp::Ordering;

use semver::{Prerelease, Version};

/// A parsed constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    alternatives: Vec<Vec<Term>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// One comparison. The dirty flags follow Masterminds: `dirty` when any part is missing or a
/// wildcard; then exactly one of `minor_dirty` (the minor is missing or a wildcard) and
/// `patch_dirty` (only the patch is), or neither (the major itself is a wildcard).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    op: Op,
    /// The version with missing or wildcard parts as 0.
    version: Version,
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

/// A version as written in a constraint or a tag: the version with missing or wildcard parts
/// as 0, and how many leading parts were given as numbers (0 to 3).
struct Partial {
    version: Version,
    given: usize,
}

fn parse_partial(text: &str, wildcards: bool) -> Result<Partial, String> {
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let (text, _build) = text.split_once('+').unwrap_or((text, ""));
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("'{text}' is not a version"));
    }
    let mut numbers = [0u64; 3];
    let mut given = 0;
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "x" | "X" | "*") {
            if !wildcards {
                return Err(format!("'{text}' is not a version"));
            }
            break;
        }
        numbers[i] = part
            .parse()
            .map_err(|_| format!("'{text}': '{part}' is not a number"))?;
        given = i + 1;
    }
    let mut version = Version::new(numbers[0], numbers[1], numbers[2]);
    if let Some(pre) = pre {
        version.pre =
            Prerelease::new(pre).map_err(|e| format!("'{text}': prerelease '{pre}': {e}"))?;
    }
    Ok(Partial { version, given })
}

/// Orders by major, minor, patch and prerelease (build metadata ignored).
fn compare(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

impl Term {
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        if compare(v, c) == Ordering::Less {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.major == c.major && (self.minor_dirty || v.minor == c.minor)
    }

    fn caret(&self, v: &Version) -> bool {
        let c = &self.version;
        if compare(v, c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        v.minor == 0 && v.patch == c.patch
    }

    fn not_equal(&self, v: &Version) -> bool {
        let c = &self.version;
        if !self.dirty {
            return compare(v, c) != Ordering::Equal;
        }
        if c.major != v.major {
            return true;
        }
        if self.minor_dirty {
            return false;
        }
        if c.minor != v.minor {
            return true;
        }
        if self.patch_dirty {
            return v.pre != c.pre;
        }
        compare(v, c) != Ordering::Equal
    }

    fn matches(&self, v: &Version) -> bool {
        // Masterminds: a prerelease version only meets a comparison that names a prerelease,
        // except an exact `!=`.
        let exact_ne = self.op == Op::Ne && !self.dirty;
        if !v.pre.is_empty() && self.version.pre.is_empty() && !exact_ne {
            return false;
        }
        let c = &self.version;
        let order = compare(v, c);
        match self.op {
            Op::Eq if self.dirty => self.tilde(v),
            Op::Eq => order == Ordering::Equal,
            Op::Ne => self.not_equal(v),
            Op::Gt if !self.dirty => order == Ordering::Greater,
            Op::Gt => {
                if v.major != c.major {
                    v.major > c.major
                } else if self.minor_dirty {
                    false
                } else if self.patch_dirty {
                    v.minor > c.minor
                } else {
                    order == Ordering::Greater
                }
            }
            Op::Lt => order == Ordering::Less,
            Op::Ge => order != Ordering::Less,
            Op::Le if !self.dirty => order != Ordering::Greater,
            Op::Le => {
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }
}

fn term(op: Op, text: &str) -> Result<Term, String> {
    let p = parse_partial(text, true)?;
    Ok(Term {
        op,
        version: p.version,
        dirty: p.given < 3,
        minor_dirty: p.given == 1,
        patch_dirty: p.given == 2,
    })
}

/// The empty constraint: any release (Masterminds reads it as `*`).
fn any() -> Term {
    Term {
        op: Op::Eq,
        version: Version::new(0, 0, 0),
        dirty: true,
        minor_dirty: false,
        patch_dirty: false,
    }
}

/// One alternative: terms separated by commas or spaces, with hyphen ranges.
fn parse_alternative(text: &str) -> Result<Vec<Term>, String> {
    // Tokens: an operator (possibly followed by spaces) and a version, or a lone `-`.
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut rest = text.trim_start_matches([' ', ',']);
    while !rest.is_empty() {
        let op_len = rest
            .find(|c: char| !matches!(c, '=' | '!' | '<' | '>' | '~' | '^'))
            .unwrap_or(rest.len());
        let op = &rest[..op_len];
        rest = rest[op_len..].trim_start();
        let version_len = rest.find([' ', ',']).unwrap_or(rest.len());
        let version = &rest[..version_len];
        if version.is_empty() {
            return Err(format!("operator '{op}' without a version"));
        }
        tokens.push((op.to_owned(), version.to_owned()));
        rest = rest[version_len..].trim_start_matches([' ', ',']);
    }
    let mut terms = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (op, version) = &tokens[i];
        if op.is_empty()
            && tokens
                .get(i + 1)
                .is_some_and(|(o, v)| o.is_empty() && v == "-")
            && let Some((upper_op, upper)) = tokens.get(i + 2)
        {
            if !upper_op.is_empty() {
                return Err(format!("hyphen range '{version} - {upper_op}{upper}'"));
            }
            terms.push(term(Op::Ge, version)?);
            terms.push(term(Op::Le, upper)?);
            i += 3;
            continue;
        }
        let op = match op.as_str() {
            "" | "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" | "=>" => Op::Ge,
            "<=" | "=<" => Op::Le,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            other => return Err(format!("unknown operator '{other}'")),
        };
        terms.push(term(op, version)?);
        i += 1;
    }
    if terms.is_empty() {
        terms.push(any());
    }
    Ok(terms)
}

impl Constraint {
    /// Parses a constraint; the error says which part is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let alternatives = text
            .split("||")
            .map(|a| parse_alternative(a.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { alternatives })
    }

    /// True when `version` satisfies every term of some alternative.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives
            .iter()
            .any(|terms| terms.iter().all(|t| t.matches(version)))
    }
}

/// A tag as a version, as Flux reads tags (Masterminds' lenient parse): an optional `v`, and
/// missing minor or patch count as 0 (`v1.2` is 1.2.0). Not a version: `None`.
pub fn tag_version(tag: &str) -> Option<Version> {
    parse_partial(tag, false).ok().map(|p| p.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(constraint: &str, yes: &[&str], no: &[&str]) {
        let c = Constraint::parse(constraint).unwrap_or_else(|e| panic!("{constraint}: {e}"));
        for v in yes {
            let version = tag_version(v).unwrap();
            assert!(c.matches(&version), "{constraint} should match {v}");
        }
        for v in no {
            let version = tag_version(v).unwrap();
            assert!(!c.matches(&version), "{constraint} should not match {v}");
        }
    }

    /// Masterminds: a bare full version is exact (Cargo's grammar would read it as `^1.2.3`).
    #[test]
    fn a_bare_version_is_exact() {
        check("1.2.3", &["1.2.3", "v1.2.3"], &["1.2.4", "1.3.0"]);
        check("=1.2.3", &["1.2.3"], &["1.2.4"]);
    }

    #[test]
    fn spaces_and_commas_are_and_and_double_bars_are_or() {
        check(">=1.0.0 <2.0.0", &["1.0.0", "1.9.9"], &["0.9.0", "2.0.0"]);
        check(">= 1.2, < 3", &["1.2.0", "2.9.0"], &["1.1.9", "3.0.0"]);
        check(
            "<1.0.0 || >=3.0.0",
            &["0.5.0", "3.1.0"],
            &["1.0.0", "2.5.0"],
        );
        check("!=1.2.3, >=1.2", &["1.2.4"], &["1.2.3"]);
    }

    #[test]
    fn tilde_caret_and_wildcards() {
        check("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
        check("~1.2", &["1.2.0", "1.2.9"], &["1.3.0"]);
        check("~1", &["1.0.0", "1.9.0"], &["2.0.0"]);
        check("^1.2.3", &["1.2.3", "1.9.0"], &["2.0.0", "1.2.2"]);
        check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0"]);
        check("^0.0.3", &["0.0.3"], &["0.0.4"]);
        check("^0", &["0.0.1", "0.9.0"], &["1.0.0"]);
        check("1.2.x", &["1.2.0", "1.2.7"], &["1.3.0", "1.1.9"]);
        check("1.x", &["1.0.0", "1.9.0"], &["2.0.0"]);
        check("1.2", &["1.2.0", "1.2.5"], &["1.3.0"]);
        check("*", &["0.0.1", "9.9.9"], &[]);
        check(">1.2", &["1.3.0"], &["1.2.9"]);
        check("<=1.2", &["1.2.9"], &["1.3.0"]);
    }

    #[test]
    fn hyphen_ranges_are_inclusive() {
        check("1.2 - 1.4.5", &["1.2.0", "1.4.5"], &["1.1.9", "1.4.6"]);
        check("2.3.4 - 4.5", &["2.3.4", "4.5.9"], &["4.6.0"]);
    }

    #[test]
    fn prereleases_match_only_constraints_that_name_one() {
        check(">=1.0.0", &["1.0.0"], &["1.1.0-rc.1"]);
        check(">=1.0.0-0", &["1.1.0-rc.1", "1.0.0"], &["0.9.0"]);
        check("*", &[], &["2.0.0-alpha"]);
        check("!=1.2.3", &["1.3.0-rc.1"], &["1.2.3"]);
    }

    #[test]
    fn bad_constraints_are_refused() {
        for bad in ["not a range", ">=", "1.2.3.4", "~>", "%1", "1..2"] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }

    /// The rows `{"constraint", "version", bool},` of Go test function `name` in `text`.
    fn go_rows(text: &str, name: &str) -> Vec<(String, String, bool)> {
        let start = text
            .find(&format!("func {name}("))
            .unwrap_or_else(|| panic!("{name} not found"));
        let body = &text[start..];
        let body = &body[..body[1..].find("\nfunc ").map_or(body.len(), |i| i + 1)];
        body.lines()
            .filter_map(|line| {
                let line = line.trim().strip_prefix("{\"")?.strip_suffix("},")?;
                let (constraint, rest) = line.split_once("\", \"")?;
                let (version, check) = rest.split_once("\", ")?;
                Some((constraint.to_owned(), version.to_owned(), check == "true"))
            })
            .collect()
    }

    /// Masterminds' own test tables (TestConstraintCheck, TestConstraintsCheck of
    /// github.com/Masterminds/semver/v3, read from the Go module cache at test time) give the
    /// same answers here.
    #[test]
    fn agrees_with_masterminds_test_tables() {
        let cache = std::env::var_os("GOMODCACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join("go/pkg/mod"))
            });
        let file =
            cache.map(|c| c.join("github.com/!masterminds/semver/v3@v3.3.0/constraints_test.go"));
        let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) else {
            eprintln!("Masterminds/semver v3.3.0 is not in the Go module cache: {file:?}; skipped");
            return;
        };
        let mut rows = go_rows(&text, "TestConstraintCheck");
        rows.extend(go_rows(&text, "TestConstraintsCheck"));
        assert!(rows.len() > 150, "only {} rows read", rows.len());
        let mut wrong = Vec::new();
        for (constraint, version, expected) in &rows {
            let c = Constraint::parse(constraint)
                .unwrap_or_else(|e| panic!("{constraint:?} refused: {e}"));
            let v = tag_version(version).unwrap_or_else(|| panic!("version {version:?}"));
            if c.matches(&v) != *expected {
                wrong.push(format!("{constraint:?} {version:?} wanted {expected}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} rows differ:\n{}",
            wrong.len(),
            rows.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn tags_parse_leniently() {
        assert_eq!(tag_version("v1.2"), Some(Version::new(1, 2, 0)));
        assert_eq!(tag_version("1"), Some(Version::new(1, 0, 0)));
        assert_eq!(tag_version("latest"), None);
        assert_eq!(tag_version("1.x"), None);
    }
}
