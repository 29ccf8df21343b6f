//! Bare etcd clusters (no agent): the harness's own check, and the baseline
//! that `edgeplane bench failover` compares the agent against.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{alive, free_port, wait_until};

/// The etcd binary bare clusters run.
pub fn etcd_bin() -> PathBuf {
    std::env::var("EDGEPLANE_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/etcd"))
}

/// One etcd member process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Member {
    pub fn pid(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(None) => i32::try_from(c.id()).ok(),
            _ => None,
        }
    }

    /// A member named `name` on loopback ports, its data and log under
    /// `dir`; not started. Its cluster flags are the caller's to add.
    fn on_loopback(dir: &std::path::Path, name: String, client: u16, peer: u16) -> Member {
        let data_dir = dir.join(&name);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
        ];
        Member {
            log: dir.join(format!("{name}.log")),
            name,
            client_url,
            peer_url,
            data_dir,
            child: None,
            args,
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(etcd_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (e.g. SIGSTOP / SIGCONT).
    pub fn signal(&mut self, sig: Signal) {
        if let Some(pid) = self.pid() {
            super::signal(pid, sig);
        }
    }

    /// Starts the member again on its data dir.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

/// A bare etcd cluster of `n` voters on loopback.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize) -> std::io::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("edgeplane-etcd-")
            .tempdir()?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push((format!("m{}", i + 1), free_port()?, free_port()?));
        }
        let initial = members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut out = Vec::new();
        for (name, client, peer) in members {
            let mut m = Member::on_loopback(dir.path(), name, client, peer);
            m.args.extend([
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".to_string(),
                "--initial-cluster-token=harness".to_string(),
            ]);
            m.spawn()?;
            out.push(m);
        }
        Ok(Cluster { members: out, dir })
    }

    /// A one-member cluster restored from a snapshot file (plain HTTP on
    /// loopback), to read back what the snapshot holds.
    pub fn from_snapshot(snapshot: &std::path::Path) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("edgeplane-etcd-")
            .tempdir()?;
        let mut m = Member::on_loopback(dir.path(), "m1".into(), free_port()?, free_port()?);
        let target = edgeplane_snapshot::RestoreTarget::new(
            &m.data_dir,
            &m.name,
            format!("{}={}", m.name, m.peer_url),
            "harness-restore",
            &m.peer_url,
        );
        edgeplane_snapshot::restore(snapshot, &target, &mut |_| {})?;
        m.spawn()?;
        Ok(Cluster {
            members: vec![m],
            dir,
        })
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Pids of the members still running.
    pub fn pids(&mut self) -> Vec<i32> {
        self.members.iter_mut().filter_map(|m| m.pid()).collect()
    }

    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids = self.pids();
        self.kill_all();
        for pid in pids {
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
    }
}
