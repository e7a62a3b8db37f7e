//! The reconciler's flags of the source stage: artifact storage and server, and the size limits
//! of every fetch (one flag per [`Limit`], generated from that table).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, value_parser};

use super::{Limit, SourceConfig, SourceLimits};

/// Flags of the GitRepository controller and the artifact server.
#[derive(Clone, Debug, Args)]
pub struct SourceArgs {
    /// Directory of the artifact storage.
    #[arg(long, default_value = "/data")]
    pub storage_path: PathBuf,
    /// Listen address of the artifact server.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub storage_addr: String,
    /// host:port written into artifact URLs (default: the storage address).
    #[arg(long)]
    pub storage_adv_addr: Option<String>,
    /// Accept file:// source URLs (tests only).
    #[arg(long)]
    pub allow_file_urls: bool,
    /// Cap on the bytes in the artifact storage; the least recently used git caches are
    /// evicted to stay under it (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub storage_max_bytes: u64,
    /// Reconciler-wide fetch limits (`--max-received-bytes`, ...); `spec.limits` may only
    /// tighten them.
    #[command(flatten)]
    pub limits: SourceLimits,
}

impl SourceArgs {
    /// The source controller's settings, for an artifact server bound to `bound` and
    /// `concurrency` fetches at once.
    pub fn config(&self, bound: SocketAddr, concurrency: usize) -> SourceConfig {
        SourceConfig {
            storage_path: self.storage_path.clone(),
            storage_adv_addr: self
                .storage_adv_addr
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            concurrency,
            allow_file_urls: self.allow_file_urls,
            limits: self.limits.clone(),
            max_storage_bytes: self.storage_max_bytes,
            ..SourceConfig::default()
        }
    }
}

/// Flag id of `limit` (its long name without dashes).
fn id(limit: Limit) -> &'static str {
    limit.flag().trim_start_matches("--")
}

impl Args for SourceLimits {
    fn augment_args(mut cmd: Command) -> Command {
        for limit in Limit::ALL {
            cmd = cmd.arg(
                Arg::new(id(limit))
                    .long(id(limit))
                    .value_name("N")
                    .value_parser(value_parser!(u64))
                    .default_value(limit.default_value().to_string())
                    .help(format!(
                        "Most {} in one fetch (a GitRepository may lower it: spec.limits.{})",
                        limit.what(),
                        limit.field()
                    )),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SourceLimits {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut limits = SourceLimits::default();
        limits.update_from_arg_matches(matches)?;
        Ok(limits)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for limit in Limit::ALL {
            if let Some(value) = matches.get_one::<u64>(id(limit)) {
                self.set(limit, *value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        source: SourceArgs,
    }

    #[test]
    fn every_limit_has_its_flag_with_its_default() {
        let command = <Only as clap::CommandFactory>::command();
        for limit in Limit::ALL {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(id(limit)))
                .unwrap_or_else(|| panic!("no flag {}", limit.flag()));
            let default: Vec<_> = arg.get_default_values().iter().collect();
            assert_eq!(
                default,
                [&std::ffi::OsString::from(limit.default_value().to_string())],
                "{}",
                limit.flag()
            );
        }
        let args = Only::parse_from(["x", "--max-file-size", "7"]).source;
        assert_eq!(args.limits.get(Limit::FileSize), 7);
        assert_eq!(
            args.limits.get(Limit::TreeSize),
            Limit::TreeSize.default_value()
        );
        assert_eq!(
            crate::flags::defaults::<SourceLimits>(),
            SourceLimits::default()
        );
    }

    #[test]
    fn the_config_follows_the_flags() {
        let args = Only::parse_from(["x", "--storage-path", "/tmp/s", "--allow-file-urls"]).source;
        let bound: SocketAddr = "127.0.0.1:9099".parse().expect("address");
        let config = args.config(bound, 3);
        assert_eq!(config.storage_path, PathBuf::from("/tmp/s"));
        assert_eq!(config.storage_adv_addr, "127.0.0.1:9099");
        assert_eq!(config.concurrency, 3);
        assert!(config.allow_file_urls);
        let defaults = crate::flags::defaults::<SourceArgs>();
        assert_eq!(SourceConfig::default().storage_path, defaults.storage_path);
    }
}
