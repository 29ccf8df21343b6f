//! The agent's HTTP API on its `agent_url`:
//!
//! - `/livez`: the agent's own loop is alive. Never depends on etcd or the
//!   network; this alone may restart the agent (systemd watchdog).
//! - `/readyz`: the local member is healthy and caught up and the agent's
//!   state is loaded. Readiness flapping never restarts anything.
//! - `/status`: this host's view of the site as JSON (diagnostics and peers).
//! - `/metrics`: the agent's own metrics in Prometheus text format.
//! - `POST /recover`: an operator action, taken only from this host itself
//!   (see [`operator_refusal`]).
//! - `GET /crl`: the site's CRL in force here (PEM), which peers take when
//!   it is newer than theirs and verifies against the site CA.
//! - `GET /snapshots`, `GET|PUT /snapshots/{name}`: peer snapshot copies
//!   (`edgeplane_snapshot::routes_with_policy`).
//!
//! What peers may do: read (`/status`, which the loop of every agent needs,
//! `/metrics`, the snapshot list and files, which a recovery on another host
//! needs) and upload the snapshots they took themselves, one at a time
//! each, within this host's snapshot budget together with every other
//! upload in progress. Everything that rewrites this host's data is an
//! operator action, refused from peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::plan::Role;
use super::recovery_plan;
use super::status::{Shared, StatusDoc};

pub fn router(
    shared: Arc<Shared>,
    snapshot_dir: std::path::PathBuf,
    budget: edgeplane_snapshot::Budget,
) -> Router {
    // Peer snapshot copies: GET /snapshots, GET|PUT /snapshots/{name},
    // within the host's snapshot budget and free-space reserve.
    // Over TLS a peer uploads only the snapshots it took (origin = its
    // certificate's host); a plaintext site knows nobody.
    let policy = edgeplane_snapshot::UploadPolicy {
        own_origin_only: shared.tls,
        ..edgeplane_snapshot::UploadPolicy::default()
    };
    let snapshots = edgeplane_snapshot::routes_with_policy(
        snapshot_dir,
        edgeplane_snapshot::DEFAULT_MAX_RECEIVE_BYTES,
        budget,
        Arc::new(edgeplane_snapshot::Statvfs),
        shared.snapshot_space.clone(),
        policy,
        Arc::new(edgeplane_snapshot::Uploads::default()),
    );
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/recover", post(recover))
        .route("/crl", get(crl))
        .with_state(shared)
        .merge(snapshots)
}

async fn livez(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let age = s.loop_age();
    if age <= s.stall_after {
        (
            StatusCode::OK,
            format!("ok: last reconcile {:.1}s ago\n", age.as_secs_f64()),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: last reconcile {:.1}s ago\n", age.as_secs_f64()),
        )
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let doc = s.status();
    if doc.ready {
        (StatusCode::OK, format!("ready: {}\n", doc.ready_reason))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", doc.ready_reason),
        )
    }
}

async fn status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let mut doc = s.status();
    doc.progress.last_reconcile_age_ms = s.loop_age().as_millis() as u64;
    doc.progress.stalled = s.loop_age() > s.stall_after;
    axum::Json(doc)
}

/// Why a recovery must not start now: an offline defragmentation (or a
/// rebuild) holds this host's etcd data dir, and a rebuild would read and
/// replace it meanwhile. The loop refuses too (its runner runs one
/// operation at a time); this says why at once.
fn data_dir_held(doc: &StatusDoc) -> Option<String> {
    let op = doc
        .operation
        .as_ref()
        .filter(|o| o.kind.holds_local_etcd())?;
    Some(format!(
        "{} holds this host's etcd data dir (running for {:.0} s: {}); nothing was done: run the command again when it has ended",
        match op.kind {
            super::operation::Kind::Rebuild => "a rebuild",
            _ => "an offline defragmentation",
        },
        op.running_for_s,
        op.reason
    ))
}

/// `POST /recover` with `{"confirm": true}` (and optionally `"snapshot":
/// "/abs/path"`): asks this host to rebuild the cluster from its data or
/// from that snapshot file. The loop refuses unless quorum is really lost.
async fn recover(
    State(s): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<
        axum::Json<super::status::RecoverRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> impl IntoResponse {
    let me = s.status().host;
    if let Some(why) = operator_refusal(caller.as_deref(), &me, s.tls) {
        tracing::warn!("Refused POST /recover: {why}.");
        return (StatusCode::FORBIDDEN, format!("refused: {why}\n"));
    }
    let Ok(axum::Json(req)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            "expected JSON {\"confirm\": true}\n".to_string(),
        );
    };
    if !req.confirm {
        return (
            StatusCode::BAD_REQUEST,
            "recovery needs confirm=true (the lost hosts are powered off)\n".to_string(),
        );
    }
    let doc = s.status();
    if doc.quorum != recovery_plan::Quorum::Lost {
        return (
            StatusCode::CONFLICT,
            format!(
                "refused: quorum is {}, not lost; nothing to recover\n",
                doc.quorum
            ),
        );
    }
    if let Some(why) = data_dir_held(&doc) {
        tracing::warn!("Refused POST /recover: {why}.");
        return (StatusCode::CONFLICT, format!("refused: {why}\n"));
    }
    let from = match &req.snapshot {
        Some(file) if !file.is_absolute() || !file.is_file() => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "refused: {} is not a file on {} (give an absolute path)\n",
                    file.display(),
                    doc.host
                ),
            );
        }
        Some(file) => format!("snapshot {}", file.display()),
        None => "its data".to_string(),
    };
    s.request_recover(req);
    (
        StatusCode::ACCEPTED,
        format!("accepted: {} rebuilds the cluster from {from}\n", doc.host),
    )
}

/// `GET /crl`: the CRL in force (PEM), 404 without one.
async fn crl(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.crl.current() {
        Some(c) => (StatusCode::OK, c.pem.clone()),
        None => (StatusCode::NOT_FOUND, "no CRL installed\n".to_string()),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let doc = s.status();
    let mut out = String::new();
    let role = |r: Role| u8::from(doc.role == r);
    let lines: [(&str, &str, &str, String); 12] = [
        (
            "edgeplane_reconcile_age_seconds",
            "gauge",
            "Seconds since the agent's reconcile loop last completed.",
            format!("{:.3}", s.loop_age().as_secs_f64()),
        ),
        (
            "edgeplane_queue_depth",
            "gauge",
            "Operations waiting in the agent's queue.",
            doc.progress.queue_depth.to_string(),
        ),
        (
            "edgeplane_ready",
            "gauge",
            "Whether this host's agent is ready (1) or not (0).",
            u8::from(doc.ready).to_string(),
        ),
        (
            "edgeplane_coordinator",
            "gauge",
            "Whether this agent is the site's coordinator (1) or not (0).",
            u8::from(doc.coordinator).to_string(),
        ),
        (
            "edgeplane_promotions_total",
            "counter",
            "Standby promotions journaled on this site.",
            doc.journal.promotions.to_string(),
        ),
        (
            "edgeplane_member_removals_total",
            "counter",
            "etcd member removals journaled on this site.",
            doc.journal.removals.to_string(),
        ),
        // Removals of a host that had been removed within cluster.flap_window.
        (
            "edgeplane_flap_removals_total",
            "counter",
            "Removals of a host that had been removed within cluster.flap_window.",
            doc.journal.flap_removals.to_string(),
        ),
        (
            "edgeplane_etcd_restarts_total",
            "counter",
            "Restarts of this host's etcd by the agent.",
            doc.etcd.restarts.to_string(),
        ),
        (
            "edgeplane_role_voter",
            "gauge",
            "Whether this host's etcd member is a voter (1) or not (0).",
            role(Role::Voter).to_string(),
        ),
        // Critical: two live clusters (see /status split_brain).
        (
            "edgeplane_split_brain",
            "gauge",
            "Two live clusters seen (critical; see /status split_brain).",
            u8::from(doc.split_brain.is_some()).to_string(),
        ),
        // Snapshot writes refused for space (budget or free-space reserve).
        (
            "edgeplane_snapshot_space_refused_total",
            "counter",
            "Snapshot writes refused for space (budget or free-space reserve).",
            s.snapshot_space.refused_total().to_string(),
        ),
        // Snapshot files that failed their scheduled verification.
        (
            "edgeplane_snapshot_corrupt_total",
            "counter",
            "Snapshot files found corrupt by the scrub and set aside (see /status snapshot_scrub).",
            s.snapshot_scrub.corrupt_total().to_string(),
        ),
    ];
    for (name, kind, help, value) in lines {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out.push_str(&build_info());
    let dir = s.snapshot_dir.clone();
    let host = doc.host.clone();
    let snaps = tokio::task::spawn_blocking(move || edgeplane_snapshot::list(&dir))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    out.push_str(&snapshot_ages(&snaps, &host, chrono::Utc::now()));
    out.push_str(&s.metrics_text());
    ([("content-type", "text/plain; version=0.0.4")], out)
}

/// `edgeplane_build_info`: the usual constant 1 with the build in its labels
/// (as `prometheus_build_info`, `node_exporter_build_info`).
fn build_info() -> String {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    format!(
        "# HELP edgeplane_build_info The running edgeplane build (always 1).\n\
         # TYPE edgeplane_build_info gauge\n\
         edgeplane_build_info{{version=\"{}\",revision=\"{}\",build_profile=\"{}\"}} 1\n",
        esc(env!("CARGO_PKG_VERSION")),
        esc(crate::version::COMMIT),
        esc(crate::version::BUILD_PROFILE),
    )
}

/// The age of the newest snapshot this host took and of the newest copy it
/// holds of a peer's. A family without a sample means none exists yet: alert
/// on `absent()` as well as on the age.
fn snapshot_ages(
    snaps: &[edgeplane_snapshot::SnapshotMeta],
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let age = |local: bool| {
        snaps
            .iter()
            .filter(|m| m.is_local(host) == local)
            .map(|m| m.info.created_at)
            .max()
            .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0)
    };
    let mut out = String::new();
    for (name, help, value) in [
        (
            "edgeplane_snapshot_newest_age_seconds",
            "Age of the newest snapshot this host took.",
            age(true),
        ),
        (
            "edgeplane_snapshot_peer_copy_newest_age_seconds",
            "Age of the newest copy this host holds of a peer's snapshot.",
            age(false),
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        if let Some(v) = value {
            out.push_str(&format!("{name} {v:.3}\n"));
        }
    }
    out
}

/// Only `/livez` and `/readyz`: the loopback health listener
/// (`tls.health_listen`), which has no authentication and so serves nothing
/// about the site.
pub fn health_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// Who is calling: the TCP peer and, over TLS, the host its certificate
/// names (the common name `certs init` gives each host).
#[derive(Clone, Debug)]
pub struct Caller {
    pub addr: SocketAddr,
    /// The address the connection was accepted on (this host's end).
    pub local: Option<SocketAddr>,
    pub host: Option<String>,
}

impl Caller {
    /// Whether the connection comes from this host itself: over loopback,
    /// or from the address it was accepted on (a command run on the host
    /// that reaches the agent at its `agent_url`, e.g. 10.30.1.10:7070,
    /// connects from 10.30.1.10). A TCP handshake cannot complete from
    /// another host with this host's address as its source.
    pub fn is_this_host(&self) -> bool {
        self.addr.ip().is_loopback() || self.local.is_some_and(|l| l.ip() == self.addr.ip())
    }
}

/// Why an operator action (`/recover`: a rebuild or a restore, anything
/// that rewrites the site's data) is refused, or `None` to take it.
///
/// Edge hosts stand in shops and cabinets, so a stolen host is the likeliest
/// attacker, and its certificate is as good as any peer's. Peers never need
/// to command each other, so an operator action is taken only from this host
/// itself ([`Caller::is_this_host`]) and, when the site uses TLS, presenting
/// this host's own certificate. An operator runs the command on the host that acts.
pub fn operator_refusal(caller: Option<&Caller>, me: &str, tls: bool) -> Option<String> {
    let Some(caller) = caller else {
        return Some("the caller is unknown".into());
    };
    if !caller.is_this_host() {
        return Some(format!(
            "operator actions are taken only from {me} itself, not from {}; run the command on {me}",
            caller.addr.ip()
        ));
    }
    match (&caller.host, tls) {
        (_, false) => None,
        (Some(h), true) if h == me => None,
        (Some(h), true) => Some(format!(
            "operator actions are taken only with {me}'s own certificate, not {h}'s; run the command on {me} with its config"
        )),
        (None, true) => Some("the caller presented no host certificate".into()),
    }
}

/// The host a client certificate names: its first common name.
fn certificate_host(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Serves `app` until `shutdown` resolves: over TLS with `tls` (a client
/// that presents no certificate of the site fails the handshake and gets
/// nothing), plain HTTP without. Each request carries its [`Caller`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    crl: crate::crl::CrlState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("Agent API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let crl = crl.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let caller = Caller {
                    addr: peer,
                    local: tcp.local_addr().ok(),
                    host: None,
                };
                serve_connection(tcp, with_caller(app, caller, None)).await;
                return;
            };
            let local = tcp.local_addr().ok();
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "Refused a TLS connection: {e}");
                    return;
                }
                Err(_) => return,
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            let host = cert.as_deref().and_then(|c| certificate_host(c));
            let caller = Caller {
                addr: peer,
                local,
                host,
            };
            let revocation = cert.map(|c| (crl, c));
            serve_connection(stream, with_caller(app, caller, revocation)).await;
        });
    }
}

/// `app` with the caller known to every handler: as [`Caller`], and as the
/// snapshot routes' [`edgeplane_snapshot::Uploader`]. With `revocation`
/// (the CRL in force and the caller's certificate), every request is
/// checked against the CRL as it is then: a connection opened before a
/// revocation is refused from its next request on.
fn with_caller(
    app: Router,
    caller: Caller,
    revocation: Option<(crate::crl::CrlState, Arc<Vec<u8>>)>,
) -> Router {
    let uploader = edgeplane_snapshot::Uploader(caller.host.clone());
    let who = caller.host.clone().unwrap_or_default();
    let app = app
        .layer(axum::Extension(caller))
        .layer(axum::Extension(uploader));
    let Some((crl, cert)) = revocation else {
        return app;
    };
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let revoked = crl.revokes(&cert);
            let who = who.clone();
            async move {
                if revoked {
                    tracing::warn!("Refused a request from {who}: its certificate is revoked.");
                    return (
                        StatusCode::FORBIDDEN,
                        "refused: this certificate is revoked\n".to_string(),
                    )
                        .into_response();
                }
                next.run(req).await
            }
        },
    ))
}

async fn serve_connection<I>(io: I, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .http1_only()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// A client that does not finish its TLS handshake within this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `host:port` to listen on for an agent URL.
pub fn listen_addr(agent_url: &str) -> Option<String> {
    let rest = agent_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(agent_url);
    let hostport = rest.split('/').next()?;
    Some(hostport.to_string())
}

/// How long an HTTP request to a peer agent may take.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(700);

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(addr: &str, host: Option<&str>) -> Caller {
        Caller {
            addr: addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
            local: "10.30.1.10:7070".parse().ok(),
            host: host.map(str::to_string),
        }
    }

    /// An operator's recover during an offline defrag is refused with the
    /// reason, before anything is asked of the loop.
    #[test]
    fn recover_is_refused_while_an_offline_defrag_holds_the_data_dir() {
        use super::super::operation::{Kind, OperationDoc};
        let op = |kind| OperationDoc {
            kind,
            target: "edge-1".into(),
            reason: "NOSPACE alarm: defragmenting this standby offline".into(),
            started_ms: 0,
            running_for_s: 12.0,
            journal_id: 7,
        };
        let mut doc = super::super::status::StatusDoc::default();
        assert_eq!(data_dir_held(&doc), None);
        doc.operation = Some(op(Kind::Fence));
        assert_eq!(
            data_dir_held(&doc),
            None,
            "a fence does not hold the data dir"
        );
        doc.operation = Some(op(Kind::OfflineDefrag));
        let why = data_dir_held(&doc).unwrap_or_default();
        assert!(
            why.contains("offline defragmentation holds this host's etcd data dir")
                && why.contains("run the command again"),
            "{why}"
        );
        doc.operation = Some(op(Kind::Rebuild));
        assert!(data_dir_held(&doc).is_some_and(|w| w.starts_with("a rebuild")));
    }

    #[test]
    fn operator_actions_only_from_this_host_itself() {
        let me = "edge-1";
        // Over TLS: loopback and this host's own certificate.
        assert_eq!(
            operator_refusal(Some(&caller("127.0.0.1:4000", Some(me))), me, true),
            None
        );
        assert_eq!(
            operator_refusal(Some(&caller("[::1]:4000", Some(me))), me, true),
            None
        );
        // A command on this host that reaches the agent at its agent_url
        // connects from the address the agent listens on.
        assert_eq!(
            operator_refusal(Some(&caller("10.30.1.10:51000", Some(me))), me, true),
            None
        );
        for refused in [
            caller("127.0.0.1:4000", Some("edge-2")),
            caller("127.0.0.1:4000", None),
            caller("10.0.0.2:4000", Some(me)),
            caller("10.0.0.2:4000", Some("edge-2")),
        ] {
            assert!(
                operator_refusal(Some(&refused), me, true).is_some(),
                "{refused:?}"
            );
        }
        assert!(operator_refusal(None, me, true).is_some());
        // Without TLS nobody is known by certificate: loopback only.
        assert_eq!(
            operator_refusal(Some(&caller("127.0.0.1:4000", None)), me, false),
            None
        );
        assert!(operator_refusal(Some(&caller("10.0.0.2:4000", None)), me, false).is_some());
    }

    /// A site of two hosts, a and b, both reachable on 127.0.0.1.
    fn site(dir: &std::path::Path) -> anyhow::Result<(crate::tls::SiteTls, crate::tls::SiteTls)> {
        let hosts: Vec<_> = ["a", "b"]
            .iter()
            .map(|h| crate::certs::HostSpec {
                name: h.to_string(),
                sans: vec![h.to_string(), "127.0.0.1".into()],
            })
            .collect();
        crate::certs::init(dir, "s", &hosts, false)?;
        let load = |h: &str| {
            let hd = crate::certs::host_dir(dir, h);
            crate::tls::SiteTls::from_files(
                &hd.join("ca.crt"),
                &hd.join("host.crt"),
                &hd.join("host.key"),
            )
        };
        Ok((load("a")?, load("b")?))
    }

    async fn serve_ping(tls: &crate::tls::SiteTls) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}/ping", listener.local_addr()?.port());
        let app = Router::new().route("/ping", get(|| async { "pong" }));
        let cfg = tls.server_config()?;
        let crl = tls.crl.clone();
        tokio::spawn(serve(listener, app, Some(cfg), crl, std::future::pending()));
        Ok(url)
    }

    #[tokio::test]
    async fn a_revoked_certificate_is_refused_on_open_and_new_connections_both_ways()
    -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let d = tempfile::tempdir()?;
        let (a, b) = site(d.path())?;
        let url_a = serve_ping(&a).await?;
        let url_b = serve_ping(&b).await?;
        let timeout = Duration::from_secs(10);
        let from_b = crate::tls::agent_http_client(Some(&b), timeout)?;
        let from_a = crate::tls::agent_http_client(Some(&a), timeout)?;
        assert_eq!(from_b.get(&url_a).send().await?.status(), 200);
        assert_eq!(from_a.get(&url_b).send().await?.status(), 200);

        // a takes a CRL revoking b's certificate.
        let ca = std::fs::read_to_string(d.path().join("ca.crt"))?;
        let key = std::fs::read_to_string(d.path().join("ca.key"))?;
        let b_cert = std::fs::read(crate::certs::host_dir(d.path(), "b").join("host.crt"))?;
        let b_der = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(&b_cert)?.to_vec()
        };
        let serial = crate::crl::serial_of(&b_der).ok_or_else(|| anyhow::anyhow!("serial"))?;
        assert!(
            a.crl
                .offer(crate::crl::Crl::issue(&ca, &key, 1, &[serial])?)
        );

        // b's connection, open since before the revocation: refused from
        // its next request on.
        let r = from_b.get(&url_a).send().await?;
        assert_eq!(r.status(), 403);
        assert!(r.text().await?.contains("revoked"));
        // A new connection from b: the handshake fails.
        let fresh_b = crate::tls::agent_http_client(Some(&b), timeout)?;
        assert!(fresh_b.get(&url_a).send().await.is_err());
        // a's own calls refuse b's server certificate on a new connection.
        let fresh_a = crate::tls::agent_http_client(Some(&a), timeout)?;
        assert!(fresh_a.get(&url_b).send().await.is_err());
        Ok(())
    }
}
