//! `edgeplane recover`: after quorum loss, ask one host's agent to rebuild the
//! cluster from its data (the freshest reachable host unless `--from` names
//! one), or ask this host's agent to rebuild it from a snapshot file
//! (`--snapshot FILE`, verified here first). The agent refuses while any
//! member still has a leader, so running this by mistake on a healthy site
//! changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::BadConfig;
use crate::agent::recovery_plan::Quorum;
use crate::agent::status::RecoverRequest;
use crate::cli::RecoverArgs;

pub fn run(args: &RecoverArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    if !args.confirm {
        anyhow::bail!(
            "recover rebuilds the cluster from one host's data and discards what only the lost hosts had; \
             power off the lost hosts, then run it again with --confirm"
        );
    }
    // A snapshot is checked before anything is asked of any agent: a corrupt
    // or truncated file changes nothing.
    let snapshot = match &args.snapshot {
        Some(file) => Some(verified_snapshot(file)?),
        None => None,
    };
    let cfg = edgeplane_config::load(&args.config)
        .map_err(|e| BadConfig(e.to_string()))?
        .config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tls = crate::tls::SiteTls::load(&cfg)?;
        let http = crate::tls::agent_http_client(tls.as_ref(), Duration::from_secs(3))?;
        let target = match (&args.from, &snapshot) {
            // The snapshot file is on this host: this host's agent restores it.
            (_, Some(_)) => cfg.host.clone(),
            (Some(h), None) => h.clone(),
            (None, None) => freshest(&cfg, &http).await.context(
                "no agent reports which host has the freshest data; name one with --from HOST",
            )?,
        };
        // Operator actions are taken only by the host that acts, from
        // itself: a peer's certificate cannot command a rebuild.
        if target != cfg.host {
            anyhow::bail!(
                "{target} must rebuild from its own data, and an agent takes operator actions only from its own host; \
                 on {target}, run: edgeplane recover --from {target} --confirm"
            );
        }
        let request = RecoverRequest {
            confirm: true,
            snapshot,
        };
        request_and_wait(&cfg, &http, &target, &request).await
    })
}

/// Verifies `file` in full (checksum, decompression, etcd's own hash, bbolt
/// meta pages) and returns its absolute path for the agent.
fn verified_snapshot(file: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(file)
        .with_context(|| format!("cannot read the snapshot {}", file.display()))?;
    let mut progress = edgeplane_snapshot::terminal_reporter("verify");
    match edgeplane_snapshot::verify(&abs, &mut progress) {
        Ok(r) => {
            match &r.info {
                Some(info) => println!(
                    "Verified {}: revision {}, taken {} on {} ({} db bytes).",
                    abs.display(),
                    info.revision,
                    info.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    info.origin,
                    r.db_bytes
                ),
                None => println!(
                    "Verified {}: a plain etcd snapshot ({} db bytes; etcd's own hash matches).",
                    abs.display(),
                    r.db_bytes
                ),
            }
            Ok(abs)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "refusing to recover from {}: it does not verify; nothing was changed (use another snapshot)",
            abs.display()
        ))),
    }
}

/// An agent's `/status` document, if it answers.
async fn agent_status(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Asks `target`'s agent to rebuild (`POST /recover`) and waits until it
/// reports a working cluster. Shared by `--from` and `--snapshot`.
async fn request_and_wait(
    cfg: &edgeplane_config::Config,
    http: &reqwest::Client,
    target: &str,
    request: &RecoverRequest,
) -> anyhow::Result<ExitCode> {
    let node = cfg
        .nodes
        .iter()
        .find(|n| n.name == target)
        .with_context(|| format!("{target} is not a host of this site"))?;
    let url = format!("{}/recover", node.agent_url.trim_end_matches('/'));
    let status_url = format!("{}/status", node.agent_url.trim_end_matches('/'));
    // An agent that saw the loss later than the one that offered this
    // command still says "unknown" (not yet lost for the whole
    // `recovery.quorum_loss_window`): wait for it rather than be refused.
    let window = cfg.recovery.quorum_loss_window;
    let waited = Instant::now();
    let mut said = false;
    let mut line = crate::term::StatusLine::new();
    let doc = loop {
        let doc = agent_status(http, &status_url).await;
        let quorum = doc
            .as_ref()
            .and_then(|d| serde_json::from_value::<Quorum>(d.get("quorum")?.clone()).ok());
        if quorum != Some(Quorum::Unknown) || waited.elapsed() >= window + Duration::from_secs(5) {
            break doc;
        }
        if !said {
            println!(
                "Waiting: {target}'s agent has not yet seen the quorum lost for recovery.quorum_loss_window ({:.0} s).",
                window.as_secs_f64()
            );
            said = true;
        }
        line.show(&format!("{target}: quorum unknown"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    line.clear();
    // The agent's clock before the request: a failed attempt is a journal
    // record started after it (the recovery state sentence moves on at once).
    let asked_ms = doc
        .as_ref()
        .and_then(|d| d.get("now_ms")?.as_i64())
        .unwrap_or(i64::MAX);
    let resp = http
        .post(&url)
        .json(request)
        .send()
        .await
        .with_context(|| format!("could not reach {target}'s agent at {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{target}'s agent refused: {}", text.trim());
    }
    println!("{}", text.trim());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = crate::term::StatusLine::new();
    while Instant::now() < deadline {
        if let Some(doc) = agent_status(http, &status_url).await {
            // On a terminal: what the agent is doing now.
            line.show(&format!(
                "{target}: {}",
                doc.pointer("/recovery/state")
                    .and_then(|s| s.as_str())
                    .unwrap_or("(no state)")
            ));
            if doc.get("quorum").and_then(|q| q.as_str()) == Some("ok") {
                line.clear();
                println!(
                    "Recovered: {target} leads a new cluster in epoch {}; the other hosts rejoin as standbys and are promoted up to {} voters.",
                    doc.get("epoch").and_then(|e| e.as_u64()).unwrap_or(0),
                    cfg.cluster.voters
                );
                return Ok(ExitCode::SUCCESS);
            }
            let failed = crate::agent::status::recent_ops(&doc).iter().find(|o| {
                o["kind"] == "recover"
                    && o["outcome"] == "failed"
                    && o["started_ms"].as_i64().is_some_and(|t| t >= asked_ms)
            });
            if let Some(op) = failed {
                anyhow::bail!(
                    "{target} could not rebuild: {}",
                    op["detail"].as_str().unwrap_or("no detail")
                );
            }
            // Refused by the loop (e.g. an offline defrag took this host's
            // data dir between the request and the next look): nothing
            // was done, and the agent says why.
            if let Some(why) = doc
                .pointer("/recovery/state")
                .and_then(|s| s.as_str())
                .filter(|s| s.starts_with("refused:"))
                && doc
                    .get("now_ms")
                    .and_then(|n| n.as_i64())
                    .is_some_and(|t| t > asked_ms)
            {
                anyhow::bail!("{target}'s agent {why}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "{target} did not report a working cluster within 120 s; see `edgeplane diag status`"
    )
}

/// The freshest host according to any agent that answers.
async fn freshest(cfg: &edgeplane_config::Config, http: &reqwest::Client) -> Option<String> {
    for n in &cfg.nodes {
        let url = format!("{}/status", n.agent_url.trim_end_matches('/'));
        if let Some(doc) = agent_status(http, &url).await
            && let Some(h) = doc.pointer("/recovery/freshest").and_then(|f| f.as_str())
        {
            return Some(h.to_string());
        }
    }
    None
}
