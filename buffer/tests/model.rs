//! Model-based property test: the real buffer is stepped beside a plain
//! in-memory model through random appends, reads, acks, rewinds, reopens and
//! budget changes, and must agree with it after every step.

mod common;

use std::collections::VecDeque;
use std::path::Path;

use common::du;
use edgeplane_buffer::{AckToken, Buffer, FsyncPolicy, Options, Sample, ShedEvent};
use proptest::prelude::*;

const CLASSES: [&str; 4] = ["critical", "high", "normal", "low"];
const SEGMENT: u64 = 8192;
const BUDGETS: [u64; 4] = [64 << 10, 96 << 10, 160 << 10, 320 << 10];

#[derive(Debug, Clone)]
enum Op {
    Append {
        class: usize,
        n: usize,
        seed: u64,
    },
    Read {
        class: usize,
        max: usize,
        grouped: bool,
    },
    Ack {
        class: usize,
        which: usize,
    },
    Rewind {
        class: usize,
    },
    Reopen,
    SetBudget(usize),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..300usize, any::<u64>()).prop_map(|(class, n, seed)| Op::Append { class, n, seed }),
        3 => (0..4usize, 1..400usize, any::<bool>()).prop_map(|(class, max, grouped)| Op::Read { class, max, grouped }),
        3 => (0..4usize, 0..4usize).prop_map(|(class, which)| Op::Ack { class, which }),
        1 => (0..4usize).prop_map(|class| Op::Rewind { class }),
        1 => Just(Op::Reopen),
        1 => (0..BUDGETS.len()).prop_map(Op::SetBudget),
        1 => Just(Op::Sync),
    ]
}

/// Deterministic samples: a few series, values that exercise every encoding
/// (arbitrary bits including NaN payloads, integers, decimals, repeats).
fn gen_samples(n: usize, seed: u64) -> Vec<Sample> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ts = (next() % 2_000_000_000_000) as i64;
    (0..n)
        .map(|_| {
            let r = next();
            let series = r % 12;
            let value = match (r >> 8) % 5 {
                0 => f64::from_bits(next()),
                1 => ((next() % 1000) as f64).round(),
                2 => (next() % 100_000) as f64 / 100.0,
                3 => 1.0,
                _ => f64::from_bits(0x7ff0_0000_0000_0000 | (next() & 0x000f_ffff_ffff_ffff) | 1),
            };
            ts += match (r >> 16) % 4 {
                0 => 15_000,
                1 => 0,
                2 => -((next() % 1000) as i64),
                _ => (next() % 100_000) as i64,
            };
            if (r >> 20) % 50 == 0 {
                ts = next() as i64; // extremes too
            }
            Sample {
                labels: vec![
                    ("__name__".to_string(), format!("m{}", series % 4)),
                    ("job".to_string(), "node".to_string()),
                    ("s".to_string(), series.to_string()),
                ],
                timestamp_ms: ts,
                value,
            }
        })
        .collect()
}

fn key(s: &Sample) -> (Vec<(String, String)>, i64, u64) {
    (s.labels.clone(), s.timestamp_ms, s.value.to_bits())
}

/// Labels and (timestamp, value bits) of one series.
type SeriesPoints = (Vec<(String, String)>, Vec<(i64, u64)>);

#[derive(Default)]
struct ModelClass {
    /// Retained, unacknowledged samples with their sequence numbers.
    items: VecDeque<(u64, Sample)>,
    next_seq: u64,
    /// In-memory read position (a sequence number).
    read_pos: u64,
    tokens: Vec<AckToken>,
}

struct Model {
    classes: Vec<ModelClass>,
}

impl Model {
    fn apply_shed(
        &mut self,
        incoming_rank: usize,
        events: &[ShedEvent],
    ) -> Result<(), TestCaseError> {
        for e in events {
            let v = CLASSES
                .iter()
                .position(|c| *c == e.class)
                .ok_or_else(|| TestCaseError::fail("shed of unknown class"))?;
            prop_assert!(
                v >= incoming_rank,
                "append to rank {} shed more critical class {}",
                incoming_rank,
                e.class
            );
            for (lower, name) in self.classes[v + 1..].iter().zip(&CLASSES[v + 1..]) {
                prop_assert!(
                    lower.items.is_empty(),
                    "shed {} while less critical {} still holds {} samples",
                    e.class,
                    name,
                    lower.items.len()
                );
            }
            let c = &mut self.classes[v];
            let before = c.items.len();
            c.items.retain(|(s, _)| *s < e.first_seq || *s >= e.end_seq);
            prop_assert_eq!(
                (before - c.items.len()) as u64,
                e.samples,
                "shed count of {:?}",
                e
            );
        }
        Ok(())
    }
}

fn open(dir: &Path, budget: u64, fsync: FsyncPolicy) -> Buffer {
    let o = Options {
        classes: CLASSES.map(String::from).to_vec(),
        budget_bytes: budget,
        segment_bytes: SEGMENT,
        fsync,
        max_age: None,
    };
    match Buffer::open(dir, o) {
        Ok(b) => b,
        Err(e) => panic!("open failed: {e:?}"),
    }
}

fn run(ops: Vec<Op>, batch_sync: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let fsync = if batch_sync {
        FsyncPolicy::Batch
    } else {
        FsyncPolicy::Never
    };
    let mut budget = BUDGETS[1];
    let mut buf = Some(open(dir.path(), budget, fsync));
    let mut model = Model {
        classes: (0..CLASSES.len()).map(|_| ModelClass::default()).collect(),
    };
    for op in ops {
        let Some(b) = buf.as_mut() else { break };
        match op {
            Op::Append { class, n, seed } => {
                let samples = gen_samples(n, seed);
                let out = b
                    .append(CLASSES[class], &samples)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(out.accepted + out.dropped, samples.len());
                // Accepted samples first: a large batch may shed its own
                // oldest part (it is split into frames) when the budget is tiny.
                let c = &mut model.classes[class];
                for s in &samples[..out.accepted] {
                    c.items.push_back((c.next_seq, s.clone()));
                    c.next_seq += 1;
                }
                model.apply_shed(class, &out.shed)?;
                if out.dropped > 0 {
                    // Dropped only when nothing less critical is left to shed.
                    prop_assert!(
                        model.classes[class + 1..]
                            .iter()
                            .all(|c| c.items.is_empty())
                    );
                }
            }
            Op::Read {
                class,
                max,
                grouped,
            } => {
                let c = &mut model.classes[class];
                let want: Vec<_> = c
                    .items
                    .iter()
                    .filter(|(s, _)| *s >= c.read_pos)
                    .take(max)
                    .collect();
                let want_keys: Vec<_> = want.iter().map(|(_, s)| key(s)).collect();
                let token = if grouped {
                    let got = b
                        .read_series(CLASSES[class], max)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    match got {
                        None => None,
                        Some(batch) => {
                            prop_assert_eq!(batch.len(), want_keys.len());
                            // Per series, the points come in order.
                            let mut per_series: Vec<SeriesPoints> = Vec::new();
                            for g in &batch.series {
                                let pts = g
                                    .timestamps_ms
                                    .iter()
                                    .zip(&g.values)
                                    .map(|(t, v)| (*t, v.to_bits()));
                                match per_series.iter_mut().find(|(l, _)| *l == g.labels) {
                                    Some((_, p)) => p.extend(pts),
                                    None => per_series.push((g.labels.clone(), pts.collect())),
                                }
                            }
                            for (labels, pts) in per_series {
                                let expect: Vec<_> = want_keys
                                    .iter()
                                    .filter(|k| k.0 == labels)
                                    .map(|k| (k.1, k.2))
                                    .collect();
                                prop_assert_eq!(pts, expect);
                            }
                            Some(batch.token)
                        }
                    }
                } else {
                    let got = b
                        .read(CLASSES[class], max)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    match got {
                        None => None,
                        Some(batch) => {
                            let got_keys: Vec<_> = batch.samples.iter().map(key).collect();
                            prop_assert_eq!(got_keys, want_keys.clone());
                            Some(batch.token)
                        }
                    }
                };
                match token {
                    None => prop_assert!(
                        want.is_empty(),
                        "read returned nothing, model has {}",
                        want.len()
                    ),
                    Some(t) => {
                        if let Some((last, _)) = want.last() {
                            c.read_pos = last + 1;
                        }
                        c.tokens.push(t);
                    }
                }
            }
            Op::Ack { class, which } => {
                let c = &mut model.classes[class];
                if !c.tokens.is_empty() {
                    let t = c.tokens.remove(which % c.tokens.len());
                    b.ack(&t)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    let end = t.end_seq();
                    c.items.retain(|(s, _)| *s >= end);
                    c.read_pos = c.read_pos.max(end);
                }
            }
            Op::Rewind { class } => {
                b.rewind(CLASSES[class]);
                model.classes[class].read_pos = 0;
            }
            Op::Reopen => {
                drop(buf.take());
                buf = Some(open(dir.path(), budget, fsync));
                for c in &mut model.classes {
                    c.read_pos = 0;
                    c.tokens.clear();
                }
            }
            Op::SetBudget(i) => {
                budget = BUDGETS[i];
                let events = b
                    .set_budget(budget)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                model.apply_shed(0, &events)?;
            }
            Op::Sync => b
                .sync()
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
        }
        let Some(b) = buf.as_ref() else { break };
        let on_disk = du(dir.path());
        prop_assert!(
            on_disk <= budget + SEGMENT,
            "du {} > budget {} + segment",
            on_disk,
            budget
        );
        let s = b.summary();
        prop_assert_eq!(s.total_bytes_on_disk, on_disk, "accounting vs du");
        for (i, c) in CLASSES.iter().enumerate() {
            let cs = s
                .classes
                .iter()
                .find(|x| x.class == *c)
                .ok_or_else(|| TestCaseError::fail("class missing"))?;
            prop_assert_eq!(
                cs.samples,
                model.classes[i].items.len() as u64,
                "samples of {}",
                c
            );
        }
    }
    // Finally: everything the model holds is read back, in order, after a reopen.
    drop(buf.take());
    let mut b = open(dir.path(), budget, fsync);
    for (i, c) in CLASSES.iter().enumerate() {
        let mut got = Vec::new();
        while let Some(batch) = b
            .read(c, 1000)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
        {
            got.extend(batch.samples.iter().map(key));
        }
        let want: Vec<_> = model.classes[i].items.iter().map(|(_, s)| key(s)).collect();
        prop_assert_eq!(got, want, "final read of {}", c);
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES=2000 for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn buffer_matches_model(ops in proptest::collection::vec(op(), 1..80), batch_sync in any::<bool>()) {
        run(ops, batch_sync)?;
    }
}
