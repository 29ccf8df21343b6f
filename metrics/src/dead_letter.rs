//! The dead-letter area: batches the receiver refused for good.
//!
//! A directory of files under a byte bound. Each refused batch is kept as
//! two files with a common, time-ordered stem:
//!
//! ```text
//! <dir>/<unix_ms:013>-<seq:06>-<class>.rw     the exact request body
//!                                             (snappy protobuf WriteRequest;
//!                                             replay it with curl)
//! <dir>/<unix_ms:013>-<seq:06>-<class>.json   why, when, how many samples
//! ```
//!
//! Both are written to a temporary name, fsynced, renamed and the directory
//! fsynced before [`DeadLetter::put`] returns, so the caller may acknowledge
//! the batch to the buffer afterwards without any window in which the data
//! exists nowhere. When the area exceeds its bound the oldest batches are
//! deleted and counted (never silently).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Sample;

/// What the `.json` file of a dead-letter entry holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterMeta {
    pub class: String,
    pub reason: String,
    pub samples: u64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub refused_at_ms: i64,
}

/// Counters of the dead-letter area.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterStats {
    /// Batches (and their samples) currently kept.
    pub kept_batches: u64,
    pub kept_samples: u64,
    pub kept_bytes: u64,
    /// Batches ever put here since start (plus those found at start).
    pub total_batches: u64,
    pub total_samples: u64,
    /// Batches deleted to stay under the bound.
    pub evicted_batches: u64,
    pub evicted_samples: u64,
}

struct Entry {
    stem: String,
    bytes: u64,
    samples: u64,
}

/// The dead-letter directory.
pub struct DeadLetter {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    seq: u64,
    stats: DeadLetterStats,
}

impl DeadLetter {
    /// Opens (creating if needed) the directory and takes stock of what an
    /// earlier run left there. Stray temporary files are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut stems: Vec<String> = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            } else if let Some(stem) = name.strip_suffix(".rw") {
                stems.push(stem.to_owned());
            }
        }
        stems.sort();
        let mut dl = DeadLetter {
            dir: dir.to_owned(),
            max_bytes,
            entries: VecDeque::new(),
            seq: 0,
            stats: DeadLetterStats::default(),
        };
        for stem in stems {
            let rw = dir.join(format!("{stem}.rw"));
            let json = dir.join(format!("{stem}.json"));
            let bytes = file_len(&rw) + file_len(&json);
            let samples = fs::read(&json)
                .ok()
                .and_then(|b| serde_json::from_slice::<DeadLetterMeta>(&b).ok())
                .map_or(0, |m| m.samples);
            dl.stats.total_batches += 1;
            dl.stats.total_samples += samples;
            dl.push_entry(Entry {
                stem,
                bytes,
                samples,
            });
        }
        dl.enforce_bound()?;
        Ok(dl)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> DeadLetterStats {
        self.stats.clone()
    }

    /// Durably stores a refused batch, then trims the area to its bound.
    pub fn put(
        &mut self,
        class: &str,
        samples: &[Sample],
        body: &[u8],
        reason: &str,
    ) -> io::Result<()> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.seq += 1;
        let stem = format!("{now_ms:013}-{:06}-{}", self.seq % 1_000_000, safe(class));
        let meta = DeadLetterMeta {
            class: class.to_owned(),
            reason: reason.to_owned(),
            samples: samples.len() as u64,
            min_timestamp_ms: samples.iter().map(|s| s.timestamp_ms).min().unwrap_or(0),
            max_timestamp_ms: samples.iter().map(|s| s.timestamp_ms).max().unwrap_or(0),
            refused_at_ms: now_ms,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        write_durably(&self.dir.join(format!("{stem}.json")), &json)?;
        write_durably(&self.dir.join(format!("{stem}.rw")), body)?;
        sync_dir(&self.dir)?;
        self.stats.total_batches += 1;
        self.stats.total_samples += meta.samples;
        self.push_entry(Entry {
            stem,
            bytes: (json.len() + body.len()) as u64,
            samples: meta.samples,
        });
        self.enforce_bound()
    }

    fn push_entry(&mut self, e: Entry) {
        self.stats.kept_batches += 1;
        self.stats.kept_samples += e.samples;
        self.stats.kept_bytes += e.bytes;
        self.entries.push_back(e);
    }

    fn enforce_bound(&mut self) -> io::Result<()> {
        let mut removed = false;
        while self.stats.kept_bytes > self.max_bytes {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            for ext in ["rw", "json"] {
                match fs::remove_file(self.dir.join(format!("{}.{ext}", e.stem))) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
            tracing::warn!(
                batch = %e.stem,
                samples = e.samples,
                "Deleted the oldest dead-letter batch to stay within the dead-letter byte bound."
            );
            self.stats.kept_batches -= 1;
            self.stats.kept_samples -= e.samples;
            self.stats.kept_bytes -= e.bytes;
            self.stats.evicted_batches += 1;
            self.stats.evicted_samples += e.samples;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn safe(class: &str) -> String {
    class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}

fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                labels: vec![("__name__".into(), "m".into())],
                timestamp_ms: i as i64,
                value: 1.0,
            })
            .collect()
    }

    #[test]
    fn keeps_counts_and_evicts_oldest_over_the_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dl");
        let mut dl = DeadLetter::open(&dir, 2500).expect("open");
        let body = vec![7u8; 1000];
        dl.put("critical", &batch(3), &body, "HTTP 400: bad")
            .expect("put");
        dl.put("low/x", &batch(5), &body, "HTTP 400: bad")
            .expect("put");
        let s = dl.stats();
        assert_eq!(
            (s.kept_batches, s.kept_samples, s.evicted_batches),
            (2, 8, 0)
        );
        dl.put("low", &batch(2), &body, "HTTP 400: bad")
            .expect("put");
        let s = dl.stats();
        assert_eq!(s.kept_batches, 2);
        assert_eq!(s.evicted_batches, 1);
        assert_eq!(s.evicted_samples, 3);
        assert_eq!(s.total_samples, 10);
        assert!(s.kept_bytes <= 2500);
        let files = fs::read_dir(&dir).expect("ls").count();
        assert_eq!(files, 4);

        // Reopen: the kept batches are found again.
        drop(dl);
        let dl = DeadLetter::open(&dir, 2500).expect("reopen");
        let s = dl.stats();
        assert_eq!((s.kept_batches, s.kept_samples), (2, 7));
        let meta: Vec<DeadLetterMeta> = fs::read_dir(&dir)
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&fs::read(e.path()).expect("read")).expect("json"))
            .collect();
        assert!(meta.iter().any(|m| m.class == "low/x" && m.samples == 5));
    }
}
