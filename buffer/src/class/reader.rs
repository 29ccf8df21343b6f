//! Reading: the drain's cursor walks segment frames and the pending block in
//! sequence order; an acknowledgement moves the floor and frees what is behind it.

use super::*;

impl ClassStore {
    pub(super) fn locate(&self, seq: u64) -> Locate {
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
    pub(super) fn decoded(
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
}
