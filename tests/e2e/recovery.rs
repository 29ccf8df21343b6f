//! Quorum loss: two of three voters SIGKILLed. With policy `fenced` the
//! freshest survivor fences the lost hosts and rebuilds in a new epoch by
//! itself, when it has a strict majority of votes (one per configured node:
//! the fenced site has 5 hosts, so 3 survive); with `manual`, or without
//! that majority, it waits, says what to run, and `edgeplane recover` does
//! it. Every write acknowledged before the loss survives; the killed hosts
//! come back as standbys of the new epoch.

use std::time::{Duration, Instant};

use edgeplane_tests::{
    HANG, LocalSite, SiteSpec, Writer, assert_no_acked_write_lost, edgeplane_bin, rt,
};

async fn site(policy: &str, hosts: usize) -> anyhow::Result<LocalSite> {
    let mut spec = SiteSpec::new(hosts, 3, edgeplane_bin());
    spec.extra_toml.push_str(&format!(
        "\n[recovery]\nquorum_loss_policy = \"{policy}\"\nfence_command = [\"{{root}}/fence.sh\", \"{{host}}\"]\nquorum_loss_window = \"2s\"\n"
    ));
    let mut site = LocalSite::create(spec, false)?;
    for i in 0..hosts {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(1, HANG).await,
        "site did not bootstrap; logs in {}",
        site.root.display()
    );
    Ok(site)
}

/// Writes for a while, then waits until every member has applied them.
async fn write_then_settle(site: &LocalSite) -> anyhow::Result<Writer> {
    let mut w = Writer::start(site.client_urls(), "q");
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.stop().await;
    // The standby must have everything before the loss (it may be the freshest survivor).
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(w)
}

/// Kills two voters, leaving one voter and the standby.
async fn lose_quorum(site: &mut LocalSite) -> Vec<usize> {
    let (voters, _) = site.roles().await.unwrap_or_default();
    let victims: Vec<usize> = voters.iter().copied().take(2).collect();
    for &v in &victims {
        site.kill_host(v);
    }
    victims
}

async fn wait_writable(site: &LocalSite) {
    let t0 = Instant::now();
    loop {
        let mut w = Writer::start(site.client_urls(), "after");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.stop().await;
        if w.acked_count() > 0 {
            return;
        }
        assert!(
            t0.elapsed() < HANG * 2,
            "the site never became writable again; logs in {}",
            site.root.display()
        );
    }
}

/// The highest revision any member answering a linearizable read reports.
async fn site_revision(site: &LocalSite) -> anyhow::Result<i64> {
    let mut best = None;
    for url in site.client_urls() {
        let opts = edgeplane::sim::certs::etcd_options(&url)
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_secs(2))
            .with_require_leader(true);
        let Ok(mut c) = etcd_client::Client::connect([url.as_str()], Some(opts)).await else {
            continue;
        };
        if let Ok(r) = c.get("q/", None).await {
            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
            best = Some(best.unwrap_or(0).max(rev));
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no member answered"))
}

/// Whether a watch from `from` is refused as compacted by the site.
async fn resume_is_compacted(site: &LocalSite, from: i64) -> anyhow::Result<bool> {
    for url in site.client_urls() {
        let opts = edgeplane::sim::certs::etcd_options(&url)
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_secs(5))
            .with_require_leader(true);
        let Ok(mut c) = etcd_client::Client::connect([url.as_str()], Some(opts)).await else {
            continue;
        };
        let Ok(mut stream) = c
            .watch(
                "q/",
                Some(
                    etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from),
                ),
            )
            .await
        else {
            continue;
        };
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(r))) if r.compact_revision() > 0 => return Ok(true),
                Ok(Ok(Some(r))) if !r.events().is_empty() => return Ok(false),
                Ok(Ok(Some(_))) => continue,
                Ok(Err(e)) if e.to_string().contains("compacted") => return Ok(true),
                _ => break,
            }
        }
    }
    Ok(false)
}

async fn heal_killed(site: &mut LocalSite, victims: &[usize]) {
    for &v in victims {
        let _ = site.start_agent(v);
    }
    assert!(
        site.wait_full_strength(1, HANG * 2).await,
        "the killed hosts did not rejoin; logs in {}",
        site.root.display()
    );
}

#[test]
fn fenced_quorum_loss_rebuilds_automatically_without_losing_acknowledged_writes()
-> anyhow::Result<()> {
    rt().block_on(async {
        // 3 voters, a standby and a spare: after losing 2 voters, 3 of 5
        // agents vote (a 4-host site would have 2 of 4 and wait).
        let mut site = site("fenced", 5).await?;
        let writer = write_then_settle(&site).await?;
        // A watcher (a Kubernetes watch cache) that has seen every revision so far.
        let seen = site_revision(&site).await?;
        let victims = lose_quorum(&mut site).await;
        wait_writable(&site).await;
        // Revisions never go backwards: the rebuilt cluster starts above
        // every revision seen, and the watcher resuming from where it was
        // is told to relist ("compacted") instead of waiting for ever.
        let now = site_revision(&site).await?;
        assert!(
            now > seen,
            "revision after the rebuild {now} > {seen} before it"
        );
        assert!(
            resume_is_compacted(&site, seen + 1).await?,
            "a watch resumed at {} after the rebuild is compacted",
            seen + 1
        );
        // Every write was acknowledged before the loss (write_then_settle).
        assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            ..,
            "writes acknowledged before the loss, after the rebuild",
        )
        .await?;
        // The survivors moved to epoch 1.
        let epochs: Vec<u64> = {
            let mut v = Vec::new();
            for i in 0..site.hosts.len() {
                if let Some(doc) = site.agent_status(i).await {
                    v.push(doc.get("epoch").and_then(|e| e.as_u64()).unwrap_or(0));
                }
            }
            v
        };
        assert!(epochs.contains(&1), "a new epoch was started: {epochs:?}");
        heal_killed(&mut site, &victims).await;
        assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            ..,
            "writes acknowledged before the loss, after the rejoin",
        )
        .await?;
        // Regression (found here): both survivors saw themselves as freshest
        // (a learner still applying) and both rebuilt, fencing each other.
        let mut rebuilds = 0;
        for i in 0..site.hosts.len() {
            if let Some(doc) = site.agent_status(i).await
                && let Some(ops) = doc.pointer("/journal/recent").and_then(|r| r.as_array())
            {
                rebuilds += ops
                    .iter()
                    .filter(|o| o["kind"] == "recover" && o["outcome"] == "done")
                    .count();
            }
        }
        assert_eq!(rebuilds, 1, "exactly one survivor rebuilds");
        Ok(())
    })
}

#[test]
fn manual_quorum_loss_waits_prints_the_command_and_recover_rebuilds() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut site = site("manual", 4).await?;
        let writer = write_then_settle(&site).await?;
        let victims = lose_quorum(&mut site).await;
        let survivor = (0..4).find(|i| !victims.contains(i)).unwrap_or(0);
        // It waits and says what to run.
        let t0 = Instant::now();
        let command = loop {
            if let Some(doc) = site.agent_status(survivor).await
                && let Some(c) = doc.pointer("/recovery/command").and_then(|c| c.as_str())
            {
                break c.to_string();
            }
            assert!(t0.elapsed() < HANG, "no recovery command was offered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            command.contains("edgeplane recover") && command.contains("--confirm"),
            "{command}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            site.agent_status(survivor)
                .await
                .and_then(|d| d.get("epoch").and_then(|e| e.as_u64())),
            Some(0),
            "manual policy never rebuilds by itself"
        );
        // Without --confirm nothing happens.
        let refused = std::process::Command::new(edgeplane_bin())
            .args(["recover", "--config"])
            .arg(&site.hosts[survivor].config_path)
            .output()?;
        assert!(!refused.status.success());
        let out = std::process::Command::new(edgeplane_bin())
            .args(["recover", "--confirm", "--config"])
            .arg(&site.hosts[survivor].config_path)
            .output()?;
        assert!(
            out.status.success(),
            "recover failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Its progress line is for a terminal only: captured output has no
        // escape codes and no carriage returns.
        for o in [&out.stdout, &out.stderr] {
            assert!(
                !o.contains(&0x1b) && !o.contains(&b'\r'),
                "terminal control in captured output: {:?}",
                String::from_utf8_lossy(o)
            );
        }
        wait_writable(&site).await;
        assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            ..,
            "writes acknowledged before the loss, after recover",
        )
        .await?;
        heal_killed(&mut site, &victims).await;
        Ok(())
    })
}

/// 2-host site (1 voter + 1 standby), policy fenced: losing the voter is
/// quorum loss, but the standby has 1 vote of 2, not a strict majority
/// (exactly what it would see if only the link between the hosts were cut),
/// so it does not rebuild by itself: it says why and prints the command. The
/// operator runs it; the standby's data (a learner's db, restored with
/// `--skip-hash-check`) becomes the new cluster.
#[test]
fn two_host_site_fenced_waits_for_a_vote_majority_and_the_command_rebuilds_from_the_standby()
-> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(2, 1, edgeplane_bin());
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/fence.sh\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..2 {
            site.start_agent(i)?;
        }
        assert!(site.wait_full_strength(1, HANG).await, "site did not bootstrap; logs in {}", site.root.display());
        let writer = write_then_settle(&site).await?;
        site.kill_host(0);
        let t0 = Instant::now();
        let doc = loop {
            if let Some(doc) = site.agent_status(1).await
                && doc.pointer("/recovery/wait").and_then(|w| w.as_str()) == Some("no_vote_majority")
            {
                break doc;
            }
            assert!(t0.elapsed() < HANG, "the standby never said it lacks a vote majority; logs in {}", site.root.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(doc["recovery"]["votes_needed"], 2, "{doc}");
        assert_eq!(
            doc["recovery"]["votes"],
            serde_json::json!([{"voter": "host-1", "for": null}, {"voter": "host-2", "for": "host-2"}]),
            "{doc}"
        );
        let command = doc
            .pointer("/recovery/command")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string();
        assert!(command.contains("--from host-2") && command.contains("--confirm"), "{command}");
        // Several more looks: it stays in epoch 0 and fences nobody.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let doc = site.agent_status(1).await.unwrap_or_default();
        assert_eq!(doc["epoch"], 0, "no automatic rebuild without a vote majority: {doc}");
        assert!(!site.powered_off(0), "nobody was fenced");
        let out = std::process::Command::new(edgeplane_bin())
            .args(["recover", "--confirm", "--from", "host-2", "--config"])
            .arg(&site.hosts[1].config_path)
            .output()?;
        assert!(
            out.status.success(),
            "recover failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_writable(&site).await;
        assert_no_acked_write_lost(&writer, &site.client_urls(), .., "the standby had every acknowledged write").await?;
        let epoch = site.agent_status(1).await.and_then(|d| d.get("epoch").and_then(|e| e.as_u64()));
        assert_eq!(epoch, Some(1), "the standby rebuilt in a new epoch");
        // The old voter comes back: its data is from epoch 0, so it rejoins as the standby.
        site.start_agent(0)?;
        assert!(site.wait_full_strength(1, HANG * 2).await, "the old voter did not rejoin; logs in {}", site.root.display());
        assert_no_acked_write_lost(&writer, &site.client_urls(), .., "writes acknowledged before the loss, after the rejoin").await?;
        Ok(())
    })
}

/// Puts `n` keys `prefix/i` = `v-i` through any of `urls`.
async fn put_keys(urls: &[String], prefix: &str, n: usize) -> anyhow::Result<()> {
    let mut c = etcd_client::Client::connect(
        urls,
        Some(edgeplane_tests::sim::certs::etcd_options_for(urls)),
    )
    .await?;
    for i in 0..n {
        c.put(format!("{prefix}/{i:03}"), format!("v-{i}"), None)
            .await?;
    }
    Ok(())
}

/// How many keys under `prefix/` a linearizable read through `urls` sees.
async fn count_keys(urls: &[String], prefix: &str) -> anyhow::Result<usize> {
    let mut c = etcd_client::Client::connect(
        urls,
        Some(edgeplane_tests::sim::certs::etcd_options_for(urls)),
    )
    .await?;
    let t0 = Instant::now();
    loop {
        let res = tokio::time::timeout(
            Duration::from_secs(2),
            c.get(
                format!("{prefix}/"),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            ),
        )
        .await;
        match res {
            Ok(Ok(r)) => return Ok(r.count() as usize),
            _ if t0.elapsed() < HANG => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("reading {prefix}/ timed out"),
        }
    }
}

fn recover_cmd(
    config: &std::path::Path,
    snapshot: &std::path::Path,
) -> std::io::Result<std::process::Output> {
    std::process::Command::new(edgeplane_bin())
        .args(["recover", "--confirm", "--config"])
        .arg(config)
        .arg("--snapshot")
        .arg(snapshot)
        .output()
}

/// All three voters SIGKILLed (only the standby survives), policy manual:
/// `edgeplane recover --snapshot FILE --confirm` rebuilds the site on this
/// host from the snapshot. A corrupt or truncated file is refused before
/// anything is touched. The site holds exactly the snapshot's keys (not the
/// ones written after it, which the standby's own data had) and returns to
/// full strength once the killed hosts come back.
#[test]
fn recover_from_a_snapshot_file_refuses_a_corrupt_one_and_rebuilds_the_site() -> anyhow::Result<()>
{
    rt().block_on(async {
        let mut site = site("manual", 4).await?;
        let (voters, learners) = site.roles().await.unwrap_or_default();
        let survivor = *learners
            .first()
            .ok_or_else(|| anyhow::anyhow!("no standby"))?;
        let voter_urls: Vec<String> = voters
            .iter()
            .map(|&v| site.hosts[v].client_url.clone())
            .collect();
        put_keys(&voter_urls, "snap", 50).await?;
        let file = site.root.join("backup.etcd.zst");
        let saved = std::process::Command::new(edgeplane_bin())
            .args(["snapshot", "save", "--config"])
            .arg(&site.hosts[voters[0]].config_path)
            .arg("--out")
            .arg(&file)
            .output()?;
        assert!(
            saved.status.success(),
            "snapshot save: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        put_keys(&voter_urls, "late", 20).await?;
        // The standby has applied everything, so it holds keys the snapshot lacks.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for &v in &voters {
            site.kill_host(v);
        }
        let t0 = Instant::now();
        while site
            .agent_status(survivor)
            .await
            .and_then(|d| d.pointer("/recovery/quorum_lost").and_then(|q| q.as_bool()))
            != Some(true)
        {
            assert!(
                t0.elapsed() < HANG,
                "the survivor never reported quorum loss"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let config = site.hosts[survivor].config_path.clone();
        let etcd_pid = site.hosts[survivor].etcd_pid();

        // A flipped byte and a truncated copy are both refused, and nothing changes.
        let bytes = std::fs::read(&file)?;
        let flipped = site.root.join("flipped.etcd.zst");
        let mut b = bytes.clone();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(&flipped, &b)?;
        let truncated = site.root.join("truncated.etcd.zst");
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3])?;
        for bad in [&flipped, &truncated] {
            let out = recover_cmd(&config, bad)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "a corrupt snapshot was accepted: {}",
                bad.display()
            );
            assert!(
                stderr.contains("refusing to recover") && stderr.contains("nothing was changed"),
                "unclear refusal: {stderr}"
            );
        }
        let doc = site.agent_status(survivor).await.unwrap_or_default();
        assert_eq!(doc["epoch"], 0, "no rebuild after a refused snapshot");
        assert_eq!(
            site.hosts[survivor].etcd_pid(),
            etcd_pid,
            "the survivor's etcd was not touched"
        );
        let recovers = doc
            .pointer("/journal/recent")
            .and_then(|r| r.as_array())
            .map(|ops| ops.iter().filter(|o| o["kind"] == "recover").count())
            .unwrap_or(0);
        assert_eq!(recovers, 0, "no recovery was journalled");
        // The agent checks again: a corrupt file sent straight to its API is
        // refused while restoring, before it stops etcd.
        let resp = site.hosts[survivor]
            .own_http_client(Duration::from_secs(10))?
            .post(format!("{}/recover", site.hosts[survivor].agent_url))
            .json(&serde_json::json!({ "confirm": true, "snapshot": flipped }))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let t0 = Instant::now();
        loop {
            let doc = site.agent_status(survivor).await.unwrap_or_default();
            let failed = doc
                .pointer("/journal/recent")
                .and_then(|r| r.as_array())
                .is_some_and(|ops| {
                    ops.iter()
                        .any(|o| o["kind"] == "recover" && o["outcome"] == "failed")
                });
            if failed {
                assert_eq!(doc["epoch"], 0, "{doc}");
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "the agent did not refuse the corrupt snapshot: {doc}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            site.hosts[survivor].etcd_pid(),
            etcd_pid,
            "etcd was not stopped for a corrupt snapshot"
        );

        let out = recover_cmd(&config, &file)?;
        assert!(
            out.status.success(),
            "recover --snapshot failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_writable(&site).await;
        let here = vec![site.hosts[survivor].client_url.clone()];
        assert_eq!(
            count_keys(&here, "snap").await?,
            50,
            "every key of the snapshot is back"
        );
        assert_eq!(
            count_keys(&here, "late").await?,
            0,
            "the site is the snapshot's point in time"
        );
        assert_eq!(
            site.agent_status(survivor)
                .await
                .map(|d| d["epoch"].clone()),
            Some(1.into())
        );
        heal_killed(&mut site, &voters).await;
        assert_eq!(count_keys(&site.client_urls(), "snap").await?, 50);
        Ok(())
    })
}

/// Every datagram received on `sock`, with when it arrived, until `stop`.
fn collect_notifications(
    sock: std::os::unix::net::UnixDatagram,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, String)>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    })
}

/// The longest stretch of `[from, to]` without a `WATCHDOG=1` in `got`.
fn longest_watchdog_gap(got: &[(Instant, String)], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for (t, msg) in got {
        if *t < from || *t > to || !msg.lines().any(|l| l == "WATCHDOG=1") {
            continue;
        }
        gap = gap.max(*t - last);
        last = *t;
    }
    gap.max(to.saturating_duration_since(last))
}

/// Every agent of a site started under a fake systemd: its own
/// `NOTIFY_SOCKET` (a listener thread keeps what it sends) and
/// `WATCHDOG_USEC`.
struct Watchdogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    listeners: Vec<std::thread::JoinHandle<Vec<(Instant, String)>>>,
}

impl Watchdogs {
    /// Starts every agent of `site` with `WATCHDOG_USEC=usec` and `env`.
    fn start(site: &mut LocalSite, usec: u64, env: &[(String, String)]) -> anyhow::Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut listeners = Vec::new();
        for i in 0..site.hosts.len() {
            let path = site.root.join(format!("notify-{i}.sock"));
            let sock = std::os::unix::net::UnixDatagram::bind(&path)?;
            listeners.push(collect_notifications(sock, stop.clone()));
            let mut all = vec![
                ("NOTIFY_SOCKET".to_string(), path.display().to_string()),
                ("WATCHDOG_USEC".to_string(), usec.to_string()),
            ];
            all.extend_from_slice(env);
            site.start_agent_with_env(i, &all)?;
        }
        Ok(Watchdogs { stop, listeners })
    }

    /// Stops listening; the longest stretch of `[from, to]` in which one
    /// of `hosts` sent no `WATCHDOG=1`.
    fn longest_gap(self, hosts: &[usize], from: Instant, to: Instant) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let pings: Vec<_> = self
            .listeners
            .into_iter()
            .map(|l| l.join().unwrap_or_default())
            .collect();
        hosts
            .iter()
            .map(|&i| longest_watchdog_gap(&pings[i], from, to))
            .max()
            .unwrap_or(Duration::MAX)
    }
}

/// The longest time one agent's `/status` (its `now_ms`) stayed unchanged
/// over the documents it was shown.
#[derive(Default)]
struct Staleness {
    last: Option<(i64, Instant)>,
    longest: Duration,
}

impl Staleness {
    fn see(&mut self, doc: &serde_json::Value) {
        let now_ms = doc.get("now_ms").and_then(|v| v.as_i64()).unwrap_or(0);
        match self.last {
            Some((ms, since)) if ms == now_ms => self.longest = self.longest.max(since.elapsed()),
            _ => self.last = Some((now_ms, Instant::now())),
        }
    }
}

/// The safety machinery must not cause the outage: a fence that takes a
/// minute (a BMC slow to confirm: 55 s, inside the fence command's 60 s
/// bound) runs off the reconcile loop. Under
/// systemd (`WatchdogSec=30`) the agent keeps sending `WATCHDOG=1` at
/// least every 15 s while it fences, its `/status` keeps being refreshed
/// and shows the running fence, and the rebuild follows the fence.
#[test]
fn a_sixty_second_fence_never_starves_the_watchdog() -> anyhow::Result<()> {
    rt().block_on(async {
        // 3 hosts, 1 voter: losing the voter leaves 2 of 3 votes, the strict
        // majority an automatic rebuild (and so the fence) needs.
        let mut spec = SiteSpec::new(3, 1, edgeplane_bin());
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/slow-fence.sh\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let script = site.root.join("slow-fence.sh");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\n: > \"{root}/fence-$1.started\"\nsleep 55\nexec \"{root}/fence.sh\" \"$1\"\n",
                    root = site.root.display()
                ),
            )?;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        }
        let watchdogs = Watchdogs::start(&mut site, 30_000_000, &[])?;
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let writer = write_then_settle(&site).await?;
        let (voters, _) = site.roles().await.unwrap_or_default();
        let v = voters.first().copied().unwrap_or(0);
        let victim = site.hosts[v].name.clone();
        let survivors: Vec<usize> = (0..3).filter(|&i| i != v).collect();
        site.kill_host(v);
        let started = site.root.join(format!("fence-{victim}.started"));
        let t0 = Instant::now();
        while !started.exists() {
            assert!(
                t0.elapsed() < HANG,
                "the standby never began fencing {victim}; logs in {}",
                site.root.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fence_began = Instant::now();
        // While the fence runs: how long /status stayed unchanged, and
        // whether it showed the running fence.
        let mut stale = Staleness::default();
        let mut shown_running = false;
        while !site.powered_off(v) && fence_began.elapsed() < Duration::from_secs(90) {
            // The survivor that fences (the freshest) is the one to watch.
            let mut fencing = None;
            for &i in &survivors {
                if let Some(doc) = site.agent_status(i).await
                    && doc.pointer("/operation/kind").and_then(|k| k.as_str()) == Some("fence")
                {
                    fencing = Some(doc);
                }
            }
            if let Some(doc) = fencing {
                stale.see(&doc);
                shown_running |= doc.pointer("/operation/kind").and_then(|k| k.as_str())
                    == Some("fence");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fence_ended = Instant::now();
        let gap = watchdogs.longest_gap(&survivors, fence_began, fence_ended);
        let status_stale = stale.longest;
        eprintln!(
            "fence ran {:.1}s; longest WATCHDOG=1 gap {:.1}s; /status unchanged for at most {:.1}s",
            (fence_ended - fence_began).as_secs_f64(),
            gap.as_secs_f64(),
            status_stale.as_secs_f64()
        );
        assert!(
            fence_ended - fence_began >= Duration::from_secs(45),
            "the fence really took about a minute"
        );
        assert!(
            gap <= Duration::from_secs(15),
            "WATCHDOG=1 kept coming at least every 15 s during the fence (longest gap {gap:?}); logs in {}",
            site.root.display()
        );
        assert!(
            status_stale <= Duration::from_secs(15),
            "/status kept being refreshed during the fence (unchanged for {status_stale:?})"
        );
        assert!(shown_running, "/status showed the running fence");
        wait_writable(&site).await;
        assert_no_acked_write_lost(&writer, &site.client_urls(), .., "the standby had every acknowledged write").await?;
        let mut epochs = Vec::new();
        for &i in &survivors {
            epochs.push(site.agent_status(i).await.and_then(|d| d.get("epoch").and_then(|e| e.as_u64())));
        }
        assert!(epochs.contains(&Some(1)), "a survivor rebuilt in a new epoch after the fence: {epochs:?}");
        Ok(())
    })
}

/// The rebuild is a long operation too: restoring a large db (here made
/// slow by an `etcdctl` that takes 30 s for `snapshot restore`) runs off the
/// reconcile loop like the fence. With a short watchdog (`WatchdogSec=10`)
/// the rebuilding agent keeps sending `WATCHDOG=1` at least every 10 s,
/// `/status` shows the running rebuild and keeps being refreshed, no other
/// survivor rebuilds meanwhile, and the rebuilt site takes writes with every
/// acknowledged one kept.
#[test]
fn a_slow_rebuild_never_starves_the_watchdog() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(5, 3, edgeplane_bin());
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/fence.sh\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        let slow = site.root.join("slow-etcdctl.sh");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(
                &slow,
                format!(
                    "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = restore ]; then : > \"{root}/restore.started\"; sleep 30; fi\ndone\nexec \"{real}\" \"$@\"\n",
                    root = site.root.display(),
                    real = std::env::var("EDGEPLANE_ETCDCTL").unwrap_or_else(|_| "/usr/bin/etcdctl".into())
                ),
            )?;
            std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755))?;
        }
        let etcdctl = [("EDGEPLANE_ETCDCTL".to_string(), slow.display().to_string())];
        let watchdogs = Watchdogs::start(&mut site, 10_000_000, &etcdctl)?;
        assert!(
            site.wait_full_strength(1, 2 * HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let writer = write_then_settle(&site).await?;
        // Two of three voters lost: three survivors, two of them with data
        // (a voter and the standby), so a second rebuild would be possible.
        let victims = lose_quorum(&mut site).await;
        let survivors: Vec<usize> = (0..5).filter(|i| !victims.contains(i)).collect();
        let started = site.root.join("restore.started");
        let t0 = Instant::now();
        while !started.exists() {
            assert!(
                t0.elapsed() < HANG,
                "no survivor began rebuilding; logs in {}",
                site.root.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rebuild_began = Instant::now();
        let mut stale = Staleness::default();
        let mut shown_running = false;
        let mut rebuilt = false;
        while !rebuilt && rebuild_began.elapsed() < Duration::from_secs(90) {
            for &i in &survivors {
                let Some(doc) = site.agent_status(i).await else {
                    continue;
                };
                rebuilt |= doc.get("epoch").and_then(|e| e.as_u64()) == Some(1)
                    && doc.pointer("/operation/kind").is_none()
                    && doc.pointer("/etcd/running").and_then(|r| r.as_bool()) == Some(true);
                if doc.pointer("/operation/kind").and_then(|k| k.as_str()) == Some("rebuild") {
                    shown_running = true;
                    stale.see(&doc);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rebuild_ended = Instant::now();
        let gap = watchdogs.longest_gap(&survivors, rebuild_began, rebuild_ended);
        let status_stale = stale.longest;
        eprintln!(
            "rebuild ran {:.1}s; longest WATCHDOG=1 gap {:.1}s; /status unchanged for at most {:.1}s",
            (rebuild_ended - rebuild_began).as_secs_f64(),
            gap.as_secs_f64(),
            status_stale.as_secs_f64()
        );
        assert!(rebuilt, "no survivor rebuilt in epoch 1; logs in {}", site.root.display());
        assert!(
            rebuild_ended - rebuild_began >= Duration::from_secs(25),
            "the rebuild really waited for the slow restore"
        );
        assert!(
            gap <= Duration::from_secs(10),
            "WATCHDOG=1 kept coming within WatchdogSec=10 during the rebuild (longest gap {gap:?}); logs in {}",
            site.root.display()
        );
        assert!(
            status_stale <= Duration::from_secs(10),
            "/status kept being refreshed during the rebuild (unchanged for {status_stale:?})"
        );
        assert!(shown_running, "/status showed the running rebuild");
        // One rebuild only: while it runs, this survivor's etcd is down, and
        // it must not hand its vote to the other survivor (who would then
        // rebuild a second cluster in epoch 2).
        let mut rebuilds = 0;
        let mut epochs = Vec::new();
        for &i in &survivors {
            if let Some(doc) = site.agent_status(i).await {
                epochs.push(doc.get("epoch").and_then(|e| e.as_u64()).unwrap_or(0));
                rebuilds += doc
                    .pointer("/journal/recent")
                    .and_then(|r| r.as_array())
                    .map(|ops| ops.iter().filter(|o| o["kind"] == "recover").count())
                    .unwrap_or(0);
            }
        }
        assert!(
            rebuilds == 1 && epochs.iter().all(|&e| e <= 1),
            "exactly one survivor rebuilds, in epoch 1: {rebuilds} rebuilds, epochs {epochs:?}; logs in {}",
            site.root.display()
        );
        wait_writable(&site).await;
        assert_no_acked_write_lost(&writer, &site.client_urls(), .., "the rebuild kept every acknowledged write").await?;
        Ok(())
    })
}
