//! A real full disk: an 8 MiB tmpfs under a 64 MiB budget. ENOSPC must lead
//! to shedding and an actionable error, never a panic or a corrupt segment,
//! and appends must work again once space is freed. Needs root (mount); skips
//! with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeplane_buffer::{Buffer, BufferError, FsyncPolicy, Options, Sample};

/// Mounts a tmpfs and always unmounts it, even when the test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn sample(t: i64) -> Sample {
    Sample {
        labels: vec![
            ("__name__".to_string(), "disk_full_test".to_string()),
            ("series".to_string(), (t % 100).to_string()),
        ],
        timestamp_ms: t,
        value: (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as f64,
    }
}

const CLASSES: [&str; 3] = ["critical", "normal", "low"];

fn options() -> Options {
    Options {
        classes: CLASSES.map(String::from).to_vec(),
        budget_bytes: 64 << 20,
        segment_bytes: 512 << 10,
        fsync: FsyncPolicy::Batch,
        max_age: None,
    }
}

fn fill(path: &Path) -> PathBuf {
    // Take every byte left with a ballast file.
    let p = path.join("ballast");
    let chunk = vec![0xabu8; 64 << 10];
    let mut f = std::fs::File::create(&p).expect("ballast");
    use std::io::Write;
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn enospc_sheds_and_reports_then_recovers() {
    let Some(fs) = Tmpfs::mount("8m") else {
        eprintln!(
            "SKIPPED enospc_sheds_and_reports_then_recovers: cannot mount a tmpfs (not root?)"
        );
        return;
    };
    let dir = fs.path().join("buffer");
    let mut t = 0i64;
    let mut disk_full = 0;
    {
        let mut b = Buffer::open(&dir, options()).expect("open");
        for round in 0..600 {
            let class = CLASSES[round % 3];
            let batch: Vec<_> = (0..2000)
                .map(|_| {
                    t += 1;
                    sample(t)
                })
                .collect();
            match b.append(class, &batch) {
                Ok(_) => {}
                Err(e @ BufferError::DiskFull { .. }) => {
                    assert!(e.is_disk_full());
                    disk_full += 1;
                }
                Err(e) => panic!("only DiskFull is acceptable on a full disk, got {e:?}"),
            }
        }
        let s = b.summary();
        assert!(
            s.classes.iter().map(|c| c.shed_samples).sum::<u64>() > 0,
            "the full disk made the buffer shed"
        );
        assert!(s.classes.iter().map(|c| c.disk_full_events).sum::<u64>() >= 1);
    }
    assert!(
        disk_full >= 1,
        "an 8 MiB disk under a 64 MiB budget must report ENOSPC"
    );

    // Another process fills the disk: the next append fails cleanly, sheds,
    // and appends work again once the ballast is gone.
    let mut b = Buffer::open(&dir, options()).expect("reopen on a full disk");
    let ballast = fill(fs.path());
    let mut errors = 0;
    for _ in 0..5 {
        let batch: Vec<_> = (0..2000)
            .map(|_| {
                t += 1;
                sample(t)
            })
            .collect();
        match b.append("critical", &batch) {
            Ok(_) => {}
            Err(e) if e.is_disk_full() => errors += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(errors >= 1, "the ballast left no room");
    std::fs::remove_file(&ballast).expect("free space");
    let batch: Vec<_> = (0..2000)
        .map(|_| {
            t += 1;
            sample(t)
        })
        .collect();
    let out = b
        .append("critical", &batch)
        .expect("append after freeing space");
    assert_eq!(out.accepted, batch.len());
    drop(b);

    // Nothing corrupt: every sample left reads back valid and in order.
    let mut b = Buffer::open(&dir, options()).expect("reopen");
    for class in CLASSES {
        let mut prev = 0;
        while let Some(r) = b.read(class, 10_000).expect("read") {
            for s in &r.samples {
                assert_eq!(*s, sample(s.timestamp_ms), "intact");
                assert!(s.timestamp_ms > prev, "in order");
                prev = s.timestamp_ms;
            }
        }
    }
    for c in b.summary().classes {
        assert_eq!(c.corrupt_frames, 0, "{c:?}");
    }
}
