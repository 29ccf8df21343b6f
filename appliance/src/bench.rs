//! `edgeplane bench …`: figures a site engineer can compare between hosts,
//! each printed beside a baseline measured in the same run.

use std::process::ExitCode;

use crate::cli::BenchCommand;

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Failover { cycles, json } => crate::demo::bench_failover(cycles, json),
        BenchCommand::Buffer { .. } => anyhow::bail!("bench buffer: not wired yet"),
        BenchCommand::Backfill { .. } => anyhow::bail!("bench backfill: not wired yet"),
        BenchCommand::Snapshot { .. } => anyhow::bail!("bench snapshot: not built yet"),
    }
}
