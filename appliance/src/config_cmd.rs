//! `edgeplane config check`: every problem of a config file at once, or the
//! resolved config with where each value came from; `config get`: one
//! resolved value, for scripts.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ConfigCommand;

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let (file, config, explain, json) = match cmd {
        ConfigCommand::Check {
            file,
            config,
            explain,
            json,
        } => (file, config, explain, json),
        ConfigCommand::Get { key, file, config } => {
            return Ok(get(&key, &file.unwrap_or(config)));
        }
    };
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

/// `config get KEY`: the value as `--explain` prints it, on stdout alone.
fn get(key: &str, file: &Path) -> ExitCode {
    let explained = match edgeplane_config::explain(file) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "{}: {e}\nfix: run `edgeplane config check {}`",
                file.display(),
                file.display()
            );
            return ExitCode::from(2);
        }
    };
    match lookup(&explained, key) {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("{key} is not set in {}", file.display());
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(2)
        }
    }
}

/// A key's resolved value (`None` when unset), `node.FIELD` meaning this
/// host's own node.
fn lookup(e: &edgeplane_config::Explained, key: &str) -> Result<Option<String>, String> {
    let key = match key.strip_prefix("node.") {
        Some(field) => {
            let i = e
                .config
                .nodes
                .iter()
                .position(|n| n.name == e.config.host)
                .ok_or_else(|| format!("host {} is not among the [[nodes]]", e.config.host))?;
            format!("nodes[{i}].{field}")
        }
        None => key.to_string(),
    };
    let entry = e.entries.iter().find(|x| x.key == key).ok_or_else(|| {
        format!("no key {key} (`edgeplane config check --explain` lists every key)")
    })?;
    Ok(entry.is_set().then(|| entry.value.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_reads_a_key_this_node_and_says_unset_or_unknown() {
        let text = r#"
host = "b"
site = "t"
[uplink]
enabled = false
[[nodes]]
name = "a"
peer_url = "https://10.0.0.1:2380"
client_url = "https://10.0.0.1:2379"
agent_url = "https://10.0.0.1:7070"
[[nodes]]
name = "b"
peer_url = "https://10.0.0.2:2380"
client_url = "https://10.0.0.2:2379"
agent_url = "https://10.0.0.2:7070"
"#;
        let e = edgeplane_config::explain_str(text, Path::new("t.toml")).expect("valid");
        assert_eq!(
            lookup(&e, "node.peer_url"),
            Ok(Some("https://10.0.0.2:2380".into()))
        );
        assert_eq!(lookup(&e, "nodes[0].name"), Ok(Some("a".into())));
        assert_eq!(lookup(&e, "uplink.bearer_token_file"), Ok(None));
        assert!(lookup(&e, "no.such_key").is_err());
    }
}
