//! The chaos campaign's clock and fsync-latency faults (issue 16), kept
//! apart from `chaos.rs` so the campaign loop only dispatches to them.
//!
//! - `clock_jump`: one host's agent sees its wall clock jump 5 minutes
//!   ahead or back (libfaketime, see `edgeplane::sim::clock`; the machine's
//!   clock is never changed), holds it for longer than the failure
//!   detection and the quorum-loss window, then jumps back to the true
//!   time. A wall-clock jump must never count as a dead host: the member
//!   list must not change.
//! - `fsync_latency`: every fsync and fdatasync of one voter's (or the
//!   leader's) etcd is held for up to 50–200 ms, for a few seconds. The
//!   existing strace wrapper fixes its injections when etcd starts, so a
//!   delay for "some seconds" of a running etcd is made by stopping its
//!   tracer for the delay and letting it run for [`FSYNC_GAP`], over and
//!   over: an fsync that arrives while the tracer is stopped waits up to
//!   the delay, as on a slow disk. That is below the failure detection, so
//!   the site must stay as it is (no removal, no promotion).

use std::time::{Duration, Instant};

use edgeplane_tests::{LocalSite, sim};
use nix::sys::signal::Signal;

/// How far a `clock_jump` moves the agent's wall clock.
pub const JUMP_S: i64 = 300;
/// How long the tracer runs between two stalls of `fsync_latency`.
pub const FSYNC_GAP: Duration = Duration::from_millis(5);

/// Why `clock_jump` cannot run here, if it cannot.
pub fn clock_missing() -> Option<&'static str> {
    sim::clock::faketime_lib()
        .is_none()
        .then_some("needs libfaketime (Debian libfaketime) for the agents' faked clocks")
}

/// Polls the member list every 200 ms until `until`; the lists that
/// differ from `before`, in order.
async fn watch_members(
    site: &LocalSite,
    before: &Option<Vec<(u64, bool)>>,
    until: Instant,
) -> Vec<Vec<(u64, bool)>> {
    let mut changes: Vec<Vec<(u64, bool)>> = Vec::new();
    while Instant::now() < until {
        if let (Some(b), Some(now)) = (before, site.member_ids().await)
            && &now != b
            && changes.last() != Some(&now)
        {
            changes.push(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    changes
}

/// What a fault of this module did: a note for the report, and the
/// violations it saw.
pub struct Outcome {
    pub note: String,
    pub violations: Vec<String>,
}

/// The offset (ms) between `host`'s agent's wall clock and the test's,
/// from its `/status` `now_ms`.
async fn agent_offset_ms(site: &LocalSite, i: usize) -> Option<i64> {
    let before = crate::chaos_metrics::now_ms();
    let doc = site.agent_status(i).await?;
    let after = crate::chaos_metrics::now_ms();
    Some(doc["now_ms"].as_i64()? - (before + after) / 2)
}

/// `clock_jump` on host `target`: ahead when `down` is an even number of
/// ms, else back; held for `down`, then back to the true time (a jump the
/// other way).
pub async fn clock_jump(site: &LocalSite, target: usize, down: Duration) -> Outcome {
    let host = site.hosts[target].name.clone();
    let offset = if down.as_millis().is_multiple_of(2) {
        JUMP_S
    } else {
        -JUMP_S
    };
    let mut violations = Vec::new();
    let before = site.member_ids().await;
    if let Err(e) = site.jump_clock(target, offset) {
        violations.push(format!("jumping {host}'s clock failed: {e}"));
        return Outcome {
            note: String::new(),
            violations,
        };
    }
    // The agent must see the jump, or the fault did not happen. Its
    // `/status` is written by its loop, so the jump shows from its next tick.
    let mut seen = None;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        seen = agent_offset_ms(site, target).await;
        if seen.is_some_and(|s| (s - offset * 1000).abs() < 30_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut changes = watch_members(site, &before, Instant::now() + down).await;
    if let Err(e) = site.jump_clock(target, 0) {
        violations.push(format!("jumping {host}'s clock back failed: {e}"));
    }
    // After the jump back, as long again as the failure detection and the
    // quorum-loss window (3 s) take.
    changes.extend(watch_members(site, &before, Instant::now() + Duration::from_secs(4)).await);
    let back = agent_offset_ms(site, target).await;
    match seen {
        Some(s) if (s - offset * 1000).abs() < 30_000 => {}
        _ => violations.push(format!(
            "harness: {host}'s agent did not see its clock jump {offset:+} s (its offset: {seen:?} ms)"
        )),
    }
    if !changes.is_empty() {
        violations.push(format!(
            "a wall-clock jump of {offset:+} s on {host} changed the members: {before:?} -> {changes:?}"
        ));
    }
    Outcome {
        note: format!(
            "{host}'s agent clock {offset:+} s for {} ms (its offset seen {} s, after the jump back {} s); members {}",
            down.as_millis(),
            seen.map_or("?".into(), |s| format!("{:+.1}", s as f64 / 1000.0)),
            back.map_or("?".into(), |s| format!("{:+.1}", s as f64 / 1000.0)),
            if changes.is_empty() {
                "unchanged"
            } else {
                "CHANGED"
            }
        ),
        violations,
    }
}

/// The per-fsync delay of a `fsync_latency` fault, from its drawn length:
/// 50–200 ms.
pub fn fsync_delay(down: Duration) -> Duration {
    Duration::from_millis(50 + (down.as_millis() % 151) as u64)
}

/// `fsync_latency` on host `target` (`role` for the note): fsyncs held up
/// to [`fsync_delay`] for `down`.
pub async fn fsync_latency(site: &LocalSite, target: usize, role: &str, down: Duration) -> Outcome {
    let host = site.hosts[target].name.clone();
    let delay = fsync_delay(down);
    let mut violations = Vec::new();
    let before = site.member_ids().await;
    let leader_before = site.leader_host().await;
    let t0 = Instant::now();
    let mut cycles = 0u32;
    let mut tracer = None;
    let mut failed = None;
    while t0.elapsed() < down {
        match site.stall_fsync(target, true) {
            Ok(t) => tracer = Some(t),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
        tokio::time::sleep(delay).await;
        if let Some(t) = tracer {
            sim::signal(t, Signal::SIGCONT);
        }
        cycles += 1;
        tokio::time::sleep(FSYNC_GAP).await;
    }
    if let Some(t) = tracer {
        sim::signal(t, Signal::SIGCONT);
    }
    // The site after the fault, for as long as the failure detection and
    // an election take.
    let changes = watch_members(site, &before, Instant::now() + Duration::from_secs(3)).await;
    let leader_after = site.leader_host().await;
    if let Some(e) = &failed
        && cycles == 0
    {
        violations.push(format!("delaying {host}'s fsyncs failed: {e}"));
    }
    if !changes.is_empty() {
        violations.push(format!(
            "fsyncs of {host} delayed up to {} ms (below the failure detection) changed the members: {before:?} -> {changes:?}",
            delay.as_millis()
        ));
    }
    let name = |h: Option<usize>| h.map_or("none".to_string(), |h| site.hosts[h].name.clone());
    Outcome {
        note: format!(
            "fsyncs of {host} ({role}) held up to {} ms for {} ms ({cycles} stalls{}); members {}; leader {} -> {}",
            delay.as_millis(),
            t0.elapsed().as_millis(),
            failed.map_or(String::new(), |e| format!(", stopped early: {e}")),
            if changes.is_empty() {
                "unchanged"
            } else {
                "CHANGED"
            },
            name(leader_before),
            name(leader_after),
        ),
        violations,
    }
}
