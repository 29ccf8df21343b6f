//! The agent's own `/metrics`, read by a real parser: `promtool check metrics`
//! (Prometheus's linter) finds every family with its `# HELP` and `# TYPE`, and
//! `edgeplane_build_info` and the snapshot age are there. One host, a few seconds.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, edgeplane_bin, rt, sim, skip};

#[test]
fn metrics_pass_promtool_with_help_type_build_info_and_snapshot_age() -> anyhow::Result<()> {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        skip("/usr/bin/promtool is missing (Debian prometheus; scripts/setup installs it)");
        return Ok(());
    }
    let rt = rt();
    // The metrics path on, its region unreachable: the buffer holds a backlog.
    let mut spec = SiteSpec::new(1, 1, edgeplane_bin());
    spec.extra_toml = format!(
        "[metrics]\nscrape_interval = \"1s\"\nscrape_timeout = \"900ms\"\n\n\
         [uplink]\nenabled = true\nurl = \"http://127.0.0.1:{}/api/v1/write\"\n",
        sim::free_port()?
    );
    let mut site = LocalSite::create(spec, false)?;
    site.start_agent(0)?;
    let t0 = Instant::now();
    rt.block_on(async {
        while site.agent_status(0).await.is_none() {
            assert!(t0.elapsed() < HANG, "the agent never answered /status");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // A snapshot, so that its age has a sample (retried until etcd has a leader).
    let saved = loop {
        let out = Command::new(edgeplane_bin())
            .args(["snapshot", "save", "--config"])
            .arg(&site.hosts[0].config_path)
            .env("RUST_LOG", "warn")
            .output()?;
        if out.status.success() {
            break true;
        }
        if t0.elapsed() > HANG {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(saved, "edgeplane snapshot save never succeeded");

    let url = format!("{}/metrics", site.hosts[0].agent_url.trim_end_matches('/'));
    let body = rt.block_on(async {
        let r = sim::certs::http_client(Duration::from_secs(10))
            .get(&url)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET /metrics: {}", r.status());
        Ok(r.text().await?)
    })?;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {:?}\n{said}\n--- /metrics:\n{body}",
        out.status.code()
    );

    // Every family has both lines, and every sample belongs to a family.
    let families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 20, "{body}");
    for f in &families {
        assert!(
            body.lines().any(|l| l.starts_with(&format!("# HELP {f} "))),
            "{f} has no HELP"
        );
    }
    let build = body
        .lines()
        .find(|l| l.starts_with("edgeplane_build_info{"))
        .unwrap_or_else(|| panic!("no edgeplane_build_info:\n{body}"));
    assert!(build.ends_with(" 1"), "{build}");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    let age: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("edgeplane_snapshot_newest_age_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot age sample:\n{body}"));
    assert!((0.0..3600.0).contains(&age), "snapshot age {age}");
    for family in [
        "edgeplane_snapshot_peer_copy_newest_age_seconds",
        "edgeplane_metrics_backlog_bytes",
        "edgeplane_metrics_backlog_age_seconds",
        "edgeplane_metrics_dead_letter_bytes",
    ] {
        assert!(families.contains(&family), "{family} missing:\n{body}");
    }
    eprintln!(
        "/metrics: {} families, promtool clean, took {:?}",
        families.len(),
        t0.elapsed()
    );
    Ok(())
}
