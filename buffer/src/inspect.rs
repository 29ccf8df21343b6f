//! Read-only inspection for diagnostics: works with the agent down and
//! modifies nothing (no lock, no recovery writes, no deletions).

use std::path::Path;

use crate::Summary;
use crate::buffer::{META_FILE, Meta, classes_on_disk, root_disk_bytes, summarize};
use crate::class::ClassStore;
use crate::error::BufferError;
use crate::slot;

/// Summarize the buffer in `dir` without changing anything. Torn tails are
/// reported (as `torn_*`) but not cut; counters are those of the ledgers plus
/// damage visible in the frame headers. Classes come in the order the last
/// writer configured, then any others.
pub fn inspect(dir: &Path) -> Result<Summary, BufferError> {
    if !dir.is_dir() {
        return Err(BufferError::io("inspect", dir)(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    }
    let meta = slot::read_newest::<Meta>(&dir.join(META_FILE))?
        .map(|(_, m)| m)
        .unwrap_or_default();
    let mut names: Vec<(String, bool)> = meta.classes.iter().map(|c| (c.clone(), true)).collect();
    for c in classes_on_disk(dir)? {
        if !meta.classes.contains(&c) {
            names.push((c, false));
        }
    }
    let mut classes = Vec::new();
    for (rank, (name, configured)) in names.into_iter().enumerate() {
        if !dir.join(&name).is_dir() {
            continue;
        }
        classes.push(ClassStore::open(
            dir,
            &name,
            rank,
            configured,
            meta.segment_bytes.max(4096),
            false,
            true,
        )?);
    }
    let total = root_disk_bytes(dir) + classes.iter().map(|c| c.disk_bytes()).sum::<u64>();
    Ok(summarize(
        &classes,
        meta.budget_bytes,
        meta.segment_bytes,
        total,
    ))
}
