//! A minority that merely lost its network must never rewrite the cluster:
//! one voter of three is cut off in its own network namespace, with policy
//! `fenced` and a fence command that fails (it cannot power off a healthy
//! majority). It detects quorum loss from its side and never rebuilds: it
//! has 1 vote of 3, not the strict majority an automatic rebuild needs, so
//! it does not even try to fence (before votes it tried, and only the
//! failing fence stopped it); the majority keeps serving; after the link
//! heals the cut-off host rejoins and the site is back to three voters, one
//! epoch.

use std::time::{Duration, Instant};

use edgeplane_tests::{
    HANG, LocalSite, SiteSpec, Writer, assert_no_acked_write_lost, edgeplane_bin, root_or_skip, rt,
};

#[test]
fn partitioned_minority_with_failing_fence_never_rebuilds() -> anyhow::Result<()> {
    if !root_or_skip("partitioned_minority_with_failing_fence_never_rebuilds: network namespaces") {
        return Ok(());
    }
    rt().block_on(async {
        let mut spec = SiteSpec::new(3, 3, edgeplane_bin());
        spec.isolated_host = Some(2);
        spec.extra_toml.push_str(
            "\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/bin/false\", \"{host}\"]\nquorum_loss_window = \"2s\"\n",
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..3 {
            site.start_agent(i)?;
        }
        assert!(site.wait_full_strength(0, HANG).await, "site did not bootstrap; logs in {}", site.root.display());
        let mut writer = Writer::start(site.client_urls(), "p");
        tokio::time::sleep(Duration::from_secs(1)).await;

        site.set_link(false)?;
        let cut = Instant::now();
        let before = writer.acked_count();
        // Longer than the detection window, the quorum-loss window and a fence attempt.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(writer.acked_count() > before + 20, "the majority keeps accepting writes");
        let healed = Instant::now();
        site.set_link(true)?;

        // Back to three voters, all in epoch 0: nobody rebuilt.
        assert!(site.wait_full_strength(0, HANG * 2).await, "the site did not heal; logs in {}", site.root.display());
        writer.stop().await;
        assert_no_acked_write_lost(&writer, &site.client_urls(), cut..healed, "writes to the majority during the partition").await?;
        for i in 0..3 {
            let doc = site.agent_status(i).await.ok_or_else(|| anyhow::anyhow!("no status from host {i}"))?;
            assert_eq!(doc.get("epoch").and_then(|e| e.as_u64()), Some(0), "host {i} never left epoch 0");
            let recovered = doc
                .pointer("/journal/recent")
                .and_then(|r| r.as_array())
                .is_some_and(|ops| ops.iter().any(|o| o["kind"] == "recover" && o["outcome"] == "done"));
            assert!(!recovered, "host {i} must never have rebuilt the cluster");
        }
        // The cut-off host saw quorum loss from its side, and waited for a
        // majority of votes instead of fencing.
        let isolated = site.agent_status(2).await.unwrap_or_default();
        let fenced = isolated
            .pointer("/journal/recent")
            .and_then(|r| r.as_array())
            .is_some_and(|ops| ops.iter().any(|o| o["kind"] == "fence"));
        assert!(!fenced, "the minority never tries to fence: {isolated}");
        let log = std::fs::read_to_string(site.hosts[2].dir.join("agent.log"))?;
        assert!(
            log.contains("no strict majority of votes: 1 of 3"),
            "the minority said why it waits; logs in {}",
            site.root.display()
        );
        Ok(())
    })
}
