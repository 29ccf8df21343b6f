//! Fault kinds of the campaign that need more than one signal to one host
//! (issue 16): asymmetric and partial partitions (nft rules inside the
//! isolated host's namespace, and one in the root namespace that tells the
//! hosts sharing its address apart by their sockets' group), two overlapping
//! faults, and a torn tail in a host's metrics buffer. Each kind's code lives
//! in its own function here, so that the campaign's loop only dispatches.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane_tests::LocalSite;
use edgeplane_tests::sim;
use nix::sys::signal::Signal;

use super::ISOLATED;
use crate::chaos_metrics as cm;

/// Host `i`'s agent and etcd run with group id `HOST_GID_BASE + i`
/// (`SiteSpec::host_gids`): the root namespace's hosts share one address,
/// so a rule that cuts one of them off matches its sockets' group.
pub const HOST_GID_BASE: u32 = 61_000;

/// What a kill takes down.
#[derive(Clone, Copy)]
pub enum Kill {
    /// The agent only (SIGKILL).
    Agent,
    /// Power loss: the agent, then etcd.
    Host,
}

/// Kills host `i` as `how` says and records the window in which a scrape
/// its agent answered may have died with it, acknowledged by nothing: from
/// 3 s before the kill started (a scrape in the agent's memory) to half a
/// second after it returned. Taken around the kill itself, because killing
/// an etcd under strace can take seconds, during which another host about
/// to be killed still answers scrapes.
pub fn kill(
    site: &mut LocalSite,
    i: usize,
    how: Kill,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
) {
    let name = site.hosts[i].name.clone();
    book.new_lifetime(&name);
    let before = cm::now_ms();
    tokio::task::block_in_place(|| match how {
        Kill::Agent => site.kill_agent(i),
        Kill::Host => site.kill_host(i),
    });
    kill_windows.push((name, before - 3000, cm::now_ms() + 500));
}

/// The nft table of the faults, in the isolated host's namespace.
const TABLE: &str = "edgeplane_chaos";
/// A table loaded at the start in that namespace, whose only job is to
/// switch connection tracking on before the first connection: a rule on
/// `ct direction` must know who opened a connection, which conntrack
/// guesses wrong for a connection it first sees mid-stream.
const TRACK_TABLE: &str = "edgeplane_chaos_track";

/// Whether `nft` can be run (the asymmetric and partial partitions need it).
pub fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs an nft script, in namespace `ns` or the root one.
fn nft(ns: Option<&str>, script: &str) -> anyhow::Result<()> {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft in {}: {}: {script}",
        ns.unwrap_or("the root namespace"),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Switches connection tracking on in the isolated host's namespace
/// before any connection is made (see [`TRACK_TABLE`]).
pub fn prepare(site: &LocalSite) -> anyhow::Result<()> {
    let Some((ns, _, _)) = site.isolated_net() else {
        return Ok(());
    };
    nft(
        Some(&ns),
        &format!(
            "table inet {TRACK_TABLE} {{\n chain in {{ type filter hook input priority 0; policy accept; ct state new counter; }}\n chain out {{ type filter hook output priority 0; policy accept; ct state new counter; }}\n}}\n"
        ),
    )
}

fn port(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// The root namespace's table for the partial cut of this site.
fn root_table(ns: &str) -> String {
    format!("{TABLE}_{}", ns.replace('-', "_"))
}

/// `partition_asymmetric`: by the down time (ms mod 3), one of
/// - 0: the others cannot reach the isolated host, it reaches them (its
///   packets of connections others opened are dropped, so nothing others
///   open ever completes);
/// - 1: the isolated host cannot reach the others, they reach it (its
///   packets of connections it opened are dropped);
/// - 2: partial: the leader cut off from the standby only, both ways,
///   everything else connected. The isolated host is one of the two: as the
///   standby it is cut off from the leader; as a voter it is made the
///   leader first and cut off from the standby. As the spare it has no
///   part in this, and variant 0 or 1 runs instead.
///
/// Returns the note for the fault log.
pub async fn partition_asymmetric(site: &LocalSite, down: Duration) -> anyhow::Result<String> {
    let (ns, inner, outer) = site
        .isolated_net()
        .ok_or_else(|| anyhow::anyhow!("this site has no isolated host"))?;
    let ms = down.as_millis() as u64;
    let mut peer = None;
    let mut how = String::new();
    if ms % 3 == 2 {
        let roles = site.roles().await;
        let leader = site.leader_host().await;
        match (&roles, leader) {
            (Some((_, learners)), Some(l)) if learners.contains(&ISOLATED) => {
                peer = Some(l);
                how = format!(
                    "partial: {} (standby) and {} (leader) cut off from each other only",
                    site.hosts[ISOLATED].name, site.hosts[l].name
                );
            }
            (Some((voters, learners)), _) if voters.contains(&ISOLATED) => {
                let leads = leader == Some(ISOLATED) || super::move_leader_to(site, ISOLATED).await;
                if let (true, Some(&s)) = (leads, learners.first()) {
                    peer = Some(s);
                    how = format!(
                        "partial: {} (leader{}) and {} (standby) cut off from each other only",
                        site.hosts[ISOLATED].name,
                        if leader == Some(ISOLATED) {
                            ""
                        } else {
                            ", leadership moved to it first"
                        },
                        site.hosts[s].name
                    );
                }
            }
            _ => {}
        }
    }
    let mut root_rule = false;
    match peer {
        Some(p) => {
            let h = &site.hosts[p];
            let ports: Vec<String> = [&h.peer_url, &h.client_url, &h.agent_url]
                .into_iter()
                .filter_map(|u| port(u.as_str()))
                .map(|p| p.to_string())
                .collect();
            // The isolated host's connections to the peer's ports...
            nft(
                Some(&ns),
                &format!(
                    "table inet {TABLE} {{\n chain out {{ type filter hook output priority 0; policy accept; ip daddr {outer} tcp dport {{ {} }} drop; }}\n}}\n",
                    ports.join(", ")
                ),
            )?;
            // ... and every packet the peer's processes send to it.
            let gid = HOST_GID_BASE + p as u32;
            if let Err(e) = nft(
                None,
                &format!(
                    "table inet {} {{\n chain out {{ type filter hook output priority 0; policy accept; meta skgid {gid} ip daddr {inner} drop; }}\n}}\n",
                    root_table(&ns)
                ),
            ) {
                let _ = nft(Some(&ns), &format!("delete table inet {TABLE}\n"));
                return Err(e);
            }
            root_rule = true;
        }
        None => {
            let (dir, says) = if ms.is_multiple_of(2) {
                ("reply", "the others cannot reach it, it reaches them")
            } else {
                ("original", "it cannot reach the others, they reach it")
            };
            how = format!("asymmetric: {}: {says}", site.hosts[ISOLATED].name);
            nft(
                Some(&ns),
                &format!(
                    "table inet {TABLE} {{\n chain out {{ type filter hook output priority 0; policy accept; oifname != \"lo\" ct direction {dir} drop; }}\n}}\n"
                ),
            )?;
        }
    }
    tokio::time::sleep(down).await;
    let healed = nft(Some(&ns), &format!("delete table inet {TABLE}\n"));
    let healed_root = if root_rule {
        nft(None, &format!("delete table inet {}\n", root_table(&ns)))
    } else {
        Ok(())
    };
    healed?;
    healed_root?;
    Ok(how)
}

/// `overlap_standby_stop_voter_kill`: the standby's host SIGSTOPped (agent
/// and etcd) and, at once, a voter's host SIGKILLed (the drawn host when it
/// is a voter, else the first voter): the site must promote with its
/// standby frozen. After `down`, the voter's agent is started again and the
/// standby continued. Returns the note and the instant of the kill.
pub async fn standby_stop_voter_kill(
    site: &mut LocalSite,
    roles: Option<&(Vec<usize>, Vec<usize>)>,
    drawn: usize,
    down: Duration,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
) -> anyhow::Result<(String, Instant)> {
    let (voters, learners) = roles
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the roles of the hosts are unknown"))?;
    let voter = if voters.contains(&drawn) {
        drawn
    } else {
        *voters
            .first()
            .ok_or_else(|| anyhow::anyhow!("no voter seen"))?
    };
    let standby = learners.first().copied().filter(|s| *s != voter);
    let stopped: Vec<i32> = match standby {
        Some(s) => [site.hosts[s].agent_pid(), site.hosts[s].etcd_pid()]
            .into_iter()
            .flatten()
            .collect(),
        None => Vec::new(),
    };
    for &p in &stopped {
        sim::signal(p, Signal::SIGSTOP);
    }
    let name = site.hosts[voter].name.clone();
    let at = Instant::now();
    kill(site, voter, Kill::Host, kill_windows, book);
    tokio::time::sleep(down).await;
    let started = site.start_agent(voter);
    for &p in &stopped {
        sim::signal(p, Signal::SIGCONT);
    }
    started?;
    let note = match standby {
        Some(s) => format!(
            "{} (standby) SIGSTOPped while {name} (voter) was SIGKILLed; both back after {} ms",
            site.hosts[s].name,
            down.as_millis()
        ),
        None => format!("no standby seen: only {name} (voter) SIGKILLed"),
    };
    Ok((note, at))
}

/// Every class's append log (`head`) under a buffer directory.
fn head_logs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(head_logs(&p));
        } else if p.file_name().is_some_and(|n| n == "head") {
            out.push(p);
        }
    }
    out
}

/// The torn bytes a host's agent reports, summed over its classes.
fn torn_bytes(status: &serde_json::Value) -> Option<u64> {
    let cs = status.pointer("/metrics/classes")?.as_array()?;
    Some(
        cs.iter()
            .map(|c| c["torn_bytes"].as_u64().unwrap_or(0))
            .sum(),
    )
}

/// Appends a torn write to `head`: by `partial`, the start of a record (the
/// header of the log's first frame and half its payload: a record cut off
/// mid-way), else garbage. Returns the bytes appended.
fn tear(head: &Path, partial: bool, salt: u64) -> std::io::Result<u64> {
    let data = std::fs::read(head)?;
    let torn: Vec<u8> = if partial && data.len() > 56 {
        let payload = u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize;
        let take = 56 + payload.min(data.len() - 56) / 2;
        data[..take.min(data.len())].to_vec()
    } else {
        let len = 40 + (salt % 200) as usize;
        (0..len)
            .map(|i| {
                (salt
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(i as u32 % 64)
                    >> 7) as u8
            })
            .collect()
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(head)?;
    f.write_all(&torn)?;
    f.sync_all()?;
    Ok(torn.len() as u64)
}

/// `buffer_segment_torn`: the host's agent SIGKILLed; while it is down, a
/// torn write is appended to each class's append log (the file a crash
/// interrupts: sealed segments are never written again); the agent is
/// started again after `down`. It must cut the torn tails off and report
/// them (`torn_bytes` per class in `/status`); what it had buffered is
/// checked by the samples checker like after any kill (nothing it synced
/// may be missing). Returns the note and the instant of the kill.
#[allow(clippy::too_many_arguments)]
pub async fn buffer_segment_torn(
    site: &mut LocalSite,
    target: usize,
    down: Duration,
    n: usize,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
    violations: &mut Vec<String>,
) -> anyhow::Result<(String, Instant)> {
    let name = site.hosts[target].name.clone();
    let before = match site.agent_status(target).await {
        Some(doc) => {
            book.observe(&name, &doc);
            torn_bytes(&doc).unwrap_or(0)
        }
        None => 0,
    };
    let at = Instant::now();
    kill(site, target, Kill::Agent, kill_windows, book);
    let partial = down.as_millis().is_multiple_of(2);
    let mut appended = 0u64;
    let mut logs = 0;
    for (k, head) in head_logs(&site.hosts[target].store.join("buffer"))
        .iter()
        .enumerate()
    {
        match tear(head, partial, down.as_millis() as u64 + k as u64) {
            Ok(b) => {
                appended += b;
                logs += 1;
            }
            Err(e) => violations.push(format!("fault {n}: tearing {} failed: {e}", head.display())),
        }
    }
    if logs == 0 {
        violations.push(format!(
            "fault {n}: {name} has no buffer append log to tear"
        ));
    }
    tokio::time::sleep(down).await;
    site.start_agent(target)?;
    let t = Instant::now();
    let mut reported = None;
    while t.elapsed() < Duration::from_secs(30) {
        if let Some(after) = site
            .agent_status(target)
            .await
            .as_ref()
            .and_then(torn_bytes)
        {
            reported = Some(after.saturating_sub(before));
            if after.saturating_sub(before) >= appended {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if reported.is_none_or(|r| r < appended) {
        violations.push(format!(
            "fault {n}: {name}'s agent reported {reported:?} torn bytes after its restart, {appended} were appended to its append logs"
        ));
    }
    Ok((
        format!(
            "{} appended to {logs} append logs of {name} ({appended} bytes) while its agent was down; reported torn: {} bytes",
            if partial {
                "a record cut mid-way"
            } else {
                "garbage"
            },
            reported.unwrap_or(0)
        ),
        at,
    ))
}

/// How long a host's scrub may take to find a rotten snapshot copy and
/// fetch an intact one: the campaign's `scrub_interval` (3 s) for each of
/// the few files ahead of it, and a copy from a peer.
const SCRUB_BOUND: Duration = Duration::from_secs(45);

/// A snapshot copy on `target` rots while its agent runs: 64 bytes of its
/// data region overwritten (a peer's copy when the host holds one). The
/// host's scrub must set it aside, count it in `/status`, and put an
/// intact copy (byte for byte the original) back from a peer within
/// [`SCRUB_BOUND`]. Returns the note and the instant of the damage.
pub async fn snapshot_copy_corrupt(
    site: &LocalSite,
    target: usize,
    n: usize,
    violations: &mut Vec<String>,
) -> anyhow::Result<(String, Instant)> {
    let name = site.hosts[target].name.clone();
    let dir = site.hosts[target].store.join("snapshots");
    let counts = |doc: &serde_json::Value| {
        let get = |k: &str| {
            doc.pointer(&format!("/snapshot_scrub/{k}"))
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        };
        (get("corrupt"), get("repaired"))
    };
    // The site's first snapshot is taken when the first coordinator starts:
    // wait for one to be here. Only a file another host also holds can be
    // repaired (a host's abandoned-epoch snapshot stays on it alone); of
    // those, a peer's copy first (its origin is not this host).
    let own = format!("-{name}-");
    let snapshot_names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.ends_with(".etcd.zst"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let t = Instant::now();
    let file = loop {
        let elsewhere: Vec<String> = site
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .flat_map(|(_, h)| snapshot_names(&h.store.join("snapshots")))
            .collect();
        let mut files: Vec<PathBuf> = snapshot_names(&dir)
            .into_iter()
            .filter(|f| elsewhere.contains(f))
            .map(|f| dir.join(f))
            .collect();
        files.sort_by_key(|p| p.to_string_lossy().contains(&own));
        if let Some(f) = files.into_iter().next() {
            break f;
        }
        if t.elapsed() > Duration::from_secs(30) {
            violations.push(format!(
                "fault {n}: no snapshot file that another host also holds reached {name} within 30 s"
            ));
            return Ok((format!("no snapshot file on {name}"), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let file_name = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let before = site
        .agent_status(target)
        .await
        .map(|d| counts(&d))
        .unwrap_or((0, 0));
    let bytes = std::fs::read(&file)?;
    let mut rotten = bytes.clone();
    let mid = rotten.len() / 3;
    let end = (mid + 64).min(rotten.len());
    for b in &mut rotten[mid..end] {
        *b ^= 0xa5;
    }
    let at = Instant::now();
    std::fs::write(&file, &rotten)?;
    let mut seen = before;
    let mut replaced = false;
    while at.elapsed() < SCRUB_BOUND {
        if let Some(d) = site.agent_status(target).await {
            seen = counts(&d);
        }
        replaced = std::fs::read(&file).is_ok_and(|b| b == bytes);
        if seen.0 > before.0 && seen.1 > before.1 && replaced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let took = at.elapsed();
    if seen.0 <= before.0 {
        violations.push(format!(
            "fault {n}: {name}'s scrub did not report the rotten snapshot {file_name} within {} s",
            SCRUB_BOUND.as_secs()
        ));
    } else if seen.1 <= before.1 || !replaced {
        violations.push(format!(
            "fault {n}: {name} set the rotten snapshot {file_name} aside but no intact copy is back within {} s (repaired {} -> {}, file intact again: {replaced})",
            SCRUB_BOUND.as_secs(),
            before.1,
            seen.1
        ));
    }
    Ok((
        format!(
            "64 bytes of {name}'s {} {file_name} overwritten; found corrupt and replaced from a peer in {:.1} s",
            if file_name.contains(&own) {
                "own snapshot"
            } else {
                "copy of"
            },
            took.as_secs_f64()
        ),
        at,
    ))
}

/// The campaign's `[defrag]` threshold: defragmentation never due (the
/// campaign's db stays far below it) except during the defrag fault, which
/// swaps it for [`DEFRAG_DUE`] by a SIGHUP reload of every agent.
pub const DEFRAG_NEVER: &str = "min_db_bytes = \"1GiB\"";
const DEFRAG_DUE: &str = "min_db_bytes = \"1MiB\"";

/// Rewrites `from` -> `to` in every host's config and reloads every agent
/// with SIGHUP, waiting (up to 15 s each) until its `/status` shows the
/// reload.
async fn reload_all(
    site: &mut LocalSite,
    from: &str,
    to: &str,
    n: usize,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let reloaded_at =
        |doc: Option<serde_json::Value>| doc.and_then(|d| d.pointer("/reload/at_ms")?.as_i64());
    for i in 0..site.hosts.len() {
        let path = site.hosts[i].config_path.clone();
        std::fs::write(&path, std::fs::read_to_string(&path)?.replace(from, to))?;
        let before = reloaded_at(site.agent_status(i).await);
        let Some(pid) = site.hosts[i].agent_pid() else {
            violations.push(format!(
                "fault {n}: {}'s agent is not running to reload",
                site.hosts[i].name
            ));
            continue;
        };
        sim::signal(pid, Signal::SIGHUP);
        let t = Instant::now();
        loop {
            let now = reloaded_at(site.agent_status(i).await);
            if now.is_some() && now != before {
                break;
            }
            if t.elapsed() > Duration::from_secs(15) {
                violations.push(format!(
                    "fault {n}: {}'s agent did not reload on SIGHUP within 15 s",
                    site.hosts[i].name
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The defragmentation running on any agent, as `(agent, target)`.
async fn defrag_running(site: &LocalSite) -> Option<(String, String)> {
    for i in 0..site.hosts.len() {
        if let Some(d) = site.agent_status(i).await
            && d.pointer("/operation/kind").and_then(|k| k.as_str()) == Some("defrag")
        {
            let target = d
                .pointer("/operation/target")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string();
            return Some((site.hosts[i].name.clone(), target));
        }
    }
    None
}

/// Writes `puts` (prefix, count) values of 32 KiB, deletes `delete`'s
/// prefix and compacts to that revision (physically): free pages.
async fn bulk(site: &LocalSite, puts: &[(&str, usize)], delete: &str) -> anyhow::Result<()> {
    // The voters' URLs: a client given an endpoint that refuses (the spare
    // runs no etcd) does not connect at all.
    let (voters, _) = site
        .roles()
        .await
        .ok_or_else(|| anyhow::anyhow!("no member answers the member list"))?;
    let urls: Vec<String> = voters
        .iter()
        .map(|v| site.hosts[*v].client_url.clone())
        .collect();
    let c = etcd_client::Client::connect(
        urls.clone(),
        Some(sim::certs::etcd_options_for(&urls).with_timeout(Duration::from_secs(5))),
    )
    .await?;
    let blob = "d".repeat(32 << 10);
    for (prefix, count) in puts {
        for i in 0..*count {
            let key = format!("{prefix}{i:04}");
            retried(|| {
                let mut c = c.clone();
                let (key, blob) = (key.clone(), blob.clone());
                async move { c.put(key, blob, None).await.map(drop) }
            })
            .await?;
        }
    }
    let rev = retried(|| {
        let mut c = c.clone();
        async move {
            let del = c
                .delete(
                    delete,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await?;
            Ok(del.header().map(|h| h.revision()).unwrap_or(0))
        }
    })
    .await?;
    retried(|| {
        let mut c = c.clone();
        async move {
            match c
                .compact(
                    rev,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
            {
                // An earlier try went through and its answer was lost.
                Err(e) if e.to_string().contains("compacted") => Ok(()),
                r => r.map(drop),
            }
        }
    })
    .await?;
    Ok(())
}

/// `op` again (up to 20 times, 250 ms apart) while it fails: a leader
/// change drops proposals in flight ("raft proposal dropped"), and the
/// defragmentation this fault waits for moves leadership. Every `op` here
/// is idempotent.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 20 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Whether every voter's db file is less than 30% free pages (as each
/// agent reports its own member).
async fn voters_compact(site: &LocalSite) -> bool {
    let Some((voters, _)) = site.roles().await else {
        return false;
    };
    for v in voters {
        let Some(d) = site.agent_status(v).await else {
            return false;
        };
        let size = d
            .pointer("/local/db_size")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0);
        let used = d
            .pointer("/local/db_in_use")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0);
        if size <= 0.0 || (size - used) / size >= 0.3 {
            return false;
        }
    }
    true
}

/// A link cut during a defragmentation (two overlapping faults): the
/// agents are reloaded with a defrag threshold the site is over, 40 MiB
/// written (24 of them deleted and compacted away), and the moment a coordinator's
/// defragmentation shows in `/status`, the isolated host is cut off for
/// `down` (the coordinator's Defragment RPC to it, or its own to another
/// member, is left hanging). Then the threshold goes back. Every
/// defragmentation must have ended within 90 s of the heal (its budget is
/// 60 s), besides the campaign's usual checks. Returns the note and the
/// instant of the cut.
pub async fn partition_during_defrag(
    site: &mut LocalSite,
    down: Duration,
    n: usize,
    violations: &mut Vec<String>,
) -> anyhow::Result<(String, Instant)> {
    reload_all(site, DEFRAG_NEVER, DEFRAG_DUE, n, violations).await?;
    // Live data makes the defragmentation last long enough to be seen (it
    // copies what is in use): 16 MiB kept, 24 MiB freed (60%).
    if let Err(e) = bulk(
        site,
        &[("chaos-defrag-live/", 512), ("chaos-defrag/", 768)],
        "chaos-defrag/",
    )
    .await
    {
        violations.push(format!("fault {n}: making free pages failed: {e}"));
    }
    let t = Instant::now();
    let mut running = None;
    while running.is_none() && t.elapsed() < Duration::from_secs(30) {
        running = defrag_running(site).await;
        if running.is_none() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let seen = Instant::now();
    site.set_link(false)?;
    let at = Instant::now();
    tokio::time::sleep(down).await;
    site.set_link(true)?;
    let healed = Instant::now();
    // The live data goes too, and the voters are defragmented of it (the
    // standby keeps its larger file: learners are defragmented only
    // offline, during a NOSPACE alarm), before defragmentation is never
    // due again.
    if let Err(e) = bulk(site, &[], "chaos-defrag-live/").await {
        violations.push(format!("fault {n}: deleting the live data failed: {e}"));
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) && !voters_compact(site).await {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reload_all(site, DEFRAG_DUE, DEFRAG_NEVER, n, violations).await?;
    let mut left = defrag_running(site).await;
    while left.is_some() && healed.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = defrag_running(site).await;
    }
    if let Some((agent, target)) = &left {
        violations.push(format!(
            "fault {n}: {agent}'s defragmentation of {target} still runs 90 s after the heal"
        ));
    }
    let isolated = &site.hosts[ISOLATED].name;
    let note = match running {
        Some((agent, target)) => format!(
            "{isolated} cut off {} ms after {agent}'s defragmentation of {target} showed; live data gone, voters defragmented and the threshold back {:.1} s after the heal",
            at.duration_since(seen).as_millis(),
            healed.elapsed().as_secs_f64()
        ),
        None => format!("no defragmentation showed within 30 s; {isolated} cut off anyway"),
    };
    Ok((note, at))
}

/// Why a kind of this module cannot run here, if it cannot.
pub fn missing(kind: super::Kind, root: bool) -> Option<&'static str> {
    use super::Kind;
    match kind {
        Kind::PartitionAsymmetric if !root => Some("needs root (network namespaces, nft rules)"),
        Kind::PartitionAsymmetric if !have_nft() => Some("needs nft (Debian nftables)"),
        Kind::PartitionDuringDefrag | Kind::QuorumLossOutOfBand if !root => {
            Some("needs root (network namespaces)")
        }
        Kind::PowerCut if !root => Some("needs root (FUSE mounts)"),
        Kind::PowerCut if !Path::new("/dev/fuse").exists() => Some("needs /dev/fuse"),
        _ => None,
    }
}

const FENCED_LINE: &str = "quorum_loss_policy = \"fenced\"";
const MANUAL_LINE: &str = "quorum_loss_policy = \"manual\"";

/// Rewrites every host's policy line `from` -> `to` and restarts the agents
/// of `hosts` (agent only: each adopts its running etcd) so that they run
/// it. Agents read their config at start only.
async fn switch_policy(
    site: &mut LocalSite,
    hosts: &[usize],
    from: &str,
    to: &str,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
) -> anyhow::Result<()> {
    for h in &site.hosts {
        let text = std::fs::read_to_string(&h.config_path)?;
        std::fs::write(&h.config_path, text.replace(from, to))?;
    }
    for &i in hosts {
        if let Some(doc) = site.agent_status(i).await {
            book.observe(&site.hosts[i].name, &doc);
        }
        kill(site, i, Kill::Agent, kill_windows, book);
        site.start_agent(i)?;
        let t = Instant::now();
        while site.agent_status(i).await.is_none() && t.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The host a recovery command says to run it on (`--from HOST`).
fn from_host(command: &str) -> Option<&str> {
    let mut it = command.split_whitespace();
    while let Some(w) = it.next() {
        if w == "--from" {
            return it.next();
        }
    }
    None
}

/// `quorum_loss_manual`: the site switched to policy `manual` (every agent
/// restarted on the changed config), two of the three voters SIGKILLed
/// together; the survivors must not rebuild by themselves and must offer
/// the operator's command (`/recovery/command`, what `diag` prints); the
/// campaign runs it as the operator would, on the host it names (in that
/// host's network namespace), then powers the two on after `down` and,
/// once the site is at full strength, switches it back to `fenced`.
/// Waits for the site to be whole under policy `manual`, where no host may
/// be fenced (one that was is a violation, and powered on again).
async fn whole_under_manual(
    site: &mut LocalSite,
    book: &mut cm::ShedBook,
    n: usize,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (_, fenced) =
        super::wait_full_strength(site, book, super::FULL_STRENGTH_BOUND, &[]).await?;
    for (h, _) in fenced {
        violations.push(format!(
            "fault {n}: {} was fenced under policy manual",
            site.hosts[h].name
        ));
    }
    Ok(())
}

/// Returns the note and the instant of the kill.
#[allow(clippy::too_many_arguments)]
pub async fn quorum_loss_manual(
    site: &mut LocalSite,
    roles: Option<&(Vec<usize>, Vec<usize>)>,
    drawn: usize,
    down: Duration,
    n: usize,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
    violations: &mut Vec<String>,
) -> anyhow::Result<(String, Instant)> {
    let fenced = std::fs::read_to_string(&site.hosts[0].config_path)?.contains(FENCED_LINE);
    let all: Vec<usize> = (0..site.hosts.len()).collect();
    if fenced {
        switch_policy(site, &all, FENCED_LINE, MANUAL_LINE, kill_windows, book).await?;
        // The restarted agents see the site whole again before the loss.
        whole_under_manual(site, book, n, violations).await?;
    }
    let voters = voters_now(site, roles).await;
    anyhow::ensure!(voters.len() >= 2, "fewer than two voters seen: {voters:?}");
    let first = if voters.contains(&drawn) {
        drawn
    } else {
        voters[0]
    };
    let second = voters
        .iter()
        .copied()
        .filter(|v| *v != first)
        .nth(down.as_millis() as usize % 2)
        .or_else(|| voters.iter().copied().find(|v| *v != first))
        .unwrap_or(first);
    let victims = [first, second];
    let epochs_before = super::epochs(site).await;
    let at = Instant::now();
    for &v in &victims {
        kill(site, v, Kill::Host, kill_windows, book);
    }
    let survivors: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !victims.contains(i))
        .collect();
    // The command the survivors offer.
    let mut command = None;
    while command.is_none() && at.elapsed() < Duration::from_secs(40) {
        for &s in &survivors {
            if let Some(c) = site
                .agent_status(s)
                .await
                .and_then(|d| d.pointer("/recovery/command")?.as_str().map(String::from))
            {
                command = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let epochs_waiting = super::epochs(site).await;
    let mut note = format!(
        "policy manual; {} + {} SIGKILLed",
        site.hosts[first].name, site.hosts[second].name
    );
    let rebuilt_alone = epochs_waiting
        .iter()
        .zip(&epochs_before)
        .any(|(a, b)| a.is_some() && b.is_some() && a > b);
    if rebuilt_alone {
        violations.push(format!(
            "fault {n}: policy manual rebuilt without the operator: epochs {epochs_before:?} -> {epochs_waiting:?}"
        ));
    }
    match command.as_deref().map(|c| (c, from_host(c))) {
        None => violations.push(format!(
            "fault {n}: no survivor offered a recovery command within 40 s of the quorum loss"
        )),
        Some((c, None)) => violations.push(format!(
            "fault {n}: the recovery command names no host (--from): {c}"
        )),
        Some((c, Some(h))) => match site.hosts.iter().position(|x| x.name == h) {
            None => violations.push(format!("fault {n}: the command names an unknown host: {c}")),
            Some(i) if victims.contains(&i) => {
                violations.push(format!("fault {n}: the command names a lost host: {c}"))
            }
            Some(i) => {
                let bin = site.spec.binary.clone();
                let cfg = site.hosts[i].config_path.clone();
                let mut cmd = match (site.isolated_net(), i == ISOLATED) {
                    (Some((ns, _, _)), true) => {
                        let mut c = Command::new("ip");
                        c.args(["netns", "exec", ns.as_str()]).arg(&bin);
                        c
                    }
                    _ => Command::new(&bin),
                };
                cmd.args(["recover", "--config"])
                    .arg(&cfg)
                    .args(["--from", h, "--confirm"]);
                let t = Instant::now();
                let out = tokio::task::block_in_place(|| cmd.output())?;
                if out.status.success() {
                    note.push_str(&format!(
                        "; offered `{c}`; ran `edgeplane recover --from {h} --confirm` on {h}: done in {:.1} s",
                        t.elapsed().as_secs_f64()
                    ));
                } else {
                    violations.push(format!(
                        "fault {n}: `edgeplane recover --from {h} --confirm` on {h} failed: {}{}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        },
    }
    tokio::time::sleep(down.saturating_sub(at.elapsed())).await;
    let epochs_after = super::epochs(site).await;
    for &v in &victims {
        site.start_agent(v)?;
    }
    if fenced {
        whole_under_manual(site, book, n, violations).await?;
        switch_policy(site, &all, MANUAL_LINE, FENCED_LINE, kill_windows, book).await?;
    }
    note.push_str(&format!(
        "; epochs {epochs_before:?} -> {epochs_after:?}{}",
        if fenced {
            "; back to policy fenced"
        } else {
            ""
        }
    ));
    Ok((note, at))
}

/// The voters as the site lists them now, else as seen before the fault.
async fn voters_now(site: &LocalSite, roles: Option<&(Vec<usize>, Vec<usize>)>) -> Vec<usize> {
    match site.roles().await {
        Some((v, _)) => v,
        None => roles.map(|r| r.0.clone()).unwrap_or_default(),
    }
}

/// `ROOT/fence-campaign.sh HOST`: the campaign's fence command. In band
/// ([`sim::FENCE_INBAND_SCRIPT`]: it pings the host over the site's own
/// network first, so it fails across a partition) unless
/// `ROOT/fence-out-of-band` exists; then out of band ([`sim::FENCE_SCRIPT`]:
/// as a BMC or a switched PDU on a network of its own, it reaches the host
/// whatever the site's network does).
pub const FENCE_SCRIPT: &str = "fence-campaign.sh";
const OUT_OF_BAND: &str = "fence-out-of-band";

pub fn write_fence_script(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(FENCE_SCRIPT);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# The campaign's fence: in band, or out of band while {OUT_OF_BAND} exists.\nroot={root}\nif [ -e \"$root/{OUT_OF_BAND}\" ]; then\n  exec \"$root/{oob}\" \"$1\"\nfi\nexec \"$root/{inband}\" \"$1\"\n",
            root = root.display(),
            oob = sim::FENCE_SCRIPT,
            inband = sim::FENCE_INBAND_SCRIPT,
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// Quorum lost while the isolated host is cut off, with a fence that still
/// works across the cut (issue 16: "an out-of-band one that still works";
/// the in-band fence failing across a cut is the partition kinds' case).
///
/// The link is cut and, at once, one more voter (two when the cut-off host
/// is no voter) is powered off: two of three voters are lost.
///
/// - The cut-off host is a voter: the survivors (a voter, the standby and
///   the spare: 3 of 5 votes) must fence both lost voters through the
///   out-of-band fence, the cut-off one included, and rebuild while the
///   link is still down. No rebuild within the down time is a violation:
///   the fence works, so waiting would leave the site without etcd for
///   nothing.
/// - It is no voter: the survivors are a voter and one more host, 2 of 5
///   votes (the cut-off host's is missing), so they must wait: a rebuild
///   during the cut is a violation (a minority rewriting the cluster).
///
/// Then the link heals and the powered-off hosts are powered on. Returns
/// the note, the instant of the loss and the hosts it took down (the cut-off
/// one and the powered-off ones).
#[allow(clippy::too_many_arguments)]
pub async fn quorum_loss_out_of_band(
    site: &mut LocalSite,
    roles: Option<&(Vec<usize>, Vec<usize>)>,
    drawn: usize,
    down: Duration,
    n: usize,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
    violations: &mut Vec<String>,
) -> anyhow::Result<(String, Instant, Vec<usize>)> {
    let voters = voters_now(site, roles).await;
    let cut_voter = voters.contains(&ISOLATED);
    let mut others: Vec<usize> = voters.iter().copied().filter(|v| *v != ISOLATED).collect();
    anyhow::ensure!(
        others.len() >= 2,
        "fewer than two voters besides the isolated host seen: {voters:?}"
    );
    if let Some(p) = others.iter().position(|v| *v == drawn) {
        others.swap(0, p);
    }
    let killed: Vec<usize> = others
        .into_iter()
        .take(if cut_voter { 1 } else { 2 })
        .collect();
    let lost: Vec<usize> = killed
        .iter()
        .copied()
        .chain(cut_voter.then_some(ISOLATED))
        .collect();
    let survivors: Vec<usize> = (0..site.hosts.len())
        .filter(|i| !killed.contains(i) && *i != ISOLATED)
        .collect();
    let marker = site.root.join(OUT_OF_BAND);
    std::fs::write(&marker, "")?;
    let epochs_before = super::epochs(site).await;
    let before = epochs_before.iter().flatten().copied().max().unwrap_or(0);
    let at = Instant::now();
    site.set_link(false)?;
    for &v in &killed {
        kill(site, v, Kill::Host, kill_windows, book);
    }
    let mut rebuilt_after = None;
    while at.elapsed() < down {
        if rebuilt_after.is_none() {
            let e = super::epochs(site).await;
            if survivors.iter().any(|&s| e[s].is_some_and(|e| e > before)) {
                rebuilt_after = Some(at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fenced: Vec<usize> = lost
        .iter()
        .copied()
        .filter(|&v| site.powered_off(v))
        .collect();
    let epochs_cut = super::epochs(site).await;
    std::fs::remove_file(&marker)?;
    site.set_link(true)?;
    // Each host powered off (killed, or fenced: the killed ones are
    // fenced too) is powered on once; a second start would run a second
    // agent on the same state.
    let mut off: Vec<usize> = killed.iter().chain(fenced.iter()).copied().collect();
    off.sort_unstable();
    off.dedup();
    for v in off {
        site.power_on(v)?;
    }
    let names = |hs: &[usize]| {
        hs.iter()
            .map(|&h| site.hosts[h].name.clone())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    if !cut_voter && let Some(after) = rebuilt_after {
        violations.push(format!(
            "fault {n}: quorum lost with {} (no voter) cut off and {} powered off: the survivors had 2 of 5 votes and still rebuilt, {:.1} s into the cut; epochs {epochs_before:?} -> {epochs_cut:?}",
            site.hosts[ISOLATED].name,
            names(&killed),
            after.as_secs_f64(),
        ));
    }
    if cut_voter && rebuilt_after.is_none() {
        violations.push(format!(
            "fault {n}: quorum lost ({} cut off, a voter, {} powered off) with an out-of-band fence that works across the cut, and no survivor rebuilt within {down:?}; fenced: [{}]; epochs {epochs_before:?} -> {epochs_cut:?}",
            site.hosts[ISOLATED].name,
            names(&killed),
            names(&fenced),
        ));
    }
    Ok((
        format!(
            "{} cut off ({}), {} powered off; out-of-band fence powered off [{}]; rebuilt {} into the cut; epochs {epochs_before:?} -> {epochs_cut:?}",
            site.hosts[ISOLATED].name,
            if cut_voter {
                "a voter: must rebuild"
            } else {
                "no voter: 2 of 5 votes, must wait"
            },
            names(&killed),
            names(&fenced),
            rebuilt_after.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        ),
        at,
        killed.into_iter().chain([ISOLATED]).collect(),
    ))
}

/// Every host loses power at once (issue 16, "writes not synced before a
/// crash"): each one's agent and etcd SIGKILLed, then each lazy disk drops
/// every write not fsynced since it was made ([`LocalSite::power_cut`]);
/// after `down`, all are powered on. The usual checks then find any write,
/// history entry or buffered critical sample that was acknowledged but
/// never synced. Returns the note and the instant of the cut.
pub async fn power_cut(
    site: &mut LocalSite,
    down: Duration,
    kill_windows: &mut cm::Windows,
    book: &mut cm::ShedBook,
) -> anyhow::Result<(String, Instant)> {
    let all: Vec<usize> = (0..site.hosts.len()).collect();
    let at = Instant::now();
    for &i in &all {
        kill(site, i, Kill::Host, kill_windows, book);
    }
    let said = site.power_cut(&all)?;
    tokio::time::sleep(down).await;
    for &i in &all {
        site.power_on(i)?;
    }
    Ok((
        format!(
            "all {} hosts dark for {:.1} s; {}",
            all.len(),
            down.as_secs_f64(),
            said.join("; ")
                .replace("edgeplane-lazyfs: power cut: the unsynced data of ", "")
                .replace(" byte(s) put back as they were", " B put back")
                .replace(" byte(s) cut off their ends", " B cut")
        ),
        at,
    ))
}
