//! The `Buffer`: classes, budget, shedding, and the public operations.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::class::{ClassStore, RemoveReason, Removed};
use crate::codec::Columns;
use crate::error::{BufferError, is_enospc};
use crate::slot::{self, SlotFile};
use crate::{
    AckToken, AppendOutcome, ClassSummary, ExpireEvent, FsyncPolicy, Options, ReadBatch, Sample,
    SeriesBatch, ShedEvent, Summary,
};

pub(crate) const META_FILE: &str = "meta";
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Smallest segment accepted by `open`.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Samples per head frame (an append of more is split).
const CHUNK_SAMPLES: usize = 16 * 1024;
/// After ENOSPC the buffer keeps below the usage it had reached for this long,
/// then tries the configured budget again.
const DISK_FULL_HOLD: Duration = Duration::from_secs(30);

/// Root ledger: class order and settings, for `inspect`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(crate) struct Meta {
    pub format: u32,
    pub classes: Vec<String>,
    pub budget_bytes: u64,
    pub segment_bytes: u64,
}

pub(crate) const FORMAT: u32 = 1;

/// The priority disk buffer. See the crate documentation.
pub struct Buffer {
    dir: PathBuf,
    opts: Options,
    /// In priority order: configured classes as given, then unconfigured ones.
    classes: Vec<ClassStore>,
    meta: SlotFile,
    root_disk_bytes: u64,
    _lock: File,
    /// (usage when the disk said ENOSPC, when)
    disk_cap: Option<(u64, Instant)>,
    last_sync: Instant,
}

pub(crate) fn valid_class_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name != META_FILE
        && name != LOCK_FILE
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Class directories on disk (a valid name and a ledger inside), in name order.
/// Other directories are left alone.
pub(crate) fn classes_on_disk(dir: &Path) -> Result<Vec<String>, BufferError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(BufferError::io("list", dir))? {
        let entry = entry.map_err(BufferError::io("list", dir))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
            && valid_class_name(name)
            && entry.path().join(crate::class::STATE_FILE).is_file()
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

fn check_options(opts: &Options) -> Result<(), BufferError> {
    let bad = |m: String| Err(BufferError::InvalidOptions(m));
    if opts.classes.is_empty() {
        return bad("at least one priority class is needed".into());
    }
    for (i, c) in opts.classes.iter().enumerate() {
        if !valid_class_name(c) {
            return bad(format!(
                "class name {c:?} must be 1-64 characters of A-Z a-z 0-9 _ - . (not starting with '.', not \"meta\" or \"LOCK\")"
            ));
        }
        if opts.classes[..i].contains(c) {
            return bad(format!("class {c:?} is listed twice"));
        }
    }
    if opts.segment_bytes < MIN_SEGMENT_BYTES {
        return bad(format!(
            "segment_bytes must be at least {MIN_SEGMENT_BYTES}"
        ));
    }
    if opts.budget_bytes < 2 * opts.segment_bytes {
        return bad(format!(
            "budget_bytes ({}) must be at least two segments ({})",
            opts.budget_bytes,
            2 * opts.segment_bytes
        ));
    }
    Ok(())
}

impl Buffer {
    /// Open (creating if needed) the buffer in `dir`, recovering from any crash:
    /// torn tails are truncated and counted, interrupted deletions finished,
    /// and the read position of every class restarts at its durable ack cursor.
    ///
    /// Class directories found on disk but not in `opts.classes` stay readable
    /// and are reported in the summary (`configured: false`); they rank below
    /// every configured class, so they are shed first, and cannot be appended to.
    pub fn open(dir: &Path, opts: Options) -> Result<Buffer, BufferError> {
        check_options(&opts)?;
        std::fs::create_dir_all(dir).map_err(BufferError::io("create directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(BufferError::io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BufferError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BufferError::io("lock", &lock_path)(e));
            }
        }
        let durable = !matches!(opts.fsync, FsyncPolicy::Never);
        let (mut meta, old_meta) = SlotFile::open::<Meta>(&dir.join(META_FILE))?;

        let mut names: Vec<(String, bool)> =
            opts.classes.iter().map(|c| (c.clone(), true)).collect();
        for c in classes_on_disk(dir)? {
            if !opts.classes.contains(&c) {
                names.push((c, false));
            }
        }
        let mut classes = Vec::with_capacity(names.len());
        for (rank, (name, configured)) in names.into_iter().enumerate() {
            classes.push(ClassStore::open(
                dir,
                &name,
                rank,
                configured,
                opts.segment_bytes,
                durable,
                false,
            )?);
        }
        let new_meta = Meta {
            format: FORMAT,
            classes: opts.classes.clone(),
            budget_bytes: opts.budget_bytes,
            segment_bytes: opts.segment_bytes,
        };
        if old_meta.as_ref() != Some(&new_meta) {
            meta.write(&new_meta)?;
        }
        if durable {
            slot::sync_dir(dir)?;
        }
        let mut b = Buffer {
            dir: dir.to_path_buf(),
            opts,
            classes,
            meta,
            root_disk_bytes: 0,
            _lock: lock,
            disk_cap: None,
            last_sync: Instant::now(),
        };
        b.refresh_root_bytes();
        b.check_budget_covers_overhead(b.opts.budget_bytes)?;
        let mut events = Vec::new();
        b.make_room(0, 0, &mut events)?;
        Ok(b)
    }

    fn refresh_root_bytes(&mut self) {
        self.root_disk_bytes = root_disk_bytes(&self.dir);
    }

    /// Bytes that exist whatever the data: directories, ledgers, the lock.
    fn overhead(&self) -> u64 {
        self.root_disk_bytes
            + self
                .classes
                .iter()
                .map(|c| c.dir_disk_bytes + c.state_disk_bytes)
                .sum::<u64>()
    }

    fn check_budget_covers_overhead(&self, budget: u64) -> Result<(), BufferError> {
        let need = self.overhead() + 2 * self.opts.segment_bytes;
        if budget < need {
            return Err(BufferError::InvalidOptions(format!(
                "budget_bytes ({budget}) must cover the fixed overhead ({} bytes of directories and \
                 ledgers) plus two segments: at least {need}",
                self.overhead()
            )));
        }
        Ok(())
    }

    fn durable(&self) -> bool {
        !matches!(self.opts.fsync, FsyncPolicy::Never)
    }

    /// Bytes on disk, as `du` counts them (allocated blocks of every file and
    /// directory of the buffer).
    pub fn disk_usage(&self) -> u64 {
        self.root_disk_bytes + self.classes.iter().map(|c| c.disk_bytes()).sum::<u64>()
    }

    fn effective_budget(&mut self) -> u64 {
        if let Some((_, at)) = self.disk_cap
            && at.elapsed() >= DISK_FULL_HOLD
        {
            self.disk_cap = None;
        }
        match self.disk_cap {
            Some((cap, _)) => cap.min(self.opts.budget_bytes),
            None => self.opts.budget_bytes,
        }
    }

    fn class_index(&self, class: &str) -> Result<usize, BufferError> {
        self.classes
            .iter()
            .position(|c| c.name == class)
            .ok_or_else(|| BufferError::UnknownClass(class.to_string()))
    }

    /// Shed until `need` more bytes fit, taking only from classes ranked at or
    /// below `rank` (a larger rank is less critical), lowest class and oldest
    /// segment first. `false` when only more critical data is left.
    fn make_room(
        &mut self,
        rank: usize,
        need: u64,
        events: &mut Vec<ShedEvent>,
    ) -> Result<bool, BufferError> {
        loop {
            let usage = self.disk_usage();
            let limit = self.effective_budget();
            if usage + need <= limit {
                return Ok(true);
            }
            let Some(v) = self
                .classes
                .iter()
                .rposition(|c| c.rank >= rank && c.has_data())
            else {
                return Ok(false);
            };
            let excess = usage + need - limit;
            let started = Instant::now();
            let c = &mut self.classes[v];
            let n = c.segments_to_free(excess);
            let with_pending = c.segments.is_empty();
            let removed = c.remove_oldest(n, with_pending, RemoveReason::Shed)?;
            let micros = started.elapsed().as_micros() as u64;
            let name = c.name.clone();
            events.extend(removed.into_iter().map(|r| shed_event(&name, r, micros)));
        }
    }

    /// Append a batch to `class`. Samples are stored in order; when the budget
    /// is reached, older and less critical data is shed first. If the room
    /// cannot be made without touching a more critical class, the rest of the
    /// batch is dropped and counted: `samples[..accepted]` are stored,
    /// `samples[accepted..]` are not.
    ///
    /// Durability follows the fsync policy: with `Batch`, the batch is on
    /// stable storage when this returns.
    pub fn append(
        &mut self,
        class: &str,
        samples: &[Sample],
    ) -> Result<AppendOutcome, BufferError> {
        let ci = self.class_index(class)?;
        if !self.classes[ci].configured {
            return Err(BufferError::NotConfigured(class.to_string()));
        }
        let durable = self.durable();
        let seg = self.opts.segment_bytes;
        let head_limit = seg / 4;
        let rank = self.classes[ci].rank;
        let mut out = AppendOutcome::default();
        let mut chunk = CHUNK_SAMPLES;
        let mut i = 0;
        while i < samples.len() {
            let n = chunk.min(samples.len() - i);
            let c = &mut self.classes[ci];
            let mut cols = Columns::default();
            for (pos, s) in samples[i..i + n].iter().enumerate() {
                let id = c.pending.dict.intern_at(i + pos, &s.labels);
                cols.push(id, s.timestamp_ms, s.value.to_bits());
            }
            let frame = c
                .build_head_frame(&cols)
                .map_err(BufferError::io("encode a frame for", c.dir.clone()))?;
            if frame.len() as u64 > head_limit {
                if n > 1 {
                    chunk = n.div_ceil(2);
                    continue;
                }
                break; // one sample larger than a quarter segment: cannot be stored
            }
            let need = c.head_growth(frame.len() as u64);
            if !self.make_room(rank, need, &mut out.shed)? {
                break;
            }
            let c = &mut self.classes[ci];
            if let Err(e) = c.write_head(&frame, cols, durable) {
                let source_path = c.dir.clone();
                if is_enospc(&e) {
                    return Err(self.disk_full(
                        ci,
                        need,
                        out.accepted,
                        samples.len() - out.accepted,
                        e,
                        &mut out,
                    ));
                }
                return Err(BufferError::io("append to the head of", source_path)(e));
            }
            out.accepted += n;
            i += n;
            if c.wants_seal(head_limit)
                && let Err(e) = c.seal_pending(seg, durable)
            {
                if e.is_disk_full() {
                    let source = std::io::Error::from(std::io::ErrorKind::StorageFull);
                    return Err(self.disk_full(
                        ci,
                        seg / 2,
                        out.accepted,
                        samples.len() - out.accepted,
                        source,
                        &mut out,
                    ));
                }
                return Err(e);
            }
        }
        out.dropped = samples.len() - out.accepted;
        if out.dropped > 0 {
            let c = &mut self.classes[ci];
            c.state.counters.dropped_incoming += out.dropped as u64;
            c.mark_dirty();
        }
        self.sync_after_write(ci)?;
        // Allocation can differ from the estimate (file-system preallocation):
        // settle any difference now.
        self.make_room(rank, 0, &mut out.shed)?;
        Ok(out)
    }

    /// ENOSPC: remember what the disk holds, shed to make room for the next
    /// attempt, and build the error for the caller.
    fn disk_full(
        &mut self,
        ci: usize,
        need: u64,
        accepted: usize,
        not_stored: usize,
        source: std::io::Error,
        out: &mut AppendOutcome,
    ) -> BufferError {
        let usage = self.disk_usage();
        self.disk_cap = Some((usage, Instant::now()));
        let rank = self.classes[ci].rank;
        let c = &mut self.classes[ci];
        c.state.counters.disk_full_events += 1;
        if not_stored > 0 {
            c.state.counters.dropped_incoming += not_stored as u64;
        }
        c.mark_dirty();
        let _ = self.make_room(rank, need + self.opts.segment_bytes, &mut out.shed);
        let freed = usage.saturating_sub(self.disk_usage());
        let _ = self.classes[ci].sync();
        BufferError::DiskFull {
            class: self.classes[ci].name.clone(),
            accepted,
            not_stored,
            freed_bytes: freed,
            source,
        }
    }

    fn sync_after_write(&mut self, ci: usize) -> Result<(), BufferError> {
        match self.opts.fsync {
            FsyncPolicy::Batch => self.classes[ci].sync(),
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync(),
            _ => Ok(()),
        }
    }

    /// Make everything appended and acknowledged so far durable.
    pub fn sync(&mut self) -> Result<(), BufferError> {
        for c in &mut self.classes {
            c.sync()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// The next up to `max_samples` unacknowledged samples of `class`, oldest
    /// first, with their original timestamps. Repeated reads continue where the
    /// previous one stopped (an in-memory position); `rewind` or a reopen
    /// restarts from the durable ack cursor. `None` when nothing is left.
    pub fn read(
        &mut self,
        class: &str,
        max_samples: usize,
    ) -> Result<Option<ReadBatch>, BufferError> {
        let ci = self.class_index(class)?;
        let c = &mut self.classes[ci];
        let (samples, start, end) = c.read(max_samples)?;
        if samples.is_empty() {
            return Ok(None);
        }
        Ok(Some(ReadBatch {
            class: class.to_string(),
            samples,
            token: AckToken {
                class: class.to_string(),
                start_seq: start,
                end_seq: end,
            },
        }))
    }

    /// Like `read`, but grouped by series: each series' labels are cloned once
    /// per batch (per block the batch spans) instead of once per sample, which
    /// is what a remote-write encoder wants and several times faster. A series
    /// may appear more than once when the batch spans blocks; its entries are
    /// in order. The token acknowledges exactly like `read`'s.
    pub fn read_series(
        &mut self,
        class: &str,
        max_samples: usize,
    ) -> Result<Option<SeriesBatch>, BufferError> {
        let ci = self.class_index(class)?;
        let (series, start, end) = self.classes[ci].read_series(max_samples)?;
        if series.is_empty() {
            return Ok(None);
        }
        Ok(Some(SeriesBatch {
            class: class.to_string(),
            series,
            token: AckToken {
                class: class.to_string(),
                start_seq: start,
                end_seq: end,
            },
        }))
    }

    /// Acknowledge a batch: its samples, and every earlier one of the class,
    /// will not be delivered again. Acks are cumulative: acking a later batch
    /// acknowledges earlier unacked ones too, and acking a batch at or below
    /// the cursor is a no-op. Segments wholly acknowledged are deleted, after
    /// the new cursor is durable. With `FsyncPolicy::Batch` the cursor is
    /// durable when this returns; otherwise at the next `sync`/interval.
    pub fn ack(&mut self, token: &AckToken) -> Result<(), BufferError> {
        let ci = self.class_index(&token.class)?;
        let write_now = matches!(self.opts.fsync, FsyncPolicy::Batch);
        let c = &mut self.classes[ci];
        if token.end_seq > c.next_seq() || token.start_seq > token.end_seq {
            return Err(BufferError::InvalidToken {
                class: token.class.clone(),
                reason: format!(
                    "covers sequence numbers {}..{} but the class ends at {}",
                    token.start_seq,
                    token.end_seq,
                    c.next_seq()
                ),
            });
        }
        c.ack(token.end_seq, write_now)?;
        if let FsyncPolicy::Interval(d) = self.opts.fsync
            && self.last_sync.elapsed() >= d
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Forget unacknowledged reads of `class`: the next read starts again at the
    /// ack cursor (use after a failed send). Unknown classes are ignored.
    pub fn rewind(&mut self, class: &str) {
        if let Ok(ci) = self.class_index(class) {
            self.classes[ci].rewind();
        }
    }

    /// Delete, per class with a maximum age, the oldest whole segments whose
    /// newest sample is older than `now_ms - max_age` (counted as expired, not
    /// shed). Stops at the first segment that is still young.
    pub fn expire(&mut self, now_ms: i64) -> Result<Vec<ExpireEvent>, BufferError> {
        let mut events = Vec::new();
        for c in &mut self.classes {
            let age = c.max_age_ms.or(self
                .opts
                .max_age
                .map(|d| d.as_millis().min(i64::MAX as u128) as i64));
            let Some(age) = age else { continue };
            let cutoff = now_ms.saturating_sub(age);
            let (n, with_pending) = c.expired_prefix(cutoff);
            for r in c.remove_oldest(n, with_pending, RemoveReason::Expired)? {
                events.push(ExpireEvent {
                    class: c.name.clone(),
                    segment: r.segment,
                    first_seq: r.first_seq,
                    end_seq: r.end_seq,
                    samples: r.samples,
                    bytes: r.bytes,
                    newest_ms: r.newest_ms,
                });
            }
        }
        Ok(events)
    }

    /// Override `Options::max_age` for one class (`None` restores the default).
    pub fn set_max_age(
        &mut self,
        class: &str,
        max_age: Option<Duration>,
    ) -> Result<(), BufferError> {
        let ci = self.class_index(class)?;
        self.classes[ci].max_age_ms = max_age.map(|d| d.as_millis().min(i64::MAX as u128) as i64);
        Ok(())
    }

    /// Change the budget; sheds at once (lowest class, oldest first) to fit.
    pub fn set_budget(&mut self, budget_bytes: u64) -> Result<Vec<ShedEvent>, BufferError> {
        let mut probe = self.opts.clone();
        probe.budget_bytes = budget_bytes;
        check_options(&probe)?;
        self.check_budget_covers_overhead(budget_bytes)?;
        self.opts.budget_bytes = budget_bytes;
        self.disk_cap = None;
        self.meta.write(&Meta {
            format: FORMAT,
            classes: self.opts.classes.clone(),
            budget_bytes,
            segment_bytes: self.opts.segment_bytes,
        })?;
        let mut events = Vec::new();
        self.make_room(0, 0, &mut events)?;
        Ok(events)
    }

    /// Per-class and total figures, from memory (no I/O).
    pub fn summary(&self) -> Summary {
        summarize(
            &self.classes,
            self.opts.budget_bytes,
            self.opts.segment_bytes,
            self.disk_usage(),
        )
    }

    /// Bytes written to head and segment files since open (write amplification).
    pub fn bytes_written(&self) -> u64 {
        self.classes.iter().map(|c| c.bytes_written).sum()
    }

    /// The directory this buffer lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // Best effort: a clean shutdown leaves every ack and append durable.
        let _ = self.sync();
    }
}

/// Allocated bytes of the root directory and its own files.
pub(crate) fn root_disk_bytes(dir: &Path) -> u64 {
    slot::path_disk_bytes(dir)
        + slot::path_disk_bytes(&dir.join(META_FILE))
        + slot::path_disk_bytes(&dir.join(LOCK_FILE))
}

fn shed_event(class: &str, r: Removed, micros: u64) -> ShedEvent {
    ShedEvent {
        class: class.to_string(),
        segment: r.segment,
        first_seq: r.first_seq,
        end_seq: r.end_seq,
        samples: r.samples,
        bytes: r.bytes,
        duration_us: micros,
    }
}

pub(crate) fn summarize(classes: &[ClassStore], budget: u64, segment: u64, total: u64) -> Summary {
    let classes = classes
        .iter()
        .map(|c| {
            let (samples, range) = c.backlog();
            let k = c.state.counters;
            let floor = c.state.acked_seq.max(c.state.retained_from);
            ClassSummary {
                class: c.name.clone(),
                configured: c.configured,
                rank: c.rank,
                samples,
                bytes_on_disk: c.disk_bytes(),
                oldest_ms: range.map(|r| r.0),
                newest_ms: range.map(|r| r.1),
                segments: c.segments.len(),
                head_bytes: c.head_len,
                acked_seq: c.state.acked_seq,
                next_seq: c.next_seq(),
                shed_samples: k.shed_samples,
                shed_bytes: k.shed_bytes,
                shed_segments: k.shed_segments,
                expired_samples: k.expired_samples,
                expired_bytes: k.expired_bytes,
                expired_segments: k.expired_segments,
                dropped_incoming: k.dropped_incoming,
                corrupt_frames: k.corrupt_frames,
                corrupt_samples: k.corrupt_samples,
                torn_bytes_truncated: k.torn_bytes_truncated,
                torn_samples: k.torn_samples,
                disk_full_events: k.disk_full_events,
                segment_list: c.segments.iter().map(|s| s.info(floor)).collect(),
            }
        })
        .collect();
    Summary {
        budget_bytes: budget,
        segment_bytes: segment,
        total_bytes_on_disk: total,
        classes,
    }
}
