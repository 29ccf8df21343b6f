//! Quorum-loss recovery: rebuild a new cluster from the freshest surviving
//! data, in a new *epoch*.
//!
//! Why epochs: `--force-new-cluster` keeps the cluster and member IDs, and old
//! members restarted on the other side of a partition elected a leader and
//! accepted writes that were later silently lost (reproduced on 3.4.23). So
//! a rebuild restores the survivor's db with `etcdctl snapshot restore`
//! (a new cluster ID from a fresh token `edgeplane-SITE-eN`) and writes the
//! epoch into the data dir (`edgeplane-epoch`). An agent whose data is from
//! an older epoch than any peer reports never starts etcd on it: it moves it
//! aside and joins the new cluster as the standby. Raft indexes are only
//! compared within one epoch.
//!
//! When: quorum lost (no leader for `recovery.quorum_loss_window`). Whether
//! and whom to fence is decided by `recovery_plan::decide_rebuild`, a pure
//! function with property tests; this module gathers its view and acts:
//! - policy `fenced`: the freshest reachable survivor (highest applied index,
//!   config order breaks ties), once every survivor that answers names it,
//!   fences every voter of the last *recorded* membership that does not
//!   answer (the state store keeps it across restarts; an agent that never
//!   recorded one does not rebuild by itself), journalled before the fence
//!   runs; only if every fence succeeds does it rebuild. A minority cut off
//!   by the network cannot fence a healthy majority through it (its fence
//!   command fails), so it never rewrites the cluster.
//! - policy `manual`: nothing happens until `edgeplane recover --confirm`
//!   asks this host's agent (`POST /recover`); even then the agent refuses
//!   while any member reports a leader.
//!
//! What a rebuild starts from ([`Source`]): this host's own etcd data (the
//! automatic path and `recover --from HOST`), or a snapshot file on this
//! host (`recover --snapshot FILE`: the operator chose a point in time;
//! writes after it are discarded). Either way the same steps follow: a
//! one-member data dir in a scratch directory, marked with the new epoch,
//! swapped in for the old one (moved aside, never deleted), etcd started.
//! A snapshot is restored (and so fully verified) *before* etcd is stopped,
//! so a corrupt file changes nothing. The rebuild (restoring a large db
//! takes minutes) runs off the reconcile loop like the fence, journalled
//! first, holding this host's etcd supervisor until it ends; it is refused
//! while another operation runs, e.g. an offline defrag of the same data
//! dir (an operator's `recover` is then refused with that reason).
//!
//! Residual risk, by choice: fenced hosts must stay off. If two fenced voters
//! of three came back on their own while cut off from the survivors, they
//! could form their old quorum (they cannot see the newer epoch). Under
//! policy `fenced` a voter that cannot see a majority of the nodes stops its
//! etcd after `recovery.self_fence_after` (self-fence, `local.rs`), which
//! narrows this; the fence contract ("confirmed powered off") is still what
//! the automatic path relies on.
//!
//! Votes: a fence that works *across* a LAN cut (a BMC on another network)
//! would let a host cut off from the LAN, which sees nobody to disagree
//! with, power off the healthy majority. So an automatic rebuild also needs
//! a strict majority of agent votes over the configured nodes (this host
//! and every agent that answers and names it the freshest); a host without
//! one waits, says why (`/status.recovery.wait = "no_vote_majority"`, the
//! votes it sees) and offers the operator's command.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgeplane_config::QuorumLossPolicy;

use super::etcd::{Supervisor, has_member_data, mark_epoch, move_aside};
use super::etcd_control::{EtcdCallError, EtcdControl};
use super::host::Host;
use super::observe::peer_epoch;
use super::operation::Kind;
use super::recovery_plan::{
    self, Quorum, RebuildDecision, RebuildView, Refusal, Request, Survivor, Wait, counted_epoch,
};
use super::state::KnownMembership;
use super::status::{RecoverRequest, RecoveryDoc};

/// The data a rebuild starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// This host's etcd data dir (`member/snap/db`, a voter's or a learner's).
    OwnData,
    /// A snapshot file made by `edgeplane snapshot save` or the schedule.
    Snapshot(PathBuf),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::OwnData => "this host's data".into(),
            Source::Snapshot(p) => format!("snapshot {}", p.display()),
        }
    }
}

/// Recovery bookkeeping kept by the agent between ticks.
#[derive(Debug, Default)]
pub struct Recovery {
    pub requested: Option<RecoverRequest>,
    /// Consecutive looks in which this host had the freshest data.
    pub freshest_streak: u32,
    pub next_attempt: Option<Instant>,
    pub doc: RecoveryDoc,
    /// Lost voters the fence command confirmed off during the current
    /// quorum loss (each fence runs off the loop, one host at a time).
    pub fenced: Vec<String>,
    /// Why the last fence failed, shown while backing off.
    pub last_failure: Option<String>,
    /// The rebuild running off the loop, if any.
    pub rebuild: Option<RebuildRun>,
    /// The decision being acted on was asked for by an operator.
    pub requested_by_operator: bool,
}

/// A rebuild running off the loop.
#[derive(Debug, Clone, Copy)]
pub struct RebuildRun {
    pub epoch: u64,
    /// Asked for by `POST /recover` (a failure is then not retried).
    pub by_operator: bool,
}

/// The typed view [`recovery_plan::decide_rebuild`] decides on: every
/// configured host (its etcd counted only with data of this host's epoch),
/// and the voters of the last membership this host recorded.
fn rebuild_view(cx: &Host, rec: &mut Recovery) -> RebuildView {
    let have_data = has_member_data(&cx.cfg.etcd.data_dir);
    let my_epoch = counted_epoch(
        cx.data_epoch(),
        have_data,
        cx.view
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != cx.my_index)
            .map(|(_, p)| peer_epoch(p)),
    );
    let hosts = cx
        .view
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let epoch = if i == cx.my_index {
                my_epoch
            } else {
                peer_epoch(p)
            };
            Survivor {
                name: p.node.name.clone(),
                role: recovery_plan::NodeRole::Etcd,
                applied_index: p
                    .status
                    .as_ref()
                    .filter(|_| epoch == my_epoch)
                    .map(|s| s.applied_index),
                commit_index: p
                    .status
                    .as_ref()
                    .filter(|_| epoch == my_epoch)
                    .map(|s| s.raft_index),
                agent_answers: i == cx.my_index || p.agent_doc.is_some(),
                names_freshest: if i == cx.my_index {
                    None
                } else {
                    p.agent_doc
                        .as_ref()
                        .and_then(|d| d.pointer("/recovery/freshest"))
                        .and_then(|f| f.as_str())
                        .map(str::to_string)
                },
            }
        })
        .chain(cx.view.witnesses.iter().map(|w| {
            Survivor {
                name: w.node.name.clone(),
                role: recovery_plan::NodeRole::Witness,
                applied_index: None,
                commit_index: None,
                agent_answers: w.agent_doc.is_some(),
                names_freshest: w
                    .agent_doc
                    .as_ref()
                    .and_then(|d| d.pointer("/recovery/freshest"))
                    .and_then(|f| f.as_str())
                    .map(str::to_string),
            }
        }))
        .collect();
    RebuildView {
        policy: cx.cfg.recovery.quorum_loss_policy,
        quorum: cx.quorum(),
        me: cx.my_index,
        hosts,
        known_voters: cx.known.as_ref().map(KnownMembership::voters),
        have_data,
        freshest_streak: rec.freshest_streak,
        backing_off: rec.next_attempt.is_some_and(|t| Instant::now() < t),
        request: rec.requested.as_ref().map(|r| Request {
            confirm: r.confirm,
            from_snapshot: r.snapshot.is_some(),
        }),
    }
}

/// One look at quorum loss per tick: decide (pure), update the doc, and
/// fence and rebuild when the decision says so.
pub async fn tick(cx: &mut Host, rec: &mut Recovery, config_path: &Path) {
    let mut view = rebuild_view(cx, rec);
    let fresh = recovery_plan::freshest(&view.hosts);
    // Two survivors must never both rebuild. Their views of each other's
    // applied index are taken at different moments (a learner may still be
    // applying), so each could see itself ahead: the decision also wants
    // two consecutive looks and every answering survivor's agreement.
    rec.freshest_streak = if fresh == Some(cx.my_index) && view.have_data {
        rec.freshest_streak + 1
    } else {
        0
    };
    view.freshest_streak = rec.freshest_streak;
    let requested = rec.requested.take();
    if let Some(done) = cx.ops.take(Kind::Fence) {
        match done.result {
            Ok(_) => {
                tracing::warn!(host = %done.target, "Fence command confirmed {} is powered off (took {:.1}s).", done.target, done.took.as_secs_f64());
                rec.fenced.push(done.target);
            }
            Err(e) => {
                let why = format!(
                    "the fence command did not confirm {} is off: {e}",
                    done.target
                );
                tracing::error!("Not rebuilding: {why}");
                rec.fenced.clear();
                rec.last_failure = Some(why);
                rec.next_attempt = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }
    // A host confirmed off that answers again (powered on since) is fenced
    // again before any rebuild: a confirmation is about the past.
    let answering: Vec<String> = cx
        .view
        .peers
        .iter()
        .filter(|p| p.status.is_some() || p.agent_doc.is_some())
        .map(|p| p.node.name.clone())
        .collect();
    rec.fenced.retain(|h| !answering.contains(h));
    let decision = recovery_plan::decide_rebuild(&view);
    let lost = recovery_plan::lost_voters(&view);
    let fresh_name = fresh.map(|i| view.hosts[i].name.clone());
    let command = fresh_name.as_deref().map(|h| {
        recovery_plan::recover_command(&cx.cfg.host, &config_path.display().to_string(), Some(h))
    });
    let mut doc = RecoveryDoc {
        quorum_lost: view.quorum == Quorum::Lost,
        policy: policy_name(cx),
        lost_voters: lost.clone(),
        freshest: fresh_name.clone(),
        command: command.clone(),
        state: String::new(),
        wait: None,
        votes: recovery_plan::votes(&view),
        votes_needed: recovery_plan::majority(view.hosts.len()),
    };
    // No survivor's etcd answers. A snapshot loses the writes made after it,
    // and an etcd that is only slow to start still has them, so this is a
    // hint in the sentence, never "the command".
    let no_data = || match newest_snapshot(&cx.cfg.paths.snapshot_dir) {
        Some(file) => format!(
            "waiting: no surviving data is reachable; if no host's etcd data can be started again, \
             `edgeplane recover --config {} --snapshot {} --confirm` rebuilds from this host's newest snapshot \
             (writes made after it are lost)",
            config_path.display(),
            file.display()
        ),
        None => "waiting: no surviving data is reachable".into(),
    };
    // A rebuild runs off the loop: the loop keeps observing and reporting.
    if let (Some((Kind::Rebuild, _)), Some(run)) = (cx.ops.running(), rec.rebuild) {
        doc.state = format!(
            "rebuilding a one-member cluster as epoch {}{}",
            run.epoch,
            cx.ops
                .doc()
                .map(|d| format!(" (running for {:.0} s)", d.running_for_s))
                .unwrap_or_default()
        );
        doc.command = None;
        // This host's vote stays its own while it rebuilds: its etcd is down
        // meanwhile, so the view above names another survivor the freshest,
        // and that vote would hand a second survivor a majority to rebuild
        // too (two clusters; found by the e2e test of the fenced rebuild).
        doc.freshest = Some(cx.me.name.clone());
        rec.doc = doc;
        return;
    }
    // A fence runs off the loop: the loop keeps observing and reporting.
    if let Some((Kind::Fence, host)) = cx.ops.running() {
        doc.state = format!(
            "fencing {host}: waiting for the fence command to confirm it is powered off{}",
            cx.ops
                .doc()
                .map(|d| format!(" (running for {:.0} s)", d.running_for_s))
                .unwrap_or_default()
        );
        rec.requested = requested;
        rec.doc = doc;
        return;
    }
    let fence = match decision {
        RebuildDecision::NotNeeded => {
            rec.fenced.clear();
            rec.last_failure = None;
            // The votes stay on show (diag's "who votes for whom"); the
            // freshest and the command are for a quorum loss only.
            rec.doc = RecoveryDoc {
                policy: policy_name(cx),
                state: "quorum ok".into(),
                votes: doc.votes,
                votes_needed: doc.votes_needed,
                ..RecoveryDoc::default()
            };
            return;
        }
        RebuildDecision::Wait(w) => {
            let reason = w.reason();
            doc.state = wait_sentence(
                &w,
                &lost,
                fresh_name.as_deref(),
                rec.last_failure.as_deref(),
                &no_data,
            );
            if let Wait::NoVoteMajority { .. } = &w {
                let c = command.clone().unwrap_or_else(|| {
                    format!(
                        "edgeplane recover --config {} --from HOST --confirm (HOST: the survivor with the freshest data)",
                        config_path.display()
                    )
                });
                doc.state.push_str(&format!(": {c}"));
            }
            // Once per reason, not once per tick.
            if rec.doc.wait != Some(reason) {
                tracing::warn!("Quorum lost, not rebuilding: {}", doc.state);
            }
            doc.wait = Some(reason);
            rec.doc = doc;
            return;
        }
        RebuildDecision::Refuse(r) => {
            doc.state = match r {
                Refusal::NoConfirm => "refused: recover needs --confirm",
                Refusal::NoOwnData => "refused: this host has no etcd data to rebuild from",
            }
            .into();
            rec.doc = doc;
            return;
        }
        RebuildDecision::Rebuild {
            fence,
            votes,
            operator,
        } => {
            if !operator {
                tracing::warn!(
                    "Quorum lost: {} of {} votes name this host the freshest ({}).",
                    votes.len(),
                    view.hosts.len(),
                    votes.join(", ")
                );
            }
            fence
        }
    };
    let source = match requested.as_ref().and_then(|r| r.snapshot.clone()) {
        Some(file) => Source::Snapshot(file),
        None => Source::OwnData,
    };
    // One fence at a time, off the loop; the rebuild waits until every
    // host of the decision was confirmed off.
    if let Some(host) = fence.iter().find(|h| !rec.fenced.contains(h)).cloned() {
        doc.state = match start_fence(cx, &host) {
            Ok(()) => format!(
                "fencing {host}: waiting for the fence command to confirm it is powered off"
            ),
            Err(e) => {
                tracing::error!("Not rebuilding: {e:#}");
                rec.fenced.clear();
                rec.last_failure = Some(format!("{e:#}"));
                rec.next_attempt = Some(Instant::now() + Duration::from_secs(30));
                format!("waiting: {e:#}; retrying in 30 s")
            }
        };
        rec.requested = requested;
        rec.doc = doc;
        return;
    }
    // Post-check of the fencing, pre-check of the rebuild: the decision was
    // taken on a view that may be seconds old (each fence may take a
    // minute, and this tick observed before it). Look again; a rebuild
    // that is no longer decided is not done.
    cx.view.refresh().await;
    let again = recovery_plan::decide_rebuild(&RebuildView {
        request: view.request,
        freshest_streak: view.freshest_streak,
        backing_off: false,
        ..rebuild_view(cx, rec)
    });
    let still = matches!(&again, RebuildDecision::Rebuild { fence: f, .. } if f.iter().all(|h| fence.contains(h)));
    if !still || cx.view.leader().is_some() {
        tracing::warn!("Not rebuilding: the site looks different now ({again:?}).");
        rec.fenced.clear();
        doc.state = "waiting: the site changed while fencing; deciding again".into();
        rec.doc = doc;
        return;
    }
    let reason = if requested.is_some() {
        format!(
            "quorum lost ({} unreachable); recovery from {} confirmed by an operator",
            lost.join(", "),
            source.describe()
        )
    } else {
        format!(
            "quorum lost ({} unreachable); fenced {}",
            lost.join(", "),
            fence.join(", ")
        )
    };
    rec.requested_by_operator = requested.is_some();
    match start_rebuild(cx, rec, &source, &reason) {
        Ok(epoch) => {
            doc.state = format!(
                "rebuilding a one-member cluster from {} as epoch {epoch}",
                source.describe()
            );
        }
        // Another operation holds the runner (an offline defrag of this
        // host's data dir ends within a minute): nothing was done.
        Err(e) => {
            tracing::warn!("{e:#}");
            doc.state = if requested.is_some() {
                format!("refused: {e:#}; nothing was done: run the command again when it has ended")
            } else {
                format!("waiting: {e:#}; deciding again at the next look")
            };
        }
    }
    rec.doc = doc;
}

/// What the agent waits for, in a sentence (`/status.recovery.state`).
fn wait_sentence(
    w: &Wait,
    lost: &[String],
    fresh_name: Option<&str>,
    last_failure: Option<&str>,
    no_data: &dyn Fn() -> String,
) -> String {
    match w {
        Wait::MembershipUnknown => "waiting: this host never recorded the cluster's membership, \
             so it cannot tell which voters to fence; no automatic rebuild (an operator can run the command)"
            .into(),
        Wait::Human => format!(
            "waiting for a human: power off the lost hosts ({}), then run the command (rebuilds from {})",
            lost.join(", "),
            fresh_name.unwrap_or("?")
        ),
        Wait::OtherRebuilds(h) => format!("waiting: {h} has the freshest data and rebuilds"),
        Wait::NoData => no_data(),
        Wait::NotSettled => {
            "waiting: this host has the freshest data; confirming on the next look".into()
        }
        Wait::OthersDisagree(hosts) => format!(
            "waiting: the other survivors ({}) do not yet agree that this host has the freshest data",
            hosts.join(", ")
        ),
        Wait::BackingOff => match last_failure {
            Some(why) => format!("waiting: {why}; retrying in 30 s"),
            None => "waiting before the next recovery attempt".into(),
        },
        Wait::OldQuorumUnfenced(hosts) => format!(
            "waiting: old voters that answer ({}) are a quorum of the old cluster and could serve it again \
             beside a rebuild; waiting for the old cluster to return (or for an operator, who powers them off first)",
            hosts.join(", ")
        ),
        Wait::NoVoteMajority { votes, needed, of } => format!(
            "waiting: no strict majority of votes: {} of {of} configured nodes name this host the freshest ({}), \
             an automatic rebuild needs {needed}; the nodes it cannot see may be a live majority across a network cut. \
             If they are really down, power off the lost hosts ({}) and run the command",
            votes.len(),
            votes.join(", "),
            lost.join(", ")
        ),
    }
}

/// Pre-check, journal, then the fence command for `host` off the loop
/// ([`super::operation::Runner`]); its result comes back to [`tick`].
/// Refused (nothing runs) when the host or a leader answers again (a healed
/// partition is never fenced on a decision taken while it was out of
/// reach), when the intent cannot be journalled, or while another
/// operation runs.
fn start_fence(cx: &mut Host, host: &str) -> anyhow::Result<()> {
    // Pre-check on this tick's view (observed moments ago).
    let back = cx.view.leader().is_some()
        || cx
            .view
            .peers
            .iter()
            .any(|p| p.node.name == host && (p.status.is_some() || p.agent_doc.is_some()));
    if back {
        anyhow::bail!("{host} or a leader answers again: not fencing");
    }
    let recovery = cx.cfg.recovery.clone();
    let target = host.to_string();
    cx.ops
        .start(
            &cx.state,
            Kind::Fence,
            host,
            "quorum lost; fencing a lost voter before a rebuild",
            async move {
                fence(&recovery, &target)
                    .await
                    .map(|()| format!("fence command confirmed {target} is powered off"))
                    .map_err(|e| format!("{e:#}"))
            },
        )
        .map_err(|e| anyhow::anyhow!("not fencing {host}: {e}"))?;
    tracing::warn!(host = %host, "Fencing {host} (off the reconcile loop).");
    Ok(())
}

/// The newest snapshot file in `dir` (by the time it was taken), if any.
fn newest_snapshot(dir: &Path) -> Option<PathBuf> {
    edgeplane_snapshot::list(dir)
        .ok()?
        .into_iter()
        .max_by_key(|m| m.info.created_at)
        .map(|m| m.path)
}

fn policy_name(cx: &Host) -> String {
    match cx.cfg.recovery.quorum_loss_policy {
        QuorumLossPolicy::Manual => "manual".into(),
        QuorumLossPolicy::Fenced => "fenced".into(),
    }
}

/// Runs the fence command for `host` (`{host}` replaced), with
/// `recovery.fence_environment_file` as its environment; success = exit 0
/// within 60 s.
async fn fence(recovery: &edgeplane_config::Recovery, host: &str) -> anyhow::Result<()> {
    let Some((prog, args)) = recovery.fence_command.split_first() else {
        anyhow::bail!("no fence command configured");
    };
    let args: Vec<String> = args.iter().map(|a| a.replace("{host}", host)).collect();
    let env = match &recovery.fence_environment_file {
        Some(p) => crate::secrets::environment_file(p)?,
        None => Vec::new(),
    };
    let mut child = tokio::process::Command::from(edgeplane_snapshot::child_command(prog))
        .args(&args)
        .envs(env)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not run fence command {prog}"))?;
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => anyhow::bail!("fence command exited with {status}"),
        Ok(Err(e)) => Err(e).context("fence command failed"),
        Err(_) => anyhow::bail!("fence command did not finish within 60 s"),
    }
}

/// Everything a rebuild needs, owned, so that it runs off the loop.
struct RebuildJob {
    source: Source,
    epoch: u64,
    data_dir: PathBuf,
    /// The scratch directory the new data dir is prepared in.
    work: PathBuf,
    target: edgeplane_snapshot::RestoreTarget,
    client_url: String,
    tls: Option<crate::tls::SiteTls>,
    /// The highest revision seen in the old cluster.
    max_revision: i64,
    state: std::sync::Arc<super::state::State>,
}

/// Pre-check, journal, then the rebuild of a one-member cluster from
/// `source` in a new epoch, off the loop ([`super::operation::Runner`]):
/// it holds this host's etcd supervisor until it ends, and its result
/// comes back to [`take_finished`]. Returns the new epoch. Refused
/// (nothing done) while another operation runs (an offline defrag on
/// this data dir) or when the intent cannot be journalled.
fn start_rebuild(
    cx: &mut Host,
    rec: &mut Recovery,
    source: &Source,
    reason: &str,
) -> anyhow::Result<u64> {
    let peers_max = cx.view.peers.iter().map(peer_epoch).max().unwrap_or(0);
    let epoch = cx.data_epoch().max(peers_max) + 1;
    let work = cx.cfg.paths.state_dir.join(format!("recover-e{epoch}"));
    let job = RebuildJob {
        source: source.clone(),
        epoch,
        data_dir: cx.cfg.etcd.data_dir.clone(),
        target: edgeplane_snapshot::RestoreTarget::new(
            work.join("data"),
            cx.me.name.clone(),
            format!("{}={}", cx.me.name, cx.me.peer_url),
            cx.token_for(epoch),
            cx.me.peer_url.clone(),
        ),
        work,
        client_url: cx.me.client_url.clone(),
        tls: cx.tls.clone(),
        max_revision: cx.max_revision,
        state: cx.state.clone(),
    };
    let me = cx.me.name.clone();
    cx.ops
        .start_with_etcd(
            &cx.state,
            Kind::Rebuild,
            &me,
            reason,
            &mut cx.etcd,
            |mut etcd| async move {
                let from = job.source.describe();
                rebuild_inner(&job, &mut etcd)
                    .await
                    .map(|bumped| {
                        format!(
                            "one-member cluster in epoch {} from {from}; {bumped}",
                            job.epoch
                        )
                    })
                    .map_err(|e| format!("{e:#}"))
            },
        )
        .map_err(|e| anyhow::anyhow!("not rebuilding: {e}"))?;
    tracing::warn!(
        "Quorum lost: rebuilding the cluster from {} as epoch {epoch} ({reason}), off the reconcile loop.",
        source.describe()
    );
    cx.rebuilding_epoch = Some(epoch);
    rec.rebuild = Some(RebuildRun {
        epoch,
        by_operator: rec.requested_by_operator,
    });
    Ok(epoch)
}

/// The post-check of a rebuild that ended since the last tick (the runner
/// journalled its outcome, and the loop has its etcd supervisor back).
pub fn take_finished(cx: &mut Host, rec: &mut Recovery) {
    let Some(done) = cx.ops.take(Kind::Rebuild) else {
        return;
    };
    cx.rebuilding_epoch = None;
    let run = rec.rebuild.take();
    // The rebuild raised the revision and recorded it.
    if let Ok(Some(rev)) = cx.state.fact(super::host::FACT_MAX_REVISION)
        && let Ok(rev) = rev.trim().parse::<i64>()
    {
        cx.max_revision = cx.max_revision.max(rev);
    }
    let by_operator = run.as_ref().is_some_and(|r| r.by_operator);
    match done.result {
        Ok(detail) => {
            tracing::warn!("Rebuilt in {:.1}s: {detail}.", done.took.as_secs_f64());
            rec.doc.state = format!(
                "rebuilt a one-member cluster in epoch {}; the other hosts rejoin",
                run.map(|r| r.epoch).unwrap_or_default()
            );
            rec.doc.command = None;
        }
        Err(e) => {
            tracing::error!("Rebuild failed: {e}");
            // An operator's request is not repeated: the journal keeps the error.
            if by_operator {
                rec.doc.state = format!("rebuild failed: {e}");
            } else {
                rec.doc.state = format!("rebuild failed: {e}; retrying in 30 s");
                rec.next_attempt = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }
}

/// How far past the highest revision this agent saw a rebuilt cluster
/// starts: the agent polls once per tick, so writes applied by the old
/// leader after its last look are covered up to this many.
const REVISION_MARGIN: i64 = 1000;

/// The key the no-op writes of [`bump_revision`] go to (deleted after).
const BUMP_KEY: &str = "/edgeplane/revision-bump";

/// Raises the new one-member cluster's revision past every revision seen in
/// the old one (plus [`REVISION_MARGIN`]) with no-op writes, then compacts
/// there, so that a watch resumed from an old revision gets "compacted" and
/// relists (etcd 3.4 has no `--bump-revision`). Returns the new revision.
async fn bump_revision(job: &RebuildJob, url: &str) -> anyhow::Result<i64> {
    use futures::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The new etcd elects itself; wait until it takes a write.
    let (client, mut rev) = loop {
        let attempt = async {
            let mut c = EtcdControl::connect(&[url], job.tls.as_ref()).await?;
            let rev = c.put_empty(BUMP_KEY).await?;
            Ok::<_, EtcdCallError>((c, rev))
        };
        match attempt.await {
            Ok(v) => break v,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the rebuilt etcd did not take a write within 30 s");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let target = job.max_revision.max(rev) + REVISION_MARGIN;
    let missing = usize::try_from(target - rev).unwrap_or(0);
    let results: Vec<Result<i64, EtcdCallError>> = futures::stream::iter(0..missing)
        .map(|_| {
            let mut c = client.clone();
            async move { c.put_empty(BUMP_KEY).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        rev = rev.max(r.context("a no-op write failed")?);
    }
    let mut c = client.clone();
    rev = rev.max(
        c.delete(BUMP_KEY)
            .await
            .context("could not delete the bump key")?,
    );
    c.compact_physical(rev)
        .await
        .context("could not compact at the raised revision")?;
    if let Err(e) = job
        .state
        .set_fact(super::host::FACT_MAX_REVISION, &rev.to_string())
    {
        tracing::error!("Could not record the highest revision seen: {e}");
    }
    Ok(rev)
}

/// Waits until the local etcd's applied index reaches its commit index, or
/// `bound` passes.
async fn wait_applied(job: &RebuildJob, bound: Duration) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let status = async {
            let mut c = EtcdControl::connect(&[job.client_url.as_str()], job.tls.as_ref())
                .await
                .ok()?;
            c.status().await.ok()
        };
        match status.await {
            Some(s) if s.raft_applied_index() >= s.raft_index() => return,
            None => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tracing::warn!(
        "Rebuilding although this member has not applied every committed entry within {bound:?}."
    );
}

/// Returns what became of the revision (for the journal). Runs off the
/// loop with this host's etcd supervisor lent to it.
async fn rebuild_inner(job: &RebuildJob, etcd: &mut Supervisor) -> anyhow::Result<String> {
    let data_dir = job.data_dir.clone();
    let epoch = job.epoch;
    // Everything is prepared in a scratch directory: the old data dir stays
    // untouched until the new one is ready.
    let work = job.work.clone();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .with_context(|| format!("could not create {}", work.display()))?;
    let new_dir = job.target.data_dir.clone();
    let target = job.target.clone();
    match &job.source {
        Source::OwnData => {
            // Entries this member knows are committed but has not applied
            // yet live only in its WAL, which the rebuild does not keep:
            // let it apply them first (bounded: a stuck apply loop must not
            // stop the recovery).
            wait_applied(job, Duration::from_secs(5)).await;
            // The db must not change while it is copied.
            etcd.stop(Duration::from_secs(5)).await;
            let db = work.join("db");
            let src = data_dir.join("member").join("snap").join("db");
            // A member's db has no snapshot hash: restored with --skip-hash-check.
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                std::fs::copy(&src, &db).context("could not copy this member's db file")?;
                edgeplane_snapshot::restore_db_file(&db, &target)
                    .context("could not restore this member's db file")?;
                Ok(())
            })
            .await
            .context("the restore task failed")??;
        }
        Source::Snapshot(file) => {
            // Verified in full while restoring, before etcd is touched.
            let file = file.clone();
            let report = tokio::task::spawn_blocking(move || {
                edgeplane_snapshot::restore(&file, &target, &mut |_| {})
            })
            .await
            .context("the restore task failed")?;
            if let Err(e) = report {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e).context("refused the snapshot");
            }
            etcd.stop(Duration::from_secs(5)).await;
        }
    }
    mark_epoch(&new_dir, epoch).context("could not mark the new data dir with its epoch")?;
    move_aside(&data_dir, 2)?;
    std::fs::rename(&new_dir, &data_dir).with_context(|| {
        format!(
            "could not move the rebuilt data into {}",
            data_dir.display()
        )
    })?;
    let _ = std::fs::remove_dir_all(&work);
    // Revisions never go backwards: before any client sees the new cluster,
    // it is started sealed (clients only on a port the agent alone knows)
    // and its revision raised past every one seen, so that watchers and
    // caches relist instead of waiting for revisions that never come, and
    // no client write lands below a revision a watcher already saw.
    let bumped = match sealed_url(&job.client_url) {
        Ok(url) => {
            etcd.start(&super::etcd::StartMode::Sealed {
                client_url: url.clone(),
            })?;
            let r = bump_revision(job, &url).await;
            etcd.stop(Duration::from_secs(5)).await;
            match r {
                Ok(rev) => format!("revision raised to {rev} and compacted (watchers relist)"),
                Err(e) => {
                    tracing::error!("Could not raise the new cluster's revision: {e:#}");
                    format!("revision NOT raised: {e:#}")
                }
            }
        }
        Err(e) => format!("revision NOT raised: {e:#}"),
    };
    etcd.start(&super::etcd::StartMode::Restart)?;
    Ok(bumped)
}

/// This host's client URL with a free port of the same address (its TLS
/// certificate names that address), for a sealed start.
fn sealed_url(client_url: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(client_url).context("the client URL does not parse")?;
    let host = url
        .host_str()
        .context("the client URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = std::net::TcpListener::bind((host.as_str(), 0))
        .and_then(|l| l.local_addr())
        .context("no free port for the sealed start")?
        .port();
    let mut sealed = url.clone();
    sealed
        .set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("cannot set a port on {client_url}"))?;
    Ok(sealed.as_str().trim_end_matches('/').to_string())
}
