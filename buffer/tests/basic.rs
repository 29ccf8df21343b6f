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

#[test]
fn expire_removes_old_segments_and_counts_them_apart_from_shed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(64 << 20, 16 << 10);
    o.max_age = Some(std::time::Duration::from_secs(3600));
    let mut b = Buffer::open(dir.path(), o.clone()).expect("open");
    let hour = 3_600_000i64;
    // Ten hours of data, one batch per 10 minutes, noisy enough for many segments.
    for step in 0..60i64 {
        let ts = step * hour / 6;
        let batch: Vec<_> = (0..400)
            .map(|s| sample(s, ts, ((step * 7919 + i64::from(s)) as f64).sqrt()))
            .collect();
        b.append("low", &batch).expect("append");
    }
    let before = b.summary().classes[3].clone();
    assert!(before.segments > 3);
    let now = 10 * hour;
    let events = b.expire(now).expect("expire");
    assert!(!events.is_empty());
    let after = b.summary().classes[3].clone();
    assert_eq!(
        after.expired_samples,
        events.iter().map(|e| e.samples).sum::<u64>()
    );
    assert_eq!(after.shed_samples, 0);
    assert!(
        events
            .iter()
            .all(|e| e.newest_ms.is_some_and(|t| t < now - hour))
    );
    // What is left is younger than the cutoff except at most the segment straddling it.
    let first = b.read("low", 1).expect("read").expect("some");
    assert!(first.samples[0].timestamp_ms >= now - 2 * hour);
    drop(b);
    let s = inspect(dir.path()).expect("inspect");
    assert_eq!(
        s.classes[3].expired_samples, after.expired_samples,
        "counters persist"
    );
}

#[test]
fn unconfigured_class_on_disk_stays_readable_and_is_shed_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(64 << 20, 16 << 10);
    o.classes.push("debug".to_string());
    {
        let mut b = Buffer::open(dir.path(), o).expect("open");
        b.append("debug", &[sample(1, 1, 1.0), sample(2, 2, 2.0)])
            .expect("append");
    }
    std::fs::create_dir(dir.path().join("notes")).expect("mkdir");
    let mut b = Buffer::open(dir.path(), opts(64 << 20, 16 << 10)).expect("reopen without debug");
    assert_eq!(
        std::fs::read_dir(dir.path().join("notes"))
            .expect("list")
            .count(),
        0,
        "other directories are left alone"
    );
    assert!(b.summary().classes.iter().all(|c| c.class != "notes"));
    let s = b.summary();
    let d = s.classes.last().expect("debug class");
    assert_eq!(
        (d.class.as_str(), d.configured, d.samples),
        ("debug", false, 2)
    );
    assert!(matches!(
        b.append("debug", &[sample(3, 3, 3.0)]),
        Err(BufferError::NotConfigured(_))
    ));
    let r = b.read("debug", 10).expect("read").expect("some");
    assert_eq!(r.samples.len(), 2);
    b.ack(&r.token).expect("ack");
}

#[test]
fn budget_is_respected_and_lowest_class_goes_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = 512 << 10;
    let seg = 32 << 10;
    let mut b = Buffer::open(dir.path(), opts(budget, seg)).expect("open");
    let noisy = |i: i64| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as f64;
    let mut ts = 0;
    for class in ["low", "normal", "critical"] {
        for _ in 0..150 {
            ts += 1;
            let batch: Vec<_> = (0..200)
                .map(|s| sample(s, ts, noisy(ts * 1000 + i64::from(s))))
                .collect();
            let out = b.append(class, &batch).expect("append");
            assert_eq!(out.dropped, 0);
            assert!(du(dir.path()) <= budget + seg);
        }
    }
    let s = b.summary();
    let by = |n: &str| {
        s.classes
            .iter()
            .find(|c| c.class == n)
            .expect("class")
            .clone()
    };
    assert!(by("low").shed_samples > 0);
    assert_eq!(by("critical").shed_samples, 0);
    assert!(
        by("low").samples == 0 || by("normal").shed_samples == 0,
        "normal shed only once low was empty"
    );
    // A low append cannot push critical data out once only critical is left.
    b.set_budget(budget / 2).expect("shrink");
    let s = b.summary();
    assert!(s.total_bytes_on_disk <= budget / 2 + seg);
    let crit_shed = s.classes[0].shed_samples;
    let out = b
        .append(
            "low",
            &(0..2000)
                .map(|s| sample(s, 0, noisy(i64::from(s))))
                .collect::<Vec<_>>(),
        )
        .expect("append");
    let crit = b.summary().classes[0].clone();
    assert_eq!(crit.shed_samples, crit_shed, "low never sheds critical");
    if out.dropped > 0 {
        assert!(b.summary().classes[3].dropped_incoming >= out.dropped as u64);
    }
}
