//! CLI bench (not a test): prints measured figure, goal and ratio against a baseline measured
//! side by side in the same run.
//! - `kubectl gitops version --client` cold start (release binary, fresh process) — goal < 20 ms;
//!   baseline `kubectl version --client`.
//! - `kubectl gitops get kustomizations -A` with 1,000 Kustomizations — goal < 300 ms and within
//!   1.5× of `kubectl get kustomizations.kubectl-gitops.io -A` (baseline) on the same cluster.
//!
//! Uses GITOPS_TEST_KUBECONFIG when set, else starts (and stops) a local control plane of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn check(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Median wall time of `runs` fresh processes of `cmd`.
fn median(runs: usize, mut cmd: impl FnMut() -> Command) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut c = cmd();
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = c.status().expect("runs");
            let elapsed = start.elapsed();
            assert!(status.success(), "{c:?} failed");
            elapsed
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn report(what: &str, measured: Duration, goal: Duration, baseline_name: &str, baseline: Duration) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: measured {:.1} ms, goal < {:.0} ms ({}), baseline {baseline_name} {:.1} ms, ratio {:.2}x",
        ms(measured),
        ms(goal),
        if measured < goal { "met" } else { "MISSED" },
        ms(baseline),
        measured.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn main() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    check(
        gitops_conformance::cargo_command(cargo)
            .current_dir(root())
            .args(["build", "--release", "--quiet", "-p", "kubectl-gitops"]),
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("release/kubectl-gitops");
    assert!(bin.is_file(), "no release binary at {}", bin.display());

    // Cold start: a fresh process each time, nothing cached in it.
    let ours = median(51, || {
        let mut c = Command::new(&bin);
        c.args(["version", "--client"]);
        c
    });
    let kubectl = median(51, || {
        let mut c = Command::new("kubectl");
        c.args(["version", "--client"]);
        c
    });
    report(
        "kubectl gitops version --client (cold start)",
        ours,
        Duration::from_millis(20),
        "kubectl version --client",
        kubectl,
    );

    let _cluster = gitops_conformance::BenchCluster::get("cli");
    let kc = gitops_conformance::kubeconfig()
        .to_string_lossy()
        .into_owned();
    check(
        Command::new("kubectl")
            .args(["--kubeconfig", &kc, "apply", "--server-side", "-f"])
            .arg(root().join("reconciler/config/crd")),
    );
    check(
        Command::new("kubectl")
            .args([
                "--kubeconfig",
                &kc,
                "wait",
                "--for=condition=Established",
                "-f",
            ])
            .arg(root().join("reconciler/config/crd")),
    );
    let ns = format!("cli-bench-{}", std::process::id());
    check(Command::new("kubectl").args(["--kubeconfig", &kc, "create", "namespace", &ns]));
    let mut manifest = String::new();
    for i in 0..1000 {
        manifest.push_str(&format!(
            "---\napiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: ks-{i:04}, namespace: {ns}}}\nspec: {{sourceRef: {{kind: GitRepository, name: app}}, interval: 5m, path: ./deploy/app-{i}, prune: true}}\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("{ns}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    check(
        Command::new("kubectl")
            .args(["--kubeconfig", &kc, "apply", "--server-side", "-f"])
            .arg(&file),
    );
    let _ = std::fs::remove_file(&file);
    let rows =
        check(Command::new(&bin).args(["get", "ks", "-A", "--no-header", "--kubeconfig", &kc]));
    assert!(
        rows.lines().filter(|l| l.starts_with(&ns)).count() == 1000,
        "not all 1,000 listed"
    );
    // Interleave so both see the same cluster load.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..7 {
        ours.push(median(1, || {
            let mut c = Command::new(&bin);
            c.args(["get", "kustomizations", "-A", "--kubeconfig", &kc]);
            c
        }));
        theirs.push(median(1, || {
            let mut c = Command::new("kubectl");
            c.args(["get", "kustomizations", "-A", "--kubeconfig", &kc]);
            c
        }));
    }
    ours.sort();
    theirs.sort();
    let (ours, theirs) = (ours[3], theirs[3]);
    report(
        "kubectl gitops get kustomizations -A (1,000 objects)",
        ours,
        Duration::from_millis(300),
        "kubectl get kustomizations.kubectl-gitops.io -A",
        theirs,
    );
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    println!(
        "  within 1.5x of kubectl: {} ({ratio:.2}x)",
        if ratio <= 1.5 { "met" } else { "MISSED" }
    );
    let _ = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kc,
            "delete",
            "namespace",
            &ns,
            "--wait=false",
        ])
        .status();
}
