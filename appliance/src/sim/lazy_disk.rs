//! A host's disk that can lose what was never fsynced: the test crate's
//! `edgeplane-lazyfs` FUSE passthrough mounted on `HOST/disk` (backed by
//! `HOST/disk.lower`), where the agent keeps its state, snapshots and buffer
//! and etcd its data dir ([`super::SiteSpec::lazy_disk`]).
//!
//! A SIGKILL leaves the page cache intact; [`LazyDisk::power_cut`] does
//! not: once the host's processes are dead, every page and file length not
//! fsynced since it changed is put back, and the disk mounted again.
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{signal, wait_until};

#[derive(Debug)]
pub struct LazyDisk {
    binary: PathBuf,
    lower: PathBuf,
    mount: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl LazyDisk {
    /// Mounts `HOST/disk` (created with its backing `HOST/disk.lower`).
    pub fn mount(binary: &Path, host_dir: &Path) -> io::Result<LazyDisk> {
        let mut d = LazyDisk {
            binary: binary.to_path_buf(),
            lower: host_dir.join("disk.lower"),
            mount: host_dir.join("disk"),
            log: host_dir.join("lazyfs.log"),
            child: None,
        };
        std::fs::create_dir_all(&d.lower)?;
        std::fs::create_dir_all(&d.mount)?;
        d.start()?;
        Ok(d)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The backing directory (where the files really are).
    pub fn backing(&self) -> &Path {
        &self.lower
    }

    fn mounted(&self) -> bool {
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        match self.mount.parent() {
            Some(parent) => dev(&self.mount).is_some() && dev(&self.mount) != dev(parent),
            None => false,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.binary)
            .arg(&self.lower)
            .arg(&self.mount)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let up = wait_until(Duration::from_secs(10), || {
            self.mounted() || !matches!(child.try_wait(), Ok(None))
        });
        if !up || !self.mounted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{} did not mount {} (see {})",
                self.binary.display(),
                self.mount.display(),
                self.log.display()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the daemon with `sig` and waits for it (its unmount).
    fn stop_with(&mut self, sig: Signal) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            signal(pid, sig);
        }
        let done = wait_until(Duration::from_secs(30), || {
            !matches!(child.try_wait(), Ok(None))
        });
        if !done {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{} did not stop within 30 s",
                self.binary.display()
            )));
        }
        match child.wait()? {
            s if s.success() => Ok(()),
            s => Err(io::Error::other(format!(
                "{} ended {s} (see {})",
                self.binary.display(),
                self.log.display()
            ))),
        }
    }

    /// The power cut, once every process of the host is dead: the unsynced
    /// data dropped and the disk mounted again. Returns the daemon's account
    /// of what it dropped.
    pub fn power_cut(&mut self) -> io::Result<String> {
        // Whatever still runs on this disk is powered off with it (say, an
        // etcd its agent started just before the agent was killed).
        let users = users_of(&self.mount);
        for &pid in &users {
            signal(pid, Signal::SIGKILL);
        }
        wait_until(Duration::from_secs(5), || {
            users.iter().all(|&p| !super::alive(p))
        });
        self.stop_with(Signal::SIGUSR1)?;
        let text = std::fs::read_to_string(&self.log)?;
        let said = text
            .lines()
            .rev()
            .find(|l| l.contains("power cut:"))
            .unwrap_or("power cut: (no account in the log)")
            .to_string();
        self.start()?;
        Ok(said)
    }

    /// From now on, until the next power cut, fsync succeeds and keeps
    /// nothing, as on a disk whose write cache ignores flushes: the power
    /// cut puts every file back as it was now. For a test that proves its
    /// check sees lost writes.
    pub fn start_lying_about_fsync(&self) -> io::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .ok_or_else(|| io::Error::other("the lazy disk is not mounted"))?;
        signal(pid, Signal::SIGUSR2);
        Ok(())
    }

    /// A clean unmount that keeps every write.
    pub fn unmount(&mut self) -> io::Result<()> {
        self.stop_with(Signal::SIGTERM)
    }
}

/// The processes (not this one) with a file or their working directory
/// under `mount`, from `/proc` (no file under the mount is touched).
fn users_of(mount: &Path) -> Vec<i32> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let under = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(mount));
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let dir = PathBuf::from(format!("/proc/{pid}"));
            under(dir.join("cwd"))
                || std::fs::read_dir(dir.join("fd"))
                    .map(|fds| fds.filter_map(|f| f.ok()).any(|f| under(f.path())))
                    .unwrap_or(false)
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

impl Drop for LazyDisk {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
