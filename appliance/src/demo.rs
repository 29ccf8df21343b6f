//! `edgeplane demo` and `edgeplane bench failover`: a loopback site of real
//! agents and real etcd, a voter host killed, and what happens next,
//! measured from outside the site (the way a client sees it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::DemoArgs;
use crate::sim::{LocalSite, SiteSpec, Writer};

/// One kill-and-heal cycle, times in seconds after the SIGKILL (from the
/// moment the host's agent and etcd are both gone). The times of the member
/// list and health are when a poll saw them: at most a poll late.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cycle {
    pub killed_host: String,
    pub killed_was_leader: bool,
    /// Writable again: the acknowledgement of the first put *sent* after the
    /// kill (a put sent before it and answered after it does not count).
    pub writable_s: Option<f64>,
    /// The dead member left the member list.
    pub removed_s: Option<f64>,
    /// The standby became a voter.
    pub promoted_s: Option<f64>,
    /// Configured voters, all healthy.
    pub full_strength_s: Option<f64>,
    /// After the host restarted: it is the standby again (seconds after its restart).
    pub rejoined_s: Option<f64>,
    /// Puts sent after the kill and acknowledged before the killed host was
    /// the standby again: the writes of this cycle a loss check is about.
    pub acked_after_kill: usize,
}

/// The name and version of the demo's `--json` record.
pub const DEMO_SCHEMA: &str = "edgeplane.demo/1";

/// The demo's record (`--json`).
#[derive(Debug, Serialize)]
pub struct DemoRecord {
    /// [`DEMO_SCHEMA`]: the record's name and version, as every `--json` output.
    pub schema: &'static str,
    pub hosts: usize,
    pub voters: usize,
    pub bootstrap_s: f64,
    pub cycle: Cycle,
    pub acked_writes: usize,
    /// Of `acked_writes`, lost: read back after the cycle (0 means something
    /// only with `cycle.acked_after_kill` > 0).
    pub acked_writes_lost: usize,
    pub promotions: u64,
    /// The region link: samples scraped while it was cut, and how many of them
    /// are missing from the region's Prometheus after it came back.
    pub outage_s: f64,
    pub outage_samples: usize,
    pub outage_samples_missing: usize,
    /// Every sample from the outage carries its scrape time, not its send time.
    pub outage_timestamps_preserved: bool,
    pub ok: bool,
}

/// Prints a narration line unless `quiet`.
pub struct Narrator {
    pub quiet: bool,
}

impl Narrator {
    fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", line.as_ref());
        }
    }
}

pub fn main(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = crate::runtime()?;
    let record = rt.block_on(demo(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    }
    Ok(if record.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts a site and waits for `voters` voters and one standby.
pub async fn start_site(
    hosts: usize,
    voters: usize,
    keep: bool,
    extra_toml: Option<String>,
) -> anyhow::Result<(LocalSite, f64)> {
    start_site_with(hosts, voters, keep, extra_toml, String::new()).await
}

/// As [`start_site`], with extra keys of every host's `[cluster]` section.
pub async fn start_site_with(
    hosts: usize,
    voters: usize,
    keep: bool,
    extra_toml: Option<String>,
    cluster_toml: String,
) -> anyhow::Result<(LocalSite, f64)> {
    let bin = std::env::current_exe().context("cannot find the edgeplane binary itself")?;
    let mut spec = SiteSpec::new(hosts, voters, bin);
    if let Some(extra) = extra_toml {
        spec.extra_toml = extra;
    }
    spec.cluster_toml = cluster_toml;
    let mut site = LocalSite::create(spec, keep)?;
    let t0 = Instant::now();
    for i in 0..hosts {
        site.start_agent(i)?;
    }
    let learners = usize::from(hosts > voters);
    if !site
        .wait_full_strength(learners, Duration::from_secs(90))
        .await
    {
        anyhow::bail!(
            "the site did not reach {voters} voters + {learners} standby within 90 s; logs are in {}",
            site.root.display()
        );
    }
    Ok((site, t0.elapsed().as_secs_f64()))
}

/// SIGKILLs host `victim` and follows the site back to full strength, then
/// restarts the host and follows it back to standby, while `writers` write.
pub async fn kill_and_heal(
    site: &mut LocalSite,
    victim: usize,
    writers: &[Writer],
    n: &Narrator,
) -> anyhow::Result<Cycle> {
    // Writable again: the first put sent after the kill that any writer got
    // acknowledged.
    let first_ack = |t0: Instant| {
        writers
            .iter()
            .filter_map(|w| w.ack_of_first_put_sent_after(t0))
            .min()
    };
    let name = site.hosts[victim].name.clone();
    let was_leader = site.leader_host().await == Some(victim);
    let learners = usize::from(site.hosts.len() > site.spec.voters);
    let standby_before = site.roles().await.map(|(_, l)| l).unwrap_or_default();
    n.say(format!(
        "  kill      {name}{}: SIGKILL to its agent and its etcd (a power loss)",
        if was_leader { " (the etcd leader)" } else { "" }
    ));
    site.kill_host(victim);
    // From here on, the host's agent and etcd are gone (kill_host waits for
    // both): a put sent earlier could still reach the victim's etcd.
    let t0 = Instant::now();
    let mut c = Cycle {
        killed_host: name.clone(),
        killed_was_leader: was_leader,
        ..Cycle::default()
    };
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    let deadline = t0 + Duration::from_secs(60);
    while c.full_strength_s.is_none() && Instant::now() < deadline {
        if c.writable_s.is_none()
            && let Some(t) = first_ack(t0)
        {
            c.writable_s = Some(secs(t));
            n.say(format!("  +{:5.2}s   writes accepted again", secs(t)));
        }
        if let Some((voters, _)) = site.roles().await {
            if c.removed_s.is_none() && !voters.contains(&victim) {
                c.removed_s = Some(secs(Instant::now()));
                n.say(format!(
                    "  +{:5.2}s   dead member {name} removed by the coordinating agent",
                    secs(Instant::now())
                ));
            }
            if c.promoted_s.is_none() && standby_before.iter().any(|s| voters.contains(s)) {
                c.promoted_s = Some(secs(Instant::now()));
                let who: Vec<&str> = standby_before
                    .iter()
                    .filter(|s| voters.contains(s))
                    .map(|&s| site.hosts[s].name.as_str())
                    .collect();
                n.say(format!(
                    "  +{:5.2}s   standby {} promoted to voter",
                    secs(Instant::now()),
                    who.join(",")
                ));
            }
        }
        if site.full_strength(0).await || site.full_strength(learners).await {
            c.full_strength_s = Some(secs(Instant::now()));
            n.say(format!(
                "  +{:5.2}s   full strength: {} healthy voters",
                secs(Instant::now()),
                site.spec.voters
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if c.full_strength_s.is_none() {
        n.say("  the site did not return to full strength within 60 s");
        return Ok(c);
    }
    // The poll that saw full strength may have missed the member list (a
    // loaded host answers late): look once more.
    if c.promoted_s.is_none()
        && let Some((voters, _)) = site.roles().await
        && standby_before.iter().any(|s| voters.contains(s))
    {
        c.promoted_s = Some(secs(Instant::now()));
    }
    while c.writable_s.is_none() && Instant::now() < deadline {
        if let Some(t) = first_ack(t0) {
            c.writable_s = Some(secs(t));
            n.say(format!("  +{:5.2}s   writes accepted again", secs(t)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.say(format!(
        "  restart   {name}: its agent finds the member removed and rejoins"
    ));
    site.start_agent(victim)?;
    let t1 = Instant::now();
    let deadline = t1 + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some((_, l)) = site.roles().await
            && l.contains(&victim)
            && site.full_strength(learners).await
        {
            c.rejoined_s = Some(t1.elapsed().as_secs_f64());
            n.say(format!(
                "  +{:5.2}s   {name} is the new standby (old data dir moved aside)",
                t1.elapsed().as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.acked_after_kill = writers.iter().map(|w| w.sent_and_acked_within(t0..)).sum();
    Ok(c)
}

async fn demo(args: &DemoArgs) -> anyhow::Result<DemoRecord> {
    let n = Narrator { quiet: args.json };
    n.say("Edgeplane demo: a 4-host site on loopback (host-1..3 voters, host-4 hot standby), real etcd, real agents; etcd, the agents and the uplink all over TLS with a site CA.");
    // The region over HTTPS; the agents verify it with uplink.ca_file.
    let region_certs = tempfile::tempdir()?;
    let web = crate::sim::certs::issue_server(region_certs.path(), "region")?;
    let mut region = edgeplane_metrics::local_prometheus::LocalPrometheus::start(
        edgeplane_metrics::local_prometheus::PrometheusOptions {
            tls: Some(web.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("could not start the region's Prometheus: {e}"))?;
    n.say(format!(
        "  region    a local Prometheus at {} receives the site's metrics (remote write)",
        region.base_url()
    ));
    let extra = format!(
        "[metrics]\nscrape_interval = \"1s\"\nscrape_timeout = \"900ms\"\n\n[uplink]\nurl = \"{}\"\ntimeout = \"2s\"\nca_file = {:?}\n",
        region.remote_write_url(),
        web.ca_file.display().to_string()
    );
    let (mut site, bootstrap_s) = start_site(4, 3, args.keep, Some(extra)).await?;
    n.say(format!(
        "  +{bootstrap_s:5.2}s   site bootstrapped: 3 voters + 1 standby (learner), agents in {}",
        site.root.display()
    ));
    let mut writer = Writer::start(site.client_urls(), "demo");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = site.leader_host().await.unwrap_or(0);
    let cycle = kill_and_heal(&mut site, victim, std::slice::from_ref(&writer), &n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    let acked = writer.acked_count();
    let lost = writer.lost(&site.client_urls()).await?;
    let promotions = site.promotions().await;
    n.say(format!(
        "  writes    {acked} acknowledged during the demo ({} of them sent after the kill), {lost} lost; {promotions} promotion(s) recorded in the agents' journals",
        cycle.acked_after_kill
    ));
    let outage = region_outage(&site, &mut region, &n).await?;
    // "No acknowledged write lost" says something only if writes were
    // acknowledged after the kill.
    let ok = lost == 0
        && cycle.writable_s.is_some()
        && cycle.acked_after_kill > 0
        && cycle.full_strength_s.is_some()
        && cycle.rejoined_s.is_some()
        && outage.missing == 0
        && outage.preserved
        && outage.samples > 0;
    n.say(if ok {
        "Demo passed: the site healed itself with no human and lost no acknowledged write."
    } else {
        "Demo FAILED: see above."
    });
    if args.keep {
        n.say(format!("Kept the site's files in {}", site.root.display()));
    }
    Ok(DemoRecord {
        schema: DEMO_SCHEMA,
        hosts: 4,
        voters: 3,
        bootstrap_s,
        cycle,
        acked_writes: acked,
        acked_writes_lost: lost,
        promotions,
        outage_s: outage.seconds,
        outage_samples: outage.samples,
        outage_samples_missing: outage.missing,
        outage_timestamps_preserved: outage.preserved,
        ok,
    })
}

struct Outage {
    seconds: f64,
    samples: usize,
    missing: usize,
    preserved: bool,
}

/// Cuts the region link (the region's Prometheus is frozen with SIGSTOP: a
/// black hole, as a dead WAN link looks), restores it, waits for the agents
/// to flush their backlog, then counts the `up` samples of every scrape
/// target inside the outage window in the region.
async fn region_outage(
    site: &LocalSite,
    region: &mut edgeplane_metrics::local_prometheus::LocalPrometheus,
    n: &Narrator,
) -> anyhow::Result<Outage> {
    use nix::sys::signal::Signal;
    let pid = region
        .pid()
        .context("the region's Prometheus is not running")? as i32;
    let outage = Duration::from_secs(12);
    n.say(format!(
        "  link      region link cut for {}s (the region stops answering)",
        outage.as_secs()
    ));
    let cut_ms = chrono::Utc::now().timestamp_millis();
    crate::sim::signal(pid, Signal::SIGSTOP);
    tokio::time::sleep(outage).await;
    crate::sim::signal(pid, Signal::SIGCONT);
    let restored_ms = chrono::Utc::now().timestamp_millis();
    let t_restored = Instant::now();
    n.say(
        "  link      region link restored; agents flush their backlog with the original timestamps",
    );
    // Wait until no agent holds a sample from before the link came back (bounded).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut pending = false;
        for i in 0..site.hosts.len() {
            if let Some(doc) = site.agent_status(i).await
                && let Some(classes) = doc.pointer("/metrics/classes").and_then(|b| b.as_array())
            {
                pending |= classes.iter().any(|c| {
                    c.get("oldest_ms")
                        .and_then(|o| o.as_i64())
                        .is_some_and(|o| o <= restored_ms)
                });
            }
        }
        if !pending || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    n.say(format!(
        "  +{:5.2}s   backlog flushed",
        t_restored.elapsed().as_secs_f64()
    ));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let range_s = (now_ms - cut_ms) / 1000 + 5;
    let series = region
        .raw("up", &format!("{range_s}s"), now_ms)
        .await
        .map_err(|e| anyhow::anyhow!("querying the region failed: {e}"))?;
    // Expected per target: one sample per second of outage (1 s scrapes);
    // the first and last second may fall either side of the window.
    let expected = ((restored_ms - cut_ms) / 1000).saturating_sub(2) as usize;
    let mut samples = 0;
    let mut missing = 0;
    for s in &series {
        let inside = s
            .samples
            .iter()
            .filter(|(t, _)| *t >= cut_ms && *t <= restored_ms)
            .count();
        samples += inside;
        missing += expected.saturating_sub(inside);
    }
    // Sent with their scrape timestamps, samples from the outage fill the
    // window; re-stamped on send, they would all sit after `restored_ms`.
    let preserved = samples > 0;
    n.say(format!(
        "  region    {samples} samples scraped during the outage are in the region at their original timestamps ({} series, {missing} missing)",
        series.len()
    ));
    Ok(Outage {
        seconds: (restored_ms - cut_ms) as f64 / 1000.0,
        samples,
        missing,
        preserved,
    })
}

/// `edgeplane bench failover --cycles N --writers W`.
pub fn bench_failover(cycles: usize, writers: usize, json: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = crate::runtime()?;
    let run = crate::bench::Run::start("failover");
    let report = rt.block_on(failover_bench(cycles, writers.max(1), json))?;
    let record = crate::bench::Record {
        run: run.finish(),
        figures: report,
    };
    record.print(json, &record.figures.render())?;
    Ok(ExitCode::SUCCESS)
}

/// How long after a goal's own reference the site may take to be at full
/// strength again (issue-level goal: reaction + 0.5 s).
pub const GOAL_MARGIN_S: f64 = 0.5;

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// The workload: a site of `hosts` (`voters` voters, the rest standbys),
    /// `writers` concurrent sequential writers (a put fails after
    /// `put_timeout_ms` and the next member is tried), `cycles` kills of a
    /// voter's host, alternately a follower and the leader.
    pub hosts: usize,
    pub voters: usize,
    pub writers: usize,
    pub put_timeout_ms: u64,
    pub cycles: usize,
    /// The figures below over all kills, leader and follower.
    pub writable_p50_s: f64,
    pub writable_p99_s: f64,
    pub full_strength_p50_s: f64,
    pub full_strength_p99_s: f64,
    pub acked_writes: usize,
    /// Of those, sent after a kill and acknowledged before its host rejoined.
    pub acked_writes_after_kills: usize,
    pub acked_writes_lost: usize,
    pub promotions: u64,
    pub per_cycle: Vec<Cycle>,
    /// The same kills (leader when the agent's cycle killed the leader, a
    /// follower otherwise) on a bare etcd cluster of `voters` members with
    /// no agent and the same number of writers, each member restarted after
    /// its kill.
    pub baseline_writable_p50_s: f64,
    pub baseline_writable_p99_s: f64,
    pub baseline_acked_writes: usize,
    pub baseline_acked_writes_lost: usize,
    pub baseline_per_cycle: Vec<BaselineCycle>,
    pub baseline_full_strength: String,
    /// The site's `cluster.failure_detection` (the edge profile's default).
    pub failure_detection_s: f64,
    /// The site's `cluster.flap_window`: `failure_detection`, shorter than
    /// a cycle, so no kill is damped. The bench kills the same 4 hosts again
    /// and again within a minute or two; with the default (10 min) every
    /// later kill would count as a flap and be detected 2, 4, then 8 times
    /// slower.
    pub flap_window_s: f64,
    /// The kills of the etcd leader's host, against their goal: full
    /// strength at p99 within etcd's own re-election time (etcd alone's
    /// writable p99 after leader kills, same run) + 0.5 s.
    pub leader_kills: KillClass,
    /// The kills of a follower's host, against their goal: full strength at
    /// p99 within `failure_detection` + 0.5 s.
    pub follower_kills: KillClass,
}

/// The figures of one class of kills (leader or follower), beside the same
/// class of kills on etcd alone, and the goal for it.
#[derive(Debug, Serialize)]
pub struct KillClass {
    pub kills: usize,
    pub writable_p50_s: f64,
    pub writable_p99_s: f64,
    pub full_strength_p50_s: f64,
    pub full_strength_p99_s: f64,
    /// Kills after which the site was not at full strength within 60 s.
    pub full_strength_missed: usize,
    /// Kills after which the standby was seen promoted.
    pub promotions: usize,
    /// Puts sent after these kills and acknowledged before the host rejoined.
    pub acked_writes_after_kills: usize,
    /// Acknowledged writes that did not read back, acknowledged during one
    /// of these cycles (from the kill to the next cycle's kill).
    pub acked_writes_lost: usize,
    pub baseline_kills: usize,
    pub baseline_writable_p50_s: f64,
    pub baseline_writable_p99_s: f64,
    /// What the goal is measured from, in words.
    pub goal: String,
    /// The bound on `full_strength_p99_s`; none when its reference was not
    /// measured (no such kill on etcd alone).
    pub goal_full_strength_p99_s: Option<f64>,
    /// `full_strength_p99_s` ≤ the goal and no kill missed full strength.
    /// Speed is reported, never a failure of the bench.
    pub goal_met: Option<bool>,
}

impl KillClass {
    /// `leader`: the class of leader kills; `lost_in_cycle[i]`: lost writes
    /// acknowledged during cycle `i`.
    fn of(
        leader: bool,
        per_cycle: &[Cycle],
        lost_in_cycle: &[usize],
        baseline: &[BaselineCycle],
        failure_detection_s: f64,
    ) -> KillClass {
        let idx: Vec<usize> = (0..per_cycle.len())
            .filter(|&i| per_cycle[i].killed_was_leader == leader)
            .collect();
        let cycles: Vec<&Cycle> = idx.iter().map(|&i| &per_cycle[i]).collect();
        let w: Vec<f64> = cycles.iter().filter_map(|c| c.writable_s).collect();
        let f: Vec<f64> = cycles.iter().filter_map(|c| c.full_strength_s).collect();
        let base: Vec<f64> = baseline
            .iter()
            .filter(|b| b.killed_was_leader == leader)
            .filter_map(|b| b.writable_s)
            .collect();
        let missed = cycles.len() - f.len();
        let (goal, bound) = if leader {
            (
                "etcd alone's writable p99 after leader kills (its own re-election, same run) + 0.5 s",
                (!base.is_empty()).then(|| percentile(&base, 99.0) + GOAL_MARGIN_S),
            )
        } else {
            (
                "cluster.failure_detection + 0.5 s",
                Some(failure_detection_s + GOAL_MARGIN_S),
            )
        };
        let full_p99 = percentile(&f, 99.0);
        KillClass {
            kills: cycles.len(),
            writable_p50_s: percentile(&w, 50.0),
            writable_p99_s: percentile(&w, 99.0),
            full_strength_p50_s: percentile(&f, 50.0),
            full_strength_p99_s: full_p99,
            full_strength_missed: missed,
            promotions: cycles.iter().filter(|c| c.promoted_s.is_some()).count(),
            acked_writes_after_kills: cycles.iter().map(|c| c.acked_after_kill).sum(),
            acked_writes_lost: idx
                .iter()
                .map(|&i| lost_in_cycle.get(i).copied().unwrap_or(0))
                .sum(),
            baseline_kills: baseline
                .iter()
                .filter(|b| b.killed_was_leader == leader)
                .count(),
            baseline_writable_p50_s: percentile(&base, 50.0),
            baseline_writable_p99_s: percentile(&base, 99.0),
            goal: goal.to_string(),
            goal_full_strength_p99_s: bound,
            goal_met: bound
                .filter(|_| !cycles.is_empty())
                .map(|b| missed == 0 && full_p99 <= b),
        }
    }

    fn render_row(&self, name: &str) -> String {
        let goal = match (self.goal_full_strength_p99_s, self.goal_met) {
            (Some(b), Some(true)) => format!("≤ {b:.2}s: met"),
            (Some(b), Some(false)) => format!("≤ {b:.2}s: NOT met"),
            (Some(b), None) => format!("≤ {b:.2}s: no kills"),
            (None, _) => "unknown (no such kill on etcd alone)".to_string(),
        };
        format!(
            "{name:<15} {:>2}  {:.2}s / {:.2}s        {:.2}s / {:.2}s           {:.2}s / {:.2}s         {goal}\n",
            self.kills,
            self.writable_p50_s,
            self.writable_p99_s,
            self.full_strength_p50_s,
            self.full_strength_p99_s,
            self.baseline_writable_p50_s,
            self.baseline_writable_p99_s,
        )
    }
}

/// One kill on the bare cluster.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineCycle {
    pub killed_was_leader: bool,
    /// As [`Cycle::writable_s`].
    pub writable_s: Option<f64>,
}

impl FailoverReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "cycle  killed   leader  writable  removed  promoted  full-strength  rejoined  etcd alone: writable\n",
        );
        let f = |v: Option<f64>| v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into());
        for (i, c) in self.per_cycle.iter().enumerate() {
            let base = self.baseline_per_cycle.get(i).and_then(|b| b.writable_s);
            s.push_str(&format!(
                "{:>5}  {:<7}  {:<6}  {:>8}  {:>7}  {:>8}  {:>13}  {:>8}  {:>8}\n",
                i + 1,
                c.killed_host,
                if c.killed_was_leader { "yes" } else { "no" },
                f(c.writable_s),
                f(c.removed_s),
                f(c.promoted_s),
                f(c.full_strength_s),
                f(c.rejoined_s),
                f(base),
            ));
        }
        s.push_str(&format!(
            "\n                      writable p50/p99     full strength p50/p99   acked writes lost\nedgeplane agent       {:.2}s / {:.2}s        {:.2}s / {:.2}s           {} of {} ({} sent after a kill)\netcd alone (no agent) {:.2}s / {:.2}s        {:<22}  {} of {}\npromotions recorded: {} for {} kills\n",
            self.writable_p50_s,
            self.writable_p99_s,
            self.full_strength_p50_s,
            self.full_strength_p99_s,
            self.acked_writes_lost,
            self.acked_writes,
            self.acked_writes_after_kills,
            self.baseline_writable_p50_s,
            self.baseline_writable_p99_s,
            self.baseline_full_strength,
            self.baseline_acked_writes_lost,
            self.baseline_acked_writes,
            self.promotions,
            self.cycles,
        ));
        s.push_str(&format!(
            "\n{} writer(s)  kills  writable p50/p99  full strength p50/p99  etcd alone writable  goal (full strength p99)\n",
            self.writers
        ));
        s.push_str(&self.leader_kills.render_row("leader kills"));
        s.push_str(&self.follower_kills.render_row("follower kills"));
        s
    }
}

/// Percentile (nearest rank) of a sample; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `n` writers on `urls`, keys `prefix-W/N`.
fn start_writers(urls: &[String], prefix: &str, n: usize) -> Vec<Writer> {
    (0..n)
        .map(|w| Writer::start(urls.to_vec(), &format!("{prefix}-{w}")))
        .collect()
}

/// Stops the writers; returns how many puts they had acknowledged and the
/// acknowledgement times of those that do not read back.
async fn stop_writers(
    writers: &mut [Writer],
    urls: &[String],
) -> anyhow::Result<(usize, Vec<Instant>)> {
    for w in writers.iter_mut() {
        w.stop().await;
    }
    let mut lost = Vec::new();
    for w in writers.iter() {
        lost.extend(w.lost_acks(urls).await?.into_iter().map(|a| a.acked));
    }
    Ok((writers.iter().map(Writer::acked_count).sum(), lost))
}

async fn failover_bench(
    cycles: usize,
    writers: usize,
    json: bool,
) -> anyhow::Result<FailoverReport> {
    let n = Narrator { quiet: json };
    let (hosts, voters) = (4, 3);
    let failure_detection = edgeplane_config::defaults(edgeplane_config::Profile::Edge)
        .cluster
        .failure_detection;
    n.say(format!("Failover bench: {cycles} cycles on a {hosts}-host loopback site ({voters} voters + 1 standby), {writers} writer(s), etcd default timing; kills alternate between a follower and the leader."));
    // Every kill here is a power loss of its own, not one host flapping:
    // flap damping (doubled detection per removal within
    // `cluster.flap_window`) would slow each later kill of the same 4 hosts
    // and measure the damping instead of the failover. The bench's window is
    // the shortest valid one (`failure_detection`), shorter than a cycle, so
    // no kill is damped; damping has its own end-to-end test.
    let (mut site, _) = start_site_with(
        hosts,
        voters,
        false,
        None,
        format!("flap_window = \"{}ms\"\n", failure_detection.as_millis()),
    )
    .await?;
    let urls = site.client_urls();
    let mut ws = start_writers(&urls, "bench", writers);
    let mut per_cycle = Vec::new();
    let mut kill_times = Vec::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    for i in 0..cycles {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let voters = site.roles().await.map(|(v, _)| v).unwrap_or_default();
        if voters.is_empty() {
            anyhow::bail!("no voters visible before cycle {}", i + 1);
        }
        // Odd cycles kill the leader, even ones a random follower, so that
        // `--cycles 10` gives 5 of each. The cycle records whether the host
        // was the leader when it was killed.
        let leader = site.leader_host().await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let followers: Vec<usize> = voters
            .iter()
            .copied()
            .filter(|&v| Some(v) != leader)
            .collect();
        let victim = match leader {
            Some(l) if i % 2 == 1 || followers.is_empty() => l,
            _ if !followers.is_empty() => followers[(seed % followers.len() as u64) as usize],
            _ => voters[(seed % voters.len() as u64) as usize],
        };
        n.say(format!("cycle {}:", i + 1));
        kill_times.push(Instant::now());
        per_cycle.push(kill_and_heal(&mut site, victim, &ws, &n).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, lost_at) = stop_writers(&mut ws, &urls).await?;
    let promotions = site.promotions().await;
    drop(site);
    // A lost write belongs to the cycle whose kill came last before its acknowledgement.
    let mut lost_in_cycle = vec![0usize; per_cycle.len()];
    for t in &lost_at {
        if let Some(i) = kill_times.iter().rposition(|k| k <= t) {
            lost_in_cycle[i] += 1;
        }
    }

    n.say(format!(
        "baseline: the same kills on {voters} bare etcd voters (no agent), {writers} writer(s), each member restarted after its kill:"
    ));
    let leader_kills: Vec<bool> = per_cycle.iter().map(|c| c.killed_was_leader).collect();
    let baseline = baseline_kills(voters, writers, &leader_kills, &n).await?;
    n.say("  the dead voter stays a member: full strength never returns without a human");

    let w: Vec<f64> = per_cycle.iter().filter_map(|c| c.writable_s).collect();
    let f: Vec<f64> = per_cycle.iter().filter_map(|c| c.full_strength_s).collect();
    let bw: Vec<f64> = baseline
        .cycles
        .iter()
        .filter_map(|c| c.writable_s)
        .collect();
    let fd = failure_detection.as_secs_f64();
    Ok(FailoverReport {
        hosts,
        voters,
        writers,
        put_timeout_ms: Writer::PUT_TIMEOUT.as_millis() as u64,
        cycles,
        writable_p50_s: percentile(&w, 50.0),
        writable_p99_s: percentile(&w, 99.0),
        full_strength_p50_s: percentile(&f, 50.0),
        full_strength_p99_s: percentile(&f, 99.0),
        acked_writes: acked,
        acked_writes_after_kills: per_cycle.iter().map(|c| c.acked_after_kill).sum(),
        acked_writes_lost: lost_at.len(),
        promotions,
        leader_kills: KillClass::of(true, &per_cycle, &lost_in_cycle, &baseline.cycles, fd),
        follower_kills: KillClass::of(false, &per_cycle, &lost_in_cycle, &baseline.cycles, fd),
        per_cycle,
        baseline_writable_p50_s: percentile(&bw, 50.0),
        baseline_writable_p99_s: percentile(&bw, 99.0),
        baseline_acked_writes: baseline.acked,
        baseline_acked_writes_lost: baseline.lost,
        baseline_per_cycle: baseline.cycles,
        baseline_full_strength: "never (no agent)".into(),
        failure_detection_s: fd,
        flap_window_s: fd,
    })
}

struct Baseline {
    cycles: Vec<BaselineCycle>,
    acked: usize,
    lost: usize,
}

/// The leader (or a follower) of a bare cluster and whether every member
/// answers with a leader.
async fn bare_roles(urls: &[String]) -> (Option<usize>, Vec<usize>, bool) {
    let (mut leader, mut followers, mut all) = (None, Vec::new(), true);
    for (i, u) in urls.iter().enumerate() {
        match crate::sim::member_status(u).await {
            Some((id, l, _)) if l != 0 && id == l => leader = Some(i),
            Some((_, l, _)) if l != 0 => followers.push(i),
            _ => all = false,
        }
    }
    (leader, followers, all)
}

/// On a bare cluster of `voters` members with `writers` writers: for each
/// entry of `leader_kills`, SIGKILL the leader (true) or a follower, time
/// writable again as [`kill_and_heal`] does, restart the member and wait
/// until every member answers again.
async fn baseline_kills(
    voters: usize,
    writers: usize,
    leader_kills: &[bool],
    n: &Narrator,
) -> anyhow::Result<Baseline> {
    let mut cluster = crate::sim::bare::Cluster::start(voters)?;
    let urls = cluster.client_urls();
    let mut ws = start_writers(&urls, "baseline", writers);
    let mut cycles = Vec::new();
    for (i, &kill_leader) in leader_kills.iter().enumerate() {
        // As in the agent's cycles: 2 s of undisturbed writes, on a whole cluster.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (leader, followers) = loop {
            if let (Some(l), f, true) = bare_roles(&urls).await {
                break (l, f);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the bare etcd cluster was not whole again within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = if kill_leader {
            leader
        } else {
            followers
                .get(i % followers.len().max(1))
                .copied()
                .unwrap_or(leader)
        };
        cluster.members[victim].kill();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        let mut writable_s = None;
        while Instant::now() < deadline {
            if let Some(t) = ws
                .iter()
                .filter_map(|w| w.ack_of_first_put_sent_after(t0))
                .min()
            {
                writable_s = Some(t.duration_since(t0).as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.say(format!(
            "  kill {} ({}): writes accepted again after {}",
            cluster.members[victim].name,
            if kill_leader {
                "the leader"
            } else {
                "a follower"
            },
            writable_s.map_or("- (not within 30 s)".to_string(), |w| format!("{w:.2}s"))
        ));
        cycles.push(BaselineCycle {
            killed_was_leader: kill_leader,
            writable_s,
        });
        cluster.members[victim]
            .restart()
            .context("could not restart a bare etcd member")?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, lost) = stop_writers(&mut ws, &urls).await?;
    Ok(Baseline {
        cycles,
        acked,
        lost: lost.len(),
    })
}

/// `edgeplane bench recovery`: the figure for quorum-loss recovery.
#[derive(Debug, Serialize)]
pub struct RecoveryReport {
    /// The workload: a site of `hosts` (`voters` voters), `voters_killed` of
    /// the voters' hosts SIGKILLed one after the other.
    pub hosts: usize,
    pub voters: usize,
    pub voters_killed: usize,
    pub quorum_loss_window_s: f64,
    /// From the second SIGKILL to the acknowledgement of the first put
    /// *sent* after it.
    pub writable_s: f64,
    /// From the second SIGKILL to 3 voters + 1 standby (the killed hosts are
    /// restarted as soon as the site is writable; they rejoin in the new epoch).
    pub full_strength_s: f64,
    /// One writer runs from before the kills until full strength, through
    /// the loss and the rebuild: every put it had acknowledged is read back
    /// at the end.
    pub acked_writes: usize,
    /// Of those, acknowledged in the 2 s before the first kill: the writes a
    /// loss would hit, which must not be 0 for "0 lost" to mean anything.
    pub acked_writes_during_loss: usize,
    pub acked_writes_lost: usize,
    /// For each lost write, when it was acknowledged, in ms before the first
    /// kill (negative: after it). Writes that only the killed voters held
    /// (acknowledged within the survivors' replication lag) are lost by
    /// construction; anything older is a bug.
    pub lost_acked_ms_before_kill: Vec<f64>,
}

pub fn bench_recovery(json: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = crate::runtime()?;
    let run = crate::bench::Run::start("recovery");
    let report = rt.block_on(recovery_bench(json))?;
    let record = crate::bench::Record {
        run: run.finish(),
        figures: report,
    };
    let r = &record.figures;
    let table = format!(
        "quorum loss ({} of {} voters SIGKILLed, policy fenced, window {:.0}s, one writer throughout): writable after {:.2}s, full strength after {:.2}s; {} of {} acknowledged writes lost ({} acknowledged in the 2 s before the kills){}\n",
        r.voters_killed,
        r.voters,
        r.quorum_loss_window_s,
        r.writable_s,
        r.full_strength_s,
        r.acked_writes_lost,
        r.acked_writes,
        r.acked_writes_during_loss,
        if r.lost_acked_ms_before_kill.is_empty() {
            String::new()
        } else {
            format!(
                "; lost writes were acknowledged {:?} ms before the first kill",
                r.lost_acked_ms_before_kill
            )
        },
    );
    record.print(json, &table)?;
    Ok(ExitCode::SUCCESS)
}

/// `edgeplane bench self-fence`: the residual loss of policy `fenced`
/// (see [`crate::sim::witness_cut`]).
pub fn bench_self_fence(json: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = crate::runtime()?;
    let run = crate::bench::Run::start("self-fence");
    let bin = std::env::current_exe().context("cannot find the edgeplane binary itself")?;
    let n = Narrator { quiet: json };
    let (report, site) = rt.block_on(crate::sim::witness_cut::run(bin, &|l| n.say(l)))?;
    drop(site);
    let record = crate::bench::Record {
        run: run.finish(),
        figures: report,
    };
    let r = &record.figures;
    let table = format!(
        "self-fence (2 hosts + witness, the voter cut off, window {:.0}s, self_fence_after {:.0}s): self-fence after {}, the other side serving after {}; {} of {} acknowledged writes lost, bound {} ({} lost outside it)\n",
        r.quorum_loss_window_s,
        r.self_fence_after_s,
        r.self_fence_s
            .map_or("never".into(), |s| format!("{s:.2}s")),
        r.other_side_serving_s
            .map_or("never".into(), |s| format!("{s:.2}s")),
        r.acked_writes_lost,
        r.acked_writes,
        r.loss_bound_writes,
        r.lost_outside_bound,
    );
    record.print(json, &table)?;
    Ok(ExitCode::SUCCESS)
}

async fn recovery_bench(json: bool) -> anyhow::Result<RecoveryReport> {
    let n = Narrator { quiet: json };
    let window = Duration::from_secs(3);
    let extra = format!(
        "[metrics]\nenabled = false\n\n[uplink]\nenabled = false\n\n[recovery]\nquorum_loss_policy = \"fenced\"\nfence_command = [\"{{root}}/fence.sh\", \"{{host}}\"]\nquorum_loss_window = \"{}s\"\n",
        window.as_secs()
    );
    // 5 hosts: after losing 2 voters, the survivor, the standby and the
    // spare are 3 of 5 votes, the strict majority an automatic rebuild needs
    // (4 hosts would leave 2 of 4, and the survivors would wait for a human).
    n.say("Recovery bench: 5-host loopback site (3 voters + 1 standby + 1 spare), policy fenced.");
    let (mut site, _) = start_site(5, 3, false, Some(extra)).await?;
    // One writer through the kills: the loss figure covers the writes in
    // flight when two voters die, not only those long settled.
    let mut writer = Writer::start(site.client_urls(), "rec");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (voters, _) = site.roles().await.context("no member list")?;
    let victims: Vec<usize> = voters.iter().copied().take(2).collect();
    let killed_at = Instant::now();
    for &v in &victims {
        n.say(format!("  kill      {}", site.hosts[v].name));
        site.kill_host(v);
    }
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    let writable = loop {
        if let Some(t) = writer.ack_of_first_put_sent_after(t0) {
            break t.duration_since(t0).as_secs_f64();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the site did not become writable within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    n.say(format!(
        "  +{writable:5.2}s   writable again (rebuilt from the freshest survivor in a new epoch)"
    ));
    for &v in &victims {
        site.start_agent(v)?;
    }
    while !site.full_strength(1).await {
        anyhow::ensure!(Instant::now() < deadline, "no full strength within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = t0.elapsed().as_secs_f64();
    n.say(format!(
        "  +{full:5.2}s   full strength: the killed hosts rejoined and were promoted"
    ));
    writer.stop().await;
    let lost = writer.lost_acks(&site.client_urls()).await?;
    let during_loss = writer
        .acked
        .lock()
        .map(|v| {
            v.iter()
                .filter(|a| {
                    a.acked <= killed_at
                        && killed_at.duration_since(a.acked) <= Duration::from_secs(2)
                })
                .count()
        })
        .unwrap_or(0);
    let ms_before_kill = |t: Instant| {
        if t <= killed_at {
            killed_at.duration_since(t).as_secs_f64() * 1000.0
        } else {
            -(t.duration_since(killed_at).as_secs_f64() * 1000.0)
        }
    };
    Ok(RecoveryReport {
        hosts: site.hosts.len(),
        voters: site.spec.voters,
        voters_killed: victims.len(),
        quorum_loss_window_s: window.as_secs_f64(),
        writable_s: writable,
        full_strength_s: full,
        acked_writes: writer.acked_count(),
        acked_writes_during_loss: during_loss,
        acked_writes_lost: lost.len(),
        lost_acked_ms_before_kill: lost.iter().map(|a| ms_before_kill(a.acked)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(leader: bool, full: Option<f64>) -> Cycle {
        Cycle {
            killed_was_leader: leader,
            writable_s: Some(0.1),
            promoted_s: full,
            full_strength_s: full,
            acked_after_kill: 10,
            ..Cycle::default()
        }
    }

    #[test]
    fn kills_are_reported_by_class_against_their_goals() {
        let per_cycle = [
            cycle(false, Some(1.2)),
            cycle(true, Some(2.3)),
            cycle(false, Some(1.6)),
            cycle(true, None),
        ];
        let lost = [0, 1, 0, 2];
        let base = |leader, w| BaselineCycle {
            killed_was_leader: leader,
            writable_s: Some(w),
        };
        let baseline = [
            base(false, 0.01),
            base(true, 1.5),
            base(false, 0.02),
            base(true, 1.7),
        ];
        let f = KillClass::of(false, &per_cycle, &lost, &baseline, 1.0);
        assert_eq!((f.kills, f.promotions, f.acked_writes_lost), (2, 2, 0));
        assert_eq!(f.full_strength_p99_s, 1.6);
        assert_eq!(f.goal_full_strength_p99_s, Some(1.5));
        // 1.6 s > 1.0 s + 0.5 s: reported, not an error.
        assert_eq!(f.goal_met, Some(false));

        let l = KillClass::of(true, &per_cycle, &lost, &baseline, 1.0);
        assert_eq!(
            (l.kills, l.full_strength_missed, l.acked_writes_lost),
            (2, 1, 3)
        );
        // Etcd alone's own re-election (writable p99 after leader kills) + 0.5 s.
        assert_eq!(l.goal_full_strength_p99_s, Some(1.7 + GOAL_MARGIN_S));
        // 2.3 s > 2.2 s, and a kill that never reached full strength misses
        // the goal whatever the percentile says.
        assert_eq!(l.goal_met, Some(false));

        // No leader kill on etcd alone: the goal is unknown, not met or missed.
        let u = KillClass::of(true, &per_cycle, &lost, &baseline[..1], 1.0);
        assert_eq!((u.goal_full_strength_p99_s, u.goal_met), (None, None));
    }
}
