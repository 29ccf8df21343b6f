//! # edgeplane-buffer: the priority disk buffer for metric samples
//!
//! While the link to the region is down, every sample the site scrapes waits
//! here, on the local disk, inside a fixed byte budget, and survives power loss.
//! When space runs short the least critical and oldest data goes first; when
//! the link returns, the backlog is read back in order with each sample's
//! original timestamp. A library: no network, no etcd, no threads.
//!
//! ## Design constraints
//!
//! - **The budget is what `du` says.** Every file and directory of the buffer
//!   is counted by allocated blocks (`st_blocks * 512`), ledgers included.
//!   After every operation the total is at most the budget, plus at worst one
//!   segment while a block is being sealed. Space comes back by deleting whole
//!   files: no compaction, no free lists (KV stores that never give space back
//!   are the failure this avoids).
//! - **Shedding never rewrites.** Each class has its own directory and
//!   segment files; shedding unlinks the oldest segment of the least critical
//!   non-empty class. An append may shed its own class and less critical ones,
//!   never a more critical one: then the rest of the batch is dropped and
//!   counted instead.
//! - **At-least-once, never skip.** A segment is deleted only after the ledger
//!   that says it is gone (ack cursor or shed floor) is durable. A crash
//!   between a read and its ack re-delivers; nothing acknowledged durably is
//!   delivered again.
//! - **Crash recovery is local and bounded.** Only the segment being appended
//!   to and the head log are checked in full at open; a torn tail is cut off
//!   and counted. Sealed segments are never modified; a damaged frame in one is
//!   skipped and counted when read. Nothing the disk can break panics.
//! - **Small on disk.** Samples are sealed in blocks of up to 512 Ki samples,
//!   columnar per series: series dictionary, delta-of-delta timestamps,
//!   integer/decimal deltas or XOR for values, zstd, CRC32C per frame.
//!   Realistic scrape data takes about 1-2 bytes a sample (see README).
//! - **Memory does not grow with the backlog.** RAM holds the unsealed block of
//!   each class, one decoded block for reading, and a small index per frame.
//! - **A full disk is an error, not an exit.** ENOSPC rolls back the partial
//!   write, sheds, and returns [`BufferError::DiskFull`]; for 30 s the buffer
//!   then keeps below the usage the disk allowed. Ledgers are rewritten in
//!   place in preallocated slots, so recording a deletion never needs space.
//! - **Reads serve the uplink.** Per class, oldest first, from an in-memory
//!   position that restarts at the durable ack cursor on reopen or `rewind`;
//!   `read` gives `Sample`s, `read_series` the same grouped by series (one
//!   label clone per series instead of per sample).
//!
//! ## On-disk format
//!
//! ```text
//! <dir>/
//!   LOCK                      empty; flock()ed by the one writer (inspect does not lock)
//!   meta                      slot file: format, class order, budget, segment size
//!   <class>/                  one directory per priority class
//!     state                   slot file: ack cursor, shed floor, counters
//!     head                    frames of appends not yet sealed (one per append chunk)
//!     00000000000000000000.seg  sealed blocks; name = first sequence number
//!     00000000000000131072.seg
//!
//! slot file (4096 bytes, written in place, never reallocated):
//!   [ slot 0: "EPS1" gen:u64 len:u32 crc32c:u32 json | slot 1: same ]   newest valid gen wins
//!
//! segment / head file = frame*
//! frame:
//!   +------+---+---+----+-----------+-------+-----------+-------+------+--------+--------+-------------+------------+
//!   |"EPF1"|ver|cdc|rsvd|payload_len|raw_len| first_seq | count | rsvd | min_ts | max_ts | payload_crc | header_crc |
//!   |  4   | 1 | 1 |  2 |     4     |   4   |     8     |   4   |  4   |   8    |   8    |      4      |     4      |
//!   +------+---+---+----+-----------+-------+-----------+-------+------+--------+--------+-------------+------------+
//!   payload: zstd( block )                       (little-endian; CRC32C; header = 56 bytes)
//! block (uncompressed), each section length-prefixed:
//!   series table | row order | timestamps (per series: t0, Δ, ΔΔ…) | value control bytes | int deltas | xor bytes
//! ```
//!
//! Every sample of a class gets a sequence number, in append order. Frames
//! carry their range, so cursors are sequence numbers and do not care where a
//! sample lives (head, segment) or whether its block has been sealed since.
//!
//! ## Invariants
//!
//! 1. Per class, sequence numbers only grow, and segment files, frames in a
//!    file, and the pending block are in sequence order without overlap.
//! 2. `state.retained_from` and `state.acked_seq` are written and fsynced
//!    before any file holding samples below them is deleted or truncated;
//!    open deletes whatever a crash left below them.
//! 3. A block is written to a segment (and, unless `FsyncPolicy::Never`,
//!    fsynced) before the head frames that held it are truncated; recovery
//!    ignores head frames a segment already covers.
//! 4. Reads return samples of one class in append order; a frame whose CRC or
//!    decoding fails is counted once and never returned.
//! 5. Shedding for an append to class `c` only touches classes ranked at or
//!    below `c`, and takes the least critical class first, oldest data first.
//! 6. Counters (shed, expired, dropped, corrupt, torn) only grow and are
//!    persisted in the class ledger.
//!
//! ## Unconfigured classes
//!
//! A class directory on disk that is not in `Options::classes` (a class removed
//! from the config) is opened anyway: it can be read, acknowledged, expired and
//! inspected, it counts against the budget, and it is the first to be shed
//! (below every configured class). Appending to it is an error.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
mod buffer;
mod class;
mod codec;
mod error;
mod frame;
mod inspect;
mod slot;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use buffer::{Buffer, MIN_SEGMENT_BYTES};
pub use error::BufferError;
pub use inspect::inspect;

/// One sample. `labels` include `("__name__", metric)` and are sorted by name
/// (the caller's job; the buffer stores them exactly as given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every `append` is durable when it returns (one `fdatasync` per batch).
    Batch,
    /// Durable within about this interval: checked on each append and ack, so
    /// a caller that may go quiet should also call `sync` on a timer.
    Interval(Duration),
    /// Only on `sync` and on drop. A process crash loses nothing (the page
    /// cache survives); a power loss may lose anything not synced.
    Never,
}

/// How to open a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Priority classes, most critical first (e.g. critical, high, normal, low).
    pub classes: Vec<String>,
    /// Most bytes on disk (as `du` counts). At least two segments plus the
    /// fixed overhead of directories and ledgers (about 8 KiB per class).
    pub budget_bytes: u64,
    /// Size of a segment file, the unit of shedding. Minimum 4096.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Default maximum age for `expire` (`Buffer::set_max_age` overrides per class).
    pub max_age: Option<Duration>,
}

impl Default for Options {
    /// Four classes, 1 GiB budget, 16 MiB segments, fsync per batch, no max age.
    fn default() -> Self {
        Options {
            classes: ["critical", "high", "normal", "low"]
                .map(String::from)
                .to_vec(),
            budget_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            fsync: FsyncPolicy::Batch,
            max_age: None,
        }
    }
}

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AppendOutcome {
    /// `samples[..accepted]` are stored.
    pub accepted: usize,
    /// `samples[accepted..]` were dropped: no room without shedding a more
    /// critical class (counted in `dropped_incoming`).
    pub dropped: usize,
    /// What was shed to make room, in order.
    pub shed: Vec<ShedEvent>,
}

/// One unit of data removed to respect the budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShedEvent {
    pub class: String,
    /// Segment file name, or "head" for samples not yet sealed.
    pub segment: String,
    /// Sequence numbers the unit held: `first_seq..end_seq`.
    pub first_seq: u64,
    pub end_seq: u64,
    /// Unacknowledged samples lost.
    pub samples: u64,
    /// Bytes freed on disk.
    pub bytes: u64,
    /// How long the shed step (ledger write and unlinks) took.
    pub duration_us: u64,
}

/// One unit of data removed because it was older than the class's max age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpireEvent {
    pub class: String,
    pub segment: String,
    pub first_seq: u64,
    pub end_seq: u64,
    pub samples: u64,
    pub bytes: u64,
    pub newest_ms: Option<i64>,
}

/// Samples returned by `read`, with the token to acknowledge them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBatch {
    pub class: String,
    pub samples: Vec<Sample>,
    pub token: AckToken,
}

/// Samples returned by `read_series`: grouped by series, with the token.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBatch {
    pub class: String,
    pub series: Vec<SeriesSamples>,
    pub token: AckToken,
}

impl SeriesBatch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.series.iter().map(|s| s.timestamps_ms.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// The samples of one series in a `SeriesBatch`, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Vec<(String, String)>,
    pub timestamps_ms: Vec<i64>,
    pub values: Vec<f64>,
}

/// Identifies a read batch for `ack`: the class and the sequence numbers
/// `start_seq..end_seq` the batch covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckToken {
    class: String,
    start_seq: u64,
    end_seq: u64,
}

impl AckToken {
    pub fn class(&self) -> &str {
        &self.class
    }
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }
    pub fn end_seq(&self) -> u64 {
        self.end_seq
    }
}

/// The state of the whole buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub budget_bytes: u64,
    pub segment_bytes: u64,
    pub total_bytes_on_disk: u64,
    /// Most critical first; unconfigured classes last.
    pub classes: Vec<ClassSummary>,
}

/// The state of one priority class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSummary {
    pub class: String,
    /// False for a class found on disk but not in the configured list.
    pub configured: bool,
    /// 0 is the most critical.
    pub rank: usize,
    /// Samples stored and not yet acknowledged.
    pub samples: u64,
    pub bytes_on_disk: u64,
    /// Timestamp range of those samples.
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    pub segments: usize,
    /// Bytes in the head log (appends not yet sealed into a segment).
    pub head_bytes: u64,
    pub acked_seq: u64,
    pub next_seq: u64,
    pub shed_samples: u64,
    pub shed_bytes: u64,
    pub shed_segments: u64,
    pub expired_samples: u64,
    pub expired_bytes: u64,
    pub expired_segments: u64,
    /// Incoming samples refused because only more critical data was left.
    pub dropped_incoming: u64,
    pub corrupt_frames: u64,
    pub corrupt_samples: u64,
    pub torn_bytes_truncated: u64,
    pub torn_samples: u64,
    pub disk_full_events: u64,
    pub segment_list: Vec<SegmentInfo>,
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub name: String,
    pub first_seq: u64,
    pub end_seq: u64,
    pub frames: usize,
    /// Unacknowledged samples in it.
    pub samples: u64,
    pub bytes_on_disk: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}
