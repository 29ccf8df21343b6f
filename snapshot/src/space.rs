//! Snapshots must never fill the disk they share with etcd.
//!
//! Retention is per origin and every host holds every peer's copies, so
//! without a bound a large database (a peer upload may be 16 GiB) or a
//! burst of copies could fill every host's disk at once, and etcd then
//! stops. Two limits, checked before a byte is written and again while an
//! upload streams in:
//!
//! - a **budget** (`snapshots.max_bytes`): all snapshot files in the
//!   directory together (every origin, plus uploads in progress);
//! - a **reserve** (`snapshots.min_free_bytes`): free space the filesystem
//!   must keep after the write, so that etcd's db can still grow.
//!
//! What does not fit is refused and reported ([`Refusal`], the peer gets
//! HTTP 507 with the reason); nothing is deleted to make room, so the
//! newest good snapshot of a host is never sacrificed for a copy. The
//! decision ([`admit`]) is a pure function; the free space comes from a
//! [`FreeSpace`] source (statvfs in production, a fake in tests).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::format::EXTENSION;

/// The two limits. `max_bytes == 0` means no budget; `min_free_bytes == 0`
/// means no reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub max_bytes: u64,
    pub min_free_bytes: u64,
}

impl Budget {
    /// No limit at all (tools, tests).
    pub const UNLIMITED: Budget = Budget {
        max_bytes: 0,
        min_free_bytes: 0,
    };
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "limit", rename_all = "snake_case")]
pub enum Refusal {
    #[error(
        "the snapshot budget would be exceeded: {used} bytes of snapshots held + {incoming} incoming > snapshots.max_bytes {max}"
    )]
    Budget { used: u64, incoming: u64, max: u64 },
    #[error(
        "the filesystem's free-space reserve would be breached: {free} bytes free - {incoming} incoming < snapshots.min_free_bytes {reserve} (kept for etcd)"
    )]
    Reserve {
        free: u64,
        incoming: u64,
        reserve: u64,
    },
}

/// Whether `incoming` more bytes may be written, given `used` bytes of
/// snapshots already held and `free` bytes free on the filesystem (both
/// measured before any of the incoming bytes were written).
pub fn admit(incoming: u64, used: u64, free: u64, budget: &Budget) -> Result<(), Refusal> {
    if budget.max_bytes > 0 && used.saturating_add(incoming) > budget.max_bytes {
        return Err(Refusal::Budget {
            used,
            incoming,
            max: budget.max_bytes,
        });
    }
    if incoming > free || free - incoming < budget.min_free_bytes {
        return Err(Refusal::Reserve {
            free,
            incoming,
            reserve: budget.min_free_bytes,
        });
    }
    Ok(())
}

/// Where the free space of a directory's filesystem comes from.
pub trait FreeSpace: Send + Sync {
    fn free_bytes(&self, dir: &Path) -> std::io::Result<u64>;
}

/// The real filesystem: `statvfs(2)`, blocks available to unprivileged users.
#[derive(Debug, Default, Clone, Copy)]
pub struct Statvfs;

impl FreeSpace for Statvfs {
    fn free_bytes(&self, dir: &Path) -> std::io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }
}

/// Bytes held in `dir` by snapshot files and uploads in progress (dot
/// files ending in `.tmp`), and by the corrupt files the scrub keeps as
/// evidence in its `corrupt/` subdirectory; a missing directory holds
/// nothing.
pub fn used_bytes(dir: &Path) -> std::io::Result<u64> {
    Ok(files_bytes(dir)? + files_bytes(&dir.join(crate::scrub::QUARANTINE_DIR))?)
}

fn files_bytes(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(EXTENSION) || (name.starts_with('.') && name.ends_with(".tmp")) {
            // A file removed meanwhile holds nothing.
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

/// Refusals so far, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct SpaceReport {
    refused: AtomicU64,
    last: Mutex<Option<String>>,
}

/// A snapshot of [`SpaceReport`] with the limits, as `/status` shows it
/// (and as `diag` reads it back from there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpaceDoc {
    /// 0: no budget.
    pub max_bytes: u64,
    /// 0: no reserve.
    pub min_free_bytes: u64,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    /// Snapshot writes refused for space since the agent started.
    #[serde(default)]
    pub refused: u64,
    /// The last refusal, in a sentence.
    pub last_refusal: Option<String>,
}

impl SpaceReport {
    /// Records (and logs, the event) a refusal of `what`.
    pub fn refused(&self, what: &str, why: &Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let text = format!("{what}: {why}");
        tracing::warn!("Refused {text}; nothing was deleted to make room.");
        if let Ok(mut l) = self.last.lock() {
            *l = Some(format!("{} {text}", chrono::Utc::now().to_rfc3339()));
        }
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The doc for `dir` under `budget`, measured now.
    pub fn doc(&self, dir: &Path, budget: &Budget, free: &dyn FreeSpace) -> SpaceDoc {
        SpaceDoc {
            max_bytes: budget.max_bytes,
            min_free_bytes: budget.min_free_bytes,
            used_bytes: used_bytes(dir).ok(),
            free_bytes: free.free_bytes(dir).ok(),
            refused: self.refused_total(),
            last_refusal: self.last.lock().ok().and_then(|l| l.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Budget = Budget {
        max_bytes: 1000,
        min_free_bytes: 500,
    };

    #[test]
    fn refuses_over_budget_and_below_reserve() {
        assert_eq!(admit(100, 800, 10_000, &B), Ok(()));
        assert!(matches!(
            admit(300, 800, 10_000, &B),
            Err(Refusal::Budget { .. })
        ));
        assert!(matches!(
            admit(100, 0, 550, &B),
            Err(Refusal::Reserve { .. })
        ));
        assert_eq!(admit(50, 0, 550, &B), Ok(()));
        assert_eq!(admit(u64::MAX / 2, 0, u64::MAX, &Budget::UNLIMITED), Ok(()));
        assert!(
            admit(10, 0, 5, &Budget::UNLIMITED).is_err(),
            "never more than is free"
        );
    }

    proptest! {
        /// Whatever is admitted keeps the filesystem's free space at or
        /// above the reserve and the snapshots within the budget.
        #[test]
        fn admitted_writes_keep_both_limits(
            incoming in 0u64..1 << 40, used in 0u64..1 << 40, free in 0u64..1 << 40,
            max in 0u64..1 << 40, reserve in 0u64..1 << 40,
        ) {
            let b = Budget { max_bytes: max, min_free_bytes: reserve };
            if admit(incoming, used, free, &b).is_ok() {
                prop_assert!(free - incoming >= reserve);
                prop_assert!(max == 0 || used + incoming <= max);
            }
        }
    }

    /// A fake free-space source: the filesystem has `0` bytes free.
    struct Fake(u64);
    impl FreeSpace for Fake {
        fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
            Ok(self.0)
        }
    }

    #[test]
    fn used_counts_snapshots_and_uploads_only() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(format!("a{EXTENSION}")), [0u8; 100])?;
        std::fs::write(dir.path().join(".recv-x.tmp"), [0u8; 10])?;
        std::fs::write(dir.path().join("notes.txt"), [0u8; 1000])?;
        assert_eq!(used_bytes(dir.path())?, 110);
        assert_eq!(used_bytes(&dir.path().join("missing"))?, 0);
        let report = SpaceReport::default();
        report.refused(
            "a copy",
            &Refusal::Budget {
                used: 1,
                incoming: 2,
                max: 2,
            },
        );
        let doc = report.doc(dir.path(), &B, &Fake(42));
        assert_eq!(
            (doc.used_bytes, doc.free_bytes, doc.refused),
            (Some(110), Some(42), 1)
        );
        assert!(doc.last_refusal.is_some_and(|l| l.contains("max_bytes")));
        Ok(())
    }
}
