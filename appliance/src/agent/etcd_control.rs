//! Every call the agent makes to an etcd member, through one wrapper with
//! one timeout policy.
//!
//! Why: the calls were spread over seven files, each with its own bound
//! (700 ms, 1 s, 2 s, 3 s, 5 s, 30 s, 60 s), and layered under the client's
//! own per-request timeout, so that a 60 s defragmentation sent through a
//! client built with a 2 s request timeout was cut at 2 s. Here the client
//! has no request timeout of its own; each call's bound is [`Budget`],
//! chosen by what the call is for, and a timeout is an error like any other
//! ([`EtcdCallError`]), named by its call.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, MemberAddOptions,
    MemberAddResponse, MemberListResponse, StatusResponse,
};

use crate::tls::SiteTls;

/// How long a call may take, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The observation of every tick (Status, the member list): a member
    /// that does not answer within it is silent for this tick; it must not
    /// hold the loop.
    Probe,
    /// A membership step (add, promote, remove, move leadership) and the
    /// reads that check it: raft must commit it, across an election.
    Step,
    /// Small administrative requests: the current revision, the alarms.
    Admin,
    /// A physical compaction (the member is busy meanwhile).
    Compact,
    /// A defragmentation (the member is blocked meanwhile).
    Defragment,
    /// Streaming the whole db as a snapshot.
    Snapshot,
}

impl Budget {
    pub fn timeout(self) -> Duration {
        match self {
            Budget::Probe => Duration::from_millis(700),
            Budget::Step => Duration::from_secs(3),
            Budget::Admin => Duration::from_secs(5),
            Budget::Compact => Duration::from_secs(30),
            Budget::Defragment => Duration::from_secs(60),
            Budget::Snapshot => Duration::from_secs(600),
        }
    }
}

/// How long connecting to a member may take (loopback or the site's LAN).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
pub enum EtcdCallError {
    #[error("{call} timed out after {:.1}s", .after.as_secs_f64())]
    Timeout { call: &'static str, after: Duration },
    #[error("{call}: {source}")]
    Failed {
        call: &'static str,
        #[source]
        source: etcd_client::Error,
    },
}

impl EtcdCallError {
    pub fn timed_out(&self) -> bool {
        matches!(self, EtcdCallError::Timeout { .. })
    }
}

/// One etcd member (or, for a client given several endpoints, whichever
/// answers). Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct EtcdControl {
    client: Client,
}

async fn bounded<T>(
    call: &'static str,
    budget: Budget,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdCallError> {
    let after = budget.timeout();
    match tokio::time::timeout(after, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdCallError::Failed { call, source }),
        Err(_) => Err(EtcdCallError::Timeout { call, after }),
    }
}

impl EtcdControl {
    /// Connects to `urls` (over the site's TLS when on), within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(urls: &[&str], tls: Option<&SiteTls>) -> Result<Self, EtcdCallError> {
        let opts = crate::tls::etcd_options(tls).with_connect_timeout(CONNECT_TIMEOUT);
        Client::connect(urls, Some(opts))
            .await
            .map(|client| EtcdControl { client })
            .map_err(|source| EtcdCallError::Failed {
                call: "connect",
                source,
            })
    }

    pub async fn status(&mut self) -> Result<StatusResponse, EtcdCallError> {
        bounded("status", Budget::Probe, self.client.status()).await
    }

    /// The member list, read as an observation ([`Budget::Probe`]) or to
    /// check a step ([`Budget::Step`]).
    pub async fn member_list(
        &mut self,
        budget: Budget,
    ) -> Result<MemberListResponse, EtcdCallError> {
        bounded("member list", budget, self.client.member_list()).await
    }

    /// Adds `peer_url` as a learner (the standby).
    pub async fn add_learner(
        &mut self,
        peer_url: &str,
    ) -> Result<MemberAddResponse, EtcdCallError> {
        bounded(
            "member add",
            Budget::Step,
            self.client
                .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())),
        )
        .await
    }

    pub async fn promote(&mut self, id: u64) -> Result<(), EtcdCallError> {
        bounded(
            "member promote",
            Budget::Step,
            self.client.member_promote(id),
        )
        .await
        .map(drop)
    }

    pub async fn remove(&mut self, id: u64) -> Result<(), EtcdCallError> {
        bounded("member remove", Budget::Step, self.client.member_remove(id))
            .await
            .map(drop)
    }

    /// Moves leadership to member `id` (sent to the leader).
    pub async fn move_leader(&mut self, id: u64) -> Result<(), EtcdCallError> {
        bounded("move leader", Budget::Step, self.client.move_leader(id))
            .await
            .map(drop)
    }

    /// The store's current revision.
    pub async fn revision(&mut self) -> Result<i64, EtcdCallError> {
        let resp = bounded("get", Budget::Admin, self.client.get("edgeplane", None)).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Writes an empty value to `key`; returns the revision it made.
    pub async fn put_empty(&mut self, key: &str) -> Result<i64, EtcdCallError> {
        let r = bounded("put", Budget::Admin, self.client.put(key, "", None)).await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Deletes `key`; returns the store's revision after it.
    pub async fn delete(&mut self, key: &str) -> Result<i64, EtcdCallError> {
        let r = bounded("delete", Budget::Admin, self.client.delete(key, None)).await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Compacts to `rev`, physically (the freed pages are reusable when it returns).
    pub async fn compact_physical(&mut self, rev: i64) -> Result<(), EtcdCallError> {
        bounded(
            "compact",
            Budget::Compact,
            self.client
                .compact(rev, Some(CompactionOptions::new().with_physical())),
        )
        .await
        .map(drop)
    }

    pub async fn defragment(&mut self) -> Result<(), EtcdCallError> {
        bounded("defragment", Budget::Defragment, self.client.defragment())
            .await
            .map(drop)
    }

    /// The members that raised a NOSPACE alarm.
    pub async fn nospace_alarms(&mut self) -> Result<Vec<u64>, EtcdCallError> {
        let list = bounded(
            "alarm list",
            Budget::Admin,
            self.client.alarm(AlarmAction::Get, AlarmType::None, None),
        )
        .await?;
        Ok(list
            .alarms()
            .iter()
            .filter(|a| a.alarm() == AlarmType::Nospace)
            .map(|a| a.member_id())
            .collect())
    }

    /// Disarms member `id`'s NOSPACE alarm (an alarm deactivated without
    /// its member ID stays armed).
    pub async fn disarm_nospace(&mut self, id: u64) -> Result<(), EtcdCallError> {
        let mut opts = AlarmOptions::new();
        opts.with_member(id);
        bounded(
            "alarm disarm",
            Budget::Admin,
            self.client
                .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts)),
        )
        .await
        .map(drop)
    }

    /// The raw client, for the snapshot stream (bounded by its reader with
    /// [`Budget::Snapshot`]).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_is_a_timeout_named_by_its_call() {
        let never = std::future::pending::<Result<(), etcd_client::Error>>();
        let t0 = std::time::Instant::now();
        let e = bounded("status", Budget::Probe, never)
            .await
            .expect_err("a pending call cannot succeed");
        assert!(e.timed_out());
        assert_eq!(e.to_string(), "status timed out after 0.7s");
        assert!(t0.elapsed() >= Budget::Probe.timeout());
    }

    #[test]
    fn an_observation_never_outlasts_a_step_nor_a_step_maintenance() {
        assert!(Budget::Probe.timeout() < Budget::Step.timeout());
        assert!(Budget::Step.timeout() < Budget::Defragment.timeout());
        assert!(Budget::Defragment.timeout() < Budget::Snapshot.timeout());
    }
}
