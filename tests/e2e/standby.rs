//! The standby is kept through a short stall and a write burst (issue #15
//! §1): a learner that caught up once and briefly falls behind is not
//! evicted and resynced; it is still there, and promoted exactly once, when
//! a voter host then dies. The test config makes `learner_stuck_after`
//! short (3 s) and the lag bound small (20 entries, 5 for the burst), so a rule that evicts a
//! learner as "never caught up" after one bad poll shows within seconds.

use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, Writer, edgeplane_bin, rt, sim};
use nix::sys::signal::Signal;

/// Evictions recorded in the journals of every agent that answers.
async fn evictions(site: &LocalSite) -> u64 {
    let mut n = 0;
    for i in 0..site.hosts.len() {
        for _ in 0..3 {
            if let Some(doc) = site.agent_status(i).await {
                n += doc
                    .pointer("/journal/evictions")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                break;
            }
        }
    }
    n
}

/// The member id of the standby on host `i`, as the member list shows it.
async fn member_id_of(site: &LocalSite, i: usize) -> Option<u64> {
    let ms = sim::member_list(&site.client_urls()).await?;
    let url = site.hosts[i].peer_url.clone();
    ms.iter()
        .find(|m| m.peer_url.trim_end_matches('/') == url.trim_end_matches('/'))
        .map(|m| m.id)
}

/// Watches for `bound` that the standby on `i` stays the same member and
/// that no agent journals an eviction.
async fn standby_kept(site: &LocalSite, i: usize, id: u64, evicted_before: u64, bound: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        let now = member_id_of(site, i).await;
        assert!(
            now.is_none_or(|n| n == id),
            "the standby on {} was replaced (member {id:x} became {now:x?})",
            site.hosts[i].name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        evictions(site).await,
        evicted_before,
        "no evict_learner for a standby that had caught up"
    );
    assert_eq!(
        member_id_of(site, i).await,
        Some(id),
        "still the same standby"
    );
}

#[test]
fn standby_paused_1s_is_kept_then_promoted_once() -> anyhow::Result<()> {
    rt().block_on(keep_standby_then_kill_a_voter(Fault::Sigstop))
}

#[test]
fn standby_under_a_write_burst_is_kept_then_promoted_once() -> anyhow::Result<()> {
    rt().block_on(keep_standby_then_kill_a_voter(Fault::WriteBurst))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The standby's etcd is SIGSTOPped for 1 s.
    Sigstop,
    /// Sixteen concurrent writers for 10 s, with a lag bound of 5 entries.
    WriteBurst,
}

async fn keep_standby_then_kill_a_voter(fault: Fault) -> anyhow::Result<()> {
    {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        // A burst is only a fault when it puts the standby past the lag bound.
        let max_lag = if fault == Fault::WriteBurst { 5 } else { 20 };
        spec.cluster_toml =
            format!("learner_stuck_after = \"3s\"\npromotion_max_lag = {max_lag}\n");
        let mut site = LocalSite::create(spec, std::env::var("EDGEPLANE_KEEP_SITE").is_ok())?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, 2 * HANG).await,
            "the site did not reach 3 voters + 1 standby; logs in {}",
            site.root.display()
        );
        let (_, learners) = site
            .roles()
            .await
            .ok_or_else(|| anyhow::anyhow!("no member list"))?;
        let standby = *learners
            .first()
            .ok_or_else(|| anyhow::anyhow!("no standby"))?;
        let id = member_id_of(&site, standby)
            .await
            .ok_or_else(|| anyhow::anyhow!("standby not in the member list"))?;
        // Past the stuck window, so only the "caught up" record protects it.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(member_id_of(&site, standby).await, Some(id));
        let evicted_before = evictions(&site).await;
        let mut writer = Writer::start(site.client_urls(), "w");

        if fault == Fault::Sigstop {
            let pid = site.hosts[standby]
                .etcd_pid()
                .ok_or_else(|| anyhow::anyhow!("no etcd pid on the standby"))?;
            eprintln!(
                "SIGSTOP etcd {pid} of the standby {}",
                site.hosts[standby].name
            );
            sim::signal(pid, Signal::SIGSTOP);
            tokio::time::sleep(Duration::from_secs(1)).await;
            sim::signal(pid, Signal::SIGCONT);
            standby_kept(&site, standby, id, evicted_before, Duration::from_secs(8)).await;
        } else {
            eprintln!("write burst");
            let mut burst: Vec<Writer> = (0..16)
                .map(|k| Writer::start(site.client_urls(), &format!("burst{k}")))
                .collect();
            standby_kept(&site, standby, id, evicted_before, Duration::from_secs(10)).await;
            let mut burst_acked = 0;
            for w in &mut burst {
                w.stop().await;
                burst_acked += w.acked_count();
            }
            eprintln!("burst acknowledged {burst_acked} writes");
        }
        standby_kept(&site, standby, id, evicted_before, Duration::from_secs(4)).await;

        // Then a voter host dies: the kept standby is promoted, once.
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let leader = site.leader_host().await;
        let (voters, _) = site.roles().await.unwrap_or_default();
        let victim = *voters
            .iter()
            .find(|&&v| Some(v) != leader)
            .ok_or_else(|| anyhow::anyhow!("no follower voter"))?;
        eprintln!("killing voter host {}", site.hosts[victim].name);
        site.kill_host(victim);
        let t0 = Instant::now();
        loop {
            let (voters_now, _) = site.roles().await.unwrap_or_default();
            if voters_now.len() == 3 && voters_now.contains(&standby) {
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "the standby was not promoted after killing {}",
                site.hosts[victim].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("standby promoted {:?} after the kill", t0.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            site.promotions_since(since_ms).await,
            1,
            "exactly one promotion for one loss"
        );
        assert_eq!(
            member_id_of(&site, standby).await,
            Some(id),
            "the same member was promoted"
        );
        assert_eq!(evictions(&site).await, evicted_before, "no eviction at all");
        writer.stop().await;
        assert_eq!(
            writer.lost(&site.client_urls()).await?,
            0,
            "no acknowledged write lost"
        );
        Ok(())
    }
}

/// An idle site on a busy machine keeps its standby (issue #15 §1, seen
/// before the fix with no fault at all: "evict standby edge-4: standby has
/// not caught up within 60s" 74 s after it joined during a build, and once
/// 8 minutes in on an almost idle machine). With the edge profile's own
/// defaults, for `EDGEPLANE_IDLE_MINUTES` (10) minutes: the same learner
/// member, no eviction journalled. Ignored by default (it takes the whole
/// window; the suite stays under its time budget): run it with
/// `cargo test -p edgeplane-tests --test e2e -- --ignored idle_site`, on a
/// machine kept busy (a build, or the rest of the suite).
#[test]
#[ignore = "takes 10 minutes; run with --ignored"]
fn an_idle_site_on_a_busy_machine_keeps_its_standby_for_ten_minutes() -> anyhow::Result<()> {
    let minutes = std::env::var("EDGEPLANE_IDLE_MINUTES")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(10);
    rt().block_on(async {
        let mut site = LocalSite::create(SiteSpec::new(4, 3, edgeplane_bin()), false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let (_, learners) = site.roles().await.unwrap_or_default();
        let standby = *learners
            .first()
            .ok_or_else(|| anyhow::anyhow!("no standby at full strength"))?;
        let id = member_id_of(&site, standby)
            .await
            .ok_or_else(|| anyhow::anyhow!("the standby is not in the member list"))?;
        let before = evictions(&site).await;
        let t0 = Instant::now();
        standby_kept(
            &site,
            standby,
            id,
            before,
            Duration::from_secs(minutes * 60),
        )
        .await;
        eprintln!(
            "standby {} (member {id:x}) kept for {:.0} s, {} evictions",
            site.hosts[standby].name,
            t0.elapsed().as_secs_f64(),
            evictions(&site).await - before
        );
        Ok(())
    })
}
