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
//! NOSPACE: compact to the current revision (once per alarm), defragment
//! every voter once, followers first, let the standby defragment itself
//! offline (see [`standby_tick`]), then disarm every NOSPACE alarm by its
//! member ID (a deactivation without one disarms nothing), each step
//! journalled. During the alarm the leader is defragmented in place, last:
//! the cluster refuses writes anyway, so there is no write to stall, and
//! moving leadership would hand a half-done alarm to an agent that does not
//! know which steps were done (found by the NOSPACE test: two agents
//! compacted and handed leadership to each other for a minute and never
//! disarmed).

use std::time::{Duration, Instant};

use super::defrag_plan::{DefragMember, DefragStep, DefragView, decide_defrag, free_ratio};
use super::etcd_control::Budget;
use super::host::Host;
use super::operation::Kind;
use super::plan::Decision;
use super::state::{OpKind, Outcome};

/// A member whose db (bbolt's high-water mark, what etcd's quota check
/// counts) is above this fraction of the quota would raise NOSPACE again on
/// its next applied write.
const AT_QUOTA: f64 = 0.9;

/// Bookkeeping between ticks.
#[derive(Debug, Default)]
pub struct DefragState {
    pub last_check: Option<Instant>,
    /// Members already defragmented during the current NOSPACE alarm.
    pub done_this_alarm: Vec<String>,
    /// The current NOSPACE alarm's compaction is done.
    pub compacted_this_alarm: bool,
    /// When the voters were done with the current alarm (coordinator), or
    /// this standby defragmented itself during it (standby).
    pub alarm_seen: Option<Instant>,
    /// Standby: from when (ms since the epoch) a compaction counts for the current alarm.
    pub standby_alarm_ms: Option<i64>,
    /// Standby: when the coordinator's compaction was first seen done.
    pub compaction_seen: Option<Instant>,
    /// The running defragmentation was started during a NOSPACE alarm.
    pub defrag_in_alarm: bool,
}

/// One defrag step at most per check interval (coordinator only; a standby
/// only defragments itself during a NOSPACE alarm).
pub async fn tick(cx: &mut Host, st: &mut DefragState) {
    take_finished(cx, st);
    // One disruptive operation at a time; the loop goes on meanwhile.
    if !cx.cfg.defrag.enabled || cx.ops.busy() {
        return;
    }
    if cx.local_status().is_some_and(|s| s.is_learner) {
        standby_tick(cx, st).await;
        return;
    }
    if !cx.is_coordinator() {
        return;
    }
    let nospace = cx.view.peers.iter().any(|p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.errors.iter().any(|e| e.contains("NOSPACE")))
    });
    let due = st
        .last_check
        .is_none_or(|t| t.elapsed() >= cx.cfg.defrag.check_interval);
    if !due && !nospace {
        return;
    }
    st.last_check = Some(Instant::now());
    if !nospace {
        st.done_this_alarm.clear();
        st.compacted_this_alarm = false;
        st.alarm_seen = None;
    }
    let view = DefragView {
        steady: cx.last_decision == Decision::Steady,
        nospace,
        compacted_this_alarm: st.compacted_this_alarm,
        done_this_alarm: st.done_this_alarm.clone(),
        members: cx
            .view
            .peers
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                let s = p.status.as_ref()?;
                Some(DefragMember {
                    index,
                    name: p.node.name.clone(),
                    is_learner: s.is_learner,
                    is_leader: s.leader == s.member_id,
                    caught_up: p.caught_up == Some(true),
                    db_size: s.db_size,
                    db_in_use: s.db_in_use,
                })
            })
            .collect(),
        min_db_bytes: cx.cfg.defrag.min_db_bytes,
        free_ratio: cx.cfg.defrag.free_ratio,
        standby_pending: standby_pending(cx),
        alarm_waited: st.alarm_seen.map(|t| t.elapsed()).unwrap_or_default(),
    };
    let (i, host, ratio, in_alarm) = match decide_defrag(&view) {
        DefragStep::NotSteady => {
            tracing::debug!("Not defragmenting: the cluster is not at full strength.");
            return;
        }
        DefragStep::Nothing => return,
        // Off the loop; the defragmentations follow once it is done.
        DefragStep::Compact => return start_compaction(cx).await,
        DefragStep::HandOffLeadership { host, free } => {
            tracing::info!(
                "The leader ({host}) needs defragmenting ({:.0}% free); moving leadership away first.",
                free * 100.0
            );
            super::coordinate::hand_off_leadership(cx).await;
            return;
        }
        DefragStep::WaitForStandby { host } => {
            st.alarm_seen.get_or_insert_with(Instant::now);
            tracing::debug!(
                "NOSPACE: waiting for the standby {host} to defragment itself before disarming."
            );
            return;
        }
        DefragStep::Disarm => {
            st.alarm_seen.get_or_insert_with(Instant::now);
            return disarm(cx).await;
        }
        DefragStep::Defragment {
            index,
            host,
            free,
            in_alarm,
        } => (index, host, free, in_alarm),
    };
    let Some(mut client) = cx.view.peers[i].client().await else {
        return;
    };
    let reason = format!("{:.0}% of the db file is free pages", ratio * 100.0);
    // Journalled, then run off the loop (up to a minute); the result comes
    // back to `take_finished` at a later tick.
    st.defrag_in_alarm = in_alarm;
    let target = host.clone();
    let started = cx
        .ops
        .start(&cx.state, Kind::Defrag, &host, &reason, async move {
            let t0 = Instant::now();
            client.defragment().await.map_err(|e| e.to_string())?;
            Ok(format!(
                "defragmented in {:.2}s",
                t0.elapsed().as_secs_f64()
            ))
        });
    match started {
        Ok(_) => {
            tracing::info!(host = %target, "Defragmenting {target} ({reason}), off the reconcile loop.")
        }
        Err(e) => tracing::warn!("Not defragmenting {target}: {e}"),
    }
}

/// The post-check of an operation this module started that ended since the
/// last tick (the runner journalled its outcome).
/// Called by the loop before it supervises etcd (which starts etcd again
/// after an offline defrag), and again by [`tick`].
pub fn take_finished(cx: &mut Host, st: &mut DefragState) {
    if let Some(f) = cx.ops.take(Kind::Compact) {
        match &f.result {
            Ok(detail) => tracing::warn!("NOSPACE alarm: {detail}."),
            Err(e) => tracing::warn!("NOSPACE alarm: the compaction failed: {e}."),
        }
        st.compacted_this_alarm = f.result.is_ok();
        st.last_check = None;
    }
    if let Some(f) = cx.ops.take(Kind::Defrag) {
        match &f.result {
            Ok(detail) => {
                tracing::info!(host = %f.target, "Defragmented {}: {detail}.", f.target);
                if st.defrag_in_alarm {
                    st.done_this_alarm.push(f.target.clone());
                }
            }
            Err(e) => tracing::warn!(host = %f.target, "Defragmenting {} failed: {e}", f.target),
        }
        // Check again soon: the next member, or the alarm.
        st.last_check = None;
    }
    if let Some(f) = cx.ops.take(Kind::OfflineDefrag) {
        match &f.result {
            Ok(detail) => tracing::warn!("NOSPACE alarm: this standby {detail}."),
            Err(e) => {
                tracing::warn!("NOSPACE alarm: the offline defrag of this standby failed: {e}.")
            }
        }
        // Post-check: etcd runs again whatever the defrag did, started by
        // the normal supervision of this tick (`local`), which decides how
        // (restart, rejoin, or not at all).
    }
}

/// A reachable standby that may still raise NOSPACE after the disarm: its
/// db is at the quota (it defragments itself offline), or it is still
/// catching up (applying the writes that filled the voters: seen in the
/// NOSPACE test when the standby had joined seconds before the fill).
fn standby_pending(cx: &Host) -> Option<String> {
    cx.view.peers.iter().find_map(|p| {
        let s = p.status.as_ref()?;
        (s.is_learner && (at_quota(cx, s.db_size) || p.caught_up != Some(true)))
            .then(|| p.node.name.clone())
    })
}

/// Whether a db of `db_size` bytes is at the quota ([`AT_QUOTA`]).
fn at_quota(cx: &Host, db_size: i64) -> bool {
    db_size as f64 >= AT_QUOTA * cx.cfg.etcd.quota_backend_bytes as f64
}

/// The standby's side of a NOSPACE alarm. A learner refuses the Defragment
/// RPC (3.4), yet it applies every write against its own quota: left at the
/// quota it raises the alarm again on the first write after the disarm
/// (seen in the NOSPACE test). So once the coordinator's journal (in its
/// `/status`) shows the compaction done, and a second later (the learner
/// applies it), its own agent defragments it offline: stop etcd, `etcdctl
/// defrag --data-dir`, start it again — about a second for a small db, well
/// inside the failure detection window. Once per alarm. The learner's own
/// `db_in_use` cannot tell when the compaction has reached it: bbolt frees
/// the pages only at the next write, and NOSPACE allows none.
async fn standby_tick(cx: &mut Host, st: &mut DefragState) {
    let Some((db_size, db_in_use, nospace)) = cx.local_status().map(|s| {
        (
            s.db_size,
            s.db_in_use,
            s.errors.iter().any(|e| e.contains("NOSPACE")),
        )
    }) else {
        return;
    };
    if !nospace {
        st.alarm_seen = None;
        st.standby_alarm_ms = None;
        st.compaction_seen = None;
        return;
    }
    if st.alarm_seen.is_some() || !at_quota(cx, db_size) {
        return;
    }
    let ratio = free_ratio(db_size, db_in_use);
    let now_ms = chrono::Utc::now().timestamp_millis();
    // The coordinator may have compacted just before this host saw the alarm.
    let since_ms = *st.standby_alarm_ms.get_or_insert(now_ms - 30_000);
    let compacted = cx.view.peers.iter().any(|p| {
        p.agent_doc.as_ref().is_some_and(|d| {
            super::status::recent_ops(d).iter().any(|o| {
                o["reason"] == "NOSPACE alarm: compacting"
                    && o["outcome"] == "done"
                    && o["finished_ms"].as_i64().is_some_and(|f| f >= since_ms)
            })
        })
    });
    if !compacted {
        return;
    }
    let seen = *st.compaction_seen.get_or_insert_with(Instant::now);
    if seen.elapsed() < Duration::from_secs(1) {
        return;
    }
    st.alarm_seen = Some(Instant::now());
    let reason = format!(
        "NOSPACE alarm: defragmenting this standby offline (db {} bytes, {:.0}% free before the compaction's pages are released; learners refuse the Defragment RPC)",
        db_size,
        ratio * 100.0
    );
    // Journalled before etcd is stopped: no record, no defrag. The runner
    // lends this host's etcd supervisor to the operation, which stops etcd
    // and only then runs `etcdctl defrag` on its data dir, off the loop
    // (supervision keeps its hands off meanwhile); once it ended, the
    // normal supervision path starts etcd again.
    let data_dir = cx.cfg.etcd.data_dir.clone();
    let me = cx.me.name.clone();
    let started = cx.ops.start_with_etcd(
        &cx.state,
        Kind::OfflineDefrag,
        &me,
        &reason,
        &mut cx.etcd,
        |mut etcd| async move {
            etcd.stop(Duration::from_secs(10)).await;
            if etcd.running() {
                return Err("etcd did not stop; the data dir was not touched".to_string());
            }
            offline_defrag(data_dir).await
        },
    );
    match started {
        Ok(_) => tracing::warn!("{reason}: running off the reconcile loop."),
        Err(e) => tracing::warn!("Not defragmenting this standby: {e}"),
    }
}

/// `etcdctl defrag --data-dir` on a stopped member's data.
async fn offline_defrag(data_dir: std::path::PathBuf) -> Result<String, String> {
    let t0 = Instant::now();
    let etcdctl = edgeplane_snapshot::etcdctl_bin();
    let run = tokio::process::Command::from(edgeplane_snapshot::child_command(&etcdctl))
        .env("ETCDCTL_API", "3")
        .arg("defrag")
        .arg(format!("--data-dir={}", data_dir.display()))
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Budget::Defragment.timeout(), run).await {
        Ok(Ok(out)) if out.status.success() => Ok(format!(
            "defragmented offline in {:.2}s",
            t0.elapsed().as_secs_f64()
        )),
        Ok(Ok(out)) => Err(format!(
            "etcdctl defrag exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("could not run {}: {e}", etcdctl.display())),
        Err(_) => Err("etcdctl defrag timed out".into()),
    }
}

/// Compacts to the current revision (physical: waits until it is
/// applied), journalled, off the loop; `take_finished` records whether it
/// is done.
async fn start_compaction(cx: &mut Host) {
    let my = cx.my_index;
    let Some(mut client) = cx.view.peers[my].client().await else {
        return;
    };
    let started = cx.ops.start(
        &cx.state,
        Kind::Compact,
        &cx.me.name.clone(),
        "NOSPACE alarm: compacting",
        async move {
            let rev = client
                .revision()
                .await
                .map_err(|e| format!("could not read the revision: {e}"))?;
            match client.compact_physical(rev).await {
                Ok(()) => Ok(format!("compacted to revision {rev}")),
                // "required revision has been compacted" means someone already did it.
                Err(e) if e.to_string().contains("compacted") => Ok(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    );
    if let Err(e) = started {
        tracing::warn!("NOSPACE alarm: not compacting: {e}");
    }
}

/// Disarms every NOSPACE alarm once every voter has been defragmented. A
/// view that still shows an alarm already disarmed finds none in the list
/// and records nothing.
async fn disarm(cx: &mut Host) {
    let my = cx.my_index;
    let Some(mut client) = cx.view.peers[my].client().await else {
        return;
    };
    // Alarm requests go through raft: a leader change drops them (retried next tick).
    let Ok(members) = client.nospace_alarms().await else {
        return;
    };
    if members.is_empty() {
        return;
    }
    let Ok(op) = cx
        .state
        .begin(OpKind::Defrag, &cx.me.name, "NOSPACE alarm: disarming")
    else {
        return;
    };
    let mut failed = Vec::new();
    for &m in &members {
        if let Err(e) = client.disarm_nospace(m).await {
            failed.push(format!("member {m:x}: {e}"));
        }
    }
    let ids: Vec<String> = members.iter().map(|m| format!("{m:x}")).collect();
    let (outcome, detail) = if failed.is_empty() {
        (
            Outcome::Done,
            format!(
                "NOSPACE alarm disarmed (raised by member {})",
                ids.join(", ")
            ),
        )
    } else {
        (Outcome::Failed, failed.join("; "))
    };
    tracing::warn!("{detail}.");
    cx.state.close(op, outcome, &detail);
}
