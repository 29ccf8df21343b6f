//! The reaction must not make things worse (issue #15 §2).
//!
//! - A voter whose etcd alone, or whose whole host (etcd and agent), stalls
//!   for less than `cluster.failure_detection` is never removed, however
//!   often it happens, while a writer runs.
//!
//! Stalls are SIGSTOP/SIGCONT of the real processes of a site started
//! through the public CLI.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeplane_tests::{
    HANG, LocalSite, SiteSpec, Writer, assert_no_acked_write_lost, edgeplane_bin, rt, sim,
};
use nix::sys::signal::Signal;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Membership changes of `kind` (`remove_member`, `promote`, `evict_learner`)
/// journalled as done since `since_ms` by every agent that answers.
async fn done_since(site: &LocalSite, kind: &str, since_ms: i64) -> u64 {
    let mut n = 0;
    for i in 0..site.hosts.len() {
        for _ in 0..3 {
            if let Some(doc) = site.agent_status(i).await {
                n += edgeplane::agent::recent_ops(&doc)
                    .iter()
                    .filter(|o| {
                        o["kind"] == kind
                            && o["outcome"] == "done"
                            && o["started_ms"].as_i64().is_some_and(|t| t >= since_ms)
                    })
                    .count() as u64;
                break;
            }
        }
    }
    n
}

/// The member ids in the list, sorted (any change is a removal or a join).
async fn member_ids(site: &LocalSite) -> Option<Vec<(u64, bool)>> {
    let mut ids: Vec<(u64, bool)> = sim::member_list(&site.client_urls())
        .await?
        .iter()
        .map(|m| (m.id, m.is_learner))
        .collect();
    ids.sort_unstable();
    Some(ids)
}

/// A voter that is not the leader (the stall is about a voter, not about
/// an election), by host index.
async fn follower_voter(site: &LocalSite) -> anyhow::Result<usize> {
    let leader = site.leader_host().await;
    let (voters, _) = site
        .roles()
        .await
        .ok_or_else(|| anyhow::anyhow!("no member list"))?;
    voters
        .into_iter()
        .find(|&v| Some(v) != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower voter"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// SIGSTOP of the voter's etcd only (its agent answers).
    Etcd,
    /// SIGSTOP of the voter's agent and etcd.
    Host,
}

fn stop(site: &mut LocalSite, i: usize, what: Stall, sig: Signal) {
    match what {
        Stall::Etcd => {
            if let Some(pid) = site.hosts[i].etcd_pid() {
                sim::signal(pid, sig);
            }
        }
        Stall::Host => site.signal_host(i, sig),
    }
}

#[test]
fn voter_stalls_shorter_than_failure_detection_remove_nobody() -> anyhow::Result<()> {
    rt().block_on(short_stalls())
}

async fn short_stalls() -> anyhow::Result<()> {
    // The edge profile's failure_detection (1 s); stalls of half of it.
    let failure_detection = Duration::from_secs(1);
    let stall = failure_detection / 2;
    let spec = SiteSpec::new(4, 3, edgeplane_bin());
    let mut site = LocalSite::create(spec, std::env::var("EDGEPLANE_KEEP_SITE").is_ok())?;
    for i in 0..4 {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(1, 2 * HANG).await,
        "the site did not reach 3 voters + 1 standby; logs in {}",
        site.root.display()
    );
    let before = member_ids(&site)
        .await
        .ok_or_else(|| anyhow::anyhow!("no member list"))?;
    let since_ms = now_ms();
    let mut writer = Writer::start(site.client_urls(), "stall");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window_start = Instant::now();
    for what in [Stall::Etcd, Stall::Host] {
        for round in 0..4 {
            let v = follower_voter(&site).await?;
            eprintln!(
                "{what:?} stall {round} of {} for {stall:?}",
                site.hosts[v].name
            );
            stop(&mut site, v, what, Signal::SIGSTOP);
            tokio::time::sleep(stall).await;
            stop(&mut site, v, what, Signal::SIGCONT);
            // Long enough for every poll that saw the stall to be decided on.
            tokio::time::sleep(failure_detection * 2).await;
            assert_eq!(
                member_ids(&site).await.as_ref(),
                Some(&before),
                "the membership changed after a {stall:?} {what:?} stall of {} (logs in {})",
                site.hosts[v].name,
                site.root.display()
            );
        }
    }
    let window_end = Instant::now();
    tokio::time::sleep(failure_detection * 2).await;
    assert_eq!(
        member_ids(&site).await,
        Some(before),
        "membership unchanged"
    );
    for kind in ["remove_member", "promote", "evict_learner"] {
        assert_eq!(
            done_since(&site, kind, since_ms).await,
            0,
            "no {kind} for stalls shorter than failure_detection"
        );
    }
    writer.stop().await;
    let acked = assert_no_acked_write_lost(
        &writer,
        &site.client_urls(),
        window_start..window_end,
        "short stalls",
    )
    .await?;
    eprintln!(
        "8 stalls of {stall:?}: no membership change; {acked} writes acknowledged during the stalls, none lost"
    );
    Ok(())
}
