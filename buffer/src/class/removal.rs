//! Removal: the oldest segments are dropped when the class is shed or its
//! samples expire, and the counters say why.

use super::*;

impl ClassStore {
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
    pub(super) fn delete_segments(&mut self, n: usize) -> Result<(), BufferError> {
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
}
