//! The uplink: the HTTP client for remote write, the shared link state, and
//! the three tasks that use them (live lane, backlog drain, probe).
//!
//! See the crate docs for how the live lane and the drain share the work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::link::LinkState;
use crate::remote_write::{self, Verdict};
use crate::scrape::error_chain;

/// Uplink settings (the resolved `[uplink]` section).
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkOptions {
    pub url: String,
    pub timeout: Duration,
    /// Backlog flush limit in samples/s; 0 = unlimited. Live data is never
    /// limited.
    pub backfill_rate: u64,
    pub batch_samples: usize,
    /// Older samples are never sent (counted as expired).
    pub max_sample_age: Duration,
    pub bearer_token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub dead_letter_bytes: u64,
    /// Whether the receiver accepts samples older than the newest one of
    /// their series; decides live-first or in-order flushing.
    pub out_of_order: OutOfOrder,
    /// How often a backlog the receiver refuses for its age is retried.
    pub refused_retry: Duration,
}

/// `uplink.out_of_order`: does the receiver accept out-of-order samples?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutOfOrder {
    /// Flush in order until a canary (an older sample on the
    /// `edgeplane_uplink_probe` series) shows the receiver accepts older
    /// samples; a backlog batch refused as out of order switches back to
    /// in-order flushing.
    #[default]
    Auto,
    /// Live first: live data goes ahead of the backlog.
    Accepted,
    /// In order: oldest first per series, live data held back behind the
    /// backlog (as vmagent and Prometheus do).
    Refused,
}

/// Why the uplink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("invalid TLS material in {path}")]
    Tls {
        path: PathBuf,
        #[source]
        err: reqwest::Error,
    },
    #[error("failed to build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A bearer token read from a file, re-read at most every minute so a
/// rotated token is picked up. Never logged: `Debug` is redacted.
struct TokenFile {
    path: PathBuf,
    cached: std::sync::Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenFile({}, <redacted>)", self.path.display())
    }
}

impl TokenFile {
    fn get(&self) -> Option<String> {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, tok)) = c.as_ref()
            && at.elapsed() < Duration::from_secs(60)
        {
            return Some(tok.clone());
        }
        match std::fs::read_to_string(&self.path) {
            Ok(s) => {
                let tok = s.trim().to_owned();
                *c = Some((Instant::now(), tok.clone()));
                Some(tok)
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "Could not read the uplink bearer token file; sending without a token.");
                c.as_ref().map(|(_, t)| t.clone())
            }
        }
    }
}

/// Adds the CA bundle at `ca` to the trusted roots (system roots stay) and
/// presents the certificate at `cert` (with its key at `key`, or in the same
/// file) as the client identity. For the uplink and the scraper alike.
pub(crate) fn with_tls_files(
    mut b: reqwest::ClientBuilder,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, UplinkError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|err| UplinkError::Read {
            path: p.to_path_buf(),
            err,
        })
    };
    if let Some(ca) = ca {
        let certs =
            reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(|err| UplinkError::Tls {
                path: ca.to_path_buf(),
                err,
            })?;
        b = b.tls_certs_merge(certs);
    }
    if let Some(cert) = cert {
        let mut pem = read(cert)?;
        if let Some(key) = key {
            pem.push(b'\n');
            pem.extend(read(key)?);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|err| UplinkError::Tls {
            path: cert.to_path_buf(),
            err,
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

/// Sends remote-write bodies and turns the outcome into a [`Verdict`].
#[derive(Debug)]
pub struct RemoteWriter {
    client: reqwest::Client,
    url: String,
    token: Option<TokenFile>,
}

/// The body of a probe: an empty `WriteRequest`, snappy-compressed.
pub fn probe_body() -> Vec<u8> {
    remote_write::compress(&[])
}

impl RemoteWriter {
    pub fn new(o: &UplinkOptions) -> Result<Self, UplinkError> {
        crate::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .timeout(o.timeout)
            .connect_timeout(o.timeout)
            .user_agent(concat!("edgeplane/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        b = with_tls_files(
            b,
            o.ca_file.as_deref(),
            o.client_cert.as_deref(),
            o.client_key.as_deref(),
        )?;
        Ok(RemoteWriter {
            client: b.build().map_err(UplinkError::Client)?,
            url: o.url.clone(),
            token: o.bearer_token_file.as_ref().map(|p| TokenFile {
                path: p.clone(),
                cached: std::sync::Mutex::new(None),
            }),
        })
    }

    /// POSTs one body. Returns the verdict and a label for the reply
    /// (the status code, or `timeout` / `error`).
    pub async fn send(&self, body: Vec<u8>) -> (Verdict, String) {
        let mut req = self.client.post(&self.url).body(body);
        for (k, v) in remote_write::HEADERS {
            req = req.header(k, v);
        }
        if let Some(tok) = self.token.as_ref().and_then(TokenFile::get) {
            req = req.bearer_auth(tok);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = if (200..300).contains(&status) {
                    String::new()
                } else {
                    read_limited(resp, 4096).await
                };
                (
                    remote_write::verdict(status, &body, retry_after.as_deref()),
                    status.to_string(),
                )
            }
            Err(e) => {
                // Never echo the URL: it may carry credentials.
                let e = e.without_url();
                let label = if e.is_timeout() { "timeout" } else { "error" };
                (
                    Verdict::Retry {
                        after: None,
                        reason: format!("remote write failed: {}", error_chain(&e)),
                    },
                    label.to_owned(),
                )
            }
        }
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> String {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            _ => break,
        }
    }
    out.truncate(max);
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until the link is not Down; false if shutdown came first.
pub(crate) async fn wait_usable(
    mut link: watch::Receiver<LinkState>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *shutdown.borrow() {
            return false;
        }
        if *link.borrow_and_update() != LinkState::Down {
            return true;
        }
        tokio::select! {
            r = link.changed() => if r.is_err() { return false; },
            _ = shutdown.changed() => {}
        }
    }
}

/// Sleeps, or returns false early on shutdown.
pub(crate) async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.changed() => !*shutdown.borrow(),
    }
}

/// Keeps the writer alive across tasks.
pub(crate) type Writer = Arc<RemoteWriter>;
