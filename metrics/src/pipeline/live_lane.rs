//! The live lane: fresh samples sent while the link is up, ahead of the
//! backlog.

use super::ingest::forget_evicted;
use super::*;

pub(super) async fn run_live(
    shared: Arc<Shared>,
    writer: Writer,
    u: UplinkOptions,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        if !shared.live_lane_on() {
            // In order: what is still queued is in the buffer too; the
            // drain sends it in its turn.
            let left = lock(&shared.live).take(usize::MAX);
            forget_evicted(&shared, left);
        }
        if lock(&shared.live).is_empty() {
            tokio::select! {
                _ = shared.live_notify.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if !uplink::wait_usable(shared.link_tx.subscribe(), &mut stop).await {
            return;
        }
        let batches = lock(&shared.live).take(u.batch_samples.max(1));
        if batches.is_empty() {
            continue;
        }
        let all: Vec<Sample> = batches
            .iter()
            .flat_map(|b| b.samples.iter().cloned())
            .collect();
        let body = remote_write::encode(&all);
        let (verdict, code) = tokio::select! {
            r = writer.send(body) => r,
            _ = stop.changed() => return,
        };
        shared.count_response(&code);
        match verdict {
            Verdict::Delivered => {
                shared.report_success();
                let done_ms = now_ms();
                let mut dups = 0;
                {
                    let mut l = lock(&shared.ledger);
                    for b in &batches {
                        dups += l.resolve(b.class, &b.keys, true);
                    }
                }
                {
                    let mut lat = lock(&shared.live_latencies);
                    for s in all.iter().step_by((all.len() / 8).max(1)) {
                        lat.push_back((done_ms, s.timestamp_ms));
                    }
                    while lat.len() > 65536 {
                        lat.pop_front();
                    }
                }
                let mut c = lock(&shared.counters);
                c.live_requests += 1;
                c.live_samples_sent += all.len() as u64;
                c.duplicate_samples_sent += dups;
            }
            Verdict::Permanent { reason } | Verdict::Refused { reason, .. } => {
                // The drain meets the same batch in the buffer and decides
                // (dead letter, or kept while refused); here it is only
                // forgotten.
                tracing::debug!(reason = %reason, "The region refused a live batch; the backlog drain will dead-letter it.");
                shared.report_success();
                let mut l = lock(&shared.ledger);
                for b in &batches {
                    l.resolve(b.class, &b.keys, false);
                }
                drop(l);
                lock(&shared.counters).live_failures += 1;
            }
            Verdict::Retry { .. } | Verdict::Endpoint { .. } => {
                let (reason, after) = match verdict {
                    Verdict::Retry { after, reason } => (reason, after),
                    Verdict::Endpoint { reason } => (reason, None),
                    _ => (String::new(), None),
                };
                let d = shared.report_failure(reason, after);
                lock(&shared.counters).live_failures += 1;
                let mut evicted = Vec::new();
                {
                    let mut q = lock(&shared.live);
                    for b in batches.into_iter().rev() {
                        evicted.extend(q.push_front(b));
                    }
                }
                forget_evicted(&shared, evicted);
                if !uplink::sleep_or_stop(d, &mut stop).await {
                    return;
                }
            }
        }
    }
}
