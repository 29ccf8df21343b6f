//! Chaos campaign (issue 9): random single-host faults against a 5-host,
//! 3-voter loopback site (plus a standby and a spare) under a write and a metrics workload, with checkers
//! after every fault heals and at the end.
//!
//! - Workload: a [`Writer`] of unique keys (one segment per fault) and three
//!   read-modify-write clients incrementing three shared counters with etcd
//!   transactions (compare `mod_revision`, then put). Every increment also
//!   puts a marker key named after its operation in the same transaction, so
//!   an increment whose acknowledgement was lost (timeout) can be resolved
//!   afterwards by looking for its marker. Metrics: every agent scrapes a
//!   target of the test every second, buffers on an 8 MiB tmpfs and
//!   remote-writes to a region Prometheus (see `chaos_metrics.rs`).
//! - Faults, drawn from a seeded generator (`EDGEPLANE_CHAOS_SEED=N` repeats
//!   the schedule): SIGKILL a host (agent + etcd) and restart its agent after
//!   2–5 s; SIGKILL only the agent and restart it after 1–4 s; SIGKILL only
//!   etcd (the agent restarts it); SIGSTOP a whole host for 2–3 s (longer than
//!   the 1 s election timeout and failure detection), then SIGCONT; cut host-1
//!   (in its own network namespace) off for 3–8 s, made the etcd leader first
//!   when the schedule says "the leader's host"; freeze the region Prometheus
//!   for 3–10 s; fill one host's buffer disk during a 4–7 s region outage;
//!   and the kinds of issue 16 (quorum loss, partitions with agent restarts,
//!   disk faults; asymmetric and partial partitions, the standby stopped
//!   while a voter dies, a torn buffer tail, quorum loss under policy
//!   `manual` with the operator's command: those four in `chaos/faults.rs`).
//! - Checkers: no acknowledged write lost; every counter equals its markers
//!   (no lost update), every acknowledged increment has its marker, no marker
//!   for an increment etcd refused; revisions seen by each client never go
//!   backwards; never more than 3 voters (member list polled every 50 ms);
//!   never leaders in two different clusters in one poll (Status of every
//!   member every 100 ms); full strength (3 voters + 1 standby, every member
//!   and agent answering, the same members for 2 s) within 60 s of each fault
//!   healing; no agent exits on its own (also not on a full disk); the
//!   metrics backlog from before the heal drains within 90 s; every sample
//!   the target served is in the region at its timestamp with its value, or
//!   counted by the agents as shed (samples_lost_beyond_shed = 0).
//!
//! `EDGEPLANE_CHAOS_FAULTS=N` sets the number of faults (default: one per
//! kind, the CI campaign); `EDGEPLANE_CHAOS_MINUTES=M` stops injecting after M minutes;
//! `EDGEPLANE_CHAOS_REPORT=PATH` writes the JSON report there.
//! `docs/reliability/README.md` says what is and is not covered.

use edgeplane_tests::rng::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_metrics::local_prometheus::LocalPrometheus;
use edgeplane_tests::workload::{self, Workload};
use edgeplane_tests::{HANG, LocalSite, SiteSpec, Writer, edgeplane_bin, linearizability, rt, sim};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use nix::sys::signal::Signal;

use crate::chaos_clock;
use crate::chaos_metrics as cm;

mod faults;
use faults::Kill;

/// Bound on the return to full strength after a fault heals.
const FULL_STRENGTH_BOUND: Duration = Duration::from_secs(60);
/// Per-operation bound of the chaos clients (a dead member never answers).
const OP_TIMEOUT: Duration = Duration::from_millis(800);
/// Shared read-modify-write counters.
const COUNTERS: usize = 3;
const RMW_CLIENTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    HostKill,
    AgentKill,
    EtcdKill,
    HostStop,
    /// The isolated host's veth down, then up.
    Partition,
    /// The region Prometheus frozen (SIGSTOP), then resumed.
    RegionCut,
    /// One host's buffer tmpfs filled by a ballast file during a region
    /// outage, then freed.
    DiskFill,
    /// Two of the three voters powered off together (policy `fenced`; the
    /// 3 survivors are 3 of 5 votes, a strict majority, so the freshest
    /// fences the two and rebuilds in a new epoch); powered on again later,
    /// they rejoin the new epoch.
    QuorumLoss,
    /// The isolated host cut off, and its agent SIGKILLed and restarted
    /// while it is cut off (issue 14 §1), then the link healed.
    PartitionAgentRestartMinority,
    /// The isolated host cut off, and the agent of a host on the majority
    /// side SIGKILLed and restarted meanwhile, then the link healed.
    PartitionAgentRestartMajority,
    /// Every fsync of the leader's etcd stalled (its tracer SIGSTOPped)
    /// for longer than the failure detection, then released.
    DiskStallLeader,
    /// One host's etcd fails its fsyncs with EIO from its next start on
    /// (armed, then etcd SIGKILLed; the agent restarts it and it dies on
    /// the EIO): the agent sets the data aside and rejoins (decision 0005).
    FsyncEio,
    /// One host's agent sees its wall clock jump 5 minutes ahead or back
    /// (libfaketime), then back to the true time (`chaos_clock.rs`).
    ClockJump,
    /// Every fsync of a voter's or the leader's etcd held up to 50–200 ms
    /// for a few seconds, below the failure detection (`chaos_clock.rs`).
    FsyncLatency,
    /// One-way or partial cut of the isolated host (nft in its namespace;
    /// see [`faults::partition_asymmetric`]).
    PartitionAsymmetric,
    /// The standby's host SIGSTOPped while a voter's host is SIGKILLed.
    OverlapStandbyStopVoterKill,
    /// A torn write appended to a host's buffer append logs while its
    /// agent is down; the agent restarts, cuts and reports it.
    BufferSegmentTorn,
    /// Two of the three voters SIGKILLed under policy `manual`, then the
    /// operator's command, as the survivors offer it.
    QuorumLossManual,
    /// A snapshot copy on one host rots on disk while its agent runs; the
    /// scrub must set it aside and fetch an intact copy from a peer.
    SnapshotCopyCorrupt,
    /// The isolated host cut off while a defragmentation runs (see
    /// [`faults::partition_during_defrag`]).
    PartitionDuringDefrag,
    /// The isolated host cut off and another voter powered off: quorum
    /// lost, with the fence out of band for this fault, so it works across
    /// the cut (see [`faults::quorum_loss_out_of_band`]).
    QuorumLossOutOfBand,
    /// Every host loses power at once, and each one's disk what it had not
    /// fsynced (see [`faults::power_cut`]).
    PowerCut,
}

impl Kind {
    /// The kinds of the campaign before quorum loss and fenced recovery were
    /// added (`EDGEPLANE_CHAOS_KINDS=default`, to replay old seeds).
    const DEFAULT: [Kind; 7] = [
        Kind::HostKill,
        Kind::AgentKill,
        Kind::EtcdKill,
        Kind::HostStop,
        Kind::Partition,
        Kind::RegionCut,
        Kind::DiskFill,
    ];

    /// Every kind, in schedule order (the first seven are [`Kind::DEFAULT`],
    /// so a seed draws the same schedule as before when only they run).
    const ALL: [Kind; 22] = [
        Kind::HostKill,
        Kind::AgentKill,
        Kind::EtcdKill,
        Kind::HostStop,
        Kind::Partition,
        Kind::RegionCut,
        Kind::DiskFill,
        Kind::QuorumLoss,
        Kind::PartitionAgentRestartMinority,
        Kind::PartitionAgentRestartMajority,
        Kind::DiskStallLeader,
        Kind::FsyncEio,
        Kind::ClockJump,
        Kind::FsyncLatency,
        Kind::PartitionAsymmetric,
        Kind::OverlapStandbyStopVoterKill,
        Kind::BufferSegmentTorn,
        Kind::QuorumLossManual,
        Kind::SnapshotCopyCorrupt,
        Kind::PartitionDuringDefrag,
        Kind::QuorumLossOutOfBand,
        Kind::PowerCut,
    ];

    /// Kinds that need every etcd started through the strace wrapper.
    fn disk(self) -> bool {
        matches!(
            self,
            Kind::DiskStallLeader | Kind::FsyncEio | Kind::FsyncLatency
        )
    }

    /// Kinds that need the site on policy `fenced` (with the campaign's
    /// fence, [`faults::FENCE_SCRIPT`]).
    fn fenced(self) -> bool {
        matches!(
            self,
            Kind::QuorumLoss
                | Kind::PartitionAgentRestartMinority
                | Kind::PartitionAgentRestartMajority
                | Kind::QuorumLossOutOfBand
        )
    }

    fn by_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::HostKill => "host_sigkill",
            Kind::AgentKill => "agent_sigkill",
            Kind::EtcdKill => "etcd_sigkill",
            Kind::HostStop => "host_sigstop",
            Kind::Partition => "partition",
            Kind::RegionCut => "region_link_cut",
            Kind::DiskFill => "buffer_disk_full",
            Kind::QuorumLoss => "quorum_loss",
            Kind::PartitionAgentRestartMinority => "partition_agent_restart_minority",
            Kind::PartitionAgentRestartMajority => "partition_agent_restart_majority",
            Kind::DiskStallLeader => "disk_stall_leader",
            Kind::FsyncEio => "fsync_eio",
            Kind::ClockJump => "clock_jump",
            Kind::FsyncLatency => "fsync_latency",
            Kind::PartitionAsymmetric => "partition_asymmetric",
            Kind::OverlapStandbyStopVoterKill => "overlap_standby_stop_voter_kill",
            Kind::BufferSegmentTorn => "buffer_segment_torn",
            Kind::QuorumLossManual => "quorum_loss_manual",
            Kind::SnapshotCopyCorrupt => "snapshot_copy_corrupt",
            Kind::PartitionDuringDefrag => "partition_during_defrag",
            Kind::QuorumLossOutOfBand => "quorum_loss_out_of_band",
            Kind::PowerCut => "power_cut",
        }
    }

    /// Why this kind cannot run here, if it cannot: root for network
    /// namespaces and tmpfs mounts, `ping` for the in-band fence.
    fn missing(self, root: bool, ping: bool, strace: bool) -> Option<&'static str> {
        if let Some(why) = faults::missing(self, root) {
            return Some(why);
        }
        if self == Kind::ClockJump
            && let Some(why) = chaos_clock::clock_missing()
        {
            return Some(why);
        }
        if self.disk() && !strace {
            return Some("needs strace (the fsync faults' wrapper)");
        }
        let needs_root = matches!(
            self,
            Kind::Partition
                | Kind::DiskFill
                | Kind::PartitionAgentRestartMinority
                | Kind::PartitionAgentRestartMajority
        );
        if needs_root && !root {
            return Some("needs root (network namespaces, tmpfs mounts)");
        }
        if self.fenced() && !ping {
            return Some("needs ping (iputils-ping) for the in-band fence");
        }
        None
    }
}

/// The kinds to run: `EDGEPLANE_CHAOS_KINDS` = `all` (also when unset: a
/// green CI means every kind ran), `default` (the seven kinds from before
/// quorum loss and fenced recovery were added, for replaying old seeds), or
/// a comma list of kind names.
fn kinds_from_env() -> anyhow::Result<Vec<Kind>> {
    let v = std::env::var("EDGEPLANE_CHAOS_KINDS").unwrap_or_default();
    let v = v.trim();
    if v == "default" {
        return Ok(Kind::DEFAULT.to_vec());
    }
    if v.is_empty() || v == "all" {
        return Ok(Kind::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let k = Kind::by_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "EDGEPLANE_CHAOS_KINDS: unknown kind {name:?} (kinds: {})",
                Kind::ALL.map(|k| k.name()).join(", ")
            )
        })?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    // Schedule order, whatever order they were named in.
    out.sort_by_key(|k| Kind::ALL.iter().position(|a| a == k));
    anyhow::ensure!(!out.is_empty(), "EDGEPLANE_CHAOS_KINDS names no kind");
    Ok(out)
}

/// Whether `strace` can be run (the disk faults need it).
fn have_strace() -> bool {
    std::process::Command::new("strace")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `ping` can be run (the in-band fence needs it).
fn have_ping() -> bool {
    std::process::Command::new("ping")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The host that runs in its own network namespace (the one partitions cut
/// off). host-1 starts as a voter; after promotions it may be the standby.
const ISOLATED: usize = 0;

/// The campaign site: 3 voters, a standby and a cold spare.
const HOSTS: usize = 5;

/// One fault of the schedule, drawn before the site is looked at (so a seed
/// always gives the same schedule; "the leader's host" is resolved at run time).
#[derive(Debug, Clone, Copy)]
struct Planned {
    kind: Kind,
    /// `None`: the host of the current etcd leader.
    host: Option<usize>,
    /// How long the host stays down / stopped before it is healed.
    down: Duration,
    /// Quiet time with traffic before the fault.
    lead_in: Duration,
}

/// How long a fault of `kind` lasts, drawn.
fn draw_down(rng: &mut Rng, kind: Kind) -> Duration {
    match kind {
        Kind::HostKill => rng.ms(2000, 5000),
        Kind::AgentKill => rng.ms(1000, 4000),
        Kind::EtcdKill => Duration::ZERO,
        Kind::HostStop => rng.ms(2000, 3000),
        Kind::Partition => rng.ms(3000, 8000),
        Kind::RegionCut => rng.ms(3000, 10000),
        Kind::DiskFill => rng.ms(3000, 6000),
        // Powered off: longer than the quorum-loss window (3 s), the fence
        // and the rebuild.
        Kind::QuorumLoss => rng.ms(10000, 15000),
        // Cut off: the window, a failing fence, the restart, the window
        // again and a rebuild all fit.
        Kind::PartitionAgentRestartMinority | Kind::PartitionAgentRestartMajority => {
            rng.ms(12000, 16000)
        }
        // Past the edge profile's 1 s failure detection and election timeout.
        Kind::DiskStallLeader => rng.ms(2500, 4000),
        // How long the campaign waits after the kill before it looks; the
        // agent does the rest.
        Kind::FsyncEio => rng.ms(2000, 4000),
        // Longer than the failure detection (1 s) and the quorum-loss
        // window (3 s): a jump that counted as a dead host would show.
        Kind::ClockJump => rng.ms(5000, 8000),
        // The per-fsync delay (50–200 ms) is drawn from this too.
        Kind::FsyncLatency => rng.ms(3000, 6000),
        // Longer than failure detection and the quorum-loss window.
        Kind::PartitionAsymmetric => rng.ms(4000, 8000),
        Kind::OverlapStandbyStopVoterKill => rng.ms(3000, 5000),
        Kind::BufferSegmentTorn => rng.ms(1000, 3000),
        // Not a down time: the damage is found by the scrub, bounded in
        // `faults::snapshot_copy_corrupt`.
        Kind::SnapshotCopyCorrupt => Duration::ZERO,
        // As a partition: past failure detection, the cut-off host removed.
        Kind::PartitionDuringDefrag => rng.ms(3000, 8000),
        // From the kill to powering the two on: the operator's command runs
        // meanwhile.
        Kind::QuorumLossManual => rng.ms(10000, 15000),
        // The window (3 s), two fences and a rebuild, all within the cut.
        Kind::QuorumLossOutOfBand => rng.ms(12000, 16000),
        // How long the site stays dark.
        Kind::PowerCut => rng.ms(1000, 4000),
    }
}

fn plan(rng: &mut Rng, faults: usize, hosts: usize, kinds: &[Kind]) -> Vec<Planned> {
    let mut out: Vec<Planned> = (0..faults)
        .map(|_| {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            // A third of the faults hit the leader's host (the coordinating agent).
            let host = if rng.below(3) == 0 {
                None
            } else {
                Some(rng.below(hosts as u64) as usize)
            };
            let down = draw_down(rng, kind);
            let lead_in = rng.ms(500, 1500);
            Planned {
                kind,
                host,
                down,
                lead_in,
            }
        })
        .collect();
    // Every kind at least once when there are enough faults: a kind the
    // draw left out takes the place of a fault whose kind is drawn more than
    // once (a schedule that already has every kind is unchanged, so long
    // runs keep their seeds' schedules).
    for k in kinds {
        if out.len() < kinds.len() || out.iter().any(|p| p.kind == *k) {
            continue;
        }
        let dup: Vec<usize> = (0..out.len())
            .filter(|&i| out.iter().filter(|p| p.kind == out[i].kind).count() > 1)
            .collect();
        if dup.is_empty() {
            break;
        }
        let i = dup[rng.below(dup.len() as u64) as usize];
        out[i].kind = *k;
        out[i].down = draw_down(rng, *k);
    }
    out
}

fn opts(url: &str) -> ConnectOptions {
    edgeplane::sim::certs::etcd_options(url)
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_secs(1))
        .with_require_leader(true)
}

async fn connect(url: &str) -> Option<Client> {
    tokio::time::timeout(OP_TIMEOUT, Client::connect([url], Some(opts(url))))
        .await
        .ok()?
        .ok()
}

// ---------------------------------------------------------------------------
// Background watchers: voters and leaders.

/// Polls the member list (every 50 ms) and every member's Status (every
/// 100 ms) for the whole campaign.
struct Watch {
    stop: Arc<AtomicBool>,
    max_voters: Arc<AtomicUsize>,
    /// Polls that saw more than 3 voters.
    over_voters: Arc<AtomicU64>,
    /// Split-brain evidence, described.
    split: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watch {
    fn start(urls: Vec<String>, voters: usize) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let max_voters = Arc::new(AtomicUsize::new(0));
        let over_voters = Arc::new(AtomicU64::new(0));
        let split = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        {
            let (s, m, o, urls) = (
                stop.clone(),
                max_voters.clone(),
                over_voters.clone(),
                urls.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !s.load(Ordering::Relaxed) {
                    if let Some(ms) = sim::member_list(&urls).await {
                        let v = ms.iter().filter(|m| !m.is_learner).count();
                        m.fetch_max(v, Ordering::Relaxed);
                        if v > voters {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        {
            let (s, sp) = (stop.clone(), split.clone());
            tasks.push(tokio::spawn(async move {
                // Not checked: one leader per raft term. etcd's Status reports
                // the term of the last *applied* entry beside the current
                // leader, so a member replaying old entries (a new standby
                // catching up) pairs an old term with today's leader. The
                // consequences of two leaders (lost or conflicting writes) are
                // what the write and counter checkers look for.
                while !s.load(Ordering::Relaxed) {
                    let mut set = tokio::task::JoinSet::new();
                    for (i, url) in urls.iter().enumerate() {
                        let url = url.clone();
                        set.spawn(async move { (i, status(&url).await) });
                    }
                    let mut seen = Vec::new();
                    while let Some(r) = set.join_next().await {
                        if let Ok((i, Some(st))) = r {
                            seen.push((i, st));
                        }
                    }
                    let clusters: HashSet<u64> = seen
                        .iter()
                        .filter(|(_, st)| st.proves_leader())
                        .map(|(_, st)| st.cluster)
                        .collect();
                    let mut events = Vec::new();
                    if clusters.len() > 1 {
                        events.push(format!(
                            "members report leaders in {} clusters at once: {seen:?}",
                            clusters.len()
                        ));
                    }
                    if !events.is_empty()
                        && let Ok(mut v) = sp.lock()
                    {
                        v.extend(events);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        Watch {
            stop,
            max_voters,
            over_voters,
            split,
            tasks,
        }
    }

    fn split_events(&self) -> Vec<String> {
        self.split.lock().map(|v| v.clone()).unwrap_or_default()
    }

    async fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // `member` and `term` are read through Debug in violation messages.
pub(crate) struct Status {
    pub(crate) cluster: u64,
    member: u64,
    leader: u64,
    term: u64,
    is_learner: bool,
}

impl Status {
    /// Whether this answer proves its cluster has a working leader: the
    /// leader itself, or a voter following it. A learner never campaigns
    /// and keeps naming the last leader it heard of after that leader is
    /// gone (a standby left running beside a rebuilt cluster did, and was
    /// counted as a second live cluster).
    pub(crate) fn proves_leader(&self) -> bool {
        self.leader != 0 && (self.leader == self.member || !self.is_learner)
    }

    /// Whether this member says it is the leader itself. A follower's word
    /// can be stale: a member resumed after a pause names the leader it
    /// last heard of until its election timeout.
    pub(crate) fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member
    }
}

pub(crate) async fn status(url: &str) -> Option<Status> {
    let o = edgeplane::sim::certs::etcd_options(url)
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_millis(500));
    let fut = async {
        let mut c = Client::connect([url], Some(o)).await.ok()?;
        let st = c.status().await.ok()?;
        Some(Status {
            cluster: st.header().map(|h| h.cluster_id()).unwrap_or(0),
            member: st.header().map(|h| h.member_id()).unwrap_or(0),
            leader: st.leader(),
            term: st.raft_term(),
            is_learner: st.is_learner(),
        })
    };
    tokio::time::timeout(Duration::from_millis(600), fut)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------
// Read-modify-write workload.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Sent, no answer yet.
    Pending,
    /// etcd acknowledged the transaction and its compare held: applied.
    Acked,
    /// etcd answered that the compare failed: not applied.
    Refused,
    /// No answer (timeout or error): may or may not have been applied.
    Unknown,
}

#[derive(Debug, Default)]
struct RmwLog {
    /// Op id -> (counter, outcome).
    ops: Mutex<HashMap<u64, (usize, Outcome)>>,
    next: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl RmwLog {
    fn set(&self, id: u64, counter: usize, o: Outcome) {
        if let Ok(mut m) = self.ops.lock() {
            m.insert(id, (counter, o));
        }
    }

    fn violation(&self, v: String) {
        if let Ok(mut m) = self.violations.lock() {
            m.push(v);
        }
    }

    fn snapshot(&self) -> HashMap<u64, (usize, Outcome)> {
        self.ops.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count(&self, o: Outcome) -> usize {
        self.snapshot().values().filter(|(_, x)| *x == o).count()
    }
}

fn counter_key(k: usize) -> String {
    format!("chaos/rmw/c/{k}")
}

fn marker_prefix(k: usize) -> String {
    format!("chaos/rmw/m/{k}/")
}

/// Remembers the highest revision a client saw; a lower one is a violation.
struct RevisionGuard {
    who: String,
    max: i64,
}

impl RevisionGuard {
    fn see(&mut self, rev: i64, log: &RmwLog, what: &str) {
        if rev < self.max {
            log.violation(format!(
                "{}: revision went backwards on {what}: {rev} after {}",
                self.who, self.max
            ));
        }
        self.max = self.max.max(rev);
    }
}

/// One read-modify-write client: read a counter, then increment it only if
/// nobody changed it since (compare mod_revision), with its marker.
fn start_rmw(
    client: usize,
    urls: Vec<String>,
    log: Arc<RmwLog>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = Rng(seed ^ (client as u64 + 1).wrapping_mul(0x1234_5678_9abc));
        let mut clients: Vec<Option<Client>> = vec![None; urls.len()];
        let mut member = client % urls.len();
        let mut guard = RevisionGuard {
            who: format!("rmw client {client}"),
            max: 0,
        };
        while !stop.load(Ordering::Relaxed) {
            let i = member % urls.len();
            if clients[i].is_none() {
                clients[i] = connect(&urls[i]).await;
            }
            let Some(c) = clients[i].as_mut() else {
                member += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let k = rng.below(COUNTERS as u64) as usize;
            let key = counter_key(k);
            // Read (linearizable).
            let got = match tokio::time::timeout(OP_TIMEOUT, c.get(key.as_str(), None)).await {
                Ok(Ok(r)) => r,
                _ => {
                    member += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if let Some(h) = got.header() {
                guard.see(h.revision(), &log, "get");
            }
            let (value, mod_rev) = match got.kvs().first() {
                Some(kv) => (
                    kv.value_str()
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    kv.mod_revision(),
                ),
                None => (0, 0),
            };
            // Modify-write.
            let id = log.next.fetch_add(1, Ordering::Relaxed);
            log.set(id, k, Outcome::Pending);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    mod_rev,
                )])
                .and_then([
                    TxnOp::put(key.as_str(), (value + 1).to_string(), None),
                    TxnOp::put(
                        format!("{}{id:010}", marker_prefix(k)),
                        client.to_string(),
                        None,
                    ),
                ]);
            match tokio::time::timeout(OP_TIMEOUT, c.txn(txn)).await {
                Ok(Ok(r)) => {
                    if let Some(h) = r.header() {
                        guard.see(h.revision(), &log, "txn");
                    }
                    let o = if r.succeeded() {
                        Outcome::Acked
                    } else {
                        Outcome::Refused
                    };
                    log.set(id, k, o);
                }
                _ => {
                    log.set(id, k, Outcome::Unknown);
                    member += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

/// Checks the counters against the log; returns violations and, per outcome,
/// how many ops have a marker.
async fn check_rmw(urls: &[String], log: &RmwLog) -> anyhow::Result<(Vec<String>, usize)> {
    let before = log.snapshot();
    let mut last_err = None;
    for url in urls {
        let Some(mut c) = connect(url).await else {
            continue;
        };
        // Counters and marker counts at one revision.
        let mut ops = Vec::new();
        for k in 0..COUNTERS {
            ops.push(TxnOp::get(counter_key(k), None));
            ops.push(TxnOp::get(
                marker_prefix(k),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ));
        }
        let r = match tokio::time::timeout(Duration::from_secs(5), c.txn(Txn::new().and_then(ops)))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                last_err = Some(e.to_string());
                continue;
            }
            Err(_) => {
                last_err = Some("timeout".into());
                continue;
            }
        };
        let mut violations = Vec::new();
        let resp = r.op_responses();
        let mut markers_total = 0usize;
        for k in 0..COUNTERS {
            let (
                Some(etcd_client::TxnOpResponse::Get(cv)),
                Some(etcd_client::TxnOpResponse::Get(mc)),
            ) = (resp.get(2 * k), resp.get(2 * k + 1))
            else {
                anyhow::bail!("unexpected txn response shape");
            };
            let counter = cv
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            if counter != mc.count() {
                violations.push(format!(
                    "counter {k} is {counter} but {} increments were applied (lost or phantom update)",
                    mc.count()
                ));
            }
        }
        // Markers by id.
        let mut present: HashSet<u64> = HashSet::new();
        for k in 0..COUNTERS {
            let got = tokio::time::timeout(
                Duration::from_secs(5),
                c.get(
                    marker_prefix(k),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("marker read timed out"))??;
            for kv in got.kvs() {
                if let Some(id) = kv
                    .key_str()
                    .ok()
                    .and_then(|s| s.rsplit('/').next())
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    present.insert(id);
                    markers_total += 1;
                }
            }
        }
        let after = log.snapshot();
        for (id, (k, o)) in &before {
            if *o == Outcome::Acked && !present.contains(id) {
                violations.push(format!(
                    "acknowledged increment {id} of counter {k} has no marker (lost update)"
                ));
            }
        }
        for id in &present {
            match after.get(id) {
                Some((_, Outcome::Refused)) => violations.push(format!(
                    "increment {id} was refused by etcd but its marker is present"
                )),
                None => violations.push(format!("marker {id} for an increment never sent")),
                _ => {}
            }
        }
        return Ok((violations, markers_total));
    }
    anyhow::bail!(
        "no member answered the counter check: {}",
        last_err.unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------
// The site.

/// The metrics side of the site: the region, its forwarder, the scrape
/// target, and the buffers' tmpfs mounts (root only).
struct MetricsRig {
    region: LocalPrometheus,
    _forwarder: cm::Forwarder,
    probe: cm::ProbeTarget,
    /// By host index; empty without root.
    tmpfs: Vec<cm::Tmpfs>,
}

/// The `[recovery]` section of a campaign that runs fenced kinds: policy
/// `fenced` with the campaign's fence ([`faults::FENCE_SCRIPT`]: in band,
/// so it fails across a partition, except in the out-of-band kind), a 3 s
/// quorum-loss window.
const FENCED_TOML: &str = "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/fence-campaign.sh\", \"{host}\"]\nquorum_loss_window = \"3s\"\n";

async fn bootstrap(
    root: bool,
    fenced: bool,
    disk: bool,
    clock: bool,
    lazy: bool,
) -> anyhow::Result<(LocalSite, MetricsRig)> {
    let region = LocalPrometheus::start(Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("could not start the region's Prometheus: {e}"))?;
    let forwarder = cm::Forwarder::start(region.port()).await?;
    let probe = cm::ProbeTarget::start().await?;
    // 5 hosts (3 voters, a standby, a spare): after a quorum loss the 3
    // survivors are 3 of 5 votes, so the fenced rebuild runs (with 4 hosts
    // the 2 survivors would be 2 of 4 and wait, and the campaign would never
    // reach the rebuild).
    let mut spec = SiteSpec::new(HOSTS, 3, edgeplane_bin());
    spec.extra_toml = cm::site_toml(probe.port, forwarder.port);
    // Every snapshot file verified again every 3 s, for the rotten-copy
    // fault (`faults::snapshot_copy_corrupt`).
    spec.extra_toml
        .push_str("\n[snapshots]\nscrub_interval = \"3s\"\n");
    // Defragmentation is checked every second but never due, except
    // during the defrag fault (`faults::partition_during_defrag`).
    spec.extra_toml.push_str(&format!(
        "\n[defrag]\nfree_ratio = 0.3\ncheck_interval = \"1s\"\n{}\n",
        faults::DEFRAG_NEVER
    ));
    if fenced {
        spec.extra_toml.push_str(FENCED_TOML);
    }
    if root {
        spec.isolated_host = Some(ISOLATED);
    }
    spec.disk_faults = disk;
    spec.faketime = clock;
    if lazy {
        // Every host's state, snapshots, buffer and etcd data on a disk
        // that drops unsynced writes at a power cut.
        spec.lazy_disk = Some(crate::power_cut::lazyfs_bin());
    }
    if root {
        spec.host_gids = Some(faults::HOST_GID_BASE);
    }
    // Kept on disk so a failed campaign leaves its logs; removed on success.
    let mut site = LocalSite::create(spec, true)?;
    faults::write_fence_script(&site.root)?;
    if root && faults::have_nft() {
        faults::prepare(&site)?;
    }
    let mut tmpfs = Vec::new();
    if root {
        // Under the lazy disk when there is one (it passes the tmpfs's
        // ENOSPC on).
        for i in 0..site.hosts.len() {
            tmpfs.push(cm::Tmpfs::mount(
                &site.backing_store(i).join("buffer"),
                cm::TMPFS_SIZE,
            )?);
        }
    }
    let rig = MetricsRig {
        region,
        _forwarder: forwarder,
        probe,
        tmpfs,
    };
    for i in 0..HOSTS {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(1, HANG).await,
        "site did not bootstrap; logs in {}",
        site.root.display()
    );
    Ok((site, rig))
}

/// Moves etcd leadership to host `to` (a voter); whether it leads afterwards.
async fn move_leader_to(site: &LocalSite, to: usize) -> bool {
    let Some(leader) = site.leader_host().await else {
        return false;
    };
    if leader == to {
        return true;
    }
    let Some((id, _, false)) = sim::member_status(&site.hosts[to].client_url).await else {
        return false;
    };
    let Some(mut c) = connect(&site.hosts[leader].client_url).await else {
        return false;
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(3), c.move_leader(id)).await,
        Ok(Ok(_))
    ) {
        return false;
    }
    for _ in 0..30 {
        if site.leader_host().await == Some(to) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Reads every agent's status into the shed book; returns the hosts that
/// did not answer.
async fn observe_all(site: &LocalSite, book: &mut cm::ShedBook) -> Vec<usize> {
    let mut silent = Vec::new();
    for i in 0..site.hosts.len() {
        match site.agent_status(i).await {
            Some(doc) => book.observe(&site.hosts[i].name, &doc),
            None => silent.push(i),
        }
    }
    silent
}

/// Bound on the metrics backlog drain after a fault heals.
const DRAIN_BOUND: Duration = Duration::from_secs(90);

/// Waits until no agent's buffer holds a sample stamped at or before
/// `upto_ms` (everything older was delivered, or shed and counted), reading
/// the counters on the way; returns when that held.
async fn wait_drained(site: &LocalSite, book: &mut cm::ShedBook, upto_ms: i64) -> Option<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < DRAIN_BOUND {
        let mut pending = false;
        for i in 0..site.hosts.len() {
            match site.agent_status(i).await {
                Some(doc) => {
                    book.observe(&site.hosts[i].name, &doc);
                    pending |= doc
                        .pointer("/metrics/classes")
                        .and_then(|c| c.as_array())
                        .is_none_or(|cs| {
                            cs.iter().any(|c| {
                                c.get("oldest_ms")
                                    .and_then(|o| o.as_i64())
                                    .is_some_and(|o| o <= upto_ms)
                            })
                        });
                }
                None => pending = true,
            }
        }
        if !pending {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Full strength as the campaign means it: 3 voters and 1 standby in the
/// member list, every member answering Status with a leader, every agent
/// answering `/status`. Returns the member ids (sorted) when it holds.
async fn full_strength_members(site: &LocalSite) -> Option<Vec<u64>> {
    let members = sim::member_list(&site.client_urls()).await?;
    let (v, l) = site.roles().await?;
    if v.len() != 3 || l.len() != 1 || members.len() != 4 {
        return None;
    }
    for i in v.iter().chain(l.iter()) {
        match sim::member_status(&site.hosts[*i].client_url).await {
            Some((_, leader, _)) if leader != 0 => {}
            _ => return None,
        }
    }
    for i in 0..site.hosts.len() {
        site.agent_status(i).await?;
    }
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    Some(ids)
}

/// How long full strength must hold, with the same members, to count: a
/// host that resumes (SIGCONT) just before the agents act on its absence is
/// briefly "at full strength" and then removed.
const STABLE: Duration = Duration::from_secs(2);

/// Waits up to `bound` for full strength that holds for [`STABLE`], while
/// powering on again any host a fence powers off meanwhile (each at most
/// once). A host in `taken_down` (this fault
/// powered it off or cut it off) may be fenced as it returns: the link
/// heals an instant before the powered-off hosts boot, the returning cut
/// host completes a majority of votes, and the survivors fence a lost voter
/// that is on its way back (then see the old cluster quorate again and do
/// not rebuild). That costs the site a host until someone powers it on, and
/// loses nothing. Any other host fenced is a violation. Returns when full
/// strength began, and each fenced host with whether it was outside
/// `taken_down`.
async fn wait_full_strength(
    site: &mut LocalSite,
    book: &mut cm::ShedBook,
    bound: Duration,
    taken_down: &[usize],
) -> anyhow::Result<(Option<Instant>, Vec<(usize, bool)>)> {
    let t0 = Instant::now();
    let mut fenced: Vec<(usize, bool)> = Vec::new();
    let mut streak: Option<(Instant, Vec<u64>)> = None;
    while t0.elapsed() < bound + STABLE {
        for i in 0..site.hosts.len() {
            if site.powered_off(i) && !fenced.iter().any(|(f, _)| *f == i) {
                fenced.push((i, !taken_down.contains(&i)));
                book.new_lifetime(&site.hosts[i].name);
                site.power_on(i)?;
                streak = None;
            }
        }
        let now = Instant::now();
        match (full_strength_members(site).await, &streak) {
            (Some(ids), Some((since, prev))) if *prev == ids => {
                if now.duration_since(*since) >= STABLE {
                    return Ok((Some(*since), fenced));
                }
            }
            (Some(ids), _) if t0.elapsed() < bound => streak = Some((now, ids)),
            _ => streak = None,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((None, fenced))
}

/// Writer::lost with retries (a read can land on a member mid-election).
async fn lost(w: &Writer, urls: &[String]) -> anyhow::Result<usize> {
    let mut last = None;
    for _ in 0..10 {
        match w.lost(urls).await {
            Ok(n) => return Ok(n),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("lost check failed")))
}

#[derive(Debug, Clone)]
struct Record {
    n: usize,
    kind: Kind,
    host: String,
    role: String,
    down_s: f64,
    writable_s: Option<f64>,
    full_strength_s: Option<f64>,
    full_strength_after_heal_s: Option<f64>,
    acked: usize,
    lost: usize,
    /// From the heal to no buffered sample older than the heal.
    drain_s: Option<f64>,
    /// Samples served between the previous heal and this one, absent from
    /// the region (before the shed counts).
    samples_missing: u64,
    /// Samples counted as shed or not buffered meanwhile, all hosts.
    samples_shed: u64,
    note: String,
}

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fmt_s(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

async fn campaign(
    seed: u64,
    faults: usize,
    deadline: Option<Duration>,
    kinds: &[Kind],
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let run = edgeplane::bench::Run::start("campaign");
    let mut rng = Rng(seed);
    let schedule = plan(&mut rng, faults, HOSTS, kinds);
    // Partitions and a full disk need network namespaces and tmpfs mounts;
    // the in-band fence needs ping.
    let root = nix::unistd::Uid::effective().is_root();
    let ping = have_ping();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let fenced = kinds.iter().any(|k| k.fenced());
    let strace = have_strace();
    let disk = strace && kinds.iter().any(|k| k.disk());
    let clock =
        kinds.contains(&Kind::ClockJump) && Kind::ClockJump.missing(root, ping, strace).is_none();
    let lazy =
        kinds.contains(&Kind::PowerCut) && Kind::PowerCut.missing(root, ping, strace).is_none();
    let (mut site, rig) = bootstrap(root, fenced, disk, clock, lazy).await?;
    let campaign_from_ms = cm::now_ms();
    let urls = site.client_urls();
    eprintln!(
        "chaos: seed {seed}, {faults} faults, site in {}",
        site.root.display()
    );
    let mut watch = Watch::start(urls.clone(), 3);
    let rmw_log = Arc::new(RmwLog::default());
    let rmw_stop = Arc::new(AtomicBool::new(false));
    let rmw_tasks: Vec<_> = (0..RMW_CLIENTS)
        .map(|c| start_rmw(c, urls.clone(), rmw_log.clone(), rmw_stop.clone(), seed))
        .collect();

    let mut violations: Vec<String> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut segments: Vec<(Kind, Writer)> = Vec::new();
    // Returning hosts a fence powered off after the heal (see
    // `wait_full_strength`).
    let mut fenced_after_heal = 0usize;
    let mut aborted = false;
    let mut book = cm::ShedBook::default();
    // Scrapes in flight inside an agent at its SIGKILL: (host, from, to) ms.
    let mut kill_windows: cm::Windows = Vec::new();
    let mut skipped: HashMap<Kind, usize> = HashMap::new();
    let mut skip_reason: HashMap<Kind, &'static str> = HashMap::new();
    // Per fault: the recorded workload (checked at the fault's end, and
    // again at the end of the campaign).
    let mut workloads: Vec<(usize, Kind, Instant, Workload)> = Vec::new();
    let mut verdicts: HashMap<usize, serde_json::Value> = HashMap::new();
    let mut window_from_ms = campaign_from_ms;
    let mut shed_before = 0u64;
    let region_pid = rig
        .region
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the region's Prometheus is not running"))?
        as i32;

    for (n, f) in schedule.iter().enumerate() {
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            eprintln!("chaos: time budget spent after {n} faults");
            break;
        }
        if let Some(why) = f.kind.missing(root, ping, strace) {
            if skipped.get(&f.kind).copied().unwrap_or(0) == 0 {
                eprintln!("chaos: SKIPPED {}: {why}", f.kind.name());
            }
            *skipped.entry(f.kind).or_default() += 1;
            skip_reason.insert(f.kind, why);
            continue;
        }
        // A host a fence powered off outside a quorum loss: a fence of a
        // host the campaign did not take down. Power it on to go on.
        for i in 0..site.hosts.len() {
            if site.powered_off(i) {
                violations.push(format!(
                    "before fault {n}: {} was powered off by a fence (see the agents' logs)",
                    site.hosts[i].name
                ));
                book.new_lifetime(&site.hosts[i].name);
                site.power_on(i)?;
            }
        }
        // An agent that exited on its own (a crash) is a violation; it is
        // restarted so the campaign can go on.
        for i in 0..site.hosts.len() {
            if site.hosts[i].agent_pid().is_none() {
                violations.push(format!(
                    "before fault {n}: the agent of {} exited on its own (see its agent.log)",
                    site.hosts[i].name
                ));
                book.new_lifetime(&site.hosts[i].name);
                site.start_agent(i)?;
            }
        }
        let mut writer = Writer::start(urls.clone(), &format!("chaos/w{n:04}"));
        let mut work = Workload::start(workload::Spec {
            urls: urls.clone(),
            prefix: format!("chaos/lin/f{n:04}/"),
            clients: LIN_CLIENTS,
            keys: LIN_KEYS,
            op_timeout: OP_TIMEOUT,
            pause: Duration::from_millis(20),
            seed: seed ^ (n as u64).wrapping_mul(0x9e37_79b9),
        });
        tokio::time::sleep(f.lead_in).await;
        // A partition always cuts off the isolated host; "the leader's host"
        // then means: make it the leader first (when it is a voter).
        let mut moved = false;
        if f.kind == Kind::Partition && f.host.is_none() {
            moved = move_leader_to(&site, ISOLATED).await;
        }
        let mut roles = None;
        for _ in 0..10 {
            roles = site.roles().await;
            if roles.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = site.leader_host().await;
        let target = match f.kind {
            Kind::Partition | Kind::PartitionAgentRestartMinority => ISOLATED,
            Kind::PartitionAsymmetric | Kind::PartitionDuringDefrag => ISOLATED,
            Kind::QuorumLossOutOfBand => ISOLATED,
            // Two voters: the drawn host (or the leader's) and another.
            Kind::QuorumLoss => match (&roles, f.host.or(leader)) {
                (Some((v, _)), Some(h)) if v.contains(&h) => h,
                (Some((v, _)), _) => v.first().copied().unwrap_or(0),
                _ => 0,
            },
            // A host on the majority side: the drawn one, or the leader's.
            Kind::PartitionAgentRestartMajority => match f.host.or(leader) {
                Some(h) if h != ISOLATED => h,
                _ => 1 + f.down.as_millis() as usize % (site.hosts.len() - 1),
            },
            Kind::DiskStallLeader => leader.or(f.host).unwrap_or(0),
            // A host that runs etcd (a spare has none: an armed failure
            // would strike its first start, in some later fault).
            Kind::FsyncEio => match (&roles, f.host.or(leader)) {
                (Some((v, l)), Some(h)) if v.contains(&h) || l.contains(&h) => h,
                (Some((v, l)), _) => l.first().or(v.first()).copied().unwrap_or(0),
                (None, h) => h.unwrap_or(0),
            },
            // A voter: the drawn one, else the leader.
            Kind::FsyncLatency => match (&roles, f.host) {
                (Some((v, _)), Some(h)) if v.contains(&h) => h,
                _ => leader.or(f.host).unwrap_or(0),
            },
            _ => f.host.or(leader).unwrap_or(0),
        };
        let role = match &roles {
            Some((v, _)) if v.contains(&target) && Some(target) == leader => "leader",
            Some((v, _)) if v.contains(&target) => "voter",
            Some((_, l)) if l.contains(&target) => "standby",
            _ => "unknown",
        };
        let host = site.hosts[target].name.clone();
        // Something outside the test deleting the site's files (a cleanup of
        // the temp dir) looks like an agent that never comes back: say so.
        let missing: Vec<String> = site
            .hosts
            .iter()
            .filter(|h| !h.config_path.exists())
            .map(|h| h.config_path.display().to_string())
            .collect();
        if !missing.is_empty() {
            violations.push(format!(
                "harness: before fault {n}, config files were deleted from outside the test: {missing:?} (set TMPDIR to a private directory)"
            ));
            aborted = true;
            writer.stop().await;
            segments.push((f.kind, writer));
            break;
        }
        let _ = observe_all(&site, &mut book).await;
        let t0 = Instant::now();
        // The instant the fault took the hosts down (lost writes are timed
        // from it).
        let mut fault_at = t0;
        let mut note = String::new();
        // Hosts this fault powered off or cut off: a fence may still power
        // one of them off as it returns (below).
        let mut taken_down: Vec<usize> = Vec::new();
        // A quorum loss the survivors must end with a rebuild: the newest
        // epoch before it (checked once the site is whole again).
        let mut must_rebuild_past: Option<u64> = None;
        match f.kind {
            Kind::QuorumLoss => {
                let voters = roles.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
                let other = voters
                    .iter()
                    .copied()
                    .filter(|v| *v != target)
                    .nth(f.down.as_millis() as usize % 2)
                    .or_else(|| voters.iter().copied().find(|v| *v != target));
                let victims: Vec<usize> = std::iter::once(target).chain(other).collect();
                let names: Vec<String> = victims
                    .iter()
                    .map(|v| site.hosts[*v].name.clone())
                    .collect();
                let epochs_before = epochs(&site).await;
                fault_at = Instant::now();
                for v in &victims {
                    faults::kill(&mut site, *v, Kill::Host, &mut kill_windows, &mut book);
                }
                tokio::time::sleep(f.down).await;
                let fenced_off: Vec<String> = victims
                    .iter()
                    .filter(|v| site.powered_off(**v))
                    .map(|v| site.hosts[*v].name.clone())
                    .collect();
                let epochs_after = epochs(&site).await;
                for v in &victims {
                    site.power_on(*v)?;
                }
                taken_down = victims.clone();
                // Two of three voters down, the fence in band and working:
                // the survivors (a voter, the standby, the spare) hold 3 of
                // 5 votes and must rebuild; waiting would be a silent outage.
                if victims.len() == 2 && victims.iter().all(|v| voters.contains(v)) {
                    must_rebuild_past = epochs_before.iter().flatten().copied().max();
                }
                note = format!(
                    "powered off {}; fenced: {}; epochs {epochs_before:?} -> {epochs_after:?}",
                    names.join(" + "),
                    if fenced_off.is_empty() {
                        "none".to_string()
                    } else {
                        fenced_off.join(", ")
                    }
                );
            }
            Kind::PartitionAgentRestartMinority | Kind::PartitionAgentRestartMajority => {
                site.set_link(false)?;
                let cut = Instant::now();
                // Long enough for the cut-off side to see the loss (failure
                // detection 1 s, quorum-loss window 3 s) and try to fence.
                tokio::time::sleep(Duration::from_millis(4000)).await;
                fault_at = Instant::now();
                faults::kill(&mut site, target, Kill::Agent, &mut kill_windows, &mut book);
                tokio::time::sleep(Duration::from_millis(500)).await;
                site.start_agent(target)?;
                tokio::time::sleep(f.down.saturating_sub(cut.elapsed())).await;
                let epochs_cut = epochs(&site).await;
                site.set_link(true)?;
                note = format!(
                    "{} ({role}) cut off; agent of {host} restarted 4 s into the cut; epochs before the heal {epochs_cut:?}",
                    site.hosts[ISOLATED].name
                );
            }
            Kind::PartitionAsymmetric => match faults::partition_asymmetric(&site, f.down).await {
                Ok(how) => note = how,
                Err(e) => violations.push(format!("fault {n}: {e}")),
            },
            Kind::OverlapStandbyStopVoterKill => {
                let (how, at) = faults::standby_stop_voter_kill(
                    &mut site,
                    roles.as_ref(),
                    target,
                    f.down,
                    &mut kill_windows,
                    &mut book,
                )
                .await?;
                (note, fault_at) = (how, at);
            }
            Kind::PartitionDuringDefrag => {
                let (how, at) =
                    faults::partition_during_defrag(&mut site, f.down, n, &mut violations).await?;
                (note, fault_at) = (how, at);
            }
            Kind::SnapshotCopyCorrupt => {
                let (how, at) =
                    faults::snapshot_copy_corrupt(&site, target, n, &mut violations).await?;
                (note, fault_at) = (how, at);
            }
            Kind::BufferSegmentTorn => {
                let (how, at) = faults::buffer_segment_torn(
                    &mut site,
                    target,
                    f.down,
                    n,
                    &mut kill_windows,
                    &mut book,
                    &mut violations,
                )
                .await?;
                (note, fault_at) = (how, at);
            }
            Kind::PowerCut => {
                let (how, at) =
                    faults::power_cut(&mut site, f.down, &mut kill_windows, &mut book).await?;
                (note, fault_at) = (how, at);
            }
            Kind::QuorumLossOutOfBand => {
                let (how, at, lost) = faults::quorum_loss_out_of_band(
                    &mut site,
                    roles.as_ref(),
                    f.host.or(leader).unwrap_or(1),
                    f.down,
                    n,
                    &mut kill_windows,
                    &mut book,
                    &mut violations,
                )
                .await?;
                (note, fault_at, taken_down) = (how, at, lost);
            }
            Kind::QuorumLossManual => {
                let (how, at) = faults::quorum_loss_manual(
                    &mut site,
                    roles.as_ref(),
                    target,
                    f.down,
                    n,
                    &mut kill_windows,
                    &mut book,
                    &mut violations,
                )
                .await?;
                (note, fault_at) = (how, at);
            }
            Kind::HostKill => {
                faults::kill(&mut site, target, Kill::Host, &mut kill_windows, &mut book);
                tokio::time::sleep(f.down).await;
                site.start_agent(target)?;
            }
            Kind::AgentKill => {
                faults::kill(&mut site, target, Kill::Agent, &mut kill_windows, &mut book);
                tokio::time::sleep(f.down).await;
                site.start_agent(target)?;
            }
            Kind::EtcdKill => {
                tokio::task::block_in_place(|| site.kill_etcd(target));
            }
            Kind::DiskStallLeader => {
                fault_at = Instant::now();
                match site.stall_fsync(target, true) {
                    Ok(tracer) => {
                        tokio::time::sleep(f.down).await;
                        if let Err(e) = site.stall_fsync(target, false) {
                            // etcd gone meanwhile: its tracer went with it.
                            note = format!("released: {e}");
                        }
                        sim::signal(tracer, Signal::SIGCONT);
                        if note.is_empty() {
                            note = format!("fsyncs stalled {} ms", f.down.as_millis());
                        }
                    }
                    Err(e) => {
                        violations.push(format!("fault {n}: stalling {host}'s fsyncs failed: {e}"))
                    }
                }
            }
            Kind::ClockJump | Kind::FsyncLatency => {
                fault_at = Instant::now();
                let out = if f.kind == Kind::ClockJump {
                    chaos_clock::clock_jump(&site, target, f.down).await
                } else {
                    chaos_clock::fsync_latency(&site, target, role, f.down).await
                };
                note = out.note;
                violations.extend(
                    out.violations
                        .into_iter()
                        .map(|v| format!("fault {n}: {v}")),
                );
            }
            // Odd down time: the EIO strikes the 40th fsync of a thread,
            // once etcd runs and serves again (mid-stream); even: its third,
            // while it starts.
            Kind::FsyncEio => match site
                .arm_fsync_eio(target, if eio_running(f.down) { 40 } else { 3 })
            {
                Ok(()) => {
                    let running = eio_running(f.down);
                    let last_exit = |doc: Option<serde_json::Value>| {
                        doc.and_then(|d| d.pointer("/etcd/last_exit")?.as_str().map(String::from))
                            .unwrap_or_default()
                    };
                    // An exit of an earlier fault is not this one's (its
                    // fatal line carries its own time stamp).
                    let before = last_exit(site.agent_status(target).await);
                    let died = |exit: &str| exit != before && exit.contains("input/output error");
                    fault_at = Instant::now();
                    tokio::task::block_in_place(|| site.kill_etcd(target));
                    tokio::time::sleep(f.down).await;
                    if let Err(e) = site.disarm_fsync_eio(target) {
                        violations.push(format!("fault {n}: disarming EIO on {host} failed: {e}"));
                    }
                    let mut exit = last_exit(site.agent_status(target).await);
                    // A running etcd reaches its 40th fsync with the load;
                    // one that has not by now is killed, so that the armed
                    // fault cannot strike during a later one.
                    let t = Instant::now();
                    while running && !died(&exit) {
                        if t.elapsed() > Duration::from_secs(15) {
                            tokio::task::block_in_place(|| site.kill_etcd(target));
                            note.push_str(
                                "no EIO within 15 s of the down time: etcd killed to disarm it; ",
                            );
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        exit = last_exit(site.agent_status(target).await);
                    }
                    let aside = std::fs::read_dir(&site.hosts[target].store)
                        .map(|rd| {
                            rd.filter_map(|e| e.ok())
                                .filter(|e| {
                                    e.file_name()
                                        .to_string_lossy()
                                        .starts_with("etcd.fsync-failed-")
                                })
                                .count()
                        })
                        .unwrap_or(0);
                    note.push_str(&format!(
                        "{}; etcd died on EIO: {}; data dirs set aside on {host} so far: {aside}",
                        if running {
                            "40th fsync of a thread (running etcd)"
                        } else {
                            "3rd fsync (starting etcd)"
                        },
                        died(&exit)
                    ));
                }
                Err(e) => violations.push(format!("fault {n}: arming EIO on {host} failed: {e}")),
            },
            Kind::HostStop => {
                // Continue exactly the processes that were stopped.
                let pids: Vec<i32> = [
                    site.hosts[target].agent_pid(),
                    site.hosts[target].etcd_pid(),
                ]
                .into_iter()
                .flatten()
                .collect();
                for &p in &pids {
                    sim::signal(p, Signal::SIGSTOP);
                }
                tokio::time::sleep(f.down).await;
                for &p in &pids {
                    sim::signal(p, Signal::SIGCONT);
                }
            }
            Kind::Partition => {
                site.set_link(false)?;
                tokio::time::sleep(f.down).await;
                site.set_link(true)?;
                if moved {
                    note = "leadership moved to it first".into();
                }
            }
            Kind::RegionCut => {
                sim::signal(region_pid, Signal::SIGSTOP);
                tokio::time::sleep(f.down).await;
                sim::signal(region_pid, Signal::SIGCONT);
            }
            Kind::DiskFill => {
                let pid_before = site.hosts[target].agent_pid();
                sim::signal(region_pid, Signal::SIGSTOP);
                // A backlog first (a disk that fills while the link is up
                // holds nothing to lose), and a burst of low-priority series
                // from the target, so the buffer keeps needing space.
                rig.probe.set_burst(Some((host.clone(), cm::BULK_SERIES)));
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fs = &rig.tmpfs[target];
                let filled = tokio::task::block_in_place(|| fs.fill());
                match &filled {
                    Ok((_, bytes)) => note = format!("ballast {} KiB", bytes >> 10),
                    Err(e) => violations.push(format!("fault {n}: filling the disk failed: {e}")),
                }
                // Half of them (even down time in ms): the agent also loses
                // power on the full disk and starts again on it.
                let restart = f.down.as_millis() % 2 == 0;
                if restart {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Some(doc) = site.agent_status(target).await {
                        book.observe(&host, &doc);
                    }
                    faults::kill(&mut site, target, Kill::Agent, &mut kill_windows, &mut book);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    site.start_agent(target)?;
                    note.push_str(", agent SIGKILLed and restarted on the full disk");
                }
                tokio::time::sleep(f.down).await;
                rig.probe.set_burst(None);
                if let Ok((p, _)) = &filled
                    && let Err(e) = std::fs::remove_file(p)
                {
                    violations.push(format!("fault {n}: freeing the disk failed: {e}"));
                }
                sim::signal(region_pid, Signal::SIGCONT);
                let pid_after = site.hosts[target].agent_pid();
                if pid_before.is_none()
                    || pid_after.is_none()
                    || (!restart && pid_after != pid_before)
                {
                    violations.push(format!(
                        "fault {n}: the agent of {host} did not survive its full disk (pid {pid_before:?} before, {pid_after:?} after)"
                    ));
                }
                // Its metrics pipeline runs (also after a start on the full disk).
                let mut running = false;
                for _ in 0..30 {
                    if site
                        .agent_status(target)
                        .await
                        .is_some_and(|d| d.get("metrics").is_some_and(|m| !m.is_null()))
                    {
                        running = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !running {
                    violations.push(format!(
                        "fault {n}: the metrics pipeline of {host} is not running after its disk was freed{}",
                        if restart { " (its agent had restarted on the full disk)" } else { "" }
                    ));
                }
            }
        }
        let healed = Instant::now();
        let healed_ms = cm::now_ms();
        // A fence of a host this fault did not take down.
        for i in 0..site.hosts.len() {
            if site.powered_off(i) {
                violations.push(format!(
                    "fault {n} ({} of {host}): {} was powered off by a fence",
                    f.kind.name(),
                    site.hosts[i].name
                ));
                book.new_lifetime(&site.hosts[i].name);
                site.power_on(i)?;
            }
        }
        let (full, mut refenced) =
            wait_full_strength(&mut site, &mut book, FULL_STRENGTH_BOUND, &taken_down).await?;
        if full.is_none() {
            violations.push(format!(
                "fault {n} ({} of {host}, {role}): no full strength within {}s of healing",
                f.kind.name(),
                FULL_STRENGTH_BOUND.as_secs()
            ));
            // Give it one more bound before giving up on the campaign.
            let (again, more) =
                wait_full_strength(&mut site, &mut book, FULL_STRENGTH_BOUND, &taken_down).await?;
            refenced.extend(more);
            aborted |= again.is_none();
        }
        if let Some(before) = must_rebuild_past {
            let now = epochs(&site).await;
            if !now.iter().flatten().any(|e| *e > before) {
                violations.push(format!(
                    "fault {n} ({} of {host}): quorum lost with a working fence and 3 of 5 votes on the survivors' side, and nobody rebuilt (epochs {now:?}, newest before {before})",
                    f.kind.name()
                ));
            }
        }
        for (i, wrongly) in &refenced {
            let name = &site.hosts[*i].name;
            if *wrongly {
                violations.push(format!(
                    "fault {n} ({} of {host}): {name} was powered off by a fence after the heal, and this fault had not taken it down",
                    f.kind.name()
                ));
            } else {
                // The fence is off-only: an operator powers the host on,
                // as `diag status` and the journal tell them to.
                note.push_str(&format!(
                    "; {name} fenced again as it returned (a rebuild decided as the link healed), powered on again"
                ));
                fenced_after_heal += 1;
            }
        }
        writer.stop().await;
        // The recorded workload: every key read once more, then checked.
        if work.finish(Duration::from_secs(20)).await.is_none() {
            violations.push(format!(
                "fault {n}: the workload's final read got no answer"
            ));
        }
        let verdict = check_workload(
            &work,
            fault_at,
            &format!("fault {n} ({} of {host}, {role})", f.kind.name()),
            &mut violations,
        );
        let mut lin_summary = verdict["summary"].as_str().unwrap_or_default().to_string();
        // A rebuild in this fault raised the revision and compacted there:
        // every watch that was below it must have been told "compacted"
        // and relisted, not resumed (decision 0004).
        if let Some(bumped) = rebuilt_revision(&site, window_from_ms).await {
            let relisted = check_relist(
                &work.watch_logs(),
                bumped,
                &format!("fault {n} ({} of {host})", f.kind.name()),
                &mut violations,
            );
            lin_summary.push_str(&format!(
                "; rebuilt at revision {bumped}: {relisted} watch streams relisted"
            ));
        }
        verdicts.insert(n, verdict);
        workloads.push((n, f.kind, fault_at, work));
        let writable = writer.ack_of_first_put_sent_after(t0).map(|t| t - t0);
        if writable.is_none() && !aborted {
            violations.push(format!(
                "fault {n} ({} of {host}): no write acknowledged after the fault",
                f.kind.name()
            ));
        }
        // Checkers.
        let seg_lost = match lost(&writer, &urls).await {
            Ok(x) => x,
            Err(e) => {
                violations.push(format!("fault {n}: lost-write check failed: {e}"));
                0
            }
        };
        if seg_lost > 0 {
            violations.push(format!(
                "fault {n} ({} of {host}, {role}): {seg_lost} acknowledged writes lost",
                f.kind.name()
            ));
        }
        // One older segment at random too (all of them at the end).
        if let Some((_, old)) = segments.get(rng.below(segments.len().max(1) as u64) as usize) {
            match lost(old, &urls).await {
                Ok(0) => {}
                Ok(x) => violations.push(format!(
                    "fault {n}: {x} acknowledged writes of an earlier segment lost"
                )),
                Err(e) => violations.push(format!("fault {n}: lost-write check failed: {e}")),
            }
        }
        match check_rmw(&urls, &rmw_log).await {
            Ok((v, _)) => violations.extend(v.into_iter().map(|v| format!("fault {n}: {v}"))),
            Err(e) => violations.push(format!("fault {n}: counter check failed: {e}")),
        }
        if let Ok(mut v) = rmw_log.violations.lock() {
            violations.extend(v.drain(..).map(|v| format!("fault {n}: {v}")));
        }
        let over = watch.over_voters.load(Ordering::Relaxed);
        if over > 0 {
            violations.push(format!(
                "fault {n}: more than 3 voters seen in {over} polls (max {})",
                watch.max_voters.load(Ordering::Relaxed)
            ));
            watch.over_voters.store(0, Ordering::Relaxed);
        }
        // Metrics: the backlog drains, then every sample served up to the
        // heal is in the region or counted.
        let drained = wait_drained(&site, &mut book, healed_ms).await;
        if drained.is_none() {
            violations.push(format!(
                "fault {n} ({} of {host}): metrics backlog from before the heal not drained within {}s",
                f.kind.name(),
                DRAIN_BOUND.as_secs()
            ));
        }
        let served = rig.probe.served();
        let (missing, shed_delta) = match cm::check_samples(
            &rig.region,
            &served,
            &kill_windows,
            &book,
            window_from_ms,
            healed_ms,
        )
        .await
        {
            Ok(c) => {
                if c.critical_lost_beyond_shed > 0 {
                    violations.push(format!(
                        "fault {n} ({} of {host}): {} critical samples served since the previous fault are missing from the region, not counted by the critical class's own ledger",
                        f.kind.name(),
                        c.critical_lost_beyond_shed
                    ));
                }
                if c.samples_lost_beyond_shed > 0 {
                    violations.push(format!(
                        "fault {n} ({} of {host}): {} samples ({} critical) served since the previous fault are missing from the region beyond the shed counts: {c:?}",
                        f.kind.name(),
                        c.samples_lost_beyond_shed,
                        c.critical_lost_beyond_shed
                    ));
                }
                let shed_now = book.total();
                let d = shed_now.saturating_sub(shed_before);
                shed_before = shed_now;
                (c.samples_missing_critical + c.samples_missing_low, d)
            }
            Err(e) => {
                violations.push(format!("fault {n}: samples check failed: {e}"));
                (0, 0)
            }
        };
        window_from_ms = healed_ms + 1;
        let split_now = watch.split_events().len();
        let rec = Record {
            n,
            kind: f.kind,
            host: host.clone(),
            role: role.to_string(),
            down_s: r3(f.down.as_secs_f64()),
            writable_s: writable.map(|d| r3(d.as_secs_f64())),
            full_strength_s: full.map(|t| r3((t - t0).as_secs_f64())),
            full_strength_after_heal_s: full.map(|t| r3((t - healed).as_secs_f64())),
            acked: writer.acked_count(),
            lost: seg_lost,
            drain_s: drained.map(|t| r3((t - healed).as_secs_f64())),
            samples_missing: missing,
            samples_shed: shed_delta,
            note,
        };
        eprintln!(
            "chaos: fault {n:>3} {:<16} {host} ({role:<7}) down {:.1}s  writable {}s  full strength {}s ({}s after heal)  drained {}s  acked {} lost {}  samples missing {} shed {}  split-brain events so far {split_now}  [{:.0}s] {}\n        checker: {lin_summary}",
            f.kind.name(),
            rec.down_s,
            fmt_s(rec.writable_s),
            fmt_s(rec.full_strength_s),
            fmt_s(rec.full_strength_after_heal_s),
            fmt_s(rec.drain_s),
            rec.acked,
            rec.lost,
            rec.samples_missing,
            rec.samples_shed,
            started.elapsed().as_secs_f64(),
            rec.note,
        );
        records.push(rec);
        segments.push((f.kind, writer));
        if aborted {
            violations.push(format!(
                "campaign aborted after fault {n}: the site did not return to full strength; logs in {}",
                site.root.display()
            ));
            break;
        }
    }

    // Final checks: stop the counters, then everything once more.
    rmw_stop.store(true, Ordering::Relaxed);
    for t in rmw_tasks {
        let _ = t.await;
    }
    // Every fault's recorded workload: its keys read once more (a later
    // fault may have lost them), checked again.
    let mut final_verdicts: HashMap<usize, serde_json::Value> = HashMap::new();
    for (n, _, fault_at, work) in &workloads {
        if work.final_read(Duration::from_secs(20)).await.is_none() {
            violations.push(format!(
                "final: fault {n}'s workload: the read of its keys got no answer"
            ));
        }
        let v = check_workload(
            work,
            *fault_at,
            &format!("final, fault {n}'s workload"),
            &mut violations,
        );
        final_verdicts.insert(*n, v);
    }
    let mut lost_by_kind: HashMap<Kind, usize> = HashMap::new();
    let mut acked_total = 0;
    let mut lost_total = 0;
    for (kind, w) in &segments {
        acked_total += w.acked_count();
        match lost(w, &urls).await {
            Ok(x) => {
                lost_total += x;
                *lost_by_kind.entry(*kind).or_default() += x;
            }
            Err(e) => violations.push(format!("final lost-write check failed: {e}")),
        }
    }
    if lost_total > 0 {
        violations.push(format!(
            "final check: {lost_total} acknowledged writes lost"
        ));
    }
    let mut markers = 0;
    match check_rmw(&urls, &rmw_log).await {
        Ok((v, m)) => {
            markers = m;
            violations.extend(v.into_iter().map(|v| format!("final: {v}")));
        }
        Err(e) => violations.push(format!("final counter check failed: {e}")),
    }
    if let Ok(mut v) = rmw_log.violations.lock() {
        violations.extend(v.drain(..));
    }
    for i in 0..site.hosts.len() {
        if site.hosts[i].agent_pid().is_none() {
            violations.push(format!(
                "final: the agent of {} exited on its own (see its agent.log)",
                site.hosts[i].name
            ));
        }
    }
    // Metrics, at the end: everything served up to now, once the backlog
    // is drained.
    let end_ms = cm::now_ms();
    if wait_drained(&site, &mut book, end_ms).await.is_none() {
        violations.push(format!(
            "final: metrics backlog not drained within {}s",
            DRAIN_BOUND.as_secs()
        ));
    }
    let served = rig.probe.served();
    let samples = match cm::check_samples(
        &rig.region,
        &served,
        &kill_windows,
        &book,
        campaign_from_ms,
        end_ms,
    )
    .await
    {
        Ok(c) => {
            if c.samples_lost_beyond_shed > 0 {
                violations.push(format!(
                    "final: {} samples missing from the region beyond the shed counts: {c:?}",
                    c.samples_lost_beyond_shed
                ));
            }
            if c.critical_lost_beyond_shed > 0 {
                violations.push(format!(
                    "final: {} critical samples missing beyond the critical class's counts: {c:?}",
                    c.critical_lost_beyond_shed
                ));
            }
            if c.dead_letter_samples > 0 {
                violations.push(format!(
                    "final: the region refused {} samples (dead-lettered)",
                    c.dead_letter_samples
                ));
            }
            // Priority: the critical class is shed only when nothing less
            // critical is left, and the low class always has data here.
            if c.shed_critical > 0 && c.shed_low == 0 && c.dropped_low == 0 {
                violations.push(format!(
                    "final: {} critical samples shed while no low-priority sample was: {c:?}",
                    c.shed_critical
                ));
            }
            Some(c)
        }
        Err(e) => {
            violations.push(format!("final samples check failed: {e}"));
            None
        }
    };
    if samples.as_ref().is_some_and(|c| c.scrapes_served == 0) {
        violations.push("final: the scrape target was never scraped".into());
    }
    watch.finish().await;
    let split = watch.split_events();
    violations.extend(split.iter().map(|s| format!("split brain: {s}")));
    let max_voters = watch.max_voters.load(Ordering::Relaxed);
    let promotions = site.promotions().await;

    // Report.
    let mut per_kind = Vec::new();
    let mut table = String::from(
        "kind              count  writable p50/p99 s  full strength p50/p99 s  (after heal p50/p99 s)  acked lost  drain p50/p99 s  samples missing/shed/beyond\n",
    );
    for kind in Kind::ALL {
        let rs: Vec<&Record> = records.iter().filter(|r| r.kind == kind).collect();
        let w: Vec<f64> = rs.iter().filter_map(|r| r.writable_s).collect();
        let fs: Vec<f64> = rs.iter().filter_map(|r| r.full_strength_s).collect();
        let fh: Vec<f64> = rs
            .iter()
            .filter_map(|r| r.full_strength_after_heal_s)
            .collect();
        let lost_k = lost_by_kind.get(&kind).copied().unwrap_or(0);
        let lin_bad = rs
            .iter()
            .filter(|r| verdicts.get(&r.n).is_some_and(|v| v["ok"] != true))
            .count();
        let lin_lost: u64 = rs
            .iter()
            .filter_map(|r| {
                verdicts
                    .get(&r.n)
                    .and_then(|v| v["acked_writes_lost"].as_u64())
            })
            .sum();
        let dr: Vec<f64> = rs.iter().filter_map(|r| r.drain_s).collect();
        let miss: u64 = rs.iter().map(|r| r.samples_missing).sum();
        let shed: u64 = rs.iter().map(|r| r.samples_shed).sum();
        let beyond = miss.saturating_sub(shed);
        table.push_str(&format!(
            "{:<17} {:>5}  {:>8} / {:<8}  {:>10} / {:<10}  ({:>6} / {:<6})  {lost_k:>10}  {:>6} / {:<6}  {miss}/{shed}/{beyond}\n",
            kind.name(),
            rs.len(),
            fmt_s(pct(&w, 50.0)),
            fmt_s(pct(&w, 99.0)),
            fmt_s(pct(&fs, 50.0)),
            fmt_s(pct(&fs, 99.0)),
            fmt_s(pct(&fh, 50.0)),
            fmt_s(pct(&fh, 99.0)),
            fmt_s(pct(&dr, 50.0)),
            fmt_s(pct(&dr, 99.0)),
        ));
        per_kind.push(serde_json::json!({
            "kind": kind.name(),
            "count": rs.len(),
            "writable_p50_s": pct(&w, 50.0),
            "writable_p99_s": pct(&w, 99.0),
            "full_strength_p50_s": pct(&fs, 50.0),
            "full_strength_p99_s": pct(&fs, 99.0),
            "full_strength_after_heal_p50_s": pct(&fh, 50.0),
            "full_strength_after_heal_p99_s": pct(&fh, 99.0),
            "acked_writes_lost": lost_k,
            "drain_p50_s": pct(&dr, 50.0),
            "drain_p99_s": pct(&dr, 99.0),
            "samples_missing": miss,
            "samples_counted_shed": shed,
            "samples_lost_beyond_shed": beyond,
            "skipped": skipped.get(&kind).copied().unwrap_or(0),
            "skipped_why": skip_reason.get(&kind),
            "enabled": kinds.contains(&kind),
            "faults_not_linearizable": lin_bad,
            "history_acked_writes_lost": lin_lost,
        }));
    }
    let max_full = records
        .iter()
        .filter_map(|r| r.full_strength_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let max_full_heal = records
        .iter()
        .filter_map(|r| r.full_strength_after_heal_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let commit = git_commit();
    for k in kinds {
        if let Some(why) = skip_reason.get(k) {
            let msg = format!(
                "{} SKIPPED ({} faults): {why}",
                k.name(),
                skipped.get(k).copied().unwrap_or(0)
            );
            eprintln!("chaos: {msg}");
            if ci {
                violations.push(format!(
                    "CI=true: kind {msg}; a green CI run must have run every kind"
                ));
            }
        }
    }
    let mut report = serde_json::json!({
        "seed": seed,
        "commit": commit,
        "kinds": kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "quorum_loss_policy": if fenced { "fenced (fence-campaign.sh: in band, ping then power off, except during quorum_loss_out_of_band; window 3 s)" } else { "manual" },
        "acked_writes_lost_bound": 0,
        "acked_writes_lost_bound_source": "README.md: quorum loss under policy fenced, 0 acknowledged writes lost",
        "linearizability": {
            "workload": format!("{LIN_CLIENTS} clients per fault on {LIN_KEYS} shared keys (put, linearizable and serializable get, compare-and-set, delete) plus keys of their own, one watch each; checked per fault and again at the end"),
            "faults_not_linearizable": verdicts.values().filter(|v| v["ok"] != true).count(),
            "faults_not_linearizable_at_the_end": final_verdicts.values().filter(|v| v["ok"] != true).count(),
            "history_acked_writes_lost": verdicts.values().filter_map(|v| v["acked_writes_lost"].as_u64()).sum::<u64>(),
            "history_acked_writes_lost_at_the_end": final_verdicts.values().filter_map(|v| v["acked_writes_lost"].as_u64()).sum::<u64>(),
        },
        "faults": records.len(),
        "faults_planned": faults,
        "aborted": aborted,
        "duration_s": r3(started.elapsed().as_secs_f64()),
        "site": {
            "hosts": HOSTS, "voters": 3, "standbys": 1, "spares": HOSTS - 4,
            "etcd": "3.4 default timing, loopback",
            "isolated_host": root.then(|| site.hosts[ISOLATED].name.clone()),
            "metrics": "every agent scrapes the chaos target every 1 s (1 critical + 8 low series), buffers on an 8 MiB tmpfs (budget 16 MiB), remote-writes to a region Prometheus",
        },
        "not_injected": {
            "clock_step_of_etcd": "CLOCK_REALTIME is one per kernel (Linux time namespaces offset only CLOCK_MONOTONIC and CLOCK_BOOTTIME): clock_jump moves one agent's wall clock with libfaketime, never etcd's nor the machine's (docs/reliability/README.md)",
        },
        "acked_writes": acked_total,
        "acked_writes_lost": lost_total,
        "rmw": {
            "counters": COUNTERS,
            "clients": RMW_CLIENTS,
            "acked_increments": rmw_log.count(Outcome::Acked),
            "refused_increments": rmw_log.count(Outcome::Refused),
            "indeterminate_increments": rmw_log.count(Outcome::Unknown),
            "applied_increments": markers,
            "indeterminate_applied": markers.saturating_sub(rmw_log.count(Outcome::Acked)),
        },
        "split_brain_events": split.len(),
        // Returning hosts a fence powered off after the heal, powered on
        // again by the campaign (the fence is off-only).
        "fenced_after_heal": fenced_after_heal,
        "max_voters_seen": max_voters,
        "samples_lost_beyond_shed": samples.as_ref().map(|c| c.samples_lost_beyond_shed),
        "samples": samples,
        "max_full_strength_s": max_full,
        "max_full_strength_after_heal_s": max_full_heal,
        "full_strength_bound_s": FULL_STRENGTH_BOUND.as_secs(),
        "promotions": promotions,
        "violations": violations,
        "per_kind": per_kind,
        "fault_log": records.iter().map(|r| serde_json::json!({
            "n": r.n, "kind": r.kind.name(), "host": r.host, "role": r.role,
            "down_s": r.down_s, "writable_s": r.writable_s,
            "full_strength_s": r.full_strength_s,
            "full_strength_after_heal_s": r.full_strength_after_heal_s,
            "acked_writes": r.acked, "acked_writes_lost": r.lost,
            "drain_s": r.drain_s, "samples_missing": r.samples_missing,
            "samples_shed": r.samples_shed, "note": r.note,
            "checker": verdicts.get(&r.n),
            "checker_at_the_end": final_verdicts.get(&r.n),
        })).collect::<Vec<_>>(),
    });
    // Which build, which machine, when (the same fields as every bench record).
    if let (Some(obj), Ok(serde_json::Value::Object(info))) =
        (report.as_object_mut(), serde_json::to_value(run.finish()))
    {
        obj.extend(info);
    }
    eprintln!(
        "\nchaos campaign: seed {seed}, {} faults in {:.0}s, {acked_total} acked writes, {lost_total} lost, {} acked increments ({} indeterminate, {} applied in all), {} split-brain events, max {max_voters} voters, {promotions} promotions\n{table}",
        records.len(),
        started.elapsed().as_secs_f64(),
        rmw_log.count(Outcome::Acked),
        rmw_log.count(Outcome::Unknown),
        markers,
        split.len(),
    );
    if let Ok(path) = std::env::var("EDGEPLANE_CHAOS_REPORT") {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("chaos: report written to {path}");
    }
    if report["violations"]
        .as_array()
        .is_some_and(|v| v.is_empty())
    {
        // Success: the site's files go (they were kept only for a post-mortem).
        let root = site.root.clone();
        site.kill_all();
        drop(site);
        drop(rig);
        if std::env::var("EDGEPLANE_KEEP_SITE").is_err() {
            let _ = std::fs::remove_dir_all(root);
        }
    } else {
        eprintln!("chaos: site files kept in {}", site.root.display());
        site.kill_all();
        drop(rig);
    }
    Ok(report)
}

/// Clients and shared keys of each fault's recorded workload.
const LIN_CLIENTS: usize = 3;
const LIN_KEYS: usize = 4;

/// The commit the campaign runs on (`git rev-parse HEAD`, `+dirty` with
/// uncommitted changes), or `unknown`.
fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(h) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{h}+dirty") } else { h }
        }
        None => "unknown".into(),
    }
}

/// Every agent's epoch (`None`: no answer), by host.
async fn epochs(site: &LocalSite) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for i in 0..site.hosts.len() {
        out.push(
            site.agent_status(i)
                .await
                .and_then(|d| d.get("epoch").and_then(|e| e.as_u64())),
        );
    }
    out
}

/// Whether an `fsync_eio` fault of this down time strikes a running etcd
/// (odd ms: from its 40th fsync of a thread) rather than a starting one.
fn eio_running(down: Duration) -> bool {
    down.as_millis() % 2 == 1
}

/// The revision a quorum-loss rebuild journalled since `since_ms` raised
/// its new cluster to ("revision raised to N and compacted"), the highest
/// if several, as any agent reports it.
async fn rebuilt_revision(site: &LocalSite, since_ms: i64) -> Option<i64> {
    let mut out = None;
    for i in 0..site.hosts.len() {
        let Some(doc) = site.agent_status(i).await else {
            continue;
        };
        for op in edgeplane::agent::status::recent_ops(&doc) {
            if op["kind"] != "recover"
                || op["outcome"] != "done"
                || op["started_ms"].as_i64().is_none_or(|t| t < since_ms)
            {
                continue;
            }
            let rev = op["detail"]
                .as_str()
                .and_then(|d| d.split("revision raised to ").nth(1))
                .and_then(|d| d.split_whitespace().next())
                .and_then(|r| r.parse::<i64>().ok());
            out = out.max(rev);
        }
    }
    out
}

/// After a rebuild raised the revision to `bumped` and compacted there, no
/// watch segment that started below it may deliver an event at or above
/// it: resuming from an old revision must be answered "compacted", and the
/// watcher relists (a cache that resumed would miss what the rebuild
/// lost). Returns how many segments were relists.
fn check_relist(
    logs: &[edgeplane_tests::history::WatchLog],
    bumped: i64,
    label: &str,
    violations: &mut Vec<String>,
) -> usize {
    let mut relisted = 0;
    for log in logs {
        for seg in &log.segments {
            if seg.why == edgeplane_tests::history::SegmentStart::Relist {
                relisted += 1;
            }
            if seg.start_rev < bumped
                && let Some(ev) = seg.events.iter().find(|e| e.rev >= bumped)
            {
                violations.push(format!(
                    "{label}: the watch of client {} started at revision {} ({:?}) delivered revision {} of the cluster rebuilt at {bumped} without being told \"compacted\"",
                    log.client, seg.start_rev, seg.why, ev.rev
                ));
            }
        }
    }
    relisted
}

/// Checks one fault's recorded workload (history and watches); pushes
/// what it finds to `violations`; returns the verdict for the report, with
/// the acknowledged writes lost and their times relative to `fault_at`.
fn check_workload(
    work: &Workload,
    fault_at: Instant,
    label: &str,
    violations: &mut Vec<String>,
) -> serde_json::Value {
    let h = work.entries();
    let w = work.watch_logs();
    let v = linearizability::check(&h, &w);
    let lost = linearizability::lost_writes(&h);
    let t_fault = work.history.us_at(fault_at) as f64 / 1e6;
    let rel = |us: u64| r3(us as f64 / 1e6 - t_fault);
    if !v.ok() {
        let first: Vec<String> = v
            .violations
            .iter()
            .take(3)
            .map(|x| format!("{}: {}", x.kind, x.detail))
            .collect();
        violations.push(format!(
            "{label}: history checker: {}; first: {}",
            v.summary(),
            first.join(" | ")
        ));
    }
    if !lost.is_empty() {
        let (lo, hi) = (
            lost.iter().map(|l| l.rev).min().unwrap_or(0),
            lost.iter().map(|l| l.rev).max().unwrap_or(0),
        );
        let (first, last) = (
            lost.iter().map(|l| l.acked_us).min().unwrap_or(0),
            lost.iter().map(|l| l.acked_us).max().unwrap_or(0),
        );
        violations.push(format!(
            "{label}: {} acknowledged writes lost (bound: 0, README.md), revisions {lo}..{hi}, acknowledged {:+.2}s..{:+.2}s from the fault",
            lost.len(),
            rel(first),
            rel(last)
        ));
    }
    serde_json::json!({
        "ok": v.ok(),
        "summary": v.summary(),
        "ops": v.ops,
        "indeterminate": v.indeterminate,
        "keys": v.keys,
        "keys_searched": v.keys_searched,
        "keys_explained_by_indeterminate": v.keys_explained_by_indeterminate,
        "searches_inconclusive": v.searches_inconclusive,
        "watch_streams": v.watch_streams,
        "watch_events": v.watch_events,
        "counts": v.counts,
        "violations": v.violations.iter().take(10).collect::<Vec<_>>(),
        "acked_writes_lost": lost.len(),
        "lost_writes": lost.iter().take(50).map(|l| serde_json::json!({
            "key": l.key,
            "revision": l.rev,
            "acked_s_from_fault": rel(l.acked_us),
            "gone_in_read_at_revision": l.read_rev,
            "read_saw_mod_revision": l.read_mod_rev,
        })).collect::<Vec<_>>(),
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The CI campaign (one fault per kind) or, with `EDGEPLANE_CHAOS_FAULTS=N`, a long one.
#[test]
fn chaos_campaign_random_single_host_faults_lose_no_acknowledged_write() -> anyhow::Result<()> {
    let seed = env_u64("EDGEPLANE_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    });
    // At least one fault per kind, so the CI run covers every kind.
    let faults =
        env_u64("EDGEPLANE_CHAOS_FAULTS").unwrap_or(Kind::ALL.len().max(14) as u64) as usize;
    eprintln!("chaos: EDGEPLANE_CHAOS_SEED={seed} EDGEPLANE_CHAOS_FAULTS={faults}");
    // EDGEPLANE_CHAOS_MINUTES=M: stop injecting after M minutes (the long run);
    // the report's `faults` then says how many ran, and that count with the
    // same seed repeats the same schedule.
    let deadline = env_u64("EDGEPLANE_CHAOS_MINUTES").map(|m| Duration::from_secs(m * 60));
    let kinds = kinds_from_env()?;
    eprintln!(
        "chaos: EDGEPLANE_CHAOS_KINDS={}",
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    );
    let report = rt().block_on(campaign(seed, faults, deadline, &kinds))?;
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    assert!(
        violations.is_empty(),
        "chaos campaign (EDGEPLANE_CHAOS_SEED={seed}) found {} violations:\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  - {}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// The relist check: a watch resumed below the rebuilt revision that
/// delivers the new cluster's events is a violation; one told "compacted"
/// that relisted is not.
#[test]
fn chaos_relist_checker_flags_a_watch_resumed_across_a_rebuild() {
    use edgeplane_tests::history::{SegmentStart, WatchEvent, WatchLog, WatchSegment};
    let ev = |rev| WatchEvent {
        rev,
        key: "k".into(),
        value: Some("v".into()),
        at_us: 0,
    };
    let seg = |start_rev, why, events, compacted| WatchSegment {
        start_rev,
        why,
        member: 0,
        events,
        compacted,
    };
    let resumed = WatchLog {
        client: 0,
        prefix: "p".into(),
        segments: vec![
            seg(10, SegmentStart::Initial, vec![ev(11)], None),
            seg(12, SegmentStart::Reconnect, vec![ev(1201)], None),
        ],
    };
    let relisted = WatchLog {
        client: 1,
        prefix: "p".into(),
        segments: vec![
            seg(10, SegmentStart::Initial, vec![ev(11)], Some(1200)),
            seg(1201, SegmentStart::Relist, vec![ev(1201)], None),
        ],
    };
    let mut v = Vec::new();
    assert_eq!(
        check_relist(std::slice::from_ref(&relisted), 1200, "t", &mut v),
        1
    );
    assert!(v.is_empty(), "{v:?}");
    check_relist(&[resumed, relisted], 1200, "t", &mut v);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("client 0 started at revision 12"), "{v:?}");
}
