//! Scheduled snapshots: exactly one agent (the coordinator) takes one per
//! interval from a voter, every host ends up with a verified copy, and every
//! host's catalog (`edgeplane snapshot list`) says where the copies are.

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

        // The catalog: every host's agent learns where every copy is.
        let list = |config: &std::path::Path| -> anyhow::Result<serde_json::Value> {
            let out = std::process::Command::new(edgeplane_bin())
                .args(["snapshot", "list", "--json", "--config"])
                .arg(config)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(serde_json::from_slice(&out.stdout)?)
        };
        let names: Vec<String> = site.hosts.iter().map(|h| h.name.clone()).collect();
        let t0 = Instant::now();
        for h in &site.hosts {
            loop {
                let doc = list(&h.config_path)?;
                let copies: Vec<String> = doc
                    .pointer("/snapshots/0/copies")
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .unwrap_or_default();
                if doc["source"] == "the agent's catalog" && copies == names {
                    let row = &doc["snapshots"][0];
                    assert_eq!(doc["snapshots"].as_array().map(Vec::len), Some(1), "{doc}");
                    assert!(row["revision"].as_i64().is_some_and(|r| r > 0), "{doc}");
                    assert!(row["file_bytes"].as_u64().is_some_and(|b| b > 0), "{doc}");
                    assert_eq!(row["sha256"].as_str().map(str::len), Some(64), "{doc}");
                    assert!(row["path"].is_string(), "this host holds it: {doc}");
                    break;
                }
                assert!(
                    t0.elapsed() < HANG,
                    "{}'s catalog does not list a copy on every host: {doc}",
                    h.name
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Without the agent's state, the files: this host's copy only.
        let cfg = std::fs::read_to_string(&site.hosts[0].config_path)?.replace(
            "[paths]\n",
            "[paths]\nstate_dir = \"/nonexistent/edgeplane-state\"\n",
        );
        let bare = site.root.join("no-state.toml");
        std::fs::write(&bare, cfg)?;
        let doc = list(&bare)?;
        assert!(
            doc["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("files in")),
            "{doc}"
        );
        assert_eq!(
            doc["snapshots"][0]["copies"],
            serde_json::json!([names[0]]),
            "{doc}"
        );
        Ok(())
    })
}

/// Snapshots cannot fill the disk: with a budget smaller than one snapshot
/// (`snapshots.max_bytes = 1KiB`), the coordinator's copy to its peer is
/// refused by the peer's agent (507, nothing written) and the refusal is
/// reported in the peer's `/status` instead of filling its disk.
#[test]
fn a_peer_copy_over_the_snapshot_budget_is_refused_and_reported() -> anyhow::Result<()> {
    rt().block_on(async {
        // The budget on the standby (host-2) only: the coordinator's own
        // first snapshot is checked against its own budget too, so a tiny
        // budget there would refuse the snapshot before any copy.
        let spec = SiteSpec::new(2, 1, edgeplane_bin());
        let mut site = LocalSite::create(spec, false)?;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&site.hosts[1].config_path)?;
            f.write_all(b"\n[snapshots]\nmax_bytes = \"1KiB\"\n")?;
        }
        for i in 0..2 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(1, HANG).await,
            "site did not bootstrap; logs in {}",
            site.root.display()
        );
        let t0 = Instant::now();
        let (refused, doc) = loop {
            let mut found = None;
            for i in 0..2 {
                if let Some(doc) = site.agent_status(i).await {
                    let n = doc
                        .pointer("/snapshot_space/refused")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0);
                    if n > 0 {
                        found = Some((i, doc));
                    }
                }
            }
            if let Some(f) = found {
                break f;
            }
            assert!(
                t0.elapsed() < HANG,
                "no snapshot copy was refused for space; logs in {}",
                site.root.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let space = &doc["snapshot_space"];
        assert_eq!(space["max_bytes"].as_u64(), Some(1024));
        let why = space["last_refusal"].as_str().unwrap_or_default();
        assert!(why.contains("snapshots.max_bytes 1024"), "reason: {why}");
        // The refusing host holds no copy, and no partial upload either.
        let dir = site.hosts[refused].dir.join("snapshots");
        let held: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            held.is_empty(),
            "nothing written on {}: {held:?}",
            site.hosts[refused].name
        );
        // The other host took its own snapshot (its first, before any budget use).
        let other = 1 - refused;
        assert_eq!(
            snapshot_files(&site.hosts[other].dir.join("snapshots")).len(),
            1,
            "the coordinator kept its own snapshot"
        );
        Ok(())
    })
}

/// A peer's copy of a snapshot rots on disk (bytes overwritten in its data
/// region, the file otherwise intact): that host's scrub finds it within
/// `snapshots.scrub_interval`, sets it aside in `corrupt/`, counts it in
/// `/status`, `/metrics` and `diag status`, and fetches an intact copy of
/// the same snapshot from a peer, which verifies again.
#[test]
fn a_corrupt_snapshot_copy_is_set_aside_reported_and_replaced_from_a_peer() -> anyhow::Result<()> {
    rt().block_on(async {
        let mut spec = SiteSpec::new(3, 3, edgeplane_bin());
        spec.extra_toml
            .push_str("\n[snapshots]\ninterval = \"1h\"\nscrub_interval = \"2s\"\n");
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..3 {
            site.start_agent(i)?;
        }
        let t0 = Instant::now();
        let name = loop {
            let files: Vec<Vec<std::path::PathBuf>> = site
                .hosts
                .iter()
                .map(|h| snapshot_files(&h.dir.join("snapshots")))
                .collect();
            if files.iter().all(|f| f.len() == 1) {
                break files[0][0]
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
            assert!(t0.elapsed() < HANG, "no snapshot on every host: {files:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        // A host holding another host's snapshot: a peer copy.
        let i = (0..3)
            .find(|i| !name.contains(&format!("-{}-", site.hosts[*i].name)))
            .unwrap_or(1);
        let dir = site.hosts[i].dir.join("snapshots");
        let file = dir.join(&name);
        let scrubbed = |doc: &serde_json::Value, key: &str| {
            doc.pointer(&format!("/snapshot_scrub/{key}"))
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        };
        // The scrub first verifies it as intact (it was, when it arrived).
        let t0 = Instant::now();
        while site
            .agent_status(i)
            .await
            .is_none_or(|d| scrubbed(&d, "verified") < 1)
        {
            assert!(t0.elapsed() < HANG, "the scrub never verified {name}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let bytes = std::fs::read(&file)?;
        let mut rotten = bytes.clone();
        let mid = rotten.len() / 3;
        for b in &mut rotten[mid..mid + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&file, &rotten)?;
        let t0 = Instant::now();
        let doc = loop {
            if let Some(d) = site.agent_status(i).await
                && scrubbed(&d, "repaired") >= 1
            {
                break d;
            }
            assert!(
                t0.elapsed() < HANG,
                "{} never set {name} aside and replaced it: {:?}",
                site.hosts[i].name,
                site.agent_status(i)
                    .await
                    .map(|d| d["snapshot_scrub"].clone())
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        // The tests read the status contract typed, as diag can.
        let typed: edgeplane::agent::status::StatusDoc = serde_json::from_value(doc.clone())?;
        assert_eq!(typed.schema, edgeplane::agent::status::STATUS_SCHEMA);
        assert_eq!(typed.snapshot_scrub.map(|s| s.repaired), Some(1));
        let scrub = &doc["snapshot_scrub"];
        assert_eq!(scrubbed(&doc, "corrupt"), 1, "{scrub}");
        assert_eq!(scrub["unrepaired"], serde_json::json!([]), "{scrub}");
        assert!(
            scrub["last_corrupt"]
                .as_str()
                .is_some_and(|s| s.contains(&name)),
            "{scrub}"
        );
        // The rotten bytes are kept as evidence, out of the listing; the
        // file in place is the intact snapshot again.
        assert_eq!(std::fs::read(dir.join("corrupt").join(&name))?, rotten);
        assert_eq!(std::fs::read(&file)?, bytes);
        let out = std::process::Command::new(edgeplane_bin())
            .args(["snapshot", "verify"])
            .arg(&file)
            .output()?;
        assert!(
            out.status.success(),
            "verify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The other hosts found nothing.
        for j in (0..3).filter(|j| *j != i) {
            let d = site.agent_status(j).await.unwrap_or_default();
            assert_eq!(scrubbed(&d, "corrupt"), 0, "{}: {d}", site.hosts[j].name);
        }
        let url = format!("{}/metrics", site.hosts[i].agent_url.trim_end_matches('/'));
        let body = edgeplane_tests::sim::certs::http_client(Duration::from_secs(10))
            .get(&url)
            .send()
            .await?
            .text()
            .await?;
        assert!(
            body.lines()
                .any(|l| l == "edgeplane_snapshot_corrupt_total 1"),
            "{body}"
        );
        let out = std::process::Command::new(edgeplane_bin())
            .args(["diag", "status", "--config"])
            .arg(&site.hosts[i].config_path)
            .env("RUST_LOG", "warn")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("1 corrupt and set aside in corrupt/, 1 of them replaced from a peer")
                && text.contains("! last corrupt: "),
            "`diag status`:\n{text}"
        );
        Ok(())
    })
}
