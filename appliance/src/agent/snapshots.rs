//! Periodic snapshots, taken by the coordinator only (so exactly one agent
//! per interval), from a healthy caught-up voter (a follower when there is
//! one, so the leader is not loaded; learners refuse the Snapshot RPC in
//! 3.4), then copied to every other host's agent so that losing any one host
//! loses no backup. Every agent prunes its own snapshot directory.
//!
//! "When was the last one" is read from the snapshot directory itself (it
//! holds this host's snapshots and every peer's copies), so a new
//! coordinator after a failover continues the schedule instead of starting
//! over. The wall clock gives a snapshot's age only when this agent first
//! sees it (the only clock a snapshot from another host or an earlier run
//! shares with this one), and a snapshot this agent saved itself is 0 s
//! old when it began it; from then on its age grows with the monotonic
//! clock, so a jump of this host's wall clock neither makes a snapshot due
//! early nor holds the schedule up (see [`youngest_age`]). The run happens
//! in a background task: a large database must never hold up the
//! membership loop.
//!
//! The catalog (in the state store) records which hosts hold each snapshot:
//! the coordinator adds the copies it pushed, and every agent, every 15 s,
//! records its own directory and each reachable peer's `GET /snapshots`, so
//! copies pruned anywhere leave it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::etcd_control::{Budget, EtcdControl};
use super::host::Host;
use super::plan::Decision;
use super::state::{OpKind, Outcome, State};

/// How often the catalog is brought up to date from this host's directory and the peers' lists.
const CATALOG_EVERY: Duration = Duration::from_secs(15);

/// How long a peer's snapshot list may take.
pub(super) const PEER_LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// Bookkeeping between ticks.
#[derive(Debug, Default)]
pub struct SnapshotState {
    running: Arc<AtomicBool>,
    last_prune: Option<Instant>,
    last_check: Option<Instant>,
    last_catalog: Option<Instant>,
    /// When the last scheduled snapshot was refused for space.
    refused_at: Option<Instant>,
    /// Every snapshot in the directory by name: its age when this agent
    /// first saw it, and when that was (monotonic).
    seen: HashMap<String, (Duration, Instant)>,
    /// Snapshots this agent saved, with the monotonic instant it began
    /// them: known as new whatever the wall clock says by the time the
    /// loop first lists them (the background task may end after a jump).
    taken: Arc<Mutex<Vec<(String, Instant)>>>,
}

/// How long after a refusal for space the schedule tries again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// Age of the youngest snapshot in `dir` (any origin), if any, for the
/// schedule (see [`youngest_age`]).
fn newest_age(
    dir: &std::path::Path,
    seen: &mut HashMap<String, (Duration, Instant)>,
) -> Option<Duration> {
    let list = edgeplane_snapshot::list(dir).ok()?;
    let listed: Vec<(String, chrono::DateTime<chrono::Utc>)> = list
        .into_iter()
        .map(|m| (m.name, m.info.created_at))
        .collect();
    youngest_age(seen, &listed, chrono::Utc::now(), Instant::now())
}

/// The age of the youngest of the `listed` snapshots (name, creation time
/// by its taker's wall clock). A snapshot's age is the wall clock's
/// (`now - created_at`, never below zero) the first time it is listed,
/// remembered in `seen` with the monotonic instant `mono`; from then on
/// that age plus the monotonic time since. A wall-clock jump of this host
/// therefore changes no age it already knows: 5 minutes back no longer
/// holds the schedule up for 5 minutes, 5 minutes ahead no longer makes a
/// snapshot due at once, and a snapshot stamped by a clock that was ahead
/// counts as new when it appears. Names no longer listed are forgotten.
fn youngest_age(
    seen: &mut HashMap<String, (Duration, Instant)>,
    listed: &[(String, chrono::DateTime<chrono::Utc>)],
    now: chrono::DateTime<chrono::Utc>,
    mono: Instant,
) -> Option<Duration> {
    seen.retain(|name, _| listed.iter().any(|(n, _)| n == name));
    listed
        .iter()
        .map(|(name, created_at)| {
            let (age, at) = *seen
                .entry(name.clone())
                .or_insert_with(|| ((now - *created_at).to_std().unwrap_or(Duration::ZERO), mono));
            age + mono.saturating_duration_since(at)
        })
        .min()
}

pub fn tick(cx: &mut Host, st: &mut SnapshotState) {
    let cfg = &cx.cfg.snapshots;
    if !cfg.enabled {
        return;
    }
    let dir = cx.cfg.paths.snapshot_dir.clone();
    // Every agent prunes its own directory (its snapshots and peers' copies).
    if st
        .last_prune
        .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
    {
        st.last_prune = Some(Instant::now());
        if let Err(e) = edgeplane_snapshot::prune(&dir, cfg.retain_count, cfg.retain_age) {
            tracing::warn!("Could not prune snapshots in {}: {e}", dir.display());
        }
    }
    if st.last_catalog.is_none_or(|t| t.elapsed() > CATALOG_EVERY) {
        st.last_catalog = Some(Instant::now());
        refresh_catalog(cx, dir.clone());
    }
    if !cx.is_coordinator() || cx.last_decision != Decision::Steady {
        return;
    }
    if st.running.load(Ordering::Relaxed) {
        return;
    }
    // Listing reads a footer per file: once a second is plenty.
    if st
        .last_check
        .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
    {
        return;
    }
    st.last_check = Some(Instant::now());
    if let Ok(mut taken) = st.taken.lock() {
        for (name, began) in taken.drain(..) {
            st.seen.insert(name, (Duration::ZERO, began));
        }
    }
    if newest_age(&dir, &mut st.seen).is_some_and(|age| age < cfg.interval) {
        return;
    }
    if st.refused_at.is_some_and(|t| t.elapsed() < REFUSED_RETRY) {
        return;
    }
    // Source: a caught-up follower voter, else this (leading) member.
    let source = cx
        .view
        .peers
        .iter()
        .position(|p| {
            p.caught_up == Some(true)
                && p.status
                    .as_ref()
                    .is_some_and(|s| !s.is_learner && s.leader != s.member_id)
        })
        .unwrap_or(cx.my_index);
    // Space: the new snapshot (about the size of this host's last one, or
    // for the first one the source's db file) must fit the budget and
    // leave the reserve free; otherwise it is skipped and reported, and
    // nothing is deleted to make room.
    let db_bytes = cx.view.peers[source]
        .status
        .as_ref()
        .map(|s| u64::try_from(s.db_size).unwrap_or(0))
        .unwrap_or(0);
    if let Err(why) = fits(
        &dir,
        &cx.me.name,
        db_bytes,
        &super::status::snapshot_budget(&cx.cfg),
    ) {
        st.refused_at = Some(Instant::now());
        cx.shared
            .snapshot_space
            .refused("a scheduled snapshot", &why);
        return;
    }
    st.refused_at = None;
    let endpoint = cx.view.peers[source].node.client_url.clone();
    let peers = if cfg.copy_to_peers {
        other_agents(cx)
    } else {
        Vec::new()
    };
    let running = st.running.clone();
    running.store(true, Ordering::Relaxed);
    let state = cx.state.clone();
    let origin = cx.me.name.clone();
    let tls = cx.tls.clone();
    let http = cx.peer_http.clone();
    let taken = st.taken.clone();
    let began = Instant::now();
    tokio::spawn(async move {
        if let Some(name) = take_and_copy(state, origin, endpoint, dir, peers, tls, http).await
            && let Ok(mut t) = taken.lock()
        {
            t.push((name, began));
        }
        running.store(false, Ordering::Relaxed);
    });
}

/// Whether a new snapshot of `origin` fits `budget` in `dir`: its size is
/// estimated from the newest one of the same origin; the first one of
/// this origin (nothing to go by) from the size of the db file it copies
/// (`db_bytes`: a snapshot file is at most about that, so the first one
/// can no longer overshoot the budget).
fn fits(
    dir: &std::path::Path,
    origin: &str,
    db_bytes: u64,
    budget: &edgeplane_snapshot::Budget,
) -> Result<(), edgeplane_snapshot::Refusal> {
    let estimate = edgeplane_snapshot::list(dir)
        .ok()
        .and_then(|l| {
            l.into_iter()
                .filter(|m| m.info.origin == origin)
                .max_by_key(|m| m.info.created_at)
        })
        .map(|m| m.file_bytes)
        .unwrap_or(db_bytes);
    // A directory or filesystem that cannot be measured is not refused:
    // the snapshot's own write then fails and is journalled.
    let used = edgeplane_snapshot::used_bytes(dir).unwrap_or(0);
    let free = edgeplane_snapshot::FreeSpace::free_bytes(&edgeplane_snapshot::Statvfs, dir)
        .unwrap_or(u64::MAX);
    edgeplane_snapshot::admit(estimate, used, free, budget)
}

/// `(name, agent_url)` of every other host.
pub(super) fn other_agents(cx: &Host) -> Vec<(String, String)> {
    cx.view
        .peers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cx.my_index)
        .map(|(_, p)| (p.node.name.clone(), p.node.agent_url.clone()))
        .collect()
}

/// Brings the catalog up to date in the background: this host's directory
/// as it is now (after pruning), and each reachable peer's list (a peer that
/// does not answer keeps its last-known copies).
fn refresh_catalog(cx: &Host, dir: std::path::PathBuf) {
    let state = cx.state.clone();
    let me = cx.me.name.clone();
    let peers = other_agents(cx);
    let http = cx.peer_http.clone();
    tokio::spawn(async move {
        let local = tokio::task::spawn_blocking(move || edgeplane_snapshot::list(&dir)).await;
        if let Ok(Ok(list)) = local
            && let Err(e) = state.catalog_sync_host(&me, &list)
        {
            tracing::warn!("Could not update the snapshot catalog: {e}");
        }
        for (name, url) in peers {
            let listed = tokio::time::timeout(
                PEER_LIST_TIMEOUT,
                edgeplane_snapshot::list_peer(&http, &url),
            )
            .await;
            match listed {
                Ok(Ok(list)) => {
                    if let Err(e) = state.catalog_sync_host(&name, &list) {
                        tracing::warn!("Could not update the snapshot catalog: {e}");
                    }
                }
                Ok(Err(e)) => tracing::debug!(peer = %name, "No snapshot list from {name}: {e}"),
                Err(_) => tracing::debug!(
                    peer = %name,
                    "No snapshot list from {name} within {} s",
                    PEER_LIST_TIMEOUT.as_secs()
                ),
            }
        }
    });
}

async fn take_and_copy(
    state: Arc<State>,
    origin: String,
    endpoint: String,
    dir: std::path::PathBuf,
    peers: Vec<(String, String)>,
    tls: Option<crate::tls::SiteTls>,
    http: reqwest::Client,
) -> Option<String> {
    let Ok(op) = state.begin(
        OpKind::Snapshot,
        &origin,
        &format!("scheduled snapshot from {endpoint}"),
    ) else {
        return None;
    };
    let mut client = match EtcdControl::connect(&[endpoint.as_str()], tls.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            state.close(op, Outcome::Failed, &e.to_string());
            return None;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        state.close(
            op,
            Outcome::Failed,
            &format!("could not create {}: {e}", dir.display()),
        );
        return None;
    }
    let save_opts = edgeplane_snapshot::SaveOptions::new(origin.clone(), endpoint.clone());
    let mut no_progress = |_: &edgeplane_snapshot::Progress| {};
    let save = edgeplane_snapshot::save(client.client(), &dir, &save_opts, &mut no_progress);
    let saved = match tokio::time::timeout(Budget::Snapshot.timeout(), save).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "timed out after {}s",
            Budget::Snapshot.timeout().as_secs()
        )),
    };
    let meta = match saved {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("Scheduled snapshot failed: {e}");
            state.close(op, Outcome::Failed, &e);
            return None;
        }
    };
    let mut copies = vec![origin.clone()];
    for (name, url) in &peers {
        match edgeplane_snapshot::push_to_peer(&http, url, &meta.path).await {
            Ok(_) => copies.push(name.clone()),
            Err(e) => {
                tracing::warn!(peer = %name, "Could not copy snapshot {} to {name}: {e}", meta.name)
            }
        }
    }
    let detail = format!(
        "{} revision {} ({} bytes compressed, db {} bytes, sha256 {}); copies on {}",
        meta.name,
        meta.info.revision,
        meta.file_bytes,
        meta.info.db_bytes,
        meta.info.sha256,
        copies.join(", ")
    );
    if let Err(e) = state.catalog_add_copies(&meta, &copies) {
        tracing::warn!(
            "Could not record snapshot {} in the catalog: {e}",
            meta.name
        );
    }
    tracing::info!("Snapshot taken: {detail}.");
    state.close(op, Outcome::Done, &detail);
    Some(meta.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use edgeplane_snapshot::{Budget, Refusal};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    /// A snapshot taken at true time 0, then the wall clock jumps back 5
    /// minutes: the schedule still sees it age with real time.
    #[test]
    fn a_wall_clock_jump_back_does_not_hold_the_schedule_up() {
        let mut seen = HashMap::new();
        let m0 = Instant::now();
        let listed = vec![("a".to_string(), at(0))];
        assert_eq!(
            youngest_age(&mut seen, &listed, at(0), m0),
            Some(Duration::ZERO)
        );
        // 10 s later, the wall clock reads 290 s earlier than the snapshot.
        let age = youngest_age(&mut seen, &listed, at(-290), m0 + Duration::from_secs(10));
        assert_eq!(age, Some(Duration::from_secs(10)));
        // A snapshot taken now (stamped by the clock that is behind) is the
        // youngest, although older by its stamp.
        let listed = vec![("a".to_string(), at(0)), ("b".to_string(), at(-290))];
        let age = youngest_age(&mut seen, &listed, at(-289), m0 + Duration::from_secs(11));
        assert_eq!(age, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_wall_clock_jump_ahead_makes_no_snapshot_due_early() {
        let mut seen = HashMap::new();
        let m0 = Instant::now();
        let listed = vec![("a".to_string(), at(0))];
        youngest_age(&mut seen, &listed, at(0), m0);
        let age = youngest_age(&mut seen, &listed, at(302), m0 + Duration::from_secs(2));
        assert_eq!(age, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_snapshot_from_a_clock_ahead_counts_from_when_it_is_seen() {
        let mut seen = HashMap::new();
        let m0 = Instant::now();
        // Stamped 5 minutes in this host's future: age zero when it appears,
        // then real time.
        let listed = vec![("a".to_string(), at(300))];
        assert_eq!(
            youngest_age(&mut seen, &listed, at(0), m0),
            Some(Duration::ZERO)
        );
        let age = youngest_age(&mut seen, &listed, at(20), m0 + Duration::from_secs(20));
        assert_eq!(age, Some(Duration::from_secs(20)));
    }

    #[test]
    fn the_first_listing_uses_the_wall_clock_and_pruned_names_are_forgotten() {
        let mut seen = HashMap::new();
        let m0 = Instant::now();
        let listed = vec![("a".to_string(), at(0)), ("b".to_string(), at(100))];
        assert_eq!(
            youngest_age(&mut seen, &listed, at(130), m0),
            Some(Duration::from_secs(30))
        );
        assert_eq!(youngest_age(&mut seen, &[], at(131), m0), None);
        assert!(seen.is_empty());
    }

    /// The first snapshot of a host has no previous one to estimate its
    /// size from: it is checked against the budget with the db's size
    /// (it was admitted as 0 bytes, and a large db overshot the budget).
    #[test]
    fn the_first_snapshot_is_checked_against_the_budget() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let budget = Budget {
            max_bytes: 1 << 20,
            min_free_bytes: 0,
        };
        let refused = fits(dir.path(), "h1", 8 << 20, &budget);
        assert!(
            matches!(refused, Err(Refusal::Budget { incoming, .. }) if incoming == 8 << 20),
            "{refused:?}"
        );
        assert_eq!(fits(dir.path(), "h1", 512 << 10, &budget), Ok(()));
        Ok(())
    }
}
