//! config/README.md is the reference: every key documented, defaults true.

use std::path::Path;

use edgeplane_config::explain_str;

use crate::support::*;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The cells of every table row whose first cell is a backquoted key.
fn key_rows(readme: &str) -> Vec<Vec<String>> {
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn every_key_is_documented() {
    let documented: Vec<String> = key_rows(&readme())
        .into_iter()
        .map(|r| r[0].trim_matches('`').to_string())
        .collect();
    let missing: Vec<String> = edgeplane_config::key_paths()
        .into_iter()
        .filter(|k| !documented.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from config/README.md: {missing:?}"
    );
}

#[test]
fn every_documented_key_exists() {
    let keys = edgeplane_config::key_paths();
    for row in key_rows(&readme()) {
        let k = row[0].trim_matches('`');
        assert!(
            keys.iter().any(|x| x == k),
            "README documents unknown key {k}"
        );
    }
}

/// Backquoted defaults in the Edge / Region columns equal what explain shows.
#[test]
fn documented_defaults_match_the_code() {
    let edge_e = explain_str(&edge(""), Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    let region_e = explain_str(&site("region", 4, "[uplink]\n"), Path::new(ORIGIN))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut compared = 0;
    for row in key_rows(&readme()) {
        if row.len() < 5 {
            continue;
        }
        let key = row[0].trim_matches('`');
        for (cell, explained) in [(&row[2], &edge_e), (&row[3], &region_e)] {
            let Some(doc) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue;
            };
            let Some(entry) = explained.get(key) else {
                continue;
            };
            if entry.source == edgeplane_config::Source::File {
                continue;
            }
            assert_eq!(
                doc, entry.value,
                "README default of {key} in {:?}",
                explained.config.profile
            );
            compared += 1;
        }
    }
    assert!(
        compared > 80,
        "only {compared} defaults compared: table format changed?"
    );
}

#[test]
fn default_rules_are_documented() {
    let text = readme();
    for profile in [
        edgeplane_config::Profile::Edge,
        edgeplane_config::Profile::Region,
    ] {
        for rule in edgeplane_config::default_rules(profile) {
            assert!(
                text.contains(&format!("`{}`", rule.metric)),
                "default rule {} is not in the README",
                rule.metric
            );
        }
    }
}
