//! Peer uploads against the snapshot budget and the free-space reserve,
//! through the real HTTP routes, with a fake free-space source: what does
//! not fit is refused with 507 and a reason, counted, and leaves nothing on
//! disk; what fits goes on to verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgeplane_snapshot as snap;

/// A filesystem with a fixed number of free bytes.
struct Fake(u64);

impl snap::FreeSpace for Fake {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(self.0)
    }
}

const NAME: &str = "20990101T000000.000Z-peer-r1.etcd.zst";

async fn serve(
    dir: &Path,
    budget: snap::Budget,
    free: u64,
) -> anyhow::Result<(String, Arc<snap::SpaceReport>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let report = Arc::new(snap::SpaceReport::default());
    let app = snap::routes_with_budget(
        dir.to_path_buf(),
        snap::DEFAULT_MAX_RECEIVE_BYTES,
        budget,
        Arc::new(Fake(free)),
        report.clone(),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, report))
}

fn http() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a rustls provider (the binary installs one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Files left in `dir` (a refused upload must leave none, not even its
/// temporary file).
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn an_upload_over_the_budget_or_into_the_reserve_is_refused_with_507() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("snapshots");
    // Already held: 600 bytes of another host's snapshot.
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("20980101T000000.000Z-other-r1.etcd.zst"),
        [0u8; 600],
    )?;
    let budget = snap::Budget {
        max_bytes: 1000,
        min_free_bytes: 10_000,
    };
    let (url, report) = serve(&dir, budget, 1 << 30).await?;
    let c = http()?;

    // Over the budget (600 held + 500 > 1000): refused on its declared
    // length, before a byte is written.
    let resp = c
        .put(format!("{url}/snapshots/{NAME}"))
        .body(vec![7u8; 500])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 507);
    let body = resp.text().await?;
    assert!(body.contains("snapshots.max_bytes 1000"), "{body}");
    assert_eq!(report.refused_total(), 1);
    assert_eq!(files(&dir), 1, "nothing written");

    // Streamed without a length: refused as soon as the bytes received do not fit.
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![1u8; 100]))),
    );
    let resp = c
        .put(format!("{url}/snapshots/{NAME}"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 507);
    assert_eq!(report.refused_total(), 2);
    assert_eq!(files(&dir), 1, "the partial upload was removed");

    // Within the budget: goes on to verification (this one is not a
    // snapshot, so 422), i.e. space did not refuse it.
    let resp = c
        .put(format!("{url}/snapshots/{NAME}"))
        .body(vec![7u8; 100])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 422);
    assert_eq!(report.refused_total(), 2);
    Ok(())
}

#[tokio::test]
async fn an_upload_that_would_breach_the_free_space_reserve_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let budget = snap::Budget {
        max_bytes: 0,
        min_free_bytes: 1000,
    };
    // 1200 bytes free, 1000 reserved for etcd: 300 more would leave 900.
    let (url, report) = serve(&dir, budget, 1200).await?;
    let resp = http()?
        .put(format!("{url}/snapshots/{NAME}"))
        .body(vec![7u8; 300])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 507);
    let body = resp.text().await?;
    assert!(body.contains("snapshots.min_free_bytes 1000"), "{body}");
    assert_eq!(report.refused_total(), 1);
    assert_eq!(files(&dir), 0);
    let doc = report.doc(&dir, &budget, &Fake(1200));
    assert_eq!(doc.refused, 1);
    assert!(doc.last_refusal.is_some_and(|l| l.contains("reserve")));
    Ok(())
}
