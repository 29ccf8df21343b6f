//! The coordinator's defragmentation step, decided as a pure function of a
//! typed view, so that its safety rules are property-tested
//! (`decisions_keep_defrag_safe`) instead of read out of the code that acts
//! (`defrag.rs`).
//!
//! The rules (why: `defrag.rs`):
//! - nothing while the membership is not at full strength;
//! - during a NOSPACE alarm, the compaction comes first;
//! - never a learner, never a member that is not caught up, never one the
//!   current alarm already defragmented;
//! - followers first; the leader is defragmented in place only during a
//!   NOSPACE alarm (no write to stall), otherwise leadership moves first;
//! - the alarm is disarmed only when no voter is left to defragment, and a
//!   standby still at the quota (or still catching up) was given
//!   `STANDBY_WAIT` to defragment itself.

use std::time::Duration;

/// How long the coordinator waits for the standby to defragment itself
/// before disarming a NOSPACE alarm anyway.
pub const STANDBY_WAIT: Duration = Duration::from_secs(30);

/// One answering member, as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragMember {
    /// Its index in the agent's view (the config's node order).
    pub index: usize,
    pub name: String,
    pub is_learner: bool,
    pub is_leader: bool,
    pub caught_up: bool,
    pub db_size: i64,
    pub db_in_use: i64,
}

/// What the coordinator sees at a due check.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragView {
    /// The membership decision is `Steady` (full strength).
    pub steady: bool,
    /// A member reports the NOSPACE alarm.
    pub nospace: bool,
    /// The current alarm's compaction is done.
    pub compacted_this_alarm: bool,
    /// Members the current alarm already defragmented.
    pub done_this_alarm: Vec<String>,
    /// The members that answer.
    pub members: Vec<DefragMember>,
    /// `defrag.min_db_bytes` and `defrag.free_ratio`.
    pub min_db_bytes: u64,
    pub free_ratio: f64,
    /// A reachable standby still at the quota, or still catching up.
    pub standby_pending: Option<String>,
    /// Since the voters were first seen done with the current alarm.
    pub alarm_waited: Duration,
}

/// The step to take.
#[derive(Debug, Clone, PartialEq)]
pub enum DefragStep {
    /// The membership is not at full strength: wait.
    NotSteady,
    /// Nothing needs defragmenting.
    Nothing,
    /// NOSPACE: compact to the current revision first.
    Compact,
    /// Only the leader needs it, outside an alarm: move leadership away.
    HandOffLeadership { host: String, free: f64 },
    /// Defragment this member (`free`: its fraction of free pages).
    Defragment {
        index: usize,
        host: String,
        free: f64,
        in_alarm: bool,
    },
    /// NOSPACE, voters done: give the standby time to defragment itself.
    WaitForStandby { host: String },
    /// NOSPACE, all done: disarm the alarm.
    Disarm,
}

/// Fraction of the db file that is free pages.
pub fn free_ratio(db_size: i64, in_use: i64) -> f64 {
    if db_size <= 0 {
        return 0.0;
    }
    (db_size - in_use).max(0) as f64 / db_size as f64
}

/// The next defragmentation step.
pub fn decide_defrag(v: &DefragView) -> DefragStep {
    if !v.steady {
        return DefragStep::NotSteady;
    }
    if v.nospace && !v.compacted_this_alarm {
        return DefragStep::Compact;
    }
    let wants = |m: &DefragMember| {
        v.nospace
            || (m.db_size as u64 >= v.min_db_bytes
                && free_ratio(m.db_size, m.db_in_use) > v.free_ratio)
    };
    let done = |m: &DefragMember| v.nospace && v.done_this_alarm.contains(&m.name);
    // Followers first (a stable sort keeps config order among equals).
    let mut candidates: Vec<&DefragMember> = v
        .members
        .iter()
        .filter(|m| !m.is_learner && m.caught_up && wants(m) && !done(m))
        .collect();
    candidates.sort_by_key(|m| m.is_leader);
    match candidates.first() {
        Some(m) if m.is_leader && !v.nospace => DefragStep::HandOffLeadership {
            host: m.name.clone(),
            free: free_ratio(m.db_size, m.db_in_use),
        },
        Some(m) => DefragStep::Defragment {
            index: m.index,
            host: m.name.clone(),
            free: free_ratio(m.db_size, m.db_in_use),
            in_alarm: v.nospace,
        },
        None if !v.nospace => DefragStep::Nothing,
        None => match &v.standby_pending {
            Some(host) if v.alarm_waited < STANDBY_WAIT => {
                DefragStep::WaitForStandby { host: host.clone() }
            }
            _ => DefragStep::Disarm,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member() -> impl Strategy<Value = DefragMember> {
        (
            0usize..5,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0i64..200,
            0i64..200,
        )
            .prop_map(
                |(index, is_learner, is_leader, caught_up, db_size, db_in_use)| DefragMember {
                    index,
                    name: format!("h{index}"),
                    is_learner,
                    is_leader,
                    caught_up,
                    db_size,
                    db_in_use,
                },
            )
    }

    fn view() -> impl Strategy<Value = DefragView> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(0usize..5, 0..3),
            proptest::collection::vec(member(), 0..5),
            0u64..150,
            0.0f64..1.0,
            proptest::option::of(0usize..5),
            0u64..60,
        )
            .prop_map(
                |(steady, nospace, compacted, done, members, min_db, free, standby, waited)| {
                    DefragView {
                        steady,
                        nospace,
                        compacted_this_alarm: compacted,
                        done_this_alarm: done.into_iter().map(|i| format!("h{i}")).collect(),
                        // One entry per host, as the agent's view has.
                        members: {
                            let mut seen = std::collections::HashSet::new();
                            members
                                .into_iter()
                                .filter(|m| seen.insert(m.index))
                                .collect()
                        },
                        min_db_bytes: min_db,
                        free_ratio: free,
                        standby_pending: standby.map(|i| format!("h{i}")),
                        alarm_waited: Duration::from_secs(waited),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn decisions_keep_defrag_safe(v in view()) {
            let step = decide_defrag(&v);
            if !v.steady {
                prop_assert_eq!(&step, &DefragStep::NotSteady);
            }
            if v.steady && v.nospace && !v.compacted_this_alarm {
                prop_assert_eq!(&step, &DefragStep::Compact);
            }
            match &step {
                DefragStep::Defragment { index, host, in_alarm, .. } => {
                    let m = v.members.iter().find(|m| m.index == *index && &m.name == host);
                    prop_assert!(m.is_some(), "not a member: {index} {host}");
                    let Some(m) = m else { return Ok(()) };
                    prop_assert!(!m.is_learner, "a learner refuses the RPC");
                    prop_assert!(m.caught_up, "3.4.23 can corrupt a member applying a snapshot");
                    prop_assert_eq!(*in_alarm, v.nospace);
                    prop_assert!(!(v.nospace && v.done_this_alarm.contains(host)));
                    prop_assert!(!v.nospace || v.compacted_this_alarm, "compaction first");
                    if m.is_leader {
                        prop_assert!(v.nospace, "the leader in place only during an alarm");
                        let follower_left = v.members.iter().any(|o| {
                            !o.is_leader && !o.is_learner && o.caught_up
                                && !v.done_this_alarm.contains(&o.name)
                        });
                        prop_assert!(!follower_left, "followers first");
                    }
                    if !v.nospace {
                        prop_assert!(m.db_size as u64 >= v.min_db_bytes);
                        prop_assert!(free_ratio(m.db_size, m.db_in_use) > v.free_ratio);
                    }
                }
                DefragStep::HandOffLeadership { host, .. } => {
                    prop_assert!(!v.nospace);
                    prop_assert!(v.members.iter().any(|m| m.is_leader && &m.name == host));
                }
                DefragStep::Disarm => {
                    prop_assert!(v.nospace && v.compacted_this_alarm);
                    prop_assert!(v.standby_pending.is_none() || v.alarm_waited >= STANDBY_WAIT);
                    prop_assert!(!v.members.iter().any(|m| !m.is_learner && m.caught_up
                        && !v.done_this_alarm.contains(&m.name)),
                        "a voter is left to defragment");
                }
                DefragStep::WaitForStandby { .. } => {
                    prop_assert!(v.nospace && v.alarm_waited < STANDBY_WAIT);
                }
                DefragStep::Compact | DefragStep::NotSteady | DefragStep::Nothing => {}
            }
        }
    }

    #[test]
    fn free_ratio_is_bounded() {
        assert_eq!(free_ratio(0, 0), 0.0);
        assert_eq!(free_ratio(100, 25), 0.75);
        assert_eq!(free_ratio(100, 200), 0.0);
    }

    #[test]
    fn followers_before_the_leader_and_the_leader_moves_away_outside_an_alarm() {
        let m = |index, is_leader| DefragMember {
            index,
            name: format!("h{index}"),
            is_learner: false,
            is_leader,
            caught_up: true,
            db_size: 100,
            db_in_use: 10,
        };
        let mut v = DefragView {
            steady: true,
            nospace: false,
            compacted_this_alarm: false,
            done_this_alarm: vec![],
            members: vec![m(0, true), m(1, false)],
            min_db_bytes: 50,
            free_ratio: 0.5,
            standby_pending: None,
            alarm_waited: Duration::ZERO,
        };
        assert!(matches!(
            decide_defrag(&v),
            DefragStep::Defragment { index: 1, .. }
        ));
        v.members[1].db_in_use = 100;
        assert!(matches!(
            decide_defrag(&v),
            DefragStep::HandOffLeadership { .. }
        ));
    }
}
