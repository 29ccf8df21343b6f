//! Secret files the config points at. Their content is read when it is
//! used (so a rotated secret takes effect without a restart) and never
//! appears in an error, a log line or a status document: errors name the
//! file and the line, never a value.

use std::path::Path;

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected KEY=VALUE (a shell variable name, then =)")]
    Syntax { path: String, line: usize },
}

/// The `KEY=VALUE` pairs of an environment file, as systemd's
/// `EnvironmentFile=` reads them: blank lines and `#` comments skipped, an
/// optional `export `, one pair of surrounding quotes removed.
pub fn environment_file(path: &Path) -> Result<Vec<(String, String)>, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_environment(&text).map_err(|line| SecretError::Syntax {
        path: path.display().to_string(),
        line,
    })
}

/// [`environment_file`]'s parser; the error is the 1-based line number.
pub fn parse_environment(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((key, value)) = l.split_once('=') else {
            return Err(i + 1);
        };
        let key = key.trim();
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(i + 1);
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_comments_quotes_and_export() {
        let text = "# BMC\nIPMI_PASSWORD='s3cr=t'\n\nexport USER=admin\nEMPTY=\nQ=\"two words\"\n";
        assert_eq!(
            parse_environment(text),
            Ok(vec![
                ("IPMI_PASSWORD".into(), "s3cr=t".into()),
                ("USER".into(), "admin".into()),
                ("EMPTY".into(), String::new()),
                ("Q".into(), "two words".into()),
            ])
        );
    }

    #[test]
    fn a_bad_line_is_named_by_number_never_by_its_value() {
        assert_eq!(parse_environment("A=1\nhunter2-no-equals\n"), Err(2));
        assert_eq!(parse_environment("1BAD=x\n"), Err(1));
        let e = SecretError::Syntax {
            path: "/etc/edgeplane/fence.env".into(),
            line: 2,
        };
        assert!(!e.to_string().contains("hunter2"));
    }
}
