//! The seam between the pipeline and the disk buffer.
//!
//! The pipeline talks to [`SampleStore`]; production uses
//! `edgeplane_buffer::Buffer` through it, and unit tests use [`MemStore`].
//! The contract is the buffer's: per-class FIFO, `read` hands out a batch
//! and a token without removing anything, `ack` durably removes everything
//! up to that batch, `rewind` re-reads from the last ack.

use std::collections::{BTreeMap, VecDeque};

use crate::Sample;

/// A store error, with its chain already rendered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub fn from_err(e: &dyn std::error::Error) -> Self {
        StoreError(crate::scrape::error_chain(e))
    }
}

/// Backlog of one class, as shown in the status.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassBacklog {
    pub class: String,
    pub samples: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    /// Samples shed to keep the byte budget, since the buffer was created.
    pub shed_samples: u64,
    /// Samples expired for age by the buffer.
    pub expired_samples: u64,
    /// Incoming samples the buffer refused (no room without shedding a
    /// more critical class).
    pub dropped_samples: u64,
    /// Bytes of torn tails cut off the class's append log when the buffer
    /// was opened (a write interrupted by a crash), since it was created.
    pub torn_bytes: u64,
    /// Samples in those torn tails whose frame header was still readable.
    pub torn_samples: u64,
}

/// A batch read from the store and the token that acknowledges it.
pub type Read<T> = Option<(Vec<Sample>, T)>;

/// What the pipeline needs from the disk buffer.
pub trait SampleStore: Send + 'static {
    type Token: Send + 'static;
    /// Stores the samples; returns how many it could not take (dropped
    /// because only more critical data could have made room).
    fn append(&mut self, class: &str, samples: &[Sample]) -> Result<usize, StoreError>;
    fn read(&mut self, class: &str, max: usize) -> Result<Read<Self::Token>, StoreError>;
    fn ack(&mut self, token: &Self::Token) -> Result<(), StoreError>;
    fn rewind(&mut self, class: &str) -> Result<(), StoreError>;
    /// Drops samples older than the store's age limit.
    fn expire(&mut self, now_ms: i64) -> Result<(), StoreError>;
    fn backlog(&self) -> Vec<ClassBacklog>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// An in-memory store for tests: FIFO per class, sample-count budget that
/// sheds the lowest class's oldest samples first.
#[derive(Debug, Default)]
pub struct MemStore {
    classes: Vec<String>,
    queues: BTreeMap<String, VecDeque<Sample>>,
    read_pos: BTreeMap<String, usize>,
    shed: BTreeMap<String, u64>,
    budget_samples: usize,
}

/// Token of [`MemStore`]: class and number of samples read.
#[derive(Debug)]
pub struct MemToken {
    class: String,
    upto: usize,
}

impl MemStore {
    pub fn new(classes: &[String], budget_samples: usize) -> Self {
        MemStore {
            classes: classes.to_vec(),
            budget_samples,
            ..Default::default()
        }
    }

    fn total(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

impl SampleStore for MemStore {
    type Token = MemToken;

    fn append(&mut self, class: &str, samples: &[Sample]) -> Result<usize, StoreError> {
        self.queues
            .entry(class.to_owned())
            .or_default()
            .extend(samples.iter().cloned());
        while self.total() > self.budget_samples {
            let victim = self
                .classes
                .iter()
                .rev()
                .find(|c| self.queues.get(*c).is_some_and(|q| !q.is_empty()))
                .cloned();
            let Some(victim) = victim else { break };
            if let Some(q) = self.queues.get_mut(&victim) {
                q.pop_front();
            }
            *self.shed.entry(victim.clone()).or_default() += 1;
            if let Some(p) = self.read_pos.get_mut(&victim) {
                *p = p.saturating_sub(1);
            }
        }
        Ok(0)
    }

    fn read(&mut self, class: &str, max: usize) -> Result<Read<MemToken>, StoreError> {
        let q = self.queues.entry(class.to_owned()).or_default();
        let pos = self.read_pos.entry(class.to_owned()).or_default();
        if *pos >= q.len() {
            return Ok(None);
        }
        let end = (*pos + max).min(q.len());
        let batch: Vec<Sample> = q.range(*pos..end).cloned().collect();
        *pos = end;
        Ok(Some((
            batch,
            MemToken {
                class: class.to_owned(),
                upto: end,
            },
        )))
    }

    fn ack(&mut self, t: &MemToken) -> Result<(), StoreError> {
        let q = self.queues.entry(t.class.clone()).or_default();
        let n = t.upto.min(q.len());
        q.drain(..n);
        if let Some(p) = self.read_pos.get_mut(&t.class) {
            *p = p.saturating_sub(n);
        }
        Ok(())
    }

    fn rewind(&mut self, class: &str) -> Result<(), StoreError> {
        self.read_pos.insert(class.to_owned(), 0);
        Ok(())
    }

    fn expire(&mut self, _now_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }

    fn backlog(&self) -> Vec<ClassBacklog> {
        self.classes
            .iter()
            .map(|c| {
                let q = self.queues.get(c);
                ClassBacklog {
                    class: c.clone(),
                    samples: q.map_or(0, |q| q.len() as u64),
                    bytes: q.map_or(0, |q| q.len() as u64 * 16),
                    oldest_ms: q.and_then(|q| q.iter().map(|s| s.timestamp_ms).min()),
                    newest_ms: q.and_then(|q| q.iter().map(|s| s.timestamp_ms).max()),
                    shed_samples: self.shed.get(c).copied().unwrap_or(0),
                    expired_samples: 0,
                    dropped_samples: 0,
                    torn_bytes: 0,
                    torn_samples: 0,
                }
            })
            .collect()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The real disk buffer.
impl SampleStore for edgeplane_buffer::Buffer {
    type Token = edgeplane_buffer::AckToken;

    fn append(&mut self, class: &str, samples: &[Sample]) -> Result<usize, StoreError> {
        match edgeplane_buffer::Buffer::append(self, class, samples) {
            Ok(o) => Ok(o.dropped),
            Err(e) => Err(StoreError::from_err(&e)),
        }
    }

    fn read(&mut self, class: &str, max: usize) -> Result<Read<Self::Token>, StoreError> {
        edgeplane_buffer::Buffer::read(self, class, max)
            .map(|b| b.map(|b| (b.samples, b.token)))
            .map_err(|e| StoreError::from_err(&e))
    }

    fn ack(&mut self, token: &Self::Token) -> Result<(), StoreError> {
        edgeplane_buffer::Buffer::ack(self, token).map_err(|e| StoreError::from_err(&e))
    }

    fn rewind(&mut self, class: &str) -> Result<(), StoreError> {
        edgeplane_buffer::Buffer::rewind(self, class);
        Ok(())
    }

    fn expire(&mut self, now_ms: i64) -> Result<(), StoreError> {
        edgeplane_buffer::Buffer::expire(self, now_ms)
            .map(|_| ())
            .map_err(|e| StoreError::from_err(&e))
    }

    fn backlog(&self) -> Vec<ClassBacklog> {
        self.summary()
            .classes
            .into_iter()
            .map(|c| ClassBacklog {
                class: c.class,
                samples: c.samples,
                bytes: c.bytes_on_disk,
                oldest_ms: c.oldest_ms,
                newest_ms: c.newest_ms,
                shed_samples: c.shed_samples,
                expired_samples: c.expired_samples,
                dropped_samples: c.dropped_incoming,
                torn_bytes: c.torn_bytes_truncated,
                torn_samples: c.torn_samples,
            })
            .collect()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        edgeplane_buffer::Buffer::sync(self).map_err(|e| StoreError::from_err(&e))
    }
}
