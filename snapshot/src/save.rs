//! Taking a snapshot: etcd's Snapshot RPC streamed straight into a zstd
//! encoder on a blocking thread (network and compression overlap; only a few
//! chunks are ever in memory), etcd's trailer checked on the way, the file
//! made visible by one rename.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use etcd_client::Client;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::{
    FORMAT_VERSION, SnapshotInfo, SnapshotMeta, new_name, parent_dir, sync_dir, write_footer,
};
use crate::progress::{Progress, Ticker};
use crate::verify::{TRAILER, TrailerHasher};

/// How to take a snapshot.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// This host's name, recorded as the snapshot's origin.
    pub origin: String,
    /// The client URL `client` talks to (for the record and error messages).
    pub endpoint: String,
    /// zstd level. Default 3.
    pub level: i32,
    /// zstd worker threads; 0 compresses on the writer thread itself.
    /// Default: 2 when the machine has at least 2 cores, else 0.
    pub workers: u32,
}

impl SaveOptions {
    pub fn new(origin: impl Into<String>, endpoint: impl Into<String>) -> SaveOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SaveOptions {
            origin: origin.into(),
            endpoint: endpoint.into(),
            level: 3,
            workers: if cores >= 2 { 2 } else { 0 },
        }
    }
}

/// Writes and hashes the compressed bytes.
struct HashingWriter {
    file: File,
    hasher: Sha256,
    count: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// What the writer thread hands back.
struct Written {
    tmp: tempfile::NamedTempFile,
    stream_bytes: u64,
    compressed_bytes: u64,
    sha256: String,
    etcd_sha256: [u8; 32],
    computed_sha256: [u8; 32],
    head: Vec<u8>,
}

fn is_learner_refusal(err: &etcd_client::Error) -> bool {
    err.to_string().contains("not supported for learner")
}

/// Takes a snapshot from the etcd member `client` talks to (one endpoint: a
/// voter; a learner gives [`Error::Learner`]) and writes it to `dest`: a
/// directory (a new name is chosen there) or a file path. Returns the
/// metadata of the new file. Nothing is visible at `dest` unless the whole
/// stream arrived and etcd's trailer matched.
///
/// A request timeout set on `client` (`ConnectOptions::with_timeout`) bounds
/// the WHOLE stream: use a client without one (or a generous one) and put
/// your own deadline around the call if needed.
pub async fn save(
    client: &mut Client,
    dest: &Path,
    opts: &SaveOptions,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<SnapshotMeta> {
    let endpoint = opts.endpoint.clone();
    let etcd_err = |what: &'static str| {
        let endpoint = endpoint.clone();
        move |err: etcd_client::Error| {
            if is_learner_refusal(&err) {
                Error::Learner {
                    endpoint: endpoint.clone(),
                }
            } else {
                Error::Etcd {
                    what,
                    endpoint: endpoint.clone(),
                    err,
                }
            }
        }
    };
    let status = client.status().await.map_err(etcd_err("Status"))?;
    if status.is_learner() {
        return Err(Error::Learner { endpoint });
    }
    let header = status.header();
    let (member_id, cluster_id, revision) = header
        .map(|h| (h.member_id(), h.cluster_id(), h.revision()))
        .unwrap_or_default();
    let created_at = Utc::now();

    let (dir, final_path) = if dest.is_dir() {
        let name = new_name(&opts.origin, created_at, revision);
        (dest.to_path_buf(), dest.join(name))
    } else {
        (parent_dir(dest), dest.to_path_buf())
    };
    let tmp = tempfile::Builder::new()
        .prefix(".save-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("cannot create a temporary file in", &dir, e))?;
    let tmp_path = tmp.path().to_path_buf();

    let mut stream = client.snapshot().await.map_err(etcd_err("Snapshot"))?;

    // Chunks of 32 KiB (etcd 3.4's send size): 64 in flight at most.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let level = opts.level;
    let workers = opts.workers;
    let writer_path = tmp_path.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Written> {
        let io = |e| Error::io("cannot write", writer_path.clone(), e);
        let file = tmp.reopen().map_err(io)?;
        let hw = HashingWriter {
            file,
            hasher: Sha256::new(),
            count: 0,
        };
        let mut enc = zstd::stream::write::Encoder::new(hw, level).map_err(io)?;
        enc.include_checksum(true).map_err(io)?;
        if workers > 0 {
            // Falls back to single-threaded if the library was built without threads.
            let _ = enc.multithread(workers);
        }
        let mut th = TrailerHasher::new();
        while let Some(chunk) = rx.blocking_recv() {
            th.update(&chunk);
            enc.write_all(&chunk).map_err(io)?;
        }
        let hw = enc.finish().map_err(io)?;
        let stream_bytes = th.total();
        let head = th.head().to_vec();
        // A stream shorter than the trailer: two different values, so the
        // checksum check below refuses it.
        let (computed_sha256, etcd_sha256) = th.finish().unwrap_or(([0; 32], [1; 32]));
        Ok(Written {
            tmp,
            stream_bytes,
            compressed_bytes: hw.count,
            sha256: hex::encode(hw.hasher.finalize()),
            etcd_sha256,
            computed_sha256,
            head,
        })
    });

    let mut ticker = Ticker::new("save", progress);
    let mut received: u64 = 0;
    let mut expected: Option<u64> = None;
    let mut remaining_at_end: Option<u64> = None;
    let send_result: Result<()> = async {
        while let Some(msg) = stream
            .message()
            .await
            .map_err(etcd_err("Snapshot stream"))?
        {
            let blob = msg.blob();
            received += blob.len() as u64;
            let remaining = msg.remaining_bytes();
            // etcd counts `remaining_bytes` over the db only, then sends its
            // 32-byte sha256 as a last message (remaining 0).
            expected.get_or_insert(received + remaining + TRAILER as u64);
            remaining_at_end = Some(remaining);
            ticker.tick(received, expected);
            if tx.send(blob.to_vec()).await.is_err() {
                // The writer stopped: its error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::Task(format!("snapshot writer: {e}")))?;
    send_result?;
    let written = written?;
    if expected.is_none_or(|e| e != received) || remaining_at_end != Some(0) {
        return Err(Error::ShortStream {
            endpoint,
            got: received,
            expected: expected.unwrap_or(0),
        });
    }
    if written.stream_bytes < TRAILER as u64 || written.computed_sha256 != written.etcd_sha256 {
        return Err(Error::StreamChecksum {
            endpoint,
            detail: format!(
                "trailer {} vs computed {} over {} bytes",
                hex::encode(written.etcd_sha256),
                hex::encode(written.computed_sha256),
                written.stream_bytes
            ),
        });
    }
    let db_bytes = written.stream_bytes - TRAILER as u64;
    // A damaged stream whose trailer still matched would be etcd's own bug;
    // still, never record a file that `verify` would refuse.
    let head = &written.head[..written.head.len().min(db_bytes as usize)];
    crate::bbolt::check(head, db_bytes, true).map_err(|e| Error::StreamChecksum {
        endpoint: endpoint.clone(),
        detail: format!("the streamed db is not a sane bbolt file: {e}"),
    })?;
    ticker.finish(received, expected);

    let info = SnapshotInfo {
        format: FORMAT_VERSION,
        origin: opts.origin.clone(),
        created_at,
        member_id: format!("{member_id:x}"),
        cluster_id: format!("{cluster_id:x}"),
        endpoint: endpoint.clone(),
        revision,
        raft_index: status.raft_index(),
        raft_term: status.raft_term(),
        etcd_version: status.version().to_string(),
        db_bytes,
        etcd_sha256: hex::encode(written.etcd_sha256),
        compressed_bytes: written.compressed_bytes,
        sha256: written.sha256,
        zstd_level: level,
    };
    let tmp = written.tmp;
    let meta = tokio::task::spawn_blocking(move || finalize(tmp, info, final_path))
        .await
        .map_err(|e| Error::Task(format!("snapshot finalize: {e}")))??;
    tracing::info!(
        path = %meta.path.display(),
        revision,
        db_bytes,
        compressed_bytes = meta.info.compressed_bytes,
        "Saved an etcd snapshot."
    );
    Ok(meta)
}

/// Appends the footer, fsyncs, renames into place (never over an existing
/// file), fsyncs the directory. Returns the new file's metadata.
pub(crate) fn finalize(
    tmp: tempfile::NamedTempFile,
    info: SnapshotInfo,
    final_path: PathBuf,
) -> Result<SnapshotMeta> {
    let tmp_path: PathBuf = tmp.path().to_path_buf();
    let io = |e| Error::io("cannot write", tmp_path.clone(), e);
    let mut f = tmp.reopen().map_err(io)?;
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::End(0)).map_err(io)?;
    let mut w = std::io::BufWriter::new(&f);
    write_footer(&mut w, &info).map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    f.sync_all().map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    tmp.persist_noclobber(&final_path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: final_path.clone(),
            }
        } else {
            Error::io("cannot rename into place", &final_path, e.error)
        }
    })?;
    sync_dir(&parent_dir(&final_path))?;
    Ok(SnapshotMeta {
        name: final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: final_path,
        file_bytes: len,
        info,
    })
}

/// Takes a snapshot of a stopped member's database file (`member/snap/db`)
/// into the directory `dest`, in the same format as [`save`]: what etcd's
/// Snapshot RPC would have streamed. That is the file up to the bbolt
/// high-water mark (a live db is pre-grown past it; bbolt never reads past
/// it) followed by its sha256 as etcd's trailer, so `verify` and `restore`
/// take it as they take any snapshot. etcd does not run, so the revision
/// and raft position are unknown and recorded as 0; `member_id` and
/// `cluster_id` are what the caller last knew (hex, may be empty).
///
/// Why: data about to be set aside because the site moved on without it
/// may hold acknowledged writes no live cluster has; a checksummed
/// snapshot of it sits where the operator and `diag` look for snapshots.
pub fn save_db_file(
    db: &Path,
    dest: &Path,
    origin: &str,
    member_id: &str,
    cluster_id: &str,
    level: i32,
) -> Result<SnapshotMeta> {
    use std::io::Read;
    let mut file = File::open(db).map_err(|e| Error::io("cannot open", db, e))?;
    let db_len = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", db, e))?
        .len();
    let mut head = vec![0u8; crate::bbolt::HEAD_BYTES.min(db_len as usize)];
    file.read_exact(&mut head)
        .map_err(|e| Error::io("cannot read", db, e))?;
    let meta = crate::bbolt::check(&head, db_len, false)
        .map_err(|e| Error::corrupt(db, format!("not a sane bbolt database: {e}")))?;
    let db_bytes = meta.pgid * u64::from(meta.page_size);
    let created_at = Utc::now();
    let final_path = dest.join(new_name(origin, created_at, 0));
    let tmp = tempfile::Builder::new()
        .prefix(".save-")
        .suffix(".tmp")
        .tempfile_in(dest)
        .map_err(|e| Error::io("cannot create a temporary file in", dest, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let io = |e| Error::io("cannot write", tmp_path.clone(), e);
    let hw = HashingWriter {
        file: tmp.reopen().map_err(io)?,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut enc = zstd::stream::write::Encoder::new(hw, level).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    // Read from the start again: the head above was only for the meta pages.
    let mut file = File::open(db).map_err(|e| Error::io("cannot open", db, e))?;
    let mut db_hash = Sha256::new();
    let mut left = db_bytes;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(left as usize);
        file.read_exact(&mut buf[..want])
            .map_err(|e| Error::io("cannot read", db, e))?;
        db_hash.update(&buf[..want]);
        enc.write_all(&buf[..want]).map_err(io)?;
        left -= want as u64;
    }
    let etcd_sha256: [u8; 32] = db_hash.finalize().into();
    enc.write_all(&etcd_sha256).map_err(io)?;
    let hw = enc.finish().map_err(io)?;
    let info = SnapshotInfo {
        format: FORMAT_VERSION,
        origin: origin.to_string(),
        created_at,
        member_id: member_id.to_string(),
        cluster_id: cluster_id.to_string(),
        endpoint: format!("file:{}", db.display()),
        revision: 0,
        raft_index: 0,
        raft_term: 0,
        etcd_version: String::new(),
        db_bytes,
        etcd_sha256: hex::encode(etcd_sha256),
        compressed_bytes: hw.count,
        sha256: hex::encode(hw.hasher.finalize()),
        zstd_level: level,
    };
    finalize(tmp, info, final_path)
}
