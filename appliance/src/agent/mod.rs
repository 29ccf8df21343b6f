//! The agent: `edgeplane agent --config FILE`, one per host.
//!
//! One loop per host, every `cluster.reconcile_interval`:
//!
//! 1. **observe** every host's etcd and agent (`observe`);
//! 2. **supervise** the local etcd: start, adopt, restart, or, when the
//!    cluster removed this member, move its data aside and rejoin (`local`);
//! 3. if this host is not a member, **join** as the standby when the one
//!    learner slot is free and it is first in line (`local`);
//! 4. if the local etcd is the leader, **coordinate**: one step of `plan`
//!    (remove a dead voter, promote the standby, evict a stuck learner),
//!    journalled before and after (`coordinate`);
//! 5. if the leader's agent is dead or stalled, move leadership to a healthy
//!    voter so that some agent coordinates again.
//!
//! Long operations (a fence, a defragmentation, a compaction, the
//! quorum-loss rebuild) are decided and journalled by the loop but run off
//! it, one at a time, owned by `operation::Runner` and shown in `/status` as
//! `operation`: the loop keeps observing and publishing meanwhile, and
//! systemd's watchdog is fed from the loop's progress only (`notify`). An
//! operation that works on this host's etcd (the offline defrag, the
//! rebuild) is lent its supervisor; supervision leaves etcd alone until it
//! ends, then starts it by its normal path.
//!
//! Membership steps are serialised by etcd's raft (only the leader commits
//! them), and each step is decided against the member list read in the same
//! tick, so two agents that both believe they coordinate can never promote
//! two standbys for one loss (etcd 3.4 has a single learner slot) nor exceed
//! the configured voter count (a promotion is only ever sent while voters <
//! configured).

pub mod api;
pub mod coordinate;
pub mod defrag;
pub mod defrag_plan;
pub mod disk_fault;
pub mod etcd;
pub mod etcd_control;
pub mod host;
pub mod local;
pub mod notify;
pub mod observe;
pub mod operation;
pub mod plan;
pub mod recover;
pub mod recovery_plan;
pub mod reload;
pub mod reload_plan;
pub mod scrub;
pub mod snapshots;
pub mod start_plan;
pub mod state;
pub mod status;
pub mod witness;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgeplane_config::Config;

use crate::cli::AgentArgs;
use crate::{BadConfig, logging};

/// Serves `app` on `listener` until `stop` turns true.
fn spawn_server(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    crl: crate::crl::CrlState,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = api::serve(listener, app, tls, crl, shutdown).await {
            tracing::error!("{what} stopped: {e}.");
        }
    })
}

fn shared_metrics_take(
    shared: &status::Shared,
) -> Option<edgeplane_metrics::pipeline::PipelineHandle> {
    shared.metrics.lock().ok().and_then(|mut m| m.take())
}

/// A witness's loop: observe and publish its vote until SIGTERM or SIGINT;
/// SIGHUP reloads the config as on any host (without a handler, SIGHUP's
/// default action would end the process).
async fn run_witness(
    cfg: Config,
    config_path: &std::path::Path,
    shared: Arc<status::Shared>,
    tls: Option<&crate::tls::SiteTls>,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut interval = tokio::time::interval(witness::interval(&cfg));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut w = witness::Witness::new(cfg, shared.clone(), tls)?;
    let mut ready_sent = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                w.tick().await;
                shared.tick();
                notify::notify("WATCHDOG=1");
                if !ready_sent {
                    notify::notify("READY=1");
                    ready_sent = true;
                }
            }
            _ = hup.recv() => reload::apply(w.config_mut(), &shared, config_path).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify::notify("STOPPING=1");
    Ok(())
}

/// `edgeplane agent`: load the config (exit 78 if bad), then run until SIGTERM.
pub fn main(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let loaded = match edgeplane_config::load(&args.config) {
        Ok(l) => l,
        Err(e) => return Err(BadConfig(format!("{e}")).into()),
    };
    let cfg = loaded.config;
    let _guard = logging::init_agent(
        &cfg.log.level,
        &cfg.log.dir,
        cfg.log.to_files,
        cfg.log.retention_files,
    )?;
    for w in &loaded.warnings {
        tracing::warn!("Config: {w}");
    }
    crate::runtime()?.block_on(run(cfg, args.config.clone()))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(cfg: Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let me = cfg
        .nodes
        .iter()
        .chain(&cfg.witnesses)
        .find(|n| n.name == cfg.host)
        .cloned()
        .ok_or_else(|| BadConfig(format!("host {:?} is not among the nodes", cfg.host)))?;
    // Key permissions and every PEM file are checked before anything starts.
    let tls = crate::tls::SiteTls::load(&cfg).map_err(|e| BadConfig(e.to_string()))?;
    let server_tls = match &tls {
        Some(t) => Some(t.server_config().map_err(|e| BadConfig(e.to_string()))?),
        None => None,
    };
    let state = Arc::new(state::State::open(&cfg.paths.state_dir).with_context(|| {
        format!(
            "could not open the agent state in {}",
            cfg.paths.state_dir.display()
        )
    })?);
    let shared = Arc::new(status::Shared::new(
        &cfg,
        server_tls.is_some(),
        tls.as_ref().map(|t| t.crl.clone()).unwrap_or_default(),
    ));

    let addr = api::listen_addr(&me.agent_url).context("agent_url has no host:port")?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("could not listen on {addr} (agent_url {})", me.agent_url))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_task = spawn_server(
        listener,
        api::router(
            shared.clone(),
            cfg.paths.snapshot_dir.clone(),
            status::snapshot_budget(&cfg),
        ),
        server_tls,
        shared.crl.clone(),
        stop_rx.clone(),
        "The agent API",
    );
    if let Some(addr) = &cfg.tls.health_listen {
        let health = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr} (tls.health_listen)"))?;
        spawn_server(
            health,
            api::health_router(shared.clone()),
            None,
            crate::crl::CrlState::default(),
            stop_rx.clone(),
            "The health listener",
        );
    }
    tracing::info!(host = %cfg.host, api = %me.agent_url, "Agent started.");

    if cfg.metrics.enabled {
        match edgeplane_metrics::pipeline::Pipeline::start(&cfg, &cfg.paths.buffer_dir, vec![]) {
            Ok(h) => {
                if let Ok(mut m) = shared.metrics.lock() {
                    *m = Some(h);
                }
            }
            // Metrics are never a reason to leave etcd unguarded: log and go on.
            Err(e) => tracing::error!(
                "The metrics pipeline did not start: {e}. etcd supervision continues without it."
            ),
        }
    }
    if cfg.is_witness() {
        // The agent only: no etcd, no membership, no state to keep.
        drop(state);
        tracing::info!(
            "This node is a witness: it runs no etcd and votes for the freshest etcd host it sees."
        );
        run_witness(cfg, &config_path, shared.clone(), tls.as_ref()).await?;
        let pipeline = shared_metrics_take(&shared);
        if let Some(p) = pipeline
            && let Err(e) = p.shutdown().await
        {
            tracing::warn!("The metrics pipeline did not stop cleanly: {e}");
        }
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
        tracing::info!("Witness stopped.");
        return Ok(());
    }
    let mut agent = local::Agent::new(cfg, me, state, shared.clone(), tls)?;
    agent.host.config_path = config_path.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut interval = tokio::time::interval(agent.host.cfg.cluster.reconcile_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_sent = false;
    let mut last_status = String::new();
    // The watchdog follows the loop's progress, not any operation's.
    let watchdog = notify::watchdog_timeout();
    if let Some(timeout) = watchdog {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(notify::feed_every(timeout));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if shared.ticks_done() && notify::should_feed(shared.loop_age(), timeout) {
                            notify::notify("WATCHDOG=1");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let started = Instant::now();
                agent.tick().await;
                shared.tick();
                if watchdog.is_none() {
                    notify::notify("WATCHDOG=1");
                }
                let line = shared.status().one_line();
                if !ready_sent {
                    notify::notify(&format!("READY=1\nSTATUS={line}"));
                    ready_sent = true;
                    last_status = line;
                } else if line != last_status {
                    notify::notify(&format!("STATUS={line}"));
                    last_status = line;
                }
                // A loop this slow cannot coordinate the site in time: hand the
                // role (etcd leadership) to a peer whose loop is healthy.
                let took = started.elapsed();
                if took > shared.stall_after && agent.host.is_coordinator() {
                    tracing::warn!("This reconcile took {:.1}s; giving up the coordinating role.", took.as_secs_f64());
                    coordinate::hand_off_leadership(&mut agent.host).await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let shared = agent.host.shared.clone();
                reload::apply(&mut agent.host.cfg, &shared, &config_path).await
            }
        }
    }
    notify::notify("STOPPING=1");
    if notify::keep_etcd_on_stop() {
        tracing::info!(
            "Stopping the agent only (upgrade): etcd keeps running and the next agent adopts it."
        );
    } else {
        tracing::info!(
            "Stopping: moving leadership away if this member leads, then stopping etcd."
        );
        agent.shutdown().await;
    }
    let pipeline = shared.metrics.lock().ok().and_then(|mut m| m.take());
    if let Some(p) = pipeline
        && let Err(e) = p.shutdown().await
    {
        tracing::warn!("The metrics pipeline did not stop cleanly: {e}");
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
    tracing::info!("Agent stopped.");
    Ok(())
}
