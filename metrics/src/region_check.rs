//! What the region's receiver accepts, asked on demand (`edgeplane diag
//! check --region`) before an outage shows it: a receiver set up without
//! an out-of-order window, or with a short accept window, refuses a long
//! backlog, and that is better learnt on the day the site is installed.
//!
//! Three canary samples, all on the [`CANARY_METRIC`] series (never any
//! other series): one at now, one a minute older on the same series
//! (out-of-order acceptance, which decides in-order or live-first
//! flushing), one two hours older (age acceptance: Prometheus refuses
//! anything more than about an hour behind its newest sample without an
//! out-of-order window).

use crate::Sample;
use crate::pipeline::CANARY_METRIC;
use crate::remote_write::{self, Verdict};
use crate::uplink::{RemoteWriter, UplinkError, UplinkOptions};

/// The receiver's answer to one canary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "answer", content = "reason")]
pub enum Answer {
    Accepted,
    /// The receiver judged the sample and refused it (its age or order, or
    /// the data).
    Refused(String),
    /// No judgement on the data: unreachable, or the receiver refused us
    /// (credentials, URL).
    Failed(String),
    /// Not asked: an earlier canary failed.
    NotAsked,
}

/// The three answers, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionAcceptance {
    pub recent: Answer,
    pub minute_older: Answer,
    pub two_hours_old: Answer,
}

/// How old the age canary is.
pub const AGE_CANARY_MS: i64 = 2 * 3600 * 1000;

/// Sends the three canaries with `labels` (the site's external labels and
/// `site`; the metric name is set here) to the uplink of `opts`.
pub async fn probe(
    opts: &UplinkOptions,
    labels: &[(String, String)],
) -> Result<RegionAcceptance, UplinkError> {
    let writer = RemoteWriter::new(opts)?;
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .cloned()
        .collect();
    labels.push(("__name__".into(), CANARY_METRIC.into()));
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    let now = chrono::Utc::now().timestamp_millis();
    let mut answers = Vec::new();
    for ts in [now, now - 60_000, now - AGE_CANARY_MS] {
        if matches!(answers.first(), Some(Answer::Failed(_))) {
            answers.push(Answer::NotAsked);
            continue;
        }
        let body = remote_write::encode(&[Sample {
            labels: labels.clone(),
            timestamp_ms: ts,
            value: 1.0,
        }]);
        let (verdict, _) = writer.send(body).await;
        answers.push(answer(verdict));
    }
    let mut it = answers.into_iter();
    let mut next = || it.next().unwrap_or(Answer::NotAsked);
    Ok(RegionAcceptance {
        recent: next(),
        minute_older: next(),
        two_hours_old: next(),
    })
}

fn answer(v: Verdict) -> Answer {
    match v {
        Verdict::Delivered => Answer::Accepted,
        Verdict::Refused { reason, .. } | Verdict::Permanent { reason } => Answer::Refused(reason),
        Verdict::Retry { reason, .. } | Verdict::Endpoint { reason } => Answer::Failed(reason),
    }
}
