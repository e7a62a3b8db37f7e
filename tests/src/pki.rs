//! A throwaway PKI made with the `openssl` CLI at test time, for real TLS endpoints on
//! 127.0.0.1: a CA, a server certificate for `IP:127.0.0.1` and a client certificate (mutual
//! TLS), all signed by that CA and valid for two days. Nothing of it is committed.

use std::path::Path;
use std::process::Command;

/// The CA certificate [`make`] writes (the other files are named below).
pub const CA_CERT: &str = "ca.crt";
/// The server certificate (SAN `IP:127.0.0.1`).
pub const SERVER_CERT: &str = "server.crt";
/// The server certificate's key.
pub const SERVER_KEY: &str = "server.key";
/// A client certificate (CN `gitops-test-client`, extended key usage clientAuth).
pub const CLIENT_CERT: &str = "client.crt";
/// The client certificate's key.
pub const CLIENT_KEY: &str = "client.key";

/// Writes a CA named `ca_name`, a server certificate for 127.0.0.1 and a client certificate it
/// signed into `dir`, as PEM files named by the constants of this module.
pub fn make(dir: &Path, ca_name: &str) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let subject = format!("/CN={ca_name}");
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
        "-keyout", "ca.key", "-out", CA_CERT,
    ]);
    let leaf = |name: &str, cn: &str, cert: &str, key: &str, ext: &str| {
        let csr = format!("{name}.csr");
        let ext_file = format!("{name}.ext");
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", cn, "-keyout", key, "-out", &csr,
        ]);
        std::fs::write(dir.join(&ext_file), ext).expect("writable PKI directory");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            CA_CERT,
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            cert,
        ]);
    };
    leaf(
        "server",
        "/CN=127.0.0.1",
        SERVER_CERT,
        SERVER_KEY,
        "subjectAltName=IP:127.0.0.1\n",
    );
    leaf(
        "client",
        "/CN=gitops-test-client",
        CLIENT_CERT,
        CLIENT_KEY,
        "extendedKeyUsage=clientAuth\n",
    );
}
