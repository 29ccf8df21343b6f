//! kill -9 test: a child process (this test binary, re-executed) appends and
//! acknowledges with fsync per batch and reports each durable step on stdout;
//! the parent SIGKILLs it at random moments, reopens, and checks that every
//! reported batch is present and intact and nothing acknowledged comes back.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeplane_buffer::{Buffer, FsyncPolicy, Options, Sample};
use rand::RngExt;

const CHILD_ENV: &str = "EPBUF_CRASH_CHILD_DIR";
const START_ENV: &str = "EPBUF_CRASH_CHILD_START";
const CLASSES: [&str; 3] = ["critical", "high", "normal"];
const PER_BATCH: i64 = 300;

fn options() -> Options {
    Options {
        classes: CLASSES.map(String::from).to_vec(),
        budget_bytes: 1 << 30,
        segment_bytes: 64 << 10,
        fsync: FsyncPolicy::Batch,
        max_age: None,
    }
}

/// Batch `k`, sample `i`: everything is derivable from the timestamp.
fn make(k: i64, i: i64) -> Sample {
    Sample {
        labels: vec![
            ("__name__".to_string(), "crash_test".to_string()),
            ("series".to_string(), (i % 50).to_string()),
        ],
        timestamp_ms: k * 100_000 + i,
        value: (k * 31 + i) as f64 * 0.25,
    }
}

fn decode(s: &Sample) -> Option<(i64, i64)> {
    let (k, i) = (s.timestamp_ms / 100_000, s.timestamp_ms % 100_000);
    (*s == make(k, i)).then_some((k, i))
}

/// The child: runs only when re-executed with `CHILD_ENV` set.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: i64 = std::env::var(START_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut b = match Buffer::open(Path::new(&dir), options()) {
        Ok(b) => b,
        Err(e) => {
            println!("OPENFAIL {e}");
            return;
        }
    };
    println!("\nREADY"); // libtest has printed "test name ... " without a newline
    let mut k = start;
    loop {
        let class = CLASSES[(k % 3) as usize];
        let batch: Vec<Sample> = (0..PER_BATCH).map(|i| make(k, i)).collect();
        match b.append(class, &batch) {
            Ok(out) if out.accepted == batch.len() => println!("SYNCED {k}"),
            other => {
                println!("APPENDFAIL {other:?}");
                return;
            }
        }
        if k % 4 == 0 {
            let class = CLASSES[(k / 4 % 3) as usize];
            // A class gets 4 batches (1,200 samples) per ack: acking up to 1,500
            // keeps the backlog, and each verification, small over many kills.
            if let Ok(Some(r)) = b.read(class, 1500)
                && let Some((ak, ai)) = r.samples.last().and_then(decode)
            {
                // Between these two lines the ack may or may not be durable.
                println!("ACKING {class} {ak} {ai}");
                if b.ack(&r.token).is_ok() {
                    println!("ACKED {class} {ak} {ai}");
                }
            }
        }
        k += 1;
    }
}

struct Expect {
    synced: Vec<i64>,
    /// Per class: the last ack known durable, and the last one perhaps durable.
    acked: BTreeMap<&'static str, (i64, i64)>,
    acking: BTreeMap<&'static str, (i64, i64)>,
}

fn run_cycle(dir: &Path, start: i64, run_for: Duration, exp: &mut Expect) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "crash_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kill at a random moment once the child is running.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut started = None;
    loop {
        let now = Instant::now();
        if let Some(s) = started
            && now >= s + run_for
        {
            break;
        }
        assert!(now < deadline, "child never became ready");
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(line) => {
                if line == "READY" {
                    started = Some(Instant::now());
                }
                record(&line, exp);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    child.wait().expect("wait");
    reader.join().expect("reader");
    for line in rx.try_iter() {
        record(&line, exp);
    }
}

fn record(line: &str, exp: &mut Expect) {
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        ["SYNCED", k] => exp.synced.push(k.parse().expect("k")),
        [what @ ("ACKED" | "ACKING"), class, k, i] => {
            let class = CLASSES.iter().find(|c| *c == class).expect("class");
            let pos = (k.parse().expect("k"), i.parse().expect("i"));
            let map = if *what == "ACKED" {
                &mut exp.acked
            } else {
                &mut exp.acking
            };
            let e = map.entry(class).or_insert(pos);
            *e = (*e).max(pos);
        }
        [w, ..] if w.ends_with("FAIL") => panic!("child failed: {line}"),
        _ => {}
    }
}

/// Reopen and check; returns the next batch id to use.
fn verify(dir: &Path, exp: &Expect) -> i64 {
    let mut b = Buffer::open(dir, options()).expect("reopen after kill");
    let mut max_k = -1;
    let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for class in CLASSES {
        let mut prev: Option<(i64, i64)> = None;
        while let Some(r) = b.read(class, 5000).expect("read") {
            for s in &r.samples {
                let pos = decode(s).unwrap_or_else(|| panic!("garbage sample {s:?}"));
                assert_eq!(
                    CLASSES[(pos.0 % 3) as usize],
                    class,
                    "sample in the wrong class"
                );
                if let Some(p) = prev {
                    assert!(pos > p, "out of order in {class}: {p:?} then {pos:?}");
                } else if let Some(a) = exp.acked.get(class) {
                    assert!(
                        pos > *a,
                        "{class}: {pos:?} delivered again after its ack {a:?} was synced"
                    );
                }
                prev = Some(pos);
                seen.entry(pos.0).or_default().push(pos.1);
                max_k = max_k.max(pos.0);
            }
        }
    }
    for &k in &exp.synced {
        let class = CLASSES[(k % 3) as usize];
        let acked = exp.acking.get(class).copied();
        let expected: Vec<i64> = (0..PER_BATCH)
            .filter(|&i| acked.is_none_or(|a| (k, i) > a))
            .collect();
        let got: Vec<i64> = seen
            .get(&k)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| acked.is_none_or(|a| (k, i) > a))
            .collect();
        assert_eq!(got, expected, "batch {k} reported synced is incomplete");
    }
    let s = b.summary();
    for c in &s.classes {
        assert_eq!(
            c.corrupt_frames, 0,
            "kill -9 must not corrupt sealed data: {c:?}"
        );
    }
    max_k.max(exp.synced.iter().copied().max().unwrap_or(-1)) + 1
}

fn crash_loop(cycles: usize) {
    let mut dir = tempfile::tempdir().expect("tempdir");
    // EPBUF_KEEP=1 keeps the directory for a post-mortem.
    dir.disable_cleanup(std::env::var("EPBUF_KEEP").is_ok());
    eprintln!("crash test directory: {}", dir.path().display());
    let mut rng = rand::rng();
    let mut exp = Expect {
        synced: Vec::new(),
        acked: BTreeMap::new(),
        acking: BTreeMap::new(),
    };
    let mut next = 0;
    let started = Instant::now();
    for _ in 0..cycles {
        let run_for = Duration::from_millis(rng.random_range(0..120));
        run_cycle(dir.path(), next, run_for, &mut exp);
        next = verify(dir.path(), &exp) + 1;
    }
    let s = edgeplane_buffer::inspect(dir.path()).expect("inspect");
    eprintln!(
        "{cycles} kills in {:?}: {} batches reported synced; torn bytes truncated {}",
        started.elapsed(),
        exp.synced.len(),
        s.classes
            .iter()
            .map(|c| c.torn_bytes_truncated)
            .sum::<u64>()
    );
    assert!(!exp.synced.is_empty());
}

#[test]
fn sigkill_at_random_moments_loses_nothing_synced() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_loop(50);
}

#[test]
#[ignore = "long: 500 kills"]
fn sigkill_long() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_loop(500);
}
