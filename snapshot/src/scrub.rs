//! Finding snapshot files that went bad on disk after they were written:
//! a flipped bit, a torn sector, a stray write. Every file is verified when
//! it is written or received, but a backup is only worth something if it
//! is still intact the day it is needed, which may be months later on a
//! disk nobody looks at. The agent therefore re-verifies each file on a
//! schedule ([`scrub_file`], one at a time), the way a RAID or ZFS scrub
//! reads back what it stored.
//!
//! A file that fails is moved into [`QUARANTINE_DIR`] under the snapshot
//! directory: out of every list, so that no recovery hint names it and no
//! peer fetches it, but kept (the newest [`QUARANTINE_KEEP`]) as evidence.
//! The agent then fetches an intact copy of the same name from a peer
//! (verified on receipt, like every copy). [`ScrubReport`] counts what was
//! found, for `/status`, `/metrics` and `diag`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::{EXTENSION, sync_dir, valid_name};
use crate::verify::check;

/// The directory, under a snapshot directory, that corrupt files are moved to.
pub const QUARANTINE_DIR: &str = "corrupt";

/// Corrupt files kept as evidence (the newest); older ones are removed, so
/// that a disk that keeps corrupting files cannot fill up with them.
pub const QUARANTINE_KEEP: usize = 2;

/// What [`scrub_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scrubbed {
    /// Every check passed.
    Intact,
    /// The file failed a check (`why`) and was moved to `moved_to`.
    Corrupt { why: String, moved_to: PathBuf },
    /// The file was no longer there (pruned meanwhile).
    Gone,
}

/// Verifies `dir/name` in full (footer, checksums, zstd, bbolt); a corrupt
/// file is quarantined. An error means the check itself could not run (a
/// read error other than corruption), and the file is left where it is.
pub fn scrub_file(dir: &Path, name: &str) -> Result<Scrubbed> {
    if !valid_name(name) {
        return Err(Error::BadName {
            name: name.to_string(),
        });
    }
    let path = dir.join(name);
    if !path.exists() {
        return Ok(Scrubbed::Gone);
    }
    match check(&path, None, Path::new(""), &mut |_| {}) {
        Ok(_) => Ok(Scrubbed::Intact),
        Err(Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(Scrubbed::Gone)
        }
        Err(e) if e.is_corruption() => {
            let why = match &e {
                Error::Corrupt { what, .. } => what.clone(),
                other => other.to_string(),
            };
            let moved_to = quarantine(dir, name)?;
            tracing::error!(
                path = %path.display(),
                moved_to = %moved_to.display(),
                "A snapshot file failed its scheduled verification and was set aside: {why}"
            );
            Ok(Scrubbed::Corrupt { why, moved_to })
        }
        Err(e) => Err(e),
    }
}

/// Moves `dir/name` into `dir/corrupt/` (fsyncing both directories), then
/// removes all but the newest [`QUARANTINE_KEEP`] files there. Returns the
/// file's new path.
pub fn quarantine(dir: &Path, name: &str) -> Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir).map_err(|e| Error::io("cannot create", &qdir, e))?;
    let dest = qdir.join(name);
    let src = dir.join(name);
    std::fs::rename(&src, &dest).map_err(|e| Error::io("cannot move aside", &src, e))?;
    sync_dir(&qdir)?;
    sync_dir(dir)?;
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&qdir)
        .map_err(|e| Error::io("cannot read", &qdir, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(EXTENSION))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    // Newest first; the file just moved keeps its own mtime, so it is
    // kept explicitly.
    kept.sort_by_key(|k| std::cmp::Reverse(k.0));
    let mut left = QUARANTINE_KEEP.saturating_sub(1);
    for (_, p) in kept {
        if p == dest {
            continue;
        }
        if left > 0 {
            left -= 1;
        } else if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(path = %p.display(), "Could not remove an old corrupt snapshot file: {e}");
        }
    }
    Ok(dest)
}

/// What the scrub found since the agent started, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ScrubReport {
    verified: AtomicU64,
    corrupt: AtomicU64,
    repaired: AtomicU64,
    last: Mutex<Option<String>>,
    unrepaired: Mutex<BTreeSet<String>>,
}

/// A snapshot of [`ScrubReport`], as `/status.snapshot_scrub` shows it (and
/// as `diag` reads it back from there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrubDoc {
    /// Files verified intact by the scrub since the agent started.
    pub verified: u64,
    /// Files found corrupt and set aside.
    pub corrupt: u64,
    /// Of those, replaced by an intact copy from a peer.
    pub repaired: u64,
    /// The last corrupt file, in a sentence.
    pub last_corrupt: Option<String>,
    /// Corrupt files no reachable peer had an intact copy of (yet).
    #[serde(default)]
    pub unrepaired: Vec<String>,
}

impl ScrubReport {
    pub fn intact(&self) {
        self.verified.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a corrupt file (already logged by [`scrub_file`]).
    pub fn corrupt(&self, name: &str, why: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last.lock() {
            *l = Some(format!(
                "{} {name}: {why}",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if let Ok(mut u) = self.unrepaired.lock() {
            u.insert(name.to_string());
        }
    }

    /// Records that `name` was replaced by an intact copy.
    pub fn repaired(&self, name: &str) {
        if let Ok(mut u) = self.unrepaired.lock()
            && u.remove(name)
        {
            self.repaired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets an unrepaired name no peer will ever have again (pruned
    /// everywhere): it is no longer a backup anyone counts on.
    pub fn forget(&self, name: &str) {
        if let Ok(mut u) = self.unrepaired.lock() {
            u.remove(name);
        }
    }

    /// Corrupt files not (yet) replaced.
    pub fn unrepaired(&self) -> Vec<String> {
        self.unrepaired
            .lock()
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn corrupt_total(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    pub fn doc(&self) -> ScrubDoc {
        ScrubDoc {
            verified: self.verified.load(Ordering::Relaxed),
            corrupt: self.corrupt_total(),
            repaired: self.repaired.load(Ordering::Relaxed),
            last_corrupt: self.last.lock().ok().and_then(|l| l.clone()),
            unrepaired: self.unrepaired(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::file_names;

    #[test]
    fn a_file_that_does_not_verify_is_set_aside_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut moved = Vec::new();
        for i in 0..4 {
            let name = format!("h1-{i}.etcd.zst");
            std::fs::write(d.join(&name), b"not a snapshot at all").unwrap();
            // Distinct mtimes, oldest first.
            let f = std::fs::File::options()
                .write(true)
                .open(d.join(&name))
                .unwrap();
            f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i))
                .unwrap();
            match scrub_file(d, &name).unwrap() {
                Scrubbed::Corrupt { moved_to, .. } => moved.push(moved_to),
                other => panic!("{other:?}"),
            }
            assert!(!d.join(&name).exists());
        }
        assert_eq!(file_names(d).unwrap(), Vec::<String>::new());
        let left = file_names(&d.join(QUARANTINE_DIR)).unwrap();
        assert_eq!(left, vec!["h1-2.etcd.zst", "h1-3.etcd.zst"]);
        // The evidence counts against the snapshot budget.
        let each = "not a snapshot at all".len() as u64;
        assert_eq!(crate::space::used_bytes(d).unwrap(), 2 * each);
        assert_eq!(scrub_file(d, "h1-0.etcd.zst").unwrap(), Scrubbed::Gone);
        assert!(scrub_file(d, "../x.etcd.zst").is_err());
    }

    #[test]
    fn the_report_counts_a_repair_once_and_only_for_a_corrupt_file() {
        let r = ScrubReport::default();
        r.repaired("a.etcd.zst");
        r.corrupt("a.etcd.zst", "checksum");
        r.corrupt("b.etcd.zst", "checksum");
        r.repaired("a.etcd.zst");
        r.repaired("a.etcd.zst");
        let d = r.doc();
        assert_eq!((d.corrupt, d.repaired), (2, 1));
        assert_eq!(d.unrepaired, vec!["b.etcd.zst"]);
        assert!(d.last_corrupt.unwrap().ends_with("b.etcd.zst: checksum"));
    }
}
