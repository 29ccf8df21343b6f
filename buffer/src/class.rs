//! One priority class: its directory, segments, head log, pending block and cursor.

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

    fn recover(
        &mut self,
        segment_bytes: u64,
        durable: bool,
        read_only: bool,
    ) -> Result<(), BufferError> {
        let mut ids = Vec::new();
        let mut has_head = false;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BufferError::io("list", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            if fname == HEAD_FILE {
                has_head = true;
            } else if let Some(id) = fname
                .strip_suffix(SEGMENT_SUFFIX)
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        // Finish deletions a crash interrupted: a segment is wholly below the
        // floor when the next one starts at or below it.
        let floor = self.state.floor();
        let mut keep = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let next = ids.get(i + 1).copied();
            if next.is_some_and(|n| n <= floor) {
                if !read_only {
                    let p = self.dir.join(segment_name(id));
                    remove_file_if_exists(&p)?;
                }
            } else {
                keep.push(id);
            }
        }

        let n = keep.len();
        for (i, id) in keep.into_iter().enumerate() {
            let path = self.dir.join(segment_name(id));
            let last = i + 1 == n;
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BufferError::io("open", &path)(e)),
            };
            let len = file.metadata().map_err(io_err("stat", &path))?.len();
            let scan = frame::scan(&file, len, last).map_err(io_err("read", &path))?;
            for d in &scan.damaged {
                self.note_corrupt(id, d.offset, d.samples);
            }
            let mut seg_len = len;
            if scan.valid_end < len {
                if last {
                    // Torn tail of the segment being appended to: cut it off.
                    self.state.counters.torn_bytes_truncated += len - scan.valid_end;
                    self.state.counters.torn_samples += scan.tail_samples;
                    if !read_only {
                        truncate(&path, scan.valid_end, durable)?;
                    }
                    seg_len = scan.valid_end;
                } else {
                    // Sealed segments are never rewritten: count the damage.
                    self.note_corrupt(id, scan.valid_end, scan.tail_samples);
                }
            }
            if scan.frames.is_empty() && last {
                if !read_only {
                    remove_file_if_exists(&path)?;
                }
                continue;
            }
            self.segments.push_back(Segment {
                id,
                path,
                frames: scan.frames,
                len: seg_len,
                disk_bytes: 0,
            });
        }

        if !read_only && let Some(last) = self.segments.back() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&last.path)
                .map_err(io_err("open", &last.path))?;
            self.active = Some(f);
        }

        // The head: frames beyond what segments hold become the pending block.
        let seg_end = self.segments.back().map_or(0, |s| s.end_seq());
        let floor = self.state.floor().max(seg_end);
        self.pending.first_seq = floor;
        if has_head {
            let path = self.dir.join(HEAD_FILE);
            let file = if read_only {
                File::open(&path)
            } else {
                OpenOptions::new().read(true).write(true).open(&path)
            };
            match file {
                Ok(file) => {
                    self.recover_head(file, &path, floor, segment_bytes, durable, read_only)?
                }
                Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(BufferError::io("open", &path)(e)),
            }
        }
        self.read_seq = self.state.floor();
        if !read_only {
            self.prune_known_corrupt();
        }
        Ok(())
    }

    fn recover_head(
        &mut self,
        file: File,
        path: &Path,
        floor: u64,
        segment_bytes: u64,
        durable: bool,
        read_only: bool,
    ) -> Result<(), BufferError> {
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        let scan = frame::scan(&file, len, true).map_err(io_err("read", path))?;
        for d in &scan.damaged {
            self.note_corrupt(HEAD_ID, d.offset, d.samples);
        }
        if scan.valid_end < len {
            self.state.counters.torn_bytes_truncated += len - scan.valid_end;
            self.state.counters.torn_samples += scan.tail_samples;
            if !read_only {
                file.set_len(scan.valid_end)
                    .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
                    .map_err(io_err("truncate", path))?;
            }
        }
        self.head_len = scan.valid_end;
        if read_only {
            let mut samples = 0u64;
            let mut range: Option<(i64, i64)> = None;
            let mut end = floor;
            for f in scan.frames.iter().filter(|f| f.header.end_seq() > floor) {
                samples += f.header.end_seq() - floor.max(f.header.first_seq);
                let r = (f.header.min_ts, f.header.max_ts);
                range = Some(range.map_or(r, |a| (a.0.min(r.0), a.1.max(r.1))));
                end = end.max(f.header.end_seq());
            }
            self.ro_pending = Some((samples, range));
            self.pending.first_seq = end;
            return Ok(());
        }
        self.head = Some(file);
        for f in scan.frames.iter().filter(|f| f.header.end_seq() > floor) {
            let h = f.header;
            let block = match self
                .head
                .as_ref()
                .map(|file| frame::read_frame(file, f.offset, &h))
            {
                Some(Ok(b)) => b,
                Some(Err(PayloadError::Io(e))) => return Err(BufferError::io("read", path)(e)),
                Some(Err(PayloadError::Corrupt)) | None => {
                    self.note_corrupt(HEAD_ID, f.offset, u64::from(h.count));
                    continue;
                }
            };
            let start = floor.max(h.first_seq);
            if self.pending.cols.len() > 0 && start != self.pending.end_seq() {
                // A gap (damaged frame): seal what came before it.
                self.pending_to_segments(segment_bytes, durable)?;
            }
            if self.pending.cols.len() == 0 {
                self.pending.first_seq = start;
            }
            let skip = (start - h.first_seq) as usize;
            for i in skip..block.cols.len() {
                let id = self
                    .pending
                    .dict
                    .intern(&block.table[block.cols.series[i] as usize]);
                self.pending
                    .cols
                    .push(id, block.cols.ts[i], block.cols.vals[i]);
            }
        }
        if self.pending.cols.len() == 0 {
            let end = scan.frames.last().map_or(0, |f| f.header.end_seq());
            self.pending.first_seq = end.max(floor);
        }
        Ok(())
    }

    fn note_corrupt(&mut self, seg: u64, offset: u64, samples: u64) {
        if self.state.known_corrupt.contains(&(seg, offset)) {
            return;
        }
        self.state.counters.corrupt_frames += 1;
        self.state.counters.corrupt_samples += samples;
        if self.state.known_corrupt.len() >= KNOWN_CORRUPT_CAP {
            self.state.known_corrupt.remove(0);
        }
        self.state.known_corrupt.push((seg, offset));
        self.state_dirty = true;
    }

    fn prune_known_corrupt(&mut self) {
        let ids: Vec<u64> = self.segments.iter().map(|s| s.id).collect();
        let head_len = self.head_len;
        self.state.known_corrupt.retain(|&(seg, off)| {
            if seg == HEAD_ID {
                off < head_len
            } else {
                ids.contains(&seg)
            }
        });
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

    /// Append a built head frame and add its rows to the pending block.
    /// On error the head is rolled back to its previous length.
    pub fn write_head(
        &mut self,
        frame_bytes: &[u8],
        cols: Columns,
        durable: bool,
    ) -> Result<(), io::Error> {
        if self.head.is_none() {
            let path = self.dir.join(HEAD_FILE);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            if durable {
                File::open(&self.dir)?.sync_all()?;
            }
            self.head = Some(f);
        }
        let Some(head) = self.head.as_ref() else {
            return Err(io::Error::other("head file not open"));
        };
        if let Err(e) = head.write_all_at(frame_bytes, self.head_len) {
            let _ = head.set_len(self.head_len);
            self.head_disk_bytes = file_disk_bytes(head).unwrap_or(self.head_disk_bytes);
            return Err(e);
        }
        self.head_len += frame_bytes.len() as u64;
        self.bytes_written += frame_bytes.len() as u64;
        self.head_disk_bytes = file_disk_bytes(head)?;
        self.head_unsynced = true;
        let c = &mut self.pending.cols;
        c.series.extend_from_slice(&cols.series);
        c.ts.extend_from_slice(&cols.ts);
        c.vals.extend_from_slice(&cols.vals);
        Ok(())
    }

    pub fn wants_seal(&self, head_limit: u64) -> bool {
        self.head_len >= head_limit || self.pending.cols.len() >= PENDING_CAP
    }

    /// Seal the pending block into the active segment (rolling to a new one as
    /// needed), then empty the head. Frames are at most `segment_bytes / 2`.
    /// Rows are removed from the pending block as their frames land, so an
    /// error part-way leaves nothing duplicated; the head keeps everything
    /// until the end (recovery ignores head frames a segment already holds).
    pub fn seal_pending(&mut self, segment_bytes: u64, durable: bool) -> Result<(), BufferError> {
        self.pending_to_segments(segment_bytes, durable)?;
        self.pending.dict.clear();
        self.truncate_head()
    }

    /// Write the pending rows as segment frames (the head is left alone).
    fn pending_to_segments(
        &mut self,
        segment_bytes: u64,
        durable: bool,
    ) -> Result<(), BufferError> {
        let max_frame = (segment_bytes / 2).max(1);
        while self.pending.cols.len() > 0 {
            let mut n = self.pending.cols.len();
            let bytes = loop {
                let cols = Columns {
                    series: self.pending.cols.series[..n].to_vec(),
                    ts: self.pending.cols.ts[..n].to_vec(),
                    vals: self.pending.cols.vals[..n].to_vec(),
                };
                let b = frame::build(
                    &self.pending.dict.table,
                    &cols,
                    self.pending.first_seq,
                    SEGMENT_LEVEL,
                )
                .map_err(io_err("encode", &self.dir))?;
                if b.len() as u64 <= max_frame || n == 1 {
                    break b;
                }
                n = n.div_ceil(2);
            };
            self.append_segment_frame(&bytes, segment_bytes, durable)?;
            self.pending.cols.drain_front(n);
            self.pending.first_seq += n as u64;
        }
        if durable && self.segment_unsynced {
            self.sync_active()?;
        }
        Ok(())
    }

    fn append_segment_frame(
        &mut self,
        bytes: &[u8],
        segment_bytes: u64,
        durable: bool,
    ) -> Result<(), BufferError> {
        let need_roll = match (self.active.as_ref(), self.segments.back()) {
            (Some(_), Some(s)) => s.len > 0 && s.len + bytes.len() as u64 > segment_bytes,
            _ => true,
        };
        if need_roll {
            if durable && self.segment_unsynced {
                self.sync_active()?;
            }
            self.active = None;
            let Some(h) = FrameHeader::parse(bytes) else {
                return Err(BufferError::io("encode", &self.dir)(io::Error::other(
                    "bad frame",
                )));
            };
            let id = h.first_seq;
            let path = self.dir.join(segment_name(id));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            if durable {
                slot::sync_dir(&self.dir)?;
            }
            self.segments.push_back(Segment {
                id,
                path,
                frames: Vec::new(),
                len: 0,
                disk_bytes: 0,
            });
            self.active = Some(f);
        }
        let (Some(f), Some(seg)) = (self.active.as_ref(), self.segments.back_mut()) else {
            return Err(BufferError::io("append", &self.dir)(io::Error::other(
                "no active segment",
            )));
        };
        let Some(h) = FrameHeader::parse(bytes) else {
            return Err(BufferError::io("encode", &seg.path)(io::Error::other(
                "bad frame",
            )));
        };
        if let Err(e) = f.write_all_at(bytes, seg.len) {
            let _ = f.set_len(seg.len);
            let new_disk = file_disk_bytes(f).unwrap_or(seg.disk_bytes);
            self.seg_disk_total = self.seg_disk_total - seg.disk_bytes + new_disk;
            seg.disk_bytes = new_disk;
            // Never leave an empty new segment behind.
            if seg.frames.is_empty() {
                let _ = std::fs::remove_file(&seg.path);
                self.seg_disk_total -= seg.disk_bytes;
                self.segments.pop_back();
                self.active = None;
            }
            return Err(BufferError::Io {
                op: "append to",
                path: self.dir.join("segment"),
                source: e,
            });
        }
        seg.frames.push(FrameInfo {
            offset: seg.len,
            header: h,
        });
        seg.len += bytes.len() as u64;
        self.bytes_written += bytes.len() as u64;
        let new_disk = file_disk_bytes(f).map_err(io_err("stat", &seg.path))?;
        self.seg_disk_total = self.seg_disk_total - seg.disk_bytes + new_disk;
        seg.disk_bytes = new_disk;
        self.segment_unsynced = true;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), BufferError> {
        if let (Some(f), Some(s)) = (self.active.as_ref(), self.segments.back())
            && let Err(e) = f.sync_data()
        {
            // Never retry fsync on the same descriptor (its error state is
            // gone after the first report): start a new segment instead.
            self.active = None;
            return Err(BufferError::io("sync", &s.path)(e));
        }
        self.segment_unsynced = false;
        Ok(())
    }

    fn truncate_head(&mut self) -> Result<(), BufferError> {
        if self.head_len == 0 {
            return Ok(());
        }
        if let Some(h) = &self.head {
            let path = self.dir.join(HEAD_FILE);
            h.set_len(0).map_err(io_err("truncate", &path))?;
            self.head_disk_bytes = file_disk_bytes(h).unwrap_or(0);
        }
        self.head_len = 0;
        self.head_unsynced = false;
        self.state.known_corrupt.retain(|&(s, _)| s != HEAD_ID);
        Ok(())
    }

    /// fsync what is not yet durable. Returns whether anything was done.
    pub fn sync(&mut self) -> Result<(), BufferError> {
        if self.head_unsynced {
            if let Some(h) = &self.head {
                let path = self.dir.join(HEAD_FILE);
                h.sync_data().map_err(io_err("sync", &path))?;
            }
            self.head_unsynced = false;
        }
        if self.segment_unsynced {
            self.sync_active()?;
        }
        if self.state_dirty {
            self.write_state()?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- remove

    /// Remove the oldest `n_segments` segments, and the pending block too when
    /// `with_pending` (only valid when all segments go). The ledger is written
    /// durably before any file is deleted.
    pub fn remove_oldest(
        &mut self,
        n_segments: usize,
        with_pending: bool,
        reason: RemoveReason,
    ) -> Result<Vec<Removed>, BufferError> {
        let n_segments = n_segments.min(self.segments.len());
        let with_pending =
            with_pending && n_segments == self.segments.len() && self.pending.cols.len() > 0;
        if n_segments == 0 && !with_pending {
            return Ok(Vec::new());
        }
        let floor = self.state.floor();
        let mut removed = Vec::new();
        for s in self.segments.iter().take(n_segments) {
            removed.push(Removed {
                segment: s.name(),
                first_seq: s.first_seq(),
                end_seq: s.end_seq(),
                samples: s.live_samples(floor),
                bytes: s.disk_bytes,
                newest_ms: s.max_ts(),
            });
        }
        let mut new_floor = self
            .segments
            .get(n_segments)
            .map_or(self.pending.first_seq, |s| s.first_seq());
        if with_pending {
            let p = &self.pending;
            let newest = p.cols.ts.iter().copied().max();
            removed.push(Removed {
                segment: HEAD_FILE.to_string(),
                first_seq: p.first_seq,
                end_seq: p.end_seq(),
                samples: p.cols.len() as u64,
                bytes: self.head_disk_bytes,
                newest_ms: newest,
            });
            new_floor = p.end_seq();
        }
        let c = &mut self.state.counters;
        for r in &removed {
            match reason {
                RemoveReason::Shed => {
                    c.shed_samples += r.samples;
                    c.shed_bytes += r.bytes;
                    c.shed_segments += 1;
                }
                RemoveReason::Expired => {
                    c.expired_samples += r.samples;
                    c.expired_bytes += r.bytes;
                    c.expired_segments += 1;
                }
            }
        }
        self.state.retained_from = self.state.retained_from.max(new_floor);
        self.state.acked_seq = self.state.acked_seq.max(self.state.retained_from);
        self.read_seq = self.read_seq.max(self.state.retained_from);
        self.write_state()?;
        self.delete_segments(n_segments)?;
        if with_pending {
            self.pending.cols.clear();
            self.pending.first_seq = new_floor;
            self.truncate_head()?;
        }
        Ok(removed)
    }

    /// Delete the first `n` segment files. The ledger must already cover them.
    fn delete_segments(&mut self, n: usize) -> Result<(), BufferError> {
        for _ in 0..n {
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.active = None;
                self.segment_unsynced = false;
            }
            if self.read_file.as_ref().is_some_and(|(id, _)| *id == s.id) {
                self.read_file = None;
            }
            if self.cache.as_ref().is_some_and(|(id, _, _)| *id == s.id) {
                self.cache = None;
            }
            self.seg_disk_total -= s.disk_bytes;
            remove_file_if_exists(&s.path)?;
            self.state.known_corrupt.retain(|&(id, _)| id != s.id);
        }
        Ok(())
    }

    /// Segments (oldest first) whose newest sample is older than `cutoff_ms`,
    /// and whether the pending block is too (only if all segments are).
    pub fn expired_prefix(&self, cutoff_ms: i64) -> (usize, bool) {
        let n = self
            .segments
            .iter()
            .take_while(|s| s.max_ts().is_none_or(|t| t < cutoff_ms))
            .count();
        let pending = n == self.segments.len()
            && self.pending.cols.len() > 0
            && self.pending.cols.ts.iter().all(|&t| t < cutoff_ms);
        (n, pending)
    }

    /// How many of the oldest segments must go to free `excess` bytes (at least one).
    pub fn segments_to_free(&self, excess: u64) -> usize {
        let mut freed = 0u64;
        let mut n = 0;
        for s in &self.segments {
            n += 1;
            freed += s.disk_bytes;
            if freed >= excess {
                break;
            }
        }
        n
    }

    // ------------------------------------------------------------ read / ack

    fn locate(&self, seq: u64) -> Locate {
        // First segment whose end is beyond seq.
        let si = self.segments.partition_point(|s| s.end_seq() <= seq);
        if let Some(seg) = self.segments.get(si) {
            let fi = seg.frames.partition_point(|f| f.header.end_seq() <= seq);
            if fi < seg.frames.len() {
                return Locate::Frame { seg: si, frame: fi };
            }
        }
        if self.pending.cols.len() > 0 && seq < self.pending.end_seq() {
            return Locate::Pending;
        }
        Locate::End
    }

    /// Visit the next up to `max` samples from the in-memory read position and
    /// advance it. `visit(run, table, series, ts, value_bits)`: `run` changes
    /// whenever the series table changes (a new block). Returns (visited,
    /// start_seq, end_seq).
    pub fn read_with(
        &mut self,
        max: usize,
        mut visit: impl FnMut(usize, &[Labels], u32, i64, u64),
    ) -> Result<(usize, u64, u64), BufferError> {
        let mut seq = self.read_seq.max(self.state.floor());
        let start = seq;
        let corrupt_before = self.state.counters.corrupt_frames;
        let mut n = 0usize;
        let mut run = 0usize;
        while n < max {
            let (cols, table, first) = match self.locate(seq) {
                Locate::End => break,
                Locate::Pending => (
                    &self.pending.cols,
                    &self.pending.dict.table,
                    self.pending.first_seq,
                ),
                Locate::Frame { seg, frame } => {
                    let s = &self.segments[seg];
                    let (sid, info) = (s.id, s.frames[frame]);
                    match self.decoded(sid, seg, info)? {
                        // Corrupt: counted, skipped, never returned.
                        None => {
                            seq = info.header.end_seq();
                            continue;
                        }
                        Some(block) => (&block.cols, &block.table, info.header.first_seq),
                    }
                }
            };
            let i0 = (seq.max(first) - first) as usize;
            let i1 = (i0 + (max - n)).min(cols.len());
            run += 1;
            for i in i0..i1 {
                visit(run, table, cols.series[i], cols.ts[i], cols.vals[i]);
            }
            n += i1 - i0;
            seq = first + i1 as u64;
        }
        self.read_seq = seq;
        if self.state.counters.corrupt_frames != corrupt_before {
            // Corrupt frames found while reading: persist the count now.
            self.write_state()?;
        }
        Ok((n, start, seq))
    }

    /// Next up to `max` samples as `Sample`s. Returns (samples, start, end).
    pub fn read(&mut self, max: usize) -> Result<(Vec<Sample>, u64, u64), BufferError> {
        let mut out = Vec::with_capacity(max.min(1 << 16));
        let (_, start, end) = self.read_with(max, |_, table, s, ts, v| {
            out.push(Sample {
                labels: table[s as usize].clone(),
                timestamp_ms: ts,
                value: f64::from_bits(v),
            })
        })?;
        Ok((out, start, end))
    }

    /// Next up to `max` samples grouped by series (one label clone per series
    /// and block instead of one per sample). Returns (series, start, end).
    pub fn read_series(
        &mut self,
        max: usize,
    ) -> Result<(Vec<SeriesSamples>, u64, u64), BufferError> {
        let mut out: Vec<SeriesSamples> = Vec::new();
        let mut group_of: Vec<u32> = Vec::new();
        let mut current_run = 0;
        let (_, start, end) = self.read_with(max, |run, table, s, ts, v| {
            if run != current_run {
                current_run = run;
                group_of.clear();
                group_of.resize(table.len(), u32::MAX);
            }
            let g = &mut group_of[s as usize];
            if *g == u32::MAX {
                *g = out.len() as u32;
                out.push(SeriesSamples {
                    labels: table[s as usize].clone(),
                    timestamps_ms: Vec::new(),
                    values: Vec::new(),
                });
            }
            let group = &mut out[*g as usize];
            group.timestamps_ms.push(ts);
            group.values.push(f64::from_bits(v));
        })?;
        Ok((out, start, end))
    }

    /// The decoded block of a frame, from the one-block cache when possible.
    /// `None` when the frame is corrupt (counted once).
    fn decoded(
        &mut self,
        sid: u64,
        seg_idx: usize,
        info: FrameInfo,
    ) -> Result<Option<&Block>, BufferError> {
        let hit = self
            .cache
            .as_ref()
            .is_some_and(|(id, off, _)| *id == sid && *off == info.offset);
        if !hit {
            self.cache = None;
            if self.read_file.as_ref().is_none_or(|(id, _)| *id != sid) {
                let path = &self.segments[seg_idx].path;
                let f = File::open(path).map_err(io_err("open", path))?;
                self.read_file = Some((sid, f));
            }
            let Some((_, f)) = self.read_file.as_ref() else {
                return Ok(None);
            };
            match frame::read_frame(f, info.offset, &info.header) {
                Ok(b) => self.cache = Some((sid, info.offset, b)),
                Err(PayloadError::Corrupt) => {
                    self.note_corrupt(sid, info.offset, u64::from(info.header.count));
                    return Ok(None);
                }
                Err(PayloadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.note_corrupt(sid, info.offset, u64::from(info.header.count));
                    return Ok(None);
                }
                Err(PayloadError::Io(e)) => {
                    return Err(BufferError::io("read", &self.segments[seg_idx].path)(e));
                }
            }
        }
        Ok(self.cache.as_ref().map(|(_, _, b)| b))
    }

    /// Cumulative acknowledgement of everything below `end_seq`.
    /// Returns whether the ledger must be written now (files to delete).
    pub fn ack(&mut self, end_seq: u64, write_now: bool) -> Result<(), BufferError> {
        if end_seq <= self.state.acked_seq {
            return Ok(());
        }
        self.state.acked_seq = end_seq;
        self.read_seq = self.read_seq.max(end_seq);
        let p = &mut self.pending;
        if end_seq > p.first_seq {
            let n = ((end_seq - p.first_seq) as usize).min(p.cols.len());
            p.cols.drain_front(n);
            p.first_seq += n as u64;
        }
        let n_done = self
            .segments
            .iter()
            .take_while(|s| s.end_seq() <= end_seq)
            .count();
        let head_done = self.pending.cols.len() == 0 && self.head_len > 0;
        if n_done > 0 || head_done || write_now {
            // Durable cursor first, then delete (never the other way round).
            self.write_state()?;
            self.delete_segments(n_done)?;
            if head_done {
                self.truncate_head()?;
            }
        } else {
            self.state_dirty = true;
        }
        Ok(())
    }

    pub fn rewind(&mut self) {
        self.read_seq = self.state.floor();
    }

    // --------------------------------------------------------------- summary

    /// Unacknowledged samples and their timestamp range.
    pub fn backlog(&self) -> (u64, Option<(i64, i64)>) {
        let floor = self.state.floor();
        let (pending_n, pending_range) = self.ro_pending.unwrap_or_else(|| {
            let p = &self.pending.cols;
            let range = p.ts.iter().fold(None, |acc: Option<(i64, i64)>, &t| {
                Some(acc.map_or((t, t), |a| (a.0.min(t), a.1.max(t))))
            });
            (p.len() as u64, range)
        });
        let seg: u64 = self.segments.iter().map(|s| s.live_samples(floor)).sum();
        let range = self
            .segments
            .iter()
            .filter_map(|s| s.ts_range(floor))
            .chain(pending_range)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        (seg + pending_n, range)
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
