//! Runs the backfill benchmark outside the agent binary:
//! `cargo run --release -p edgeplane-metrics --example backfill -- [--days D]
//! [--series S] [--rate R] [--batch B] [--no-baseline] [--json]`.

use edgeplane_metrics::bench::{BackfillOptions, backfill};

fn main() -> Result<(), String> {
    let mut o = BackfillOptions::default();
    let mut json = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |i: usize| -> Result<f64, String> {
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{} needs a number", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--days" => o.days = num(i)?,
            "--series" => o.series = num(i)? as usize,
            "--rate" => o.backfill_rate = num(i)? as u64,
            "--batch" => o.batch_samples = num(i)? as usize,
            "--no-baseline" => {
                o.skip_baseline = true;
                i += 1;
                continue;
            }
            "--json" => {
                json = true;
                i += 1;
                continue;
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let rep = rt.block_on(backfill(o))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", rep.render_table());
    }
    Ok(())
}
