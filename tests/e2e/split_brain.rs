//! Split brain: the sequences of the recovery-safety issue (§1, §2) against
//! real etcd and agents. A minority must never rebuild the cluster, and a
//! healthy majority must never throw its data away because a peer says so.
//!
//! §1 was reproduced on the code before the fix: host-3, cut off alone with
//! a fence that fails, refused to rebuild; then its agent was SIGKILLed and
//! started again while still cut off. It had forgotten the membership (kept
//! in memory only), fenced nobody, rebuilt a one-member cluster in epoch 1,
//! and when the link healed the majority killed its healthy etcd, set its
//! data aside and joined epoch 1: every write acknowledged by the majority
//! during the cut was lost.

use std::time::Duration;

use edgeplane_tests::{HANG, LocalSite, SiteSpec, Writer, edgeplane_bin, root_or_skip, rt};

/// Recover operations an agent journalled with `outcome`.
fn recovers(doc: &serde_json::Value, outcome: &str) -> usize {
    edgeplane::agent::status::recent_ops(doc)
        .iter()
        .filter(|o| o["kind"] == "recover" && o["outcome"] == outcome)
        .count()
}

#[test]
fn minority_agent_restarted_while_cut_off_never_rebuilds() -> anyhow::Result<()> {
    if !root_or_skip("network namespaces") {
        return Ok(());
    }
    rt().block_on(async {
        // 3 voters + 1 standby; host-3 (a voter) in its own namespace.
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.isolated_host = Some(2);
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/bin/false\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let (voters, _) = site.roles().await.unwrap_or_default();
        assert!(voters.contains(&2), "host-3 is a voter: {voters:?}");
        let mut writer = Writer::start(site.client_urls(), "sb");
        tokio::time::sleep(Duration::from_secs(1)).await;

        site.set_link(false)?;
        // Detection, the quorum-loss window and one failed fence attempt.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let before_restart = writer.acked_count();
        // The watchdog kills the minority's agent; systemd starts it again.
        site.kill_agent(2);
        site.start_agent(2)?;
        // Long enough for the restarted agent to see quorum lost for the
        // window and be the freshest in two looks.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let during_cut = writer.acked_count() - before_restart;
        assert!(
            during_cut > 20,
            "the majority keeps accepting writes while host-3 is cut off ({during_cut})"
        );
        // Its API is out of reach from here while it is cut off: its log says.
        let log = std::fs::read_to_string(site.hosts[2].dir.join("agent.log"))?;
        // It has 1 vote of 4 before and after its restart: it never even
        // tries to fence (before votes, only the failing fence stopped it).
        assert!(
            log.contains("no strict majority of votes: 1 of 4"),
            "the cut-off minority waits for a majority of votes; logs in {}",
            site.root.display()
        );
        assert!(
            !log.contains("the fence command did not confirm"),
            "the cut-off minority never tries to fence; logs in {}",
            site.root.display()
        );
        assert!(
            !log.contains("rebuilding the cluster"),
            "the cut-off minority must never rebuild; logs in {}",
            site.root.display()
        );
        site.set_link(true)?;

        assert!(
            site.wait_full_strength(1, HANG * 2).await,
            "the site did not heal; logs in {}",
            site.root.display()
        );
        writer.stop().await;
        assert!(writer.acked_count() > 0);
        assert_eq!(
            writer.lost(&site.client_urls()).await?,
            0,
            "no write acknowledged by the majority is lost; logs in {}",
            site.root.display()
        );
        for i in 0..4 {
            let doc = site
                .agent_status(i)
                .await
                .ok_or_else(|| anyhow::anyhow!("no status from host {i}"))?;
            assert_eq!(
                doc.get("epoch").and_then(|e| e.as_u64()),
                Some(0),
                "host {i} never left epoch 0"
            );
            assert_eq!(recovers(&doc, "done"), 0, "host {i} never rebuilt");
        }
        Ok(())
    })
}

/// A host with a valid certificate of this site (stolen, or just buggy)
/// serves `/status` claiming epoch 999. Before the fix every agent that saw
/// it killed its healthy etcd and set its data aside.
async fn serve_claim(
    site: &LocalSite,
    host: usize,
    doc: serde_json::Value,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = &site.hosts[host];
    let dir = edgeplane::certs::host_dir(&site.root.join("tls"), &h.name);
    let tls = edgeplane::tls::SiteTls::from_files(
        &dir.join("ca.crt"),
        &dir.join("host.crt"),
        &dir.join("host.key"),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config()?);
    let addr = h
        .agent_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let body = doc.to_string();
    Ok(tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    }))
}

#[test]
fn a_peer_claiming_a_newer_epoch_never_makes_a_healthy_majority_drop_its_data() -> anyhow::Result<()>
{
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
        let (voters, learners) = site.roles().await.unwrap_or_default();
        let thief = learners.first().copied().unwrap_or(3);
        let pids: Vec<Option<i32>> = voters.iter().map(|&v| site.hosts[v].etcd_pid()).collect();
        let mut writer = Writer::start(site.client_urls(), "claim");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The standby's host is taken over: its agent is gone, a stranger
        // with its certificate answers on its address.
        site.kill_host(thief);
        let server = serve_claim(
            &site,
            thief,
            serde_json::json!({ "epoch": 999, "role": "voter", "quorum": "ok",
                                "recovery": { "freshest": site.hosts[thief].name } }),
        )
        .await?;
        let before = writer.acked_count();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let during = writer.acked_count() - before;
        let now: Vec<Option<i32>> = voters.iter().map(|&v| site.hosts[v].etcd_pid()).collect();
        assert_eq!(
            pids,
            now,
            "no voter's etcd was stopped on a peer's word; logs in {}",
            site.root.display()
        );
        assert!(during > 20, "the site kept accepting writes ({during})");
        // Every voter's agent raises the alarm, names the claimant, and
        // counts it in /metrics.
        for &v in &voters {
            let doc = site.agent_status(v).await.unwrap_or_default();
            assert_eq!(doc["epoch"], 0, "host {v} stays in epoch 0");
            let others = doc
                .pointer("/split_brain/others")
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                others,
                serde_json::json!([site.hosts[thief].name]),
                "host {v} raises the split-brain alarm: {doc}"
            );
        }
        server.abort();
        writer.stop().await;
        assert!(writer.acked_count() > 0);
        assert_eq!(
            writer.lost(&site.client_urls()).await?,
            0,
            "no acknowledged write lost"
        );
        // The alarm clears once nobody claims; it stays in the journal.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for &v in &voters {
            let doc = site.agent_status(v).await.unwrap_or_default();
            assert!(
                doc.get("split_brain").is_none(),
                "host {v}'s alarm cleared: {doc}"
            );
            assert!(
                edgeplane::agent::status::recent_ops(&doc)
                    .iter()
                    .any(|o| o["kind"] == "split_brain" && o["outcome"] == "done"),
                "host {v} journalled the alarm: {doc}"
            );
        }
        Ok(())
    })
}

/// Issue #14 §3: a fence that works across a LAN cut (the loopback
/// `fence.sh` powers a host off by its pids, as a BMC on another network
/// would). host-3, a voter, is cut off from the LAN: it sees nobody, so
/// nobody disagrees, and before the fix it powered off host-1 and host-2
/// and rebuilt epoch 1 from its own copy; every write the healthy majority
/// acknowledged during the cut was lost. With votes it has 1 of 4 (a
/// strict majority is 3): it waits, and says why. And it self-fences: the
/// 3 nodes it cannot see may rebuild, so it stops its etcd within
/// `recovery.self_fence_after` and starts it again once the link heals.
#[test]
fn a_host_cut_off_with_a_working_fence_never_powers_off_the_majority() -> anyhow::Result<()> {
    if !root_or_skip("network namespaces") {
        return Ok(());
    }
    rt().block_on(async {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.isolated_host = Some(2);
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/fence.sh\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let (voters, _) = site.roles().await.unwrap_or_default();
        assert!(voters.contains(&2), "host-3 is a voter: {voters:?}");
        let mut writer = Writer::start(site.client_urls(), "cut");
        tokio::time::sleep(Duration::from_secs(1)).await;

        let cut = std::time::Instant::now();
        site.set_link(false)?;
        // Self-fence: host-3 sees 1 agent of 4; the 3 it cannot see are a
        // strict majority that may fence it and rebuild, so it stops its
        // etcd after recovery.self_fence_after (1 s: half the 2 s window).
        let mut self_fenced_after = None;
        // Detection, the quorum-loss window, two looks, the fences and a
        // rebuild all fit in this (before the fix host-3 had rebuilt after
        // about 8 s).
        while cut.elapsed() < Duration::from_secs(20) {
            if self_fenced_after.is_none() && site.hosts[2].etcd_pid().is_none() {
                self_fenced_after = Some(cut.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stayed_fenced = site.hosts[2].etcd_pid().is_none();
        let healed = std::time::Instant::now();
        let off: Vec<usize> = (0..4).filter(|&i| site.powered_off(i)).collect();
        let log = std::fs::read_to_string(site.hosts[2].dir.join("agent.log"))?;
        let rebuilt = log.contains("rebuilding the cluster");
        site.set_link(true)?;
        // Power on whatever a fence powered off, so that the loss can be
        // counted on the healed site (before the fix: in epoch 1).
        for &i in &off {
            site.power_on(i)?;
        }
        let healed_ok = site.wait_full_strength(1, HANG * 2).await;
        writer.stop().await;
        let during_cut = writer.sent_and_acked_within(cut..healed);
        let lost = writer.lost(&site.client_urls()).await.unwrap_or(usize::MAX);
        eprintln!(
            "cut-off host with a working fence: powered off {off:?}, rebuilt {rebuilt}, \
             {during_cut} writes acknowledged during the cut, {lost} of {} acknowledged writes lost; \
             host-3 self-fenced (etcd stopped) {self_fenced_after:?} after the cut",
            writer.acked_count()
        );
        assert!(
            off.is_empty() && !rebuilt,
            "the cut-off host powered off {off:?} (rebuilt: {rebuilt}); {lost} of {} acknowledged writes lost; logs in {}",
            writer.acked_count(),
            site.root.display()
        );
        assert!(
            log.contains("no strict majority of votes: 1 of 4"),
            "the cut-off host says why it waits; logs in {}",
            site.root.display()
        );
        assert!(
            log.contains("and run the command: edgeplane recover --config"),
            "the cut-off host prints the operator's command; logs in {}",
            site.root.display()
        );
        // Bounded by agent-failure detection plus self_fence_after; the
        // bound here is only a hang guard.
        assert!(
            self_fenced_after.is_some_and(|t| t < Duration::from_secs(15)) && stayed_fenced,
            "host-3 stops its etcd while the unseen majority may rebuild ({self_fenced_after:?}, still stopped: {stayed_fenced}); logs in {}",
            site.root.display()
        );
        assert!(log.contains("Self-fence: only 1 of 4"), "logs in {}", site.root.display());
        assert!(healed_ok, "the site did not heal; logs in {}", site.root.display());
        let log = std::fs::read_to_string(site.hosts[2].dir.join("agent.log"))?;
        assert!(
            log.contains("Self-fence lifted"),
            "host-3 serves again once it sees a majority; logs in {}",
            site.root.display()
        );
        assert!(
            during_cut > 20,
            "the majority kept accepting writes during the cut ({during_cut})"
        );
        assert_eq!(lost, 0, "no acknowledged write lost; logs in {}", site.root.display());
        for i in 0..4 {
            let doc = site
                .agent_status(i)
                .await
                .ok_or_else(|| anyhow::anyhow!("no status from host {i}"))?;
            assert_eq!(doc.get("epoch").and_then(|e| e.as_u64()), Some(0), "host {i} stays in epoch 0");
        }
        Ok(())
    })
}

/// Self-fence must not take down a quorate cluster because its peers'
/// *agents* are silent (an expired agent certificate, a firewall on the
/// agent port, agents in a crash loop) while their etcd members are healthy:
/// a node whose etcd answers is seen. Found by review: the first version
/// counted agents only, so host-1 stopped its healthy etcd.
#[test]
fn silent_peer_agents_with_healthy_etcd_never_trigger_a_self_fence() -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    rt().block_on(async {
        let mut spec = SiteSpec::new(3, 3, edgeplane_bin());
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/bin/false\", \"{host}\"]\nquorum_loss_window = \"2s\"\nself_fence_after = \"1s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..3 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(0, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let etcd_before = site.hosts[0].etcd_pid();
        let mut writer = Writer::start(site.client_urls(), "silent");
        // The other two agents stop answering; their etcd keeps running.
        let agents: Vec<i32> = (1..3).filter_map(|i| site.hosts[i].agent_pid()).collect();
        anyhow::ensure!(agents.len() == 2, "the agents of host-2 and host-3 run");
        for &pid in &agents {
            edgeplane_tests::sim::signal(pid, Signal::SIGSTOP);
        }
        tokio::time::sleep(Duration::from_secs(8)).await;
        let etcd_during = site.hosts[0].etcd_pid();
        for &pid in &agents {
            edgeplane_tests::sim::signal(pid, Signal::SIGCONT);
        }
        writer.stop().await;
        assert!(etcd_before.is_some(), "host-1's etcd ran");
        assert_eq!(
            etcd_during, etcd_before,
            "host-1 stopped its healthy etcd because the other agents were silent; logs in {}",
            site.root.display()
        );
        let doc = site.agent_status(0).await.unwrap_or_default();
        let self_fences = edgeplane::agent::status::recent_ops(&doc)
            .iter()
            .filter(|o| o["kind"] == "self_fence")
            .count();
        assert_eq!(self_fences, 0, "no self-fence journalled: {doc}");
        assert!(writer.acked_count() > 0, "writes went on");
        Ok(())
    })
}

/// Issue #14 §3, the witness: a 2-host site (host-1 the lone voter,
/// host-2 its standby) plus a witness, policy `fenced` with a fence that
/// works across the cut; host-1, in its own namespace, is cut off from
/// host-2 and the witness while a writer inside its namespace keeps
/// writing to it (see `edgeplane::sim::witness_cut`, which
/// `edgeplane bench self-fence` runs too). host-2 and the witness are 2 of
/// 3 votes: host-2 fences host-1 and rebuilds epoch 1 from its standby
/// copy. host-1 sees 1 of 3 and stops serving (self-fence) before that.
/// What is lost is bounded: only writes host-1 acknowledged between the cut
/// (less the standby's replication lag) and its self-fence.
///
/// Before (d1944b7, no witness support): every agent refused the config
/// (`role` is not a key of `[[nodes]]`, exit 78), so the site never
/// started; without the witness node the 2-host site only waits for a
/// human (1 of 2 votes). With the first cut of the witness, the check
/// before the cut failed: host-2 published no votes while quorum was ok.
#[test]
fn two_hosts_and_a_witness_rebuild_on_the_witness_side_and_lose_at_most_the_self_fence_window()
-> anyhow::Result<()> {
    if !root_or_skip("network namespaces") {
        return Ok(());
    }
    rt().block_on(async {
        let (r, site) = edgeplane::sim::witness_cut::run(edgeplane_bin(), &|_| {}).await?;
        eprintln!("2 hosts + witness, host-1 (voter) cut off: {r:?}");
        let logs = site.root.display().to_string();
        let log1 = std::fs::read_to_string(site.hosts[0].dir.join("agent.log"))?;
        let log2 = std::fs::read_to_string(site.hosts[1].dir.join("agent.log"))?;
        // Before the cut (and after the heal) host-2 shows the votes: the
        // witness's among them, 2 needed of 3.
        let h2 = site.agent_status(1).await.unwrap_or_default();
        assert_eq!(
            h2.pointer("/recovery/votes_needed"),
            Some(&serde_json::json!(2)),
            "{h2}"
        );
        assert!(
            h2.pointer("/recovery/votes")
                .and_then(|v| v.as_array())
                .is_some_and(|v| v.iter().any(|x| x["voter"] == "witness-1")),
            "host-2 shows the witness's vote: {h2}"
        );
        let w = site.witness_status(0).await.unwrap_or_default();
        assert_eq!(w["role"], "witness", "{w}");

        assert!(
            r.other_side_serving_s.is_some(),
            "host-2 (with the witness: 2 of 3 votes) rebuilt epoch 1; logs in {logs}"
        );
        assert!(log2.contains("rebuilding the cluster"), "logs in {logs}");
        assert!(
            r.cut_off_voter_fenced,
            "host-2 fenced host-1 before rebuilding; logs in {logs}"
        );
        assert!(
            log1.contains("Self-fence: only 1 of 3"),
            "host-1 stopped serving: it saw 1 of 3 nodes; logs in {logs}"
        );
        assert!(
            !log1.contains("rebuilding the cluster"),
            "host-1 never rebuilt"
        );
        assert!(
            r.self_fence_s.is_some_and(|t| t < 15.0) && r.self_fence_s < r.other_side_serving_s,
            "host-1 stopped before host-2 served epoch 1; logs in {logs}"
        );
        assert!(r.healed, "the site did not heal; logs in {logs}");
        assert!(
            r.acked_by_cut_off_voter_after_cut > 0,
            "host-1 acknowledged writes between the cut and its self-fence: the bound is exercised"
        );
        assert!(r.acked_in_new_epoch > 0, "host-2 took writes in epoch 1");
        assert_eq!(
            r.lost_outside_bound, 0,
            "a write acknowledged outside cut..self-fence was lost; logs in {logs}"
        );
        assert!(r.acked_writes_lost <= r.loss_bound_writes);
        // Lost from the site, not gone: host-1 took a snapshot of its data
        // before setting it aside, and every lost write is in it (before:
        // no snapshot, the data only moved to etcd.abandoned-*).
        assert!(
            r.kept_snapshot.is_some(),
            "host-1 kept a snapshot of the data it set aside; logs in {logs}"
        );
        assert_eq!(
            r.lost_writes_in_kept_snapshot, r.acked_writes_lost,
            "every lost write is in host-1's kept snapshot {:?}; logs in {logs}",
            r.kept_snapshot
        );
        // SIGHUP reloads a witness's config as on any host (before, the
        // witness had no handler, and SIGHUP's default action ended it:
        // `systemctl reload edgeplane` stopped the witness).
        let mut site = site;
        let pid = site.witnesses[0]
            .agent_pid()
            .ok_or_else(|| anyhow::anyhow!("the witness is not running; logs in {logs}"))?;
        edgeplane_tests::sim::signal(pid, nix::sys::signal::Signal::SIGHUP);
        let t0 = std::time::Instant::now();
        loop {
            let w = site.witness_status(0).await;
            if w.as_ref()
                .is_some_and(|w| w.pointer("/reload/at_ms").is_some_and(|t| t.is_i64()))
            {
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "the witness did not record a reload after SIGHUP: {w:?}; logs in {logs}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(
            site.witnesses[0].agent_pid().is_some(),
            "the witness ended on SIGHUP; logs in {logs}"
        );
        Ok(())
    })
}

/// Found by the long campaign (seed 2026120401, fault 107; issue 16): a
/// quorum loss whose lost voters come back while the survivors fence.
///
/// 5 hosts: voters A, B, C, the standby S, the spare P. P's agent dies and
/// B and C lose power together: the survivors (A, S) hold 2 of 5 votes and
/// rightly wait. Then P's agent returns: 3 of 5 votes, so S decides a
/// rebuild and starts fencing B and C, one at a time (the fence here takes
/// 4 s, as a BMC does). B and C power on meanwhile, the old voters' etcd
/// slow to serve. B is fenced; C's agent answers now and names S the
/// freshest, and no leader shows, so on the old rule (an answering voter
/// has agreed) S rebuilt with A and C, two of the three old voters,
/// unfenced. Whether they then elect a leader of the old cluster before
/// their agents join the new epoch is a race (in the campaign they did; in
/// this test's first runs on the old code, once in three); the journal
/// check below is not: on the old code it failed ("host-4 rebuilt with old
/// voters host-3, host-2 unfenced (fenced host-1)"). Agreeing is not
/// stopping: the old voters left unfenced must be a minority of the old
/// voters.
#[test]
fn lost_voters_that_return_during_the_fence_never_leave_two_clusters() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(5, 3, edgeplane_bin());
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{root}/fence-slow.sh\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        let slow = site.root.join("fence-slow.sh");
        std::fs::write(
            &slow,
            format!("#!/bin/sh\nsleep 4\nexec {}/fence.sh \"$1\"\n", site.root.display()),
        )?;
        std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        for i in 0..5 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let (voters, learners) = site.roles().await.unwrap_or_default();
        let spare = (0..5)
            .find(|i| !voters.contains(i) && !learners.contains(i))
            .ok_or_else(|| anyhow::anyhow!("no spare: {voters:?} {learners:?}"))?;
        let (a, b, c) = (voters[0], voters[1], voters[2]);
        // The old voters' etcd is slow to serve (a disk or a machine under
        // load: in the campaign the old cluster took 8 s to elect): each
        // etcd of A, B and C is stopped as soon as it runs, until a survivor
        // has started rebuilding (or 30 s). Their agents answer and vote
        // meanwhile, A's data does not compete with the standby's (so the
        // standby, no voter, is the one that rebuilds), and no leader shows
        // when the rebuilder looks again after fencing B.
        let mut stopped: Vec<i32> = Vec::new();
        let stop_etcd = |site: &LocalSite, hosts: &[usize], stopped: &mut Vec<i32>| {
            for &h in hosts {
                if let Some(pid) = site.hosts[h].etcd_pid().filter(|p| !stopped.contains(p)) {
                    edgeplane::sim::signal(pid, nix::sys::signal::Signal::SIGSTOP);
                    stopped.push(pid);
                }
            }
        };
        let mut writer = Writer::start(site.client_urls(), "returning");
        tokio::time::sleep(Duration::from_secs(1)).await;

        site.kill_agent(spare);
        site.kill_host(b);
        site.kill_host(c);
        // Detection, the 2 s window and the self-fence of the lone voter.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let epoch = |d: &serde_json::Value| d.get("epoch").and_then(|e| e.as_u64());
        for i in (0..5).filter(|i| ![spare, b, c].contains(i)) {
            let doc = site.agent_status(i).await;
            assert_eq!(
                doc.as_ref().and_then(epoch),
                Some(0),
                "2 of 5 votes: nobody rebuilds yet; logs in {}",
                site.root.display()
            );
        }

        // The spare returns: 3 of 5 votes. Once a survivor fences, the lost
        // voters power on.
        let healed = std::time::Instant::now();
        site.start_agent(spare)?;
        let mut fencing = false;
        while !fencing && healed.elapsed() < Duration::from_secs(15) {
            // A lifts its self-fence as the spare returns.
            stop_etcd(&site, &[a], &mut stopped);
            for i in 0..5 {
                if let Some(d) = site.agent_status(i).await {
                    fencing |= d
                        .pointer("/recovery/state")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| s.starts_with("fencing"));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            fencing,
            "3 of 5 votes: a survivor fences the lost voters; logs in {}",
            site.root.display()
        );
        site.start_agent(b)?;
        site.start_agent(c)?;
        let back = std::time::Instant::now();
        let mut resume_at: Option<std::time::Instant> = None;
        let urls = site.client_urls();
        let mut split = Vec::new();
        let mut last_look = std::time::Instant::now() - Duration::from_secs(1);
        while back.elapsed() < Duration::from_secs(60) {
            let now = std::time::Instant::now();
            match resume_at {
                Some(t) if now >= t => {
                    for pid in stopped.drain(..) {
                        edgeplane::sim::signal(pid, nix::sys::signal::Signal::SIGCONT);
                    }
                }
                Some(_) => {}
                None => {
                    stop_etcd(&site, &[a, b, c], &mut stopped);
                    if back.elapsed() > Duration::from_secs(30) {
                        resume_at = Some(now);
                    } else if now.duration_since(last_look) >= Duration::from_millis(500) {
                        last_look = now;
                        for i in 0..5 {
                            let rebuilding = site.agent_status(i).await.is_some_and(|d| {
                                d.pointer("/recovery/state")
                                    .and_then(|s| s.as_str())
                                    .is_some_and(|s| s.starts_with("rebuilding"))
                            });
                            if rebuilding {
                                resume_at = Some(now + Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
            // Two clusters with leaders at the same moment is the split
            // brain: a member that says it leads, in each (a follower of a
            // paused-and-resumed member names a stale leader for a moment).
            let mut leaders = std::collections::HashSet::new();
            let mut seen = Vec::new();
            for (i, u) in urls.iter().enumerate() {
                if let Some(st) = crate::chaos::status(u).await {
                    if st.is_leader() {
                        leaders.insert(st.cluster);
                    }
                    seen.push((i, st));
                }
            }
            if leaders.len() > 1 && split.len() < 5 {
                split.push(format!(
                    "{:.1} s after the spare returned: {seen:?}",
                    healed.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for pid in stopped.drain(..) {
            edgeplane::sim::signal(pid, nix::sys::signal::Signal::SIGCONT);
        }
        // Whatever a fence powered off comes back, as an operator would.
        for i in 0..5 {
            if site.powered_off(i) {
                site.power_on(i)?;
            }
        }
        let whole = site.wait_full_strength(1, HANG * 2).await;
        // The rule itself, from the journals: a rebuild leaves fewer than a
        // quorum of the old voters unfenced (whether the old cluster then
        // managed to elect before its agents joined the new epoch is a race;
        // this is not).
        let mut unsafe_rebuilds = Vec::new();
        for i in 0..5 {
            let doc = site.agent_status(i).await.unwrap_or_default();
            let ops = edgeplane::agent::status::recent_ops(&doc);
            let done = |kind: &str| {
                ops.iter()
                    .filter(|o| o["kind"] == kind && o["outcome"] == "done")
                    .filter_map(|o| o["target"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            };
            if done("recover").is_empty() {
                continue;
            }
            let fenced = done("fence");
            let unfenced: Vec<&str> = voters
                .iter()
                .map(|&v| site.hosts[v].name.as_str())
                .filter(|v| *v != site.hosts[i].name && !fenced.iter().any(|f| f == v))
                .collect();
            if unfenced.len() >= 2 {
                unsafe_rebuilds.push(format!(
                    "{} rebuilt with old voters {unfenced:?} unfenced (fenced {fenced:?})",
                    site.hosts[i].name
                ));
            }
        }
        writer.stop().await;
        let after_heal = writer.sent_and_acked_within(healed..std::time::Instant::now());
        let lost = writer.lost(&site.client_urls()).await.unwrap_or(usize::MAX);
        eprintln!(
            "returning voters: rebuilds with the old quorum unfenced {unsafe_rebuilds:?}; split {split:?}; {after_heal} writes acknowledged after the spare returned, \
             {lost} of {} lost; whole again: {whole}",
            writer.acked_count()
        );
        assert!(
            unsafe_rebuilds.is_empty(),
            "a rebuild left a quorum of the old cluster unfenced: {unsafe_rebuilds:?}; logs in {}",
            site.root.display()
        );
        assert!(
            split.is_empty(),
            "two clusters with leaders at once: {split:#?}; logs in {}",
            site.root.display()
        );
        assert!(whole, "the site is whole again; logs in {}", site.root.display());
        assert!(after_heal > 0, "writes were acknowledged after the heal ({after_heal})");
        assert_eq!(lost, 0, "no acknowledged write lost; logs in {}", site.root.display());
        Ok(())
    })
}
