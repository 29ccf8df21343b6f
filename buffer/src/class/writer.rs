//! Writing: samples are appended to the head log (one frame per batch), and
//! the pending block is sealed into segment frames when the head grows large.

use super::*;

impl ClassStore {
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
    pub(super) fn pending_to_segments(
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

    pub(super) fn append_segment_frame(
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

    pub(super) fn sync_active(&mut self) -> Result<(), BufferError> {
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

    pub(super) fn truncate_head(&mut self) -> Result<(), BufferError> {
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
}
