//! `edgeplane config check --explain`: every resolved value and where it came
//! from.
//!
//! Provenance is generic: the resolved [`Config`] is serialized, then walked
//! in schema order to a flat list of key paths; a key counts as set by the
//! file when the parsed document contains that key path, or an array that
//! contains it (an array in the file replaces the default array whole).
//! Tables do not count: `[cluster]` with one key leaves the rest defaulted.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::document::Document;
use crate::model::{Config, Profile};
use crate::problem::Problem;
use crate::raw::{self, Kind};
use crate::units::format_bytes;

/// Keys (last path segment) whose values are secret and print as
/// `<redacted>`. Nothing in the schema holds a secret today
/// (`uplink.bearer_token_file` is a path to one), so this is empty; add the
/// key here the day a secret value is added to the schema.
pub const REDACTED_KEYS: &[&str] = &[];

const REDACTED: &str = "<redacted>";
/// How a value that is not set (an absent optional key) is written.
const UNSET: &str = "(none)";

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Written in the config file.
    File,
    /// Not in the file: the default of this profile.
    Profile(Profile),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File => f.write_str("file"),
            Source::Profile(p) => write!(f, "default ({p})"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One resolved value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Key path, e.g. `cluster.voters`, `nodes[0].name`.
    pub key: String,
    /// The value as it would be written in the file (strings unquoted,
    /// durations humantime, `*_bytes` with a binary unit where exact).
    pub value: String,
    pub source: Source,
}

impl Entry {
    /// Whether the key has a value (an optional key may be unset).
    pub fn is_set(&self) -> bool {
        self.value != UNSET
    }
}

/// The resolved config, flattened with provenance.
#[derive(Debug, Clone)]
pub struct Explained {
    pub file: PathBuf,
    pub config: Config,
    pub entries: Vec<Entry>,
    /// Warnings of the file (it has no errors, or this would not exist).
    pub warnings: Vec<Problem>,
}

impl Explained {
    pub(crate) fn new(config: Config, doc: &Document, warnings: Vec<Problem>) -> Self {
        let entries = flatten(&config, doc, REDACTED_KEYS);
        Explained {
            file: doc.origin.clone(),
            config,
            entries,
            warnings,
        }
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// An aligned table: key, value, source.
    pub fn render_human(&self) -> String {
        let kw = self
            .entries
            .iter()
            .map(|e| e.key.len())
            .max()
            .unwrap_or(0)
            .max(3);
        let vw = self
            .entries
            .iter()
            .map(|e| e.value.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 60);
        let mut out = String::new();
        let _ = writeln!(out, "{:kw$}  {:vw$}  SOURCE", "KEY", "VALUE");
        for e in &self.entries {
            let _ = writeln!(out, "{:kw$}  {:vw$}  {}", e.key, e.value, e.source);
        }
        out
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "schema": EXPLAIN_SCHEMA,
            "file": self.file.display().to_string(),
            "profile": self.config.profile,
            "entries": self.entries,
            "warnings": self.warnings,
        })
    }
}

/// The name and version of `config check --explain --json`'s document.
pub const EXPLAIN_SCHEMA: &str = "edgeplane.config.explain/1";

/// Flatten `config` in schema order.
pub(crate) fn flatten(config: &Config, doc: &Document, redacted: &[&str]) -> Vec<Entry> {
    // Serializing our own plain structs cannot fail: every path came from
    // a UTF-8 file. Should it ever, the explanation is empty, not a panic.
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    // Witnesses are kept apart from the etcd hosts in the model; the file
    // has them among `[[nodes]]`, so they are shown there, at their place.
    if !config.witnesses.is_empty() {
        let mut all: Vec<&crate::model::Node> =
            config.nodes.iter().chain(&config.witnesses).collect();
        all.sort_by_key(|n| n.file_index);
        let nodes: Vec<Value> = all
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                if n.role == crate::model::NodeRole::Witness {
                    v["peer_url"] = Value::Null;
                    v["client_url"] = Value::Null;
                }
                v
            })
            .collect();
        value["nodes"] = Value::Array(nodes);
    }
    let mut out = Vec::new();
    walk_table(&value, "", &raw::schema(), &mut |key, v| {
        let last = key.rsplit('.').next().unwrap_or(&key);
        let value = if redacted.contains(&last) {
            REDACTED.to_string()
        } else {
            render(last, v)
        };
        let source = if doc.sets(&key) {
            Source::File
        } else {
            Source::Profile(config.profile)
        };
        out.push(Entry { key, value, source });
    });
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(v: &Value, prefix: &str, schema: &raw::Table, emit: &mut dyn FnMut(String, &Value)) {
    for (name, kind) in &schema.fields {
        let path = join(prefix, name);
        let child = v.get(*name).unwrap_or(&Value::Null);
        match kind {
            Kind::Leaf => emit(path, child),
            Kind::Table(sub) => walk_table(child, &path, &sub(), emit),
            Kind::Array(sub) => match child.as_array() {
                Some(items) if !items.is_empty() => {
                    let sub = sub();
                    for (i, item) in items.iter().enumerate() {
                        walk_table(item, &format!("{path}[{i}]"), &sub, emit);
                    }
                }
                _ => emit(path, &Value::Array(Vec::new())),
            },
            Kind::Map => match child.as_object() {
                Some(map) if !map.is_empty() => {
                    for (k, item) in map {
                        emit(join(&path, k), item);
                    }
                }
                _ => emit(path, &Value::Object(serde_json::Map::new())),
            },
        }
    }
}

fn render(last_key: &str, v: &Value) -> String {
    match v {
        Value::Null => UNSET.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) if last_key.ends_with("_bytes") => match n.as_u64() {
            Some(b) => format_bytes(b),
            None => n.to_string(),
        },
        Value::Object(m) if m.is_empty() => "{}".to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(Value::to_string).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::defaults;

    /// The model and the raw structs must have the same keys at every level,
    /// or explain (which walks the raw schema) would miss a resolved field.
    #[test]
    fn model_matches_schema() {
        fn check(v: &Value, schema: &raw::Table, at: &str) {
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("{at} is not an object"));
            let model: Vec<&str> = obj.keys().map(String::as_str).collect();
            let mut names: Vec<&str> = schema.names().collect();
            let mut model_sorted = model.clone();
            model_sorted.sort_unstable();
            names.sort_unstable();
            assert_eq!(model_sorted, names, "keys differ at {at:?}");
            for (name, kind) in &schema.fields {
                if let Kind::Table(sub) = kind {
                    check(&obj[*name], &sub(), name);
                }
            }
        }
        let mut cfg = defaults(Profile::Edge);
        cfg.nodes.push(crate::model::Node {
            name: "a".into(),
            role: crate::model::NodeRole::Etcd,
            file_index: 0,
            peer_url: String::new(),
            client_url: String::new(),
            agent_url: String::new(),
        });
        let v = serde_json::to_value(&cfg).unwrap_or(Value::Null);
        check(&v, &raw::schema(), "");
        let node_schema = match raw::schema().get("nodes") {
            Some(Kind::Array(f)) => f(),
            _ => panic!("nodes is not an array"),
        };
        check(&v["nodes"][0], &node_schema, "nodes[0]");
        let Some(Kind::Table(metrics)) = raw::schema().get("metrics") else {
            panic!("metrics is not a table")
        };
        let Some(Kind::Array(rule)) = metrics().get("rules") else {
            panic!("rules is not an array")
        };
        check(&v["metrics"]["rules"][0], &rule(), "metrics.rules[0]");
    }

    #[test]
    fn redaction_hook() {
        let doc = Document {
            origin: "x.toml".into(),
            keys: Default::default(),
            broken: Vec::new(),
        };
        let mut cfg = defaults(Profile::Edge);
        cfg.host = "secret-host".into();
        let entries = flatten(&cfg, &doc, &["host"]);
        let host = entries
            .iter()
            .find(|e| e.key == "host")
            .map(|e| e.value.as_str());
        assert_eq!(host, Some(REDACTED));
    }
}
