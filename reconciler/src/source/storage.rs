//! Content-addressed artifact storage on the local filesystem.
//!
//! Layout under the storage root:
//! - `gitrepository/<namespace>/<name>/<sha256-hex>.tar.gz` — artifacts, named by their digest
//!   (so a stored file can always be re-verified against its own name);
//! - `git/<namespace>/<name>.git` — the bare object store each GitRepository fetches into.
//!
//! Writes go to a temporary file in the same directory, are synced, then renamed, so a reader
//! never sees a partial artifact. GC keeps the most recently stored N artifacts per object.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::artifact::{ArtifactError, ArtifactWriter, PackedArtifact, UnpackLimits, digest_hex};

/// Why a storage operation failed (reason StorageOperationFailed).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file or directory of the storage could not be read, written or removed.
    #[error("storage I/O on '{path}': {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A namespace or name that is not a DNS-1123 name safe as a directory name.
    #[error("invalid object name '{0}' for storage")]
    InvalidName(String),
    /// Another fetch of the same GitRepository (`namespace/name`) still holds its git
    /// directory after the claim wait.
    #[error("a previous fetch of {0} is still ending; retrying")]
    Busy(String),
    /// Writing, reading or verifying the archive failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Kubernetes names are DNS labels/subdomains: this keeps path components safe even if the
/// apiserver's validation was bypassed.
fn check_name(name: &str) -> Result<(), StorageError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidName(name.to_owned()))
    }
}

/// Object stores claimed by a fetch or a removal in this process (see [`Storage::claim`]).
static CLAIMED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// How long [`Storage::claim`] waits for the previous holder (a cancelled fetch unwinds well
/// within this).
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Marker file whose mtime says when an object store was last used (for LRU eviction).
const LAST_USED: &str = "gitops-last-used";

/// Exclusive use of one GitRepository's object store and artifact directory by this process;
/// released on drop.
#[derive(Debug)]
pub struct Claim {
    git_dir: PathBuf,
    /// Files a killed process had left (locks, temporary packs and artifacts), removed when
    /// the claim was taken.
    pub recovered: Vec<PathBuf>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut claimed) = CLAIMED.lock() {
            claimed.retain(|p| p != &self.git_dir);
        }
    }
}

fn is_claimed(git_dir: &Path) -> bool {
    CLAIMED
        .lock()
        .map(|c| c.iter().any(|p| p == git_dir))
        .unwrap_or(true)
}

/// Leftovers of an interrupted writer inside an object store: gix's lock files
/// (`shallow.lock`, `packed-refs.lock`, `refs/**/*.lock`, ...), its temporary pack and index
/// files and `.keep` files of packs whose refs were never written.
fn is_leftover(name: &str) -> bool {
    name.ends_with(".lock") || name.starts_with(".tmp") || name.ends_with(".keep")
}

/// Removes leftovers under `dir` (recursively, to a bounded depth); returns what was removed.
fn remove_leftovers(dir: &Path, depth: usize, removed: &mut Vec<PathBuf>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            remove_leftovers(&path, depth - 1, removed);
        } else if kind.is_file() && is_leftover(&name) && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
}

/// Bytes of regular files under `path` (not following symlinks).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    fs::read_dir(path)
        .map(|read| read.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}

/// What [`Storage::enforce_cap`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapOutcome {
    /// Bytes in storage afterwards.
    pub bytes: u64,
    /// Object stores evicted (`namespace/name`), least recently used first.
    pub evicted: Vec<String>,
}

/// The artifact store rooted at one directory.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

/// An artifact being written into storage; see [`Storage::begin`].
pub struct PendingArtifact {
    writer: ArtifactWriter<io::BufWriter<fs::File>>,
    temp: PathBuf,
    dir: PathBuf,
    relative_dir: String,
}

/// A stored artifact: where it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Path relative to the storage root, `gitrepository/<ns>/<name>/<hex>.tar.gz`; also the
    /// URL path under which the server serves it.
    pub path: String,
    /// Digest, size and content counts of the archive.
    pub packed: PackedArtifact,
}

impl PendingArtifact {
    /// The writer to add entries to.
    pub fn writer(&mut self) -> &mut ArtifactWriter<io::BufWriter<fs::File>> {
        &mut self.writer
    }

    /// Finishes the archive and moves it to its content address. Storing the same content
    /// again replaces nothing and refreshes its age for GC.
    pub fn commit(self) -> Result<StoredArtifact, StorageError> {
        let temp = self.temp.clone();
        let result = (|| {
            let (packed, buffered) = self.writer.finish()?;
            let file = buffered
                .into_inner()
                .map_err(|e| io_err(&self.temp)(e.into_error()))?;
            file.sync_all().map_err(io_err(&self.temp))?;
            drop(file);
            let hex = digest_hex(&packed.digest)?.to_owned();
            let final_path = self.dir.join(format!("{hex}.tar.gz"));
            fs::rename(&self.temp, &final_path).map_err(io_err(&final_path))?;
            Ok(StoredArtifact {
                path: format!("{}/{hex}.tar.gz", self.relative_dir),
                packed,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Drops the partial artifact.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.temp);
    }
}

impl Storage {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(Self { root })
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Relative directory of the artifacts of one GitRepository.
    pub fn artifact_dir(namespace: &str, name: &str) -> Result<String, StorageError> {
        check_name(namespace)?;
        check_name(name)?;
        Ok(format!("gitrepository/{namespace}/{name}"))
    }

    /// The bare git object store of one GitRepository.
    pub fn git_dir(&self, namespace: &str, name: &str) -> Result<PathBuf, StorageError> {
        check_name(namespace)?;
        check_name(name)?;
        Ok(self
            .root
            .join("git")
            .join(namespace)
            .join(format!("{name}.git")))
    }

    /// Takes exclusive use of the object store and artifact directory of `namespace/name`
    /// within this process, waiting up to `CLAIM_WAIT` for a previous holder.
    ///
    /// Expected flow: every fetch and every removal claims first. Guarantees: while the claim
    /// is held nothing else in this process writes there, so lock files and temporary files
    /// found there are leftovers of a killed process and are removed (reported in
    /// [`Claim::recovered`]). Assumptions: one reconciler process uses a storage directory at a
    /// time (leader election); a second process writing the same directory would have its
    /// locks taken for leftovers.
    pub fn claim(&self, namespace: &str, name: &str) -> Result<Claim, StorageError> {
        let git_dir = self.git_dir(namespace, name)?;
        let artifact_dir = self.root.join(Self::artifact_dir(namespace, name)?);
        let started = Instant::now();
        loop {
            {
                let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
                if !claimed.contains(&git_dir) {
                    claimed.push(git_dir.clone());
                    break;
                }
            }
            if started.elapsed() > CLAIM_WAIT {
                return Err(StorageError::Busy(format!("{namespace}/{name}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut recovered = Vec::new();
        remove_leftovers(&git_dir, 8, &mut recovered);
        remove_leftovers(&artifact_dir, 0, &mut recovered);
        if git_dir.is_dir() {
            let _ = fs::write(git_dir.join(LAST_USED), b"");
        }
        Ok(Claim { git_dir, recovered })
    }

    /// Bytes of everything in storage.
    pub fn usage(&self) -> u64 {
        disk_usage(&self.root)
    }

    /// Keeps storage under `max_bytes` by evicting whole object stores (the git caches, which
    /// the next fetch rebuilds) least recently used first, skipping any claimed right now.
    /// Artifacts are never evicted here: they are what the cluster is served (each
    /// GitRepository keeps only its last few, see [`Storage::gc`]). `max_bytes == 0` means no
    /// cap.
    pub fn enforce_cap(&self, max_bytes: u64) -> CapOutcome {
        let mut bytes = self.usage();
        let mut evicted = Vec::new();
        if max_bytes == 0 || bytes <= max_bytes {
            return CapOutcome { bytes, evicted };
        }
        let mut caches = Vec::new();
        if let Ok(namespaces) = fs::read_dir(self.root.join("git")) {
            for ns in namespaces.flatten() {
                let Ok(stores) = fs::read_dir(ns.path()) else {
                    continue;
                };
                for store in stores.flatten() {
                    let path = store.path();
                    let used = fs::metadata(path.join(LAST_USED))
                        .or_else(|_| store.metadata())
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    let label = format!(
                        "{}/{}",
                        ns.file_name().to_string_lossy(),
                        store.file_name().to_string_lossy().trim_end_matches(".git")
                    );
                    caches.push((used, label, path));
                }
            }
        }
        caches.sort();
        for (_, label, path) in caches {
            if bytes <= max_bytes {
                break;
            }
            if is_claimed(&path) {
                continue;
            }
            let size = disk_usage(&path);
            if fs::remove_dir_all(&path).is_ok() {
                bytes = bytes.saturating_sub(size);
                evicted.push(label);
            }
        }
        CapOutcome { bytes, evicted }
    }

    /// Starts writing an artifact for `namespace/name`.
    pub fn begin(
        &self,
        namespace: &str,
        name: &str,
        limits: UnpackLimits,
    ) -> Result<PendingArtifact, StorageError> {
        let relative_dir = Self::artifact_dir(namespace, name)?;
        let dir = self.root.join(&relative_dir);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let temp = dir.join(format!(".tmp-{}-{nonce}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_err(&temp))?;
        Ok(PendingArtifact {
            writer: ArtifactWriter::new(io::BufWriter::with_capacity(1 << 16, file), limits),
            temp,
            dir,
            relative_dir,
        })
    }

    /// Absolute path of a stored artifact given its relative path; `None` when the relative path
    /// is not of the shape this store writes (so nothing outside the store can be named).
    pub fn resolve(&self, relative: &str) -> Option<PathBuf> {
        let parts: Vec<&str> = relative.split('/').collect();
        match parts.as_slice() {
            ["gitrepository", ns, name, file] => {
                check_name(ns).ok()?;
                check_name(name).ok()?;
                let hex = file.strip_suffix(".tar.gz")?;
                digest_hex(&format!("sha256:{hex}")).ok()?;
                Some(self.root.join(relative))
            }
            _ => None,
        }
    }

    /// True when the artifact at `relative` exists.
    pub fn exists(&self, relative: &str) -> bool {
        self.resolve(relative).is_some_and(|p| p.is_file())
    }

    /// Marks an artifact as most recently used (for GC order).
    pub fn touch(&self, relative: &str) -> Result<(), StorageError> {
        if let Some(path) = self.resolve(relative) {
            let file = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_modified(SystemTime::now())
                .map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Deletes all but the `keep` most recent artifacts of `namespace/name`, never the one at
    /// `current` (relative path). Stale temporary files are removed too. Returns how many
    /// artifacts were deleted.
    pub fn gc(
        &self,
        namespace: &str,
        name: &str,
        keep: usize,
        current: Option<&str>,
    ) -> Result<usize, StorageError> {
        let relative_dir = Self::artifact_dir(namespace, name)?;
        let dir = self.root.join(&relative_dir);
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut artifacts = Vec::new();
        for entry in read {
            let entry = entry.map_err(io_err(&dir))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if file_name.starts_with(".tmp-") {
                // A crash mid-write leaves these; ones older than a minute are abandoned.
                if modified.elapsed().is_ok_and(|age| age.as_secs() > 60) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if file_name.ends_with(".tar.gz") {
                artifacts.push((modified, file_name));
            }
        }
        artifacts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut deleted = 0;
        for (_, file_name) in artifacts.into_iter().skip(keep) {
            let relative = format!("{relative_dir}/{file_name}");
            if current == Some(relative.as_str()) {
                continue;
            }
            let path = dir.join(&file_name);
            fs::remove_file(&path).map_err(io_err(&path))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Removes everything stored for `namespace/name` (artifacts and object store): used when
    /// the GitRepository is deleted.
    pub fn remove_all(&self, namespace: &str, name: &str) -> Result<(), StorageError> {
        let _claim = self.claim(namespace, name)?;
        let dir = self.root.join(Self::artifact_dir(namespace, name)?);
        for path in [dir, self.git_dir(namespace, name)?] {
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    /// Reads a stored artifact and checks its bytes against the digest in its file name.
    pub fn read_verified(&self, relative: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(path) = self.resolve(relative) else {
            return Ok(None);
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = format!("sha256:{}", name.trim_end_matches(".tar.gz"));
        let actual = super::artifact::digest_of(&bytes);
        if actual != expected {
            return Err(ArtifactError::DigestMismatch { expected, actual }.into());
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> Storage {
        let dir =
            std::env::temp_dir().join(format!("gitops-storage-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Storage::new(dir).unwrap()
    }

    fn put(storage: &Storage, content: &[u8]) -> StoredArtifact {
        let mut pending = storage
            .begin("ns", "repo", UnpackLimits::default())
            .unwrap();
        pending.writer().add_file("a.yaml", false, content).unwrap();
        pending.commit().unwrap()
    }

    #[test]
    fn stores_by_digest_and_reads_back_verified() {
        let storage = store("digest");
        let stored = put(&storage, b"one");
        let hex = digest_hex(&stored.packed.digest).unwrap();
        assert_eq!(stored.path, format!("gitrepository/ns/repo/{hex}.tar.gz"));
        let bytes = storage.read_verified(&stored.path).unwrap().unwrap();
        assert_eq!(bytes.len() as u64, stored.packed.size);
        // Same content, same address.
        assert_eq!(put(&storage, b"one").path, stored.path);
        // Tampering is detected.
        fs::write(storage.resolve(&stored.path).unwrap(), b"tampered").unwrap();
        assert!(matches!(
            storage.read_verified(&stored.path),
            Err(StorageError::Artifact(ArtifactError::DigestMismatch { .. }))
        ));
        assert!(storage.resolve("../etc/passwd").is_none());
        assert!(
            storage
                .resolve("gitrepository/ns/../x/abc.tar.gz")
                .is_none()
        );
        fs::remove_dir_all(storage.root()).unwrap();
    }

    #[test]
    fn gc_keeps_the_newest_and_the_current() {
        let storage = store("gc");
        let mut stored = Vec::new();
        for i in 0..5u8 {
            stored.push(put(&storage, &[i]));
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let deleted = storage.gc("ns", "repo", 2, Some(&stored[0].path)).unwrap();
        assert_eq!(deleted, 2);
        assert!(storage.exists(&stored[0].path), "current kept");
        assert!(!storage.exists(&stored[1].path));
        assert!(!storage.exists(&stored[2].path));
        assert!(storage.exists(&stored[3].path));
        assert!(storage.exists(&stored[4].path));
        storage.remove_all("ns", "repo").unwrap();
        assert!(!storage.exists(&stored[4].path));
        fs::remove_dir_all(storage.root()).unwrap();
    }

    #[test]
    fn a_claim_is_exclusive_and_removes_what_a_killed_process_left() {
        let storage = store("claim");
        let git_dir = storage.git_dir("ns", "repo").unwrap();
        fs::create_dir_all(git_dir.join("objects/pack")).unwrap();
        fs::create_dir_all(git_dir.join("refs/heads")).unwrap();
        for leftover in [
            "shallow.lock",
            "refs/heads/main.lock",
            "objects/pack/.tmpAbC123",
            "objects/pack/pack-1.keep",
        ] {
            fs::write(git_dir.join(leftover), b"x").unwrap();
        }
        fs::write(git_dir.join("objects/pack/pack-1.pack"), b"kept").unwrap();
        let artifacts = storage.root().join("gitrepository/ns/repo");
        fs::create_dir_all(&artifacts).unwrap();
        fs::write(artifacts.join(".tmp-1-2"), b"partial").unwrap();

        let claim = storage.claim("ns", "repo").unwrap();
        assert_eq!(claim.recovered.len(), 5, "{:?}", claim.recovered);
        assert!(!git_dir.join("shallow.lock").exists());
        assert!(git_dir.join("objects/pack/pack-1.pack").exists());
        // A second claim waits for the first and then gets it.
        let other = storage.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let claim = other.claim("ns", "repo");
            (claim.is_ok(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(claim);
        let (ok, waited) = waiter.join().unwrap();
        assert!(ok && waited >= Duration::from_millis(250), "{waited:?}");
        fs::remove_dir_all(storage.root()).unwrap();
    }

    #[test]
    fn the_cap_evicts_least_recently_used_caches_but_not_claimed_ones() {
        let storage = store("cap");
        for (name, size) in [("old", 3000), ("busy", 3000), ("new", 3000)] {
            let dir = storage.git_dir("ns", name).unwrap();
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("objects.bin"), vec![0u8; size]).unwrap();
            let claim = storage.claim("ns", name).unwrap();
            drop(claim);
            std::thread::sleep(Duration::from_millis(20));
        }
        // "old" is the least recently used, then "busy" (held now), then "new".
        let busy = storage.claim("ns", "busy").unwrap();
        let busy_used = storage.git_dir("ns", "busy").unwrap().join(LAST_USED);
        let old_time = fs::metadata(storage.git_dir("ns", "old").unwrap().join(LAST_USED))
            .unwrap()
            .modified()
            .unwrap();
        fs::File::options()
            .write(true)
            .open(&busy_used)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        let outcome = storage.enforce_cap(4000);
        assert_eq!(
            outcome.evicted,
            vec!["ns/old".to_owned(), "ns/new".to_owned()]
        );
        assert!(outcome.bytes <= 4000, "{outcome:?}");
        assert!(storage.git_dir("ns", "busy").unwrap().exists());
        drop(busy);
        assert_eq!(storage.enforce_cap(0).evicted, Vec::<String>::new());
        fs::remove_dir_all(storage.root()).unwrap();
    }

    #[test]
    fn invalid_names_are_refused() {
        let storage = store("names");
        assert!(storage.begin("..", "x", UnpackLimits::default()).is_err());
        assert!(storage.begin("ns", "a/b", UnpackLimits::default()).is_err());
        fs::remove_dir_all(storage.root()).unwrap();
    }
}
