//! The agent's HTTP API on its `agent_url`:
//!
//! - `/livez`: the agent's own loop is alive. Never depends on etcd or the
//!   network; this alone may restart the agent (systemd watchdog).
//! - `/readyz`: the local member is healthy and caught up and the agent's
//!   state is loaded. Readiness flapping never restarts anything.
//! - `/status`: this host's view of the site as JSON (diagnostics and peers).
//! - `/metrics`: the agent's own metrics in Prometheus text format.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::{Shared, recovery_plan};

pub fn router(
    shared: Arc<Shared>,
    snapshot_dir: std::path::PathBuf,
    budget: edgeplane_snapshot::Budget,
) -> Router {
    // Peer snapshot copies: GET /snapshots, GET|PUT /snapshots/{name},
    // within the host's snapshot budget and free-space reserve.
    let snapshots = edgeplane_snapshot::routes_with_budget(
        snapshot_dir,
        edgeplane_snapshot::DEFAULT_MAX_RECEIVE_BYTES,
        budget,
        Arc::new(edgeplane_snapshot::Statvfs),
        shared.snapshot_space.clone(),
    );
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/recover", post(recover))
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

/// `POST /recover` with `{"confirm": true}` (and optionally `"snapshot":
/// "/abs/path"`): asks this host to rebuild the cluster from its data or
/// from that snapshot file. The loop refuses unless quorum is really lost.
async fn recover(
    State(s): State<Arc<Shared>>,
    body: Result<
        axum::Json<super::recover::RecoverRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> impl IntoResponse {
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

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let doc = s.status();
    let mut out = String::new();
    let role = |r: &str| if doc.role == r { 1 } else { 0 };
    let lines: [(&str, &str, String); 10] = [
        (
            "edgeplane_reconcile_age_seconds",
            "gauge",
            format!("{:.3}", s.loop_age().as_secs_f64()),
        ),
        (
            "edgeplane_queue_depth",
            "gauge",
            doc.progress.queue_depth.to_string(),
        ),
        ("edgeplane_ready", "gauge", u8::from(doc.ready).to_string()),
        (
            "edgeplane_coordinator",
            "gauge",
            u8::from(doc.coordinator).to_string(),
        ),
        (
            "edgeplane_promotions_total",
            "counter",
            doc.journal.promotions.to_string(),
        ),
        (
            "edgeplane_member_removals_total",
            "counter",
            doc.journal.removals.to_string(),
        ),
        (
            "edgeplane_etcd_restarts_total",
            "counter",
            doc.etcd.restarts.to_string(),
        ),
        ("edgeplane_role_voter", "gauge", role("voter").to_string()),
        // Critical: two live clusters (see /status split_brain).
        (
            "edgeplane_split_brain",
            "gauge",
            u8::from(doc.split_brain.is_some()).to_string(),
        ),
        // Snapshot writes refused for space (budget or free-space reserve).
        (
            "edgeplane_snapshot_space_refused_total",
            "counter",
            s.snapshot_space.refused_total().to_string(),
        ),
    ];
    for (name, kind, value) in lines {
        out.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
    }
    out.push_str(&s.metrics_text());
    ([("content-type", "text/plain; version=0.0.4")], out)
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

/// Serves `app` until `shutdown` resolves: over TLS with `tls` (a client
/// that presents no certificate of the site fails the handshake and gets
/// nothing), plain HTTP without.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
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
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "Refused a TLS connection: {e}");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
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
