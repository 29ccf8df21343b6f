//! Errors returned by the buffer.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the buffer. Disk errors carry the path and
/// the operation; the source `io::Error` is attached, not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The options given to `open` or `set_budget` cannot work.
    #[error("invalid buffer options: {0}")]
    InvalidOptions(String),

    /// `append`, `read` or `rewind` named a class that is neither configured nor on disk.
    #[error("unknown priority class {0:?}")]
    UnknownClass(String),

    /// `append` to a class that exists on disk but is no longer configured.
    #[error(
        "priority class {0:?} is on disk but not configured; it can be read but not appended to"
    )]
    NotConfigured(String),

    /// The token does not belong to this buffer's state for that class.
    #[error("invalid ack token for class {class:?}: {reason}")]
    InvalidToken { class: String, reason: String },

    /// Another process (normally the running agent) holds the buffer directory.
    #[error("buffer directory {path} is locked by another process")]
    Locked { path: PathBuf },

    /// The file system said "no space left" (ENOSPC). The partial write was rolled
    /// back, lower-priority data was shed to make room, and `samples[..accepted]`
    /// of the batch are stored. Retrying the rest is safe; lowering the budget to
    /// what the disk really holds stops this from recurring.
    #[error(
        "disk full while appending to class {class:?}: {accepted} samples stored, \
         {not_stored} not stored, {freed_bytes} bytes shed to make room"
    )]
    DiskFull {
        class: String,
        accepted: usize,
        not_stored: usize,
        freed_bytes: u64,
        #[source]
        source: io::Error,
    },

    /// Any other I/O error, with the operation and path.
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BufferError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| BufferError::Io { op, path, source }
    }

    /// True when the error was caused by a full disk (ENOSPC), wherever it happened.
    pub fn is_disk_full(&self) -> bool {
        match self {
            BufferError::DiskFull { .. } => true,
            BufferError::Io { source, .. } => is_enospc(source),
            _ => false,
        }
    }
}

pub(crate) fn is_enospc(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}
