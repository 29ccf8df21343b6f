//! The agent's small durable state, in one redb file (`state_dir/state.redb`):
//!
//! - `journal`: one record per disruptive operation (promotion, removal,
//!   join, rejoin, recovery, defrag), written as *intent* before acting and
//!   updated with the *outcome* after, so an agent killed mid-operation knows
//!   on restart what it was doing;
//! - `facts`: small named values (the epoch this host belongs to, whether it
//!   has ever been part of a running cluster);
//! - `snapshot_catalog`: one [`CatalogEntry`] per snapshot this host knows
//!   of (name → origin, revision, size, sha256, when taken, which hosts hold
//!   a copy). The snapshot files carry the same facts in their footers; the
//!   catalog adds where the copies are, which no single directory knows.
//!
//! Every commit is fsynced (redb's default durability). Why redb and not
//! sled: see `docs/decisions/0001-agent-state-in-redb.md` (sled: no release since 2021,
//! corruption-after-crash reports, RSS; redb: clean after every kill -9 we
//! tried, 87 MB RSS with a bounded cache).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const JOURNAL: TableDefinition<u64, &str> = TableDefinition::new("journal");
const FACTS: TableDefinition<&str, &str> = TableDefinition::new("facts");
/// Snapshot name → [`CatalogEntry`] as JSON.
pub const CATALOG: TableDefinition<&str, &str> = TableDefinition::new("snapshot_catalog");

/// Records beyond this many are trimmed, oldest first.
const JOURNAL_KEEP: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not open the state store {path}")]
    Open {
        path: PathBuf,
        #[source]
        err: Box<redb::DatabaseError>,
    },
    #[error("state store {path}: {what}")]
    Io { path: PathBuf, what: String },
}

/// What kind of operation a journal record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    RemoveMember,
    Promote,
    EvictLearner,
    Join,
    Rejoin,
    MoveLeader,
    Bootstrap,
    Recover,
    Defrag,
    Snapshot,
    /// Fencing lost voters before a rebuild (one record per attempt).
    Fence,
    /// Two live clusters seen: pending while the alarm stands.
    SplitBrain,
    /// This voter stopped its etcd: the nodes it cannot see are a strict
    /// majority and may rebuild.
    SelfFence,
    /// etcd died on a failed fsync and its data is kept (no quorum
    /// elsewhere): pending while the agent waits.
    DiskFault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Intent recorded, action not yet confirmed.
    Pending,
    Done,
    Failed,
    /// Found pending after a restart and closed by the reconciler.
    Abandoned,
}

/// One journal record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub kind: OpKind,
    /// Host the operation is about (the member removed, the learner promoted…).
    pub target: String,
    /// Why it was decided, in a sentence.
    pub reason: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub outcome: Outcome,
    /// What happened, in a sentence (error text on failure).
    pub detail: String,
    /// For a removal: the factor its detection window was damped by,
    /// because the host had been removed within `cluster.flap_window`
    /// (absent: not damped, or a record from before flap damping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping: Option<u32>,
}

impl Op {
    /// A removal whose detection window was damped (a flapping host).
    pub fn damped(&self) -> bool {
        self.damping.is_some_and(|f| f > 1)
    }
}

/// One snapshot in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// File name, `ORIGIN-…-rREV.etcd.zst`.
    pub name: String,
    /// The host whose agent took it.
    pub origin: String,
    /// etcd revision at the snapshot.
    pub revision: i64,
    /// Size of the (compressed) snapshot file on disk.
    pub file_bytes: u64,
    /// sha256 of the compressed data region (the footer's).
    pub sha256: String,
    pub taken_at_ms: i64,
    /// Hosts known to hold a verified copy (the origin included while it keeps its own).
    pub copies: BTreeSet<String>,
}

impl CatalogEntry {
    pub fn from_meta(m: &edgeplane_snapshot::SnapshotMeta) -> CatalogEntry {
        CatalogEntry {
            name: m.name.clone(),
            origin: m.info.origin.clone(),
            revision: m.info.revision,
            file_bytes: m.file_bytes,
            sha256: m.info.sha256.clone(),
            taken_at_ms: m.info.created_at.timestamp_millis(),
            copies: BTreeSet::new(),
        }
    }
}

/// Every catalog entry in `db`, oldest first (an absent table is empty).
pub fn read_catalog(db: &impl ReadableDatabase) -> Result<Vec<CatalogEntry>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let t = match txn.open_table(CATALOG) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for item in t.iter().map_err(|e| e.to_string())? {
        let (_, v) = item.map_err(|e| e.to_string())?;
        if let Ok(e) = serde_json::from_str::<CatalogEntry>(v.value()) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| (a.taken_at_ms, &a.name).cmp(&(b.taken_at_ms, &b.name)));
    Ok(out)
}

/// The store. Cheap to share behind an `Arc`; redb serialises writers.
#[derive(Debug)]
pub struct State {
    db: Database,
    path: PathBuf,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl State {
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("state.redb");
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            what: format!("could not create directory: {e}"),
        })?;
        let db = Database::builder()
            .set_cache_size(16 << 20)
            .create(&path)
            .map_err(|err| StateError::Open {
                path: path.clone(),
                err: Box::new(err),
            })?;
        let state = State { db, path };
        // Create the tables so read transactions never see them missing.
        state.write(|txn| {
            txn.open_table(JOURNAL)?;
            txn.open_table(FACTS)?;
            txn.open_table(CATALOG)?;
            Ok(())
        })?;
        Ok(state)
    }

    fn err(&self, what: impl std::fmt::Display) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Records the intent of an operation; returns its id.
    pub fn begin(&self, kind: OpKind, target: &str, reason: &str) -> Result<u64, StateError> {
        self.begin_damped(kind, target, reason, None)
    }

    /// [`State::begin`] for a removal decided with a (possibly damped)
    /// detection window.
    pub fn begin_damped(
        &self,
        kind: OpKind,
        target: &str,
        reason: &str,
        damping: Option<u32>,
    ) -> Result<u64, StateError> {
        self.write(|txn| {
            let mut t = txn.open_table(JOURNAL)?;
            let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let op = Op {
                id,
                kind,
                target: target.to_string(),
                reason: reason.to_string(),
                started_ms: now_ms(),
                finished_ms: None,
                outcome: Outcome::Pending,
                detail: String::new(),
                damping,
            };
            let json = serde_json::to_string(&op).unwrap_or_default();
            t.insert(id, json.as_str())?;
            if id > JOURNAL_KEEP {
                let cut = id - JOURNAL_KEEP;
                t.retain_in(..cut, |_, _| false)?;
            }
            Ok(id)
        })
    }

    /// Records the outcome of operation `id`.
    pub fn finish(&self, id: u64, outcome: Outcome, detail: &str) -> Result<(), StateError> {
        self.write(|txn| {
            let mut t = txn.open_table(JOURNAL)?;
            let existing = t.get(id)?.map(|v| v.value().to_string());
            if let Some(text) = existing
                && let Ok(mut op) = serde_json::from_str::<Op>(&text)
            {
                op.outcome = outcome;
                op.finished_ms = Some(now_ms());
                op.detail = detail.to_string();
                let json = serde_json::to_string(&op).unwrap_or_default();
                t.insert(id, json.as_str())?;
            }
            Ok(())
        })
    }

    /// The last `limit` journal records, oldest first.
    /// Records an operation's outcome; a journal that cannot be written is
    /// logged as an error (the operation already happened: its outcome must
    /// not be lost silently, and there is nothing else to undo).
    pub fn close(&self, id: u64, outcome: Outcome, detail: &str) {
        if let Err(e) = self.finish(id, outcome, detail) {
            tracing::error!(
                id,
                ?outcome,
                "Could not journal an operation's outcome ({detail}): {e}"
            );
        }
    }

    pub fn ops(&self, limit: usize) -> Result<Vec<Op>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOURNAL).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))?.rev() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            if let Ok(op) = serde_json::from_str::<Op>(v.value()) {
                out.push(op);
            }
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Members this agent removed (done) that started at or after
    /// `since_ms`, oldest first: the flap-damping history. Read from the
    /// newest record back, so its cost is the window's records, not the
    /// journal's.
    pub fn removals_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<super::plan::PastRemoval>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOURNAL).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))?.rev() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            let Ok(op) = serde_json::from_str::<Op>(v.value()) else {
                continue;
            };
            if op.started_ms < since_ms {
                break;
            }
            if op.kind == OpKind::RemoveMember && op.outcome == Outcome::Done {
                out.push(super::plan::PastRemoval {
                    host: op.target,
                    at_ms: op.started_ms,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Operations left pending by a previous run (the agent died mid-operation).
    pub fn pending(&self) -> Result<Vec<Op>, StateError> {
        Ok(self
            .ops(100)?
            .into_iter()
            .filter(|o| o.outcome == Outcome::Pending)
            .collect())
    }

    pub fn fact(&self, name: &str) -> Result<Option<String>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(FACTS).map_err(|e| self.err(e))?;
        Ok(t.get(name)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string()))
    }

    pub fn set_fact(&self, name: &str, value: &str) -> Result<(), StateError> {
        self.write(|txn| {
            txn.open_table(FACTS)?.insert(name, value)?;
            Ok(())
        })
    }

    /// The last membership this host saw in its own cluster (`None`: never
    /// saw one, or forgot it on purpose after leaving that cluster).
    pub fn membership(&self) -> Result<Option<KnownMembership>, StateError> {
        Ok(self
            .fact(FACT_MEMBERSHIP)?
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Records the membership (`None` forgets it: this host left the cluster).
    pub fn set_membership(&self, m: Option<&KnownMembership>) -> Result<(), StateError> {
        let json = match m {
            Some(m) => serde_json::to_string(m).map_err(|e| StateError::Io {
                path: self.path.clone(),
                what: e.to_string(),
            })?,
            None => String::new(),
        };
        self.set_fact(FACT_MEMBERSHIP, &json)
    }
}

const FACT_MEMBERSHIP: &str = "membership";

/// The membership of this host's cluster, as last seen: who the voters were
/// when quorum is lost, which cluster this host's data belongs to. Written on
/// every change, so an agent restarted in the middle of a quorum loss still
/// knows whom it would have to fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMembership {
    pub cluster_id: u64,
    pub epoch: u64,
    pub members: Vec<super::plan::Member>,
}

impl KnownMembership {
    /// Labels of the voters (`plan::label`).
    pub fn voters(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !m.is_learner)
            .map(super::plan::label)
            .collect()
    }
}

impl State {
    /// Records what `host` holds: every snapshot in `held` gains `host` as a
    /// copy (added to the catalog if new), and every entry not in `held`
    /// loses it. Entries no host holds any more are dropped. One transaction.
    pub fn catalog_sync_host(
        &self,
        host: &str,
        held: &[edgeplane_snapshot::SnapshotMeta],
    ) -> Result<(), StateError> {
        self.write(|txn| {
            let mut t = txn.open_table(CATALOG)?;
            let mut entries: Vec<CatalogEntry> = Vec::new();
            for item in t.iter()? {
                let (_, v) = item?;
                if let Ok(e) = serde_json::from_str::<CatalogEntry>(v.value()) {
                    entries.push(e);
                }
            }
            for m in held {
                if !entries.iter().any(|e| e.name == m.name) {
                    entries.push(CatalogEntry::from_meta(m));
                }
            }
            for mut e in entries {
                let holds = held.iter().any(|m| m.name == e.name);
                let changed = if holds {
                    e.copies.insert(host.to_string())
                } else {
                    e.copies.remove(host)
                };
                if e.copies.is_empty() {
                    t.remove(e.name.as_str())?;
                } else if changed {
                    let json = serde_json::to_string(&e).unwrap_or_default();
                    t.insert(e.name.as_str(), json.as_str())?;
                }
            }
            Ok(())
        })
    }

    /// Adds `hosts` as holders of snapshot `m` (a copy was stored there).
    pub fn catalog_add_copies(
        &self,
        m: &edgeplane_snapshot::SnapshotMeta,
        hosts: &[String],
    ) -> Result<(), StateError> {
        self.write(|txn| {
            let mut t = txn.open_table(CATALOG)?;
            let existing = t
                .get(m.name.as_str())?
                .and_then(|v| serde_json::from_str::<CatalogEntry>(v.value()).ok());
            let mut e = existing.unwrap_or_else(|| CatalogEntry::from_meta(m));
            e.copies.extend(hosts.iter().cloned());
            let json = serde_json::to_string(&e).unwrap_or_default();
            t.insert(m.name.as_str(), json.as_str())?;
            Ok(())
        })
    }

    /// The whole catalog, oldest first.
    pub fn catalog(&self) -> Result<Vec<CatalogEntry>, StateError> {
        read_catalog(&self.db).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_and_pending() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Io {
            path: PathBuf::new(),
            what: e.to_string(),
        })?;
        let s = State::open(dir.path())?;
        let a = s.begin(OpKind::RemoveMember, "host-2", "unreachable for 1s")?;
        let b = s.begin(OpKind::Promote, "host-4", "voters 2 of 3")?;
        s.finish(a, Outcome::Done, "removed")?;
        drop(s);
        let s = State::open(dir.path())?;
        let pending = s.pending()?;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, b);
        assert_eq!(s.ops(10)?.len(), 2);
        s.set_fact("epoch", "3")?;
        assert_eq!(s.fact("epoch")?.as_deref(), Some("3"));
        Ok(())
    }

    #[test]
    fn removal_history_survives_a_restart_and_keeps_only_the_window() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Io {
            path: PathBuf::new(),
            what: e.to_string(),
        })?;
        let s = State::open(dir.path())?;
        let t0 = now_ms();
        let a = s.begin(OpKind::RemoveMember, "host-2", "unreachable")?;
        s.finish(a, Outcome::Done, "removed")?;
        let b = s.begin_damped(OpKind::RemoveMember, "host-2", "flapping", Some(2))?;
        s.finish(b, Outcome::Done, "removed")?;
        let c = s.begin(OpKind::RemoveMember, "host-3", "refused")?;
        s.finish(c, Outcome::Failed, "refused")?;
        let d = s.begin(OpKind::Promote, "host-4", "voters 2 of 3")?;
        s.finish(d, Outcome::Done, "promoted")?;
        drop(s);
        let s = State::open(dir.path())?;
        let h = s.removals_since(t0)?;
        assert_eq!(h.len(), 2, "done removals only: {h:?}");
        assert!(h.iter().all(|r| r.host == "host-2" && r.at_ms >= t0));
        assert!(s.removals_since(now_ms() + 60_000)?.is_empty());
        let ops = s.ops(10)?;
        assert_eq!(ops.iter().filter(|o| o.damped()).count(), 1);
        Ok(())
    }

    fn meta(name: &str, origin: &str, revision: i64) -> edgeplane_snapshot::SnapshotMeta {
        edgeplane_snapshot::SnapshotMeta {
            name: name.into(),
            path: PathBuf::from(name),
            file_bytes: 1000,
            info: edgeplane_snapshot::SnapshotInfo {
                format: 1,
                origin: origin.into(),
                created_at: chrono::Utc::now(),
                member_id: "1".into(),
                cluster_id: "2".into(),
                endpoint: "http://x".into(),
                revision,
                raft_index: 1,
                raft_term: 1,
                etcd_version: "3.4.23".into(),
                db_bytes: 4000,
                etcd_sha256: String::new(),
                compressed_bytes: 900,
                sha256: format!("sha-{name}"),
                zstd_level: 3,
            },
        }
    }

    #[test]
    fn catalog_tracks_copies_across_take_copy_and_prune() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Io {
            path: PathBuf::new(),
            what: e.to_string(),
        })?;
        let s = State::open(dir.path())?;
        let (a, b) = (meta("a", "h1", 10), meta("b", "h1", 20));
        // Taken on h1, copied to h2 and h3.
        s.catalog_add_copies(&a, &["h1".into(), "h2".into(), "h3".into()])?;
        s.catalog_sync_host("h1", &[a.clone(), b.clone()])?;
        let cat = s.catalog()?;
        assert_eq!(cat.len(), 2);
        let ea = cat.iter().find(|e| e.name == "a").map(|e| e.copies.len());
        assert_eq!(ea, Some(3));
        assert_eq!(
            cat.iter().find(|e| e.name == "b").map(|e| e.revision),
            Some(20)
        );
        // h2 pruned `a`; h1 pruned it too; h3 still holds it.
        s.catalog_sync_host("h2", &[])?;
        s.catalog_sync_host("h1", std::slice::from_ref(&b))?;
        let cat = s.catalog()?;
        let copies: Vec<&str> = cat
            .iter()
            .find(|e| e.name == "a")
            .map(|e| e.copies.iter().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(copies, ["h3"]);
        // Nobody holds `a` any more: it leaves the catalog. It survives a reopen.
        s.catalog_sync_host("h3", &[])?;
        drop(s);
        let s = State::open(dir.path())?;
        let names: Vec<String> = s.catalog()?.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["b"]);
        Ok(())
    }
}
