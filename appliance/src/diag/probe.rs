//! The network half of `diag`: every host's agent `/status` and every
//! member's etcd Status, all at once under short timeouts, then the member
//! list and alarms from one member that knows a leader. A host that does not
//! answer costs one timeout; the whole probe is bounded by about three.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use edgeplane_config::{Config, Node};
use etcd_client::{AlarmAction, AlarmType, Client, ConnectOptions};
use serde::{Deserialize, Serialize};

use crate::agent::status::StatusDoc;
use crate::tls::SiteTls;

/// One agent's answer to `GET /status`.
#[derive(Debug, Clone)]
pub struct AgentProbe {
    pub host: String,
    /// The document, or why there is none.
    pub doc: Result<StatusDoc, String>,
    /// Local wall clock when the request was sent, and the round trip.
    pub sent_at: DateTime<Utc>,
    pub rtt: Duration,
    /// The `Date` header of the reply (1 s resolution), for the clock check.
    pub date: Option<DateTime<Utc>>,
}

/// A member's answer to Status (the fields `diag` shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdStatus {
    pub member_id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub term: u64,
    pub is_learner: bool,
    pub db_size: i64,
    pub db_in_use: i64,
    pub errors: Vec<String>,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct EtcdProbe {
    pub host: String,
    pub status: Result<EtcdStatus, String>,
}

/// One entry of the member list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedMember {
    pub id: u64,
    pub name: String,
    pub peer_url: String,
    pub is_learner: bool,
}

/// One raised alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Member id in hex, as etcd prints it.
    pub member_id: String,
    /// `NOSPACE`, `CORRUPT`.
    pub alarm: String,
}

/// Everything the network told us.
#[derive(Debug, Clone)]
pub struct Probes {
    /// In config node order.
    pub agents: Vec<AgentProbe>,
    /// The witnesses' agents (`role = "witness"`), in config order: votes only.
    pub witnesses: Vec<AgentProbe>,
    pub etcd: Vec<EtcdProbe>,
    /// The member list and the host it was read from.
    pub members: Option<(String, Vec<ListedMember>)>,
    pub alarms: Result<Vec<Alarm>, String>,
    /// Snapshot names each host's agent holds (`GET /snapshots`), by host.
    pub snapshot_lists: Vec<(String, Result<Vec<String>, String>)>,
}

impl Probes {
    /// Nothing answered (a fully disconnected host, or a unit test).
    pub fn none(nodes: &[Node], why: &str) -> Probes {
        Probes {
            agents: nodes
                .iter()
                .map(|n| AgentProbe {
                    host: n.name.clone(),
                    doc: Err(why.to_string()),
                    sent_at: Utc::now(),
                    rtt: Duration::ZERO,
                    date: None,
                })
                .collect(),
            witnesses: Vec::new(),
            etcd: nodes
                .iter()
                .map(|n| EtcdProbe {
                    host: n.name.clone(),
                    status: Err(why.to_string()),
                })
                .collect(),
            members: None,
            alarms: Err(why.to_string()),
            snapshot_lists: nodes
                .iter()
                .map(|n| (n.name.clone(), Err(why.to_string())))
                .collect(),
        }
    }
}

fn etcd_options(tls: Option<&SiteTls>, timeout: Duration) -> ConnectOptions {
    crate::tls::etcd_options(tls)
        .with_connect_timeout(timeout / 2)
        .with_timeout(timeout)
}

/// The site's TLS material for probing (`Ok(None)` on a plaintext site).
/// A key the CLI cannot read (not root) or that `diag check` fails is
/// reported as the reason every network probe failed.
fn site_tls(cfg: &Config) -> Result<Option<SiteTls>, String> {
    SiteTls::load(cfg).map_err(|e| format!("TLS: {e}"))
}

/// An HTTP client for the site's agents, with the site's certificate when
/// TLS is on.
fn http_client(tls: Option<&SiteTls>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout / 2);
    if let Some(t) = tls {
        b = t.http_client(b).map_err(|e| format!("TLS: {e}"))?;
    }
    b.build().map_err(|e| format!("no HTTP client: {e}"))
}

/// `what` within `t`, with the error or the timeout as text.
async fn bounded<T, E: std::fmt::Display>(
    t: Duration,
    what: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, what).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(short_error(&e.to_string())),
        Err(_) => Err(format!("no answer within {}ms", t.as_millis())),
    }
}

/// The first line of an error, without gRPC noise, at most 160 characters.
fn short_error(e: &str) -> String {
    let line = e.lines().next().unwrap_or(e).trim();
    let mut s: String = line.chars().take(160).collect();
    if s.is_empty() {
        s = "error".into();
    }
    s
}

/// An HTTP error in a few words.
fn http_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}ms", timeout.as_millis())
    } else if e.is_connect() {
        "connection refused or host unreachable".to_string()
    } else {
        short_error(&crate::diag::redact::text(
            &e.to_string(),
            &Default::default(),
        ))
    }
}

/// An etcd client error in a few words.
fn etcd_error(e: &str) -> String {
    if e.contains("tcp connect error")
        || e.contains("Connection refused")
        || e.contains("ConnectError")
        || e.contains("transport error")
    {
        "connection refused or host unreachable".to_string()
    } else if let Some(m) = e
        .split("message: \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
    {
        short_error(m)
    } else {
        short_error(e)
    }
}

async fn probe_agent(http: reqwest::Client, node: Node, timeout: Duration) -> AgentProbe {
    let url = format!("{}/status", node.agent_url.trim_end_matches('/'));
    let sent_at = Utc::now();
    let t0 = Instant::now();
    let res = tokio::time::timeout(timeout, async {
        let r = http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_error(&e, timeout))?;
        let date = r
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
            .map(|d| d.with_timezone(&Utc));
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status()));
        }
        let doc = r
            .json::<StatusDoc>()
            .await
            .map_err(|e| format!("not a status document: {}", short_error(&e.to_string())))?;
        Ok((doc, date))
    })
    .await;
    let rtt = t0.elapsed();
    let (doc, date) = match res {
        Ok(Ok((doc, date))) => (Ok(doc), date),
        Ok(Err(e)) => (Err(e), None),
        Err(_) => (
            Err(format!("no answer within {}ms", timeout.as_millis())),
            None,
        ),
    };
    AgentProbe {
        host: node.name,
        doc,
        sent_at,
        rtt,
        date,
    }
}

async fn probe_etcd(
    node: &Node,
    tls: Option<&SiteTls>,
    timeout: Duration,
) -> (Result<EtcdStatus, String>, Option<Client>) {
    let client = match bounded(
        timeout,
        Client::connect([node.client_url.as_str()], Some(etcd_options(tls, timeout))),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return (Err(etcd_error(&e)), None),
    };
    let mut c = client.clone();
    let st = bounded(timeout, c.status()).await.map(|r| EtcdStatus {
        member_id: r.header().map(|h| h.member_id()).unwrap_or(0),
        leader: r.leader(),
        raft_index: r.raft_index(),
        applied_index: r.raft_applied_index(),
        term: r.raft_term(),
        is_learner: r.is_learner(),
        db_size: r.db_size(),
        db_in_use: r.raft_used_db_size(),
        errors: r.errors().to_vec(),
        version: r.version().to_string(),
    });
    let st = st.map_err(|e| etcd_error(&e));
    (st, Some(client))
}

/// Probes every host of the site at once.
pub async fn probe_all(cfg: &Config, timeout: Duration) -> Probes {
    // The TLS files are read once for every probe of the run.
    let (http, tls) = match site_tls(cfg).and_then(|t| Ok((http_client(t.as_ref(), timeout)?, t))) {
        Ok(x) => x,
        Err(e) => return Probes::none(&cfg.nodes, &e),
    };
    let agents = futures::future::join_all(
        cfg.nodes
            .iter()
            .map(|n| probe_agent(http.clone(), n.clone(), timeout)),
    );
    let witnesses = futures::future::join_all(
        cfg.witnesses
            .iter()
            .map(|n| probe_agent(http.clone(), n.clone(), timeout)),
    );
    let etcds = futures::future::join_all(
        cfg.nodes
            .iter()
            .map(|n| probe_etcd(n, tls.as_ref(), timeout)),
    );
    let snaps = futures::future::join_all(cfg.nodes.iter().map(|n| {
        let url = format!("{}/snapshots", n.agent_url.trim_end_matches('/'));
        let http = &http;
        async move { (n.name.clone(), snapshot_names(http, &url, timeout).await) }
    }));
    let (agents, witnesses, etcds, snapshot_lists) = tokio::join!(agents, witnesses, etcds, snaps);

    // Member list and alarms from the leader, else any voter that knows a leader.
    let mut order: Vec<usize> = Vec::new();
    for (i, (st, _)) in etcds.iter().enumerate() {
        if let Ok(s) = st
            && s.leader != 0
            && s.leader == s.member_id
        {
            order.insert(0, i);
        } else if let Ok(s) = st
            && s.leader != 0
            && !s.is_learner
        {
            order.push(i);
        }
    }
    let mut members = None;
    let mut alarms = Err("no member with a leader answered".to_string());
    for i in order {
        let Some(client) = etcds[i].1.clone() else {
            continue;
        };
        let (mut c1, mut c2) = (client.clone(), client);
        let (ml, al) = tokio::join!(
            bounded(timeout, c1.member_list()),
            bounded(timeout, c2.alarm(AlarmAction::Get, AlarmType::None, None)),
        );
        if let Ok(al) = al {
            alarms = Ok(al
                .alarms()
                .iter()
                .map(|a| Alarm {
                    member_id: format!("{:x}", a.member_id()),
                    alarm: a.alarm().as_str_name().to_string(),
                })
                .collect());
        }
        if let Ok(ml) = ml {
            members = Some((
                cfg.nodes[i].name.clone(),
                ml.members()
                    .iter()
                    .map(|m| ListedMember {
                        id: m.id(),
                        name: m.name().to_string(),
                        peer_url: m.peer_urls().first().cloned().unwrap_or_default(),
                        is_learner: m.is_learner(),
                    })
                    .collect(),
            ));
            break;
        }
    }
    Probes {
        agents,
        witnesses,
        etcd: cfg
            .nodes
            .iter()
            .zip(etcds)
            .map(|(n, (status, _))| EtcdProbe {
                host: n.name.clone(),
                status,
            })
            .collect(),
        members,
        alarms,
        snapshot_lists,
    }
}

/// The snapshot names an agent lists at `GET /snapshots` (a JSON array of
/// objects with a `name`).
async fn snapshot_names(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let text = fetch_text(http, url, timeout).await?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not a snapshot list: {e}"))?;
    let items = v
        .as_array()
        .or_else(|| v.get("snapshots").and_then(|s| s.as_array()))
        .ok_or("not a snapshot list")?;
    Ok(items
        .iter()
        .filter_map(|i| i.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect())
}

/// `GET url` of a site agent with a short timeout; the body if 2xx.
pub async fn get_text(cfg: &Config, url: &str, timeout: Duration) -> Result<String, String> {
    let http = http_client(site_tls(cfg)?.as_ref(), timeout)?;
    fetch_text(&http, url, timeout).await
}

/// `GET url` with `http`, bounded by `timeout`; the body if 2xx.
async fn fetch_text(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<String, String> {
    let r = match tokio::time::timeout(timeout, http.get(url).send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(http_error(&e, timeout)),
        Err(_) => return Err(format!("no answer within {}ms", timeout.as_millis())),
    };
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    bounded(timeout, r.text()).await
}
