//! What this agent sees of the site: every host's etcd Status and agent
//! `/status`, polled each tick with short timeouts, and how long each has
//! been silent. One etcd client per member (never a balanced client: a
//! learner refuses most RPCs and `MoveLeader` must reach the leader itself).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgeplane_config::Node;

use crate::tls::SiteTls;
use serde::{Deserialize, Serialize};

use super::etcd_control::{Budget, CONNECT_TIMEOUT, EtcdControl};
use super::plan::{self, Health, Member};

/// A member's answer to Status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcdStatus {
    /// The cluster this member belongs to: member lists, leaders and epochs
    /// are only compared within one cluster.
    #[serde(serialize_with = "hex_id", deserialize_with = "from_hex_id")]
    pub cluster_id: u64,
    #[serde(serialize_with = "hex_id", deserialize_with = "from_hex_id")]
    pub member_id: u64,
    #[serde(serialize_with = "hex_id", deserialize_with = "from_hex_id")]
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    /// The store's revision (what watchers and caches hold).
    pub revision: i64,
    pub term: u64,
    pub is_learner: bool,
    pub db_size: i64,
    pub db_in_use: i64,
    pub errors: Vec<String>,
    pub version: String,
}

pub fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}

/// Reads back what [`hex_id`] wrote.
pub fn from_hex_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
}

/// One host as seen from here.
pub struct Peer {
    pub node: Node,
    tls: Option<SiteTls>,
    client: Option<EtcdControl>,
    pub status: Option<EtcdStatus>,
    pub etcd_silent_since: Option<Instant>,
    /// Last `/status` document of its agent.
    pub agent_doc: Option<serde_json::Value>,
    pub agent_silent_since: Option<Instant>,
    pub caught_up_since: Option<Instant>,
    /// Raft entries behind the leader this tick (`None`: no leader, or no answer).
    pub lag: Option<u64>,
    /// Within `cluster.promotion_max_lag` of the leader this tick
    /// ([`plan::within_lag`]); `None` during an election (no leader to
    /// compare with), `Some(false)` when it does not answer.
    pub caught_up: Option<bool>,
}

impl Peer {
    pub(crate) fn new(node: Node, tls: Option<SiteTls>) -> Peer {
        let now = Instant::now();
        Peer {
            node,
            tls,
            client: None,
            status: None,
            // Unknown until the first answer counts as silent from our start.
            etcd_silent_since: Some(now),
            agent_doc: None,
            agent_silent_since: Some(now),
            caught_up_since: None,
            lag: None,
            caught_up: None,
        }
    }

    pub fn etcd_down_for(&self, now: Instant) -> Duration {
        self.etcd_silent_since
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default()
    }

    pub fn agent_down_for(&self, now: Instant) -> Duration {
        self.agent_silent_since
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default()
    }

    pub fn agent_up(&self) -> bool {
        self.agent_silent_since.is_none()
    }

    /// The role its agent reports (`None`: no answer, or a role this
    /// version does not know).
    pub fn agent_role(&self) -> Option<plan::Role> {
        serde_json::from_value(self.agent_doc.as_ref()?.get("role")?.clone()).ok()
    }

    /// Whether its agent says its own loop has stalled.
    pub fn agent_stalled(&self) -> bool {
        self.agent_doc
            .as_ref()
            .and_then(|d| d.pointer("/progress/stalled"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// A client for this member's etcd (created lazily, reused).
    pub async fn client(&mut self) -> Option<EtcdControl> {
        if self.client.is_none() {
            self.client = EtcdControl::connect(&[self.node.client_url.as_str()], self.tls.as_ref())
                .await
                .ok();
        }
        self.client.clone()
    }
}

/// The whole site as seen from this agent.
pub struct View {
    pub peers: Vec<Peer>,
    /// The site's witnesses (agents without etcd): only their agent's
    /// `/status` is polled; each is one vote in quorum-loss recovery.
    pub witnesses: Vec<Peer>,
    /// The member list from a voter that has a leader.
    pub members: Option<Vec<Member>>,
    /// The cluster ID of the member that answered `members`.
    pub members_cluster: Option<u64>,
    /// This host's index in `peers`.
    me: usize,
    /// The cluster this host's data belongs to when its etcd does not run
    /// (from the state store); set by the agent.
    pub known_cluster: Option<u64>,
    /// When each member id was first seen in the list.
    pub first_seen: HashMap<u64, Instant>,
    /// When each member id was last seen caught up (absent: never since it
    /// was added). Per member id, so a resynced standby (a new member)
    /// starts with no record.
    pub last_caught_up: HashMap<u64, Instant>,
    /// Each standby's state at the last decision (to log changes once).
    pub standby_states: HashMap<u64, super::plan::StandbyState>,
    http: reqwest::Client,
    max_lag: u64,
}

impl View {
    fn http_client(tls: Option<&SiteTls>) -> anyhow::Result<reqwest::Client> {
        let mut http = reqwest::Client::builder()
            .timeout(Budget::Probe.timeout())
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = tls {
            http = t.http_client(http)?;
        }
        Ok(http.build()?)
    }

    /// The client the view polls agents with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A new client, so that no connection opened before (to a host whose
    /// certificate is now revoked) is used again.
    pub fn renew_http(&mut self, tls: Option<&SiteTls>) -> anyhow::Result<()> {
        self.http = Self::http_client(tls)?;
        Ok(())
    }

    pub fn new(
        nodes: &[Node],
        witnesses: &[Node],
        me: usize,
        max_lag: u64,
        tls: Option<&SiteTls>,
    ) -> anyhow::Result<View> {
        let http = Self::http_client(tls)?;
        Ok(View {
            peers: nodes
                .iter()
                .cloned()
                .map(|n| Peer::new(n, tls.cloned()))
                .collect(),
            witnesses: witnesses
                .iter()
                .cloned()
                .map(|n| Peer::new(n, tls.cloned()))
                .collect(),
            members: None,
            members_cluster: None,
            me,
            known_cluster: None,
            first_seen: HashMap::new(),
            last_caught_up: HashMap::new(),
            standby_states: HashMap::new(),
            http,
            max_lag,
        })
    }

    /// Polls every host's etcd and agent at once; then reads the member list.
    pub async fn refresh(&mut self) {
        let http = self.http.clone();
        let mut jobs = Vec::new();
        for p in &mut self.peers {
            let client = p.client().await;
            let url = format!("{}/status", p.node.agent_url.trim_end_matches('/'));
            let http = http.clone();
            jobs.push(async move {
                let etcd = async {
                    let mut c = client?;
                    let r = c.status().await.ok()?;
                    Some(EtcdStatus {
                        cluster_id: r.header().map(|h| h.cluster_id()).unwrap_or(0),
                        member_id: r.header().map(|h| h.member_id()).unwrap_or(0),
                        leader: r.leader(),
                        raft_index: r.raft_index(),
                        revision: r.header().map(|h| h.revision()).unwrap_or(0),
                        applied_index: r.raft_applied_index(),
                        term: r.raft_term(),
                        is_learner: r.is_learner(),
                        db_size: r.db_size(),
                        db_in_use: r.raft_used_db_size(),
                        errors: r.errors().to_vec(),
                        version: r.version().to_string(),
                    })
                };
                let agent = async {
                    let r = http.get(&url).send().await.ok()?;
                    if !r.status().is_success() {
                        return None;
                    }
                    r.json::<serde_json::Value>().await.ok()
                };
                tokio::join!(etcd, agent)
            });
        }
        let witness_jobs = self.witnesses.iter().map(|w| {
            let url = format!("{}/status", w.node.agent_url.trim_end_matches('/'));
            let http = http.clone();
            async move {
                let r = http.get(&url).send().await.ok()?;
                if !r.status().is_success() {
                    return None;
                }
                r.json::<serde_json::Value>().await.ok()
            }
        });
        let (results, witness_docs) = tokio::join!(
            futures::future::join_all(jobs),
            futures::future::join_all(witness_jobs)
        );
        let now = Instant::now();
        for (w, doc) in self.witnesses.iter_mut().zip(witness_docs) {
            match doc {
                Some(doc) => {
                    w.agent_doc = Some(doc);
                    w.agent_silent_since = None;
                }
                None => {
                    w.agent_doc = None;
                    w.agent_silent_since.get_or_insert(now);
                }
            }
        }
        for (p, (etcd, agent)) in self.peers.iter_mut().zip(results) {
            match etcd {
                Some(s) => {
                    p.status = Some(s);
                    p.etcd_silent_since = None;
                }
                None => {
                    p.status = None;
                    p.etcd_silent_since.get_or_insert(now);
                    // Reconnect from scratch next time: a channel to a process that
                    // died backs off for seconds after its successor is up.
                    p.client = None;
                }
            }
            match agent {
                Some(doc) => {
                    p.agent_doc = Some(doc);
                    p.agent_silent_since = None;
                }
                None => {
                    p.agent_doc = None;
                    p.agent_silent_since.get_or_insert(now);
                }
            }
        }
        let leader_index = self.leader_index();
        for p in &mut self.peers {
            // During an election there is no leader to compare with: a member
            // that still answers keeps its record (it did not fall behind a
            // leader that does not exist); one that stops answering loses it.
            (p.lag, p.caught_up) = match (&p.status, leader_index) {
                (Some(s), Some(li)) => (
                    Some(li.saturating_sub(s.applied_index)),
                    Some(plan::within_lag(li, s.applied_index, self.max_lag)),
                ),
                (Some(_), None) => (None, None),
                (None, _) => (None, Some(false)),
            };
            match p.caught_up {
                Some(true) => {
                    p.caught_up_since.get_or_insert(now);
                    if let Some(s) = &p.status {
                        self.last_caught_up.insert(s.member_id, now);
                    }
                }
                Some(false) => p.caught_up_since = None,
                None => {}
            }
        }
        let (members, cluster) = self.read_members().await.unzip();
        self.members = members;
        self.members_cluster = cluster;
        if let Some(ms) = &self.members {
            for m in ms {
                self.first_seen.entry(m.id).or_insert(now);
            }
            self.first_seen
                .retain(|id, _| ms.iter().any(|m| m.id == *id));
            self.last_caught_up
                .retain(|id, _| ms.iter().any(|m| m.id == *id));
            self.standby_states
                .retain(|id, _| ms.iter().any(|m| m.id == *id && m.is_learner));
        }
    }

    /// The cluster this host belongs to: its running etcd's, else the one
    /// its data was last seen in; `None` when unknown (a spare, a first start).
    pub fn my_cluster(&self) -> Option<u64> {
        self.peers
            .get(self.me)
            .and_then(|p| p.status.as_ref())
            .map(|s| s.cluster_id)
            .or(self.known_cluster)
    }

    /// The leader of this host's cluster (of any cluster when that is
    /// unknown): its id and peer index. A leader of another cluster (a split
    /// brain, a newer epoch) is never taken for ours.
    pub fn leader(&self) -> Option<(u64, usize)> {
        let mine = self.my_cluster();
        // Trust the member that says it IS the leader, not followers' memory of it.
        self.peers.iter().enumerate().find_map(|(i, p)| {
            let s = p.status.as_ref()?;
            (s.leader != 0 && s.leader == s.member_id && mine.is_none_or(|c| c == s.cluster_id))
                .then_some((s.leader, i))
        })
    }

    pub fn leader_index(&self) -> Option<u64> {
        let (_, i) = self.leader()?;
        self.peers[i].status.as_ref().map(|s| s.raft_index)
    }

    /// Member list from the leader, else from any voter that knows a leader,
    /// with the cluster ID of the member that answered.
    async fn read_members(&mut self) -> Option<(Vec<Member>, u64)> {
        let mut order: Vec<usize> = Vec::new();
        if let Some((_, i)) = self.leader() {
            order.push(i);
        }
        let mine = self.my_cluster();
        for (i, p) in self.peers.iter().enumerate() {
            if let Some(s) = &p.status
                && !s.is_learner
                && s.leader != 0
                && mine.is_none_or(|c| c == s.cluster_id)
                && !order.contains(&i)
            {
                order.push(i);
            }
        }
        for i in order {
            let Some(mut c) = self.peers[i].client().await else {
                continue;
            };
            if let Ok(r) = c.member_list(Budget::Probe).await {
                let cluster = r.header().map(|h| h.cluster_id()).unwrap_or(0);
                return Some((r.members().iter().map(Member::from).collect(), cluster));
            }
        }
        None
    }

    pub fn peer_by_url(&self, peer_url: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| same_url(&p.node.peer_url, peer_url))
    }

    /// `plan::Health` of each member, in member-list order.
    pub fn health(&self, members: &[Member], now: Instant) -> Vec<Health> {
        members
            .iter()
            .map(|m| {
                let member_for = self
                    .first_seen
                    .get(&m.id)
                    .map(|t| now.saturating_duration_since(*t))
                    .unwrap_or_default();
                match self.peer_by_url(&m.peer_url) {
                    Some(i) => {
                        let p = &self.peers[i];
                        let s = p
                            .status
                            .as_ref()
                            .filter(|s| s.member_id == m.id || s.member_id == 0);
                        let caught_up_for = p
                            .caught_up_since
                            .map(|t| now.saturating_duration_since(t))
                            .unwrap_or_default();
                        let last = self.last_caught_up.get(&m.id);
                        Health {
                            etcd_up: s.is_some(),
                            // Silence from before it became a member does not
                            // count: a learner just added has not started yet.
                            etcd_down_for: if s.is_some() {
                                Duration::ZERO
                            } else {
                                p.etcd_down_for(now).min(member_for)
                            },
                            agent_down_for: p.agent_down_for(now),
                            reports_learner: s.is_some_and(|s| s.is_learner),
                            applied_index: s.map(|s| s.applied_index).unwrap_or(0),
                            caught_up_for,
                            member_for,
                            ever_caught_up: last.is_some(),
                            behind_for: match last {
                                Some(t) if caught_up_for.is_zero() => {
                                    now.saturating_duration_since(*t)
                                }
                                _ => Duration::ZERO,
                            },
                            // Filled in from the journals (`coordinate::with_removal_history`).
                            recent_removals: 0,
                        }
                    }
                    // A member that is not one of our hosts: never judged dead by us.
                    None => Health {
                        etcd_up: true,
                        member_for,
                        ..Health::default()
                    },
                }
            })
            .collect()
    }
}

/// URLs compare without a trailing slash.
pub fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The epoch a peer's agent publishes (0 when it publishes none).
pub fn peer_epoch(p: &Peer) -> u64 {
    p.agent_doc
        .as_ref()
        .and_then(|d| d.get("epoch"))
        .and_then(|e| e.as_u64())
        .unwrap_or(0)
}
