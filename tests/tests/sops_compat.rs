//! SOPS compatibility with the real tool: files encrypted by `sops` (built from its Go module by
//! tests/setup.d/26-sops.sh, with age keys from the real `age-keygen`) decrypt in the reconciler
//! to what `sops -d` gives, and every bad input is a clear error naming the file that never
//! carries the plaintext.

mod sops_support;

use std::process::Command;

use gitops_conformance::run_ok;
use gitops_reconciler::sops::{self, Format, Identities, SopsError};
use sops_support::{age_key, tools};

fn yaml_values(bytes: &[u8]) -> Vec<serde_json::Value> {
    gitops_reconciler::yaml::json_documents(std::str::from_utf8(bytes).unwrap()).unwrap()
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis\n  labels:\n    app: vote\n  annotations:\n    note: kept\ntype: Opaque\nstringData:\n  password: hunter2-plaintext\n  port: \"6379\"\ndata:\n  token: aHVudGVyMi1wbGFpbnRleHQ=\n";

/// One row of the compatibility table: a file kind and how it was encrypted.
struct Case {
    name: &'static str,
    plain: Vec<u8>,
    flags: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let multi = format!(
        "{SECRET}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  replicas: \"4\"\n  list_unencrypted: plain\n"
    );
    vec![
        Case {
            name: "secret.yaml",
            plain: SECRET.as_bytes().to_vec(),
            flags: &[],
        },
        Case {
            name: "two-documents.yaml",
            plain: multi.into_bytes(),
            flags: &[],
        },
        Case {
            name: "typed.yaml",
            plain: b"a: 1\nb: 2.5\nc: true\nd: [x, 7, false]\ne: null\nf: ''\ng:\n  h: 2024-01-02\n  i: 0755\n"
                .to_vec(),
            flags: &[],
        },
        Case {
            name: "partial-regex.yaml",
            plain: SECRET.as_bytes().to_vec(),
            flags: &["--encrypted-regex", "^(data|stringData)$"],
        },
        Case {
            name: "partial-suffix.yaml",
            plain: b"password: p4ss-plaintext\nuser_unencrypted: admin\nnested:\n  key_unencrypted:\n    deep: visible\n  other: hidden-plaintext\n"
                .to_vec(),
            flags: &["--unencrypted-suffix", "_unencrypted"],
        },
        Case {
            name: "mac-only-encrypted.yaml",
            plain: SECRET.as_bytes().to_vec(),
            flags: &[
                "--encrypted-regex",
                "^(data|stringData)$",
                "--mac-only-encrypted",
            ],
        },
        Case {
            name: "config.json",
            plain: br#"{"name":"vote","port":8080,"ratio":0.25,"on":true,"tags":["a","b"],"nested":{"password":"json-plaintext"},"nothing":null}"#
                .to_vec(),
            flags: &[],
        },
        Case {
            name: "redis.env",
            plain: b"REDIS_PASSWORD=env-plaintext\nREDIS_HOST=redis\nMULTI=line1\\nline2\n".to_vec(),
            flags: &[],
        },
        Case {
            name: "tls.key",
            plain: (0u8..=255).cycle().take(3000).collect(),
            flags: &[],
        },
    ]
}

fn decrypt_ours(name: &str, enc: &[u8], ids: &Identities) -> Result<Vec<u8>, SopsError> {
    match Format::from_path(name) {
        f @ (Format::Yaml | Format::Json) => sops::decrypt_documents(name, enc, f, ids)
            .map(|docs| serde_json::to_vec(&docs).unwrap()),
        f => sops::decrypt_bytes(name, enc, f, ids),
    }
}

/// What `sops -d` printed, in the form `decrypt_ours` returns.
fn theirs(name: &str, out: &[u8]) -> Vec<u8> {
    match Format::from_path(name) {
        Format::Yaml => serde_json::to_vec(&yaml_values(out)).unwrap(),
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(out).unwrap();
            serde_json::to_vec(&vec![v]).unwrap()
        }
        _ => out.to_vec(),
    }
}

#[test]
fn every_file_kind_decrypts_as_sops_decrypts_it() {
    let t = tools();
    let (key_a, rec_a) = age_key(&t, "a");
    let (key_b, rec_b) = age_key(&t, "b");
    let only_b = t.key_file("only-b.agekey", &key_b);
    let mut ids = Identities::default();
    ids.add("b.agekey", &key_b).unwrap();
    let mut table = Vec::new();
    for case in cases() {
        // Two recipients; both sides decrypt with the second one only.
        let enc = t.encrypt(case.name, &case.plain, &[&rec_a, &rec_b], case.flags);
        let expected = theirs(case.name, &t.decrypt(case.name, &enc, &only_b, false));
        let ours = decrypt_ours(case.name, &enc, &ids).unwrap_or_else(|e| {
            panic!(
                "{}: the reconciler failed where sops -d works: {e}",
                case.name
            )
        });
        assert!(
            ours == expected,
            "{}: differs from sops -d\nours:   {}\nsops -d: {}",
            case.name,
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected)
        );
        assert!(
            !String::from_utf8_lossy(&enc).contains("plaintext"),
            "{}: sops left a secret in the clear",
            case.name
        );
        table.push(format!("{:<24} {:?}: identical", case.name, case.flags));
    }
    let _ = key_a;
    eprintln!(
        "compatibility (age X25519, 2 recipients):\n{}",
        table.join("\n")
    );
}

#[test]
fn ssh_ed25519_recipients_decrypt_as_sops_decrypts_them() {
    let t = tools();
    let key = t.dir.path().join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&key),
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let recipient = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let enc = t.encrypt("ssh.yaml", SECRET.as_bytes(), &[&recipient], &[]);
    let expected = theirs("ssh.yaml", &t.decrypt("ssh.yaml", &enc, &key, true));
    let mut ids = Identities::default();
    ids.add("id_ed25519.agekey", &std::fs::read_to_string(&key).unwrap())
        .unwrap();
    let ours = decrypt_ours("ssh.yaml", &enc, &ids).unwrap();
    assert_eq!(ours, expected);
}

/// Asserts the error names the file and never shows a plaintext value.
fn assert_clear(err: &SopsError, file: &str, fragment: &str) {
    let text = err.to_string();
    assert!(text.contains(file), "error does not name {file}: {text}");
    assert!(
        text.contains(fragment),
        "error does not say {fragment:?}: {text}"
    );
    assert!(
        !text.contains("plaintext") && !text.contains("hunter2"),
        "error leaks a secret: {text}"
    );
}

#[test]
fn bad_inputs_are_clear_errors_without_plaintext() {
    let t = tools();
    let (_, rec_a) = age_key(&t, "a");
    let (key_b, _) = age_key(&t, "b");
    let (key_a2, rec_a2) = age_key(&t, "a2");
    let enc = t.encrypt("secret.yaml", SECRET.as_bytes(), &[&rec_a2], &[]);
    let text = String::from_utf8(enc.clone()).unwrap();
    let mut right = Identities::default();
    right.add("a2.agekey", &key_a2).unwrap();
    let mut wrong = Identities::default();
    wrong.add("b.agekey", &key_b).unwrap();

    // The wrong key: names the recipients it was encrypted for.
    let only_a = t.encrypt("only-a.yaml", SECRET.as_bytes(), &[&rec_a], &[]);
    let err = sops::decrypt_documents("only-a.yaml", &only_a, Format::Yaml, &wrong).unwrap_err();
    assert_clear(&err, "only-a.yaml", &rec_a);
    // No keys at all (a Secret without .agekey entries).
    let err = sops::decrypt_documents("secret.yaml", &enc, Format::Yaml, &Identities::default())
        .unwrap_err();
    assert_clear(&err, "secret.yaml", "none of the 0 age identities");

    // A value swapped for another value of the file: its path no longer authenticates it.
    let lines: Vec<&str> = text.lines().collect();
    let pw = lines
        .iter()
        .position(|l| l.trim_start().starts_with("password:"))
        .unwrap();
    let port = lines
        .iter()
        .position(|l| l.trim_start().starts_with("port:"))
        .unwrap();
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let (pw_key, pw_val) = lines[pw].split_once(": ").unwrap();
    let (port_key, port_val) = lines[port].split_once(": ").unwrap();
    swapped[pw] = format!("{pw_key}: {port_val}");
    swapped[port] = format!("{port_key}: {pw_val}");
    let err = sops::decrypt_documents(
        "secret.yaml",
        swapped.join("\n").as_bytes(),
        Format::Yaml,
        &right,
    )
    .unwrap_err();
    assert_clear(&err, "secret.yaml", "stringData.password");

    // A plain value changed after encryption (partial encryption): the MAC catches it.
    let partial = t.encrypt(
        "partial.yaml",
        SECRET.as_bytes(),
        &[&rec_a2],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    let tampered = String::from_utf8(partial)
        .unwrap()
        .replace("name: redis", "name: other");
    let err = sops::decrypt_documents("partial.yaml", tampered.as_bytes(), Format::Yaml, &right)
        .unwrap_err();
    assert!(matches!(err, SopsError::MacMismatch { .. }), "{err}");
    assert_clear(&err, "partial.yaml", "MAC mismatch");

    // The MAC itself tampered with.
    let mac_line = lines
        .iter()
        .position(|l| l.trim_start().starts_with("mac:"))
        .unwrap();
    let mut bad_mac: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    bad_mac[mac_line] = bad_mac[mac_line].replacen("data:", "data:AAAA", 1);
    let err = sops::decrypt_documents(
        "secret.yaml",
        bad_mac.join("\n").as_bytes(),
        Format::Yaml,
        &right,
    )
    .unwrap_err();
    assert_clear(&err, "secret.yaml", "MAC mismatch");

    // Truncated in the middle.
    let half = &enc[..enc.len() / 2];
    let err = sops::decrypt_documents("secret.yaml", half, Format::Yaml, &right).unwrap_err();
    assert!(err.to_string().contains("secret.yaml"), "{err}");

    // Encrypted for PGP only (the age entries replaced by a PGP one).
    let start = lines.iter().position(|l| l.trim_start() == "age:").unwrap();
    let end = (start + 1..lines.len())
        .find(|&i| !lines[i].starts_with("        ") && !lines[i].starts_with("      -"))
        .unwrap();
    let mut pgp: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    pgp.push("    pgp:".into());
    pgp.push("        - created_at: \"2024-01-01T00:00:00Z\"".into());
    pgp.push("          enc: x".into());
    pgp.push("          fp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4".into());
    pgp.extend(lines[end..].iter().map(|l| l.to_string()));
    let err = sops::decrypt_documents("pgp.yaml", pgp.join("\n").as_bytes(), Format::Yaml, &right)
        .unwrap_err();
    assert_clear(&err, "pgp.yaml", "PGP");

    // A 100 MB file is refused before it is parsed.
    let huge = vec![b'a'; 100 * 1024 * 1024];
    let err = sops::decrypt_bytes("huge.bin", &huge, Format::Binary, &right).unwrap_err();
    assert_clear(&err, "huge.bin", "over the limit");

    // A key file that is not one.
    let mut ids = Identities::default();
    let err = ids.add("bad.agekey", "not a key").unwrap_err();
    assert!(err.to_string().contains("bad.agekey"), "{err}");
}
