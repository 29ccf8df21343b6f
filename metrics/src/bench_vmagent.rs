//! `edgeplane bench backfill --vmagent`: Edgeplane's uplink beside vmagent,
//! the standard agent, through the same outage into the same receiver.
//!
//! Both scrape one target (S gauges, every `interval`), each through its own
//! cut-able TCP proxy into one stock Prometheus (no out-of-order window, as
//! a region nobody set up for backfill). Edgeplane's series carry
//! `agent="edgeplane"`, vmagent's `agent="vmagent"`. The target records who
//! scraped it when (by User-Agent): the truth for "missing". Figures per
//! agent: bytes on disk per buffered sample at the end of the outage, peak
//! RSS, CPU seconds per million scraped samples, time from reconnect until
//! every outage sample is in the receiver, and samples still missing then.
//!
//! Edgeplane's pipeline runs inside this process, so its RSS and CPU
//! include the harness (target, proxies): an upper bound. They are taken
//! when its backlog is empty, before the receiver is queried (the queries
//! run in this process too); vmagent's when the run ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::classify::Rule;
use crate::link::LinkTiming;
use crate::local_prometheus::{LocalPrometheus, PrometheusOptions, free_port};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::scrape::ScrapeTarget;
use crate::uplink::{OutOfOrder, UplinkOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct VmagentOptions {
    pub series: usize,
    pub interval: Duration,
    pub outage: Duration,
    /// How long to wait after reconnecting for every outage sample.
    pub drain_limit: Duration,
    pub vmagent: PathBuf,
    pub prometheus: PathBuf,
}

impl Default for VmagentOptions {
    /// The measurement: 90 s outage, scrapes at 1 s.
    fn default() -> Self {
        VmagentOptions {
            series: 1300,
            interval: Duration::from_secs(1),
            outage: Duration::from_secs(90),
            drain_limit: Duration::from_secs(180),
            vmagent: "/usr/bin/vmagent".into(),
            prometheus: "/usr/bin/prometheus".into(),
        }
    }
}

/// One agent's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AgentFigures {
    pub agent: String,
    /// Samples it scraped while the link was cut.
    pub outage_samples: u64,
    /// Its buffer directory at the end of the outage.
    pub disk_bytes: u64,
    pub disk_bytes_per_sample: f64,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    /// Samples it scraped during the whole run.
    pub samples_scraped: u64,
    pub cpu_s_per_million_samples: f64,
    /// From reconnect until every outage sample was in the receiver (or
    /// the limit, then `drained` is false).
    pub drain_s: f64,
    pub drained: bool,
    /// Outage samples not in the receiver at their original timestamp.
    pub missing: u64,
}

/// The result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VmagentReport {
    pub receiver: String,
    pub series: usize,
    pub interval_s: f64,
    pub outage_s: f64,
    pub vmagent_version: Option<String>,
    pub edgeplane: AgentFigures,
    pub vmagent: AgentFigures,
}

impl VmagentReport {
    pub fn render_table(&self) -> String {
        let mut s = format!(
            "{} series at {} s, {} s outage, into {}\n{:<34}{:>14}{:>14}\n",
            self.series, self.interval_s, self.outage_s, self.receiver, "", "edgeplane", "vmagent"
        );
        let (e, v) = (&self.edgeplane, &self.vmagent);
        let rows: [(&str, String, String); 7] = [
            (
                "outage samples",
                e.outage_samples.to_string(),
                v.outage_samples.to_string(),
            ),
            (
                "disk bytes per buffered sample",
                format!("{:.2}", e.disk_bytes_per_sample),
                format!("{:.2}", v.disk_bytes_per_sample),
            ),
            (
                "peak RSS MiB",
                format!("{:.1}", e.peak_rss_mib),
                format!("{:.1}", v.peak_rss_mib),
            ),
            (
                "CPU s per million samples",
                format!("{:.2}", e.cpu_s_per_million_samples),
                format!("{:.2}", v.cpu_s_per_million_samples),
            ),
            (
                "drain s",
                format!("{:.1}", e.drain_s),
                format!("{:.1}", v.drain_s),
            ),
            ("drained", e.drained.to_string(), v.drained.to_string()),
            (
                "samples missing",
                e.missing.to_string(),
                v.missing.to_string(),
            ),
        ];
        for (k, a, b) in rows {
            s.push_str(&format!("{k:<34}{a:>14}{b:>14}\n"));
        }
        s
    }
}

/// Scrape times per agent, by User-Agent.
#[derive(Default)]
struct Scrapes {
    edgeplane: Vec<i64>,
    vmagent: Vec<i64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A TCP proxy to `upstream` that drops every connection while cut.
async fn link_proxy(upstream: u16) -> Result<(u16, tokio::sync::watch::Sender<bool>), String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let port = l.local_addr().map_err(|e| format!("bind: {e}"))?.port();
    let (cut, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            if *cut_rx.borrow() {
                continue;
            }
            let mut cut_rx = cut_rx.clone();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut sock, &mut up) => {}
                    _ = cut_rx.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Ok((port, cut))
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// (user + system CPU seconds, peak RSS MiB) of a process.
fn proc_usage(pid: &str) -> (f64, f64) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_owned()))
        .map_or(0.0, |rest| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / 100.0
        });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0);
    (cpu, rss)
}

/// vmagent, killed on drop.
struct Vmagent(Child);

impl Drop for Vmagent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Outage samples of `agent` not in the receiver: for each scrape time `r`
/// and series, a sample within (r − 900 ms, r + 100 ms].
async fn missing(
    prom: &LocalPrometheus,
    agent: &str,
    scrapes: &[i64],
    series: usize,
) -> Result<u64, String> {
    let got = prom
        .raw(&format!("bench_load{{agent=\"{agent}\"}}"), "30m", now_ms())
        .await?;
    let mut delivered = 0u64;
    for s in &got {
        for r in scrapes {
            if s.samples.iter().any(|(t, _)| *t <= r + 100 && *t > r - 900) {
                delivered += 1;
            }
        }
    }
    Ok((scrapes.len() * series) as u64 - delivered.min((scrapes.len() * series) as u64))
}

pub async fn vs_vmagent(o: VmagentOptions) -> Result<VmagentReport, String> {
    let mut rep = VmagentReport {
        receiver: "Prometheus, stock (no out-of-order window)".into(),
        series: o.series,
        interval_s: o.interval.as_secs_f64(),
        outage_s: o.outage.as_secs_f64(),
        vmagent_version: Command::new(&o.vmagent)
            .arg("-version")
            .output()
            .ok()
            .map(|out| {
                // It prints its version on stderr.
                let mut v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                v.push_str(String::from_utf8_lossy(&out.stderr).trim());
                v
            }),
        ..Default::default()
    };
    let prom = LocalPrometheus::start(PrometheusOptions {
        binary: o.prometheus.clone(),
        out_of_order_window: None,
        ..Default::default()
    })
    .await?;
    let mut text = String::from("# TYPE bench_load gauge\n");
    for i in 0..o.series {
        text.push_str(&format!("bench_load{{series=\"{i}\"}} {i}\n"));
    }
    let rec: Arc<Mutex<Scrapes>> = Arc::default();
    let seen = rec.clone();
    let target = crate::bench::serve_metrics(Arc::new(text), move |head| {
        let mut r = seen.lock().unwrap_or_else(|e| e.into_inner());
        if head.contains("user-agent: edgeplane") {
            r.edgeplane.push(now_ms());
        } else if head.contains("user-agent: vm_promscrape") {
            r.vmagent.push(now_ms());
        }
    })
    .await?;
    let (e_port, e_cut) = link_proxy(prom.port()).await?;
    let (v_port, v_cut) = link_proxy(prom.port()).await?;
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;

    // vmagent.
    let vm_dir = tmp.path().join("vmagent");
    std::fs::create_dir_all(&vm_dir).map_err(|e| format!("{e}"))?;
    let scrape_cfg = tmp.path().join("vmagent.yml");
    std::fs::write(
        &scrape_cfg,
        format!(
            "global:\n  scrape_interval: {}ms\n  scrape_timeout: {}ms\nscrape_configs:\n  - job_name: load\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n",
            o.interval.as_millis(),
            o.interval.as_millis() * 9 / 10
        ),
    )
    .map_err(|e| format!("{e}"))?;
    let vm_http = free_port().map_err(|e| format!("free port: {e}"))?;
    let vm_log =
        std::fs::File::create(tmp.path().join("vmagent.log")).map_err(|e| format!("{e}"))?;
    let vm_log2 = vm_log.try_clone().map_err(|e| format!("{e}"))?;
    let vm = Vmagent(
        Command::new(&o.vmagent)
            .arg(format!("-promscrape.config={}", scrape_cfg.display()))
            .arg(format!(
                "-remoteWrite.url=http://127.0.0.1:{v_port}/api/v1/write"
            ))
            .arg(format!("-remoteWrite.tmpDataPath={}", vm_dir.display()))
            .arg("-remoteWrite.label=agent=vmagent")
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_http}"))
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(vm_log)
            .stderr(vm_log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", o.vmagent.display()))?,
    );
    let vm_pid = vm.0.id().to_string();

    // Edgeplane.
    let buffer = edgeplane_buffer::Buffer::open(
        &tmp.path().join("buffer"),
        edgeplane_buffer::Options {
            classes: vec!["critical".into()],
            budget_bytes: 4 << 30,
            segment_bytes: 8 << 20,
            fsync: edgeplane_buffer::FsyncPolicy::Interval(Duration::from_secs(1)),
            max_age: None,
        },
    )
    .map_err(|e| format!("open buffer: {}", crate::scrape::error_chain(&e)))?;
    let opts = PipelineOptions {
        site: "bench".into(),
        external_labels: vec![("agent".into(), "edgeplane".into())],
        targets: vec![ScrapeTarget {
            job: "load".into(),
            url: format!("http://127.0.0.1:{target}/metrics"),
            interval: o.interval,
            timeout: o.interval * 9 / 10,
        }],
        classes: vec!["critical".into()],
        default_class: "critical".into(),
        rules: vec![Rule {
            metric: "*".into(),
            labels: Default::default(),
            class: "critical".into(),
        }],
        uplink: Some(UplinkOptions {
            url: format!("http://127.0.0.1:{e_port}/api/v1/write"),
            timeout: Duration::from_secs(10),
            backfill_rate: 0,
            batch_samples: 2000,
            max_sample_age: Duration::from_secs(29 * 86400),
            bearer_token_file: None,
            basic_auth: None,
            headers: vec![],
            ca_file: None,
            client_cert: None,
            client_key: None,
            dead_letter_bytes: 64 << 20,
            out_of_order: OutOfOrder::Auto,
            refused_retry: Duration::from_secs(60),
        }),
        dead_letter_dir: tmp.path().join("dead-letter"),
        live_queue_samples: 10_000,
        ledger_capacity: 2_000_000,
        link: LinkTiming {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            down_after: 2,
        },
        sync_every: Some(Duration::from_secs(1)),
        scrape_tls: None,
    };
    let cpu0 = crate::bench::cpu_seconds();
    crate::bench::reset_peak_rss();
    let p = Pipeline::start_with_store(opts, buffer).map_err(|e| e.to_string())?;
    // Warm up: both deliver.
    tokio::time::sleep(Duration::from_secs(15)).await;

    let cut_at = now_ms();
    let _ = e_cut.send(true);
    let _ = v_cut.send(true);
    tokio::time::sleep(o.outage).await;
    let restored_at = now_ms();
    rep.edgeplane.disk_bytes = dir_bytes(&tmp.path().join("buffer"));
    rep.vmagent.disk_bytes = dir_bytes(&vm_dir);
    let _ = e_cut.send(false);
    let _ = v_cut.send(false);
    let t0 = Instant::now();

    let outage = |v: &Vec<i64>| -> Vec<i64> {
        v.iter()
            .copied()
            .filter(|t| *t >= cut_at && *t < restored_at)
            .collect()
    };
    let (e_scr, v_scr) = {
        let r = rec.lock().unwrap_or_else(|e| e.into_inner());
        (outage(&r.edgeplane), outage(&r.vmagent))
    };
    for (fig, name, scr) in [
        (&mut rep.edgeplane, "edgeplane", &e_scr),
        (&mut rep.vmagent, "vmagent", &v_scr),
    ] {
        fig.agent = name.into();
        fig.outage_samples = (scr.len() * o.series) as u64;
        fig.disk_bytes_per_sample = fig.disk_bytes as f64 / fig.outage_samples.max(1) as f64;
    }
    // Edgeplane's own figures are taken when its backlog is empty, before
    // the receiver is queried: the queries run in this process too.
    while t0.elapsed() < o.drain_limit && p.status().backlog_samples > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (e_cpu, e_rss) = (
        crate::bench::cpu_seconds() - cpu0,
        crate::bench::peak_rss_mib(),
    );
    // Drain: poll both until nothing is missing or the limit.
    let mut e_done: Option<f64> = None;
    let mut v_done: Option<f64> = None;
    while t0.elapsed() < o.drain_limit && (e_done.is_none() || v_done.is_none()) {
        if e_done.is_none() && missing(&prom, "edgeplane", &e_scr, o.series).await? == 0 {
            e_done = Some(t0.elapsed().as_secs_f64());
        }
        if v_done.is_none() && missing(&prom, "vmagent", &v_scr, o.series).await? == 0 {
            v_done = Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let limit = o.drain_limit.as_secs_f64();
    rep.edgeplane.drained = e_done.is_some();
    rep.edgeplane.drain_s = e_done.unwrap_or(limit);
    rep.vmagent.drained = v_done.is_some();
    rep.vmagent.drain_s = v_done.unwrap_or(limit);
    rep.edgeplane.missing = missing(&prom, "edgeplane", &e_scr, o.series).await?;
    rep.vmagent.missing = missing(&prom, "vmagent", &v_scr, o.series).await?;

    let (v_cpu, v_rss) = proc_usage(&vm_pid);
    let (e_all, v_all) = {
        let r = rec.lock().unwrap_or_else(|e| e.into_inner());
        (r.edgeplane.len() * o.series, r.vmagent.len() * o.series)
    };
    for (fig, cpu, rss, all) in [
        (&mut rep.edgeplane, e_cpu, e_rss, e_all),
        (&mut rep.vmagent, v_cpu, v_rss, v_all),
    ] {
        fig.cpu_s = cpu;
        fig.peak_rss_mib = rss;
        fig.samples_scraped = all as u64;
        fig.cpu_s_per_million_samples = cpu / (all.max(1) as f64 / 1e6);
    }
    drop(vm);
    p.shutdown().await.map_err(|e| e.to_string())?;
    Ok(rep)
}
