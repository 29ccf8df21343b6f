//! The coordinator's side of the loop: the agent next to the etcd leader
//! takes one `plan` step per tick, journalled before and after; every other
//! agent only watches that the coordinator is alive and, if it is not, moves
//! leadership (and with it the coordinating role) to itself.

use std::time::Instant;

use super::etcd_control::Budget;
use super::host::Host;
use super::plan::{self, Decision, MembershipWait, PastRemoval, StandbyState, describe};
use super::state::{OpKind, Outcome};

/// Steps taken in one tick at most: remove the dead voter, then promote.
const STEPS_PER_TICK: usize = 3;

pub async fn step(cx: &mut Host) {
    for n in 0..STEPS_PER_TICK {
        if n > 0 {
            // The last step changed the membership: look again before the next.
            cx.view.refresh().await;
        }
        if !one_step(cx).await {
            break;
        }
    }
}

/// Decides and, when coordinating, takes one step; true when it changed the membership.
async fn one_step(cx: &mut Host) -> bool {
    let Some(members) = cx.view.members.clone() else {
        cx.last_decision = Decision::Wait(MembershipWait::NoMemberList);
        return false;
    };
    let now = Instant::now();
    let health = with_removal_history(cx, &members, cx.view.health(&members, now));
    let leader_index = cx.view.leader_index().unwrap_or(0);
    let decision = plan::decide(&members, &health, leader_index, &cx.limits);
    let coordinator = cx.is_coordinator();
    log_standby_changes(cx, &members, &health, coordinator);
    if !same_kind(&cx.last_decision, &decision) {
        if coordinator {
            tracing::info!("Membership: {}.", describe(&decision));
        } else {
            tracing::debug!(
                "Membership (seen by a non-coordinator): {}.",
                describe(&decision)
            );
        }
    }
    cx.last_decision = decision.clone();
    if !coordinator {
        take_over_if_coordinator_gone(cx).await;
        return false;
    }
    // Maintenance mode: decide and report (`/status` says it does not act),
    // change nothing.
    if !cx.cfg.cluster.manage_membership {
        return false;
    }
    let Some(mut client) = cx.view.peers[cx.my_index].client().await else {
        return false;
    };
    let (kind, id, host, reason, damping) = match decision {
        Decision::Steady | Decision::Wait(_) => return false,
        Decision::RemoveVoter {
            id,
            host,
            reason,
            damping,
        } => (OpKind::RemoveMember, id, host, reason, Some(damping)),
        Decision::Promote { id, host, reason } => (OpKind::Promote, id, host, reason, None),
        Decision::EvictLearner {
            id, host, reason, ..
        } => (OpKind::EvictLearner, id, host, reason, None),
    };
    let op = match cx.state.begin_damped(kind, &host, &reason, damping) {
        Ok(op) => op,
        Err(e) => {
            // No journal, no action: an unrecorded change would be invisible to diagnostics.
            tracing::error!("Not acting: could not journal the intent: {e}");
            return false;
        }
    };
    if let Some(f) = damping.filter(|f| *f > 1) {
        tracing::warn!(
            host = %host,
            damping = f,
            "Removing {host} again within cluster.flap_window ({:.0}s): it flaps; its detection window was damped {f}x ({:.1}s). \
             Look at that host (GC pauses, disk stalls, load) rather than at the cluster.",
            cx.limits.flap_window.as_secs_f64(),
            (cx.limits.failure_detection * f).as_secs_f64()
        );
    }
    let result = match kind {
        OpKind::Promote => client.promote(id).await,
        _ => client.remove(id).await,
    };
    match result {
        Ok(()) => {
            let verify = verify_after(cx, kind).await;
            tracing::info!(?kind, host = %host, "Membership change done: {reason}. {verify}");
            cx.state.close(op, Outcome::Done, &verify);
            // The removed member's "first seen" must not carry over to a re-added one.
            cx.view.first_seen.remove(&id);
            true
        }
        Err(e) if !e.timed_out() && kind == OpKind::Promote && promoted(cx, id).await => {
            // An error after the change committed (e.g. across a leader change):
            // the journal records what happened, not what the RPC said.
            let verify = verify_after(cx, kind).await;
            tracing::info!(host = %host, "Promotion done despite the error ({e}). {verify}");
            cx.state.close(op, Outcome::Done, &verify);
            true
        }
        Err(e) if e.timed_out() => {
            tracing::warn!(?kind, host = %host, "Membership change timed out; re-checking next tick.");
            cx.state.close(op, Outcome::Failed, "timed out");
            false
        }
        Err(e) => {
            tracing::warn!(?kind, host = %host, "Membership change refused: {e}; re-checking next tick.");
            cx.state.close(op, Outcome::Failed, &e.to_string());
            false
        }
    }
}

/// The flap-damping history: the removals this agent journalled within
/// `cluster.flap_window` (durable across restarts), and those every other
/// agent that answers reports in its `/status` (`flap.recent_removals`),
/// so a change of coordinator does not forget a flapping host.
pub fn removal_history(cx: &Host) -> Vec<PastRemoval> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let window_ms = i64::try_from(cx.limits.flap_window.as_millis()).unwrap_or(i64::MAX);
    let mut history = match cx.state.removals_since(now_ms.saturating_sub(window_ms)) {
        Ok(h) => h,
        Err(e) => {
            // Damping then falls back to the base window (removal as before
            // flap damping); a journal that cannot be read also refuses the
            // removal's intent record, which is logged as an error.
            tracing::debug!("Could not read the removal history from the journal: {e}");
            Vec::new()
        }
    };
    for (i, p) in cx.view.peers.iter().enumerate() {
        if i == cx.my_index {
            continue;
        }
        let theirs = p
            .agent_doc
            .as_ref()
            .and_then(|d| d.pointer("/flap/recent_removals"))
            .and_then(|v| serde_json::from_value::<Vec<PastRemoval>>(v.clone()).ok());
        history.extend(theirs.unwrap_or_default());
    }
    history
}

/// `health` with each member's recent removals filled in.
pub fn with_removal_history(
    cx: &Host,
    members: &[plan::Member],
    mut health: Vec<plan::Health>,
) -> Vec<plan::Health> {
    let history = removal_history(cx);
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (m, h) in members.iter().zip(health.iter_mut()) {
        h.recent_removals =
            plan::recent_removals(&history, &plan::label(m), now_ms, cx.limits.flap_window);
    }
    health
}

/// The event for a standby that caught up and fell behind (and for its
/// return): logged once per change, at warn by the coordinator; it is also
/// the learner's `standby` state in `/status`.
fn log_standby_changes(
    cx: &mut Host,
    members: &[plan::Member],
    health: &[plan::Health],
    coordinator: bool,
) {
    for (m, h) in members.iter().zip(health) {
        if !m.is_learner {
            continue;
        }
        let state = plan::standby_state(h);
        let before = cx.view.standby_states.insert(m.id, state);
        if before.is_none_or(|b| b == state) {
            continue;
        }
        let host = plan::label(m);
        match state {
            StandbyState::FellBehind if coordinator => tracing::warn!(
                host = %host,
                "Standby {host} fell behind after catching up (lag above cluster.promotion_max_lag, or no answer); \
                 not promotable until caught up again; evicted only if still behind after cluster.standby_behind_limit ({:.0}s).",
                cx.limits.standby_behind_limit.as_secs_f64()
            ),
            StandbyState::CaughtUp if before == Some(StandbyState::FellBehind) && coordinator => {
                tracing::info!(host = %host, "Standby {host} caught up again.")
            }
            _ => tracing::debug!(host = %host, ?state, "Standby state changed."),
        }
    }
}

/// Same decision apart from the timing in its reason (for logging changes only).
fn same_kind(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Steady, Decision::Steady) => true,
        (Decision::Wait(x), Decision::Wait(y)) => x == y,
        (Decision::RemoveVoter { id: x, .. }, Decision::RemoveVoter { id: y, .. })
        | (Decision::Promote { id: x, .. }, Decision::Promote { id: y, .. })
        | (Decision::EvictLearner { id: x, .. }, Decision::EvictLearner { id: y, .. }) => x == y,
        _ => false,
    }
}

/// Whether member `id` is a voter now (read from this member, the leader).
async fn promoted(cx: &mut Host, id: u64) -> bool {
    let Some(mut client) = cx.view.peers[cx.my_index].client().await else {
        return false;
    };
    match client.member_list(Budget::Step).await {
        Ok(r) => r.members().iter().any(|m| m.id() == id && !m.is_learner()),
        _ => false,
    }
}

/// Post-condition check, in a sentence: the voter count after the change.
async fn verify_after(cx: &mut Host, kind: OpKind) -> String {
    let Some(mut client) = cx.view.peers[cx.my_index].client().await else {
        return "could not re-read the member list".into();
    };
    match client.member_list(Budget::Step).await {
        Ok(r) => {
            let voters = r.members().iter().filter(|m| !m.is_learner()).count();
            let learners = r.members().len() - voters;
            let want = cx.cfg.cluster.voters;
            if kind == OpKind::Promote && voters != want {
                tracing::warn!("After the promotion there are {voters} voters, {want} configured.");
            }
            format!("now {voters} voters (configured {want}) and {learners} standby")
        }
        _ => "could not re-read the member list".into(),
    }
}

/// When the leader's agent has been silent (or reports a stalled loop) for
/// the detection window while the leader's etcd is fine, nobody coordinates.
/// The first healthy voter in config order moves leadership to itself.
async fn take_over_if_coordinator_gone(cx: &mut Host) {
    let now = Instant::now();
    let Some(me) = cx.local_status().cloned() else {
        return;
    };
    if me.is_learner || me.leader == 0 {
        return;
    }
    let Some((_, li)) = cx.view.leader() else {
        return;
    };
    if li == cx.my_index {
        return;
    }
    let leader = &cx.view.peers[li];
    let gone =
        leader.agent_down_for(now) >= cx.cfg.cluster.failure_detection || leader.agent_stalled();
    if !gone {
        return;
    }
    // Am I the first healthy voter (config order) other than the leader?
    let first = cx.view.peers.iter().enumerate().find(|(i, p)| {
        *i != li
            && p.agent_up()
            && !p.agent_stalled()
            && p.status
                .as_ref()
                .is_some_and(|s| !s.is_learner && s.leader != 0)
    });
    if first.map(|(i, _)| i) != Some(cx.my_index) {
        return;
    }
    let Some(mut client) = cx.view.peers[li].client().await else {
        return;
    };
    let op = cx
        .state
        .begin(
            OpKind::MoveLeader,
            &cx.me.name,
            "the leader's agent is not coordinating",
        )
        // Restoring coordination is part of failover: it goes ahead without
        // a journal (a full state disk must not block failover), loudly.
        .map_err(|e| tracing::error!("Moving leadership here without a journal record: {e}"))
        .ok();
    match client.move_leader(me.member_id).await {
        Ok(()) => {
            tracing::warn!(
                "The leader's agent on {} is not coordinating; moved etcd leadership here.",
                leader_name(cx, li)
            );
            if let Some(op) = op {
                cx.state.close(op, Outcome::Done, "leadership moved here");
            }
        }
        Err(e) => {
            if let Some(op) = op {
                cx.state.close(op, Outcome::Failed, &e.to_string());
            }
        }
    }
}

fn leader_name(cx: &Host, i: usize) -> String {
    cx.view.peers[i].node.name.clone()
}

/// Moves leadership from this (leading) member to a healthy, caught-up voter.
pub async fn hand_off_leadership(cx: &mut Host) -> bool {
    let target = cx.view.peers.iter().enumerate().find_map(|(i, p)| {
        let s = p.status.as_ref()?;
        (i != cx.my_index && !s.is_learner && p.caught_up == Some(true)).then_some(s.member_id)
    });
    let Some(target) = target else {
        tracing::warn!("No healthy voter to hand leadership to; stopping as leader.");
        return false;
    };
    let Some(mut client) = cx.view.peers[cx.my_index].client().await else {
        return false;
    };
    match client.move_leader(target).await {
        Ok(()) => {
            tracing::info!(target = %format!("{target:x}"), "Moved etcd leadership away.");
            true
        }
        Err(e) => {
            tracing::warn!("Could not move leadership away: {e}");
            false
        }
    }
}
