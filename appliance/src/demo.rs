//! `edgeplane demo` and `edgeplane bench failover`: a loopback site of real
//! agents and real etcd, a voter host killed, and what happens next,
//! measured from outside the site (the way a client sees it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::DemoArgs;
use crate::sim::{LocalSite, SiteSpec, Writer};

/// One kill-and-heal cycle, times in seconds after the SIGKILL.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cycle {
    pub killed_host: String,
    pub killed_was_leader: bool,
    /// First write acknowledged after the kill.
    pub writable_s: Option<f64>,
    /// The dead member left the member list.
    pub removed_s: Option<f64>,
    /// The standby became a voter.
    pub promoted_s: Option<f64>,
    /// Configured voters, all healthy.
    pub full_strength_s: Option<f64>,
    /// After the host restarted: it is the standby again (seconds after its restart).
    pub rejoined_s: Option<f64>,
}

/// The demo's record (`--json`).
#[derive(Debug, Serialize)]
pub struct DemoRecord {
    pub hosts: usize,
    pub voters: usize,
    pub bootstrap_s: f64,
    pub cycle: Cycle,
    pub acked_writes: usize,
    pub acked_writes_lost: usize,
    pub promotions: u64,
    pub ok: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")
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
    let rt = runtime()?;
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
) -> anyhow::Result<(LocalSite, f64)> {
    let bin = std::env::current_exe().context("cannot find the edgeplane binary itself")?;
    let mut site = LocalSite::create(SiteSpec::new(hosts, voters, bin), keep)?;
    let t0 = Instant::now();
    for i in 0..hosts {
        site.start_agent(i)?;
    }
    let learners = usize::from(hosts > voters);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !site.full_strength(learners).await {
        if Instant::now() > deadline {
            anyhow::bail!(
                "the site did not reach {voters} voters + {learners} standby within 90 s; logs are in {}",
                site.root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((site, t0.elapsed().as_secs_f64()))
}

/// SIGKILLs host `victim` and follows the site back to full strength, then
/// restarts the host and follows it back to standby.
pub async fn kill_and_heal(
    site: &mut LocalSite,
    victim: usize,
    writer: &Writer,
    n: &Narrator,
) -> anyhow::Result<Cycle> {
    let name = site.hosts[victim].name.clone();
    let was_leader = site.leader_host().await == Some(victim);
    let learners = usize::from(site.hosts.len() > site.spec.voters);
    let standby_before = site.roles().await.map(|(_, l)| l).unwrap_or_default();
    n.say(format!(
        "  kill      {name}{}: SIGKILL to its agent and its etcd (a power loss)",
        if was_leader { " (the etcd leader)" } else { "" }
    ));
    let t0 = Instant::now();
    site.kill_host(victim);
    let mut c = Cycle {
        killed_host: name.clone(),
        killed_was_leader: was_leader,
        ..Cycle::default()
    };
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    let deadline = t0 + Duration::from_secs(60);
    while c.full_strength_s.is_none() && Instant::now() < deadline {
        if c.writable_s.is_none()
            && let Some(t) = writer.first_ack_after(t0)
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
    while c.writable_s.is_none() && Instant::now() < deadline {
        if let Some(t) = writer.first_ack_after(t0) {
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
    Ok(c)
}

async fn demo(args: &DemoArgs) -> anyhow::Result<DemoRecord> {
    let n = Narrator { quiet: args.json };
    n.say("Edgeplane demo: a 4-host site on loopback (host-1..3 voters, host-4 hot standby), real etcd, real agents.");
    let (mut site, bootstrap_s) = start_site(4, 3, args.keep).await?;
    n.say(format!(
        "  +{bootstrap_s:5.2}s   site bootstrapped: 3 voters + 1 standby (learner), agents in {}",
        site.root.display()
    ));
    let mut writer = Writer::start(site.client_urls(), "demo");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = site.leader_host().await.unwrap_or(0);
    let cycle = kill_and_heal(&mut site, victim, &writer, &n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    let acked = writer.acked_count();
    let lost = writer.lost(&site.client_urls()).await?;
    let promotions = site.promotions().await;
    n.say(format!(
        "  writes    {acked} acknowledged during the demo, {lost} lost; {promotions} promotion(s) recorded in the agents' journals"
    ));
    let ok = lost == 0 && cycle.full_strength_s.is_some() && cycle.rejoined_s.is_some();
    n.say(if ok {
        "Demo passed: the site healed itself with no human and lost no acknowledged write."
    } else {
        "Demo FAILED: see above."
    });
    if args.keep {
        n.say(format!("Kept the site's files in {}", site.root.display()));
    }
    Ok(DemoRecord {
        hosts: 4,
        voters: 3,
        bootstrap_s,
        cycle,
        acked_writes: acked,
        acked_writes_lost: lost,
        promotions,
        ok,
    })
}

/// `edgeplane bench failover --cycles N`.
pub fn bench_failover(cycles: usize, json: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = runtime()?;
    let report = rt.block_on(failover_bench(cycles, json))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub cycles: usize,
    pub writable_p50_s: f64,
    pub writable_p99_s: f64,
    pub full_strength_p50_s: f64,
    pub full_strength_p99_s: f64,
    pub acked_writes: usize,
    pub acked_writes_lost: usize,
    pub promotions: u64,
    pub per_cycle: Vec<Cycle>,
    /// The same kill on a bare etcd cluster with no agent.
    pub baseline_writable_p50_s: f64,
    pub baseline_full_strength: String,
}

impl FailoverReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "cycle  killed   leader  writable  removed  promoted  full-strength  rejoined\n",
        );
        for (i, c) in self.per_cycle.iter().enumerate() {
            let f = |v: Option<f64>| v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:>5}  {:<7}  {:<6}  {:>8}  {:>7}  {:>8}  {:>13}  {:>8}\n",
                i + 1,
                c.killed_host,
                if c.killed_was_leader { "yes" } else { "no" },
                f(c.writable_s),
                f(c.removed_s),
                f(c.promoted_s),
                f(c.full_strength_s),
                f(c.rejoined_s)
            ));
        }
        s.push_str(&format!(
            "\n                      writable p50/p99     full strength p50/p99   acked writes lost\nedgeplane agent       {:.2}s / {:.2}s        {:.2}s / {:.2}s           {} of {}\netcd alone (no agent) {:.2}s                {}\npromotions recorded: {} for {} kills\n",
            self.writable_p50_s,
            self.writable_p99_s,
            self.full_strength_p50_s,
            self.full_strength_p99_s,
            self.acked_writes_lost,
            self.acked_writes,
            self.baseline_writable_p50_s,
            self.baseline_full_strength,
            self.promotions,
            self.cycles,
        ));
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

async fn failover_bench(cycles: usize, json: bool) -> anyhow::Result<FailoverReport> {
    let n = Narrator { quiet: json };
    n.say(format!("Failover bench: {cycles} cycles on a 4-host loopback site (3 voters + 1 standby), etcd default timing."));
    let (mut site, _) = start_site(4, 3, false).await?;
    let mut writer = Writer::start(site.client_urls(), "bench");
    let mut per_cycle = Vec::new();
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
        // xorshift: a different voter each run, no extra dependency on a seedable RNG.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = voters[(seed % voters.len() as u64) as usize];
        n.say(format!("cycle {}:", i + 1));
        per_cycle.push(kill_and_heal(&mut site, victim, &writer, &n).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    let acked = writer.acked_count();
    let lost = writer.lost(&site.client_urls()).await?;
    let promotions = site.promotions().await;
    drop(site);

    n.say("baseline: the same kill on 3 bare etcd voters (no agent):");
    let baseline = baseline_writable().await?;
    n.say(format!("  writes accepted again after {baseline:.2}s; the dead voter stays a member: full strength never returns without a human"));

    let w: Vec<f64> = per_cycle.iter().filter_map(|c| c.writable_s).collect();
    let f: Vec<f64> = per_cycle.iter().filter_map(|c| c.full_strength_s).collect();
    Ok(FailoverReport {
        cycles,
        writable_p50_s: percentile(&w, 50.0),
        writable_p99_s: percentile(&w, 99.0),
        full_strength_p50_s: percentile(&f, 50.0),
        full_strength_p99_s: percentile(&f, 99.0),
        acked_writes: acked,
        acked_writes_lost: lost,
        promotions,
        per_cycle,
        baseline_writable_p50_s: baseline,
        baseline_full_strength: "never (no agent)".into(),
    })
}

/// Seconds from SIGKILL of the leader of a bare 3-voter cluster to the next acknowledged write.
async fn baseline_writable() -> anyhow::Result<f64> {
    let mut cluster = crate::sim::bare::Cluster::start(3)?;
    let urls = cluster.client_urls();
    let mut writer = Writer::start(urls.clone(), "baseline");
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.acked_count() < 50 {
        if Instant::now() > deadline {
            anyhow::bail!("the bare etcd cluster never accepted writes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut leader = 0;
    for (i, u) in urls.iter().enumerate() {
        if let Some((id, l, _)) = crate::sim::member_status(u).await
            && id == l
        {
            leader = i;
        }
    }
    let t0 = Instant::now();
    cluster.members[leader].kill();
    let deadline = t0 + Duration::from_secs(30);
    let mut out = None;
    while Instant::now() < deadline {
        if let Some(t) = writer.first_ack_after(t0) {
            out = Some(t.duration_since(t0).as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.stop().await;
    out.context("the bare cluster did not accept writes within 30 s of the kill")
}
