//! Runs the host's etcd member as a child process and keeps it running.
//!
//! etcd is started in its own process group, so neither a signal to the
//! agent's group nor the agent's death takes it down: an agent crash or
//! upgrade must never stop etcd. The pid goes to `state_dir/etcd.pid`; a
//! restarted agent *adopts* the etcd it finds there (same data dir on its
//! command line, process alive) instead of starting a second one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::process::{alive, signal};

/// Everything needed to compute etcd's flags for this host.
#[derive(Debug, Clone)]
pub struct EtcdSpec {
    pub binary: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub quota_backend_bytes: u64,
    pub pre_vote: bool,
    pub extra_args: Vec<String>,
    pub log_path: PathBuf,
    pub pid_path: PathBuf,
}

/// How etcd is to find its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// The data dir holds a member already: etcd ignores the bootstrap flags.
    Restart,
    /// Bootstrap a new cluster: `initial_cluster` is `name=peer_url,…`.
    New {
        initial_cluster: String,
        token: String,
    },
    /// Join an existing cluster after `member add`: empty data dir.
    Existing {
        initial_cluster: String,
        token: String,
    },
    /// As `Restart`, but serving clients only on `client_url` (a port only
    /// the agent knows): a rebuilt cluster is prepared there before any
    /// client sees it.
    Sealed { client_url: String },
}

/// The command-line flags for etcd in `mode`.
pub fn args(spec: &EtcdSpec, mode: &StartMode) -> Vec<String> {
    let client_url = match mode {
        StartMode::Sealed { client_url } => client_url,
        _ => &spec.client_url,
    };
    let mut a = vec![
        format!("--name={}", spec.name),
        format!("--data-dir={}", spec.data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={}", spec.peer_url),
        format!("--initial-advertise-peer-urls={}", spec.peer_url),
        format!("--heartbeat-interval={}", spec.heartbeat.as_millis()),
        format!("--election-timeout={}", spec.election_timeout.as_millis()),
        format!("--quota-backend-bytes={}", spec.quota_backend_bytes),
        "--logger=zap".to_string(),
        "--log-outputs=stderr".to_string(),
        "--enable-v2=false".to_string(),
    ];
    if spec.pre_vote {
        a.push("--pre-vote=true".to_string());
    }
    match mode {
        StartMode::Restart | StartMode::Sealed { .. } => {}
        StartMode::New {
            initial_cluster,
            token,
        } => {
            a.push(format!("--initial-cluster={initial_cluster}"));
            a.push("--initial-cluster-state=new".to_string());
            a.push(format!("--initial-cluster-token={token}"));
        }
        StartMode::Existing {
            initial_cluster,
            token,
        } => {
            a.push(format!("--initial-cluster={initial_cluster}"));
            a.push("--initial-cluster-state=existing".to_string());
            a.push(format!("--initial-cluster-token={token}"));
        }
    }
    a.extend(spec.extra_args.iter().cloned());
    a
}

/// File in the etcd data dir naming the epoch its data belongs to.
pub const EPOCH_FILE: &str = "edgeplane-epoch";

/// The epoch of the data in `data_dir` (0 when unmarked: the first cluster).
pub fn data_epoch(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(EPOCH_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Marks `data_dir` as belonging to `epoch` (created if missing).
pub fn mark_epoch(data_dir: &Path, epoch: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    write_atomic(&data_dir.join(EPOCH_FILE), format!("{epoch}\n").as_bytes())
}

/// Whether `dir` holds an etcd member's data.
pub fn has_member_data(dir: &Path) -> bool {
    dir.join("member").join("wal").is_dir()
}

/// Whether `dir` exists with anything in it: after a failed fsync, even a
/// first start's partial directory (no WAL yet, a half-written db) is
/// suspect and is set aside, never started on again.
pub fn has_any_data(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut r| r.next().is_some())
}

/// Moves a data dir aside (kept for forensics) and keeps at most `keep` such copies.
pub fn move_aside(data_dir: &Path, keep: usize) -> anyhow::Result<Option<PathBuf>> {
    move_aside_as(data_dir, "removed", keep)
}

/// Moves a data dir aside as `NAME.LABEL-STAMP`, keeping at most `keep`
/// copies with that label (other labels are never pruned by this call).
pub fn move_aside_as(data_dir: &Path, label: &str, keep: usize) -> anyhow::Result<Option<PathBuf>> {
    if !data_dir.exists() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "etcd".into());
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let target = parent.join(format!("{name}.{label}-{stamp}"));
    std::fs::rename(data_dir, &target).with_context(|| {
        format!(
            "could not move {} aside to {}",
            data_dir.display(),
            target.display()
        )
    })?;
    // Bound the forensics copies: oldest first by name (the stamp sorts).
    let prefix = format!("{name}.{label}-");
    let mut old: Vec<PathBuf> = std::fs::read_dir(parent)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    old.sort();
    while old.len() > keep {
        let victim = old.remove(0);
        let _ = std::fs::remove_dir_all(&victim);
    }
    Ok(Some(target))
}

/// Why etcd is not running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The cluster removed this member; its data must not be used again.
    Removed,
    /// etcd exited on a failed fsync or write of its data (EIO): the data
    /// is suspect (`disk_fault`). The status text and the fatal log line.
    FsyncFailed(String),
    /// Any other exit; the status text and the last log line.
    Other(String),
}

/// The local etcd process: spawned by us, or adopted from a previous agent.
#[derive(Debug)]
pub struct Supervisor {
    pub spec: EtcdSpec,
    child: Option<tokio::process::Child>,
    adopted: Option<i32>,
    pub started_at: Option<Instant>,
    pub restarts: u32,
    next_start: Option<Instant>,
}

impl Supervisor {
    pub fn new(spec: EtcdSpec) -> Supervisor {
        Supervisor {
            spec,
            child: None,
            adopted: None,
            started_at: None,
            restarts: 0,
            next_start: None,
        }
    }

    /// The pid of the running etcd, if any.
    pub fn pid(&self) -> Option<i32> {
        if let Some(c) = &self.child {
            return c.id().and_then(|p| i32::try_from(p).ok());
        }
        self.adopted.filter(|p| alive(*p))
    }

    pub fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// Adopts an etcd left running by a previous agent: the pid file names a
    /// live process whose command line has our `--data-dir`.
    pub fn adopt(&mut self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.spec.pid_path)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if !alive(pid) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let want = format!("--data-dir={}", self.spec.data_dir.display());
        let ours = cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes());
        if !ours {
            return None;
        }
        self.adopted = Some(pid);
        self.started_at = Some(Instant::now());
        Some(pid)
    }

    /// Whether a (re)start is allowed now (restart backoff).
    pub fn may_start(&self) -> bool {
        self.next_start.is_none_or(|t| Instant::now() >= t)
    }

    /// Cuts etcd's log when it passes [`LOG_MAX_BYTES`] (see [`bound_log`]).
    pub fn bound_log(&self) {
        match bound_log(&self.spec.log_path, LOG_MAX_BYTES) {
            Ok(true) => tracing::info!(
                "etcd's log passed {} MiB: its content moved to {}.",
                LOG_MAX_BYTES >> 20,
                self.spec.log_path.with_extension("log.1").display()
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "Could not bound etcd's log {}: {e}",
                self.spec.log_path.display()
            ),
        }
    }

    /// Starts etcd in `mode`.
    pub fn start(&mut self, mode: &StartMode) -> anyhow::Result<i32> {
        if let Some(parent) = self.spec.log_path.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        rotate(&self.spec.log_path, LOG_MAX_BYTES);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .with_context(|| format!("could not open etcd log {}", self.spec.log_path.display()))?;
        let mut cmd =
            tokio::process::Command::from(edgeplane_snapshot::child_command(&self.spec.binary));
        cmd.args(args(&self.spec, mode))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("could not duplicate the etcd log handle")?,
            )
            .stderr(log)
            .kill_on_drop(false)
            // etcd 3.4 speaks sd_notify itself when it sees NOTIFY_SOCKET: the
            // agent is the unit's main process and the only one to notify.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // Own process group: a signal to the agent's group must not reach etcd.
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start etcd ({})", self.spec.binary.display()))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        write_atomic(&self.spec.pid_path, format!("{pid}\n").as_bytes())
            .with_context(|| format!("could not write {}", self.spec.pid_path.display()))?;
        self.child = Some(child);
        self.adopted = None;
        self.started_at = Some(Instant::now());
        tracing::info!(pid, ?mode, "Started etcd.");
        Ok(pid)
    }

    /// If etcd has exited since the last call, why. Arms the restart backoff.
    pub fn poll_exit(&mut self) -> Option<Exit> {
        let status = if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => Some(format!("{status}")),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            }
        } else if let Some(pid) = self.adopted {
            (!alive(pid)).then(|| "adopted process is gone".to_string())
        } else {
            None
        }?;
        self.child = None;
        self.adopted = None;
        let ran_for = self.started_at.map(|t| t.elapsed()).unwrap_or_default();
        // Backoff: quick first restart, doubling while it keeps failing fast.
        if ran_for > Duration::from_secs(60) {
            self.restarts = 0;
        }
        self.restarts += 1;
        let backoff = Duration::from_millis(250 * 2u64.pow(self.restarts.min(7)))
            .min(Duration::from_secs(30));
        self.next_start = Some(Instant::now() + backoff);
        let tail = log_tail(&self.spec.log_path, 16 << 10);
        if tail.contains("permanently removed") || tail.contains("has been removed") {
            return Some(Exit::Removed);
        }
        // Only this run's lines: the log is appended to across restarts.
        let this_run = tail
            .rfind("\"msg\":\"starting an etcd server\"")
            .map_or(tail.as_str(), |i| &tail[i..]);
        if let Some(line) = this_run
            .lines()
            .rev()
            .find(|l| super::disk_fault::is_fsync_failure(l))
        {
            let line: String = line.chars().take(400).collect();
            return Some(Exit::FsyncFailed(format!(
                "{status}; fatal log line: {line}"
            )));
        }
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        Some(Exit::Other(format!(
            "exit status {status}; last log line: {last}"
        )))
    }

    /// Stops etcd gracefully: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
            } else if !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(pid) {
            tracing::warn!(pid, "etcd did not stop within {grace:?}; killing it.");
            signal(pid, Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait().await;
        }
        self.adopted = None;
        let _ = std::fs::remove_file(&self.spec.pid_path);
    }

    /// SIGKILL (used when the member must not keep running, e.g. it was removed).
    pub async fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait().await;
        }
        self.adopted = None;
        let _ = std::fs::remove_file(&self.spec.pid_path);
    }
}

/// The most etcd's log file holds; its previous part is kept as
/// `etcd.log.1`, so at most twice this is on disk.
pub const LOG_MAX_BYTES: u64 = 32 << 20;

/// Keeps etcd's log bounded while etcd runs (called every tick): over
/// `max`, its content is copied to `.log.1` and the file is truncated.
/// etcd's stdout and stderr are this file opened with O_APPEND (see
/// [`Supervisor::start`]), so its next line lands at the new end. Only lines
/// written between the copy and the truncation are lost, as with
/// logrotate's `copytruncate`. The agent does not pipe etcd's output through
/// itself instead: an etcd adopted after an agent crash would die on EPIPE.
/// Returns whether it cut the file.
pub fn bound_log(path: &Path, max: u64) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    std::fs::copy(path, path.with_extension("log.1"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

/// Keeps one previous log file when the current one exceeds `max` bytes.
fn rotate(path: &Path, max: u64) {
    if std::fs::metadata(path)
        .map(|m| m.len() > max)
        .unwrap_or(false)
    {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
}

/// The last `bytes` of a file, lossily decoded.
pub fn log_tail(path: &Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes a file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #20 §3: the log of a running etcd stays bounded. A writer that
    /// holds the file open with O_APPEND (as etcd's stdout and stderr do)
    /// keeps writing after the cut, and its lines land at the new start;
    /// the old content is in `.log.1`.
    #[test]
    fn a_log_written_through_an_append_handle_is_cut_and_kept_bounded() -> std::io::Result<()> {
        use std::io::Write;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("etcd.log");
        let mut etcd = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let line = [b'x'; 99];
        for _ in 0..200 {
            etcd.write_all(&line)?;
            etcd.write_all(b"\n")?;
        }
        assert!(!bound_log(&path, 50_000)?, "under the limit: nothing cut");
        for _ in 0..400 {
            etcd.write_all(&line)?;
            etcd.write_all(b"\n")?;
        }
        assert!(bound_log(&path, 50_000)?);
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        assert_eq!(
            std::fs::metadata(path.with_extension("log.1"))?.len(),
            60_000
        );
        etcd.write_all(b"after the cut\n")?;
        assert_eq!(std::fs::read_to_string(&path)?, "after the cut\n");
        // Over many cuts the two files never hold more than twice the limit.
        for _ in 0..5_000 {
            etcd.write_all(&line)?;
            etcd.write_all(b"\n")?;
            bound_log(&path, 50_000)?;
        }
        let total = std::fs::metadata(&path)?.len()
            + std::fs::metadata(path.with_extension("log.1"))?.len();
        assert!(total <= 2 * 50_000 + 100, "{total}");
        // A missing log is not an error.
        assert!(!bound_log(&dir.path().join("none.log"), 1)?);
        Ok(())
    }

    fn spec() -> EtcdSpec {
        EtcdSpec {
            binary: "/usr/bin/etcd".into(),
            name: "h1".into(),
            data_dir: "/d".into(),
            client_url: "http://127.0.0.1:1".into(),
            peer_url: "http://127.0.0.1:2".into(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            quota_backend_bytes: 1 << 31,
            pre_vote: true,
            extra_args: vec!["--snapshot-count=5000".into()],
            log_path: "/l".into(),
            pid_path: "/p".into(),
        }
    }

    #[test]
    fn flags_per_mode() {
        let s = spec();
        let restart = args(&s, &StartMode::Restart);
        assert!(restart.contains(&"--pre-vote=true".to_string()));
        assert!(!restart.iter().any(|a| a.starts_with("--initial-cluster")));
        assert_eq!(
            restart.last().map(String::as_str),
            Some("--snapshot-count=5000")
        );
        let join = args(
            &s,
            &StartMode::Existing {
                initial_cluster: "h1=http://127.0.0.1:2".into(),
                token: "t-e0".into(),
            },
        );
        assert!(join.contains(&"--initial-cluster-state=existing".to_string()));
        assert!(join.contains(&"--initial-cluster-token=t-e0".to_string()));
        assert!(join.contains(&"--heartbeat-interval=100".to_string()));
        assert!(join.contains(&"--election-timeout=1000".to_string()));
    }

    #[test]
    fn move_aside_keeps_a_bounded_number() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("etcd");
        for _ in 0..4 {
            std::fs::create_dir_all(data.join("member"))?;
            move_aside(&data, 2)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = std::fs::read_dir(tmp.path())?.count();
        assert_eq!(n, 2);
        assert!(!data.exists());
        Ok(())
    }
}
