//! Restoring: a verified snapshot (or a raw bbolt db copied from a member's
//! data dir) becomes a fresh etcd data dir, through `etcdctl snapshot
//! restore`.
//!
//! Order, so that a bad file never touches the target: check the target is
//! absent or empty → decompress into a temporary directory beside it while
//! verifying (one pass) → `etcdctl snapshot restore --skip-hash-check` into
//! that temporary directory (the pass already checked etcd's hash; checking
//! it twice cost a second read of the whole db) → fsync → rename into place
//! → fsync the parent. A plain `etcdctl snapshot save` file is verified in
//! place (etcd's hash, bbolt meta pages) and restored from where it is.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::bbolt;
use crate::error::{Error, Result};
use crate::format::{parent_dir, sync_dir};
use crate::progress::Progress;
use crate::verify::{FileKind, VerifyReport, check, check_db, file_kind};

/// The etcdctl binary: `$EDGEPLANE_ETCDCTL` or `/usr/bin/etcdctl`.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("EDGEPLANE_ETCDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// The new member a restore creates (`etcdctl snapshot restore` flags).
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// The data dir to create. Must not exist, or be an empty directory.
    pub data_dir: PathBuf,
    /// `--name`: this member's name.
    pub name: String,
    /// `--initial-cluster`, e.g. `h1=http://10.0.0.1:2380`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`: use a fresh one per rebuild (epoch).
    pub token: String,
    /// `--initial-advertise-peer-urls`: this member's peer URL.
    pub peer_url: String,
    /// The etcdctl binary (default [`etcdctl_bin`]).
    pub etcdctl: PathBuf,
}

impl RestoreTarget {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        name: impl Into<String>,
        initial_cluster: impl Into<String>,
        token: impl Into<String>,
        peer_url: impl Into<String>,
    ) -> RestoreTarget {
        RestoreTarget {
            data_dir: data_dir.into(),
            name: name.into(),
            initial_cluster: initial_cluster.into(),
            token: token.into(),
            peer_url: peer_url.into(),
            etcdctl: etcdctl_bin(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    /// Size of the restored db (without any trailer).
    pub db_bytes: u64,
    /// The snapshot's verification, for a snapshot file.
    pub verified: Option<VerifyReport>,
    pub elapsed_s: f64,
}

/// Refuses a target that exists and is not an empty directory.
fn check_target(t: &RestoreTarget) -> Result<()> {
    match std::fs::read_dir(&t.data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::DataDirNotEmpty {
                    path: t.data_dir.clone(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::DataDirNotEmpty {
            path: t.data_dir.clone(),
        }),
        Err(e) => Err(Error::io("cannot read", &t.data_dir, e)),
    }
}

fn scratch_dir(t: &RestoreTarget) -> Result<tempfile::TempDir> {
    let parent = parent_dir(&t.data_dir);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io("cannot create", &parent, e))?;
    tempfile::Builder::new()
        .prefix(".edgeplane-restore-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("cannot create a temporary directory in", &parent, e))
}

/// Restores a snapshot file made by [`crate::save`], or a plain `etcdctl
/// snapshot save` file, into a new data dir. The file is fully verified
/// first; a corrupt file returns [`Error::Corrupt`] and the target is left
/// exactly as it was.
pub fn restore(
    path: &Path,
    target: &RestoreTarget,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RestoreReport> {
    let start = Instant::now();
    check_target(target)?;
    if file_kind(path)? == FileKind::EtcdDb {
        let report = check_db(path, progress)?;
        let scratch = scratch_dir(target)?;
        run_restore(path, target, scratch.path(), true)?;
        return Ok(RestoreReport {
            data_dir: target.data_dir.clone(),
            db_bytes: report.db_bytes,
            verified: Some(report),
            elapsed_s: start.elapsed().as_secs_f64(),
        });
    }
    let scratch = scratch_dir(target)?;
    let db = scratch.path().join("snapshot.db");
    let f = File::create(&db).map_err(|e| Error::io("cannot create", &db, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let report = check(path, Some(&mut w), &db, progress)?;
    w.flush().map_err(|e| Error::io("cannot write", &db, e))?;
    drop(w);
    // The pass above checked etcd's trailer against the db: etcdctl only
    // strips it.
    run_restore(&db, target, scratch.path(), true)?;
    Ok(RestoreReport {
        data_dir: target.data_dir.clone(),
        db_bytes: report.db_bytes,
        verified: Some(report),
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

/// Restores a raw bbolt db, e.g. `member/snap/db` copied from a member's data
/// dir (a learner's, after quorum loss): no etcd trailer, so etcdctl runs with
/// `--skip-hash-check`. The db's bbolt meta pages are checked first. Keys and
/// revisions survive; the cluster ID is new.
pub fn restore_db_file(db: &Path, target: &RestoreTarget) -> Result<RestoreReport> {
    let start = Instant::now();
    check_target(target)?;
    let len = std::fs::metadata(db)
        .map_err(|e| Error::io("cannot stat", db, e))?
        .len();
    let mut head = vec![0u8; bbolt::HEAD_BYTES.min(len as usize)];
    {
        use std::io::Read;
        File::open(db)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| Error::io("cannot read", db, e))?;
    }
    bbolt::check(&head, len, false)
        .map_err(|e| Error::corrupt(db, format!("not a sane bbolt database: {e}")))?;
    let scratch = scratch_dir(target)?;
    run_restore(db, target, scratch.path(), true)?;
    Ok(RestoreReport {
        data_dir: target.data_dir.clone(),
        db_bytes: len,
        verified: None,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

fn run_restore(db: &Path, t: &RestoreTarget, scratch: &Path, skip_hash: bool) -> Result<()> {
    let out_dir = scratch.join("data");
    let mut cmd = crate::child_command(&t.etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(db)
        .arg(format!("--data-dir={}", out_dir.display()))
        .arg(format!("--name={}", t.name))
        .arg(format!("--initial-cluster={}", t.initial_cluster))
        .arg(format!("--initial-cluster-token={}", t.token))
        .arg(format!("--initial-advertise-peer-urls={}", t.peer_url));
    if skip_hash {
        cmd.arg("--skip-hash-check");
    }
    let out = cmd
        .output()
        .map_err(|e| Error::io("cannot run", &t.etcdctl, e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{:?}", cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    fsync_tree(&out_dir)?;
    // Replace an empty target directory, or create it: one rename either way.
    if t.data_dir.is_dir() {
        std::fs::remove_dir(&t.data_dir)
            .map_err(|e| Error::io("cannot replace", &t.data_dir, e))?;
    }
    std::fs::rename(&out_dir, &t.data_dir)
        .map_err(|e| Error::io("cannot move the restored data dir to", &t.data_dir, e))?;
    sync_dir(&parent_dir(&t.data_dir))?;
    tracing::info!(data_dir = %t.data_dir.display(), name = %t.name, "Restored an etcd data dir from a snapshot.");
    Ok(())
}

/// fsyncs every file and directory under `dir` (etcdctl does not fsync all it writes).
fn fsync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        let p = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| Error::io("cannot stat", &p, e))?;
        if ft.is_dir() {
            fsync_tree(&p)?;
        } else if ft.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("cannot fsync", &p, e))?;
        }
    }
    sync_dir(dir)
}
