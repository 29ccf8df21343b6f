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
    /// HTTP basic auth: the user name and the file holding the password.
    pub basic_auth: Option<(String, PathBuf)>,
    /// Extra headers on every request (e.g. `X-Scope-OrgID`); validated by
    /// the config (nothing the protocol or HTTP sets).
    pub headers: Vec<(String, String)>,
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
    /// The value is left out: it may be mistaken for something secret.
    #[error("uplink header {name:?} is not a valid HTTP header")]
    Header { name: String },
}

/// A secret (bearer token, basic auth password) read from a file, re-read
/// at most every minute so a rotated one is picked up. Never logged:
/// `Debug` is redacted, and a read error names only the path.
struct SecretFile {
    /// What it holds, for the log: "bearer token", "basic auth password".
    what: &'static str,
    path: PathBuf,
    cached: std::sync::Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({}, <redacted>)", self.path.display())
    }
}

impl SecretFile {
    fn new(what: &'static str, path: &std::path::Path) -> Self {
        SecretFile {
            what,
            path: path.to_path_buf(),
            cached: std::sync::Mutex::new(None),
        }
    }

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
                tracing::warn!(path = %self.path.display(), error = %e, "Could not read the uplink {} file; sending without it.", self.what);
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
    token: Option<SecretFile>,
    basic_auth: Option<(String, SecretFile)>,
    headers: reqwest::header::HeaderMap,
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
            token: o
                .bearer_token_file
                .as_deref()
                .map(|p| SecretFile::new("bearer token", p)),
            basic_auth: o
                .basic_auth
                .as_ref()
                .map(|(user, p)| (user.clone(), SecretFile::new("basic auth password", p))),
            headers: header_map(&o.headers)?,
        })
    }

    /// The `Authorization` value this request carries, if any (marked
    /// sensitive so HTTP never prints it).
    fn authorization(&self) -> Option<reqwest::header::HeaderValue> {
        let text = if let Some((user, pw)) = &self.basic_auth {
            format!("Basic {}", basic_credentials(user, &pw.get()?))
        } else {
            format!("Bearer {}", self.token.as_ref()?.get()?)
        };
        let mut v = reqwest::header::HeaderValue::from_str(&text).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The secrets a receiver's reply could echo back (some proxies print
    /// the request's headers in their error pages): the raw ones and the
    /// `Authorization` value, longest first.
    fn secrets(&self, auth: Option<&reqwest::header::HeaderValue>) -> Vec<String> {
        let mut out: Vec<String> = [
            auth.and_then(|v| v.to_str().ok()).map(|v| {
                v.split_once(' ')
                    .map_or(v.to_owned(), |(_, cred)| cred.to_owned())
            }),
            self.token.as_ref().and_then(SecretFile::get),
            self.basic_auth.as_ref().and_then(|(_, pw)| pw.get()),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    /// POSTs one body. Returns the verdict and a label for the reply
    /// (the status code, or `timeout` / `error`).
    pub async fn send(&self, body: Vec<u8>) -> (Verdict, String) {
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body);
        for (k, v) in remote_write::HEADERS {
            req = req.header(k, v);
        }
        let auth = self.authorization();
        if let Some(v) = &auth {
            req = req.header(reqwest::header::AUTHORIZATION, v.clone());
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
                    // The reply goes to the log and the status: never with
                    // our credentials in it.
                    let mut text = read_limited(resp, 4096).await;
                    for s in self.secrets(auth.as_ref()) {
                        text = text.replace(&s, "<redacted>");
                    }
                    text
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

/// `uplink.headers` as a header map; a name or value HTTP cannot carry is
/// an error naming the header.
fn header_map(headers: &[(String, String)]) -> Result<reqwest::header::HeaderMap, UplinkError> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let bad = || UplinkError::Header { name: name.clone() };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let v = HeaderValue::from_str(value).map_err(|_| bad())?;
        map.insert(n, v);
    }
    Ok(map)
}

/// The credentials of a basic auth `Authorization` header:
/// base64(`user:password`). Public so the support bundle can redact them.
pub fn basic_credentials(user: &str, password: &str) -> String {
    base64(format!("{user}:{password}").as_bytes())
}

/// Standard base64 with padding (RFC 4648), for the basic auth header.
fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("pw");
        std::fs::write(&p, "PLANTED-debug-secret\n").unwrap_or_else(|e| panic!("{e}"));
        let f = SecretFile::new("basic auth password", &p);
        assert_eq!(f.get().as_deref(), Some("PLANTED-debug-secret"));
        assert!(!format!("{f:?}").contains("PLANTED"));
    }
}
