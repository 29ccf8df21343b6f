//! What this host's agent knows and holds, shared by the loop's activities.
//!
//! `local::Agent` runs the loop; `coordinate`, `defrag`, `recover` and
//! `snapshots` are its activities. Each activity takes the `Host` and its
//! own state, never the `Agent`: so no activity imports the loop that calls
//! it, and what an activity may touch is what its signature says.

use std::sync::Arc;
use std::time::Instant;

use edgeplane_config::{Config, Node};

use crate::tls::SiteTls;

use super::etcd::Supervisor;
use super::observe::{View, same_url};
use super::plan::{Decision, Limits, Member};
use super::recovery_plan::Quorum;
use super::state::{KnownMembership, State};
use super::status::Shared;

/// Fact: the highest store revision seen (see `Host::max_revision`).
pub const FACT_MAX_REVISION: &str = "max_revision";

/// This host's config, its view of the site this tick, its etcd child, its
/// journal and what it publishes: everything the loop's activities read or
/// change besides their own state.
pub struct Host {
    pub cfg: Config,
    pub me: Node,
    pub my_index: usize,
    pub state: Arc<State>,
    pub shared: Arc<Shared>,
    pub etcd: Supervisor,
    pub view: View,
    pub limits: Limits,
    pub last_decision: Decision,
    /// Since when no member reachable from here reports a leader.
    pub quorum_suspect_since: Option<Instant>,
    pub config_path: std::path::PathBuf,
    /// The site's certificate, when TLS is on.
    pub tls: Option<SiteTls>,
    /// The last membership of this host's cluster, as recorded in the state
    /// store (survives restarts; see `recovery_plan`).
    pub known: Option<KnownMembership>,
    /// The highest store revision any member of this host's cluster
    /// reported (persisted with the status document, and before a rebuild):
    /// a rebuilt cluster's revisions must start above it.
    pub max_revision: i64,
    /// The epoch a rebuild in progress is creating: published in `/status`
    /// from the moment the rebuild starts, so that fenced hosts powered on
    /// meanwhile see a newer epoch claimed and wait, instead of restarting
    /// their old cluster before the new one answers.
    pub rebuilding_epoch: Option<u64>,
    /// The long operation (fence, defrag, compaction) running off the loop.
    pub ops: super::operation::Runner,
    /// For snapshot copies and lists to peer agents (built once: it holds
    /// the parsed TLS material); callers bound short requests themselves.
    pub peer_http: reqwest::Client,
}

impl Host {
    /// The epoch (cluster generation) of this host's etcd data.
    pub fn data_epoch(&self) -> u64 {
        super::etcd::data_epoch(&self.cfg.etcd.data_dir)
    }

    /// The epoch of the cluster this host runs in or joins: the highest
    /// epoch reported by an agent whose etcd answers with a leader (a cluster
    /// seen alive, never a claim alone), or this host's data's.
    pub fn site_epoch(&self) -> u64 {
        self.view
            .peers
            .iter()
            .filter(|p| p.status.as_ref().is_some_and(|s| s.leader != 0))
            .map(super::observe::peer_epoch)
            .max()
            .unwrap_or(0)
            .max(self.data_epoch())
    }

    pub fn token_for(&self, epoch: u64) -> String {
        format!("edgeplane-{}-e{epoch}", self.cfg.site)
    }

    pub fn token(&self) -> String {
        self.token_for(self.site_epoch())
    }

    /// This host's member in the list, if any.
    pub fn my_member(&self) -> Option<&Member> {
        self.view
            .members
            .as_ref()?
            .iter()
            .find(|m| same_url(&m.peer_url, &self.me.peer_url))
    }

    /// The local etcd's Status, if it answers.
    pub fn local_status(&self) -> Option<&super::observe::EtcdStatus> {
        self.view.peers.get(self.my_index)?.status.as_ref()
    }

    /// `Lost`: no leader of this host's cluster, or a majority of voters
    /// unreachable, for `recovery.quorum_loss_window`; `Unknown`: not yet
    /// for long enough.
    pub fn quorum(&self) -> Quorum {
        match self.quorum_suspect_since {
            None => Quorum::Ok,
            Some(t) if t.elapsed() >= self.cfg.recovery.quorum_loss_window => Quorum::Lost,
            Some(_) => Quorum::Unknown,
        }
    }

    /// Whether the local etcd is the leader (and so this agent coordinates).
    pub fn is_coordinator(&self) -> bool {
        self.local_status()
            .is_some_and(|s| !s.is_learner && s.leader != 0 && s.leader == s.member_id)
    }

    /// Records the highest revision seen (a rebuild reads it back).
    pub fn persist_max_revision(&self) {
        if let Err(e) = self
            .state
            .set_fact(FACT_MAX_REVISION, &self.max_revision.to_string())
        {
            tracing::error!("Could not record the highest revision seen: {e}");
        }
    }
}
