//! Histories of client operations against etcd, for the checkers in
//! [`crate::linearizability`].
//!
//! Every operation is recorded as an invocation (before the request is sent)
//! and, when etcd answers, a completion with the answer and the header
//! revision etcd returned. An operation that never got an answer (timeout,
//! connection error, "no leader") stays open: it is indeterminate, it may or
//! may not have taken effect. Watch streams are recorded per client as
//! segments: one per (re)connection, each with the revision it asked to
//! start from and the events it delivered.
//!
//! Times are microseconds since the history's start ([`History::t0`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    /// A range read of one key, linearizable (etcd's default) or
    /// serializable (answered from the member's own state).
    Get {
        key: String,
        serializable: bool,
    },
    /// A transaction: `if mod_revision(key) == expect_rev then put key value`.
    /// `expect_value` is the value the client read at `expect_rev` (`None`:
    /// the key was absent, `expect_rev` 0); values are unique per write, so
    /// comparing the revision is comparing the value.
    Cas {
        key: String,
        expect_rev: i64,
        expect_value: Option<String>,
        value: String,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. }
            | Op::Get { key, .. }
            | Op::Cas { key, .. }
            | Op::Delete { key } => key,
        }
    }

    /// Whether the operation may change the key.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// etcd's answer. `rev` is the response header's revision: for a put, a
/// successful transaction or a delete that deleted something, the revision
/// of that write; otherwise the store's revision the answer was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Put {
        rev: i64,
    },
    /// `kv`: the key's (value, mod_revision), `None` when absent.
    Get {
        rev: i64,
        kv: Option<(String, i64)>,
    },
    Cas {
        rev: i64,
        succeeded: bool,
    },
    Delete {
        rev: i64,
        deleted: i64,
    },
}

impl Answer {
    pub fn rev(&self) -> i64 {
        match self {
            Answer::Put { rev }
            | Answer::Get { rev, .. }
            | Answer::Cas { rev, .. }
            | Answer::Delete { rev, .. } => *rev,
        }
    }

    /// Whether the answer says the operation wrote a new revision.
    pub fn wrote(&self) -> bool {
        match self {
            Answer::Put { .. } => true,
            Answer::Get { .. } => false,
            Answer::Cas { succeeded, .. } => *succeeded,
            Answer::Delete { deleted, .. } => *deleted > 0,
        }
    }
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Index in the history.
    pub id: usize,
    pub client: usize,
    /// The member the request went to (index in the client's URL list).
    pub member: usize,
    pub op: Op,
    pub invoked_us: u64,
    /// `None`: never answered (indeterminate).
    pub completed_us: Option<u64>,
    pub answer: Option<Answer>,
}

impl Entry {
    pub fn is_open(&self) -> bool {
        self.answer.is_none()
    }
}

/// One event a watch delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    /// The event's revision (the kv's mod_revision; for a delete, the
    /// delete's revision).
    pub rev: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
    pub at_us: u64,
}

/// Why a watch segment started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentStart {
    /// The first watch of the stream.
    Initial,
    /// After an error or a silent member: from the revision after the last
    /// event delivered.
    Reconnect,
    /// After etcd answered "compacted": the client re-read the keys and
    /// watches from the revision after that read.
    Relist,
}

/// A watch (re)connection: asked to start at `start_rev`, delivered `events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchSegment {
    pub start_rev: i64,
    pub why: SegmentStart,
    pub member: usize,
    pub events: Vec<WatchEvent>,
    /// etcd's compact_revision, when it ended the segment with "compacted".
    pub compacted: Option<i64>,
}

/// One client's watch stream over a key prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WatchLog {
    pub client: usize,
    pub prefix: String,
    pub segments: Vec<WatchSegment>,
}

impl WatchLog {
    /// The highest revision delivered so far.
    pub fn last_rev(&self) -> Option<i64> {
        self.segments
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.rev))
            .max()
    }
}

/// A shared, append-only history of operations (cheap to clone).
#[derive(Debug, Clone)]
pub struct History {
    t0: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            t0: Instant::now(),
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// When the history started: times are counted from here.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Microseconds since [`History::t0`].
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Microseconds from [`History::t0`] to `t` (0 when `t` is earlier).
    pub fn us_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records an invocation now; returns its id for [`History::complete`].
    pub fn invoke(&self, client: usize, member: usize, op: Op) -> usize {
        let now = self.now_us();
        let mut v = match self.entries.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        let id = v.len();
        v.push(Entry {
            id,
            client,
            member,
            op,
            invoked_us: now,
            completed_us: None,
            answer: None,
        });
        id
    }

    /// Records etcd's answer to operation `id`, now.
    pub fn complete(&self, id: usize, answer: Answer) {
        let now = self.now_us();
        let mut v = match self.entries.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = v.get_mut(id) {
            e.completed_us = Some(now);
            e.answer = Some(answer);
        }
    }

    /// Records an answer with given invocation and completion times (an
    /// operation that several entries stand for, such as one range read of
    /// many keys).
    pub fn complete_at(&self, id: usize, invoked_us: u64, completed_us: u64, answer: Answer) {
        let mut v = match self.entries.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = v.get_mut(id) {
            e.invoked_us = invoked_us;
            e.completed_us = Some(completed_us);
            e.answer = Some(answer);
        }
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<Entry> {
        match self.entries.lock() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Builds histories by hand (for the checker's own tests and for callers
/// that record operations they ran themselves): times are given, not read.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    pub entries: Vec<Entry>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// An answered operation.
    pub fn op(&mut self, client: usize, op: Op, from: u64, to: u64, answer: Answer) -> usize {
        let id = self.entries.len();
        self.entries.push(Entry {
            id,
            client,
            member: 0,
            op,
            invoked_us: from,
            completed_us: Some(to),
            answer: Some(answer),
        });
        id
    }

    /// An operation never answered.
    pub fn open(&mut self, client: usize, op: Op, from: u64) -> usize {
        let id = self.entries.len();
        self.entries.push(Entry {
            id,
            client,
            member: 0,
            op,
            invoked_us: from,
            completed_us: None,
            answer: None,
        });
        id
    }

    pub fn put(&mut self, c: usize, key: &str, value: &str, from: u64, to: u64, rev: i64) -> usize {
        self.op(
            c,
            Op::Put {
                key: key.into(),
                value: value.into(),
            },
            from,
            to,
            Answer::Put { rev },
        )
    }

    /// A linearizable get that saw `kv` (value, mod_revision) at `rev`.
    pub fn get(
        &mut self,
        c: usize,
        key: &str,
        from: u64,
        to: u64,
        rev: i64,
        kv: Option<(&str, i64)>,
    ) -> usize {
        self.op(
            c,
            Op::Get {
                key: key.into(),
                serializable: false,
            },
            from,
            to,
            Answer::Get {
                rev,
                kv: kv.map(|(v, m)| (v.to_string(), m)),
            },
        )
    }

    pub fn serializable_get(
        &mut self,
        c: usize,
        key: &str,
        from: u64,
        to: u64,
        rev: i64,
        kv: Option<(&str, i64)>,
    ) -> usize {
        self.op(
            c,
            Op::Get {
                key: key.into(),
                serializable: true,
            },
            from,
            to,
            Answer::Get {
                rev,
                kv: kv.map(|(v, m)| (v.to_string(), m)),
            },
        )
    }
}
