//! A real VictoriaMetrics single-node on loopback, for tests and the
//! backfill benchmark: the second region receiver besides Prometheus.
//!
//! Starts `/usr/bin/victoria-metrics` (Debian's `victoria-metrics`
//! package) in its own temporary directory, waits for `/health`, and kills
//! it on drop so a failing test leaves no process behind. Samples are read
//! back raw with `/api/v1/export`, which shows every stored sample at its
//! own timestamp (no query lookback, no latency offset).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::local_process::{LocalProcess, port_or_free};
use crate::local_prometheus::RawSeries;

/// Debian's path.
pub const VICTORIA_METRICS_BIN: &str = "/usr/bin/victoria-metrics";

/// How to start it.
#[derive(Debug, Clone)]
pub struct VictoriaOptions {
    pub binary: PathBuf,
    /// `-retentionPeriod`: samples older than this are dropped on write.
    pub retention: String,
    /// Listen on this port (0 = pick a free one).
    pub port: u16,
    /// More command-line flags.
    pub extra_args: Vec<String>,
}

impl Default for VictoriaOptions {
    fn default() -> Self {
        VictoriaOptions {
            binary: PathBuf::from(VICTORIA_METRICS_BIN),
            retention: "1y".into(),
            port: 0,
            extra_args: Vec::new(),
        }
    }
}

/// A running VictoriaMetrics; killed on drop.
pub struct LocalVictoria {
    proc: LocalProcess,
    http: reqwest::Client,
}

impl LocalVictoria {
    /// Starts it and waits (up to 30 s) until `/health` answers.
    pub async fn start(opts: VictoriaOptions) -> Result<Self, String> {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = port_or_free(opts.port)?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg(format!(
            "-storageDataPath={}",
            dir.path().join("data").display()
        ))
        .arg(format!("-retentionPeriod={}", opts.retention))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-loggerLevel=WARN")
        .args(&opts.extra_args);
        let mut me = LocalVictoria {
            proc: LocalProcess::spawn("victoria-metrics", dir, port, cmd)?,
            http: reqwest::Client::new(),
        };
        let health = format!("{}/health", me.base_url());
        me.proc
            .wait_ready(&me.http, &health, Duration::from_secs(30))
            .await?;
        Ok(me)
    }

    /// The last lines of its own log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    pub fn dir(&self) -> &Path {
        self.proc.dir()
    }

    pub fn port(&self) -> u16 {
        self.proc.port()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// Kills the process (also done on drop).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Every raw sample of the series matching `selector` (a series
    /// selector such as `outage_load` or `{__name__=~"a.*"}`) from
    /// `start_ms` on, after making the freshly written data searchable.
    pub async fn raw(&self, selector: &str, start_ms: i64) -> Result<Vec<RawSeries>, String> {
        // Written samples are searchable after an in-memory flush (about a
        // second); this forces it.
        let _ = self
            .http
            .get(format!("{}/internal/force_flush", self.base_url()))
            .send()
            .await;
        let start = format!("{:.3}", start_ms as f64 / 1000.0);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.base_url()),
            &[("match[]", selector), ("start", start.as_str())],
        )
        .map_err(|e| format!("export url: {e}"))?;
        let text = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("export {selector}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("export {selector}: {e}"))?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("export line {line:?}: {e}"))?;
            let labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
            let vals = v["values"].as_array().cloned().unwrap_or_default();
            let mut samples: Vec<(i64, f64)> = ts
                .iter()
                .zip(vals.iter())
                .filter_map(|(t, x)| Some((t.as_i64()?, x.as_f64()?)))
                .collect();
            samples.sort_by_key(|(t, _)| *t);
            out.push(RawSeries { labels, samples });
        }
        Ok(out)
    }
}
