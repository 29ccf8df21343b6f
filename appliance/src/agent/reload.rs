//! SIGHUP (`systemctl reload edgeplane`): reads the config file again and
//! applies what [`super::reload_plan::decide_reload`] allows, with etcd
//! left running. The metrics pipeline is stopped (its buffer synced) and
//! started again with the new `[metrics]`, `[uplink]` and `[buffer]`; the
//! loop reads `[snapshots]` and `[defrag]` from the host's config on its
//! next tick. What needs a restart is logged and shown in `/status`
//! (`reload.pending_restart`). A witness reloads the same way: it runs
//! the metrics pipeline and a log level too, and no snapshots or defrag.

use std::path::Path;

use edgeplane_config::Config;

use super::reload_plan::{Reloadable, decide_reload};
use super::status::{ReloadDoc, Shared};

/// Reads `config_path` and applies it over `running` (the loop's config,
/// which it then reads on its next tick), recording the outcome in `shared`.
pub async fn apply(running: &mut Config, shared: &Shared, config_path: &Path) {
    let at_ms = chrono::Utc::now().timestamp_millis();
    let file = match edgeplane_config::load(config_path) {
        Ok(l) => l.config,
        Err(e) => {
            tracing::error!("SIGHUP: the configuration file is not valid and is ignored: {e}");
            record(
                shared,
                ReloadDoc {
                    at_ms,
                    error: Some(e.to_string()),
                    ..ReloadDoc::default()
                },
            );
            return;
        }
    };
    let plan = decide_reload(running, &file);
    let mut error = None;
    for part in &plan.apply {
        match part {
            Reloadable::Pipeline => restart_pipeline(shared, &plan.effective).await,
            Reloadable::LogLevel => {
                if let Err(e) = crate::logging::set_level(&plan.effective.log.level) {
                    tracing::error!("SIGHUP: log.level not changed: {e:#}");
                    error = Some(format!("{e:#}"));
                }
            }
            Reloadable::Snapshots | Reloadable::Defrag => {}
        }
    }
    *running = plan.effective;
    if plan.apply.is_empty() && plan.pending_restart.is_empty() {
        tracing::info!("SIGHUP: the configuration file has no changes.");
    } else if !plan.apply.is_empty() {
        tracing::warn!("SIGHUP: applied {:?} with etcd left running.", plan.apply);
    }
    if !plan.pending_restart.is_empty() {
        tracing::warn!(
            "SIGHUP: changed, but applied only at the agent's next start (running values kept): {}.",
            plan.pending_restart.join(", ")
        );
    }
    record(
        shared,
        ReloadDoc {
            at_ms,
            applied: plan.apply,
            pending_restart: plan.pending_restart.iter().map(|k| k.to_string()).collect(),
            error,
        },
    );
}

fn record(shared: &Shared, doc: ReloadDoc) {
    if let Ok(mut r) = shared.reload.lock() {
        *r = Some(doc);
    }
}

/// Stops the running pipeline (it syncs its buffer) and starts one with
/// `cfg` when metrics are enabled. A pipeline that does not start is
/// logged; etcd supervision goes on without it, as at start.
async fn restart_pipeline(shared: &Shared, cfg: &Config) {
    let old = shared.metrics.lock().ok().and_then(|mut m| m.take());
    if let Some(p) = old
        && let Err(e) = p.shutdown().await
    {
        tracing::warn!("SIGHUP: the metrics pipeline did not stop cleanly: {e}");
    }
    if !cfg.metrics.enabled {
        return;
    }
    match edgeplane_metrics::pipeline::Pipeline::start(cfg, &cfg.paths.buffer_dir, vec![]) {
        Ok(h) => {
            if let Ok(mut m) = shared.metrics.lock() {
                *m = Some(h);
            }
        }
        Err(e) => tracing::error!(
            "SIGHUP: the metrics pipeline did not start again: {e}. etcd supervision continues without it."
        ),
    }
}
