//! The local half of `diag`: what this host's disk says, read without
//! changing anything and without the agent.
//!
//! - the journal, facts and snapshot catalog in `state_dir/state.redb`: opened read-only; when
//!   that is refused (the agent holds the file, or a kill left it needing
//!   recovery, which a read-only open will not do) a private copy is opened
//!   instead, so the original is never touched;
//! - the etcd data dir's metadata: `member/snap/db` size and age, the WAL,
//!   data dirs moved aside after a removal; the pid file and whether that pid
//!   is alive and is an etcd;
//! - the agent processes running with this config;
//! - the snapshot directory (`*.etcd.zst`, each with its metadata footer);
//! - `diag`'s own cache of the last live view (`state_dir/diag-last.json`),
//!   which is what `last-known` rows come from when nothing answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::file_age_s;
use crate::agent::state::{CatalogEntry, Op, read_catalog};

const JOURNAL: TableDefinition<u64, &str> = TableDefinition::new("journal");
const FACTS: TableDefinition<&str, &str> = TableDefinition::new("facts");

/// The journal and facts as read from `state.redb`.
#[derive(Debug, Clone)]
pub struct JournalRead {
    /// Oldest first; at most the limit asked for.
    pub ops: Vec<Op>,
    pub facts: BTreeMap<String, String>,
    /// The snapshot catalog, oldest first.
    pub catalog: Vec<CatalogEntry>,
    /// How the file was read, in words.
    pub how: String,
    /// Age of the file's last write.
    pub file_age_s: Option<f64>,
}

/// The state file's path.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("state.redb")
}

type Read = (Vec<Op>, BTreeMap<String, String>, Vec<CatalogEntry>);

fn read_db(db: &impl ReadableDatabase, limit: usize) -> Result<Read, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut ops = Vec::new();
    match txn.open_table(JOURNAL) {
        Ok(t) => {
            for item in t.iter().map_err(|e| e.to_string())?.rev() {
                let (_, v) = item.map_err(|e| e.to_string())?;
                if let Ok(op) = serde_json::from_str::<Op>(v.value()) {
                    ops.push(op);
                }
                if ops.len() >= limit {
                    break;
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    ops.reverse();
    let mut facts = BTreeMap::new();
    match txn.open_table(FACTS) {
        Ok(t) => {
            for item in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = item.map_err(|e| e.to_string())?;
                facts.insert(k.value().to_string(), v.value().to_string());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok((ops, facts, read_catalog(db)?))
}

/// Reads the last `limit` journal records and every fact, never modifying
/// the file.
pub fn read_journal(state_dir: &Path, limit: usize) -> Result<JournalRead, String> {
    let path = state_file(state_dir);
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} does not exist: the agent has never run on this host with this config",
                path.display()
            )
        } else {
            format!("cannot read {}: {e}", path.display())
        }
    })?;
    let file_age_s = file_age_s(&meta);
    let direct = redb::ReadOnlyDatabase::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|db| read_db(&db, limit));
    let first_err = match direct {
        Ok((ops, facts, catalog)) => {
            return Ok(JournalRead {
                ops,
                facts,
                catalog,
                how: "state.redb opened read-only".into(),
                file_age_s,
            });
        }
        Err(e) => e,
    };
    // Held by the agent, or needs the recovery a read-only open refuses:
    // read a private copy (redb locks are advisory; reading the bytes is safe).
    let tmp = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let copy = tmp.path().join("state.redb");
    std::fs::copy(&path, &copy).map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
    let db = redb::Database::builder()
        .set_cache_size(4 << 20)
        .open(&copy)
        .map_err(|e| {
            format!(
                "{} is damaged or not a state file ({e}; read-only open: {first_err})",
                path.display()
            )
        })?;
    let (ops, facts, catalog) =
        read_db(&db, limit).map_err(|e| format!("{} is damaged: {e}", path.display()))?;
    Ok(JournalRead {
        ops,
        facts,
        catalog,
        how: format!("a private copy of state.redb (direct read-only open refused: {first_err})"),
        file_age_s,
    })
}

/// One file's size and age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFact {
    pub path: String,
    pub bytes: u64,
    pub age_s: Option<f64>,
}

/// The local etcd as the disk shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdLocal {
    pub data_dir: String,
    pub data_dir_exists: bool,
    /// `member/snap/db`: the backend database file (its size is the db size on disk).
    pub db_file: Option<FileFact>,
    /// `member/wal`: present, files, bytes, newest write.
    pub wal_present: bool,
    pub wal_files: usize,
    pub wal_bytes: u64,
    pub wal_age_s: Option<f64>,
    /// Data dirs moved aside after this member was removed (`etcd.removed-*`).
    pub moved_aside: Vec<String>,
    /// The pid in `state_dir/etcd.pid`, whether it runs, and whether it is an etcd.
    pub pid_file: Option<i32>,
    pub pid_alive: bool,
    pub pid_is_etcd: bool,
    /// Problems reading any of the above.
    pub errors: Vec<String>,
}

/// Whether a pid exists (zombies count as gone).
pub fn pid_alive(pid: i32) -> bool {
    crate::process::alive(pid)
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn etcd_local(data_dir: &Path, state_dir: &Path) -> EtcdLocal {
    let mut errors = Vec::new();
    let data_dir_exists = data_dir.is_dir();
    let db_path = data_dir.join("member").join("snap").join("db");
    let db_file = match std::fs::metadata(&db_path) {
        Ok(m) => Some(FileFact {
            path: db_path.display().to_string(),
            bytes: m.len(),
            age_s: file_age_s(&m),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", db_path.display()));
            None
        }
    };
    let wal_dir = data_dir.join("member").join("wal");
    let (mut wal_files, mut wal_bytes, mut wal_age_s) = (0, 0, None::<f64>);
    let wal_present = wal_dir.is_dir();
    if wal_present {
        match std::fs::read_dir(&wal_dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata()
                        && m.is_file()
                    {
                        wal_files += 1;
                        wal_bytes += m.len();
                        if let Some(a) = file_age_s(&m) {
                            wal_age_s = Some(wal_age_s.map_or(a, |b| b.min(a)));
                        }
                    }
                }
            }
            Err(e) => errors.push(format!("cannot list {}: {e}", wal_dir.display())),
        }
    }
    let mut moved_aside = Vec::new();
    if let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) {
        let prefix = format!("{}.removed-", name.to_string_lossy());
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) {
                    moved_aside.push(n);
                }
            }
        }
        moved_aside.sort();
    }
    let pid_path = state_dir.join("etcd.pid");
    let pid_file = match std::fs::read_to_string(&pid_path) {
        Ok(t) => match t.trim().parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(format!("{} does not hold a pid", pid_path.display()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", pid_path.display()));
            None
        }
    };
    let pid_alive = pid_file.is_some_and(pid_alive);
    let pid_is_etcd = pid_alive
        && pid_file.is_some_and(|p| {
            cmdline(p)
                .first()
                .is_some_and(|a| a.rsplit('/').next().is_some_and(|b| b.starts_with("etcd")))
        });
    EtcdLocal {
        data_dir: data_dir.display().to_string(),
        data_dir_exists,
        db_file,
        wal_present,
        wal_files,
        wal_bytes,
        wal_age_s,
        moved_aside,
        pid_file,
        pid_alive,
        pid_is_etcd,
        errors,
    }
}

/// Pids of `edgeplane agent` processes started with this config file.
pub fn agent_pids(config_path: &Path) -> Vec<i32> {
    let want = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let args = cmdline(pid);
        let is_agent = args
            .first()
            .is_some_and(|a| a.rsplit('/').next().is_some_and(|b| b == "edgeplane"))
            && args.get(1).is_some_and(|a| a == "agent");
        if !is_agent {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let mut it = args.iter().skip(2);
        let mut cfg = None;
        while let Some(a) = it.next() {
            if a == "--config" || a == "-c" {
                cfg = it.next().cloned();
            } else if let Some(v) = a.strip_prefix("--config=") {
                cfg = Some(v.to_string());
            }
        }
        let cfg = cfg.unwrap_or_else(|| crate::cli::DEFAULT_CONFIG.to_string());
        let p = cwd.join(cfg);
        if std::fs::canonicalize(&p).unwrap_or(p) == want && pid_alive(pid) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// One snapshot file in the snapshot directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapFile {
    pub name: String,
    /// Sub-directory of the snapshot dir it is in (`.` for the top level),
    /// e.g. a peer's copies.
    pub location: String,
    pub bytes: u64,
    pub age_s: Option<f64>,
    /// The host that took it (from the footer): this host's own, or a peer's copy.
    pub origin: Option<String>,
    /// The snapshot's metadata footer (`edgeplane_snapshot::SnapshotInfo`).
    pub footer: Option<serde_json::Value>,
    /// Why the footer could not be read (a damaged or foreign file).
    pub footer_error: Option<String>,
}

/// Every `*.etcd.zst` file in `dir` and its sub-directories (two levels),
/// newest first. A missing directory is an empty list.
pub fn list_snapshots(dir: &Path) -> Result<Vec<SnapFile>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if d == dir => return Err(format!("cannot list {}: {e}", d.display())),
            Err(_) => continue,
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if depth < 2 {
                    stack.push((p, depth + 1));
                }
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(edgeplane_snapshot::EXTENSION) {
                continue;
            }
            let mut age_s = file_age_s(&m);
            let (mut origin, mut footer, mut footer_error) = (None, None, None);
            match edgeplane_snapshot::read_meta(&p) {
                Ok(meta) => {
                    let created = meta.info.created_at;
                    age_s = Some(
                        (chrono::Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0,
                    );
                    origin = Some(meta.info.origin.clone());
                    footer = serde_json::to_value(&meta.info).ok();
                }
                Err(e) => footer_error = Some(e.to_string()),
            }
            let location = p
                .parent()
                .and_then(|pp| pp.strip_prefix(dir).ok())
                .map(|r| {
                    let s = r.display().to_string();
                    if s.is_empty() { ".".to_string() } else { s }
                })
                .unwrap_or_else(|| ".".into());
            out.push(SnapFile {
                name,
                location,
                bytes: m.len(),
                age_s,
                origin,
                footer,
                footer_error,
            });
        }
    }
    out.sort_by(|a, b| {
        a.age_s
            .unwrap_or(f64::MAX)
            .total_cmp(&b.age_s.unwrap_or(f64::MAX))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// Where `diag` keeps its last live view.
pub fn cache_file(state_dir: &Path) -> PathBuf {
    state_dir.join("diag-last.json")
}

/// Reads `diag`'s cache; `None` when absent or unreadable.
pub fn read_cache<T: serde::de::DeserializeOwned>(state_dir: &Path) -> Option<T> {
    let bytes = std::fs::read(cache_file(state_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `diag`'s cache atomically; best effort (a read-only state dir or
/// another user's is not an error for a diagnostic command).
pub fn write_cache<T: Serialize>(state_dir: &Path, value: &T) {
    if !state_dir.is_dir() {
        return;
    }
    let Ok(bytes) = serde_json::to_vec(value) else {
        return;
    };
    let _ = crate::agent::etcd::write_atomic(&cache_file(state_dir), &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::{OpKind, Outcome, State};

    #[test]
    fn journal_reads_while_the_agent_holds_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = State::open(dir.path())?;
        let id = s.begin(OpKind::Promote, "host-4", "voters 2 of 3")?;
        s.finish(id, Outcome::Done, "promoted")?;
        s.set_fact("epoch", "2")?;
        // `s` still holds the file: the direct open is refused, the copy works.
        let r = read_journal(dir.path(), 10).map_err(anyhow::Error::msg)?;
        assert_eq!(r.ops.len(), 1);
        assert_eq!(r.ops[0].target, "host-4");
        assert_eq!(r.facts.get("epoch").map(String::as_str), Some("2"));
        drop(s);
        let r = read_journal(dir.path(), 10).map_err(anyhow::Error::msg)?;
        assert_eq!(r.ops.len(), 1);
        assert!(r.how.contains("read-only"), "{}", r.how);
        Ok(())
    }

    #[test]
    fn damaged_or_missing_state_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let e = read_journal(dir.path(), 10).err().unwrap_or_default();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::write(dir.path().join("state.redb"), b"not a database")?;
        let e = read_journal(dir.path(), 10).err().unwrap_or_default();
        assert!(e.contains("damaged"), "{e}");
        Ok(())
    }

    #[test]
    fn snapshots_listed_newest_first_damaged_ones_flagged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(
            list_snapshots(&dir.path().join("none"))
                .map_err(anyhow::Error::msg)?
                .is_empty()
        );
        std::fs::write(dir.path().join("a.etcd.zst"), b"not a snapshot")?;
        std::fs::write(dir.path().join(".tmp-b.etcd.zst"), b"in flight")?;
        std::fs::write(dir.path().join("notes.txt"), b"")?;
        let l = list_snapshots(dir.path()).map_err(anyhow::Error::msg)?;
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].name, "a.etcd.zst");
        assert_eq!(l[0].location, ".");
        assert!(l[0].footer.is_none() && l[0].footer_error.is_some());
        Ok(())
    }
}
