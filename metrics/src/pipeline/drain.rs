//! The backlog drain: buffered samples sent oldest first, acknowledged in
//! the buffer once the region took them or they were set aside.

use super::probe::canary;
use super::*;

enum Done {
    /// Delivered or set aside: acknowledge.
    Ack,
    /// Failed retryably: rewind and read again from the buffer (which may
    /// have shed or expired some of it meanwhile; resending a stale copy
    /// from memory would deliver data the status reports as shed).
    Retry,
    Stop,
}

pub(super) async fn run_drain<S: SampleStore>(
    shared: Arc<Shared>,
    store: Arc<Mutex<S>>,
    writer: Writer,
    u: UplinkOptions,
    dead: DeadLetter,
    canary_labels: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let dead = Arc::new(Mutex::new(dead));
    let mut next_canary = (shared.out_of_order == OutOfOrder::Auto).then(Instant::now);
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(u.backfill_rate, u.batch_samples.max(1), 0.0);
    let max_age_ms = i64::try_from(u.max_sample_age.as_millis()).unwrap_or(i64::MAX);
    let pending_wait = u.timeout + Duration::from_secs(2);
    loop {
        if *stop.borrow() {
            return;
        }
        if !uplink::wait_usable(shared.link_tx.subscribe(), &mut stop).await {
            return;
        }
        if next_canary.is_some_and(|t| Instant::now() >= t) {
            next_canary = match canary(&shared, &writer, &canary_labels, &mut stop).await {
                Some(accepted) => {
                    shared.in_order.store(!accepted, Ordering::Relaxed);
                    tracing::info!(
                        out_of_order_accepted = accepted,
                        "Probed the region with canary samples: flushing {}.",
                        if accepted { "live first" } else { "in order" }
                    );
                    None
                }
                None => Some(Instant::now() + Duration::from_secs(60)),
            };
            continue;
        }
        // The most critical class with data.
        let st = store.clone();
        let classes = shared.classes.clone();
        let batch_n = u.batch_samples.max(1);
        let read = tokio::task::spawn_blocking(move || {
            let mut s = lock(&st);
            let mut empty = Vec::new();
            for (ci, c) in classes.iter().enumerate() {
                match s.read(c, batch_n) {
                    Ok(Some((samples, token))) => return (Ok(Some((ci, samples, token))), empty),
                    Ok(None) => empty.push(ci),
                    Err(e) => return (Err(e), empty),
                }
            }
            (Ok(None), empty)
        })
        .await;
        let (res, empty) = match read {
            Ok(r) => r,
            Err(e) => (
                Err(StoreError(format!("read task failed: {e}"))),
                Vec::new(),
            ),
        };
        {
            let mut l = lock(&shared.ledger);
            for ci in empty {
                l.forget_delivered(ci);
            }
        }
        let (ci, samples, token) = match res {
            Ok(Some(x)) => x,
            Ok(None) => {
                tokio::select! {
                    _ = shared.drain_notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "Reading the metrics buffer failed; retrying in 5 s.");
                if !uplink::sleep_or_stop(Duration::from_secs(5), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let class = shared.classes[ci].clone();
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let mut to_send = Vec::with_capacity(samples.len());
        let mut pending: Vec<(Key, Sample)> = Vec::new();
        let (mut expired, mut skipped) = (0u64, 0u64);
        {
            let mut l = lock(&shared.ledger);
            for s in samples {
                if s.timestamp_ms < cutoff {
                    expired += 1;
                    continue;
                }
                let k = live::key_of(&s);
                match l.check(ci, &k) {
                    Seen::Delivered => skipped += 1,
                    Seen::Pending => pending.push((k, s)),
                    Seen::Unknown => to_send.push(s),
                }
            }
        }
        if !pending.is_empty() {
            let deadline = Instant::now() + pending_wait;
            while !pending.is_empty() && Instant::now() < deadline {
                if !uplink::sleep_or_stop(Duration::from_millis(20), &mut stop).await {
                    return;
                }
                let mut l = lock(&shared.ledger);
                pending.retain(|(k, s)| match l.check(ci, k) {
                    Seen::Delivered => {
                        skipped += 1;
                        false
                    }
                    Seen::Unknown => {
                        to_send.push(s.clone());
                        false
                    }
                    Seen::Pending => true,
                });
            }
            let mut l = lock(&shared.ledger);
            for (k, s) in pending {
                l.take(ci, &k);
                to_send.push(s);
            }
        }
        let outcome = if to_send.is_empty() {
            Done::Ack
        } else {
            let wait = bucket.take(to_send.len(), t0.elapsed().as_secs_f64());
            if wait > 0.0 && !uplink::sleep_or_stop(Duration::from_secs_f64(wait), &mut stop).await
            {
                Done::Stop
            } else {
                send_backlog(&shared, &writer, &dead, &u, &class, &to_send, &mut stop).await
            }
        };
        match outcome {
            Done::Retry => {
                let st = store.clone();
                let c = class.clone();
                let _ = tokio::task::spawn_blocking(move || lock(&st).rewind(&c)).await;
            }
            Done::Stop => {
                let st = store.clone();
                let c = class.clone();
                let _ = tokio::task::spawn_blocking(move || lock(&st).rewind(&c)).await;
                return;
            }
            Done::Ack => {
                let st = store.clone();
                let r = tokio::task::spawn_blocking(move || lock(&st).ack(&token)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(class = %class, error = %e, "Acknowledging a sent batch to the metrics buffer failed; it may be sent again.");
                    let st = store.clone();
                    let c = class.clone();
                    let _ = tokio::task::spawn_blocking(move || lock(&st).rewind(&c)).await;
                }
                let mut c = lock(&shared.counters);
                c.samples_expired_unsent += expired;
                c.backfill_samples_skipped_live += skipped;
            }
        }
    }
}

/// Sends one backlog batch until it is delivered or set aside.
async fn send_backlog(
    shared: &Shared,
    writer: &RemoteWriter,
    dead: &Arc<Mutex<DeadLetter>>,
    u: &UplinkOptions,
    class: &str,
    samples: &[Sample],
    stop: &mut watch::Receiver<bool>,
) -> Done {
    let body = remote_write::encode(samples);
    let (verdict, code) = tokio::select! {
        r = writer.send(body.clone()) => r,
        _ = stop.changed() => return Done::Stop,
    };
    shared.count_response(&code);
    match verdict {
        Verdict::Delivered => {
            shared.report_success();
            shared.clear_refused();
            lock(&shared.backfill_window).push_back((Instant::now(), samples.len() as u64));
            let mut c = lock(&shared.counters);
            c.backfill_requests += 1;
            c.backfill_samples_sent += samples.len() as u64;
            Done::Ack
        }
        Verdict::Permanent { reason } => {
            shared.report_success();
            tracing::warn!(class = %class, samples = samples.len(), reason = %reason, "The region refused a batch for good; it goes to the dead-letter area.");
            loop {
                let d = dead.clone();
                let (c, s, b, r) = (
                    class.to_owned(),
                    samples.to_vec(),
                    body.clone(),
                    reason.clone(),
                );
                let res = tokio::task::spawn_blocking(move || {
                    let mut d = lock(&d);
                    let res = d.put(&c, &s, &b, &r);
                    (res, d.stats())
                })
                .await;
                match res {
                    Ok((Ok(()), stats)) => {
                        *lock(&shared.dead) = stats;
                        return Done::Ack;
                    }
                    Ok((Err(e), _)) => {
                        tracing::error!(error = %e, "Writing a refused batch to the dead-letter area failed; it stays in the buffer and is retried in 5 s.");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "The dead-letter task failed; retrying in 5 s.");
                    }
                }
                if !uplink::sleep_or_stop(Duration::from_secs(5), stop).await {
                    return Done::Stop;
                }
            }
        }
        Verdict::Refused { refusal, reason } => {
            // The receiver is there and answers; it will not take samples
            // this old. Keep them, keep live data flowing, retry slowly.
            shared.report_success();
            lock(&shared.counters).backfill_refused += 1;
            if refusal == Refusal::OutOfOrder
                && shared.out_of_order == OutOfOrder::Auto
                && !shared.in_order.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(class = %class, reason = %reason, "The region refused a backlog batch as out of order: flushing in order from now on.");
            }
            shared.set_refused(refusal, &reason, u.refused_retry);
            if uplink::sleep_or_stop(u.refused_retry, stop).await {
                Done::Retry
            } else {
                Done::Stop
            }
        }
        Verdict::Retry { after, reason } => {
            let d = shared.report_failure(reason, after);
            lock(&shared.counters).backfill_failures += 1;
            if uplink::sleep_or_stop(d, stop).await {
                Done::Retry
            } else {
                Done::Stop
            }
        }
        Verdict::Endpoint { reason } => {
            let d = shared.report_failure(reason, None);
            lock(&shared.counters).backfill_failures += 1;
            if uplink::sleep_or_stop(d, stop).await {
                Done::Retry
            } else {
                Done::Stop
            }
        }
    }
}
