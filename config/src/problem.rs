//! What is wrong with a config file, said so that a site engineer can fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// Legal but risky; the agent starts and logs it.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, located in the file where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line of the offending key (or value) in the file.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// Key path, e.g. `nodes[2].name` or `cluster.voters`.
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The name and version of `config check --json`'s document.
pub const CHECK_SCHEMA: &str = "edgeplane.config.check/1";

impl fmt::Display for Problem {
    /// `edge.toml:12:1: error: key `nodes[2].name`: duplicate host name "edge-2" (first defined on line 5)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: ", self.severity)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Sort problems in reading order: by line, located ones first, errors before
/// warnings on the same line. Stable, so unlocated problems keep check order.
pub(crate) fn sort(problems: &mut [Problem]) {
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column, p.severity));
}

fn write_lines(f: &mut fmt::Formatter<'_>, problems: &[Problem]) -> fmt::Result {
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{p}")?;
    }
    Ok(())
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has at least one error. `problems` holds every error and
    /// warning found, in reading order; Display prints one per line.
    #[error("{}", Lines(problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// Every problem, an unreadable file included (as one problem).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem {
                severity: Severity::Error,
                file: path.clone(),
                line: None,
                column: None,
                key: None,
                message: format!("cannot read the file: {source}"),
            }],
            ConfigError::Invalid { problems } => problems.clone(),
        }
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, self.0)
    }
}

/// The result of `edgeplane config check`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl Report {
    pub(crate) fn new(file: &Path, problems: Vec<Problem>) -> Self {
        Report {
            file: file.to_path_buf(),
            problems,
        }
    }

    /// No errors (warnings allowed).
    pub fn ok(&self) -> bool {
        !self.problems.iter().any(Problem::is_error)
    }

    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": CHECK_SCHEMA,
            "file": self.file.display().to_string(),
            "ok": self.ok(),
            "errors": self.errors(),
            "warnings": self.warnings(),
            "problems": self.problems,
        })
    }

    /// One line per problem, then a summary line; ends with a newline.
    pub fn render_human(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        let (e, w) = (self.errors(), self.warnings());
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        if e == 0 && w == 0 {
            writeln!(f, "{}: ok", self.file.display())
        } else if e == 0 {
            writeln!(f, "{}: ok, {w} warning{}", self.file.display(), plural(w))
        } else {
            writeln!(
                f,
                "{}: {e} error{}, {w} warning{}",
                self.file.display(),
                plural(e),
                plural(w)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let p = Problem {
            severity: Severity::Error,
            file: "edge.toml".into(),
            line: Some(12),
            column: Some(1),
            key: Some("nodes[2].name".into()),
            message: "duplicate host name \"edge-2\" (first defined on line 5)".into(),
        };
        assert_eq!(
            p.to_string(),
            "edge.toml:12:1: error: key `nodes[2].name`: duplicate host name \"edge-2\" (first defined on line 5)"
        );
        let q = Problem {
            line: None,
            column: None,
            key: None,
            severity: Severity::Warning,
            ..p
        };
        assert!(q.to_string().starts_with("edge.toml: warning: duplicate"));
    }
}
