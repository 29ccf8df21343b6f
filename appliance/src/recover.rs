//! `edgeplane recover`: rebuild after quorum loss.

use std::process::ExitCode;

use crate::cli::RecoverArgs;

pub fn run(_args: &RecoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("recovery is not built yet")
}
