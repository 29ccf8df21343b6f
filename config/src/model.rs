//! The resolved configuration: every value concrete, profile defaults applied.
//!
//! This is what the rest of Edgeplane reads. It is produced by [`crate::load`]
//! from the TOML file (see `config/README.md` for the file format) and is
//! never partially filled: a value the file does not set comes from the
//! profile's default. Field names match the TOML keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Which set of defaults applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A small disconnected site: fast failover, metrics buffered for days.
    Edge,
    /// The cloud region: conservative timing, no uplink (it is the receiver).
    Region,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    pub profile: Profile,
    /// This host's name; must be one of `nodes`.
    pub host: String,
    /// The site's name, added as the `site` label to every metric.
    pub site: String,
    /// Every host of the site in bootstrap order: the first `cluster.voters`
    /// form the initial cluster, the next one is the standby (learner), any
    /// further hosts are cold spares. Witnesses (`role = "witness"`) are
    /// not here: see `witnesses`.
    pub nodes: Vec<Node>,
    /// The `[[nodes]]` entries with `role = "witness"`: an agent without
    /// etcd that adds one vote to quorum-loss recovery. Shown by `config
    /// check --explain` among `nodes` (at their place in the file).
    #[serde(skip)]
    pub witnesses: Vec<Node>,
    pub cluster: Cluster,
    pub etcd: Etcd,
    pub paths: Paths,
    pub snapshots: Snapshots,
    pub recovery: Recovery,
    pub defrag: Defrag,
    pub metrics: Metrics,
    pub buffer: Buffer,
    pub uplink: Uplink,
    pub tls: Tls,
    pub log: Log,
}

/// What a `[[nodes]]` entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// An etcd host: voter, standby or spare, in `[[nodes]]` order.
    #[default]
    Etcd,
    /// The agent only, without etcd (a small box or the site's router): it
    /// adds one vote to quorum-loss recovery and is never a member, never
    /// fenced, never a rebuild source.
    Witness,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    pub name: String,
    /// `etcd` (the default) or `witness`.
    pub role: NodeRole,
    /// etcd peer URL, e.g. `http://10.0.0.1:2380` (empty for a witness).
    pub peer_url: String,
    /// etcd client URL, e.g. `http://10.0.0.1:2379`.
    pub client_url: String,
    /// The agent's API URL, e.g. `http://10.0.0.1:7070`.
    pub agent_url: String,
    /// Its place among the file's `[[nodes]]` (for `nodes[N].key` in
    /// problems and `--explain`).
    #[serde(skip)]
    pub file_index: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cluster {
    /// Desired voter count: 1, 3 or 5.
    pub voters: usize,
    /// Whether the agent changes membership at all (standby join, promotion,
    /// replacement, eviction, rejoin); false is maintenance mode: decide and
    /// report, change no member.
    pub manage_membership: bool,
    /// How long a voter's etcd AND agent must both be unreachable before it is
    /// declared dead and replaced.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub failure_detection: Duration,
    /// When a voter's agent answers but its etcd is down, how long the local
    /// restart gets before the voter is replaced.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub etcd_restart_grace: Duration,
    /// A learner is promotable only if its applied index is within this many
    /// entries of the leader's.
    pub promotion_max_lag: u64,
    /// ... and has stayed so for this long.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub promotion_stable_for: Duration,
    /// A learner that has not caught up within this long is evicted and replaced.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub learner_stuck_after: Duration,
    /// A standby that had caught up and then fell behind is evicted and
    /// replaced only once it has been behind for this long (default 5 ×
    /// `learner_stuck_after`): a stall or a write burst must not cost the
    /// site its promotable standby.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub standby_behind_limit: Duration,
    /// Period of the membership reconcile loop.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub reconcile_interval: Duration,
    /// Flap damping: a host the agents removed within this window gets a
    /// doubled detection window (`failure_detection` and
    /// `etcd_restart_grace`) per such removal, at most 8 times the base.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub flap_window: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Etcd {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub heartbeat: Duration,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub election_timeout: Duration,
    pub quota_backend_bytes: u64,
    pub pre_vote: bool,
    /// Extra command-line flags passed to etcd verbatim.
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Paths {
    /// Root of the agent's own state; the other directories default below it.
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub buffer_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshots {
    pub enabled: bool,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub interval: Duration,
    pub retain_count: usize,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub retain_age: Duration,
    pub copy_to_peers: bool,
    /// How often each snapshot file on this host is verified again in
    /// full; a corrupt one is set aside and replaced from a peer.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub scrub_interval: Duration,
    /// Budget for every snapshot file on this host (all origins); 0 = none.
    pub max_bytes: u64,
    /// Free space snapshots must leave on their filesystem (etcd's data
    /// usually shares it); 0 = none.
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumLossPolicy {
    /// Never rebuild automatically; print the `edgeplane recover` command.
    Manual,
    /// Rebuild automatically once the fence command confirmed every lost voter off.
    Fenced,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recovery {
    pub quorum_loss_policy: QuorumLossPolicy,
    /// Program and arguments; `{host}` is replaced by the lost host's name.
    /// Exit status 0 means "confirmed powered off".
    pub fence_command: Vec<String>,
    /// `KEY=VALUE` lines given to the fence command as its environment (a
    /// BMC password, say), so that no credential is in its arguments, `ps`,
    /// `config check --explain` or a bundle. Read at each fence.
    pub fence_environment_file: Option<PathBuf>,
    /// How long a majority of voters must be unreachable to call it quorum loss.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub quorum_loss_window: Duration,
    /// Policy `fenced`: a voter that cannot see the agents of a strict
    /// majority of the configured nodes (so the other side may rebuild)
    /// stops its etcd after this long, before the other side's window and
    /// fence can end.
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub self_fence_after: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Defrag {
    pub enabled: bool,
    /// Defragment when (db_size - db_in_use) / db_size exceeds this.
    pub free_ratio: f64,
    /// ... and db_size is at least this big.
    pub min_db_bytes: u64,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub check_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub enabled: bool,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub scrape_interval: Duration,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub scrape_timeout: Duration,
    /// Scrape the local etcd's `/metrics`.
    pub scrape_etcd: bool,
    /// Scrape the agent's own `/metrics`.
    pub scrape_self: bool,
    pub targets: Vec<Target>,
    /// Priority classes, most critical first.
    pub classes: Vec<String>,
    pub default_class: String,
    /// First match wins.
    pub rules: Vec<Rule>,
    /// Labels added to every sample (besides `site`, `instance`, `job`).
    pub external_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Target {
    /// Becomes the `job` label.
    pub job: String,
    pub url: String,
    /// Overrides `metrics.scrape_interval`.
    #[serde(serialize_with = "crate::units::ser_opt_duration")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rule {
    /// Glob over the metric name (`*` and `?`).
    pub metric: String,
    /// Every label listed must be present with exactly this value.
    pub labels: BTreeMap<String, String>,
    pub class: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync after every appended batch.
    Batch,
    /// fsync at most every `buffer.fsync_interval`.
    Interval,
    /// Leave it to the OS (data written in the last ~30 s may be lost on power loss).
    Never,
}

/// `uplink.out_of_order`: does the region accept samples older than the
/// newest one of their series?
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutOfOrder {
    /// Flush in order until canary samples show the region accepts older
    /// samples, then live first; an out-of-order refusal switches back.
    Auto,
    /// Live first (the region has an out-of-order window).
    Accepted,
    /// Always in order: oldest first per series, live data behind the backlog.
    Refused,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Buffer {
    /// Hard budget for the buffer directory on disk.
    pub budget_bytes: u64,
    /// Segment file size; the budget may be exceeded by at most one segment.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub fsync_interval: Duration,
    /// Samples older than this are expired (counted, never sent).
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Uplink {
    pub enabled: bool,
    /// Prometheus remote-write URL of the region.
    pub url: Option<String>,
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub timeout: Duration,
    /// Maximum backlog flush rate, samples per second (live data is not limited).
    pub backfill_rate: u64,
    /// Samples per remote-write request.
    pub batch_samples: usize,
    /// Samples older than this are never sent (the receiver would refuse them).
    #[serde(serialize_with = "crate::units::ser_duration")]
    pub max_sample_age: Duration,
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic auth: the user name (not a secret) ...
    pub basic_auth_user: Option<String>,
    /// ... and the file holding the password (the password itself never
    /// appears in the config).
    pub basic_auth_password_file: Option<PathBuf>,
    /// Extra request headers, e.g. `X-Scope-OrgID` for a Mimir, Cortex or
    /// Thanos tenant. Not for credentials: values are shown by
    /// `config check --explain`.
    pub headers: BTreeMap<String, String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Bound on the dead-letter area for batches the receiver refused.
    pub dead_letter_bytes: u64,
    /// Live first or in order; see [`OutOfOrder`].
    pub out_of_order: OutOfOrder,
}

/// The site's TLS material. TLS is on when the node URLs are `https://`:
/// etcd's client and peer traffic and the agent API then require a
/// certificate signed by `ca_file`. Plain `http://` node URLs are refused
/// unless `allow_plaintext` is set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tls {
    /// The site CA certificate (PEM) every member and agent must be signed by.
    pub ca_file: PathBuf,
    /// This host's certificate (PEM), used as server and client certificate
    /// by etcd and the agent alike.
    pub cert_file: PathBuf,
    /// This host's private key (PEM); must not be readable by group or others.
    pub key_file: PathBuf,
    /// Accept plain-HTTP node URLs: no authentication at all. For a lab only.
    pub allow_plaintext: bool,
    /// A loopback-only plain-HTTP address serving `/livez` and `/readyz`
    /// (nothing else) for local probes, e.g. `127.0.0.1:7071`.
    pub health_listen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Log {
    pub dir: PathBuf,
    /// `tracing` filter, e.g. `info` or `edgeplane=debug,info`.
    pub level: String,
    /// Write rolling log files (stderr is always written).
    pub to_files: bool,
    /// Daily files kept.
    pub retention_files: usize,
}

impl Profile {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Edge => "edge",
            Profile::Region => "region",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// The node this agent runs on (`host`). Always `Some` for a config
    /// produced by [`crate::load`], which rejects a `host` not among `nodes`.
    pub fn this_node(&self) -> Option<&Node> {
        self.node(&self.host)
    }

    /// The etcd host called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The witness called `name`.
    pub fn witness(&self, name: &str) -> Option<&Node> {
        self.witnesses.iter().find(|n| n.name == name)
    }

    /// Whether this host (`host`) is a witness: it runs the agent only.
    pub fn is_witness(&self) -> bool {
        self.witness(&self.host).is_some()
    }

    /// Votes in quorum-loss recovery: one per etcd host and per witness.
    pub fn votes(&self) -> usize {
        self.nodes.len() + self.witnesses.len()
    }

    /// The nodes that form the initial cluster: the first `cluster.voters`.
    pub fn initial_voters(&self) -> &[Node] {
        &self.nodes[..self.cluster.voters.min(self.nodes.len())]
    }

    /// The nodes after the voters, in the order they become the standby
    /// (learner): the first is the standby, the rest are cold spares.
    pub fn standby_order(&self) -> &[Node] {
        &self.nodes[self.cluster.voters.min(self.nodes.len())..]
    }

    /// Whether the site runs with TLS: every node URL is `https://`
    /// (validation refuses a mix).
    pub fn tls_enabled(&self) -> bool {
        !self.nodes.is_empty()
            && self.nodes.iter().all(|n| {
                [&n.peer_url, &n.client_url, &n.agent_url]
                    .iter()
                    .all(|u| u.starts_with("https://"))
            })
            && self
                .witnesses
                .iter()
                .all(|w| w.agent_url.starts_with("https://"))
    }

    /// Whether `name` is one of the initial voters.
    pub fn is_initial_voter(&self, name: &str) -> bool {
        self.initial_voters().iter().any(|n| n.name == name)
    }
}
