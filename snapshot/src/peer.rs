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
//!   bad name, 403 not the caller's own snapshot, 409 same name with other
//!   content, 413 too large, 422 corrupt, 503 too many uploads at once
//!   (with `Retry-After`), 507 no space.
//!
//! Peers only ever push the snapshots they took themselves, so with
//! [`UploadPolicy::own_origin_only`] an upload is kept only when the
//! snapshot's origin (in its verified footer) is the host that the caller's
//! certificate names ([`Uploader`]): a stolen host cannot plant snapshots
//! in another host's name. Uploads in progress are limited in number (one
//! per caller, [`UploadPolicy::max_concurrent`] in all) and count together
//! against the snapshot budget ([`Uploads`]), so concurrent uploads cannot
//! pass `snapshots.max_bytes` together.
//! - `GET /snapshots`: the directory's list as JSON ([`crate::list`]);
//!   [`list_peer`] asks for it.
//! - `GET /snapshots/{name}`: download one snapshot (for a recovery on
//!   another host, [`fetch_from_peer`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, Path as UrlPath, State};
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
    receive_file_from(dir, name, tmp, None)
}

/// [`receive_file`] that, with `origin`, keeps the file only when its
/// verified footer names that origin (a peer's own snapshot).
fn receive_file_from(
    dir: &Path,
    name: &str,
    tmp: tempfile::NamedTempFile,
    origin: Option<&str>,
) -> Result<SnapshotMeta> {
    check_name(name)?;
    // Only Edgeplane snapshots travel between peers: a plain etcd db is
    // refused here as a file without a footer.
    let report = check(tmp.path(), None, Path::new(""), &mut |_| {})?;
    let Some(info) = report.info else {
        return Err(Error::corrupt(tmp.path(), "not an Edgeplane snapshot"));
    };
    if let Some(caller) = origin
        && info.origin != caller
    {
        return Err(Error::NotOwnSnapshot {
            name: name.to_string(),
            origin: Some(info.origin.clone()),
            caller: Some(caller.to_string()),
        });
    }
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
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(err) => {
            // A peer that already holds the snapshot answers 200 from the
            // sha256 header, before it has read the body, and closes: the
            // upload can then fail writing the body (a broken pipe) with
            // the copy safely there. Its list says whether it is.
            if let Ok(list) = list_peer(http, agent_url).await
                && let Some(m) = list
                    .into_iter()
                    .find(|m| m.name == meta.name && m.info.sha256 == meta.info.sha256)
            {
                return Ok(m);
            }
            return Err(Error::Http { url, err });
        }
    };
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

/// The host that makes a request, as its TLS client certificate names it
/// (`None`: no certificate). The agent's server adds it to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploader(pub Option<String>);

/// Who may upload, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPolicy {
    /// Keep an upload only when its origin is the caller's certificate's
    /// host (an upload without an [`Uploader`] is refused). Off for a
    /// plaintext site, where nobody is known.
    pub own_origin_only: bool,
    /// Uploads in progress at once, from all callers together.
    pub max_concurrent: usize,
}

/// Uploads at once by default: a 5-host site's four peers each pushing
/// their snapshot.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;

impl Default for UploadPolicy {
    fn default() -> Self {
        UploadPolicy {
            own_origin_only: false,
            max_concurrent: DEFAULT_MAX_CONCURRENT_UPLOADS,
        }
    }
}

#[derive(Debug, Default)]
struct InFlight {
    /// Callers with an upload in progress (`None`: unnamed callers).
    callers: Vec<Option<String>>,
    /// Bytes the uploads in progress may write (each at least what it wrote).
    reserved: u64,
    /// Bytes the uploads in progress have written to their temporary files
    /// (which [`crate::space::used_bytes`] already counts).
    written: u64,
}

/// The uploads in progress on one snapshot directory: how many, from whom,
/// and how many bytes they hold or may still write.
#[derive(Debug, Default)]
pub struct Uploads {
    inner: Mutex<InFlight>,
}

/// Why an upload may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// This caller already has an upload in progress.
    Caller,
    /// `max_concurrent` uploads are in progress.
    Full { max: usize },
}

/// Whether one more upload from `caller` may start (pure).
pub fn may_start(
    in_progress: &[Option<String>],
    caller: &Option<String>,
    max: usize,
) -> Result<(), Busy> {
    if caller.is_some() && in_progress.contains(caller) {
        return Err(Busy::Caller);
    }
    if in_progress.len() >= max {
        return Err(Busy::Full { max });
    }
    Ok(())
}

/// Whether an upload may grow to `to` bytes (pure): the snapshots held
/// outside uploads in progress (`dir_used - written`), the other uploads'
/// reservations and `to` together stay within the budget.
pub fn may_reserve(
    to: u64,
    dir_used: u64,
    written: u64,
    others_reserved: u64,
    budget: &Budget,
) -> std::result::Result<(), crate::space::Refusal> {
    let held = dir_used.saturating_sub(written);
    let budget_only = Budget {
        min_free_bytes: 0,
        ..*budget
    };
    admit(
        to.saturating_add(others_reserved),
        held,
        u64::MAX,
        &budget_only,
    )
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uploads in progress now.
    pub fn in_progress(&self) -> usize {
        self.lock().callers.len()
    }

    fn start(
        self: &Arc<Self>,
        caller: Option<String>,
        max: usize,
    ) -> std::result::Result<Slot, Busy> {
        let mut g = self.lock();
        may_start(&g.callers, &caller, max)?;
        g.callers.push(caller.clone());
        Ok(Slot {
            uploads: self.clone(),
            caller,
            reserved: 0,
            written: 0,
        })
    }
}

/// One upload in progress; dropping it releases its place and its bytes.
struct Slot {
    uploads: Arc<Uploads>,
    caller: Option<String>,
    reserved: u64,
    written: u64,
}

impl Slot {
    /// Grows this upload's reservation to `to` bytes, within the budget
    /// shared with the snapshots held and the other uploads.
    fn reserve(&mut self, to: u64, dir: &Path, budget: &Budget) -> Result<()> {
        if to <= self.reserved {
            return Ok(());
        }
        let mut g = self.uploads.lock();
        if budget.max_bytes > 0 {
            let used =
                crate::space::used_bytes(dir).map_err(|e| Error::io("cannot read", dir, e))?;
            let others = g.reserved.saturating_sub(self.reserved);
            may_reserve(to, used, g.written, others, budget).map_err(|refusal| Error::NoSpace {
                what: "snapshot copy (with the uploads in progress)".to_string(),
                refusal,
            })?;
        }
        g.reserved = g.reserved - self.reserved + to;
        self.reserved = to;
        Ok(())
    }

    fn wrote(&mut self, n: u64) {
        let mut g = self.uploads.lock();
        g.written = g.written.saturating_add(n);
        self.written += n;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.uploads.lock();
        g.reserved = g.reserved.saturating_sub(self.reserved);
        g.written = g.written.saturating_sub(self.written);
        if let Some(i) = g.callers.iter().position(|c| *c == self.caller) {
            g.callers.swap_remove(i);
        }
    }
}

/// Uploads grow their reservation in steps of this when they declared no
/// length (or send more than they declared).
const RESERVE_STEP: u64 = 8 << 20;

struct RouteState {
    dir: PathBuf,
    max_bytes: u64,
    budget: Budget,
    free: Arc<dyn FreeSpace>,
    report: Arc<SpaceReport>,
    policy: UploadPolicy,
    uploads: Arc<Uploads>,
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
    routes_with_policy(
        dir,
        max_bytes,
        budget,
        free,
        report,
        UploadPolicy::default(),
        Arc::new(Uploads::default()),
    )
}

/// [`routes_with_budget`] with who may upload and how many at once
/// ([`UploadPolicy`]); `uploads` is the shared count of uploads in progress.
pub fn routes_with_policy(
    dir: PathBuf,
    max_bytes: u64,
    budget: Budget,
    free: Arc<dyn FreeSpace>,
    report: Arc<SpaceReport>,
    policy: UploadPolicy,
    uploads: Arc<Uploads>,
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
            policy,
            uploads,
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
        Error::NotOwnSnapshot { .. } => StatusCode::FORBIDDEN,
        Error::Busy { .. } => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30")],
                format!("{e}\n"),
            )
                .into_response();
        }
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
    uploader: Option<Extension<Uploader>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = uploader.and_then(|Extension(Uploader(h))| h);
    match put_inner(&s, &name, caller, &headers, body).await {
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
    caller: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(bool, SnapshotMeta)> {
    check_name(name)?;
    if s.policy.own_origin_only && caller.is_none() {
        return Err(Error::NotOwnSnapshot {
            name: name.to_string(),
            origin: None,
            caller: None,
        });
    }
    let mut slot = s
        .uploads
        .start(caller.clone(), s.policy.max_concurrent)
        .map_err(|busy| Error::Busy {
            why: match busy {
                Busy::Caller => format!(
                    "{} already has an upload in progress",
                    caller.as_deref().unwrap_or("this caller")
                ),
                Busy::Full { max } => format!("{max} uploads are in progress"),
            },
        })?;
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
        slot.reserve(len, &s.dir, &s.budget)?;
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
        if n > slot.reserved && slot.reserve(n + RESERVE_STEP, &s.dir, &s.budget).is_err() {
            slot.reserve(n, &s.dir, &s.budget)?;
        }
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
        slot.wrote(chunk.len() as u64);
    }
    f.flush()
        .await
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    drop(f);
    let (dir, name2) = (s.dir.clone(), name.to_string());
    let existed = s.dir.join(name).exists();
    let expect = s.policy.own_origin_only.then_some(caller).flatten();
    let meta = tokio::task::spawn_blocking(move || {
        receive_file_from(&dir, &name2, tmp, expect.as_deref())
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    drop(slot);
    Ok((!existed, meta))
}
