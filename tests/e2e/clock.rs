//! Wall-clock jumps seen by one agent (issue 16): libfaketime preloaded
//! into the agents (`SiteSpec::faketime`), one agent's clock moved by ±5
//! minutes while it runs; the machine's clock is never touched.
//!
//! - The snapshot schedule keeps its interval on the coordinator whose
//!   clock jumps: back 5 minutes, the next snapshot still comes one
//!   interval after the last; ahead 5 minutes, no snapshot is taken early;
//!   back to the true time, the schedule goes on (no snapshot "from the
//!   future" holds it up).
//! - No jump, on the coordinator or on another voter, counts as a dead
//!   host: the member list (ids and roles) never changes and every agent
//!   keeps running.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use edgeplane_tests::{HANG, LocalSite, SiteSpec, edgeplane_bin, rt, sim};

/// The snapshot interval of the site.
const INTERVAL: Duration = Duration::from_secs(10);

fn snapshot_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n.ends_with(".etcd.zst"))
                .collect()
        })
        .unwrap_or_default()
}

/// Watches the site while a test waits: the member list must stay `ids`
/// and every agent must keep running.
struct Guard {
    ids: Vec<(u64, bool)>,
    changes: Vec<String>,
}

impl Guard {
    async fn check(&mut self, site: &mut LocalSite, when: &str) {
        if let Some(now) = site.member_ids().await
            && now != self.ids
        {
            self.changes
                .push(format!("{when}: members {:?} -> {now:?}", self.ids));
            self.ids = now;
        }
        for i in 0..site.hosts.len() {
            if site.hosts[i].agent_pid().is_none() {
                self.changes.push(format!(
                    "{when}: the agent of {} exited",
                    site.hosts[i].name
                ));
            }
        }
    }

    /// Waits up to `bound` for a snapshot on `dir` not in `known`; checks the
    /// site every half second meanwhile. Returns the new name and when.
    async fn new_snapshot(
        &mut self,
        site: &mut LocalSite,
        dir: &Path,
        known: &BTreeSet<String>,
        bound: Duration,
        when: &str,
    ) -> Option<(String, Duration)> {
        let t0 = Instant::now();
        while t0.elapsed() < bound {
            if let Some(n) = snapshot_names(dir).difference(known).next() {
                return Some((n.clone(), t0.elapsed()));
            }
            self.check(site, when).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }
}

#[test]
fn wall_clock_jumps_keep_the_snapshot_schedule_and_never_count_as_a_dead_host() -> anyhow::Result<()>
{
    if sim::clock::faketime_lib().is_none() {
        edgeplane_tests::skip("libfaketime is not installed (Debian package libfaketime)");
        return Ok(());
    }
    rt().block_on(async {
        let mut spec = SiteSpec::new(4, 3, edgeplane_bin());
        spec.faketime = true;
        spec.extra_toml.push_str(&format!(
            "\n[snapshots]\ninterval = \"{}s\"\n",
            INTERVAL.as_secs()
        ));
        let mut site = LocalSite::create(spec, false)?;
        for i in 0..4 {
            site.start_agent(i)?;
        }
        // Full strength, a coordinator, and its first snapshot.
        let t0 = Instant::now();
        let (coord, ids) = loop {
            let ids = site.member_ids().await;
            let mut coord = None;
            for i in 0..4 {
                if site
                    .agent_status(i)
                    .await
                    .is_some_and(|d| d["coordinator"] == true)
                {
                    coord = Some(i);
                }
            }
            if let (Some(ids), Some(c)) = (ids, coord)
                && ids.len() == 4
                && ids.iter().filter(|m| m.1).count() == 1
                && !snapshot_names(&site.hosts[c].dir.join("snapshots")).is_empty()
            {
                break (c, ids);
            }
            anyhow::ensure!(
                t0.elapsed() < HANG,
                "no full strength with a coordinator and a snapshot (logs in {})",
                site.root.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let name = site.hosts[coord].name.clone();
        let dir = site.hosts[coord].dir.join("snapshots");
        let mut guard = Guard {
            ids,
            changes: Vec::new(),
        };
        // Start right after a fresh snapshot, so "one interval" is measured
        // from a known moment.
        let known = snapshot_names(&dir);
        guard
            .new_snapshot(&mut site, &dir, &known, HANG, "before the jumps")
            .await
            .ok_or_else(|| anyhow::anyhow!("no scheduled snapshot on {name}"))?;

        // 1. Back 5 minutes: the next snapshot still one interval after the last.
        let known = snapshot_names(&dir);
        site.jump_clock(coord, -300)?;
        eprintln!("clock: {name} (coordinator) jumped back 5 minutes");
        let back = guard
            .new_snapshot(&mut site, &dir, &known, INTERVAL * 3, "clock 5 min behind")
            .await;
        eprintln!("clock: next snapshot after jumping back: {back:?}");

        // 2. Ahead 5 minutes, right after a snapshot: none taken early.
        let known = snapshot_names(&dir);
        site.jump_clock(coord, 300)?;
        eprintln!("clock: {name} (coordinator) jumped ahead 5 minutes");
        let early = guard
            .new_snapshot(&mut site, &dir, &known, INTERVAL / 2, "clock 5 min ahead")
            .await;
        eprintln!("clock: snapshot within half an interval of jumping ahead: {early:?}");

        // 3. Back to the true time: the schedule goes on.
        tokio::time::sleep(INTERVAL).await;
        let known = snapshot_names(&dir);
        site.jump_clock(coord, 0)?;
        eprintln!("clock: {name} (coordinator) back to the true time");
        let again = guard
            .new_snapshot(&mut site, &dir, &known, INTERVAL * 3, "clock back to true time")
            .await;
        eprintln!("clock: next snapshot after the true time: {again:?}");

        // 4. Another voter's clock, ahead then behind, for longer than the
        // failure detection and the quorum-loss window: nobody is removed.
        let (voters, _) = site
            .roles()
            .await
            .ok_or_else(|| anyhow::anyhow!("no member list"))?;
        if let Some(&v) = voters.iter().find(|&&v| v != coord) {
            let other = site.hosts[v].name.clone();
            for offset in [300, -300, 0] {
                site.jump_clock(v, offset)?;
                let when = format!("{other}'s clock at {offset:+} s");
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    guard.check(&mut site, &when).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        guard.check(&mut site, "at the end").await;

        let logs = site.root.display().to_string();
        assert!(
            guard.changes.is_empty(),
            "a wall-clock jump changed the site (logs in {logs}): {:?}",
            guard.changes
        );
        assert!(
            back.is_some(),
            "with its clock 5 minutes behind, the coordinator {name} took no snapshot within 3 intervals of {INTERVAL:?} (logs in {logs})"
        );
        assert!(
            early.is_none(),
            "with its clock 5 minutes ahead, the coordinator {name} took a snapshot early: {early:?} (logs in {logs})"
        );
        assert!(
            again.is_some(),
            "back at the true time, the coordinator {name} took no snapshot within 3 intervals of {INTERVAL:?} (logs in {logs})"
        );
        Ok(())
    })
}
