//! `edgeplane diag …`: what is wrong on this site and what to do about it,
//! for a site engineer at a console, also when the agent or etcd is down and
//! nothing can be reached.
//!
//! Design constraints:
//!
//! - **Answer within a few seconds, always.** Every network probe (each
//!   host's agent `/status`, each member's etcd Status, the member list and
//!   alarms) runs concurrently under a short timeout ([`probe`]); a host that
//!   does not answer costs one timeout, not one per question.
//! - **Never need the agent.** Everything that can be read from this host's
//!   disk is read directly and without changing it ([`local`]): the journal
//!   in `state.redb` (opened read-only, or a private copy of it when the agent
//!   holds the file or left it needing recovery), the buffer via
//!   `edgeplane_buffer::inspect`, the etcd data dir's metadata, the etcd pid
//!   file, the snapshot directory.
//! - **Say where every value comes from.** Sections and per-host rows carry
//!   `source`: `live` (answered now), `last-known` (from disk or from the last
//!   live view `diag` saw, with its age) or `unavailable` (with the reason).
//!   A broken section never hides the others.
//! - **Decisions are pure.** The quorum verdict, the freshest host to recover
//!   from and the headline are functions of the gathered facts ([`status`]),
//!   tested on synthetic inputs; gathering is separate.
//! - **Stable JSON.** Every `--json` document starts with a `schema` name and
//!   version; the end-to-end tests deserialize each one into structs with
//!   `deny_unknown_fields`, so a field added or renamed here fails a test
//!   before it breaks a script.
//!
//! Exit statuses: `status` 0 healthy / 1 degraded or unknown / 2 quorum lost;
//! `check` 0 pass / 1 warnings / 2 failures; `events` 0 / 2 when no journal
//! could be read; `bundle` 0 when written; 78 when the config is unusable
//! (except for `check`, which reports it as a failed check).

pub mod bundle;
pub mod check;
pub mod events;
pub mod local;
pub mod probe;
pub mod redact;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::BadConfig;
use crate::cli::DiagCommand;

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Answered now (agent, etcd, or read from the disk that holds it).
    Live,
    /// The last value seen: from disk state or an earlier live view; see `age_s`.
    LastKnown,
    /// Could not be read; see `error`.
    Unavailable,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::LastKnown => "last-known",
            Source::Unavailable => "unavailable",
        }
    }
}

/// How long each network question may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

pub fn run(cmd: DiagCommand) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    match cmd {
        DiagCommand::Status { config, json } => {
            let cfg = load(&config)?;
            let report = crate::runtime()?.block_on(status::gather_and_build(&cfg, &config));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        DiagCommand::Events {
            config,
            since,
            json,
        } => {
            let since = since
                .map(|s| {
                    humantime::parse_duration(&s).with_context(|| {
                        format!("--since {s:?} is not a duration (e.g. 30m, 2h, 3d)")
                    })
                })
                .transpose()?;
            let cfg = load(&config)?;
            let report = crate::runtime()?.block_on(events::gather(&cfg, since));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", events::render(&report));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        DiagCommand::Check {
            config,
            json,
            region,
        } => {
            let report = crate::runtime()?.block_on(check::run_checks(&config, region));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", check::render(&report));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        DiagCommand::Bundle { config, out } => {
            let cfg = load(&config)?;
            let written = crate::runtime()?.block_on(bundle::write(&cfg, &config, &out))?;
            println!(
                "Wrote support bundle {} ({} files, {}): secrets redacted, no etcd values, no key material.",
                out.display(),
                written.files.len(),
                human_bytes(written.bytes)
            );
            for f in &written.files {
                println!("  {f}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<edgeplane_config::Config> {
    match edgeplane_config::load(path) {
        Ok(l) => Ok(l.config),
        Err(e) => Err(BadConfig(format!(
            "{e}\n(`edgeplane diag check --config {}` lists every problem with its remedy)",
            path.display()
        ))
        .into()),
    }
}

/// The config path as the operator should type it again (absolute when possible).
pub fn display_config_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `850ms`, `12s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn human_age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Seconds since a wall-clock time in milliseconds (never negative).
pub fn age_since_ms(now_ms: i64, then_ms: i64) -> f64 {
    (now_ms.saturating_sub(then_ms)).max(0) as f64 / 1000.0
}

/// Seconds since a file's mtime.
pub fn file_age_s(meta: &std::fs::Metadata) -> Option<f64> {
    let m = meta.modified().ok()?;
    Some(
        std::time::SystemTime::now()
            .duration_since(m)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

/// Left-aligned text table; the first row is the header.
pub fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(indent);
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_age(0.25), "250ms");
        assert_eq!(human_age(75.0), "1m 15s");
        assert_eq!(human_age(90000.0), "1d 1h");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &[
                vec!["A".into(), "BB".into()],
                vec!["ccc".into(), "d".into()],
            ],
            "  ",
        );
        assert_eq!(t, "  A    BB\n  ccc  d\n");
    }
}
