//! `edgeplane snapshot save|list|verify`.
//!
//! The work is done by the `edgeplane-snapshot` crate; this module finds a
//! healthy voter from the config, draws progress on a terminal, and prints
//! tables or JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use edgeplane_config::Config;
use edgeplane_snapshot as snap;
use serde::Serialize;

use crate::BadConfig;
use crate::cli::SnapshotCommand;

pub fn run(cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    match cmd {
        SnapshotCommand::Save { config, out } => save_cmd(&config, out.as_deref()),
        SnapshotCommand::List { config, json } => list_cmd(&config, json),
        SnapshotCommand::Verify { file, json } => verify_cmd(&file, json),
    }
}

fn load(config: &Path) -> anyhow::Result<Config> {
    match edgeplane_config::load(config) {
        Ok(l) => Ok(l.config),
        Err(e) => Err(BadConfig(format!("{e}")).into()),
    }
}

/// A client without a per-request deadline: tonic's request timeout would
/// bound the whole snapshot stream. Calls that must be quick are wrapped in
/// their own timeout.
pub(crate) async fn connect(
    tls: Option<&crate::tls::SiteTls>,
    url: &str,
) -> anyhow::Result<etcd_client::Client> {
    let opts = crate::tls::etcd_options(tls)
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
    etcd_client::Client::connect([url], Some(opts))
        .await
        .with_context(|| format!("could not connect to etcd at {url}"))
}

/// The first healthy voter (answers Status, not a learner, knows a leader),
/// this host first: its snapshot does not cross the network.
async fn healthy_voter(cfg: &Config) -> anyhow::Result<(String, etcd_client::Client)> {
    let mut nodes: Vec<_> = cfg.nodes.iter().collect();
    nodes.sort_by_key(|n| n.name != cfg.host);
    let tls = crate::tls::SiteTls::load(cfg)?;
    let mut why = Vec::new();
    for n in nodes {
        let Ok(mut c) = connect(tls.as_ref(), &n.client_url).await else {
            why.push(format!("{}: cannot connect", n.name));
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(2), c.status()).await {
            Ok(Ok(s)) if s.is_learner() => why.push(format!("{}: learner", n.name)),
            Ok(Ok(s)) if s.leader() == 0 => why.push(format!("{}: no leader", n.name)),
            Ok(Ok(_)) => return Ok((n.client_url.clone(), c)),
            Ok(Err(e)) => why.push(format!("{}: {e}", n.name)),
            Err(_) => why.push(format!("{}: status timed out", n.name)),
        }
    }
    bail!(
        "no healthy voter to take a snapshot from ({})",
        why.join("; ")
    )
}

/// Bytes for people: KiB below 1 MiB, MiB above.
pub(crate) fn mib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

fn save_cmd(config: &Path, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    let dest = match out {
        Some(p) => p.to_path_buf(),
        None => {
            std::fs::create_dir_all(&cfg.paths.snapshot_dir).with_context(|| {
                format!("could not create {}", cfg.paths.snapshot_dir.display())
            })?;
            cfg.paths.snapshot_dir.clone()
        }
    };
    let rt = crate::runtime()?;
    let meta = rt.block_on(async {
        let (url, mut client) = healthy_voter(&cfg).await?;
        let opts = snap::SaveOptions::new(cfg.host.clone(), url);
        let mut progress = snap::terminal_reporter("snapshot");
        snap::save(&mut client, &dest, &opts, &mut progress)
            .await
            .context("snapshot failed")
    })?;
    println!("saved     {}", meta.path.display());
    println!(
        "size      {} compressed, {} db ({:.1}x)",
        mib(meta.file_bytes),
        mib(meta.info.db_bytes),
        meta.info.db_bytes as f64 / meta.file_bytes.max(1) as f64
    );
    println!("revision  {}", meta.info.revision);
    println!("from      {}", meta.info.endpoint);
    println!("time      {}", meta.info.created_at.to_rfc3339());
    println!("sha256    {}", meta.info.sha256);
    Ok(ExitCode::SUCCESS)
}

/// One row of `snapshot list`.
#[derive(Serialize)]
struct Listed {
    name: String,
    origin: String,
    revision: i64,
    /// Size of the compressed file.
    file_bytes: u64,
    sha256: String,
    taken_at: chrono::DateTime<chrono::Utc>,
    age_s: f64,
    /// Hosts known to hold a copy (from the catalog; this host only, from files).
    copies: Vec<String>,
    /// This host holds a copy; its path.
    path: Option<PathBuf>,
}

/// The rows, and where they came from: the agent's catalog (which knows the
/// copies on every host) or, when the state store cannot be read or has no
/// catalog yet, this host's snapshot files.
fn listing(cfg: &Config) -> anyhow::Result<(Vec<Listed>, String)> {
    let dir = &cfg.paths.snapshot_dir;
    let files = snap::list(dir).with_context(|| format!("could not list {}", dir.display()))?;
    let now = chrono::Utc::now();
    let age =
        |t: chrono::DateTime<chrono::Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
    let catalog = crate::diag::local::read_journal(&cfg.paths.state_dir, 1)
        .map(|r| r.catalog)
        .unwrap_or_default();
    if catalog.is_empty() {
        let rows = files
            .into_iter()
            .map(|m| Listed {
                age_s: age(m.info.created_at),
                name: m.name,
                origin: m.info.origin,
                revision: m.info.revision,
                file_bytes: m.file_bytes,
                sha256: m.info.sha256,
                taken_at: m.info.created_at,
                copies: vec![cfg.host.clone()],
                path: Some(m.path),
            })
            .collect();
        return Ok((rows, format!("files in {}", dir.display())));
    }
    let rows = catalog
        .into_iter()
        .map(|e| {
            let taken_at = chrono::DateTime::from_timestamp_millis(e.taken_at_ms).unwrap_or(now);
            let path = files
                .iter()
                .find(|m| m.name == e.name)
                .map(|m| m.path.clone());
            Listed {
                age_s: age(taken_at),
                name: e.name,
                origin: e.origin,
                revision: e.revision,
                file_bytes: e.file_bytes,
                sha256: e.sha256,
                taken_at,
                copies: e.copies.into_iter().collect(),
                path,
            }
        })
        .collect();
    Ok((rows, "the agent's catalog".into()))
}

/// An age for people: `42s`, `17m`, `5h`, `3d`.
fn human_age(s: f64) -> String {
    match s as u64 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn list_cmd(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    let (rows, source) = listing(&cfg)?;
    if json {
        let doc = serde_json::json!({ "schema": LIST_SCHEMA, "source": source, "snapshots": rows });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no snapshots ({source})");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<48} {:<12} {:<20} {:>6} {:>10} {:>10}  COPIES",
        "NAME", "ORIGIN", "TAKEN (UTC)", "AGE", "REVISION", "FILE"
    );
    for r in &rows {
        println!(
            "{:<48} {:<12} {:<20} {:>6} {:>10} {:>10}  {}{}",
            r.name,
            r.origin,
            r.taken_at.format("%Y-%m-%d %H:%M:%S"),
            human_age(r.age_s),
            r.revision,
            mib(r.file_bytes),
            r.copies.join(","),
            if r.path.is_some() { "" } else { " (not here)" },
        );
    }
    println!("{} snapshot(s), from {source}", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// The names and versions of `snapshot list --json` and `snapshot verify --json`.
pub const LIST_SCHEMA: &str = "edgeplane.snapshot.list/1";
pub const VERIFY_SCHEMA: &str = "edgeplane.snapshot.verify/1";

fn verify_cmd(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let etcdctl = snap::etcdctl_bin();
    let mut progress = snap::terminal_reporter("verify");
    let result = if etcdctl.exists() {
        snap::verify_with_etcdctl(file, &etcdctl, &mut progress)
    } else {
        snap::verify(file, &mut progress)
    };
    match (result, json) {
        (Ok(r), true) => {
            let mut v = serde_json::to_value(&r)?;
            v["schema"] = serde_json::Value::from(VERIFY_SCHEMA);
            v["ok"] = serde_json::Value::Bool(true);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        (Ok(r), false) => {
            println!("OK {}", file.display());
            for c in &r.checks {
                println!("  ✓ {c}");
            }
            if r.etcdctl.is_none() {
                println!(
                    "  (etcdctl not found at {}: bbolt walk skipped)",
                    etcdctl.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), true) => {
            let v = serde_json::json!({
                "schema": VERIFY_SCHEMA,
                "ok": false,
                "path": file,
                "corrupt": e.is_corruption(),
                "error": e.to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::FAILURE)
        }
        (Err(e), false) => {
            let mut msg = format!("{e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg += &format!(": {s}");
                src = s.source();
            }
            if e.is_corruption() {
                eprintln!("CORRUPT: {msg}\nDo not restore this file; use another snapshot.");
            } else {
                eprintln!("could not verify: {msg}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
