//! The agent against real etcd: bootstrap in any order, a voter host killed
//! (follower, leader = the coordinating agent's host), the standby promoted
//! exactly once, the dead host back as the new standby, no acknowledged
//! write lost, never more voters than configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use edgeplane_tests::{
    HANG, LocalSite, SiteSpec, Writer, alive, assert_no_acked_write_lost, edgeplane_bin, rt,
};

/// Now, in ms since the epoch (journal records carry such times).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Builds a site and starts its agents in a shuffled order with small gaps.
async fn bootstrap(hosts: usize, voters: usize, extra: &str) -> anyhow::Result<LocalSite> {
    let mut spec = SiteSpec::new(hosts, voters, edgeplane_bin());
    spec.extra_toml.push_str(extra);
    let mut site = LocalSite::create(spec, false)?;
    let mut order: Vec<usize> = (0..hosts).collect();
    // A cheap shuffle seeded by the clock: the order differs between runs.
    let seed = Instant::now().elapsed().as_nanos() as usize ^ std::process::id() as usize;
    order.rotate_left(seed % hosts);
    if seed.is_multiple_of(2) {
        order.reverse();
    }
    eprintln!("starting agents in order {order:?}");
    for i in order {
        site.start_agent(i)?;
        tokio::time::sleep(Duration::from_millis(150 * (seed % 3) as u64)).await;
    }
    let learners = usize::from(hosts > voters);
    // Twice the usual bound: with the agents started in a random order, the
    // last initial voter may come up while another test's site loads both cores.
    if !site.wait_full_strength(learners, 2 * HANG).await {
        // Keep the site for a post-mortem before the assertion drops it.
        let kept = site.root.with_extension("failed");
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(&site.root)
            .arg(&kept)
            .status();
        panic!(
            "site did not reach {voters} voters + {learners} standby in {:?}; logs kept in {}",
            2 * HANG,
            kept.display()
        );
    }
    Ok(site)
}

/// Watches the member list in the background and records the most voters seen.
struct VoterWatch {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl VoterWatch {
    fn start(urls: Vec<String>) -> VoterWatch {
        let max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(ms) = edgeplane::sim::member_list(&urls).await {
                    let voters = ms.iter().filter(|m| !m.is_learner).count();
                    m.fetch_max(voters, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        VoterWatch { max, stop, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}

/// Kills `victim` (a voter), waits for full strength, restarts it, waits for
/// it to be the standby; checks one promotion, no lost write, voters ≤ 3,
/// old data dir set aside.
async fn kill_voter_host_and_heal(pick_leader: bool) -> anyhow::Result<()> {
    let mut site = bootstrap(4, 3, "").await?;
    let watch = VoterWatch::start(site.client_urls());
    let mut writer = Writer::start(site.client_urls(), "w");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = site.leader_host().await;
    let (voters, _) = site.roles().await.unwrap_or_default();
    let victim = if pick_leader {
        leader.unwrap_or(voters[0])
    } else {
        *voters
            .iter()
            .find(|&&v| Some(v) != leader)
            .unwrap_or(&voters[0])
    };
    let since_ms = now_ms();
    let data_dir = site.hosts[victim].data_dir.clone();
    let etcd_pid = site.hosts[victim].etcd_pid();

    site.kill_host(victim);
    assert!(
        etcd_pid.is_none_or(|p| !alive(p)),
        "the victim's etcd is dead"
    );
    let t0 = Instant::now();
    while !site.full_strength(0).await && !site.full_strength(1).await {
        assert!(
            t0.elapsed() < HANG,
            "no full strength after killing {}",
            site.hosts[victim].name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healed = t0.elapsed();
    let (voters_now, _) = site.roles().await.unwrap_or_default();
    assert!(
        !voters_now.contains(&victim),
        "the dead member is no longer a voter"
    );
    assert_eq!(voters_now.len(), 3);
    eprintln!("full strength {healed:?} after the kill");
    // Let any duplicate action show itself before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        site.promotions_since(since_ms).await,
        1,
        "exactly one promotion for one loss"
    );

    // The host comes back: old data set aside, new standby.
    site.start_agent(victim)?;
    let t1 = Instant::now();
    loop {
        let standby = site.roles().await.is_some_and(|(_, l)| l.contains(&victim));
        if standby && site.full_strength(1).await {
            break;
        }
        assert!(
            t1.elapsed() < HANG,
            "{} did not come back as the standby",
            site.hosts[victim].name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let parent = data_dir
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let aside = std::fs::read_dir(&parent)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("etcd.removed-"));
    assert!(
        aside,
        "the old data dir was moved aside in {}",
        parent.display()
    );

    writer.stop().await;
    assert!(writer.acked_count() > 10, "the workload made progress");
    assert_no_acked_write_lost(
        &writer,
        &site.client_urls(),
        t0..,
        "writes sent after the kill",
    )
    .await?;
    assert!(
        watch.finish().await <= 3,
        "never more voters than configured"
    );
    Ok(())
}

#[test]
fn follower_voter_host_killed_standby_promoted_once_and_host_rejoins() -> anyhow::Result<()> {
    rt().block_on(kill_voter_host_and_heal(false))
}

/// The coordinating agent runs beside the etcd leader, so this is also the
/// "host of whatever coordinates the agents" case.
#[test]
fn leader_host_killed_standby_promoted_once_and_host_rejoins() -> anyhow::Result<()> {
    rt().block_on(kill_voter_host_and_heal(true))
}

#[test]
fn agent_only_sigkill_leaves_etcd_serving_and_the_new_agent_adopts_it() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut site = bootstrap(4, 3, "").await?;
        let mut writer = Writer::start(site.client_urls(), "a");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let i = site.leader_host().await.unwrap_or(0);
        let pid = site.hosts[i]
            .etcd_pid()
            .ok_or_else(|| anyhow::anyhow!("no etcd pid"))?;
        let promotions_before = site.promotions().await;
        site.kill_agent(i);
        let killed = Instant::now();
        let acked_before = writer.acked_count();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(alive(pid), "etcd outlives its agent");
        assert!(
            writer.acked_count() > acked_before + 10,
            "writes continue while the agent is down"
        );
        let restarted = Instant::now();
        site.start_agent(i)?;
        let t0 = Instant::now();
        loop {
            if let Some(doc) = site.agent_status(i).await
                && doc.pointer("/etcd/pid").and_then(|v| v.as_i64()) == Some(i64::from(pid))
                && doc.pointer("/etcd/adopted").and_then(|v| v.as_bool()) == Some(true)
            {
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "the restarted agent did not adopt etcd pid {pid}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            site.hosts[i].etcd_pid(),
            Some(pid),
            "still the same etcd process"
        );
        assert!(site.full_strength(1).await, "nothing was replaced");
        assert_eq!(
            site.promotions().await,
            promotions_before,
            "no promotion for an agent restart"
        );
        writer.stop().await;
        assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            killed..restarted,
            "writes while the agent was down",
        )
        .await?;
        Ok(())
    })
}

#[test]
fn two_host_site_survives_standby_loss_and_reports_quorum_loss() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut site = bootstrap(2, 1, "\n[recovery]\nquorum_loss_window = \"2s\"\n").await?;
        let mut writer = Writer::start(site.client_urls(), "two");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Lose the standby: writes carry on.
        site.kill_host(1);
        let killed = Instant::now();
        let before = writer.acked_count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            writer.acked_count() > before + 10,
            "losing the standby changes nothing for writes"
        );
        site.start_agent(1)?;
        assert!(
            site.wait_full_strength(1, HANG).await,
            "the standby did not come back"
        );
        let back = Instant::now();
        writer.stop().await;
        assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            killed..back,
            "writes while the standby was down",
        )
        .await?;
        // Lose the voter: quorum loss, reported by the standby's agent.
        site.kill_host(0);
        let t0 = Instant::now();
        loop {
            if let Some(doc) = site.agent_status(1).await
                && doc.get("quorum").and_then(|v| v.as_str()) == Some("lost")
            {
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "the standby's agent never reported quorum loss"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            site.promotions().await,
            0,
            "nothing promoted on quorum loss"
        );
        Ok(())
    })
}

/// `cluster.manage_membership = false` is maintenance mode (Patroni's pause,
/// Pacemaker's maintenance-mode): the spare does not join, a killed voter is
/// not removed, and `/status` says what the agent would do instead.
#[test]
fn maintenance_mode_changes_no_member_and_says_what_it_would_do() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.cluster_toml.push_str("manage_membership = false\n");
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        // The three bootstrap voters form the cluster (a bootstrap changes
        // no membership); the fourth host stays a spare.
        let t0 = Instant::now();
        loop {
            if let Some((v, l)) = site.roles().await
                && v.len() == 3
                && l.is_empty()
                && site.leader_host().await.is_some()
            {
                break;
            }
            assert!(
                t0.elapsed() < 2 * HANG,
                "the three voters did not form a cluster"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let spare = site.agent_status(3).await;
        let waiting = spare
            .as_ref()
            .and_then(|d| d.pointer("/ready_reason")?.as_str().map(String::from))
            .unwrap_or_default();
        assert!(
            waiting.contains("manage_membership"),
            "the spare says why it does not join: {spare:?}"
        );
        let leader = site.leader_host().await.unwrap_or(0);
        let victim = (0..3).find(|&i| i != leader).unwrap_or(1);
        let mut writer = Writer::start(site.client_urls(), "m");
        site.kill_host(victim);
        // Well past failure_detection (1 s) and any damping.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let (voters, learners) = site
            .roles()
            .await
            .ok_or_else(|| anyhow::anyhow!("no member list"))?;
        assert_eq!(voters.len(), 3, "no voter removed: {voters:?}");
        assert!(voters.contains(&victim), "the dead voter is still a member");
        assert!(learners.is_empty(), "no standby added: {learners:?}");
        let decision = site
            .agent_status(leader)
            .await
            .and_then(|d| d.pointer("/decision")?.as_str().map(String::from))
            .unwrap_or_default();
        assert!(
            decision.contains("not acting") && decision.contains("would remove voter"),
            "the coordinator reports the step it does not take: {decision}"
        );
        assert!(
            writer.acked_count() > 0,
            "the two remaining voters keep the quorum"
        );
        writer.stop().await;
        Ok(())
    })
}

/// Answers every HTTP request on `listener` with one Prometheus sample,
/// counting the requests: a scrape target the test controls.
async fn serve_probe_target(listener: tokio::net::TcpListener, hits: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let hits = hits.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            hits.fetch_add(1, Ordering::Relaxed);
            let body = "# TYPE reload_probe gauge\nreload_probe 1\n";
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
    }
}

/// Issue #20 §2: SIGHUP (`systemctl reload edgeplane`) adds a scrape target
/// with etcd's PID unchanged, and names what it cannot apply without a
/// restart (a changed `site`), keeping its running value.
///
/// Before (d1944b7): SIGHUP only validated the file; the new target was
/// never scraped until a restart, which also restarted etcd.
#[test]
fn sighup_adds_a_scrape_target_with_etcd_left_running() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(1, 1, edgeplane_bin());
        spec.extra_toml =
            "[metrics]\nscrape_interval = \"1s\"\nscrape_timeout = \"900ms\"\n\n[uplink]\nenabled = false\n"
                .to_string();
        let mut site = LocalSite::create(spec, false)?;
        site.start_agent(0)?;
        assert!(site.wait_full_strength(0, HANG).await, "no etcd; logs in {}", site.root.display());
        let logs = site.root.display().to_string();
        let etcd_pid = site.hosts[0].etcd_pid().context("etcd runs")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve_probe_target(listener, hits.clone()));

        let path = site.hosts[0].config_path.clone();
        let text = std::fs::read_to_string(&path)?;
        let site_name = edgeplane_config::load(&path)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config
            .site;
        let changed = text.replacen(
            &format!("site = \"{site_name}\""),
            &format!("site = \"{site_name}-renamed\""),
            1,
        ) + &format!(
            "\n[[metrics.targets]]\njob = \"reload-probe\"\nurl = \"http://127.0.0.1:{port}/metrics\"\n"
        );
        assert_ne!(changed, text);
        std::fs::write(&path, changed)?;
        let agent = site.hosts[0].agent_pid().context("the agent runs")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent),
            nix::sys::signal::Signal::SIGHUP,
        )?;

        let t0 = std::time::Instant::now();
        let doc = loop {
            let doc = site.agent_status(0).await.unwrap_or_default();
            let scraped = doc
                .pointer("/metrics/targets")
                .and_then(|t| t.as_array())
                .is_some_and(|t| {
                    t.iter()
                        .any(|x| x["job"] == "reload-probe" && x["scrapes"].as_u64() > Some(0))
                });
            if scraped && hits.load(Ordering::Relaxed) > 0 {
                break doc;
            }
            assert!(t0.elapsed() < HANG, "the new target was never scraped: {doc}; logs in {logs}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(
            site.hosts[0].etcd_pid(),
            Some(etcd_pid),
            "etcd was restarted by the reload; logs in {logs}"
        );
        assert_eq!(doc["reload"]["applied"], serde_json::json!(["pipeline"]), "{doc}");
        assert_eq!(doc["reload"]["pending_restart"], serde_json::json!(["site"]), "{doc}");
        assert_eq!(doc["site"], site_name.as_str(), "the running site name is kept: {doc}");
        Ok(())
    })
}
