//! The command line: every subcommand a site engineer can run.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Default location of the configuration file on a host.
pub const DEFAULT_CONFIG: &str = "/etc/edgeplane/edgeplane.toml";

/// Parses the process arguments. `--version` also names the etcd binary found on this host,
/// which needs a process start, so it is only looked up when asked for.
pub fn parse() -> Cli {
    let wants_version = std::env::args().any(|a| a == "--version" || a == "-V");
    let mut cmd = Cli::command();
    if wants_version {
        let etcd = crate::version::etcd_version(std::path::Path::new("/usr/bin/etcd"))
            .map(|v| format!("etcd {v} at /usr/bin/etcd"))
            .unwrap_or_else(|| "etcd not found at /usr/bin/etcd".to_string());
        cmd = cmd.version(format!("{}, {etcd}", crate::version::LONG));
    }
    let matches = cmd.get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "edgeplane",
    version = crate::version::LONG,
    about = "Keeps a small edge site's etcd at full strength and its metrics safe while cut off from the region.",
    long_about = "Edgeplane runs on every host of a small edge site. It runs the host's etcd member, keeps a \
hot standby in sync and promotes it when a voter's host dies, keeps snapshots on every host, and buffers \
metrics on disk until the link to the region returns.\n\nStart with `edgeplane config check` on a new \
config, then run `edgeplane agent` (normally from the systemd unit)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this host (normally started by systemd).
    Agent(AgentArgs),
    /// Check or explain a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a local 4-host site on loopback with real etcd, kill a voter host and watch it heal.
    Demo(DemoArgs),
    /// Measure this host: disk buffer speed, failover times, snapshot and backfill speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Take, list and verify etcd snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Explain this host and the site, offline: works with the agent and etcd down.
    #[command(subcommand)]
    Diag(DiagCommand),
    /// Rebuild the cluster after quorum loss from the freshest surviving data (the command
    /// `edgeplane diag status` prints when it is needed).
    Recover(RecoverArgs),
    /// Create the site CA and the hosts' certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print a shell completion script (the package installs bash, zsh and fish ones).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (edgeplane.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a site CA and a certificate for every host of the config (existing ones are kept).
    Init {
        /// Output directory: ca.crt, ca.key and hosts/NAME/{ca.crt,host.crt,host.key}.
        #[arg(long)]
        site: PathBuf,
        /// Any host's config of the site (the hosts and their addresses are read from it).
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Reissue existing host certificates (the CA is always kept).
        #[arg(long)]
        force: bool,
    },
    /// Revoke a host's certificate (a stolen or retired host): writes DIR/crl.pem, signed by
    /// the CA, with a higher CRL number. Run it where the CA key is, never on a host.
    Revoke {
        /// The host whose certificate is revoked.
        host: String,
        /// The directory of `certs init` (with ca.crt and ca.key).
        #[arg(long)]
        site: PathBuf,
        /// Any host's config of the site, to print the member removal command with its
        /// endpoints.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
    },
    /// Install a CRL (from `certs revoke`) on this host; its agent loads it and passes it on
    /// to every peer. Refused unless signed by the site CA and newer than the one installed.
    InstallCrl {
        /// The CRL file `certs revoke` wrote (`crl.pem`).
        file: PathBuf,
        /// This host's config (the CRL goes next to its TLS files).
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Remove this host's etcd member once the other agents hold the CRL (the revoked
        /// host; repeat for several).
        #[arg(long = "remove-member", value_name = "HOST")]
        remove_member: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot now from a healthy voter.
    Save {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Write it here instead of the snapshot directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the snapshots this host knows of (its own and its copies of peers').
    List {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot file: checksum and content. Exit 1 on any corruption. Takes an
    /// Edgeplane snapshot (`*.etcd.zst`) or a plain `etcdctl snapshot save` file (checked
    /// with etcd's own sha256 trailer).
    Verify {
        /// The file: an Edgeplane snapshot (`*.etcd.zst`) or a plain `etcdctl snapshot save` file.
        file: PathBuf,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiagCommand {
    /// This host and the site: roles, leader, lag, db size, snapshots, quorum, link, buffer.
    Status {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The journal of operations (promotions, removals, rejoins, recoveries, defrags, sheds).
    Events {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Only events newer than this (e.g. `1h`, `2d`).
        #[arg(long)]
        since: Option<String>,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Preflight and health checks: PASS / WARN / FAIL with a remedy each. Exit 0 / 1 / 2.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
        /// Also ask the region's receiver what it accepts: three canary samples on the
        /// `edgeplane_uplink_probe` series only (now, a minute older, two hours older).
        #[arg(long)]
        region: bool,
    },
    /// Write a support bundle (secrets redacted, no etcd values, no key material).
    Bundle {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Output file, e.g. `support.tar.zst`.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
    pub config: PathBuf,
    /// Rebuild from this surviving host's data (the freshest one when omitted).
    #[arg(long, conflicts_with = "snapshot")]
    pub from: Option<String>,
    /// Rebuild on this host from a snapshot file instead of a survivor's data: an Edgeplane
    /// snapshot or a plain `etcdctl snapshot save` file (verified first; writes made after it
    /// was taken are discarded).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Required: confirms the lost hosts are powered off (they must never come back with old data).
    #[arg(long)]
    pub confirm: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file; prints every problem at once. Exit 0 when valid, 1 otherwise.
    Check {
        /// Configuration file; when given, it wins over `--config` and `EDGEPLANE_CONFIG`.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
        /// Print the resolved configuration, and for each value whether it came from the file or
        /// from the profile's default.
        #[arg(long)]
        explain: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print one resolved value, for scripts (images/build uses it). Exit 0 with the value; 1
    /// when the key is not set; 2 for a key the schema does not have or a file that does not
    /// pass `config check`.
    Get {
        /// A key as `config check --explain` names it (`uplink.bearer_token_file`,
        /// `nodes[0].peer_url`), or `node.FIELD` for this host's own `[[nodes]]` entry
        /// (`node.peer_url`).
        #[arg(value_name = "KEY")]
        key: String,
        /// Configuration file; when given, it wins over `--config` and `EDGEPLANE_CONFIG`.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "EDGEPLANE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print one JSON record at the end instead of the narration.
    #[arg(long)]
    pub json: bool,
    /// Keep the demo's directory (configs, logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Failover: repeatedly SIGKILL a voter host of a loopback site and time the recovery.
    Failover {
        /// Kill/recover cycles.
        #[arg(long, default_value_t = 5)]
        cycles: usize,
        /// Concurrent writers, each with its own connections (1: an idle site; 6: under load).
        /// The same number write to etcd alone.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        writers: u16,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The disk buffer: append (with and without fsync) and read-back speed, bytes per sample,
    /// shedding latency and memory, beside the raw write speed of the same disk.
    Buffer {
        /// Directory on the disk to qualify (a temporary directory under it is used).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Data to hold buffered for the memory figure, MiB.
        #[arg(long, default_value_t = 1024)]
        data_mib: u64,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Backfill: flush days of buffered samples into a local Prometheus, beside a minimal sender.
    Backfill {
        /// Days of buffered samples to flush (at the scrape interval of the edge profile).
        #[arg(long, default_value_t = 3)]
        days: u64,
        /// Series per scrape; with `--vmagent`, the gauges the load target serves.
        #[arg(long, default_value_t = 2000)]
        series: usize,
        /// Instead: Edgeplane beside vmagent, scraping `--series` gauges at 1 s
        /// through the same outage into one stock Prometheus; disk bytes per
        /// buffered sample, RSS, CPU s per million samples, drain time, samples missing.
        #[arg(long)]
        vmagent: bool,
        /// The outage of `--vmagent`, in seconds.
        #[arg(long, default_value_t = 90)]
        outage_s: u64,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Quorum loss: two of three voters SIGKILLed on a loopback site with policy `fenced`;
    /// time from the second kill to writable again, and to full strength once they return.
    Recovery {
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The self-fence loss bound: 2 hosts + a witness, the lone voter cut off while its own
    /// clients write to it; what it acknowledged before stopping its etcd is lost (needs root:
    /// a network namespace).
    SelfFence {
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot and restore of a large database, beside `etcdctl snapshot save` + `zstd -3`.
    Snapshot {
        /// Size of the etcd database to fill, snapshot and restore, MiB.
        #[arg(long, default_value_t = 256)]
        db_mib: u64,
        /// Print one JSON document (with a `schema` name and version) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "edgeplane", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }

    #[test]
    fn config_check_takes_the_config_like_every_command() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Config(ConfigCommand::Check { file, config, .. }),
            }) => file.unwrap_or(config),
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(
            parse(&["edgeplane", "config", "check", "-c", "/a.toml"]),
            PathBuf::from("/a.toml")
        );
        assert_eq!(
            parse(&["edgeplane", "config", "check", "--config", "/b.toml"]),
            PathBuf::from("/b.toml")
        );
        assert_eq!(
            parse(&["edgeplane", "config", "check", "/c.toml"]),
            PathBuf::from("/c.toml")
        );
        let env_name = Cli::command()
            .find_subcommand("config")
            .and_then(|c| c.find_subcommand("check"))
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "config"))
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
        assert_eq!(env_name.as_deref(), Some("EDGEPLANE_CONFIG"));
    }
}
