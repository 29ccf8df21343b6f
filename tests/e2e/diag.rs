//! `edgeplane diag` against a live 4-host site, then with one host killed,
//! then with its state files damaged: every command answers, in seconds,
//! with each section marked live / last-known / unavailable, and the support
//! bundle holds none of the secrets planted in the config and the logs.
//!
//! The `--json` output of every command is deserialized into the structs
//! below, all `deny_unknown_fields`: they are the contract scripts rely on,
//! written out here independently of the code that produces it, so a field
//! renamed or added there fails this test first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, edgeplane_bin, rt};
use serde::Deserialize;
use serde_json::Value;

/// The bound for one `diag` command, also with peers unreachable.
const DIAG_BOUND: Duration = Duration::from_secs(10);

mod contract {
    //! The JSON documents of `diag status|events|check`, as scripts see them.
    //! Every field is listed, read or not: that is the point.
    #![allow(dead_code)]
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Section<T> {
        pub source: String,
        pub age_s: Option<f64>,
        pub origin: String,
        pub error: Option<String>,
        pub data: Option<T>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Status {
        pub schema: String,
        pub generated_at: String,
        pub config: String,
        pub site: String,
        pub host: String,
        pub verdict: String,
        pub headline: String,
        pub advice: Vec<String>,
        pub recovery: Option<Recovery>,
        pub quorum: Quorum,
        pub leader: Option<String>,
        pub this_host: ThisHost,
        pub hosts: Vec<HostRow>,
        pub agent: Section<Agent>,
        pub alarms: Section<Vec<Alarm>>,
        pub snapshots: Section<Snapshots>,
        pub buffer: Section<Buffer>,
        pub link: Section<Link>,
        pub journal: Section<Journal>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Recovery {
        pub command: String,
        pub from: Option<String>,
        pub from_applied_index: Option<u64>,
        pub lost_hosts: Vec<String>,
        pub note: String,
        pub votes: Vec<Vote>,
        pub votes_needed: usize,
        pub agent_waits: Option<String>,
        pub agent_state: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct Vote {
        pub voter: String,
        #[serde(rename = "for")]
        pub for_host: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Quorum {
        pub state: String,
        pub reason: String,
        pub voters: Vec<String>,
        pub reachable_voters: Vec<String>,
        pub agents_say: Vec<AgentSays>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AgentSays {
        pub host: String,
        pub quorum: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ThisHost {
        pub name: String,
        pub role: String,
        pub role_source: String,
        pub agent_api: bool,
        pub agent_error: Option<String>,
        pub agent_pids: Vec<i32>,
        pub etcd_api: bool,
        pub etcd_error: Option<String>,
        pub etcd_local: EtcdLocal,
        pub epoch: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct EtcdLocal {
        pub data_dir: String,
        pub data_dir_exists: bool,
        pub db_file: Option<FileFact>,
        pub wal_present: bool,
        pub wal_files: usize,
        pub wal_bytes: u64,
        pub wal_age_s: Option<f64>,
        pub moved_aside: Vec<String>,
        pub pid_file: Option<i32>,
        pub pid_alive: bool,
        pub pid_is_etcd: bool,
        pub errors: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FileFact {
        pub path: String,
        pub bytes: u64,
        pub age_s: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HostRow {
        pub name: String,
        pub role: String,
        pub role_origin: String,
        pub etcd_up: bool,
        pub agent_up: bool,
        pub leader: bool,
        pub leader_known: bool,
        pub member_id: Option<String>,
        pub applied_index: Option<u64>,
        pub raft_index: Option<u64>,
        pub lag: Option<u64>,
        pub db_size: Option<i64>,
        pub db_in_use: Option<i64>,
        pub etcd_version: Option<String>,
        pub errors: Vec<String>,
        pub source: String,
        pub age_s: Option<f64>,
        pub error: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Agent {
        pub role: String,
        pub coordinator: bool,
        pub ready: bool,
        pub ready_reason: String,
        pub decision: String,
        pub queue_depth: u64,
        pub last_reconcile_age_s: f64,
        pub stalled: bool,
        pub ticks: u64,
        pub etcd_restarts: u64,
        pub epoch: u64,
        pub version: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Alarm {
        pub member_id: String,
        pub alarm: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Snapshots {
        pub dir: String,
        pub count: usize,
        pub latest: Option<SnapFile>,
        pub latest_on: Vec<String>,
        pub peers_unknown: Vec<String>,
        pub files: Vec<SnapFile>,
        /// The agent's `/status.snapshot_space`; null when the agent is down.
        pub space: Option<SnapshotSpace>,
        /// The agent's `/status.snapshot_scrub`; null when the agent is down.
        pub scrub: Option<SnapshotScrub>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SnapshotScrub {
        pub verified: u64,
        pub corrupt: u64,
        pub repaired: u64,
        pub last_corrupt: Option<String>,
        pub unrepaired: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SnapshotSpace {
        pub max_bytes: u64,
        pub min_free_bytes: u64,
        pub used_bytes: Option<u64>,
        pub free_bytes: Option<u64>,
        pub refused: u64,
        pub last_refusal: Option<String>,
    }

    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SnapFile {
        pub name: String,
        pub location: String,
        pub bytes: u64,
        pub age_s: Option<f64>,
        pub origin: Option<String>,
        pub footer: Option<Value>,
        pub footer_error: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Buffer {
        pub dir: String,
        pub budget_bytes: u64,
        pub total_bytes: u64,
        pub classes: Vec<BufferClass>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BufferClass {
        pub class: String,
        pub configured: bool,
        pub samples: u64,
        pub bytes: u64,
        pub oldest_ms: Option<i64>,
        pub oldest_age_s: Option<f64>,
        pub shed_samples: u64,
        pub shed_bytes: u64,
        pub expired_samples: u64,
        pub dropped_incoming: u64,
        pub corrupt_frames: u64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Link {
        pub state: String,
        pub detail: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Journal {
        pub records_read: usize,
        pub pending: usize,
        pub failed: usize,
        pub damped_removals: usize,
        pub last: Option<Event>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Event {
        pub id: u64,
        pub kind: String,
        pub target: String,
        pub reason: String,
        pub started: String,
        pub started_ms: i64,
        pub finished_ms: Option<i64>,
        pub duration_ms: Option<i64>,
        pub outcome: String,
        pub detail: String,
        pub age_s: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Events {
        pub schema: String,
        pub generated_at: String,
        pub host: String,
        pub source: String,
        pub origin: String,
        pub age_s: Option<f64>,
        pub error: Option<String>,
        pub since_s: Option<f64>,
        pub total: usize,
        pub pending: usize,
        pub failed: usize,
        pub events: Vec<Event>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Check {
        pub schema: String,
        pub generated_at: String,
        pub config: String,
        pub host: Option<String>,
        pub passed: usize,
        pub warnings: usize,
        pub failures: usize,
        pub skipped: usize,
        pub checks: Vec<CheckResult>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CheckResult {
        pub id: String,
        pub status: String,
        pub summary: String,
        pub remedy: Option<String>,
    }
}

use contract::{Check, Events, Status};

/// Output of one `edgeplane diag …` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn diag(args: &[&str], config: &Path) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    let out = Command::new(edgeplane_bin())
        .arg("diag")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    };
    assert!(
        run.took < DIAG_BOUND,
        "`diag {}` took {:?}",
        args.join(" "),
        run.took
    );
    Ok(run)
}

fn parse<T: serde::de::DeserializeOwned>(run: &Run, what: &str) -> T {
    match serde_json::from_str(&run.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "{what}: output does not match the contract: {e}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        ),
    }
}

/// The secrets planted on the diagnosed host, which no bundle may contain.
struct Planted {
    token: String,
    key_line: String,
    url_password: String,
}

/// Adds uplink key material (token file, client key, a URL with a password)
/// to host `i`'s config, a log file that leaked them, and returns them.
fn plant_secrets(site: &LocalSite, i: usize) -> anyhow::Result<Planted> {
    use std::os::unix::fs::PermissionsExt;
    let h = &site.hosts[i];
    let secrets = h.dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let planted = Planted {
        token: "tok-9f8e7d6c5b4a39281706".into(),
        key_line: "MHcCAQEEIPlantedKeyMaterialDoNotShipQWERTYUIOP0123456789".into(),
        url_password: "pa55w0rd-planted".into(),
    };
    let token_file = secrets.join("token");
    std::fs::write(&token_file, format!("{}\n", planted.token))?;
    // World-readable on purpose: `diag check` must flag it.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644))?;
    let key_file = secrets.join("client.key");
    std::fs::write(
        &key_file,
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            planted.key_line
        ),
    )?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let cert_file = secrets.join("client.crt");
    std::fs::write(
        &cert_file,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )?;
    // The generated config ends inside `[uplink]`. (The config refuses
    // credentials in uplink.url, so the URL password is planted in a log.)
    let mut cfg = std::fs::read_to_string(&h.config_path)?;
    cfg.push_str(&format!(
        "bearer_token_file = {:?}\nclient_key = {:?}\nclient_cert = {:?}\n",
        token_file.display().to_string(),
        key_file.display().to_string(),
        cert_file.display().to_string(),
    ));
    std::fs::write(&h.config_path, cfg)?;
    let log_dir = h.dir.join("log");
    std::fs::create_dir_all(&log_dir)?;
    std::fs::write(
        log_dir.join("edgeplane.log.2026-01-01"),
        format!(
            "INFO pushing to https://alice:{}@region.example/api/v1/write with token {}\nWARN loaded key {}\nINFO done\n",
            planted.url_password, planted.token, planted.key_line
        ),
    )?;
    Ok(planted)
}

async fn full_site() -> anyhow::Result<(LocalSite, Planted)> {
    let spec = SiteSpec::new(4, 3, edgeplane_bin());
    let keep = std::env::var_os("EDGEPLANE_KEEP").is_some();
    let mut site = LocalSite::create(spec, keep)?;
    let planted = plant_secrets(&site, 0)?;
    for i in 0..4 {
        site.start_agent(i)?;
    }
    assert!(
        site.wait_full_strength(1, HANG).await,
        "the site did not reach full strength; logs in {}",
        site.root.display()
    );
    // Let every agent publish a view with the standby in place.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((site, planted))
}

fn host_index(s: &Status, name: &str) -> usize {
    s.hosts
        .iter()
        .position(|h| h.name == name)
        .unwrap_or_else(|| panic!("{name} not in the hosts table"))
}

/// Every file in the bundle, extracted with the system `tar` and `zstd`.
fn unpack(bundle: &Path, into: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let ok = Command::new("tar")
        .arg("--use-compress-program=zstd")
        .arg("-xf")
        .arg(bundle)
        .arg("-C")
        .arg(into)
        .status()?
        .success();
    assert!(ok, "the bundle is a valid .tar.zst");
    let mut out = Vec::new();
    let mut stack = vec![into.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&p)?).into_owned();
                out.push((p.strip_prefix(into)?.to_path_buf(), text));
            }
        }
    }
    Ok(out)
}

#[test]
fn diag_answers_live_then_last_known_then_with_damaged_state() -> anyhow::Result<()> {
    rt().block_on(async {
        let (mut site, planted) = full_site().await?;
        let me = 0;
        let cfg = site.hosts[me].config_path.clone();
        let my_name = site.hosts[me].name.clone();

        // ---- Live -------------------------------------------------------
        let run = diag(&["status", "--json"], &cfg)?;
        let st: Status = parse(&run, "status (live)");
        assert_eq!(st.schema, "edgeplane.diag.status/1");
        assert_eq!(st.quorum.state, "ok", "{}", st.headline);
        assert_eq!(st.verdict, "ok", "{}: {:?}", st.headline, st.advice);
        assert_eq!(run.code, 0, "exit 0 when healthy");
        assert!(st.leader.is_some());
        assert_eq!(st.hosts.len(), 4);
        assert!(
            st.hosts
                .iter()
                .all(|h| h.source == "live" && h.etcd_up && h.agent_up)
        );
        assert_eq!(st.hosts.iter().filter(|h| h.role == "voter").count(), 3);
        assert_eq!(st.hosts.iter().filter(|h| h.role == "standby").count(), 1);
        assert!(
            st.hosts
                .iter()
                .all(|h| h.applied_index.is_some() && h.lag.is_some() && h.db_size.is_some())
        );
        assert_eq!(st.agent.source, "live");
        let agent = st.agent.data.as_ref().map(|a| a.queue_depth);
        assert_eq!(agent, Some(0), "queue depth from /status");
        assert_eq!(st.alarms.source, "live");
        assert_eq!(st.snapshots.source, "live", "an empty snapshot dir is fine");
        assert_eq!(
            st.buffer.source, "unavailable",
            "metrics are off in this site"
        );
        assert!(st.this_host.agent_api && st.this_host.etcd_api);
        assert!(st.this_host.etcd_local.pid_alive && st.this_host.etcd_local.wal_present);
        assert_eq!(
            st.this_host.agent_pids.len(),
            1,
            "the agent process is found"
        );
        let human = diag(&["status"], &cfg)?;
        eprintln!("--- diag status (live)\n{}", human.stdout);
        assert!(
            human.stdout.starts_with("OK: 3 voters + standby"),
            "{}",
            human.stdout
        );
        assert!(human.stdout.contains("HOST"), "{}", human.stdout);

        let standby = st
            .hosts
            .iter()
            .find(|h| h.role == "standby")
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let standby_cfg = site.hosts[host_index(&st, &standby)].config_path.clone();
        let run = diag(&["events", "--json"], &standby_cfg)?;
        let ev: Events = parse(&run, "events (live)");
        assert_eq!(run.code, 0);
        assert_eq!(ev.source, "live");
        assert!(
            ev.events
                .iter()
                .any(|e| e.kind == "join" && e.outcome == "done" && e.target == standby),
            "the standby's journal records its join: {:?}",
            ev.events
        );
        let run = diag(&["events", "--json", "--since", "1ms"], &standby_cfg)?;
        let recent: Events = parse(&run, "events --since");
        assert!(recent.events.len() < ev.events.len() || ev.events.is_empty());
        let human = diag(&["events"], &standby_cfg)?;
        assert!(human.stdout.contains("join"), "{}", human.stdout);

        let run = diag(&["check", "--json"], &cfg)?;
        let ck: Check = parse(&run, "check (live)");
        let status_of = |ck: &Check, id: &str| {
            ck.checks
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.status.clone())
                .unwrap_or_else(|| panic!("no check {id}: {:?}", ck.checks))
        };
        for id in [
            "config",
            "etcd-binary",
            "data-dir-fs",
            "data-dir-space",
            "state-store",
            "clock",
        ] {
            assert_ne!(status_of(&ck, id), "FAIL", "{id}: {:?}", ck.checks);
        }
        assert_eq!(
            status_of(&ck, "port-client"),
            "PASS",
            "served by our etcd: {:?}",
            ck.checks
        );
        assert_eq!(
            status_of(&ck, "port-agent"),
            "PASS",
            "served by our agent: {:?}",
            ck.checks
        );
        assert_eq!(
            status_of(&ck, "bearer-token-file"),
            "FAIL",
            "a 0644 token file fails"
        );
        assert_eq!(status_of(&ck, "client-key"), "PASS");
        assert_eq!(run.code, 2, "a failure exits 2");
        assert!(
            ck.checks
                .iter()
                .filter(|c| c.status != "PASS" && c.status != "SKIP")
                .all(|c| c.remedy.is_some())
        );
        let human = diag(&["check"], &cfg)?;
        assert!(human.stdout.starts_with("FAIL:"), "{}", human.stdout);
        assert!(human.stdout.contains("chmod 600"), "{}", human.stdout);

        let out_dir = tempfile::tempdir()?;
        let bundle = out_dir.path().join("support.tar.zst");
        let run = diag(&["bundle", "-o", bundle.to_str().unwrap_or_default()], &cfg)?;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let unpacked = tempfile::tempdir()?;
        let files = unpack(&bundle, unpacked.path())?;
        let names: Vec<String> = files
            .iter()
            .map(|(p, _)| p.iter().skip(1).collect::<PathBuf>().display().to_string())
            .collect();
        for want in [
            "manifest.json",
            "config/resolved.json",
            "status.json",
            "events.json",
            "check.json",
            "buffer.json",
            "snapshots.json",
            "logs/etcd.log",
            "logs/edgeplane.log.2026-01-01",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} in the bundle: {names:?}"
            );
        }
        for (p, text) in &files {
            for secret in [&planted.token, &planted.key_line, &planted.url_password] {
                assert!(
                    !text.contains(secret.as_str()),
                    "{} leaks a planted secret",
                    p.display()
                );
            }
        }
        let log = files
            .iter()
            .find(|(p, _)| p.ends_with("logs/edgeplane.log.2026-01-01"))
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        assert!(log.contains("https://<redacted>@region.example"), "{log}");
        assert!(
            log.contains("INFO done"),
            "the rest of the log is kept: {log}"
        );
        let bundled: Status = serde_json::from_str(
            &files
                .iter()
                .find(|(p, _)| p.ends_with("status.json"))
                .map(|(_, t)| t.clone())
                .unwrap_or_default(),
        )?;
        assert_eq!(bundled.host, my_name);

        // ---- Host killed: last-known, no hang ---------------------------
        site.kill_host(me);
        let run = diag(&["status", "--json"], &cfg)?;
        let st: Status = parse(&run, "status (host killed)");
        eprintln!("killed host, status took {:?}: {}", run.took, st.headline);
        assert!(!st.this_host.agent_api && !st.this_host.etcd_api);
        assert!(st.this_host.agent_pids.is_empty());
        assert!(
            !st.this_host.etcd_local.pid_alive,
            "the pid file names a dead etcd"
        );
        let mine = &st.hosts[host_index(&st, &my_name)];
        assert_eq!(mine.source, "last-known", "{mine:?}");
        assert!(
            mine.age_s.is_some() && mine.applied_index.is_some(),
            "from the last live view: {mine:?}"
        );
        assert!(!mine.etcd_up && !mine.agent_up);
        assert!(
            st.hosts
                .iter()
                .filter(|h| h.name != my_name)
                .all(|h| h.source == "live")
        );
        assert_eq!(
            st.agent.source, "last-known",
            "the agent section from the last live view"
        );
        assert_ne!(st.verdict, "ok", "{}", st.headline);
        assert_ne!(st.quorum.state, "lost", "two voters of three still answer");
        assert!(run.code == 1 || run.code == 0, "exit {}", run.code);
        assert_eq!(st.journal.source, "last-known", "{:?}", st.journal);
        let human = diag(&["status"], &cfg)?;
        assert!(human.stdout.contains("does not answer"), "{}", human.stdout);
        assert!(human.stdout.contains("last-known"), "{}", human.stdout);

        let run = diag(&["events", "--json"], &cfg)?;
        let ev: Events = parse(&run, "events (host killed)");
        assert_eq!(ev.source, "last-known", "{ev:?}");
        assert_eq!(run.code, 0);

        let run = diag(&["check", "--json"], &cfg)?;
        let ck: Check = parse(&run, "check (host killed)");
        assert_eq!(status_of(&ck, "agent"), "WARN");
        assert_eq!(status_of(&ck, "etcd-process"), "WARN");
        assert_eq!(status_of(&ck, "port-client"), "PASS", "free again");

        // ---- Damaged state ---------------------------------------------
        let state = site.hosts[me].state_dir.join("state.redb");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&state)?
            .set_len(100)?;
        std::fs::write(
            site.hosts[me].state_dir.join("diag-last.json"),
            b"{not json",
        )?;
        let buffer_dir = site.hosts[me].dir.join("buffer");
        // A buffer "directory" that is not one: inspect cannot read it.
        std::fs::write(&buffer_dir, b"garbage, not a buffer")?;
        let snaps = site.hosts[me].dir.join("snapshots");
        std::fs::create_dir_all(&snaps)?;
        std::fs::write(
            snaps.join("20260101T000000.000Z-host-1-r1.etcd.zst"),
            b"truncated",
        )?;
        let run = diag(&["status", "--json"], &cfg)?;
        let st: Status = parse(&run, "status (damaged)");
        let sn = st
            .snapshots
            .data
            .as_ref()
            .map(|s| (s.count, s.latest.clone()));
        assert!(
            // The agent's own scheduled snapshot may be there too; the damaged
            // one is the newest (written last) and must be flagged.
            matches!(&sn, Some((n, Some(l))) if *n >= 1 && l.footer_error.is_some()),
            "a damaged snapshot is listed and flagged: {sn:?}"
        );
        assert_eq!(st.journal.source, "unavailable");
        let jerr = st.journal.error.clone().unwrap_or_default();
        assert!(jerr.contains("state.redb"), "{jerr}");
        assert_eq!(st.buffer.source, "unavailable");
        assert!(
            st.buffer
                .error
                .as_deref()
                .is_some_and(|e| e.contains("unreadable")),
            "{:?}",
            st.buffer.error
        );
        assert!(
            st.hosts
                .iter()
                .filter(|h| h.name != my_name)
                .all(|h| h.source == "live"),
            "the rest still printed"
        );
        let human = diag(&["status"], &cfg)?;
        assert!(
            human.stdout.contains("Journal [unavailable]"),
            "{}",
            human.stdout
        );
        assert!(human.stdout.contains("Hosts (leader"), "{}", human.stdout);

        let run = diag(&["events"], &cfg)?;
        assert_eq!(run.code, 2, "no journal anywhere: exit 2");
        assert!(run.stdout.contains("state.redb"), "{}", run.stdout);

        std::fs::remove_file(&buffer_dir)?;
        let run = diag(&["status", "--json"], &cfg)?;
        let st: Status = parse(&run, "status (buffer deleted)");
        assert!(
            st.buffer
                .error
                .as_deref()
                .is_some_and(|e| e.contains("does not exist"))
        );

        let run = diag(&["check", "--json"], &cfg)?;
        let ck: Check = parse(&run, "check (damaged)");
        assert_eq!(status_of(&ck, "state-store"), "FAIL");
        assert_eq!(run.code, 2);
        Ok(())
    })
}

/// Quorum loss: two of three voters killed. The first line says so and names
/// the exact recovery command with the freshest surviving host; the votes
/// (who names whom the freshest) and why the agent waits are shown.
#[test]
fn quorum_loss_is_the_first_line_with_the_recovery_command() -> anyhow::Result<()> {
    rt().block_on(async {
        let spec = SiteSpec::new(3, 3, edgeplane_bin());
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..3 {
            site.start_agent(i)?;
        }
        assert!(
            site.wait_full_strength(0, HANG).await,
            "no full strength; logs in {}",
            site.root.display()
        );
        site.kill_host(0);
        site.kill_host(1);
        let cfg = site.hosts[2].config_path.clone();
        let t0 = Instant::now();
        let st: Status = loop {
            let run = diag(&["status", "--json"], &cfg)?;
            let st: Status = parse(&run, "status (quorum lost)");
            // Once the agent too has seen the loss for its window.
            if st.verdict == "quorum-lost"
                && st.recovery.as_ref().is_some_and(|r| r.agent_waits.is_some())
            {
                assert_eq!(run.code, 2);
                break st;
            }
            assert!(
                t0.elapsed() < HANG,
                "quorum loss never reported: {}",
                st.headline
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let r = st
            .recovery
            .as_ref()
            .unwrap_or_else(|| panic!("no recovery plan"));
        assert_eq!(r.from.as_deref(), Some("host-3"));
        assert_eq!(
            r.lost_hosts,
            vec!["host-1".to_string(), "host-2".to_string()]
        );
        // Policy manual: the agent waits for a human. The votes: host-3's
        // agent names itself; host-1 and host-2 do not answer.
        assert_eq!(r.agent_waits.as_deref(), Some("human"), "{r:?}");
        assert_eq!(r.votes_needed, 2);
        let vote = |voter: &str, for_host: Option<&str>| contract::Vote {
            voter: voter.into(),
            for_host: for_host.map(str::to_string),
        };
        assert_eq!(
            r.votes,
            [
                vote("host-1", None),
                vote("host-2", None),
                vote("host-3", Some("host-3"))
            ]
        );
        let human = diag(&["status"], &cfg)?;
        assert!(
            human.stdout.contains(
                "Votes (2 of 3 needed for an automatic rebuild): host-1 -> (no answer), host-2 -> (no answer), host-3 -> host-3"
            ),
            "{}",
            human.stdout
        );
        assert!(
            human.stdout.contains("This host's agent: waiting for a human"),
            "{}",
            human.stdout
        );
        let first = human.stdout.lines().next().unwrap_or_default().to_string();
        assert!(first.starts_with("QUORUM LOST"), "{first}");
        let want = format!(
            "edgeplane recover --config {} --from host-3 --confirm",
            std::fs::canonicalize(&cfg)?.display()
        );
        assert!(first.contains(&want), "{first}\nwant {want}");
        assert!(
            human.stdout.contains("Power off host-1, host-2 first"),
            "{}",
            human.stdout
        );
        assert_eq!(human.code, 2);
        Ok(())
    })
}
