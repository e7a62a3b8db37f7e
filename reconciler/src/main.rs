//! `gitops-reconciler`: the in-cluster controller. Wiring only; the stages live in the library.
//!
//! Runs in a cluster (in-cluster config) or outside of one (`KUBECONFIG`). On SIGTERM/SIGINT the
//! controllers stop taking new work, reconciles in flight finish, the lease is released; a
//! controller whose objects could never be listed (CRDs missing, RBAC) stops at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, ValueEnum};
use gitops_reconciler::controller::fetch::ArtifactFetcher;
use gitops_reconciler::controller::gitrepository;
use gitops_reconciler::controller::kustomization::{self, KustomizationConfig, PolicyEngine};
use gitops_reconciler::controller::lease::{LeaderElector, LeaseConfig};
use gitops_reconciler::controller::metrics::Metrics;
use gitops_reconciler::controller::ops::{self, Readiness};
use gitops_reconciler::notify::{self, NotifyConfig, ReceiverLimits};
use gitops_reconciler::policy::{COMPILE_WORKER_ARG, HostConfig, compile_worker_main};
use gitops_reconciler::source;
use gitops_reconciler::source::storage::Storage;
use gitops_reconciler::source::{Limit, SourceLimits};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The kubectl-gitops reconciler.
#[derive(Parser, Debug)]
#[command(name = "gitops-reconciler", version, about)]
struct Args {
    /// Directory of the artifact storage.
    #[arg(long, default_value = "/data")]
    storage_path: PathBuf,
    /// Listen address of the artifact server.
    #[arg(long, default_value = "0.0.0.0:9090")]
    storage_addr: String,
    /// host:port written into artifact URLs (default: the storage address).
    #[arg(long)]
    storage_adv_addr: Option<String>,
    /// Listen address of /metrics.
    #[arg(long, default_value = ":8080")]
    metrics_addr: String,
    /// Listen address of /healthz and /readyz.
    #[arg(long, default_value = ":9440")]
    health_addr: String,
    /// Objects reconciled at once, per kind.
    #[arg(long, default_value_t = 4)]
    concurrent: u16,
    /// Apply requests in flight per Kustomization.
    #[arg(long, default_value_t = 16)]
    concurrent_apply: usize,
    /// Accept file:// source URLs (tests only).
    #[arg(long)]
    allow_file_urls: bool,
    /// Refuse references to objects in other namespaces.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    no_cross_namespace_refs: bool,
    /// ServiceAccount impersonated for Kustomizations without spec.serviceAccountName.
    #[arg(long)]
    default_service_account: Option<String>,
    /// Reconcile only objects matching this label selector (sharding).
    #[arg(long)]
    watch_label_selector: Option<String>,
    /// Run only while holding the leader Lease.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE or gitops-system).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Most bytes one fetch may receive (GitRepositories may lower it: spec.limits).
    #[arg(long, default_value_t = Limit::ReceivedBytes.default_value())]
    max_received_bytes: u64,
    /// Most objects in one fetched pack.
    #[arg(long, default_value_t = Limit::Objects.default_value())]
    max_objects: u64,
    /// Largest single file (object) in bytes.
    #[arg(long, default_value_t = Limit::FileSize.default_value())]
    max_file_size: u64,
    /// Most bytes of files in one commit's tree.
    #[arg(long, default_value_t = Limit::TreeSize.default_value())]
    max_tree_size: u64,
    /// Most files and directories in one artifact.
    #[arg(long, default_value_t = Limit::Files.default_value())]
    max_files: u64,
    /// Cap on the bytes in the artifact storage; the least recently used git caches are
    /// evicted to stay under it (0: no cap).
    #[arg(long, default_value_t = 0)]
    storage_max_bytes: u64,
    /// PEM file of CA certificates trusted for policy modules' `module.url`, besides the
    /// system's (a private module server).
    #[arg(long, value_name = "FILE")]
    policy_module_ca_file: Option<PathBuf>,
    /// Listen address of the Receivers' webhook server (empty: no webhook server).
    #[arg(long, default_value = ":9292")]
    receiver_addr: String,
    /// Largest webhook request body in bytes.
    #[arg(long, default_value_t = ReceiverLimits::default().max_body_bytes)]
    receiver_max_body_bytes: usize,
    /// Webhook requests per minute each Receiver accepts (more are answered 429).
    #[arg(long, default_value_t = ReceiverLimits::default().requests_per_minute)]
    receiver_rate_limit: u32,
}

impl Args {
    /// The reconciler-wide source limits from the flags.
    fn source_limits(&self) -> SourceLimits {
        let mut limits = SourceLimits::default();
        for limit in Limit::ALL {
            limits.set(
                limit,
                match limit {
                    Limit::ReceivedBytes => self.max_received_bytes,
                    Limit::Objects => self.max_objects,
                    Limit::FileSize => self.max_file_size,
                    Limit::TreeSize => self.max_tree_size,
                    Limit::Files => self.max_files,
                },
            );
        }
        limits
    }
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "gitops-system".into());
        let name = match &args.watch_label_selector {
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

    let storage = Storage::new(&args.storage_path)
        .with_context(|| format!("artifact storage {}", args.storage_path.display()))?;
    let storage_addr = listen_addr(&args.storage_addr)?;
    let listener = TcpListener::bind(storage_addr)
        .await
        .with_context(|| format!("cannot listen on {storage_addr} (artifacts)"))?;
    tracing::info!(addr = %storage_addr, "serving artifacts");
    let artifact_server = tokio::spawn(source::server::serve(listener, storage.clone(), stopped()));
    let source_config = source::SourceConfig {
        storage_path: args.storage_path.clone(),
        storage_adv_addr: args
            .storage_adv_addr
            .clone()
            .unwrap_or_else(|| storage_addr.to_string()),
        concurrency: usize::from(args.concurrent.max(1)),
        allow_file_urls: args.allow_file_urls,
        limits: args.source_limits(),
        max_storage_bytes: args.storage_max_bytes,
        ..Default::default()
    };
    let limits = source_config.limits.unpack();
    let sources = gitrepository::run_with_metrics(
        client.clone(),
        source_config,
        args.watch_label_selector.clone(),
        metrics.clone(),
        stopped(),
    );
    let fetcher = ArtifactFetcher::new(Some(storage), limits);
    // One wasmtime engine per process, started when a Kustomization first needs a policy; when
    // it cannot start, those Kustomizations fail with PolicyFailed and the others reconcile.
    let ca_pem = match &args.policy_module_ca_file {
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
            cache_dir: Some(args.storage_path.join("policy-modules")),
            ..Default::default()
        },
    );
    if checks_trust {
        gitops_reconciler::policy::fetch::ModuleFetcher::process()
            .check_trust()
            .map_err(|e| anyhow::anyhow!("--policy-module-ca-file: {e}"))?;
    }
    let policy = PolicyEngine::on_first_use(HostConfig {
        cache_dir: Some(args.storage_path.join("policy-cache")),
        compile_worker: std::env::current_exe().ok(),
        ..Default::default()
    });
    let config = KustomizationConfig {
        concurrent: args.concurrent,
        concurrent_apply: args.concurrent_apply,
        no_cross_namespace_refs: args.no_cross_namespace_refs,
        default_service_account: args.default_service_account.clone(),
        watch_label_selector: args.watch_label_selector.clone(),
    };
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
        let listener = if args.receiver_addr.is_empty() {
            None
        } else {
            let addr = listen_addr(&args.receiver_addr)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (receivers)"))?;
            tracing::info!(%addr, "serving receiver webhooks");
            Some(listener)
        };
        let config = NotifyConfig {
            no_cross_namespace_refs: args.no_cross_namespace_refs,
            watch_label_selector: args.watch_label_selector.clone(),
            limits: ReceiverLimits {
                max_body_bytes: args.receiver_max_body_bytes,
                requests_per_minute: args.receiver_rate_limit,
                ..ReceiverLimits::default()
            },
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
            no_cross_namespace_refs: args.no_cross_namespace_refs,
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
            args.watch_label_selector.clone(),
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
    fn every_source_limit_has_its_flag_with_its_default() {
        let command = Args::command();
        for limit in Limit::ALL {
            let long = limit.flag().trim_start_matches("--");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no flag {}", limit.flag()));
            let default: Vec<_> = arg.get_default_values().iter().collect();
            assert_eq!(
                default,
                [&std::ffi::OsString::from(limit.default_value().to_string())],
                "{}",
                limit.flag()
            );
        }
        let args = Args::parse_from(["gitops-reconciler", "--max-file-size", "7"]);
        assert_eq!(args.source_limits().get(Limit::FileSize), 7);
        assert_eq!(
            args.source_limits().get(Limit::TreeSize),
            Limit::TreeSize.default_value()
        );
    }
}
