//! This host's side of the loop: supervise the local etcd and, when this host
//! is not a member, join the cluster as its standby.
//!
//! How the local etcd is started (decided again whenever it is not running)
//! is `start_plan::decide_start`, a pure function with property tests; this
//! module gathers its view and acts on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_config::{Config, Node};

use crate::tls::SiteTls;

use super::disk_fault::{self, Elsewhere, FsyncVerdict};
use super::etcd::{
    EtcdSpec, Exit, StartMode, Supervisor, has_any_data, has_member_data, move_aside,
};
use super::host::{FACT_MAX_REVISION, Host};
use super::observe::{View, same_url};
use super::plan::{self, Decision, Limits, Member, MembershipWait, Role};
use super::recovery_plan::{self, EpochDecision, OwnCluster, PeerCluster, PeerEtcd};
use super::start_plan::{Mine, StartDecision, StartView, decide_start};
use super::state::{KnownMembership, OpKind, Outcome, State};
use super::status::{
    DampedHost, EtcdDoc, FlapDoc, HostDoc, JournalDoc, MemberDoc, Progress, Shared, SplitBrainDoc,
    StatusDoc,
};

/// Fact: this host's etcd has been a member of a running cluster.
/// Bound on one snapshot upload to a peer agent.
const SNAPSHOT_COPY_TIMEOUT: Duration = Duration::from_secs(600);

const FACT_JOINED: &str = "joined";
/// How long before a newer CRL that could not be taken from a peer is
/// asked for again.
const CRL_RETRY: Duration = Duration::from_secs(30);
/// How long etcd may take to stop cleanly before its data is set aside.
const ABANDON_STOP_GRACE: Duration = Duration::from_secs(5);
/// Fact: etcd died on a failed fsync and its data was not set aside yet.
const FACT_FSYNC_FAILED: &str = "fsync_failed";

pub struct Agent {
    /// What the loop's activities (`coordinate`, `defrag`, `recover`,
    /// `snapshots`) share; each also gets its own state below.
    pub host: Host,
    last_exit: Option<String>,
    adopted: bool,
    ticks: u64,
    /// A newer CRL a peer offered could not be taken: not asked again
    /// before this (a peer that claims a CRL it cannot serve, or serves one
    /// that does not verify, must not cost every tick a request).
    crl_retry_at: Option<Instant>,
    /// Why the local etcd is not started (shown in `/status`).
    waiting: Option<String>,
    last_join_attempt: Option<Instant>,
    /// Since when the configured nodes whose agents do not answer are a
    /// strict majority (see `recovery_plan::decide_self_fence`).
    unseen_majority_since: Option<Instant>,
    /// This voter stopped its etcd because the other side may rebuild.
    pub self_fenced: bool,
    pub recovery: super::recover::Recovery,
    pub defrag: super::defrag::DefragState,
    pub snapshots: super::snapshots::SnapshotState,
    pub scrub: super::scrub::ScrubState,
    last_persist: Option<Instant>,
    /// The split-brain alarm, while it stands: its journal record and the
    /// hosts of the other side.
    split_brain: Option<(Option<u64>, Vec<String>)>,
    /// Set when etcd died on a failed fsync (EIO), until its data is set
    /// aside (persisted as a fact: a restarted agent must not trust the
    /// data either), with the journal record of the alarm while it waits.
    fsync_failed: Option<(String, Option<u64>)>,
}

/// What to do about a local etcd that is not running.
enum Next {
    Start(StartMode),
    Join,
    /// This host's standby (learner) member has no data any more (set
    /// aside after a failed fsync): remove it, so the host can join again
    /// at once instead of after `learner_stuck_after`.
    Leave(u64),
}

impl Agent {
    pub fn new(
        cfg: Config,
        me: Node,
        state: Arc<State>,
        shared: Arc<Shared>,
        tls: Option<SiteTls>,
    ) -> anyhow::Result<Agent> {
        let spec = EtcdSpec {
            binary: cfg.etcd.binary.clone(),
            name: me.name.clone(),
            data_dir: cfg.etcd.data_dir.clone(),
            client_url: me.client_url.clone(),
            peer_url: me.peer_url.clone(),
            heartbeat: cfg.etcd.heartbeat,
            election_timeout: cfg.etcd.election_timeout,
            quota_backend_bytes: cfg.etcd.quota_backend_bytes,
            pre_vote: cfg.etcd.pre_vote,
            extra_args: cfg
                .etcd
                .extra_args
                .iter()
                .cloned()
                .chain(tls.iter().flat_map(SiteTls::etcd_flags))
                .collect(),
            log_path: cfg.paths.state_dir.join("etcd.log"),
            pid_path: cfg.paths.state_dir.join("etcd.pid"),
        };
        let mut etcd = Supervisor::new(spec);
        let adopted = if let Some(pid) = etcd.adopt() {
            tracing::info!(pid, "Adopted the etcd left running by a previous agent.");
            true
        } else {
            false
        };
        // Operations a previous run left pending: the loop re-derives what to
        // do from the cluster itself, so close them as abandoned.
        for op in state.pending().unwrap_or_default() {
            tracing::warn!(id = op.id, kind = ?op.kind, target = %op.target, "Found an operation left pending by a previous run; the reconciler re-checks the cluster instead of replaying it.");
            state.close(
                op.id,
                Outcome::Abandoned,
                "agent restarted before the outcome was recorded",
            );
        }
        let my_index = cfg
            .nodes
            .iter()
            .position(|n| n.name == me.name)
            .unwrap_or(0);
        let limits = Limits {
            voters: cfg.cluster.voters,
            failure_detection: cfg.cluster.failure_detection,
            etcd_restart_grace: cfg.cluster.etcd_restart_grace,
            promotion_max_lag: cfg.cluster.promotion_max_lag,
            promotion_stable_for: cfg.cluster.promotion_stable_for,
            learner_stuck_after: cfg.cluster.learner_stuck_after,
            standby_behind_limit: cfg.cluster.standby_behind_limit,
            flap_window: cfg.cluster.flap_window,
        };
        let view = View::new(
            &cfg.nodes,
            &cfg.witnesses,
            my_index,
            cfg.cluster.promotion_max_lag,
            tls.as_ref(),
        )?;
        let max_revision = state
            .fact(FACT_MAX_REVISION)
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let known = match state.membership() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(
                    "Could not read the recorded membership: {e}; no automatic rebuild until it is seen again."
                );
                None
            }
        };
        let peer_http = crate::tls::agent_http_client(tls.as_ref(), SNAPSHOT_COPY_TIMEOUT)?;
        let fsync_failed = match state.fact(FACT_FSYNC_FAILED) {
            Ok(v) => v.filter(|s| !s.is_empty()).map(|why| (why, None)),
            Err(e) => {
                tracing::error!("Could not read whether etcd's fsync failed before: {e}");
                None
            }
        };
        Ok(Agent {
            host: Host {
                cfg,
                me,
                my_index,
                state,
                shared,
                etcd,
                view,
                limits,
                last_decision: Decision::Steady,
                quorum_suspect_since: None,
                config_path: std::path::PathBuf::new(),
                tls,
                known,
                max_revision,
                rebuilding_epoch: None,
                ops: super::operation::Runner::default(),
                peer_http,
            },
            last_exit: None,
            adopted,
            ticks: 0,
            crl_retry_at: None,
            waiting: None,
            last_join_attempt: None,
            unseen_majority_since: None,
            self_fenced: false,
            recovery: super::recover::Recovery::default(),
            defrag: super::defrag::DefragState::default(),
            snapshots: super::snapshots::SnapshotState::default(),
            scrub: super::scrub::ScrubState::default(),
            last_persist: None,
            split_brain: None,
            fsync_failed,
        })
    }

    /// What the other hosts' etcd and agents say about clusters and epochs,
    /// for [`recovery_plan::decide_epoch`].
    fn epoch_decision(&self) -> EpochDecision {
        let local = self.host.local_status();
        let own = OwnCluster {
            epoch: self.host.data_epoch(),
            has_data: has_member_data(&self.host.cfg.etcd.data_dir),
            cluster_id: self.host.view.my_cluster(),
            local_has_leader: local.is_some_and(voter_with_leader),
        };
        let peers: Vec<PeerCluster> = self
            .host
            .view
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.host.my_index)
            .map(|(_, p)| PeerCluster {
                name: p.node.name.clone(),
                epoch: p.agent_doc.as_ref().map(|_| super::observe::peer_epoch(p)),
                etcd: p.status.as_ref().map(|s| PeerEtcd {
                    cluster_id: s.cluster_id,
                    has_leader: voter_with_leader(s),
                }),
            })
            .collect();
        recovery_plan::decide_epoch(&own, &peers)
    }

    /// Records the membership of this host's cluster when it changed (read
    /// from a member of the cluster the local etcd belongs to).
    fn record_membership(&mut self) {
        let (Some(members), Some(cluster), Some(local)) = (
            &self.host.view.members,
            self.host.view.members_cluster,
            self.host.local_status(),
        ) else {
            return;
        };
        if cluster != local.cluster_id {
            return;
        }
        let seen = KnownMembership {
            cluster_id: cluster,
            epoch: self.host.data_epoch(),
            members: members.clone(),
        };
        self.remember_membership(seen);
    }

    /// Persists `seen` as this host's cluster membership when it changed.
    fn remember_membership(&mut self, seen: KnownMembership) {
        if self.host.known.as_ref() == Some(&seen) {
            return;
        }
        if let Err(e) = self.host.state.set_membership(Some(&seen)) {
            tracing::error!(
                "Could not record the cluster's membership: {e}; a restart would forget whom to fence."
            );
        }
        self.host.known = Some(seen);
    }

    /// Forgets the recorded membership: this host's data was set aside, so
    /// it belongs to no cluster until it joins one.
    fn forget_membership(&mut self) {
        if let Err(e) = self.host.state.set_membership(None) {
            tracing::error!("Could not clear the recorded membership: {e}");
        }
        self.host.known = None;
    }

    /// Raises, keeps or clears the split-brain alarm.
    fn set_split_brain(&mut self, others: Option<Vec<String>>) {
        match (others, self.split_brain.take()) {
            (Some(others), None) => {
                tracing::error!(
                    "SPLIT BRAIN: this host's cluster has a leader and ({}) report another live cluster or a newer epoch. Keeping this cluster; no data is moved. A human must choose a side.",
                    others.join(", ")
                );
                let op = self
                    .host
                    .state
                    .begin(
                        OpKind::SplitBrain,
                        &others.join(","),
                        "another live cluster or a newer epoch is reported while this cluster has a leader",
                    )
                    .map_err(|e| tracing::error!("Could not journal the split-brain alarm: {e}"))
                    .ok();
                self.split_brain = Some((op, others));
            }
            (Some(others), Some((op, _))) => self.split_brain = Some((op, others)),
            (None, Some((Some(op), others))) => {
                tracing::warn!(
                    "The split-brain alarm cleared ({} no longer report another cluster).",
                    others.join(", ")
                );
                if let Err(e) = self.host.state.finish(op, Outcome::Done, "cleared") {
                    tracing::error!("Could not journal the end of the split-brain alarm: {e}");
                }
            }
            (None, _) => {}
        }
    }

    /// Loads this host's CRL file when it changed and takes a newer CRL
    /// from a peer (see [`crate::crl`]); on a change, drops every open
    /// connection to peers.
    async fn sync_crl(&mut self) {
        let Some(tls) = self.host.tls.clone() else {
            return;
        };
        let mut changed = match tls.reload_crl() {
            Ok(c) => c,
            Err(e) => {
                if self.ticks % 60 == 1 {
                    tracing::error!("The CRL file is not loaded: {e}");
                }
                false
            }
        };
        let offers: Vec<(String, String, u64)> = self
            .host
            .view
            .peers
            .iter()
            .filter(|p| p.node.name != self.host.me.name)
            .filter_map(|p| {
                let n = p.agent_doc.as_ref()?.get("crl_number")?.as_u64()?;
                Some((p.node.name.clone(), p.node.agent_url.clone(), n))
            })
            .collect();
        let held = tls.crl.current().map(|c| c.number);
        let newer_offered = offers
            .iter()
            .any(|(_, _, n)| crate::crl::is_newer(held, *n));
        if newer_offered && self.crl_retry_at.is_none_or(|t| Instant::now() >= t) {
            if crate::crl::sync_from_peers(&tls, self.host.view.http(), &offers).await {
                changed = true;
                self.crl_retry_at = None;
            } else {
                self.crl_retry_at = Some(Instant::now() + CRL_RETRY);
            }
        }
        if changed {
            if let Some(c) = tls.crl.current() {
                tracing::warn!(
                    "CRL number {} in force: {} certificate(s) revoked; connections to peers are reopened.",
                    c.number,
                    c.revoked.len()
                );
            }
            if let Err(e) = self.host.view.renew_http(Some(&tls)) {
                tracing::error!("Could not renew the peer client after a CRL change: {e}");
            }
        }
    }

    /// One pass of the loop.
    pub async fn tick(&mut self) {
        self.ticks += 1;
        // The cluster this host's data belongs to, for when its etcd is down.
        self.host.view.known_cluster = self
            .host
            .known
            .as_ref()
            .filter(|_| has_member_data(&self.host.cfg.etcd.data_dir))
            .map(|k| k.cluster_id);
        self.host.view.refresh().await;
        self.sync_crl().await;
        // An operation that ended since the last tick: journalled now, its
        // result handed to its owner below (post-check).
        self.host.ops.poll(&self.host.state);
        // A supervisor lent to an operation that ended comes back first: the
        // post-checks below and supervision act on the real one.
        self.host.ops.reclaim_etcd(&mut self.host.etcd);
        super::defrag::take_finished(&mut self.host, &mut self.defrag);
        super::recover::take_finished(&mut self.host, &mut self.recovery);
        self.record_membership();
        let mine = self.host.view.my_cluster();
        let seen = self
            .host
            .view
            .peers
            .iter()
            .filter_map(|p| p.status.as_ref())
            .filter(|s| mine.is_none_or(|c| c == s.cluster_id))
            .map(|s| s.revision)
            .max()
            .unwrap_or(0);
        self.host.max_revision = self.host.max_revision.max(seen);
        self.supervise().await;
        if self.host.etcd.running() {
            if let Some(s) = self.host.local_status()
                && s.leader != 0
                && self.host.state.fact(FACT_JOINED).ok().flatten().is_none()
                && let Err(e) = self.host.state.set_fact(FACT_JOINED, "1")
            {
                tracing::error!("Could not record that this host joined a cluster: {e}");
            }
            self.coordinate().await;
            super::defrag::tick(&mut self.host, &mut self.defrag).await;
        }
        // Quorum is suspect while no leader is visible or a majority of voters
        // is dead; it is "lost" only once that has held for the window.
        let suspect = self.host.view.leader().is_none()
            || matches!(
                &self.host.last_decision,
                Decision::Wait(MembershipWait::QuorumLost { .. })
            );
        if suspect {
            self.host
                .quorum_suspect_since
                .get_or_insert_with(Instant::now);
        } else {
            self.host.quorum_suspect_since = None;
        }
        super::snapshots::tick(&mut self.host, &mut self.snapshots);
        super::scrub::tick(&self.host, &mut self.scrub);
        if let Some(req) = self.host.shared.take_recover_request() {
            self.recovery.requested = Some(req);
        }
        let config_path = self.host.config_path.clone();
        super::recover::tick(&mut self.host, &mut self.recovery, &config_path).await;
        self.publish();
    }

    /// Keeps the local etcd running, or decides why it must not run.
    async fn supervise(&mut self) {
        self.host.etcd.bound_log();
        if let Some(exit) = self.host.etcd.poll_exit() {
            match exit {
                Exit::Removed => {
                    tracing::warn!(
                        "etcd exited because the cluster removed this member; moving its data aside to rejoin as the standby."
                    );
                    self.last_exit = Some("removed from the cluster".into());
                    self.set_aside("the cluster removed this member");
                }
                Exit::FsyncFailed(why) => {
                    tracing::error!(
                        "etcd exited on a failed fsync ({why}); its data is suspect and etcd is not restarted on it."
                    );
                    if let Err(e) = self.host.state.set_fact(FACT_FSYNC_FAILED, &why) {
                        tracing::error!("Could not record the fsync failure: {e}");
                    }
                    self.last_exit = Some(why.clone());
                    self.fsync_failed = Some((why, None));
                }
                Exit::Other(why) => {
                    tracing::warn!("etcd exited ({why}); restarting it with backoff.");
                    self.last_exit = Some(why);
                }
            }
        }
        let epoch = self.epoch_decision();
        self.set_split_brain(match &epoch {
            EpochDecision::SplitBrain { others } => Some(others.clone()),
            _ => None,
        });
        // An offline defrag or a rebuild holds this host's etcd and its data
        // dir (the loop has a stand-in supervisor meanwhile): nothing here
        // starts, stops or moves them until it ends.
        if let Some((kind, _)) = self.host.ops.running()
            && kind.holds_local_etcd()
        {
            self.waiting = Some(format!(
                "{} runs on this host's etcd data; etcd is supervised again when it ends",
                match kind {
                    super::operation::Kind::Rebuild => "the quorum-loss rebuild",
                    _ => "an offline defragmentation",
                }
            ));
            return;
        }
        if self.self_fence().await {
            return;
        }
        if self.host.etcd.running() {
            self.waiting = None;
            match epoch {
                EpochDecision::Adopt { epoch } => {
                    tracing::warn!(
                        "This host's cluster has no quorum and a cluster of epoch {epoch} is alive (this host's data: epoch {}): the cluster was rebuilt without it. Stopping etcd and rejoining as the standby; the old data is kept.",
                        self.host.data_epoch()
                    );
                    // SIGTERM: etcd commits its db on a clean stop, so the
                    // snapshot below holds every write it applied (after a
                    // SIGKILL the last ones are only in its WAL).
                    self.host.etcd.stop(ABANDON_STOP_GRACE).await;
                    self.abandon_data(epoch);
                    return;
                }
                EpochDecision::WaitForEvidence { claimed } => {
                    self.waiting = Some(format!(
                        "a peer reports epoch {claimed} but no cluster of it answers; keeping this host's data"
                    ));
                }
                EpochDecision::Stay | EpochDecision::SplitBrain { .. } => {}
            }
            // A member the cluster removed while we were away: etcd may keep
            // running unaware (e.g. it was partitioned). Stop it and rejoin.
            if self.removed_while_running() {
                tracing::warn!(
                    "The cluster no longer lists this member; stopping etcd and rejoining as the standby."
                );
                self.host.etcd.kill().await;
                self.set_aside("the cluster no longer lists this member");
            }
            return;
        }
        if !self.host.etcd.may_start() {
            return;
        }
        match self.start_mode() {
            Ok(Some(Next::Join)) => self.join().await,
            Ok(Some(Next::Leave(id))) => self.leave_as_learner(id).await,
            Ok(Some(Next::Start(mode))) => {
                if let Err(e) = self.host.etcd.start(&mode) {
                    tracing::error!("Could not start etcd: {e:#}");
                    self.waiting = Some(format!("could not start etcd: {e:#}"));
                }
            }
            Ok(None) => {}
            Err(why) => self.waiting = Some(why),
        }
    }

    /// Self-fence (policy `fenced`): when the nodes this voter cannot see
    /// are a strict majority for `recovery.self_fence_after`, the other side
    /// may fence it and rebuild, so it stops its etcd (journalled first; no
    /// journal, no stop) and keeps it stopped until it sees a majority
    /// again. Returns whether etcd must stay stopped now.
    async fn self_fence(&mut self) -> bool {
        use super::recovery_plan::{SelfFence, SelfFenceView, decide_self_fence, unseen_majority};
        // Every vote: the etcd hosts and the witnesses.
        let nodes = self.host.view.peers.len() + self.host.view.witnesses.len();
        let seen = self
            .host
            .view
            .peers
            .iter()
            .enumerate()
            // Seen: its agent or its etcd answers. Counting agents alone
            // would stop every voter of a quorate cluster whose peers'
            // agent APIs are down (a certificate, a firewall, a crash loop).
            .filter(|(i, p)| {
                *i == self.host.my_index || p.agent_doc.is_some() || p.status.is_some()
            })
            .count()
            + self
                .host
                .view
                .witnesses
                .iter()
                .filter(|w| w.agent_doc.is_some())
                .count();
        if unseen_majority(nodes, seen) {
            self.unseen_majority_since.get_or_insert_with(Instant::now);
        } else {
            self.unseen_majority_since = None;
        }
        let decision = decide_self_fence(&SelfFenceView {
            policy: self.host.cfg.recovery.quorum_loss_policy,
            is_voter: self
                .host
                .known
                .as_ref()
                .is_some_and(|k| k.voters().contains(&self.host.me.name)),
            nodes,
            seen,
            unseen_majority_for: self.unseen_majority_since.map(|t| t.elapsed()),
            after: self.host.cfg.recovery.self_fence_after,
        });
        if decision != SelfFence::Stop {
            if self.self_fenced {
                tracing::warn!(
                    "Self-fence lifted: {seen} of {nodes} agents answer again; starting etcd."
                );
                self.self_fenced = false;
            }
            return false;
        }
        let why = format!(
            "only {seen} of {nodes} configured nodes answer (agent or etcd) for over {:?}: the unseen nodes are a strict majority and may fence this host and rebuild",
            self.host.cfg.recovery.self_fence_after
        );
        if self.host.etcd.running() {
            match self
                .host
                .state
                .begin(OpKind::SelfFence, &self.host.me.name, &why)
            {
                Err(e) => {
                    tracing::error!(
                        "Not self-fencing: could not journal it ({e}); etcd keeps running."
                    );
                    return false;
                }
                Ok(op) => {
                    tracing::warn!("Self-fence: {why}; stopping etcd.");
                    // Short grace: every write it acknowledges from here on
                    // may be lost (etcd's WAL makes a kill safe for its data).
                    self.host.etcd.stop(Duration::from_secs(1)).await;
                    if let Err(e) = self.host.state.finish(op, Outcome::Done, "etcd stopped") {
                        tracing::error!("Could not journal the self-fence outcome: {e}");
                    }
                }
            }
        }
        self.self_fenced = true;
        self.waiting = Some(format!("self-fenced: {why}"));
        true
    }

    /// Whether this host's own cluster, healthy, lists members but not this
    /// host while our etcd runs (a list from another cluster proves nothing).
    fn removed_while_running(&self) -> bool {
        let Some(members) = &self.host.view.members else {
            return false;
        };
        if self.host.view.members_cluster != self.host.local_status().map(|s| s.cluster_id) {
            return false;
        }
        // Only trust a member list that came from a cluster with a leader that is not us.
        let Some((leader, _)) = self.host.view.leader() else {
            return false;
        };
        if self
            .host
            .local_status()
            .is_some_and(|s| s.member_id == leader)
        {
            return false;
        }
        let started_for = self
            .host
            .etcd
            .started_at
            .map(|t| t.elapsed())
            .unwrap_or_default();
        started_for > Duration::from_secs(10)
            && !members
                .iter()
                .any(|m| same_url(&m.peer_url, &self.host.me.peer_url))
    }

    /// Sets this host's data aside for good (a newer epoch is alive and this
    /// host's cluster has no quorum): it may hold writes no live cluster
    /// has, so it goes under its own label (`etcd.abandoned-STAMP`) that is
    /// never pruned automatically.
    ///
    /// First, a snapshot of that data goes into the snapshot directory
    /// (origin `HOST-abandoned-eN`, N its epoch: an origin of its own, so
    /// retention, which keeps the newest of each origin, never removes it),
    /// where the operator, `diag` and `recover --snapshot` find snapshots.
    /// A failed snapshot is logged and does not stop the move: the moved
    /// directory itself is kept.
    fn abandon_data(&mut self, epoch: u64) {
        let db = self.host.cfg.etcd.data_dir.join("member/snap/db");
        if db.is_file() {
            let origin = format!(
                "{}-abandoned-e{}",
                self.host.me.name,
                self.host.data_epoch()
            );
            let cluster = self
                .host
                .view
                .my_cluster()
                .map(|c| format!("{c:x}"))
                .unwrap_or_default();
            let dir = self.host.cfg.paths.snapshot_dir.clone();
            let taken = tokio::task::block_in_place(|| {
                edgeplane_snapshot::save_db_file(&db, &dir, &origin, "", &cluster, 3)
            });
            match taken {
                Ok(m) => tracing::warn!(
                    "Took a snapshot of the data about to be set aside: {} ({} bytes of db); it is kept.",
                    m.path.display(),
                    m.info.db_bytes
                ),
                Err(e) => tracing::error!(
                    "Could not take a snapshot of the data about to be set aside ({e}); the moved directory is kept."
                ),
            }
        }
        self.set_aside_as(
            &format!("the cluster was rebuilt in epoch {epoch} while this host had no quorum"),
            "abandoned",
            usize::MAX,
        );
    }

    /// Sets aside the data of a member its own cluster removed: the cluster
    /// has every write it acknowledged, so two old copies are enough.
    fn set_aside(&mut self, why: &str) {
        self.set_aside_as(why, "removed", 2);
    }

    /// Moves the data aside (`keep` copies per label), journalled first: no
    /// journal record, nothing moved.
    fn set_aside_as(&mut self, why: &str, label: &str, keep: usize) {
        let id = match self
            .host
            .state
            .begin(OpKind::Rejoin, &self.host.me.name, why)
        {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(
                    "Not moving the etcd data aside ({why}): could not journal it: {e}"
                );
                self.waiting = Some(format!("cannot journal: {e}"));
                return;
            }
        };
        self.forget_membership();
        match super::etcd::move_aside_as(&self.host.cfg.etcd.data_dir, label, keep) {
            Ok(to) => {
                let detail = to
                    .map(|p| format!("old data moved to {}", p.display()))
                    .unwrap_or_default();
                tracing::info!("Moved the old etcd data aside: {detail}");
                if let Err(e) = self.host.state.finish(id, Outcome::Done, &detail) {
                    tracing::error!("Could not journal the move ({detail}): {e}");
                }
            }
            Err(e) => {
                tracing::error!("{e:#}");
                if let Err(j) = self
                    .host
                    .state
                    .finish(id, Outcome::Failed, &format!("{e:#}"))
                {
                    tracing::error!("Could not journal the failed move: {j}");
                }
            }
        }
    }

    /// How to start etcd now; `Ok(None)` when this host should not run etcd
    /// yet (a spare); `Err` says why it must wait.
    fn start_mode(&mut self) -> Result<Option<Next>, String> {
        let dir = &self.host.cfg.etcd.data_dir;
        // After a failed fsync, anything in the data dir is suspect data: a
        // first start's partial directory (no WAL yet) too.
        let has_data = has_member_data(dir) || (self.fsync_failed.is_some() && has_any_data(dir));
        if !has_data && self.fsync_failed.take().is_some() {
            // The suspect data is gone (set aside by hand): nothing left to distrust.
            if let Err(e) = self.host.state.set_fact(FACT_FSYNC_FAILED, "") {
                tracing::error!("Could not clear the fsync failure: {e}");
            }
        }
        let members = self.host.view.members.clone();
        // Read (a state-store read, the epoch file) only where the decision
        // uses them: no data and no cluster seen. A spare ticks here forever.
        let unseen = !has_data && members.is_none();
        let view = StartView {
            has_data,
            epoch: if has_data {
                self.epoch_decision()
            } else {
                EpochDecision::Stay
            },
            fsync_failed: self.fsync_failed.is_some(),
            members_seen: members.is_some(),
            own_list: self.host.view.members_cluster.is_some()
                && self.host.view.members_cluster == self.host.view.known_cluster,
            mine: self.host.my_member().map(|m| Mine {
                id: m.id,
                is_learner: m.is_learner,
                started: !m.name.is_empty(),
            }),
            leader_seen: self.host.view.leader().is_some(),
            slot_taken: members.iter().flatten().any(|m| m.is_learner),
            earlier_spare: members.as_deref().and_then(|ms| self.earlier_spare(ms)),
            bootstrap_voter: self.host.my_index < self.host.cfg.cluster.voters,
            joined_before: unseen && self.host.state.fact(FACT_JOINED).ok().flatten().is_some(),
            site_epoch: if unseen { self.host.site_epoch() } else { 0 },
            manage_membership: self.host.cfg.cluster.manage_membership,
        };
        match decide_start(&view) {
            StartDecision::AdoptEpoch { epoch } => {
                self.abandon_data(epoch);
                Ok(None)
            }
            StartDecision::WaitForEvidence { claimed } => Err(format!(
                "a peer reports epoch {claimed} but no cluster of it answers, and this host's cluster has no leader; \
                 waiting before starting etcd on data of epoch {}",
                self.host.data_epoch()
            )),
            StartDecision::FsyncFailure => self.after_fsync_failure(),
            StartDecision::SetAsideRemoved => {
                self.set_aside("the cluster removed this member while it was down");
                Ok(None)
            }
            StartDecision::Restart => Ok(Some(Next::Start(StartMode::Restart))),
            StartDecision::ResumeJoin => Ok(Some(Next::Start(StartMode::Existing {
                initial_cluster: initial_cluster(members.as_deref().unwrap_or_default(), &self.host.me),
                token: self.host.token(),
            }))),
            StartDecision::Bootstrap => Ok(Some(Next::Start(StartMode::New {
                initial_cluster: self.bootstrap_cluster(),
                token: self.host.token(),
            }))),
            StartDecision::Leave { id } => {
                self.waiting = Some("the standby's data is gone; removing its member to join again".into());
                Ok(self.attempt_now().then_some(Next::Leave(id)))
            }
            StartDecision::WaitForRemoval => Err(
                "this host's member is listed as started but its data dir is empty; waiting for the coordinator to remove it, then rejoining as the standby".into(),
            ),
            StartDecision::SlotTaken => {
                self.waiting = Some("spare: the standby slot is taken".into());
                Ok(None)
            }
            StartDecision::NotFirstInLine { first } => {
                self.waiting = Some(format!("spare: {first} is first in line for the standby slot"));
                Ok(None)
            }
            StartDecision::Join => {
                if !self.attempt_now() {
                    return Ok(None);
                }
                self.waiting = Some("joining as the standby".into());
                Ok(Some(Next::Join))
            }
            StartDecision::Unmanaged => {
                self.waiting = Some(
                    "not joining or leaving: cluster.manage_membership = false (maintenance mode)".into(),
                );
                Ok(None)
            }
            StartDecision::WaitForCluster => {
                Err("no cluster with a leader is reachable; waiting to join".into())
            }
        }
    }

    /// What this host sees of its own cluster while its etcd is down, for
    /// [`disk_fault::after_fsync_failure`].
    fn elsewhere(&self) -> Elsewhere {
        let mine = self.host.view.my_cluster();
        let Some(members) = self
            .host
            .view
            .members
            .as_ref()
            .filter(|_| mine.is_some() && self.host.view.members_cluster == mine)
        else {
            return Elsewhere {
                voters: 0,
                other_voters_led: 0,
                has_data: has_member_data(&self.host.cfg.etcd.data_dir),
            };
        };
        let my_id = self.host.my_member().map(|m| m.id);
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let other_voters_led = self
            .host
            .view
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.host.my_index)
            .filter_map(|(_, p)| p.status.as_ref())
            .filter(|s| {
                Some(s.cluster_id) == mine
                    && !s.is_learner
                    && s.leader != 0
                    && Some(s.leader) != my_id
                    && Some(s.member_id) != my_id
                    && voters.iter().any(|m| m.id == s.member_id)
            })
            .count();
        Elsewhere {
            voters: voters.len(),
            other_voters_led,
            has_data: has_member_data(&self.host.cfg.etcd.data_dir),
        }
    }

    /// etcd died on a failed fsync: set its data aside and rejoin when a
    /// quorum elsewhere has every write, else keep it and wait (alarm).
    fn after_fsync_failure(&mut self) -> Result<Option<Next>, String> {
        let seen = self.elsewhere();
        let why = self
            .fsync_failed
            .as_ref()
            .map(|(w, _)| w.clone())
            .unwrap_or_default();
        match disk_fault::after_fsync_failure(seen) {
            FsyncVerdict::SetAsideAndRejoin => {
                tracing::warn!(
                    "etcd's fsync failed and a quorum of {} of {} voters has a leader without this host: setting the suspect data aside (kept) and rejoining as the standby.",
                    seen.other_voters_led,
                    seen.voters
                );
                self.set_aside_as(
                    "etcd's fsync failed (EIO); a quorum elsewhere has every committed write",
                    "fsync-failed",
                    usize::MAX,
                );
                if has_any_data(&self.host.cfg.etcd.data_dir) {
                    // Not moved (journal or rename failed): keep waiting.
                    return Err("etcd's fsync failed and its data could not be set aside".into());
                }
                if let Err(e) = self.host.state.set_fact(FACT_FSYNC_FAILED, "") {
                    tracing::error!("Could not clear the fsync failure: {e}");
                }
                if let Some((_, Some(op))) = self.fsync_failed.take() {
                    self.host.state.close(
                        op,
                        Outcome::Done,
                        "data set aside; rejoining as the standby",
                    );
                }
                Ok(None)
            }
            FsyncVerdict::KeepAndWait => {
                if let Some((_, op @ None)) = &mut self.fsync_failed {
                    tracing::error!(
                        "etcd's fsync failed and no quorum without this host is seen ({} of {} voters led): keeping the data, not starting etcd on it, waiting.",
                        seen.other_voters_led,
                        seen.voters
                    );
                    *op = self
                        .host
                        .state
                        .begin(OpKind::DiskFault, &self.host.me.name, &why)
                        .map_err(|e| tracing::error!("Could not journal the fsync alarm: {e}"))
                        .ok();
                }
                Err(format!(
                    "etcd's fsync failed ({why}); its data may be the only copy: kept, etcd not started on it, waiting for a quorum of the other voters"
                ))
            }
        }
    }

    /// `name=peer_url,…` of the first `voters` nodes.
    fn bootstrap_cluster(&self) -> String {
        self.host.cfg.nodes[..self.host.cfg.cluster.voters.min(self.host.cfg.nodes.len())]
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds this host as the learner when the slot is free and no spare
    /// before it (config order) is waiting. etcd refuses a second learner,
    /// which settles any race between spares.
    /// A live spare before this host in config order that also waits to
    /// join (it goes first).
    fn earlier_spare(&self, members: &[Member]) -> Option<String> {
        self.host.view.peers[..self.host.my_index]
            .iter()
            .find(|p| {
                let member = members
                    .iter()
                    .any(|m| same_url(&m.peer_url, &p.node.peer_url));
                !member && p.agent_up() && p.agent_role() == Some(Role::Spare)
            })
            .map(|p| p.node.name.clone())
    }

    /// At most one join or leave attempt a second.
    fn attempt_now(&mut self) -> bool {
        if self
            .last_join_attempt
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        self.last_join_attempt = Some(Instant::now());
        true
    }

    /// Sends the `member add --learner` for this host, then starts etcd.
    async fn join(&mut self) {
        let Some((_, li)) = self.host.view.leader() else {
            return;
        };
        let Some(mut client) = self.host.view.peers[li].client().await else {
            return;
        };
        // Joining can wait: no journal record, no join.
        let op = match self
            .host
            .state
            .begin(OpKind::Join, &self.host.me.name, "standby slot free")
        {
            Ok(op) => Some(op),
            Err(e) => {
                self.waiting = Some(format!("not joining: cannot journal it: {e}"));
                return;
            }
        };
        match client.add_learner(&self.host.me.peer_url).await {
            Ok(resp) => {
                let members: Vec<Member> = resp.member_list().iter().map(Member::from).collect();
                let initial = initial_cluster(&members, &self.host.me);
                tracing::info!(
                    "Added this host as the standby (learner); starting etcd to catch up."
                );
                if let Some(id) = op {
                    self.host
                        .state
                        .close(id, Outcome::Done, "member added as learner");
                }
                let _ = move_aside(&self.host.cfg.etcd.data_dir, 2);
                // The data etcd is about to create belongs to the site's current epoch.
                let epoch = self.host.site_epoch();
                if let Err(e) = super::etcd::mark_epoch(&self.host.cfg.etcd.data_dir, epoch) {
                    tracing::error!("Could not mark the new data dir with its epoch: {e}");
                    return;
                }
                // The new data's cluster, known before etcd first answers: an
                // etcd that dies at once (a failed fsync) is judged against it.
                if let Some(h) = resp.header() {
                    self.remember_membership(KnownMembership {
                        cluster_id: h.cluster_id(),
                        epoch,
                        members: members.clone(),
                    });
                }
                if let Err(e) = self.host.etcd.start(&StartMode::Existing {
                    initial_cluster: initial,
                    token: self.host.token(),
                }) {
                    tracing::error!("Could not start etcd after joining: {e:#}");
                }
            }
            Err(e) => {
                // "unhealthy cluster" right after a change is expected: etcd wants
                // every voter connected for 5 s. Retried next tick.
                if !e.timed_out() {
                    tracing::info!("Joining as the standby was refused for now: {e}");
                }
                if let Some(id) = op {
                    self.host.state.close(id, Outcome::Failed, &e.to_string());
                }
            }
        }
    }

    /// Removes this host's own learner member (its data is gone), journalled
    /// first; the host joins again as a spare afterwards.
    async fn leave_as_learner(&mut self, id: u64) {
        let Some((_, li)) = self.host.view.leader() else {
            return;
        };
        let Some(mut client) = self.host.view.peers[li].client().await else {
            return;
        };
        let op = match self.host.state.begin(
            OpKind::EvictLearner,
            &self.host.me.name,
            "this host's standby member has no data (set aside); leaving to join again",
        ) {
            Ok(op) => op,
            Err(e) => {
                self.waiting = Some(format!("not leaving: cannot journal it: {e}"));
                return;
            }
        };
        match client.remove(id).await {
            Ok(()) => {
                tracing::info!("Removed this host's standby member {id:x}; joining again.");
                self.host.state.close(op, Outcome::Done, "learner removed");
            }
            Err(e) => self.host.state.close(op, Outcome::Failed, &e.to_string()),
        }
    }

    async fn coordinate(&mut self) {
        super::coordinate::step(&mut self.host).await;
    }

    /// Role of this host as the cluster sees it.
    pub fn role(&self) -> Role {
        match (self.host.my_member(), self.host.etcd.running()) {
            (Some(m), true) if m.is_learner => Role::Learner,
            (Some(_), true) => Role::Voter,
            (Some(_), false) => Role::Waiting,
            (None, true) => {
                if self.host.local_status().is_some_and(|s| s.is_learner) {
                    Role::Learner
                } else if self.host.view.members.is_none() {
                    Role::Starting
                } else {
                    Role::Voter
                }
            }
            (None, false) => {
                if self.host.view.members.is_some() {
                    Role::Spare
                } else {
                    Role::Waiting
                }
            }
        }
    }

    fn readiness(&self) -> (bool, String) {
        let Some(s) = self.host.local_status() else {
            return (
                false,
                self.waiting
                    .clone()
                    .unwrap_or_else(|| "local etcd does not answer".into()),
            );
        };
        if s.leader == 0 || !s.errors.is_empty() {
            return (
                false,
                format!("local etcd has no leader ({})", s.errors.join("; ")),
            );
        }
        let me = &self.host.view.peers[self.host.my_index];
        match me.lag {
            Some(l) if me.caught_up == Some(true) => (
                true,
                format!(
                    "{} caught up (lag {l})",
                    if s.is_learner { "standby" } else { "voter" }
                ),
            ),
            Some(l) => (false, format!("catching up (lag {l} entries)")),
            None => (false, "leader not reachable".into()),
        }
    }

    /// Publishes the status document for the API.
    pub fn publish(&mut self) {
        let now = Instant::now();
        let member_list = self.host.view.members.clone().unwrap_or_default();
        let health = super::coordinate::with_removal_history(
            &self.host,
            &member_list,
            self.host.view.health(&member_list, now),
        );
        let members = member_list
            .iter()
            .zip(&health)
            .map(|(m, h)| {
                let peer = self
                    .host
                    .view
                    .peer_by_url(&m.peer_url)
                    .map(|i| &self.host.view.peers[i]);
                let st = peer.and_then(|p| p.status.as_ref());
                MemberDoc {
                    id: format!("{:x}", m.id),
                    name: m.name.clone(),
                    peer_url: m.peer_url.clone(),
                    is_learner: m.is_learner,
                    reachable: st.is_some(),
                    applied_index: st.map(|s| s.applied_index),
                    lag: peer.and_then(|p| p.lag),
                    standby: m.is_learner.then(|| plan::standby_state(h)),
                    behind_for_s: (m.is_learner && !h.behind_for.is_zero())
                        .then_some(h.behind_for.as_secs_f64()),
                }
            })
            .collect();
        let hosts = self
            .host
            .view
            .peers
            .iter()
            .map(|p| HostDoc {
                name: p.node.name.clone(),
                etcd_up: p.status.is_some(),
                etcd_down_for_s: p.etcd_down_for(now).as_secs_f64(),
                agent_up: p.agent_up(),
                agent_down_for_s: p.agent_down_for(now).as_secs_f64(),
                agent_role: p.agent_role(),
            })
            .collect();
        let ops = self.host.state.ops(200).unwrap_or_default();
        let count = |k: OpKind| {
            ops.iter()
                .filter(|o| o.kind == k && o.outcome == Outcome::Done)
                .count() as u64
        };
        let (ready, ready_reason) = self.readiness();
        let quorum = self.host.quorum();
        let doc = StatusDoc {
            schema: super::status::STATUS_SCHEMA.to_string(),
            now_ms: chrono::Utc::now().timestamp_millis(),
            host: self.host.cfg.host.clone(),
            site: self.host.cfg.site.clone(),
            version: crate::version::LONG.to_string(),
            role: self.role(),
            member_id: self.host.local_status().map(|s| format!("{:x}", s.member_id)),
            coordinator: self.host.is_coordinator(),
            ready,
            ready_reason,
            quorum,
            // Filled in by `Shared::status`.
            crl_number: None,
            reload: None,
            split_brain: self.split_brain.as_ref().map(|(_, others)| SplitBrainDoc {
                others: others.clone(),
                action: format!(
                    "two live clusters: this host keeps serving its own and moves no data. Decide which side's writes to keep; \
                     on every host of the side you give up run `systemctl stop edgeplane`, move its etcd data dir ({}) aside \
                     (keep it: it holds that side's writes), then `systemctl start edgeplane`: it joins the kept side as a standby",
                    self.host.cfg.etcd.data_dir.display()
                ),
            }),
            decision: match &self.host.last_decision {
                d @ (Decision::RemoveVoter { .. } | Decision::Promote { .. } | Decision::EvictLearner { .. })
                    if !self.host.cfg.cluster.manage_membership =>
                {
                    format!(
                        "not acting, cluster.manage_membership = false (maintenance mode): would {}",
                        plan::describe(d)
                    )
                }
                d => plan::describe(d),
            },
            etcd: EtcdDoc {
                running: self.host.etcd.running(),
                pid: self.host.etcd.pid(),
                adopted: self.adopted,
                restarts: self.host.etcd.restarts,
                last_exit: self.last_exit.clone(),
            },
            local: self.host.local_status().cloned(),
            members,
            hosts,
            operation: self.host.ops.doc(),
            snapshot_space: Some(self.host.shared.snapshot_space.doc(
                &self.host.cfg.paths.snapshot_dir,
                &super::status::snapshot_budget(&self.host.cfg),
                &edgeplane_snapshot::Statvfs,
            )),
            snapshot_scrub: Some(self.host.shared.snapshot_scrub.doc()),
            progress: Progress {
                ticks: self.ticks,
                last_reconcile_age_ms: 0,
                queue_depth: usize::from(!matches!(
                    self.host.last_decision,
                    Decision::Steady | Decision::Wait(_)
                )),
                stalled: false,
            },
            journal: JournalDoc {
                promotions: count(OpKind::Promote),
                removals: count(OpKind::RemoveMember),
                evictions: count(OpKind::EvictLearner),
                joins: count(OpKind::Join),
                flap_removals: ops
                    .iter()
                    .filter(|o| o.kind == OpKind::RemoveMember && o.outcome == Outcome::Done && o.damped())
                    .count() as u64,
                recent: ops.iter().rev().take(20).rev().cloned().collect(),
            },
            flap: self.flap_doc(&member_list, &health),
            epoch: self.host.data_epoch().max(self.host.rebuilding_epoch.unwrap_or(0)),
            recovery: self.recovery.doc.clone(),
            metrics: None,
        };
        self.host.shared.set_status(doc);
        // The last view, on disk, for `edgeplane diag` when this agent is down.
        if self
            .last_persist
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_persist = Some(Instant::now());
            self.host.persist_max_revision();
            let doc = self.host.shared.status();
            if let Ok(json) = serde_json::to_vec_pretty(&doc) {
                let path = self.host.cfg.paths.state_dir.join("status.json");
                if let Err(e) = super::etcd::write_atomic(&path, &json) {
                    tracing::debug!("Could not write {}: {e}", path.display());
                }
            }
        }
    }

    /// Flap damping in `/status`: this agent's own removals within the
    /// window (what other coordinators read) and the members whose
    /// detection window is damped now.
    fn flap_doc(&self, members: &[Member], health: &[plan::Health]) -> FlapDoc {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let window_ms = i64::try_from(self.host.limits.flap_window.as_millis()).unwrap_or(i64::MAX);
        let recent_removals = self
            .host
            .state
            .removals_since(now_ms.saturating_sub(window_ms))
            .unwrap_or_default();
        let damped_hosts = members
            .iter()
            .zip(health)
            .filter(|(_, h)| h.recent_removals > 0)
            .map(|(m, h)| DampedHost {
                host: plan::label(m),
                recent_removals: h.recent_removals,
                factor: plan::damping_factor(h.recent_removals),
                detection_s: plan::detection_window(h, &self.host.limits).0.as_secs_f64(),
            })
            .collect();
        FlapDoc {
            window_s: self.host.limits.flap_window.as_secs_f64(),
            recent_removals,
            damped_hosts,
        }
    }

    /// SIGTERM: hand leadership to a healthy voter, then stop etcd.
    pub async fn shutdown(&mut self) {
        if self.host.is_coordinator() {
            super::coordinate::hand_off_leadership(&mut self.host).await;
        }
        let held = self.host.ops.holds_local_etcd();
        self.host.ops.abort(&self.host.state);
        if held {
            // The aborted operation drops its loan of the supervisor once
            // its task is cancelled; a pid file names the etcd it started.
            let t0 = Instant::now();
            while !self.host.ops.reclaim_etcd(&mut self.host.etcd)
                && t0.elapsed() < Duration::from_secs(2)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !self.host.etcd.running() {
                self.host.etcd.adopt();
            }
        }
        self.host.etcd.stop(Duration::from_secs(10)).await;
    }
}

/// Whether a member's Status proves its cluster has a working leader: a
/// voter that knows one. A learner never campaigns, so it keeps naming the
/// last leader it heard of long after that leader is gone (seen when a
/// rebuild left the old standby running: it "had a leader" for ever); a
/// voter that loses its leader clears it within an election timeout.
fn voter_with_leader(s: &super::observe::EtcdStatus) -> bool {
    s.leader != 0 && !s.is_learner
}

/// `name=peer_url,…` for etcd's `--initial-cluster` from a member list; the
/// never-started member with our peer URL gets our name.
fn initial_cluster(members: &[Member], me: &Node) -> String {
    members
        .iter()
        .filter_map(|m| {
            if same_url(&m.peer_url, &me.peer_url) {
                Some(format!("{}={}", me.name, me.peer_url))
            } else if m.name.is_empty() {
                None
            } else {
                Some(format!("{}={}", m.name, m.peer_url))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
