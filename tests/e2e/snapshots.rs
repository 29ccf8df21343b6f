//! Scheduled snapshots: exactly one agent (the coordinator) takes one per
//! interval from a voter, and every host ends up with a verified copy.

use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, edgeplane_bin, rt};

fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".etcd.zst"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn scheduled_snapshot_is_copied_to_every_host_and_verifies() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.extra_toml
            .push_str("\n[snapshots]\ninterval = \"30s\"\n");
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        let t0 = Instant::now();
        loop {
            let counts: Vec<usize> = site
                .hosts
                .iter()
                .map(|h| snapshot_files(&h.dir.join("snapshots")).len())
                .collect();
            if counts.iter().all(|&c| c >= 1) {
                // One interval: exactly one snapshot, on every host.
                assert!(
                    counts.iter().all(|&c| c == 1),
                    "one snapshot per interval: {counts:?}"
                );
                break;
            }
            assert!(
                t0.elapsed() < HANG,
                "snapshots did not reach every host: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let file = snapshot_files(&site.hosts[3].dir.join("snapshots")).remove(0);
        let out = std::process::Command::new(edgeplane_bin())
            .args(["snapshot", "verify"])
            .arg(&file)
            .output()?;
        assert!(
            out.status.success(),
            "verify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
}
