//! Every example in config/examples/ loads.

use std::path::PathBuf;

use edgeplane_config::{NodeRole, Profile, QuorumLossPolicy, load};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn edge_4_hosts_loads_without_warnings() {
    let loaded = load(&example("edge-4-hosts.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.cluster.voters, 3);
    assert_eq!(c.nodes.len(), 4);
    assert_eq!(c.standby_order().len(), 1);
    assert_eq!(c.standby_order()[0].name, "edge-4");
    assert_eq!(c.buffer.budget_bytes, 4 << 30);
}

#[test]
fn edge_2_hosts_loads_with_warnings_only() {
    let loaded = load(&example("edge-2-hosts.toml")).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.cluster.voters, 1);
    // Fenced recovery needs a strict majority of votes after the loss, which
    // 2 hosts never have (1 of 2): the example recovers by a human.
    assert_eq!(c.recovery.quorum_loss_policy, QuorumLossPolicy::Manual);
    assert!(loaded.warnings.iter().all(|w| !w.is_error()));
    assert!(!loaded.warnings.is_empty(), "a 2-host site should warn");
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| !w.to_string().contains("cannot happen by itself")),
        "{:?}",
        loaded.warnings
    );
    // Switched to fenced as its comment says, without a third host, it warns.
    let text = std::fs::read_to_string(example("edge-2-hosts.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "quorum_loss_policy = \"manual\"\n",
            "quorum_loss_policy = \"fenced\"\nfence_command = [\"/usr/local/sbin/fence-ipmi\", \"--host\", \"{host}\", \"--off\", \"--confirm\"]\n",
        );
    let report = edgeplane_config::check_str(&text, &example("edge-2-hosts.toml"));
    assert!(
        report
            .problems
            .iter()
            .any(|p| !p.is_error() && p.message.contains("leaves 1 of 2 votes")),
        "{:?}",
        report.problems
    );
}

#[test]
fn edge_2_hosts_with_a_witness_is_fenced_without_the_vote_warning() {
    let loaded = load(&example("edge-2-hosts-witness.toml")).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.recovery.quorum_loss_policy, QuorumLossPolicy::Fenced);
    assert_eq!(c.nodes.len(), 2, "the witness is not an etcd host");
    assert_eq!(c.witnesses.len(), 1);
    assert_eq!(c.witnesses[0].name, "router");
    assert_eq!(c.witnesses[0].role, NodeRole::Witness);
    assert_eq!(c.votes(), 3);
    assert_eq!(c.standby_order().len(), 1, "the witness is never a standby");
    assert!(loaded.warnings.iter().all(|w| !w.is_error()));
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| !w.to_string().contains("cannot happen by itself")),
        "2 hosts + a witness have a vote majority after losing the voter: {:?}",
        loaded.warnings
    );
    // The same file as the witness's own config loads too.
    let text = std::fs::read_to_string(example("edge-2-hosts-witness.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("host = \"kiosk-a\"", "host = \"router\"");
    let report = edgeplane_config::check_str(&text, &example("edge-2-hosts-witness.toml"));
    assert!(
        report.problems.iter().all(|p| !p.is_error()),
        "{:?}",
        report.problems
    );
    // --explain shows it among the nodes, at its place in the file.
    let explained =
        edgeplane_config::explain_str(&text, &example("x.toml")).unwrap_or_else(|e| panic!("{e}"));
    let role = explained
        .entries
        .iter()
        .find(|e| e.key == "nodes[2].role")
        .map(|e| e.value.clone());
    assert_eq!(role.as_deref(), Some("witness"), "{:?}", explained.entries);
    let agent = explained
        .entries
        .iter()
        .find(|e| e.key == "nodes[2].agent_url")
        .map(|e| e.value.clone());
    assert_eq!(agent.as_deref(), Some("https://10.30.1.1:7070"));
}

#[test]
fn region_loads() {
    let loaded = load(&example("region.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.profile, Profile::Region);
    assert!(!loaded.config.uplink.enabled);
    assert_eq!(
        loaded.config.paths.state_dir,
        PathBuf::from("/srv/edgeplane/state")
    );
}

#[test]
fn every_example_file_is_tested() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "edge-2-hosts-witness.toml",
            "edge-2-hosts.toml",
            "edge-4-hosts.toml",
            "region.toml"
        ]
    );
}
