//! Against real etcd processes on loopback: save → verify → restore → read
//! back; corrupt and truncated files refused before the target is touched;
//! learners refused with a clear error; peer copies over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Etcd, fill, free_port};
use edgeplane_snapshot as snap;

fn quiet() -> impl FnMut(&snap::Progress) + Send {
    |_| {}
}

/// How many keys `fill` wrote (the `k` prefix) the cluster holds.
async fn keys_under_k(c: &mut etcd_client::Client) -> i64 {
    let opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    c.get("k", Some(opts)).await.unwrap().count()
}

async fn take(etcd: &Etcd, dir: &Path) -> snap::SnapshotMeta {
    let mut c = etcd.wait_ready(true).await;
    fill(&mut c, 300, 800).await;
    let opts = snap::SaveOptions::new("h1", etcd.client_url.clone());
    snap::save(&mut c, dir, &opts, &mut quiet()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_verify_restore_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let etcd = Etcd::start(tmp.path(), "m1", None, false, None, None);
    let mut progress_seen = 0;
    let meta = {
        let mut c = etcd.wait_ready(true).await;
        fill(&mut c, 300, 800).await;
        let opts = snap::SaveOptions::new("h1", etcd.client_url.clone());
        snap::save(&mut c, &snaps, &opts, &mut |p: &snap::Progress| {
            if p.finished {
                progress_seen += 1;
            }
        })
        .await
        .unwrap()
    };
    assert_eq!(progress_seen, 1);
    assert!(snap::valid_name(&meta.name), "{}", meta.name);
    assert!(meta.info.revision >= 301, "{:?}", meta.info);
    assert!(meta.info.compressed_bytes < meta.info.db_bytes);

    let listed = snap::list(&snaps).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], meta);
    assert!(listed[0].is_local("h1"));

    let report = snap::verify_with_etcdctl(&meta.path, &snap::etcdctl_bin(), &mut quiet()).unwrap();
    let st = report.etcdctl.unwrap();
    assert!(st.total_key >= 300, "{st:?}");
    assert!(st.revision >= meta.info.revision);

    // The data region is a plain zstd stream: `zstd -t` accepts the whole file.
    if Path::new("/usr/bin/zstd").exists() {
        let ok = std::process::Command::new("/usr/bin/zstd")
            .arg("-tq")
            .arg(&meta.path)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    drop(etcd);
    let peer_port = free_port();
    let data_dir = tmp.path().join("restored");
    let target = snap::RestoreTarget::new(
        &data_dir,
        "r1",
        format!("r1=http://127.0.0.1:{peer_port}"),
        "epoch-2",
        format!("http://127.0.0.1:{peer_port}"),
    );
    let r = snap::restore(&meta.path, &target, &mut quiet()).unwrap();
    assert_eq!(r.db_bytes, meta.info.db_bytes);
    assert!(data_dir.join("member/snap/db").exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".edgeplane-restore-")
        })
        .collect();
    assert!(leftovers.is_empty());

    let restored = Etcd::start(
        tmp.path(),
        "r1",
        Some(&format!("r1=http://127.0.0.1:{peer_port}")),
        false,
        Some(data_dir.clone()),
        Some(peer_port),
    );
    let mut c = restored.wait_ready(true).await;
    let got = c.get("k00299", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert!(kv.value_str().unwrap().starts_with("{\"i\":299,"));
    assert_eq!(keys_under_k(&mut c).await, 300);

    // A second restore into the now populated dir is refused.
    let again = snap::restore(&meta.path, &target, &mut quiet()).unwrap_err();
    assert!(
        matches!(again, snap::Error::DataDirNotEmpty { .. }),
        "{again}"
    );

    // A raw db copied out of a data dir restores with --skip-hash-check.
    drop(restored);
    let raw_copy = tmp.path().join("copied.db");
    std::fs::copy(data_dir.join("member/snap/db"), &raw_copy).unwrap();
    let p2 = free_port();
    let target2 = snap::RestoreTarget::new(
        tmp.path().join("from-raw"),
        "r2",
        format!("r2=http://127.0.0.1:{p2}"),
        "epoch-3",
        format!("http://127.0.0.1:{p2}"),
    );
    snap::restore_db_file(&raw_copy, &target2).unwrap();
    assert!(tmp.path().join("from-raw/member/snap/db").exists());
}

/// A snapshot of a stopped member's data dir (what the agent takes before
/// setting data aside): it verifies like any snapshot (etcd's trailer,
/// bbolt meta at the exact length, `etcdctl snapshot status`), restores, and
/// holds every acknowledged key. After a SIGKILL the db file lacks the
/// writes etcd had not yet committed to it (they are only in its WAL, up to
/// 100 ms of them), which is why the agent stops etcd with SIGTERM first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_members_db_file_becomes_a_verified_restorable_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let mut etcd = Etcd::start(tmp.path(), "m1", None, false, None, None);
    {
        let mut c = etcd.wait_ready(true).await;
        fill(&mut c, 300, 800).await;
    }
    let db = etcd.data_dir.join("member/snap/db");
    etcd.terminate();
    let meta = snap::save_db_file(&db, &snaps, "h1-abandoned-e0", "1", "2", 3).unwrap();
    assert_eq!(snap::list(&snaps).unwrap(), vec![meta.clone()]);
    assert!(meta.info.db_bytes <= std::fs::metadata(&db).unwrap().len());
    let report = snap::verify_with_etcdctl(&meta.path, &snap::etcdctl_bin(), &mut quiet()).unwrap();
    assert!(report.etcdctl.unwrap().total_key >= 300);

    let p = free_port();
    let data_dir = tmp.path().join("restored");
    let target = snap::RestoreTarget::new(
        &data_dir,
        "r1",
        format!("r1=http://127.0.0.1:{p}"),
        "epoch-9",
        format!("http://127.0.0.1:{p}"),
    );
    snap::restore(&meta.path, &target, &mut quiet()).unwrap();
    let restored = Etcd::start(
        tmp.path(),
        "r1",
        Some(&format!("r1=http://127.0.0.1:{p}")),
        false,
        Some(data_dir),
        Some(p),
    );
    let mut c = restored.wait_ready(true).await;
    assert_eq!(keys_under_k(&mut c).await, 300);

    // Not a database: refused, nothing written.
    let junk = tmp.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 64 * 1024]).unwrap();
    let err = snap::save_db_file(&junk, &snaps, "h1", "", "", 3).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(snap::list(&snaps).unwrap().len(), 1);
}

fn assert_refused(file: &Path, parent: &Path, what: &str) {
    let err = snap::verify(file, &mut quiet()).unwrap_err();
    assert!(err.is_corruption(), "{what}: {err}");
    // Target absent: stays absent, and no scratch directory is left behind.
    let absent = parent.join(format!("absent-{what}"));
    let t = snap::RestoreTarget::new(
        &absent,
        "x",
        "x=http://127.0.0.1:1",
        "t",
        "http://127.0.0.1:1",
    );
    let err = snap::restore(file, &t, &mut quiet()).unwrap_err();
    assert!(err.is_corruption(), "{what}: {err}");
    assert!(!absent.exists());
    // Target an empty directory: stays empty.
    let empty = parent.join(format!("empty-{what}"));
    std::fs::create_dir(&empty).unwrap();
    let t = snap::RestoreTarget::new(
        &empty,
        "x",
        "x=http://127.0.0.1:1",
        "t",
        "http://127.0.0.1:1",
    );
    let err = snap::restore(file, &t, &mut quiet()).unwrap_err();
    assert!(err.is_corruption(), "{what}: {err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let leftovers = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".edgeplane-restore-")
        })
        .count();
    assert_eq!(leftovers, 0, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(tmp.path(), "m1", None, false, None, None);
    let meta = take(&etcd, tmp.path()).await;
    drop(etcd);
    let good = std::fs::read(&meta.path).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // One flipped bit in the compressed data.
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let f = work.join("flipped.etcd.zst");
    std::fs::write(&f, &flipped).unwrap();
    assert_refused(&f, &work, "flipped");
    let msg = snap::verify(&f, &mut quiet()).unwrap_err().to_string();
    assert!(msg.contains("sha256"), "{msg}");

    // A flipped byte in the footer JSON (the recorded checksum) is refused too.
    let mut footer_flip = good.clone();
    let n = footer_flip.len();
    let pos = n - 200;
    footer_flip[pos] = footer_flip[pos].wrapping_add(1);
    let f = work.join("footer.etcd.zst");
    std::fs::write(&f, &footer_flip).unwrap();
    assert_refused(&f, &work, "footer");

    // Truncated: the second half of the file is gone.
    let f = work.join("truncated.etcd.zst");
    std::fs::write(&f, &good[..good.len() / 2]).unwrap();
    assert_refused(&f, &work, "truncated");
    let msg = snap::verify(&f, &mut quiet()).unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");

    // Truncated by only the last byte.
    let f = work.join("short.etcd.zst");
    std::fs::write(&f, &good[..good.len() - 1]).unwrap();
    assert_refused(&f, &work, "short");

    // Not a snapshot at all.
    let f = work.join("garbage.etcd.zst");
    std::fs::write(&f, vec![7u8; 10_000]).unwrap();
    assert_refused(&f, &work, "garbage");

    // The original still verifies.
    snap::verify(&meta.path, &mut quiet()).unwrap();
}

/// The backups operators already hold: a plain `etcdctl snapshot save`
/// file verifies (etcd's own hash, bbolt meta pages, etcdctl's walk) and
/// restores; one flipped byte or a missing byte is refused before the
/// target is touched, and so is a raw db copy without etcd's trailer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_etcdctl_snapshot_verifies_restores_and_is_refused_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(tmp.path(), "m1", None, false, None, None);
    let mut c = etcd.wait_ready(true).await;
    fill(&mut c, 300, 800).await;
    let db = tmp.path().join("backup.db");
    let out = std::process::Command::new(snap::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.client_url))
        .arg("snapshot")
        .arg("save")
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(c);
    drop(etcd);

    let report = snap::verify_with_etcdctl(&db, &snap::etcdctl_bin(), &mut quiet()).unwrap();
    assert_eq!(report.kind, snap::FileKind::EtcdDb);
    assert!(report.info.is_none());
    assert!(report.etcdctl.unwrap().total_key >= 300);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.contains("sha256 trailer matches")),
        "{:?}",
        report.checks
    );

    let peer_port = free_port();
    let data_dir = tmp.path().join("restored");
    let target = snap::RestoreTarget::new(
        &data_dir,
        "r1",
        format!("r1=http://127.0.0.1:{peer_port}"),
        "epoch-2",
        format!("http://127.0.0.1:{peer_port}"),
    );
    let r = snap::restore(&db, &target, &mut quiet()).unwrap();
    assert_eq!(r.db_bytes, std::fs::metadata(&db).unwrap().len() - 32);
    let restored = Etcd::start(
        tmp.path(),
        "r1",
        Some(&format!("r1=http://127.0.0.1:{peer_port}")),
        false,
        Some(data_dir.clone()),
        Some(peer_port),
    );
    let mut c = restored.wait_ready(true).await;
    assert_eq!(keys_under_k(&mut c).await, 300);
    drop(restored);

    let good = std::fs::read(&db).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // One flipped byte in the middle of the db.
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let f = work.join("flipped.db");
    std::fs::write(&f, &flipped).unwrap();
    assert_refused(&f, &work, "db-flipped");
    let msg = snap::verify(&f, &mut quiet()).unwrap_err().to_string();
    assert!(msg.contains("sha256 trailer"), "{msg}");
    // The last byte missing.
    let f = work.join("short.db");
    std::fs::write(&f, &good[..good.len() - 1]).unwrap();
    assert_refused(&f, &work, "db-short");
    // A raw db without etcd's trailer is not a backup file.
    let f = work.join("raw.db");
    std::fs::write(&f, &good[..good.len() - 32]).unwrap();
    assert_refused(&f, &work, "db-raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m1 = Etcd::start(tmp.path(), "m1", None, false, None, None);
    let mut c = m1.wait_ready(true).await;
    let lport = free_port();
    let lurl = format!("http://127.0.0.1:{lport}");
    let mut added = None;
    for _ in 0..100 {
        match c
            .member_add(
                [lurl.as_str()],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
        {
            Ok(r) => {
                added = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    added.expect("learner added");
    let initial = format!("m1={},l1={lurl}", m1.peer_url);
    let l1 = Etcd::start(tmp.path(), "l1", Some(&initial), true, None, Some(lport));
    let mut lc = l1.wait_ready(false).await;
    let opts = snap::SaveOptions::new("h2", l1.client_url.clone());
    let err = snap::save(&mut lc, tmp.path(), &opts, &mut quiet())
        .await
        .unwrap_err();
    assert!(matches!(err, snap::Error::Learner { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("learner") && msg.contains("voter"), "{msg}");
    // Nothing left behind.
    assert!(snap::list(tmp.path()).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_copies_over_http() {
    common::rustls();
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&mine).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    let etcd = Etcd::start(tmp.path(), "m1", None, false, None, None);
    let meta = take(&etcd, &mine).await;
    drop(etcd);

    // Malicious names are refused by the core and by the routes.
    for bad in ["../x", "../x.etcd.zst", ".x.etcd.zst", "a/b.etcd.zst"] {
        let err = snap::receive(&theirs, bad, &b"data"[..], 1 << 20).unwrap_err();
        assert!(matches!(err, snap::Error::BadName { .. }), "{bad}: {err}");
    }
    assert!(!tmp.path().join("x").exists());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let app = snap::routes(theirs.clone(), snap::DEFAULT_MAX_RECEIVE_BYTES);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let stored = snap::push_to_peer(&http, &url, &meta.path).await.unwrap();
    assert_eq!(stored.info, meta.info);
    assert_eq!(stored.name, meta.name);
    assert!(!stored.is_local("h2"));
    // Idempotent: pushing again answers with the copy already held.
    snap::push_to_peer(&http, &url, &meta.path).await.unwrap();
    assert_eq!(snap::list(&theirs).unwrap().len(), 1);

    // A corrupt upload is refused (422) and never becomes visible.
    let mut bad = std::fs::read(&meta.path).unwrap();
    let at = bad.len() / 3;
    bad[at] ^= 0xff;
    let bad_path = tmp.path().join("20990101T000000.000Z-evil-r1.etcd.zst");
    std::fs::write(&bad_path, &bad).unwrap();
    let err = snap::push_to_peer(&http, &url, &bad_path)
        .await
        .unwrap_err();
    assert!(
        matches!(err, snap::Error::PeerStatus { status: 422, .. }),
        "{err}"
    );
    assert_eq!(snap::list(&theirs).unwrap().len(), 1);
    let tmp_left = std::fs::read_dir(&theirs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(tmp_left, 0);

    // Traversal through the URL is refused too.
    let resp = reqwest::Client::new()
        .put(format!("{url}/snapshots/..%2Fx.etcd.zst"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Fetch back into a third directory, verified.
    let third = tmp.path().join("third");
    let fetched = snap::fetch_from_peer(&http, &url, &meta.name, &third)
        .await
        .unwrap();
    assert_eq!(fetched.info, meta.info);
    snap::verify(&fetched.path, &mut quiet()).unwrap();
    server.abort();
}
