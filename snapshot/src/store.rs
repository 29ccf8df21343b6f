//! A snapshot directory: listing and retention.
//!
//! Retention is per origin host, so a host's own snapshots are never
//! crowded out by its peers' copies (or the reverse): for each origin keep
//! the newest `retain_count`, and drop any older than `retain_age` — except
//! that the newest snapshot of each origin is never dropped for age. Without
//! that exception a site whose etcd is down for longer than `retain_age`
//! (quorum loss, exactly when backups matter) would delete its last backups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{SnapshotMeta, read_meta, valid_name};

/// Temporary files older than this are leftovers of a crash and are removed by [`prune`].
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The names of every snapshot file in `dir`, whether or not its footer
/// reads ([`crate::list`] skips a file whose footer is damaged; the scrub
/// must not). A missing directory has none.
pub fn file_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The snapshots in `dir`, oldest first. Files whose footer cannot be read
/// are skipped with a warning (they are never taken as snapshots); a
/// missing directory is an empty list.
pub fn list(dir: &Path) -> Result<Vec<SnapshotMeta>> {
    let mut out = Vec::new();
    for name in file_names(dir)? {
        match read_meta(&dir.join(name)) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(error = %e, "Skipping a snapshot file that cannot be read."),
        }
    }
    out.sort_by(|a, b| (a.info.created_at, &a.name).cmp(&(b.info.created_at, &b.name)));
    Ok(out)
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    pub kept: usize,
    pub stale_temp_files_removed: usize,
}

/// Applies retention to `dir` (see the module docs). `retain_count` below 1
/// counts as 1.
pub fn prune(dir: &Path, retain_count: usize, retain_age: Duration) -> Result<PruneReport> {
    let now = Utc::now();
    let mut by_origin: BTreeMap<String, Vec<SnapshotMeta>> = BTreeMap::new();
    for m in list(dir)? {
        by_origin.entry(m.info.origin.clone()).or_default().push(m);
    }
    let mut report = PruneReport::default();
    for (_, mut snaps) in by_origin {
        // Newest first.
        snaps.reverse();
        for (i, m) in snaps.into_iter().enumerate() {
            let age = (now - m.info.created_at).to_std().unwrap_or_default();
            let drop = i >= retain_count.max(1) || (i > 0 && age > retain_age);
            if drop {
                std::fs::remove_file(&m.path)
                    .map_err(|e| Error::io("cannot remove", &m.path, e))?;
                tracing::info!(path = %m.path.display(), "Removed a snapshot past retention.");
                report.removed.push(m.path);
            } else {
                report.kept += 1;
            }
        }
    }
    // Leftover temporary files (a crash mid-save or mid-receive).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_tmp = name.starts_with(".save-")
                || name.starts_with(".recv-")
                || name.starts_with(".verify-");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if is_tmp && old && std::fs::remove_file(entry.path()).is_ok() {
                report.stale_temp_files_removed += 1;
            }
        }
    }
    if !report.removed.is_empty() {
        crate::format::sync_dir(dir)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::format::{FORMAT_VERSION, SnapshotInfo, new_name, write_footer};

    /// A file with a real footer and 10 bytes of (fake) data: enough for list and prune.
    fn fake(dir: &Path, origin: &str, age_h: i64) -> PathBuf {
        let created_at = Utc::now() - chrono::Duration::hours(age_h);
        let info = SnapshotInfo {
            format: FORMAT_VERSION,
            origin: origin.into(),
            created_at,
            member_id: "1".into(),
            cluster_id: "2".into(),
            endpoint: "http://x".into(),
            revision: 100 - age_h,
            raft_index: 1,
            raft_term: 1,
            etcd_version: "3.4.23".into(),
            db_bytes: 10,
            etcd_sha256: String::new(),
            compressed_bytes: 10,
            sha256: String::new(),
            zstd_level: 3,
        };
        let path = dir.join(new_name(origin, created_at, info.revision));
        let mut f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 10]).unwrap();
        write_footer(&mut f, &info).unwrap();
        path
    }

    #[test]
    fn list_sorts_and_prune_keeps_per_origin() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for h in [1, 2, 3, 4, 5] {
            fake(d, "h1", h);
        }
        // A peer's snapshots, all old: only its newest survives the age limit.
        for h in [100, 200, 300] {
            fake(d, "h2", h);
        }
        std::fs::write(d.join("junk.etcd.zst"), b"not a snapshot").unwrap();
        std::fs::write(d.join(".save-x.tmp"), b"partial").unwrap();
        let l = list(d).unwrap();
        assert_eq!(l.len(), 8);
        assert!(
            l.windows(2)
                .all(|w| w[0].info.created_at <= w[1].info.created_at)
        );
        assert_eq!(l[0].info.origin, "h2");

        let r = prune(d, 3, Duration::from_secs(48 * 3600)).unwrap();
        assert_eq!(r.removed.len(), 4, "{r:?}");
        let left = list(d).unwrap();
        let h1: Vec<_> = left.iter().filter(|m| m.info.origin == "h1").collect();
        let h2: Vec<_> = left.iter().filter(|m| m.info.origin == "h2").collect();
        assert_eq!(h1.len(), 3);
        assert_eq!(h1.iter().map(|m| m.info.revision).min(), Some(97));
        assert_eq!(h2.len(), 1);
        assert_eq!(h2[0].info.revision, 0); // 100 - 100 h: the newest of h2
        // Unknown files are left alone; a fresh temp file too.
        assert!(d.join("junk.etcd.zst").exists());
        assert!(d.join(".save-x.tmp").exists());
    }
}
