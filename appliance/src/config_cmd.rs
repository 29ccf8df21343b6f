//! `edgeplane config check`: every problem of a config file at once, or the
//! resolved config with where each value came from.

use std::process::ExitCode;

use crate::cli::ConfigCommand;

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let ConfigCommand::Check {
        file,
        config,
        explain,
        json,
    } = cmd;
    let file = file.unwrap_or(config);
    let report = edgeplane_config::check(&file);
    if explain && report.ok() {
        let explained = edgeplane_config::explain(&file)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&explained.to_json())?);
        } else {
            print!("{}", explained.render_human());
            if !report.problems.is_empty() {
                eprint!("{}", report.render_human());
            }
        }
    } else if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render_human());
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
