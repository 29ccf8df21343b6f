//! The footer (see the crate docs for the layout), names, and atomic file
//! helpers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name suffix of a snapshot.
pub const EXTENSION: &str = ".etcd.zst";

/// Version of the footer JSON.
pub const FORMAT_VERSION: u32 = 1;

/// zstd skippable frame magic (any of 0x184D2A50..=0x184D2A5F is skippable).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Last 8 bytes of every snapshot file.
const TAG: &[u8; 8] = b"EPSNAP01";
/// Bytes after the JSON: its length (u32le) and the tag.
const TAIL: u64 = 4 + 8;
/// Skippable frame header: magic and size.
const FRAME_HEADER: u64 = 8;
/// A footer larger than this is not ours.
const MAX_FOOTER_JSON: u64 = 64 * 1024;

/// What the footer of a snapshot records. Written once, when the snapshot is
/// taken; a copy on a peer carries the same footer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub format: u32,
    /// The host whose agent (or CLI) took the snapshot.
    pub origin: String,
    /// When the stream started (UTC).
    pub created_at: DateTime<Utc>,
    /// etcd member the snapshot was streamed from (hex id) and its cluster (hex id).
    pub member_id: String,
    pub cluster_id: String,
    /// The client URL it was streamed from.
    pub endpoint: String,
    /// etcd's store revision just before the stream started (the snapshot holds
    /// at least this revision).
    pub revision: i64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub etcd_version: String,
    /// Size of the bbolt database (the stream without etcd's 32-byte trailer).
    pub db_bytes: u64,
    /// sha256 of the db bytes as sent by etcd in its trailer (hex).
    pub etcd_sha256: String,
    /// Size and sha256 (hex) of the compressed data region (the file without the footer).
    pub compressed_bytes: u64,
    pub sha256: String,
    pub zstd_level: i32,
}

/// A snapshot file on disk: its name and path and its footer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    pub path: PathBuf,
    /// Whole file, footer included.
    pub file_bytes: u64,
    #[serde(flatten)]
    pub info: SnapshotInfo,
}

impl SnapshotMeta {
    /// Whether this host took it (rather than holding a peer's copy).
    pub fn is_local(&self, host: &str) -> bool {
        self.info.origin == host
    }
}

/// Whether `name` may be used as a snapshot file name in a snapshot
/// directory: `[A-Za-z0-9._-]`, 1–200 bytes, no leading dot (temporary files
/// are dot files), no `..`, ending in `.etcd.zst`. This is what keeps a name
/// received from the network inside the directory.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 200
        && name.len() > EXTENSION.len()
        && name.ends_with(EXTENSION)
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A name for a new snapshot: sortable by time, then origin and revision.
pub(crate) fn new_name(origin: &str, created_at: DateTime<Utc>, revision: i64) -> String {
    let origin: String = origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!(
        "{}-{}-r{}{}",
        created_at.format("%Y%m%dT%H%M%S%.3fZ"),
        if origin.is_empty() {
            "unknown"
        } else {
            &origin
        },
        revision,
        EXTENSION
    )
}

/// Appends the footer frame to `w`.
pub(crate) fn write_footer(w: &mut impl Write, info: &SnapshotInfo) -> std::io::Result<()> {
    let json = serde_json::to_vec(info).map_err(std::io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    let frame_size = len
        .checked_add(TAIL as u32)
        .ok_or_else(|| std::io::Error::other("footer too large"))?;
    w.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
    w.write_all(&frame_size.to_le_bytes())?;
    w.write_all(&json)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(TAG)?;
    Ok(())
}

/// Reads the footer of an open snapshot file: its info and the length of the
/// data region. A truncated file has no valid footer.
pub(crate) fn read_footer(file: &mut File, path: &Path) -> Result<(SnapshotInfo, u64, u64)> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?
        .len();
    let not_ours = |why: &str| {
        Error::corrupt(
            path,
            format!("{why}: truncated, or not an Edgeplane snapshot (no footer)"),
        )
    };
    if len < FRAME_HEADER + TAIL {
        return Err(not_ours("too short"));
    }
    let mut tail = [0u8; TAIL as usize];
    file.seek(SeekFrom::Start(len - TAIL))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| Error::io("cannot read", path, e))?;
    if &tail[4..] != TAG {
        return Err(not_ours("missing end tag"));
    }
    let json_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if json_len > MAX_FOOTER_JSON || json_len + FRAME_HEADER + TAIL > len {
        return Err(not_ours("bad footer length"));
    }
    let data_len = len - TAIL - json_len - FRAME_HEADER;
    let mut buf = vec![0u8; (FRAME_HEADER + json_len) as usize];
    file.seek(SeekFrom::Start(data_len))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| Error::io("cannot read", path, e))?;
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = u64::from(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
    if magic != SKIPPABLE_MAGIC || size != json_len + TAIL {
        return Err(not_ours("bad footer frame"));
    }
    let info: SnapshotInfo = serde_json::from_slice(&buf[FRAME_HEADER as usize..])
        .map_err(|e| Error::corrupt(path, format!("footer JSON does not parse: {e}")))?;
    if info.format != FORMAT_VERSION {
        return Err(Error::corrupt(
            path,
            format!(
                "footer format {} is not supported (this build reads {FORMAT_VERSION})",
                info.format
            ),
        ));
    }
    if info.compressed_bytes != data_len {
        return Err(Error::corrupt(
            path,
            format!(
                "data region is {data_len} bytes, footer says {}: truncated or spliced",
                info.compressed_bytes
            ),
        ));
    }
    Ok((info, data_len, len))
}

/// Reads a snapshot's metadata from its footer (cheap: no decompression, no checksum).
pub fn read_meta(path: &Path) -> Result<SnapshotMeta> {
    let mut file = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let (info, _, file_bytes) = read_footer(&mut file, path)?;
    Ok(SnapshotMeta {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        file_bytes,
        info,
    })
}

/// fsyncs a directory so that a rename in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("20250101T000000.000Z-h1-r5.etcd.zst"));
        for bad in [
            "../x.etcd.zst",
            "..etcd.zst",
            ".hidden.etcd.zst",
            "a/b.etcd.zst",
            "x",
            ".etcd.zst",
            "a b.etcd.zst",
            "x.etcd.zst/",
            "x\0.etcd.zst",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let n = new_name("host/../1", Utc::now(), 7);
        assert!(valid_name(&n), "{n}");
    }
}
