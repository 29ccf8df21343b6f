//! `edgeplane bench …`: figures a site engineer can compare between hosts,
//! each printed beside a baseline measured in the same run.

use std::process::ExitCode;

use crate::cli::BenchCommand;

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Failover { cycles, json } => crate::demo::bench_failover(cycles, json),
        BenchCommand::Recovery { json } => crate::demo::bench_recovery(json),
        BenchCommand::Buffer {
            dir,
            data_mib,
            json,
        } => buffer(dir, data_mib, json),
        BenchCommand::Backfill { days, series, json } => backfill(days, series, json),
        BenchCommand::Snapshot { db_mib, json } => crate::snapshot_cmd::bench(db_mib, json),
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
    let report = edgeplane_buffer::bench::run(tmp.path(), &opts).context("buffer bench failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_table());
    }
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
    let report = crate::runtime()?
        .block_on(edgeplane_metrics::bench::backfill(opts))
        .map_err(|e| anyhow::anyhow!("backfill bench failed: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(ExitCode::SUCCESS)
}
