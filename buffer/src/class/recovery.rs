//! Opening a class after a crash: the segments are read frame by frame, a torn
//! or corrupt tail is cut off and counted, and the head log's frames that no
//! segment holds yet become the pending block again.

use super::*;

impl ClassStore {
    pub(super) fn recover(
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

    pub(super) fn recover_head(
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

    pub(super) fn note_corrupt(&mut self, seg: u64, offset: u64, samples: u64) {
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

    pub(super) fn prune_known_corrupt(&mut self) {
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
}
