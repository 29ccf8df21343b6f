//! The house plan, checked: no import cycles between the agent's modules,
//! and no production module that imports the loopback-site simulator.
//! Reads the sources only (no processes): `cargo test -p edgeplane-tests
//! --test structure`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A file's code before its `#[cfg(test)]` module, comments dropped.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules of `agent/` a module names: `super::x`, `crate::agent::x`
/// and each `x` of `super::{x, y::z}`. A name that is no module (`Shared`,
/// `recent_ops`) is an item of `mod.rs`, and counts as an import of `mod`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["super::", "crate::agent::"] {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or_default())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default(),
                ],
            };
            for n in names {
                if modules.contains(n) {
                    out.insert(n.to_string());
                } else if !n.is_empty() && !["super", "self", "*"].contains(&n) {
                    out.insert("mod".to_string());
                }
            }
        }
    }
    out
}

fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_agent_s_modules_import_no_caller() {
    let dir = src("appliance/src/agent");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    let name = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| name(p))
        .filter(|n| n != "mod")
        .collect();
    let graph: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|p| {
            let mut deps = imports(&production_code(p), &modules);
            deps.remove(&name(p));
            (name(p), deps)
        })
        .collect();
    assert!(
        graph.get("local").is_some_and(|d| d.contains("coordinate")),
        "the parser lost the loop's calls: {graph:?}"
    );
    if let Some(c) = cycle(&graph) {
        panic!(
            "import cycle in appliance/src/agent: {}\nthe graph: {graph:#?}",
            c.join(" -> ")
        );
    }
}

#[test]
fn no_production_module_imports_the_simulator() {
    // The loopback site and the benches are the lab: `demo`, `bench` and
    // `snapshot bench` may use them, the agent, diag and the CLI may not.
    let lab = ["sim", "demo.rs", "bench.rs", "snapshot_bench.rs"];
    let mut stack = vec![src("appliance/src")];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .flatten()
        {
            let p = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            if lab.contains(&file.as_str()) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if file.ends_with(".rs") && production_code(&p).contains("crate::sim") {
                offenders.push(p.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "production modules import the simulator: {offenders:?}"
    );
}
