//! The harness itself: a bare 3-member etcd cluster survives a SIGKILL, and
//! nothing is left running afterwards.

use std::time::{Duration, Instant};

use edgeplane_tests::bare::Cluster;
use edgeplane_tests::{HANG, alive, rt, wait_until};
use etcd_client::Client;

/// Retries a put until it succeeds or `HANG` passes.
async fn put_until_ok(client: &mut Client, key: &str, value: &str) -> bool {
    let deadline = Instant::now() + HANG;
    while Instant::now() < deadline {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), client.put(key, value, None)).await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Reads a key (linearizable), retrying transient errors (a leader change
/// right after a kill) until `HANG`; `None` only if the key is really absent.
async fn get(client: &mut Client, key: &str) -> Option<String> {
    let deadline = Instant::now() + HANG;
    while Instant::now() < deadline {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), client.get(key, None)).await
        {
            return r
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok())
                .map(str::to_string);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[test]
fn three_member_cluster_serves_writes_after_a_sigkill_and_leaves_nothing_behind()
-> anyhow::Result<()> {
    let rt = rt();
    let mut cluster = Cluster::start(3)?;
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3, "three etcd processes run");
    rt.block_on(async {
        let mut c = Client::connect(cluster.client_urls(), None).await?;
        assert!(
            put_until_ok(&mut c, "greeting", "hello").await,
            "the cluster accepts a write"
        );
        assert_eq!(get(&mut c, "greeting").await.as_deref(), Some("hello"));
        anyhow::Ok(())
    })?;

    cluster.members[0].kill();
    assert!(!alive(pids[0]), "the killed member is gone");
    let survivors: Vec<String> = cluster.members[1..]
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    rt.block_on(async {
        let mut c = Client::connect(survivors, None).await?;
        assert!(
            put_until_ok(&mut c, "after-kill", "still-here").await,
            "two of three still accept writes"
        );
        assert_eq!(
            get(&mut c, "after-kill").await.as_deref(),
            Some("still-here")
        );
        assert_eq!(get(&mut c, "greeting").await.as_deref(), Some("hello"));
        anyhow::Ok(())
    })?;

    drop(cluster);
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid)),
            "etcd pid {pid} left behind"
        );
    }
    Ok(())
}
