//! The public entry points: load, check, errors and JSON.

use std::path::Path;

use edgeplane_config::{ConfigError, Severity, check, check_str, explain, load, load_str};

use crate::support::*;

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("edgeplane.toml");
    std::fs::write(&path, edge("")).unwrap_or_else(|e| panic!("{e}"));
    let loaded = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.host, "edge-1");
    assert!(check(&path).ok());
    assert!(explain(&path).is_ok());
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let path = Path::new("/nonexistent/edgeplane.toml");
    match load(path) {
        Err(ConfigError::Read { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a read error, got {other:?}"),
    }
    let report = check(path);
    assert!(!report.ok());
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].message.contains("cannot read"));
}

#[test]
fn invalid_file_error_lists_every_problem_on_its_own_line() {
    let text = edge("[cluster]\nvoters = 2\nvotrs = 1\n");
    let err = load_str(&text, Path::new(ORIGIN))
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines.iter().all(|l| l.starts_with("edge.toml:")), "{shown}");
    let ConfigError::Invalid { problems } = err else {
        panic!("not Invalid")
    };
    assert_eq!(problems.len(), 2);
}

#[test]
fn warnings_come_back_with_a_loaded_config() {
    let loaded =
        load_str(&site("edge", 2, ""), Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.warnings.is_empty());
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
}

#[test]
fn report_json_and_human() {
    let text = edge("[cluster]\nvoters = 2\n\n[buffer]\nfsync = \"never\"\n");
    let report = check_str(&text, Path::new(ORIGIN));
    assert!(!report.ok());
    let json = report.to_json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["errors"], 1);
    assert_eq!(json["warnings"], 1);
    let p = &json["problems"][0];
    assert_eq!(p["severity"], "error");
    assert_eq!(p["key"], "cluster.voters");
    assert_eq!(p["file"], "edge.toml");
    assert!(p["line"].is_u64());
    let human = report.render_human();
    assert!(
        human.ends_with("edge.toml: 1 error, 1 warning\n"),
        "{human}"
    );
    let ok = check_str(&edge(""), Path::new(ORIGIN));
    assert_eq!(ok.render_human(), "edge.toml: ok\n");
}
