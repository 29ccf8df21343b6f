//! `diag check --region` asks the real receivers what they accept, with
//! canary samples on `edgeplane_uplink_probe` only: a stock Prometheus
//! takes a sample at now and refuses one a minute older (out of order) and
//! one two hours older (out of bounds); with an out-of-order window of a
//! day it takes all three, and so does VictoriaMetrics.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use edgeplane_metrics::local_prometheus::{LocalPrometheus, PrometheusOptions};
use edgeplane_metrics::local_victoria::{LocalVictoria, VICTORIA_METRICS_BIN, VictoriaOptions};
use edgeplane_metrics::region_check::{Answer, RegionAcceptance, probe};

async fn ask(port: u16) -> RegionAcceptance {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(
        tmp.path(),
        Some(format!("http://127.0.0.1:{port}/api/v1/write")),
    );
    probe(
        opts.uplink.as_ref().unwrap(),
        &[("site".to_string(), "check".to_string())],
    )
    .await
    .unwrap()
}

fn refused(a: &Answer) -> bool {
    matches!(a, Answer::Refused(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_refuses_old_canaries_and_one_with_a_window_takes_them() {
    let stock = LocalPrometheus::start(PrometheusOptions {
        out_of_order_window: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let a = ask(stock.port()).await;
    assert_eq!(a.recent, Answer::Accepted, "{a:?}");
    assert!(refused(&a.minute_older), "{a:?}");
    assert!(refused(&a.two_hours_old), "{a:?}");
    // Only the canary series was written.
    let probe_series = stock
        .raw("edgeplane_uplink_probe", "3h", now_ms())
        .await
        .unwrap();
    assert_eq!(probe_series.len(), 1, "{probe_series:?}");

    let windowed = LocalPrometheus::start(PrometheusOptions {
        out_of_order_window: Some("1d".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let a = ask(windowed.port()).await;
    assert_eq!(
        (a.recent, a.minute_older, a.two_hours_old),
        (Answer::Accepted, Answer::Accepted, Answer::Accepted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_takes_every_canary() {
    if !std::path::Path::new(VICTORIA_METRICS_BIN).exists() {
        let why =
            format!("{VICTORIA_METRICS_BIN} missing (scripts/setup installs victoria-metrics)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("SKIPPED: {why} (and CI=true: a CI run must run every test)");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let vm = LocalVictoria::start(VictoriaOptions::default())
        .await
        .unwrap();
    let a = ask(vm.port()).await;
    assert_eq!(
        (a.recent, a.minute_older, a.two_hours_old),
        (Answer::Accepted, Answer::Accepted, Answer::Accepted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_region_is_a_failure_and_nothing_more_is_asked() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = ask(port).await;
    assert!(matches!(a.recent, Answer::Failed(_)), "{a:?}");
    assert_eq!(a.minute_older, Answer::NotAsked);
    assert_eq!(a.two_hours_old, Answer::NotAsked);
}
