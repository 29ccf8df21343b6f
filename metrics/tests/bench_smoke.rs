//! The backfill benchmark at toy size: it runs, and its numbers add up.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edgeplane_metrics::bench::{BackfillOptions, backfill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_bench_smoke() {
    let rep = backfill(BackfillOptions {
        days: 0.25,
        series: 20,
        step: Duration::from_secs(15),
        batch_samples: 500,
        live_series: 5,
        live_interval: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap();
    println!("{}", rep.render_table());
    assert_eq!(rep.samples, 20 * 1440);
    assert!(rep.prometheus_samples_appended >= rep.samples);
    assert_eq!(rep.checked_series, 20);
    assert_eq!(rep.checked_series_complete, 20, "{:?}", rep.verify_error);
    assert_eq!(rep.dead_letter_batches, 0);
    assert!(rep.flush_samples_per_s > 0.0);
    assert!(rep.receiver_baseline_samples_per_s.unwrap() > 0.0);
    let p99 = rep
        .live_latency_p99_s
        .expect("live samples after the reconnect");
    assert!(p99 < 2.0 * 0.5 + 1.0, "live p99 {p99} s");
    let json = serde_json::to_value(&rep).unwrap();
    assert!(json["flush_samples_per_s"].is_number());
}

/// `bench backfill --vmagent` at toy size: both agents scrape through a
/// 20 s outage into a stock Prometheus and the figures add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmagent_comparison_smoke() {
    use edgeplane_metrics::bench_vmagent::{VmagentOptions, vs_vmagent};
    let o = VmagentOptions {
        series: 100,
        outage: Duration::from_secs(20),
        drain_limit: Duration::from_secs(30),
        ..Default::default()
    };
    if !o.vmagent.exists() {
        let why = format!(
            "{} missing (Debian package victoria-metrics)",
            o.vmagent.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("SKIPPED: {why} (and CI=true: a CI run must run every test)");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let rep = vs_vmagent(o).await.unwrap();
    println!("{}", rep.render_table());
    for a in [&rep.edgeplane, &rep.vmagent] {
        assert!(a.outage_samples >= 100 * 15, "{a:?}");
        assert!(a.disk_bytes > 0, "{a:?}");
        assert!(a.peak_rss_mib > 0.0 && a.cpu_s > 0.0, "{a:?}");
    }
    assert!(rep.edgeplane.drained, "{:?}", rep.edgeplane);
    assert_eq!(rep.edgeplane.missing, 0);
    let json = serde_json::to_value(&rep).unwrap();
    assert!(json["vmagent"]["disk_bytes_per_sample"].is_number());
}
