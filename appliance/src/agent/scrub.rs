//! The snapshot scrub: every snapshot file on this host (its own and its
//! copies of peers') is verified again in full every
//! `snapshots.scrub_interval`, and once soon after the agent starts, one
//! file at a time in the background. A file that rotted on disk is set
//! aside (`edgeplane_snapshot::scrub_file`) and replaced by an intact copy
//! of the same snapshot from a peer that holds one, so the site keeps as
//! many good backups as it had; until then it is named in `/status`
//! (`snapshot_scrub.unrepaired`) and `diag`.
//!
//! Which file is next is [`next_to_scrub`], a pure function of the names
//! and when each was last verified.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_snapshot::{ScrubReport, Scrubbed};

use super::host::Host;
use super::snapshots::PEER_LIST_TIMEOUT;

/// How often the directory is listed to pick the next file.
const PICK_EVERY: Duration = Duration::from_secs(1);

/// How often a corrupt file no peer could replace yet is asked for again.
const REPAIR_RETRY: Duration = Duration::from_secs(30);

/// Bookkeeping between ticks: when each file was last verified intact
/// (monotonic; shared with the background task that verifies).
#[derive(Debug, Default)]
pub struct ScrubState {
    running: Arc<AtomicBool>,
    last_pick: Option<Instant>,
    last_repair: Option<Instant>,
    verified: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The file to verify next, if any is due: one never verified by this
/// agent first (in name order), else the one verified longest ago, once
/// that is at least `interval` ago.
pub fn next_to_scrub(
    names: &[String],
    verified: &HashMap<String, Instant>,
    now: Instant,
    interval: Duration,
) -> Option<String> {
    if let Some(n) = names.iter().find(|n| !verified.contains_key(*n)) {
        return Some(n.clone());
    }
    names
        .iter()
        .filter_map(|n| verified.get(n).map(|t| (t, n)))
        .filter(|(t, _)| now.saturating_duration_since(**t) >= interval)
        .min_by_key(|(t, _)| **t)
        .map(|(_, n)| n.clone())
}

/// One step of the scrub: starts verifying the next due file in the
/// background unless a verification is still running.
pub fn tick(cx: &Host, st: &mut ScrubState) {
    let cfg = &cx.cfg.snapshots;
    if !cfg.enabled || st.running.load(Ordering::Relaxed) {
        return;
    }
    if st.last_pick.is_some_and(|t| t.elapsed() < PICK_EVERY) {
        return;
    }
    st.last_pick = Some(Instant::now());
    let dir = cx.cfg.paths.snapshot_dir.clone();
    let names = match edgeplane_snapshot::file_names(&dir) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!("Could not list {} for the scrub: {e}", dir.display());
            return;
        }
    };
    let next = {
        let Ok(mut verified) = st.verified.lock() else {
            return;
        };
        verified.retain(|n, _| names.contains(n));
        next_to_scrub(&names, &verified, Instant::now(), cfg.scrub_interval)
    };
    let report = cx.shared.snapshot_scrub.clone();
    let peers = super::snapshots::other_agents(cx);
    let http = cx.peer_http.clone();
    let running = st.running.clone();
    let unrepaired = report.unrepaired();
    if !unrepaired.is_empty() && st.last_repair.is_none_or(|t| t.elapsed() >= REPAIR_RETRY) {
        st.last_repair = Some(Instant::now());
        running.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            for name in unrepaired {
                replace_from_peer(&http, &peers, &dir, &name, &report).await;
            }
            running.store(false, Ordering::Relaxed);
        });
        return;
    }
    let Some(name) = next else {
        return;
    };
    running.store(true, Ordering::Relaxed);
    let verified = st.verified.clone();
    tokio::spawn(async move {
        let outcome = {
            let (dir, name) = (dir.clone(), name.clone());
            tokio::task::spawn_blocking(move || edgeplane_snapshot::scrub_file(&dir, &name)).await
        };
        // Whether the file in place now counts as checked: intact, or a
        // check that could not run (a read error: tried again after an
        // interval, not every second).
        let checked = match outcome {
            Ok(Ok(Scrubbed::Intact)) => {
                report.intact();
                true
            }
            Ok(Ok(Scrubbed::Gone)) => false,
            Ok(Ok(Scrubbed::Corrupt { why, .. })) => {
                report.corrupt(&name, &why);
                replace_from_peer(&http, &peers, &dir, &name, &report).await
            }
            Ok(Err(e)) => {
                tracing::warn!("Could not verify snapshot {name}: {e}");
                true
            }
            Err(e) => {
                tracing::warn!("The verification of snapshot {name} failed: {e}");
                true
            }
        };
        if checked && let Ok(mut v) = verified.lock() {
            v.insert(name, Instant::now());
        }
        running.store(false, Ordering::Relaxed);
    });
}

/// Fetches an intact copy of `name` from the first peer listing it (the
/// copy is verified on receipt); `true` when one is in place.
async fn replace_from_peer(
    http: &reqwest::Client,
    peers: &[(String, String)],
    dir: &std::path::Path,
    name: &str,
    report: &ScrubReport,
) -> bool {
    let mut listed_anywhere = false;
    let mut asked = 0;
    for (peer, url) in peers {
        let listed =
            tokio::time::timeout(PEER_LIST_TIMEOUT, edgeplane_snapshot::list_peer(http, url)).await;
        let Ok(Ok(list)) = listed else {
            continue;
        };
        asked += 1;
        if !list.iter().any(|m| m.name == name) {
            continue;
        }
        listed_anywhere = true;
        match edgeplane_snapshot::fetch_from_peer(http, url, name, dir).await {
            Ok(_) => {
                report.repaired(name);
                tracing::warn!(
                    peer = %peer,
                    "Replaced the corrupt snapshot {name} with {peer}'s intact copy."
                );
                return true;
            }
            Err(e) => tracing::warn!(peer = %peer, "Could not fetch {name} from {peer}: {e}"),
        }
    }
    // A name this host already holds again (a peer pushed it meanwhile)
    // needs nothing more.
    if dir.join(name).exists() {
        report.repaired(name);
        return true;
    }
    if asked == peers.len() && !listed_anywhere {
        // Every peer answered and none holds it (pruned everywhere, or
        // this host held the only copy): nothing will replace it.
        tracing::warn!(
            "No peer holds snapshot {name} any more; it is not replaced (the next scheduled snapshot is copied here as usual)."
        );
        report.forget(name);
    } else {
        tracing::warn!(
            "No intact copy of snapshot {name} could be fetched yet; trying again in {} s.",
            REPAIR_RETRY.as_secs()
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unverified_files_go_first_then_the_oldest_due_one() {
        let t0 = Instant::now();
        let h = Duration::from_secs(3600);
        let all = names(&["a", "b", "c"]);
        let mut v = HashMap::new();
        assert_eq!(next_to_scrub(&all, &v, t0, h).as_deref(), Some("a"));
        v.insert("a".to_string(), t0);
        v.insert("c".to_string(), t0 + Duration::from_secs(10));
        assert_eq!(next_to_scrub(&all, &v, t0, h).as_deref(), Some("b"));
        v.insert("b".to_string(), t0 + Duration::from_secs(5));
        assert_eq!(next_to_scrub(&all, &v, t0 + h, h).as_deref(), Some("a"));
        assert_eq!(
            next_to_scrub(&all, &v, t0 + Duration::from_secs(60), h),
            None
        );
    }

    proptest! {
        /// Whatever the history: the pick is a listed file, and a file
        /// verified less than an interval ago is never picked again, so
        /// the scrub's cost is bounded by one pass per interval.
        #[test]
        fn the_pick_is_listed_and_never_a_recently_verified_file(
            listed in proptest::collection::btree_set(0u8..8, 0..8),
            ages in proptest::collection::btree_map(0u8..10, 0u64..200, 0..10),
            interval in 1u64..150,
        ) {
            let now = Instant::now() + Duration::from_secs(1000);
            let all: Vec<String> = listed.iter().map(|i| format!("f{i}")).collect();
            let v: HashMap<String, Instant> = ages
                .iter()
                .map(|(i, age)| (format!("f{i}"), now - Duration::from_secs(*age)))
                .collect();
            let pick = next_to_scrub(&all, &v, now, Duration::from_secs(interval));
            if let Some(p) = &pick {
                prop_assert!(all.contains(p));
                if let Some(t) = v.get(p) {
                    prop_assert!(now.duration_since(*t) >= Duration::from_secs(interval));
                }
            }
            let due = all.iter().any(|n| {
                v.get(n).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(interval))
            });
            prop_assert_eq!(pick.is_some(), due);
        }
    }
}
