//! The in-memory side of "live first": the live queue and the ledger that
//! lets the backlog drain skip what the live lane already delivered.
//!
//! Every scraped sample is appended to the disk buffer *and* queued here.
//! The live lane sends from this queue at once (no rate limit), so fresh
//! data reaches the region even while days of backlog drain behind it. The
//! drain reads the buffer in order and, for each sample, asks the ledger:
//!
//! - **delivered** by the live lane → acknowledge without sending;
//! - **pending** in the live lane → wait a moment for the verdict;
//! - **unknown** → send it (at the backfill rate).
//!
//! Only a 2xx marks a key delivered, and the buffer is acknowledged only by
//! the drain, so what the ledger forgets (a restart, the capacity bound, an
//! evicted live batch) is simply sent again from the buffer: at-least-once,
//! with identical duplicates that Prometheus accepts silently. Those
//! duplicates are counted.
//!
//! A key is `(hash of the sorted label set, timestamp)`; the ledger holds
//! one map per class and is bounded by `capacity` keys in total.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::Sample;

/// `(series hash, timestamp_ms)`.
pub type Key = (u64, i64);

/// The ledger key of a sample. SipHash with fixed keys: stable across runs.
pub fn key_of(s: &Sample) -> Key {
    let mut h = std::hash::DefaultHasher::new();
    s.labels.hash(&mut h);
    (h.finish(), s.timestamp_ms)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    Pending,
    Delivered,
}

/// What the drain should do with a sample it read from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Delivered live: acknowledge without sending.
    Delivered,
    /// Still in the live lane: wait for its verdict.
    Pending,
    /// Not known: send it.
    Unknown,
}

/// See the module docs.
#[derive(Debug)]
pub struct Ledger {
    classes: Vec<HashMap<Key, KeyState>>,
    len: usize,
    capacity: usize,
}

impl Ledger {
    pub fn new(classes: usize, capacity: usize) -> Self {
        Ledger {
            classes: (0..classes).map(|_| HashMap::new()).collect(),
            len: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records keys entering the live lane. Beyond the capacity keys are not
    /// tracked (they will be sent by both lanes). Returns how many were.
    pub fn register(&mut self, class: usize, keys: &[Key]) -> usize {
        let map = &mut self.classes[class];
        let mut n = 0;
        for k in keys {
            if self.len >= self.capacity && !map.contains_key(k) {
                continue;
            }
            if map.insert(*k, KeyState::Pending).is_none() {
                self.len += 1;
            }
            n += 1;
        }
        n
    }

    /// The live lane's verdict on keys it had registered. Returns how many
    /// of the delivered keys the drain had already sent itself (duplicates
    /// at the receiver).
    pub fn resolve(&mut self, class: usize, keys: &[Key], delivered: bool) -> u64 {
        let map = &mut self.classes[class];
        let mut dups = 0;
        for k in keys {
            if delivered {
                match map.get_mut(k) {
                    Some(st) => *st = KeyState::Delivered,
                    None => dups += 1,
                }
            } else if map.remove(k).is_some() {
                self.len -= 1;
            }
        }
        dups
    }

    /// The drain's question about one sample. A delivered key is forgotten
    /// once seen: the drain passes each buffered sample once.
    pub fn check(&mut self, class: usize, key: &Key) -> Seen {
        let map = &mut self.classes[class];
        match map.get(key) {
            Some(KeyState::Delivered) => {
                map.remove(key);
                self.len -= 1;
                Seen::Delivered
            }
            Some(KeyState::Pending) => Seen::Pending,
            None => Seen::Unknown,
        }
    }

    /// The drain gave up waiting on a pending key and sends it itself; when
    /// the live lane delivers it too, that counts as a duplicate.
    pub fn take(&mut self, class: usize, key: &Key) {
        if self.classes[class].remove(key).is_some() {
            self.len -= 1;
        }
    }

    /// The drain found the class empty: every delivered key of it refers to
    /// a sample that was read already or is gone (shed, expired), so it can
    /// be forgotten. Pending keys stay.
    pub fn forget_delivered(&mut self, class: usize) {
        let map = &mut self.classes[class];
        let before = map.len();
        map.retain(|_, st| *st == KeyState::Pending);
        self.len -= before - map.len();
    }
}

/// One scrape's samples of one class, waiting for the live lane.
#[derive(Debug, Clone)]
pub struct LiveBatch {
    pub class: usize,
    pub samples: Vec<Sample>,
    pub keys: Vec<Key>,
}

/// The live queue: bounded by samples; when full the oldest entries are
/// evicted (they stay in the disk buffer, the drain sends them).
#[derive(Debug, Default)]
pub struct LiveQueue {
    entries: VecDeque<LiveBatch>,
    samples: usize,
    max_samples: usize,
}

impl LiveQueue {
    pub fn new(max_samples: usize) -> Self {
        LiveQueue {
            entries: VecDeque::new(),
            samples: 0,
            max_samples,
        }
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a batch at the back; returns what had to be evicted.
    pub fn push(&mut self, b: LiveBatch) -> Vec<LiveBatch> {
        self.samples += b.samples.len();
        self.entries.push_back(b);
        self.trim()
    }

    /// Puts a batch that failed back at the front; returns evictions.
    pub fn push_front(&mut self, b: LiveBatch) -> Vec<LiveBatch> {
        self.samples += b.samples.len();
        self.entries.push_front(b);
        self.trim()
    }

    fn trim(&mut self) -> Vec<LiveBatch> {
        let mut out = Vec::new();
        while self.samples > self.max_samples {
            let Some(b) = self.entries.pop_front() else {
                break;
            };
            self.samples -= b.samples.len();
            out.push(b);
        }
        out
    }

    /// Takes up to `max` samples, most critical class first, oldest first
    /// within a class, splitting an entry if needed. The result is grouped
    /// per class (one `LiveBatch` per class).
    pub fn take(&mut self, max: usize) -> Vec<LiveBatch> {
        let mut out: Vec<LiveBatch> = Vec::new();
        let mut room = max;
        let mut classes: Vec<usize> = self.entries.iter().map(|e| e.class).collect();
        classes.sort_unstable();
        classes.dedup();
        for class in classes {
            if room == 0 {
                break;
            }
            let mut taken = LiveBatch {
                class,
                samples: Vec::new(),
                keys: Vec::new(),
            };
            let mut i = 0;
            while i < self.entries.len() && room > 0 {
                if self.entries[i].class != class {
                    i += 1;
                    continue;
                }
                let e = &mut self.entries[i];
                if e.samples.len() <= room {
                    let Some(e) = self.entries.remove(i) else {
                        break;
                    };
                    room -= e.samples.len();
                    self.samples -= e.samples.len();
                    taken.samples.extend(e.samples);
                    taken.keys.extend(e.keys);
                } else {
                    let rest_s = e.samples.split_off(room);
                    let rest_k = e.keys.split_off(room);
                    let head_s = std::mem::replace(&mut e.samples, rest_s);
                    let head_k = std::mem::replace(&mut e.keys, rest_k);
                    self.samples -= head_s.len();
                    room = 0;
                    taken.samples.extend(head_s);
                    taken.keys.extend(head_k);
                }
            }
            if !taken.samples.is_empty() {
                out.push(taken);
            }
        }
        out
    }
}

/// A token bucket in samples per second (the backfill rate limit). Time is
/// passed in, so it is testable without a clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_s: f64,
}

impl TokenBucket {
    /// `rate` samples/s; `burst` is the bucket size (at least one batch).
    pub fn new(rate: u64, burst: usize, now_s: f64) -> Self {
        let burst = (burst as f64).max(1.0);
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last_s: now_s,
        }
    }

    /// Takes `n` tokens and returns how long to wait before sending them
    /// (zero if they were there). The debt is carried, so the long-run rate
    /// holds even for batches larger than the burst.
    pub fn take(&mut self, n: usize, now_s: f64) -> f64 {
        if self.rate <= 0.0 {
            return 0.0; // 0 = unlimited
        }
        self.tokens = (self.tokens + (now_s - self.last_s) * self.rate).min(self.burst);
        self.last_s = now_s;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, ts: i64) -> Sample {
        Sample {
            labels: vec![("__name__".into(), name.into())],
            timestamp_ms: ts,
            value: 1.0,
        }
    }

    fn batch(class: usize, n: usize, ts: i64) -> LiveBatch {
        let samples: Vec<Sample> = (0..n).map(|i| sample(&format!("m{i}"), ts)).collect();
        let keys = samples.iter().map(key_of).collect();
        LiveBatch {
            class,
            samples,
            keys,
        }
    }

    #[test]
    fn ledger_lifecycle() {
        let mut l = Ledger::new(2, 100);
        let a = key_of(&sample("a", 1));
        let b = key_of(&sample("b", 1));
        assert_eq!(l.register(0, &[a, b]), 2);
        assert_eq!(l.check(0, &a), Seen::Pending);
        assert_eq!(l.resolve(0, &[a], true), 0);
        assert_eq!(l.resolve(0, &[b], false), 0);
        assert_eq!(l.check(0, &a), Seen::Delivered);
        assert_eq!(l.check(0, &a), Seen::Unknown, "forgotten once seen");
        assert_eq!(
            l.check(0, &b),
            Seen::Unknown,
            "failed live keys are forgotten"
        );
        assert!(l.is_empty());
        // The drain took a pending key: the live delivery is a duplicate.
        l.register(1, &[a]);
        l.take(1, &a);
        assert_eq!(l.resolve(1, &[a], true), 1);
        assert!(l.is_empty());
    }

    #[test]
    fn ledger_capacity_and_forget() {
        let mut l = Ledger::new(1, 2);
        let keys: Vec<Key> = (0..4).map(|i| key_of(&sample("a", i))).collect();
        assert_eq!(l.register(0, &keys), 2);
        assert_eq!(l.len(), 2);
        // Untracked keys delivered live count as duplicates (the drain will
        // send them too).
        assert_eq!(l.resolve(0, &keys, true), 2);
        l.forget_delivered(0);
        assert!(l.is_empty());
        l.register(0, &keys[..1]);
        l.forget_delivered(0);
        assert_eq!(l.len(), 1, "pending keys survive");
    }

    #[test]
    fn queue_priority_split_and_eviction() {
        let mut q = LiveQueue::new(10);
        assert!(q.push(batch(1, 4, 1)).is_empty());
        assert!(q.push(batch(0, 4, 2)).is_empty());
        let ev = q.push(batch(1, 4, 3));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].samples[0].timestamp_ms, 1, "oldest evicted");
        assert_eq!(q.samples(), 8);
        let got = q.take(6);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].class, 0);
        assert_eq!(got[0].samples.len(), 4);
        assert_eq!(got[1].class, 1);
        assert_eq!(got[1].samples.len(), 2);
        assert_eq!(got[1].keys.len(), 2);
        assert_eq!(q.samples(), 2);
        let rest = q.take(100);
        assert_eq!(rest[0].samples[0].labels[0].1, "m2");
        assert!(q.is_empty());
    }

    #[test]
    fn token_bucket_holds_the_rate() {
        let mut b = TokenBucket::new(1000, 500, 0.0);
        assert_eq!(b.take(500, 0.0), 0.0);
        let w = b.take(500, 0.0);
        assert!((w - 0.5).abs() < 1e-9, "{w}");
        // After waiting, the debt is paid.
        assert_eq!(b.take(0, 0.5), 0.0);
        // Large batches: long-run rate holds.
        let mut t = 1.0;
        let mut b = TokenBucket::new(1000, 100, t);
        for _ in 0..10 {
            t += b.take(1000, t);
        }
        assert!((t - 1.0 - 9.9).abs() < 0.01, "{t}");
        assert_eq!(TokenBucket::new(0, 1, 0.0).take(1_000_000, 0.0), 0.0);
    }
}
