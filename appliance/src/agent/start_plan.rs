//! How this host's etcd starts when it is not running: restart on its data,
//! bootstrap, resume a join, join as the standby, set its data aside, or
//! wait. Decided as a pure function of a typed view ([`decide_start`]) with
//! property tests of its safety rules; `local.rs` gathers the view and acts.
//!
//! | data dir        | cluster seen                  | this host                     | decision                          |
//! |-----------------|-------------------------------|-------------------------------|-----------------------------------|
//! | has a member    | a newer epoch alive           | no quorum                     | set aside, join that epoch        |
//! | has a member    | lists us, or not seen         | –                             | restart etcd on its data          |
//! | has a member    | own cluster, does not list us | –                             | set aside (removed), become spare |
//! | empty           | not seen / lists us unstarted | bootstrap voter, never joined | bootstrap (`new`)                 |
//! | empty           | lists us as unstarted learner | –                             | resume the join (`existing`)      |
//! | empty           | lists us as a started learner | –                             | leave, then join again            |
//! | empty           | lists us as a started voter   | –                             | wait: the coordinator removes us  |
//! | empty           | does not list us              | –                             | join as the standby when first    |

use super::recovery_plan::EpochDecision;

/// This host's member in the list that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mine {
    pub id: u64,
    pub is_learner: bool,
    /// Its etcd has run (the member has a name).
    pub started: bool,
}

/// What the agent knows when its etcd is not running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartView {
    /// The data dir holds a member (`member/wal`).
    pub has_data: bool,
    /// What the peers say about epochs (only asked when there is data).
    pub epoch: EpochDecision,
    /// etcd died on a failed fsync and the data was not set aside yet.
    pub fsync_failed: bool,
    /// A member list was read from a voter with a leader.
    pub members_seen: bool,
    /// That list is of this host's own cluster (the one its data belongs to).
    pub own_list: bool,
    /// This host's member in that list.
    pub mine: Option<Mine>,
    /// A leader is visible.
    pub leader_seen: bool,
    /// The list has a learner: the one standby slot is taken.
    pub slot_taken: bool,
    /// A live spare before this host in config order that waits to join.
    pub earlier_spare: Option<String>,
    /// This host is one of the first `cluster.voters` nodes.
    pub bootstrap_voter: bool,
    /// This host's etcd has been a member of a running cluster (only asked,
    /// like `site_epoch`, when there is no data and no cluster is seen).
    pub joined_before: bool,
    /// The highest epoch of a live cluster seen, or this host's data's.
    pub site_epoch: u64,
    /// `cluster.manage_membership`: false is maintenance mode (no join, no
    /// leave).
    pub manage_membership: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// A newer epoch's cluster is alive and this host has no quorum: set the
    /// data aside and join it.
    AdoptEpoch {
        epoch: u64,
    },
    /// A newer epoch is claimed but not seen alive: wait.
    WaitForEvidence {
        claimed: u64,
    },
    /// etcd died on a failed fsync: the disk-fault rule decides.
    FsyncFailure,
    /// This host's own cluster removed its member while it was down.
    SetAsideRemoved,
    Restart,
    /// Listed as an unstarted learner: start with `existing`.
    ResumeJoin,
    /// Start a new cluster with `new`.
    Bootstrap,
    /// The standby's member has no data: remove it, to join again.
    Leave {
        id: u64,
    },
    /// Listed as started with no data: the coordinator removes it.
    WaitForRemoval,
    /// Add this host as the standby.
    Join,
    /// The standby slot is taken.
    SlotTaken,
    /// An earlier spare is first in line.
    NotFirstInLine {
        first: String,
    },
    /// No cluster with a leader is reachable.
    WaitForCluster,
    /// A join or leave is due, but `cluster.manage_membership` is false.
    Unmanaged,
}

/// The start decision. Never bootstraps over data or beside a live
/// cluster, never sets data aside on another cluster's word, never starts
/// on data a newer live epoch has replaced.
pub fn decide_start(v: &StartView) -> StartDecision {
    if v.has_data {
        match &v.epoch {
            EpochDecision::Adopt { epoch } => return StartDecision::AdoptEpoch { epoch: *epoch },
            EpochDecision::WaitForEvidence { claimed } => {
                return StartDecision::WaitForEvidence { claimed: *claimed };
            }
            EpochDecision::Stay | EpochDecision::SplitBrain { .. } => {}
        }
        if v.fsync_failed {
            return StartDecision::FsyncFailure;
        }
        if v.own_list && v.members_seen && v.mine.is_none() {
            return StartDecision::SetAsideRemoved;
        }
        return StartDecision::Restart;
    }
    match (v.members_seen, v.mine) {
        (true, Some(m)) if !m.started => {
            if m.is_learner {
                StartDecision::ResumeJoin
            } else {
                StartDecision::Bootstrap
            }
        }
        // A learner has no vote: removing it never touches the quorum.
        (true, Some(m)) if m.is_learner && v.leader_seen => {
            if v.manage_membership {
                StartDecision::Leave { id: m.id }
            } else {
                StartDecision::Unmanaged
            }
        }
        (true, Some(_)) => StartDecision::WaitForRemoval,
        (true, None) => match (&v.earlier_spare, v.slot_taken) {
            (_, true) => StartDecision::SlotTaken,
            (Some(first), false) => StartDecision::NotFirstInLine {
                first: first.clone(),
            },
            (None, false) if !v.manage_membership => StartDecision::Unmanaged,
            (None, false) => StartDecision::Join,
        },
        (false, _) => {
            if v.bootstrap_voter && !v.joined_before && v.site_epoch == 0 {
                StartDecision::Bootstrap
            } else {
                StartDecision::WaitForCluster
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn epoch() -> impl Strategy<Value = EpochDecision> {
        prop_oneof![
            Just(EpochDecision::Stay),
            Just(EpochDecision::SplitBrain {
                others: vec!["h9".into()]
            }),
            (1u64..4).prop_map(|claimed| EpochDecision::WaitForEvidence { claimed }),
            (1u64..4).prop_map(|epoch| EpochDecision::Adopt { epoch }),
        ]
    }

    fn view() -> impl Strategy<Value = StartView> {
        (
            (
                any::<bool>(),
                epoch(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
            proptest::option::of((1u64..9, any::<bool>(), any::<bool>())),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (any::<bool>(), any::<bool>(), 0u64..3, any::<bool>()),
        )
            .prop_map(
                |(
                    (has_data, epoch, fsync_failed, members_seen, own_list),
                    mine,
                    (leader_seen, slot_taken, earlier),
                    (bootstrap_voter, joined_before, site_epoch, manage_membership),
                )| StartView {
                    has_data,
                    epoch,
                    fsync_failed,
                    members_seen,
                    own_list,
                    mine: mine.map(|(id, is_learner, started)| Mine {
                        id,
                        is_learner,
                        started,
                    }),
                    leader_seen,
                    slot_taken,
                    earlier_spare: earlier.then(|| "h0".to_string()),
                    bootstrap_voter,
                    joined_before,
                    site_epoch,
                    manage_membership,
                },
            )
    }

    proptest! {
        #[test]
        fn start_decisions_are_safe(v in view()) {
            let d = decide_start(&v);
            match &d {
                StartDecision::Bootstrap => {
                    prop_assert!(!v.has_data, "never bootstrap over data");
                    // Either this very cluster lists us as an unstarted voter
                    // (the bootstrap in progress), or no cluster is seen and
                    // none ever was.
                    let listed = v.members_seen
                        && v.mine.is_some_and(|m| !m.started && !m.is_learner);
                    let first = !v.members_seen && v.bootstrap_voter
                        && !v.joined_before && v.site_epoch == 0;
                    prop_assert!(listed || first, "bootstrap beside a cluster: {v:?}");
                }
                StartDecision::SetAsideRemoved => {
                    prop_assert!(v.has_data && v.own_list && v.members_seen && v.mine.is_none(),
                        "data set aside on another cluster's word: {v:?}");
                    prop_assert!(!matches!(v.epoch, EpochDecision::WaitForEvidence { .. }), "{v:?}");
                }
                StartDecision::Restart => {
                    prop_assert!(v.has_data && !v.fsync_failed);
                    prop_assert!(matches!(v.epoch, EpochDecision::Stay | EpochDecision::SplitBrain { .. }),
                        "started on data a newer epoch replaced");
                }
                StartDecision::AdoptEpoch { .. } => {
                    prop_assert!(v.has_data && matches!(v.epoch, EpochDecision::Adopt { .. }), "{v:?}");
                }
                StartDecision::Leave { id } => {
                    prop_assert!(v.manage_membership, "maintenance mode changes no member");
                    prop_assert!(!v.has_data && v.leader_seen);
                    prop_assert!(v.mine.is_some_and(|m| m.is_learner && m.id == *id),
                        "only this host's own learner is removed");
                }
                StartDecision::Join => {
                    prop_assert!(v.manage_membership, "maintenance mode changes no member");
                    prop_assert!(!v.has_data && v.members_seen && v.mine.is_none());
                    prop_assert!(!v.slot_taken && v.earlier_spare.is_none());
                }
                StartDecision::ResumeJoin => {
                    prop_assert!(!v.has_data && v.mine.is_some_and(|m| m.is_learner && !m.started));
                }
                StartDecision::FsyncFailure => prop_assert!(v.has_data && v.fsync_failed),
                StartDecision::WaitForEvidence { .. }
                | StartDecision::WaitForRemoval
                | StartDecision::SlotTaken
                | StartDecision::NotFirstInLine { .. }
                | StartDecision::WaitForCluster
                | StartDecision::Unmanaged => {}
            }
        }
    }
}
