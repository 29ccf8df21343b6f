//! Copies between agents, so that losing any one host loses no backup.
//!
//! Protocol (HTTP on the agent's `agent_url`):
//!
//! - `PUT /snapshots/{name}`: the body is the snapshot file, byte for byte
//!   (it carries its own metadata in its footer, so no second part is
//!   needed). Optional header `x-edgeplane-snapshot-sha256` (the footer's
//!   `sha256`) lets the receiver answer at once when it already holds that
//!   snapshot. The receiver writes a dot-prefixed temporary file, verifies
//!   it fully ([`crate::verify`]), and only then renames it into place.
//!   Answers: 201 + meta JSON (stored), 200 + meta JSON (already held), 400
//!   bad name, 409 same name with other content, 413 too large, 422 corrupt.
//! - `GET /snapshots`: the directory's list as JSON ([`crate::list`]);
//!   [`list_peer`] asks for it.
//! - `GET /snapshots/{name}`: download one snapshot (for a recovery on
//!   another host, [`fetch_from_peer`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::format::{SnapshotMeta, read_meta, sync_dir, valid_name};
use crate::space::{Budget, FreeSpace, SpaceReport, Statvfs, admit};
use crate::verify::check;

/// Default cap on one received snapshot file: 16 GiB (etcd's own db limit
/// is 8 GiB, and the file is compressed).
pub const DEFAULT_MAX_RECEIVE_BYTES: u64 = 16 << 30;

/// Header carrying the sender's footer sha256.
const SHA_HEADER: &str = "x-edgeplane-snapshot-sha256";

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::BadName {
            name: name.to_string(),
        })
    }
}

fn recv_tmp(dir: &Path) -> Result<tempfile::NamedTempFile> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    tempfile::Builder::new()
        .prefix(".recv-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))
}

/// The existing snapshot `dir/name` when it has this sha256.
fn already_held(dir: &Path, name: &str, sha256: &str) -> Option<SnapshotMeta> {
    read_meta(&dir.join(name))
        .ok()
        .filter(|m| m.info.sha256 == sha256)
}

/// Receives a snapshot copy into `dir` under `name`: refuses bad names
/// (path traversal), reads at most `max_bytes`, verifies the whole file, and
/// only then makes it visible. Receiving the same snapshot twice is fine.
pub fn receive(
    dir: &Path,
    name: &str,
    mut reader: impl Read,
    max_bytes: u64,
) -> Result<SnapshotMeta> {
    check_name(name)?;
    let tmp = recv_tmp(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let n = std::io::copy(&mut (&mut reader).take(max_bytes + 1), &mut w)
            .map_err(|e| Error::io("cannot receive into", &tmp_path, e))?;
        if n > max_bytes {
            return Err(Error::TooLarge { limit: max_bytes });
        }
        w.flush()
            .map_err(|e| Error::io("cannot write", &tmp_path, e))?;
    }
    receive_file(dir, name, tmp)
}

/// The second half of [`receive`] for callers that wrote the upload to a
/// temporary file in `dir` themselves: verify, fsync, rename, fsync the directory.
pub fn receive_file(dir: &Path, name: &str, tmp: tempfile::NamedTempFile) -> Result<SnapshotMeta> {
    check_name(name)?;
    // Only Edgeplane snapshots travel between peers: a plain etcd db is
    // refused here as a file without a footer.
    let report = check(tmp.path(), None, Path::new(""), &mut |_| {})?;
    let Some(info) = report.info else {
        return Err(Error::corrupt(tmp.path(), "not an Edgeplane snapshot"));
    };
    let dest = dir.join(name);
    if let Some(m) = already_held(dir, name, &info.sha256) {
        return Ok(m);
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", tmp.path(), e))?;
    tmp.persist_noclobber(&dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists { path: dest.clone() }
        } else {
            Error::io("cannot rename into place", &dest, e.error)
        }
    })?;
    sync_dir(dir)?;
    tracing::info!(path = %dest.display(), origin = %info.origin, "Stored a verified snapshot copy from a peer.");
    read_meta(&dest)
}

/// Uploads the snapshot at `path` to the agent at `agent_url` (`PUT
/// {agent_url}/snapshots/{name}`), streaming the file. Returns the meta the
/// peer stored (after its own verification). `http` carries the timeouts and,
/// on a TLS site, the site's client certificate.
pub async fn push_to_peer(
    http: &reqwest::Client,
    agent_url: &str,
    path: &Path,
) -> Result<SnapshotMeta> {
    let meta = {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || read_meta(&p))
            .await
            .map_err(|e| Error::Task(e.to_string()))??
    };
    check_name(&meta.name)?;
    let url = format!(
        "{}/snapshots/{}",
        agent_url.trim_end_matches('/'),
        meta.name
    );
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("cannot open", path, e))?;
    let resp = http
        .put(&url)
        .header(SHA_HEADER, &meta.info.sha256)
        .header(header::CONTENT_LENGTH, meta.file_bytes)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::from(file))
        .send()
        .await
        .map_err(|err| Error::Http {
            url: url.clone(),
            err,
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::PeerStatus {
            url,
            status: status.as_u16(),
            body: body.trim().to_string(),
        });
    }
    resp.json::<SnapshotMeta>()
        .await
        .map_err(|err| Error::Http { url, err })
}

/// `GET url`, a non-2xx answer turned into [`Error::PeerStatus`].
async fn get_ok(http: &reqwest::Client, url: &str) -> Result<reqwest::Response> {
    let resp = http.get(url).send().await.map_err(|err| Error::Http {
        url: url.to_string(),
        err,
    })?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::PeerStatus {
            url: url.to_string(),
            status,
            body: body.trim().to_string(),
        });
    }
    Ok(resp)
}

/// The snapshots the agent at `agent_url` holds (`GET {agent_url}/snapshots`).
pub async fn list_peer(http: &reqwest::Client, agent_url: &str) -> Result<Vec<SnapshotMeta>> {
    let url = format!("{}/snapshots", agent_url.trim_end_matches('/'));
    let resp = get_ok(http, &url).await?;
    resp.json::<Vec<SnapshotMeta>>()
        .await
        .map_err(|err| Error::Http { url, err })
}

/// Downloads snapshot `name` from the agent at `agent_url` into `dir`,
/// verified before it becomes visible (see [`receive_file`]).
pub async fn fetch_from_peer(
    http: &reqwest::Client,
    agent_url: &str,
    name: &str,
    dir: &Path,
) -> Result<SnapshotMeta> {
    check_name(name)?;
    let url = format!("{}/snapshots/{name}", agent_url.trim_end_matches('/'));
    let mut resp = get_ok(http, &url).await?;
    let tmp = recv_tmp(dir)?;
    let mut f = tokio::fs::File::from_std(
        tmp.as_file()
            .try_clone()
            .map_err(|e| Error::io("cannot open", tmp.path(), e))?,
    );
    while let Some(chunk) = resp.chunk().await.map_err(|err| Error::Http {
        url: url.clone(),
        err,
    })? {
        f.write_all(&chunk)
            .await
            .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    }
    f.flush()
        .await
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    drop(f);
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || receive_file(&dir, &name, tmp))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

struct RouteState {
    dir: PathBuf,
    max_bytes: u64,
    budget: Budget,
    free: Arc<dyn FreeSpace>,
    report: Arc<SpaceReport>,
}

/// The peer-copy routes (see the module docs), to `.merge()` into the
/// agent's router. `dir` is the snapshot directory; uploads larger than
/// `max_bytes` are refused ([`DEFAULT_MAX_RECEIVE_BYTES`] is a sane value).
/// No space limits: see [`routes_with_budget`].
pub fn routes(dir: PathBuf, max_bytes: u64) -> Router {
    routes_with_budget(
        dir,
        max_bytes,
        Budget::UNLIMITED,
        Arc::new(Statvfs),
        Arc::new(SpaceReport::default()),
    )
}

/// [`routes`] whose uploads must also fit `budget` (all snapshots in `dir`)
/// and leave the reserve free on its filesystem (as `free` reports it):
/// refused with 507 before a byte is written when the declared length does
/// not fit, and while streaming as soon as the bytes received do not.
/// Refusals are counted in `report`.
pub fn routes_with_budget(
    dir: PathBuf,
    max_bytes: u64,
    budget: Budget,
    free: Arc<dyn FreeSpace>,
    report: Arc<SpaceReport>,
) -> Router {
    Router::new()
        .route("/snapshots", get(list_handler))
        .route("/snapshots/{name}", get(get_handler).put(put_handler))
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(RouteState {
            dir,
            max_bytes,
            budget,
            free,
            report,
        }))
}

/// How often (bytes) the free space is measured again while an upload
/// streams in: other writers (etcd) share the filesystem.
const RECHECK_EVERY: u64 = 64 << 20;

fn error_response(e: &Error) -> Response {
    let status = match e {
        Error::BadName { .. } => StatusCode::BAD_REQUEST,
        Error::Exists { .. } => StatusCode::CONFLICT,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

async fn list_handler(State(s): State<Arc<RouteState>>) -> Response {
    let dir = s.dir.clone();
    match tokio::task::spawn_blocking(move || crate::store::list(&dir)).await {
        Ok(Ok(list)) => axum::Json(list).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&Error::Task(e.to_string())),
    }
}

async fn get_handler(State(s): State<Arc<RouteState>>, UrlPath(name): UrlPath<String>) -> Response {
    if let Err(e) = check_name(&name) {
        return error_response(&e);
    }
    let path = s.dir.join(&name);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (StatusCode::NOT_FOUND, format!("no snapshot {name}\n")).into_response();
        }
        Err(e) => return error_response(&Error::io("cannot open", &path, e)),
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    // An error ends the response body (the client sees a short, failed download).
    let stream = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    if let Some(len) = len
        && let Ok(v) = len.to_string().parse()
    {
        resp.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    resp
}

async fn put_handler(
    State(s): State<Arc<RouteState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match put_inner(&s, &name, &headers, body).await {
        Ok((created, meta)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(meta)).into_response()
        }
        Err(e) => {
            match &e {
                Error::NoSpace { refusal, .. } => {
                    s.report
                        .refused(&format!("snapshot copy {name} from a peer"), refusal);
                }
                _ => tracing::warn!(error = %e, name, "Refused a snapshot copy from a peer."),
            }
            error_response(&e)
        }
    }
}

async fn put_inner(
    s: &RouteState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(bool, SnapshotMeta)> {
    check_name(name)?;
    if let Some(sha) = headers.get(SHA_HEADER).and_then(|v| v.to_str().ok())
        && let Some(m) = already_held(&s.dir, name, sha)
    {
        return Ok((false, m));
    }
    // Space: measured before a byte is written; a declared length that
    // does not fit is refused at once.
    std::fs::create_dir_all(&s.dir).map_err(|e| Error::io("cannot create", &s.dir, e))?;
    let used = crate::space::used_bytes(&s.dir).map_err(|e| Error::io("cannot read", &s.dir, e))?;
    let free = s
        .free
        .free_bytes(&s.dir)
        .map_err(|e| Error::io("cannot measure the free space of", &s.dir, e))?;
    let no_space = |refusal| Error::NoSpace {
        what: format!("snapshot copy {name}"),
        refusal,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        admit(len, used, free, &s.budget).map_err(no_space)?;
    }
    let tmp = recv_tmp(&s.dir)?;
    let mut f = tokio::fs::File::from_std(
        tmp.as_file()
            .try_clone()
            .map_err(|e| Error::io("cannot open", tmp.path(), e))?,
    );
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    let mut next_check = RECHECK_EVERY;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::io("upload aborted for", tmp.path(), std::io::Error::other(e)))?;
        n += chunk.len() as u64;
        if n > s.max_bytes {
            return Err(Error::TooLarge { limit: s.max_bytes });
        }
        // The temporary file is removed when `tmp` drops.
        admit(n, used, free, &s.budget).map_err(no_space)?;
        if n >= next_check {
            next_check = n + RECHECK_EVERY;
            let now = s
                .free
                .free_bytes(&s.dir)
                .map_err(|e| Error::io("cannot measure the free space of", &s.dir, e))?;
            let reserve_only = Budget {
                max_bytes: 0,
                ..s.budget
            };
            admit(chunk.len() as u64, 0, now, &reserve_only).map_err(no_space)?;
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    }
    f.flush()
        .await
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    drop(f);
    let (dir, name2) = (s.dir.clone(), name.to_string());
    let existed = s.dir.join(name).exists();
    let meta = tokio::task::spawn_blocking(move || receive_file(&dir, &name2, tmp))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    Ok((!existed, meta))
}
