//! The command line as scripts meet it: every `--json` document names its
//! schema and version (`edgeplane.<command>/<n>`), as `diag` does, so a script
//! can refuse a format it does not know. Runs the commands that need no site
//! (a few seconds); `diag`'s documents are covered by the diag tests, and the
//! bench and demo records by their own runs.

use std::process::Command;

use edgeplane_tests::edgeplane_bin;
use serde_json::Value;

fn json_of(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Value> {
    let out = Command::new(edgeplane_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).map_err(|e| {
        anyhow::anyhow!(
            "`edgeplane {}`: not JSON ({e}):\n{stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_schema(doc: &Value, want: &str, what: &str) {
    let schema = doc.get("schema").and_then(Value::as_str);
    assert_eq!(schema, Some(want), "{what}: {doc}");
    let (name, version) = want.rsplit_once('/').unwrap_or((want, ""));
    assert!(name.starts_with("edgeplane."), "{what}: {want}");
    assert!(version.parse::<u32>().is_ok(), "{what}: {want}");
}

#[test]
fn every_json_output_names_its_schema() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples/edge-4-hosts.toml");
    let text = std::fs::read_to_string(&example)?.replacen(
        "[[nodes]]",
        &format!("[paths]\nroot = \"{}\"\n\n[[nodes]]", dir.path().display()),
        1,
    );
    let config = dir.path().join("edgeplane.toml");
    std::fs::write(&config, text)?;
    let config = config.to_string_lossy().into_owned();
    let garbage = dir.path().join("not-a-snapshot.db");
    std::fs::write(&garbage, b"not a snapshot")?;
    let garbage = garbage.to_string_lossy().into_owned();

    for (args, env, want) in [
        (
            vec!["config", "check", "--json", &config],
            vec![],
            "edgeplane.config.check/1",
        ),
        // -c and EDGEPLANE_CONFIG, like every other command.
        (
            vec!["config", "check", "--json", "-c", &config],
            vec![],
            "edgeplane.config.check/1",
        ),
        (
            vec!["config", "check", "--json"],
            vec![("EDGEPLANE_CONFIG", config.as_str())],
            "edgeplane.config.check/1",
        ),
        (
            vec![
                "config",
                "check",
                "--explain",
                "--json",
                "--config",
                &config,
            ],
            vec![],
            "edgeplane.config.explain/1",
        ),
        (
            vec!["snapshot", "list", "--json", "-c", &config],
            vec![],
            "edgeplane.snapshot.list/1",
        ),
        (
            vec!["snapshot", "verify", "--json", &garbage],
            vec![],
            "edgeplane.snapshot.verify/1",
        ),
    ] {
        let what = args.join(" ");
        let doc = json_of(&args, &env)?;
        assert_schema(&doc, want, &what);
        if want == "edgeplane.config.check/1" {
            // The file was found through every spelling, not the default path.
            assert_eq!(doc["file"].as_str(), Some(config.as_str()), "{what}: {doc}");
        }
    }
    Ok(())
}
