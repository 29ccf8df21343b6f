//! A single etcd member on loopback for tests: free ports, a temporary data
//! dir, killed (and waited for) on drop, also when a test panics.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn etcd_bin() -> PathBuf {
    std::env::var_os("EDGEPLANE_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

pub struct Etcd {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Etcd {
    /// Starts a member; `initial_cluster` None = a new single-member cluster.
    /// `existing`: join an existing cluster (`--initial-cluster-state=existing`).
    pub fn start(
        dir: &Path,
        name: &str,
        initial_cluster: Option<&str>,
        existing: bool,
        data_dir: Option<PathBuf>,
        peer_port: Option<u16>,
    ) -> Etcd {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", peer_port.unwrap_or_else(free_port));
        let data_dir = data_dir.unwrap_or_else(|| dir.join(name));
        let initial = initial_cluster
            .map(str::to_string)
            .unwrap_or_else(|| format!("{name}={peer_url}"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(etcd_bin())
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!(
                "--initial-cluster-state={}",
                if existing { "existing" } else { "new" }
            ))
            .arg("--initial-cluster-token=snapshot-test")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Etcd {
            name: name.to_string(),
            client_url,
            peer_url,
            data_dir,
            child,
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(30));
        etcd_client::Client::connect([self.client_url.as_str()], Some(opts))
            .await
            .unwrap()
    }

    /// Waits until the member answers Status (and, with `leader`, knows a leader).
    pub async fn wait_ready(&self, leader: bool) -> etcd_client::Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = self.client().await;
            if let Ok(s) = c.status().await
                && (!leader || s.leader() != 0)
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Etcd {
    /// SIGTERM and wait: etcd's own clean stop (its db is committed).
    #[allow(dead_code)]
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts `n` keys `k{i}` with values of about `size` bytes.
pub async fn fill(c: &mut etcd_client::Client, n: usize, size: usize) {
    for i in 0..n {
        let v = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(size));
        c.put(format!("k{i:05}"), v, None).await.unwrap();
    }
}

/// Installs the rustls provider reqwest needs (the binary does it in `run`).
pub fn rustls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
