//! Append, read, ack, reopen: the plain paths.

mod common;

use common::{du, key, opts, sample};
use edgeplane_buffer::{Buffer, BufferError, FsyncPolicy, inspect};

#[test]
fn append_read_ack_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(64 << 20, 1 << 20);
    o.fsync = FsyncPolicy::Batch;
    let mut want = Vec::new();
    {
        let mut b = Buffer::open(dir.path(), o.clone()).expect("open");
        for scrape in 0..200 {
            let batch: Vec<_> = (0..500)
                .map(|s| {
                    sample(
                        s,
                        1_700_000_000_000 + scrape * 15_000,
                        (scrape * 3 + i64::from(s)) as f64 * 0.5,
                    )
                })
                .collect();
            let out = b.append("normal", &batch).expect("append");
            assert_eq!(out.accepted, batch.len());
            want.extend(batch);
        }
        let s = b.summary();
        let n = s
            .classes
            .iter()
            .find(|c| c.class == "normal")
            .expect("class");
        assert_eq!(n.samples, want.len() as u64);
        assert!(n.segments >= 1, "blocks were sealed into segments");
        // Read half, ack a quarter, then drop without acking the rest.
        let first = b.read("normal", 25_000).expect("read").expect("some");
        let second = b.read("normal", 25_000).expect("read").expect("some");
        assert_eq!(
            first.samples.iter().map(key).collect::<Vec<_>>(),
            want[..25_000].iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(
            second.samples.iter().map(key).collect::<Vec<_>>(),
            want[25_000..50_000].iter().map(key).collect::<Vec<_>>()
        );
        b.ack(&first.token).expect("ack");
    }
    let ins = inspect(dir.path()).expect("inspect");
    let n = ins
        .classes
        .iter()
        .find(|c| c.class == "normal")
        .expect("class");
    assert_eq!(n.samples, (want.len() - 25_000) as u64);
    assert_eq!(ins.total_bytes_on_disk, du(dir.path()));

    let mut b = Buffer::open(dir.path(), o).expect("reopen");
    let mut got = Vec::new();
    while let Some(batch) = b.read("normal", 7_000).expect("read") {
        got.extend(batch.samples.iter().map(key));
        b.ack(&batch.token).expect("ack");
    }
    assert_eq!(got, want[25_000..].iter().map(key).collect::<Vec<_>>());
    let s = b.summary();
    let n = s
        .classes
        .iter()
        .find(|c| c.class == "normal")
        .expect("class");
    assert_eq!(n.samples, 0);
    assert_eq!(n.segments, 0, "acked segments are deleted");
    assert_eq!(s.total_bytes_on_disk, du(dir.path()));
}

#[test]
fn second_writer_is_refused_and_unknown_class_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Buffer::open(dir.path(), opts(1 << 20, 64 << 10)).expect("open");
    assert!(matches!(
        Buffer::open(dir.path(), opts(1 << 20, 64 << 10)),
        Err(BufferError::Locked { .. })
    ));
    assert!(matches!(
        b.append("nope", &[sample(1, 1, 1.0)]),
        Err(BufferError::UnknownClass(_))
    ));
}

#[test]
fn rewind_redelivers_from_the_ack_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Buffer::open(dir.path(), opts(1 << 20, 64 << 10)).expect("open");
    let batch: Vec<_> = (0..100)
        .map(|i| sample(i, i64::from(i), f64::from(i)))
        .collect();
    b.append("high", &batch).expect("append");
    let a = b.read("high", 10).expect("read").expect("some");
    b.ack(&a.token).expect("ack");
    let x = b.read("high", 10).expect("read").expect("some");
    b.rewind("high");
    let y = b.read("high", 10).expect("read").expect("some");
    assert_eq!(x, y);
    assert_eq!(y.samples[0].timestamp_ms, 10);
}

#[test]
fn buffer_is_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Buffer>();
}
