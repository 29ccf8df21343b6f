//! Print the buffer benchmark: `cargo run --release -p edgeplane-buffer --example bench --
//! [--dir DIR] [--data-mib N] [--series N] [--json]`. The appliance exposes the
//! same as `edgeplane bench buffer`.

use std::path::PathBuf;
use std::process::ExitCode;

use edgeplane_buffer::bench::{self, BenchOptions};

fn main() -> ExitCode {
    let mut opts = BenchOptions::default();
    let mut dir = std::env::temp_dir();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            "--dir" => dir = PathBuf::from(value("--dir")),
            "--data-mib" => opts.data_mib = value("--data-mib").parse().unwrap_or(opts.data_mib),
            "--series" => opts.series = value("--series").parse().unwrap_or(opts.series),
            "--json" => json = true,
            other => {
                eprintln!("unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    match bench::run(&dir, &opts) {
        Ok(r) if json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", r.render_table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
