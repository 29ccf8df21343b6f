//! Defragmentation and the NOSPACE alarm, run by the coordinator only.
//!
//! Defragmenting blocks the member it runs on; on the leader it stalls every
//! write. So: one member at a time, never while the cluster is below full
//! strength, never a member that is catching up (3.4.23 can corrupt a member
//! that applies a snapshot while it defragments; fixed upstream in 3.4.38),
//! followers first, and the leader only after leadership has moved to a
//! healthy, caught-up voter (the next coordinator then defragments the
//! former leader as a follower). Learners refuse the Defragment RPC in 3.4.
//!
//! NOSPACE: compact to the current revision, defragment every voter the same
//! way, then disarm the alarm, each step journalled.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, CompactionOptions};

use super::local::Agent;
use super::plan::Decision;
use super::state::{OpKind, Outcome};

const DEFRAG_TIMEOUT: Duration = Duration::from_secs(60);

/// Bookkeeping between ticks.
#[derive(Debug, Default)]
pub struct DefragState {
    pub last_check: Option<Instant>,
    /// Members already defragmented during the current NOSPACE alarm.
    pub done_this_alarm: Vec<String>,
}

/// Fraction of the db file that is free pages.
fn free_ratio(db_size: i64, in_use: i64) -> f64 {
    if db_size <= 0 {
        return 0.0;
    }
    (db_size - in_use).max(0) as f64 / db_size as f64
}

/// One defrag step at most per check interval (coordinator only).
pub async fn tick(agent: &mut Agent) {
    if !agent.cfg.defrag.enabled || !agent.is_coordinator() {
        return;
    }
    let nospace = agent.view.peers.iter().any(|p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.errors.iter().any(|e| e.contains("NOSPACE")))
    });
    let due = agent
        .defrag
        .last_check
        .is_none_or(|t| t.elapsed() >= agent.cfg.defrag.check_interval);
    if !due && !nospace {
        return;
    }
    agent.defrag.last_check = Some(Instant::now());
    if !nospace {
        agent.defrag.done_this_alarm.clear();
    }
    if agent.last_decision != Decision::Steady {
        tracing::debug!("Not defragmenting: the cluster is not at full strength.");
        return;
    }
    if nospace {
        compact_all(agent).await;
    }
    let leader_index = agent.view.leader_index().unwrap_or(0);
    let max_lag = agent.cfg.cluster.promotion_max_lag;
    // Candidates: voters that answer, are caught up and have enough free space.
    let mut candidates: Vec<(usize, bool, f64)> = agent
        .view
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let s = p.status.as_ref()?;
            let ratio = free_ratio(s.db_size, s.db_in_use);
            let wants = nospace
                || (s.db_size as u64 >= agent.cfg.defrag.min_db_bytes
                    && ratio > agent.cfg.defrag.free_ratio);
            let caught_up = leader_index.saturating_sub(s.applied_index) <= max_lag;
            let done = nospace && agent.defrag.done_this_alarm.contains(&p.node.name);
            (!s.is_learner && caught_up && wants && !done).then_some((
                i,
                s.leader == s.member_id,
                ratio,
            ))
        })
        .collect();
    // Followers first.
    candidates.sort_by_key(|(_, is_leader, _)| *is_leader);
    let Some(&(i, is_leader, ratio)) = candidates.first() else {
        if nospace {
            disarm(agent).await;
        }
        return;
    };
    let host = agent.view.peers[i].node.name.clone();
    if is_leader {
        tracing::info!(
            "The leader ({host}) needs defragmenting ({:.0}% free); moving leadership away first.",
            ratio * 100.0
        );
        super::coordinate::hand_off_leadership(agent).await;
        return;
    }
    let Some(mut client) = agent.view.peers[i].client().await else {
        return;
    };
    let reason = format!("{:.0}% of the db file is free pages", ratio * 100.0);
    let Ok(op) = agent.state.begin(OpKind::Defrag, &host, &reason) else {
        return;
    };
    let t0 = Instant::now();
    match tokio::time::timeout(DEFRAG_TIMEOUT, client.defragment()).await {
        Ok(Ok(_)) => {
            let detail = format!("defragmented in {:.2}s", t0.elapsed().as_secs_f64());
            tracing::info!(host = %host, "Defragmented {host}: {reason}; {detail}.");
            let _ = agent.state.finish(op, Outcome::Done, &detail);
            if nospace {
                agent.defrag.done_this_alarm.push(host.clone());
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(host = %host, "Defragmenting {host} failed: {e}");
            let _ = agent.state.finish(op, Outcome::Failed, &e.to_string());
        }
        Err(_) => {
            let _ = agent.state.finish(op, Outcome::Failed, "timed out");
        }
    }
    // Check again soon: the next member, or the alarm.
    agent.defrag.last_check = None;
}

/// Compacts to the current revision (physical: waits until it is applied).
async fn compact_all(agent: &mut Agent) {
    let my = agent.my_index;
    let Some(mut client) = agent.view.peers[my].client().await else {
        return;
    };
    let Ok(Ok(resp)) =
        tokio::time::timeout(Duration::from_secs(5), client.get("edgeplane", None)).await
    else {
        return;
    };
    let Some(rev) = resp.header().map(|h| h.revision()) else {
        return;
    };
    let Ok(op) = agent
        .state
        .begin(OpKind::Defrag, &agent.me.name, "NOSPACE alarm: compacting")
    else {
        return;
    };
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        client.compact(rev, Some(CompactionOptions::new().with_physical())),
    )
    .await;
    let (outcome, detail) = match res {
        Ok(Ok(_)) => (Outcome::Done, format!("compacted to revision {rev}")),
        // "required revision has been compacted" means someone already did it.
        Ok(Err(e)) if e.to_string().contains("compacted") => (Outcome::Done, e.to_string()),
        Ok(Err(e)) => (Outcome::Failed, e.to_string()),
        Err(_) => (Outcome::Failed, "timed out".into()),
    };
    tracing::warn!("NOSPACE alarm: {detail}.");
    let _ = agent.state.finish(op, outcome, &detail);
}

/// Disarms the NOSPACE alarm once every voter has been defragmented.
async fn disarm(agent: &mut Agent) {
    let my = agent.my_index;
    let Some(mut client) = agent.view.peers[my].client().await else {
        return;
    };
    let Ok(op) = agent
        .state
        .begin(OpKind::Defrag, &agent.me.name, "NOSPACE alarm: disarming")
    else {
        return;
    };
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client.alarm(AlarmAction::Deactivate, AlarmType::Nospace, None),
    )
    .await;
    let (outcome, detail) = match res {
        Ok(Ok(_)) => (Outcome::Done, "NOSPACE alarm disarmed".to_string()),
        Ok(Err(e)) => (Outcome::Failed, e.to_string()),
        Err(_) => (Outcome::Failed, "timed out".into()),
    };
    tracing::warn!("{detail}.");
    let _ = agent.state.finish(op, outcome, &detail);
}

#[cfg(test)]
mod tests {
    use super::free_ratio;

    #[test]
    fn free_ratio_is_bounded() {
        assert_eq!(free_ratio(0, 0), 0.0);
        assert_eq!(free_ratio(100, 25), 0.75);
        assert_eq!(free_ratio(100, 200), 0.0);
    }
}
