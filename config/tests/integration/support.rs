//! Building config texts and looking for problems in the results.

use std::path::Path;

use edgeplane_config::{Problem, Severity, check_str};

pub const ORIGIN: &str = "edge.toml";

/// A valid `profile` site of `n` hosts (edge-1 … edge-n), plus `extra`
/// (tables only). An `[uplink]` with a url is added unless `extra` has one.
pub fn site(profile: &str, n: usize, extra: &str) -> String {
    let mut s = format!("profile = \"{profile}\"\nhost = \"edge-1\"\nsite = \"test-site\"\n");
    for i in 1..=n {
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"edge-{i}\"\npeer_url = \"https://10.0.0.{i}:2380\"\nclient_url = \"https://10.0.0.{i}:2379\"\nagent_url = \"https://10.0.0.{i}:7070\"\n"
        ));
    }
    s.push('\n');
    s.push_str(extra);
    if !extra.contains("[uplink]") {
        s.push_str("\n[uplink]\nurl = \"https://region.example.com/api/v1/write\"\n");
    }
    s
}

/// An edge site of 4 hosts (3 voters + 1 standby: no warnings) plus `extra`.
pub fn edge(extra: &str) -> String {
    site("edge", 4, extra)
}

pub fn problems(text: &str) -> Vec<Problem> {
    check_str(text, Path::new(ORIGIN)).problems
}

/// The problems of `severity` on `key` (exact key path).
pub fn on(text: &str, severity: Severity, key: &str) -> Vec<Problem> {
    problems(text)
        .into_iter()
        .filter(|p| p.severity == severity && p.key.as_deref() == Some(key))
        .collect()
}

/// Assert there is exactly one problem of `severity` on `key` whose message
/// contains `fragment`; return it.
#[track_caller]
pub fn expect(text: &str, severity: Severity, key: &str, fragment: &str) -> Problem {
    let all = problems(text);
    let found: Vec<&Problem> = all
        .iter()
        .filter(|p| {
            p.severity == severity && p.key.as_deref() == Some(key) && p.message.contains(fragment)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {severity} on `{key}` containing {fragment:?}, got:\n{}",
        all.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    found[0].clone()
}

/// Assert the text has no problems at all.
#[track_caller]
pub fn clean(text: &str) {
    let all = problems(text);
    assert!(
        all.is_empty(),
        "expected no problems, got:\n{}",
        all.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// 1-based line of the first line containing `needle`.
#[track_caller]
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
}
