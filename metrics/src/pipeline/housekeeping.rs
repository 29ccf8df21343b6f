//! Buffer upkeep on a timer: expiry, and the fsync of an interval policy.

use super::*;

/// Periodic buffer upkeep: expire samples past `buffer.max_age` and, with
/// an interval fsync policy, sync on a timer so a quiet pipeline is durable
/// too.
pub(super) async fn run_housekeeping<S: SampleStore>(
    store: Arc<Mutex<S>>,
    sync_every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let tick = sync_every
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(30));
    let mut last_expire: Option<Instant> = None;
    loop {
        if last_expire.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            last_expire = Some(Instant::now());
            let st = store.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || lock(&st).expire(now_ms())).await
            {
                tracing::warn!(error = %e, "Expiring old samples from the metrics buffer failed.");
            }
        }
        if sync_every.is_some() {
            let st = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || lock(&st).sync()).await {
                tracing::warn!(error = %e, "Syncing the metrics buffer failed.");
            }
        }
        if !uplink::sleep_or_stop(tick, &mut stop).await {
            return;
        }
    }
}
