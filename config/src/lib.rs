//! Edgeplane's configuration: one TOML file, two profiles, every problem at once.
//!
//! Why this crate exists: the agent decides failover timing, when to rebuild a
//! cluster and how much disk metrics may use, on sites nobody can reach for
//! days. A typo there must never become a silent default or a restart loop,
//! so the whole file is read, checked and explained here, before anything
//! acts on it, and the rest of Edgeplane only sees the resolved [`Config`].
//!
//! The pipeline:
//!
//! 1. **Parse** with spans (`toml`), so every problem has a line and column.
//! 2. **Check keys** against the schema read from the serde derives in
//!    [`raw`](crate) (every level `deny_unknown_fields`); every unknown key is
//!    reported with the nearest valid one, then type errors are collected
//!    one key at a time.
//! 3. **Resolve**: `profile = "edge" | "region"` supplies a default for every
//!    key the file leaves out ([`defaults`]).
//! 4. **Validate** the resolved config: errors (unusable) and warnings
//!    (legal but risky), all of them, each located in the file.
//! 5. **Explain** (optional): every resolved value with its source, file or
//!    profile default.
//!
//! `config/README.md` is the reference for every key.
//!
//! ```
//! use std::path::Path;
//! let text = r#"
//!     profile = "region"
//!     host = "r1"
//!     site = "eu-1"
//!     [[nodes]]
//!     name = "r1"
//!     peer_url = "https://10.0.0.1:2380"
//!     client_url = "https://10.0.0.1:2379"
//!     agent_url = "https://10.0.0.1:7070"
//! "#;
//! let loaded = edgeplane_config::load_str(text, Path::new("region.toml")).map_err(|e| e.to_string())?;
//! assert_eq!(loaded.config.cluster.voters, 1);
//! # Ok::<(), String>(())
//! ```

use std::path::Path;

mod document;
mod explain;
mod model;
mod problem;
mod profile;
mod raw;
pub mod units;
mod validate;

pub use explain::{EXPLAIN_SCHEMA, Entry, Explained, REDACTED_KEYS, Source};
pub use model::*;
pub use problem::{CHECK_SCHEMA, ConfigError, Problem, Report, Severity};
pub use profile::{
    DEFAULT_ETCD_BINARY, DEFAULT_LOG_DIR, DEFAULT_PROFILE, DEFAULT_ROOT, DEFAULT_TLS_DIR,
    default_rules, default_voters, defaults,
};
pub use validate::{Endpoint, parse_url};

/// Default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/edgeplane/edgeplane.toml";

/// A usable config and the warnings it raised.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Legal but risky choices; log them at start-up.
    pub warnings: Vec<Problem>,
}

/// Every key path the file format knows, e.g. `cluster.voters`,
/// `nodes[].name`, `metrics.rules[].labels`.
pub fn key_paths() -> Vec<String> {
    raw::all_key_paths()
}

struct Analysis {
    config: Option<Config>,
    doc: document::Document,
    /// Errors and warnings in reading order.
    problems: Vec<Problem>,
}

impl Analysis {
    fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }
}

fn analyse(text: &str, origin: &Path) -> Analysis {
    let (raw, doc, mut problems) = document::read(text, origin);
    let config = raw.map(profile::resolve);
    if let Some(cfg) = &config {
        problems.extend(validate::validate(cfg, &doc));
    }
    problem::sort(&mut problems);
    Analysis {
        config,
        doc,
        problems,
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load, resolve and validate the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_str(&read(path)?, path)
}

/// [`load`] from a string; `origin` names the file in problems.
pub fn load_str(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    let a = analyse(text, origin);
    match a.config {
        Some(config) if !a.has_errors() => Ok(Loaded {
            config,
            warnings: a.problems,
        }),
        _ => Err(ConfigError::Invalid {
            problems: a.problems,
        }),
    }
}

/// Every problem of the file at `path` (an unreadable file is one problem).
pub fn check(path: &Path) -> Report {
    match read(path) {
        Ok(text) => check_str(&text, path),
        Err(e) => Report::new(path, e.problems()),
    }
}

/// [`check`] from a string.
pub fn check_str(text: &str, origin: &Path) -> Report {
    Report::new(origin, analyse(text, origin).problems)
}

/// The resolved config with the source of every value.
pub fn explain(path: &Path) -> Result<Explained, ConfigError> {
    explain_str(&read(path)?, path)
}

/// [`explain`] from a string.
pub fn explain_str(text: &str, origin: &Path) -> Result<Explained, ConfigError> {
    let a = analyse(text, origin);
    match a.config {
        Some(config) if !a.has_errors() => Ok(Explained::new(config, &a.doc, a.problems)),
        _ => Err(ConfigError::Invalid {
            problems: a.problems,
        }),
    }
}
