//! The README's main job, run as a site engineer would: `edgeplane demo --json`.

use edgeplane_tests::edgeplane_bin;

#[test]
fn demo_heals_the_site_and_flushes_the_outage_with_original_timestamps() -> anyhow::Result<()> {
    let out = std::process::Command::new(edgeplane_bin())
        .args(["demo", "--json"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(record["ok"], true);
    assert_eq!(record["acked_writes_lost"], 0);
    // ... of writes that include some sent after the kill.
    assert!(record["cycle"]["writable_s"].as_f64().is_some());
    assert!(record["cycle"]["acked_after_kill"].as_u64().unwrap_or(0) > 0);
    assert_eq!(record["promotions"], 1);
    assert!(record["cycle"]["full_strength_s"].as_f64().is_some());
    assert!(record["outage_samples"].as_u64().unwrap_or(0) > 0);
    assert_eq!(record["outage_samples_missing"], 0);
    assert_eq!(record["outage_timestamps_preserved"], true);
    Ok(())
}
