//! The agent killed while it flushes the backlog of a region outage: after
//! its restart every sample scraped during the outage is in the region
//! (the buffer kept it; duplicates are allowed), at its original timestamp.

use std::time::{Duration, Instant};

use edgeplane_metrics::local_prometheus::{LocalPrometheus, PrometheusOptions};
use edgeplane_tests::{HANG, LocalSite, SiteSpec, edgeplane_bin, rt};
use nix::sys::signal::Signal;

#[test]
fn agent_sigkill_during_the_flush_loses_no_outage_sample() -> anyhow::Result<()> {
    rt().block_on(async {
        // The region over HTTPS, verified with uplink.ca_file.
        let certs = tempfile::tempdir()?;
        let web = edgeplane_tests::sim::certs::issue_server(certs.path(), "region")?;
        let region = LocalPrometheus::start(PrometheusOptions {
            tls: Some(web.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        assert!(region.remote_write_url().starts_with("https://"));
        let mut spec = SiteSpec::new(2, 1, edgeplane_bin());
        spec.extra_toml = format!(
            "[metrics]\nscrape_interval = \"1s\"\nscrape_timeout = \"900ms\"\n\n[uplink]\nurl = \"{}\"\ntimeout = \"2s\"\nbackfill_rate = 5\nca_file = {:?}\n",
            region.remote_write_url(),
            web.ca_file.display().to_string()
        );
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..2 {
            site.start_agent(i)?;
        }
        assert!(site.wait_full_strength(1, HANG).await, "site did not bootstrap");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = region.pid().ok_or_else(|| anyhow::anyhow!("no prometheus pid"))? as i32;
        // Outage.
        let cut_ms = chrono_now_ms();
        edgeplane_tests::sim::signal(pid, Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(10)).await;
        edgeplane_tests::sim::signal(pid, Signal::SIGCONT);
        let restored_ms = chrono_now_ms();
        // The backlog drains slowly (backfill_rate 5/s): kill host-1's agent mid-flush.
        tokio::time::sleep(Duration::from_secs(2)).await;
        site.kill_agent(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        site.start_agent(0)?;
        // Wait until the outage window is complete in the region.
        let expected = ((restored_ms - cut_ms) / 1000 - 2) as usize;
        let t0 = Instant::now();
        loop {
            let now = chrono_now_ms();
            let range = format!("{}s", (now - cut_ms) / 1000 + 5);
            let series = region.raw("up{instance=~\".*\"}", &range, now).await.map_err(|e| anyhow::anyhow!(e))?;
            let all: Vec<usize> =
                series.iter().map(|s| s.samples.iter().filter(|(t, _)| *t >= cut_ms && *t <= restored_ms).count()).collect();
            if !all.is_empty() && all.iter().all(|&n| n >= expected) {
                eprintln!("outage window complete in the region: {all:?} samples per series, expected ≥ {expected}");
                break;
            }
            assert!(t0.elapsed() < HANG * 2, "outage samples still missing after the restart: {all:?}, expected ≥ {expected} each");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    })
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
