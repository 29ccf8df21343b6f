//! What the pipeline shows: a serializable status snapshot and its own
//! counters in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::dead_letter::DeadLetterStats;
use crate::link::LinkState;
use crate::store::ClassBacklog;

/// The pipeline's counters (monotonic since start) and per-target state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub scrapes: u64,
    pub scrape_failures: u64,
    pub samples_scraped: u64,
    /// Same series twice in one exposition (second one dropped).
    pub scrape_duplicate_series: u64,
    /// Samples given to the buffer, and those it failed to take.
    pub samples_buffered: u64,
    pub buffer_append_errors: u64,
    pub samples_lost_on_append: u64,
    pub live_requests: u64,
    pub live_samples_sent: u64,
    pub live_failures: u64,
    /// Live batches evicted from memory while the link was down (still in
    /// the buffer; the drain sends them).
    pub live_samples_evicted: u64,
    pub backfill_requests: u64,
    pub backfill_samples_sent: u64,
    pub backfill_failures: u64,
    /// Backlog batches the receiver refused for their age or order (kept
    /// in the buffer and retried on a slow schedule).
    pub backfill_refused: u64,
    /// Buffered samples acknowledged without sending: the live lane had
    /// delivered them already.
    pub backfill_samples_skipped_live: u64,
    /// Samples delivered twice (both lanes); identical, so harmless.
    pub duplicate_samples_sent: u64,
    /// Samples older than `max_sample_age`, dropped instead of sent.
    pub samples_expired_unsent: u64,
    pub probes: u64,
    pub probe_failures: u64,
    /// Remote-write replies by status code ("timeout"/"error" for none).
    pub responses: BTreeMap<String, u64>,
}

/// Per-target scrape state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TargetStatus {
    pub job: String,
    pub url: String,
    pub up: bool,
    pub last_scrape_ms: Option<i64>,
    pub last_duration_s: f64,
    pub last_samples: u64,
    pub last_error: Option<String>,
    pub scrapes: u64,
    pub failures: u64,
}

/// Link part of the status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    pub state: LinkState,
    /// The URL without credentials.
    pub url: Option<String>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub since_ms: i64,
}

/// Backlog flush progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlushStatus {
    /// Configured limit, samples/s (0 = unlimited).
    pub backfill_rate_limit: u64,
    /// Measured backfill rate over the last minute, samples/s.
    pub backfill_samples_per_s: f64,
    /// Backlog / measured rate, when both are non-zero.
    pub eta_s: Option<f64>,
    /// Flushing in order (oldest first per series, live data behind the
    /// backlog) rather than live first.
    pub in_order: bool,
}

/// The region refuses the backlog because of its setup, not the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BacklogRefused {
    pub since_ms: i64,
    pub cause: crate::remote_write::Refusal,
    /// The receiver's answer.
    pub reason: String,
    /// What to change in the region.
    pub fix: String,
}

/// Everything `edgeplane` shows about the metrics path.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MetricsStatus {
    pub link: LinkStatus,
    /// Most critical class first.
    pub classes: Vec<ClassBacklog>,
    pub backlog_samples: u64,
    pub backlog_bytes: u64,
    pub dead_letter: DeadLetterStats,
    pub flush: FlushStatus,
    /// Set while the region refuses the backlog for its age or order.
    pub backlog_refused: Option<BacklogRefused>,
    pub targets: Vec<TargetStatus>,
    pub counters: Counters,
    pub live_queue_samples: u64,
    pub live_ledger_keys: u64,
}

impl MetricsStatus {
    /// The pipeline's own metrics in the Prometheus text format (0.0.4),
    /// for the agent's `/metrics`.
    pub fn render_prometheus(&self) -> String {
        let mut o = String::new();
        let c = &self.counters;
        gauge(
            &mut o,
            "edgeplane_metrics_link_state",
            "Uplink state: 0 down, 1 degraded, 2 up.",
            &[(vec![], f64::from(self.link.state.as_gauge()))],
        );
        gauge(
            &mut o,
            "edgeplane_uplink_backlog_refused",
            "1 while the region refuses the backlog for its age or order (critical: fix the region's out-of-order window; the backlog is kept).",
            &[(
                vec![],
                if self.backlog_refused.is_some() {
                    1.0
                } else {
                    0.0
                },
            )],
        );
        gauge(
            &mut o,
            "edgeplane_metrics_flush_in_order",
            "1 when flushing in order (the region refuses out-of-order samples), 0 when live first.",
            &[(vec![], if self.flush.in_order { 1.0 } else { 0.0 })],
        );
        let total = |name: &str, help: &str, v: u64| (name.to_owned(), help.to_owned(), v);
        for (name, help, v) in [
            total("scrapes_total", "Scrapes attempted.", c.scrapes),
            total(
                "scrape_failures_total",
                "Scrapes that failed (up = 0).",
                c.scrape_failures,
            ),
            total(
                "samples_scraped_total",
                "Samples scraped, synthetic ones included.",
                c.samples_scraped,
            ),
            total(
                "scrape_duplicate_series_total",
                "Series repeated within one exposition, dropped.",
                c.scrape_duplicate_series,
            ),
            total(
                "samples_buffered_total",
                "Samples appended to the disk buffer.",
                c.samples_buffered,
            ),
            total(
                "buffer_append_errors_total",
                "Failed appends to the disk buffer.",
                c.buffer_append_errors,
            ),
            total(
                "samples_lost_on_append_total",
                "Samples the disk buffer could not take.",
                c.samples_lost_on_append,
            ),
            total(
                "live_samples_sent_total",
                "Samples delivered by the live lane.",
                c.live_samples_sent,
            ),
            total(
                "live_samples_evicted_total",
                "Samples evicted from the live queue (sent later from the buffer).",
                c.live_samples_evicted,
            ),
            total(
                "backfill_samples_sent_total",
                "Samples delivered from the buffer backlog.",
                c.backfill_samples_sent,
            ),
            total(
                "backfill_samples_skipped_live_total",
                "Buffered samples acknowledged because the live lane had delivered them.",
                c.backfill_samples_skipped_live,
            ),
            total(
                "duplicate_samples_sent_total",
                "Samples delivered by both lanes.",
                c.duplicate_samples_sent,
            ),
            total(
                "samples_expired_unsent_total",
                "Samples older than max_sample_age, never sent.",
                c.samples_expired_unsent,
            ),
            total(
                "dead_letter_batches_total",
                "Batches refused for good and set aside.",
                self.dead_letter.total_batches,
            ),
            total(
                "dead_letter_samples_total",
                "Samples in refused batches.",
                self.dead_letter.total_samples,
            ),
            total(
                "dead_letter_evicted_samples_total",
                "Dead-letter samples deleted to stay within its bound.",
                self.dead_letter.evicted_samples,
            ),
            total(
                "backfill_refused_total",
                "Backlog batches the region refused for their age or order (kept, retried slowly).",
                c.backfill_refused,
            ),
            total("probes_total", "Link probes sent while down.", c.probes),
        ] {
            counter(
                &mut o,
                &format!("edgeplane_metrics_{name}"),
                &help,
                &[(vec![], v as f64)],
            );
        }
        let by_code: Vec<(Vec<(&str, &str)>, f64)> = c
            .responses
            .iter()
            .map(|(k, v)| (vec![("code", k.as_str())], *v as f64))
            .collect();
        counter(
            &mut o,
            "edgeplane_metrics_remote_write_responses_total",
            "Remote-write replies by HTTP status.",
            &by_code,
        );
        let per_class = |f: &dyn Fn(&ClassBacklog) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
            self.classes
                .iter()
                .map(|b| (vec![("class", b.class.as_str())], f(b)))
                .collect()
        };
        gauge(
            &mut o,
            "edgeplane_metrics_backlog_samples",
            "Samples waiting in the disk buffer.",
            &per_class(&|b| b.samples as f64),
        );
        gauge(
            &mut o,
            "edgeplane_metrics_backlog_bytes",
            "Bytes of the disk buffer.",
            &per_class(&|b| b.bytes as f64),
        );
        gauge(
            &mut o,
            "edgeplane_metrics_backlog_oldest_timestamp_seconds",
            "Timestamp of the oldest buffered sample.",
            &per_class(&|b| b.oldest_ms.map_or(0.0, |t| t as f64 / 1000.0)),
        );
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Only classes holding a backlog: an empty class has no age (its absence is the
        // healthy state, as `absent()` or `or vector(0)` in an alert rule).
        let aged: Vec<(Vec<(&str, &str)>, f64)> = self
            .classes
            .iter()
            .filter_map(|b| {
                b.oldest_ms.map(|t| {
                    (
                        vec![("class", b.class.as_str())],
                        (now_s - t as f64 / 1000.0).max(0.0),
                    )
                })
            })
            .collect();
        gauge(
            &mut o,
            "edgeplane_metrics_backlog_age_seconds",
            "Age of the oldest buffered sample, per class with a backlog.",
            &aged,
        );
        gauge(
            &mut o,
            "edgeplane_metrics_dead_letter_bytes",
            "Bytes of refused batches kept aside (the dead-letter directory).",
            &[(vec![], self.dead_letter.kept_bytes as f64)],
        );
        counter(
            &mut o,
            "edgeplane_metrics_shed_samples_total",
            "Samples shed to keep the buffer budget.",
            &per_class(&|b| b.shed_samples as f64),
        );
        gauge(
            &mut o,
            "edgeplane_metrics_backfill_samples_per_second",
            "Measured backlog flush rate.",
            &[(vec![], self.flush.backfill_samples_per_s)],
        );
        let targets: Vec<(Vec<(&str, &str)>, f64)> = self
            .targets
            .iter()
            .map(|t| {
                (
                    vec![("job", t.job.as_str()), ("url", t.url.as_str())],
                    if t.up { 1.0 } else { 0.0 },
                )
            })
            .collect();
        gauge(
            &mut o,
            "edgeplane_metrics_target_up",
            "Whether the last scrape of a target succeeded.",
            &targets,
        );
        o
    }
}

fn counter(o: &mut String, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
    family(o, name, help, "counter", rows);
}

fn gauge(o: &mut String, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
    family(o, name, help, "gauge", rows);
}

fn family(o: &mut String, name: &str, help: &str, kind: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        o.push_str(name);
        if !labels.is_empty() {
            o.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                let esc = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(o, "{k}=\"{esc}\"");
            }
            o.push('}');
        }
        let _ = writeln!(o, " {}", fmt_value(*v));
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The URL without user-info (never show credentials).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_parses_back() {
        let st = MetricsStatus {
            link: LinkStatus {
                state: LinkState::Degraded,
                url: None,
                consecutive_failures: 1,
                last_error: None,
                since_ms: 0,
            },
            classes: vec![ClassBacklog {
                class: "crit\"ical".into(),
                samples: 5,
                ..Default::default()
            }],
            backlog_samples: 5,
            backlog_bytes: 0,
            dead_letter: DeadLetterStats::default(),
            flush: FlushStatus {
                backfill_rate_limit: 0,
                backfill_samples_per_s: 0.0,
                eta_s: None,
                in_order: true,
            },
            backlog_refused: None,
            targets: vec![],
            counters: Counters::default(),
            live_queue_samples: 0,
            live_ledger_keys: 0,
        };
        let text = st.render_prometheus();
        let parsed = crate::parse::parse(&text).expect("own output parses");
        let link = parsed
            .iter()
            .find(|p| p.name == "edgeplane_metrics_link_state")
            .expect("link gauge");
        assert_eq!(link.value, 1.0);
        assert!(
            parsed
                .iter()
                .any(|p| p.name == "edgeplane_uplink_backlog_refused" && p.value == 0.0)
        );
        assert!(
            parsed
                .iter()
                .any(|p| p.name == "edgeplane_metrics_backlog_samples"
                    && p.labels == vec![("class".to_string(), "crit\"ical".to_string())]
                    && p.value == 5.0)
        );
    }

    #[test]
    fn url_redaction() {
        assert_eq!(
            redact_url("https://user:secret@region:9090/api/v1/write"),
            "https://region:9090/api/v1/write"
        );
    }
}
