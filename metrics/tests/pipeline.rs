//! End-to-end tests of the metrics pipeline: real disk buffer, real
//! Prometheus 2.42 (remote-write receiver) where the behaviour under test is
//! Prometheus', a fake receiver where an exact failure is needed.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use edgeplane_metrics::local_prometheus::{LocalPrometheus, PrometheusOptions, free_port};
use edgeplane_metrics::pipeline::Pipeline;
use edgeplane_metrics::scrape::ScrapeTarget;

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_up_scraped_target_arrives_in_prometheus() {
    let prom = LocalPrometheus::start(PrometheusOptions::default())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let text = Arc::new(Mutex::new(
        "# TYPE crit_demo gauge\ncrit_demo{x=\"1\"} 42\n# TYPE demo_total counter\ndemo_total 7\n"
            .to_string(),
    ));
    let port = metrics_target(text.clone()).await;
    let dead_port = free_port().unwrap();
    let mut opts = options(tmp.path(), Some(prom.remote_write_url()));
    let target = |job: &str, port: u16| ScrapeTarget {
        job: job.into(),
        url: format!("http://127.0.0.1:{port}/metrics"),
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
    };
    opts.targets = vec![target("demo", port), target("gone", dead_port)];
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 64 << 20, 1 << 20)).unwrap();

    wait_for(
        Duration::from_secs(20),
        "crit_demo in Prometheus",
        || async {
            let r = prom.instant("crit_demo", now_ms()).await.unwrap();
            r.len() == 1 && r[0].1 == 42.0
        },
    )
    .await;
    let r = prom.instant("crit_demo", now_ms()).await.unwrap();
    let labels = &r[0].0;
    assert_eq!(labels.get("job").map(String::as_str), Some("demo"));
    assert_eq!(labels.get("site").map(String::as_str), Some("test-site"));
    assert_eq!(labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!(labels.get("x").map(String::as_str), Some("1"));
    assert_eq!(
        labels.get("instance").cloned(),
        Some(format!("127.0.0.1:{port}"))
    );
    wait_for(Duration::from_secs(10), "up of both targets", || async {
        let r = prom.instant("up", now_ms()).await.unwrap();
        let by_job: BTreeMap<String, f64> = r
            .iter()
            .map(|(l, v)| (l.get("job").cloned().unwrap_or_default(), *v))
            .collect();
        by_job.get("demo") == Some(&1.0) && by_job.get("gone") == Some(&0.0)
    })
    .await;

    // A target turning to garbage: up = 0, counted, the pipeline goes on.
    *text.lock().unwrap() = "<html>not metrics</html>".into();
    wait_for(
        Duration::from_secs(10),
        "up == 0 for the garbage target",
        || async {
            let st = p.status();
            st.targets
                .iter()
                .any(|t| t.job == "demo" && !t.up && t.last_error.is_some())
        },
    )
    .await;

    let st = p.status();
    assert_eq!(st.link.state, edgeplane_metrics::link::LinkState::Up);
    assert!(st.counters.live_samples_sent > 0);
    assert!(st.counters.scrape_failures > 0);
    // The drain found everything delivered live: nothing sent twice.
    assert!(
        st.counters.backfill_samples_skipped_live > 0,
        "{:?}",
        st.counters
    );
    let own = p.render_prometheus();
    assert!(own.contains("edgeplane_metrics_live_samples_sent_total"));
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_day_outage_backfills_original_timestamps_critical_first() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let mut opts = options(tmp.path(), Some(url));
    // Slow enough to watch the class order, fast enough for CI.
    opts.uplink.as_mut().unwrap().backfill_rate = 60_000;
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 256 << 20, 1 << 20)).unwrap();

    // Three days of 15 s samples, three classes, injected while the
    // receiver is down (its port is closed).
    let now = now_ms();
    let start = now - 3 * DAY_MS;
    let step = 60_000; // 1 min keeps the test quick: 4320 samples per series
    let mut all = Vec::new();
    all.extend(series("crit_up", 4, start, now, step));
    all.extend(series("high_load", 4, start, now, step));
    all.extend(series("low_noise", 4, start, now, step));
    let total = all.len() as u64;
    p.inject(all, true).await;
    wait_for(Duration::from_secs(20), "link down", || async {
        p.status().link.state == edgeplane_metrics::link::LinkState::Down
    })
    .await;
    let st = p.status();
    assert_eq!(st.backlog_samples, total, "{:?}", st.classes);

    // The region comes back.
    let prom = LocalPrometheus::start(PrometheusOptions {
        port,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut drained_at: BTreeMap<String, (std::time::Instant, u64)> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    loop {
        let st = p.status();
        for c in &st.classes {
            if c.samples == 0 && !drained_at.contains_key(&c.class) {
                let low_left = st
                    .classes
                    .iter()
                    .find(|x| x.class == "low")
                    .map_or(0, |x| x.samples);
                drained_at.insert(c.class.clone(), (std::time::Instant::now(), low_left));
            }
        }
        if drained_at.len() == 3 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "backlog not drained: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (tc, low_left_when_crit_done) = drained_at["critical"];
    let (th, _) = drained_at["high"];
    let (tl, _) = drained_at["low"];
    assert!(tc <= th && th <= tl, "critical, then high, then low");
    assert!(
        low_left_when_crit_done > 0,
        "low still waiting when critical was done"
    );

    // Every sample, at its original timestamp, with its value.
    for name in ["crit_up", "high_load", "low_noise"] {
        let got = prom.raw(name, "4d", now + 1000).await.unwrap();
        assert_eq!(got.len(), 4, "{name}: series");
        for s in &got {
            assert_eq!(
                s.samples.len() as i64,
                (now - start + step - 1) / step,
                "{name} {:?}",
                s.labels
            );
            for (i, (t, v)) in s.samples.iter().enumerate() {
                assert_eq!(*t, start + i as i64 * step);
                assert_eq!(*v, i as f64);
            }
        }
    }
    let st = p.status();
    assert_eq!(st.counters.backfill_samples_sent, total);
    assert_eq!(st.dead_letter.total_batches, 0);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_too_small_sheds_low_keeps_critical_and_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let opts = options(tmp.path(), Some(url));
    // Small segments and budget: the low class cannot fit.
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 96 << 10, 8 << 10)).unwrap();
    let now = now_ms();
    let start = now - 3 * DAY_MS;
    let step = 15_000;
    let crit = series("crit_health", 1, start, now, step * 4);
    let n_crit = crit.len() as u64;
    // Low data with noisy values (compresses badly), appended first.
    let mut low = series("low_debug", 20, start, now, step);
    for (i, s) in low.iter_mut().enumerate() {
        s.value = ((i as u64).wrapping_mul(2654435761) % 100_000) as f64 / 7.0;
    }
    let n_low = low.len() as u64;
    for chunk in low.chunks(20_000) {
        p.inject(chunk.to_vec(), false).await;
    }
    p.inject(crit, false).await;
    let st = p.status();
    let low_st = st
        .classes
        .iter()
        .find(|c| c.class == "low")
        .unwrap()
        .clone();
    let crit_st = st
        .classes
        .iter()
        .find(|c| c.class == "critical")
        .unwrap()
        .clone();
    assert!(low_st.shed_samples > 0, "low was shed: {low_st:?}");
    assert_eq!(crit_st.shed_samples, 0);
    assert_eq!(crit_st.dropped_samples, 0);
    assert_eq!(crit_st.samples, n_crit);

    let prom = LocalPrometheus::start(PrometheusOptions {
        port,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for(Duration::from_secs(60), "backlog drained", || async {
        let st = p.status();
        st.backlog_samples == 0 && st.link.state == edgeplane_metrics::link::LinkState::Up
    })
    .await;
    let count = |name: &'static str| {
        let prom = &prom;
        async move {
            prom.raw(name, "4d", now + 1000)
                .await
                .unwrap()
                .iter()
                .map(|s| s.samples.len() as u64)
                .sum::<u64>()
        }
    };
    assert_eq!(count("crit_health").await, n_crit, "critical complete");
    let low_arrived = count("low_debug").await;
    let st = p.status();
    let low_st = st.classes.iter().find(|c| c.class == "low").unwrap();
    assert_eq!(
        low_arrived + low_st.shed_samples + low_st.dropped_samples + low_st.expired_samples,
        n_low,
        "what is missing is exactly what the status says was shed: {low_st:?}"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_go_to_dead_letter_and_the_rest_flows() {
    let rx = FakeReceiver::start(|wr| {
        if has_metric(wr, "low_poison") {
            (400, "snappy: corrupt input".into())
        } else if has_metric(wr, "low_ancient") {
            (422, "invalid metric name".into())
        } else {
            (204, String::new())
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path(), Some(rx.url()));
    opts.uplink.as_mut().unwrap().batch_samples = 10;
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 64 << 20, 1 << 20)).unwrap();
    let now = now_ms();
    // Ten samples per batch: good, poison (400), good, ancient (500 too old), good.
    let batch = |name: &str, t0: i64| series(name, 10, t0, t0 + 1, 1);
    let mut all = Vec::new();
    all.extend(batch("low_good", now - 5000));
    all.extend(batch("low_poison", now - 4000));
    all.extend(batch("low_good", now - 3000));
    all.extend(batch("low_ancient", now - 2000));
    all.extend(batch("low_good", now - 1000));
    p.inject(all, false).await;
    wait_for(Duration::from_secs(20), "backlog drained", || async {
        p.status().backlog_samples == 0
    })
    .await;
    let st = p.status();
    assert_eq!(st.dead_letter.total_batches, 2, "{:?}", st.dead_letter);
    assert_eq!(st.dead_letter.total_samples, 20);
    assert_eq!(st.counters.backfill_samples_sent, 30);
    let good = rx
        .accepted()
        .iter()
        .filter(|(n, _, _)| n == "low_good")
        .count();
    assert_eq!(good, 30);
    // Each refused batch was tried exactly once: no retry loop.
    let tries = |name: &str| {
        rx.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| has_metric(w, name))
            .count()
    };
    assert_eq!(tries("low_poison"), 1);
    assert_eq!(tries("low_ancient"), 1);
    let files = std::fs::read_dir(tmp.path().join("dead-letter"))
        .unwrap()
        .count();
    assert_eq!(files, 4, "two batches, body + metadata each");
    assert_eq!(st.link.state, edgeplane_metrics::link::LinkState::Up);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_retry_and_auth_errors_keep_the_data() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // 503 (with Retry-After) three times, then 401 until told otherwise,
    // then 204.
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, h2) = (calls.clone(), healthy.clone());
    let rx = FakeReceiver::start(move |_| {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        if n < 3 {
            (503, "busy".into())
        } else if !h2.load(Ordering::SeqCst) {
            (401, "bad token".into())
        } else {
            (204, String::new())
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let p = Pipeline::start_with_store(
        options(tmp.path(), Some(rx.url())),
        buffer(tmp.path(), 64 << 20, 1 << 20),
    )
    .unwrap();
    let now = now_ms();
    p.inject(series("crit_x", 3, now - 60_000, now, 1000), false)
        .await;
    wait_for(Duration::from_secs(20), "link down on 401", || async {
        let st = p.status();
        st.link.state == edgeplane_metrics::link::LinkState::Down
            && st
                .link
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("401"))
    })
    .await;
    let st = p.status();
    assert_eq!(st.backlog_samples, 180, "401 keeps the data in the buffer");
    assert_eq!(st.dead_letter.total_batches, 0);
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(
        Duration::from_secs(20),
        "delivered after recovery",
        || async { p.status().backlog_samples == 0 },
    )
    .await;
    assert_eq!(rx.accepted().len(), 180);
    let st = p.status();
    assert_eq!(st.link.state, edgeplane_metrics::link::LinkState::Up);
    assert!(st.counters.responses.get("503").copied().unwrap_or(0) >= 3);
    assert!(st.counters.probes > 0);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_data_reaches_the_region_while_the_backlog_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut opts = options(
        tmp.path(),
        Some(format!("http://127.0.0.1:{port}/api/v1/write")),
    );
    let interval = Duration::from_millis(500);
    opts.uplink.as_mut().unwrap().backfill_rate = 20_000;
    let text = Arc::new(Mutex::new("low_live_gauge 1\n".to_string()));
    let tport = metrics_target(text).await;
    opts.targets = vec![ScrapeTarget {
        job: "live".into(),
        url: format!("http://127.0.0.1:{tport}/metrics"),
        interval,
        timeout: interval,
    }];
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 64 << 20, 1 << 20)).unwrap();
    let now = now_ms();
    // ~100 k samples of backlog in the live data's own class: 5 s at 20 k/s.
    p.inject(series("low_old", 35, now - 3 * DAY_MS, now, 90_000), false)
        .await;
    wait_for(Duration::from_secs(20), "link down", || async {
        p.status().link.state == edgeplane_metrics::link::LinkState::Down
    })
    .await;
    let prom = LocalPrometheus::start(PrometheusOptions {
        port,
        ..Default::default()
    })
    .await
    .unwrap();
    let reconnect_ms = now_ms();
    // Live samples scraped after the reconnect are there within two scrape
    // intervals, long before the backlog is done.
    wait_for(
        Duration::from_secs(10),
        "a post-reconnect live sample",
        || async {
            p.live_deliveries()
                .iter()
                .any(|(_, ts)| *ts >= reconnect_ms)
        },
    )
    .await;
    let st = p.status();
    assert!(
        st.backlog_samples > 10_000,
        "backlog still draining: {}",
        st.backlog_samples
    );
    let r = prom.instant("low_live_gauge", now_ms()).await.unwrap();
    assert_eq!(r.len(), 1, "live series queryable during the drain");
    wait_for(Duration::from_secs(30), "backlog drained", || async {
        p.status().backlog_samples < 10
    })
    .await;
    let late: Vec<f64> = p
        .live_deliveries()
        .iter()
        .filter(|(_, ts)| *ts >= reconnect_ms)
        .map(|(done, ts)| (done - ts) as f64 / 1000.0)
        .collect();
    let worst = late.iter().copied().fold(0.0, f64::max);
    assert!(
        worst <= 2.0 * interval.as_secs_f64(),
        "live latency after reconnect up to {worst} s ({} samples)",
        late.len()
    );
    let rate = p.status().flush.backfill_samples_per_s;
    assert!(rate < 25_000.0, "backfill rate limit holds: {rate}");
    p.shutdown().await.unwrap();
}
