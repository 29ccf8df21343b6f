//! A real Prometheus on loopback, for tests and the backfill benchmark.
//!
//! Starts `/usr/bin/prometheus` (Debian's 2.42) in its own temporary
//! directory with the remote-write receiver enabled and an out-of-order
//! window (2.42 has no flag for it; the config file's `storage.tsdb`
//! section is the way), waits for `/-/ready`, and kills it on drop so a
//! failing test leaves no process behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use crate::local_process::free_port;
use crate::local_process::{LocalProcess, port_or_free};

/// How to start it.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    pub binary: PathBuf,
    /// `storage.tsdb.out_of_order_time_window`, e.g. `"30d"`; `None` leaves
    /// it out (then Prometheus refuses samples about an hour older than its
    /// newest one).
    pub out_of_order_window: Option<String>,
    /// Listen on this port (0 = pick a free one).
    pub port: u16,
    /// More command-line flags.
    pub extra_args: Vec<String>,
    /// Serve HTTPS (Prometheus' `--web.config.file`) with this certificate.
    pub tls: Option<WebTls>,
}

/// PEM files for serving HTTPS; `ca_file` is what clients (and this
/// helper's own queries) trust.
#[derive(Debug, Clone)]
pub struct WebTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            binary: PathBuf::from("/usr/bin/prometheus"),
            out_of_order_window: Some("30d".into()),
            port: 0,
            extra_args: Vec::new(),
            tls: None,
        }
    }
}

/// One series as returned by a raw range-vector query.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    pub labels: BTreeMap<String, String>,
    /// `(timestamp_ms, value)`, oldest first.
    pub samples: Vec<(i64, f64)>,
}

/// A running Prometheus; killed on drop.
pub struct LocalPrometheus {
    proc: LocalProcess,
    http: reqwest::Client,
    https: bool,
}

impl LocalPrometheus {
    /// Starts Prometheus and waits (up to 30 s) until it is ready.
    pub async fn start(opts: PrometheusOptions) -> Result<Self, String> {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = port_or_free(opts.port)?;
        let mut cfg = String::from("global:\n  scrape_interval: 1m\n");
        if let Some(w) = &opts.out_of_order_window {
            cfg.push_str(&format!(
                "storage:\n  tsdb:\n    out_of_order_time_window: {w}\n"
            ));
        }
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).map_err(|e| format!("write config: {e}"))?;
        let mut web_args = Vec::new();
        let mut http = reqwest::Client::builder();
        if let Some(t) = &opts.tls {
            let web = dir.path().join("web.yml");
            std::fs::write(
                &web,
                format!(
                    "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n",
                    t.cert_file.display().to_string(),
                    t.key_file.display().to_string()
                ),
            )
            .map_err(|e| format!("write web config: {e}"))?;
            web_args.push(format!("--web.config.file={}", web.display()));
            let ca =
                std::fs::read(&t.ca_file).map_err(|e| format!("{}: {e}", t.ca_file.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&ca)
                .map_err(|e| format!("{}: {e}", t.ca_file.display()))?;
            http = http.tls_certs_merge(roots);
        }
        let http = http.build().map_err(|e| format!("http client: {e}"))?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=60d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .args(&web_args)
            .args(&opts.extra_args);
        let mut me = LocalPrometheus {
            proc: LocalProcess::spawn("prometheus", dir, port, cmd)?,
            http,
            https: opts.tls.is_some(),
        };
        let ready = format!("{}/-/ready", me.base_url());
        me.proc
            .wait_ready(&me.http, &ready, Duration::from_secs(30))
            .await?;
        Ok(me)
    }

    /// The last lines of Prometheus' own log.
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
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// Kills the process (also done on drop).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Every raw sample of the series matching `selector` within `range`
    /// (a Prometheus duration such as `"4d"`) before `at_ms`.
    pub async fn raw(
        &self,
        selector: &str,
        range: &str,
        at_ms: i64,
    ) -> Result<Vec<RawSeries>, String> {
        let q = format!("{selector}[{range}]");
        let v = self.api_query(&q, at_ms).await?;
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
            out.push(RawSeries {
                labels: labels_of(&r["metric"]),
                samples: r["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(point)
                    .collect(),
            });
        }
        Ok(out)
    }

    /// An instant query evaluated at `at_ms`: `(labels, value)` per series.
    pub async fn instant(
        &self,
        query: &str,
        at_ms: i64,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let v = self.api_query(query, at_ms).await?;
        Ok(v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| point(&r["value"]).map(|(_, val)| (labels_of(&r["metric"]), val)))
            .collect())
    }

    async fn api_query(&self, q: &str, at_ms: i64) -> Result<serde_json::Value, String> {
        let time = format!("{:.3}", at_ms as f64 / 1000.0);
        let resp = self
            .http
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.base_url()),
                    &[("query", q), ("time", time.as_str())],
                )
                .map_err(|e| format!("query url: {e}"))?,
            )
            .send()
            .await
            .map_err(|e| format!("query {q}: {e}"))?;
        let v: serde_json::Value = resp.json().await.map_err(|e| format!("query {q}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("query {q}: {v}"));
        }
        Ok(v)
    }
}

fn labels_of(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn point(v: &serde_json::Value) -> Option<(i64, f64)> {
    let a = v.as_array()?;
    let t = a.first()?.as_f64()?;
    let val = a.get(1)?.as_str()?.parse::<f64>().ok()?;
    Some(((t * 1000.0).round() as i64, val))
}
