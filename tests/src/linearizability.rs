//! Checks a recorded [`crate::history`] against etcd's guarantees.
//!
//! - **Revisions** (whole history, near-linear): two different writes never
//!   share a revision; real time is respected (an operation that completed
//!   before another was invoked has a revision no higher, and strictly lower
//!   when the later one is a write); a client's serializable reads from one
//!   member never go back to an older revision.
//! - **Linearizability per key.** Every written value is unique, so a read
//!   names the write it saw. Writes are placed at the revisions etcd gave
//!   them (an unanswered write at the revision a read or a watch saw it at),
//!   and every answer is checked against the key's state at its own
//!   revision: a read shows the last write at or before its revision, a
//!   successful compare-and-set found the key as it expected, a refused one
//!   did not, a delete found what it says. When all of that holds, the
//!   order of revisions is a linearization (with the real-time check above).
//!   When something does not hold on a key, that key is searched the
//!   Porcupine way (Wing & Gong's backtracking with Lowe's cache of
//!   (linearized set, state)) over its values only: unanswered operations may
//!   take effect at any point after their invocation, or never. A key whose
//!   history has no linearization is `not_linearizable`; an anomaly on a key
//!   whose values still linearize is kept only if no unanswered write could
//!   explain it.
//! - **Watches**: per stream, revisions never decrease (several events may
//!   share one); no event is delivered twice; every event is a write of the
//!   history at that revision; every write at a revision from a segment's
//!   start to the last revision it delivered was delivered (so after a
//!   reconnect from R, everything from R).
//!
//! [`lost_writes`] lists acknowledged writes that a later linearizable read
//! found undone.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Answer, Entry, Op, SegmentStart, WatchLog};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: &'static str,
    pub key: Option<String>,
    /// History entry ids involved.
    pub ops: Vec<usize>,
    pub detail: String,
}

/// The checker's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub ops: usize,
    pub answered: usize,
    pub indeterminate: usize,
    pub keys: usize,
    pub watch_streams: usize,
    pub watch_events: usize,
    /// Keys whose revisions did not explain the history and were searched.
    pub keys_searched: usize,
    /// Searched keys whose anomalies unanswered writes explain.
    pub keys_explained_by_indeterminate: usize,
    /// Searches that ran out of budget (their anomalies are reported).
    pub searches_inconclusive: usize,
    /// Violations per kind (all of them).
    pub counts: BTreeMap<&'static str, usize>,
    /// The first [`DETAILS_PER_KIND`] violations of each kind.
    pub violations: Vec<Violation>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.counts.is_empty()
    }

    /// Total violations of every kind.
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    fn push(&mut self, v: Violation) {
        let n = self.counts.entry(v.kind).or_default();
        *n += 1;
        if *n <= DETAILS_PER_KIND {
            self.violations.push(v);
        }
    }

    /// One line per kind, for logs.
    pub fn summary(&self) -> String {
        if self.ok() {
            return format!(
                "linearizable: {} ops ({} indeterminate) on {} keys, {} watch events",
                self.ops, self.indeterminate, self.keys, self.watch_events
            );
        }
        let kinds: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "NOT OK: {} ({} ops, {} indeterminate, {} keys, {} watch events)",
            kinds.join(", "),
            self.ops,
            self.indeterminate,
            self.keys,
            self.watch_events
        )
    }
}

/// Violations kept with details per kind (all are counted).
pub const DETAILS_PER_KIND: usize = 20;

/// Steps of the search per key before it gives up.
pub const SEARCH_BUDGET: u64 = 2_000_000;

fn viol(kind: &'static str, key: Option<&str>, ops: Vec<usize>, detail: String) -> Violation {
    Violation {
        kind,
        key: key.map(str::to_string),
        ops,
        detail,
    }
}

/// What one write did to its key.
#[derive(Debug, Clone)]
struct Write {
    id: usize,
    /// `None`: a delete.
    value: Option<String>,
    /// The revision etcd answered, or the one a read saw it at.
    rev: Option<i64>,
    /// The revision came from an observation (the write was unanswered).
    learned: bool,
}

/// The writes of the history (answered writes that wrote, and unanswered
/// ones), per key, with revisions learned from reads; and the violations
/// found on the way (a read of a value nobody wrote, a write seen at two
/// revisions).
fn writes_by_key(h: &[Entry], out: &mut Verdict) -> HashMap<String, Vec<Write>> {
    let mut by_key: HashMap<String, Vec<Write>> = HashMap::new();
    for e in h {
        let w = match (&e.op, &e.answer) {
            (Op::Put { value, .. }, Some(a)) | (Op::Cas { value, .. }, Some(a)) if a.wrote() => {
                Some((Some(value.clone()), Some(a.rev())))
            }
            (Op::Delete { .. }, Some(a)) if a.wrote() => Some((None, Some(a.rev()))),
            (Op::Put { value, .. } | Op::Cas { value, .. }, None) => {
                Some((Some(value.clone()), None))
            }
            (Op::Delete { .. }, None) => Some((None, None)),
            _ => None,
        };
        if let Some((value, rev)) = w {
            by_key
                .entry(e.op.key().to_string())
                .or_default()
                .push(Write {
                    id: e.id,
                    value,
                    rev,
                    learned: false,
                });
        }
    }
    // Learn the revision of unanswered writes from what reads saw.
    for e in h {
        let (
            Op::Get { key, .. },
            Some(Answer::Get {
                kv: Some((v, m)),
                rev,
            }),
        ) = (&e.op, &e.answer)
        else {
            continue;
        };
        let ws = by_key.entry(key.clone()).or_default();
        match ws.iter_mut().find(|w| w.value.as_deref() == Some(v.as_str())) {
            None => out.push(viol(
                "phantom_read",
                Some(key),
                vec![e.id],
                format!("read at revision {rev} returned {v:?} (mod_revision {m}), which no operation wrote"),
            )),
            Some(w) => match w.rev {
                Some(r) if r != *m => out.push(viol(
                    "revision_mismatch",
                    Some(key),
                    vec![w.id, e.id],
                    format!(
                        "write {} of {v:?} is at revision {r}, but read {} saw it with mod_revision {m}",
                        w.id, e.id
                    ),
                )),
                Some(_) => {}
                None => {
                    w.rev = Some(*m);
                    w.learned = true;
                }
            },
        }
        if *m > *rev {
            out.push(viol(
                "revision_mismatch",
                Some(key),
                vec![e.id],
                format!("read at revision {rev} returned a value with a later mod_revision {m}"),
            ));
        }
    }
    by_key
}

/// The global revision checks; returns the keys involved in a violation
/// (they are searched too).
fn check_revisions(
    h: &[Entry],
    by_key: &HashMap<String, Vec<Write>>,
    out: &mut Verdict,
) -> HashSet<String> {
    let mut suspects: HashSet<String> = HashSet::new();
    let key_of = |id: usize| h.get(id).map(|e| e.op.key().to_string());
    // Two different writes at one revision.
    let mut at: HashMap<i64, usize> = HashMap::new();
    let mut writes: Vec<(i64, usize, &str)> = Vec::new();
    for (k, ws) in by_key {
        for w in ws {
            if let Some(r) = w.rev {
                writes.push((r, w.id, k));
            }
        }
    }
    writes.sort_unstable();
    for (r, id, k) in writes {
        if let Some(other) = at.insert(r, id)
            && other != id
        {
            suspects.extend(key_of(other));
            suspects.extend(key_of(id));
            out.push(viol(
                "duplicate_revision",
                Some(k),
                vec![other, id],
                format!("writes {other} and {id} both have revision {r}"),
            ));
        }
    }
    // Real time: completed-before means revision no higher (strictly lower
    // before a write). Unanswered writes with a learned revision count as
    // the later operation only (they never completed).
    struct Point {
        id: usize,
        invoked: u64,
        completed: Option<u64>,
        rev: i64,
        write: bool,
    }
    let mut learned: HashMap<usize, i64> = HashMap::new();
    for ws in by_key.values() {
        for w in ws {
            if let (true, Some(r)) = (w.learned, w.rev) {
                learned.insert(w.id, r);
            }
        }
    }
    let mut pts: Vec<Point> = Vec::new();
    for e in h {
        if matches!(
            e.op,
            Op::Get {
                serializable: true,
                ..
            }
        ) {
            continue;
        }
        match &e.answer {
            Some(a) => pts.push(Point {
                id: e.id,
                invoked: e.invoked_us,
                completed: e.completed_us,
                rev: a.rev(),
                write: a.wrote(),
            }),
            None => {
                if let Some(r) = learned.get(&e.id) {
                    pts.push(Point {
                        id: e.id,
                        invoked: e.invoked_us,
                        completed: None,
                        rev: *r,
                        write: true,
                    });
                }
            }
        }
    }
    let mut by_completion: Vec<&Point> = pts.iter().filter(|p| p.completed.is_some()).collect();
    by_completion.sort_by_key(|p| p.completed);
    let mut by_invocation: Vec<&Point> = pts.iter().collect();
    by_invocation.sort_by_key(|p| p.invoked);
    let mut i = 0;
    let mut max: Option<(i64, usize)> = None;
    for b in by_invocation {
        while i < by_completion.len() && by_completion[i].completed.is_some_and(|c| c < b.invoked) {
            let a = by_completion[i];
            if max.is_none_or(|(r, _)| a.rev > r) {
                max = Some((a.rev, a.id));
            }
            i += 1;
        }
        if let Some((r, a)) = max
            && (b.rev < r || (b.write && b.rev == r))
        {
            suspects.extend(key_of(a));
            suspects.extend(key_of(b.id));
            out.push(viol(
                "revision_went_back",
                h.get(b.id).map(|e| e.op.key()),
                vec![a, b.id],
                format!(
                    "operation {} (revision {}{}) was invoked after operation {a} completed at revision {r}",
                    b.id,
                    b.rev,
                    if b.write { ", a write" } else { "" }
                ),
            ));
        }
    }
    // Serializable reads: per client and member, never older than a read
    // this client already saw there.
    let mut last: HashMap<(usize, usize), (i64, usize)> = HashMap::new();
    let mut ser: Vec<&Entry> = h
        .iter()
        .filter(|e| {
            matches!(
                e.op,
                Op::Get {
                    serializable: true,
                    ..
                }
            ) && e.answer.is_some()
        })
        .collect();
    ser.sort_by_key(|e| e.invoked_us);
    for e in ser {
        let Some(a) = &e.answer else { continue };
        let slot = last.entry((e.client, e.member)).or_insert((a.rev(), e.id));
        if a.rev() < slot.0 {
            out.push(viol(
                "serializable_read_went_back",
                Some(e.op.key()),
                vec![slot.1, e.id],
                format!(
                    "client {} read revision {} from member {} after reading revision {} there",
                    e.client,
                    a.rev(),
                    e.member,
                    slot.0
                ),
            ));
        } else {
            *slot = (a.rev(), e.id);
        }
    }
    suspects
}

/// The key's state at revision `r` by the timeline: (mod_revision, write).
fn state_at<'a>(tl: &'a BTreeMap<i64, &'a Write>, r: i64) -> Option<&'a Write> {
    tl.range(..=r).next_back().map(|(_, w)| *w)
}

/// mod_revision of the key after `w` (0 when absent).
fn mod_of(w: Option<&Write>) -> i64 {
    match w {
        Some(w) if w.value.is_some() => w.rev.unwrap_or(0),
        _ => 0,
    }
}

fn describe(w: Option<&Write>) -> String {
    match w {
        None => "no write".into(),
        Some(w) => match &w.value {
            Some(v) => format!("write {} of {v:?} at revision {}", w.id, w.rev.unwrap_or(0)),
            None => format!("delete {} at revision {}", w.id, w.rev.unwrap_or(0)),
        },
    }
}

/// The revision checks of one key; returns the anomalies.
fn key_anomalies(key: &str, ops: &[&Entry], ws: &[Write]) -> Vec<Violation> {
    let mut tl: BTreeMap<i64, &Write> = BTreeMap::new();
    for w in ws {
        if let Some(r) = w.rev {
            tl.insert(r, w);
        }
    }
    let mut out = Vec::new();
    for e in ops {
        let Some(a) = &e.answer else { continue };
        match (&e.op, a) {
            (
                Op::Get {
                    serializable: false,
                    ..
                },
                Answer::Get { rev, kv },
            ) => {
                let want = state_at(&tl, *rev);
                match kv {
                    Some((v, m)) => {
                        if mod_of(want) != *m || want.and_then(|w| w.value.as_deref()) != Some(v) {
                            out.push(viol(
                                "stale_read",
                                Some(key),
                                vec![e.id],
                                format!(
                                    "read {} at revision {rev} returned {v:?} (mod_revision {m}); the last write at or before {rev} is {}",
                                    e.id,
                                    describe(want)
                                ),
                            ));
                        }
                    }
                    None => {
                        if mod_of(want) != 0 {
                            out.push(viol(
                                "lost_write",
                                Some(key),
                                vec![e.id],
                                format!(
                                    "read {} at revision {rev} found the key absent; the last write at or before {rev} is {}",
                                    e.id,
                                    describe(want)
                                ),
                            ));
                        }
                    }
                }
            }
            (
                Op::Cas { expect_rev, .. },
                Answer::Cas {
                    rev,
                    succeeded: true,
                },
            ) => {
                let prev = tl.range(..*rev).next_back().map(|(_, w)| *w);
                if mod_of(prev) != *expect_rev {
                    out.push(viol(
                        "cas_compare",
                        Some(key),
                        vec![e.id],
                        format!(
                            "compare-and-set {} succeeded at revision {rev} expecting mod_revision {expect_rev}; the write before it is {}",
                            e.id,
                            describe(prev)
                        ),
                    ));
                }
            }
            (
                Op::Cas { expect_rev, .. },
                Answer::Cas {
                    rev,
                    succeeded: false,
                },
            ) => {
                let now = state_at(&tl, *rev);
                if mod_of(now) == *expect_rev {
                    out.push(viol(
                        "cas_refused",
                        Some(key),
                        vec![e.id],
                        format!(
                            "compare-and-set {} was refused at revision {rev} although the key's mod_revision was {expect_rev} ({})",
                            e.id,
                            describe(now)
                        ),
                    ));
                }
            }
            (Op::Delete { .. }, Answer::Delete { rev, deleted }) => {
                let before = if *deleted > 0 {
                    tl.range(..*rev).next_back().map(|(_, w)| *w)
                } else {
                    state_at(&tl, *rev)
                };
                if (*deleted > 0) != (mod_of(before) != 0) {
                    out.push(viol(
                        "delete_mismatch",
                        Some(key),
                        vec![e.id],
                        format!(
                            "delete {} at revision {rev} deleted {deleted}; before it: {}",
                            e.id,
                            describe(before)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The search.

const ABSENT: u32 = 0;

/// An operation of the value-only register model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SOp {
    Put(u32),
    Read(u32),
    CasOk(u32, u32),
    CasFail(u32),
    /// Unanswered: applied if the compare held, or not at all.
    CasMaybe(u32, u32),
    DelOk,
    DelNone,
    DelMaybe,
}

fn step(s: u32, op: SOp) -> Option<u32> {
    match op {
        SOp::Put(v) => Some(v),
        SOp::Read(v) => (s == v).then_some(s),
        SOp::CasOk(w, v) => (s == w).then_some(v),
        SOp::CasFail(w) => (s != w).then_some(s),
        SOp::CasMaybe(w, v) => Some(if s == w { v } else { s }),
        SOp::DelOk => (s != ABSENT).then_some(ABSENT),
        SOp::DelNone => (s == ABSENT).then_some(ABSENT),
        SOp::DelMaybe => Some(ABSENT),
    }
}

/// One operation for the search: invocation, completion (`u64::MAX` when
/// never answered), model operation.
type SearchOp = (u64, u64, SOp);

/// The key's operations in the value-only model (serializable reads and
/// unanswered reads constrain nothing and are left out).
fn search_ops(ops: &[&Entry]) -> Vec<SearchOp> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut id = |v: &Option<String>| -> u32 {
        match v {
            None => ABSENT,
            Some(v) => {
                let n = ids.len() as u32 + 1;
                *ids.entry(v.clone()).or_insert(n)
            }
        }
    };
    let mut out = Vec::new();
    for e in ops {
        let done = e.completed_us.unwrap_or(u64::MAX);
        let sop = match (&e.op, &e.answer) {
            (
                Op::Get {
                    serializable: false,
                    ..
                },
                Some(Answer::Get { kv, .. }),
            ) => SOp::Read(id(&kv.as_ref().map(|(v, _)| v.clone()))),
            (Op::Get { .. }, _) => continue,
            (Op::Put { value, .. }, _) => SOp::Put(id(&Some(value.clone()))),
            (
                Op::Cas {
                    expect_value,
                    value,
                    ..
                },
                a,
            ) => {
                let (w, v) = (id(expect_value), id(&Some(value.clone())));
                match a {
                    Some(Answer::Cas {
                        succeeded: true, ..
                    }) => SOp::CasOk(w, v),
                    Some(_) => SOp::CasFail(w),
                    None => SOp::CasMaybe(w, v),
                }
            }
            (Op::Delete { .. }, Some(Answer::Delete { deleted, .. })) => {
                if *deleted > 0 {
                    SOp::DelOk
                } else {
                    SOp::DelNone
                }
            }
            (Op::Delete { .. }, _) => SOp::DelMaybe,
        };
        out.push((e.invoked_us, done, sop));
    }
    out
}

/// Wing & Gong's search with Lowe's cache (as Porcupine does): is there an
/// order of `ops`, consistent with real time (an operation that completed
/// before another was invoked comes first), in which every operation is
/// legal from the register's state (absent at first)? `None`: out of budget.
fn linearizable(ops: &[SearchOp], budget: u64) -> Option<bool> {
    const NIL: usize = usize::MAX;
    let n = ops.len();
    // Events 1..=2n (0 is the list head): (time, is_return, op).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, (call, ret, _)) in ops.iter().enumerate() {
        events.push((*call, false, i));
        events.push((*ret, true, i));
    }
    // Calls before returns at equal times: such operations are concurrent.
    events.sort_by_key(|(t, r, i)| (*t, *r, *i));
    let m = events.len();
    let mut next: Vec<usize> = (0..=m).map(|k| if k < m { k + 1 } else { NIL }).collect();
    let mut prev: Vec<usize> = (0..=m).map(|k| k.wrapping_sub(1)).collect();
    let mut ret_of = vec![0usize; n];
    for (k, (_, r, i)) in events.iter().enumerate() {
        if *r {
            ret_of[*i] = k + 1;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, q) = (prev[k], next[k]);
        next[p] = q;
        if q != NIL {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, q) = (prev[k], next[k]);
        next[p] = k;
        if q != NIL {
            prev[q] = k;
        }
    };
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = ABSENT;
    let mut entry = next[0];
    let mut steps = 0u64;
    while next[0] != NIL {
        steps += 1;
        if steps > budget {
            return None;
        }
        let is_call = entry != NIL && !events[entry - 1].1;
        if is_call {
            let i = events[entry - 1].2;
            if let Some(s2) = step(state, ops[i].2) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), s2)) {
                    stack.push((entry, state));
                    state = s2;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_of[i]);
                    entry = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return: its operation was not linearized before it. Undo
            // the last choice; with none left, no order exists.
            let Some((e, s)) = stack.pop() else {
                return Some(false);
            };
            let i = events[e - 1].2;
            state = s;
            linearized[i / 64] &= !(1 << (i % 64));
            relink(&mut next, &mut prev, ret_of[i]);
            relink(&mut next, &mut prev, e);
            entry = next[e];
        }
    }
    Some(true)
}

// ---------------------------------------------------------------------------
// Watches.

fn check_watches(by_key: &HashMap<String, Vec<Write>>, watches: &[WatchLog], out: &mut Verdict) {
    // (key, rev) -> write; value -> (key, write)
    let mut at: HashMap<(&str, i64), &Write> = HashMap::new();
    let mut by_value: HashMap<&str, (&str, &Write)> = HashMap::new();
    for (k, ws) in by_key {
        for w in ws {
            if let Some(r) = w.rev {
                at.insert((k.as_str(), r), w);
            }
            if let Some(v) = &w.value {
                by_value.insert(v.as_str(), (k.as_str(), w));
            }
        }
    }
    for log in watches {
        out.watch_streams += 1;
        let who = format!("watch of client {} on {:?}", log.client, log.prefix);
        let mut seen: HashSet<(i64, &str)> = HashSet::new();
        let mut last = 0i64;
        for seg in &log.segments {
            let mut delivered: HashSet<(&str, i64)> = HashSet::new();
            let mut seg_last: Option<i64> = None;
            for ev in &seg.events {
                out.watch_events += 1;
                if ev.rev < seg.start_rev {
                    out.push(viol(
                        "watch_before_start",
                        Some(&ev.key),
                        vec![],
                        format!(
                            "{who}: event at revision {} delivered by a watch started at {}",
                            ev.rev, seg.start_rev
                        ),
                    ));
                }
                if ev.rev < last && seg.why != SegmentStart::Relist {
                    out.push(viol(
                        "watch_went_back",
                        Some(&ev.key),
                        vec![],
                        format!("{who}: event at revision {} after one at {last}", ev.rev),
                    ));
                }
                if !seen.insert((ev.rev, ev.key.as_str())) {
                    out.push(viol(
                        "watch_duplicate",
                        Some(&ev.key),
                        vec![],
                        format!(
                            "{who}: event of {:?} at revision {} delivered twice",
                            ev.key, ev.rev
                        ),
                    ));
                }
                let known = match &ev.value {
                    Some(v) => match by_value.get(v.as_str()) {
                        Some((k, w)) => {
                            if *k != ev.key || w.rev.is_some_and(|r| r != ev.rev) {
                                out.push(viol(
                                    "watch_revision_mismatch",
                                    Some(&ev.key),
                                    vec![w.id],
                                    format!(
                                        "{who}: event {:?}={v:?} at revision {}, but write {} put it on {k:?} at revision {}",
                                        ev.key,
                                        ev.rev,
                                        w.id,
                                        w.rev.unwrap_or(0)
                                    ),
                                ));
                            }
                            true
                        }
                        None => false,
                    },
                    None => {
                        let ws = by_key.get(&ev.key);
                        ws.is_some_and(|ws| {
                            ws.iter()
                                .any(|w| w.value.is_none() && w.rev.is_none_or(|r| r == ev.rev))
                        })
                    }
                };
                if !known {
                    out.push(viol(
                        "watch_phantom",
                        Some(&ev.key),
                        vec![],
                        format!(
                            "{who}: event {:?} ({}) at revision {} matches no write of the history",
                            ev.key,
                            ev.value.as_deref().unwrap_or("delete"),
                            ev.rev
                        ),
                    ));
                }
                delivered.insert((ev.key.as_str(), ev.rev));
                last = last.max(ev.rev);
                seg_last = Some(seg_last.map_or(ev.rev, |l: i64| l.max(ev.rev)));
            }
            // Nothing between the segment's start and its last event missing.
            if let Some(l) = seg_last {
                for (k, ws) in by_key {
                    if !k.starts_with(&log.prefix) {
                        continue;
                    }
                    for w in ws {
                        if let Some(r) = w.rev
                            && r >= seg.start_rev
                            && r <= l
                            && !delivered.contains(&(k.as_str(), r))
                        {
                            out.push(viol(
                                "watch_lost_event",
                                Some(k),
                                vec![w.id],
                                format!(
                                    "{who}: {} not delivered by the watch started at {} ({:?}) that delivered up to {l}",
                                    describe(Some(w)),
                                    seg.start_rev,
                                    seg.why
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Checks `history` and `watches` (see the module's documentation).
pub fn check(history: &[Entry], watches: &[WatchLog]) -> Verdict {
    check_with_budget(history, watches, SEARCH_BUDGET)
}

/// [`check`] with another search budget per key.
pub fn check_with_budget(history: &[Entry], watches: &[WatchLog], budget: u64) -> Verdict {
    let mut out = Verdict {
        ops: history.len(),
        answered: history.iter().filter(|e| !e.is_open()).count(),
        indeterminate: history.iter().filter(|e| e.is_open()).count(),
        ..Verdict::default()
    };
    let by_key = writes_by_key(history, &mut out);
    let suspects = check_revisions(history, &by_key, &mut out);
    let mut ops_by_key: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in history {
        ops_by_key.entry(e.op.key()).or_default().push(e);
    }
    out.keys = ops_by_key.len();
    let none = Vec::new();
    for (key, ops) in &ops_by_key {
        let ws = by_key.get(*key).unwrap_or(&none);
        let anomalies = key_anomalies(key, ops, ws);
        if anomalies.is_empty() && !suspects.contains(*key) {
            continue;
        }
        out.keys_searched += 1;
        let unexplained_writes = ws.iter().any(|w| w.rev.is_none());
        match linearizable(&search_ops(ops), budget) {
            Some(false) => {
                let mut ids: Vec<usize> = anomalies.iter().flat_map(|a| a.ops.clone()).collect();
                ids.dedup();
                let first: Vec<String> =
                    anomalies.iter().take(3).map(|a| a.detail.clone()).collect();
                out.push(viol(
                    "not_linearizable",
                    Some(key),
                    ids,
                    format!(
                        "no order of the key's {} operations explains their answers ({} anomalies by revision: {})",
                        ops.len(),
                        anomalies.len(),
                        first.join("; ")
                    ),
                ));
            }
            Some(true) if anomalies.is_empty() => {}
            Some(true) if unexplained_writes => out.keys_explained_by_indeterminate += 1,
            r => {
                if r.is_none() {
                    out.searches_inconclusive += 1;
                }
                for a in anomalies {
                    out.push(a);
                }
            }
        }
    }
    check_watches(&by_key, watches, &mut out);
    out
}

/// An acknowledged write that a later linearizable read found undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    pub id: usize,
    pub key: String,
    pub rev: i64,
    pub acked_us: u64,
    /// The first read that found it undone: its id, revision and the
    /// mod_revision it saw (0: absent).
    pub read: usize,
    pub read_rev: i64,
    pub read_mod_rev: i64,
}

/// Acknowledged writes (puts, successful compare-and-sets, deletes that
/// deleted) such that a linearizable read invoked after the acknowledgement
/// saw the key at an older state (a lower mod_revision, or absent with no
/// delete since).
pub fn lost_writes(history: &[Entry]) -> Vec<LostWrite> {
    let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in history {
        by_key.entry(e.op.key()).or_default().push(e);
    }
    let mut out = Vec::new();
    for (key, ops) in by_key {
        let acked_deletes: Vec<i64> = ops
            .iter()
            .filter_map(|e| match (&e.op, &e.answer) {
                (Op::Delete { .. }, Some(a)) if a.wrote() => Some(a.rev()),
                _ => None,
            })
            .collect();
        let open_deletes: Vec<u64> = ops
            .iter()
            .filter(|e| matches!(e.op, Op::Delete { .. }) && e.is_open())
            .map(|e| e.invoked_us)
            .collect();
        let mut reads: Vec<(&Entry, i64, i64)> = ops
            .iter()
            .filter_map(|e| match (&e.op, &e.answer) {
                (
                    Op::Get {
                        serializable: false,
                        ..
                    },
                    Some(Answer::Get { rev, kv }),
                ) => {
                    let m = match kv {
                        Some((_, m)) => *m,
                        None => acked_deletes
                            .iter()
                            .copied()
                            .filter(|d| d <= rev)
                            .max()
                            .unwrap_or(0),
                    };
                    Some((*e, *rev, m))
                }
                _ => None,
            })
            .collect();
        reads.sort_by_key(|(e, _, _)| e.invoked_us);
        for w in &ops {
            let (Some(a), Some(done)) = (&w.answer, w.completed_us) else {
                continue;
            };
            if !a.wrote() {
                continue;
            }
            let wrev = a.rev();
            let is_delete = matches!(w.op, Op::Delete { .. });
            let gone = reads.iter().find(|(r, _, m)| {
                let absent = matches!(&r.answer, Some(Answer::Get { kv: None, .. }));
                r.invoked_us > done
                    && *m < wrev
                    // A delete is undone only when the key came back.
                    && !(is_delete && absent)
                    // An absent key may be a delete left unanswered.
                    && !(absent
                        && open_deletes
                            .iter()
                            .any(|d| *d < r.completed_us.unwrap_or(u64::MAX)))
            });
            if let Some((r, rrev, m)) = gone {
                out.push(LostWrite {
                    id: w.id,
                    key: key.to_string(),
                    rev: wrev,
                    acked_us: done,
                    read: r.id,
                    read_rev: *rrev,
                    read_mod_rev: *m,
                });
            }
        }
    }
    out.sort_by_key(|l| l.acked_us);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Builder, WatchEvent, WatchSegment};

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn cas(key: &str, expect_rev: i64, expect_value: Option<&str>, value: &str) -> Op {
        Op::Cas {
            key: key.into(),
            expect_rev,
            expect_value: expect_value.map(str::to_string),
            value: value.into(),
        }
    }

    fn del(key: &str) -> Op {
        Op::Delete { key: key.into() }
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.counts.keys().copied().collect()
    }

    #[test]
    fn a_sequential_history_of_every_operation_is_linearizable() {
        let mut b = Builder::new();
        b.get(0, "a", 0, 1, 1, None);
        b.put(0, "a", "x1", 2, 3, 2);
        b.get(1, "a", 4, 5, 2, Some(("x1", 2)));
        b.op(
            1,
            cas("a", 2, Some("x1"), "x2"),
            6,
            7,
            Answer::Cas {
                rev: 3,
                succeeded: true,
            },
        );
        b.op(
            0,
            cas("a", 2, Some("x1"), "x3"),
            8,
            9,
            Answer::Cas {
                rev: 3,
                succeeded: false,
            },
        );
        b.serializable_get(0, "a", 10, 11, 3, Some(("x2", 3)));
        b.op(1, del("a"), 12, 13, Answer::Delete { rev: 4, deleted: 1 });
        b.op(1, del("a"), 14, 15, Answer::Delete { rev: 4, deleted: 0 });
        b.get(0, "a", 16, 17, 4, None);
        let v = check(&b.entries, &[]);
        assert!(v.ok(), "{v:#?}");
        assert_eq!(v.keys_searched, 0, "revisions alone explain it");
        assert!(lost_writes(&b.entries).is_empty());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let mut b = Builder::new();
        // c0's put overlaps both reads: one sees it, one does not.
        b.put(0, "a", "x1", 0, 10, 5);
        b.get(1, "a", 1, 3, 4, None);
        b.get(2, "a", 2, 12, 5, Some(("x1", 5)));
        // Two overlapping puts, answered in the other order than invoked.
        b.put(0, "b", "y1", 20, 30, 7);
        b.put(1, "b", "y2", 21, 25, 6);
        b.get(2, "b", 31, 32, 7, Some(("y1", 7)));
        let v = check(&b.entries, &[]);
        assert!(v.ok(), "{v:#?}");
    }

    #[test]
    fn unanswered_operations_may_have_happened_or_not() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 2);
        // Never answered, seen later by a read: it happened at revision 3.
        b.open(1, put("a", "x2"), 2);
        b.get(0, "a", 10, 11, 3, Some(("x2", 3)));
        // Never answered, never seen: it did not happen (or was overwritten).
        b.open(2, put("a", "x3"), 12);
        b.put(0, "a", "x4", 13, 14, 5);
        b.get(0, "a", 15, 16, 5, Some(("x4", 5)));
        // A delete never answered explains a key found absent.
        b.open(1, del("a"), 17);
        b.get(0, "a", 20, 21, 6, None);
        // A compare-and-set never answered, that did happen.
        b.put(0, "c", "z1", 30, 31, 7);
        b.open(1, cas("c", 7, Some("z1"), "z2"), 32);
        b.get(0, "c", 40, 41, 8, Some(("z2", 8)));
        let v = check(&b.entries, &[]);
        assert!(v.ok(), "{v:#?}");
        assert_eq!(v.indeterminate, 4);
        assert!(v.keys_explained_by_indeterminate >= 1, "{v:#?}");
        assert!(
            lost_writes(&b.entries).is_empty(),
            "{:?}",
            lost_writes(&b.entries)
        );
    }

    #[test]
    fn a_stale_read_is_found() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.put(0, "a", "x2", 2, 3, 6);
        // Invoked after x2 was acknowledged, returns x1.
        b.get(1, "a", 4, 5, 6, Some(("x1", 5)));
        let v = check(&b.entries, &[]);
        assert_eq!(kinds(&v), vec!["not_linearizable"], "{v:#?}");
        assert_eq!(lost_writes(&b.entries).len(), 1);
        // The same read at an older revision, with a read of x2 before it:
        // real time is broken too.
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.put(0, "a", "x2", 2, 3, 6);
        b.get(1, "a", 4, 5, 5, Some(("x1", 5)));
        let v = check(&b.entries, &[]);
        assert!(v.counts.contains_key("revision_went_back"), "{v:#?}");
        assert!(v.counts.contains_key("not_linearizable"), "{v:#?}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_found_with_its_revision() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.put(0, "u1", "y1", 2, 3, 6);
        // After a rebuild from older data: both gone, the site at revision 4.
        b.get(1, "a", 10, 11, 4, None);
        b.get(1, "u1", 10, 11, 4, None);
        let v = check(&b.entries, &[]);
        assert!(v.counts.contains_key("not_linearizable"), "{v:#?}");
        assert!(v.counts.contains_key("revision_went_back"), "{v:#?}");
        let lost = lost_writes(&b.entries);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert_eq!(
            (lost[0].key.as_str(), lost[0].rev, lost[0].acked_us),
            ("a", 5, 1)
        );
        assert_eq!(
            (lost[1].key.as_str(), lost[1].rev, lost[1].read_mod_rev),
            ("u1", 6, 0)
        );
    }

    #[test]
    fn a_write_visible_then_gone_is_found() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.put(1, "a", "x2", 2, 3, 6);
        b.get(2, "a", 4, 5, 6, Some(("x2", 6)));
        // Later, and at a higher revision, the older value is back.
        b.put(0, "b", "y", 6, 7, 7);
        b.get(2, "a", 8, 9, 7, Some(("x1", 5)));
        let v = check(&b.entries, &[]);
        assert_eq!(kinds(&v), vec!["not_linearizable"], "{v:#?}");
        let lost = lost_writes(&b.entries);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].rev, 6);
    }

    #[test]
    fn two_clusters_taking_writes_at_once_are_found() {
        // The majority and a rebuilt minority both hand out revision 8.
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 7);
        b.put(0, "a", "x2", 2, 3, 8);
        b.put(1, "b", "y1", 2, 4, 8);
        let v = check(&b.entries, &[]);
        assert!(v.counts.contains_key("duplicate_revision"), "{v:#?}");
    }

    #[test]
    fn a_refused_compare_whose_compare_held_is_found() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.op(
            1,
            cas("a", 5, Some("x1"), "x2"),
            2,
            3,
            Answer::Cas {
                rev: 5,
                succeeded: false,
            },
        );
        let v = check(&b.entries, &[]);
        assert_eq!(kinds(&v), vec!["not_linearizable"], "{v:#?}");
        // Unless a write never answered may have come between.
        b.open(2, put("a", "x3"), 1);
        let v = check(&b.entries, &[]);
        assert!(v.ok(), "{v:#?}");
    }

    #[test]
    fn a_phantom_value_is_found() {
        let mut b = Builder::new();
        b.get(0, "a", 0, 1, 5, Some(("nobody", 5)));
        let v = check(&b.entries, &[]);
        assert!(v.counts.contains_key("phantom_read"), "{v:#?}");
    }

    #[test]
    fn serializable_reads_are_checked_only_against_the_clients_own_reads() {
        let mut b = Builder::new();
        b.put(0, "a", "x1", 0, 1, 5);
        b.put(0, "a", "x2", 2, 3, 6);
        // Stale against the writes: allowed for a serializable read.
        b.serializable_get(1, "a", 4, 5, 5, Some(("x1", 5)));
        let v = check(&b.entries, &[]);
        assert!(v.ok(), "{v:#?}");
        // Older than what this client already read there: not allowed.
        b.serializable_get(2, "a", 6, 7, 6, Some(("x2", 6)));
        b.serializable_get(2, "a", 8, 9, 5, Some(("x1", 5)));
        let v = check(&b.entries, &[]);
        assert_eq!(kinds(&v), vec!["serializable_read_went_back"], "{v:#?}");
    }

    fn ev(rev: i64, key: &str, value: Option<&str>) -> WatchEvent {
        WatchEvent {
            rev,
            key: key.into(),
            value: value.map(str::to_string),
            at_us: 0,
        }
    }

    fn seg(start_rev: i64, why: SegmentStart, events: Vec<WatchEvent>) -> WatchSegment {
        WatchSegment {
            start_rev,
            why,
            member: 0,
            events,
            compacted: None,
        }
    }

    fn watch_history() -> Vec<Entry> {
        let mut b = Builder::new();
        b.put(0, "p/a", "x1", 0, 1, 5);
        b.put(0, "p/b", "y1", 2, 3, 6);
        b.op(0, del("p/a"), 4, 5, Answer::Delete { rev: 7, deleted: 1 });
        b.put(0, "p/a", "x2", 6, 7, 8);
        b.entries
    }

    fn log(segments: Vec<WatchSegment>) -> WatchLog {
        WatchLog {
            client: 0,
            prefix: "p/".into(),
            segments,
        }
    }

    #[test]
    fn a_complete_watch_stream_with_a_reconnect_passes() {
        let h = watch_history();
        let w = log(vec![
            seg(
                5,
                SegmentStart::Initial,
                vec![ev(5, "p/a", Some("x1")), ev(6, "p/b", Some("y1"))],
            ),
            seg(
                7,
                SegmentStart::Reconnect,
                vec![ev(7, "p/a", None), ev(8, "p/a", Some("x2"))],
            ),
        ]);
        let v = check(&h, &[w]);
        assert!(v.ok(), "{v:#?}");
        assert_eq!(v.watch_events, 4);
    }

    #[test]
    fn watch_events_of_one_transaction_may_share_a_revision() {
        let by_key: HashMap<String, Vec<Write>> = HashMap::from([
            (
                "p/a".to_string(),
                vec![Write {
                    id: 0,
                    value: Some("x".into()),
                    rev: Some(5),
                    learned: false,
                }],
            ),
            (
                "p/b".to_string(),
                vec![Write {
                    id: 0,
                    value: Some("y".into()),
                    rev: Some(5),
                    learned: false,
                }],
            ),
        ]);
        let mut v = Verdict::default();
        let w = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![ev(5, "p/a", Some("x")), ev(5, "p/b", Some("y"))],
        )]);
        check_watches(&by_key, &[w], &mut v);
        assert!(v.ok(), "{v:#?}");
    }

    #[test]
    fn duplicated_reordered_lost_and_phantom_watch_events_are_found() {
        let h = watch_history();
        let dup = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![
                ev(5, "p/a", Some("x1")),
                ev(6, "p/b", Some("y1")),
                ev(6, "p/b", Some("y1")),
            ],
        )]);
        assert_eq!(kinds(&check(&h, &[dup])), vec!["watch_duplicate"]);
        let reordered = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![ev(6, "p/b", Some("y1")), ev(5, "p/a", Some("x1"))],
        )]);
        assert_eq!(kinds(&check(&h, &[reordered])), vec!["watch_went_back"]);
        let lost = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![ev(5, "p/a", Some("x1")), ev(8, "p/a", Some("x2"))],
        )]);
        let v = check(&h, &[lost]);
        assert_eq!(kinds(&v), vec!["watch_lost_event"]);
        assert_eq!(
            v.counts["watch_lost_event"], 2,
            "y1 at 6 and the delete at 7"
        );
        // A reconnect from 7 that starts at 8: the delete at 7 is missing.
        let skipped = log(vec![
            seg(
                5,
                SegmentStart::Initial,
                vec![ev(5, "p/a", Some("x1")), ev(6, "p/b", Some("y1"))],
            ),
            seg(7, SegmentStart::Reconnect, vec![ev(8, "p/a", Some("x2"))]),
        ]);
        assert_eq!(kinds(&check(&h, &[skipped])), vec!["watch_lost_event"]);
        // An event older than the reconnect's start revision.
        let back = log(vec![
            seg(
                5,
                SegmentStart::Initial,
                vec![ev(5, "p/a", Some("x1")), ev(6, "p/b", Some("y1"))],
            ),
            seg(
                7,
                SegmentStart::Reconnect,
                vec![
                    ev(6, "p/b", Some("y1")),
                    ev(7, "p/a", None),
                    ev(8, "p/a", Some("x2")),
                ],
            ),
        ]);
        let k = kinds(&check(&h, &[back]));
        assert!(
            k.contains(&"watch_before_start") && k.contains(&"watch_duplicate"),
            "{k:?}"
        );
        let phantom = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![ev(5, "p/a", Some("zz"))],
        )]);
        let k = kinds(&check(&h, &[phantom]));
        assert!(k.contains(&"watch_phantom"), "{k:?}");
        let moved = log(vec![seg(
            5,
            SegmentStart::Initial,
            vec![ev(5, "p/a", Some("x1")), ev(9, "p/b", Some("y1"))],
        )]);
        let k = kinds(&check(&h, &[moved]));
        assert!(k.contains(&"watch_revision_mismatch"), "{k:?}");
    }

    fn sop(call: u64, ret: u64, op: SOp) -> SearchOp {
        (call, ret, op)
    }

    #[test]
    fn the_search_tells_linearizable_register_histories_from_others() {
        // put 1 || read 1, read absent: both orders exist.
        let ok = [
            sop(0, 10, SOp::Put(1)),
            sop(1, 2, SOp::Read(ABSENT)),
            sop(3, 11, SOp::Read(1)),
        ];
        assert_eq!(linearizable(&ok, SEARCH_BUDGET), Some(true));
        // read 1 strictly before put 1.
        let bad = [sop(0, 1, SOp::Read(1)), sop(2, 3, SOp::Put(1))];
        assert_eq!(linearizable(&bad, SEARCH_BUDGET), Some(false));
        // Two reads see the two puts in opposite orders.
        let bad = [
            sop(0, 10, SOp::Put(1)),
            sop(0, 10, SOp::Put(2)),
            sop(11, 12, SOp::Read(1)),
            sop(13, 14, SOp::Read(2)),
            sop(15, 16, SOp::Read(1)),
        ];
        assert_eq!(linearizable(&bad, SEARCH_BUDGET), Some(false));
        // An unanswered put may land late: read 2 after read 1 is fine.
        let ok = [
            sop(0, 1, SOp::Put(1)),
            sop(2, u64::MAX, SOp::Put(2)),
            sop(3, 4, SOp::Read(1)),
            sop(5, 6, SOp::Read(2)),
        ];
        assert_eq!(linearizable(&ok, SEARCH_BUDGET), Some(true));
        // Compare-and-set: both succeeded from the same value: impossible.
        let bad = [
            sop(0, 1, SOp::Put(1)),
            sop(2, 5, SOp::CasOk(1, 2)),
            sop(2, 5, SOp::CasOk(1, 3)),
        ];
        assert_eq!(linearizable(&bad, SEARCH_BUDGET), Some(false));
        // Out of budget is neither.
        let many: Vec<SearchOp> = (0..30)
            .map(|i| sop(0, 100, SOp::Put(i + 1)))
            .chain([sop(101, 102, SOp::Read(99))])
            .collect();
        assert_eq!(linearizable(&many, 50), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// A model etcd: one revision counter, keys with (value, mod_revision).
        #[derive(Default)]
        struct Model {
            rev: i64,
            keys: BTreeMap<String, (String, i64)>,
            events: Vec<WatchEvent>,
        }

        /// Runs `ops` one after the other against the model and records
        /// them; `open[i]`: op i is never answered (and applied or not by
        /// `applied[i]`).
        fn run(ops: &[(u8, u8)], open: &[bool], applied: &[bool]) -> (Vec<Entry>, Vec<WatchLog>) {
            let mut m = Model {
                rev: 1,
                ..Model::default()
            };
            let mut b = Builder::new();
            for (i, (kind, k)) in ops.iter().enumerate() {
                let key = format!("p/k{}", k % 3);
                let value = format!("v{i}");
                let (t0, t1) = (10 * i as u64, 10 * i as u64 + 5);
                let is_open = open[i];
                let apply = !is_open || applied[i];
                let (op, answer) = match kind % 6 {
                    0 | 1 => {
                        if apply {
                            m.rev += 1;
                            m.keys.insert(key.clone(), (value.clone(), m.rev));
                            m.events.push(WatchEvent {
                                rev: m.rev,
                                key: key.clone(),
                                value: Some(value.clone()),
                                at_us: 0,
                            });
                        }
                        (Op::Put { key, value }, Answer::Put { rev: m.rev })
                    }
                    2 => (
                        Op::Get {
                            key: key.clone(),
                            serializable: false,
                        },
                        Answer::Get {
                            rev: m.rev,
                            kv: m.keys.get(&key).cloned(),
                        },
                    ),
                    3 => (
                        Op::Get {
                            key: key.clone(),
                            serializable: true,
                        },
                        Answer::Get {
                            rev: m.rev,
                            kv: m.keys.get(&key).cloned(),
                        },
                    ),
                    4 => {
                        // Half of them expect the current state, half a stale one.
                        let cur = m.keys.get(&key).cloned();
                        let (ev, er) = match (&cur, k % 2) {
                            (Some((v, r)), 0) => (Some(v.clone()), *r),
                            (Some(_), _) => (Some("stale".to_string()), 1),
                            (None, _) => (None, 0),
                        };
                        let holds = cur.as_ref().map(|(_, r)| *r).unwrap_or(0) == er;
                        let ok = holds && apply;
                        if ok {
                            m.rev += 1;
                            m.keys.insert(key.clone(), (value.clone(), m.rev));
                            m.events.push(WatchEvent {
                                rev: m.rev,
                                key: key.clone(),
                                value: Some(value.clone()),
                                at_us: 0,
                            });
                        }
                        (
                            Op::Cas {
                                key,
                                expect_rev: er,
                                expect_value: ev,
                                value,
                            },
                            Answer::Cas {
                                rev: m.rev,
                                succeeded: holds,
                            },
                        )
                    }
                    _ => {
                        let had = m.keys.contains_key(&key);
                        if had && apply {
                            m.rev += 1;
                            m.keys.remove(&key);
                            m.events.push(WatchEvent {
                                rev: m.rev,
                                key: key.clone(),
                                value: None,
                                at_us: 0,
                            });
                        }
                        (
                            Op::Delete { key },
                            Answer::Delete {
                                rev: m.rev,
                                deleted: i64::from(had),
                            },
                        )
                    }
                };
                if is_open {
                    b.open(i % 3, op, t0);
                } else {
                    b.op(i % 3, op, t0, t1, answer);
                }
            }
            // A final read of every key.
            let t = 10 * ops.len() as u64;
            for k in 0..3 {
                let key = format!("p/k{k}");
                let kv = m.keys.get(&key).map(|(v, r)| (v.as_str(), *r));
                b.get(9, &key, t, t + 1, m.rev, kv);
            }
            // One watch from the start, delivered whole; one that reconnects
            // halfway from the revision after its last event.
            let half = m.events.len() / 2;
            let (first, second) = m.events.split_at(half);
            let resume = first.last().map(|e| e.rev + 1).unwrap_or(2);
            let logs = vec![
                WatchLog {
                    client: 0,
                    prefix: "p/".into(),
                    segments: vec![seg(2, SegmentStart::Initial, m.events.clone())],
                },
                WatchLog {
                    client: 1,
                    prefix: "p/".into(),
                    segments: vec![
                        seg(2, SegmentStart::Initial, first.to_vec()),
                        seg(resume, SegmentStart::Reconnect, second.to_vec()),
                    ],
                },
            ];
            (b.entries, logs)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn random_sequential_histories_pass(
                ops in proptest::collection::vec((0u8..6, 0u8..6), 1..60),
                open in proptest::collection::vec(proptest::bool::weighted(0.1), 60),
                applied in proptest::collection::vec(any::<bool>(), 60),
            ) {
                let (h, w) = run(&ops, &open, &applied);
                let v = check(&h, &w);
                prop_assert!(v.ok(), "{:#?}\n{:#?}", v, h);
                prop_assert!(lost_writes(&h).is_empty());
            }
        }
    }
}
