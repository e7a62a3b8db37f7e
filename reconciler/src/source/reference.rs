//! Which remote reference a GitRepository follows, and how its revision is spelled.
//!
//! Precedence (Flux): commit > name > semver > tag > branch; nothing set = the remote's HEAD.

use crate::api::GitRepositoryRef;

use super::SourceError;

/// The local ref every fetch writes the followed commit (or tag) to, so that the next fetch can
/// negotiate from it.
pub const FETCHED_REF: &str = "refs/gitops/fetched";

/// The reference to fetch, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefRequest {
    /// The remote's HEAD (its default branch).
    Head,
    /// The tip of this branch.
    Branch(String),
    /// The commit this tag points at (annotated tags are peeled).
    Tag(String),
    /// The highest tag whose version matches the range.
    Semver {
        /// The parsed range.
        range: super::semver_range::Constraint,
        /// The range as written in the spec, for messages.
        text: String,
    },
    /// A full reference name such as `refs/pull/1/head`.
    Name(String),
    /// A commit, optionally with the branch it is on (used in the revision only).
    Commit {
        /// The commit to fetch.
        commit: gix::ObjectId,
        /// `spec.ref.branch`, when set next to the commit.
        branch: Option<String>,
    },
}

fn invalid(reason: String) -> SourceError {
    SourceError::InvalidRef { reason }
}

fn check_full_name(name: &str) -> Result<(), SourceError> {
    gix::refs::FullName::try_from(name)
        .map(|_| ())
        .map_err(|_| invalid(format!("'{name}' is not a valid git reference name")))?;
    if name.contains(['*', ':', '^', '~', '?', '[', '\\']) || name.contains("..") {
        return Err(invalid(format!(
            "'{name}' is not a valid git reference name"
        )));
    }
    Ok(())
}

fn check_short(kind: &str, short: &str) -> Result<(), SourceError> {
    if short.starts_with('-') || short.starts_with("refs/") {
        return Err(invalid(format!(
            "{kind} '{short}' must be a short name without a leading '-' or 'refs/'"
        )));
    }
    check_full_name(&format!("refs/heads/{short}"))
}

impl RefRequest {
    /// Applies the precedence rules to `spec.ref` and validates the chosen value.
    pub fn from_spec(reference: Option<&GitRepositoryRef>) -> Result<Self, SourceError> {
        let Some(r) = reference else {
            return Ok(Self::Head);
        };
        if let Some(commit) = &r.commit {
            let valid = commit.len() == 40
                && commit
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !valid {
                return Err(invalid(format!(
                    "commit '{commit}' must be 40 lowercase hex characters"
                )));
            }
            let commit = gix::ObjectId::from_hex(commit.as_bytes())
                .map_err(|_| invalid(format!("commit '{commit}' is not a SHA-1")))?;
            if let Some(branch) = &r.branch {
                check_short("branch", branch)?;
            }
            return Ok(Self::Commit {
                commit,
                branch: r.branch.clone(),
            });
        }
        if let Some(name) = &r.name {
            if !name.starts_with("refs/") {
                return Err(invalid(format!("name '{name}' must start with refs/")));
            }
            check_full_name(name)?;
            return Ok(Self::Name(name.clone()));
        }
        if let Some(text) = &r.semver {
            let range = super::semver_range::Constraint::parse(text)
                .map_err(|e| invalid(format!("semver range '{text}': {e}")))?;
            return Ok(Self::Semver {
                range,
                text: text.clone(),
            });
        }
        if let Some(tag) = &r.tag {
            check_short("tag", tag)?;
            return Ok(Self::Tag(tag.clone()));
        }
        if let Some(branch) = &r.branch {
            check_short("branch", branch)?;
            return Ok(Self::Branch(branch.clone()));
        }
        Ok(Self::Head)
    }

    /// What the user asked for, for messages (`branch 'main'`, `semver '>=1.0'`).
    pub fn describe(&self) -> String {
        match self {
            Self::Head => "the remote HEAD".to_owned(),
            Self::Branch(b) => format!("branch '{b}'"),
            Self::Tag(t) => format!("tag '{t}'"),
            Self::Semver { text, .. } => format!("semver range '{text}'"),
            Self::Name(n) => format!("reference '{n}'"),
            Self::Commit { commit, .. } => format!("commit '{commit}'"),
        }
    }

    /// The remote reference name (or object id for a commit) to fetch; for `Semver` the tag
    /// must be chosen first with [`pick_semver_tag`].
    pub fn remote_source(&self) -> Option<String> {
        match self {
            Self::Head => Some("HEAD".to_owned()),
            Self::Branch(b) => Some(format!("refs/heads/{b}")),
            Self::Tag(t) => Some(format!("refs/tags/{t}")),
            Self::Name(n) => Some(n.clone()),
            Self::Commit { commit, .. } => Some(commit.to_string()),
            Self::Semver { .. } => None,
        }
    }
}

pub use super::semver_range::tag_version;

/// The highest tag in `tags` (short names) whose version matches `range`; ties (`v1.0.0` and
/// `1.0.0`) go to the lexically smaller name so the choice is stable.
pub fn pick_semver_tag<'a>(
    range: &super::semver_range::Constraint,
    tags: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(semver::Version, &str)> = None;
    for tag in tags {
        let Some(version) = tag_version(tag) else {
            continue;
        };
        if !range.matches(&version) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((v, name)) => version > *v || (version == *v && tag < *name),
        };
        if better {
            best = Some((version, tag));
        }
    }
    best.map(|(_, tag)| tag)
}

/// The revision string of `status.artifact.revision`: `<branch|tag|name>@sha1:<hex>`, or
/// `sha1:<hex>` for a bare commit.
pub fn revision(label: Option<&str>, commit: &gix::oid) -> String {
    match label {
        Some(label) => format!("{label}@sha1:{commit}"),
        None => format!("sha1:{commit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(f: impl FnOnce(&mut GitRepositoryRef)) -> GitRepositoryRef {
        let mut r = GitRepositoryRef::default();
        f(&mut r);
        r
    }

    #[test]
    fn precedence_is_commit_name_semver_tag_branch() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let all = spec(|r| {
            r.branch = Some("main".into());
            r.tag = Some("v1".into());
            r.semver = Some(">=1".into());
            r.name = Some("refs/pull/1/head".into());
            r.commit = Some(sha.into());
        });
        assert!(matches!(
            RefRequest::from_spec(Some(&all)).unwrap(),
            RefRequest::Commit {
                branch: Some(_),
                ..
            }
        ));
        let mut r = all.clone();
        r.commit = None;
        assert_eq!(
            RefRequest::from_spec(Some(&r)).unwrap(),
            RefRequest::Name("refs/pull/1/head".into())
        );
        r.name = None;
        assert!(matches!(
            RefRequest::from_spec(Some(&r)).unwrap(),
            RefRequest::Semver { .. }
        ));
        r.semver = None;
        assert_eq!(
            RefRequest::from_spec(Some(&r)).unwrap(),
            RefRequest::Tag("v1".into())
        );
        r.tag = None;
        assert_eq!(
            RefRequest::from_spec(Some(&r)).unwrap(),
            RefRequest::Branch("main".into())
        );
        assert_eq!(RefRequest::from_spec(None).unwrap(), RefRequest::Head);
        assert_eq!(
            RefRequest::from_spec(Some(&GitRepositoryRef::default())).unwrap(),
            RefRequest::Head
        );
    }

    #[test]
    fn hostile_ref_names_are_refused() {
        for bad in [
            "-upload-pack=x",
            "a..b",
            "a b",
            "refs/heads/x",
            "x:y",
            "a\\b",
            "x*",
        ] {
            let r = spec(|r| r.branch = Some(bad.into()));
            assert!(RefRequest::from_spec(Some(&r)).is_err(), "{bad}");
        }
        let r = spec(|r| r.name = Some("heads/main".into()));
        assert!(RefRequest::from_spec(Some(&r)).is_err());
        let r = spec(|r| r.commit = Some("ABC".into()));
        assert!(RefRequest::from_spec(Some(&r)).is_err());
        let r = spec(|r| r.semver = Some("not a range".into()));
        assert!(RefRequest::from_spec(Some(&r)).is_err());
    }

    #[test]
    fn semver_picks_the_highest_matching_tag() {
        let range = super::super::semver_range::Constraint::parse(">=1.0.0, <2.0.0").unwrap();
        let tags = [
            "v0.9.0",
            "v1.0.0",
            "v1.2.0",
            "1.10.1",
            "v2.0.0",
            "latest",
            "v1.11.0-rc.1",
        ];
        assert_eq!(pick_semver_tag(&range, tags), Some("1.10.1"));
        let none = super::super::semver_range::Constraint::parse(">=3").unwrap();
        assert_eq!(pick_semver_tag(&none, tags), None);
        let sha = gix::ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(
            revision(Some("main"), &sha),
            "main@sha1:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            revision(None, &sha),
            "sha1:0123456789abcdef0123456789abcdef01234567"
        );
    }
}
