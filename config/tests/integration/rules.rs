//! One test per semantic rule: errors, then warnings.

use edgeplane_config::Severity::{Error, Warning};

use crate::support::*;

#[test]
fn base_sites_are_clean() {
    clean(&edge(""));
    clean(&site("region", 4, "[uplink]\n"));
    clean(&site("edge", 6, "[cluster]\nvoters = 5\n"));
}

#[test]
fn required_top_level_keys() {
    let text = edge("").replacen("host = \"edge-1\"\n", "", 1).replacen(
        "site = \"test-site\"\n",
        "site = \"\"\n",
        1,
    );
    expect(&text, Error, "host", "is required");
    expect(&text, Error, "site", "must not be empty");
    let no_nodes = "profile = \"region\"\nhost = \"a\"\nsite = \"s\"\n";
    expect(no_nodes, Error, "nodes", "at least one [[nodes]]");
}

#[test]
fn duplicate_host_names_point_at_the_second() {
    let text = edge("").replacen("name = \"edge-3\"", "name = \"edge-2\"", 1);
    let p = expect(
        &text,
        Error,
        "nodes[2].name",
        "duplicate host name \"edge-2\"",
    );
    let first = line_of(&text, "name = \"edge-2\"");
    assert!(
        p.message
            .contains(&format!("first defined on line {first}")),
        "{}",
        p.message
    );
    assert!(p.line > Some(first));
}

#[test]
fn invalid_host_name() {
    let text = edge("").replace("edge-4", "edge 4");
    expect(&text, Error, "nodes[3].name", "not a valid host name");
}

#[test]
fn duplicate_urls() {
    let text = edge("").replacen("https://10.0.0.2:2379", "https://10.0.0.1:2380", 1);
    let p = expect(&text, Error, "nodes[1].client_url", "duplicate URL");
    assert!(p.message.contains("`nodes[0].peer_url`"), "{}", p.message);
    assert_eq!(
        p.line,
        Some(line_of(&text, "client_url = \"https://10.0.0.1:2380\""))
    );
    // Same host:port with another scheme is the same endpoint.
    let https = edge("").replacen("https://10.0.0.2:7070", "https://10.0.0.1:7070", 1);
    expect(&https, Error, "nodes[1].agent_url", "duplicate URL");
}

#[test]
fn host_must_be_a_node() {
    let text = edge("").replacen("host = \"edge-1\"", "host = \"edge-9\"", 1);
    let p = expect(
        &text,
        Error,
        "host",
        "\"edge-9\" is not one of the nodes (edge-1, edge-2, edge-3, edge-4)",
    );
    assert_eq!(p.line, Some(2));
}

#[test]
fn voters_must_be_1_3_or_5() {
    for v in [0, 2, 4, 7] {
        let text = site("edge", 6, &format!("[cluster]\nvoters = {v}\n"));
        expect(&text, Error, "cluster.voters", "must be 1, 3 or 5");
    }
}

#[test]
fn voters_at_most_the_hosts() {
    let text = site("edge", 2, "[cluster]\nvoters = 3\n");
    expect(&text, Error, "cluster.voters", "3 voters but only 2 hosts");
}

#[test]
fn unparsable_urls() {
    for (bad, why) in [
        ("10.0.0.2:2380", "must start with http:// or https://"),
        ("https://10.0.0.2", "needs an explicit port"),
        ("http://:2380", "has no host"),
        ("https://10.0.0.2:99999", "invalid port"),
        ("https://10.0.0.2:2380/peer", "must not have a path"),
        ("tcp://10.0.0.2:2380", "must start with http://"),
    ] {
        let text = edge("").replacen("https://10.0.0.2:2380", bad, 1);
        expect(&text, Error, "nodes[1].peer_url", why);
    }
}

/// Hosts the WHATWG parser of the `url` crate accepts or misreads are refused with
/// the file, the line, the key and what to write instead.
#[test]
fn malformed_url_hosts_are_errors_with_the_fix() {
    for (field, good, bad, why, fix) in [
        (
            "peer_url",
            "https://10.0.0.2:2380",
            "https://[zz]:2380",
            "not a valid IPv6 address",
            "e.g. [fd00::1]",
        ),
        (
            "client_url",
            "https://10.0.0.2:2379",
            "https://999.1.1.1:2379",
            "not a valid IPv4 address",
            "e.g. 10.0.0.1",
        ),
        (
            "agent_url",
            "https://10.0.0.2:7070",
            "https://a..b:7070",
            "empty part",
            "e.g. 10.0.0.1 or edge-1.example.net",
        ),
        (
            "agent_url",
            "https://10.0.0.2:7070",
            "https://10.2:7070",
            "not a valid IPv4 address",
            "e.g. 10.0.0.1",
        ),
    ] {
        let text = edge("").replacen(good, bad, 1);
        let key = format!("nodes[1].{field}");
        let p = expect(&text, Error, &key, why);
        assert!(p.message.contains(fix), "{p}");
        assert!(p.message.contains(&format!("{bad:?}")), "{p}");
        assert_eq!(p.line, Some(line_of(&text, bad)), "{p}");
        let shown = p.to_string();
        assert!(
            shown.starts_with(&format!("{}:{}:", ORIGIN, line_of(&text, bad))),
            "{shown}"
        );
    }
    // Well-formed names, IPv6 and a default port written out stay clean.
    clean(&edge("").replacen(
        "https://10.0.0.2:7070",
        "https://edge-2.site_a.example:7070",
        1,
    ));
    clean(&edge("").replacen("https://10.0.0.2:7070", "https://[fd00::2]:443", 1));
}

#[test]
fn missing_node_fields() {
    let text = edge("").replacen("agent_url = \"https://10.0.0.3:7070\"\n", "", 1);
    let p = expect(&text, Error, "nodes[2].agent_url", "is required");
    // Located at the node's [[nodes]] header.
    assert!(p.line.is_some());
}

#[test]
fn buffer_budget_below_working_minimum() {
    let text = edge("[buffer]\nbudget_bytes = \"20MiB\"\n");
    expect(
        &text,
        Error,
        "buffer.budget_bytes",
        "below the working minimum of 32MiB",
    );
    let tiny = edge("[buffer]\nbudget_bytes = \"8MiB\"\nsegment_bytes = \"1MiB\"\n");
    expect(&tiny, Error, "buffer.budget_bytes", "minimum of 16MiB");
}

#[test]
fn segment_size_range() {
    expect(
        &edge("[buffer]\nsegment_bytes = 4096\n"),
        Error,
        "buffer.segment_bytes",
        "out of range",
    );
    expect(
        &edge("[buffer]\nsegment_bytes = \"1GiB\"\nbudget_bytes = \"8GiB\"\n"),
        Error,
        "buffer.segment_bytes",
        "out of range",
    );
}

#[test]
fn fenced_needs_a_fence_command() {
    let text = edge("[recovery]\nquorum_loss_policy = \"fenced\"\n");
    let p = expect(
        &text,
        Error,
        "recovery.fence_command",
        "needs a fence_command",
    );
    assert_eq!(p.line, Some(line_of(&text, "quorum_loss_policy")));
    let empty_program = edge("[recovery]\nfence_command = [\"\", \"{host}\"]\n");
    expect(
        &empty_program,
        Error,
        "recovery.fence_command",
        "must not be empty",
    );
}

#[test]
fn unknown_class_in_rule_or_default() {
    let text = edge(
        "[metrics]\ndefault_class = \"meh\"\n\n[[metrics.rules]]\nmetric = \"up\"\nclass = \"urgent\"\n",
    );
    expect(
        &text,
        Error,
        "metrics.default_class",
        "\"meh\" is not one of metrics.classes",
    );
    let p = expect(
        &text,
        Error,
        "metrics.rules[0].class",
        "unknown priority class \"urgent\"",
    );
    assert_eq!(p.line, Some(line_of(&text, "class = \"urgent\"")));
}

#[test]
fn custom_classes_against_default_rules_is_one_problem() {
    let text = edge("[metrics]\nclasses = [\"critical\", \"normal\"]\n");
    expect(
        &text,
        Error,
        "metrics.classes",
        "default rules use classes high, low missing",
    );
    assert_eq!(problems(&text).len(), 1, "{:#?}", problems(&text));
    let no_normal =
        edge("[metrics]\nclasses = [\"a\"]\n\n[[metrics.rules]]\nmetric = \"up\"\nclass = \"a\"\n");
    expect(
        &no_normal,
        Error,
        "metrics.default_class",
        "defaults to \"normal\"",
    );
}

#[test]
fn warns_on_single_host() {
    let text = site("edge", 1, "");
    let p = expect(&text, Warning, "nodes", "a single host");
    assert!(p.line.is_some());
}

#[test]
fn empty_and_bad_classes() {
    let text = edge(
        "[metrics]\nclasses = []\n\n[[metrics.rules]]\nmetric = \"up\"\nclass = \"critical\"\n",
    );
    expect(
        &text,
        Error,
        "metrics.classes",
        "needs at least one priority class",
    );
    let bad = edge("[metrics]\nclasses = [\"normal\", \"Bad Name\", \"normal\"]\n");
    expect(&bad, Error, "metrics.classes", "not a valid class name");
    expect(&bad, Error, "metrics.classes", "listed twice");
}

#[test]
fn bad_rule_glob_and_labels() {
    let text = edge(
        "[[metrics.rules]]\nmetric = \"etcd server\"\nlabels = { \"bad-label\" = \"x\" }\nclass = \"low\"\n",
    );
    expect(
        &text,
        Error,
        "metrics.rules[0].metric",
        "not a metric name glob",
    );
    expect(
        &text,
        Error,
        "metrics.rules[0].labels.bad-label",
        "not a valid label name",
    );
}

#[test]
fn election_timeout_at_least_five_heartbeats() {
    let text = edge("[etcd]\nheartbeat = \"300ms\"\n");
    let p = expect(
        &text,
        Error,
        "etcd.election_timeout",
        "at least 5 × etcd.heartbeat (300ms × 5 = 1s 500ms)",
    );
    // election_timeout is not in the file: point at the heartbeat.
    assert_eq!(p.line, Some(line_of(&text, "heartbeat")));
    expect(
        &edge("[etcd]\nelection_timeout = \"60s\"\n"),
        Error,
        "etcd.election_timeout",
        "above 50s",
    );
}

#[test]
fn uplink_enabled_needs_url() {
    let text = edge("[uplink]\nenabled = true\n");
    let p = expect(&text, Error, "uplink.url", "has no url");
    assert_eq!(p.line, Some(line_of(&text, "enabled = true")));
    // The region profile has the uplink off: no url needed.
    clean(&site("region", 4, "[uplink]\n"));
    expect(
        &edge("[uplink]\nurl = \"region:9090\"\n"),
        Error,
        "uplink.url",
        "must start with http",
    );
}

#[test]
fn promotion_max_lag_zero() {
    expect(
        &edge("[cluster]\npromotion_max_lag = 0\n"),
        Error,
        "cluster.promotion_max_lag",
        "at least 1",
    );
}

#[test]
fn zero_durations() {
    expect(
        &edge("[cluster]\nreconcile_interval = \"0s\"\n"),
        Error,
        "cluster.reconcile_interval",
        "longer than 0s",
    );
    expect(
        &edge("[snapshots]\ninterval = \"0s\"\n"),
        Error,
        "snapshots.interval",
        "longer than 0s",
    );
    // Disabled snapshots are not checked.
    clean(&edge("[snapshots]\nenabled = false\ninterval = \"0s\"\n"));
}

#[test]
fn flap_window_must_outlast_a_detection_window() {
    expect(
        &edge("[cluster]\nflap_window = \"0s\"\n"),
        Error,
        "cluster.flap_window",
        "longer than 0s",
    );
    expect(
        &edge("[cluster]\nfailure_detection = \"5s\"\nflap_window = \"2s\"\n"),
        Error,
        "cluster.flap_window",
        "shorter than cluster.failure_detection (5s)",
    );
    clean(&edge("[cluster]\nflap_window = \"30m\"\n"));
}

#[test]
fn managed_etcd_flags_are_refused() {
    let text = edge(
        "[etcd]\nextra_args = [\"--auto-compaction-retention=1h\", \"--data-dir=/tmp/x\", \"oops\"]\n",
    );
    expect(
        &text,
        Error,
        "etcd.extra_args[1]",
        "--data-dir is set by edgeplane",
    );
    expect(&text, Error, "etcd.extra_args[2]", "is not a flag");
    assert_eq!(on(&text, Error, "etcd.extra_args[0]").len(), 0);
}

#[test]
fn paths_absolute_and_separate() {
    let text = edge("[paths]\nroot = \"var/lib/edgeplane\"\n");
    expect(&text, Error, "paths.root", "must be an absolute path");
    let nested = edge("[paths]\nbuffer_dir = \"/var/lib/edgeplane/state/buffer\"\n");
    expect(&nested, Error, "paths.buffer_dir", "are nested");
    let same = edge("[etcd]\ndata_dir = \"/var/lib/edgeplane/state\"\n");
    expect(
        &same,
        Error,
        "etcd.data_dir",
        "same directory as paths.state_dir",
    );
}

#[test]
fn scrape_timeout_within_interval() {
    expect(
        &edge("[metrics]\nscrape_interval = \"5s\"\n"),
        Error,
        "metrics.scrape_timeout",
        "longer than metrics.scrape_interval",
    );
}

#[test]
fn targets() {
    let text = edge(
        "[[metrics.targets]]\njob = \"node\"\nurl = \"http://127.0.0.1:9100/metrics\"\n\n[[metrics.targets]]\njob = \"node\"\nurl = \"http://127.0.0.1:9100/metrics\"\n\n[[metrics.targets]]\nurl = \"localhost:9100\"\ninterval = \"0s\"\n",
    );
    expect(
        &text,
        Error,
        "metrics.targets[1].url",
        "duplicate scrape target",
    );
    expect(&text, Error, "metrics.targets[2].job", "is required");
    expect(&text, Error, "metrics.targets[2].url", "invalid URL");
    expect(
        &text,
        Error,
        "metrics.targets[2].interval",
        "longer than 0s",
    );
}

#[test]
fn reserved_external_labels() {
    let text = edge("[metrics.external_labels]\nsite = \"x\"\nregion = \"eu\"\n");
    expect(
        &text,
        Error,
        "metrics.external_labels.site",
        "set by edgeplane itself",
    );
    assert!(on(&text, Error, "metrics.external_labels.region").is_empty());
}

#[test]
fn free_ratio_range() {
    expect(
        &edge("[defrag]\nfree_ratio = 1.5\n"),
        Error,
        "defrag.free_ratio",
        "between 0 and 1",
    );
    expect(
        &edge("[defrag]\nfree_ratio = 0.0\n"),
        Error,
        "defrag.free_ratio",
        "between 0 and 1",
    );
}

#[test]
fn uplink_tls_pairs_and_rates() {
    let text = edge(
        "[uplink]\nurl = \"https://r.example.com/w\"\nclient_cert = \"/etc/edgeplane/c.pem\"\nbackfill_rate = 0\nbatch_samples = 0\nca_file = \"ca.pem\"\n",
    );
    expect(
        &text,
        Error,
        "uplink.client_cert",
        "without uplink.client_key",
    );
    expect(&text, Error, "uplink.backfill_rate", "at least 1");
    expect(&text, Error, "uplink.batch_samples", "at least 1");
    expect(&text, Error, "uplink.ca_file", "absolute path");
}

#[test]
fn log_settings() {
    expect(
        &edge("[log]\nretention_files = 0\n"),
        Error,
        "log.retention_files",
        "at least 1",
    );
    clean(&edge("[log]\nretention_files = 0\nto_files = false\n"));
    expect(
        &edge("[log]\nlevel = \"\"\n"),
        Error,
        "log.level",
        "must not be empty",
    );
}

// ---- warnings ----

#[test]
fn warns_without_standby() {
    let text = site("edge", 3, "[cluster]\nvoters = 3\n");
    expect(&text, Warning, "cluster.voters", "no standby host");
    assert!(problems(&text).iter().all(|p| !p.is_error()));
}

#[test]
fn three_hosts_default_to_three_voters_and_warn_when_set_to_one() {
    // The default is 3 voters: the "no standby" warning, nothing about 1 voter.
    let text = site("edge", 3, "");
    expect(&text, Warning, "cluster.voters", "no standby host");
    assert!(
        problems(&text)
            .iter()
            .all(|p| !p.is_error() && !p.to_string().contains("3 hosts with 1 voter"))
    );
    let one = site("edge", 3, "[cluster]\nvoters = 1\n");
    expect(&one, Warning, "cluster.voters", "3 hosts with 1 voter");
    expect(&one, Warning, "nodes", "waits as cold spare");
}

#[test]
fn warns_on_two_host_site() {
    expect(&site("edge", 2, ""), Warning, "nodes", "2-host site");
}

#[test]
fn warns_on_fsync_never() {
    expect(
        &edge("[buffer]\nfsync = \"never\"\n"),
        Warning,
        "buffer.fsync",
        "may be lost on power loss",
    );
}

#[test]
fn warns_on_cold_spares() {
    let text = site("edge", 5, "[cluster]\nvoters = 3\n");
    expect(&text, Warning, "nodes", "edge-5 waits as cold spare");
    let six = site("edge", 6, "[cluster]\nvoters = 3\n");
    expect(&six, Warning, "nodes", "edge-5, edge-6 wait as cold spares");
}

#[test]
fn warns_on_fenced_two_host_site() {
    let text = site(
        "edge",
        2,
        "[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/sbin/fence\", \"{host}\"]\n",
    );
    expect(
        &text,
        Warning,
        "recovery.quorum_loss_policy",
        "leaves 1 of 2 votes",
    );
    expect(
        &text,
        Warning,
        "recovery.quorum_loss_policy",
        "add 1 more host(s)",
    );
}

/// Policy `fenced` is for a quorum loss; an automatic rebuild needs a strict
/// majority of votes (one per configured node) after it.
#[test]
fn warns_on_fenced_without_enough_votes_to_survive_a_quorum_loss() {
    let fenced = "[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/sbin/fence\", \"{host}\"]\n";
    // 4 hosts, 3 voters: losing 2 leaves 2 of 4.
    expect(
        &site("edge", 4, fenced),
        Warning,
        "recovery.quorum_loss_policy",
        "leaves 2 of 4 votes",
    );
    // 3 hosts, 3 voters: losing 2 leaves 1 of 3; 2 more hosts needed.
    expect(
        &site("edge", 3, fenced),
        Warning,
        "recovery.quorum_loss_policy",
        "add 2 more host(s)",
    );
    // 5 hosts, 3 voters: losing 2 leaves 3 of 5, a majority.
    let five = site("edge", 5, &format!("[cluster]\nvoters = 3\n{fenced}"));
    assert!(
        problems(&five)
            .iter()
            .all(|p| !p.to_string().contains("cannot happen by itself")),
        "{:?}",
        problems(&five)
    );
    // Policy manual: nothing to warn about.
    assert!(
        problems(&site("edge", 4, ""))
            .iter()
            .all(|p| !p.to_string().contains("cannot happen by itself"))
    );
}

/// A voter cut off from the vote majority must stop serving before the
/// other side's window ends (it may then fence it and rebuild).
#[test]
fn self_fence_after_must_be_shorter_than_the_quorum_loss_window() {
    expect(
        &edge("[recovery]\nquorum_loss_window = \"10s\"\nself_fence_after = \"10s\"\n"),
        Error,
        "recovery.self_fence_after",
        "shorter than recovery.quorum_loss_window",
    );
    assert!(
        problems(&edge(
            "[recovery]\nquorum_loss_window = \"10s\"\nself_fence_after = \"4s\"\n"
        ))
        .iter()
        .all(|p| !p.is_error())
    );
}

#[test]
fn warns_on_fence_command_without_host() {
    expect(
        &edge("[recovery]\nfence_command = [\"/sbin/fence-all\"]\n"),
        Warning,
        "recovery.fence_command",
        "{host}",
    );
}

#[test]
fn warns_on_token_over_http() {
    let text = edge(
        "[uplink]\nurl = \"http://r.example.com/w\"\nbearer_token_file = \"/etc/edgeplane/token\"\n",
    );
    expect(&text, Warning, "uplink.bearer_token_file", "unencrypted");
}

#[test]
fn warns_on_fast_failure_detection() {
    let text = edge("[cluster]\nfailure_detection = \"500ms\"\n");
    expect(
        &text,
        Warning,
        "cluster.failure_detection",
        "shorter than etcd.election_timeout",
    );
}

#[test]
fn warns_on_large_quota() {
    expect(
        &edge("[etcd]\nquota_backend_bytes = \"16GiB\"\n"),
        Warning,
        "etcd.quota_backend_bytes",
        "8GiB",
    );
}

#[test]
fn plain_http_nodes_are_refused_unless_allowed() {
    let plain = edge("").replace("https://10.", "http://10.");
    let p = expect(
        &plain,
        Error,
        "nodes[0].peer_url",
        "plain http:// is refused",
    );
    assert!(p.message.contains("edgeplane certs init"), "{p}");
    let allowed = edge("[tls]\nallow_plaintext = true\n").replace("https://10.", "http://10.");
    expect(&allowed, Warning, "tls.allow_plaintext", "for a lab only");
    assert!(on(&allowed, Error, "nodes[0].peer_url").is_empty());
}

#[test]
fn mixed_schemes_name_the_first_plain_url() {
    let text = edge("").replacen("https://10.0.0.2:7070", "http://10.0.0.2:7070", 1);
    expect(
        &text,
        Error,
        "nodes[1].agent_url",
        "mixes http:// with https://",
    );
}

#[test]
fn tls_files_absolute_and_health_listener_loopback_only() {
    let text = edge("[tls]\nkey_file = \"host.key\"\nhealth_listen = \"0.0.0.0:7071\"\n");
    expect(&text, Error, "tls.key_file", "absolute path");
    expect(&text, Error, "tls.health_listen", "not a loopback address");
    let bad = edge("[tls]\nhealth_listen = \"localhost\"\n");
    expect(&bad, Error, "tls.health_listen", "expected IP:PORT");
    clean(&edge("[tls]\nhealth_listen = \"127.0.0.1:7071\"\n"));
}

const UPLINK: &str = "[uplink]\nurl = \"https://r.example.com/api/v1/write\"\n";

#[test]
fn uplink_headers_and_basic_auth_are_accepted() {
    clean(&edge(&format!(
        "{UPLINK}basic_auth_user = \"site-7\"\nbasic_auth_password_file = \"/etc/edgeplane/region.pass\"\n\n[uplink.headers]\nX-Scope-OrgID = \"tenant-a\"\n"
    )));
}

#[test]
fn uplink_headers_refuse_what_edgeplane_or_http_sets() {
    for (name, fragment) in [
        ("Authorization", "uplink.basic_auth_user"),
        ("authorization", "bearer_token_file"),
        ("Proxy-Authorization", "hop-by-hop"),
        ("Connection", "hop-by-hop"),
        ("Transfer-Encoding", "hop-by-hop"),
        ("Upgrade", "hop-by-hop"),
        ("TE", "hop-by-hop"),
        ("Content-Type", "Content-*"),
        ("Content-Encoding", "Content-*"),
        ("content-length", "Content-*"),
        ("Host", "uplink.url"),
        ("User-Agent", "edgeplane sets it"),
        ("X-Prometheus-Remote-Write-Version", "remote-write protocol"),
    ] {
        let text = edge(&format!("{UPLINK}\n[uplink.headers]\n\"{name}\" = \"x\"\n"));
        let p = expect(
            &text,
            Error,
            &format!("uplink.headers.{name}"),
            "cannot be set here",
        );
        assert!(p.message.contains(fragment), "{name}: {}", p.message);
        assert_eq!(p.line, Some(line_of(&text, &format!("\"{name}\""))));
    }
}

#[test]
fn uplink_headers_must_be_valid_http() {
    let text = edge(&format!(
        "{UPLINK}\n[uplink.headers]\n\"X Tenant\" = \"a\"\nX-Empty = \" \"\nX-Break = \"a\\r\\nX-Evil: 1\"\nx-scope-orgid = \"a\"\nX-Scope-OrgID = \"b\"\n"
    ));
    expect(
        &text,
        Error,
        "uplink.headers.X Tenant",
        "not a valid HTTP header name",
    );
    expect(&text, Error, "uplink.headers.X-Empty", "must not be empty");
    expect(&text, Error, "uplink.headers.X-Break", "control characters");
    // BTreeMap order: upper case first, so the lower-case one is the second.
    expect(&text, Error, "uplink.headers.x-scope-orgid", "ignore case");
}

#[test]
fn basic_auth_needs_both_keys_and_no_bearer_token() {
    let text = edge(&format!("{UPLINK}basic_auth_user = \"u\"\n"));
    expect(
        &text,
        Error,
        "uplink.basic_auth_user",
        "without uplink.basic_auth_password_file",
    );
    let text = edge(&format!("{UPLINK}basic_auth_password_file = \"/etc/p\"\n"));
    expect(
        &text,
        Error,
        "uplink.basic_auth_password_file",
        "without uplink.basic_auth_user",
    );
    let text = edge(&format!(
        "{UPLINK}basic_auth_user = \"u\"\nbasic_auth_password_file = \"/etc/p\"\nbearer_token_file = \"/etc/t\"\n"
    ));
    expect(&text, Error, "uplink.basic_auth_user", "choose one");
    let text = edge(&format!(
        "{UPLINK}basic_auth_user = \"a:b\"\nbasic_auth_password_file = \"p\"\n"
    ));
    expect(&text, Error, "uplink.basic_auth_user", "without ':'");
    expect(
        &text,
        Error,
        "uplink.basic_auth_password_file",
        "absolute path",
    );
    let text = edge(
        "[uplink]\nurl = \"http://r.example.com/w\"\nbasic_auth_user = \"u\"\nbasic_auth_password_file = \"/etc/p\"\n",
    );
    expect(
        &text,
        Warning,
        "uplink.basic_auth_password_file",
        "unencrypted",
    );
}

/// A witness (`role = "witness"`): the agent only, one more vote.
fn with_witness(n: usize, witness: &str, extra: &str) -> String {
    let base = site("edge", n, "");
    // The witness goes among the nodes, before the tables `site` adds.
    let (head, tail) = base.split_at(base.find("\n[uplink]").unwrap_or(base.len()));
    format!("{head}\n[[nodes]]\nname = \"router\"\nrole = \"witness\"\n{witness}\n{extra}{tail}")
}

#[test]
fn a_witness_counts_as_a_vote_for_fenced() {
    let fenced = "[cluster]\nvoters = 1\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"/sbin/fence\", \"{host}\"]\n";
    let text = with_witness(2, "agent_url = \"https://10.0.0.9:7070\"", fenced);
    assert!(
        problems(&text)
            .iter()
            .all(|p| !p.is_error() && !p.to_string().contains("cannot happen by itself")),
        "{:?}",
        problems(&text)
    );
    // 3 hosts + a witness: 4 votes, even: the witness buys nothing.
    let even = with_witness(3, "agent_url = \"https://10.0.0.9:7070\"", "");
    expect(
        &even,
        Warning,
        "nodes",
        "4 votes (3 etcd hosts, 1 witnesses)",
    );
}

#[test]
fn a_witness_has_no_etcd_urls_and_needs_an_agent_url() {
    let text = with_witness(
        2,
        "peer_url = \"https://10.0.0.9:2380\"\nagent_url = \"https://10.0.0.9:7070\"",
        "",
    );
    let p = expect(
        &text,
        Error,
        "nodes[2].peer_url",
        "a witness (role = \"witness\") runs the agent only, without etcd: remove `peer_url`",
    );
    assert_eq!(
        p.line,
        Some(line_of(&text, "peer_url = \"https://10.0.0.9:2380\""))
    );
    let none = with_witness(2, "", "");
    expect(&none, Error, "nodes[2].agent_url", "is required");
    // A witness may be this host, and may come first in the file.
    let me = with_witness(2, "agent_url = \"https://10.0.0.9:7070\"", "")
        .replace("host = \"edge-1\"", "host = \"router\"");
    assert!(
        problems(&me).iter().all(|p| !p.is_error()),
        "{:?}",
        problems(&me)
    );
    let first = "profile = \"edge\"\nhost = \"edge-2\"\nsite = \"s\"\n\n[[nodes]]\nname = \"router\"\nrole = \"witness\"\nclient_url = \"https://10.0.0.9:2379\"\nagent_url = \"https://10.0.0.9:7070\"\n\n[[nodes]]\nname = \"edge-2\"\npeer_url = \"https://10.0.0.2:2380\"\nclient_url = \"https://10.0.0.2:2379\"\nagent_url = \"https://10.0.0.2:7070\"\n\n[uplink]\nurl = \"https://region.example.com/api/v1/write\"\n";
    expect(first, Error, "nodes[0].client_url", "remove `client_url`");
    // Only witnesses: no etcd host at all.
    let only = "profile = \"edge\"\nhost = \"router\"\nsite = \"s\"\n\n[[nodes]]\nname = \"router\"\nrole = \"witness\"\nagent_url = \"https://10.0.0.9:7070\"\n";
    expect(only, Error, "nodes", "at least one must be an etcd host");
    // An unknown role is refused with the choices.
    let bad = with_witness(2, "agent_url = \"https://10.0.0.9:7070\"", "")
        .replace("role = \"witness\"", "role = \"arbiter\"");
    assert!(
        problems(&bad)
            .iter()
            .any(|p| p.is_error() && p.key.as_deref() == Some("nodes[2].role")),
        "{:?}",
        problems(&bad)
    );
}
