//! Small metadata files written in place into two checksummed slots.
//!
//! ```text
//! file (4096 bytes, allocated once):  [ slot 0 (2048) | slot 1 (2048) ]
//! slot:  magic "EPS1" | generation u64 | len u32 | crc32c(json) u32 | json … | zero padding
//! ```
//! A write goes to the slot that does not hold the newest generation, then
//! `fdatasync`. A torn write damages at most the slot being written; the other
//! one still holds the previous state. Writing in place needs no new blocks, so
//! the ledger can always be updated on a full disk, which is exactly when
//! shedding must record what it is about to delete.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BufferError;

const MAGIC: [u8; 4] = *b"EPS1";
pub(crate) const SLOT_LEN: usize = 2048;
pub(crate) const FILE_LEN: u64 = 2 * SLOT_LEN as u64;
const SLOT_HEADER: usize = 4 + 8 + 4 + 4;

pub(crate) struct SlotFile {
    path: PathBuf,
    file: File,
    generation: u64,
}

/// The newest valid slot of a slot file, read without modifying anything.
pub(crate) fn read_newest<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<(u64, T)>, BufferError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BufferError::io("read", path)(e)),
    };
    Ok(parse_newest(&bytes))
}

fn parse_newest<T: DeserializeOwned>(bytes: &[u8]) -> Option<(u64, T)> {
    let mut best: Option<(u64, T)> = None;
    for slot in 0..2 {
        let Some(s) = bytes.get(slot * SLOT_LEN..(slot + 1) * SLOT_LEN) else {
            continue;
        };
        if s[0..4] != MAGIC {
            continue;
        }
        let mut g = [0u8; 8];
        g.copy_from_slice(&s[4..12]);
        let generation = u64::from_le_bytes(g);
        let len = u32::from_le_bytes([s[12], s[13], s[14], s[15]]) as usize;
        let crc = u32::from_le_bytes([s[16], s[17], s[18], s[19]]);
        let Some(json) = s.get(SLOT_HEADER..SLOT_HEADER + len) else {
            continue;
        };
        if crc32c::crc32c(json) != crc {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<T>(json) else {
            continue;
        };
        if best.as_ref().is_none_or(|(bg, _)| generation > *bg) {
            best = Some((generation, v));
        }
    }
    best
}

impl SlotFile {
    /// Open or create the file. Returns the newest valid value, if any.
    /// A new file is allocated in full and its directory entry synced.
    pub fn open<T: DeserializeOwned>(path: &Path) -> Result<(SlotFile, Option<T>), BufferError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(BufferError::io("open", path))?;
        let mut bytes = Vec::new();
        if existed {
            bytes = std::fs::read(path).map_err(BufferError::io("read", path))?;
        }
        if bytes.len() < FILE_LEN as usize {
            // Allocate both slots now so later writes never need new blocks.
            let zeros = vec![0u8; FILE_LEN as usize - bytes.len()];
            file.write_all_at(&zeros, bytes.len() as u64)
                .and_then(|()| file.sync_all())
                .map_err(BufferError::io("allocate", path))?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        let newest = parse_newest::<T>(&bytes);
        let (generation, value) = match newest {
            Some((g, v)) => (g, Some(v)),
            None => (0, None),
        };
        Ok((
            SlotFile {
                path: path.to_path_buf(),
                file,
                generation,
            },
            value,
        ))
    }

    /// Durably replace the value.
    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<(), BufferError> {
        let json = serde_json::to_vec(value).map_err(|e| BufferError::Io {
            op: "serialize",
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        if json.len() > SLOT_LEN - SLOT_HEADER {
            return Err(BufferError::Io {
                op: "write (state too large for its slot)",
                path: self.path.clone(),
                source: io::Error::other(format!("{} bytes", json.len())),
            });
        }
        let generation = self.generation + 1;
        let mut slot = vec![0u8; SLOT_LEN];
        slot[0..4].copy_from_slice(&MAGIC);
        slot[4..12].copy_from_slice(&generation.to_le_bytes());
        slot[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
        slot[16..20].copy_from_slice(&crc32c::crc32c(&json).to_le_bytes());
        slot[SLOT_HEADER..SLOT_HEADER + json.len()].copy_from_slice(&json);
        let offset = (generation % 2) * SLOT_LEN as u64;
        self.file
            .write_all_at(&slot, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(BufferError::io("write", &self.path))?;
        self.generation = generation;
        Ok(())
    }
}

/// What `du` counts for a file: allocated 512-byte blocks.
pub(crate) fn disk_bytes(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

/// What `du` counts for a path (0 if it is gone).
pub(crate) fn path_disk_bytes(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map_or(0, |m| disk_bytes(&m))
}

/// fsync a directory so creations, renames and unlinks in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BufferError::io("sync directory", dir))
}
