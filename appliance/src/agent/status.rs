//! The status contract: the document each agent publishes at `/status`
//! (`StatusDoc`), which `diag`, `edgeplane recover`, the tests and the
//! campaign read, and `Shared`, the cell the reconcile loop writes it to and
//! the API serves it from. A module of its own so that the loop (`local`),
//! the API (`api`) and the process wiring (`mod`) all depend on it and not
//! on each other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_config::Config;
use serde::{Deserialize, Serialize};

use super::recovery_plan::{Vote, WaitReason};
use super::{observe, operation, plan, recovery_plan, state};

/// The schema name and version of [`StatusDoc`], in its `schema` field. The
/// version goes up when a field changes meaning or goes away; readers
/// ignore fields they do not know and read a missing one as its default, so
/// an added field keeps it (and `diag` reads an older agent's document).
pub const STATUS_SCHEMA: &str = "edgeplane.status/1";

/// Everything `/status` reports: this host's view of the site. It reads
/// back with `serde` (diag, the tests and the campaign can take it typed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusDoc {
    /// [`STATUS_SCHEMA`].
    pub schema: String,
    /// When this document was produced (ms since the epoch), for clock checks.
    pub now_ms: i64,
    pub host: String,
    pub site: String,
    pub version: String,
    /// `voter`, `learner`, `spare` (not a member), `starting`, `waiting`.
    pub role: plan::Role,
    pub member_id: Option<String>,
    pub coordinator: bool,
    pub ready: bool,
    pub ready_reason: String,
    /// `ok`, `lost` or `unknown`.
    pub quorum: recovery_plan::Quorum,
    /// Set while this host's cluster has a leader and another live cluster
    /// (or a newer epoch) is reported: a split brain only a human resolves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<SplitBrainDoc>,
    /// The number of the site CRL in force here; peers with a lower one
    /// take it from `GET /crl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl_number: Option<u64>,
    /// The last configuration reload (SIGHUP), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadDoc>,
    /// The last membership decision, in a sentence.
    pub decision: String,
    pub etcd: EtcdDoc,
    pub local: Option<observe::EtcdStatus>,
    pub members: Vec<MemberDoc>,
    pub hosts: Vec<HostDoc>,
    /// The long operation running off the reconcile loop, if any (one at a
    /// time: a fence, a defragmentation, a compaction, a rebuild).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<operation::OperationDoc>,
    pub progress: Progress,
    /// The snapshot directory's budget, reserve, use and refusals.
    pub snapshot_space: Option<edgeplane_snapshot::SpaceDoc>,
    /// The snapshot scrub: files verified again, found corrupt, replaced.
    pub snapshot_scrub: Option<edgeplane_snapshot::ScrubDoc>,
    pub journal: JournalDoc,
    /// Flap damping: removals within `cluster.flap_window`, damped hosts.
    pub flap: FlapDoc,
    pub epoch: u64,
    pub recovery: RecoveryDoc,
    /// The metrics pipeline: link state, backlog per class, shed counts, flush rate.
    pub metrics: Option<edgeplane_metrics::status::MetricsStatus>,
}

impl StatusDoc {
    /// The agent's state in one line, for `sd_notify` `STATUS=` (what
    /// `systemctl status edgeplane` shows): role, quorum, readiness, alarms
    /// and the last decision. At most 200 characters, no newline.
    pub fn one_line(&self) -> String {
        let mut line = format!("{} {}, quorum {}", self.role, self.host, self.quorum);
        if self.coordinator {
            line.push_str(", coordinator");
        }
        if self.split_brain.is_some() {
            line.push_str(", SPLIT BRAIN (see edgeplane diag status)");
        }
        if self.ready {
            line.push_str(", ready");
        } else {
            line.push_str(&format!(", not ready: {}", self.ready_reason));
        }
        if let Some(op) = &self.operation {
            line.push_str(&format!("; running {:?} on {}", op.kind, op.target));
        }
        if !self.decision.is_empty() {
            line.push_str(&format!("; {}", self.decision));
        }
        let mut line: String = line.replace(['\n', '\r'], " ");
        if line.chars().count() > 200 {
            line = line.chars().take(199).collect();
            line.push('…');
        }
        line
    }
}

/// The last configuration reload (SIGHUP) in `/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadDoc {
    /// When it was read (ms since the epoch).
    pub at_ms: i64,
    /// The parts applied.
    pub applied: Vec<super::reload_plan::Reloadable>,
    /// Keys that changed in the file but take effect only at the agent's
    /// next start (their running values are kept).
    pub pending_restart: Vec<String>,
    /// Why the file was not taken at all (it does not load), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The split-brain alarm in `/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitBrainDoc {
    /// Hosts reporting another live cluster or a newer epoch.
    pub others: Vec<String>,
    /// What to do, in a sentence, with the command.
    pub action: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdDoc {
    pub running: bool,
    pub pid: Option<i32>,
    pub adopted: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberDoc {
    pub id: String,
    pub name: String,
    pub peer_url: String,
    pub is_learner: bool,
    pub reachable: bool,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    /// For a learner: catching up, caught up, or fell behind after catching up.
    pub standby: Option<plan::StandbyState>,
    /// For a learner that fell behind: for how long.
    pub behind_for_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostDoc {
    pub name: String,
    pub etcd_up: bool,
    pub etcd_down_for_s: f64,
    pub agent_up: bool,
    pub agent_down_for_s: f64,
    pub agent_role: Option<plan::Role>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub ticks: u64,
    pub last_reconcile_age_ms: u64,
    /// Operations decided but not yet finished.
    pub queue_depth: usize,
    pub stalled: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalDoc {
    pub promotions: u64,
    pub removals: u64,
    pub evictions: u64,
    pub joins: u64,
    /// Removals whose detection window was damped because the host had
    /// been removed within `cluster.flap_window` (a flapping host).
    pub flap_removals: u64,
    pub recent: Vec<state::Op>,
}

/// Flap damping as this agent sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FlapDoc {
    /// `cluster.flap_window`.
    pub window_s: f64,
    /// Removals this agent made within the window, oldest first (the
    /// coordinator merges every agent's list: its history survives a
    /// change of coordinator).
    pub recent_removals: Vec<plan::PastRemoval>,
    /// Members whose detection window is damped now.
    pub damped_hosts: Vec<DampedHost>,
}

/// A member removed within `cluster.flap_window`, and what that does to its
/// detection window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DampedHost {
    pub host: String,
    pub recent_removals: u32,
    /// The detection window's factor (2, 4, at most 8).
    pub factor: u32,
    /// `failure_detection` × `factor`.
    pub detection_s: f64,
}

/// What `POST /recover` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// The operator confirms the lost hosts are powered off.
    pub confirm: bool,
    /// Rebuild from this snapshot file (an absolute path on this host)
    /// instead of this host's etcd data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
}

/// What the agent knows about a quorum loss (in `/status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoveryDoc {
    pub quorum_lost: bool,
    pub policy: String,
    /// Voters of the last member list that do not answer.
    pub lost_voters: Vec<String>,
    /// The reachable host with the freshest data (highest applied index).
    pub freshest: Option<String>,
    /// The exact command that recovers, when recovery needs a human.
    pub command: Option<String>,
    /// What the agent is doing or waiting for, in a sentence.
    pub state: String,
    /// Why it waits (typed), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReason>,
    /// Every configured node's vote as this host sees it: who names whom
    /// the freshest (`for` is null when its agent does not answer).
    pub votes: Vec<Vote>,
    /// Votes an automatic rebuild needs: a strict majority of the
    /// configured nodes.
    pub votes_needed: usize,
}

/// State shared between the loop and the API.
pub struct Shared {
    doc: Mutex<StatusDoc>,
    started: Instant,
    /// Milliseconds since `started` of the last completed reconcile.
    last_tick_ms: AtomicU64,
    /// Set once the first iteration completed.
    ticked: AtomicBool,
    pub stall_after: Duration,
    /// The API is served over TLS, so callers are known by certificate.
    pub tls: bool,
    recover: Mutex<Option<RecoverRequest>>,
    /// Snapshot writes refused for space (peer uploads and scheduled snapshots).
    pub snapshot_space: Arc<edgeplane_snapshot::SpaceReport>,
    /// Snapshot files the scrub verified, found corrupt and replaced.
    pub snapshot_scrub: Arc<edgeplane_snapshot::ScrubReport>,
    pub metrics: Mutex<Option<edgeplane_metrics::pipeline::PipelineHandle>>,
    /// The site's CRL in force here (empty on a plaintext site).
    pub crl: crate::crl::CrlState,
    /// The last configuration reload.
    pub reload: Mutex<Option<ReloadDoc>>,
    /// Where this host's snapshots and its copies of peers' are (for `/metrics`).
    pub snapshot_dir: std::path::PathBuf,
}

impl Shared {
    /// The cell of an agent starting on `cfg`'s host, before its first tick;
    /// `tls`: whether the API is served over TLS.
    pub fn new(cfg: &Config, tls: bool, crl: crate::crl::CrlState) -> Shared {
        Shared {
            doc: Mutex::new(StatusDoc {
                host: cfg.host.clone(),
                site: cfg.site.clone(),
                ready_reason: "agent starting".into(),
                ..StatusDoc::default()
            }),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            ticked: AtomicBool::new(false),
            stall_after: (cfg.cluster.reconcile_interval * 25).max(Duration::from_secs(5)),
            tls,
            recover: Mutex::new(None),
            snapshot_dir: cfg.paths.snapshot_dir.clone(),
            snapshot_space: Arc::new(edgeplane_snapshot::SpaceReport::default()),
            snapshot_scrub: Arc::new(edgeplane_snapshot::ScrubReport::default()),
            metrics: Mutex::new(None),
            crl,
            reload: Mutex::new(None),
        }
    }

    pub fn status(&self) -> StatusDoc {
        let mut doc = self.doc.lock().map(|d| d.clone()).unwrap_or_default();
        doc.schema = STATUS_SCHEMA.to_string();
        doc.crl_number = self.crl.current().map(|c| c.number);
        doc.reload = self.reload.lock().ok().and_then(|r| r.clone());
        doc.metrics = self
            .metrics
            .lock()
            .ok()
            .and_then(|m| m.as_ref().map(|h| h.status()));
        doc
    }

    /// The metrics pipeline's own series (`edgeplane_metrics_*`), if it runs.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .lock()
            .ok()
            .and_then(|m| m.as_ref().map(|h| h.render_prometheus()))
            .unwrap_or_default()
    }

    pub fn set_status(&self, doc: StatusDoc) {
        if let Ok(mut d) = self.doc.lock() {
            *d = doc;
        }
    }

    pub fn loop_age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_tick_ms.load(Ordering::Relaxed)))
    }

    /// Asks the loop to recover from quorum loss (`POST /recover`).
    pub fn request_recover(&self, req: RecoverRequest) {
        if let Ok(mut r) = self.recover.lock() {
            *r = Some(req);
        }
    }

    pub fn take_recover_request(&self) -> Option<RecoverRequest> {
        self.recover.lock().ok().and_then(|mut r| r.take())
    }

    /// Whether the loop completed at least one iteration.
    pub fn ticks_done(&self) -> bool {
        self.ticked.load(Ordering::Relaxed)
    }

    /// Records that the loop completed an iteration (the watchdog and
    /// `/healthz` read it).
    pub fn tick(&self) {
        self.ticked.store(true, Ordering::Relaxed);
        self.last_tick_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The `journal.recent` records of an agent's `/status` document (none if
/// it has no journal).
pub fn recent_ops(doc: &serde_json::Value) -> &[serde_json::Value] {
    doc.pointer("/journal/recent")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The space limits of this host's snapshot directory.
pub fn snapshot_budget(cfg: &Config) -> edgeplane_snapshot::Budget {
    edgeplane_snapshot::Budget {
        max_bytes: cfg.snapshots.max_bytes,
        min_free_bytes: cfg.snapshots.min_free_bytes,
    }
}

#[cfg(test)]
mod status_line_tests {
    use super::*;

    /// What the agent writes, a reader takes back whole: every field, the
    /// hex member IDs and the typed enums included.
    #[test]
    fn the_status_document_reads_back_as_it_was_written() -> anyhow::Result<()> {
        let doc = StatusDoc {
            schema: STATUS_SCHEMA.into(),
            host: "edge-1".into(),
            role: plan::Role::Learner,
            quorum: recovery_plan::Quorum::Lost,
            local: Some(observe::EtcdStatus {
                cluster_id: 0xdead_beef,
                member_id: 0x8974_b2dc_ce6d_b3b1,
                leader: 0,
                raft_index: 7,
                applied_index: 6,
                revision: 1200,
                term: 3,
                is_learner: true,
                db_size: 1 << 20,
                db_in_use: 1 << 19,
                errors: vec!["NOSPACE".into()],
                version: "3.4.23".into(),
            }),
            snapshot_scrub: Some(edgeplane_snapshot::ScrubDoc {
                corrupt: 1,
                unrepaired: vec!["a.etcd.zst".into()],
                ..Default::default()
            }),
            recovery: RecoveryDoc {
                votes: vec![Vote {
                    voter: "edge-2".into(),
                    for_host: Some("edge-2".into()),
                }],
                wait: Some(WaitReason::Human),
                ..RecoveryDoc::default()
            },
            ..StatusDoc::default()
        };
        let json = serde_json::to_value(&doc)?;
        assert_eq!(json["local"]["member_id"], "8974b2dcce6db3b1");
        let back: StatusDoc = serde_json::from_value(json.clone())?;
        assert_eq!(serde_json::to_value(&back)?, json);
        assert_eq!(back.local.map(|l| l.member_id), Some(0x8974_b2dc_ce6d_b3b1));
        Ok(())
    }

    #[test]
    fn one_line_says_role_quorum_readiness_and_decision_in_one_short_line() {
        let mut doc = StatusDoc {
            host: "edge-2".into(),
            role: plan::Role::Voter,
            ready: true,
            decision: "steady: 3 voters healthy,\nstandby in sync".into(),
            ..StatusDoc::default()
        };
        let line = doc.one_line();
        assert!(line.starts_with("voter edge-2, quorum "), "{line}");
        assert!(
            line.contains(", ready; steady: 3 voters healthy, standby in sync"),
            "{line}"
        );
        doc.ready = false;
        doc.ready_reason = "etcd not started".into();
        doc.decision = "x".repeat(500);
        let line = doc.one_line();
        assert!(line.contains("not ready: etcd not started"), "{line}");
        assert_eq!(line.chars().count(), 200);
        assert!(!line.contains('\n'));
    }
}
