//! One priority class: its directory, segments, head log, pending block and cursor.
//!
//! The type and its bookkeeping live here; the work is split along its seams,
//! as Vector's disk buffer splits it: [`recovery`] (open after a crash),
//! [`writer`] (append and seal), [`reader`] (the drain's cursor and
//! acknowledgements) and [`removal`] (shedding and expiry).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{Block, Columns, Dictionary, Labels};
use crate::error::BufferError;
use crate::frame::{self, FrameHeader, FrameInfo, PayloadError};
use crate::slot::{self, SlotFile};
use crate::{Sample, SegmentInfo, SeriesSamples};

mod reader;
mod recovery;
mod removal;
mod writer;

/// zstd level for head frames (one append each: speed matters).
const HEAD_LEVEL: i32 = 1;
/// zstd level for segment frames (written once per block: size matters).
const SEGMENT_LEVEL: i32 = 3;
/// A block is sealed into a segment at the latest after this many samples,
/// which bounds the memory held per class (about 20 bytes a sample).
pub(crate) const PENDING_CAP: usize = 512 * 1024;
/// Allocation unit assumed when estimating growth before a write.
pub(crate) const BLOCK: u64 = 4096;
/// Most corrupt-frame positions remembered (to count each frame once).
const KNOWN_CORRUPT_CAP: usize = 256;
/// `known_corrupt` segment id used for the head file.
const HEAD_ID: u64 = u64::MAX;

pub(crate) const STATE_FILE: &str = "state";
pub(crate) const HEAD_FILE: &str = "head";
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// Persistent per-class counters. Every field only grows.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(crate) struct Counters {
    pub shed_samples: u64,
    pub shed_bytes: u64,
    pub shed_segments: u64,
    pub expired_samples: u64,
    pub expired_bytes: u64,
    pub expired_segments: u64,
    pub dropped_incoming: u64,
    pub corrupt_frames: u64,
    pub corrupt_samples: u64,
    pub torn_bytes_truncated: u64,
    pub torn_samples: u64,
    pub disk_full_events: u64,
}

/// The per-class ledger, stored in `<class>/state`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(crate) struct ClassState {
    /// Every sample with a lower sequence number has been acknowledged.
    pub acked_seq: u64,
    /// Every sample with a lower sequence number is gone (acked, shed or
    /// expired). Written BEFORE the files that held them are deleted, so an
    /// open finishes any deletion a crash interrupted.
    pub retained_from: u64,
    pub counters: Counters,
    /// (segment id, offset) of corrupt frames already counted.
    pub known_corrupt: Vec<(u64, u64)>,
}

impl ClassState {
    fn floor(&self) -> u64 {
        self.acked_seq.max(self.retained_from)
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    /// The first sequence number when created; also the file name.
    pub id: u64,
    pub path: PathBuf,
    pub frames: Vec<FrameInfo>,
    /// Append position: end of the last good frame.
    pub len: u64,
    pub disk_bytes: u64,
}

impl Segment {
    pub fn end_seq(&self) -> u64 {
        self.frames.last().map_or(self.id, |f| f.header.end_seq())
    }
    pub fn first_seq(&self) -> u64 {
        self.frames.first().map_or(self.id, |f| f.header.first_seq)
    }
    pub fn name(&self) -> String {
        segment_name(self.id)
    }
    fn live_samples(&self, floor: u64) -> u64 {
        self.frames
            .iter()
            .map(|f| {
                f.header
                    .end_seq()
                    .saturating_sub(floor.max(f.header.first_seq))
            })
            .sum()
    }
    fn ts_range(&self, floor: u64) -> Option<(i64, i64)> {
        self.frames
            .iter()
            .filter(|f| f.header.end_seq() > floor)
            .map(|f| (f.header.min_ts, f.header.max_ts))
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    }
    fn max_ts(&self) -> Option<i64> {
        self.frames.iter().map(|f| f.header.max_ts).max()
    }
    pub fn info(&self, floor: u64) -> SegmentInfo {
        let r = self.ts_range(floor);
        SegmentInfo {
            name: self.name(),
            first_seq: self.first_seq(),
            end_seq: self.end_seq(),
            frames: self.frames.len(),
            samples: self.live_samples(floor),
            bytes_on_disk: self.disk_bytes,
            oldest_ms: r.map(|r| r.0),
            newest_ms: r.map(|r| r.1),
        }
    }
}

pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// Samples appended but not yet sealed into a segment: they live in memory and,
/// for durability, in the head file as one frame per append.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub dict: Dictionary,
    pub cols: Columns,
    /// Sequence number of `cols[0]`; equals `next_seq` when empty.
    pub first_seq: u64,
}

impl Pending {
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.cols.len() as u64
    }
}

/// What a removal took away (shed or expired).
#[derive(Debug)]
pub(crate) struct Removed {
    pub segment: String,
    pub first_seq: u64,
    pub end_seq: u64,
    pub samples: u64,
    pub bytes: u64,
    pub newest_ms: Option<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoveReason {
    Shed,
    Expired,
}

/// Where a sequence number lives.
enum Locate {
    Frame { seg: usize, frame: usize },
    Pending,
    End,
}

pub(crate) struct ClassStore {
    pub name: String,
    pub dir: PathBuf,
    pub rank: usize,
    pub configured: bool,
    pub state: ClassState,
    state_file: Option<SlotFile>,
    state_dirty: bool,
    pub segments: VecDeque<Segment>,
    /// Write handle of the last segment, while it is open for appends.
    active: Option<File>,
    head: Option<File>,
    pub head_len: u64,
    pub head_disk_bytes: u64,
    pub pending: Pending,
    pub read_seq: u64,
    pub dir_disk_bytes: u64,
    pub state_disk_bytes: u64,
    seg_disk_total: u64,
    /// (segment id, open read handle)
    read_file: Option<(u64, File)>,
    /// (segment id, frame offset, decoded block)
    cache: Option<(u64, u64, Block)>,
    head_unsynced: bool,
    segment_unsynced: bool,
    pub max_age_ms: Option<i64>,
    /// Pending samples and time range when opened read-only (no decoding).
    ro_pending: Option<(u64, Option<(i64, i64)>)>,
    /// Bytes written to head and segment files since open.
    pub bytes_written: u64,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BufferError {
    BufferError::io(op, path)
}

fn file_disk_bytes(f: &File) -> io::Result<u64> {
    f.metadata().map(|m| slot::disk_bytes(&m))
}

impl ClassStore {
    /// Open a class directory, recovering it unless `read_only`.
    /// Read-only opens never create, truncate, delete or write anything.
    pub fn open(
        root: &Path,
        name: &str,
        rank: usize,
        configured: bool,
        segment_bytes: u64,
        durable: bool,
        read_only: bool,
    ) -> Result<ClassStore, BufferError> {
        let dir = root.join(name);
        if !read_only && !dir.exists() {
            std::fs::create_dir(&dir).map_err(io_err("create directory", &dir))?;
            if durable {
                slot::sync_dir(root)?;
            }
        }
        let state_path = dir.join(STATE_FILE);
        let (state_file, state) = if read_only {
            (
                None,
                slot::read_newest::<ClassState>(&state_path)?.map(|(_, s)| s),
            )
        } else {
            let (f, s) = SlotFile::open::<ClassState>(&state_path)?;
            (Some(f), s)
        };
        let state = state.unwrap_or_default();
        let mut c = ClassStore {
            name: name.to_string(),
            dir: dir.clone(),
            rank,
            configured,
            state,
            state_file,
            state_dirty: false,
            segments: VecDeque::new(),
            active: None,
            head: None,
            head_len: 0,
            head_disk_bytes: 0,
            pending: Pending::default(),
            read_seq: 0,
            dir_disk_bytes: 0,
            state_disk_bytes: 0,
            seg_disk_total: 0,
            read_file: None,
            cache: None,
            head_unsynced: false,
            segment_unsynced: false,
            max_age_ms: None,
            ro_pending: None,
            bytes_written: 0,
        };
        let before = c.state.clone();
        c.recover(segment_bytes, durable, read_only)?;
        if !read_only && c.state != before {
            c.write_state()?;
        }
        c.refresh_disk_bytes();
        Ok(c)
    }

    pub fn refresh_disk_bytes(&mut self) {
        self.dir_disk_bytes = slot::path_disk_bytes(&self.dir);
        self.state_disk_bytes = slot::path_disk_bytes(&self.dir.join(STATE_FILE));
        self.head_disk_bytes = slot::path_disk_bytes(&self.dir.join(HEAD_FILE));
        self.seg_disk_total = 0;
        for s in &mut self.segments {
            s.disk_bytes = slot::path_disk_bytes(&s.path);
            self.seg_disk_total += s.disk_bytes;
        }
    }

    pub fn disk_bytes(&self) -> u64 {
        self.dir_disk_bytes + self.state_disk_bytes + self.head_disk_bytes + self.seg_disk_total
    }

    pub fn next_seq(&self) -> u64 {
        self.pending.end_seq()
    }

    pub fn has_data(&self) -> bool {
        !self.segments.is_empty() || self.pending.cols.len() > 0
    }

    pub fn write_state(&mut self) -> Result<(), BufferError> {
        if let Some(f) = &mut self.state_file {
            f.write(&self.state)?;
            self.state_dirty = false;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- append

    /// Estimated allocation growth if `frame_len` bytes are appended to the head.
    pub fn head_growth(&self, frame_len: u64) -> u64 {
        round_up(self.head_len + frame_len).saturating_sub(self.head_disk_bytes)
    }

    /// Build the head frame for `cols` (ids in the pending dictionary).
    pub fn build_head_frame(&self, cols: &Columns) -> io::Result<Vec<u8>> {
        frame::build(&self.pending.dict.table, cols, self.next_seq(), HEAD_LEVEL)
    }

    pub fn mark_dirty(&mut self) {
        self.state_dirty = true;
    }
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

fn remove_file_if_exists(p: &Path) -> Result<(), BufferError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BufferError::io("delete", p)(e)),
    }
}

fn truncate(path: &Path, len: u64, durable: bool) -> Result<(), BufferError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    f.set_len(len)
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
        .map_err(io_err("truncate", path))
}
