//! `edgeplane diag bundle -o FILE.tar.zst`: everything support needs to
//! understand this host, in one file an engineer can carry off site.
//!
//! What goes in: the resolved config, `diag status`, `diag events` and
//! `diag check` as JSON, the buffer summary, the snapshot catalog, and the
//! tails of the agent's and etcd's logs (bounded). What never goes in: etcd
//! keys or values (nothing here reads them), the bearer token, key material,
//! or credentials in URLs. Every string passes through [`super::redact`],
//! which also searches for the actual contents of the configured token and
//! key files, so a secret that leaked into a log line is removed as well.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use edgeplane_config::Config;

use super::redact;

pub const SCHEMA: &str = "edgeplane.diag.bundle/1";

/// Bytes kept from the end of each log file.
const LOG_TAIL: u64 = 256 << 10;
/// Bytes of logs in the whole bundle.
const LOG_TOTAL: u64 = 2 << 20;
/// Log files taken from `log.dir` (newest first).
const LOG_FILES: usize = 8;

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub files: Vec<String>,
    /// Size of the compressed bundle.
    pub bytes: u64,
}

/// The last `max` bytes of a file, from a line start.
fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if start > 0 {
        match text.find('\n') {
            Some(i) => format!("[… {start} earlier bytes not included]\n{}", &text[i + 1..]),
            None => text,
        }
    } else {
        text
    })
}

/// Log files to include: `log.dir` (newest first) and etcd's log.
fn log_files(cfg: &Config) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&cfg.log.dir) {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file()
                    .then(|| (m.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()))
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, p) in files.into_iter().take(LOG_FILES) {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((format!("logs/{name}"), p));
        }
    }
    let etcd_log = cfg.paths.state_dir.join("etcd.log");
    if etcd_log.is_file() {
        out.insert(0, ("logs/etcd.log".into(), etcd_log));
    }
    out
}

fn json_entry(value: &impl serde::Serialize, secrets: &redact::Secrets) -> Vec<u8> {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    redact::json(&mut v, secrets);
    serde_json::to_vec_pretty(&v).unwrap_or_default()
}

/// Gathers and writes the bundle to `out` (atomically: a temporary file renamed).
pub async fn write(cfg: &Config, config_path: &Path, out: &Path) -> anyhow::Result<Written> {
    let secrets = redact::known_secrets(cfg);
    let (status, events, check) = tokio::join!(
        super::status::gather_and_build(cfg, config_path),
        super::events::gather(cfg, None),
        super::check::run_checks(config_path, false),
    );
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("config/resolved.json".into(), json_entry(cfg, &secrets)),
        (
            "config/check.json".into(),
            json_entry(&edgeplane_config::check(config_path).to_json(), &secrets),
        ),
        ("status.json".into(), json_entry(&status, &secrets)),
        (
            "status.txt".into(),
            redact::text(&super::status::render(&status), &secrets).into_bytes(),
        ),
        ("events.json".into(), json_entry(&events, &secrets)),
        ("check.json".into(), json_entry(&check, &secrets)),
    ];
    let buffer = match super::status::read_buffer(cfg) {
        Ok(s) => serde_json::json!({"dir": cfg.paths.buffer_dir, "summary": s}),
        Err(e) => serde_json::json!({"dir": cfg.paths.buffer_dir, "error": e}),
    };
    entries.push(("buffer.json".into(), json_entry(&buffer, &secrets)));
    let snaps = match super::local::list_snapshots(&cfg.paths.snapshot_dir) {
        Ok(l) => serde_json::json!({"dir": cfg.paths.snapshot_dir, "files": l}),
        Err(e) => serde_json::json!({"dir": cfg.paths.snapshot_dir, "error": e}),
    };
    entries.push(("snapshots.json".into(), json_entry(&snaps, &secrets)));
    let mut log_budget = LOG_TOTAL;
    for (name, path) in log_files(cfg) {
        if log_budget == 0 {
            break;
        }
        let text = match tail(&path, LOG_TAIL.min(log_budget)) {
            Ok(t) => t,
            Err(e) => format!("[could not read {}: {e}]\n", path.display()),
        };
        log_budget = log_budget.saturating_sub(text.len() as u64);
        entries.push((name, redact::text(&text, &secrets).into_bytes()));
    }
    let files: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    let manifest = serde_json::json!({
        "schema": SCHEMA,
        "generated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "host": cfg.host,
        "site": cfg.site,
        "edgeplane_version": crate::version::LONG,
        "config": super::display_config_path(config_path),
        "files": files,
        "redaction": "URL credentials, bearer tokens, secret-named values, private key blocks and the contents of uplink.bearer_token_file, uplink.basic_auth_password_file and uplink.client_key are replaced by <redacted>; etcd keys and values are never read",
    });
    entries.insert(0, ("manifest.json".into(), json_entry(&manifest, &secrets)));

    let tmp = out.with_extension("partial");
    let result = (|| -> anyhow::Result<u64> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("could not create {}", tmp.display()))?;
        let enc = zstd::Encoder::new(file, 3).context("zstd")?;
        let mut tar = tar::Builder::new(enc);
        let mtime = Utc::now().timestamp().max(0) as u64;
        let root = format!(
            "edgeplane-{}-{}",
            cfg.host,
            Utc::now().format("%Y%m%dT%H%M%SZ")
        );
        for (name, data) in &entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_cksum();
            tar.append_data(&mut h, format!("{root}/{name}"), data.as_slice())
                .with_context(|| format!("could not add {name}"))?;
        }
        let enc = tar.into_inner().context("could not finish the archive")?;
        let mut file = enc.finish().context("could not finish the compression")?;
        file.flush()?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    })();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("could not write {}", out.display()))?;
    let mut all = vec!["manifest.json".to_string()];
    all.extend(files);
    Ok(Written { files: all, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_starts_at_a_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("l");
        std::fs::write(&p, "first line\nsecond line\nthird\n")?;
        assert_eq!(tail(&p, 1000)?, "first line\nsecond line\nthird\n");
        let t = tail(&p, 15)?;
        assert!(t.ends_with("third\n") && !t.contains("first"), "{t}");
        Ok(())
    }
}
