//! `edgeplane bench …`: figures a site engineer can compare between hosts,
//! each printed beside a baseline measured in the same run.
//!
//! Every `--json` record (and the chaos campaign's report) starts with the
//! same [`RunInfo`]: the commit and build profile, the machine (cores,
//! kernel, load average sampled through the run), the UTC date and the
//! command line; then the workload and the figures. `docs/figures/*.json`
//! are such records, and the READMEs quote them.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::cli::BenchCommand;

/// Which build, which machine, when: the fields every figure record starts with.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `edgeplane.bench.<bench>/1`: the record's name and version, as every `--json` output.
    pub schema: String,
    /// `failover`, `recovery`, `buffer`, `backfill`, `snapshot`, `campaign`.
    pub bench: String,
    /// The command line as run.
    pub command: String,
    pub version: &'static str,
    /// The git commit the code was built from (`-dirty`: with local changes).
    pub commit: &'static str,
    /// `debug` or `release`.
    pub build_profile: &'static str,
    /// Start and end of the run, UTC, RFC 3339.
    pub date: String,
    pub date_end: String,
    pub machine: Machine,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    pub kernel: Option<String>,
    pub cpu_model: Option<String>,
    pub memory_mib: Option<u64>,
    /// The etcd the benches start (`EDGEPLANE_ETCD`, else /usr/bin/etcd).
    pub etcd: Option<String>,
    /// /usr/bin/prometheus (the backfill bench's and the campaign's region).
    pub prometheus: Option<String>,
    pub load_average: LoadAverage,
}

/// `/proc/loadavg` through the run: other work on the machine slows every
/// wall-clock figure, so the load goes with them.
#[derive(Debug, Clone, Serialize)]
pub struct LoadAverage {
    /// 1, 5 and 15 minute load averages at the start and at the end.
    pub start: Option<[f64; 3]>,
    pub end: Option<[f64; 3]>,
    /// The 1-minute load average sampled every `sample_interval_s` from start
    /// to end (both included).
    pub min_1m: Option<f64>,
    pub mean_1m: Option<f64>,
    pub max_1m: Option<f64>,
    pub samples: usize,
    pub sample_interval_s: f64,
}

fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn first_line_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `2.42.0+ds` from `prometheus --version`.
fn prometheus_version() -> Option<String> {
    let out = std::process::Command::new("/usr/bin/prometheus")
        .arg("--version")
        .output()
        .ok()?;
    // Older versions print it on stderr.
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("prometheus, version "))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
}

fn utc_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// A run being measured: started with [`Run::start`] before the workload,
/// finished with [`Run::finish`] after it. A thread samples the load
/// average meanwhile.
pub struct Run {
    bench: String,
    date: String,
    start: Option<[f64; 3]>,
    stop: mpsc::Sender<()>,
    sampler: Option<std::thread::JoinHandle<Vec<f64>>>,
}

impl Run {
    pub fn start(bench: &str) -> Run {
        let start = loadavg();
        let (stop, stopped) = mpsc::channel::<()>();
        let sampler = std::thread::Builder::new()
            .name("loadavg".into())
            .spawn(move || {
                let mut v: Vec<f64> = loadavg().map(|l| l[0]).into_iter().collect();
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(LOAD_SAMPLE_INTERVAL)
                {
                    v.extend(loadavg().map(|l| l[0]));
                }
                v
            })
            .ok();
        Run {
            bench: bench.to_string(),
            date: utc_now(),
            start,
            stop,
            sampler,
        }
    }

    pub fn finish(self) -> RunInfo {
        let _ = self.stop.send(());
        let end = loadavg();
        let mut samples = self.sampler.and_then(|t| t.join().ok()).unwrap_or_default();
        samples.extend(end.map(|l| l[0]));
        let n = samples.len();
        let command = std::iter::once("edgeplane".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        RunInfo {
            schema: format!("edgeplane.bench.{}/1", self.bench),
            bench: self.bench,
            command,
            version: crate::version::LONG,
            commit: crate::version::COMMIT,
            build_profile: crate::version::BUILD_PROFILE,
            date: self.date,
            date_end: utc_now(),
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .ok()
                    .map(|s| s.trim().to_string()),
                cpu_model: first_line_value("/proc/cpuinfo", "model name"),
                memory_mib: first_line_value("/proc/meminfo", "MemTotal")
                    .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                    .map(|kib| kib >> 10),
                etcd: crate::version::etcd_version(&crate::sim::bare::etcd_bin()),
                prometheus: prometheus_version(),
                load_average: LoadAverage {
                    start: self.start,
                    end,
                    min_1m: samples.iter().copied().reduce(f64::min),
                    mean_1m: (n > 0).then(|| samples.iter().sum::<f64>() / n as f64),
                    max_1m: samples.iter().copied().reduce(f64::max),
                    samples: n,
                    sample_interval_s: LOAD_SAMPLE_INTERVAL.as_secs_f64(),
                },
            },
        }
    }
}

/// A figure record: the run's [`RunInfo`], then the bench's own report
/// (workload and figures), in one flat JSON object.
#[derive(Debug, Serialize)]
pub struct Record<T: Serialize> {
    #[serde(flatten)]
    pub run: RunInfo,
    #[serde(flatten)]
    pub figures: T,
}

impl<T: Serialize> Record<T> {
    /// Prints the record as JSON, or `table` and one line saying where it ran.
    pub fn print(&self, json: bool, table: &str) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            print!("{table}");
            println!("{}", self.run.one_line());
        }
        Ok(())
    }
}

impl RunInfo {
    /// `commit …, release build, 2 cores, load average 3.1–5.2, 2026-…Z`.
    pub fn one_line(&self) -> String {
        let m = &self.machine;
        let load = match (m.load_average.min_1m, m.load_average.max_1m) {
            (Some(lo), Some(hi)) => format!("load average {lo:.1}–{hi:.1}"),
            _ => "load average unknown".to_string(),
        };
        format!(
            "commit {}, {} build, {} cores, {load}, {}",
            self.commit, self.build_profile, m.cores, self.date
        )
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Failover {
            cycles,
            writers,
            json,
        } => crate::demo::bench_failover(cycles, usize::from(writers), json),
        BenchCommand::Recovery { json } => crate::demo::bench_recovery(json),
        BenchCommand::SelfFence { json } => crate::demo::bench_self_fence(json),
        BenchCommand::Buffer {
            dir,
            data_mib,
            json,
        } => buffer(dir, data_mib, json),
        BenchCommand::Backfill {
            series,
            vmagent: true,
            outage_s,
            json,
            ..
        } => backfill_vs_vmagent(series, outage_s, json),
        BenchCommand::Backfill {
            days, series, json, ..
        } => backfill(days, series, json),
        BenchCommand::Snapshot { db_mib, json } => crate::snapshot_bench::bench(db_mib, json),
    }
}

/// `edgeplane bench buffer`: qualifies a host's disk for the metrics buffer
/// (like `etcdctl check perf` does for etcd).
fn buffer(dir: Option<std::path::PathBuf>, data_mib: u64, json: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let base = dir.unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("edgeplane-bench-buffer-")
        .tempdir_in(&base)
        .with_context(|| format!("could not create a scratch directory in {}", base.display()))?;
    let opts = edgeplane_buffer::bench::BenchOptions {
        data_mib,
        ..Default::default()
    };
    if !json {
        eprintln!(
            "Buffer bench in {} ({} series every 15 s, {data_mib} MiB held): this takes a minute or two.",
            tmp.path().display(),
            opts.series
        );
    }
    let run = Run::start("buffer");
    let report = edgeplane_buffer::bench::run(tmp.path(), &opts).context("buffer bench failed")?;
    let record = Record {
        run: run.finish(),
        figures: report,
    };
    record.print(json, &record.figures.render_table())?;
    Ok(ExitCode::SUCCESS)
}

/// `edgeplane bench backfill`: days of buffered samples flushed into a local
/// Prometheus, beside a minimal sender of the same data.
fn backfill(days: u64, series: usize, json: bool) -> anyhow::Result<ExitCode> {
    let opts = edgeplane_metrics::bench::BackfillOptions {
        days: days as f64,
        series,
        ..Default::default()
    };
    if !json {
        eprintln!(
            "Backfill bench: {days} day(s) × {series} series at 15 s into a local Prometheus; this takes minutes."
        );
    }
    let run = Run::start("backfill");
    let report = crate::runtime()?
        .block_on(edgeplane_metrics::bench::backfill(opts))
        .map_err(|e| anyhow::anyhow!("backfill bench failed: {e}"))?;
    let record = Record {
        run: run.finish(),
        figures: report,
    };
    record.print(json, &record.figures.render_table())?;
    Ok(ExitCode::SUCCESS)
}

/// `edgeplane bench backfill --vmagent`: Edgeplane and vmagent through the
/// same outage into the same stock Prometheus.
fn backfill_vs_vmagent(series: usize, outage_s: u64, json: bool) -> anyhow::Result<ExitCode> {
    let opts = edgeplane_metrics::bench_vmagent::VmagentOptions {
        series,
        outage: std::time::Duration::from_secs(outage_s),
        ..Default::default()
    };
    if !opts.vmagent.exists() {
        anyhow::bail!(
            "{} not found: install Debian's victoria-metrics (scripts/setup does)",
            opts.vmagent.display()
        );
    }
    if !json {
        eprintln!(
            "Backfill bench beside vmagent: {series} series at 1 s, a {outage_s} s outage, into a stock Prometheus; this takes minutes."
        );
    }
    let run = Run::start("backfill-vmagent");
    let report = crate::runtime()?
        .block_on(edgeplane_metrics::bench_vmagent::vs_vmagent(opts))
        .map_err(|e| anyhow::anyhow!("backfill bench beside vmagent failed: {e}"))?;
    let record = Record {
        run: run.finish(),
        figures: report,
    };
    record.print(json, &record.figures.render_table())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_says_which_build_machine_and_date() {
        #[derive(Serialize)]
        struct Figures {
            cycles: usize,
            writable_p50_s: f64,
        }
        let run = Run::start("test");
        let record = Record {
            run: run.finish(),
            figures: Figures {
                cycles: 3,
                writable_p50_s: 1.5,
            },
        };
        let v = serde_json::to_value(&record).expect("serialises");
        // One flat object: provenance, then the bench's own fields.
        assert_eq!(v["bench"], "test");
        assert_eq!(v["cycles"], 3);
        assert_eq!(v["writable_p50_s"], 1.5);
        assert!(!v["commit"].as_str().unwrap_or("").is_empty());
        assert!(v["machine"]["cores"].as_u64().unwrap_or(0) > 0);
        let date = v["date"].as_str().unwrap_or("");
        assert!(chrono::DateTime::parse_from_rfc3339(date).is_ok(), "{date}");
        assert!(date.ends_with('Z'), "UTC: {date}");
        // Sampled at the start and at the end at least (Linux has /proc/loadavg).
        assert!(
            v["machine"]["load_average"]["samples"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        );
        assert!(v["machine"]["load_average"]["max_1m"].as_f64().is_some());
        assert!(record.run.one_line().contains(crate::version::COMMIT));
    }
}
