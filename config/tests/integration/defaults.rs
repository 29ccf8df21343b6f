//! Profile defaults, and explicit keys winning over them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeplane_config::{Config, FsyncPolicy, Profile, load_str};

use crate::support::*;

fn load(text: &str) -> Config {
    load_str(text, Path::new(ORIGIN))
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

#[test]
fn default_voters_follow_the_host_count() {
    for (hosts, voters) in [(1, 1), (2, 1), (3, 3), (4, 3), (5, 3), (6, 5), (7, 5)] {
        let cfg = load(&site("edge", hosts, ""));
        assert_eq!(cfg.cluster.voters, voters, "{hosts} hosts");
    }
}

#[test]
fn edge_defaults() {
    let c = load(&edge(""));
    assert_eq!(c.profile, Profile::Edge);
    assert_eq!(c.cluster.failure_detection, Duration::from_secs(1));
    assert_eq!(c.cluster.reconcile_interval, Duration::from_millis(200));
    assert_eq!(c.etcd.quota_backend_bytes, 2 << 30);
    assert_eq!(c.snapshots.interval, Duration::from_secs(1800));
    assert_eq!(c.recovery.quorum_loss_window, Duration::from_secs(10));
    assert_eq!(c.recovery.self_fence_after, Duration::from_secs(5));
    // Half the window when only the window is set.
    let w = load(&edge("[recovery]\nquorum_loss_window = \"3s\"\n"));
    assert_eq!(w.recovery.self_fence_after, Duration::from_millis(1500));
    assert_eq!(c.buffer.budget_bytes, 2 << 30);
    assert_eq!(c.buffer.fsync, FsyncPolicy::Batch);
    assert!(c.uplink.enabled);
    assert_eq!(c.uplink.max_sample_age, Duration::from_secs(29 * 86_400));
    assert_eq!(c.metrics.classes, ["critical", "high", "normal", "low"]);
    assert!(
        c.metrics
            .rules
            .iter()
            .any(|r| r.metric == "etcd_server_has_leader" && r.class == "critical")
    );
    assert!(
        c.metrics
            .rules
            .iter()
            .any(|r| r.metric == "*_duration_seconds*" && r.class == "high")
    );
    assert!(
        c.metrics
            .rules
            .iter()
            .any(|r| r.metric == "go_*" && r.class == "low")
    );
    assert_eq!(c.etcd.data_dir, PathBuf::from("/var/lib/edgeplane/etcd"));
    assert_eq!(c.log.dir, PathBuf::from("/var/log/edgeplane"));
}

#[test]
fn region_defaults() {
    let c = load(&site("region", 4, "[uplink]\n"));
    assert_eq!(c.cluster.failure_detection, Duration::from_secs(5));
    assert_eq!(c.etcd.election_timeout, Duration::from_secs(1));
    assert_eq!(c.recovery.quorum_loss_window, Duration::from_secs(30));
    assert_eq!(c.recovery.self_fence_after, Duration::from_secs(15));
    assert_eq!(c.snapshots.interval, Duration::from_secs(3600));
    assert_eq!(c.buffer.budget_bytes, 512 << 20);
    assert_eq!(c.buffer.fsync, FsyncPolicy::Interval);
    assert!(!c.uplink.enabled);
    assert!(c.metrics.rules.is_empty());
    assert_eq!(c.metrics.classes.len(), 4);
}

#[test]
fn missing_profile_means_edge() {
    let text = edge("").replacen("profile = \"edge\"\n", "", 1);
    assert_eq!(load(&text).profile, Profile::Edge);
}

#[test]
fn explicit_keys_win() {
    let c = load(&site(
        "region",
        4,
        "[cluster]\nfailure_detection = \"2s\"\n\n[buffer]\nfsync = \"batch\"\n\n[uplink]\nenabled = true\nurl = \"https://r.example.com/w\"\n",
    ));
    assert_eq!(c.cluster.failure_detection, Duration::from_secs(2));
    assert_eq!(c.buffer.fsync, FsyncPolicy::Batch);
    assert!(c.uplink.enabled);
}

#[test]
fn paths_follow_root_unless_set() {
    let c = load(&edge(
        "[paths]\nroot = \"/data/ep\"\nbuffer_dir = \"/fast/buffer\"\n",
    ));
    assert_eq!(c.paths.state_dir, PathBuf::from("/data/ep/state"));
    assert_eq!(c.paths.snapshot_dir, PathBuf::from("/data/ep/snapshots"));
    assert_eq!(c.paths.buffer_dir, PathBuf::from("/fast/buffer"));
    assert_eq!(c.etcd.data_dir, PathBuf::from("/data/ep/etcd"));
}

#[test]
fn rules_in_the_file_replace_the_defaults() {
    let c = load(&edge(
        "[[metrics.rules]]\nmetric = \"node_*\"\nlabels = { job = \"node\" }\nclass = \"high\"\n",
    ));
    assert_eq!(c.metrics.rules.len(), 1);
    assert_eq!(
        c.metrics.rules[0].labels.get("job").map(String::as_str),
        Some("node")
    );
}

#[test]
fn node_helpers() {
    let c = load(&edge(""));
    assert_eq!(c.this_node().map(|n| n.name.as_str()), Some("edge-1"));
    assert_eq!(
        c.node("edge-3").map(|n| n.peer_url.as_str()),
        Some("https://10.0.0.3:2380")
    );
    assert!(c.node("nope").is_none());
    assert_eq!(c.initial_voters().len(), 3);
    assert!(c.is_initial_voter("edge-3"));
    assert!(!c.is_initial_voter("edge-4"));
    let standby: Vec<&str> = c.standby_order().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(standby, ["edge-4"]);
}
