//! The scrapers and the ingest: every scrape classified, appended to the
//! buffer (durable per the fsync policy) and queued for the live lane.

use super::*;

pub(super) async fn run_target(
    http: reqwest::Client,
    t: ScrapeTarget,
    common: CommonLabels,
    tx: mpsc::Sender<Ingest>,
    mut stop: watch::Receiver<bool>,
    _index: usize,
) {
    // Spread targets over the interval, deterministically per URL.
    let offset = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        t.url.hash(&mut h);
        let ms = t.interval.as_millis().max(1) as u64;
        Duration::from_millis(h.finish() % ms / 4)
    };
    if !uplink::sleep_or_stop(offset, &mut stop).await {
        return;
    }
    let mut tick = tokio::time::interval(t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let out = scrape::scrape_once(&http, &t, &common).await;
        if let Some(e) = &out.error {
            tracing::debug!(job = %t.job, url = %t.url, error = %e, "A scrape failed.");
        }
        if tx.send(Ingest::Scraped(out)).await.is_err() {
            return;
        }
    }
}

pub(super) async fn run_ingest<S: SampleStore>(
    shared: Arc<Shared>,
    store: Arc<Mutex<S>>,
    classifier: Classifier,
    mut rx: mpsc::Receiver<Ingest>,
    uplink: bool,
) {
    while let Some(msg) = rx.recv().await {
        let (samples, live, done) = match msg {
            Ingest::Scraped(out) => {
                {
                    let mut c = lock(&shared.counters);
                    c.scrapes += 1;
                    c.samples_scraped += out.samples.len() as u64;
                    c.scrape_duplicate_series += out.duplicates;
                    if out.error.is_some() {
                        c.scrape_failures += 1;
                    }
                }
                if let Some(t) = lock(&shared.targets)
                    .iter_mut()
                    .find(|t| t.url == out.url && t.job == out.job)
                {
                    t.scrapes += 1;
                    t.up = out.error.is_none();
                    t.last_scrape_ms = Some(out.started_ms);
                    t.last_duration_s = out.duration.as_secs_f64();
                    t.last_samples = out.samples.len() as u64;
                    if out.error.is_some() {
                        t.failures += 1;
                    }
                    t.last_error.clone_from(&out.error);
                }
                (out.samples, true, None)
            }
            Ingest::Inject {
                samples,
                live,
                done,
            } => (samples, live, Some(done)),
        };
        let live = live && uplink && shared.live_lane_on();
        let mut per_class: Vec<Vec<Sample>> = vec![Vec::new(); shared.classes.len()];
        for s in samples {
            let name = s
                .labels
                .iter()
                .find(|(k, _)| k == "__name__")
                .map_or("", |(_, v)| v.as_str());
            let class = classifier.classify(name, &s.labels);
            let ci = shared.classes.iter().position(|c| c == class).unwrap_or(0);
            per_class[ci].push(s);
        }
        for (ci, samples) in per_class.into_iter().enumerate() {
            if samples.is_empty() {
                continue;
            }
            let keys: Vec<Key> = if live {
                let keys: Vec<Key> = samples.iter().map(live::key_of).collect();
                lock(&shared.ledger).register(ci, &keys);
                keys
            } else {
                Vec::new()
            };
            let class = shared.classes[ci].clone();
            let st = store.clone();
            let n = samples.len() as u64;
            let (res, samples) = tokio::task::spawn_blocking(move || {
                let r = lock(&st).append(&class, &samples);
                (r, samples)
            })
            .await
            .unwrap_or_else(|e| {
                (
                    Err(StoreError(format!("append task failed: {e}"))),
                    Vec::new(),
                )
            });
            {
                let mut c = lock(&shared.counters);
                match &res {
                    Ok(dropped) => {
                        c.samples_buffered += n - *dropped as u64;
                        c.samples_lost_on_append += *dropped as u64;
                    }
                    Err(e) => {
                        c.buffer_append_errors += 1;
                        c.samples_lost_on_append += n;
                        tracing::error!(class = %shared.classes[ci], samples = n, error = %e, "Appending samples to the metrics buffer failed; they are sent live only.");
                    }
                }
            }
            if live && !samples.is_empty() {
                let evicted = lock(&shared.live).push(LiveBatch {
                    class: ci,
                    samples,
                    keys,
                });
                forget_evicted(&shared, evicted);
                shared.live_notify.notify_one();
            }
        }
        shared.drain_notify.notify_one();
        if let Some(d) = done {
            let _ = d.send(());
        }
    }
}

pub(super) fn forget_evicted(shared: &Shared, evicted: Vec<LiveBatch>) {
    if evicted.is_empty() {
        return;
    }
    let mut n = 0;
    let mut l = lock(&shared.ledger);
    for b in evicted {
        n += b.samples.len() as u64;
        l.resolve(b.class, &b.keys, false);
    }
    drop(l);
    lock(&shared.counters).live_samples_evicted += n;
}
