//! The membership decision, as a pure function of what the coordinator sees.
//!
//! Only the agent next to the etcd leader runs it (see `agent::reconcile`),
//! and it returns at most ONE step; the caller acts, then looks again. Every
//! step is safe on its own, so a coordinator that dies between steps leaves
//! a cluster the next coordinator can continue from:
//!
//! 1. remove a dead voter (never when the live voters are not a majority:
//!    that is quorum loss, handled by recovery);
//! 2. promote a verified caught-up learner while voters < configured (never
//!    above the configured count);
//! 3. evict a learner whose host is dead, that never caught up within
//!    `learner_stuck_after` of being added, or that caught up once and has
//!    been behind for `standby_behind_limit` (a longer bound: one slow poll
//!    or a write burst must not throw a healthy standby away), so the one
//!    learner slot etcd 3.4 has is never wasted.
//!
//! Flap damping: a host the agents removed within `cluster.flap_window`
//! gets a detection window doubled per such removal ([`damping_factor`],
//! at most [`MAX_DAMPING_FACTOR`] times the base), so a host that keeps
//! stalling is not removed and resynced every few seconds, and a host that
//! really died is still replaced, only later.
//!
//! Removal comes before promotion: with 3 voters and 1 dead, promoting first
//! gives 4 voters with quorum 3 and no tolerance; removing first gives 2
//! voters, then 3, the order etcd operators use when they replace a member.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A host's part in its cluster, as its agent publishes it (`role` in
/// `/status`) and other agents read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No member list read yet.
    #[default]
    Starting,
    /// A member whose etcd does not run, or no member list while etcd is down.
    Waiting,
    /// Not a member: a cold spare, in line to join as the standby.
    Spare,
    /// The standby: etcd's learner.
    Learner,
    Voter,
    /// A witness node: the agent only, no etcd; one vote in a rebuild.
    Witness,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Starting => "starting",
            Role::Waiting => "waiting",
            Role::Spare => "spare",
            Role::Learner => "learner",
            Role::Voter => "voter",
            Role::Witness => "witness",
        })
    }
}

/// The timing and limits the decision uses (from `[cluster]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub voters: usize,
    pub failure_detection: Duration,
    pub etcd_restart_grace: Duration,
    pub promotion_max_lag: u64,
    pub promotion_stable_for: Duration,
    pub learner_stuck_after: Duration,
    pub standby_behind_limit: Duration,
    /// Removals older than this do not damp (`cluster.flap_window`).
    pub flap_window: Duration,
}

/// One etcd member as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: u64,
    /// Empty for a member that was added but has never started.
    pub name: String,
    pub peer_url: String,
    pub is_learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Member {
        Member {
            id: m.id(),
            name: m.name().to_string(),
            peer_url: m.peer_urls().first().cloned().unwrap_or_default(),
            is_learner: m.is_learner(),
        }
    }
}

/// What the coordinator knows of one member's host.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The member's etcd answered Status on the last poll.
    pub etcd_up: bool,
    /// For how long its etcd has not answered (zero when up).
    pub etcd_down_for: Duration,
    /// For how long its agent has not answered (zero when up).
    pub agent_down_for: Duration,
    /// Its Status says learner.
    pub reports_learner: bool,
    /// The member's applied raft index (last answer).
    pub applied_index: u64,
    /// For how long it has continuously been within the lag bound.
    pub caught_up_for: Duration,
    /// How long ago the coordinator first saw this member in the list.
    pub member_for: Duration,
    /// It has been caught up at least once since it was added.
    pub ever_caught_up: bool,
    /// For how long it has not been caught up, counted from the last time
    /// it was (zero when caught up now or never caught up).
    pub behind_for: Duration,
    /// How often an agent removed this host within `cluster.flap_window`
    /// ([`recent_removals`]).
    pub recent_removals: u32,
}

/// Where a standby stands, for the eviction rule, the log and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyState {
    /// Added and has not caught up yet (bounded by `learner_stuck_after`).
    CatchingUp,
    /// Within the lag bound now.
    CaughtUp,
    /// Caught up once and behind now (bounded by `standby_behind_limit`).
    FellBehind,
}

pub fn standby_state(h: &Health) -> StandbyState {
    if !h.caught_up_for.is_zero() {
        StandbyState::CaughtUp
    } else if h.ever_caught_up {
        StandbyState::FellBehind
    } else {
        StandbyState::CatchingUp
    }
}

/// Why a learner is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictCause {
    /// Its host (or its etcd, past the stuck window) is unreachable.
    HostDown,
    /// Never caught up within `learner_stuck_after` of being added.
    NeverCaughtUp,
    /// Caught up once, then behind for `standby_behind_limit`.
    FellBehind,
}

/// Why the membership decision is to wait. Typed so that callers match on
/// the reason (the quorum watch in `local.rs` does) instead of on a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipWait {
    /// No voter with a leader answered with a member list.
    NoMemberList,
    /// A majority of voters is unreachable: no membership change can commit.
    QuorumLost { unreachable: usize, voters: usize },
    /// Fewer voters than configured and no learner to promote.
    NoStandby { voters: usize, configured: usize },
    /// Fewer voters than configured; the standby is still catching up.
    StandbyCatchingUp { voters: usize, configured: usize },
    /// More voters than configured (an operator added one).
    MoreVotersThanConfigured { voters: usize, configured: usize },
}

impl std::fmt::Display for MembershipWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipWait::NoMemberList => {
                f.write_str("no member list: no voter with a leader answers")
            }
            MembershipWait::QuorumLost {
                unreachable,
                voters,
            } => write!(
                f,
                "quorum lost: {unreachable} of {voters} voters unreachable; no membership change is possible"
            ),
            MembershipWait::NoStandby { voters, configured } => write!(
                f,
                "voters {voters} of {configured}; waiting for a host to join as standby"
            ),
            MembershipWait::StandbyCatchingUp { voters, configured } => write!(
                f,
                "voters {voters} of {configured}; waiting for the standby to catch up"
            ),
            MembershipWait::MoreVotersThanConfigured { voters, configured } => write!(
                f,
                "{voters} voters but {configured} configured; Edgeplane never demotes a voter on its own"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: the cluster is at its configured strength.
    Steady,
    /// Something is wrong but the safe choice is to wait; says why.
    Wait(MembershipWait),
    RemoveVoter {
        id: u64,
        host: String,
        reason: String,
        /// The detection window's factor for this host ([`damping_factor`]):
        /// 1, or more for a host removed within `cluster.flap_window`.
        damping: u32,
    },
    Promote {
        id: u64,
        host: String,
        reason: String,
    },
    EvictLearner {
        id: u64,
        host: String,
        cause: EvictCause,
        reason: String,
    },
}

/// Display name of a member: its name, or its peer URL before it ever started.
pub fn label(m: &Member) -> String {
    if m.name.is_empty() {
        m.peer_url.clone()
    } else {
        m.name.clone()
    }
}

/// The detection window is at most this many times `failure_detection`
/// (three doublings): damping may delay the replacement of a host that
/// really died, never prevent it.
pub const MAX_DAMPING_FACTOR: u32 = 8;

/// The detection window's factor for a host removed `recent_removals` times
/// within `cluster.flap_window`: doubled per removal, at most
/// [`MAX_DAMPING_FACTOR`].
pub fn damping_factor(recent_removals: u32) -> u32 {
    let doublings = MAX_DAMPING_FACTOR.ilog2();
    1 << recent_removals.min(doublings)
}

/// One removal of a host by an agent, as journalled (wall clock: the
/// history outlives the agent that wrote it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PastRemoval {
    /// The removed member's label (its host name).
    pub host: String,
    /// When the removal started, in ms since the epoch.
    pub at_ms: i64,
}

/// How often `host` was removed within `window` before `now_ms`, counting
/// a removal reported twice (by two agents' histories) once. A removal
/// from the future (a peer's clock ahead of ours) counts as recent.
pub fn recent_removals(history: &[PastRemoval], host: &str, now_ms: i64, window: Duration) -> u32 {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let mut seen: Vec<i64> = history
        .iter()
        .filter(|r| r.host == host && now_ms.saturating_sub(r.at_ms) < window_ms)
        .map(|r| r.at_ms)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    u32::try_from(seen.len()).unwrap_or(u32::MAX)
}

/// The detection window and the restart grace for this member's host,
/// both damped by its recent removals.
pub fn detection_window(h: &Health, l: &Limits) -> (Duration, Duration) {
    let f = damping_factor(h.recent_removals);
    (
        l.failure_detection.saturating_mul(f),
        l.etcd_restart_grace.saturating_mul(f),
    )
}

/// Whether a member's host counts as dead: etcd silent for the detection
/// window, and either its agent silent too or the local restart grace spent
/// (both damped for a host that flaps: [`detection_window`]).
pub fn is_dead(h: &Health, l: &Limits) -> bool {
    let (window, grace) = detection_window(h, l);
    !h.etcd_up
        && h.etcd_down_for >= window
        && (h.agent_down_for >= window || h.etcd_down_for >= grace)
}

/// The one "caught up" rule: a member whose applied index is at most
/// `max_lag` (`cluster.promotion_max_lag`) raft entries behind the leader's.
/// `observe` applies it once per tick to every member (`Peer::caught_up`);
/// everything else reads that.
pub fn within_lag(leader_index: u64, applied_index: u64, max_lag: u64) -> bool {
    leader_index.saturating_sub(applied_index) <= max_lag
}

/// Whether a learner may be promoted now: it answers as a learner, is within
/// the absolute lag bound of the leader, and has been for `promotion_stable_for`.
/// (etcd 3.4.23's own check promotes a dead learner: never rely on it.)
pub fn promotable(h: &Health, leader_index: u64, l: &Limits) -> bool {
    h.etcd_up
        && h.reports_learner
        && within_lag(leader_index, h.applied_index, l.promotion_max_lag)
        && h.caught_up_for >= l.promotion_stable_for
}

/// The next membership step. `health[i]` belongs to `members[i]`;
/// `leader_index` is the leader's raft index.
pub fn decide(members: &[Member], health: &[Health], leader_index: u64, l: &Limits) -> Decision {
    let voters: Vec<usize> = (0..members.len())
        .filter(|&i| !members[i].is_learner)
        .collect();
    let learners: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].is_learner)
        .collect();
    // A voter that never started is a bootstrap member whose host has not
    // booted yet: it gets the learner's stuck window, not the failure window.
    let dead_voters: Vec<usize> = voters
        .iter()
        .copied()
        .filter(|&i| {
            is_dead(&health[i], l)
                && (!members[i].name.is_empty() || health[i].etcd_down_for >= l.learner_stuck_after)
        })
        .collect();
    let live_voters = voters.len() - dead_voters.len();

    if let Some(&d) = dead_voters.first() {
        if live_voters * 2 <= voters.len() {
            return Decision::Wait(MembershipWait::QuorumLost {
                unreachable: dead_voters.len(),
                voters: voters.len(),
            });
        }
        let h = &health[d];
        let damping = damping_factor(h.recent_removals);
        let flap = if damping > 1 {
            format!(
                "; flapping: removed {} time(s) within cluster.flap_window ({:.0}s), so its detection window was {:.1}s ({damping}x)",
                h.recent_removals,
                l.flap_window.as_secs_f64(),
                detection_window(h, l).0.as_secs_f64()
            )
        } else {
            String::new()
        };
        return Decision::RemoveVoter {
            id: members[d].id,
            host: label(&members[d]),
            reason: format!(
                "etcd unreachable for {:.1}s and agent unreachable for {:.1}s{flap}",
                h.etcd_down_for.as_secs_f64(),
                h.agent_down_for.as_secs_f64()
            ),
            damping,
        };
    }

    let candidate = learners
        .iter()
        .copied()
        .filter(|&i| promotable(&health[i], leader_index, l))
        .max_by_key(|&i| health[i].applied_index);
    if voters.len() < l.voters
        && let Some(c) = candidate
    {
        return Decision::Promote {
            id: members[c].id,
            host: label(&members[c]),
            reason: format!(
                "voters {} of {}; standby caught up (lag {} entries for {:.1}s)",
                voters.len(),
                l.voters,
                leader_index.saturating_sub(health[c].applied_index),
                health[c].caught_up_for.as_secs_f64()
            ),
        };
    }

    for &i in &learners {
        let h = &health[i];
        // A learner whose agent answers is starting or restarting, not dead:
        // only the stuck window applies to it.
        let (window, _) = detection_window(h, l);
        let host_dead = !h.etcd_up && h.etcd_down_for >= window && h.agent_down_for >= window;
        if host_dead || (!h.etcd_up && h.etcd_down_for >= l.learner_stuck_after) {
            return Decision::EvictLearner {
                id: members[i].id,
                host: label(&members[i]),
                cause: EvictCause::HostDown,
                reason: format!(
                    "standby's host unreachable for {:.1}s",
                    h.etcd_down_for.as_secs_f64()
                ),
            };
        }
        match standby_state(h) {
            StandbyState::CaughtUp => {}
            StandbyState::CatchingUp if h.member_for >= l.learner_stuck_after => {
                return Decision::EvictLearner {
                    id: members[i].id,
                    host: label(&members[i]),
                    cause: EvictCause::NeverCaughtUp,
                    reason: format!(
                        "standby has not caught up within {:.0}s of being added",
                        l.learner_stuck_after.as_secs_f64()
                    ),
                };
            }
            StandbyState::CatchingUp => {}
            StandbyState::FellBehind if h.behind_for >= l.standby_behind_limit => {
                return Decision::EvictLearner {
                    id: members[i].id,
                    host: label(&members[i]),
                    cause: EvictCause::FellBehind,
                    reason: format!(
                        "standby caught up once, then stayed behind for {:.0}s (limit {:.0}s)",
                        h.behind_for.as_secs_f64(),
                        l.standby_behind_limit.as_secs_f64()
                    ),
                };
            }
            StandbyState::FellBehind => {}
        }
    }

    if voters.len() < l.voters {
        let (voters, configured) = (voters.len(), l.voters);
        return Decision::Wait(if learners.is_empty() {
            MembershipWait::NoStandby { voters, configured }
        } else {
            MembershipWait::StandbyCatchingUp { voters, configured }
        });
    }
    if voters.len() > l.voters {
        return Decision::Wait(MembershipWait::MoreVotersThanConfigured {
            voters: voters.len(),
            configured: l.voters,
        });
    }
    Decision::Steady
}

/// A decision in a sentence.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Steady => "steady: voters at configured strength".into(),
        Decision::Wait(w) => format!("waiting: {w}"),
        Decision::RemoveVoter { host, reason, .. } => format!("remove voter {host}: {reason}"),
        Decision::Promote { host, reason, .. } => format!("promote standby {host}: {reason}"),
        Decision::EvictLearner { host, reason, .. } => format!("evict standby {host}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            voters: 3,
            failure_detection: Duration::from_secs(1),
            etcd_restart_grace: Duration::from_secs(3),
            promotion_max_lag: 100,
            promotion_stable_for: Duration::from_secs(1),
            learner_stuck_after: Duration::from_secs(60),
            standby_behind_limit: Duration::from_secs(300),
            flap_window: Duration::from_secs(600),
        }
    }
    fn m(id: u64, learner: bool) -> Member {
        Member {
            id,
            name: format!("h{id}"),
            peer_url: format!("http://p{id}"),
            is_learner: learner,
        }
    }
    fn up(applied: u64) -> Health {
        Health {
            etcd_up: true,
            applied_index: applied,
            caught_up_for: Duration::from_secs(10),
            member_for: Duration::from_secs(100),
            ever_caught_up: true,
            ..Health::default()
        }
    }
    fn learner_up(applied: u64) -> Health {
        Health {
            reports_learner: true,
            ..up(applied)
        }
    }
    fn dead() -> Health {
        Health {
            etcd_down_for: Duration::from_secs(2),
            agent_down_for: Duration::from_secs(2),
            ..Health::default()
        }
    }

    #[test]
    fn steady_site() {
        let ms = [m(1, false), m(2, false), m(3, false), m(4, true)];
        let hs = [up(100), up(100), up(100), learner_up(100)];
        assert_eq!(decide(&ms, &hs, 100, &limits()), Decision::Steady);
    }

    #[test]
    fn dead_voter_is_removed_before_promotion() {
        let ms = [m(1, false), m(2, false), m(3, false), m(4, true)];
        let hs = [up(100), dead(), up(100), learner_up(100)];
        assert!(matches!(
            decide(&ms, &hs, 100, &limits()),
            Decision::RemoveVoter { id: 2, .. }
        ));
        // After the removal, the learner is promoted.
        let ms = [m(1, false), m(3, false), m(4, true)];
        let hs = [up(100), up(100), learner_up(100)];
        assert!(matches!(
            decide(&ms, &hs, 100, &limits()),
            Decision::Promote { id: 4, .. }
        ));
    }

    #[test]
    fn detection_window_and_restart_grace() {
        let ms = [m(1, false), m(2, false), m(3, false)];
        // Down for less than the window: wait.
        let brief = Health {
            etcd_down_for: Duration::from_millis(500),
            agent_down_for: Duration::from_millis(500),
            ..Health::default()
        };
        assert_eq!(
            decide(&ms, &[up(1), brief, up(1)], 1, &limits()),
            Decision::Steady
        );
        // Agent answers, etcd down 2 s: the local restart still has its grace.
        let restarting = Health {
            etcd_down_for: Duration::from_secs(2),
            ..Health::default()
        };
        assert_eq!(
            decide(&ms, &[up(1), restarting, up(1)], 1, &limits()),
            Decision::Steady
        );
        let gave_up = Health {
            etcd_down_for: Duration::from_secs(4),
            ..Health::default()
        };
        assert!(matches!(
            decide(&ms, &[up(1), gave_up, up(1)], 1, &limits()),
            Decision::RemoveVoter { .. }
        ));
    }

    #[test]
    fn a_flapping_voter_waits_a_doubled_window_up_to_the_cap() {
        let ms = [m(1, false), m(2, false), m(3, false)];
        let stalled = |secs: u64, removals: u32| Health {
            etcd_down_for: Duration::from_secs(secs),
            agent_down_for: Duration::from_secs(secs),
            recent_removals: removals,
            ..Health::default()
        };
        // Removed once within the flap window: 1 s is not enough, 2 s is.
        assert_eq!(
            decide(&ms, &[up(1), stalled(1, 1), up(1)], 1, &limits()),
            Decision::Steady
        );
        assert!(matches!(
            decide(&ms, &[up(1), stalled(2, 1), up(1)], 1, &limits()),
            Decision::RemoveVoter { id: 2, damping: 2, ref reason, .. } if reason.contains("flapping")
        ));
        // Twice: 4 s; five times: capped at 8 s, not 32 s.
        assert_eq!(
            decide(&ms, &[up(1), stalled(3, 2), up(1)], 1, &limits()),
            Decision::Steady
        );
        assert_eq!(
            decide(&ms, &[up(1), stalled(7, 5), up(1)], 1, &limits()),
            Decision::Steady
        );
        assert!(matches!(
            decide(&ms, &[up(1), stalled(8, 5), up(1)], 1, &limits()),
            Decision::RemoveVoter {
                id: 2,
                damping: 8,
                ..
            }
        ));
        // Agent answers, etcd down: the restart grace is damped too (3 s → 6 s).
        let restarting = Health {
            etcd_down_for: Duration::from_secs(5),
            recent_removals: 1,
            ..Health::default()
        };
        assert_eq!(
            decide(&ms, &[up(1), restarting, up(1)], 1, &limits()),
            Decision::Steady
        );
        // History: only this host's removals within the window, each once.
        let at = |host: &str, at_ms: i64| PastRemoval {
            host: host.into(),
            at_ms,
        };
        let history = [
            at("h2", 1_000_000),
            at("h2", 1_000_000),
            at("h2", 700_000),
            at("h3", 1_100_000),
            at("h2", 300_000),
        ];
        let w = Duration::from_secs(600);
        assert_eq!(recent_removals(&history, "h2", 1_200_000, w), 2);
        assert_eq!(recent_removals(&history, "h3", 1_200_000, w), 1);
        assert_eq!(recent_removals(&history, "h1", 1_200_000, w), 0);
    }

    #[test]
    fn majority_dead_is_quorum_loss_and_waits() {
        let ms = [m(1, false), m(2, false), m(3, false), m(4, true)];
        let hs = [up(100), dead(), dead(), learner_up(100)];
        assert!(matches!(
            decide(&ms, &hs, 100, &limits()),
            Decision::Wait(MembershipWait::QuorumLost { .. })
        ));
        // 1 voter + 1 standby, voter dead.
        let l = Limits {
            voters: 1,
            ..limits()
        };
        let ms = [m(1, false), m(2, true)];
        assert!(matches!(
            decide(&ms, &[dead(), learner_up(9)], 9, &l),
            Decision::Wait(MembershipWait::QuorumLost { .. })
        ));
    }

    #[test]
    fn lagging_dead_or_unstable_learner_is_not_promoted() {
        let ms = [m(1, false), m(3, false), m(4, true)];
        let lagging = learner_up(10);
        assert!(matches!(
            decide(&ms, &[up(500), up(500), lagging], 500, &limits()),
            Decision::Wait(_)
        ));
        let fresh = Health {
            caught_up_for: Duration::from_millis(200),
            ..learner_up(500)
        };
        assert!(matches!(
            decide(&ms, &[up(500), up(500), fresh], 500, &limits()),
            Decision::Wait(_)
        ));
        // A learner that died after catching up: etcd would promote it; we evict it.
        assert!(matches!(
            decide(&ms, &[up(500), up(500), dead()], 500, &limits()),
            Decision::EvictLearner { id: 4, .. }
        ));
        // Answers but not as a learner (stale view): no promotion.
        let odd = Health {
            reports_learner: false,
            ..learner_up(500)
        };
        assert!(matches!(
            decide(&ms, &[up(500), up(500), odd], 500, &limits()),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn never_started_bootstrap_voter_gets_the_stuck_window() {
        let unstarted = Member {
            name: String::new(),
            ..m(3, false)
        };
        let ms = [m(1, false), m(2, false), unstarted];
        let late = Health {
            etcd_down_for: Duration::from_secs(5),
            agent_down_for: Duration::from_secs(5),
            ..Health::default()
        };
        assert_eq!(
            decide(&ms, &[up(1), up(1), late], 1, &limits()),
            Decision::Steady
        );
        let never = Health {
            etcd_down_for: Duration::from_secs(61),
            agent_down_for: Duration::from_secs(61),
            ..Health::default()
        };
        assert!(matches!(
            decide(&ms, &[up(1), up(1), never], 1, &limits()),
            Decision::RemoveVoter { id: 3, .. }
        ));
    }

    #[test]
    fn never_started_learner_is_evicted_after_the_stuck_window() {
        let ms = [
            m(1, false),
            m(2, false),
            m(3, false),
            Member {
                name: String::new(),
                ..m(4, true)
            },
        ];
        let never = Health {
            member_for: Duration::from_secs(61),
            etcd_down_for: Duration::from_millis(300),
            ..Health::default()
        };
        assert!(matches!(
            decide(&ms, &[up(1), up(1), up(1), never], 1, &limits()),
            Decision::EvictLearner { id: 4, .. }
        ));
    }

    #[test]
    fn a_standby_that_fell_behind_gets_the_longer_bound() {
        let ms = [m(1, false), m(2, false), m(3, false), m(4, true)];
        // Caught up for hours, then one bad poll: zero caught-up time, long a member.
        let blip = Health {
            caught_up_for: Duration::ZERO,
            behind_for: Duration::from_millis(700),
            member_for: Duration::from_secs(3600),
            ..learner_up(90)
        };
        assert_eq!(standby_state(&blip), StandbyState::FellBehind);
        assert_eq!(
            decide(
                &ms,
                &[up(100), up(100), up(100), blip.clone()],
                100,
                &limits()
            ),
            Decision::Steady
        );
        // Behind past learner_stuck_after but within standby_behind_limit: kept.
        let burst = Health {
            behind_for: Duration::from_secs(120),
            ..blip.clone()
        };
        assert_eq!(
            decide(&ms, &[up(5000), up(5000), up(5000), burst], 5000, &limits()),
            Decision::Steady
        );
        // Behind for the whole limit: replaced.
        let gone = Health {
            behind_for: Duration::from_secs(300),
            ..blip.clone()
        };
        assert!(matches!(
            decide(&ms, &[up(5000), up(5000), up(5000), gone], 5000, &limits()),
            Decision::EvictLearner {
                id: 4,
                cause: EvictCause::FellBehind,
                ..
            }
        ));
        // Never promoted while behind, however long it was caught up before.
        let ms = [m(1, false), m(2, false), m(4, true)];
        assert!(matches!(
            decide(&ms, &[up(100), up(100), blip], 100, &limits()),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn a_learner_that_never_caught_up_is_evicted_after_the_stuck_window() {
        let ms = [m(1, false), m(2, false), m(3, false), m(4, true)];
        let slow = Health {
            caught_up_for: Duration::ZERO,
            ever_caught_up: false,
            member_for: Duration::from_secs(59),
            ..learner_up(10)
        };
        assert_eq!(
            decide(
                &ms,
                &[up(5000), up(5000), up(5000), slow.clone()],
                5000,
                &limits()
            ),
            Decision::Steady
        );
        let stuck = Health {
            member_for: Duration::from_secs(60),
            ..slow
        };
        assert!(matches!(
            decide(&ms, &[up(5000), up(5000), up(5000), stuck], 5000, &limits()),
            Decision::EvictLearner {
                id: 4,
                cause: EvictCause::NeverCaughtUp,
                ..
            }
        ));
    }

    /// A standby's record: never caught up, caught up now, or caught up once
    /// and behind now; with the times that go with it.
    fn arb_standby_record() -> impl Strategy<Value = (u64, bool, u64, u64)> {
        // (caught_up_ms, ever_caught_up, behind_ms, member_for_s)
        prop_oneof![
            (0u64..200).prop_map(|m| (0, false, 0, m)),
            (1u64..5000, 0u64..200).prop_map(|(c, m)| (c, true, 0, m)),
            (1u64..600_000, 0u64..4000).prop_map(|(b, m)| (0, true, b, m)),
        ]
    }

    fn arb_member_health() -> impl Strategy<Value = (bool, Health)> {
        (
            any::<bool>(),
            prop_oneof![3 => Just(true), 1 => Just(false)],
            0u64..3000,
            prop_oneof![3 => Just(0u64), 1 => 0u64..3000],
            0u64..5000,
            arb_standby_record(),
            any::<bool>(),
            prop_oneof![3 => Just(0u32), 2 => Just(1u32), 1 => 0u32..6],
        )
            .prop_map(
                |(learner, etcd_up, down_ms, agent_ms, applied, record, reports, removals)| {
                    let (caught_ms, ever, behind_ms, member_s) = record;
                    (
                        learner,
                        Health {
                            etcd_up,
                            etcd_down_for: if etcd_up {
                                Duration::ZERO
                            } else {
                                Duration::from_millis(down_ms * 2)
                            },
                            agent_down_for: Duration::from_millis(agent_ms * 2),
                            reports_learner: reports,
                            applied_index: applied,
                            caught_up_for: Duration::from_millis(caught_ms),
                            member_for: Duration::from_secs(member_s),
                            ever_caught_up: ever,
                            behind_for: Duration::from_millis(behind_ms),
                            recent_removals: removals,
                        },
                    )
                },
            )
    }

    type Case = (Vec<Member>, Vec<Health>, usize, u64);

    fn arb_case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(arb_member_health(), 1..7),
            prop_oneof![Just(1usize), Just(3), Just(5)],
            0u64..5000,
        )
            .prop_map(|(mh, voters, leader_index)| {
                let members = mh
                    .iter()
                    .enumerate()
                    .map(|(i, (learner, _))| m(i as u64 + 1, *learner))
                    .collect();
                let health = mh.into_iter().map(|(_, h)| h).collect();
                (members, health, voters, leader_index)
            })
    }

    /// The properties above are not vacuous: the generated views reach every
    /// kind of step, and evictions for each cause.
    #[test]
    fn the_generated_views_reach_every_step_and_eviction_cause() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut remove, mut promote, mut host_down, mut never, mut behind, mut kept_behind) =
            (0, 0, 0, 0, 0, 0);
        let (mut damped, mut held_by_damping) = (0, 0);
        for _ in 0..4096 {
            let Ok(tree) = arb_case().new_tree(&mut runner) else {
                continue;
            };
            let (members, health, voters, leader_index) = tree.current();
            let l = Limits { voters, ..limits() };
            // A stalled voter past the base window that damping keeps.
            let undamped: Vec<Health> = health
                .iter()
                .map(|h| Health {
                    recent_removals: 0,
                    ..h.clone()
                })
                .collect();
            if matches!(
                decide(&members, &undamped, leader_index, &l),
                Decision::RemoveVoter { .. }
            ) && !matches!(
                decide(&members, &health, leader_index, &l),
                Decision::RemoveVoter { .. }
            ) {
                held_by_damping += 1;
            }
            match decide(&members, &health, leader_index, &l) {
                Decision::RemoveVoter { damping, .. } => {
                    remove += 1;
                    if damping > 1 {
                        damped += 1;
                    }
                }
                Decision::Promote { .. } => promote += 1,
                Decision::EvictLearner { cause, .. } => match cause {
                    EvictCause::HostDown => host_down += 1,
                    EvictCause::NeverCaughtUp => never += 1,
                    EvictCause::FellBehind => behind += 1,
                },
                Decision::Steady | Decision::Wait(_) => {
                    // A standby that fell behind past learner_stuck_after and was kept.
                    if members.iter().zip(&health).any(|(m, h)| {
                        m.is_learner
                            && standby_state(h) == StandbyState::FellBehind
                            && h.member_for >= l.learner_stuck_after
                    }) {
                        kept_behind += 1;
                    }
                }
            }
        }
        for (what, n) in [
            ("removals", remove),
            ("promotions", promote),
            ("host-down evictions", host_down),
            ("never-caught-up evictions", never),
            ("fell-behind evictions", behind),
            ("fell-behind standbys kept", kept_behind),
            ("damped removals", damped),
            ("stalled voters kept by damping", held_by_damping),
        ] {
            assert!(n > 10, "{what}: {n} of 4096 generated views");
        }
    }

    proptest! {
        /// Whatever it sees, one step never takes the voters above the
        /// configured count, never promotes while a dead voter is still a
        /// member, and never changes membership without a live majority.
        /// A learner that ever caught up is never evicted before
        /// `standby_behind_limit` unless its host is down; "never caught up"
        /// is only said of one that never did.
        #[test]
        fn decisions_are_quorum_safe((members, health, voters, leader_index) in arb_case()) {
            let l = Limits { voters, ..limits() };
            let n_voters = members.iter().filter(|m| !m.is_learner).count();
            let dead_voters = (0..members.len()).filter(|&i| !members[i].is_learner && is_dead(&health[i], &l)).count();
            match decide(&members, &health, leader_index, &l) {
                Decision::Promote { id, .. } => {
                    prop_assert!(n_voters < voters);
                    prop_assert_eq!(dead_voters, 0);
                    let i = members.iter().position(|m| m.id == id).unwrap_or(usize::MAX);
                    prop_assert!(members[i].is_learner);
                    prop_assert!(promotable(&health[i], leader_index, &l));
                }
                Decision::RemoveVoter { id, damping, .. } => {
                    let i = members.iter().position(|m| m.id == id).unwrap_or(usize::MAX);
                    let h = &health[i];
                    prop_assert!(!members[i].is_learner);
                    prop_assert!((n_voters - dead_voters) * 2 > n_voters);
                    // Flap damping: never removed before its damped window.
                    prop_assert_eq!(damping, damping_factor(h.recent_removals));
                    prop_assert!(h.etcd_down_for >= l.failure_detection * damping);
                    prop_assert!(
                        h.agent_down_for >= l.failure_detection * damping
                            || h.etcd_down_for >= l.etcd_restart_grace * damping
                    );
                }
                Decision::EvictLearner { id, cause, .. } => {
                    let i = members.iter().position(|m| m.id == id).unwrap_or(usize::MAX);
                    let h = &health[i];
                    prop_assert!(members[i].is_learner);
                    prop_assert_eq!(dead_voters, 0);
                    match cause {
                        EvictCause::HostDown => {
                            prop_assert!(!h.etcd_up);
                            prop_assert!(
                                h.etcd_down_for >= l.learner_stuck_after
                                    || h.etcd_down_for >= detection_window(h, &l).0
                            );
                        }
                        EvictCause::NeverCaughtUp => {
                            prop_assert!(!h.ever_caught_up);
                            prop_assert!(h.member_for >= l.learner_stuck_after);
                        }
                        EvictCause::FellBehind => {
                            prop_assert!(h.ever_caught_up);
                            prop_assert!(h.caught_up_for.is_zero());
                        }
                    }
                    if h.ever_caught_up && h.etcd_up {
                        prop_assert!(h.behind_for >= l.standby_behind_limit);
                    }
                }
                Decision::Steady => {
                    prop_assert_eq!(dead_voters, 0);
                    prop_assert!(n_voters >= voters);
                }
                Decision::Wait(_) => {}
            }
        }

        /// Damping only ever delays: a host with more recent removals is
        /// dead only if it would be with fewer, the window doubles per
        /// removal, and it never exceeds the cap.
        #[test]
        fn damping_only_delays_and_is_capped(
            (_, h) in arb_member_health(),
            more in 0u32..4,
        ) {
            let l = limits();
            let f = damping_factor(h.recent_removals);
            prop_assert!((1..=MAX_DAMPING_FACTOR).contains(&f));
            prop_assert!(f.is_power_of_two());
            let flappier = Health { recent_removals: h.recent_removals + more, ..h.clone() };
            if is_dead(&flappier, &l) {
                prop_assert!(is_dead(&h, &l));
            }
            prop_assert!(damping_factor(flappier.recent_removals) >= f);
            if h.recent_removals < MAX_DAMPING_FACTOR.ilog2() {
                prop_assert_eq!(damping_factor(h.recent_removals + 1), 2 * f);
            }
            // A host down for the capped window with its agent silent too is
            // removed however often it flapped.
            let gone = Health {
                etcd_up: false,
                etcd_down_for: l.failure_detection * MAX_DAMPING_FACTOR,
                agent_down_for: l.failure_detection * MAX_DAMPING_FACTOR,
                ..flappier
            };
            prop_assert!(is_dead(&gone, &l));
        }

        /// The history counts only this host's removals within the window,
        /// each once, whatever order or duplication the agents report.
        #[test]
        fn recent_removals_count_the_window_only(
            entries in proptest::collection::vec((0usize..3, 0i64..1_200_000), 0..12),
            dup in any::<bool>(),
        ) {
            let hosts = ["h1", "h2", "h3"];
            let now = 1_200_000i64;
            let window = Duration::from_secs(600);
            let mut history: Vec<PastRemoval> = entries
                .iter()
                .map(|&(h, at)| PastRemoval { host: hosts[h].to_string(), at_ms: at })
                .collect();
            if dup {
                history.extend(history.clone());
            }
            let mut expect: Vec<i64> = entries
                .iter()
                .filter(|&&(h, at)| h == 0 && now - at < 600_000)
                .map(|&(_, at)| at)
                .collect();
            expect.sort_unstable();
            expect.dedup();
            prop_assert_eq!(
                recent_removals(&history, "h1", now, window) as usize,
                expect.len()
            );
        }
    }
}
