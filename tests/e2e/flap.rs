//! The reaction must not make things worse (issue #15 §2).
//!
//! - A voter (a follower, and the leader) whose etcd alone, or whose whole
//!   host (etcd and agent), stalls for less than `cluster.failure_detection`
//!   is never removed, however often it happens, while a writer runs.
//! - A voter that is removed, comes back and stalls again within
//!   `cluster.flap_window` is only removed again after a doubled detection
//!   window, also when the coordinator's agent restarted in between (the
//!   removal history is durable), and the damped removal is counted and
//!   shown in `/status` and `diag status`.
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
                n += edgeplane::agent::status::recent_ops(&doc)
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
    let before = site
        .member_ids()
        .await
        .ok_or_else(|| anyhow::anyhow!("no member list"))?;
    let since_ms = now_ms();
    let mut writer = Writer::start(site.client_urls(), "stall");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window_start = Instant::now();
    // Four stalls of a follower voter's etcd, four of its whole host, then
    // two of each for the leader (whose agent coordinates).
    let plan = [
        (Stall::Etcd, false, 4),
        (Stall::Host, false, 4),
        (Stall::Etcd, true, 2),
        (Stall::Host, true, 2),
    ];
    let mut stalls = 0;
    for (what, leader, rounds) in plan {
        for round in 0..rounds {
            let v = if leader {
                site.leader_host()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("no leader"))?
            } else {
                follower_voter(&site).await?
            };
            stalls += 1;
            eprintln!(
                "{what:?} stall {round} of {} ({}) for {stall:?}",
                site.hosts[v].name,
                if leader { "leader" } else { "follower" }
            );
            stop(&mut site, v, what, Signal::SIGSTOP);
            tokio::time::sleep(stall).await;
            stop(&mut site, v, what, Signal::SIGCONT);
            // Long enough for every poll that saw the stall to be decided on.
            tokio::time::sleep(failure_detection * 2).await;
            assert_eq!(
                site.member_ids().await.as_ref(),
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
        site.member_ids().await,
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
        "{stalls} stalls of {stall:?}: no membership change; {acked} writes acknowledged during the stalls, none lost"
    );
    Ok(())
}

#[test]
fn a_flapping_voter_is_removed_again_only_after_a_doubled_window() -> anyhow::Result<()> {
    rt().block_on(flapping_voter())
}

/// SIGSTOPs host `v` and holds it until it is no longer a member (or
/// `HANG`); returns how long that took, then SIGCONTs it.
async fn stall_until_removed(site: &mut LocalSite, v: usize) -> anyhow::Result<Duration> {
    let url = site.hosts[v].peer_url.clone();
    let (voters, _) = site.roles().await.unwrap_or_default();
    anyhow::ensure!(
        voters.contains(&v),
        "{} is not a voter before its stall (voters {voters:?}; logs in {})",
        site.hosts[v].name,
        site.root.display()
    );
    stop(site, v, Stall::Host, Signal::SIGSTOP);
    let t0 = Instant::now();
    let removed = loop {
        if let Some(ms) = sim::member_list(&site.client_urls()).await
            && !ms.iter().any(|m| m.peer_url == url)
        {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > HANG {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop(site, v, Stall::Host, Signal::SIGCONT);
    removed.ok_or_else(|| {
        anyhow::anyhow!(
            "{} stalled for {HANG:?} and was never removed (logs in {})",
            site.hosts[v].name,
            site.root.display()
        )
    })
}

/// The journal record of the removal of `host` started since `since_ms`,
/// from whichever agent made it (waiting, up to `HANG`, for the agent to
/// journal the outcome: it does so after re-reading the member list).
async fn removal_record(site: &LocalSite, host: &str, since_ms: i64) -> Option<serde_json::Value> {
    let t0 = Instant::now();
    while t0.elapsed() < HANG {
        for i in 0..site.hosts.len() {
            if let Some(doc) = site.agent_status(i).await
                && let Some(op) = edgeplane::agent::status::recent_ops(&doc).iter().find(|o| {
                    o["kind"] == "remove_member"
                        // Abandoned: the agent was killed (the test restarts
                        // the coordinator's) after it acted, before it closed the record.
                        && (o["outcome"] == "done" || o["outcome"] == "abandoned")
                        && o["target"] == host
                        && o["started_ms"].as_i64().is_some_and(|t| t >= since_ms)
                })
            {
                return Some(op.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The etcd silence the coordinator measured when it decided a removal
/// (its journalled reason: "etcd unreachable for 2.1s and …").
fn measured_silence(op: &serde_json::Value) -> Option<Duration> {
    let reason = op["reason"].as_str()?;
    let rest = reason.split("etcd unreachable for ").nth(1)?;
    let secs: f64 = rest.split('s').next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

/// Sum of `/journal/flap_removals` over the agents that answer.
async fn flap_removals(site: &LocalSite) -> u64 {
    let mut n = 0;
    for i in 0..site.hosts.len() {
        if let Some(doc) = site.agent_status(i).await {
            n += doc
                .pointer("/journal/flap_removals")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
        }
    }
    n
}

async fn flapping_voter() -> anyhow::Result<()> {
    // 3 voters and no standby: the removed host comes back as a voter, so it
    // can flap. A 2 s window makes "doubled" far from poll jitter.
    let failure_detection = Duration::from_secs(2);
    let mut spec = SiteSpec::new(3, 3, edgeplane_bin());
    spec.cluster_toml = "failure_detection = \"2s\"\n".to_string();
    let mut site = LocalSite::create(spec, std::env::var("EDGEPLANE_KEEP_SITE").is_ok())?;
    for i in 0..3 {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(0, 2 * HANG).await,
        "the site did not reach 3 voters; logs in {}",
        site.root.display()
    );
    let since_ms = now_ms();
    let mut writer = Writer::start(site.client_urls(), "flap");
    let v = follower_voter(&site).await?;
    let name = site.hosts[v].name.clone();

    eprintln!("stalling {name} until it is removed");
    let first = stall_until_removed(&mut site, v).await?;
    let after_first_ms = now_ms();
    eprintln!("{name} removed {first:?} into its first stall");
    assert!(
        site.wait_full_strength(0, 2 * HANG).await,
        "{name} did not come back as a voter; logs in {}",
        site.root.display()
    );
    eprintln!("{name} is a voter again");

    // The coordinator's agent restarts: the removal history is durable.
    if let Some(c) = site.leader_host().await {
        eprintln!(
            "restarting the coordinator's agent on {}",
            site.hosts[c].name
        );
        site.kill_agent(c);
        site.start_agent(c)?;
        let t0 = Instant::now();
        while site.agent_status(c).await.is_none() {
            assert!(t0.elapsed() < HANG, "the restarted agent never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Under load (CI's 2 cores running other sites) the voter can miss its
    // polls for longer than its window without any stall and be removed
    // again. That removal is in the flap window too: it must be damped.
    // The member list, once a member answers it (no answer is not "removed").
    let mut roles = None;
    let t0 = Instant::now();
    while roles.is_none() && t0.elapsed() < HANG {
        roles = site.roles().await;
        if roles.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let Some((voters, _)) = roles else {
        panic!(
            "no member answered the member list for {HANG:?}; logs in {}",
            site.root.display()
        );
    };
    if !voters.contains(&v) {
        let Some(op) = removal_record(&site, &name, after_first_ms).await else {
            panic!(
                "{name} is no voter, and no removal is journalled; logs in {}",
                site.root.display()
            );
        };
        eprintln!("{name} was removed again without a stall (load): {op}");
        assert!(
            op["damping"].as_u64().is_some_and(|d| d >= 2)
                && measured_silence(&op).is_some_and(|s| s >= failure_detection * 2),
            "a removal within the flap window was not damped: {op}"
        );
        assert!(
            site.wait_full_strength(0, 2 * HANG).await,
            "{name} did not come back as a voter; logs in {}",
            site.root.display()
        );
    }
    let flaps_before = flap_removals(&site).await;

    eprintln!("stalling {name} again, within the flap window");
    let second_ms = now_ms();
    let second = stall_until_removed(&mut site, v).await?;
    eprintln!(
        "{name} removed {second:?} into its second stall (first: {first:?}; failure_detection {failure_detection:?})"
    );
    let op = removal_record(&site, &name, second_ms)
        .await
        .ok_or_else(|| anyhow::anyhow!("no journal record of the second removal"))?;
    let silence = measured_silence(&op);
    eprintln!("second removal journalled: {op}");
    assert!(
        silence.is_some_and(|s| s >= failure_detection * 2),
        "the coordinator removed {name} again within the flap window after {silence:?} of silence, not a doubled detection window ({:?}): {op}",
        failure_detection * 2
    );
    assert_eq!(op["damping"], 2, "the removal is journalled as damped 2x");
    assert!(
        second >= failure_detection * 2,
        "the second removal within the flap window came after {second:?}, before a doubled detection window ({:?})",
        failure_detection * 2
    );
    assert!(
        site.wait_full_strength(0, 2 * HANG).await,
        "{name} did not come back after its second removal; logs in {}",
        site.root.display()
    );
    assert_eq!(
        done_since(&site, "remove_member", since_ms).await,
        2,
        "one removal per stall"
    );
    assert!(
        flap_removals(&site).await > flaps_before,
        "the damped removal is counted in /status"
    );
    // `diag status` on any host names the flapping host.
    let other = (v + 1) % site.hosts.len();
    let out = std::process::Command::new(edgeplane_bin())
        .args(["diag", "status", "--config"])
        .arg(&site.hosts[other].config_path)
        .env("RUST_LOG", "warn")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{name} flaps")),
        "`diag status` on {} does not name the flapping host:\n{text}",
        site.hosts[other].name
    );
    writer.stop().await;
    let end = Instant::now();
    assert_no_acked_write_lost(&writer, &site.client_urls(), ..end, "flapping voter").await?;
    Ok(())
}
