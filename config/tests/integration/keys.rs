//! Unknown keys, type errors and syntax errors: all reported, all located.

use edgeplane_config::Severity::Error;

use crate::support::*;

#[test]
fn misspelt_key_duplicate_host_and_even_voters_are_all_reported() {
    let text = "profile = \"edge\"
host = \"edge-1\"
site = \"s\"

[[nodes]]
name = \"edge-1\"
peer_url = \"https://10.0.0.1:2380\"
client_url = \"https://10.0.0.1:2379\"
agent_url = \"https://10.0.0.1:7070\"

[[nodes]]
name = \"edge-2\"
peer_url = \"https://10.0.0.2:2380\"
client_url = \"https://10.0.0.2:2379\"
agent_url = \"https://10.0.0.2:7070\"

[[nodes]]
name = \"edge-2\"
peer_url = \"https://10.0.0.3:2380\"
client_url = \"https://10.0.0.3:2379\"
agent_url = \"https://10.0.0.3:7070\"

[cluster]
voters = 2
manage_membrship = true

[uplink]
url = \"https://r.example.com/api/v1/write\"
";
    let all = problems(text);
    assert_eq!(all.iter().filter(|p| p.is_error()).count(), 3, "{all:#?}");

    let typo = expect(
        text,
        Error,
        "cluster.manage_membrship",
        "did you mean `manage_membership`?",
    );
    assert_eq!((typo.line, typo.column), (Some(25), Some(1)));

    let dup = expect(
        text,
        Error,
        "nodes[2].name",
        "duplicate host name \"edge-2\" (first defined on line 12)",
    );
    assert_eq!(dup.line, Some(18));
    assert_eq!(
        dup.to_string(),
        "edge.toml:18:1: error: key `nodes[2].name`: duplicate host name \"edge-2\" (first defined on line 12)"
    );

    let voters = expect(text, Error, "cluster.voters", "must be 1, 3 or 5");
    assert_eq!(voters.line, Some(24));

    // Reading order.
    let lines: Vec<usize> = all.iter().filter_map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}

#[test]
fn type_error_names_line_column_key_and_expectation() {
    let text = edge("[cluster]\nvoters = \"three\"\n");
    let p = expect(&text, Error, "cluster.voters", "expected a whole number");
    assert_eq!(p.line, Some(line_of(&text, "voters = \"three\"")));
    assert_eq!(p.column, Some(10), "points at the value");
    assert!(p.message.contains("\"three\""), "{}", p.message);
}

#[test]
fn every_type_error_is_reported_not_just_the_first() {
    let text = edge(
        "[cluster]\nvoters = true\nfailure_detection = 5\n\n[etcd]\npre_vote = \"yes\"\nquota_backend_bytes = \"lots\"\n\n[buffer]\nfsync = \"sometimes\"\n",
    );
    expect(&text, Error, "cluster.voters", "expected a whole number");
    expect(
        &text,
        Error,
        "cluster.failure_detection",
        "expected a duration string",
    );
    expect(&text, Error, "etcd.pre_vote", "expected a boolean");
    expect(
        &text,
        Error,
        "etcd.quota_backend_bytes",
        "invalid byte size",
    );
    expect(&text, Error, "buffer.fsync", "unknown variant `sometimes`");
    assert_eq!(problems(&text).len(), 5, "{:#?}", problems(&text));
}

#[test]
fn bad_duration_text_explains_the_format() {
    let text = edge("[snapshots]\ninterval = \"every hour\"\n");
    let p = expect(
        &text,
        Error,
        "snapshots.interval",
        "write a duration such as",
    );
    assert_eq!(p.line, Some(line_of(&text, "every hour")));
}

#[test]
fn byte_sizes_accept_integers_and_units() {
    let text = edge(
        "[buffer]\nbudget_bytes = 1073741824\nsegment_bytes = \"16MiB\"\n\n[defrag]\nmin_db_bytes = \"100MB\"\n",
    );
    clean(&text);
    let cfg = edgeplane_config::load_str(&text, std::path::Path::new(ORIGIN))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(cfg.buffer.budget_bytes, 1 << 30);
    assert_eq!(cfg.buffer.segment_bytes, 16 << 20);
    assert_eq!(cfg.defrag.min_db_bytes, 100_000_000);
    let bad = edge("[buffer]\nbudget_bytes = \"2 parsecs\"\n");
    expect(&bad, Error, "buffer.budget_bytes", "unknown unit");
    let neg = edge("[buffer]\nbudget_bytes = -5\n");
    expect(&neg, Error, "buffer.budget_bytes", "cannot be negative");
}

#[test]
fn suggestion_from_another_table() {
    let text = edge("[etcd]\nvoters = 3\n");
    expect(&text, Error, "etcd.voters", "did you mean `cluster.voters`");
}

#[test]
fn far_off_key_lists_the_valid_keys() {
    let text = edge("[defrag]\nzzzz = 1\n");
    expect(
        &text,
        Error,
        "defrag.zzzz",
        "valid keys are: enabled, free_ratio, min_db_bytes, check_interval",
    );
}

#[test]
fn unknown_keys_in_arrays_of_tables_and_sections() {
    let text =
        edge("[cluser]\nvoters = 3\n\n[[metrics.rules]]\nmetric = \"up\"\nclas = \"critical\"\n");
    expect(&text, Error, "cluser", "did you mean `cluster`?");
    let rule = expect(
        &text,
        Error,
        "metrics.rules[0].clas",
        "in [metrics.rules]; did you mean `class`?",
    );
    assert_eq!(rule.line, Some(line_of(&text, "clas = ")));
    // The rule lost its class to the typo: reported as missing too.
    expect(&text, Error, "metrics.rules[0].class", "is required");
}

#[test]
fn unknown_key_in_a_node() {
    let text = edge("").replacen("peer_url", "peer_ulr", 1);
    expect(
        &text,
        Error,
        "nodes[0].peer_ulr",
        "did you mean `peer_url`?",
    );
    expect(&text, Error, "nodes[0].peer_url", "is required");
}

#[test]
fn bad_profile() {
    let text = edge("").replacen("profile = \"edge\"", "profile = \"edgy\"", 1);
    let p = expect(
        &text,
        Error,
        "profile",
        "unknown variant `edgy`, expected `edge` or `region`",
    );
    assert_eq!((p.line, p.column), (Some(1), Some(11)));
}

#[test]
fn broken_node_name_does_not_cascade() {
    // nodes[0].name has the wrong type: no "host not among nodes", no "is required".
    let text = edge("").replacen("name = \"edge-1\"", "name = 1", 1);
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].key.as_deref(), Some("nodes[0].name"));
}

#[test]
fn syntax_errors_are_located() {
    let text = "profile = \"edge\"\nhost = \n";
    let all = problems(text);
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .all(|p| p.is_error() && p.message.starts_with("TOML syntax")),
        "{all:#?}"
    );
    assert_eq!(all[0].line, Some(2));
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let text = edge("[cluster]\nvoters = 3\nvoters = 5\n");
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].line, Some(line_of(&text, "voters = 5")));
}

#[test]
fn uplink_out_of_order_takes_three_values() {
    let text =
        edge("[uplink]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\nout_of_order = \"maybe\"\n");
    expect(
        &text,
        Error,
        "uplink.out_of_order",
        "unknown variant `maybe`, expected one of `auto`, `accepted`, `refused`",
    );
    for v in ["auto", "accepted", "refused"] {
        let text = edge(&format!(
            "[uplink]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\nout_of_order = \"{v}\"\n"
        ));
        assert!(
            problems(&text)
                .iter()
                .all(|p| p.key.as_deref() != Some("uplink.out_of_order")),
            "{v}: {:#?}",
            problems(&text)
        );
    }
}
