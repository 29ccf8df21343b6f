//! Wiring: scrapers → ingest (classify, buffer, live queue) → live lane and
//! backlog drain → region. See the crate docs for the design.
//!
//! This module holds the options, the state the tasks share and the
//! handle; each task loop has a module of its own:
//!
//! - `ingest`: one scraper per target, and the ingest that classifies each
//!   scrape, appends it to the buffer and queues it for the live lane;
//! - `live_lane`: sends fresh samples while the link is up;
//! - `drain`: sends the buffered backlog, oldest first, and acknowledges
//!   what the region took (or set aside);
//! - `probe`: the canary that asks the region whether it takes old samples;
//! - `housekeeping`: expiry and the timed fsync.

mod drain;
mod housekeeping;
mod ingest;
mod live_lane;
mod probe;

use drain::run_drain;
use housekeeping::run_housekeeping;
use ingest::{run_ingest, run_target};
use live_lane::run_live;
pub use probe::CANARY_METRIC;
use probe::run_probe;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Sample;
use crate::classify::{Classifier, Rule};
use crate::dead_letter::{DeadLetter, DeadLetterStats};
use crate::link::{LinkMachine, LinkState, LinkTiming};
use crate::live::{self, Key, Ledger, LiveBatch, LiveQueue, Seen, TokenBucket};
use crate::remote_write::{self, Refusal, Verdict};
use crate::scrape::{self, CommonLabels, ScrapeOutcome, ScrapeTarget};
use crate::status::{
    self, BacklogRefused, Counters, FlushStatus, LinkStatus, MetricsStatus, TargetStatus,
};
use crate::store::{ClassBacklog, SampleStore, StoreError};
use crate::uplink::{self, OutOfOrder, RemoteWriter, UplinkError, UplinkOptions, Writer};

/// Everything the pipeline needs, resolved. Build it from the agent's
/// config with [`PipelineOptions::from_config`] or by hand (tests, bench).
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The `site` label.
    pub site: String,
    /// Added to every sample that does not carry them (sorted or not).
    pub external_labels: Vec<(String, String)>,
    pub targets: Vec<ScrapeTarget>,
    /// Most critical first.
    pub classes: Vec<String>,
    pub default_class: String,
    pub rules: Vec<Rule>,
    /// `None`: buffer only (the region profile, or no URL configured).
    pub uplink: Option<UplinkOptions>,
    /// Where refused batches go.
    pub dead_letter_dir: PathBuf,
    /// Live queue bound in samples (older live batches fall back to the
    /// buffer). Default: 4 × batch.
    pub live_queue_samples: usize,
    /// Keys the live/drain ledger may hold (≈ 40 bytes each).
    pub ledger_capacity: usize,
    pub link: LinkTiming,
    /// Sync the store on this timer (the buffer's `Interval` fsync policy).
    pub sync_every: Option<Duration>,
    /// On a TLS site: the site CA (added to the trusted roots) and the host
    /// certificate presented to scrape targets (etcd and the agent demand one).
    pub scrape_tls: Option<ScrapeTls>,
}

/// PEM files for scraping TLS targets that require a client certificate.
#[derive(Debug, Clone)]
pub struct ScrapeTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ScrapeTls {
    fn apply(&self, b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, UplinkError> {
        crate::uplink::with_tls_files(
            b,
            Some(&self.ca_file),
            Some(&self.cert_file),
            Some(&self.key_file),
        )
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to open the dead-letter directory {path}")]
    DeadLetter {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("failed to set up the uplink")]
    Uplink(#[from] UplinkError),
    #[error("failed to open the metrics buffer")]
    Buffer(#[source] StoreError),
    #[error("invalid metrics options: {0}")]
    Invalid(String),
}

enum Ingest {
    Scraped(ScrapeOutcome),
    Inject {
        samples: Vec<Sample>,
        live: bool,
        done: oneshot::Sender<()>,
    },
}

/// State shared by the tasks and the handle.
pub(crate) struct Shared {
    classes: Vec<String>,
    counters: Mutex<Counters>,
    targets: Mutex<Vec<TargetStatus>>,
    link: Mutex<LinkMachine>,
    link_since_ms: AtomicI64,
    link_tx: watch::Sender<LinkState>,
    probe_delay: Mutex<Duration>,
    ledger: Mutex<Ledger>,
    live: Mutex<LiveQueue>,
    /// `uplink.out_of_order` as configured.
    out_of_order: OutOfOrder,
    /// Flushing in order (live data held back behind the backlog) rather
    /// than live first.
    in_order: AtomicBool,
    /// Set while the receiver refuses the backlog for its age or order.
    refused: Mutex<Option<BacklogRefused>>,
    live_notify: Notify,
    drain_notify: Notify,
    dead: Mutex<DeadLetterStats>,
    /// (when, samples) of recent backfill sends, for the measured rate.
    backfill_window: Mutex<VecDeque<(Instant, u64)>>,
    /// Recent live deliveries: (2xx time, sample timestamp), ms; sampled.
    live_latencies: Mutex<VecDeque<(i64, i64)>>,
    backlog: Box<dyn Fn() -> Vec<ClassBacklog> + Send + Sync>,
    url: Option<String>,
    backfill_rate: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these structures half-updated in a
    // way that matters more than stopping the whole agent would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Shared {
    fn report_success(&self) {
        let mut m = lock(&self.link);
        let before = m.state();
        m.on_success();
        if before != LinkState::Up {
            self.link_since_ms.store(now_ms(), Ordering::Relaxed);
            tracing::info!(from = ?before, "The uplink to the region is up.");
            self.link_tx.send_replace(LinkState::Up);
        }
    }

    fn report_failure(&self, reason: String, after: Option<Duration>) -> Duration {
        let mut m = lock(&self.link);
        let before = m.state();
        let d = m.on_failure(reason.clone(), after, rand::random::<f64>());
        *lock(&self.probe_delay) = d;
        if m.state() != before {
            self.link_since_ms.store(now_ms(), Ordering::Relaxed);
            tracing::warn!(state = ?m.state(), error = %reason, retry_in = ?d, "The uplink to the region is failing.");
            self.link_tx.send_replace(m.state());
        }
        d
    }

    /// Whether scraped samples also go to the live lane: always when live
    /// first; when in order only while the backlog is refused (so live
    /// data keeps flowing behind a backlog the region will not take).
    fn live_lane_on(&self) -> bool {
        !self.in_order.load(Ordering::Relaxed) || lock(&self.refused).is_some()
    }

    fn set_refused(&self, refusal: Refusal, reason: &str, retry: Duration) {
        let mut r = lock(&self.refused);
        if r.is_none() {
            tracing::error!(
                event = "uplink_backlog_refused",
                severity = "critical",
                cause = ?refusal,
                reason = %reason,
                retry_every = ?retry,
                fix = refusal.fix(),
                "The region refuses the backlog because of the samples' age or order. It is kept in the buffer (its budget, priorities and expiry decide what survives), live data keeps flowing, and the backlog is retried on a slow schedule."
            );
        }
        let since_ms = r.as_ref().map_or_else(now_ms, |b| b.since_ms);
        *r = Some(BacklogRefused {
            since_ms,
            cause: refusal,
            reason: reason.to_owned(),
            fix: refusal.fix().to_owned(),
        });
    }

    fn clear_refused(&self) {
        if lock(&self.refused).take().is_some() {
            tracing::info!(
                event = "uplink_backlog_accepted",
                "The region accepts the backlog again; backfill resumes."
            );
        }
    }

    fn count_response(&self, code: &str) {
        *lock(&self.counters)
            .responses
            .entry(code.to_owned())
            .or_default() += 1;
    }

    fn status(&self) -> MetricsStatus {
        let classes = (self.backlog)();
        let backlog_samples: u64 = classes.iter().map(|c| c.samples).sum();
        let backlog_bytes: u64 = classes.iter().map(|c| c.bytes).sum();
        let rate = {
            let mut w = lock(&self.backfill_window);
            let cutoff = Instant::now() - Duration::from_secs(60);
            while w.front().is_some_and(|(t, _)| *t < cutoff) {
                w.pop_front();
            }
            match w.front() {
                Some((t0, _)) => {
                    let secs = t0.elapsed().as_secs_f64().max(1.0);
                    w.iter().map(|(_, n)| *n).sum::<u64>() as f64 / secs
                }
                None => 0.0,
            }
        };
        let m = lock(&self.link);
        MetricsStatus {
            link: LinkStatus {
                state: m.state(),
                url: self.url.as_deref().map(status::redact_url),
                consecutive_failures: m.consecutive_failures(),
                last_error: m.last_error().map(str::to_owned),
                since_ms: self.link_since_ms.load(Ordering::Relaxed),
            },
            classes,
            backlog_samples,
            backlog_bytes,
            dead_letter: lock(&self.dead).clone(),
            flush: FlushStatus {
                backfill_rate_limit: self.backfill_rate,
                backfill_samples_per_s: rate,
                eta_s: (rate > 0.0 && backlog_samples > 0).then(|| backlog_samples as f64 / rate),
                in_order: self.in_order.load(Ordering::Relaxed),
            },
            backlog_refused: lock(&self.refused).clone(),
            targets: lock(&self.targets).clone(),
            counters: lock(&self.counters).clone(),
            live_queue_samples: lock(&self.live).samples() as u64,
            live_ledger_keys: lock(&self.ledger).len() as u64,
        }
    }
}

/// The running pipeline.
pub struct PipelineHandle {
    shared: Arc<Shared>,
    ingest_tx: mpsc::Sender<Ingest>,
    /// Dropping the handle without `shutdown` still stops the tasks.
    stop: StopOnDrop,
    scrapers: Vec<JoinHandle<()>>,
    ingest: JoinHandle<()>,
    senders: Vec<JoinHandle<()>>,
    sync: Box<dyn FnOnce() -> Result<(), StoreError> + Send>,
}

struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// The entry point; see the crate docs.
pub struct Pipeline;

impl Pipeline {
    /// Starts the pipeline over `store` (the disk buffer). Must be called
    /// within a multi-threaded tokio runtime.
    pub fn start_with_store<S: SampleStore>(
        opts: PipelineOptions,
        store: S,
    ) -> Result<PipelineHandle, StartError> {
        if opts.classes.is_empty() || !opts.classes.contains(&opts.default_class) {
            return Err(StartError::Invalid(format!(
                "the default class {:?} must be one of the classes {:?}",
                opts.default_class, opts.classes
            )));
        }
        let store = Arc::new(Mutex::new(store));
        let dead = match &opts.uplink {
            Some(u) => Some(
                DeadLetter::open(&opts.dead_letter_dir, u.dead_letter_bytes).map_err(|err| {
                    StartError::DeadLetter {
                        path: opts.dead_letter_dir.clone(),
                        err,
                    }
                })?,
            ),
            None => None,
        };
        let writer: Option<Writer> = match &opts.uplink {
            Some(u) => Some(Arc::new(RemoteWriter::new(u)?)),
            None => None,
        };
        let backlog_store = store.clone();
        let (link_tx, _) = watch::channel(LinkState::Up);
        let shared = Arc::new(Shared {
            classes: opts.classes.clone(),
            counters: Mutex::new(Counters::default()),
            targets: Mutex::new(
                opts.targets
                    .iter()
                    .map(|t| TargetStatus {
                        job: t.job.clone(),
                        url: t.url.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            link: Mutex::new(LinkMachine::new(opts.link)),
            link_since_ms: AtomicI64::new(now_ms()),
            link_tx,
            probe_delay: Mutex::new(opts.link.backoff_base),
            ledger: Mutex::new(Ledger::new(opts.classes.len(), opts.ledger_capacity)),
            live: Mutex::new(LiveQueue::new(opts.live_queue_samples)),
            out_of_order: opts
                .uplink
                .as_ref()
                .map_or(OutOfOrder::Auto, |u| u.out_of_order),
            in_order: AtomicBool::new(
                opts.uplink
                    .as_ref()
                    .is_none_or(|u| u.out_of_order != OutOfOrder::Accepted),
            ),
            refused: Mutex::new(None),
            live_notify: Notify::new(),
            drain_notify: Notify::new(),
            dead: Mutex::new(dead.as_ref().map(DeadLetter::stats).unwrap_or_default()),
            backfill_window: Mutex::new(VecDeque::new()),
            live_latencies: Mutex::new(VecDeque::new()),
            backlog: Box::new(move || lock(&backlog_store).backlog()),
            url: opts.uplink.as_ref().map(|u| u.url.clone()),
            backfill_rate: opts.uplink.as_ref().map_or(0, |u| u.backfill_rate),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ingest_tx, ingest_rx) = mpsc::channel::<Ingest>(64);

        let common = CommonLabels {
            site: opts.site.clone(),
            external: {
                let mut e = opts.external_labels.clone();
                e.sort();
                e
            },
        };
        crate::install_crypto_provider();
        let mut http =
            reqwest::Client::builder().user_agent(concat!("edgeplane/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &opts.scrape_tls {
            http = t.apply(http)?;
        }
        let http = http
            .build()
            .map_err(|e| StartError::Uplink(UplinkError::Client(e)))?;
        let scrapers = opts
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tokio::spawn(run_target(
                    http.clone(),
                    t.clone(),
                    common.clone(),
                    ingest_tx.clone(),
                    stop_rx.clone(),
                    i,
                ))
            })
            .collect();

        let classifier = Classifier::new(
            opts.rules.clone(),
            opts.default_class.clone(),
            &opts.classes,
        );
        let ingest = tokio::spawn(run_ingest(
            shared.clone(),
            store.clone(),
            classifier,
            ingest_rx,
            writer.is_some(),
        ));
        let mut senders = vec![tokio::spawn(run_housekeeping(
            store.clone(),
            opts.sync_every,
            stop_rx.clone(),
        ))];
        if let (Some(w), Some(u), Some(dl)) = (writer, opts.uplink.clone(), dead) {
            senders.push(tokio::spawn(run_live(
                shared.clone(),
                w.clone(),
                u.clone(),
                stop_rx.clone(),
            )));
            let mut canary_labels = common.external.clone();
            canary_labels.push(("__name__".into(), CANARY_METRIC.into()));
            canary_labels.push(("site".into(), common.site.clone()));
            canary_labels.sort();
            canary_labels.dedup_by(|a, b| a.0 == b.0);
            senders.push(tokio::spawn(run_drain(
                shared.clone(),
                store.clone(),
                w.clone(),
                u,
                dl,
                canary_labels,
                stop_rx.clone(),
            )));
            senders.push(tokio::spawn(run_probe(shared.clone(), w, stop_rx.clone())));
        }
        let sync_store = store;
        Ok(PipelineHandle {
            shared,
            ingest_tx,
            stop: StopOnDrop(stop_tx),
            scrapers,
            ingest,
            senders,
            sync: Box::new(move || lock(&sync_store).sync()),
        })
    }
}

impl PipelineHandle {
    /// A snapshot of everything the pipeline knows.
    pub fn status(&self) -> MetricsStatus {
        self.shared.status()
    }

    /// The pipeline's own counters in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        self.status().render_prometheus()
    }

    /// Feeds samples through the same path as scraped ones (classify,
    /// buffer, and the live lane if `live`). Returns once they are in the
    /// buffer. For tests, benchmarks and tools.
    pub async fn inject(&self, samples: Vec<Sample>, live: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .ingest_tx
            .send(Ingest::Inject {
                samples,
                live,
                done,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Recent live-lane deliveries as `(2xx time, sample timestamp)` in
    /// ms, oldest first: about 8 samples of each request, the last 65536.
    /// Their difference is the live latency.
    pub fn live_deliveries(&self) -> Vec<(i64, i64)> {
        lock(&self.shared.live_latencies).iter().copied().collect()
    }

    /// Stops scraping, buffers what was scraped, stops sending (unacked
    /// batches stay in the buffer) and syncs the buffer to disk.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        let _ = self.stop.0.send(true);
        for s in self.scrapers {
            let _ = s.await;
        }
        drop(self.ingest_tx);
        let _ = self.ingest.await;
        for s in self.senders {
            let _ = s.await;
        }
        let sync = self.sync;
        tokio::task::spawn_blocking(sync)
            .await
            .map_err(|e| StoreError(format!("buffer sync task failed: {e}")))?
    }
}

impl PipelineOptions {
    /// Resolves the pipeline's options from the agent's configuration.
    ///
    /// Targets: the local etcd's `/metrics` (job `etcd`, from this host's
    /// `client_url`) if `metrics.scrape_etcd`, the agent's own `/metrics`
    /// (job `edgeplane`, from `agent_url`) if `metrics.scrape_self`, then
    /// `metrics.targets`, then `extra_targets`. The uplink is on when
    /// `uplink.enabled` and a URL is set. Refused batches go to
    /// `dead-letter/` beside the buffer directory.
    pub fn from_config(
        cfg: &edgeplane_config::Config,
        buffer_dir: &std::path::Path,
        extra_targets: Vec<ScrapeTarget>,
    ) -> Self {
        let m = &cfg.metrics;
        let target = |job: &str, url: String, interval: Option<Duration>| {
            let interval = interval.unwrap_or(m.scrape_interval);
            ScrapeTarget {
                job: job.to_owned(),
                url,
                interval,
                timeout: m.scrape_timeout.min(interval),
            }
        };
        let me = cfg.nodes.iter().find(|n| n.name == cfg.host);
        let mut targets = Vec::new();
        // `metrics.enabled = false`: scrape nothing, but still flush what an
        // earlier run buffered.
        let me = me.filter(|_| m.enabled);
        if let Some(me) = me {
            if m.scrape_etcd {
                targets.push(target("etcd", join_metrics(&me.client_url), None));
            }
            if m.scrape_self {
                targets.push(target("edgeplane", join_metrics(&me.agent_url), None));
            }
        }
        targets.extend(
            m.targets
                .iter()
                .map(|t| target(&t.job, t.url.clone(), t.interval)),
        );
        targets.extend(extra_targets);
        let u = &cfg.uplink;
        let uplink = match (&u.url, u.enabled) {
            (Some(url), true) => Some(UplinkOptions {
                url: url.clone(),
                timeout: u.timeout,
                backfill_rate: u.backfill_rate,
                batch_samples: u.batch_samples.max(1),
                max_sample_age: u.max_sample_age,
                bearer_token_file: u.bearer_token_file.clone(),
                basic_auth: u
                    .basic_auth_user
                    .clone()
                    .zip(u.basic_auth_password_file.clone()),
                headers: u
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ca_file: u.ca_file.clone(),
                client_cert: u.client_cert.clone(),
                client_key: u.client_key.clone(),
                dead_letter_bytes: u.dead_letter_bytes,
                out_of_order: match u.out_of_order {
                    edgeplane_config::OutOfOrder::Auto => OutOfOrder::Auto,
                    edgeplane_config::OutOfOrder::Accepted => OutOfOrder::Accepted,
                    edgeplane_config::OutOfOrder::Refused => OutOfOrder::Refused,
                },
                refused_retry: Duration::from_secs(60),
            }),
            _ => None,
        };
        let batch = uplink.as_ref().map_or(2000, |u| u.batch_samples);
        PipelineOptions {
            site: cfg.site.clone(),
            external_labels: m
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            targets,
            classes: m.classes.clone(),
            default_class: m.default_class.clone(),
            rules: m
                .rules
                .iter()
                .map(|r| Rule {
                    metric: r.metric.clone(),
                    labels: r.labels.clone(),
                    class: r.class.clone(),
                })
                .collect(),
            uplink,
            dead_letter_dir: dead_letter_dir_for(buffer_dir),
            live_queue_samples: (batch * 4).max(10_000),
            // ≈ 40 bytes a key: at most ~40 MiB, an hour of 2000 series at
            // 15 s ~ 0.5 M keys.
            ledger_capacity: 1_000_000,
            link: LinkTiming {
                backoff_max: m
                    .scrape_interval
                    .clamp(Duration::from_secs(1), Duration::from_secs(30)),
                ..LinkTiming::default()
            },
            sync_every: match cfg.buffer.fsync {
                edgeplane_config::FsyncPolicy::Interval => Some(cfg.buffer.fsync_interval),
                _ => None,
            },
            scrape_tls: cfg.tls_enabled().then(|| ScrapeTls {
                ca_file: cfg.tls.ca_file.clone(),
                cert_file: cfg.tls.cert_file.clone(),
                key_file: cfg.tls.key_file.clone(),
            }),
        }
    }
}

/// `dead-letter/` beside the buffer directory (never inside it: the buffer
/// treats every directory in it as a class).
pub fn dead_letter_dir_for(buffer_dir: &std::path::Path) -> PathBuf {
    match buffer_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("dead-letter"),
        _ => PathBuf::from("dead-letter"),
    }
}

/// The buffer options the config asks for.
pub fn buffer_options(cfg: &edgeplane_config::Config) -> edgeplane_buffer::Options {
    let b = &cfg.buffer;
    edgeplane_buffer::Options {
        classes: cfg.metrics.classes.clone(),
        budget_bytes: b.budget_bytes,
        segment_bytes: b.segment_bytes,
        fsync: match b.fsync {
            edgeplane_config::FsyncPolicy::Batch => edgeplane_buffer::FsyncPolicy::Batch,
            edgeplane_config::FsyncPolicy::Interval => {
                edgeplane_buffer::FsyncPolicy::Interval(b.fsync_interval)
            }
            edgeplane_config::FsyncPolicy::Never => edgeplane_buffer::FsyncPolicy::Never,
        },
        max_age: Some(b.max_age),
    }
}

fn join_metrics(base: &str) -> String {
    format!("{}/metrics", base.trim_end_matches('/'))
}

impl Pipeline {
    /// Starts the metrics pipeline of an agent: opens the disk buffer in
    /// `buffer_dir`, scrapes, classifies, buffers and (if configured) sends.
    /// Stop it with [`PipelineHandle::shutdown`]. Independent of etcd: the
    /// etcd endpoint is just one more scrape target.
    pub fn start(
        cfg: &edgeplane_config::Config,
        buffer_dir: &std::path::Path,
        extra_targets: Vec<ScrapeTarget>,
    ) -> Result<PipelineHandle, StartError> {
        let buffer = edgeplane_buffer::Buffer::open(buffer_dir, buffer_options(cfg))
            .map_err(|e| StartError::Buffer(StoreError::from_err(&e)))?;
        Self::start_with_store(
            PipelineOptions::from_config(cfg, buffer_dir, extra_targets),
            buffer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_an_edge_config() {
        let text = r#"
            profile = "edge"
            host = "a"
            site = "depot-7"
            [[nodes]]
            name = "a"
            peer_url = "https://10.0.0.1:2380"
            client_url = "https://10.0.0.1:2379"
            agent_url = "https://10.0.0.1:7070/"
            [metrics]
            external_labels = { env = "prod" }
            [[metrics.targets]]
            job = "node"
            url = "http://127.0.0.1:9100/metrics"
            interval = "1m"
            [uplink]
            url = "https://region.example/api/v1/write"
        "#;
        let cfg = edgeplane_config::load_str(text, std::path::Path::new("t.toml"))
            .expect("valid config")
            .config;
        let o = PipelineOptions::from_config(
            &cfg,
            std::path::Path::new("/var/lib/edgeplane/buffer"),
            vec![],
        );
        // etcd and the agent demand the site's client certificate.
        assert!(
            o.scrape_tls
                .as_ref()
                .is_some_and(|t| t.key_file.ends_with("host.key"))
        );
        assert_eq!(o.site, "depot-7");
        let urls: Vec<(&str, &str)> = o
            .targets
            .iter()
            .map(|t| (t.job.as_str(), t.url.as_str()))
            .collect();
        assert_eq!(
            urls,
            vec![
                ("etcd", "https://10.0.0.1:2379/metrics"),
                ("edgeplane", "https://10.0.0.1:7070/metrics"),
                ("node", "http://127.0.0.1:9100/metrics"),
            ]
        );
        assert_eq!(o.targets[2].interval, Duration::from_secs(60));
        assert!(o.targets.iter().all(|t| t.timeout <= t.interval));
        assert_eq!(o.external_labels, vec![("env".into(), "prod".into())]);
        assert_eq!(o.classes, cfg.metrics.classes);
        let u = o.uplink.expect("uplink on");
        assert_eq!(u.url, "https://region.example/api/v1/write");
        assert_eq!(u.batch_samples, cfg.uplink.batch_samples);
        assert_eq!(
            o.dead_letter_dir,
            PathBuf::from("/var/lib/edgeplane/dead-letter")
        );
        let b = buffer_options(&cfg);
        assert_eq!(b.budget_bytes, cfg.buffer.budget_bytes);
        assert_eq!(b.classes, cfg.metrics.classes);
    }
}
