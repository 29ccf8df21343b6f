//! Peer uploads through the real HTTP routes, against a snapshot taken from
//! a real etcd: a peer uploads only its own snapshots (the origin in the
//! footer must be the caller's certificate's host), one at a time, a
//! limited number at once, and concurrent uploads share the snapshot budget
//! so that together they cannot pass `snapshots.max_bytes`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Etcd, fill};
use edgeplane_snapshot as snap;

/// A snapshot taken by `h1`.
async fn take(dir: &Path, tmp: &Path) -> snap::SnapshotMeta {
    std::fs::create_dir_all(dir).unwrap();
    let etcd = Etcd::start(tmp, "m1", None, false, None, None);
    let mut c = etcd.wait_ready(true).await;
    fill(&mut c, 200, 500).await;
    let opts = snap::SaveOptions::new("h1", etcd.client_url.clone());
    snap::save(&mut c, dir, &opts, &mut |_| {}).await.unwrap()
}

/// Serves the routes over `dir` with `policy`; requests carry the caller
/// named by the `x-test-caller` header (as the agent's TLS server names the
/// certificate's host), none without it.
async fn serve(
    dir: &Path,
    budget: snap::Budget,
    policy: snap::UploadPolicy,
) -> (String, Arc<snap::Uploads>) {
    let uploads = Arc::new(snap::Uploads::default());
    let app = snap::routes_with_policy(
        dir.to_path_buf(),
        snap::DEFAULT_MAX_RECEIVE_BYTES,
        budget,
        Arc::new(snap::Statvfs),
        Arc::new(snap::SpaceReport::default()),
        policy,
        uploads.clone(),
    )
    .layer(axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            let caller = req
                .headers()
                .get("x-test-caller")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            req.extensions_mut().insert(snap::Uploader(caller));
            next.run(req).await
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, uploads)
}

fn http() -> reqwest::Client {
    common::rustls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn put(url: &str, meta: &snap::SnapshotMeta, caller: Option<&str>) -> (u16, String) {
    let mut req = http()
        .put(format!("{url}/snapshots/{}", meta.name))
        .body(std::fs::read(&meta.path).unwrap());
    if let Some(c) = caller {
        req = req.header("x-test-caller", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// An upload that has sent its headers (declaring the whole file's length)
/// and part of its body, and waits: it holds its place and its reservation
/// until the returned sender drops.
async fn hold_open(
    url: &str,
    meta: &snap::SnapshotMeta,
    caller: &str,
    uploads: &snap::Uploads,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    tokio::task::JoinHandle<u16>,
) {
    let before = uploads.in_progress();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = http()
        .put(format!("{url}/snapshots/{}", meta.name))
        .header("x-test-caller", caller)
        .header("content-length", meta.file_bytes)
        .body(reqwest::Body::wrap_stream(stream));
    let task = tokio::spawn(async move {
        match req.send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    });
    tx.send(Ok(vec![0u8; 16])).await.unwrap();
    // Generous hang bound for the server to take the upload in.
    for _ in 0..200 {
        if uploads.in_progress() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(uploads.in_progress(), before + 1, "the held upload started");
    (tx, task)
}

fn snapshots(dir: &Path) -> usize {
    snap::list(dir).map(|l| l.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_uploads_only_its_own_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let theirs = tmp.path().join("theirs");
    let meta = take(&mine, tmp.path()).await;
    let policy = snap::UploadPolicy {
        own_origin_only: true,
        ..snap::UploadPolicy::default()
    };
    let (url, uploads) = serve(&theirs, snap::Budget::UNLIMITED, policy).await;

    // h2 uploading h1's snapshot: refused after verification, nothing kept.
    let (status, body) = put(&url, &meta, Some("h2")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("its origin is h1"), "{body}");
    assert_eq!(snapshots(&theirs), 0);
    // No certificate, no upload.
    let (status, body) = put(&url, &meta, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(snapshots(&theirs), 0);
    // h1's own snapshot is kept.
    let (status, body) = put(&url, &meta, Some("h1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(snapshots(&theirs), 1);
    assert_eq!(uploads.in_progress(), 0);
    // Nothing left behind by the refusals.
    let dot_files = std::fs::read_dir(&theirs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(dot_files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_limited_per_caller_and_in_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let theirs = tmp.path().join("theirs");
    let meta = take(&mine, tmp.path()).await;
    let policy = snap::UploadPolicy {
        own_origin_only: false,
        max_concurrent: 2,
    };
    let (url, uploads) = serve(&theirs, snap::Budget::UNLIMITED, policy).await;
    let (held_a, task_a) = hold_open(&url, &meta, "h1", &uploads).await;
    // The same caller again while its upload is in progress: 503.
    let (status, body) = put(&url, &meta, Some("h1")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("h1 already has an upload in progress"),
        "{body}"
    );
    let (held_b, task_b) = hold_open(&url, &meta, "h2", &uploads).await;
    // A third caller while two are in progress (the limit): 503.
    let (status, body) = put(&url, &meta, Some("h3")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("2 uploads are in progress"), "{body}");
    // Abandoned uploads give their places back.
    drop(held_a);
    drop(held_b);
    let _ = task_a.await;
    let _ = task_b.await;
    for _ in 0..200 {
        if uploads.in_progress() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(uploads.in_progress(), 0);
    let (status, body) = put(&url, &meta, Some("h3")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_cannot_pass_the_budget_together() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let theirs = tmp.path().join("theirs");
    let meta = take(&mine, tmp.path()).await;
    // Room for one copy, not two.
    let budget = snap::Budget {
        max_bytes: meta.file_bytes * 3 / 2,
        min_free_bytes: 0,
    };
    let (url, uploads) = serve(&theirs, budget, snap::UploadPolicy::default()).await;
    let (held, task) = hold_open(&url, &meta, "h2", &uploads).await;
    // Alone it would fit (0 held + one file <= budget), but the upload in
    // progress has reserved its declared length: 507.
    let (status, body) = put(&url, &meta, Some("h1")).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("snapshots.max_bytes"), "{body}");
    drop(held);
    let _ = task.await;
    for _ in 0..200 {
        if uploads.in_progress() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Once it is gone the same upload fits.
    let (status, body) = put(&url, &meta, Some("h1")).await;
    assert_eq!(status, 201, "{body}");
}
