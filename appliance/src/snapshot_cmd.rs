//! `edgeplane snapshot save|list|verify`.

use std::process::ExitCode;

use crate::cli::SnapshotCommand;

pub fn run(_cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("snapshots are not built yet")
}
