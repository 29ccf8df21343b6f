//! `edgeplane`: parse the command line, set up logging, dispatch. Nothing else.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = edgeplane::cli::parse();
    match edgeplane::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole chain: "could not start etcd: No such file …".
            eprintln!("edgeplane: error: {err:#}");
            edgeplane::exit_code_for(&err)
        }
    }
}
