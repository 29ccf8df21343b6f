//! The two decisions that can rewrite or abandon a cluster, as pure
//! functions of a typed view, so that their safety rules are property-tested
//! rather than hoped for (the shape of `plan::decide`):
//!
//! - [`decide_rebuild`]: after quorum loss, may this host rebuild a new
//!   cluster from its data, and whom must it fence first?
//! - [`decide_epoch`]: a peer reports a newer epoch or another live cluster:
//!   stay, raise the split-brain alarm, or abandon this host's data and join?
//!
//! The rules, and the bugs that made them rules:
//!
//! - The voters to fence come from the last membership this host saw, kept
//!   in the state store (never from memory only: an agent restarted while
//!   cut off used to see an empty list, fence nobody, and rebuild a
//!   one-member cluster beside the live majority). When the membership is
//!   unknown there is no automatic rebuild.
//! - An automatic rebuild happens only when every voter of that membership
//!   is this host, a reachable survivor that names this host the freshest,
//!   or a host fenced in this attempt.
//! - And only with a strict majority of *votes* over the site's configured
//!   nodes: this host and every agent that answers and names this host the
//!   freshest. A host cut off from the LAN sees nobody, so nobody disagrees;
//!   with a fence that still works across the cut (a BMC on another network)
//!   it used to power off the healthy majority and rebuild from its own copy.
//!   An agent names one host at a time, and two strict majorities of the
//!   same nodes always share one, so two sides of a cut never both rebuild.
//! - A witness (`role = "witness"`: an agent without etcd) is one more vote
//!   and nothing else: it is never the freshest (it has no data, whatever a
//!   view says), never in a fence set, and never rebuilds itself.
//! - Self-fence: under policy `fenced`, a voter whose unseen nodes (neither
//!   agent nor etcd answers) are a strict majority of the configured nodes may
//!   be fenced by the other side and rebuilt over, so it stops its etcd
//!   after `recovery.self_fence_after` (shorter than the other side's
//!   quorum-loss window) and serves again once it sees a majority. Where
//!   the unseen nodes are not a majority it never stops ([`decide_self_fence`]).
//! - A host whose own cluster has a leader never abandons it because a peer
//!   reports a newer epoch or another cluster: two live clusters are a
//!   split-brain alarm for a human, and no data moves while it stands.
//! - A host without quorum joins a newer epoch only when a cluster of that
//!   epoch is seen alive (a member answering with a leader), never on a
//!   peer's word alone.

pub use edgeplane_config::NodeRole;
use edgeplane_config::QuorumLossPolicy;
use serde::{Deserialize, Serialize};

/// Whether this host's cluster can commit writes, as the agent judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quorum {
    /// A leader is visible and a majority of voters answer.
    #[default]
    Ok,
    /// Suspect, not yet for `recovery.quorum_loss_window`.
    Unknown,
    /// No leader (or no majority) for the whole window.
    Lost,
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quorum::Ok => "ok",
            Quorum::Unknown => "unknown",
            Quorum::Lost => "lost",
        })
    }
}

/// One configured host during a quorum loss, as this agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survivor {
    pub name: String,
    /// An etcd host, or a witness (a vote, never data).
    pub role: NodeRole,
    /// Its etcd answers with data of this host's epoch: its applied index.
    pub applied_index: Option<u64>,
    /// With it, the raft commit index its etcd reports: the entries it
    /// holds that a majority acknowledged (it applies them before a rebuild
    /// snapshots its data). The freshest host is ranked by this first.
    pub commit_index: Option<u64>,
    /// Its agent answers `/status`.
    pub agent_answers: bool,
    /// The host its agent names as the freshest survivor.
    pub names_freshest: Option<String>,
}

impl Survivor {
    /// A host that answers in any way: it has a say, and is not fenced.
    fn answers(&self) -> bool {
        self.applied_index.is_some() || self.agent_answers
    }

    fn is_witness(&self) -> bool {
        self.role == NodeRole::Witness
    }
}

/// An operator's `recover` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub confirm: bool,
    /// From a snapshot file rather than this host's data.
    pub from_snapshot: bool,
}

/// Everything [`decide_rebuild`] looks at.
#[derive(Debug, Clone)]
pub struct RebuildView {
    pub policy: QuorumLossPolicy,
    pub quorum: Quorum,
    /// This host's index in `hosts` (config order).
    pub me: usize,
    pub hosts: Vec<Survivor>,
    /// The voters of the last membership this host saw (durable); `None`
    /// when it never saw one.
    pub known_voters: Option<Vec<String>>,
    /// This host has etcd data to rebuild from.
    pub have_data: bool,
    /// Consecutive looks (this one included) in which this host was the freshest.
    pub freshest_streak: u32,
    /// An automatic attempt failed recently and the back-off has not passed.
    pub backing_off: bool,
    pub request: Option<Request>,
}

/// Why no rebuild happens now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// This host never saw a membership, so it cannot tell whom to fence.
    MembershipUnknown,
    /// Policy `manual`: a human powers off the lost hosts and runs `recover`.
    Human,
    /// Another host has the freshest data and rebuilds.
    OtherRebuilds(String),
    /// No surviving etcd data is reachable.
    NoData,
    /// This host is the freshest, but not yet in two consecutive looks.
    NotSettled,
    /// A survivor that answers does not (yet) name this host the freshest.
    OthersDisagree(Vec<String>),
    /// The last automatic attempt failed; waiting before the next.
    BackingOff,
    /// Old voters that answer (so are not fenced) are a quorum of the old
    /// cluster: agreeing to a rebuild does not stop their etcd, and they
    /// could serve the old cluster again beside the new one.
    OldQuorumUnfenced(Vec<String>),
    /// This host and the agents that name it the freshest are not a strict
    /// majority of the configured nodes: the nodes it cannot see may be a
    /// live majority on the other side of a cut.
    NoVoteMajority {
        /// The votes for this host (this host first).
        votes: Vec<String>,
        /// A strict majority of `of`.
        needed: usize,
        /// The configured nodes (each has one vote).
        of: usize,
    },
}

/// [`Wait`] without its data, for `/status` and `diag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    MembershipUnknown,
    Human,
    OtherRebuilds,
    NoData,
    NotSettled,
    OthersDisagree,
    BackingOff,
    OldQuorumUnfenced,
    NoVoteMajority,
}

impl Wait {
    pub fn reason(&self) -> WaitReason {
        match self {
            Wait::MembershipUnknown => WaitReason::MembershipUnknown,
            Wait::Human => WaitReason::Human,
            Wait::OtherRebuilds(_) => WaitReason::OtherRebuilds,
            Wait::NoData => WaitReason::NoData,
            Wait::NotSettled => WaitReason::NotSettled,
            Wait::OthersDisagree(_) => WaitReason::OthersDisagree,
            Wait::BackingOff => WaitReason::BackingOff,
            Wait::OldQuorumUnfenced(_) => WaitReason::OldQuorumUnfenced,
            Wait::NoVoteMajority { .. } => WaitReason::NoVoteMajority,
        }
    }
}

/// One configured node's vote, as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub voter: String,
    /// The host its agent names the freshest; `None`: its agent does not
    /// answer (no vote).
    #[serde(rename = "for")]
    pub for_host: Option<String>,
}

/// The votes this host sees: its own (for the freshest it sees) and every
/// configured node's whose agent answers, in config order.
pub fn votes(v: &RebuildView) -> Vec<Vote> {
    let fresh = freshest(&v.hosts).map(|i| v.hosts[i].name.clone());
    v.hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Vote {
            voter: h.name.clone(),
            for_host: if i == v.me {
                fresh.clone()
            } else if h.agent_answers {
                h.names_freshest.clone()
            } else {
                None
            },
        })
        .collect()
}

/// A strict majority of `n` votes.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The votes for this host: itself, and every other configured node whose
/// agent answers and names it the freshest.
pub fn votes_for_me(v: &RebuildView) -> Vec<String> {
    let me = &v.hosts[v.me].name;
    v.hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| {
            *i == v.me || (h.agent_answers && h.names_freshest.as_deref() == Some(me.as_str()))
        })
        .map(|(_, h)| h.name.clone())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoConfirm,
    NoOwnData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildDecision {
    /// Quorum is not lost.
    NotNeeded,
    Wait(Wait),
    Refuse(Refusal),
    /// Fence these hosts (all must succeed), then rebuild from this host.
    Rebuild {
        fence: Vec<String>,
        /// The votes it rests on, a strict majority of the configured nodes
        /// (empty for an operator's request: a human decided).
        votes: Vec<String>,
        /// Asked by an operator who confirmed the lost hosts are off.
        operator: bool,
    },
}

/// The reachable host with the freshest data: highest applied index, config
/// order breaking ties.
pub fn freshest(hosts: &[Survivor]) -> Option<usize> {
    hosts
        .iter()
        .enumerate()
        // A witness has no data to rebuild from, whatever a view claims.
        .filter(|(_, h)| !h.is_witness())
        // Most acknowledged entries first (the commit index), then the most
        // applied: a host that knows more entries are committed holds more
        // acknowledged writes, even if it has applied fewer of them yet.
        .filter_map(|(i, h)| Some((i, (h.commit_index.unwrap_or(0), h.applied_index?))))
        // max_by_key keeps the LAST maximum: reverse so the first in config order wins.
        .rev()
        .max_by_key(|(_, rank)| *rank)
        .map(|(i, _)| i)
}

/// The epoch whose data a host counts in a quorum loss: its own data's.
/// A host with no data (a cold spare, or its data set aside) has nothing of
/// its own epoch to protect, so it counts the newest epoch its peers
/// report, as a witness (which never has data) does: its vote then names the freshest host of the
/// cluster that was lost, not of one rebuilt away before it held data.
/// (The campaign found this: after one automatic rebuild, a cold spare
/// still at epoch 0 counted no survivor's data, withheld its vote, and no
/// later quorum loss could be rebuilt without an operator.)
pub fn counted_epoch(own: u64, have_data: bool, peers: impl Iterator<Item = u64>) -> u64 {
    if have_data {
        own
    } else {
        peers.fold(own, u64::max)
    }
}

/// The operator's recovery command, as `/status` and `diag` print it.
/// Operator actions are taken only by the host that acts, from itself
/// (`api::operator_refusal`), so for another host it says where to run it;
/// there its config is at the default path.
pub fn recover_command(me: &str, config_path: &str, from: Option<&str>) -> String {
    match from {
        Some(h) if h == me => {
            format!("edgeplane recover --config {config_path} --from {h} --confirm")
        }
        Some(h) => format!("on {h}: edgeplane recover --from {h} --confirm"),
        None => format!("edgeplane recover --config {config_path} --confirm"),
    }
}

/// Voters of the known membership whose etcd does not answer.
pub fn lost_voters(v: &RebuildView) -> Vec<String> {
    v.known_voters
        .iter()
        .flatten()
        .filter(|name| {
            !v.hosts
                .iter()
                .any(|h| &h.name == *name && h.applied_index.is_some())
        })
        .cloned()
        .collect()
}

/// Survivors (hosts that answer, other than this one) that do not name this
/// host the freshest.
fn disagreeing(v: &RebuildView) -> Vec<String> {
    let me = &v.hosts[v.me].name;
    v.hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| {
            *i != v.me && h.answers() && h.names_freshest.as_deref() != Some(me.as_str())
        })
        .map(|(_, h)| h.name.clone())
        .collect()
}

/// Whether to rebuild after quorum loss; see the module doc for the rules.
pub fn decide_rebuild(v: &RebuildView) -> RebuildDecision {
    use RebuildDecision::{NotNeeded, Rebuild, Refuse};
    let me = &v.hosts[v.me];
    // A witness has no cluster of its own to rebuild.
    if v.quorum != Quorum::Lost || me.is_witness() {
        return NotNeeded;
    }
    if let Some(r) = v.request {
        if !r.confirm {
            return Refuse(Refusal::NoConfirm);
        }
        if !r.from_snapshot && !v.have_data {
            return Refuse(Refusal::NoOwnData);
        }
        // The operator confirmed the lost hosts are off: nothing is fenced.
        return Rebuild {
            fence: Vec::new(),
            votes: Vec::new(),
            operator: true,
        };
    }
    let fresh = freshest(&v.hosts);
    let me_freshest = fresh == Some(v.me) && v.have_data;
    if v.policy == QuorumLossPolicy::Manual {
        return RebuildDecision::Wait(match fresh {
            Some(_) => Wait::Human,
            None => Wait::NoData,
        });
    }
    // Fewer agents answer than a strict majority: no rebuild can rest on a
    // majority of votes from here, whoever is the freshest (this host's own
    // etcd may even be stopped by its self-fence).
    let needed = majority(v.hosts.len());
    let answering = v
        .hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| *i == v.me || h.agent_answers)
        .count();
    if answering < needed {
        return RebuildDecision::Wait(Wait::NoVoteMajority {
            votes: votes_for_me(v),
            needed,
            of: v.hosts.len(),
        });
    }
    if !me_freshest {
        return RebuildDecision::Wait(match fresh {
            Some(i) => Wait::OtherRebuilds(v.hosts[i].name.clone()),
            None => Wait::NoData,
        });
    }
    let Some(known) = v.known_voters.as_ref().filter(|k| !k.is_empty()) else {
        return RebuildDecision::Wait(Wait::MembershipUnknown);
    };
    let disagree = disagreeing(v);
    if !disagree.is_empty() {
        return RebuildDecision::Wait(Wait::OthersDisagree(disagree));
    }
    let votes = votes_for_me(v);
    if votes.len() < needed {
        return RebuildDecision::Wait(Wait::NoVoteMajority {
            votes,
            needed,
            of: v.hosts.len(),
        });
    }
    if v.freshest_streak < 2 {
        return RebuildDecision::Wait(Wait::NotSettled);
    }
    if v.backing_off {
        return RebuildDecision::Wait(Wait::BackingOff);
    }
    // Every voter that is not this host and does not answer (and so cannot
    // agree) is fenced; one that answers has agreed (checked above).
    let fence: Vec<String> = known
        .iter()
        .filter(|name| **name != me.name)
        // Memberships come from etcd, which never lists a witness; should a
        // record ever name one, it is still never powered off as a voter.
        .filter(|name| !v.hosts.iter().any(|h| &h.name == *name && h.is_witness()))
        .filter(|name| !v.hosts.iter().any(|h| &h.name == *name && h.answers()))
        .cloned()
        .collect();
    // Agreeing is not stopping: an old voter that answers keeps (or starts)
    // its etcd in the old cluster. The old voters left unfenced, this host
    // aside (the rebuild takes it out of the old cluster), must be too few
    // to elect a leader there, or the old cluster can come back beside the
    // new one. (The long campaign found it: lost voters powered on while
    // the survivors fenced the first of them; the second one answered and
    // agreed, the post-check then rebuilt, and the two unfenced old voters
    // elected a leader of the old cluster.)
    let unfenced: Vec<String> = known
        .iter()
        .filter(|name| **name != me.name && !fence.contains(name))
        .cloned()
        .collect();
    if unfenced.len() >= majority(known.len()) {
        return RebuildDecision::Wait(Wait::OldQuorumUnfenced(unfenced));
    }
    Rebuild {
        fence,
        votes,
        operator: false,
    }
}

/// What [`decide_self_fence`] looks at.
#[derive(Debug, Clone)]
pub struct SelfFenceView {
    pub policy: QuorumLossPolicy,
    /// This host is a voter of the last membership it recorded.
    pub is_voter: bool,
    /// Configured nodes (one vote each).
    pub nodes: usize,
    /// Nodes whose agent answers, this host included.
    pub seen: usize,
    /// How long the unseen nodes have been a strict majority (`None`: they
    /// are not now).
    pub unseen_majority_for: Option<std::time::Duration>,
    pub after: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfFence {
    /// Keep (or start) serving.
    Serve,
    /// The unseen nodes are a majority, not yet for `after`.
    Pending,
    /// Stop etcd (and keep it stopped): the other side may rebuild.
    Stop,
}

/// Whether the nodes this host cannot see are a strict majority.
pub fn unseen_majority(nodes: usize, seen: usize) -> bool {
    2 * nodes.saturating_sub(seen) > nodes
}

/// Whether this voter stops serving; see the module doc.
pub fn decide_self_fence(v: &SelfFenceView) -> SelfFence {
    if v.policy != QuorumLossPolicy::Fenced
        || !v.is_voter
        || !unseen_majority(v.nodes, v.seen.max(1))
    {
        return SelfFence::Serve;
    }
    match v.unseen_majority_for {
        Some(t) if t >= v.after => SelfFence::Stop,
        _ => SelfFence::Pending,
    }
}

/// Another host's etcd and agent, for [`decide_epoch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCluster {
    pub name: String,
    /// The epoch its agent reports (`None`: its agent does not answer).
    pub epoch: Option<u64>,
    /// Its etcd answers: the cluster ID and whether it knows a leader.
    pub etcd: Option<PeerEtcd>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerEtcd {
    pub cluster_id: u64,
    /// It is a voter that knows a leader (a learner's word proves nothing:
    /// it keeps naming a dead leader).
    pub has_leader: bool,
}

/// This host's own cluster, for [`decide_epoch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnCluster {
    /// The epoch of this host's data.
    pub epoch: u64,
    /// This host's etcd data exists.
    pub has_data: bool,
    /// The ID of the cluster this host's data belongs to (from its running
    /// etcd, else the last one recorded); `None` when unknown.
    pub cluster_id: Option<u64>,
    /// This host's etcd runs as a voter and knows a leader.
    pub local_has_leader: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochDecision {
    /// Nothing newer or foreign is seen alive.
    Stay,
    /// This host's cluster has a leader and another live cluster (or a newer
    /// epoch claim) exists: raise the alarm, keep serving, move nothing.
    SplitBrain {
        /// The hosts of the other side.
        others: Vec<String>,
    },
    /// A peer claims a newer epoch, but no cluster of it is seen alive and
    /// this host has no quorum: wait for evidence.
    WaitForEvidence { claimed: u64 },
    /// This host has no quorum and a cluster of a newer epoch is alive:
    /// snapshot this host's data, set it aside, join that cluster.
    Adopt { epoch: u64 },
}

fn same_cluster(own: &OwnCluster, p: &PeerCluster, e: &PeerEtcd) -> bool {
    match own.cluster_id {
        Some(id) => e.cluster_id == id,
        // Unknown (an agent from before cluster IDs were recorded): the
        // epoch stands in for it.
        None => p.epoch == Some(own.epoch),
    }
}

/// Whether to stay in this host's cluster; see the module doc for the rules.
pub fn decide_epoch(own: &OwnCluster, peers: &[PeerCluster]) -> EpochDecision {
    if !own.has_data {
        return EpochDecision::Stay;
    }
    let quorate = own.local_has_leader
        || peers.iter().any(|p| {
            p.etcd
                .as_ref()
                .is_some_and(|e| e.has_leader && same_cluster(own, p, e))
        });
    // Other clusters that are alive: a member answering with a leader.
    let foreign: Vec<&PeerCluster> = peers
        .iter()
        .filter(|p| {
            p.etcd
                .as_ref()
                .is_some_and(|e| e.has_leader && !same_cluster(own, p, e))
        })
        .collect();
    let claimed = peers.iter().filter_map(|p| p.epoch).max().unwrap_or(0);
    if quorate {
        let others: Vec<String> = peers
            .iter()
            .filter(|p| foreign.iter().any(|f| f.name == p.name) || p.epoch > Some(own.epoch))
            .map(|p| p.name.clone())
            .collect();
        return if others.is_empty() {
            EpochDecision::Stay
        } else {
            EpochDecision::SplitBrain { others }
        };
    }
    let newest_alive = foreign
        .iter()
        .filter_map(|p| p.epoch)
        .filter(|e| *e > own.epoch)
        .max();
    match newest_alive {
        Some(epoch) => EpochDecision::Adopt { epoch },
        None if claimed > own.epoch => EpochDecision::WaitForEvidence { claimed },
        None => EpochDecision::Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #14 §4: the freshest survivor holds the most acknowledged
    /// entries (the highest commit index), even when another has applied
    /// more of its log so far; the applied index breaks a tie, config order
    /// the last one; a witness is never the freshest.
    #[test]
    fn freshest_ranks_by_commit_index_then_applied() {
        let s = |name: &str, commit: u64, applied: u64| Survivor {
            name: name.into(),
            applied_index: Some(applied),
            commit_index: Some(commit),
            agent_answers: true,
            ..Survivor::default()
        };
        assert_eq!(freshest(&[s("a", 100, 100), s("b", 120, 90)]), Some(1));
        assert_eq!(freshest(&[s("a", 120, 95), s("b", 120, 90)]), Some(0));
        assert_eq!(freshest(&[s("a", 120, 95), s("b", 120, 95)]), Some(0));
        let mut w = s("w", 500, 500);
        w.role = NodeRole::Witness;
        assert_eq!(freshest(&[w, s("b", 1, 1)]), Some(1));
    }
    /// An etcd host as `h4` sees it: its etcd's index (`None`: no answer)
    /// and whom its agent names the freshest (`None`: no answer).
    fn host(name: &str, applied: Option<u64>, names: Option<&str>) -> Survivor {
        Survivor {
            name: name.into(),
            role: NodeRole::Etcd,
            applied_index: applied,
            commit_index: applied,
            agent_answers: names.is_some(),
            names_freshest: names.map(str::to_string),
        }
    }

    /// A 5-host site after a quorum loss, seen by `h4` (index 3): voters h1,
    /// h2, h3; h4 the standby; h5 the spare; policy fenced, settled.
    fn five_hosts(hosts: Vec<Survivor>) -> RebuildView {
        RebuildView {
            policy: QuorumLossPolicy::Fenced,
            quorum: Quorum::Lost,
            me: 3,
            hosts,
            known_voters: Some(vec!["h1".into(), "h2".into(), "h3".into()]),
            have_data: true,
            freshest_streak: 2,
            backing_off: false,
            request: None,
        }
    }

    /// The long campaign's split brain (seed 2026120401, fault 107): voters
    /// h1, h2, h3; h4 the standby and the freshest; h5 the spare. h2 and h3
    /// were lost, h4 fenced h2, and h3 came back meanwhile, answering and
    /// naming h4 the freshest. The old voters left unfenced (h1, h3) are a
    /// quorum of the old cluster: no rebuild. With h3 still silent, it is
    /// fenced too, and h4 rebuilds.
    #[test]
    fn never_rebuilds_while_the_unfenced_old_voters_are_a_quorum() {
        let view = |h3_answers: bool| {
            five_hosts(vec![
                host("h1", Some(10), Some("h4")),
                host("h2", None, None),
                if h3_answers {
                    host("h3", Some(10), Some("h4"))
                } else {
                    host("h3", None, None)
                },
                host("h4", Some(12), Some("h4")),
                host("h5", None, Some("h4")),
            ])
        };
        assert_eq!(
            decide_rebuild(&view(true)),
            RebuildDecision::Wait(Wait::OldQuorumUnfenced(vec!["h1".into(), "h3".into()]))
        );
        assert_eq!(
            decide_rebuild(&view(false)),
            RebuildDecision::Rebuild {
                fence: vec!["h2".into(), "h3".into()],
                votes: vec!["h1".into(), "h4".into(), "h5".into()],
                operator: false,
            }
        );
    }

    use proptest::prelude::*;

    /// Hosts as seen by host `me`; a survivor that answers names `me` as
    /// the freshest most of the time (so that agreement, and a majority of
    /// votes, is common), else any host or one that is not configured.
    fn arb_survivors(n: usize, me: usize) -> impl Strategy<Value = Vec<Survivor>> {
        let names: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
        proptest::collection::vec(
            (
                proptest::option::weighted(0.6, 0u64..5),
                proptest::bool::weighted(0.7),
                prop_oneof![3 => Just(Some(me)), 1 => proptest::option::of(0..n + 1)],
                // About one node in five is a witness (this host too, at
                // times: a witness must never rebuild). A witness's applied
                // index is arbitrary on purpose: whatever a view says, a
                // witness is never a source.
                proptest::bool::weighted(0.2),
            ),
            n,
        )
        .prop_map(move |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (applied, agent, names_i, witness))| Survivor {
                    name: names[i].clone(),
                    role: if witness {
                        NodeRole::Witness
                    } else {
                        NodeRole::Etcd
                    },
                    applied_index: applied,
                    commit_index: applied,
                    agent_answers: agent,
                    names_freshest: names_i
                        .filter(|_| agent)
                        .map(|j| names.get(j).cloned().unwrap_or_else(|| "nobody".into())),
                })
                .collect()
        })
    }

    fn arb_view() -> impl Strategy<Value = RebuildView> {
        (2usize..6).prop_flat_map(arb_view_of)
    }

    /// A view of a site of `n` configured nodes by any one of them.
    fn arb_view_of(n: usize) -> impl Strategy<Value = RebuildView> {
        (0..n)
            .prop_flat_map(move |me| {
                let names: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
                (
                    arb_survivors(n, me),
                    Just(me),
                    proptest::option::weighted(0.8, proptest::sample::subsequence(names, 0..=n)),
                    proptest::bool::weighted(0.8),
                    0u32..4,
                    proptest::bool::weighted(0.2),
                    proptest::option::weighted(0.2, (any::<bool>(), any::<bool>())),
                    prop_oneof![1 => Just(Quorum::Ok), 1 => Just(Quorum::Unknown), 4 => Just(Quorum::Lost)],
                    prop_oneof![
                        3 => Just(QuorumLossPolicy::Fenced),
                        1 => Just(QuorumLossPolicy::Manual)
                    ],
                )
            })
            .prop_map(
                |(hosts, me, known, have_data, streak, backing_off, req, quorum, policy)| {
                    // A membership comes from etcd: it never names a witness.
                    let known = known.map(|k: Vec<String>| {
                        k.into_iter()
                            .filter(|n| hosts.iter().any(|h| &h.name == n && !h.is_witness()))
                            .collect()
                    });
                    RebuildView {
                        policy,
                        quorum,
                        me,
                        hosts,
                        known_voters: known,
                        have_data,
                        freshest_streak: streak,
                        backing_off,
                        request: req.map(|(confirm, from_snapshot)| Request {
                            confirm,
                            from_snapshot,
                        }),
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The safety rules of an automatic rebuild, over arbitrary views
        /// (restarts show up as an unknown or partial membership, peer
        /// answers as arbitrary survivors).
        #[test]
        fn automatic_rebuilds_cover_every_known_voter(v in arb_view()) {
            let d = decide_rebuild(&v);
            if v.quorum != Quorum::Lost {
                prop_assert_eq!(&d, &RebuildDecision::NotNeeded);
            }
            if let RebuildDecision::Rebuild { fence, votes, operator: false } = &d {
                prop_assert_eq!(v.policy, QuorumLossPolicy::Fenced);
                // A strict majority of the configured nodes voted for this
                // host: itself, and agents that answer and name it.
                prop_assert!(2 * votes.len() > v.hosts.len(), "no strict majority: {:?} of {:?}", votes, v);
                prop_assert!(votes.contains(&v.hosts[v.me].name));
                for voter in votes {
                    let h = v.hosts.iter().find(|h| &h.name == voter);
                    prop_assert!(h.is_some_and(|h| h.name == v.hosts[v.me].name
                        || (h.agent_answers && h.names_freshest.as_deref() == Some(v.hosts[v.me].name.as_str()))),
                        "{} is not a vote for this host: {:?}", voter, v);
                }
                let mut distinct = votes.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), votes.len(), "one vote per node");
                prop_assert!(v.request.is_none());
                prop_assert!(v.have_data, "never from no data");
                prop_assert!(v.freshest_streak >= 2 && !v.backing_off);
                prop_assert_eq!(freshest(&v.hosts), Some(v.me));
                // Never when the membership is unknown.
                let known = v.known_voters.as_ref();
                prop_assert!(known.is_some_and(|k| !k.is_empty()), "membership unknown: {:?}", v);
                let me = &v.hosts[v.me].name;
                // Every known voter: this host, an agreeing survivor, or fenced.
                for voter in known.into_iter().flatten() {
                    let agrees = v.hosts.iter().any(|h| &h.name == voter && h.answers()
                        && h.names_freshest.as_deref() == Some(me.as_str()));
                    prop_assert!(voter == me || agrees || fence.contains(voter),
                        "voter {} neither this host, agreeing, nor fenced: {:?}", voter, v);
                }
                // Every survivor that answers agrees, and none is fenced.
                for (i, h) in v.hosts.iter().enumerate() {
                    if i != v.me && h.answers() {
                        prop_assert_eq!(h.names_freshest.as_deref(), Some(me.as_str()));
                        prop_assert!(!fence.contains(&h.name));
                    }
                }
                prop_assert!(!fence.contains(me), "never fences itself");
                // The old cluster cannot elect again: the old voters left
                // unfenced (this host aside) are fewer than its quorum.
                let known = known.into_iter().flatten().collect::<Vec<_>>();
                let unfenced = known.iter().filter(|k| **k != me && !fence.contains(k)).count();
                prop_assert!(unfenced < majority(known.len()),
                    "{} of {} old voters left unfenced: {:?}", unfenced, known.len(), v);
                // A witness is never the source and never fenced; its vote
                // counts like any other.
                prop_assert!(!v.hosts[v.me].is_witness(), "a witness never rebuilds: {:?}", v);
                for h in v.hosts.iter().filter(|h| h.is_witness()) {
                    prop_assert!(!fence.contains(&h.name), "witness {} fenced: {:?}", h.name, v);
                }
            }
            if v.hosts[v.me].is_witness() {
                prop_assert_eq!(&d, &RebuildDecision::NotNeeded);
            }
            if let Some(i) = freshest(&v.hosts) {
                prop_assert!(!v.hosts[i].is_witness(), "a witness is never the freshest");
            }
            if let RebuildDecision::Rebuild { operator: true, .. } = &d {
                prop_assert!(v.request.is_some_and(|r| r.confirm));
            }
            if v.policy == QuorumLossPolicy::Manual && v.request.is_none() {
                let automatic = matches!(d, RebuildDecision::Rebuild { .. });
                prop_assert!(!automatic, "manual policy never rebuilds by itself: {:?}", v);
            }
            // A witness's vote counts toward the strict majority exactly as
            // an etcd host's: the same view with every witness made an etcd
            // host without data decides the same votes.
            if let RebuildDecision::Rebuild { votes, operator: false, .. } = &d {
                let mut plain = v.clone();
                for h in &mut plain.hosts {
                    if h.is_witness() {
                        h.role = NodeRole::Etcd;
                        h.applied_index = None;
                    }
                }
                prop_assert_eq!(votes_for_me(&plain), votes.clone());
            }
        }
    }

    /// One moment of a site of `n` nodes cut into pieces: who sees whom
    /// (symmetric), each node's applied index and the host it names the
    /// freshest (each names one).
    #[derive(Debug, Clone)]
    struct World {
        n: usize,
        sees: Vec<Vec<bool>>,
        applied: Vec<Option<u64>>,
        names: Vec<usize>,
        /// Witnesses: a vote each, no data, no etcd.
        witness: Vec<bool>,
    }

    fn arb_world() -> impl Strategy<Value = World> {
        (2usize..7).prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::bool::weighted(0.6), n * n),
                proptest::collection::vec(proptest::option::weighted(0.8, 0u64..4), n),
                proptest::collection::vec(0..n, n),
                proptest::collection::vec(proptest::bool::weighted(0.25), n),
            )
                .prop_map(move |(link, applied, names, witness)| {
                    let sees = (0..n)
                        .map(|i| {
                            (0..n)
                                .map(|j| i == j || link[i.min(j) * n + i.max(j)])
                                .collect()
                        })
                        .collect();
                    let applied = applied
                        .into_iter()
                        .zip(&witness)
                        .map(|(a, w)| a.filter(|_| !w))
                        .collect();
                    World {
                        n,
                        sees,
                        applied,
                        names,
                        witness,
                    }
                })
        })
    }

    impl World {
        /// What host `me` decides on: the nodes it sees answer, the rest are
        /// silent; every voter is known; settled, not backing off.
        fn view(&self, me: usize) -> RebuildView {
            let name = |i: usize| format!("h{}", i + 1);
            RebuildView {
                policy: QuorumLossPolicy::Fenced,
                quorum: Quorum::Lost,
                me,
                hosts: (0..self.n)
                    .map(|j| {
                        let seen = self.sees[me][j];
                        Survivor {
                            name: name(j),
                            role: if self.witness[j] {
                                NodeRole::Witness
                            } else {
                                NodeRole::Etcd
                            },
                            applied_index: self.applied[j].filter(|_| seen),
                            commit_index: self.applied[j].filter(|_| seen),
                            agent_answers: seen,
                            names_freshest: (seen && j != me).then(|| name(self.names[j])),
                        }
                    })
                    .collect(),
                known_voters: Some(
                    (0..self.n)
                        .filter(|&j| !self.witness[j])
                        .map(name)
                        .collect(),
                ),
                have_data: self.applied[me].is_some(),
                freshest_streak: 2,
                backing_off: false,
                request: None,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Never two rebuilds from disjoint vote sets: two automatic
        /// rebuilds decided over the same site (any views, any moments) rest
        /// on vote sets that share a node.
        #[test]
        fn two_rebuilds_never_rest_on_disjoint_votes(
            (a, b) in (2usize..6).prop_flat_map(|n| (arb_view_of(n), arb_view_of(n)))
        ) {
            if let (
                RebuildDecision::Rebuild { votes: va, operator: false, .. },
                RebuildDecision::Rebuild { votes: vb, operator: false, .. },
            ) = (decide_rebuild(&a), decide_rebuild(&b))
            {
                prop_assert!(va.iter().any(|x| vb.contains(x)), "disjoint votes {:?} {:?}", va, vb);
            }
        }

        /// However the site is cut, at one moment at most one host rebuilds
        /// (a node names one host, and counts only for it; a host counts
        /// itself only when it names itself).
        #[test]
        fn a_cut_site_never_rebuilds_on_two_sides(w in arb_world()) {
            let rebuilders: Vec<usize> = (0..w.n)
                .filter(|&me| w.names[me] == me || w.witness[me])
                .filter(|&me| matches!(decide_rebuild(&w.view(me)), RebuildDecision::Rebuild { .. }))
                .collect();
            prop_assert!(rebuilders.len() <= 1, "{:?} all rebuild: {:?}", rebuilders, w);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// A voter stops only when the nodes it cannot see are a strict
        /// majority, for `after`, under policy fenced; never otherwise (a
        /// 2|2 split keeps raft's behaviour).
        #[test]
        fn self_fence_only_when_the_unseen_are_a_majority(
            nodes in 1usize..8,
            seen in 0usize..9,
            is_voter in any::<bool>(),
            fenced in proptest::bool::weighted(0.8),
            for_ms in proptest::option::of(0u64..20_000),
            after_ms in 0u64..20_000,
        ) {
            let v = SelfFenceView {
                policy: if fenced { QuorumLossPolicy::Fenced } else { QuorumLossPolicy::Manual },
                is_voter,
                nodes,
                seen,
                unseen_majority_for: for_ms.map(std::time::Duration::from_millis),
                after: std::time::Duration::from_millis(after_ms),
            };
            let d = decide_self_fence(&v);
            let unseen = nodes.saturating_sub(seen.max(1));
            if d == SelfFence::Stop {
                prop_assert!(2 * unseen > nodes && is_voter && fenced);
                prop_assert!(for_ms.is_some_and(|t| t >= after_ms));
            }
            if 2 * unseen <= nodes {
                prop_assert_eq!(d, SelfFence::Serve);
            }
        }

        /// Over any cut of one moment: a host that may rebuild (a strict
        /// majority of votes) never self-fences, and every voter on the
        /// other side that sees nobody of that majority does, once `after`
        /// has passed.
        #[test]
        fn the_side_that_may_rebuild_never_self_fences(w in arb_world()) {
            let seen = |i: usize| (0..w.n).filter(|&j| w.sees[i][j]).count();
            let fence_view = |i: usize| SelfFenceView {
                policy: QuorumLossPolicy::Fenced,
                is_voter: !w.witness[i],
                nodes: w.n,
                seen: seen(i),
                unseen_majority_for: unseen_majority(w.n, seen(i)).then_some(std::time::Duration::from_secs(9)),
                after: std::time::Duration::from_secs(5),
            };
            for me in 0..w.n {
                if matches!(decide_rebuild(&w.view(me)), RebuildDecision::Rebuild { .. }) {
                    prop_assert_eq!(decide_self_fence(&fence_view(me)), SelfFence::Serve);
                    for other in 0..w.n {
                        let sees_majority_side = (0..w.n).any(|j| w.sees[other][j] && w.sees[me][j]);
                        if !sees_majority_side && !w.witness[other] {
                            prop_assert_eq!(decide_self_fence(&fence_view(other)), SelfFence::Stop,
                                "h{} cannot see the side of h{} that rebuilds: {:?}", other + 1, me + 1, w);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_generated_worlds_reach_rebuilds() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut rebuilds = 0;
        for _ in 0..4096 {
            let Ok(tree) = arb_world().new_tree(&mut runner) else {
                continue;
            };
            let w = tree.current();
            rebuilds += (0..w.n)
                .filter(|&me| w.names[me] == me && !w.witness[me])
                .filter(|&me| {
                    matches!(decide_rebuild(&w.view(me)), RebuildDecision::Rebuild { .. })
                })
                .count();
        }
        assert!(rebuilds > 20, "rebuilds: {rebuilds}");
    }

    /// The property above is not vacuous: its views do reach automatic
    /// rebuilds, with and without hosts to fence.
    #[test]
    fn the_generated_views_reach_automatic_rebuilds() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut fencing, mut plain, mut witnessed) = (0, 0, 0);
        for _ in 0..32768 {
            let Ok(tree) = arb_view().new_tree(&mut runner) else {
                continue;
            };
            let v = tree.current();
            if let RebuildDecision::Rebuild {
                fence,
                votes,
                operator: false,
            } = decide_rebuild(&v)
            {
                if votes
                    .iter()
                    .any(|x| v.hosts.iter().any(|h| &h.name == x && h.is_witness()))
                {
                    witnessed += 1;
                }
                if fence.is_empty() {
                    plain += 1
                } else {
                    fencing += 1
                }
            }
        }
        assert!(
            fencing > 10 && plain > 10 && witnessed > 10,
            "automatic rebuilds: {fencing} fencing, {plain} without, {witnessed} on a witness's vote"
        );
    }

    fn arb_epoch_case() -> impl Strategy<Value = (OwnCluster, Vec<PeerCluster>)> {
        let own = (
            0u64..3,
            any::<bool>(),
            proptest::option::of(1u64..4),
            any::<bool>(),
        )
            .prop_map(
                |(epoch, has_data, cluster_id, local_has_leader)| OwnCluster {
                    epoch,
                    has_data,
                    cluster_id,
                    local_has_leader,
                },
            );
        let peer = (
            proptest::option::of(0u64..1000),
            proptest::option::of((1u64..4, any::<bool>())),
        );
        (own, proptest::collection::vec(peer, 0..5)).prop_map(|(own, ps)| {
            let peers = ps
                .into_iter()
                .enumerate()
                .map(|(i, (epoch, etcd))| PeerCluster {
                    name: format!("h{i}"),
                    epoch,
                    etcd: etcd.map(|(cluster_id, has_leader)| PeerEtcd {
                        cluster_id,
                        has_leader,
                    }),
                })
                .collect();
            (own, peers)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// A quorate cluster is never abandoned, whatever peers claim; data is
        /// abandoned only for a newer epoch seen alive.
        #[test]
        fn a_quorate_cluster_is_never_abandoned((own, peers) in arb_epoch_case()) {
            let d = decide_epoch(&own, &peers);
            if own.local_has_leader {
                prop_assert!(!matches!(d, EpochDecision::Adopt { .. }), "{:?} {:?}", own, peers);
            }
            if let EpochDecision::Adopt { epoch } = d {
                prop_assert!(epoch > own.epoch);
                prop_assert!(own.has_data && !own.local_has_leader);
                // A live cluster of that epoch is seen: a member with a leader
                // whose agent reports it.
                prop_assert!(peers.iter().any(|p| p.epoch == Some(epoch)
                    && p.etcd.is_some_and(|e| e.has_leader)));
                // And no member of this host's own cluster has a leader.
                if let Some(id) = own.cluster_id {
                    prop_assert!(!peers.iter().any(|p| p.etcd.is_some_and(|e| e.has_leader && e.cluster_id == id)));
                }
            }
        }
    }

    /// Found by the fenced-recovery e2e test: the survivor that rebuilds
    /// first stops its etcd; the other survivor then saw it as gone, found
    /// itself freshest among those whose etcd answered, fenced it and
    /// rebuilt too. A survivor whose agent answers still has a say.
    #[test]
    fn a_survivor_whose_agent_answers_but_etcd_does_not_still_has_a_say() {
        // h1, h2: powered off. h3: rebuilding, its etcd stopped, its agent
        // names itself. h4: this host. h5: a spare (no etcd data) whose
        // agent names h4.
        let mut v = five_hosts(vec![
            host("h1", None, None),
            host("h2", None, None),
            host("h3", None, Some("h3")),
            host("h4", Some(9), Some("h4")),
            host("h5", None, Some("h4")),
        ]);
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Wait(Wait::OthersDisagree(vec!["h3".into()]))
        );
        // h3 names h4: agreement; h3 answers, so it is not fenced.
        v.hosts[2].names_freshest = Some("h4".into());
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Rebuild {
                fence: vec!["h1".into(), "h2".into()],
                votes: vec!["h3".into(), "h4".into(), "h5".into()],
                operator: false
            }
        );
        // h3 entirely silent (powered off): it has no say, and is fenced;
        // h4 and h5 are 2 votes of 5, not a majority.
        v.hosts[2] = host("h3", None, None);
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Wait(Wait::NoVoteMajority {
                votes: vec!["h4".into(), "h5".into()],
                needed: 3,
                of: 5
            })
        );
    }

    #[test]
    fn the_generated_epoch_cases_reach_every_decision() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut seen = [0usize; 4];
        for _ in 0..4096 {
            let Ok(tree) = arb_epoch_case().new_tree(&mut runner) else {
                continue;
            };
            let (own, peers) = tree.current();
            seen[match decide_epoch(&own, &peers) {
                EpochDecision::Stay => 0,
                EpochDecision::SplitBrain { .. } => 1,
                EpochDecision::WaitForEvidence { .. } => 2,
                EpochDecision::Adopt { .. } => 3,
            }] += 1;
        }
        assert!(
            seen.iter().all(|n| *n > 10),
            "stay, split brain, wait, adopt: {seen:?}"
        );
    }

    #[test]
    fn a_stolen_host_claiming_epoch_999_is_an_alarm_not_an_order() {
        let own = OwnCluster {
            epoch: 0,
            has_data: true,
            cluster_id: Some(7),
            local_has_leader: true,
        };
        let thief = PeerCluster {
            name: "h4".into(),
            epoch: Some(999),
            etcd: None,
        };
        assert_eq!(
            decide_epoch(&own, std::slice::from_ref(&thief)),
            EpochDecision::SplitBrain {
                others: vec!["h4".into()]
            }
        );
        // Without quorum, a claim alone is not evidence.
        let own = OwnCluster {
            local_has_leader: false,
            ..own
        };
        assert_eq!(
            decide_epoch(&own, &[thief]),
            EpochDecision::WaitForEvidence { claimed: 999 }
        );
    }

    /// Issue #14 §3: a 2-host site plus a witness. The voter h1 is cut off;
    /// the standby h2 still sees the witness, which names it the freshest:
    /// 2 of 3 votes, so h2 fences h1 and rebuilds. h1, alone, has 1 of 3
    /// and waits (and self-fences). The witness never rebuilds, is never
    /// fenced.
    #[test]
    fn two_hosts_and_a_witness_rebuild_on_the_witness_side_only() {
        let h = |name: &str, role, applied: Option<u64>, names: Option<&str>| Survivor {
            name: name.into(),
            role,
            applied_index: applied,
            commit_index: applied,
            agent_answers: names.is_some(),
            names_freshest: names.map(str::to_string),
        };
        let standby_side = RebuildView {
            policy: QuorumLossPolicy::Fenced,
            quorum: Quorum::Lost,
            me: 1,
            hosts: vec![
                h("h1", NodeRole::Etcd, None, None),
                h("h2", NodeRole::Etcd, Some(40), Some("h2")),
                h("w", NodeRole::Witness, None, Some("h2")),
            ],
            known_voters: Some(vec!["h1".into()]),
            have_data: true,
            freshest_streak: 2,
            backing_off: false,
            request: None,
        };
        assert_eq!(
            decide_rebuild(&standby_side),
            RebuildDecision::Rebuild {
                fence: vec!["h1".into()],
                votes: vec!["h2".into(), "w".into()],
                operator: false,
            }
        );
        let cut_off = RebuildView {
            me: 0,
            hosts: vec![
                h("h1", NodeRole::Etcd, Some(50), Some("h1")),
                h("h2", NodeRole::Etcd, None, None),
                h("w", NodeRole::Witness, None, None),
            ],
            ..standby_side.clone()
        };
        assert_eq!(
            decide_rebuild(&cut_off),
            RebuildDecision::Wait(Wait::NoVoteMajority {
                votes: vec!["h1".into()],
                needed: 2,
                of: 3
            })
        );
        // Seen from the witness itself: nothing to rebuild, ever.
        let witness = RebuildView {
            me: 2,
            ..standby_side.clone()
        };
        assert_eq!(decide_rebuild(&witness), RebuildDecision::NotNeeded);
        assert_eq!(
            decide_self_fence(&SelfFenceView {
                policy: QuorumLossPolicy::Fenced,
                is_voter: true,
                nodes: 3,
                seen: 1,
                unseen_majority_for: Some(std::time::Duration::from_secs(2)),
                after: std::time::Duration::from_secs(1),
            }),
            SelfFence::Stop
        );
    }

    /// The reproduced split brain: host-3 cut off, its agent restarted. It
    /// remembers the membership now, so it would fence host-1 and host-2;
    /// but alone it is 1 vote of 4 (issue #14 §3: with a fence that works
    /// across the cut it powered off the healthy majority), so it waits.
    /// Only with a majority of votes (two more agents naming it, on a
    /// 5-node site) does it fence and rebuild.
    #[test]
    fn a_restarted_minority_fences_the_voters_it_remembers() {
        let silent = |name: &str| Survivor {
            name: name.into(),
            ..Survivor::default()
        };
        let hosts = vec![
            silent("h1"),
            silent("h2"),
            Survivor {
                name: "h3".into(),
                role: NodeRole::Etcd,
                applied_index: Some(10),
                commit_index: Some(10),
                agent_answers: true,
                names_freshest: Some("h3".into()),
            },
            silent("h4"),
        ];
        let mut v = RebuildView {
            policy: QuorumLossPolicy::Fenced,
            quorum: Quorum::Lost,
            me: 2,
            hosts,
            known_voters: None,
            have_data: true,
            freshest_streak: 2,
            backing_off: false,
            request: None,
        };
        let alone = RebuildDecision::Wait(Wait::NoVoteMajority {
            votes: vec!["h3".into()],
            needed: 3,
            of: 4,
        });
        assert_eq!(decide_rebuild(&v), alone);
        v.known_voters = Some(vec!["h1".into(), "h2".into(), "h3".into()]);
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Wait(Wait::NoVoteMajority {
                votes: vec!["h3".into()],
                needed: 3,
                of: 4
            })
        );
        let voter = |name: &str| Survivor {
            name: name.into(),
            role: NodeRole::Etcd,
            applied_index: None,
            commit_index: None,
            agent_answers: true,
            names_freshest: Some("h3".into()),
        };
        v.hosts[3] = voter("h4");
        v.hosts.push(voter("h5"));
        // With the votes but without the membership: no rebuild either.
        let known = v.known_voters.take();
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Wait(Wait::MembershipUnknown)
        );
        v.known_voters = known;
        assert_eq!(
            decide_rebuild(&v),
            RebuildDecision::Rebuild {
                fence: vec!["h1".into(), "h2".into()],
                votes: vec!["h3".into(), "h4".into(), "h5".into()],
                operator: false
            }
        );
    }

    /// A 2|2 cut of four nodes: neither side has a strict majority (3), so
    /// neither rebuilds, whatever its fence could do.
    #[test]
    fn an_even_split_rebuilds_on_neither_side() {
        let w = World {
            n: 4,
            sees: vec![
                vec![true, true, false, false],
                vec![true, true, false, false],
                vec![false, false, true, true],
                vec![false, false, true, true],
            ],
            applied: vec![Some(5), Some(4), Some(5), Some(4)],
            names: vec![0, 0, 2, 2],
            witness: vec![false; 4],
        };
        for me in 0..4 {
            assert!(
                matches!(
                    decide_rebuild(&w.view(me)),
                    RebuildDecision::Wait(Wait::NoVoteMajority { .. })
                        | RebuildDecision::Wait(Wait::OtherRebuilds(_))
                ),
                "h{} must wait: {:?}",
                me + 1,
                decide_rebuild(&w.view(me))
            );
        }
    }

    #[test]
    fn a_host_without_data_counts_the_newest_epoch_its_peers_report() {
        // A cold spare left at epoch 0 after a rebuild into epoch 1.
        assert_eq!(counted_epoch(0, false, [1, 0, 1].into_iter()), 1);
        // With data of its own it counts only its own epoch's data.
        assert_eq!(counted_epoch(0, true, [1, 1].into_iter()), 0);
        // Never lower than its own, and alone it keeps its own.
        assert_eq!(counted_epoch(2, false, [1].into_iter()), 2);
        assert_eq!(counted_epoch(1, false, std::iter::empty()), 1);
    }
}
