//! Damaged files: flipped bytes mid-segment, a damaged header, torn tails.
//! The buffer opens, counts, and returns only valid data, in order.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::opts;
use edgeplane_buffer::{Buffer, Sample, inspect};

fn sample(t: i64) -> Sample {
    Sample {
        labels: vec![
            ("__name__".to_string(), "node_cpu_seconds_total".to_string()),
            ("cpu".to_string(), (t % 8).to_string()),
        ],
        timestamp_ms: 1_700_000_000_000 + t * 1000,
        // Noisy values so the data does not compress to nothing.
        value: (t as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17) as f64
            / 7.0,
    }
}

fn valid(s: &Sample) -> Option<i64> {
    let t = (s.timestamp_ms - 1_700_000_000_000) / 1000;
    (*s == sample(t)).then_some(t)
}

/// (offset, total length) of each frame in a file, from the headers.
fn frames(path: &Path) -> Vec<(u64, u64)> {
    let b = std::fs::read(path).expect("read");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 56 <= b.len() && b[pos..pos + 4] == *b"EPF1" {
        let len = u32::from_le_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]) as usize;
        out.push((pos as u64, 56 + len as u64));
        pos += 56 + len;
    }
    out
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read byte");
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).expect("write byte");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn read_all(b: &mut Buffer, class: &str) -> Vec<i64> {
    let mut got = Vec::new();
    while let Some(r) = b.read(class, 3000).expect("read") {
        for s in &r.samples {
            got.push(valid(s).unwrap_or_else(|| panic!("invalid sample returned: {s:?}")));
        }
    }
    got
}

#[test]
fn flipped_bytes_are_skipped_counted_and_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 60_000i64;
    {
        let mut b = Buffer::open(dir.path(), opts(64 << 20, 32 << 10)).expect("open");
        for chunk in 0..(total / 1000) {
            let batch: Vec<_> = (chunk * 1000..(chunk + 1) * 1000).map(sample).collect();
            b.append("normal", &batch).expect("append");
        }
        // A few more that stay in the head.
        b.append(
            "normal",
            &(total..total + 10).map(sample).collect::<Vec<_>>(),
        )
        .expect("append");
    }
    let class_dir = dir.path().join("normal");
    let segs = segments(&class_dir);
    assert!(segs.len() >= 4, "need several segments, got {}", segs.len());

    // 1. A payload byte in the middle of a sealed segment.
    let f0 = frames(&segs[1]);
    assert!(f0.len() >= 2);
    flip(&segs[1], f0[0].0 + 56 + f0[0].1 / 3);
    // 2. A header byte (length field) of a frame in another sealed segment.
    let f2 = frames(&segs[2]);
    flip(&segs[2], f2[0].0 + 9);
    // 3. The tail of the last segment: its last frame damaged, like a torn write.
    let last = segs.last().expect("last");
    let fl = frames(last);
    let (lo, ll) = *fl.last().expect("frame");
    flip(last, lo + ll - 3);
    // 4. Garbage appended to the head, as if a write was torn.
    let head = class_dir.join("head");
    let h = OpenOptions::new().append(true).open(&head).expect("head");
    h.write_all_at(
        &[0x45, 0x50, 0x46, 0x31, 9, 9, 9],
        std::fs::metadata(&head).expect("stat").len(),
    )
    .expect("garbage");

    let before = inspect(dir.path()).expect("inspect");
    let n = before
        .classes
        .iter()
        .find(|c| c.class == "normal")
        .expect("class")
        .clone();
    assert!(
        n.torn_bytes_truncated > 0,
        "inspect reports the torn tails: {n:?}"
    );

    let mut b = Buffer::open(dir.path(), opts(64 << 20, 32 << 10)).expect("open damaged buffer");
    let got = read_all(&mut b, "normal");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(got.len() < (total + 10) as usize, "something was lost");
    assert!(
        got.len() > (total as usize) / 2,
        "most survived: {}",
        got.len()
    );
    assert!(got.contains(&(total + 9)), "the head survived");
    let s = b.summary();
    let c = s
        .classes
        .iter()
        .find(|c| c.class == "normal")
        .expect("class");
    assert!(
        c.corrupt_frames >= 2,
        "payload and header damage counted: {c:?}"
    );
    assert!(c.torn_bytes_truncated >= 7, "torn tails counted: {c:?}");
    let counted = (c.corrupt_frames, c.torn_bytes_truncated);
    drop(b);

    // Reopen and read again: same data, nothing counted twice.
    let mut b = Buffer::open(dir.path(), opts(64 << 20, 32 << 10)).expect("reopen");
    assert_eq!(read_all(&mut b, "normal"), got);
    let s = b.summary();
    let c = s
        .classes
        .iter()
        .find(|c| c.class == "normal")
        .expect("class");
    assert_eq!((c.corrupt_frames, c.torn_bytes_truncated), counted);

    // And the buffer still takes appends.
    b.append("normal", &[sample(total + 100)])
        .expect("append after damage");
}

#[test]
fn garbage_files_do_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut b = Buffer::open(dir.path(), opts(8 << 20, 16 << 10)).expect("open");
        for chunk in 0..20 {
            let batch: Vec<_> = (chunk * 500..(chunk + 1) * 500).map(sample).collect();
            b.append("low", &batch).expect("append");
        }
    }
    let class_dir = dir.path().join("low");
    // Overwrite every file of the class, ledger included, with noise.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for p in std::fs::read_dir(&class_dir)
        .expect("list")
        .flatten()
        .map(|e| e.path())
    {
        let len = std::fs::metadata(&p).expect("stat").len();
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&p, noise).expect("write noise");
    }
    inspect(dir.path()).expect("inspect noise");
    let mut b = Buffer::open(dir.path(), opts(8 << 20, 16 << 10)).expect("open noise");
    let got = read_all(&mut b, "low");
    assert!(got.is_empty());
    b.append("low", &[sample(1)]).expect("append");
}
