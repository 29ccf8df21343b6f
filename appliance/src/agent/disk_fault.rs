//! What the agent does after its etcd died on a failed fsync (EIO).
//!
//! After a failed `fdatasync` the kernel may already have dropped the dirty
//! pages it could not write, so the file no longer holds what etcd wrote and
//! a retried fsync can succeed on data that is not there ("fsyncgate"). etcd
//! treats it as fatal and exits; restarting it on the same data would serve
//! whatever the disk kept. Users of Patroni and etcd-druid expect a replica
//! whose storage failed to be rebuilt from the healthy members, never
//! trusted again, while its files are kept for forensics:
//!
//! - a healthy quorum of the same cluster elsewhere (a majority of the
//!   cluster's voters, not counting this host, answering with a leader
//!   that is not this host) holds every committed write (raft elects only a
//!   leader that has them all), so this host's data is set aside (kept,
//!   never pruned) and the host rejoins as a fresh standby;
//! - a data dir with no member data (etcd died before writing any) holds
//!   nothing to keep: the host rejoins;
//! - otherwise this host's data may be the only copy of acknowledged
//!   writes: it is kept, etcd is not restarted on it, and the agent waits
//!   (an alarm in the journal and in `/status`) until a quorum is seen
//!   elsewhere or the site is recovered (decision 0005).

/// What this host sees of its own cluster while its etcd is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elsewhere {
    /// Voters in the member list of this host's cluster (this host included
    /// if it is one); 0 when no member list of this cluster is known.
    pub voters: usize,
    /// Voters of this host's cluster, other than this host, that answer
    /// Status naming a leader that is not this host's member.
    pub other_voters_led: usize,
    /// Whether the data dir holds any member data (WAL or snapshots).
    pub has_data: bool,
}

impl Elsewhere {
    /// Whether a majority of the cluster's voters, without this host, has a leader.
    pub fn quorum_without_me(&self) -> bool {
        self.voters > 0 && self.other_voters_led > self.voters / 2
    }
}

/// The agent's answer to an fsync failure of its etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncVerdict {
    /// Move the data aside (label `fsync-failed`, never pruned) and rejoin
    /// from the cluster as a fresh standby.
    SetAsideAndRejoin,
    /// Keep the data, do not start etcd on it, and wait.
    KeepAndWait,
}

/// Decides what to do with data whose fsync failed.
pub fn after_fsync_failure(seen: Elsewhere) -> FsyncVerdict {
    if !seen.has_data || seen.quorum_without_me() {
        FsyncVerdict::SetAsideAndRejoin
    } else {
        FsyncVerdict::KeepAndWait
    }
}

/// Whether an etcd log line is the fatal exit of a failed sync or write of
/// its WAL or backend: etcd 3.4 logs `failed to commit tx` (bbolt),
/// `failed to save Raft hard state and entries` or `failed to sync` (WAL)
/// at level fatal or panic, with the errno text.
pub fn is_fsync_failure(line: &str) -> bool {
    let fatal = line.contains("\"level\":\"fatal\"")
        || line.contains("\"level\":\"panic\"")
        || line.contains("panic:");
    fatal && line.contains("input/output error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn three_voters() {
        let v = |led| Elsewhere {
            voters: 3,
            other_voters_led: led,
            has_data: true,
        };
        assert_eq!(after_fsync_failure(v(2)), FsyncVerdict::SetAsideAndRejoin);
        assert_eq!(after_fsync_failure(v(1)), FsyncVerdict::KeepAndWait);
        assert_eq!(after_fsync_failure(v(0)), FsyncVerdict::KeepAndWait);
        let unknown = Elsewhere {
            voters: 0,
            other_voters_led: 0,
            has_data: true,
        };
        assert_eq!(after_fsync_failure(unknown), FsyncVerdict::KeepAndWait);
        // etcd died before it wrote anything: nothing to keep.
        let empty = Elsewhere {
            has_data: false,
            ..unknown
        };
        assert_eq!(after_fsync_failure(empty), FsyncVerdict::SetAsideAndRejoin);
    }

    #[test]
    fn recognises_etcd_fatal_eio() {
        assert!(is_fsync_failure(
            r#"{"level":"fatal","ts":"2026-12-03T02:36:58.489Z","caller":"backend/batch_tx.go:248","msg":"failed to commit tx","error":"input/output error"}"#
        ));
        assert!(!is_fsync_failure(
            r#"{"level":"warn","msg":"failed to send out heartbeat on time","error":"input/output error"}"#
        ));
        assert!(!is_fsync_failure(
            r#"{"level":"fatal","msg":"listen tcp: address already in use"}"#
        ));
    }

    proptest! {
        /// Safety: the data is set aside only when a majority of the
        /// cluster's voters, this host not counted, has a leader (so the
        /// cluster holds every committed write without it). Liveness: then
        /// it always is.
        #[test]
        fn set_aside_only_with_a_quorum_elsewhere(
            voters in 0usize..7,
            led in 0usize..7,
            me_voter in any::<bool>(),
            has_data in any::<bool>(),
        ) {
            let others = if me_voter { voters.saturating_sub(1) } else { voters };
            let seen = Elsewhere { voters, other_voters_led: led.min(others), has_data };
            let majority = voters / 2 + 1;
            match after_fsync_failure(seen) {
                FsyncVerdict::SetAsideAndRejoin => {
                    prop_assert!(!has_data || (voters > 0 && seen.other_voters_led >= majority));
                }
                FsyncVerdict::KeepAndWait => {
                    prop_assert!(has_data && (voters == 0 || seen.other_voters_led < majority));
                }
            }
        }
    }
}
