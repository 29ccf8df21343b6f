//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use edgeplane_buffer::{FsyncPolicy, Options, Sample};

pub fn opts(budget: u64, segment: u64) -> Options {
    Options {
        classes: ["critical", "high", "normal", "low"]
            .map(String::from)
            .to_vec(),
        budget_bytes: budget,
        segment_bytes: segment,
        fsync: FsyncPolicy::Never,
        max_age: None,
    }
}

pub fn sample(series: u32, ts: i64, value: f64) -> Sample {
    Sample {
        labels: vec![
            ("__name__".to_string(), format!("metric_{}", series % 7)),
            ("instance".to_string(), "host-1:9100".to_string()),
            ("series".to_string(), series.to_string()),
        ],
        timestamp_ms: ts,
        value,
    }
}

/// What `du` says: allocated blocks of everything under `dir`, `dir` included.
pub fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    total += m.blocks() * 512;
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        for e in rd.flatten() {
            total += du(&e.path());
        }
    }
    total
}

/// Bit-exact comparison key of a sample.
pub fn key(s: &Sample) -> (Vec<(String, String)>, i64, u64) {
    (s.labels.clone(), s.timestamp_ms, s.value.to_bits())
}

pub fn wait_for(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
