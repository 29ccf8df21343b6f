//! A benchmark of the buffer on a realistic scrape workload, for
//! `edgeplane bench buffer`. Everything runs in a scratch directory under the
//! given one (removed afterwards), so the disk figures are that disk's.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Buffer, BufferError, FsyncPolicy, Options, Sample};

/// What to run. `Default` is the full run (1 GiB held); tests use tiny values.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Series per scrape (node_exporter + etcd shaped). Default 10,000.
    pub series: usize,
    /// Scrape interval of the generated timestamps. Default 15 s.
    pub scrape_interval_ms: i64,
    /// Data held on disk while peak RSS is measured (MiB). Default 1024.
    pub data_mib: u64,
    /// Segment size for the hold and read phases. Default 16 MiB.
    pub segment_bytes: u64,
    /// Scrapes appended with fsync per batch. Default 100.
    pub synced_scrapes: usize,
    /// Samples read back (at most what is held). Default 50 M.
    pub read_samples: u64,
    /// Segments shed while appends continue, for the latency percentile. Default 50.
    pub shed_segments: usize,
    /// Samples per `read_series` call. Grouping pays off when a batch spans
    /// several scrapes (10,000 samples is one scrape: one sample per series).
    /// Default 100,000. `read` uses 10,000.
    pub read_series_batch: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            series: 10_000,
            scrape_interval_ms: 15_000,
            data_mib: 1024,
            segment_bytes: 16 << 20,
            synced_scrapes: 100,
            read_samples: 50_000_000,
            shed_segments: 50,
            read_series_batch: 100_000,
        }
    }
}

/// The measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub options: BenchOptions,
    /// Samples appended in the hold phase (fsync policy `Never`).
    pub samples_appended: u64,
    pub append_samples_per_s: f64,
    /// Per second of this thread's CPU time: what the code costs, whatever
    /// else the machine is doing (the wall-clock figures are not).
    pub append_samples_per_cpu_s: f64,
    /// Appends of one scrape each with `FsyncPolicy::Batch`.
    pub append_synced_samples_per_s: f64,
    /// Bytes the synced appends wrote (head + segments) per second.
    pub append_synced_mb_per_s: f64,
    /// The same bytes written in the same chunk sizes with `std::fs::File`
    /// and `sync_data` after each chunk, in the same directory.
    pub disk_baseline_mb_per_s: f64,
    /// Bytes on disk (as `du` counts, everything included) per sample held.
    pub bytes_per_sample: f64,
    /// Bytes written per sample held (head log + segments): write amplification.
    pub bytes_written_per_sample: f64,
    pub data_on_disk_mib: f64,
    pub read_samples: u64,
    /// `read` + `ack` (which deletes drained segments) of the held data.
    pub read_samples_per_s: f64,
    /// `read_series` + `ack`: the same, grouped by series.
    pub read_series_samples_per_s: f64,
    pub read_samples_per_cpu_s: f64,
    pub read_series_samples_per_cpu_s: f64,
    pub shed_events: usize,
    /// Time to shed one segment (ledger fsync + unlink) while appends continue.
    pub shed_segment_ms_p50: f64,
    pub shed_segment_ms_p99: f64,
    pub shed_segment_ms_max: f64,
    /// VmHWM of this process after holding `data_on_disk_mib` and reading it.
    pub peak_rss_mib: f64,
    pub elapsed_s: f64,
}

impl BenchReport {
    /// A human table: figure, value, goal.
    pub fn render_table(&self) -> String {
        let o = &self.options;
        let rows: Vec<(&str, String, &str)> = vec![
            (
                "append (fsync never)",
                format!(
                    "{:.0} samples/s ({:.0} per CPU-s)",
                    self.append_samples_per_s, self.append_samples_per_cpu_s
                ),
                "",
            ),
            (
                "append (fsync per batch)",
                format!("{:.0} samples/s", self.append_synced_samples_per_s),
                "",
            ),
            (
                "  written by synced appends",
                format!("{:.1} MB/s", self.append_synced_mb_per_s),
                "",
            ),
            (
                "  raw disk, same bytes + sync",
                format!("{:.1} MB/s", self.disk_baseline_mb_per_s),
                "",
            ),
            (
                "bytes per sample on disk",
                format!("{:.3}", self.bytes_per_sample),
                "<= 2",
            ),
            (
                "bytes written per sample",
                format!("{:.3}", self.bytes_written_per_sample),
                "",
            ),
            (
                "read + ack",
                format!(
                    "{:.0} samples/s ({:.0} per CPU-s)",
                    self.read_samples_per_s, self.read_samples_per_cpu_s
                ),
                ">= 2,000,000",
            ),
            (
                "read_series + ack",
                format!(
                    "{:.0} samples/s ({:.0} per CPU-s; {} a call)",
                    self.read_series_samples_per_s,
                    self.read_series_samples_per_cpu_s,
                    o.read_series_batch
                ),
                ">= 2,000,000",
            ),
            (
                "shed one segment p50 / p99 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms ({} sheds)",
                    self.shed_segment_ms_p50,
                    self.shed_segment_ms_p99,
                    self.shed_segment_ms_max,
                    self.shed_events
                ),
                "",
            ),
            (
                "peak RSS",
                format!(
                    "{:.1} MiB holding {:.0} MiB",
                    self.peak_rss_mib, self.data_on_disk_mib
                ),
                "independent of data held",
            ),
        ];
        let mut out = format!(
            "edgeplane-buffer bench: {} series, {} ms scrape interval, {} samples held, {} MiB segments, {:.1} s\n",
            o.series,
            o.scrape_interval_ms,
            self.samples_appended,
            o.segment_bytes >> 20,
            self.elapsed_s
        );
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        out.push_str(&format!("{:<w0$}  {:<w1$}  goal\n", "figure", "value"));
        for (a, b, c) in rows {
            out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n"));
        }
        out
    }
}

/// Run the benchmark in a scratch directory under `dir`.
pub fn run(dir: &Path, opts: &BenchOptions) -> Result<BenchReport, BufferError> {
    let started = Instant::now();
    let scratch = dir.join(format!("edgeplane-buffer-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(scratch.clone());
    std::fs::create_dir_all(&scratch).map_err(BufferError::io("create directory", &scratch))?;
    let series = opts.series.max(1);

    // 1. Hold: append until data_mib is on disk (no fsync: the CPU cost).
    let data_bytes = opts.data_mib.max(1) << 20;
    let hold_dir = scratch.join("hold");
    let mut b = Buffer::open(
        &hold_dir,
        Options {
            classes: vec!["normal".into()],
            budget_bytes: data_bytes * 2 + 4 * opts.segment_bytes + (64 << 20),
            segment_bytes: opts.segment_bytes,
            fsync: FsyncPolicy::Never,
            max_age: None,
        },
    )?;
    let mut w = Workload::new(series, opts.scrape_interval_ms, 1);
    let mut appended = 0u64;
    let mut append_time = Duration::ZERO;
    let mut append_cpu = 0.0;
    while b.disk_usage() < data_bytes {
        let scrape = w.next_scrape();
        let (t, c) = (Instant::now(), cpu_seconds());
        let out = b.append("normal", scrape)?;
        append_time += t.elapsed();
        append_cpu += cpu_seconds() - c;
        appended += out.accepted as u64;
    }
    b.sync()?;
    let on_disk = b.disk_usage();
    let written = b.bytes_written();

    // 2. Read back (and ack, which deletes drained segments): half as
    // `Sample`s, half grouped by series.
    let to_read = opts.read_samples.min(appended);
    let (t, c) = (Instant::now(), cpu_seconds());
    let mut read = 0u64;
    while read < to_read / 2 {
        let want = (to_read / 2 - read).min(10_000) as usize;
        let Some(batch) = b.read("normal", want)? else {
            break;
        };
        read += batch.samples.len() as u64;
        b.ack(&batch.token)?;
    }
    let (read_s, read_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    let (t, c) = (Instant::now(), cpu_seconds());
    let mut read_grouped = 0u64;
    while read + read_grouped < to_read {
        let want = (to_read - read - read_grouped).min(10_000) as usize;
        let Some(batch) = b.read_series("normal", want)? else {
            break;
        };
        read_grouped += batch.len() as u64;
        b.ack(&batch.token)?;
    }
    let (read_grouped_s, read_grouped_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    let peak_rss_mib = peak_rss_mib();
    drop(b);
    remove_dir(&hold_dir);

    // 3. Synced appends, and the raw disk doing the same writes.
    let synced_dir = scratch.join("synced");
    let mut b = Buffer::open(
        &synced_dir,
        Options {
            classes: vec!["normal".into()],
            budget_bytes: 1 << 40,
            segment_bytes: opts.segment_bytes,
            fsync: FsyncPolicy::Batch,
            max_age: None,
        },
    )?;
    let mut w = Workload::new(series, opts.scrape_interval_ms, 2);
    let scrapes = opts.synced_scrapes.max(1);
    let mut synced_samples = 0u64;
    let mut synced_time = Duration::ZERO;
    for _ in 0..scrapes {
        let scrape = w.next_scrape();
        let t = Instant::now();
        synced_samples += b.append("normal", scrape)?.accepted as u64;
        synced_time += t.elapsed();
    }
    let synced_bytes = b.bytes_written();
    drop(b);
    remove_dir(&synced_dir);
    let baseline_s = raw_disk(&scratch.join("baseline"), synced_bytes, scrapes)?;

    // 4. Shed while appending: noisy data so segments fill quickly.
    let shed_dir = scratch.join("shed");
    let shed_seg = (opts.segment_bytes / 16).max(256 << 10);
    let mut b = Buffer::open(
        &shed_dir,
        Options {
            classes: vec!["normal".into()],
            budget_bytes: 8 * shed_seg + (1 << 20),
            segment_bytes: shed_seg,
            fsync: FsyncPolicy::Batch,
            max_age: None,
        },
    )?;
    let mut w = Workload::new(series.min(2_000), opts.scrape_interval_ms, 3);
    w.noisy = true;
    let mut shed_ms: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shed_ms.len() < opts.shed_segments && Instant::now() < deadline {
        let out = b.append("normal", w.next_scrape())?;
        shed_ms.extend(out.shed.iter().map(|e| e.duration_us as f64 / 1000.0));
    }
    drop(b);
    remove_dir(&shed_dir);
    shed_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if shed_ms.is_empty() {
            0.0
        } else {
            shed_ms[((shed_ms.len() - 1) as f64 * p).round() as usize]
        }
    };

    let mb = |bytes: u64, s: f64| if s > 0.0 { bytes as f64 / 1e6 / s } else { 0.0 };
    let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(BenchReport {
        options: opts.clone(),
        samples_appended: appended,
        append_samples_per_s: per_s(appended, append_time.as_secs_f64()),
        append_samples_per_cpu_s: per_s(appended, append_cpu),
        append_synced_samples_per_s: per_s(synced_samples, synced_time.as_secs_f64()),
        append_synced_mb_per_s: mb(synced_bytes, synced_time.as_secs_f64()),
        disk_baseline_mb_per_s: mb(synced_bytes, baseline_s),
        bytes_per_sample: on_disk as f64 / appended.max(1) as f64,
        bytes_written_per_sample: written as f64 / appended.max(1) as f64,
        data_on_disk_mib: on_disk as f64 / f64::from(1u32 << 20),
        read_samples: read + read_grouped,
        read_samples_per_s: per_s(read, read_s),
        read_series_samples_per_s: per_s(read_grouped, read_grouped_s),
        read_samples_per_cpu_s: per_s(read, read_cpu),
        read_series_samples_per_cpu_s: per_s(read_grouped, read_grouped_cpu),
        shed_events: shed_ms.len(),
        shed_segment_ms_p50: pct(0.50),
        shed_segment_ms_p99: pct(0.99),
        shed_segment_ms_max: shed_ms.last().copied().unwrap_or(0.0),
        peak_rss_mib,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Write `bytes` in `chunks` equal writes, `sync_data` after each. Seconds taken.
fn raw_disk(path: &Path, bytes: u64, chunks: usize) -> Result<f64, BufferError> {
    let chunk = vec![0x5au8; (bytes / chunks as u64).max(1) as usize];
    let t = Instant::now();
    let mut f = File::create(path).map_err(BufferError::io("create", path))?;
    for _ in 0..chunks {
        f.write_all(&chunk)
            .and_then(|()| f.sync_data())
            .map_err(BufferError::io("write", path))?;
    }
    let s = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(s)
}

/// CPU time of the calling thread in seconds (schedstat), 0 where unavailable.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// VmHWM (peak resident set) of this process, in MiB; 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_dir(&self.0);
    }
}

fn remove_dir(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}

// ------------------------------------------------------------------ workload

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Seconds counter with two decimals (node_cpu_seconds_total).
    CounterCentis,
    /// Byte / packet counter with large integer steps.
    CounterBytes,
    /// Counter that rarely moves (errors, drops, restarts).
    CounterRare,
    /// Integer gauge moving in pages (memory, filesystem bytes).
    GaugePages,
    /// Gauge with two decimals wandering (load average, temperature).
    GaugeCentis,
    /// Constant (up, info metrics, has_leader).
    Constant,
    /// One cumulative bucket of a histogram (shares its observations).
    Bucket {
        hist: usize,
        le: usize,
    },
    /// A histogram's _sum (full-precision float) and _count.
    HistSum {
        hist: usize,
    },
    HistCount {
        hist: usize,
    },
    /// Full-precision float gauge (go_gc_duration_seconds quantiles).
    GaugeFloat,
}

/// Metric name, extra labels, how the value evolves.
type SeriesSpec = (String, Vec<(String, String)>, Kind);

/// Scrapes shaped like node_exporter and etcd: counters increasing, gauges
/// wandering, histogram buckets, constants; 500 series per target.
pub struct Workload {
    samples: Vec<Sample>,
    kinds: Vec<Kind>,
    target_of: Vec<usize>,
    hist_obs: Vec<[u64; 12]>,
    rng: u64,
    t: i64,
    interval: i64,
    /// Random values everywhere (worst case for size).
    pub noisy: bool,
}

const BUCKETS: [&str; 12] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
    "1.024", "+Inf",
];

impl Workload {
    pub fn new(series: usize, interval_ms: i64, seed: u64) -> Workload {
        let per_target = 500;
        let mut samples = Vec::with_capacity(series);
        let mut kinds = Vec::with_capacity(series);
        let mut target_of = Vec::with_capacity(series);
        let hist_obs = vec![[0u64; 12]; series.div_ceil(500) * 8];
        let targets = series.div_ceil(per_target);
        'outer: for target in 0..targets {
            let instance = format!("10.0.{}.{}:9100", target / 250, target % 250 + 1);
            let job = if target % 5 == 4 { "etcd" } else { "node" };
            let mut specs: Vec<SeriesSpec> = Vec::new();
            let mut add = |name: String, extra: Vec<(String, String)>, kind: Kind| {
                specs.push((name, extra, kind))
            };
            for cpu in 0..8 {
                for mode in [
                    "user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice",
                ] {
                    add(
                        "node_cpu_seconds_total".into(),
                        vec![
                            ("cpu".into(), cpu.to_string()),
                            ("mode".into(), mode.into()),
                        ],
                        Kind::CounterCentis,
                    );
                }
            }
            for dev in [
                "eth0", "eth1", "lo", "docker0", "veth1a2b", "bond0", "eth2", "eth3",
            ] {
                for m in [
                    "receive_bytes",
                    "transmit_bytes",
                    "receive_packets",
                    "transmit_packets",
                ] {
                    add(
                        format!("node_network_{m}_total"),
                        vec![("device".into(), dev.into())],
                        Kind::CounterBytes,
                    );
                }
                for m in [
                    "receive_errs",
                    "transmit_errs",
                    "receive_drop",
                    "transmit_drop",
                ] {
                    add(
                        format!("node_network_{m}_total"),
                        vec![("device".into(), dev.into())],
                        Kind::CounterRare,
                    );
                }
            }
            for dev in ["vda", "vdb", "sda", "nvme0n1", "dm-0"] {
                for m in [
                    "read_bytes",
                    "written_bytes",
                    "reads_completed",
                    "writes_completed",
                ] {
                    add(
                        format!("node_disk_{m}_total"),
                        vec![("device".into(), dev.into())],
                        Kind::CounterBytes,
                    );
                }
                for m in ["io_time_seconds", "read_time_seconds", "write_time_seconds"] {
                    add(
                        format!("node_disk_{m}_total"),
                        vec![("device".into(), dev.into())],
                        Kind::CounterCentis,
                    );
                }
            }
            for m in [
                "MemTotal",
                "MemFree",
                "MemAvailable",
                "Buffers",
                "Cached",
                "SwapTotal",
                "SwapFree",
                "Active",
                "Inactive",
                "Dirty",
                "Writeback",
                "AnonPages",
                "Mapped",
                "Shmem",
                "Slab",
                "SReclaimable",
                "SUnreclaim",
                "KernelStack",
                "PageTables",
                "Committed_AS",
                "VmallocUsed",
                "HugePages_Total",
                "Hugepagesize",
                "DirectMap4k",
                "DirectMap2M",
            ] {
                add(format!("node_memory_{m}_bytes"), vec![], Kind::GaugePages);
            }
            for (mp, dev) in [
                ("/", "vda1"),
                ("/var", "vdb1"),
                ("/boot", "vda2"),
                ("/run", "tmpfs"),
            ] {
                for m in [
                    "avail_bytes",
                    "free_bytes",
                    "size_bytes",
                    "files",
                    "files_free",
                ] {
                    add(
                        format!("node_filesystem_{m}"),
                        vec![
                            ("device".into(), dev.into()),
                            ("mountpoint".into(), mp.into()),
                        ],
                        if m.starts_with("size") || m == "files" {
                            Kind::Constant
                        } else {
                            Kind::GaugePages
                        },
                    );
                }
            }
            for m in [
                "load1",
                "load5",
                "load15",
                "entropy_available_bits",
                "procs_running",
            ] {
                add(format!("node_{m}"), vec![], Kind::GaugeCentis);
            }
            for chip in 0..6 {
                add(
                    "node_hwmon_temp_celsius".into(),
                    vec![("sensor".into(), format!("temp{chip}"))],
                    Kind::GaugeCentis,
                );
            }
            for (i, h) in [
                "etcd_disk_wal_fsync_duration_seconds",
                "etcd_disk_backend_commit_duration_seconds",
                "etcd_network_peer_round_trip_time_seconds",
                "grpc_server_handling_seconds",
                "etcd_snap_db_fsync_duration_seconds",
                "etcd_disk_backend_defrag_duration_seconds",
                "etcd_server_apply_duration_seconds",
                "etcd_mvcc_db_compaction_pause_duration_milliseconds",
            ]
            .into_iter()
            .enumerate()
            {
                let hist = target * 8 + i;
                for (le, b) in BUCKETS.iter().enumerate() {
                    add(
                        format!("{h}_bucket"),
                        vec![("le".into(), (*b).into())],
                        Kind::Bucket { hist, le },
                    );
                }
                add(format!("{h}_sum"), vec![], Kind::HistSum { hist });
                add(format!("{h}_count"), vec![], Kind::HistCount { hist });
            }
            for q in ["0", "0.25", "0.5", "0.75", "1"] {
                add(
                    "go_gc_duration_seconds".into(),
                    vec![("quantile".into(), q.into())],
                    Kind::GaugeFloat,
                );
            }
            for m in [
                "up",
                "etcd_server_has_leader",
                "etcd_server_is_leader",
                "node_time_zone_offset_seconds",
                "etcd_cluster_version",
                "go_info",
                "node_uname_info",
                "node_os_info",
                "process_max_fds",
                "etcd_server_quota_backend_bytes",
            ] {
                add(m.into(), vec![], Kind::Constant);
            }
            // Fill the target up to `per_target` with more rare counters.
            let mut k = 0;
            while specs.len() < per_target {
                specs.push((
                    "etcd_server_proposals_failed_total".into(),
                    vec![("shard".into(), k.to_string())],
                    Kind::CounterRare,
                ));
                k += 1;
            }
            specs.truncate(per_target);
            for (name, extra, kind) in specs {
                let mut labels = vec![
                    ("__name__".to_string(), name),
                    ("instance".to_string(), instance.clone()),
                    ("job".to_string(), job.to_string()),
                ];
                labels.extend(extra);
                labels.sort();
                samples.push(Sample {
                    labels,
                    timestamp_ms: 0,
                    value: 0.0,
                });
                kinds.push(kind);
                target_of.push(target);
            }
            if samples.len() >= series {
                break 'outer;
            }
        }
        samples.truncate(series);
        kinds.truncate(series);
        target_of.truncate(series);
        let mut w = Workload {
            samples,
            kinds,
            target_of,
            hist_obs,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            t: 1_760_000_000_000,
            interval: interval_ms,
            noisy: false,
        };
        for i in 0..w.samples.len() {
            let start = match w.kinds[i] {
                Kind::CounterBytes => (w.rand() % 1_000_000_000) as f64,
                Kind::CounterCentis => (w.rand() % 100_000_000) as f64 / 100.0,
                Kind::GaugePages => ((w.rand() % 4_000_000) * 4096) as f64,
                Kind::GaugeCentis => (w.rand() % 10_000) as f64 / 100.0,
                Kind::Constant => [1.0, 0.0, 3.6e3, 65536.0][(w.rand() % 4) as usize],
                _ => 0.0,
            };
            w.samples[i].value = start;
        }
        w
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The next scrape of every series: timestamps advance by the interval
    /// plus a few ms of per-target jitter, values evolve by kind.
    pub fn next_scrape(&mut self) -> &[Sample] {
        self.t += self.interval;
        let targets = self.target_of.last().map_or(0, |t| t + 1);
        let jitter: Vec<i64> = (0..targets).map(|_| (self.rand() % 5) as i64).collect();
        // Histogram observations of this scrape.
        let mut new_obs = vec![[0u64; 12]; self.hist_obs.len()];
        let mut obs_sum = vec![0f64; self.hist_obs.len()];
        for h in 0..self.hist_obs.len() {
            let n = self.rand() % 30;
            for _ in 0..n {
                let r = self.rand();
                let bucket = ((r % 1000) as f64).sqrt() as usize / 3; // skewed to low buckets
                let b = bucket.min(11);
                for slot in &mut new_obs[h][b..] {
                    *slot += 1;
                }
                obs_sum[h] += 0.001 * (1u64 << b) as f64 * ((r >> 20) % 1000) as f64 / 1000.0;
            }
        }
        for (h, o) in self.hist_obs.iter_mut().enumerate() {
            for (a, b) in o.iter_mut().zip(new_obs[h]) {
                *a += b;
            }
        }
        for i in 0..self.samples.len() {
            let r = self.rand();
            let v = self.samples[i].value;
            let nv = if self.noisy {
                f64::from_bits(r >> 2)
            } else {
                match self.kinds[i] {
                    Kind::CounterCentis => ((v * 100.0).round() + (r % 1500) as f64) / 100.0,
                    Kind::CounterBytes => v + (r % 5_000_000) as f64,
                    Kind::CounterRare => v + if r.is_multiple_of(100) { 1.0 } else { 0.0 },
                    Kind::GaugePages => {
                        if r.is_multiple_of(4) {
                            v
                        } else {
                            (v + ((r >> 8) % 512) as f64 * 4096.0 - 256.0 * 4096.0).max(0.0)
                        }
                    }
                    Kind::GaugeCentis => {
                        (((v * 100.0).round() + ((r % 41) as f64 - 20.0)).max(0.0)) / 100.0
                    }
                    Kind::Constant => v,
                    Kind::Bucket { hist, le } => self.hist_obs[hist][le] as f64,
                    Kind::HistSum { hist } => v + obs_sum[hist],
                    Kind::HistCount { hist } => self.hist_obs[hist][11] as f64,
                    Kind::GaugeFloat => ((r >> 11) as f64 / (1u64 << 53) as f64) * 0.01,
                }
            };
            let s = &mut self.samples[i];
            s.value = nv;
            s.timestamp_ms = self.t + jitter[self.target_of[i]];
        }
        &self.samples
    }
}
