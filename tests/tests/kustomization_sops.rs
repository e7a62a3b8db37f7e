//! `spec.decryption` against a real apiserver with files encrypted at test time by the real
//! `sops` for keys from the real `age-keygen` (no plaintext secret is committed beside a key):
//! an encrypted Secret and a secretGenerator fed by an encrypted dotenv and an encrypted binary
//! file land decrypted in the cluster; every bad input (wrong key, tampered value, tampered MAC,
//! truncated file, PGP-only file, a key Secret with no age key or with a PGP key, no
//! `spec.decryption`) fails the build with Ready=False naming the file or object, applies
//! nothing; and no plaintext reaches the reconciler's log lines, the events or the status.

mod cli_support;
mod kustomization_support;
mod sops_support;

use std::io::Write as _;
use std::time::Duration;

use gitops_conformance::{TestNamespace, install_crds, kubectl_ok};
use kustomization_support::*;
use sops_support::{Tools, age_key, tools};

const T: Duration = Duration::from_secs(90);

const DB_PASSWORD: &str = "db-pass-7Hq2-plaintext";
const DB_TOKEN: &str = "db-token-Zx81-plaintext";
const API_TOKEN: &str = "api-token-Qp55-plaintext";
const PATCHED: &str = "patched-Vb20-plaintext";
const CERT: &str =
    "-----BEGIN CERTIFICATE-----\ncert-body-Wm03-plaintext\n-----END CERTIFICATE-----\n";

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64"),
    )
    .expect("utf-8")
}

/// Every plaintext of the test, as text and as base64 (as a Secret's `data` carries it).
fn plaintexts() -> Vec<String> {
    [
        DB_PASSWORD,
        DB_TOKEN,
        API_TOKEN,
        PATCHED,
        "cert-body-Wm03-plaintext",
    ]
    .iter()
    .flat_map(|p| [p.to_string(), b64(p)])
    .collect()
}

fn secret(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: ${{app}}\ntype: Opaque\nstringData:\n  password: {DB_PASSWORD}\ndata:\n  token: {}\n",
        b64(DB_TOKEN)
    )
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  mode: prod\n")
}

/// A directory's kustomization: its resources in the test namespace.
fn kustomization_file(ns: &str, resources: &[&str]) -> String {
    format!("namespace: {ns}\nresources: [{}]\n", resources.join(", "))
}

fn encrypt_secret(t: &Tools, name: &str, ns: &str, recipient: &str) -> String {
    let enc = t.encrypt(
        &format!("{name}.enc.yaml"),
        secret(name, ns).as_bytes(),
        &[recipient],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    String::from_utf8(enc).expect("sops writes text")
}

fn spec(path: &str, decryption: &str) -> String {
    format!(
        "  sourceRef: {{kind: GitRepository, name: repo}}\n  path: ./{path}\n  interval: 10m\n  retryInterval: 2s\n  timeout: 20s\n  prune: true\n  postBuild:\n    substitute: {{app: vote}}\n{decryption}"
    )
}

const WITH_KEYS: &str = "  decryption:\n    provider: sops\n    secretRef: {name: sops-age}\n";

/// The Ready message once Ready has `status` (and `reason`, when given).
fn ready_with(ns: &str, name: &str, status: &str, reason: Option<&str>) -> Option<String> {
    match ready(ns, name) {
        Some((s, r, m)) if s == status && reason.is_none_or(|reason| r == reason) => Some(m),
        _ => None,
    }
}

/// A Secret holding one key (the key Secrets the CLI refuses to make).
fn key_secret(ns: &str, name: &str, key: &str, value: &str) {
    gitops_conformance::kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ndata:\n  {key}: {}\n",
            b64(value)
        )),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn encrypted_secrets_and_generator_inputs_are_applied_decrypted_and_bad_ones_refused() {
    let logs = kustomization_support::captured_logs("info,kube_runtime::watcher=error");
    install_crds();
    let t = tools();
    let ns = TestNamespace::new("ks-sops");
    let (key, recipient) = age_key(&t, "cluster");
    let (_, other_recipient) = age_key(&t, "other");
    // The reconciler-wide key (--sops-age-secret) is the test namespace's sops-age Secret.
    let fallback_secret = (ns.name.clone(), "sops-age".to_owned());
    let ctl = RunningController::start_with(&ns.name, |config| {
        config.sops_age_secret = Some(fallback_secret)
    })
    .await;
    let source = PublishedSource::new(&ctl.storage.0, &ns.name, "repo");
    let n = &ns.name;

    // The good directory: an encrypted Secret (partial encryption, a variable in a plain
    // label), and a secretGenerator fed by an encrypted dotenv and an encrypted binary file.
    let db = encrypt_secret(&t, "db", n, &recipient);
    assert!(
        !db.contains(DB_PASSWORD),
        "sops left the value in the clear"
    );
    let env = t.encrypt(
        "app.enc.env",
        format!("API_TOKEN={API_TOKEN}\nMODE=prod\n").as_bytes(),
        &[&recipient],
        &[],
    );
    let cert = t.encrypt("cert.enc.pem", CERT.as_bytes(), &[&recipient], &[]);
    let env = String::from_utf8(env).unwrap();
    let cert = String::from_utf8(cert).unwrap();
    // A patches[].path file that is encrypted (decrypted before the engine reads it).
    let patch = t.encrypt(
        "patch.enc.yaml",
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\ndata:\n  patched: {PATCHED}\n")
            .as_bytes(),
        &[&recipient],
        &["--encrypted-regex", "^data$"],
    );
    let patch = String::from_utf8(patch).unwrap();
    let good = format!(
        "{}secretGenerator:\n- name: app-env\n  envs: [app.enc.env]\n  files: [cert.pem=cert.enc.pem]\npatches:\n- path: patch.enc.yaml\n",
        kustomization_file(n, &["db.enc.yaml", "good.yaml", "bundle.yaml"])
    );

    // The bad directories, each with a ConfigMap that must not be applied either.
    let lines: Vec<&str> = db.lines().collect();
    let replace_line = |starts: &str, edit: &dyn Fn(&str) -> String| -> String {
        lines
            .iter()
            .map(|l| {
                if l.trim_start().starts_with(starts) {
                    edit(l)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let wrong_key = encrypt_secret(&t, "wrongkey", n, &other_recipient);
    let tampered_value = replace_line("password:", &|l| {
        // Another valid base64 character at the start of the ciphertext.
        let at = l.find("data:").unwrap() + 5;
        let c = if &l[at..=at] == "A" { "B" } else { "A" };
        format!("{}{c}{}", &l[..at], &l[at + 1..])
    })
    .replace("name: db", "name: tamperedvalue");
    let tampered_mac = replace_line("mac:", &|l| l.replacen("data:", "data:AAAA", 1))
        .replace("name: db", "name: tamperedmac");
    let truncated = db.replace("name: db", "name: truncated")[..db.len() / 2].to_owned();
    let pgp_only = {
        let start = lines.iter().position(|l| l.trim_start() == "age:").unwrap();
        let end = (start + 1..lines.len())
            .find(|&i| !lines[i].starts_with("        ") && !lines[i].starts_with("      -"))
            .unwrap();
        let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
        out.extend([
            "    pgp:".to_owned(),
            "        - created_at: \"2024-01-01T00:00:00Z\"".to_owned(),
            "          enc: x".to_owned(),
            "          fp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4".to_owned(),
        ]);
        out.extend(lines[end..].iter().map(|l| l.to_string()));
        out.join("\n").replace("name: db", "name: pgponly") + "\n"
    };
    let keycase = encrypt_secret(&t, "keycase", n, &recipient);
    let plain_secret = encrypt_secret(&t, "nodecryption", n, &recipient);
    let fallback = encrypt_secret(&t, "fallback", n, &recipient);
    let generator_only = format!(
        "{}secretGenerator:\n- name: gen-only\n  envs: [app.enc.env]\n",
        kustomization_file(n, &["cm.yaml"])
    );

    let mut files: Vec<(String, String)> = vec![
        ("good/kustomization.yaml".into(), good),
        ("good/db.enc.yaml".into(), db.clone()),
        ("good/good.yaml".into(), config_map("good")),
        ("good/patch.enc.yaml".into(), patch),
        ("good/app.enc.env".into(), env.clone()),
        // A Secret whose data value is a whole SOPS file (decrypted in the format its key names).
        (
            "good/bundle.yaml".into(),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: bundle}}\ndata:\n  app.env: {}\n",
                b64(&env)
            ),
        ),
        ("good/cert.enc.pem".into(), cert),
        ("gen-only/kustomization.yaml".into(), generator_only),
        ("gen-only/app.enc.env".into(), env),
        ("gen-only/cm.yaml".into(), config_map("gen-only")),
        (
            "fallback/kustomization.yaml".into(),
            kustomization_file(n, &["secret.enc.yaml"]),
        ),
        ("fallback/secret.enc.yaml".into(), fallback),
    ];
    let bad: [(&str, &str); 7] = [
        ("wrong-key", &wrong_key),
        ("tampered-value", &tampered_value),
        ("tampered-mac", &tampered_mac),
        ("truncated", &truncated),
        ("pgp-only", &pgp_only),
        ("key-cases", &keycase),
        ("no-decryption", &plain_secret),
    ];
    for (dir, content) in bad {
        files.push((
            format!("{dir}/kustomization.yaml"),
            kustomization_file(n, &["secret.enc.yaml", "cm.yaml"]),
        ));
        files.push((format!("{dir}/secret.enc.yaml"), content.to_string()));
        files.push((format!("{dir}/cm.yaml"), config_map(dir)));
    }
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let revision = source.publish('1', &borrowed);

    // The key Secret made by the CLI, which names the keys it wrote and never the key.
    let key_path = t.key_file("cluster.agekey", &key);
    let args: Vec<String> = [
        "create",
        "secret",
        "age",
        "sops-age",
        "--age-key-file",
        key_path.to_str().unwrap(),
        "-n",
        n,
    ]
    .map(String::from)
    .to_vec();
    // The CLI runs its own runtime: off this test's.
    let run = tokio::task::spawn_blocking(move || {
        cli_support::gitops(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
    .expect(0);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("identity.agekey"), "{said}");
    assert!(
        !said.contains("AGE-SECRET-KEY"),
        "the CLI echoed the key: {said}"
    );
    key_secret(
        n,
        "pgp-key",
        "identity.asc",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nx\n",
    );
    key_secret(n, "no-age-key", "README.txt", "nothing here");

    let cases: Vec<(&str, &str, String)> = vec![
        ("good", "good", WITH_KEYS.to_owned()),
        ("wrong-key", "wrong-key", WITH_KEYS.to_owned()),
        ("tampered-value", "tampered-value", WITH_KEYS.to_owned()),
        ("tampered-mac", "tampered-mac", WITH_KEYS.to_owned()),
        ("truncated", "truncated", WITH_KEYS.to_owned()),
        ("pgp-only", "pgp-only", WITH_KEYS.to_owned()),
        ("no-decryption", "no-decryption", String::new()),
        ("gen-only", "gen-only", String::new()),
        // No secretRef: the reconciler-wide key decrypts (as Flux's --sops-age-secret).
        (
            "fallback",
            "fallback",
            "  decryption: {provider: sops}\n".to_owned(),
        ),
        (
            "pgp-key",
            "key-cases",
            WITH_KEYS.replace("sops-age", "pgp-key"),
        ),
        (
            "no-age-key",
            "key-cases",
            WITH_KEYS.replace("sops-age", "no-age-key"),
        ),
    ];
    for (name, dir, decryption) in &cases {
        ns.create(&kustomization(name, &ctl.shard, &spec(dir, decryption)));
    }

    // The good one applies, decrypted, with the variable substituted after decryption.
    let message = eventually(
        T,
        "the good Kustomization Ready",
        || ready_with(n, "good", "True", None),
        || format!("{:?}", ready(n, "good")),
    )
    .await;
    assert_eq!(message, format!("Applied revision: {revision}"));
    let db = get(n, "secret", "db").expect("Secret db applied");
    assert_eq!(unb64(db["data"]["password"].as_str().unwrap()), DB_PASSWORD);
    assert_eq!(unb64(db["data"]["token"].as_str().unwrap()), DB_TOKEN);
    assert_eq!(db["metadata"]["labels"]["app"], "vote");
    assert!(db.get("sops").is_none(), "the SOPS metadata is not applied");
    let generated = kubectl_ok(&["-n", n, "get", "secrets", "-o", "json"], None);
    let generated: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let app_env = generated["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("app-env-"))
        })
        .expect("the generated Secret app-env-<hash>");
    assert_eq!(
        unb64(app_env["data"]["API_TOKEN"].as_str().unwrap()),
        API_TOKEN
    );
    assert_eq!(unb64(app_env["data"]["MODE"].as_str().unwrap()), "prod");
    assert_eq!(unb64(app_env["data"]["cert.pem"].as_str().unwrap()), CERT);
    let good_cm = get(n, "configmap", "good").expect("ConfigMap good applied");
    assert_eq!(good_cm["data"]["patched"], PATCHED);
    assert_eq!(good_cm["data"]["mode"], "prod");
    let bundle = get(n, "secret", "bundle").expect("Secret bundle applied");
    assert_eq!(
        unb64(bundle["data"]["app.env"].as_str().unwrap()),
        format!("API_TOKEN={API_TOKEN}\nMODE=prod\n")
    );
    eventually(
        T,
        "the Kustomization without secretRef Ready",
        || ready_with(n, "fallback", "True", None),
        || format!("{:?}", ready(n, "fallback")),
    )
    .await;
    let fallback = get(n, "secret", "fallback").expect("Secret fallback applied");
    assert_eq!(
        unb64(fallback["data"]["password"].as_str().unwrap()),
        DB_PASSWORD
    );

    // Every bad one: Ready=False BuildFailed, naming the file or object and the cause.
    let expected: [(&str, &[&str]); 9] = [
        (
            "wrong-key",
            &[
                "wrong-key/secret.enc.yaml",
                "none of the 1 age identities",
                &other_recipient,
            ],
        ),
        (
            "tampered-value",
            &[
                "tampered-value/secret.enc.yaml",
                "stringData.password",
                "cannot be decrypted",
            ],
        ),
        (
            "tampered-mac",
            &["tampered-mac/secret.enc.yaml", "MAC mismatch"],
        ),
        ("truncated", &["truncated/secret.enc.yaml", "truncated"]),
        (
            "pgp-only",
            &["pgp-only/secret.enc.yaml", "encrypted only for PGP"],
        ),
        (
            "no-decryption",
            &[
                &format!(
                    "Secret/{n}/nodecryption is SOPS encrypted, configuring decryption is required for this secret to be reconciled"
                ),
                "configuring decryption is required",
            ],
        ),
        (
            "gen-only",
            &[
                "gen-only/app.enc.env",
                "configuring decryption (spec.decryption) is required",
            ],
        ),
        (
            "pgp-key",
            &[
                &format!("decryption Secret {n}/pgp-key"),
                "identity.asc",
                "PGP key",
            ],
        ),
        (
            "no-age-key",
            &[
                &format!("decryption Secret {n}/no-age-key"),
                "no age identity",
            ],
        ),
    ];
    for (name, fragments) in expected {
        let message = eventually(
            T,
            &format!("{name}: BuildFailed"),
            || ready_with(n, name, "False", Some("BuildFailed")),
            || format!("{:?}", ready(n, name)),
        )
        .await;
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "{name}: {message:?} lacks {fragment:?}"
            );
        }
        eprintln!("{name}: {message}");
    }
    // Nothing of a failed build was applied.
    for name in [
        "wrongkey",
        "tamperedvalue",
        "tamperedmac",
        "truncated",
        "pgponly",
        "keycase",
        "nodecryption",
    ] {
        assert!(
            get(n, "secret", name).is_none(),
            "Secret {name} was applied"
        );
    }
    for dir in [
        "wrong-key",
        "tampered-value",
        "tampered-mac",
        "truncated",
        "pgp-only",
        "key-cases",
        "no-decryption",
        "gen-only",
    ] {
        assert!(
            get(n, "configmap", dir).is_none(),
            "ConfigMap {dir} was applied"
        );
    }

    // No plaintext in the status of any Kustomization, in the events, or in the log lines.
    let statuses: String = cases
        .iter()
        .map(|(name, _, _)| ks_status(n, name).to_string())
        .collect();
    let events = kubectl_ok(&["-n", n, "get", "events", "-o", "json"], None);
    std::io::stderr().flush().ok();
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        log_text.contains("BuildFailed") || log_text.contains("decrypt"),
        "the log capture saw none of the reconciles: {} bytes",
        log_text.len()
    );
    for plain in plaintexts() {
        assert!(!statuses.contains(&plain), "a status carries {plain}");
        assert!(!events.contains(&plain), "an event carries {plain}");
        assert!(!log_text.contains(&plain), "a log line carries {plain}");
    }
    drop(ctl);
}
