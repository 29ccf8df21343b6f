//! Test helpers: tiny HTTP servers on loopback (a `/metrics` target and a
//! scriptable remote-write receiver), pipeline options, and waiting on
//! conditions with a deadline (never on a bare sleep).
//!
//! The real Prometheus helper lives in the library
//! (`edgeplane_metrics::local_prometheus`) because the backfill benchmark
//! uses it too.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_metrics::Sample;
use edgeplane_metrics::classify::Rule;
use edgeplane_metrics::link::LinkTiming;
use edgeplane_metrics::pipeline::PipelineOptions;
use edgeplane_metrics::remote_write::{self, WriteRequest};
use edgeplane_metrics::uplink::{OutOfOrder, UplinkOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server saw it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response: status, extra headers, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Serves HTTP/1.1 on 127.0.0.1:0 with `handler`; the task ends with the
/// test's runtime.
pub async fn serve<F>(handler: F) -> u16
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let _ = connection(sock, h).await;
            });
        }
    });
    port
}

async fn connection<F>(mut sock: TcpStream, handler: Arc<F>) -> std::io::Result<()>
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    loop {
        // Read headers.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 65536];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);
        let (status, extra, out) = handler(Request {
            method,
            path,
            headers,
            body,
        });
        let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", out.len());
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        sock.write_all(resp.as_bytes()).await?;
        sock.write_all(&out).await?;
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A `/metrics` target whose exposition can be changed while it runs.
pub async fn metrics_target(text: Arc<Mutex<String>>) -> u16 {
    serve(move |_req| (200, vec![], text.lock().unwrap().clone().into_bytes())).await
}

/// A fake remote-write receiver: records every decoded request and answers
/// with `decide(&request)`.
pub struct FakeReceiver {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<(WriteRequest, u16)>>>,
}

impl FakeReceiver {
    pub async fn start<F>(decide: F) -> FakeReceiver
    where
        F: Fn(&WriteRequest) -> (u16, String) + Send + Sync + 'static,
    {
        let requests: Arc<Mutex<Vec<(WriteRequest, u16)>>> = Arc::default();
        let rec = requests.clone();
        let port = serve(move |req| {
            assert_eq!(req.path, "/api/v1/write");
            let h = |k: &str| {
                req.headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(h("content-encoding"), "snappy");
            assert_eq!(h("content-type"), "application/x-protobuf");
            assert_eq!(h("x-prometheus-remote-write-version"), "0.1.0");
            let wr = remote_write::decode(&req.body).expect("valid remote-write body");
            let (status, body) = decide(&wr);
            rec.lock().unwrap().push((wr, status));
            (status, vec![], body.into_bytes())
        })
        .await;
        FakeReceiver { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Samples accepted (2xx), as `(metric name, timestamp, value)`.
    pub fn accepted(&self) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        for (wr, status) in self.requests.lock().unwrap().iter() {
            if !(200..300).contains(status) {
                continue;
            }
            for ts in &wr.timeseries {
                let name = ts
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .map(|l| l.value.clone())
                    .unwrap_or_default();
                for s in &ts.samples {
                    out.push((name.clone(), s.timestamp, s.value));
                }
            }
        }
        out
    }
}

/// Does any series in the request have this metric name?
pub fn has_metric(wr: &WriteRequest, name: &str) -> bool {
    wr.timeseries.iter().any(|ts| {
        ts.labels
            .iter()
            .any(|l| l.name == "__name__" && l.value == name)
    })
}

/// Options for tests: classes critical/high/low, rules by name prefix.
pub fn options(dir: &Path, url: Option<String>) -> PipelineOptions {
    let rule = |m: &str, c: &str| Rule {
        metric: m.into(),
        labels: Default::default(),
        class: c.into(),
    };
    PipelineOptions {
        site: "test-site".into(),
        external_labels: vec![("region".into(), "eu".into())],
        targets: vec![],
        classes: vec!["critical".into(), "high".into(), "low".into()],
        default_class: "low".into(),
        rules: vec![
            rule("crit_*", "critical"),
            rule("high_*", "high"),
            rule("up", "critical"),
        ],
        uplink: url.map(|url| UplinkOptions {
            url,
            timeout: Duration::from_secs(5),
            backfill_rate: 0,
            batch_samples: 2000,
            max_sample_age: Duration::from_secs(7 * 86400),
            bearer_token_file: None,
            basic_auth: None,
            headers: vec![],
            ca_file: None,
            client_cert: None,
            client_key: None,
            dead_letter_bytes: 1 << 20,
            // The existing tests are about live first; the region tests
            // set it themselves.
            out_of_order: OutOfOrder::Accepted,
            refused_retry: Duration::from_secs(60),
        }),
        dead_letter_dir: dir.join("dead-letter"),
        live_queue_samples: 10_000,
        ledger_capacity: 100_000,
        link: LinkTiming {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            down_after: 2,
        },
        sync_every: None,
        scrape_tls: None,
    }
}

/// Opens a real disk buffer in `dir/buffer`.
pub fn buffer(dir: &Path, budget_bytes: u64, segment_bytes: u64) -> edgeplane_buffer::Buffer {
    edgeplane_buffer::Buffer::open(
        &dir.join("buffer"),
        edgeplane_buffer::Options {
            classes: vec!["critical".into(), "high".into(), "low".into()],
            budget_bytes,
            segment_bytes,
            fsync: edgeplane_buffer::FsyncPolicy::Never,
            max_age: Some(Duration::from_secs(7 * 86400)),
        },
    )
    .unwrap()
}

/// `n_series` series named `name_<i>` with one sample every `step_ms` over
/// `[start_ms, end_ms)`; value = the sample's index (deterministic).
pub fn series(
    name: &str,
    n_series: usize,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut t = start_ms;
    let mut i = 0u64;
    while t < end_ms {
        for s in 0..n_series {
            out.push(Sample {
                labels: vec![
                    ("__name__".into(), name.into()),
                    ("series".into(), s.to_string()),
                    ("site".into(), "test-site".into()),
                ],
                timestamp_ms: t,
                value: i as f64,
            });
        }
        t += step_ms;
        i += 1;
    }
    out
}

/// Waits for `cond` (checked every 50 ms) up to `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A TCP proxy on loopback in front of `upstream`: the region link. While
/// it is cut, new connections are closed at once and open ones are dropped.
pub struct LinkProxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl LinkProxy {
    pub async fn start(upstream: u16) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    drop(sock);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut sock, &mut up) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        LinkProxy { port, cut }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// An exposition of `n` gauges `name{series="i"}` whose value is `v`.
pub fn exposition(name: &str, n: usize, v: u64) -> String {
    let mut s = format!("# TYPE {name} gauge\n");
    for i in 0..n {
        s.push_str(&format!("{name}{{series=\"{i}\"}} {v}\n"));
    }
    s
}
