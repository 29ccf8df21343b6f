//! Profile defaults, and resolving the file against them.
//!
//! Every default lives in [`defaults`]; `config/README.md` documents the same
//! values (a test compares the two for both profiles).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::*;
use crate::raw::RawConfig;

pub const DEFAULT_ROOT: &str = "/var/lib/edgeplane";
pub const DEFAULT_LOG_DIR: &str = "/var/log/edgeplane";
pub const DEFAULT_ETCD_BINARY: &str = "/usr/bin/etcd";
/// Where `edgeplane certs init` output is installed on a host.
pub const DEFAULT_TLS_DIR: &str = "/etc/edgeplane/tls";
/// Used when the file has no `profile`.
pub const DEFAULT_PROFILE: Profile = Profile::Edge;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn days(d: u64) -> Duration {
    Duration::from_secs(d * 86_400)
}

/// Default `cluster.voters` for a site of `nodes` hosts: the largest of 1, 3
/// and 5 that leaves at least one host over for the standby (4–5 hosts → 3,
/// 6 or more → 5), except that 3 hosts get 3 voters: they ride out the loss
/// of any one host with no action, where 1 voter + 1 standby + 1 spare stops
/// all writes when the voter's host dies. 1–2 hosts → 1.
pub fn default_voters(nodes: usize) -> usize {
    if nodes == 3 {
        return 3;
    }
    [5, 3, 1].into_iter().find(|&v| v < nodes).unwrap_or(1)
}

/// Paths derived from `root` unless set: state/, snapshots/, buffer/, etcd/.
pub fn derived_paths(root: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        root.join("state"),
        root.join("snapshots"),
        root.join("buffer"),
        root.join("etcd"),
    )
}

fn rule(metric: &str, class: &str) -> Rule {
    Rule {
        metric: metric.to_string(),
        labels: BTreeMap::new(),
        class: class.to_string(),
    }
}

/// The classification rules used when the file does not set `metrics.rules`.
pub fn default_rules(profile: Profile) -> Vec<Rule> {
    match profile {
        Profile::Region => Vec::new(),
        Profile::Edge => vec![
            // Is the site alive and is etcd healthy: needed to understand any outage.
            rule("up", "critical"),
            rule("etcd_server_has_leader", "critical"),
            rule("etcd_server_is_leader", "critical"),
            rule("etcd_server_is_learner", "critical"),
            rule("etcd_server_leader_changes_seen_total", "critical"),
            rule("etcd_server_health_*", "critical"),
            rule("etcd_server_proposals_failed_total", "critical"),
            rule("etcd_mvcc_db_total_size_in_bytes", "critical"),
            rule("etcd_server_quota_backend_bytes", "critical"),
            rule("edgeplane_*", "critical"),
            rule("kube_node_status_condition", "critical"),
            rule("kube_lease_*", "critical"),
            // Latencies: the first thing asked after "was it up".
            rule("*_duration_seconds*", "high"),
            // Runtime internals: useful, first to go.
            rule("go_*", "low"),
            rule("process_*", "low"),
            rule("promhttp_*", "low"),
            rule("*_build_info", "low"),
        ],
    }
}

/// `cluster.standby_behind_limit` defaults to this many times
/// `cluster.learner_stuck_after`.
pub const STANDBY_BEHIND_FACTOR: u32 = 5;

/// The complete defaults of a profile. `host`, `site` and `nodes` are empty:
/// they have no default.
pub fn defaults(profile: Profile) -> Config {
    let edge = profile == Profile::Edge;
    let pick = |e: Duration, r: Duration| if edge { e } else { r };
    let root = PathBuf::from(DEFAULT_ROOT);
    let (state_dir, snapshot_dir, buffer_dir, etcd_dir) = derived_paths(&root);
    Config {
        profile,
        host: String::new(),
        site: String::new(),
        nodes: Vec::new(),
        witnesses: Vec::new(),
        cluster: Cluster {
            voters: 1,
            manage_membership: true,
            failure_detection: pick(secs(1), secs(5)),
            etcd_restart_grace: pick(secs(3), secs(10)),
            promotion_max_lag: 1000,
            promotion_stable_for: pick(secs(1), secs(3)),
            learner_stuck_after: pick(secs(60), secs(120)),
            standby_behind_limit: pick(secs(60), secs(120)) * STANDBY_BEHIND_FACTOR,
            reconcile_interval: pick(ms(200), secs(1)),
            flap_window: secs(600),
        },
        etcd: Etcd {
            binary: PathBuf::from(DEFAULT_ETCD_BINARY),
            data_dir: etcd_dir,
            heartbeat: ms(100),
            election_timeout: secs(1),
            quota_backend_bytes: 2 * GIB,
            pre_vote: true,
            extra_args: Vec::new(),
        },
        paths: Paths {
            root,
            state_dir,
            snapshot_dir,
            buffer_dir,
        },
        snapshots: Snapshots {
            enabled: true,
            interval: pick(secs(30 * 60), secs(3600)),
            retain_count: 24,
            retain_age: days(7),
            copy_to_peers: true,
            scrub_interval: days(1),
            max_bytes: 8 * GIB,
            // Resolved to etcd.quota_backend_bytes when unset (below).
            min_free_bytes: 2 * GIB,
        },
        recovery: Recovery {
            quorum_loss_policy: QuorumLossPolicy::Manual,
            fence_command: Vec::new(),
            fence_environment_file: None,
            quorum_loss_window: pick(secs(10), secs(30)),
            self_fence_after: pick(secs(5), secs(15)),
        },
        defrag: Defrag {
            enabled: true,
            free_ratio: 0.5,
            min_db_bytes: 64 * MIB,
            check_interval: secs(5 * 60),
        },
        metrics: Metrics {
            enabled: true,
            scrape_interval: secs(15),
            scrape_timeout: secs(10),
            scrape_etcd: true,
            scrape_self: true,
            targets: Vec::new(),
            classes: ["critical", "high", "normal", "low"]
                .map(String::from)
                .to_vec(),
            default_class: "normal".to_string(),
            rules: default_rules(profile),
            external_labels: BTreeMap::new(),
        },
        buffer: Buffer {
            budget_bytes: if edge { 2 * GIB } else { 512 * MIB },
            segment_bytes: 8 * MIB,
            fsync: if edge {
                FsyncPolicy::Batch
            } else {
                FsyncPolicy::Interval
            },
            fsync_interval: secs(1),
            max_age: days(30),
        },
        uplink: Uplink {
            enabled: edge,
            url: None,
            timeout: secs(10),
            backfill_rate: 20_000,
            batch_samples: 2000,
            max_sample_age: days(29),
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            headers: BTreeMap::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            dead_letter_bytes: 64 * MIB,
            out_of_order: OutOfOrder::Auto,
        },
        tls: Tls {
            ca_file: Path::new(DEFAULT_TLS_DIR).join("ca.crt"),
            cert_file: Path::new(DEFAULT_TLS_DIR).join("host.crt"),
            key_file: Path::new(DEFAULT_TLS_DIR).join("host.key"),
            allow_plaintext: false,
            health_listen: None,
        },
        log: Log {
            dir: PathBuf::from(DEFAULT_LOG_DIR),
            level: "info".to_string(),
            to_files: true,
            retention_files: 7,
        },
    }
}

/// Apply the profile's defaults to everything the file left out.
pub fn resolve(raw: RawConfig) -> Config {
    let profile = raw.profile.unwrap_or(DEFAULT_PROFILE);
    let d = defaults(profile);
    let (witnesses, nodes): (Vec<Node>, Vec<Node>) = raw
        .nodes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, n)| Node {
            name: n.name.unwrap_or_default(),
            role: n.role.unwrap_or_default(),
            peer_url: n.peer_url.unwrap_or_default(),
            client_url: n.client_url.unwrap_or_default(),
            agent_url: n.agent_url.unwrap_or_default(),
            file_index: i,
        })
        .partition(|n| n.role == NodeRole::Witness);

    let c = raw.cluster;
    let learner_stuck_after = c
        .learner_stuck_after
        .unwrap_or(d.cluster.learner_stuck_after);
    let cluster = Cluster {
        voters: c.voters.unwrap_or_else(|| default_voters(nodes.len())),
        manage_membership: c.manage_membership.unwrap_or(d.cluster.manage_membership),
        failure_detection: c.failure_detection.unwrap_or(d.cluster.failure_detection),
        etcd_restart_grace: c.etcd_restart_grace.unwrap_or(d.cluster.etcd_restart_grace),
        promotion_max_lag: c.promotion_max_lag.unwrap_or(d.cluster.promotion_max_lag),
        promotion_stable_for: c
            .promotion_stable_for
            .unwrap_or(d.cluster.promotion_stable_for),
        learner_stuck_after,
        // Follows a changed `learner_stuck_after` unless set itself.
        standby_behind_limit: c
            .standby_behind_limit
            .unwrap_or(learner_stuck_after * STANDBY_BEHIND_FACTOR),
        reconcile_interval: c.reconcile_interval.unwrap_or(d.cluster.reconcile_interval),
        flap_window: c.flap_window.unwrap_or(d.cluster.flap_window),
    };

    let p = raw.paths;
    let root = p.root.unwrap_or(d.paths.root);
    let (state_dir, snapshot_dir, buffer_dir, etcd_dir) = derived_paths(&root);
    let paths = Paths {
        state_dir: p.state_dir.unwrap_or(state_dir),
        snapshot_dir: p.snapshot_dir.unwrap_or(snapshot_dir),
        buffer_dir: p.buffer_dir.unwrap_or(buffer_dir),
        root,
    };

    let e = raw.etcd;
    let etcd = Etcd {
        binary: e.binary.unwrap_or(d.etcd.binary),
        data_dir: e.data_dir.unwrap_or(etcd_dir),
        heartbeat: e.heartbeat.unwrap_or(d.etcd.heartbeat),
        election_timeout: e.election_timeout.unwrap_or(d.etcd.election_timeout),
        quota_backend_bytes: e.quota_backend_bytes.unwrap_or(d.etcd.quota_backend_bytes),
        pre_vote: e.pre_vote.unwrap_or(d.etcd.pre_vote),
        extra_args: e.extra_args.unwrap_or(d.etcd.extra_args),
    };

    let s = raw.snapshots;
    let snapshots = Snapshots {
        enabled: s.enabled.unwrap_or(d.snapshots.enabled),
        interval: s.interval.unwrap_or(d.snapshots.interval),
        retain_count: s.retain_count.unwrap_or(d.snapshots.retain_count),
        retain_age: s.retain_age.unwrap_or(d.snapshots.retain_age),
        copy_to_peers: s.copy_to_peers.unwrap_or(d.snapshots.copy_to_peers),
        scrub_interval: s.scrub_interval.unwrap_or(d.snapshots.scrub_interval),
        max_bytes: s.max_bytes.unwrap_or(d.snapshots.max_bytes),
        // etcd's db may grow to its quota: that much stays free by default.
        min_free_bytes: s.min_free_bytes.unwrap_or(etcd.quota_backend_bytes),
    };

    let r = raw.recovery;
    let recovery = Recovery {
        quorum_loss_policy: r
            .quorum_loss_policy
            .unwrap_or(d.recovery.quorum_loss_policy),
        fence_command: r.fence_command.unwrap_or(d.recovery.fence_command),
        fence_environment_file: r
            .fence_environment_file
            .or(d.recovery.fence_environment_file),
        quorum_loss_window: r
            .quorum_loss_window
            .unwrap_or(d.recovery.quorum_loss_window),
        // Half the window unless set: well inside the other side's window.
        self_fence_after: r.self_fence_after.unwrap_or_else(|| {
            r.quorum_loss_window
                .map(|w| w / 2)
                .unwrap_or(d.recovery.self_fence_after)
        }),
    };

    let f = raw.defrag;
    let defrag = Defrag {
        enabled: f.enabled.unwrap_or(d.defrag.enabled),
        free_ratio: f.free_ratio.unwrap_or(d.defrag.free_ratio),
        min_db_bytes: f.min_db_bytes.unwrap_or(d.defrag.min_db_bytes),
        check_interval: f.check_interval.unwrap_or(d.defrag.check_interval),
    };

    let m = raw.metrics;
    let metrics = Metrics {
        enabled: m.enabled.unwrap_or(d.metrics.enabled),
        scrape_interval: m.scrape_interval.unwrap_or(d.metrics.scrape_interval),
        scrape_timeout: m.scrape_timeout.unwrap_or(d.metrics.scrape_timeout),
        scrape_etcd: m.scrape_etcd.unwrap_or(d.metrics.scrape_etcd),
        scrape_self: m.scrape_self.unwrap_or(d.metrics.scrape_self),
        targets: match m.targets {
            Some(ts) => ts
                .into_iter()
                .map(|t| Target {
                    job: t.job.unwrap_or_default(),
                    url: t.url.unwrap_or_default(),
                    interval: t.interval,
                })
                .collect(),
            None => d.metrics.targets,
        },
        classes: m.classes.unwrap_or(d.metrics.classes),
        default_class: m.default_class.unwrap_or(d.metrics.default_class),
        // Rules in the file replace the profile's rules as a whole.
        rules: match m.rules {
            Some(rs) => rs
                .into_iter()
                .map(|r| Rule {
                    metric: r.metric.unwrap_or_default(),
                    labels: r.labels.unwrap_or_default(),
                    class: r.class.unwrap_or_default(),
                })
                .collect(),
            None => d.metrics.rules,
        },
        external_labels: m.external_labels.unwrap_or(d.metrics.external_labels),
    };

    let b = raw.buffer;
    let buffer = Buffer {
        budget_bytes: b.budget_bytes.unwrap_or(d.buffer.budget_bytes),
        segment_bytes: b.segment_bytes.unwrap_or(d.buffer.segment_bytes),
        fsync: b.fsync.unwrap_or(d.buffer.fsync),
        fsync_interval: b.fsync_interval.unwrap_or(d.buffer.fsync_interval),
        max_age: b.max_age.unwrap_or(d.buffer.max_age),
    };

    let u = raw.uplink;
    let uplink = Uplink {
        enabled: u.enabled.unwrap_or(d.uplink.enabled),
        url: u.url.or(d.uplink.url),
        timeout: u.timeout.unwrap_or(d.uplink.timeout),
        backfill_rate: u.backfill_rate.unwrap_or(d.uplink.backfill_rate),
        batch_samples: u.batch_samples.unwrap_or(d.uplink.batch_samples),
        max_sample_age: u.max_sample_age.unwrap_or(d.uplink.max_sample_age),
        bearer_token_file: u.bearer_token_file.or(d.uplink.bearer_token_file),
        basic_auth_user: u.basic_auth_user.or(d.uplink.basic_auth_user),
        basic_auth_password_file: u
            .basic_auth_password_file
            .or(d.uplink.basic_auth_password_file),
        headers: u.headers.unwrap_or(d.uplink.headers),
        ca_file: u.ca_file.or(d.uplink.ca_file),
        client_cert: u.client_cert.or(d.uplink.client_cert),
        client_key: u.client_key.or(d.uplink.client_key),
        dead_letter_bytes: u.dead_letter_bytes.unwrap_or(d.uplink.dead_letter_bytes),
        out_of_order: u.out_of_order.unwrap_or(d.uplink.out_of_order),
    };

    let t = raw.tls;
    let tls = Tls {
        ca_file: t.ca_file.unwrap_or(d.tls.ca_file),
        cert_file: t.cert_file.unwrap_or(d.tls.cert_file),
        key_file: t.key_file.unwrap_or(d.tls.key_file),
        allow_plaintext: t.allow_plaintext.unwrap_or(d.tls.allow_plaintext),
        health_listen: t.health_listen.or(d.tls.health_listen),
    };

    let l = raw.log;
    let log = Log {
        dir: l.dir.unwrap_or(d.log.dir),
        level: l.level.unwrap_or(d.log.level),
        to_files: l.to_files.unwrap_or(d.log.to_files),
        retention_files: l.retention_files.unwrap_or(d.log.retention_files),
    };

    Config {
        profile,
        host: raw.host.unwrap_or_default(),
        site: raw.site.unwrap_or_default(),
        nodes,
        witnesses,
        cluster,
        etcd,
        paths,
        snapshots,
        recovery,
        defrag,
        metrics,
        buffer,
        uplink,
        tls,
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_default_leaves_a_standby() {
        assert_eq!(default_voters(0), 1);
        assert_eq!(default_voters(1), 1);
        assert_eq!(default_voters(2), 1);
        assert_eq!(default_voters(3), 3);
        assert_eq!(default_voters(4), 3);
        assert_eq!(default_voters(5), 3);
        assert_eq!(default_voters(6), 5);
        assert_eq!(default_voters(9), 5);
    }
}
