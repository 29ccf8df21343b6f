//! `explain`: every resolved value with its source.

use std::path::Path;

use edgeplane_config::{Profile, Source, explain_str};

use crate::support::*;

fn source(text: &str, key: &str) -> Source {
    let e = explain_str(text, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    e.get(key)
        .unwrap_or_else(|| panic!("no entry {key}"))
        .source
}

#[test]
fn marks_file_and_default() {
    let text = edge("[cluster]\nvoters = 3\n\n[paths]\nroot = \"/data\"\n");
    let e = explain_str(&text, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    let get = |k: &str| e.get(k).unwrap_or_else(|| panic!("no entry {k}"));
    assert_eq!(get("cluster.voters").source, Source::File);
    assert_eq!(get("cluster.voters").value, "3");
    assert_eq!(
        get("cluster.failure_detection").source,
        Source::Profile(Profile::Edge)
    );
    assert_eq!(get("cluster.failure_detection").value, "1s");
    assert_eq!(get("nodes[3].agent_url").source, Source::File);
    assert_eq!(get("profile").source, Source::File);
    assert_eq!(get("paths.root").source, Source::File);
    // Derived from root, but not written: a default.
    assert_eq!(get("paths.state_dir").value, "/data/state");
    assert_eq!(
        get("paths.state_dir").source,
        Source::Profile(Profile::Edge)
    );
    assert_eq!(
        get("metrics.rules[0].metric").source,
        Source::Profile(Profile::Edge)
    );
    assert_eq!(get("buffer.budget_bytes").value, "2GiB");
    assert_eq!(get("snapshots.retain_age").value, "7d");
    assert_eq!(get("uplink.ca_file").value, "(none)");
    assert_eq!(
        get("metrics.classes").value,
        "[\"critical\", \"high\", \"normal\", \"low\"]"
    );
}

#[test]
fn rules_from_the_file_are_file_even_where_omitted() {
    let text = edge("[[metrics.rules]]\nmetric = \"up\"\nclass = \"critical\"\n");
    assert_eq!(source(&text, "metrics.rules[0].metric"), Source::File);
    // `labels` was not written, but the file's rules replaced the defaults whole.
    assert_eq!(source(&text, "metrics.rules[0].labels"), Source::File);
}

#[test]
fn region_defaults_are_marked_region() {
    let text = site("region", 4, "[uplink]\n");
    assert_eq!(
        source(&text, "uplink.enabled"),
        Source::Profile(Profile::Region)
    );
    let missing_profile = edge("").replacen("profile = \"edge\"\n", "", 1);
    assert_eq!(
        source(&missing_profile, "profile"),
        Source::Profile(Profile::Edge)
    );
}

#[test]
fn maps_are_flattened() {
    let text = edge("[metrics.external_labels]\nregion = \"eu\"\n");
    let e = explain_str(&text, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    let entry = e
        .get("metrics.external_labels.region")
        .unwrap_or_else(|| panic!("missing"));
    assert_eq!((entry.value.as_str(), entry.source), ("eu", Source::File));
}

#[test]
fn covers_every_schema_key() {
    let e = explain_str(&edge(""), Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    for path in edgeplane_config::key_paths() {
        // Entries use indexes (`nodes[0].name`); the schema uses `[]`.
        let pattern = path.replace("[]", "[0]");
        assert!(
            e.entries.iter().any(|x| x.key == pattern
                || x.key.starts_with(&format!("{pattern}."))
                || x.key.starts_with(&format!("{pattern}["))
                || (path.contains("[]")
                    && x.key.starts_with(&path[..path.find("[]").unwrap_or(0)]))),
            "explain has nothing for {path}"
        );
    }
}

#[test]
fn renders_table_and_json() {
    let e = explain_str(&edge(""), Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    let table = e.render_human();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KEY"));
    let voters = lines
        .iter()
        .find(|l| l.starts_with("cluster.voters "))
        .unwrap_or_else(|| panic!("no voters line"));
    assert!(voters.ends_with("default (edge)"), "{voters}");
    // Aligned: the value column starts at the same place on every line.
    let col = lines[0].find("VALUE").unwrap_or(0);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.len() > col && l.as_bytes()[col - 1] == b' ')
    );
    let json = e.to_json();
    assert_eq!(json["profile"], "edge");
    let first = &json["entries"][0];
    assert_eq!(first["key"], "profile");
    assert_eq!(first["source"], "file");
}

#[test]
fn refuses_an_invalid_file() {
    let text = edge("[cluster]\nvoters = 2\n");
    let err = explain_str(&text, Path::new(ORIGIN))
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    assert!(err.to_string().contains("cluster.voters"));
}

/// Explain reads no secret file: a planted password shows nowhere, the
/// header (a tenant, not a credential) and the user name do.
#[test]
fn explain_never_shows_the_basic_auth_password() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let planted = "PLANTED-pw-7f3a9c41e2";
    let pw = dir.path().join("region.pass");
    std::fs::write(&pw, planted).unwrap_or_else(|e| panic!("{e}"));
    let text = edge(&format!(
        "[uplink]\nurl = \"https://r.example.com/api/v1/write\"\nbasic_auth_user = \"site-7\"\nbasic_auth_password_file = \"{}\"\n\n[uplink.headers]\nX-Scope-OrgID = \"tenant-a\"\n",
        pw.display()
    ));
    let e = explain_str(&text, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    let human = e.render_human();
    let json = e.to_json().to_string();
    for out in [&human, &json] {
        assert!(!out.contains(planted), "{out}");
        assert!(out.contains("tenant-a"), "{out}");
    }
    let get = |k: &str| e.get(k).unwrap_or_else(|| panic!("no entry {k}"));
    assert_eq!(get("uplink.headers.X-Scope-OrgID").value, "tenant-a");
    assert_eq!(get("uplink.basic_auth_user").value, "site-7");
    assert_eq!(
        get("uplink.basic_auth_password_file").value,
        pw.display().to_string()
    );
}
