//! `edgeplane diag status`: this host and the site, in one screen.
//!
//! [`gather_and_build`] probes the network ([`super::probe`]) and reads the
//! disk ([`super::local`]) at once, then [`build`] — a pure function of those
//! facts — decides the roles, the leader, the quorum verdict, the host to
//! recover from and the headline. [`render`] prints it; the first line is
//! always the verdict, so a quorum loss is the first thing an engineer reads,
//! followed by the exact recovery command.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use edgeplane_config::{Config, QuorumLossPolicy};
use serde::{Deserialize, Serialize};

use super::local::{self, EtcdLocal, JournalRead, SnapFile};
use super::probe::{self, Alarm, ListedMember, Probes};
use super::{PROBE_TIMEOUT, Source, age_since_ms, human_age, human_bytes, table};
use crate::agent::state::{Op, Outcome};

pub const SCHEMA: &str = "edgeplane.diag.status/1";

/// A section of the report: where it comes from, and its data when there is some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section<T> {
    pub source: Source,
    /// Age of the data in seconds (0 for live answers).
    pub age_s: Option<f64>,
    /// What it was read from, in words.
    pub origin: String,
    /// Why it is not live (or not there at all).
    pub error: Option<String>,
    pub data: Option<T>,
}

impl<T> Section<T> {
    fn live(origin: impl Into<String>, data: T) -> Self {
        Section {
            source: Source::Live,
            age_s: Some(0.0),
            origin: origin.into(),
            error: None,
            data: Some(data),
        }
    }
    fn last_known(
        origin: impl Into<String>,
        age_s: Option<f64>,
        error: Option<String>,
        data: T,
    ) -> Self {
        Section {
            source: Source::LastKnown,
            age_s,
            origin: origin.into(),
            error,
            data: Some(data),
        }
    }
    fn unavailable(origin: impl Into<String>, error: impl Into<String>) -> Self {
        Section {
            source: Source::Unavailable,
            age_s: None,
            origin: origin.into(),
            error: Some(error.into()),
            data: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Degraded,
    QuorumUnknown,
    QuorumLost,
    /// An agent reports two live clusters: a human must choose a side.
    SplitBrain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumState {
    Ok,
    Lost,
    Unknown,
}

/// `snapshots.max_bytes` (the budget), what the snapshots use, the free
/// space, `snapshots.min_free_bytes` (the reserve kept for etcd), and the
/// writes refused for space, as the agent's `/status` reports them.
pub use edgeplane_snapshot::SpaceDoc as SnapshotSpace;

/// The snapshot scrub in one line: verified, corrupt, replaced.
pub fn scrub_line(sc: &edgeplane_snapshot::ScrubDoc) -> String {
    format!(
        "scrub since the agent started: {} file(s) verified intact, {} corrupt and set aside in corrupt/, {} of them replaced from a peer",
        sc.verified, sc.corrupt, sc.repaired
    )
}

/// The snapshot space in one line: budget, used, free, reserve, refusals.
pub fn space_line(sp: &SnapshotSpace) -> String {
    let opt = |b: Option<u64>| b.map(human_bytes).unwrap_or_else(|| "unknown".into());
    format!(
        "space: {} used of budget {}, {} free on the filesystem, reserve {} kept for etcd; {} write(s) refused for space (agent /status)",
        opt(sp.used_bytes),
        if sp.max_bytes == 0 {
            "none (snapshots.max_bytes = 0)".to_string()
        } else {
            human_bytes(sp.max_bytes)
        },
        opt(sp.free_bytes),
        if sp.min_free_bytes == 0 {
            "none".to_string()
        } else {
            human_bytes(sp.min_free_bytes)
        },
        sp.refused
    )
}

/// The whole `diag status --json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub schema: String,
    pub generated_at: String,
    pub config: String,
    pub site: String,
    pub host: String,
    pub verdict: Verdict,
    /// The first line of the human output.
    pub headline: String,
    /// What to do, most urgent first.
    pub advice: Vec<String>,
    pub recovery: Option<Recovery>,
    pub quorum: QuorumView,
    pub leader: Option<String>,
    pub this_host: ThisHost,
    /// Every configured host, in config order.
    pub hosts: Vec<HostRow>,
    pub agent: Section<AgentView>,
    pub alarms: Section<Vec<Alarm>>,
    pub snapshots: Section<SnapshotsView>,
    pub buffer: Section<BufferView>,
    pub link: Section<LinkView>,
    pub journal: Section<JournalSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// The exact command to run (on any surviving host).
    pub command: String,
    /// The freshest reachable member: highest raft commit index, then applied index.
    pub from: Option<String>,
    pub from_applied_index: Option<u64>,
    /// Voters that do not answer: power them off first.
    pub lost_hosts: Vec<String>,
    pub note: String,
    /// Every configured node's vote as seen from here: whom its agent
    /// names the freshest (`for` is null when its agent does not answer).
    /// An automatic rebuild needs `votes_needed` for one host.
    #[serde(default)]
    pub votes: Vec<crate::agent::recovery_plan::Vote>,
    #[serde(default)]
    pub votes_needed: usize,
    /// Why this host's agent waits (`/status.recovery.wait`), when it does,
    /// e.g. `no_vote_majority`.
    #[serde(default)]
    pub agent_waits: Option<crate::agent::recovery_plan::WaitReason>,
    /// The agent's own sentence for it.
    #[serde(default)]
    pub agent_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumView {
    pub state: QuorumState,
    pub reason: String,
    pub voters: Vec<String>,
    pub reachable_voters: Vec<String>,
    /// Agents that answered and what they say (`ok`, `lost`, `unknown`).
    pub agents_say: Vec<AgentSays>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSays {
    pub host: String,
    pub quorum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThisHost {
    pub name: String,
    pub role: String,
    pub role_source: Source,
    /// `agent /status` answered now.
    pub agent_api: bool,
    pub agent_error: Option<String>,
    /// `edgeplane agent` processes running with this config.
    pub agent_pids: Vec<i32>,
    /// The local etcd answered Status now.
    pub etcd_api: bool,
    pub etcd_error: Option<String>,
    /// The etcd data dir and pid file, read from disk.
    pub etcd_local: EtcdLocal,
    pub epoch: Option<u64>,
}

/// One configured host as seen from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRow {
    pub name: String,
    /// `voter`, `standby`, `spare`, `removed` or `unknown`.
    pub role: String,
    /// Where the role comes from: `member list`, `agent`, `last diag view`, `config order`.
    pub role_origin: String,
    pub etcd_up: bool,
    pub agent_up: bool,
    /// This member is the leader.
    pub leader: bool,
    /// This member reports a leader (and no "no leader" error).
    pub leader_known: bool,
    pub member_id: Option<String>,
    pub applied_index: Option<u64>,
    pub raft_index: Option<u64>,
    /// Entries behind the leader's raft index (or the highest one seen).
    pub lag: Option<u64>,
    pub db_size: Option<i64>,
    pub db_in_use: Option<i64>,
    pub etcd_version: Option<String>,
    pub errors: Vec<String>,
    /// Of the etcd figures above.
    pub source: Source,
    pub age_s: Option<f64>,
    /// Why the etcd or agent did not answer.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentView {
    pub role: String,
    pub coordinator: bool,
    pub ready: bool,
    pub ready_reason: String,
    pub decision: String,
    pub queue_depth: u64,
    pub last_reconcile_age_s: f64,
    pub stalled: bool,
    pub ticks: u64,
    pub etcd_restarts: u64,
    pub epoch: u64,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsView {
    pub dir: String,
    pub count: usize,
    pub latest: Option<SnapFile>,
    /// Hosts known to hold the latest snapshot (this host from its disk,
    /// peers from their agent's `GET /snapshots`).
    pub latest_on: Vec<String>,
    /// Peers whose snapshot list could not be read (why).
    pub peers_unknown: Vec<String>,
    pub files: Vec<SnapFile>,
    /// The snapshot directory's space as this host's agent measures and
    /// enforces it (`/status.snapshot_space`; not recomputed here), when
    /// the agent answers.
    #[serde(default)]
    pub space: Option<SnapshotSpace>,
    /// The agent's scrub of this directory (`/status.snapshot_scrub`),
    /// when the agent answers.
    #[serde(default)]
    pub scrub: Option<edgeplane_snapshot::ScrubDoc>,
}

/// The agent's `/status.snapshot_space`, if it reports one.
pub fn snapshot_space(doc: &serde_json::Value) -> Option<SnapshotSpace> {
    serde_json::from_value(doc.get("snapshot_space")?.clone()).ok()
}

/// The agent's `/status.snapshot_scrub`, if it reports one.
pub fn snapshot_scrub(doc: &serde_json::Value) -> Option<edgeplane_snapshot::ScrubDoc> {
    serde_json::from_value(doc.get("snapshot_scrub")?.clone()).ok()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferView {
    pub dir: String,
    pub budget_bytes: u64,
    pub total_bytes: u64,
    pub classes: Vec<BufferClass>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferClass {
    pub class: String,
    pub configured: bool,
    pub samples: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    pub oldest_age_s: Option<f64>,
    pub shed_samples: u64,
    pub shed_bytes: u64,
    pub expired_samples: u64,
    pub dropped_incoming: u64,
    pub corrupt_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkView {
    /// `up`, `degraded`, `down`, `disabled` or `unknown`.
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSummary {
    pub records_read: usize,
    pub pending: usize,
    pub failed: usize,
    /// Removals among the records whose detection window was damped: the
    /// host had been removed within `cluster.flap_window` (it flaps).
    pub damped_removals: usize,
    pub last: Option<super::events::EventRow>,
}

/// What `diag` remembers of its last live view (`state_dir/diag-last.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cache {
    pub saved_ms: i64,
    pub hosts: Vec<HostRow>,
    pub agent: Option<AgentView>,
    pub link: Option<LinkView>,
}

/// Everything [`build`] decides from.
pub struct Facts<'a> {
    pub cfg: &'a Config,
    pub config_path: String,
    pub now: DateTime<Utc>,
    pub probes: Probes,
    pub etcd_local: EtcdLocal,
    pub agent_pids: Vec<i32>,
    pub journal: Result<JournalRead, String>,
    pub buffer: Result<edgeplane_buffer::Summary, String>,
    pub snapshots: Result<Vec<SnapFile>, String>,
    pub cache: Option<Cache>,
}

/// Probes and reads everything (concurrently, bounded), then builds the report
/// and refreshes `diag`'s cache when something answered.
pub async fn gather_and_build(cfg: &Config, config_path: &Path) -> StatusReport {
    let facts = gather(cfg, config_path).await;
    let report = build(&facts);
    save_cache(cfg, &report, facts.now);
    report
}

pub async fn gather<'a>(cfg: &'a Config, config_path: &Path) -> Facts<'a> {
    let local_cfg = cfg.clone();
    let cpath = config_path.to_path_buf();
    let local = tokio::task::spawn_blocking(move || {
        let c = &local_cfg;
        (
            local::etcd_local(&c.etcd.data_dir, &c.paths.state_dir),
            local::agent_pids(&cpath),
            local::read_journal(&c.paths.state_dir, 200),
            read_buffer(c),
            local::list_snapshots(&c.paths.snapshot_dir),
            local::read_cache::<Cache>(&c.paths.state_dir),
        )
    });
    let probes = probe::probe_all(cfg, PROBE_TIMEOUT);
    let (probes, local) = tokio::join!(probes, local);
    let now = Utc::now();
    let (etcd_local, agent_pids, journal, buffer, snapshots, cache) = match local {
        Ok(l) => l,
        Err(e) => {
            let err = format!("reading local state failed: {e}");
            (
                local::etcd_local(&cfg.etcd.data_dir, &cfg.paths.state_dir),
                Vec::new(),
                Err(err.clone()),
                Err(err.clone()),
                Err(err),
                None,
            )
        }
    };
    Facts {
        cfg,
        config_path: super::display_config_path(config_path)
            .display()
            .to_string(),
        now,
        probes,
        etcd_local,
        agent_pids,
        journal,
        buffer,
        snapshots,
        cache,
    }
}

/// The buffer summary, read-only; a clear sentence when there is none.
pub fn read_buffer(cfg: &Config) -> Result<edgeplane_buffer::Summary, String> {
    let dir = &cfg.paths.buffer_dir;
    if !dir.exists() {
        return Err(if cfg.metrics.enabled {
            format!(
                "{} does not exist (nothing buffered yet, or the directory was removed)",
                dir.display()
            )
        } else {
            format!("{} does not exist (metrics.enabled = false)", dir.display())
        });
    }
    edgeplane_buffer::inspect(dir).map_err(|e| format!("{} is unreadable: {e}", dir.display()))
}

fn save_cache(cfg: &Config, report: &StatusReport, now: DateTime<Utc>) {
    let live_hosts: Vec<HostRow> = report
        .hosts
        .iter()
        .filter(|h| h.source == Source::Live)
        .cloned()
        .collect();
    let agent = (report.agent.source == Source::Live)
        .then(|| report.agent.data.clone())
        .flatten();
    if live_hosts.is_empty() && agent.is_none() {
        return;
    }
    // Keep the previous rows of hosts that did not answer this time.
    let mut prev = local::read_cache::<Cache>(&cfg.paths.state_dir).unwrap_or_default();
    let mut hosts = live_hosts;
    for h in prev.hosts.drain(..) {
        if !hosts.iter().any(|x| x.name == h.name) {
            hosts.push(h);
        }
    }
    local::write_cache(
        &cfg.paths.state_dir,
        &Cache {
            saved_ms: now.timestamp_millis(),
            hosts,
            agent: agent.or(prev.agent),
            link: (report.link.source == Source::Live)
                .then(|| report.link.data.clone())
                .flatten()
                .or(prev.link),
        },
    );
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn sees_leader(s: &probe::EtcdStatus) -> bool {
    s.leader != 0 && !s.errors.iter().any(|e| e.contains("no leader"))
}

fn map_role(agent_role: &str) -> &str {
    match agent_role {
        "learner" => "standby",
        other => other,
    }
}

/// The quorum verdict from what answered: pure, see the tests.
///
/// - some live agent reports `quorum: "lost"` → lost;
/// - a reachable member knows a leader → ok;
/// - no member reachable at all → unknown (this host may be the one cut off);
/// - no leader and a majority of voters unreachable → lost;
/// - no leader but a majority reachable → unknown (an election, or a partition).
pub fn decide_quorum(
    hosts: &[HostRow],
    agents_say: &[AgentSays],
    voters: &[String],
) -> (QuorumState, String) {
    let live = |h: &&HostRow| h.source == Source::Live && h.etcd_up;
    let reachable: Vec<&HostRow> = hosts.iter().filter(live).collect();
    let reachable_voters: Vec<&str> = reachable
        .iter()
        .filter(|h| voters.contains(&h.name))
        .map(|h| h.name.as_str())
        .collect();
    let unreachable: Vec<&str> = voters
        .iter()
        .filter(|v| !reachable_voters.contains(&v.as_str()))
        .map(String::as_str)
        .collect();
    let majority = voters.len() / 2 + 1;
    if let Some(a) = agents_say.iter().find(|a| a.quorum == "lost") {
        return (
            QuorumState::Lost,
            format!(
                "the agent on {} reports quorum lost; {} of {} voters answer{}",
                a.host,
                reachable_voters.len(),
                voters.len(),
                list_suffix(" (unreachable: ", &unreachable, ")")
            ),
        );
    }
    if reachable.iter().any(|h| h.leader || h.leader_known) {
        return (
            QuorumState::Ok,
            format!(
                "{} of {} voters answer and a leader is elected",
                reachable_voters.len(),
                voters.len()
            ),
        );
    }
    if reachable.is_empty() {
        return (
            QuorumState::Unknown,
            "no etcd member answers from here: either this host is cut off from the site or every member is down; check power and network before anything else".into(),
        );
    }
    if reachable_voters.len() < majority {
        return (
            QuorumState::Lost,
            format!(
                "no leader, and only {} of {} voters answer{}",
                reachable_voters.len(),
                voters.len(),
                list_suffix(" (unreachable: ", &unreachable, ")")
            ),
        );
    }
    (
        QuorumState::Unknown,
        format!(
            "no leader yet, but {} of {} voters answer: an election is probably under way; run this again in a few seconds",
            reachable_voters.len(),
            voters.len()
        ),
    )
}

fn list_suffix(pre: &str, items: &[&str], post: &str) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{pre}{}{post}", items.join(", "))
    }
}

/// The member to recover from, ranked as the agents rank it
/// (`recovery_plan::freshest`): the highest commit index (the most
/// acknowledged entries), then the highest applied index, among the members
/// that answer now; ties go to a voter, then to config order.
pub fn freshest(hosts: &[HostRow]) -> Option<&HostRow> {
    let rank = |h: &HostRow| Some((h.raft_index.unwrap_or(0), h.applied_index?));
    let mut best: Option<&HostRow> = None;
    for h in hosts
        .iter()
        .filter(|h| h.source == Source::Live && h.etcd_up)
    {
        let Some(a) = rank(h) else { continue };
        let better = match best {
            None => true,
            Some(b) => {
                let ba = rank(b).unwrap_or((0, 0));
                a > ba || (a == ba && h.role == "voter" && b.role != "voter")
            }
        };
        if better {
            best = Some(h);
        }
    }
    best
}

/// The recovery command for a lost quorum.
pub fn recovery(
    me: &str,
    config_path: &str,
    hosts: &[HostRow],
    voters: &[String],
    policy: QuorumLossPolicy,
) -> Recovery {
    let lost: Vec<String> = voters
        .iter()
        .filter(|v| {
            !hosts
                .iter()
                .any(|h| &h.name == *v && h.source == Source::Live && h.etcd_up)
        })
        .cloned()
        .collect();
    let from = freshest(hosts);
    let command = crate::agent::recovery_plan::recover_command(
        me,
        config_path,
        from.map(|f| f.name.as_str()),
    );
    let mut note = format!(
        "Power off {} first: a lost host must never come back with its old data.",
        if lost.is_empty() {
            "every lost host".to_string()
        } else {
            lost.join(", ")
        }
    );
    if from.is_none() {
        note.push_str(" No member answers from here, so the freshest host is not known: find a host whose etcd data survived and add --from HOST.");
    } else {
        note.push_str(" --from names the reachable member with the most acknowledged entries (highest raft commit index, then applied index).");
    }
    if policy == QuorumLossPolicy::Fenced {
        note.push_str(" (recovery.quorum_loss_policy = fenced: the agents rebuild on their own once the fence command confirms the lost hosts are off.)");
    }
    Recovery {
        command,
        from: from.map(|f| f.name.clone()),
        from_applied_index: from.and_then(|f| f.applied_index),
        lost_hosts: lost,
        note,
        // The caller fills in the votes it saw (witnesses included).
        votes: Vec::new(),
        votes_needed: 0,
        agent_waits: None,
        agent_state: None,
    }
}

/// The votes diag sees: each configured node's agent, and whom it names the
/// freshest (`/status.recovery.freshest`).
fn votes_seen(
    agents: &[super::probe::AgentProbe],
    witnesses: &[super::probe::AgentProbe],
) -> Vec<crate::agent::recovery_plan::Vote> {
    agents
        .iter()
        .chain(witnesses)
        .map(|a| crate::agent::recovery_plan::Vote {
            voter: a.host.clone(),
            for_host: a
                .doc
                .as_ref()
                .ok()
                .and_then(|d| str_at(d, "/recovery/freshest"))
                .map(str::to_string),
        })
        .collect()
}

fn str_at<'v>(v: &'v serde_json::Value, p: &str) -> Option<&'v str> {
    v.pointer(p).and_then(|x| x.as_str())
}
fn u64_at(v: &serde_json::Value, p: &str) -> Option<u64> {
    v.pointer(p).and_then(|x| x.as_u64())
}
fn bool_at(v: &serde_json::Value, p: &str) -> Option<bool> {
    v.pointer(p).and_then(|x| x.as_bool())
}

fn agent_view(doc: &serde_json::Value) -> AgentView {
    AgentView {
        role: map_role(str_at(doc, "/role").unwrap_or("unknown")).to_string(),
        coordinator: bool_at(doc, "/coordinator").unwrap_or(false),
        ready: bool_at(doc, "/ready").unwrap_or(false),
        ready_reason: str_at(doc, "/ready_reason").unwrap_or("").to_string(),
        decision: str_at(doc, "/decision").unwrap_or("").to_string(),
        queue_depth: u64_at(doc, "/progress/queue_depth").unwrap_or(0),
        last_reconcile_age_s: u64_at(doc, "/progress/last_reconcile_age_ms").unwrap_or(0) as f64
            / 1000.0,
        stalled: bool_at(doc, "/progress/stalled").unwrap_or(false),
        ticks: u64_at(doc, "/progress/ticks").unwrap_or(0),
        etcd_restarts: u64_at(doc, "/etcd/restarts").unwrap_or(0),
        epoch: u64_at(doc, "/epoch").unwrap_or(0),
        version: str_at(doc, "/version").unwrap_or("").to_string(),
    }
}

/// Builds the report from the facts. Pure: no I/O.
pub fn build(f: &Facts<'_>) -> StatusReport {
    let cfg = f.cfg;
    let now_ms = f.now.timestamp_millis();
    let me = cfg.host.clone();
    let my_index = cfg.nodes.iter().position(|n| n.name == me);
    let members: Option<&Vec<ListedMember>> = f.probes.members.as_ref().map(|(_, m)| m);
    let cache_age = f.cache.as_ref().map(|c| age_since_ms(now_ms, c.saved_ms));

    // Leader: the member that says it is the leader.
    let leader_id = f.probes.etcd.iter().find_map(|p| {
        let s = p.status.as_ref().ok()?;
        (s.leader != 0 && s.leader == s.member_id).then_some(s.leader)
    });
    let reference_index = leader_id
        .and_then(|id| {
            f.probes.etcd.iter().find_map(|p| {
                p.status
                    .as_ref()
                    .ok()
                    .filter(|s| s.member_id == id)
                    .map(|s| s.raft_index)
            })
        })
        .or_else(|| {
            f.probes
                .etcd
                .iter()
                .filter_map(|p| p.status.as_ref().ok().map(|s| s.raft_index))
                .max()
        });

    let mut hosts = Vec::new();
    for (i, node) in cfg.nodes.iter().enumerate() {
        let etcd = f.probes.etcd.get(i).map(|p| &p.status);
        let agent = f.probes.agents.get(i).map(|p| &p.doc);
        let agent_doc = agent.and_then(|a| a.as_ref().ok());
        let cached = f
            .cache
            .as_ref()
            .and_then(|c| c.hosts.iter().find(|h| h.name == node.name));
        let listed =
            members.and_then(|ms| ms.iter().find(|m| same_url(&m.peer_url, &node.peer_url)));
        let is_me = Some(i) == my_index;
        let (role, role_origin) = match (members, listed) {
            (Some(_), Some(m)) => (
                (if m.is_learner { "standby" } else { "voter" }).to_string(),
                "member list",
            ),
            (Some(_), None) => {
                let agent_role = agent_doc.and_then(|d| str_at(d, "/role"));
                let was_member = cached.is_some_and(|c| c.role == "voter" || c.role == "standby");
                let has_data = is_me && f.etcd_local.wal_present;
                if has_data || (agent_role.is_none() && was_member) {
                    ("removed".to_string(), "member list")
                } else {
                    ("spare".to_string(), "member list")
                }
            }
            (None, _) => match (agent_doc.and_then(|d| str_at(d, "/role")), cached) {
                (Some(r), _) => (map_role(r).to_string(), "agent"),
                (None, Some(c)) => (c.role.clone(), "last diag view"),
                (None, None) => {
                    let r = if i < cfg.cluster.voters {
                        "voter"
                    } else if i == cfg.cluster.voters {
                        "standby"
                    } else {
                        "spare"
                    };
                    (r.to_string(), "config order")
                }
            },
        };
        let agent_up = agent_doc.is_some();
        let agent_err = agent
            .and_then(|a| a.as_ref().err())
            .map(|e| format!("agent: {e}"));
        let row = match etcd {
            Some(Ok(s)) => HostRow {
                name: node.name.clone(),
                role,
                role_origin: role_origin.into(),
                etcd_up: true,
                agent_up,
                leader: s.leader != 0 && s.leader == s.member_id,
                leader_known: sees_leader(s),
                member_id: Some(format!("{:x}", s.member_id)),
                applied_index: Some(s.applied_index),
                raft_index: Some(s.raft_index),
                lag: if sees_leader(s) || leader_id.is_some() {
                    reference_index.map(|r| r.saturating_sub(s.applied_index))
                } else {
                    None
                },
                db_size: Some(s.db_size),
                db_in_use: Some(s.db_in_use),
                etcd_version: Some(s.version.clone()),
                errors: s.errors.clone(),
                source: Source::Live,
                age_s: Some(0.0),
                error: agent_err,
            },
            other => {
                let etcd_err = match other {
                    Some(Err(e)) => format!("etcd: {e}"),
                    _ => "etcd: not probed".into(),
                };
                let error = Some(match agent_err {
                    Some(a) => format!("{etcd_err}; {a}"),
                    None => etcd_err,
                });
                // Last known: this host's data dir, else diag's last live view.
                let local_db = if is_me {
                    f.etcd_local.db_file.as_ref()
                } else {
                    None
                };
                match (cached, local_db) {
                    (Some(c), _) => HostRow {
                        role,
                        role_origin: role_origin.into(),
                        etcd_up: false,
                        agent_up,
                        leader: false,
                        leader_known: false,
                        lag: None,
                        errors: Vec::new(),
                        source: Source::LastKnown,
                        age_s: cache_age.map(|a| a + c.age_s.unwrap_or(0.0)),
                        error,
                        db_size: local_db.map(|d| d.bytes as i64).or(c.db_size),
                        ..c.clone()
                    },
                    (None, Some(d)) => HostRow {
                        name: node.name.clone(),
                        role,
                        role_origin: role_origin.into(),
                        etcd_up: false,
                        agent_up,
                        leader: false,
                        leader_known: false,
                        member_id: None,
                        applied_index: None,
                        raft_index: None,
                        lag: None,
                        db_size: Some(d.bytes as i64),
                        db_in_use: None,
                        etcd_version: None,
                        errors: Vec::new(),
                        source: Source::LastKnown,
                        age_s: d.age_s,
                        error,
                    },
                    (None, None) => HostRow {
                        name: node.name.clone(),
                        role,
                        role_origin: role_origin.into(),
                        etcd_up: false,
                        agent_up,
                        leader: false,
                        leader_known: false,
                        member_id: None,
                        applied_index: None,
                        raft_index: None,
                        lag: None,
                        db_size: None,
                        db_in_use: None,
                        etcd_version: None,
                        errors: Vec::new(),
                        source: Source::Unavailable,
                        age_s: None,
                        error,
                    },
                }
            }
        };
        hosts.push(row);
    }

    // Leader by name: the host whose member says so, else the member list.
    let leader = hosts
        .iter()
        .find(|h| h.leader)
        .map(|h| h.name.clone())
        .or_else(|| {
            let id = f.probes.etcd.iter().find_map(|p| {
                p.status
                    .as_ref()
                    .ok()
                    .filter(|s| sees_leader(s))
                    .map(|s| s.leader)
            })?;
            let m = members?.iter().find(|m| m.id == id)?;
            cfg.nodes
                .iter()
                .find(|n| same_url(&n.peer_url, &m.peer_url))
                .map(|n| n.name.clone())
        });

    let voters: Vec<String> = hosts
        .iter()
        .filter(|h| h.role == "voter")
        .map(|h| h.name.clone())
        .collect();
    let agents_say: Vec<AgentSays> = f
        .probes
        .agents
        .iter()
        .filter_map(|a| {
            let d = a.doc.as_ref().ok()?;
            Some(AgentSays {
                host: a.host.clone(),
                quorum: str_at(d, "/quorum").unwrap_or("unknown").to_string(),
            })
        })
        .collect();
    let (qstate, mut qreason) = decide_quorum(&hosts, &agents_say, &voters);
    // Nothing answered because this command could not even load the site's
    // TLS key: a permission problem here, not power or network out there.
    if qstate == QuorumState::Unknown
        && let Some(why) = f.probes.etcd.iter().find_map(|p| {
            p.status
                .as_ref()
                .err()
                .filter(|e| e.contains(crate::tls::NOT_READABLE))
        })
    {
        qreason = format!("the site was not probed: {why}");
    }
    let quorum = QuorumView {
        state: qstate,
        reason: qreason,
        reachable_voters: hosts
            .iter()
            .filter(|h| h.role == "voter" && h.source == Source::Live && h.etcd_up)
            .map(|h| h.name.clone())
            .collect(),
        voters: voters.clone(),
        agents_say,
    };

    // This host.
    let my_agent = my_index.and_then(|i| f.probes.agents.get(i));
    let my_etcd = my_index.and_then(|i| f.probes.etcd.get(i));
    let my_row = my_index.and_then(|i| hosts.get(i));
    let epoch = my_agent
        .and_then(|a| a.doc.as_ref().ok())
        .and_then(|d| u64_at(d, "/epoch"))
        .or_else(|| {
            f.journal
                .as_ref()
                .ok()
                .and_then(|j| j.facts.get("epoch"))
                .and_then(|e| e.parse().ok())
        });
    let this_host = ThisHost {
        name: me.clone(),
        role: my_row
            .map(|r| r.role.clone())
            .unwrap_or_else(|| "unknown".into()),
        role_source: my_row
            .map(|r| match r.role_origin.as_str() {
                "member list" | "agent" => Source::Live,
                "last diag view" => Source::LastKnown,
                _ => Source::Unavailable,
            })
            .unwrap_or(Source::Unavailable),
        agent_api: my_agent.is_some_and(|a| a.doc.is_ok()),
        agent_error: my_agent.and_then(|a| a.doc.as_ref().err().cloned()),
        agent_pids: f.agent_pids.clone(),
        etcd_api: my_etcd.is_some_and(|e| e.status.is_ok()),
        etcd_error: my_etcd.and_then(|e| e.status.as_ref().err().cloned()),
        etcd_local: f.etcd_local.clone(),
        epoch,
    };

    // The agent's own view.
    let agent = match my_agent.map(|a| &a.doc) {
        Some(Ok(doc)) => Section::live("agent /status", agent_view(doc)),
        other => {
            let why = match other {
                Some(Err(e)) => format!("the agent at {} does not answer: {e}", agent_url(cfg)),
                _ => "this host is not among the configured nodes".into(),
            };
            match f.cache.as_ref().and_then(|c| c.agent.clone()) {
                Some(a) => Section::last_known("last diag view", cache_age, Some(why), a),
                None => Section::unavailable("agent /status", why),
            }
        }
    };

    let alarms = match &f.probes.alarms {
        Ok(a) => Section::live("etcd Alarm (get)", a.clone()),
        Err(e) => Section::unavailable("etcd Alarm (get)", e.clone()),
    };

    let snapshots = match &f.snapshots {
        Ok(files) => {
            let latest = files.first().cloned();
            let mut latest_on = Vec::new();
            let mut peers_unknown = Vec::new();
            if let Some(l) = &latest {
                latest_on.push(me.clone());
                for (host, list) in &f.probes.snapshot_lists {
                    if *host == me {
                        continue;
                    }
                    match list {
                        Ok(names) if names.contains(&l.name) => latest_on.push(host.clone()),
                        Ok(_) => {}
                        Err(e) => peers_unknown.push(format!("{host}: {e}")),
                    }
                }
            }
            Section::live(
                format!("{} (directory listing)", cfg.paths.snapshot_dir.display()),
                SnapshotsView {
                    dir: cfg.paths.snapshot_dir.display().to_string(),
                    count: files.len(),
                    latest,
                    latest_on,
                    peers_unknown,
                    files: files.iter().take(50).cloned().collect(),
                    space: my_agent
                        .and_then(|a| a.doc.as_ref().ok())
                        .and_then(snapshot_space),
                    scrub: my_agent
                        .and_then(|a| a.doc.as_ref().ok())
                        .and_then(snapshot_scrub),
                },
            )
        }
        Err(e) => Section::unavailable(cfg.paths.snapshot_dir.display().to_string(), e.clone()),
    };

    let buffer = match &f.buffer {
        Ok(s) => Section::live(
            format!("{} (read-only inspect)", cfg.paths.buffer_dir.display()),
            BufferView {
                dir: cfg.paths.buffer_dir.display().to_string(),
                budget_bytes: s.budget_bytes,
                total_bytes: s.total_bytes_on_disk,
                classes: s
                    .classes
                    .iter()
                    .map(|c| BufferClass {
                        class: c.class.clone(),
                        configured: c.configured,
                        samples: c.samples,
                        bytes: c.bytes_on_disk,
                        oldest_ms: c.oldest_ms,
                        oldest_age_s: c.oldest_ms.map(|o| age_since_ms(now_ms, o)),
                        shed_samples: c.shed_samples,
                        shed_bytes: c.shed_bytes,
                        expired_samples: c.expired_samples,
                        dropped_incoming: c.dropped_incoming,
                        corrupt_frames: c.corrupt_frames,
                    })
                    .collect(),
            },
        ),
        Err(e) => Section::unavailable(cfg.paths.buffer_dir.display().to_string(), e.clone()),
    };

    let link = link_section(
        cfg,
        my_agent.and_then(|a| a.doc.as_ref().ok()),
        f.cache.as_ref(),
        cache_age,
    );

    let journal = journal_section(f, my_agent.and_then(|a| a.doc.as_ref().ok()), now_ms);

    // Verdict, headline and advice.
    let mut advice = Vec::new();
    let recovery_plan = (qstate == QuorumState::Lost).then(|| {
        let mut r = recovery(
            &cfg.host,
            &f.config_path,
            &hosts,
            &voters,
            cfg.recovery.quorum_loss_policy,
        );
        r.votes = votes_seen(&f.probes.agents, &f.probes.witnesses);
        r.votes_needed = crate::agent::recovery_plan::majority(cfg.votes());
        let mine = my_agent.and_then(|a| a.doc.as_ref().ok());
        r.agent_waits = mine
            .and_then(|d| d.pointer("/recovery/wait"))
            .and_then(|w| serde_json::from_value(w.clone()).ok());
        r.agent_state = mine
            .and_then(|d| str_at(d, "/recovery/state"))
            .map(str::to_string);
        r
    });
    let mut verdict;
    let mut headline;
    match qstate {
        QuorumState::Lost => {
            verdict = Verdict::QuorumLost;
            let r = recovery_plan.as_ref();
            headline = format!(
                "QUORUM LOST: {}. Recover with: {}",
                quorum.reason,
                r.map(|r| r.command.as_str()).unwrap_or("edgeplane recover")
            );
            if let Some(r) = r {
                if let Some(state) = &r.agent_state {
                    advice.push(format!("This host's agent: {state}"));
                }
                advice.push(r.note.clone());
                advice.push(format!("Then run: {}", r.command));
                advice.push(format!(
                    "Votes ({} of {} needed for an automatic rebuild): {}",
                    r.votes_needed,
                    r.votes.len(),
                    r.votes
                        .iter()
                        .map(|v| format!(
                            "{} -> {}",
                            v.voter,
                            v.for_host.as_deref().unwrap_or("(no answer)")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        QuorumState::Unknown => {
            verdict = Verdict::QuorumUnknown;
            headline = format!("QUORUM UNKNOWN: {}.", quorum.reason);
        }
        QuorumState::Ok => {
            let mut issues = Vec::new();
            let down: Vec<&str> = hosts
                .iter()
                .filter(|h| (h.role == "voter" || h.role == "standby") && !h.etcd_up)
                .map(|h| h.name.as_str())
                .collect();
            if !down.is_empty() {
                issues.push(format!("members not answering: {}", down.join(", ")));
            }
            let standbys = hosts.iter().filter(|h| h.role == "standby").count();
            if standbys == 0 && cfg.nodes.len() > cfg.cluster.voters {
                issues.push("no standby".to_string());
            }
            if voters.len() < cfg.cluster.voters {
                issues.push(format!(
                    "{} voters of {} configured",
                    voters.len(),
                    cfg.cluster.voters
                ));
            }
            if !this_host.agent_api {
                issues.push(format!("the agent on {me} does not answer"));
            }
            if let Some(a) = &agent.data
                && agent.source == Source::Live
                && a.stalled
            {
                issues.push(format!("the agent on {me} has stalled"));
            }
            if alarms.data.as_ref().is_some_and(|a| !a.is_empty()) {
                issues.push("etcd alarms raised".to_string());
            }
            if issues.is_empty() {
                verdict = Verdict::Ok;
                headline = format!(
                    "OK: {} voters{}, leader {}; {} is {}.",
                    voters.len(),
                    if standbys > 0 { " + standby" } else { "" },
                    leader.as_deref().unwrap_or("?"),
                    me,
                    this_host.role
                );
            } else {
                verdict = Verdict::Degraded;
                headline = format!(
                    "DEGRADED: {}; quorum ok (leader {}).",
                    issues.join("; "),
                    leader.as_deref().unwrap_or("?")
                );
            }
        }
    }
    // A split brain outranks everything else: it is the first line.
    if let Some((host, doc)) = f.probes.agents.iter().find_map(|a| {
        let d = a.doc.as_ref().ok()?;
        Some((
            a.host.clone(),
            d.get("split_brain").filter(|v| !v.is_null())?.clone(),
        ))
    }) {
        let others: Vec<&str> = doc
            .get("others")
            .and_then(|o| o.as_array())
            .map(|o| o.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let action = doc
            .get("action")
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        verdict = Verdict::SplitBrain;
        headline = format!(
            "SPLIT BRAIN: the agent on {host} keeps its cluster while {} report another live cluster or a newer epoch; no data is moved until a human chooses a side.",
            others.join(", ")
        );
        advice.insert(0, action.to_string());
    }
    if !this_host.agent_api {
        if this_host.agent_pids.is_empty() {
            advice.push(format!(
                "Start the agent on {me}: `systemctl start edgeplane` (it adopts a running etcd or restarts it)."
            ));
        } else {
            advice.push(format!(
                "The agent process on {me} (pid {}) runs but its API does not answer: see `journalctl -u edgeplane`; restarting it never stops etcd.",
                this_host.agent_pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(a) = alarms.data.as_ref().filter(|a| !a.is_empty()) {
        let kinds: Vec<&str> = a.iter().map(|x| x.alarm.as_str()).collect();
        if kinds.contains(&"NOSPACE") {
            advice.push("etcd raised NOSPACE: compact and defragment, then `etcdctl alarm disarm`; raise etcd.quota_backend_bytes if the data really grew.".into());
        }
        if kinds.contains(&"CORRUPT") {
            advice.push("etcd raised CORRUPT: a member's data differs from the others; replace that member (stop it, move its data dir aside, let it rejoin).".into());
        }
    }
    if buffer.source == Source::Unavailable && cfg.metrics.enabled {
        advice.push(format!(
            "Metrics buffer unreadable: {}",
            buffer.error.clone().unwrap_or_default()
        ));
    }
    if let Some(j) = &journal.data
        && j.pending > 0
    {
        advice.push(format!(
            "{} journal operation(s) pending: the agent closes them when it restarts; `edgeplane diag events` shows them.",
            j.pending
        ));
    }

    // Flap damping: hosts the agents removed recently, as this host's agent sees them.
    let damped = my_agent
        .and_then(|a| a.doc.as_ref().ok())
        .and_then(|d| d.pointer("/flap/damped_hosts"))
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    for d in damped {
        advice.push(format!(
            "{} flaps: removed {} time(s) within cluster.flap_window, so it is removed again only after {}s unreachable ({}x failure_detection). Look at that host (GC pauses, disk stalls, load); `edgeplane diag events` shows the removals.",
            d["host"].as_str().unwrap_or("?"),
            d["recent_removals"].as_u64().unwrap_or(0),
            d["detection_s"].as_f64().unwrap_or(0.0),
            d["factor"].as_u64().unwrap_or(1),
        ));
    }

    StatusReport {
        schema: SCHEMA.into(),
        generated_at: f.now.to_rfc3339_opts(SecondsFormat::Millis, true),
        config: f.config_path.clone(),
        site: cfg.site.clone(),
        host: me,
        verdict,
        headline,
        advice,
        recovery: recovery_plan,
        quorum,
        leader,
        this_host,
        hosts,
        agent,
        alarms,
        snapshots,
        buffer,
        link,
        journal,
    }
}

fn agent_url(cfg: &Config) -> String {
    cfg.this_node()
        .map(|n| n.agent_url.clone())
        .unwrap_or_default()
}

fn link_section(
    cfg: &Config,
    doc: Option<&serde_json::Value>,
    cache: Option<&Cache>,
    cache_age: Option<f64>,
) -> Section<LinkView> {
    if !cfg.uplink.enabled || !cfg.metrics.enabled {
        return Section::live(
            "config",
            LinkView {
                state: "disabled".into(),
                detail: if !cfg.metrics.enabled {
                    "metrics.enabled = false".into()
                } else {
                    "uplink.enabled = false".into()
                },
            },
        );
    }
    // The agent reports the metrics path under `metrics.link` once it is wired in.
    if let Some(d) = doc {
        if let Some(state) = str_at(d, "/metrics/link/state") {
            let mut detail = String::new();
            if let Some(n) = u64_at(d, "/metrics/link/consecutive_failures") {
                detail.push_str(&format!("{n} consecutive failures"));
            }
            if let Some(e) = str_at(d, "/metrics/link/last_error") {
                detail.push_str(&format!(
                    "; last error: {}",
                    super::redact::text(e, &Default::default())
                ));
            }
            // The region refuses the backlog for its age or order: the
            // cause and the fix, first.
            if let Some(fix) = str_at(d, "/metrics/backlog_refused/fix") {
                let reason = str_at(d, "/metrics/backlog_refused/reason").unwrap_or_default();
                detail = format!(
                    "BACKLOG REFUSED (kept in the buffer, retried every minute): {}; {fix}; {detail}",
                    super::redact::text(reason, &Default::default())
                );
            }
            return Section::live(
                "agent /status metrics.link",
                LinkView {
                    state: state.into(),
                    detail,
                },
            );
        }
        return Section::unavailable(
            "agent /status",
            "the agent does not report the uplink link state (no `metrics.link` in /status)",
        );
    }
    match cache.and_then(|c| c.link.clone()) {
        Some(l) => Section::last_known(
            "last diag view",
            cache_age,
            Some("the agent does not answer".into()),
            l,
        ),
        None => Section::unavailable("agent /status", "the agent does not answer"),
    }
}

fn journal_section(
    f: &Facts<'_>,
    doc: Option<&serde_json::Value>,
    now_ms: i64,
) -> Section<JournalSummary> {
    let summarize = |ops: &[Op]| JournalSummary {
        records_read: ops.len(),
        pending: ops.iter().filter(|o| o.outcome == Outcome::Pending).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Failed).count(),
        damped_removals: ops
            .iter()
            .filter(|o| o.outcome == Outcome::Done && o.damped())
            .count(),
        last: ops
            .last()
            .map(|o| super::events::EventRow::from_op(o, now_ms)),
    };
    match &f.journal {
        Ok(j) if doc.is_some() => Section::live(j.how.clone(), summarize(&j.ops)),
        Ok(j) => Section::last_known(
            j.how.clone(),
            j.file_age_s,
            Some("the agent does not answer: the journal as the agent last wrote it".into()),
            summarize(&j.ops),
        ),
        Err(e) => match doc.and_then(|d| d.pointer("/journal/recent")) {
            Some(recent) => {
                let ops: Vec<Op> = serde_json::from_value(recent.clone()).unwrap_or_default();
                Section {
                    source: Source::Live,
                    age_s: Some(0.0),
                    origin: "agent /status journal.recent (last 20)".into(),
                    error: Some(e.clone()),
                    data: Some(summarize(&ops)),
                }
            }
            None => Section::unavailable(
                f.cfg
                    .paths
                    .state_dir
                    .join("state.redb")
                    .display()
                    .to_string(),
                e.clone(),
            ),
        },
    }
}

impl StatusReport {
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Ok => 0,
            Verdict::Degraded | Verdict::QuorumUnknown => 1,
            Verdict::QuorumLost | Verdict::SplitBrain => 2,
        }
    }
}

fn mark<T>(s: &Section<T>) -> String {
    match (s.source, s.age_s) {
        (Source::Live, _) => "[live]".into(),
        (Source::LastKnown, Some(a)) => format!("[last-known, {} old]", human_age(a)),
        (Source::LastKnown, None) => "[last-known]".into(),
        (Source::Unavailable, _) => "[unavailable]".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The human report. Line one is the verdict.
pub fn render(r: &StatusReport) -> String {
    let mut o = String::new();
    o.push_str(&r.headline);
    o.push('\n');
    for a in &r.advice {
        o.push_str(&format!("  -> {a}\n"));
    }
    o.push('\n');
    o.push_str(&format!(
        "Site {}, host {}, config {}\n",
        r.site, r.host, r.config
    ));
    o.push_str(
        &format!("Quorum: {:?} — {}\n", r.quorum.state, r.quorum.reason)
            .replace("Ok —", "ok —")
            .replace("Lost —", "LOST —")
            .replace("Unknown —", "unknown —"),
    );

    // This host.
    let t = &r.this_host;
    let origin = r
        .hosts
        .iter()
        .find(|h| h.name == t.name)
        .map(|h| h.role_origin.clone())
        .unwrap_or_default();
    o.push_str(&format!(
        "\nThis host: {} ({}, from the {origin})\n",
        t.name, t.role
    ));
    o.push_str(&format!(
        "  agent    {}{}\n",
        if t.agent_api {
            "answers".to_string()
        } else {
            format!(
                "does not answer ({})",
                t.agent_error.clone().unwrap_or_default()
            )
        },
        if t.agent_pids.is_empty() {
            if t.agent_api {
                String::new()
            } else {
                "; no agent process with this config".into()
            }
        } else {
            format!(
                "; process pid {}",
                t.agent_pids
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    ));
    let e = &t.etcd_local;
    o.push_str(&format!(
        "  etcd     {}; pid file {}{}\n",
        if t.etcd_api {
            "answers".to_string()
        } else {
            format!(
                "does not answer ({})",
                t.etcd_error.clone().unwrap_or_default()
            )
        },
        opt(e.pid_file),
        match (e.pid_file, e.pid_alive, e.pid_is_etcd) {
            (None, _, _) => String::new(),
            (Some(_), true, true) => " (running)".into(),
            (Some(_), true, false) => " (alive but not an etcd!)".into(),
            (Some(_), false, _) => " (not running)".into(),
        }
    ));
    o.push_str(&format!(
        "  data dir {}: {}{}{}\n",
        e.data_dir,
        match &e.db_file {
            Some(d) => format!(
                "db {} (written {} ago)",
                human_bytes(d.bytes),
                d.age_s.map(human_age).unwrap_or_default()
            ),
            None if e.data_dir_exists => "no member/snap/db".into(),
            None => "missing".into(),
        },
        if e.wal_present {
            format!(", wal {} files {}", e.wal_files, human_bytes(e.wal_bytes))
        } else {
            ", no wal".into()
        },
        if e.moved_aside.is_empty() {
            String::new()
        } else {
            format!(", {} old data dir(s) moved aside", e.moved_aside.len())
        }
    ));
    for err in &e.errors {
        o.push_str(&format!("  ! {err}\n"));
    }
    if let Some(ep) = t.epoch {
        o.push_str(&format!("  epoch    {ep}\n"));
    }

    // Agent.
    o.push_str(&format!("\nAgent {}\n", mark(&r.agent)));
    match &r.agent.data {
        Some(a) => {
            o.push_str(&format!(
                "  role {}, coordinator {}, ready {} ({}), queue depth {}, last reconcile {} ago{}\n",
                a.role,
                if a.coordinator { "yes" } else { "no" },
                if a.ready { "yes" } else { "no" },
                a.ready_reason,
                a.queue_depth,
                human_age(a.last_reconcile_age_s),
                if a.stalled { ", STALLED" } else { "" }
            ));
            o.push_str(&format!("  decision: {}\n", a.decision));
            if let Some(err) = &r.agent.error {
                o.push_str(&format!("  ! {err}\n"));
            }
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.agent.error.clone().unwrap_or_default()
        )),
    }

    // Members.
    o.push_str(&format!(
        "\nHosts (leader: {})\n",
        r.leader.clone().unwrap_or_else(|| "none".into())
    ));
    let mut rows = vec![
        [
            "HOST", "ROLE", "ETCD", "AGENT", "APPLIED", "LAG", "DB", "IN USE", "SOURCE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for h in &r.hosts {
        rows.push(vec![
            format!("{}{}", h.name, if h.leader { " *" } else { "" }),
            h.role.clone(),
            if h.etcd_up {
                "up".into()
            } else {
                "down".into()
            },
            if h.agent_up {
                "up".into()
            } else {
                "down".into()
            },
            opt(h.applied_index),
            opt(h.lag),
            h.db_size
                .map(|b| human_bytes(b.max(0) as u64))
                .unwrap_or_else(|| "-".into()),
            h.db_in_use
                .map(|b| human_bytes(b.max(0) as u64))
                .unwrap_or_else(|| "-".into()),
            match (h.source, h.age_s) {
                (Source::LastKnown, Some(a)) => format!("last-known {} old", human_age(a)),
                (s, _) => s.as_str().to_string(),
            },
        ]);
    }
    o.push_str(&table(&rows, "  "));
    for h in &r.hosts {
        for e in &h.errors {
            o.push_str(&format!("  ! {}: {e}\n", h.name));
        }
        if !h.etcd_up
            && let Some(e) = &h.error
        {
            o.push_str(&format!("  ! {}: {e}\n", h.name));
        }
    }

    // Alarms.
    o.push_str(&format!("\nAlarms {}: ", mark(&r.alarms)));
    match &r.alarms.data {
        Some(a) if a.is_empty() => o.push_str("none\n"),
        Some(a) => o.push_str(&format!(
            "{}\n",
            a.iter()
                .map(|x| format!("{} on member {}", x.alarm, x.member_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => o.push_str(&format!("{}\n", r.alarms.error.clone().unwrap_or_default())),
    }

    // Snapshots.
    o.push_str(&format!("\nSnapshots {}\n", mark(&r.snapshots)));
    if let Some(sp) = r.snapshots.data.as_ref().and_then(|s| s.space.as_ref()) {
        o.push_str(&format!("  {}\n", space_line(sp)));
        if let Some(last) = &sp.last_refusal {
            o.push_str(&format!("  ! last refused: {last}\n"));
        }
    }
    if let Some(sc) = r.snapshots.data.as_ref().and_then(|s| s.scrub.as_ref()) {
        o.push_str(&format!("  {}\n", scrub_line(sc)));
        if let Some(last) = sc.last_corrupt.as_ref().filter(|_| sc.corrupt > 0) {
            o.push_str(&format!("  ! last corrupt: {last}\n"));
        }
        if !sc.unrepaired.is_empty() {
            o.push_str(&format!(
                "  ! set aside, no intact copy fetched from a peer yet: {}\n",
                sc.unrepaired.join(", ")
            ));
        }
    }
    match &r.snapshots.data {
        Some(s) if s.count == 0 => o.push_str(&format!("  none in {}\n", s.dir)),
        Some(s) => {
            if let Some(l) = &s.latest {
                o.push_str(&format!(
                    "  latest {} (by {}, {}, {} old); held by: {}; {} snapshot file(s) in {}\n",
                    l.name,
                    l.origin.as_deref().unwrap_or("?"),
                    human_bytes(l.bytes),
                    l.age_s.map(human_age).unwrap_or_default(),
                    s.latest_on.join(", "),
                    s.count,
                    s.dir
                ));
                if !s.peers_unknown.is_empty() {
                    o.push_str(&format!(
                        "  peers not asked successfully: {}\n",
                        s.peers_unknown.join("; ")
                    ));
                }
                for f in s.files.iter().filter(|f| f.footer_error.is_some()) {
                    o.push_str(&format!(
                        "  ! {} is damaged: {}\n",
                        f.name,
                        f.footer_error.clone().unwrap_or_default()
                    ));
                }
            }
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.snapshots.error.clone().unwrap_or_default()
        )),
    }

    // Buffer and link.
    o.push_str(&format!("\nLink {}: ", mark(&r.link)));
    match &r.link.data {
        Some(l) => o.push_str(&format!(
            "{} {}\n",
            l.state,
            if l.detail.is_empty() {
                String::new()
            } else {
                format!("({})", l.detail)
            }
        )),
        None => o.push_str(&format!(
            "unknown ({})\n",
            r.link.error.clone().unwrap_or_default()
        )),
    }
    o.push_str(&format!("\nBuffer {}\n", mark(&r.buffer)));
    match &r.buffer.data {
        Some(b) => {
            o.push_str(&format!(
                "  {}: {} of {} budget\n",
                b.dir,
                human_bytes(b.total_bytes),
                human_bytes(b.budget_bytes)
            ));
            let mut rows = vec![
                [
                    "CLASS", "SAMPLES", "BYTES", "OLDEST", "SHED", "EXPIRED", "DROPPED",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ];
            for c in &b.classes {
                rows.push(vec![
                    c.class.clone(),
                    c.samples.to_string(),
                    human_bytes(c.bytes),
                    c.oldest_age_s
                        .map(|a| format!("{} ago", human_age(a)))
                        .unwrap_or_else(|| "-".into()),
                    format!("{} ({})", c.shed_samples, human_bytes(c.shed_bytes)),
                    c.expired_samples.to_string(),
                    c.dropped_incoming.to_string(),
                ]);
            }
            o.push_str(&table(&rows, "  "));
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.buffer.error.clone().unwrap_or_default()
        )),
    }

    // Journal.
    o.push_str(&format!("\nJournal {}: ", mark(&r.journal)));
    match &r.journal.data {
        Some(j) => {
            o.push_str(&format!(
                "{} records, {} pending, {} failed",
                j.records_read, j.pending, j.failed
            ));
            if j.damped_removals > 0 {
                o.push_str(&format!(
                    ", {} flap-damped removal(s) (a host removed again within cluster.flap_window)",
                    j.damped_removals
                ));
            }
            if let Some(l) = &j.last {
                o.push_str(&format!(
                    "; last: {} {} {} ({} ago)",
                    l.kind,
                    l.target,
                    l.outcome,
                    human_age(l.age_s)
                ));
            }
            o.push('\n');
            if let Some(e) = &r.journal.error {
                o.push_str(&format!("  ({e})\n"));
            }
        }
        None => o.push_str(&format!(
            "{}\n",
            r.journal.error.clone().unwrap_or_default()
        )),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, role: &str, up: bool, applied: u64, leader: bool) -> HostRow {
        HostRow {
            name: name.into(),
            role: role.into(),
            role_origin: "member list".into(),
            etcd_up: up,
            agent_up: up,
            leader,
            leader_known: leader,
            member_id: up.then(|| format!("{name}-id")),
            applied_index: up.then_some(applied),
            raft_index: up.then_some(applied),
            lag: None,
            db_size: None,
            db_in_use: None,
            etcd_version: None,
            errors: if up && !leader {
                vec!["etcdserver: no leader".into()]
            } else {
                Vec::new()
            },
            source: if up {
                Source::Live
            } else {
                Source::Unavailable
            },
            age_s: None,
            error: None,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_leader_means_quorum_ok() {
        let mut hosts = vec![
            row("h1", "voter", true, 10, true),
            row("h2", "voter", true, 10, false),
            row("h3", "voter", false, 0, false),
        ];
        hosts[1].errors.clear();
        let (s, _) = decide_quorum(&hosts, &[], &names(&["h1", "h2", "h3"]));
        assert_eq!(s, QuorumState::Ok);
    }

    #[test]
    fn no_leader_and_majority_unreachable_is_lost() {
        let hosts = vec![
            row("h1", "voter", false, 0, false),
            row("h2", "voter", false, 0, false),
            row("h3", "voter", true, 40, false),
            row("h4", "standby", true, 42, false),
        ];
        let (s, reason) = decide_quorum(&hosts, &[], &names(&["h1", "h2", "h3"]));
        assert_eq!(s, QuorumState::Lost, "{reason}");
        assert!(reason.contains("h1, h2"), "{reason}");
    }

    #[test]
    fn an_agent_reporting_loss_wins() {
        let hosts = vec![
            row("h1", "voter", true, 5, false),
            row("h2", "voter", true, 5, false),
        ];
        let says = [AgentSays {
            host: "h2".into(),
            quorum: "lost".into(),
        }];
        let (s, _) = decide_quorum(&hosts, &says, &names(&["h1", "h2", "h3"]));
        assert_eq!(s, QuorumState::Lost);
    }

    #[test]
    fn nothing_reachable_is_unknown_not_lost() {
        let hosts = vec![
            row("h1", "voter", false, 0, false),
            row("h2", "voter", false, 0, false),
        ];
        let (s, _) = decide_quorum(&hosts, &[], &names(&["h1", "h2", "h3"]));
        assert_eq!(s, QuorumState::Unknown);
    }

    #[test]
    fn no_leader_with_majority_reachable_is_unknown() {
        let hosts = vec![
            row("h1", "voter", true, 5, false),
            row("h2", "voter", true, 5, false),
            row("h3", "voter", false, 0, false),
        ];
        let (s, _) = decide_quorum(&hosts, &[], &names(&["h1", "h2", "h3"]));
        assert_eq!(s, QuorumState::Unknown);
    }

    #[test]
    fn freshest_is_the_highest_commit_then_applied_index_ties_to_a_voter() {
        let hosts = vec![
            row("h1", "voter", false, 0, false),
            row("h3", "standby", true, 42, false),
            row("h2", "voter", true, 42, false),
            row("h4", "spare", true, 7, false),
        ];
        assert_eq!(freshest(&hosts).map(|h| h.name.as_str()), Some("h2"));
        let hosts = vec![
            row("h3", "standby", true, 50, false),
            row("h2", "voter", true, 42, false),
        ];
        assert_eq!(freshest(&hosts).map(|h| h.name.as_str()), Some("h3"));
        assert!(freshest(&[row("h1", "voter", false, 0, false)]).is_none());
    }

    #[test]
    fn recovery_command_names_the_freshest_host_and_the_lost_ones() {
        let hosts = vec![
            row("h1", "voter", false, 0, false),
            row("h2", "voter", false, 0, false),
            row("h3", "voter", true, 40, false),
            row("h4", "standby", true, 42, false),
        ];
        let r = recovery(
            "h4",
            "/etc/edgeplane/edgeplane.toml",
            &hosts,
            &names(&["h1", "h2", "h3"]),
            QuorumLossPolicy::Manual,
        );
        assert_eq!(
            r.command,
            "edgeplane recover --config /etc/edgeplane/edgeplane.toml --from h4 --confirm"
        );
        assert_eq!(r.lost_hosts, names(&["h1", "h2"]));
        assert!(r.note.starts_with("Power off h1, h2 first"), "{}", r.note);
    }

    fn test_config() -> Config {
        let text = r#"
            profile = "edge"
            host = "h3"
            site = "s"
            [cluster]
            voters = 3
            [[nodes]]
            name = "h1"
            peer_url = "http://127.0.0.1:1"
            client_url = "http://127.0.0.1:2"
            agent_url = "http://127.0.0.1:3"
            [[nodes]]
            name = "h2"
            peer_url = "http://127.0.0.1:4"
            client_url = "http://127.0.0.1:5"
            agent_url = "http://127.0.0.1:6"
            [[nodes]]
            name = "h3"
            peer_url = "http://127.0.0.1:7"
            client_url = "http://127.0.0.1:8"
            agent_url = "http://127.0.0.1:9"
            [[nodes]]
            name = "h4"
            peer_url = "http://127.0.0.1:10"
            client_url = "http://127.0.0.1:11"
            agent_url = "http://127.0.0.1:12"
            [paths]
            root = "/nonexistent/edgeplane-diag-test"
            [uplink]
            enabled = false
            [tls]
            allow_plaintext = true
        "#;
        match edgeplane_config::load_str(text, Path::new("t.toml")) {
            Ok(l) => l.config,
            Err(e) => panic!("test config: {e}"),
        }
    }

    fn st(id: u64, leader: u64, applied: u64, learner: bool) -> probe::EtcdStatus {
        probe::EtcdStatus {
            member_id: id,
            leader,
            raft_index: applied,
            applied_index: applied,
            term: 2,
            is_learner: learner,
            db_size: 20480,
            db_in_use: 16384,
            errors: if leader == 0 {
                vec!["etcdserver: no leader".into()]
            } else {
                vec![]
            },
            version: "3.4.23".into(),
        }
    }

    fn facts(cfg: &Config, probes: Probes) -> Facts<'_> {
        Facts {
            cfg,
            config_path: "/etc/edgeplane/edgeplane.toml".into(),
            now: Utc::now(),
            probes,
            etcd_local: local::etcd_local(
                Path::new("/nonexistent/etcd"),
                Path::new("/nonexistent/state"),
            ),
            agent_pids: vec![],
            journal: Err("no state".into()),
            buffer: Err("no buffer".into()),
            snapshots: Ok(vec![]),
            cache: None,
        }
    }

    /// `diag status` shows the snapshot space as the agent reports it in
    /// `/status` (budget, used, free, reserve, refusals), not recomputed.
    #[test]
    fn snapshot_space_comes_from_the_agent_status() {
        let cfg = test_config();
        let mut probes = Probes::none(&cfg.nodes, "connection refused");
        probes.agents[2].doc = Ok(serde_json::json!({"role": "voter",
            "snapshot_space": {"max_bytes": 10485760, "min_free_bytes": 1073741824,
                "used_bytes": 2097152, "free_bytes": 5368709120u64, "refused": 3,
                "last_refusal": "2026-12-03T06:00:00Z a peer copy: the snapshot budget would be exceeded"}}));
        let r = build(&facts(&cfg, probes));
        let space = r.snapshots.data.as_ref().and_then(|s| s.space.clone());
        assert_eq!(
            space.as_ref().map(|s| (
                s.max_bytes,
                s.used_bytes,
                s.free_bytes,
                s.min_free_bytes,
                s.refused
            )),
            Some((10 << 20, Some(2 << 20), Some(5 << 30), 1 << 30, 3))
        );
        let text = render(&r);
        let line = text
            .lines()
            .find(|l| l.contains("space:"))
            .unwrap_or_default();
        for want in ["budget", "used", "free", "reserve", "3 write(s) refused"] {
            assert!(line.contains(want), "{want} in {line:?}");
        }
        assert!(text.contains("! last refused:"), "{text}");
        // No agent: no space line (diag does not measure it itself).
        let r = build(&facts(&cfg, Probes::none(&cfg.nodes, "connection refused")));
        assert!(r.snapshots.data.as_ref().is_some_and(|s| s.space.is_none()));
        assert!(!render(&r).contains("space:"));
    }

    #[test]
    fn an_unreadable_key_is_named_as_a_permission_problem_not_power_or_network() {
        let cfg = test_config();
        let err = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let why = format!(
            "TLS: cannot read /etc/edgeplane/tls/host.key: {}",
            crate::tls::read_hint(&err)
        );
        let r = build(&facts(&cfg, Probes::none(&cfg.nodes, &why)));
        let text = render(&r);
        assert!(
            text.contains("the key is not readable by this user"),
            "{text}"
        );
        assert!(text.contains("run as root"), "{text}");
        assert!(!text.contains("check power and network"), "{text}");
    }

    #[test]
    fn quorum_lost_is_the_first_line_with_the_recovery_command() {
        let cfg = test_config();
        let mut probes = Probes::none(&cfg.nodes, "connection refused");
        probes.etcd[2].status = Ok(st(3, 0, 40, false));
        probes.etcd[3].status = Ok(st(4, 0, 42, true));
        let r = build(&facts(&cfg, probes));
        assert_eq!(r.verdict, Verdict::QuorumLost);
        assert_eq!(r.exit_code(), 2);
        let text = render(&r);
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("QUORUM LOST"), "{first}");
        // Run on h1 for h4: it says where to run it (operator actions are
        // taken only by the host itself).
        assert!(
            first.contains("on h4: edgeplane recover --from h4 --confirm"),
            "{first}"
        );
        assert!(text.contains("Power off h1, h2 first"), "{text}");
        // Roles come from config order when no member list is readable.
        assert_eq!(r.hosts[3].role, "standby");
    }

    /// Issue #14 §3: `diag` shows the votes (who voted, for whom) and why
    /// this host's agent waits.
    #[test]
    fn quorum_lost_shows_the_votes_and_why_the_agent_waits() {
        let cfg = test_config();
        let mut probes = Probes::none(&cfg.nodes, "connection refused");
        probes.etcd[2].status = Ok(st(3, 0, 40, false));
        probes.etcd[3].status = Ok(st(4, 0, 42, true));
        probes.agents[2].doc = Ok(serde_json::json!({"role": "voter", "quorum": "lost",
            "recovery": {"freshest": "h4", "wait": "other_rebuilds",
                         "state": "waiting: h4 has the freshest data and rebuilds"}}));
        probes.agents[3].doc = Ok(serde_json::json!({"role": "learner", "quorum": "lost",
            "recovery": {"freshest": "h4", "wait": "no_vote_majority"}}));
        let r = build(&facts(&cfg, probes));
        let rec = r
            .recovery
            .clone()
            .unwrap_or_else(|| panic!("no recovery: {r:?}"));
        assert_eq!(rec.votes_needed, 3);
        let seen: Vec<(&str, Option<&str>)> = rec
            .votes
            .iter()
            .map(|v| (v.voter.as_str(), v.for_host.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("h1", None),
                ("h2", None),
                ("h3", Some("h4")),
                ("h4", Some("h4"))
            ]
        );
        assert_eq!(
            rec.agent_waits,
            Some(crate::agent::recovery_plan::WaitReason::OtherRebuilds)
        );
        let text = render(&r);
        assert!(
            text.contains("Votes (3 of 4 needed for an automatic rebuild): h1 -> (no answer), h2 -> (no answer), h3 -> h4, h4 -> h4"),
            "{text}"
        );
        assert!(
            text.contains("This host's agent: waiting: h4 has the freshest data"),
            "{text}"
        );
        // The JSON names them too.
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(
            json["recovery"]["votes"][2],
            serde_json::json!({"voter": "h3", "for": "h4"})
        );
        assert_eq!(json["recovery"]["agent_waits"], "other_rebuilds");
    }

    #[test]
    fn a_split_brain_alarm_is_the_first_line_with_what_to_do() {
        let cfg = test_config();
        let mut probes = Probes::none(&cfg.nodes, "connection refused");
        for (i, p) in probes.etcd.iter_mut().enumerate() {
            p.status = Ok(st(i as u64 + 1, 1, 100, i == 3));
        }
        probes.agents[1].doc = Ok(serde_json::json!({"role": "voter", "quorum": "ok",
            "split_brain": {"others": ["h4"], "action": "on every host of the side you give up run `systemctl stop edgeplane`"}}));
        let r = build(&facts(&cfg, probes));
        assert_eq!(r.verdict, Verdict::SplitBrain);
        assert_eq!(r.exit_code(), 2);
        let text = render(&r);
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("SPLIT BRAIN: the agent on h2"), "{first}");
        assert!(first.contains("h4"), "{first}");
        assert!(text.contains("systemctl stop edgeplane"), "{text}");
    }

    #[test]
    fn healthy_site_is_ok_and_roles_come_from_the_member_list() {
        let cfg = test_config();
        let mut probes = Probes::none(&cfg.nodes, "connection refused");
        for (i, p) in probes.etcd.iter_mut().enumerate() {
            p.status = Ok(st(i as u64 + 1, 1, 100 - i as u64, i == 3));
        }
        for a in probes.agents.iter_mut() {
            a.doc = Ok(
                serde_json::json!({"role": "voter", "quorum": "ok", "progress": {"queue_depth": 0, "last_reconcile_age_ms": 120}}),
            );
        }
        probes.members = Some((
            "h1".into(),
            cfg.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| ListedMember {
                    id: i as u64 + 1,
                    name: n.name.clone(),
                    peer_url: n.peer_url.clone(),
                    is_learner: i == 3,
                })
                .collect(),
        ));
        probes.alarms = Ok(vec![]);
        let r = build(&facts(&cfg, probes));
        assert_eq!(r.verdict, Verdict::Ok, "{}", r.headline);
        assert_eq!(r.leader.as_deref(), Some("h1"));
        assert_eq!(r.hosts[3].role, "standby");
        assert_eq!(r.hosts[3].lag, Some(3));
        assert!(render(&r).starts_with("OK: 3 voters + standby, leader h1"));
        assert_eq!(r.agent.data.as_ref().map(|a| a.queue_depth), Some(0));
        // The JSON round-trips through the same types.
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: StatusReport =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(back, r);
    }

    #[test]
    fn buffer_section_from_a_real_buffer_while_its_writer_holds_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut cfg = test_config();
        cfg.paths.buffer_dir = dir.path().join("buffer");
        let mut buf = edgeplane_buffer::Buffer::open(
            &cfg.paths.buffer_dir,
            edgeplane_buffer::Options {
                budget_bytes: 8 << 20,
                segment_bytes: 1 << 20,
                ..Default::default()
            },
        )?;
        let now = Utc::now().timestamp_millis();
        let samples: Vec<edgeplane_buffer::Sample> = (0..100)
            .map(|i| edgeplane_buffer::Sample {
                labels: vec![("__name__".into(), "up".into())],
                timestamp_ms: now - 60_000 + i,
                value: 1.0,
            })
            .collect();
        buf.append("normal", &samples)?;
        let mut f = facts(&cfg, Probes::none(&cfg.nodes, "refused"));
        f.buffer = read_buffer(&cfg);
        let r = build(&f);
        assert_eq!(r.buffer.source, Source::Live, "{:?}", r.buffer.error);
        let b = r
            .buffer
            .data
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no data"))?;
        let normal = b
            .classes
            .iter()
            .find(|c| c.class == "normal")
            .ok_or_else(|| anyhow::anyhow!("no class normal"))?;
        assert_eq!(normal.samples, 100);
        assert!(normal.oldest_age_s.is_some_and(|a| a >= 59.0));
        assert!(render(&r).contains("CLASS"));
        Ok(())
    }

    #[test]
    fn a_cut_off_host_shows_last_known_rows_from_the_cache() {
        let cfg = test_config();
        let probes = Probes::none(&cfg.nodes, "connection refused");
        let mut f = facts(&cfg, probes);
        let mut cached = row("h1", "voter", true, 77, true);
        cached.age_s = Some(0.0);
        f.cache = Some(Cache {
            saved_ms: f.now.timestamp_millis() - 60_000,
            hosts: vec![cached],
            agent: None,
            link: None,
        });
        let r = build(&f);
        assert_eq!(r.verdict, Verdict::QuorumUnknown);
        assert_eq!(r.hosts[0].source, Source::LastKnown);
        assert_eq!(r.hosts[0].applied_index, Some(77));
        assert!(!r.hosts[0].leader && !r.hosts[0].etcd_up);
        assert!(r.hosts[0].age_s.is_some_and(|a| a >= 59.0));
        assert_eq!(r.hosts[1].source, Source::Unavailable);
        assert!(
            render(&r).contains("last-known 1m 0s old"),
            "{}",
            render(&r)
        );
    }
}
