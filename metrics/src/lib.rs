//! # edgeplane-metrics: scrape, classify, buffer, and remote-write to the region
//!
//! Edgeplane's metrics path for a site that loses its link to the region for
//! days. Every sample is scraped, classified into a priority class, written
//! to the disk buffer ([`edgeplane_buffer`]) and, when the link is up, sent
//! to the region with Prometheus remote write 1.0, with its original
//! timestamp. Independent of etcd: the local etcd's `/metrics` is just one
//! more scrape target.
//!
//! ```text
//!  targets ──► scrape (task per target, timeout) ──► ingest: classify ──► buffer.append (disk)
//!                                                          │
//!                                                          └──► live queue (memory, bounded)
//!                                                                    │
//!  region ◄── remote write ◄── live lane  (newest data, no rate limit) ◄┘
//!         ◄── remote write ◄── drain      (buffer FIFO per class, critical first,
//!                                          backfill_rate token bucket, the only one that acks)
//!         ◄── probe (empty WriteRequest)  while the link is down
//! ```
//!
//! ## Using it (the agent)
//!
//! ```no_run
//! # async fn f(cfg: edgeplane_config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use edgeplane_metrics::pipeline::Pipeline;
//! let handle = Pipeline::start(&cfg, &cfg.paths.buffer_dir, vec![])?;
//! let status = handle.status();              // MetricsStatus: Serialize
//! let text = status.render_prometheus();     // the pipeline's own /metrics
//! handle.shutdown().await?;                  // stop, buffer what was scraped, sync
//! # Ok(()) }
//! ```
//!
//! [`pipeline::Pipeline::start`] opens the buffer and derives everything from
//! the config ([`pipeline::PipelineOptions::from_config`]: etcd and self
//! targets from this host's node entry, rules, classes, uplink, dead-letter
//! directory `dead-letter/` beside the buffer directory).
//! [`pipeline::Pipeline::start_with_store`] takes explicit options and any
//! [`store::SampleStore`] (tests, benchmark). Call both inside a
//! multi-threaded tokio runtime.
//!
//! ## Live first, backlog behind, nothing acknowledged is lost
//!
//! Chosen design (of the two in the issue): a **live lane beside the drain,
//! with a ledger** so the steady state sends nothing twice.
//!
//! - Each scrape is appended to the buffer (durable per the fsync policy)
//!   *and* queued in memory. The live lane sends the queue at once, critical
//!   class first; it never acknowledges anything to the buffer.
//! - The drain reads the buffer per class, most critical class first, oldest
//!   first, and is the only task that acknowledges. For every sample it asks
//!   the [`live::Ledger`]: delivered live (2xx) → acknowledged without
//!   sending; still in flight live → wait briefly for the verdict; unknown →
//!   send, paced by the `backfill_rate` token bucket. So nothing leaves the
//!   buffer before it was delivered by one lane or the other (at-least-once,
//!   crash-safe: the ledger is only an optimisation; after a restart the
//!   drain resends, and Prometheus accepts identical duplicates silently).
//!   Duplicates that do happen are counted (`duplicate_samples_sent`).
//! - While the link is down the live queue keeps only the newest samples
//!   (bound `live_queue_samples`); evicted ones are sent later by the drain.
//!   When the probe sees the region again, the live lane sends the newest
//!   scrapes immediately while days of backlog drain behind at the
//!   configured rate.
//! - Consequence: per series, newer (live) samples may reach the region
//!   before older (backlog) ones, which only a receiver with an
//!   out-of-order window accepts. Within a request each series' samples are
//!   in timestamp order; within a class the drain sends in buffer order, one
//!   request at a time.
//! - **In order** (#18) where the receiver refuses out-of-order samples
//!   (`uplink.out_of_order = "refused"`, or `"auto"`, the default, until
//!   canary samples on `edgeplane_uplink_probe` show older samples are
//!   accepted; a backlog batch refused as out of order switches back): the
//!   live lane is idle and every sample goes through the drain, oldest first
//!   per series, live data behind the backlog (as vmagent does). A stock
//!   Prometheus then receives every outage that drains within its ~1 h
//!   accept window.
//!
//! ## Failures
//!
//! - 2xx: acknowledged. 5xx, 429, timeouts, connection errors: retried with
//!   exponential backoff and jitter, `Retry-After` honoured (clamped to
//!   5 min); the drain re-reads from the buffer after a failure, so data
//!   shed or expired meanwhile is not resent. Three failures in a row make
//!   the link **down**: data sending stops and a cheap probe (an empty
//!   `WriteRequest`) runs at the backoff interval (capped at one scrape
//!   interval, so a returning link is noticed within one).
//! - Refused for their age or order (400/500 whose body says out of order,
//!   out of bounds or too old, in Prometheus', Mimir's or Cortex's words;
//!   any 409, Thanos Receive): the region's setup, not the data. Never
//!   dead-lettered: the backlog stays in the buffer (its budget, priorities
//!   and expiry decide what survives), the live lane turns on so live data
//!   keeps flowing, the backlog is retried every `refused_retry` (1 min),
//!   and `backlog_refused` in the status, `edgeplane_uplink_backlog_refused`
//!   and a critical log event name the cause and the fix.
//! - Other 4xx (malformed): permanent. The
//!   batch (exact request body + a JSON note) goes to the bounded
//!   [`dead_letter`] directory, durably, before it is acknowledged; the
//!   oldest entries are deleted beyond `dead_letter_bytes` and counted.
//! - **Deliberate deviation:** 401, 403, 404, 405 and 407 are not treated as
//!   verdicts on the data but on the endpoint or credentials: the link goes
//!   down and the data stays in the buffer. Dead-lettering on a rotated
//!   token or a wrong URL would push the whole backlog through a small
//!   bounded area and lose it.
//! - Samples older than `uplink.max_sample_age` are dropped at send time and
//!   counted (`samples_expired_unsent`); the buffer expires whole segments
//!   past `buffer.max_age` on its own.
//! - A target that is down, slow or returns garbage yields `up = 0` (plus
//!   `scrape_duration_seconds`, `scrape_samples_scraped`) and a counter;
//!   each target has its own task and timeout.
//!
//! ## Labels
//!
//! As Prometheus with `honor_labels: false`: `job`, `instance` (`host:port`)
//! and `site` are target labels (a scraped label of the same name becomes
//! `exported_<name>`); external labels are added where absent. Samples keep
//! the exposition's timestamp if it has one, else the scrape start time.
//! The text format is parsed by [`parse`] (strict, like Prometheus: one bad
//! line fails the scrape).
//!
//! ## Visibility
//!
//! [`status::MetricsStatus`]: link state, per-class backlog (samples, bytes,
//! oldest/newest, shed, expired, dropped), dead-letter counts, measured flush
//! rate and ETA, per-target scrape state and all counters;
//! [`status::MetricsStatus::render_prometheus`] renders them as
//! `edgeplane_metrics_*` series.
//!
//! ## Benchmark
//!
//! [`bench::backfill`] (wired as `edgeplane bench backfill`; also
//! `cargo run --release -p edgeplane-metrics --example backfill`) measures
//! flush rate, receiver baseline, live latency, RSS and CPU against a real
//! Prometheus. Tests and the benchmark start Prometheus through
//! [`local_prometheus`].

pub mod bench;
pub mod bench_vmagent;
pub mod classify;
pub mod dead_letter;
pub mod link;
pub mod live;
mod local_process;
pub mod local_prometheus;
pub mod local_victoria;
pub mod parse;
pub mod pipeline;
pub mod region_check;
pub mod remote_write;
pub mod scrape;
pub mod status;
pub mod store;
pub mod uplink;

/// One sample as it travels through the pipeline and the buffer:
/// `labels` include `("__name__", name)` and are sorted by name.
pub use edgeplane_buffer::Sample;

/// Installs rustls' ring crypto provider for the process (reqwest is built
/// without a default provider). Idempotent; call before building a client.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
