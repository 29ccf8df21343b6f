//! The metrics side of the chaos campaign (issue 9): a scrape target every
//! host's agent scrapes, the region Prometheus behind a forwarder every host
//! reaches (also the host in its own network namespace), the agents' metrics
//! buffers on small tmpfs mounts (so a fault can fill the disk), and the
//! checker: every sample the target served that was not counted as shed is in
//! the region at its original timestamp.
//!
//! The target serves, per scraping host (the path names it), one series in
//! the `critical` class (`chaos_probe_hi`) and [`LO_SERIES`] in the `low`
//! class (`chaos_probe_lo`), each with the same value, the scrape's sequence
//! number for that host, and an explicit timestamp (the time it served them),
//! so the region must hold exactly `(timestamp, value)` for each.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Low-priority series per scrape.
pub const LO_SERIES: usize = 8;
/// Size of each host's buffer tmpfs (the buffer's budget is larger, so the
/// disk, not the budget, is what runs out when a fault fills it).
pub const TMPFS_SIZE: &str = "8m";
/// Bulk series served to the host whose disk is being filled.
pub const BULK_SERIES: u64 = 2000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config every host gets (shared: placeholders make it per host).
pub fn site_toml(probe_port: u16, region_port: u16) -> String {
    format!(
        r#"[metrics]
scrape_interval = "1s"
scrape_timeout = "900ms"
scrape_etcd = false
scrape_self = false
classes = ["critical", "normal", "low"]
default_class = "normal"

[[metrics.rules]]
metric = "chaos_probe_hi"
class = "critical"

[[metrics.rules]]
metric = "up"
class = "critical"

[[metrics.rules]]
metric = "chaos_probe_lo"
class = "low"

[[metrics.rules]]
metric = "chaos_probe_bulk"
class = "low"

[[metrics.targets]]
job = "probe"
url = "http://{{gateway}}:{probe_port}/{{host_name}}"

[metrics.external_labels]
edge_host = "{{host_name}}"

[buffer]
budget_bytes = "16MiB"
segment_bytes = "1MiB"

[uplink]
url = "http://{{gateway}}:{region_port}/api/v1/write"
timeout = "2s"
"#
    )
}

/// One scrape the target answered.
#[derive(Debug, Clone)]
pub struct Served {
    pub host: String,
    pub seq: u64,
    pub ts_ms: i64,
    /// `chaos_probe_bulk` series served too (a burst: see [`ProbeTarget::set_burst`]).
    pub bulk: u64,
}

/// Burst: host and number of bulk series.
type Burst = Arc<Mutex<Option<(String, u64)>>>;

/// The scrape target, on 0.0.0.0 (reached as `{gateway}`).
pub struct ProbeTarget {
    pub port: u16,
    served: Arc<Mutex<Vec<Served>>>,
    burst: Burst,
    task: JoinHandle<()>,
}

impl ProbeTarget {
    pub async fn start() -> anyhow::Result<ProbeTarget> {
        let l = TcpListener::bind("0.0.0.0:0").await?;
        let port = l.local_addr()?.port();
        let served = Arc::new(Mutex::new(Vec::new()));
        let seqs = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
        let s2 = served.clone();
        let burst: Burst = Arc::new(Mutex::new(None));
        let b2 = burst.clone();
        let task = tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((sock, _)) => {
                        let (s, q, b) = (s2.clone(), seqs.clone(), b2.clone());
                        tokio::spawn(async move {
                            let _ = serve(sock, s, q, b).await;
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(ProbeTarget {
            port,
            served,
            burst,
            task,
        })
    }

    /// From now on, every scrape by `host` also gets `series` low-priority
    /// `chaos_probe_bulk` series (enough to fill a disk quickly); `None` ends it.
    pub fn set_burst(&self, burst: Option<(String, u64)>) {
        *lock(&self.burst) = burst;
    }

    pub fn served(&self) -> Vec<Served> {
        lock(&self.served).clone()
    }
}

impl Drop for ProbeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut sock: TcpStream,
    served: Arc<Mutex<Vec<Served>>>,
    seqs: Arc<Mutex<HashMap<String, u64>>>,
    burst: Burst,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed before the request ended"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            if buf.len() > 16 << 10 {
                return Err(std::io::Error::other("request head too long"));
            }
        }
    })
    .await;
    if !matches!(head, Ok(Ok(()))) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&buf);
    let host = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let seq = {
        let mut m = lock(&seqs);
        let e = m.entry(host.clone()).or_insert(0);
        *e += 1;
        *e
    };
    let ts = now_ms();
    let mut body = format!(
        "# TYPE chaos_probe_hi gauge\nchaos_probe_hi {seq} {ts}\n# TYPE chaos_probe_lo gauge\n"
    );
    for i in 0..LO_SERIES {
        body.push_str(&format!("chaos_probe_lo{{i=\"{i}\"}} {seq} {ts}\n"));
    }
    let bulk = match &*lock(&burst) {
        Some((h, n)) if *h == host => *n,
        _ => 0,
    };
    if bulk > 0 {
        body.push_str("# TYPE chaos_probe_bulk gauge\n");
        for i in 0..bulk {
            body.push_str(&format!("chaos_probe_bulk{{i=\"{i}\"}} {seq} {ts}\n"));
        }
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.flush().await?;
    lock(&served).push(Served {
        host,
        seq,
        ts_ms: ts,
        bulk,
    });
    let _ = sock.shutdown().await;
    Ok(())
}

/// Forwards 0.0.0.0:port to 127.0.0.1:to (the region Prometheus listens on
/// loopback only; the isolated host reaches it through the veth).
pub struct Forwarder {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(to: u16) -> anyhow::Result<Forwarder> {
        let l = TcpListener::bind("0.0.0.0:0").await?;
        let port = l.local_addr()?.port();
        let task = tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((mut a, _)) => {
                        tokio::spawn(async move {
                            if let Ok(mut b) = TcpStream::connect(("127.0.0.1", to)).await {
                                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                            }
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Forwarder { port, task })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tmpfs mounted at `path`; unmounted on drop (lazily if busy).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Fills the file system with a ballast file until it is full; returns
    /// the ballast's path and size.
    pub fn fill(&self) -> std::io::Result<(PathBuf, u64)> {
        use std::io::Write;
        let p = self.path.join(".chaos-ballast");
        let mut f = std::fs::File::create(&p)?;
        let chunk = vec![0x5au8; 64 << 10];
        let mut n = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(_) => break,
            }
        }
        // Byte-sized leftovers too: nothing is left for the buffer.
        while let Ok(1) = f.write(&chunk[..1]) {
            n += 1;
        }
        let _ = f.sync_all();
        Ok((p, n))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// What the agents counted as not delivered, per host: the buffer's own
/// per-class counters (shed, dropped incoming, expired: kept in the class
/// ledgers, so they survive restarts) and the pipeline's samples it could
/// not buffer (`samples_lost_on_append`: in memory only, so summed over the
/// agent's lifetimes here: observed before each kill and after each fault).
#[derive(Debug, Default, Clone)]
pub struct ShedBook {
    /// host -> class -> (shed, dropped, expired), latest seen.
    pub classes: HashMap<String, HashMap<String, (u64, u64, u64)>>,
    /// host -> (previous lifetimes' total, current lifetime's latest).
    pub append_lost: HashMap<String, (u64, u64)>,
    pub append_errors: HashMap<String, (u64, u64)>,
    /// host -> dead-letter samples ever (latest seen).
    pub dead_letter: HashMap<String, u64>,
}

impl ShedBook {
    pub fn observe(&mut self, host: &str, status: &serde_json::Value) {
        let Some(m) = status.get("metrics").filter(|m| !m.is_null()) else {
            return;
        };
        if let Some(cs) = m.get("classes").and_then(|c| c.as_array()) {
            let e = self.classes.entry(host.to_string()).or_default();
            for c in cs {
                let name = c["class"].as_str().unwrap_or_default().to_string();
                let g = |k: &str| c[k].as_u64().unwrap_or(0);
                e.insert(
                    name,
                    (
                        g("shed_samples"),
                        g("dropped_samples"),
                        g("expired_samples"),
                    ),
                );
            }
        }
        let lifetime = |map: &mut HashMap<String, (u64, u64)>, v: u64| {
            let e = map.entry(host.to_string()).or_default();
            if v < e.1 {
                // A new lifetime we did not see start.
                e.0 += e.1;
            }
            e.1 = v;
        };
        let c = &m["counters"];
        lifetime(
            &mut self.append_lost,
            c["samples_lost_on_append"].as_u64().unwrap_or(0),
        );
        lifetime(
            &mut self.append_errors,
            c["buffer_append_errors"].as_u64().unwrap_or(0),
        );
        if let Some(d) = m
            .pointer("/dead_letter/total_samples")
            .and_then(|v| v.as_u64())
        {
            let e = self.dead_letter.entry(host.to_string()).or_default();
            *e = (*e).max(d);
        }
    }

    /// The agent of `host` is about to be killed (or was): its in-memory
    /// counters start again from zero.
    pub fn new_lifetime(&mut self, host: &str) {
        for map in [&mut self.append_lost, &mut self.append_errors] {
            let e = map.entry(host.to_string()).or_default();
            e.0 += e.1;
            e.1 = 0;
        }
    }

    pub fn class(&self, host: &str, class: &str) -> (u64, u64, u64) {
        self.classes
            .get(host)
            .and_then(|m| m.get(class))
            .copied()
            .unwrap_or_default()
    }

    pub fn append_lost(&self, host: &str) -> u64 {
        self.append_lost.get(host).map_or(0, |(a, b)| a + b)
    }

    pub fn append_errors(&self, host: &str) -> u64 {
        self.append_errors.get(host).map_or(0, |(a, b)| a + b)
    }

    /// Everything counted as not delivered, all hosts, both probe classes.
    pub fn total(&self) -> u64 {
        let mut n = 0;
        for (host, cs) in &self.classes {
            let mut dropped = 0;
            for (class, (s, d, e)) in cs {
                if class == "critical" || class == "low" {
                    n += s + e;
                    dropped += d;
                }
            }
            n += dropped.max(self.append_lost(host));
        }
        n
    }
}

/// The samples check's result.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SampleCheck {
    /// Scrapes the target answered inside the checked window.
    pub scrapes_served: u64,
    /// Samples they carried (1 critical + LO_SERIES low each, plus bulk).
    pub samples_served: u64,
    pub samples_served_critical: u64,
    /// Served just before the scraping agent was SIGKILLed: nothing had
    /// acknowledged them (like an unacknowledged write); not expected.
    pub samples_unconfirmed_at_kill: u64,
    /// Served, but the agent recorded that scrape as failed (an `up = 0`
    /// sample at the scrape's start in the region: it timed out while the
    /// host was stopped or cut off), so never ingested.
    pub samples_scrape_failed: u64,
    /// Expected and absent from the region (or present with another value).
    pub samples_missing_critical: u64,
    pub samples_missing_low: u64,
    /// Counted by the agents (buffer ledgers: shed to make room, dropped on
    /// arrival, expired), per class, all hosts.
    pub shed_critical: u64,
    pub dropped_critical: u64,
    pub shed_low: u64,
    pub dropped_low: u64,
    pub expired: u64,
    /// Samples the pipeline could not buffer (sent live only).
    pub not_buffered: u64,
    pub buffer_append_errors: u64,
    /// What "counted as shed" means here, all hosts: shed + expired + the
    /// larger of dropped and not buffered (the pipeline's count of samples
    /// not buffered includes those the buffer counted as dropped).
    pub samples_counted_shed: u64,
    pub dead_letter_samples: u64,
    /// Missing beyond what was counted: must be 0.
    pub samples_lost_beyond_shed: u64,
    /// The same for the critical class alone, against the critical class's
    /// own counts only (not the samples not buffered, a count every class
    /// shares): must be 0, whatever the low class shed.
    pub critical_lost_beyond_shed: u64,
    /// Missing per host beyond that host's counts.
    pub per_host_beyond_shed: HashMap<String, u64>,
}

/// Windows in which a scrape served to a host may never have reached its
/// agent: (host, from_ms, to_ms).
pub type Windows = Vec<(String, i64, i64)>;

/// Compares what the target served in `[from_ms, upto_ms]` with the region
/// (queried now), given what the agents counted as not delivered.
pub async fn check_samples(
    region: &edgeplane_metrics::local_prometheus::LocalPrometheus,
    served: &[Served],
    kills: &Windows,
    book: &ShedBook,
    from_ms: i64,
    upto_ms: i64,
) -> anyhow::Result<SampleCheck> {
    let at = now_ms();
    let range = format!("{}ms", at - from_ms + 5000);
    let raw = |sel: &'static str| {
        let range = range.clone();
        async move {
            region
                .raw(sel, &range, at)
                .await
                .map_err(|e| anyhow::anyhow!("querying the region for {sel}: {e}"))
        }
    };
    let host_of = |l: &std::collections::BTreeMap<String, String>| {
        l.get("edge_host").cloned().unwrap_or_default()
    };
    // (host, ts) -> value
    let mut hi: HashMap<(String, i64), f64> = HashMap::new();
    for s in raw("chaos_probe_hi").await? {
        let h = host_of(&s.labels);
        for (t, v) in s.samples {
            hi.insert((h.clone(), t), v);
        }
    }
    // (host, i, ts) -> value
    let mut lo: HashMap<(String, String, i64), f64> = HashMap::new();
    for s in raw("chaos_probe_lo").await? {
        let h = host_of(&s.labels);
        let i = s.labels.get("i").cloned().unwrap_or_default();
        for (t, v) in s.samples {
            lo.insert((h.clone(), i.clone(), t), v);
        }
    }
    // host -> failed scrape start times
    let mut failed: HashMap<String, Vec<i64>> = HashMap::new();
    for s in raw("up{job=\"probe\"}").await? {
        let h = host_of(&s.labels);
        for (t, v) in s.samples {
            if v == 0.0 {
                failed.entry(h.clone()).or_default().push(t);
            }
        }
    }
    for v in failed.values_mut() {
        v.sort_unstable();
    }
    // Bulk series are many: counted per host and timestamp (the sample
    // timestamp is the serve time, unique per host).
    let mut bulk: HashMap<(String, i64), u64> = HashMap::new();
    let bulk_served = served
        .iter()
        .any(|s| s.bulk > 0 && s.ts_ms >= from_ms && s.ts_ms <= upto_ms);
    if bulk_served {
        for s in raw("chaos_probe_bulk").await? {
            let h = host_of(&s.labels);
            for (t, _) in s.samples {
                *bulk.entry((h.clone(), t)).or_default() += 1;
            }
        }
    }
    let mut out = SampleCheck::default();
    // host -> (missing critical, missing low)
    let mut missing_by_host: HashMap<String, (u64, u64)> = HashMap::new();
    let mut hosts: HashSet<String> = HashSet::new();
    for s in served
        .iter()
        .filter(|s| s.ts_ms >= from_ms && s.ts_ms <= upto_ms)
    {
        let per_scrape = 1 + LO_SERIES as u64 + s.bulk;
        hosts.insert(s.host.clone());
        out.scrapes_served += 1;
        out.samples_served += per_scrape;
        out.samples_served_critical += 1;
        if kills
            .iter()
            .any(|(h, a, b)| *h == s.host && s.ts_ms >= *a && s.ts_ms <= *b)
        {
            out.samples_unconfirmed_at_kill += per_scrape;
            continue;
        }
        let seq = s.seq as f64;
        let hi_ok = hi.get(&(s.host.clone(), s.ts_ms)) == Some(&seq);
        let lo_present = (0..LO_SERIES)
            .filter(|i| lo.get(&(s.host.clone(), i.to_string(), s.ts_ms)) == Some(&seq))
            .count() as u64;
        let bulk_present = bulk
            .get(&(s.host.clone(), s.ts_ms))
            .copied()
            .unwrap_or(0)
            .min(s.bulk);
        let lo_missing = LO_SERIES as u64 - lo_present + s.bulk - bulk_present;
        if hi_ok && lo_missing == 0 {
            continue;
        }
        // The agent's scrape started at most its timeout before we served it.
        let scrape_failed = failed.get(&s.host).is_some_and(|v| {
            let i = v.partition_point(|t| *t < s.ts_ms - 1000);
            v.get(i).is_some_and(|t| *t <= s.ts_ms)
        });
        if scrape_failed && !hi_ok && lo_present == 0 && bulk_present == 0 {
            out.samples_scrape_failed += per_scrape;
            continue;
        }
        out.samples_missing_critical += u64::from(!hi_ok);
        out.samples_missing_low += lo_missing;
        let e = missing_by_host.entry(s.host.clone()).or_default();
        e.0 += u64::from(!hi_ok);
        e.1 += lo_missing;
    }
    let uniq: HashSet<&String> = book.classes.keys().chain(hosts.iter()).collect();
    let mut counted = 0;
    for host in uniq {
        let (cs, cd, ce) = book.class(host, "critical");
        let (ls, ld, le) = book.class(host, "low");
        let nb = book.append_lost(host);
        out.shed_critical += cs;
        out.dropped_critical += cd;
        out.shed_low += ls;
        out.dropped_low += ld;
        out.expired += ce + le;
        out.not_buffered += nb;
        out.buffer_append_errors += book.append_errors(host);
        out.dead_letter_samples += book.dead_letter.get(host).copied().unwrap_or(0);
        // `samples_lost_on_append` counts what the buffer counted as
        // dropped too (and, on a full disk, the whole batch): the larger of
        // the two, not their sum.
        let allowed = cs + ce + ls + le + (cd + ld).max(nb);
        counted += allowed;
        let (mc, ml) = missing_by_host.get(host).copied().unwrap_or_default();
        // Only the critical class's own ledger accounts for a missing
        // critical sample: `samples_lost_on_append` is shared by every
        // class, so it excuses none of them.
        out.critical_lost_beyond_shed += mc.saturating_sub(cs + cd + ce);
        let beyond = (mc + ml).saturating_sub(allowed);
        if beyond > 0 {
            out.per_host_beyond_shed.insert(host.clone(), beyond);
        }
        out.samples_lost_beyond_shed += beyond;
    }
    out.samples_counted_shed = counted;
    Ok(out)
}

/// The checker itself: it must see a missing sample, accept one the agents
/// counted in the right class, not let the low class's counts cover a
/// critical sample, and accept a scrape the agent logged as failed.
#[test]
fn chaos_samples_checker_finds_what_is_missing_and_accepts_what_was_counted() -> anyhow::Result<()>
{
    use edgeplane_metrics::Sample;
    use edgeplane_metrics::local_prometheus::LocalPrometheus;
    edgeplane_tests::rt().block_on(async {
        let region = LocalPrometheus::start(Default::default())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let t0 = now_ms() - 20_000;
        let served: Vec<Served> = (1..=4)
            .map(|seq| Served {
                host: "host-1".into(),
                seq,
                ts_ms: t0 + seq as i64 * 1000,
                bulk: 0,
            })
            .collect();
        let sample = |name: &str, extra: Option<(&str, String)>, s: &Served, v: f64| {
            let mut labels = vec![
                ("__name__".to_string(), name.to_string()),
                ("edge_host".to_string(), s.host.clone()),
                ("job".to_string(), "probe".to_string()),
            ];
            if let Some((k, val)) = extra {
                labels.push((k.to_string(), val));
            }
            labels.sort();
            Sample {
                labels,
                timestamp_ms: s.ts_ms,
                value: v,
            }
        };
        let mut samples = Vec::new();
        for s in &served {
            match s.seq {
                // Scrape 3: the critical sample never arrived.
                3 => {}
                // Scrape 4: the agent logged the scrape as failed (up = 0
                // stamped 300 ms before the target answered), nothing else.
                4 => {
                    let mut up = sample("up", None, s, 0.0);
                    up.timestamp_ms -= 300;
                    samples.push(up);
                    continue;
                }
                _ => samples.push(sample("chaos_probe_hi", None, s, s.seq as f64)),
            }
            for i in 0..LO_SERIES {
                samples.push(sample(
                    "chaos_probe_lo",
                    Some(("i", i.to_string())),
                    s,
                    s.seq as f64,
                ));
            }
        }
        let resp = reqwest::Client::new()
            .post(region.remote_write_url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(edgeplane_metrics::remote_write::encode(&samples))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "remote write: {}",
            resp.status()
        );
        let check = |book: ShedBook| {
            let (region, served) = (&region, &served);
            async move { check_samples(region, served, &Vec::new(), &book, t0, t0 + 10_000).await }
        };

        let c = check(ShedBook::default()).await?;
        assert_eq!(c.scrapes_served, 4);
        assert_eq!(c.samples_scrape_failed, 1 + LO_SERIES as u64, "{c:?}");
        assert_eq!(c.samples_missing_critical, 1, "{c:?}");
        assert_eq!(c.samples_missing_low, 0, "{c:?}");
        assert_eq!(c.samples_lost_beyond_shed, 1, "nothing counted: {c:?}");
        assert_eq!(c.critical_lost_beyond_shed, 1, "{c:?}");

        let mut book = ShedBook::default();
        book.classes.insert(
            "host-1".into(),
            HashMap::from([("critical".to_string(), (1, 0, 0))]),
        );
        let c = check(book).await?;
        assert_eq!(c.samples_lost_beyond_shed, 0, "counted as shed: {c:?}");
        assert_eq!(c.critical_lost_beyond_shed, 0, "{c:?}");

        let mut book = ShedBook::default();
        book.classes.insert(
            "host-1".into(),
            HashMap::from([("low".to_string(), (5, 0, 0))]),
        );
        let c = check(book).await?;
        assert_eq!(c.samples_lost_beyond_shed, 0, "{c:?}");
        assert_eq!(
            c.critical_lost_beyond_shed, 1,
            "low-class shedding does not cover a critical sample: {c:?}"
        );

        // Nor does the pipeline's count of samples not buffered, which every
        // class shares.
        let mut book = ShedBook::default();
        book.append_lost.insert("host-1".into(), (0, 9));
        let c = check(book).await?;
        assert_eq!(
            c.critical_lost_beyond_shed, 1,
            "a shared count does not cover a critical sample: {c:?}"
        );

        // A kill window covering scrape 3: not expected at all.
        let kills = vec![("host-1".to_string(), t0 + 2500, t0 + 3500)];
        let c = check_samples(
            &region,
            &served,
            &kills,
            &ShedBook::default(),
            t0,
            t0 + 10_000,
        )
        .await?;
        assert_eq!(c.samples_unconfirmed_at_kill, 1 + LO_SERIES as u64, "{c:?}");
        assert_eq!(c.samples_lost_beyond_shed, 0, "{c:?}");
        Ok(())
    })
}
