//! Defragmentation under a write load: the agent defragments followers one at
//! a time and the leader only after moving leadership away; no write fails
//! because of it, and the write latency p99 during the operation is printed.

use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, Writer, edgeplane_bin, rt, sim};
use etcd_client::{Client, CompactionOptions};

/// Defrag operations recorded as done in every agent's journal.
async fn defrags_done(site: &LocalSite) -> Vec<String> {
    let mut hosts = Vec::new();
    for i in 0..site.hosts.len() {
        if let Some(doc) = site.agent_status(i).await
            && let Some(ops) = doc.pointer("/journal/recent").and_then(|r| r.as_array())
        {
            for op in ops {
                if op.get("kind").and_then(|k| k.as_str()) == Some("defrag")
                    && op.get("outcome").and_then(|o| o.as_str()) == Some("done")
                    && let Some(t) = op.get("target").and_then(|t| t.as_str())
                {
                    hosts.push(t.to_string());
                }
            }
        }
    }
    hosts
}

#[test]
fn defrag_of_every_voter_including_the_former_leader_never_fails_a_write() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.extra_toml
            .push_str("\n[defrag]\nfree_ratio = 0.3\nmin_db_bytes = \"1MiB\"\ncheck_interval = \"1s\"\n");
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        let t0 = Instant::now();
        while !site.full_strength(1).await {
            assert!(t0.elapsed() < HANG, "site did not bootstrap");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (voters, _) = site.roles().await.unwrap_or_default();
        let voter_urls: Vec<String> = voters.iter().map(|&v| site.hosts[v].client_url.clone()).collect();
        let leader_before = site.leader_host().await;

        // Make free pages: write ~8 MiB, delete it, compact.
        let mut c = Client::connect(voter_urls.clone(), Some(sim::certs::etcd_options_for(&voter_urls))).await?;
        let blob = "x".repeat(32 << 10);
        for i in 0..256 {
            c.put(format!("bulk/{i:04}"), blob.as_str(), None).await?;
        }
        c.delete("bulk/", Some(etcd_client::DeleteOptions::new().with_prefix())).await?;
        let rev = c.get("bulk/0000", None).await?.header().map(|h| h.revision()).unwrap_or(0);
        c.compact(rev, Some(CompactionOptions::new().with_physical())).await?;

        // A member being defragmented answers late, not never: a put fails only
        // if it is not acknowledged within 10 s.
        let mut writer = Writer::start_with_timeout(voter_urls.clone(), "d", Duration::from_secs(10));
        let t0 = Instant::now();
        loop {
            let done = defrags_done(&site).await;
            let all = voters.iter().all(|&v| done.contains(&site.hosts[v].name));
            if all {
                break;
            }
            assert!(t0.elapsed() < HANG * 2, "not every voter was defragmented: {done:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        writer.stop().await;
        let failed = writer.failed.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "defrag of {} voters under load: {} writes acknowledged, {failed} failed, latency p50 {:?} p99 {:?}",
            voters.len(),
            writer.acked_count(),
            writer.latency_percentile(50.0),
            writer.latency_percentile(99.0)
        );
        assert_eq!(failed, 0, "no write failed because of a defrag");
        assert_eq!(writer.lost(&voter_urls).await?, 0);
        if let Some(l) = leader_before {
            assert_ne!(site.leader_host().await, None);
            eprintln!("leader before: {}, after: {:?}", site.hosts[l].name, site.leader_host().await.map(|i| site.hosts[i].name.clone()));
        }
        Ok(())
    })
}
