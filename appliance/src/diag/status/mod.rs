//! `edgeplane diag status`: this host and the site, in one screen.
//!
//! [`gather_and_build`] runs the three steps, each in its own module:
//!
//! - `gather` probes the network ([`super::probe`]) and reads the disk
//!   ([`super::local`]) at once, into [`Facts`];
//! - `build`, a pure function of those facts, decides the roles, the
//!   leader, the quorum verdict, the host to recover from and the headline;
//! - `render` prints it; the first line is always the verdict, so a quorum
//!   loss is the first thing an engineer reads, followed by the exact
//!   recovery command.
//!
//! This module holds the report's types (also its `--json` document).

mod build;
mod gather;
mod render;

pub use build::{build, decide_quorum, freshest, recovery};
pub use gather::{gather, read_buffer};
pub use render::render;

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use edgeplane_config::{Config, QuorumLossPolicy};
use serde::{Deserialize, Serialize};

use super::local::{self, EtcdLocal, JournalRead, SnapFile};
use super::probe::{self, Alarm, ListedMember, Probes};
use super::{PROBE_TIMEOUT, Source, age_since_ms, human_age, human_bytes, table};
use crate::agent::plan::Role;
use crate::agent::recovery_plan::Quorum;
use crate::agent::state::{Op, Outcome};
use crate::agent::status::StatusDoc;

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
    pub quorum: Quorum,
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
    gather::save_cache(cfg, &report, facts.now);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partial `/status` document, as an older agent may send: the fields
    /// it lacks read as their defaults.
    fn status_doc(v: serde_json::Value) -> StatusDoc {
        serde_json::from_value(v).expect("a status document")
    }

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
            quorum: Quorum::Lost,
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
    fn freshest_is_the_highest_commit_then_applied_index_as_the_agents_rank() {
        // A tie goes to config order, as in the agents' own ranking (diag
        // once preferred a voter, and could name another host than they do).
        let hosts = vec![
            row("h1", "voter", false, 0, false),
            row("h3", "standby", true, 42, false),
            row("h2", "voter", true, 42, false),
            row("h4", "spare", true, 7, false),
        ];
        assert_eq!(freshest(&hosts).map(|h| h.name.as_str()), Some("h3"));
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
        probes.agents[2].doc = Ok(status_doc(serde_json::json!({"role": "voter",
            "snapshot_space": {"max_bytes": 10485760, "min_free_bytes": 1073741824,
                "used_bytes": 2097152, "free_bytes": 5368709120u64, "refused": 3,
                "last_refusal": "2026-12-03T06:00:00Z a peer copy: the snapshot budget would be exceeded"}})));
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
        probes.agents[2].doc = Ok(status_doc(
            serde_json::json!({"role": "voter", "quorum": "lost",
            "recovery": {"freshest": "h4", "wait": "other_rebuilds",
                         "state": "waiting: h4 has the freshest data and rebuilds"}}),
        ));
        probes.agents[3].doc = Ok(status_doc(
            serde_json::json!({"role": "learner", "quorum": "lost",
            "recovery": {"freshest": "h4", "wait": "no_vote_majority"}}),
        ));
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
        probes.agents[1].doc = Ok(status_doc(
            serde_json::json!({"role": "voter", "quorum": "ok",
            "split_brain": {"others": ["h4"], "action": "on every host of the side you give up run `systemctl stop edgeplane`"}}),
        ));
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
            a.doc = Ok(status_doc(
                serde_json::json!({"role": "voter", "quorum": "ok", "progress": {"queue_depth": 0, "last_reconcile_age_ms": 120}}),
            ));
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
