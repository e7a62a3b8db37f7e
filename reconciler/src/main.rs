//! `gitops-reconciler`: the in-cluster controller. Wiring only; the stages live in the library.
//!
//! Runs in a cluster (in-cluster config) or outside of one (`KUBECONFIG`). On SIGTERM/SIGINT the
//! controllers stop taking new work, reconciles in flight finish, the lease is released; a
//! controller whose objects could never be listed (CRDs missing, RBAC) stops at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use gitops_reconciler::controller::fetch::ArtifactFetcher;
use gitops_reconciler::controller::gitrepository;
use gitops_reconciler::controller::kustomization::{self, KustomizationConfig, PolicyEngine};
use gitops_reconciler::controller::lease::{LeaderElector, LeaseConfig};
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::controller::ops::{self, Readiness};
use gitops_reconciler::notify::{self, NotifyConfig, ReceiverArgs};
use gitops_reconciler::policy::fetch::PolicyArgs;
use gitops_reconciler::policy::{COMPILE_WORKER_ARG, HostConfig, compile_worker_main};
use gitops_reconciler::source;
use gitops_reconciler::source::flags::SourceArgs;
use gitops_reconciler::source::storage::Storage;
#[cfg(test)]
use gitops_reconciler::source::{Limit, SourceLimits};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The kubectl-gitops reconciler. Each stage's flags live next to its code and are flattened
/// here; this struct holds only the process's own.
#[derive(Parser, Debug)]
#[command(name = "gitops-reconciler", version, about)]
struct Args {
    /// Listen address of /metrics.
    #[arg(long, default_value = ":8080")]
    metrics_addr: String,
    /// Listen address of /healthz and /readyz.
    #[arg(long, default_value = ":9440")]
    health_addr: String,
    /// Run only while holding the leader Lease.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE or gitops-system).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
    #[command(flatten)]
    kustomizations: KustomizationConfig,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    receivers: ReceiverArgs,
}

/// `:8080` → `0.0.0.0:8080`.
fn listen_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse().with_context(|| {
        format!("'{text}' is not a listen address such as :8080 or 127.0.0.1:8080")
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube-runtime's watcher logs a Forbidden list as a raw debug dump; our own line
        // (controller::watch) names the resource and the cause instead.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime::watcher=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // The reconcile span carries kind/namespace/name: every line names its object.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        // Colours only for a person at a terminal, never into files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "gitops-reconciler".into());
    format!("{host}_{}", std::process::id())
}

/// glibc's malloc arenas the process may use, unless `MALLOC_ARENA_MAX` says otherwise.
/// By default glibc gives threads arenas of their own (up to eight per core) and memory freed
/// in one is not reused by the others; with the blocking pool's many short-lived threads
/// (builds, policy calls, git) that kept the reconciler's resident memory well above its heap
/// (2,000 Kustomizations in the apply bench: peak RSS 116.5 MiB with the default, 102.8 with 2).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets an allocator tunable and is called before any other
        // thread exists; its result (0 when refused) leaves glibc's default in place.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(reconciler_main()),
        Err(e) => {
            eprintln!("gitops-reconciler: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn reconciler_main() -> std::process::ExitCode {
    // The reconciler re-executes itself to compile tenants' policy components in a process it
    // can kill (see `policy::compile_worker_main`).
    if std::env::args_os().nth(1).as_deref() == Some(COMPILE_WORKER_ARG.as_ref()) {
        return compile_worker_main();
    }
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gitops-reconciler failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube::Client::try_from(kube_config.clone()).context("Kubernetes client")?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("termination signal: finishing reconciles in flight");
        let _ = stop_tx.send(true);
    });

    for (what, addr) in [
        ("metrics", &args.metrics_addr),
        ("health", &args.health_addr),
    ] {
        let addr = listen_addr(addr)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({what})"))?;
        tracing::info!(%addr, "serving {what}");
        tokio::spawn(ops::serve(
            listener,
            metrics.clone(),
            readiness.clone(),
            stopped(),
        ));
    }

    let elector = if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(gitops_reconciler::flags::runtime_namespace);
        let name = match &args.kustomizations.watch_label_selector {
            // One lease per shard.
            Some(selector) => format!(
                "gitops-reconciler-{:x}",
                selector
                    .bytes()
                    .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b))
                        .wrapping_mul(0x100000001b3))
            ),
            None => "gitops-reconciler".into(),
        };
        let elector = LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace,
                name,
                identity: identity(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(2),
            },
        );
        readiness.set(true);
        tokio::select! {
            () = elector.acquire() => {},
            () = stopped() => return Ok(()),
        }
        Some(Arc::new(elector))
    } else {
        None
    };
    readiness.set(true);

    let storage = Storage::new(&args.source.storage_path)
        .with_context(|| format!("artifact storage {}", args.source.storage_path.display()))?;
    let storage_addr = listen_addr(&args.source.storage_addr)?;
    let listener = TcpListener::bind(storage_addr)
        .await
        .with_context(|| format!("cannot listen on {storage_addr} (artifacts)"))?;
    tracing::info!(addr = %storage_addr, "serving artifacts");
    let artifact_server = tokio::spawn(source::server::serve(listener, storage.clone(), stopped()));
    let source_config = args.source.config(
        storage_addr,
        usize::from(args.kustomizations.concurrent.max(1)),
    );
    let limits = source_config.limits.unpack();
    let sources = gitrepository::run_with_metrics(
        client.clone(),
        source_config,
        args.kustomizations.watch_label_selector.clone(),
        metrics.clone(),
        stopped(),
    );
    let fetcher = ArtifactFetcher::new(Some(storage), limits);
    // One wasmtime engine per process, started when a Kustomization first needs a policy; when
    // it cannot start, those Kustomizations fail with PolicyFailed and the others reconcile.
    let ca_pem = match &args.policy.policy_module_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --policy-module-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let checks_trust = ca_pem.is_some();
    gitops_reconciler::policy::fetch::ModuleFetcher::install(
        gitops_reconciler::policy::fetch::FetchConfig {
            ca_pem,
            cache_dir: Some(args.source.storage_path.join("policy-modules")),
            ..Default::default()
        },
    );
    if checks_trust {
        gitops_reconciler::policy::fetch::ModuleFetcher::process()
            .check_trust()
            .map_err(|e| anyhow::anyhow!("--policy-module-ca-file: {e}"))?;
    }
    let policy = PolicyEngine::on_first_use(HostConfig {
        cache_dir: Some(args.source.storage_path.join("policy-cache")),
        compile_worker: std::env::current_exe().ok(),
        ..Default::default()
    });
    let config = args.kustomizations.clone();
    let controllers = kustomization::run(
        client.clone(),
        kube_config,
        config,
        fetcher,
        policy,
        metrics.clone(),
        stopped(),
    );
    let receivers = {
        let listener = if args.receivers.receiver_addr.is_empty() {
            None
        } else {
            let addr = listen_addr(&args.receivers.receiver_addr)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (receivers)"))?;
            tracing::info!(%addr, "serving receiver webhooks");
            Some(listener)
        };
        let config = NotifyConfig {
            no_cross_namespace_refs: args.kustomizations.no_cross_namespace_refs,
            watch_label_selector: args.kustomizations.watch_label_selector.clone(),
            limits: args.receivers.limits(),
        };
        let client = client.clone();
        let metrics = metrics.clone();
        let stopped = stopped();
        async move {
            if let Some(listener) = listener {
                notify::run_receivers(client, config, listener, metrics, stopped).await;
            }
        }
    };
    // Alerts: the controllers' events go to one bounded queue, forwarded as Alerts select them.
    let alerts = {
        let config = notify::alert::DispatchConfig {
            no_cross_namespace_refs: args.kustomizations.no_cross_namespace_refs,
            ..Default::default()
        };
        let queue = Arc::new(notify::alert::EventQueue::new(
            config.queue_capacity,
            metrics.clone(),
        ));
        notify::alert::install(queue.clone());
        notify::alert::run_alerts(
            client.clone(),
            config,
            queue,
            metrics.clone(),
            args.kustomizations.watch_label_selector.clone(),
            stopped(),
        )
    };
    let controllers = async move {
        let (sources, (), (), ()) = tokio::join!(sources, controllers, receivers, alerts);
        if let Err(e) = sources {
            tracing::error!(error = %e, "the GitRepository controller stopped");
        }
    };

    match &elector {
        Some(elector) => {
            let holder = elector.clone();
            tokio::select! {
                () = controllers => {},
                () = holder.hold() => {
                    // Another replica may be reconciling already: stop at once.
                    anyhow::bail!("leadership lost");
                }
            }
            // Bounded: with the apiserver gone, releasing cannot succeed and must not keep the
            // process from exiting (the lease then simply expires).
            if tokio::time::timeout(Duration::from_secs(5), elector.release())
                .await
                .is_err()
            {
                tracing::warn!("could not release the lease within 5 s; it will expire");
            }
        }
        None => controllers.await,
    }
    if let Ok(Err(e)) = artifact_server.await {
        tracing::warn!(error = %e, "artifact server ended with an error");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_parse_and_the_stages_defaults_are_theirs() {
        Args::command().debug_assert();
        let args = Args::parse_from([
            "gitops-reconciler",
            "--max-file-size",
            "7",
            "--concurrent",
            "9",
        ]);
        assert_eq!(args.source.limits.get(Limit::FileSize), 7);
        assert_eq!(args.kustomizations.concurrent, 9);
        let args = Args::parse_from(["gitops-reconciler"]);
        assert_eq!(args.source.limits, SourceLimits::default());
        let defaults = KustomizationConfig::default();
        assert_eq!(args.kustomizations.concurrent, defaults.concurrent);
        assert_eq!(
            args.kustomizations.concurrent_apply,
            defaults.concurrent_apply
        );
        assert!(args.kustomizations.no_cross_namespace_refs);
        assert_eq!(args.kustomizations.sops_age_secret, None);
        let args = Args::parse_from(["gitops-reconciler", "--sops-age-secret", "sops-age"]);
        assert_eq!(
            args.kustomizations.sops_age_secret,
            Some((
                gitops_reconciler::flags::runtime_namespace(),
                "sops-age".to_owned()
            ))
        );
    }
}
