//! What a SIGHUP (`systemctl reload edgeplane`) may change while the agent
//! and its etcd keep running: a pure decision over the running config and
//! the file's new one.
//!
//! Why it exists: a new scrape target or buffer budget must not cost an
//! etcd restart (a member restart is a leader election when it leads, and
//! a moment with one voter fewer). What only a restart can change is named
//! and kept at its running value until then, as Patroni reports
//! `pending_restart`: the running config stays one coherent config.

use edgeplane_config::Config;
use serde::{Deserialize, Serialize};

/// A part of the config a reload applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reloadable {
    /// `[metrics]`, `[uplink]` and `[buffer]`: the metrics pipeline is
    /// stopped (its buffer synced) and started again with them.
    Pipeline,
    /// `[snapshots]` schedule, retention and copies (not its space budget,
    /// which the API's upload route holds).
    Snapshots,
    /// `[defrag]`.
    Defrag,
    /// `log.level`.
    LogLevel,
}

/// What to do with the file's new config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadPlan {
    /// The parts that changed and are applied now.
    pub apply: Vec<Reloadable>,
    /// Keys that changed but only take effect at the agent's next start
    /// (their running values are kept).
    pub pending_restart: Vec<&'static str>,
    /// The config to run with from now on: the running one with the
    /// applied parts taken from the file.
    #[serde(skip)]
    pub effective: Config,
}

/// Compares the running config with the file's; never changes a part that
/// needs a restart.
pub fn decide_reload(running: &Config, file: &Config) -> ReloadPlan {
    let mut effective = running.clone();
    let mut apply = Vec::new();
    if running.metrics != file.metrics
        || running.uplink != file.uplink
        || running.buffer != file.buffer
    {
        effective.metrics = file.metrics.clone();
        effective.uplink = file.uplink.clone();
        effective.buffer = file.buffer.clone();
        apply.push(Reloadable::Pipeline);
    }
    // The file's [snapshots] with the running space budget (restart-only):
    // a field added to the section later is reloadable by default.
    let snapshots = edgeplane_config::Snapshots {
        max_bytes: running.snapshots.max_bytes,
        min_free_bytes: running.snapshots.min_free_bytes,
        ..file.snapshots.clone()
    };
    if snapshots != running.snapshots {
        effective.snapshots = snapshots;
        apply.push(Reloadable::Snapshots);
    }
    if running.defrag != file.defrag {
        effective.defrag = file.defrag.clone();
        apply.push(Reloadable::Defrag);
    }
    if running.log.level != file.log.level {
        effective.log.level = file.log.level.clone();
        apply.push(Reloadable::LogLevel);
    }
    let mut pending_restart = Vec::new();
    let mut pending = |changed: bool, key: &'static str| {
        if changed {
            pending_restart.push(key);
        }
    };
    pending(running.profile != file.profile, "profile");
    pending(running.host != file.host, "host");
    pending(running.site != file.site, "site");
    pending(
        running.nodes != file.nodes || running.witnesses != file.witnesses,
        "nodes",
    );
    pending(running.cluster != file.cluster, "cluster");
    pending(running.etcd != file.etcd, "etcd");
    pending(running.paths != file.paths, "paths");
    pending(running.recovery != file.recovery, "recovery");
    pending(running.tls != file.tls, "tls");
    pending(
        running.snapshots.max_bytes != file.snapshots.max_bytes
            || running.snapshots.min_free_bytes != file.snapshots.min_free_bytes,
        "snapshots.max_bytes / snapshots.min_free_bytes",
    );
    // Everything in [log] but the level needs a restart.
    pending(
        edgeplane_config::Log {
            level: running.log.level.clone(),
            ..file.log.clone()
        } != running.log,
        "log.dir / log.to_files / log.retention_files",
    );
    ReloadPlan {
        apply,
        pending_restart,
        effective,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn base() -> Config {
        edgeplane_config::defaults(edgeplane_config::Profile::Edge)
    }

    /// One change per bit: reloadable ones first, then restart-only ones.
    fn mutate(c: &mut Config, bits: u16) {
        let on = |i: u16| bits & (1 << i) != 0;
        if on(0) {
            c.metrics.scrape_interval += Duration::from_secs(7);
        }
        if on(1) {
            c.uplink.enabled = !c.uplink.enabled;
        }
        if on(2) {
            c.buffer.budget_bytes += 1;
        }
        if on(3) {
            c.snapshots.interval += Duration::from_secs(60);
        }
        if on(4) {
            c.defrag.enabled = !c.defrag.enabled;
        }
        if on(5) {
            c.log.level = format!("{},edgeplane=debug", c.log.level);
        }
        if on(6) {
            c.cluster.voters += 2;
        }
        if on(7) {
            c.etcd.quota_backend_bytes += 1;
        }
        if on(8) {
            c.recovery.quorum_loss_window += Duration::from_secs(1);
        }
        if on(9) {
            c.tls.allow_plaintext = !c.tls.allow_plaintext;
        }
        if on(10) {
            c.snapshots.max_bytes += 1;
        }
        if on(11) {
            c.site.push('x');
        }
    }

    /// The parts that need a restart, as one value.
    fn restart_only(c: &Config) -> String {
        format!(
            "{:?}",
            (
                (&c.profile, &c.host, &c.site, &c.nodes, &c.witnesses),
                (&c.cluster, &c.etcd, &c.paths, &c.recovery, &c.tls),
                (c.snapshots.max_bytes, c.snapshots.min_free_bytes),
                (&c.log.dir, c.log.to_files, c.log.retention_files),
            )
        )
    }

    proptest! {
        /// Safety: a reload never changes a part that needs a restart; it
        /// names every such change; and every reloadable change is applied.
        #[test]
        fn reload_applies_what_it_may_and_names_the_rest(bits in 0u16..(1 << 12)) {
            let running = base();
            let mut file = base();
            mutate(&mut file, bits);
            let plan = decide_reload(&running, &file);
            prop_assert_eq!(restart_only(&plan.effective), restart_only(&running));
            prop_assert_eq!(plan.pending_restart.is_empty(), bits >> 6 == 0);
            prop_assert_eq!(&plan.effective.metrics, &file.metrics);
            prop_assert_eq!(&plan.effective.uplink, &file.uplink);
            prop_assert_eq!(&plan.effective.buffer, &file.buffer);
            prop_assert_eq!(plan.effective.snapshots.interval, file.snapshots.interval);
            prop_assert_eq!(&plan.effective.defrag, &file.defrag);
            prop_assert_eq!(&plan.effective.log.level, &file.log.level);
            prop_assert_eq!(plan.apply.is_empty(), bits & 0b11_1111 == 0);
        }
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let plan = decide_reload(&base(), &base());
        assert!(plan.apply.is_empty() && plan.pending_restart.is_empty());
    }
}
