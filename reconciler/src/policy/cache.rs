//! The on-disk cache of compiled components.
//!
//! Compiled (native) code is only ever loaded from here, and only after checking it: an entry
//! is `MAGIC ‖ sha256(payload) ‖ payload`, where the payload is `Component::serialize` output,
//! stored under `<dir>/<component sha256>-<engine hash>.cwasm`. The engine hash covers
//! wasmtime's own compatibility hash (version, target, every codegen-relevant setting), so an
//! upgraded or differently-configured reconciler never picks up an old entry. A missing,
//! truncated, corrupted or foreign entry is reported as a miss and the component is recompiled
//! (and the entry rewritten).

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KGPCWM1\n";

/// The on-disk cache directory, for one engine configuration.
#[derive(Clone, Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` output into sha256 so the engine hash is stable across processes (unlike
/// `DefaultHasher`, whose output is not guaranteed to be stable across Rust releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read with `finalize` below.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex of the first 16 bytes of sha256 over wasmtime's precompile compatibility hash.
pub(crate) fn engine_hash(engine: &wasmtime::Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// Why a cache entry was not used.
#[derive(Debug)]
pub(crate) enum Miss {
    /// No entry.
    Absent,
    /// The entry exists but failed its integrity check (or could not be read).
    Corrupt(String),
}

impl DiskCache {
    pub(crate) fn new(dir: PathBuf, engine_hash: String) -> DiskCache {
        DiskCache { dir, engine_hash }
    }

    /// The entry path for a component digest (`sha256` is lowercase hex, checked by the caller).
    pub(crate) fn entry_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Reads and verifies the entry for `sha256`; returns the serialized component.
    pub(crate) fn read(&self, sha256: &str) -> Result<Vec<u8>, Miss> {
        let path = self.entry_path(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Corrupt(format!("reading {}: {e}", path.display()))),
        };
        verify(&bytes).map(<[u8]>::to_vec).map_err(Miss::Corrupt)
    }

    /// Writes the entry for `sha256` atomically (temp file + rename in the same directory).
    pub(crate) fn write(&self, sha256: &str, payload: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(sha256);
        let tmp = self
            .dir
            .join(format!(".{sha256}.{}.tmp", std::process::id()));
        let result = write_entry(&tmp, payload).and_then(|()| std::fs::rename(&tmp, &path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn write_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(MAGIC)?;
    file.write_all(&Sha256::digest(payload))?;
    file.write_all(payload)?;
    file.sync_all()
}

/// Checks the header of an entry and returns its payload.
fn verify(bytes: &[u8]) -> Result<&[u8], String> {
    let header = MAGIC.len() + 32;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a kubectl-gitops cache entry".to_owned());
    }
    let (digest, payload) = bytes[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != digest {
        return Err("checksum mismatch".to_owned());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir =
            std::env::temp_dir().join(format!("gitops-policy-cache-unit-{}", std::process::id()));
        let cache = DiskCache::new(dir.clone(), "e".repeat(32));
        let sha = "a".repeat(64);
        assert!(matches!(cache.read(&sha), Err(Miss::Absent)));
        cache.write(&sha, b"compiled bytes").unwrap();
        assert_eq!(cache.read(&sha).unwrap(), b"compiled bytes");
        let path = cache.entry_path(&sha);
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(cache.read(&sha), Err(Miss::Corrupt(m)) if m.contains("checksum")));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(cache.read(&sha), Err(Miss::Corrupt(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
