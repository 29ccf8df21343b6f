//! The manual pages and shell completions, generated from the command line's
//! own definition so they never drift from `--help`. The package runs
//! `edgeplane man --out DIR` and `edgeplane completions SHELL` at build time
//! and installs what they print; an operator can also source a completion
//! script directly (`source <(edgeplane completions bash)`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::Cli;

/// What the generated top-level page adds to clap's sections: the files, the
/// environment, the exit status and where to read on.
const EXTRA_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
.B EDGEPLANE_CONFIG
The configuration file of every command that takes
.BR \-\-config ,
when the option is not given.
.TP
.B RUST_LOG
Log filter of the command-line tools (e.g.
.BR warn ).
.SH EXIT STATUS
0 on success, 1 when a check finds problems or a command fails,
78 (EX_CONFIG) when the agent's configuration cannot be used: the systemd
unit does not restart it then.
.B diag check
exits 0, 1 or 2 for pass, warn or fail.
.SH FILES
.TP
.I /etc/edgeplane/edgeplane.toml
The host's configuration (a one-host template as shipped).
.TP
.I /var/lib/edgeplane
etcd data, agent state, snapshots and the metrics buffer.
.TP
.I /var/log/edgeplane
Rolling log files.
.SH SEE ALSO
.BR systemctl (1),
.BR etcd (1),
.BR edgeplane\-config\-check (1),
.BR edgeplane\-diag\-status (1),
/usr/share/doc/edgeplane/
"#;

fn man_for(cmd: clap::Command) -> clap_mangen::Man {
    // No date: a rebuild of the same commit writes the same bytes.
    clap_mangen::Man::new(cmd)
        .source(format!("edgeplane {}", env!("CARGO_PKG_VERSION")))
        .manual("Edgeplane")
}

/// Writes `edgeplane.1` and one page per visible subcommand
/// (`edgeplane-diag-status.1`, …) into `out`; returns their file names.
pub fn write_pages(out: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let mut cmd = Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true);
    cmd.build();
    let mut names = Vec::new();
    fn sub_pages(cmd: &clap::Command, out: &Path, names: &mut Vec<String>) -> anyhow::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            sub_pages(sub, out, names)?;
            let man = man_for(sub.clone());
            man.generate_to(out)
                .with_context(|| format!("could not write a page into {}", out.display()))?;
            names.push(man.get_filename());
        }
        Ok(())
    }
    sub_pages(&cmd, out, &mut names)?;
    let man = man_for(cmd);
    let path = out.join(man.get_filename());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("could not write {}", path.display()))?;
    names.push(man.get_filename());
    names.sort();
    Ok(names)
}

/// `edgeplane man --out DIR`.
pub fn man(out: &Path) -> anyhow::Result<ExitCode> {
    for name in write_pages(out)? {
        println!("{}", out.join(name).display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `edgeplane completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "edgeplane", &mut buf);
    std::io::stdout()
        .write_all(&buf)
        .context("could not write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_visible_command_and_completions_every_shell() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let names = write_pages(dir.path())?;
        for want in [
            "edgeplane.1",
            "edgeplane-config-check.1",
            "edgeplane-diag-status.1",
            "edgeplane-bench-backfill.1",
            "edgeplane-completions.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("edgeplane-man")),
            "{names:?}"
        );
        let top = std::fs::read_to_string(dir.path().join("edgeplane.1"))?;
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH SUBCOMMANDS",
            ".SH FILES",
            ".SH ENVIRONMENT",
        ] {
            assert!(top.contains(section), "{section} missing:\n{top}");
        }
        let check = std::fs::read_to_string(dir.path().join("edgeplane-config-check.1"))?;
        assert!(check.contains("EDGEPLANE_CONFIG"), "{check}");
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef edgeplane"),
            (clap_complete::Shell::Fish, "complete -c edgeplane"),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgeplane", &mut buf);
            let script = String::from_utf8(buf)?;
            assert!(script.contains(marker), "{shell}: {script}");
            assert!(script.contains("snapshot"), "{shell}");
        }
        Ok(())
    }
}
