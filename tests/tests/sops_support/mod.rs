//! The real `sops` and `age-keygen` (built into the cache by tests/setup.d/26-sops.sh) for
//! the SOPS tests: key pairs, encryption and decryption in a scratch directory.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use gitops_conformance::{repo_root, run_ok};
use gitops_reconciler::sops::Format;

/// The tool paths as tests/cluster/versions.sh sets them.
fn tool(var: &str) -> PathBuf {
    let out = run_ok(Command::new("bash").arg("-c").arg(format!(
        ". '{}/tests/cluster/versions.sh' && printf %s \"${var}\"",
        repo_root().display()
    )));
    PathBuf::from(out)
}

pub struct Tools {
    pub sops: PathBuf,
    pub age_keygen: PathBuf,
    pub dir: tempfile::TempDir,
}

/// An age key pair from the real age-keygen: (identity file text, recipient).
pub fn age_key(t: &Tools, name: &str) -> (String, String) {
    let path = t.dir.path().join(format!("{name}.agekey"));
    run_ok(Command::new(&t.age_keygen).arg("-o").arg(&path));
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned();
    (text, recipient)
}

pub fn tools() -> Tools {
    let sops = tool("SOPS_BIN");
    let age_keygen = tool("AGE_BIN_DIR").join("age-keygen");
    for bin in [&sops, &age_keygen] {
        assert!(
            bin.is_file(),
            "{} is missing: run `bash tests/setup.sh` (it builds sops and age into the cache)",
            bin.display()
        );
    }
    Tools {
        sops,
        age_keygen,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Tools {
    /// `sops -e` of `plain` written as `name`, for `recipients`, with extra flags.
    pub fn encrypt(
        &self,
        name: &str,
        plain: &[u8],
        recipients: &[&str],
        flags: &[&str],
    ) -> Vec<u8> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let out = Command::new(&self.sops)
            .current_dir(self.dir.path())
            .args(["--encrypt", "--age", &recipients.join(",")])
            .args(flags)
            .arg(&path)
            .env_remove("SOPS_AGE_KEY_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sops -e {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `sops -d` of `encrypted` stored as `name`, with the identities in `key_file`.
    pub fn decrypt(&self, name: &str, encrypted: &[u8], key_file: &Path, ssh: bool) -> Vec<u8> {
        let path = self.dir.path().join(format!("enc-{name}"));
        std::fs::write(&path, encrypted).unwrap();
        let mut cmd = Command::new(&self.sops);
        cmd.current_dir(self.dir.path()).arg("--decrypt");
        // The format follows the file name, as the reconciler chooses it.
        let format = match Format::from_path(name) {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Binary => "binary",
        };
        cmd.args(["--input-type", format, "--output-type", format]);
        if ssh {
            cmd.env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", key_file);
        } else {
            cmd.env("SOPS_AGE_KEY_FILE", key_file);
        }
        let out = cmd.arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "sops -d {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn key_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}
