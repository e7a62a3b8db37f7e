//! The on-disk cache of compiled components: reuse across hosts (restarts), and recompiling
//! when an entry is damaged.

use crate::support::*;
use gitops_reconciler::policy::{HostConfig, PolicyContext, PolicyHost};
use std::path::{Path, PathBuf};

fn private_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gitops-policy-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn host(dir: &Path) -> PolicyHost {
    PolicyHost::new(HostConfig {
        cache_dir: Some(dir.to_owned()),
        ..HostConfig::default()
    })
    .expect("host")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn good_call(host: &PolicyHost) {
    let outcome = host
        .run_pipeline(&[hostile("ok")], &PolicyContext::default(), objects())
        .expect("good call");
    assert_eq!(outcome.objects, objects());
}

#[test]
fn compiled_components_are_reused_by_a_restarted_host() {
    let dir = private_dir("reuse");
    good_call(&host(&dir));
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            hostile_bytes()
        ))),
        "{name}"
    );
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    // A second host (a restart) loads the entry instead of compiling: the file is not rewritten.
    good_call(&host(&dir));
    assert_eq!(entries(&dir), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupted_entries_are_recompiled_never_loaded() {
    let dir = private_dir("corrupt");
    good_call(&host(&dir));
    let entry = entries(&dir).remove(0);
    let original = std::fs::read(&entry).unwrap();

    // Flip a byte in the compiled code: the checksum no longer matches.
    let mut damaged = original.clone();
    let i = damaged.len() / 2;
    damaged[i] ^= 0xff;
    std::fs::write(&entry, &damaged).unwrap();
    good_call(&host(&dir));
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        original,
        "entry rewritten by the recompile"
    );

    // Truncated, and replaced by junk.
    std::fs::write(&entry, &original[..100]).unwrap();
    good_call(&host(&dir));
    assert_eq!(std::fs::read(&entry).unwrap(), original);
    std::fs::write(&entry, b"\x7fELF not ours").unwrap();
    good_call(&host(&dir));
    assert_eq!(std::fs::read(&entry).unwrap(), original);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hosts_without_a_cache_directory_work_in_memory() {
    let host = PolicyHost::new(HostConfig::default()).expect("host");
    good_call(&host);
    good_call(&host);
}
