//! Everything `diag status` reads, probed and read at once, and the cache of
//! the last live answers it keeps for when nothing answers.

use super::*;

pub async fn gather<'a>(cfg: &'a Config, config_path: &Path) -> Facts<'a> {
    let local_cfg = cfg.clone();
    let cpath = config_path.to_path_buf();
    let local = tokio::task::spawn_blocking(move || {
        let c = &local_cfg;
        (
            local::etcd_local(&c.etcd.data_dir, &c.paths.state_dir),
            local::agent_pids(&cpath),
            local::read_journal(&c.paths.state_dir, 200),
            read_buffer(c),
            local::list_snapshots(&c.paths.snapshot_dir),
            local::read_cache::<Cache>(&c.paths.state_dir),
        )
    });
    let probes = probe::probe_all(cfg, PROBE_TIMEOUT);
    let (probes, local) = tokio::join!(probes, local);
    let now = Utc::now();
    let (etcd_local, agent_pids, journal, buffer, snapshots, cache) = match local {
        Ok(l) => l,
        Err(e) => {
            let err = format!("reading local state failed: {e}");
            (
                local::etcd_local(&cfg.etcd.data_dir, &cfg.paths.state_dir),
                Vec::new(),
                Err(err.clone()),
                Err(err.clone()),
                Err(err),
                None,
            )
        }
    };
    Facts {
        cfg,
        config_path: crate::diag::display_config_path(config_path)
            .display()
            .to_string(),
        now,
        probes,
        etcd_local,
        agent_pids,
        journal,
        buffer,
        snapshots,
        cache,
    }
}

/// The buffer summary, read-only; a clear sentence when there is none.
pub fn read_buffer(cfg: &Config) -> Result<edgeplane_buffer::Summary, String> {
    let dir = &cfg.paths.buffer_dir;
    if !dir.exists() {
        return Err(if cfg.metrics.enabled {
            format!(
                "{} does not exist (nothing buffered yet, or the directory was removed)",
                dir.display()
            )
        } else {
            format!("{} does not exist (metrics.enabled = false)", dir.display())
        });
    }
    edgeplane_buffer::inspect(dir).map_err(|e| format!("{} is unreadable: {e}", dir.display()))
}

pub(super) fn save_cache(cfg: &Config, report: &StatusReport, now: DateTime<Utc>) {
    let live_hosts: Vec<HostRow> = report
        .hosts
        .iter()
        .filter(|h| h.source == Source::Live)
        .cloned()
        .collect();
    let agent = (report.agent.source == Source::Live)
        .then(|| report.agent.data.clone())
        .flatten();
    if live_hosts.is_empty() && agent.is_none() {
        return;
    }
    // Keep the previous rows of hosts that did not answer this time.
    let mut prev = local::read_cache::<Cache>(&cfg.paths.state_dir).unwrap_or_default();
    let mut hosts = live_hosts;
    for h in prev.hosts.drain(..) {
        if !hosts.iter().any(|x| x.name == h.name) {
            hosts.push(h);
        }
    }
    local::write_cache(
        &cfg.paths.state_dir,
        &Cache {
            saved_ms: now.timestamp_millis(),
            hosts,
            agent: agent.or(prev.agent),
            link: (report.link.source == Source::Live)
                .then(|| report.link.data.clone())
                .flatten()
                .or(prev.link),
        },
    );
}
