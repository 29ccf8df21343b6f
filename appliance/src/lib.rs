//! Edgeplane: one binary on every host of a small edge site.
//!
//! It runs the host's etcd member and keeps a hot standby (an etcd learner) in
//! sync, promoting it within seconds when a voter's host dies; keeps snapshots
//! on every host; buffers metrics on disk under a byte budget and flushes them
//! to the region with their original timestamps when the link returns.
//!
//! `main.rs` only parses and calls [`run`]; every subcommand lives in a module
//! named after what it does.

pub mod agent;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod config_cmd;
pub mod crl;
pub mod demo;
pub mod diag;
pub mod logging;
pub mod manual;
pub mod process;
pub mod recover;
pub mod secrets;
pub mod sim;
pub mod snapshot_bench;
pub mod snapshot_cmd;
pub mod term;
pub mod tls;
pub mod version;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit status for a configuration error (sysexits.h EX_CONFIG). The systemd
/// unit lists it in `RestartPreventExitStatus=` so a typo never becomes a
/// restart loop.
pub const EXIT_CONFIG: u8 = 78;

/// A configuration that cannot be used; mapped to exit status 78.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadConfig(pub String);

/// Runs one subcommand to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // reqwest and etcd-client use rustls with the ring provider; install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Agent(args) => agent::main(&args),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Demo(args) => demo::main(&args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Snapshot(cmd) => snapshot_cmd::run(cmd),
        Command::Diag(cmd) => diag::run(cmd),
        Command::Recover(args) => recover::run(&args),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man { out } => manual::man(&out),
        Command::Certs(cli::CertsCommand::Init {
            site,
            config,
            force,
        }) => certs::run_init(&site, &config, force).map(|()| ExitCode::SUCCESS),
        Command::Certs(cli::CertsCommand::Revoke { host, site, config }) => {
            certs::run_revoke(&site, &host, &config).map(|()| ExitCode::SUCCESS)
        }
        Command::Certs(cli::CertsCommand::InstallCrl {
            file,
            config,
            remove_member,
        }) => certs::run_install_crl(&file, &config, &remove_member).map(|()| ExitCode::SUCCESS),
    }
}

/// The runtime every async subcommand runs on: two workers (the hosts
/// are small), every driver enabled.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// Maps an error to the process exit status: 78 for configuration errors, 1 otherwise.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| e.is::<BadConfig>()) {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}
