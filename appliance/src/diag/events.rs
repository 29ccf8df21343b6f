//! `edgeplane diag events [--since D]`: the agent's journal of disruptive
//! operations (promotions, removals, joins, rejoins, recoveries, defrags),
//! with when they started, how long they took and how they ended.
//!
//! Read from `state.redb` directly (the whole journal, also with the agent
//! down); when that file cannot be read, from the agent's `/status`
//! (`journal.recent`, its last 20), and the output says which.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use edgeplane_config::Config;
use serde::{Deserialize, Serialize};

use super::{PROBE_TIMEOUT, Source, age_since_ms, human_age, local, table};
use crate::agent::state::{Op, Outcome};
use crate::agent::status::StatusDoc;

pub const SCHEMA: &str = "edgeplane.diag.events/1";

/// How many records `events` reads at most.
pub const EVENTS_LIMIT: usize = 10_000;

/// One journal record, for people and scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRow {
    pub id: u64,
    /// `promote`, `remove_member`, `join`, `rejoin`, …
    pub kind: String,
    pub target: String,
    pub reason: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// `pending`, `done`, `failed`, `abandoned`.
    pub outcome: String,
    pub detail: String,
    /// Seconds since it started.
    pub age_s: f64,
}

fn snake<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl EventRow {
    pub fn from_op(op: &Op, now_ms: i64) -> EventRow {
        EventRow {
            id: op.id,
            kind: snake(&op.kind),
            target: op.target.clone(),
            reason: op.reason.clone(),
            started: Utc
                .timestamp_millis_opt(op.started_ms)
                .single()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_default(),
            started_ms: op.started_ms,
            finished_ms: op.finished_ms,
            duration_ms: op.finished_ms.map(|f| f - op.started_ms),
            outcome: snake(&op.outcome),
            detail: op.detail.clone(),
            age_s: age_since_ms(now_ms, op.started_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsReport {
    pub schema: String,
    pub generated_at: String,
    pub host: String,
    pub source: Source,
    /// What the events were read from.
    pub origin: String,
    /// Age of the journal file's last write when read from disk with the agent down.
    pub age_s: Option<f64>,
    /// Why the preferred source could not be used (or why there are none).
    pub error: Option<String>,
    pub since_s: Option<f64>,
    /// Records read before the `--since` filter.
    pub total: usize,
    pub pending: usize,
    pub failed: usize,
    /// Oldest first.
    pub events: Vec<EventRow>,
}

impl EventsReport {
    pub fn exit_code(&self) -> u8 {
        if self.source == Source::Unavailable {
            2
        } else {
            0
        }
    }
}

/// Reads the journal (disk first, the agent second) and filters by age.
pub async fn gather(cfg: &Config, since: Option<Duration>) -> EventsReport {
    let state_dir = cfg.paths.state_dir.clone();
    let disk = tokio::task::spawn_blocking(move || local::read_journal(&state_dir, EVENTS_LIMIT));
    let url = cfg
        .this_node()
        .map(|n| format!("{}/status", n.agent_url.trim_end_matches('/')))
        .unwrap_or_default();
    let agent = super::probe::get_text(cfg, &url, PROBE_TIMEOUT);
    let (disk, agent) = tokio::join!(disk, agent);
    let disk = disk.unwrap_or_else(|e| Err(format!("reading the journal failed: {e}")));
    let agent_doc: Option<StatusDoc> = agent
        .as_ref()
        .ok()
        .and_then(|t| serde_json::from_str(t).ok());
    build(
        cfg,
        since,
        disk,
        agent_doc,
        agent.err(),
        Utc::now().timestamp_millis(),
    )
}

/// Pure: picks the source and filters.
pub fn build(
    cfg: &Config,
    since: Option<Duration>,
    disk: Result<local::JournalRead, String>,
    agent_doc: Option<StatusDoc>,
    agent_err: Option<String>,
    now_ms: i64,
) -> EventsReport {
    let (source, origin, age_s, error, ops) = match (disk, &agent_doc) {
        (Ok(j), Some(_)) => (Source::Live, j.how, Some(0.0), None, j.ops),
        (Ok(j), None) => (
            Source::LastKnown,
            j.how,
            j.file_age_s,
            Some(format!(
                "the agent does not answer ({}): the journal as it was last written",
                agent_err.unwrap_or_default()
            )),
            j.ops,
        ),
        (Err(e), Some(doc)) => (
            Source::Live,
            "agent /status journal.recent (its last 20 records only)".to_string(),
            Some(0.0),
            Some(e),
            doc.journal.recent.clone(),
        ),
        (Err(e), None) => (
            Source::Unavailable,
            local::state_file(&cfg.paths.state_dir)
                .display()
                .to_string(),
            None,
            Some(format!(
                "{e}; and the agent does not answer ({})",
                agent_err.unwrap_or_default()
            )),
            Vec::new(),
        ),
    };
    let total = ops.len();
    let cutoff = since.map(|d| now_ms - d.as_millis() as i64);
    let events: Vec<EventRow> = ops
        .iter()
        .filter(|o| {
            cutoff.is_none_or(|c| o.started_ms >= c || o.finished_ms.is_some_and(|f| f >= c))
        })
        .map(|o| EventRow::from_op(o, now_ms))
        .collect();
    EventsReport {
        schema: SCHEMA.into(),
        generated_at: Utc
            .timestamp_millis_opt(now_ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default(),
        host: cfg.host.clone(),
        source,
        origin,
        age_s,
        error,
        since_s: since.map(|d| d.as_secs_f64()),
        total,
        pending: ops.iter().filter(|o| o.outcome == Outcome::Pending).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Failed).count(),
        events,
    }
}

pub fn render(r: &EventsReport) -> String {
    let mut o = String::new();
    let mark = match (r.source, r.age_s) {
        (Source::LastKnown, Some(a)) => format!("last-known, written {} ago", human_age(a)),
        (s, _) => s.as_str().to_string(),
    };
    o.push_str(&format!(
        "Journal of {} [{mark}] from {}: {} shown of {} read{}; {} pending, {} failed\n",
        r.host,
        r.origin,
        r.events.len(),
        r.total,
        r.since_s
            .map(|s| format!(" (since {} ago)", human_age(s)))
            .unwrap_or_default(),
        r.pending,
        r.failed
    ));
    if let Some(e) = &r.error {
        o.push_str(&format!("  ! {e}\n"));
    }
    if r.events.is_empty() {
        o.push_str("  no operations recorded\n");
        return o;
    }
    let mut rows = vec![
        [
            "ID",
            "STARTED (UTC)",
            "AGE",
            "KIND",
            "TARGET",
            "OUTCOME",
            "TOOK",
            "REASON / DETAIL",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for e in &r.events {
        let started = e.started.get(..19).unwrap_or(&e.started).replace('T', " ");
        let outcome = if e.outcome == "done" {
            e.outcome.clone()
        } else {
            e.outcome.to_uppercase()
        };
        let mut text = e.reason.clone();
        if !e.detail.is_empty() {
            text.push_str(" -> ");
            text.push_str(&e.detail);
        }
        rows.push(vec![
            e.id.to_string(),
            started,
            human_age(e.age_s),
            e.kind.clone(),
            e.target.clone(),
            outcome,
            e.duration_ms
                .map(|d| human_age(d as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            text,
        ]);
    }
    o.push_str(&table(&rows, "  "));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::OpKind;

    fn op(id: u64, started_ms: i64, outcome: Outcome) -> Op {
        Op {
            id,
            kind: OpKind::Promote,
            target: "host-4".into(),
            reason: "voters 2 of 3".into(),
            started_ms,
            finished_ms: (outcome != Outcome::Pending).then_some(started_ms + 40),
            outcome,
            detail: "promoted".into(),
            damping: None,
        }
    }

    fn cfg() -> Config {
        let text = r#"
            host = "h1"
            site = "s"
            [[nodes]]
            name = "h1"
            peer_url = "http://127.0.0.1:1"
            client_url = "http://127.0.0.1:2"
            agent_url = "http://127.0.0.1:3"
            [uplink]
            enabled = false
            [tls]
            allow_plaintext = true
        "#;
        match edgeplane_config::load_str(text, std::path::Path::new("t.toml")) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn since_filters_and_the_agent_is_the_fallback() {
        let now = 10_000_000;
        let read = local::JournalRead {
            ops: vec![
                op(1, now - 7_200_000, Outcome::Done),
                op(2, now - 60_000, Outcome::Pending),
            ],
            facts: Default::default(),
            catalog: Vec::new(),
            how: "state.redb opened read-only".into(),
            file_age_s: Some(60.0),
        };
        let r = build(
            &cfg(),
            Some(Duration::from_secs(3600)),
            Ok(read),
            None,
            Some("refused".into()),
            now,
        );
        assert_eq!(r.source, Source::LastKnown);
        assert_eq!(r.total, 2);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].outcome, "pending");
        assert_eq!(r.pending, 1);
        assert!(render(&r).contains("PENDING"));

        let doc: StatusDoc = serde_json::from_value(
            serde_json::json!({"journal": {"recent": [op(3, now - 1000, Outcome::Done)]}}),
        )
        .expect("a partial status document");
        let r = build(
            &cfg(),
            None,
            Err("state.redb is damaged".into()),
            Some(doc),
            None,
            now,
        );
        assert_eq!(r.source, Source::Live);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].kind, "promote");
        assert_eq!(r.events[0].duration_ms, Some(40));
        assert!(r.origin.contains("journal.recent"));

        let r = build(
            &cfg(),
            None,
            Err("state.redb is damaged".into()),
            None,
            Some("refused".into()),
            now,
        );
        assert_eq!(r.exit_code(), 2);
        assert!(render(&r).contains("damaged"));
    }
}
