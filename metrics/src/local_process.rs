//! One receiver process on loopback, for tests and benches: what the
//! local Prometheus and the local VictoriaMetrics share.
//!
//! The process runs in its own temporary directory with its output in a log
//! file there, is waited for until a readiness URL answers (or it exits, with
//! its log's tail in the error), and is killed on drop so a failing test
//! leaves no process behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running receiver process; killed on drop.
pub(crate) struct LocalProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// What error messages call it, e.g. `"prometheus"`.
    name: &'static str,
    /// The log file's name in `dir`.
    log: String,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `port`, or a free one when it is 0.
pub(crate) fn port_or_free(port: u16) -> Result<u16, String> {
    if port != 0 {
        return Ok(port);
    }
    free_port().map_err(|e| format!("free port: {e}"))
}

impl LocalProcess {
    /// Spawns `cmd` with its output in `<dir>/<name>.log`.
    pub(crate) fn spawn(
        name: &'static str,
        dir: tempfile::TempDir,
        port: u16,
        mut cmd: Command,
    ) -> Result<Self, String> {
        let log_name = format!("{name}.log");
        let log = std::fs::File::create(dir.path().join(&log_name))
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", cmd.get_program().to_string_lossy()))?;
        Ok(LocalProcess {
            child: Some(child),
            dir,
            port,
            name,
            log: log_name,
        })
    }

    /// Waits until `url` answers with a success, up to `limit`.
    pub(crate) async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "{} exited with {status}: {}",
                    self.name,
                    self.log_tail()
                ));
            }
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready after {limit:?}: {}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the process' own log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join(&self.log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (also done on drop).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
