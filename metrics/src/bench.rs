//! `edgeplane bench backfill`: how fast a multi-day backlog reaches a real
//! Prometheus, and what live data experiences meanwhile.
//!
//! The run, all on loopback:
//!
//! 1. **Baseline.** A fresh Prometheus receives the whole data set from a
//!    minimal sender: batches built straight from memory, one request in
//!    flight, no buffer. This is what the receiver can take on this machine.
//! 2. **Outage.** A pipeline whose region URL points at a closed port gets
//!    the same data set (N days × S series at `step`, timestamps in the past)
//!    through its normal ingest path into the disk buffer.
//! 3. **Reconnect.** A second fresh Prometheus starts on that port. The
//!    backlog drains (unlimited rate unless `backfill_rate` is set) while a
//!    live target is scraped every `live_interval`; we record the flush rate,
//!    the live latency (2xx time − scrape time), the agent's peak RSS and CPU
//!    seconds, and finally count what Prometheus holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Sample;
use crate::classify::Rule;
use crate::link::LinkTiming;
use crate::local_prometheus::{LocalPrometheus, PrometheusOptions, free_port};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::scrape::ScrapeTarget;
use crate::uplink::UplinkOptions;

/// What to run.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub days: f64,
    pub series: usize,
    pub step: Duration,
    pub batch_samples: usize,
    /// Backlog rate limit, samples/s (0 = unlimited).
    pub backfill_rate: u64,
    /// Series of the live target, and its scrape interval.
    pub live_series: usize,
    pub live_interval: Duration,
    pub prometheus: std::path::PathBuf,
    /// Skip the baseline (saves half the time).
    pub skip_baseline: bool,
}

impl Default for BackfillOptions {
    /// 3 days × 2000 series at 15 s ≈ 34.6 M samples.
    fn default() -> Self {
        BackfillOptions {
            days: 3.0,
            series: 2000,
            step: Duration::from_secs(15),
            batch_samples: 2000,
            backfill_rate: 0,
            live_series: 200,
            live_interval: Duration::from_secs(1),
            prometheus: "/usr/bin/prometheus".into(),
            skip_baseline: false,
        }
    }
}

/// The result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackfillReport {
    pub days: f64,
    pub series: usize,
    pub step_s: f64,
    pub samples: u64,
    pub batch_samples: usize,
    pub backfill_rate_limit: u64,
    /// Seconds to put the data set into the disk buffer, and its size there.
    pub ingest_s: f64,
    pub ingest_samples_per_s: f64,
    pub buffer_bytes: u64,
    pub buffer_bytes_per_sample: f64,
    /// From the moment the region came back to an empty backlog.
    pub flush_s: f64,
    pub flush_samples_per_s: f64,
    /// Minimal in-memory sender into a fresh Prometheus, same data.
    pub receiver_baseline_samples_per_s: Option<f64>,
    pub live_interval_s: f64,
    pub live_latency_p50_s: Option<f64>,
    pub live_latency_p99_s: Option<f64>,
    pub live_latency_max_s: Option<f64>,
    /// First live sample delivered after the reconnect, seconds after it.
    pub live_first_after_reconnect_s: Option<f64>,
    /// Peak resident memory of this process during ingest+flush.
    pub agent_peak_rss_mib: f64,
    /// CPU seconds of this process (user+system) during ingest and flush.
    pub agent_cpu_ingest_s: f64,
    pub agent_cpu_flush_s: f64,
    /// Samples Prometheus holds afterwards (of the backlog series).
    pub samples_in_prometheus: u64,
    pub duplicate_samples_sent: u64,
    pub dead_letter_batches: u64,
}

impl BackfillReport {
    /// A human table.
    pub fn render_table(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.3} {unit}"));
        let rows: Vec<(&str, String)> = vec![
            (
                "data set",
                format!(
                    "{} days x {} series at {} s",
                    self.days, self.series, self.step_s
                ),
            ),
            ("samples", self.samples.to_string()),
            ("batch samples", self.batch_samples.to_string()),
            (
                "backfill rate limit",
                if self.backfill_rate_limit == 0 {
                    "unlimited".into()
                } else {
                    format!("{} samples/s", self.backfill_rate_limit)
                },
            ),
            (
                "ingest into buffer",
                format!(
                    "{:.1} s ({:.0} samples/s)",
                    self.ingest_s, self.ingest_samples_per_s
                ),
            ),
            (
                "buffer on disk",
                format!(
                    "{:.1} MiB ({:.2} B/sample)",
                    self.buffer_bytes as f64 / 1048576.0,
                    self.buffer_bytes_per_sample
                ),
            ),
            ("flush", format!("{:.1} s", self.flush_s)),
            (
                "flush rate",
                format!("{:.0} samples/s", self.flush_samples_per_s),
            ),
            (
                "receiver baseline",
                opt(self.receiver_baseline_samples_per_s, "samples/s"),
            ),
            ("live interval", format!("{} s", self.live_interval_s)),
            ("live latency p50", opt(self.live_latency_p50_s, "s")),
            ("live latency p99", opt(self.live_latency_p99_s, "s")),
            ("live latency max", opt(self.live_latency_max_s, "s")),
            (
                "first live after reconnect",
                opt(self.live_first_after_reconnect_s, "s"),
            ),
            (
                "agent peak RSS",
                format!("{:.1} MiB", self.agent_peak_rss_mib),
            ),
            (
                "agent CPU ingest / flush",
                format!(
                    "{:.1} s / {:.1} s",
                    self.agent_cpu_ingest_s, self.agent_cpu_flush_s
                ),
            ),
            (
                "samples in Prometheus",
                self.samples_in_prometheus.to_string(),
            ),
            ("duplicates sent", self.duplicate_samples_sent.to_string()),
            ("dead-letter batches", self.dead_letter_batches.to_string()),
        ];
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect()
    }
}

const CLASSES: [&str; 4] = ["critical", "high", "normal", "low"];

/// Series `s`'s tier (class): 10 % critical, 20 % high, 30 % normal, 40 % low.
fn tier(s: usize) -> &'static str {
    match s % 10 {
        0 => "critical",
        1 | 2 => "high",
        3..=5 => "normal",
        _ => "low",
    }
}

/// The data set, in time slices of `slice` steps (all series per step).
struct DataSet {
    labels: Vec<Vec<(String, String)>>,
    start_ms: i64,
    step_ms: i64,
    steps: i64,
}

impl DataSet {
    fn new(o: &BackfillOptions, now_ms: i64) -> Self {
        let step_ms = o.step.as_millis().max(1) as i64;
        let steps = ((o.days * 86_400_000.0) as i64 / step_ms).max(1);
        let labels = (0..o.series)
            .map(|s| {
                let mut l = vec![
                    ("__name__".to_owned(), "bench_backlog".to_owned()),
                    ("series".to_owned(), format!("{s:05}")),
                    ("site".to_owned(), "bench".to_owned()),
                    ("tier".to_owned(), tier(s).to_owned()),
                ];
                l.sort();
                l
            })
            .collect();
        DataSet {
            labels,
            // End two steps before now so no sample is in the future.
            start_ms: now_ms - (steps + 2) * step_ms,
            step_ms,
            steps,
        }
    }

    fn total(&self) -> u64 {
        self.steps as u64 * self.labels.len() as u64
    }

    /// Samples of steps `[from, to)`, step-major.
    fn slice(&self, from: i64, to: i64) -> Vec<Sample> {
        let mut out = Vec::with_capacity(((to - from) as usize) * self.labels.len());
        for i in from..to.min(self.steps) {
            let t = self.start_ms + i * self.step_ms;
            for (s, l) in self.labels.iter().enumerate() {
                out.push(Sample {
                    labels: l.clone(),
                    timestamp_ms: t,
                    // A counter growing at a per-series pace.
                    value: (i as f64) * ((s % 7) as f64 + 1.0),
                });
            }
        }
        out
    }
}

/// Runs the benchmark (needs a multi-threaded tokio runtime).
pub async fn backfill(o: BackfillOptions) -> Result<BackfillReport, String> {
    let now = chrono::Utc::now().timestamp_millis();
    let data = DataSet::new(&o, now);
    let total = data.total();
    let mut rep = BackfillReport {
        days: o.days,
        series: o.series,
        step_s: o.step.as_secs_f64(),
        samples: total,
        batch_samples: o.batch_samples,
        backfill_rate_limit: o.backfill_rate,
        live_interval_s: o.live_interval.as_secs_f64(),
        ..Default::default()
    };
    let prom_opts = |port: u16| PrometheusOptions {
        binary: o.prometheus.clone(),
        out_of_order_window: Some("30d".into()),
        port,
        extra_args: vec!["--query.max-samples=200000000".into()],
    };

    // 1. Baseline.
    if !o.skip_baseline {
        let prom = LocalPrometheus::start(prom_opts(0)).await?;
        crate::install_crypto_provider();
        let http = reqwest::Client::new();
        let url = prom.remote_write_url();
        let per_batch_steps = (o.batch_samples / o.series.max(1)).max(1) as i64;
        let t0 = Instant::now();
        let mut i = 0;
        while i < data.steps {
            let batch = data.slice(i, i + per_batch_steps);
            i += per_batch_steps;
            // Rows of at most batch_samples.
            for chunk in batch.chunks(o.batch_samples.max(1)) {
                let body = crate::remote_write::encode(chunk);
                let mut req = http.post(&url).body(body);
                for (k, v) in crate::remote_write::HEADERS {
                    req = req.header(k, v);
                }
                let r = req
                    .send()
                    .await
                    .map_err(|e| format!("baseline send: {e}"))?;
                if !r.status().is_success() {
                    let code = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("baseline: Prometheus answered {code}: {text}"));
                }
            }
        }
        rep.receiver_baseline_samples_per_s = Some(total as f64 / t0.elapsed().as_secs_f64());
        drop(prom);
    }

    // 2. Outage: fill the buffer through the pipeline.
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let live_text = Arc::new(live_exposition(o.live_series));
    let live_port = serve_metrics(live_text).await?;
    let buffer = edgeplane_buffer::Buffer::open(
        &tmp.path().join("buffer"),
        edgeplane_buffer::Options {
            classes: CLASSES.map(String::from).to_vec(),
            budget_bytes: 64 << 30,
            segment_bytes: 64 << 20,
            fsync: edgeplane_buffer::FsyncPolicy::Interval(Duration::from_secs(1)),
            max_age: None,
        },
    )
    .map_err(|e| format!("open buffer: {}", crate::scrape::error_chain(&e)))?;
    let rules = CLASSES
        .iter()
        .map(|c| Rule {
            metric: "*".into(),
            labels: [("tier".to_owned(), (*c).to_owned())].into(),
            class: (*c).to_owned(),
        })
        .chain(std::iter::once(Rule {
            metric: "*".into(),
            labels: Default::default(),
            class: "critical".into(),
        }))
        .collect();
    let opts = PipelineOptions {
        site: "bench".into(),
        external_labels: vec![],
        targets: vec![ScrapeTarget {
            job: "live".into(),
            url: format!("http://127.0.0.1:{live_port}/metrics"),
            interval: o.live_interval,
            timeout: o.live_interval,
        }],
        classes: CLASSES.map(String::from).to_vec(),
        default_class: "low".into(),
        rules,
        uplink: Some(UplinkOptions {
            url: format!("http://127.0.0.1:{port}/api/v1/write"),
            timeout: Duration::from_secs(30),
            backfill_rate: o.backfill_rate,
            batch_samples: o.batch_samples,
            max_sample_age: Duration::from_secs(29 * 86400),
            bearer_token_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            dead_letter_bytes: 64 << 20,
        }),
        dead_letter_dir: tmp.path().join("dead-letter"),
        live_queue_samples: (o.batch_samples * 4).max(10_000),
        ledger_capacity: 2_000_000,
        link: LinkTiming {
            backoff_base: Duration::from_millis(100),
            backoff_max: o.live_interval.max(Duration::from_millis(200)),
            down_after: 2,
        },
        sync_every: Some(Duration::from_secs(1)),
    };
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let pipeline = Pipeline::start_with_store(opts, buffer).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let slice_steps = (200_000 / o.series.max(1)).max(1) as i64;
    let mut i = 0;
    while i < data.steps {
        pipeline.inject(data.slice(i, i + slice_steps), false).await;
        i += slice_steps;
    }
    rep.ingest_s = t0.elapsed().as_secs_f64();
    rep.ingest_samples_per_s = total as f64 / rep.ingest_s;
    let cpu1 = cpu_seconds();
    rep.agent_cpu_ingest_s = cpu1 - cpu0;
    let st = pipeline.status();
    rep.buffer_bytes = st.backlog_bytes;
    rep.buffer_bytes_per_sample = st.backlog_bytes as f64 / total.max(1) as f64;
    if st.backlog_samples < total {
        return Err(format!(
            "the buffer holds {} of {total} samples: {:?}",
            st.backlog_samples, st.classes
        ));
    }

    // 3. Reconnect, with a live target.
    let prom = LocalPrometheus::start(prom_opts(port)).await?;
    let reconnect = Instant::now();
    let reconnect_ms = chrono::Utc::now().timestamp_millis();
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let st = pipeline.status();
        // Live samples keep arriving; the backlog is gone when what is
        // left is at most two scrapes of the live target.
        if st.backlog_samples <= 2 * (o.live_series as u64 + 3)
            && st.counters.backfill_samples_sent >= total
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("backlog not drained after an hour: {st:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rep.flush_s = reconnect.elapsed().as_secs_f64();
    rep.flush_samples_per_s = total as f64 / rep.flush_s;
    rep.agent_cpu_flush_s = cpu_seconds() - cpu1;
    rep.agent_peak_rss_mib = peak_rss_mib();
    // Give the live target a few scrapes after the reconnect even when the
    // flush was quicker than that.
    let min_wait = 3 * o.live_interval + Duration::from_millis(200);
    if reconnect.elapsed() < min_wait {
        tokio::time::sleep(min_wait - reconnect.elapsed()).await;
    }
    // Live samples scraped after the reconnect: (delivered_ms, scraped_ms).
    let lat: Vec<(i64, i64)> = pipeline
        .live_deliveries()
        .into_iter()
        .filter(|(_, ts)| *ts >= reconnect_ms)
        .collect();
    let mut sorted: Vec<f64> = lat.iter().map(|(d, t)| (d - t) as f64 / 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| {
        (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize])
    };
    rep.live_latency_p50_s = q(0.5);
    rep.live_latency_p99_s = q(0.99);
    rep.live_latency_max_s = sorted.last().copied();
    rep.live_first_after_reconnect_s = lat
        .iter()
        .map(|(done, _)| (*done - reconnect_ms) as f64 / 1000.0)
        .reduce(f64::min);
    let st = pipeline.status();
    rep.duplicate_samples_sent = st.counters.duplicate_samples_sent;
    rep.dead_letter_batches = st.dead_letter.total_batches;
    let window = format!("{}d", (o.days.ceil() as u64 + 1));
    let r = prom
        .instant(
            &format!("sum(count_over_time(bench_backlog[{window}]))"),
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    rep.samples_in_prometheus = r.first().map_or(0, |(_, v)| *v as u64);
    pipeline.shutdown().await.map_err(|e| e.to_string())?;
    Ok(rep)
}

/// The live target's exposition: `live_series` gauges.
fn live_exposition(n: usize) -> String {
    let mut s = String::from("# TYPE bench_live gauge\n");
    for i in 0..n {
        s.push_str(&format!("bench_live{{i=\"{i}\"}} {i}\n"));
    }
    s
}

/// A minimal HTTP/1.1 server answering every request with `text`.
async fn serve_metrics(text: Arc<String>) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let port = l.local_addr().map_err(|e| format!("bind: {e}"))?.port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let text = text.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n",
                            text.len()
                        );
                        if sock.write_all(head.as_bytes()).await.is_err()
                            || sock.write_all(text.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(port)
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the kernel's peak-RSS mark of this process (VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
