//! Verification: everything that can be checked about a snapshot file short
//! of restoring it, in one pass over the file.
//!
//! 1. the footer is present and well-formed (a truncated file has none);
//! 2. sha256 of the compressed data region equals the footer's;
//! 3. the zstd stream decodes to its end (zstd's content checksum included)
//!    and yields exactly `db_bytes + 32` bytes;
//! 4. etcd's trailer (the last 32 bytes) is the sha256 of the db bytes;
//! 5. the db is a sane bbolt file: both meta pages' magic, version, page id,
//!    flags and FNV checksum (what bbolt checks on open), and its length
//!    equals the meta page's high-water mark.
//!
//! A plain `etcdctl snapshot save` file (a bbolt db followed by etcd's
//! sha256 trailer, the form operators keep backups in) is accepted too:
//! checks 4 and 5 apply to it, with its length a whole number of 512-byte
//! units plus the trailer, the rule `etcdctl snapshot restore` uses to find
//! the trailer.
//!
//! [`verify_with_etcdctl`] adds `etcdctl snapshot status` on a decompressed
//! temporary copy: it opens the db with bbolt and walks every bucket.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bbolt;
use crate::error::{Error, Result};
use crate::format::{SnapshotInfo, parent_dir, read_footer};
use crate::progress::{Progress, Ticker};

/// Length of etcd's sha256 trailer at the end of the snapshot stream.
pub(crate) const TRAILER: usize = 32;

/// What [`verify`] found. Only returned when every check passed.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    /// What the file is: an Edgeplane snapshot or a plain etcd db.
    pub kind: FileKind,
    /// The footer; `None` for a plain etcd db, which has none.
    pub info: Option<SnapshotInfo>,
    pub file_bytes: u64,
    /// Decompressed db size (without etcd's trailer).
    pub db_bytes: u64,
    pub page_size: u32,
    pub bbolt_txid: u64,
    /// The checks that passed, in order, in words.
    pub checks: Vec<String>,
    /// `etcdctl snapshot status` of the decompressed copy, when run.
    pub etcdctl: Option<EtcdctlStatus>,
    pub elapsed_s: f64,
}

/// The two kinds of file that verify and restore take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Made by `edgeplane snapshot save` or an agent: zstd, footer.
    Edgeplane,
    /// Made by `etcdctl snapshot save`: the bbolt db and etcd's sha256 trailer.
    EtcdDb,
}

/// Tells the kinds apart by the first bytes (a bbolt meta page, or not).
pub(crate) fn file_kind(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 32];
    let mut f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        }
    }
    Ok(if bbolt::looks_like_bbolt(&head[..n]) {
        FileKind::EtcdDb
    } else {
        FileKind::Edgeplane
    })
}

/// `etcdctl snapshot status -w json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdctlStatus {
    pub hash: u64,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// Hashes everything written except the last 32 bytes, which it keeps: at
/// the end of the etcd stream those are etcd's sha256 of what came before.
pub(crate) struct TrailerHasher {
    hasher: Sha256,
    tail: Vec<u8>,
    total: u64,
    head: Vec<u8>,
}

impl TrailerHasher {
    pub(crate) fn new() -> Self {
        TrailerHasher {
            hasher: Sha256::new(),
            tail: Vec::with_capacity(2 * TRAILER),
            total: 0,
            head: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, buf: &[u8]) {
        self.total += buf.len() as u64;
        if self.head.len() < bbolt::HEAD_BYTES {
            let n = (bbolt::HEAD_BYTES - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..n]);
        }
        if buf.len() >= TRAILER {
            self.hasher.update(&self.tail);
            let cut = buf.len() - TRAILER;
            self.hasher.update(&buf[..cut]);
            self.tail.clear();
            self.tail.extend_from_slice(&buf[cut..]);
        } else {
            self.tail.extend_from_slice(buf);
            if self.tail.len() > TRAILER {
                let cut = self.tail.len() - TRAILER;
                self.hasher.update(&self.tail[..cut]);
                self.tail.drain(..cut);
            }
        }
    }

    /// Total bytes seen (trailer included).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The first bytes of the stream (the bbolt meta pages).
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// `(computed sha256 of the db, trailer as received)`, or an error when
    /// the stream is shorter than a trailer.
    pub(crate) fn finish(self) -> Result<([u8; 32], [u8; 32]), String> {
        if self.tail.len() < TRAILER {
            return Err(format!(
                "stream of {} bytes is shorter than etcd's {TRAILER}-byte trailer",
                self.total
            ));
        }
        let mut trailer = [0u8; 32];
        trailer.copy_from_slice(&self.tail);
        Ok((self.hasher.finalize().into(), trailer))
    }
}

/// Reads and hashes the compressed bytes.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The write side of decoding: trailer check, optional copy out, progress.
struct Sink<'a, 'b> {
    th: TrailerHasher,
    out: Option<&'a mut dyn Write>,
    /// A failure of `out` (not the file's fault).
    out_failed: Option<std::io::Error>,
    ticker: &'a mut Ticker<'b>,
    expect: u64,
}

impl Write for Sink<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.th.total() + buf.len() as u64 > self.expect {
            return Err(std::io::Error::other(format!(
                "decodes to more than the {} bytes the footer announces",
                self.expect
            )));
        }
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(buf)
        {
            let msg = e.to_string();
            self.out_failed = Some(e);
            return Err(std::io::Error::other(msg));
        }
        self.th.update(buf);
        self.ticker.tick(self.th.total(), Some(self.expect));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

/// The shared core of verify and restore: checks `path` in one pass and,
/// when `out` is given, writes the decompressed stream (db + etcd trailer,
/// i.e. an `etcdctl snapshot save` file) to it. Errors that mean "this file
/// is bad" are [`Error::Corrupt`]; a failure of `out` is [`Error::Io`].
pub(crate) fn check(
    path: &Path,
    mut out: Option<&mut dyn Write>,
    out_path: &Path,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<VerifyReport> {
    let start = Instant::now();
    let mut file = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let (info, data_len, file_bytes) = read_footer(&mut file, path)?;
    let mut checks = vec![format!(
        "footer: format {}, taken by {} at {}",
        info.format, info.origin, info.created_at
    )];
    file.rewind_to_start(path)?;
    let mut raw = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file.take(data_len)),
        hasher: Sha256::new(),
        count: 0,
    };
    let expect = info.db_bytes + TRAILER as u64;
    let mut ticker = Ticker::new(
        if out.is_some() {
            "decompress"
        } else {
            "verify"
        },
        progress,
    );
    let mut sink = Sink {
        th: TrailerHasher::new(),
        out: out.as_mut().map(|o| &mut **o as &mut dyn Write),
        out_failed: None,
        ticker: &mut ticker,
        expect,
    };
    let decoded = (|| -> std::io::Result<()> {
        let mut dec = zstd::stream::read::Decoder::with_buffer(BufReader::new(&mut raw))?;
        std::io::copy(&mut dec, &mut sink)?;
        // The decoder stops at the end of the last frame; whatever the
        // buffered reader holds beyond it still has to be hashed.
        let mut rest = dec.finish();
        std::io::copy(&mut rest, &mut std::io::sink())?;
        Ok(())
    })();
    if let Some(e) = sink.out_failed.take() {
        return Err(Error::io("cannot write decompressed copy to", out_path, e));
    }
    let th = sink.th;
    // Hash whatever decoding did not reach, so a flipped byte is reported as
    // a checksum mismatch rather than as whatever the decoder tripped on.
    let _ = std::io::copy(&mut raw, &mut std::io::sink());
    let sha: [u8; 32] = raw.hasher.finalize().into();
    if raw.count != data_len {
        return Err(Error::corrupt(
            path,
            format!(
                "could read only {} of {data_len} compressed bytes",
                raw.count
            ),
        ));
    }
    if hex::encode(sha) != info.sha256 {
        return Err(Error::corrupt(
            path,
            format!(
                "sha256 of the compressed data is {}, the footer records {}: the file was altered or damaged",
                hex::encode(sha),
                info.sha256
            ),
        ));
    }
    checks.push(format!("sha256 of {data_len} compressed bytes matches"));
    decoded.map_err(|e| Error::corrupt(path, format!("zstd stream does not decode: {e}")))?;
    if th.total() != expect {
        return Err(Error::corrupt(
            path,
            format!(
                "decodes to {} bytes, the footer announces {expect}",
                th.total()
            ),
        ));
    }
    checks.push(format!(
        "zstd stream decodes to its end: {} bytes",
        th.total()
    ));
    let (trailer, meta) = check_db_content(path, th, info.db_bytes, &mut checks)?;
    if hex::encode(trailer) != info.etcd_sha256 {
        return Err(Error::corrupt(
            path,
            "etcd's sha256 trailer differs from the one recorded in the footer",
        ));
    }
    ticker.finish(expect, Some(expect));
    Ok(VerifyReport {
        path: path.to_path_buf(),
        file_bytes,
        db_bytes: info.db_bytes,
        page_size: meta.page_size,
        bbolt_txid: meta.txid,
        kind: FileKind::Edgeplane,
        info: Some(info),
        checks,
        etcdctl: None,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

trait Rewind {
    fn rewind_to_start(&mut self, path: &Path) -> Result<()>;
}

impl Rewind for File {
    fn rewind_to_start(&mut self, path: &Path) -> Result<()> {
        use std::io::Seek;
        self.rewind().map_err(|e| Error::io("cannot seek", path, e))
    }
}

/// What both kinds of file end in, checked the same way: etcd's sha256
/// trailer against the `db_bytes` of db before it, then the bbolt meta
/// pages against that length. Returns the trailer and the meta page.
fn check_db_content(
    path: &Path,
    th: TrailerHasher,
    db_bytes: u64,
    checks: &mut Vec<String>,
) -> Result<([u8; 32], bbolt::Meta)> {
    let head = th.head().to_vec();
    let (computed, trailer) = th.finish().map_err(|e| Error::corrupt(path, e))?;
    if computed != trailer {
        return Err(Error::corrupt(
            path,
            format!(
                "etcd's sha256 trailer {} does not match the db content {}",
                hex::encode(trailer),
                hex::encode(computed)
            ),
        ));
    }
    checks.push("etcd's sha256 trailer matches the db content".to_string());
    let head = &head[..head.len().min(db_bytes as usize)];
    let meta = bbolt::check(head, db_bytes, true)
        .map_err(|e| Error::corrupt(path, format!("the db is not a sane bbolt file: {e}")))?;
    checks.push(format!(
        "bbolt meta pages valid (page size {}, txid {}, {} pages)",
        meta.page_size, meta.txid, meta.pgid
    ));
    Ok((trailer, meta))
}

/// Checks a plain `etcdctl snapshot save` file in one pass: etcd's sha256
/// trailer against the db, and the bbolt meta pages against its length.
pub(crate) fn check_db(
    path: &Path,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<VerifyReport> {
    let start = Instant::now();
    let file = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?
        .len();
    if file_bytes % 512 != TRAILER as u64 {
        return Err(Error::corrupt(
            path,
            format!(
                "{file_bytes} bytes is not a whole number of 512-byte units plus etcd's \
                 {TRAILER}-byte sha256 trailer: not an `etcdctl snapshot save` file, or truncated"
            ),
        ));
    }
    let db_bytes = file_bytes - TRAILER as u64;
    let mut ticker = Ticker::new("verify", progress);
    let mut th = TrailerHasher::new();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        th.update(&buf[..n]);
        ticker.tick(th.total(), Some(file_bytes));
    }
    if th.total() != file_bytes {
        return Err(Error::corrupt(
            path,
            format!("read {} of {file_bytes} bytes", th.total()),
        ));
    }
    let mut checks = vec![format!(
        "plain etcd snapshot: {db_bytes} bytes of db and etcd's sha256 trailer"
    )];
    let (_, meta) = check_db_content(path, th, db_bytes, &mut checks)?;
    ticker.finish(file_bytes, Some(file_bytes));
    Ok(VerifyReport {
        path: path.to_path_buf(),
        kind: FileKind::EtcdDb,
        info: None,
        file_bytes,
        db_bytes,
        page_size: meta.page_size,
        bbolt_txid: meta.txid,
        checks,
        etcdctl: None,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

/// Verifies a snapshot file, an Edgeplane snapshot or a plain `etcdctl
/// snapshot save` file (see the module docs for the checks). Any
/// corruption is an [`Error::Corrupt`] naming what is wrong.
pub fn verify(path: &Path, progress: &mut (dyn FnMut(&Progress) + Send)) -> Result<VerifyReport> {
    match file_kind(path)? {
        FileKind::Edgeplane => check(path, None, Path::new(""), progress),
        FileKind::EtcdDb => check_db(path, progress),
    }
}

/// [`verify`], then `etcdctl snapshot status` on a decompressed copy written
/// to a temporary file beside the snapshot (same disk, removed afterwards),
/// or on a plain etcd db itself.
pub fn verify_with_etcdctl(
    path: &Path,
    etcdctl: &Path,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<VerifyReport> {
    if file_kind(path)? == FileKind::EtcdDb {
        let mut report = check_db(path, progress)?;
        add_etcdctl_status(&mut report, etcdctl, path, path)?;
        return Ok(report);
    }
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".verify-")
        .suffix(".db")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("cannot create a temporary file in", &dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let mut report = check(path, Some(&mut w), &tmp_path, progress)?;
    w.flush()
        .map_err(|e| Error::io("cannot write", &tmp_path, e))?;
    drop(w);
    add_etcdctl_status(&mut report, etcdctl, path, &tmp_path)?;
    Ok(report)
}

/// `etcdctl snapshot status` of `db` (the file itself, or its decompressed
/// copy) added to the report of `path`; a refusal means the file is corrupt.
fn add_etcdctl_status(
    report: &mut VerifyReport,
    etcdctl: &Path,
    path: &Path,
    db: &Path,
) -> Result<()> {
    let status = etcdctl_status(etcdctl, db).map_err(|e| match e {
        Error::Command { stderr, .. } => Error::corrupt(
            path,
            format!("`etcdctl snapshot status` rejects the db: {stderr}"),
        ),
        other => other,
    })?;
    report.checks.push(format!(
        "etcdctl snapshot status: revision {}, {} keys, hash {:#x}",
        status.revision, status.total_key, status.hash
    ));
    report.etcdctl = Some(status);
    Ok(())
}

/// Runs `etcdctl snapshot status -w json FILE`.
pub(crate) fn etcdctl_status(etcdctl: &Path, db: &Path) -> Result<EtcdctlStatus> {
    let out = crate::child_command(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("status")
        .arg("--write-out=json")
        .arg(db)
        .output()
        .map_err(|e| Error::io("cannot run", etcdctl, e))?;
    let command = format!("{} snapshot status {}", etcdctl.display(), db.display());
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Command {
        command,
        status: "unparseable output".to_string(),
        stderr: format!("{e}: {}", String::from_utf8_lossy(&out.stdout).trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_hasher_any_split() {
        let mut data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let sum: [u8; 32] = Sha256::digest(&data).into();
        data.extend_from_slice(&sum);
        for split in [1usize, 5, 31, 32, 33, 100, 4096] {
            let mut th = TrailerHasher::new();
            for c in data.chunks(split) {
                th.update(c);
            }
            let (a, b) = th.finish().expect("long enough");
            assert_eq!(a, b, "split {split}");
        }
    }
}
