//! The witness: `edgeplane agent` on a node with `role = "witness"`.
//!
//! Why it exists: an automatic rebuild after quorum loss needs a strict
//! majority of votes (one per node), and a 2-host site never has one after
//! losing a host (1 of 2). A witness is a third vote that needs no etcd,
//! so it fits on a small box or the site's router. It polls every etcd
//! host's etcd and agent as any agent does and answers `/status` with the
//! host it names the freshest (`recovery.freshest`): the highest applied
//! index among the hosts of the newest epoch it sees, config order
//! breaking ties. That answer is its vote; the deciding agents count it.
//!
//! It never starts etcd, never coordinates, never fences and never
//! rebuilds (`recovery_plan::decide_rebuild` answers `NotNeeded` for a
//! witness); the other agents never make it a member and never fence it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_config::{Config, QuorumLossPolicy};

use super::observe::View;
use super::observe::peer_epoch;
use super::plan::Role;
use super::recovery_plan::{self, NodeRole, Quorum, Survivor, Vote};
use super::status::{HostDoc, Progress, RecoveryDoc, Shared, StatusDoc};

/// The witness's view of the site, for its `/status`.
pub struct Witness {
    cfg: Config,
    view: View,
    shared: Arc<Shared>,
    ticks: u64,
    /// The host it named last (to log a change once).
    named: Option<String>,
}

impl Witness {
    /// The config it runs with (a SIGHUP reload replaces parts of it).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }

    pub fn new(
        cfg: Config,
        shared: Arc<Shared>,
        tls: Option<&crate::tls::SiteTls>,
    ) -> anyhow::Result<Witness> {
        // `me` is past the etcd hosts: a witness is none of them.
        let view = View::new(
            &cfg.nodes,
            &cfg.witnesses,
            usize::MAX,
            cfg.cluster.promotion_max_lag,
            tls,
        )?;
        Ok(Witness {
            cfg,
            view,
            shared,
            ticks: 0,
            named: None,
        })
    }

    /// One look at the site, then `/status`.
    pub async fn tick(&mut self) {
        self.view.refresh().await;
        self.ticks += 1;
        let hosts = self.survivors();
        let fresh = recovery_plan::freshest(&hosts).map(|i| hosts[i].name.clone());
        if fresh != self.named {
            match &fresh {
                Some(h) => tracing::info!("Witness: naming {h} the freshest host (its vote)."),
                None => tracing::warn!("Witness: no etcd host's data is reachable; no vote."),
            }
            self.named = fresh.clone();
        }
        self.publish(fresh);
    }

    /// Every etcd host as seen from here; an applied index counts only for
    /// hosts of the newest epoch their agents report (indexes of two
    /// epochs do not compare).
    fn survivors(&self) -> Vec<Survivor> {
        let newest = self.newest_epoch();
        self.view
            .peers
            .iter()
            .map(|p| Survivor {
                name: p.node.name.clone(),
                role: NodeRole::Etcd,
                applied_index: p
                    .status
                    .as_ref()
                    .filter(|_| peer_epoch(p) == newest)
                    .map(|s| s.applied_index),
                commit_index: p
                    .status
                    .as_ref()
                    .filter(|_| peer_epoch(p) == newest)
                    .map(|s| s.raft_index),
                agent_answers: p.agent_doc.is_some(),
                names_freshest: None,
            })
            .collect()
    }

    /// The newest epoch the answering agents report: a witness has no data
    /// of its own (`recovery_plan::counted_epoch`).
    fn newest_epoch(&self) -> u64 {
        recovery_plan::counted_epoch(
            0,
            false,
            self.view
                .peers
                .iter()
                .filter(|p| p.agent_doc.is_some())
                .map(peer_epoch),
        )
    }

    fn publish(&self, fresh: Option<String>) {
        let now = Instant::now();
        let hosts = self
            .view
            .peers
            .iter()
            .chain(&self.view.witnesses)
            .map(|p| HostDoc {
                name: p.node.name.clone(),
                etcd_up: p.status.is_some(),
                etcd_down_for_s: p.etcd_down_for(now).as_secs_f64(),
                agent_up: p.agent_up() || p.node.name == self.cfg.host,
                agent_down_for_s: p.agent_down_for(now).as_secs_f64(),
                agent_role: if p.node.name == self.cfg.host {
                    Some(Role::Witness)
                } else {
                    p.agent_role()
                },
            })
            .collect();
        let epoch = self.newest_epoch();
        let state = match &fresh {
            Some(h) => format!("witness: votes for {h}, the freshest etcd host it sees"),
            None => "witness: sees no etcd host's data; no vote".into(),
        };
        let doc = StatusDoc {
            now_ms: chrono::Utc::now().timestamp_millis(),
            host: self.cfg.host.clone(),
            site: self.cfg.site.clone(),
            version: crate::version::LONG.to_string(),
            role: Role::Witness,
            ready: true,
            ready_reason: state.clone(),
            quorum: if self.view.leader().is_some() {
                Quorum::Ok
            } else {
                Quorum::Unknown
            },
            decision: state.clone(),
            hosts,
            progress: Progress {
                ticks: self.ticks,
                ..Progress::default()
            },
            epoch,
            recovery: RecoveryDoc {
                quorum_lost: false,
                policy: match self.cfg.recovery.quorum_loss_policy {
                    QuorumLossPolicy::Manual => "manual".into(),
                    QuorumLossPolicy::Fenced => "fenced".into(),
                },
                freshest: fresh.clone(),
                state,
                votes: vec![Vote {
                    voter: self.cfg.host.clone(),
                    for_host: fresh,
                }],
                votes_needed: recovery_plan::majority(self.cfg.votes()),
                ..RecoveryDoc::default()
            },
            ..StatusDoc::default()
        };
        self.shared.set_status(doc);
    }
}

/// Polls at the site's reconcile interval, at least every 200 ms apart.
pub fn interval(cfg: &Config) -> Duration {
    cfg.cluster
        .reconcile_interval
        .max(Duration::from_millis(200))
}
