//! Turning a fetched git tree into an artifact: walk the tree straight from the object database
//! (no checkout, no hooks, no filters, no submodules), apply the ignore rules, refuse hostile
//! entries, enforce the size and entry caps before each blob is read.
//!
//! Ignore rules, in increasing priority: [`DEFAULT_EXCLUSIONS`], every `.sourceignore` in the
//! tree (relative to its directory, deeper files win), then `spec.ignore`.
//!
//! Symlink rule (documented for users): symlinks are never followed and never written into an
//! artifact. A symlink whose target is absolute, contains a backslash or NUL, or leaves the
//! repository root is refused (the fetch fails with HostileContent naming it); any other symlink
//! is dropped from the artifact and counted in [`TreeStats::dropped_symlinks`]. Submodules
//! (gitlinks) are dropped too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use gix::bstr::{BStr, ByteSlice};
use gix::objs::tree::EntryKind;

use super::SourceError;
use super::artifact::{ArtifactError, ArtifactWriter, check_relative_path};
use super::limits::{Limit, LimitExceeded};

/// Version-control files excluded from every artifact (gitignore syntax); `spec.ignore` and
/// `.sourceignore` can re-include them with `!` patterns.
pub const VCS_EXCLUSIONS: &str = "\
.git/
.gitignore
.gitmodules
.gitattributes
";

/// Paths excluded by default (gitignore syntax): CI metadata, archives and images, as Flux.
/// A `spec.ignore` with at least one pattern replaces this list (Flux's rule); the VCS
/// exclusions stay.
pub const DEFAULT_EXCLUSIONS: &str = "\
# CI configuration
.github/
.gitlab-ci.yml
.circleci/
.travis.yml
.drone.yml
appveyor.yml
cloudbuild.yaml
# archives and images
*.zip
*.tar
*.tar.gz
*.tgz
*.jpg
*.jpeg
*.png
*.gif
*.wmv
*.flv
";

/// Longest symlink target read (a symlink is a blob; this bounds what is read to judge it).
const MAX_SYMLINK_TARGET: u64 = 4096;

/// What the walk did besides writing files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Files written into the artifact.
    pub files: u64,
    /// Files and directories left out by the ignore rules.
    pub ignored: u64,
    /// Symlinks left out: every symlink that is not refused (symlinks are never written).
    pub dropped_symlinks: u64,
    /// The first [`MAX_REPORTED`] dropped symlinks, for the status.
    pub dropped_symlink_paths: Vec<String>,
    /// Submodule entries left out (submodules are never fetched).
    pub submodules: u64,
}

/// How many dropped symlinks are named in the status (the count is always complete).
pub const MAX_REPORTED: usize = 10;

impl TreeStats {
    /// A sentence for the status when something in the tree was left out of the artifact
    /// without failing the fetch (symlinks, submodules); `None` when nothing was.
    pub fn dropped_note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.dropped_symlinks > 0 {
            let mut named = self.dropped_symlink_paths.join(", ");
            let more = self
                .dropped_symlinks
                .saturating_sub(self.dropped_symlink_paths.len() as u64);
            if more > 0 {
                named.push_str(&format!(" and {more} more"));
            }
            parts.push(format!(
                "{} symlink(s) dropped (symlinks are never written into artifacts): {named}",
                self.dropped_symlinks
            ));
        }
        if self.submodules > 0 {
            parts.push(format!(
                "{} submodule(s) dropped (submodules are never fetched)",
                self.submodules
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The ignore rules of one walk.
pub struct IgnoreRules {
    /// Defaults plus `.sourceignore` files.
    base: gix::ignore::Search,
    /// `spec.ignore`: consulted first.
    spec: gix::ignore::Search,
}

fn parse_options() -> gix::ignore::search::Ignore {
    gix::ignore::search::Ignore {
        support_precious: false,
    }
}

impl IgnoreRules {
    /// The VCS exclusions, then the default exclusions unless `spec_ignore` holds a pattern
    /// (then it replaces them, as in Flux), then `spec_ignore`.
    pub fn new(spec_ignore: Option<&str>) -> Self {
        let mut base = gix::ignore::Search::default();
        let has_patterns = spec_ignore.is_some_and(|text| {
            text.lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        });
        let defaults = if has_patterns {
            VCS_EXCLUSIONS.to_owned()
        } else {
            format!("{VCS_EXCLUSIONS}{DEFAULT_EXCLUSIONS}")
        };
        // Infallible for a relative source with no root: no base path to convert.
        let _ = base.add_patterns_buffer(
            defaults.as_bytes(),
            "<default exclusions>",
            None,
            parse_options(),
        );
        let mut spec = gix::ignore::Search::default();
        if let Some(text) = spec_ignore {
            let _ =
                spec.add_patterns_buffer(text.as_bytes(), "<spec.ignore>", None, parse_options());
        }
        Self { base, spec }
    }

    /// Adds a `.sourceignore` found in directory `dir` ("" for the root).
    fn add_sourceignore(&mut self, dir: &str, bytes: &[u8]) {
        let source = if dir.is_empty() {
            std::path::PathBuf::from(".sourceignore")
        } else {
            std::path::Path::new(dir).join(".sourceignore")
        };
        let _ = self.base.add_patterns_buffer(
            bytes,
            source,
            Some(std::path::Path::new("")),
            parse_options(),
        );
    }

    /// True when `path` (relative, `/`-separated) is excluded.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let path: &BStr = path.as_bytes().as_bstr();
        let case = gix::glob::pattern::Case::Sensitive;
        if let Some(m) = self
            .spec
            .pattern_matching_relative_path(path, Some(is_dir), case)
        {
            return !m.pattern.is_negative();
        }
        match self
            .base
            .pattern_matching_relative_path(path, Some(is_dir), case)
        {
            Some(m) => !m.pattern.is_negative(),
            None => false,
        }
    }
}

fn hostile(path: &str, reason: impl Into<String>) -> SourceError {
    SourceError::HostileContent {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Walks the tree of `commit` in `repo` into `writer`.
///
/// Guarantees: every entry name is checked before use (`..`, `.`, `.git` in any case, `/`,
/// backslash, NUL, control characters, case collisions refused); blob sizes are read from the
/// object header and checked against the writer's caps before the blob is decoded; the walk
/// stops at the first problem and returns it (the caller then discards the partial artifact);
/// `interrupt` is checked between entries.
pub fn write_tree<W: std::io::Write>(
    repo: &gix::Repository,
    tree_id: gix::ObjectId,
    rules: &mut IgnoreRules,
    writer: &mut ArtifactWriter<W>,
    interrupt: &AtomicBool,
) -> Result<TreeStats, SourceError> {
    let mut stats = TreeStats::default();
    let mut seen_folded = HashSet::new();
    walk(
        repo,
        tree_id,
        "",
        0,
        rules,
        writer,
        interrupt,
        &mut stats,
        &mut seen_folded,
    )?;
    Ok(stats)
}

/// Deepest directory nesting accepted (git itself caps at 4096; a deep tree is an attack on
/// recursion, not a manifest layout).
const MAX_DEPTH: usize = 256;

#[allow(clippy::too_many_arguments)] // A private recursive walker: the state travels with it.
fn walk<W: std::io::Write>(
    repo: &gix::Repository,
    tree_id: gix::ObjectId,
    dir: &str,
    depth: usize,
    rules: &mut IgnoreRules,
    writer: &mut ArtifactWriter<W>,
    interrupt: &AtomicBool,
    stats: &mut TreeStats,
    seen_folded: &mut HashSet<String>,
) -> Result<(), SourceError> {
    if depth > MAX_DEPTH {
        return Err(hostile(
            dir,
            format!("directory nesting deeper than {MAX_DEPTH}"),
        ));
    }
    let git = |e: gix::Error| SourceError::Git(format!("reading tree '{dir}': {e}"));
    let tree = repo.find_tree(tree_id).map_err(git)?;
    let decoded = tree.decode().map_err(git)?;
    // Collect first: `.sourceignore` applies to its siblings, wherever it sorts.
    let mut entries = Vec::with_capacity(decoded.entries.len());
    for entry in &decoded.entries {
        let name = entry.filename.to_vec();
        let shown = format!(
            "{}{}{}",
            dir,
            if dir.is_empty() { "" } else { "/" },
            String::from_utf8_lossy(&name)
        );
        if name.contains(&b'/') {
            return Err(hostile(&shown, "'/' inside a tree entry name"));
        }
        check_relative_path(&name).map_err(|reason| hostile(&shown, reason))?;
        entries.push((shown, entry.mode.kind(), entry.oid.to_owned()));
    }
    drop(decoded);
    drop(tree);
    if let Some((path, _, oid)) = entries.iter().find(|(path, kind, _)| {
        path.rsplit('/').next() == Some(".sourceignore") && matches!(kind, EntryKind::Blob)
    }) {
        let size = repo.find_header(*oid).map_err(git)?.size();
        if size > 1024 * 1024 {
            return Err(hostile(path, ".sourceignore larger than 1 MiB"));
        }
        let blob = repo.find_blob(*oid).map_err(git)?;
        rules.add_sourceignore(dir, &blob.data);
    }
    for (path, kind, oid) in entries {
        if interrupt.load(Ordering::Relaxed) {
            return Err(SourceError::Interrupted);
        }
        if !seen_folded.insert(path.to_lowercase()) {
            return Err(hostile(
                &path,
                "differs only in case from another path (collides on case-insensitive filesystems)",
            ));
        }
        match kind {
            EntryKind::Tree => {
                if rules.is_ignored(&path, true) {
                    stats.ignored += 1;
                    continue;
                }
                walk(
                    repo,
                    oid,
                    &path,
                    depth + 1,
                    rules,
                    writer,
                    interrupt,
                    stats,
                    seen_folded,
                )?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                if rules.is_ignored(&path, false) {
                    stats.ignored += 1;
                    continue;
                }
                let size = repo.find_header(oid).map_err(git)?.size();
                writer
                    .check_capacity(size)
                    .map_err(|e| limit_error(&path, e))?;
                let blob = repo.find_blob(oid).map_err(git)?;
                writer
                    .add_file(&path, kind == EntryKind::BlobExecutable, &blob.data)
                    .map_err(|e| limit_error(&path, e))?;
                stats.files += 1;
            }
            EntryKind::Link => {
                let size = repo.find_header(oid).map_err(git)?.size();
                if size > MAX_SYMLINK_TARGET {
                    return Err(hostile(&path, "symlink target longer than 4096 bytes"));
                }
                let blob = repo.find_blob(oid).map_err(git)?;
                check_symlink(&path, &blob.data)?;
                stats.dropped_symlinks += 1;
                if stats.dropped_symlink_paths.len() < MAX_REPORTED {
                    stats.dropped_symlink_paths.push(path);
                }
            }
            EntryKind::Commit => stats.submodules += 1,
        }
    }
    Ok(())
}

fn limit_error(path: &str, e: ArtifactError) -> SourceError {
    let exceeded = |limit, max, value| SourceError::LimitExceeded {
        revision: None,
        exceeded: LimitExceeded {
            limit,
            max,
            value,
            at: Some(format!("at '{path}'")),
        },
    };
    match e {
        ArtifactError::TooLarge { limit, value } => exceeded(Limit::TreeSize, limit, value),
        ArtifactError::TooManyEntries { limit, value } => exceeded(Limit::Files, limit, value),
        ArtifactError::HostileEntry { reason, .. } => hostile(path, reason),
        other => SourceError::Storage(other.to_string()),
    }
}

/// Refuses a symlink at `path` whose `target` is absolute or leaves the repository root.
fn check_symlink(path: &str, target: &[u8]) -> Result<(), SourceError> {
    if target.is_empty() {
        return Err(hostile(path, "symlink with an empty target"));
    }
    if target[0] == b'/' {
        return Err(hostile(path, "symlink to an absolute path"));
    }
    if target.contains(&b'\\') || target.contains(&0) {
        return Err(hostile(path, "symlink target contains a backslash or NUL"));
    }
    // Depth of the link's directory below the root, then follow the target's components
    // lexically: going above the root at any point is an escape.
    let mut depth = path.matches('/').count() as i64;
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(hostile(path, "symlink points outside the repository"));
                }
            }
            c if c.eq_ignore_ascii_case(b".git") => {
                return Err(hostile(path, "symlink points into .git"));
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exclusions_apply_without_spec_ignore() {
        for spec in [None, Some("# only a comment\n\n")] {
            let rules = IgnoreRules::new(spec);
            assert!(rules.is_ignored(".github", true));
            assert!(rules.is_ignored("sub/.gitlab-ci.yml", false));
            assert!(rules.is_ignored("img/logo.png", false));
            assert!(rules.is_ignored(".gitignore", false));
            assert!(!rules.is_ignored("deploy/app.yaml", false));
        }
    }

    /// Flux: "When specified, `.spec.ignore` overrides the default exclusion list" (the VCS
    /// files stay excluded).
    #[test]
    fn spec_ignore_replaces_the_default_exclusions() {
        let rules = IgnoreRules::new(Some("*.md\n!keep.png\n"));
        assert!(!rules.is_ignored(".github", true), "defaults replaced");
        assert!(
            !rules.is_ignored("img/logo.png", false),
            "defaults replaced"
        );
        assert!(!rules.is_ignored("keep.png", false));
        assert!(rules.is_ignored("README.md", false));
        assert!(rules.is_ignored(".git", true), "VCS files stay excluded");
        assert!(rules.is_ignored(".gitmodules", false));
        assert!(!rules.is_ignored("deploy/app.yaml", false));
    }

    /// Deliberate difference from Flux (documented on `spec.ignore`): a `.sourceignore` adds
    /// to the default exclusions instead of dropping them; `!` re-includes one.
    #[test]
    fn sourceignore_adds_to_the_default_exclusions() {
        let mut rules = IgnoreRules::new(None);
        rules.add_sourceignore("", b"secret.yaml\n!keep.zip\n");
        assert!(rules.is_ignored("secret.yaml", false));
        assert!(rules.is_ignored("bundle.tar.gz", false), "defaults stay");
        assert!(!rules.is_ignored("keep.zip", false));
    }

    #[test]
    fn sourceignore_is_relative_to_its_directory() {
        let mut rules = IgnoreRules::new(None);
        rules.add_sourceignore("deploy", b"secret.yaml\n/local-only/\n");
        assert!(rules.is_ignored("deploy/secret.yaml", false));
        assert!(rules.is_ignored("deploy/sub/secret.yaml", false));
        assert!(rules.is_ignored("deploy/local-only", true));
        assert!(!rules.is_ignored("other/local-only", true));
        assert!(!rules.is_ignored("secret.yaml", false));
    }

    #[test]
    fn dropped_entries_are_named_for_the_status() {
        assert_eq!(TreeStats::default().dropped_note(), None);
        let stats = TreeStats {
            dropped_symlinks: 12,
            dropped_symlink_paths: (0..MAX_REPORTED).map(|i| format!("l{i}")).collect(),
            submodules: 1,
            ..TreeStats::default()
        };
        let note = stats.dropped_note().unwrap();
        assert!(note.starts_with("12 symlink(s) dropped"), "{note}");
        assert!(
            note.contains("l0, l1") && note.contains("and 2 more"),
            "{note}"
        );
        assert!(note.contains("1 submodule(s) dropped"), "{note}");
    }

    #[test]
    fn symlink_rule() {
        assert!(check_symlink("a/link", b"../b/file").is_ok());
        assert!(check_symlink("link", b"sub/file").is_ok());
        assert!(check_symlink("link", b"../outside").is_err());
        assert!(check_symlink("a/link", b"../../outside").is_err());
        assert!(check_symlink("a/link", b"b/../../../x").is_err());
        assert!(check_symlink("link", b"/etc/passwd").is_err());
        assert!(check_symlink("link", b".git/config").is_err());
        assert!(check_symlink("link", b"").is_err());
    }
}
