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
    /// Peak resident memory of this process while the backlog flushed
    /// (with the live target scraped), and while the benchmark pushed the
    /// data set in (which includes the generator's own batches).
    pub agent_peak_rss_mib: f64,
    pub agent_peak_rss_ingest_mib: f64,
    /// CPU seconds of this process (user+system) during ingest and flush.
    pub agent_cpu_ingest_s: f64,
    pub agent_cpu_flush_s: f64,
    /// Prometheus' `prometheus_tsdb_head_samples_appended_total` after the
    /// flush (backlog + live samples).
    pub prometheus_samples_appended: u64,
    /// Series queried back one by one, and how many had every sample.
    pub checked_series: u64,
    pub checked_series_complete: u64,
    pub verify_error: Option<String>,
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
                "agent peak RSS flush / ingest",
                format!(
                    "{:.1} MiB / {:.1} MiB",
                    self.agent_peak_rss_mib, self.agent_peak_rss_ingest_mib
                ),
            ),
            (
                "agent CPU ingest / flush",
                format!(
                    "{:.1} s / {:.1} s",
                    self.agent_cpu_ingest_s, self.agent_cpu_flush_s
                ),
            ),
            (
                "samples appended by Prometheus",
                self.prometheus_samples_appended.to_string(),
            ),
            (
                "series checked / complete",
                format!("{} / {}", self.checked_series, self.checked_series_complete),
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

    /// Samples of steps `[from, to)`, step-major; only series of `class`
    /// if given.
    fn slice(&self, from: i64, to: i64, class: Option<&str>) -> Vec<Sample> {
        let mut out = Vec::with_capacity(((to - from) as usize) * self.labels.len());
        for i in from..to.min(self.steps) {
            let t = self.start_ms + i * self.step_ms;
            for (s, l) in self.labels.iter().enumerate() {
                if class.is_some_and(|c| c != tier(s)) {
                    continue;
                }
                out.push(Sample {
                    labels: l.clone(),
                    timestamp_ms: t,
                    value: value_of(s, i),
                });
            }
        }
        out
    }
}

/// Deterministic, realistic-ish values: even series are counters with
/// irregular increments, odd ones 2-decimal gauges (the worst case for the
/// buffer's compression in the research notes).
fn value_of(series: usize, step: i64) -> f64 {
    let h = |x: u64| {
        // splitmix64
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let noise = h(((series as u64) << 32) ^ step as u64);
    if series.is_multiple_of(2) {
        // Monotonic: 100 per step plus 0..99.
        (step as f64) * 100.0 + (noise % 100) as f64
    } else {
        (noise % 10_000) as f64 / 100.0
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
        tls: None,
    };

    // 1. Baseline.
    if !o.skip_baseline {
        let prom = LocalPrometheus::start(prom_opts(0)).await?;
        crate::install_crypto_provider();
        let http = reqwest::Client::new();
        let url = prom.remote_write_url();
        // The same requests the drain makes: class by class, most critical
        // first, each class's samples in time order, `batch_samples` each.
        let t0 = Instant::now();
        for class in CLASSES {
            let in_class = (0..o.series).filter(|s| tier(*s) == class).count().max(1);
            let steps_per_slice = (50_000 / in_class).max(1) as i64;
            let mut carry: Vec<Sample> = Vec::new();
            let mut i = 0;
            while i < data.steps || !carry.is_empty() {
                if i < data.steps {
                    carry.extend(data.slice(i, i + steps_per_slice, Some(class)));
                    i += steps_per_slice;
                }
                let full = carry.len() / o.batch_samples.max(1) * o.batch_samples.max(1);
                let n = if i >= data.steps { carry.len() } else { full };
                let rest = carry.split_off(n);
                for chunk in carry.chunks(o.batch_samples.max(1)) {
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
                carry = rest;
            }
        }
        rep.receiver_baseline_samples_per_s = Some(total as f64 / t0.elapsed().as_secs_f64());
        drop(prom);
    }

    // 2. Outage: fill the buffer through the pipeline.
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let live_text = Arc::new(live_exposition(o.live_series));
    let live_port = serve_metrics(live_text, |_| {}).await?;
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
            basic_auth: None,
            headers: vec![],
            ca_file: None,
            client_cert: None,
            client_key: None,
            dead_letter_bytes: 64 << 20,
            // The bench's receiver has an out-of-order window; measure live
            // first as before.
            out_of_order: crate::uplink::OutOfOrder::Accepted,
            refused_retry: Duration::from_secs(60),
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
        scrape_tls: None,
    };
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let pipeline = Pipeline::start_with_store(opts, buffer).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let slice_steps = (50_000 / o.series.max(1)).max(1) as i64;
    let mut i = 0;
    while i < data.steps {
        pipeline
            .inject(data.slice(i, i + slice_steps, None), false)
            .await;
        i += slice_steps;
    }
    rep.ingest_s = t0.elapsed().as_secs_f64();
    rep.ingest_samples_per_s = total as f64 / rep.ingest_s;
    let cpu1 = cpu_seconds();
    rep.agent_cpu_ingest_s = cpu1 - cpu0;
    rep.agent_peak_rss_ingest_mib = peak_rss_mib();
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
    reset_peak_rss();
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
    // Verify: Prometheus' own count of appended samples, and a per-series
    // count for a spread of series (counting all 35 M at once takes
    // Prometheus minutes with out-of-order chunks).
    rep.prometheus_samples_appended = prometheus_appended(&prom).await;
    let window = format!("{}d", (o.days.ceil() as u64 + 1));
    let check: Vec<usize> = (0..o.series).step_by((o.series / 20).max(1)).collect();
    for s in &check {
        let q = format!("count_over_time(bench_backlog{{series=\"{s:05}\"}}[{window}])");
        match prom
            .instant(&q, chrono::Utc::now().timestamp_millis())
            .await
        {
            Ok(r) => {
                let n = r.first().map_or(0, |(_, v)| *v as u64);
                rep.checked_series += 1;
                if n == data.steps as u64 {
                    rep.checked_series_complete += 1;
                }
            }
            Err(e) => rep.verify_error = Some(e),
        }
    }
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

/// A minimal HTTP/1.1 server answering every request with `text`; each
/// request's head (lower-cased) is passed to `on_request` first.
pub(crate) async fn serve_metrics(
    text: Arc<String>,
    on_request: impl Fn(&str) + Send + Sync + 'static,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let port = l.local_addr().map_err(|e| format!("bind: {e}"))?.port();
    let on_request = Arc::new(on_request);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let (text, on_request) = (text.clone(), on_request.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        on_request(&String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase());
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
pub(crate) fn cpu_seconds() -> f64 {
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
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn peak_rss_mib() -> f64 {
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

/// `prometheus_tsdb_head_samples_appended_total{type="float"}` of a local
/// Prometheus, read from its own `/metrics`.
async fn prometheus_appended(prom: &LocalPrometheus) -> u64 {
    crate::install_crypto_provider();
    let Ok(resp) = reqwest::get(format!("{}/metrics", prom.base_url())).await else {
        return 0;
    };
    let Ok(text) = resp.text().await else {
        return 0;
    };
    crate::parse::parse(&text)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.name == "prometheus_tsdb_head_samples_appended_total")
        .filter(|p| p.labels.iter().all(|(k, v)| k != "type" || v == "float"))
        .map(|p| p.value as u64)
        .sum()
}
