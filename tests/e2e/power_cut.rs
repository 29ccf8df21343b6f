//! Power cuts that lose what was never fsynced (issue 16, "writes not
//! synced before a crash"). A SIGKILL leaves the page cache intact, so the
//! other tests never see a missing fsync. Here every host keeps its etcd
//! data dir, agent state, snapshots and metrics buffer on the test crate's
//! `edgeplane-lazyfs` (a FUSE passthrough that drops unsynced writes at the
//! power cut, as LazyFS does), and the whole site loses power at once.
//!
//! The check is proven to bite: the same cut on disks that ignore fsync
//! (their write cache never flushed) must show acknowledged writes lost.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeplane_tests::{
    HANG, LocalSite, SiteSpec, Writer, assert_no_acked_write_lost, edgeplane_bin, root_or_skip, rt,
    skip,
};

const HOSTS: usize = 4;

/// Metrics from every etcd, buffered (the region is a closed port, so
/// everything stays on disk); a snapshot every 2 s, every file scrubbed
/// every 2 s.
const SITE_TOML: &str = r#"[metrics]
scrape_interval = "1s"
scrape_timeout = "900ms"
scrape_etcd = true
scrape_self = false

[uplink]
url = "http://127.0.0.1:9/api/v1/write"
timeout = "1s"

[snapshots]
interval = "2s"
scrub_interval = "2s"
"#;

/// The test crate's `edgeplane-lazyfs` (see `tests/src/bin`).
pub fn lazyfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgeplane-lazyfs"))
}

/// A site on lazy disks, at full strength, with a writer running; `None`
/// (after `skip`) where FUSE cannot run.
async fn lazy_site(what: &str) -> anyhow::Result<Option<(LocalSite, Writer)>> {
    if !root_or_skip(what) {
        return Ok(None);
    }
    if !Path::new("/dev/fuse").exists() {
        skip(&format!("{what}: no /dev/fuse"));
        return Ok(None);
    }
    let mut spec = SiteSpec::new(HOSTS, 3, edgeplane_bin());
    spec.extra_toml = SITE_TOML.to_string();
    spec.lazy_disk = Some(lazyfs_bin());
    let mut site = LocalSite::create(spec, std::env::var("EDGEPLANE_KEEP_SITE").is_ok())?;
    for i in 0..HOSTS {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(1, 2 * HANG).await,
        "the site on lazy disks did not reach 3 voters + 1 standby; logs in {}",
        site.root.display()
    );
    let writer = Writer::start(site.client_urls(), "w");
    Ok(Some((site, writer)))
}

/// The buffered samples per class, `(class, samples)`, from a status
/// document's `pointer` (the agent's `/status` or `diag status --json`).
fn class_samples(doc: &serde_json::Value, pointer: &str) -> Vec<(String, u64)> {
    doc.pointer(pointer)
        .and_then(|c| c.as_array())
        .map(|classes| {
            classes
                .iter()
                .filter_map(|c| Some((c["class"].as_str()?.to_string(), c["samples"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `edgeplane diag status --json` of host `i`, offline (its agent is down).
fn diag_offline(site: &LocalSite, i: usize) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(edgeplane_bin())
        .args(["diag", "status", "--json", "--config"])
        .arg(&site.hosts[i].config_path)
        .output()?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The whole site loses power while the writer runs, the snapshots are
/// taken and the buffers fill; every disk drops what was not fsynced. After
/// the power returns: every acknowledged write is there (those of the last
/// seconds before the cut included), every buffered sample the agent had
/// reported is on disk, and no snapshot file is torn.
#[test]
fn a_site_wide_power_cut_that_drops_unsynced_writes_loses_no_acknowledged_write()
-> anyhow::Result<()> {
    rt().block_on(async {
        let Some((mut site, mut writer)) = lazy_site("power cut on lazy disks").await? else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(6)).await;
        // What each agent reported as buffered, the moment before the cut
        // (with fsync per batch, reported means on disk).
        let mut reported = Vec::new();
        for i in 0..HOSTS {
            let doc = site.agent_status(i).await.unwrap_or_default();
            reported.push(class_samples(&doc, "/metrics/classes"));
        }
        let cut = Instant::now();
        for said in site.power_cut(&(0..HOSTS).collect::<Vec<_>>())? {
            eprintln!("{said}");
        }
        let mut buffered = 0;
        for (i, before) in reported.iter().enumerate() {
            let after = class_samples(&diag_offline(&site, i)?, "/buffer/data/classes");
            for (class, n) in before {
                let kept = after
                    .iter()
                    .find(|(c, _)| c == class)
                    .map_or(0, |(_, n)| *n);
                assert!(
                    kept >= *n,
                    "{}: the agent reported {n} {class} samples buffered, {kept} are on disk after the power cut (diag: {after:?}); logs in {}",
                    site.hosts[i].name,
                    site.root.display()
                );
                buffered += n;
            }
        }
        assert!(buffered > 0, "no sample was buffered before the cut: {reported:?}");
        for i in 0..HOSTS {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, 2 * HANG).await,
            "the site did not come back to full strength after the power cut; logs in {}",
            site.root.display()
        );
        eprintln!("full strength again {:?} after the cut", cut.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
        writer.stop().await;
        let n = assert_no_acked_write_lost(
            &writer,
            &site.client_urls(),
            cut - Duration::from_secs(3)..cut,
            "site-wide power cut on lazy disks",
        )
        .await?;
        eprintln!(
            "{n} writes acknowledged in the 3 s before the cut ({} in all), 0 lost; {buffered} samples reported buffered, all on disk",
            writer.acked_count()
        );

        // Every snapshot file written before the cut verifies (the scrub
        // reads each one once after the agent starts, then every 2 s).
        let t0 = Instant::now();
        loop {
            let mut scrub = Vec::new();
            for i in 0..HOSTS {
                let doc = site.agent_status(i).await.unwrap_or_default();
                scrub.push(doc["snapshot_scrub"].clone());
            }
            for (i, s) in scrub.iter().enumerate() {
                assert_eq!(
                    s["corrupt"].as_u64().unwrap_or(0),
                    0,
                    "{}: a snapshot file was torn by the power cut: {s}",
                    site.hosts[i].name
                );
            }
            let verified: u64 = scrub.iter().filter_map(|s| s["verified"].as_u64()).sum();
            if verified > 0 && t0.elapsed() > Duration::from_secs(5) {
                eprintln!("snapshot files verified after the cut: {verified}, 0 corrupt");
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "no snapshot file was verified after the cut: {scrub:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    })
}

/// The check above can fail: the same cut, on disks that stopped honouring
/// fsync 3 s before it, must show acknowledged writes lost.
#[test]
fn the_power_cut_check_sees_the_writes_lost_by_disks_that_ignore_fsync() -> anyhow::Result<()> {
    rt().block_on(async {
        let Some((mut site, mut writer)) = lazy_site("power cut on lying disks").await? else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let lying = Instant::now();
        for i in 0..HOSTS {
            site.lazy_disk(i)
                .ok_or_else(|| anyhow::anyhow!("no lazy disk"))?
                .start_lying_about_fsync()?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cut = Instant::now();
        let acked_while_lying = writer.sent_and_acked_within(lying..cut);
        for said in site.power_cut(&(0..HOSTS).collect::<Vec<_>>())? {
            eprintln!("{said}");
        }
        writer.stop().await;
        for i in 0..HOSTS {
            site.start_agent(i)?;
        }
        // The cluster comes back on its state of 3 s ago, or not at all;
        // either way the writes acknowledged since are gone.
        let mut lost = None;
        let t0 = Instant::now();
        while lost.is_none() && t0.elapsed() < 2 * HANG {
            if site.full_strength(1).await {
                lost = writer.lost(&site.client_urls()).await.ok();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let lost = lost.ok_or_else(|| {
            anyhow::anyhow!(
                "the site did not serve again after a cut on lying disks; logs in {}",
                site.root.display()
            )
        })?;
        eprintln!(
            "{acked_while_lying} writes acknowledged while the disks lied; {lost} acknowledged writes lost"
        );
        assert!(
            acked_while_lying > 0 && lost > 0,
            "disks that ignored fsync for 3 s lost nothing the writer saw acknowledged ({acked_while_lying} acknowledged meanwhile): the power cut does not drop unsynced data"
        );
        Ok(())
    })
}
