//! The canary: whether the region accepts samples older than what it holds
//! (out-of-order ingestion), asked again while the link changes.

use super::*;

/// The series canary samples are written to (and no other).
pub const CANARY_METRIC: &str = "edgeplane_uplink_probe";

/// Asks the receiver whether it accepts out-of-order samples: a sample at
/// now on [`CANARY_METRIC`], then one a minute older on the same series.
/// `Some(true)`: accepted; `Some(false)`: refused; `None`: no answer on the
/// data (the link is down, the endpoint refuses us): ask again later.
pub(super) async fn canary(
    shared: &Shared,
    writer: &RemoteWriter,
    labels: &[(String, String)],
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let now = now_ms();
    for (i, ts) in [now, now - 60_000].into_iter().enumerate() {
        let body = remote_write::encode(&[Sample {
            labels: labels.to_vec(),
            timestamp_ms: ts,
            value: 1.0,
        }]);
        let (verdict, code) = tokio::select! {
            r = writer.send(body) => r,
            _ = stop.changed() => return None,
        };
        shared.count_response(&code);
        match verdict {
            Verdict::Delivered => shared.report_success(),
            Verdict::Refused { .. } if i == 1 => {
                shared.report_success();
                return Some(false);
            }
            Verdict::Refused { .. } | Verdict::Permanent { .. } => {
                shared.report_success();
                return None;
            }
            Verdict::Retry { after, reason } => {
                shared.report_failure(reason, after);
                return None;
            }
            Verdict::Endpoint { reason } => {
                shared.report_failure(reason, None);
                return None;
            }
        }
    }
    Some(true)
}

pub(super) async fn run_probe(
    shared: Arc<Shared>,
    writer: Writer,
    mut stop: watch::Receiver<bool>,
) {
    let mut link = shared.link_tx.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        if *link.borrow_and_update() != LinkState::Down {
            tokio::select! {
                r = link.changed() => if r.is_err() { return; },
                _ = stop.changed() => {}
            }
            continue;
        }
        let d = *lock(&shared.probe_delay);
        if !uplink::sleep_or_stop(d, &mut stop).await {
            return;
        }
        lock(&shared.counters).probes += 1;
        let (verdict, code) = tokio::select! {
            r = writer.send(uplink::probe_body()) => r,
            _ = stop.changed() => return,
        };
        shared.count_response(&code);
        match verdict {
            // Any verdict on the data means the receiver is there.
            Verdict::Delivered | Verdict::Permanent { .. } | Verdict::Refused { .. } => {
                shared.report_success()
            }
            Verdict::Retry { after, reason } => {
                lock(&shared.counters).probe_failures += 1;
                shared.report_failure(reason, after);
            }
            Verdict::Endpoint { reason } => {
                lock(&shared.counters).probe_failures += 1;
                shared.report_failure(reason, None);
            }
        }
    }
}
