//! The benchmark runs with tiny settings, so it never rots.

use edgeplane_buffer::bench::{self, BenchOptions, Workload};

#[test]
fn bench_runs_with_tiny_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BenchOptions {
        series: 600,
        data_mib: 1,
        segment_bytes: 256 << 10,
        synced_scrapes: 3,
        read_samples: 20_000,
        shed_segments: 3,
        ..BenchOptions::default()
    };
    let r = bench::run(dir.path(), &opts).expect("bench");
    assert!(r.samples_appended > 0);
    assert!(r.append_samples_per_s > 0.0 && r.append_synced_samples_per_s > 0.0);
    assert!(r.disk_baseline_mb_per_s > 0.0);
    assert!(r.bytes_per_sample > 0.0);
    assert_eq!(r.read_samples, 20_000);
    assert!(r.shed_events >= 3, "{r:?}");
    assert!(r.peak_rss_mib > 0.0);
    let json = serde_json::to_value(&r).expect("json");
    assert!(json["bytes_per_sample"].is_number());
    let table = r.render_table();
    assert!(table.contains("bytes per sample"), "{table}");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "scratch removed"
    );
}

#[test]
fn workload_is_shaped_like_scrapes() {
    let mut w = Workload::new(10_000, 15_000, 7);
    let first: Vec<_> = w.next_scrape().to_vec();
    let second = w.next_scrape();
    assert_eq!(first.len(), 10_000);
    let mut names: Vec<_> = first.iter().map(|s| s.labels.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 10_000, "distinct series");
    assert!(
        first
            .iter()
            .all(|s| s.labels.windows(2).all(|w| w[0].0 < w[1].0)),
        "labels sorted"
    );
    let counters = first
        .iter()
        .zip(second)
        .filter(|(a, _)| a.labels[0].1.ends_with("_total"));
    assert!(
        counters.into_iter().all(|(a, b)| b.value >= a.value),
        "counters never decrease"
    );
}
