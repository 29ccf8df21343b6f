//! The agent: `edgeplane agent --config FILE`, one per host.
//!
//! One loop per host, every `cluster.reconcile_interval`:
//!
//! 1. **observe** every host's etcd and agent (`observe`);
//! 2. **supervise** the local etcd: start, adopt, restart, or, when the
//!    cluster removed this member, move its data aside and rejoin (`local`);
//! 3. if this host is not a member, **join** as the standby when the one
//!    learner slot is free and it is first in line (`local`);
//! 4. if the local etcd is the leader, **coordinate**: one step of `plan`
//!    (remove a dead voter, promote the standby, evict a stuck learner),
//!    journalled before and after (`coordinate`);
//! 5. if the leader's agent is dead or stalled, move leadership to a healthy
//!    voter so that some agent coordinates again.
//!
//! Long operations (a fence, a defragmentation, a compaction, the
//! quorum-loss rebuild) are decided and journalled by the loop but run off
//! it, one at a time, owned by `operation::Runner` and shown in `/status` as
//! `operation`: the loop keeps observing and publishing meanwhile, and
//! systemd's watchdog is fed from the loop's progress only (`notify`). An
//! operation that works on this host's etcd (the offline defrag, the
//! rebuild) is lent its supervisor; supervision leaves etcd alone until it
//! ends, then starts it by its normal path.
//!
//! Membership steps are serialised by etcd's raft (only the leader commits
//! them), and each step is decided against the member list read in the same
//! tick, so two agents that both believe they coordinate can never promote
//! two standbys for one loss (etcd 3.4 has a single learner slot) nor exceed
//! the configured voter count (a promotion is only ever sent while voters <
//! configured).

pub mod api;
pub mod coordinate;
pub mod defrag;
pub mod disk_fault;
pub mod etcd;
pub mod local;
pub mod notify;
pub mod observe;
pub mod operation;
pub mod plan;
pub mod recover;
pub mod recovery_plan;
pub mod snapshots;
pub mod state;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgeplane_config::Config;
use serde::Serialize;

use crate::cli::AgentArgs;
use crate::{BadConfig, logging};

/// Everything `/status` reports: this host's view of the site.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusDoc {
    /// When this document was produced (ms since the epoch), for clock checks.
    pub now_ms: i64,
    pub host: String,
    pub site: String,
    pub version: String,
    /// `voter`, `learner`, `spare` (not a member), `starting`, `waiting`.
    pub role: String,
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
    pub journal: JournalDoc,
    /// Flap damping: removals within `cluster.flap_window`, damped hosts.
    pub flap: FlapDoc,
    pub epoch: u64,
    pub recovery: recover::RecoveryDoc,
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

/// The split-brain alarm in `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitBrainDoc {
    /// Hosts reporting another live cluster or a newer epoch.
    pub others: Vec<String>,
    /// What to do, in a sentence, with the command.
    pub action: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EtcdDoc {
    pub running: bool,
    pub pid: Option<i32>,
    pub adopted: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostDoc {
    pub name: String,
    pub etcd_up: bool,
    pub etcd_down_for_s: f64,
    pub agent_up: bool,
    pub agent_down_for_s: f64,
    pub agent_role: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub ticks: u64,
    pub last_reconcile_age_ms: u64,
    /// Operations decided but not yet finished.
    pub queue_depth: usize,
    pub stalled: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct DampedHost {
    pub host: String,
    pub recent_removals: u32,
    /// The detection window's factor (2, 4, at most 8).
    pub factor: u32,
    /// `failure_detection` × `factor`.
    pub detection_s: f64,
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
    recover: Mutex<Option<recover::RecoverRequest>>,
    /// Snapshot writes refused for space (peer uploads and scheduled snapshots).
    pub snapshot_space: Arc<edgeplane_snapshot::SpaceReport>,
    pub metrics: Mutex<Option<edgeplane_metrics::pipeline::PipelineHandle>>,
    /// Where this host's snapshots and its copies of peers' are (for `/metrics`).
    pub snapshot_dir: std::path::PathBuf,
}

impl Shared {
    pub fn status(&self) -> StatusDoc {
        let mut doc = self.doc.lock().map(|d| d.clone()).unwrap_or_default();
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
    pub fn request_recover(&self, req: recover::RecoverRequest) {
        if let Ok(mut r) = self.recover.lock() {
            *r = Some(req);
        }
    }

    pub fn take_recover_request(&self) -> Option<recover::RecoverRequest> {
        self.recover.lock().ok().and_then(|mut r| r.take())
    }

    /// Whether the loop completed at least one iteration.
    pub fn ticks_done(&self) -> bool {
        self.ticked.load(Ordering::Relaxed)
    }

    fn tick(&self) {
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

/// Serves `app` on `listener` until `stop` turns true.
fn spawn_server(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = api::serve(listener, app, tls, shutdown).await {
            tracing::error!("{what} stopped: {e}.");
        }
    })
}

/// `edgeplane agent`: load the config (exit 78 if bad), then run until SIGTERM.
pub fn main(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let loaded = match edgeplane_config::load(&args.config) {
        Ok(l) => l,
        Err(e) => return Err(BadConfig(format!("{e}")).into()),
    };
    let cfg = loaded.config;
    let _guard = logging::init_agent(
        &cfg.log.level,
        &cfg.log.dir,
        cfg.log.to_files,
        cfg.log.retention_files,
    )?;
    for w in &loaded.warnings {
        tracing::warn!("Config: {w}");
    }
    crate::runtime()?.block_on(run(cfg, args.config.clone()))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(cfg: Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let me = cfg
        .nodes
        .iter()
        .find(|n| n.name == cfg.host)
        .cloned()
        .ok_or_else(|| BadConfig(format!("host {:?} is not among the nodes", cfg.host)))?;
    // Key permissions and every PEM file are checked before anything starts.
    let tls = crate::tls::SiteTls::load(&cfg).map_err(|e| BadConfig(e.to_string()))?;
    let server_tls = match &tls {
        Some(t) => Some(t.server_config().map_err(|e| BadConfig(e.to_string()))?),
        None => None,
    };
    let state = Arc::new(state::State::open(&cfg.paths.state_dir).with_context(|| {
        format!(
            "could not open the agent state in {}",
            cfg.paths.state_dir.display()
        )
    })?);
    let shared = Arc::new(Shared {
        doc: Mutex::new(StatusDoc {
            host: cfg.host.clone(),
            site: cfg.site.clone(),
            role: "starting".into(),
            ready_reason: "agent starting".into(),
            ..StatusDoc::default()
        }),
        started: Instant::now(),
        last_tick_ms: AtomicU64::new(0),
        ticked: AtomicBool::new(false),
        stall_after: (cfg.cluster.reconcile_interval * 25).max(Duration::from_secs(5)),
        tls: server_tls.is_some(),
        recover: Mutex::new(None),
        snapshot_dir: cfg.paths.snapshot_dir.clone(),
        snapshot_space: Arc::new(edgeplane_snapshot::SpaceReport::default()),
        metrics: Mutex::new(None),
    });

    let addr = api::listen_addr(&me.agent_url).context("agent_url has no host:port")?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("could not listen on {addr} (agent_url {})", me.agent_url))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_task = spawn_server(
        listener,
        api::router(
            shared.clone(),
            cfg.paths.snapshot_dir.clone(),
            snapshot_budget(&cfg),
        ),
        server_tls,
        stop_rx.clone(),
        "The agent API",
    );
    if let Some(addr) = &cfg.tls.health_listen {
        let health = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr} (tls.health_listen)"))?;
        spawn_server(
            health,
            api::health_router(shared.clone()),
            None,
            stop_rx.clone(),
            "The health listener",
        );
    }
    tracing::info!(host = %cfg.host, api = %me.agent_url, "Agent started.");

    if cfg.metrics.enabled {
        match edgeplane_metrics::pipeline::Pipeline::start(&cfg, &cfg.paths.buffer_dir, vec![]) {
            Ok(h) => {
                if let Ok(mut m) = shared.metrics.lock() {
                    *m = Some(h);
                }
            }
            // Metrics are never a reason to leave etcd unguarded: log and go on.
            Err(e) => tracing::error!(
                "The metrics pipeline did not start: {e}. etcd supervision continues without it."
            ),
        }
    }
    let mut agent = local::Agent::new(cfg, me, state, shared.clone(), tls)?;
    agent.config_path = config_path.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut interval = tokio::time::interval(agent.cfg.cluster.reconcile_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_sent = false;
    let mut last_status = String::new();
    // The watchdog follows the loop's progress, not any operation's.
    let watchdog = notify::watchdog_timeout();
    if let Some(timeout) = watchdog {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(notify::feed_every(timeout));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if shared.ticks_done() && notify::should_feed(shared.loop_age(), timeout) {
                            notify::notify("WATCHDOG=1");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let started = Instant::now();
                agent.tick().await;
                shared.tick();
                if watchdog.is_none() {
                    notify::notify("WATCHDOG=1");
                }
                let line = shared.status().one_line();
                if !ready_sent {
                    notify::notify(&format!("READY=1\nSTATUS={line}"));
                    ready_sent = true;
                    last_status = line;
                } else if line != last_status {
                    notify::notify(&format!("STATUS={line}"));
                    last_status = line;
                }
                // A loop this slow cannot coordinate the site in time: hand the
                // role (etcd leadership) to a peer whose loop is healthy.
                let took = started.elapsed();
                if took > shared.stall_after && agent.is_coordinator() {
                    tracing::warn!("This reconcile took {:.1}s; giving up the coordinating role.", took.as_secs_f64());
                    coordinate::hand_off_leadership(&mut agent).await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match edgeplane_config::load(&config_path) {
                    Ok(_) => tracing::warn!("SIGHUP: the configuration file is valid; Edgeplane applies configuration changes at the next start of the agent (systemctl restart edgeplane also stops and restarts this host's etcd member).."),
                    Err(e) => tracing::error!("SIGHUP: the configuration file is not valid and is ignored: {e}"),
                }
            }
        }
    }
    notify::notify("STOPPING=1");
    if notify::keep_etcd_on_stop() {
        tracing::info!(
            "Stopping the agent only (upgrade): etcd keeps running and the next agent adopts it."
        );
    } else {
        tracing::info!(
            "Stopping: moving leadership away if this member leads, then stopping etcd."
        );
        agent.shutdown().await;
    }
    let pipeline = shared.metrics.lock().ok().and_then(|mut m| m.take());
    if let Some(p) = pipeline
        && let Err(e) = p.shutdown().await
    {
        tracing::warn!("The metrics pipeline did not stop cleanly: {e}");
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
    tracing::info!("Agent stopped.");
    Ok(())
}

#[cfg(test)]
mod status_line_tests {
    use super::*;

    #[test]
    fn one_line_says_role_quorum_readiness_and_decision_in_one_short_line() {
        let mut doc = StatusDoc {
            host: "edge-2".into(),
            role: "voter".into(),
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
