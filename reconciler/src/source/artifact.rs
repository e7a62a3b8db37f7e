//! Artifacts: the deterministic tar.gz of a filtered source tree, and its verified unpacking.
//!
//! Format (the contract with the Kustomization stage, contracts.md): a gzip'd tar whose entries
//! are directories and regular files only, with paths relative to the repository root (no
//! leading `./`, no absolute paths), written in the order of a depth-first walk of the git tree
//! (git's tree order, so the same tree always yields the same entry order), with fixed
//! mtime (0), uid/gid (0), no user/group names, mode 0755 for directories and executables and
//! 0644 for other files, and a gzip header without name or time. The same tree therefore always
//! has the same `sha256:<hex>` digest.
//!
//! Symlinks are never written into an artifact (see [`super::tree`] for the rule that decides
//! between dropping and refusing them), so consumers never create a link.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use sha2::{Digest, Sha256};

/// Directory mode in artifacts.
const DIR_MODE: u32 = 0o755;
/// Mode of executable files in artifacts.
const EXEC_MODE: u32 = 0o755;
/// Mode of other files in artifacts.
const FILE_MODE: u32 = 0o644;

/// Bounds enforced while unpacking (and, by the fetch, while packing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Sum of the sizes of all files, in bytes.
    pub max_total_bytes: u64,
    /// Number of entries (files and directories).
    pub max_entries: u64,
}

impl UnpackLimits {
    /// Default of [`UnpackLimits::max_total_bytes`]: 100 MiB.
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 100 * 1024 * 1024;
    /// Default of [`UnpackLimits::max_entries`].
    pub const DEFAULT_MAX_ENTRIES: u64 = 20_000;
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Why an artifact could not be written or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The expected digest is not `sha256:<64 lowercase hex>`.
    #[error("artifact digest '{0}' is not of the form sha256:<64 lowercase hex>")]
    MalformedDigest(String),
    /// The bytes do not hash to the expected digest; nothing was unpacked.
    #[error("artifact digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the artifact should have.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// An entry that could escape or harm the target directory (absolute path, `..`, a link
    /// out of the tree, a device file, ...).
    #[error("artifact entry '{path}' refused: {reason}")]
    HostileEntry {
        /// The entry's path as the archive names it.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The files' content adds up to more than the byte limit.
    #[error("artifact exceeds the limit of {limit} bytes of file content ({value} bytes)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
        /// The total when unpacking stopped, in bytes.
        value: u64,
    },
    /// The archive holds more entries than the limit.
    #[error("artifact exceeds the limit of {limit} entries ({value} entries)")]
    TooManyEntries {
        /// The limit, in entries.
        limit: u64,
        /// The count when unpacking stopped.
        value: u64,
    },
    /// The bytes are not a gzip-compressed tar archive.
    #[error("artifact is not a valid tar.gz: {0}")]
    Corrupt(String),
    /// A file or directory could not be written.
    #[error("cannot write '{path}': {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl ArtifactError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<64 lowercase hex>` digest, or `MalformedDigest`.
pub fn digest_hex(digest: &str) -> Result<&str, ArtifactError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ArtifactError::MalformedDigest(digest.to_owned())),
    }
}

/// Checks one relative artifact path: `/`-separated non-empty components, none of which is
/// `.`, `..` or `.git` in any case, no backslash, NUL or other control character, not absolute.
/// Returns the reason of the refusal.
pub fn check_relative_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    if path.contains(&b'\\') {
        return Err("backslash in path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    if path.iter().any(|b| b.is_ascii_control()) {
        return Err("control character in path");
    }
    if std::str::from_utf8(path).is_err() {
        return Err("path is not UTF-8");
    }
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" => return Err("empty path component"),
            b"." => return Err("'.' path component"),
            b".." => return Err("'..' path component"),
            c if c.eq_ignore_ascii_case(b".git") => return Err("'.git' path component"),
            c => check_component_as_git_does(c)?,
        }
    }
    Ok(())
}

/// What git refuses by default in a tree entry name (`core.protectNTFS`, on by default, and
/// `core.protectHFS`, on by default on macOS): names that NTFS or HFS+ would open as `.git` —
/// `git~1` and other 8.3 short names, `.git` with trailing dots or spaces, `.git::$INDEX_ALLOCATION`
/// and other alternate data streams, `.git` with Unicode characters HFS+ ignores. gix-validate
/// implements git's rules; the Windows-only rules (reserved device names, `:` and `<>"|?*`) stay
/// off, as in git on Linux.
fn check_component_as_git_does(component: &[u8]) -> Result<(), &'static str> {
    use gix::validate::path::component::{Error, Options};
    let options = Options {
        protect_windows: false,
        protect_hfs: true,
        protect_ntfs: true,
    };
    match gix::validate::path::component(component.into(), None, options) {
        Ok(_) => Ok(()),
        Err(Error::DotGitDir) => Err(
            "name that NTFS or HFS+ opens as '.git' (git~1, trailing dots or spaces, \
             alternate data streams or ignored Unicode characters; git refuses it too)",
        ),
        Err(_) => Err("path component git refuses (core.protectNTFS / core.protectHFS)"),
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a finished [`ArtifactWriter`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedArtifact {
    /// `sha256:<hex>` of the tar.gz bytes.
    pub digest: String,
    /// Size of the tar.gz in bytes.
    pub size: u64,
    /// Number of files written.
    pub files: u64,
    /// Sum of the file sizes.
    pub content_bytes: u64,
}

/// Streams a deterministic tar.gz artifact into `W`, hashing as it goes, enforcing
/// [`UnpackLimits`] on what is added (so a fetch stops at the cap, not after it).
///
/// Guarantees: every added path passed [`check_relative_path`]; entries appear in the order
/// they were added (the caller walks the tree in a deterministic order).
pub struct ArtifactWriter<W: Write> {
    builder: tar::Builder<flate2::write::GzEncoder<HashingWriter<W>>>,
    limits: UnpackLimits,
    entries: u64,
    files: u64,
    content_bytes: u64,
}

impl<W: Write> ArtifactWriter<W> {
    /// Starts an artifact written to `out`.
    pub fn new(out: W, limits: UnpackLimits) -> Self {
        let hashing = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            written: 0,
        };
        // A gzip header without file name and with mtime 0: deterministic bytes. Level 6 like
        // gzip's default.
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(hashing, Compression::new(6));
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Deterministic);
        Self {
            builder,
            limits,
            entries: 0,
            files: 0,
            content_bytes: 0,
        }
    }

    fn admit(&mut self, path: &str, size: u64) -> Result<(), ArtifactError> {
        check_relative_path(path.as_bytes()).map_err(|reason| ArtifactError::HostileEntry {
            path: path.to_owned(),
            reason,
        })?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries {
                limit: self.limits.max_entries,
                value: self.entries,
            });
        }
        self.content_bytes = self.content_bytes.saturating_add(size);
        if self.content_bytes > self.limits.max_total_bytes {
            return Err(ArtifactError::TooLarge {
                limit: self.limits.max_total_bytes,
                value: self.content_bytes,
            });
        }
        Ok(())
    }

    /// Checks that one more file of `size` bytes fits the limits, before its content is read.
    pub fn check_capacity(&self, size: u64) -> Result<(), ArtifactError> {
        if self.entries + 1 > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries {
                limit: self.limits.max_entries,
                value: self.entries + 1,
            });
        }
        let total = self.content_bytes.saturating_add(size);
        if total > self.limits.max_total_bytes {
            return Err(ArtifactError::TooLarge {
                limit: self.limits.max_total_bytes,
                value: total,
            });
        }
        Ok(())
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    /// Adds a directory entry (`path` without trailing slash).
    pub fn add_dir(&mut self, path: &str) -> Result<(), ArtifactError> {
        self.admit(path, 0)?;
        let mut header = Self::header(tar::EntryType::Directory, DIR_MODE, 0);
        self.builder
            .append_data(&mut header, format!("{path}/"), io::empty())
            .map_err(|e| ArtifactError::io(Path::new(path), e))
    }

    /// Adds a regular file.
    pub fn add_file(
        &mut self,
        path: &str,
        executable: bool,
        data: &[u8],
    ) -> Result<(), ArtifactError> {
        self.admit(path, data.len() as u64)?;
        self.files += 1;
        let mode = if executable { EXEC_MODE } else { FILE_MODE };
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(|e| ArtifactError::io(Path::new(path), e))
    }

    /// Finishes the archive and returns the digest, size and the underlying writer.
    pub fn finish(self) -> Result<(PackedArtifact, W), ArtifactError> {
        let files = self.files;
        let content_bytes = self.content_bytes;
        let gz = self
            .builder
            .into_inner()
            .map_err(|e| ArtifactError::io(Path::new("<artifact>"), e))?;
        let mut hashing = gz
            .finish()
            .map_err(|e| ArtifactError::io(Path::new("<artifact>"), e))?;
        hashing
            .flush()
            .map_err(|e| ArtifactError::io(Path::new("<artifact>"), e))?;
        let packed = PackedArtifact {
            digest: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
            size: hashing.written,
            files,
            content_bytes,
        };
        Ok((packed, hashing.inner))
    }
}

/// A reader that fails once more than `remaining` bytes have been read: bounds the decompressed
/// stream (tar headers and padding included) so that a gzip bomb stops early.
struct BoundedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            return Err(io::Error::other(format!(
                "decompressed artifact exceeds {} bytes",
                self.limit
            )));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Verifies `bytes` against `expected_digest`, then unpacks them into `dest` (which must exist).
///
/// Guarantees:
/// - the digest is checked before a single byte is decompressed;
/// - only directories and regular files are created, all strictly below `dest`; any other
///   entry type, any path failing [`check_relative_path`] and any duplicate path is refused;
/// - `limits` are enforced while reading (a file's declared size is checked before its data is
///   read, and the decompressed stream is bounded), never after;
/// - on error, what was already written stays in `dest`: callers unpack into a fresh directory
///   and delete it on error.
pub fn unpack_verified(
    bytes: &[u8],
    expected_digest: &str,
    limits: &UnpackLimits,
    dest: &Path,
) -> Result<(), ArtifactError> {
    digest_hex(expected_digest)?;
    let actual = digest_of(bytes);
    if actual != expected_digest {
        return Err(ArtifactError::DigestMismatch {
            expected: expected_digest.to_owned(),
            actual,
        });
    }
    // Headers and padding are at most 3 blocks (long name, header, padding) per entry plus the
    // end-of-archive blocks and long names themselves; 4 KiB per entry covers them.
    let stream_limit = limits
        .max_total_bytes
        .saturating_add(limits.max_entries.saturating_add(4).saturating_mul(4096));
    let reader = BoundedReader {
        inner: flate2::read::GzDecoder::new(bytes),
        remaining: stream_limit,
        limit: stream_limit,
    };
    let mut archive = tar::Archive::new(reader);
    let corrupt = |e: io::Error| ArtifactError::Corrupt(e.to_string());
    let mut entries_seen = 0u64;
    let mut total = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(ArtifactError::TooManyEntries {
                limit: limits.max_entries,
                value: entries_seen,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        // Archives made with `tar -C dir .` (as other tools publish them) name every entry
        // `./path` and the root `./`: the prefix adds nothing, and the root is `dest` itself.
        let mut path: &[u8] = &raw_path;
        while let Some(rest) = path.strip_prefix(b"./") {
            path = rest;
        }
        if kind == tar::EntryType::Directory && (path.is_empty() || path == b".") {
            continue;
        }
        let trimmed: &[u8] = if kind == tar::EntryType::Directory {
            path.strip_suffix(b"/").unwrap_or(path)
        } else {
            path
        };
        check_relative_path(trimmed).map_err(|reason| ArtifactError::HostileEntry {
            path: shown.clone(),
            reason,
        })?;
        // check_relative_path guarantees UTF-8 and only normal components.
        let relative = PathBuf::from(String::from_utf8_lossy(trimmed).into_owned());
        debug_assert!(
            relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        );
        let target = dest.join(&relative);
        match kind {
            tar::EntryType::Directory => match fs::create_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {
                    return Err(ArtifactError::HostileEntry {
                        path: shown,
                        reason: "duplicate entry",
                    });
                }
                Err(e) => return Err(ArtifactError::io(&target, e)),
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(ArtifactError::TooLarge {
                        limit: limits.max_total_bytes,
                        value: total,
                    });
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| ArtifactError::io(parent, e))?;
                }
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            ArtifactError::HostileEntry {
                                path: shown.clone(),
                                reason: "duplicate entry",
                            }
                        } else {
                            ArtifactError::io(&target, e)
                        }
                    })?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| ArtifactError::io(&target, e))?;
                if copied != size {
                    return Err(ArtifactError::Corrupt(format!(
                        "entry '{shown}' is truncated"
                    )));
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = entry.header().mode().map_err(corrupt)?;
                    let mode = if mode & 0o111 != 0 {
                        EXEC_MODE
                    } else {
                        FILE_MODE
                    };
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| ArtifactError::io(&target, e))?;
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(ArtifactError::HostileEntry {
                    path: shown,
                    reason: "links are not allowed in artifacts",
                });
            }
            _ => {
                return Err(ArtifactError::HostileEntry {
                    path: shown,
                    reason: "only directories and regular files are allowed in artifacts",
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(files: &[(&str, &[u8])]) -> (Vec<u8>, PackedArtifact) {
        let mut writer = ArtifactWriter::new(Vec::new(), UnpackLimits::default());
        for (path, data) in files {
            if data.is_empty() && path.ends_with('/') {
                writer.add_dir(path.trim_end_matches('/')).unwrap();
            } else {
                writer.add_file(path, false, data).unwrap();
            }
        }
        let (packed, bytes) = writer.finish().unwrap();
        (bytes, packed)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gitops-artifact-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A raw tar.gz with one entry whose name and type are set without any checks (as an
    /// attacker would write it).
    fn raw_tar_gz(name: &[u8], kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        {
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name);
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar_bytes = Vec::new();
        tar_bytes.extend_from_slice(header.as_bytes());
        tar_bytes.extend_from_slice(data);
        tar_bytes.resize(tar_bytes.len().div_ceil(512) * 512 + 1024, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn same_tree_gives_same_digest_and_round_trips() {
        let files: &[(&str, &[u8])] = &[
            ("deploy/", b""),
            ("deploy/app.yaml", b"kind: ConfigMap\n"),
            ("README.md", b"hello"),
        ];
        let (a, pa) = pack(files);
        let (b, pb) = pack(files);
        assert_eq!(a, b);
        assert_eq!(pa, pb);
        assert_eq!(pa.digest, digest_of(&a));
        assert_eq!(pa.size, a.len() as u64);
        assert_eq!(pa.files, 2);
        let dest = tempdir("roundtrip");
        unpack_verified(&a, &pa.digest, &UnpackLimits::default(), &dest).unwrap();
        assert_eq!(
            fs::read(dest.join("deploy/app.yaml")).unwrap(),
            b"kind: ConfigMap\n"
        );
        assert_eq!(fs::read(dest.join("README.md")).unwrap(), b"hello");
        fs::remove_dir_all(dest).unwrap();
    }

    #[test]
    fn different_content_gives_different_digest() {
        let (_, a) = pack(&[("a", b"1")]);
        let (_, b) = pack(&[("a", b"2")]);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn digest_is_checked_before_unpacking() {
        let (bytes, _) = pack(&[("a", b"1")]);
        let dest = tempdir("digest");
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = unpack_verified(&bytes, &wrong, &UnpackLimits::default(), &dest).unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
        assert!(
            fs::read_dir(&dest).unwrap().next().is_none(),
            "nothing written"
        );
        let err = unpack_verified(&bytes, "md5:abc", &UnpackLimits::default(), &dest).unwrap_err();
        assert!(matches!(err, ArtifactError::MalformedDigest(_)));
        fs::remove_dir_all(dest).unwrap();
    }

    /// `tar -C dir .` names the root `./` and every entry `./path`.
    #[test]
    fn dot_slash_prefixed_archives_unpack() {
        let mut tar_bytes = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tar_bytes);
            for dir in ["./", "./app/"] {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, dir, &[][..]).unwrap();
            }
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(3);
            builder
                .append_data(&mut header, "./app/cm.yaml", &b"a: 1"[..3])
                .unwrap();
            builder.finish().unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        let bytes = gz.finish().unwrap();
        let dest = tempdir("dotslash");
        unpack_verified(&bytes, &digest_of(&bytes), &UnpackLimits::default(), &dest).unwrap();
        assert_eq!(fs::read(dest.join("app/cm.yaml")).unwrap(), b"a: ");
        fs::remove_dir_all(dest).unwrap();
    }

    #[test]
    fn hostile_entries_are_refused() {
        let cases: &[(&[u8], tar::EntryType, &str)] = &[
            (b"../escape", tar::EntryType::Regular, "'..'"),
            (b"a/../../escape", tar::EntryType::Regular, "'..'"),
            (b"/etc/passwd", tar::EntryType::Regular, "absolute"),
            (b".git/config", tar::EntryType::Regular, ".git"),
            (b"sub/.GiT/hooks/x", tar::EntryType::Regular, ".git"),
            (b"a\\b", tar::EntryType::Regular, "backslash"),
            (b"link", tar::EntryType::Symlink, "links"),
            (b"hard", tar::EntryType::Link, "links"),
            (b"fifo", tar::EntryType::Fifo, "only directories"),
            (b"./../escape", tar::EntryType::Regular, "'..'"),
            (b"././.git/config", tar::EntryType::Regular, ".git"),
            (b"./", tar::EntryType::Regular, "empty path"),
            (b".//x", tar::EntryType::Regular, "absolute"),
        ];
        for (name, kind, why) in cases {
            let bytes = raw_tar_gz(name, *kind, b"x");
            let dest = tempdir("hostile");
            let err = unpack_verified(&bytes, &digest_of(&bytes), &UnpackLimits::default(), &dest)
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ArtifactError::HostileEntry { .. }) && text.contains(why),
                "{}: {text}",
                String::from_utf8_lossy(name)
            );
            assert!(fs::read_dir(&dest).unwrap().next().is_none());
            fs::remove_dir_all(dest).unwrap();
        }
    }

    #[test]
    fn names_git_refuses_by_default_are_refused() {
        for name in [
            "git~1",
            "GIT~1",
            "sub/Git~1/x",
            ".git.",
            ".git ",
            ".git. . ",
            ".GIT.",
            ".git::$INDEX_ALLOCATION",
            ".git::$INDEX_ALLOCATION/config",
            ".g\u{200c}it",
            "a/.gi\u{200d}t/b",
        ] {
            let reason = check_relative_path(name.as_bytes())
                .expect_err(&format!("{name:?} must be refused"));
            assert!(
                reason.contains(".git") || reason.contains("git refuses"),
                "{name:?}: {reason}"
            );
        }
        // What git on Linux accepts stays accepted.
        for name in [
            "CON",
            "nul.txt",
            "a:b",
            "what?.yaml",
            "git~1x",
            "git~2.yaml",
            "deploy/app.yaml",
            "x.",
            "y ",
        ] {
            assert!(
                check_relative_path(name.as_bytes()).is_ok(),
                "{name:?} is accepted"
            );
        }
    }

    #[test]
    fn writer_refuses_hostile_paths() {
        for path in [
            "../x",
            ".git/config",
            "a/.Git",
            "a\\b",
            "/abs",
            "a//b",
            "a\0b",
        ] {
            let mut writer = ArtifactWriter::new(Vec::new(), UnpackLimits::default());
            let err = writer.add_file(path, false, b"x").unwrap_err();
            assert!(matches!(err, ArtifactError::HostileEntry { .. }), "{path}");
        }
    }

    #[test]
    fn limits_are_enforced_while_reading() {
        let big = vec![b'a'; 4096];
        let (bytes, packed) = pack(&[("one", &big), ("two", &big), ("three", &big)]);
        let dest = tempdir("limits");
        let limits = UnpackLimits {
            max_total_bytes: 5000,
            max_entries: 100,
        };
        let err = unpack_verified(&bytes, &packed.digest, &limits, &dest).unwrap_err();
        assert!(
            matches!(err, ArtifactError::TooLarge { limit: 5000, .. }),
            "{err}"
        );
        // The second file's size was refused before its data was written.
        assert!(!dest.join("two").exists());
        let _ = fs::remove_dir_all(&dest);
        let dest = tempdir("limits2");
        let limits = UnpackLimits {
            max_total_bytes: 1 << 20,
            max_entries: 2,
        };
        let err = unpack_verified(&bytes, &packed.digest, &limits, &dest).unwrap_err();
        assert!(
            matches!(err, ArtifactError::TooManyEntries { limit: 2, .. }),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dest);

        let mut writer = ArtifactWriter::new(
            Vec::new(),
            UnpackLimits {
                max_total_bytes: 10,
                max_entries: 10,
            },
        );
        writer.add_file("a", false, b"12345").unwrap();
        let err = writer.add_file("b", false, b"123456").unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { .. }));
    }

    #[test]
    fn gzip_bomb_stops_at_the_stream_bound() {
        // One entry declaring a huge size: refused from its header.
        let mut header = tar::Header::new_gnu();
        header.set_path("bomb").unwrap();
        header.set_size(1 << 40);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..8 {
            gz.write_all(&zeros).unwrap();
        }
        let bytes = gz.finish().unwrap();
        let dest = tempdir("bomb");
        let limits = UnpackLimits {
            max_total_bytes: 1 << 20,
            max_entries: 10,
        };
        let err = unpack_verified(&bytes, &digest_of(&bytes), &limits, &dest).unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err}");
        let _ = fs::remove_dir_all(&dest);
    }

    #[test]
    fn long_paths_round_trip() {
        let long = format!("{}/file.yaml", "d".repeat(150));
        let (bytes, packed) = pack(&[(&long, b"x")]);
        let dest = tempdir("long");
        unpack_verified(&bytes, &packed.digest, &UnpackLimits::default(), &dest).unwrap();
        assert_eq!(fs::read(dest.join(&long)).unwrap(), b"x");
        fs::remove_dir_all(dest).unwrap();
    }
}
