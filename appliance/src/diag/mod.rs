//! `edgeplane diag …`: offline diagnostics.

use std::process::ExitCode;

use crate::cli::DiagCommand;

pub fn run(_cmd: DiagCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("diagnostics are not built yet")
}
