//! A recorded workload for the linearizability checker: several clients,
//! each running puts, linearizable and serializable gets, compare-and-sets
//! (a read, then a transaction on the mod_revision it saw) and deletes on a
//! few shared keys under one prefix, plus puts of keys of their own that are
//! never overwritten (so a lost acknowledged write shows in the final read
//! whatever came after it), and one watch stream per client on the prefix.
//! Every operation goes into a [`History`], every watch event into a
//! [`WatchLog`]. Every written value is unique.
//!
//! Each client talks to one member at a time (connect timeout 300 ms,
//! `require_leader`, every request bounded by `op_timeout`) and moves to the
//! next member when a request fails or times out, as the campaign's other
//! clients do.

use crate::rng::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};

use crate::history::{
    Answer, Entry, History, Op, SegmentStart, WatchEvent, WatchLog, WatchSegment,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub urls: Vec<String>,
    /// Every key starts with it (and a watch covers it).
    pub prefix: String,
    pub clients: usize,
    /// Shared keys (registers).
    pub keys: usize,
    pub op_timeout: Duration,
    /// Pause after each operation.
    pub pause: Duration,
    pub seed: u64,
}

/// A running workload.
pub struct Workload {
    pub spec: Spec,
    pub history: History,
    watches: Vec<Arc<Mutex<WatchLog>>>,
    stop: Arc<AtomicBool>,
    stop_watch: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn opts(url: &str, timeout: Duration) -> ConnectOptions {
    crate::sim::certs::etcd_options(url)
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(timeout.max(Duration::from_millis(500)))
        .with_require_leader(true)
}

async fn connect(url: &str, timeout: Duration) -> Option<Client> {
    tokio::time::timeout(timeout, Client::connect([url], Some(opts(url, timeout))))
        .await
        .ok()?
        .ok()
}

/// Runs `fut` with the bound; `None` on an error or a timeout.
async fn bounded<T, E>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(Ok(t)) => Some(t),
        _ => None,
    }
}

fn rev_of(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(0)
}

fn kv_of(r: &etcd_client::GetResponse) -> Option<(String, i64)> {
    r.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.mod_revision(),
        )
    })
}

impl Workload {
    /// Starts the clients and their watches (each watch from the revision
    /// after a first read).
    pub fn start(spec: Spec) -> Workload {
        let history = History::new();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_watch = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut watch_tasks = Vec::new();
        let mut watches = Vec::new();
        for c in 0..spec.clients {
            let log = Arc::new(Mutex::new(WatchLog {
                client: c,
                prefix: spec.prefix.clone(),
                segments: Vec::new(),
            }));
            watches.push(log.clone());
            watch_tasks.push(tokio::spawn(run_watch(
                spec.clone(),
                c,
                history.clone(),
                log,
                stop_watch.clone(),
            )));
            tasks.push(tokio::spawn(run_client(
                spec.clone(),
                c,
                history.clone(),
                stop.clone(),
            )));
        }
        Workload {
            spec,
            history,
            watches,
            stop,
            stop_watch,
            tasks,
            watch_tasks,
        }
    }

    /// Stops the clients (an operation in flight ends within its bound).
    pub async fn stop_clients(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Reads every key of the workload once, linearizably (one range read,
    /// recorded as one read per key the workload wrote), retrying members
    /// for up to `bound`. Returns the revision it read at.
    pub async fn final_read(&self, bound: Duration) -> Option<i64> {
        let keys: Vec<String> = {
            let mut k: Vec<String> = self
                .history
                .entries()
                .iter()
                .filter(|e| e.op.is_write())
                .map(|e| e.op.key().to_string())
                .collect();
            k.sort();
            k.dedup();
            k
        };
        let deadline = tokio::time::Instant::now() + bound;
        let mut member = 0usize;
        while tokio::time::Instant::now() < deadline {
            let i = member % self.spec.urls.len();
            member += 1;
            let Some(mut c) = connect(&self.spec.urls[i], self.spec.op_timeout).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let from = self.history.now_us();
            let got = bounded(
                Duration::from_secs(3),
                c.get(
                    self.spec.prefix.as_str(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await;
            let Some(r) = got else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let to = self.history.now_us();
            let rev = rev_of(r.header());
            let have: std::collections::HashMap<String, (String, i64)> = r
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        (
                            String::from_utf8_lossy(kv.value()).into_owned(),
                            kv.mod_revision(),
                        ),
                    )
                })
                .collect();
            for k in keys {
                let id = self.history.invoke(
                    usize::MAX,
                    i,
                    Op::Get {
                        key: k.clone(),
                        serializable: false,
                    },
                );
                self.history.complete_at(
                    id,
                    from,
                    to,
                    Answer::Get {
                        rev,
                        kv: have.get(&k).cloned(),
                    },
                );
            }
            return Some(rev);
        }
        None
    }

    /// Lets the watches catch up to `rev` (bounded), then stops them.
    pub async fn stop_watches(&mut self, rev: Option<i64>, bound: Duration) {
        if let Some(rev) = rev {
            let deadline = tokio::time::Instant::now() + bound;
            while tokio::time::Instant::now() < deadline {
                let behind = self.watches.iter().any(|w| {
                    w.lock()
                        .map(|w| w.last_rev().is_none_or(|l| l < rev))
                        .unwrap_or(false)
                });
                if !behind {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.stop_watch.store(true, Ordering::Relaxed);
        for t in self.watch_tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Everything: stop the clients, read every key, let the watches catch
    /// up, stop them.
    pub async fn finish(&mut self, bound: Duration) -> Option<i64> {
        self.stop_clients().await;
        let rev = self.final_read(bound).await;
        self.stop_watches(rev, Duration::from_secs(5)).await;
        rev
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.history.entries()
    }

    pub fn watch_logs(&self) -> Vec<WatchLog> {
        self.watches
            .iter()
            .filter_map(|w| w.lock().ok().map(|w| w.clone()))
            .collect()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_watch.store(true, Ordering::Relaxed);
        for t in self.tasks.iter().chain(self.watch_tasks.iter()) {
            t.abort();
        }
    }
}

async fn run_client(spec: Spec, c: usize, h: History, stop: Arc<AtomicBool>) {
    let mut rng = Rng(spec.seed ^ (c as u64 + 1).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut clients: Vec<Option<Client>> = vec![None; spec.urls.len()];
    let mut member = c % spec.urls.len().max(1);
    let mut seq = 0u64;
    let t = spec.op_timeout;
    while !stop.load(Ordering::Relaxed) {
        let i = member % spec.urls.len();
        if clients[i].is_none() {
            clients[i] = connect(&spec.urls[i], t).await;
        }
        let Some(cl) = clients[i].as_mut() else {
            member += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        seq += 1;
        let value = format!("c{c}-{seq}");
        let key = format!("{}k{}", spec.prefix, rng.below(spec.keys as u64));
        let ok = match rng.below(100) {
            // A key of its own, never overwritten.
            0..=19 => {
                let key = format!("{}u{c}-{seq}", spec.prefix);
                let id = h.invoke(
                    c,
                    i,
                    Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                    },
                );
                match bounded(t, cl.put(key, value, None)).await {
                    Some(r) => {
                        h.complete(
                            id,
                            Answer::Put {
                                rev: rev_of(r.header()),
                            },
                        );
                        true
                    }
                    None => false,
                }
            }
            20..=44 => {
                let id = h.invoke(
                    c,
                    i,
                    Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                    },
                );
                match bounded(t, cl.put(key, value, None)).await {
                    Some(r) => {
                        h.complete(
                            id,
                            Answer::Put {
                                rev: rev_of(r.header()),
                            },
                        );
                        true
                    }
                    None => false,
                }
            }
            45..=64 => {
                let serializable = rng.below(3) == 0;
                let id = h.invoke(
                    c,
                    i,
                    Op::Get {
                        key: key.clone(),
                        serializable,
                    },
                );
                let o = serializable.then(|| GetOptions::new().with_serializable());
                match bounded(t, cl.get(key, o)).await {
                    Some(r) => {
                        h.complete(
                            id,
                            Answer::Get {
                                rev: rev_of(r.header()),
                                kv: kv_of(&r),
                            },
                        );
                        true
                    }
                    None => false,
                }
            }
            65..=94 => {
                // Compare-and-set: read (recorded), then the transaction.
                let id = h.invoke(
                    c,
                    i,
                    Op::Get {
                        key: key.clone(),
                        serializable: false,
                    },
                );
                match bounded(t, cl.get(key.as_str(), None)).await {
                    Some(r) => {
                        let kv = kv_of(&r);
                        h.complete(
                            id,
                            Answer::Get {
                                rev: rev_of(r.header()),
                                kv: kv.clone(),
                            },
                        );
                        let (expect_value, expect_rev) = match kv {
                            Some((v, m)) => (Some(v), m),
                            None => (None, 0),
                        };
                        let txn = Txn::new()
                            .when([Compare::mod_revision(
                                key.as_str(),
                                CompareOp::Equal,
                                expect_rev,
                            )])
                            .and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
                        let id = h.invoke(
                            c,
                            i,
                            Op::Cas {
                                key,
                                expect_rev,
                                expect_value,
                                value,
                            },
                        );
                        match bounded(t, cl.txn(txn)).await {
                            Some(r) => {
                                h.complete(
                                    id,
                                    Answer::Cas {
                                        rev: rev_of(r.header()),
                                        succeeded: r.succeeded(),
                                    },
                                );
                                true
                            }
                            None => false,
                        }
                    }
                    None => false,
                }
            }
            _ => {
                let id = h.invoke(c, i, Op::Delete { key: key.clone() });
                match bounded(t, cl.delete(key, None)).await {
                    Some(r) => {
                        h.complete(
                            id,
                            Answer::Delete {
                                rev: rev_of(r.header()),
                                deleted: r.deleted(),
                            },
                        );
                        true
                    }
                    None => false,
                }
            }
        };
        if !ok {
            // No answer: the operation stays open; try the next member.
            clients[i] = None;
            member += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            tokio::time::sleep(spec.pause).await;
        }
    }
}

/// One watch stream per client: from the revision after a first read, and
/// after an error, a silent stretch (3 s without a message while the
/// clients write) or the end of the stream, from the revision after the
/// last event delivered, on the next member. "Compacted" starts over from a
/// fresh read.
async fn run_watch(
    spec: Spec,
    c: usize,
    h: History,
    log: Arc<Mutex<WatchLog>>,
    stop: Arc<AtomicBool>,
) {
    let t = spec.op_timeout;
    let mut member = c % spec.urls.len().max(1);
    // The revision to start from, and why.
    let mut next: Option<(i64, SegmentStart)> = None;
    while !stop.load(Ordering::Relaxed) {
        let i = member % spec.urls.len();
        member += 1;
        let Some(mut cl) = connect(&spec.urls[i], t).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (start, why) = match next {
            Some(n) => n,
            None => {
                let Some(r) = bounded(
                    t,
                    cl.get(
                        spec.prefix.as_str(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    ),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                (rev_of(r.header()) + 1, SegmentStart::Initial)
            }
        };
        let wo = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        let Some(mut stream) = bounded(t, cl.watch(spec.prefix.as_str(), Some(wo))).await else {
            next = Some((start, why));
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let seg = {
            let Ok(mut l) = log.lock() else { return };
            l.segments.push(WatchSegment {
                start_rev: start,
                why,
                member: i,
                events: Vec::new(),
                compacted: None,
            });
            l.segments.len() - 1
        };
        let mut last = start - 1;
        next = Some((start, SegmentStart::Reconnect));
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let msg = match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                // Error, end of stream, or silent: go on elsewhere.
                _ => break,
            };
            if msg.compact_revision() > 0 {
                if let Ok(mut l) = log.lock() {
                    l.segments[seg].compacted = Some(msg.compact_revision());
                }
                // Relist: watch from now on.
                next = None;
                let r = bounded(
                    t,
                    cl.get(
                        spec.prefix.as_str(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    ),
                )
                .await;
                if let Some(r) = r {
                    next = Some((rev_of(r.header()) + 1, SegmentStart::Relist));
                }
                break;
            }
            if msg.canceled() {
                break;
            }
            let now = h.now_us();
            let evs: Vec<WatchEvent> = msg
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(WatchEvent {
                        rev: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: match e.event_type() {
                            EventType::Put => {
                                Some(String::from_utf8_lossy(kv.value()).into_owned())
                            }
                            EventType::Delete => None,
                        },
                        at_us: now,
                    })
                })
                .collect();
            if let Some(m) = evs.iter().map(|e| e.rev).max() {
                last = last.max(m);
            }
            if let Ok(mut l) = log.lock() {
                l.segments[seg].events.extend(evs);
            }
            next = Some((last + 1, SegmentStart::Reconnect));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
