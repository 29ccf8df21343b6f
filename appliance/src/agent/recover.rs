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
//! When: quorum lost (no leader for `recovery.quorum_loss_window`) and
//! - policy `fenced`: the freshest reachable survivor (highest applied index,
//!   config order breaks ties) runs the fence command for every lost voter;
//!   only if every one succeeds does it rebuild. A minority cut off by the
//!   network cannot fence a healthy majority (its fence command fails), so it
//!   never rewrites the cluster.
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
//! so a corrupt file changes nothing.
//!
//! Residual risk, by choice: fenced hosts must stay off. If two fenced voters
//! of three came back on their own while cut off from the survivors, they
//! could form their old quorum (they cannot see the newer epoch). Refusing to
//! start etcd on existing data until a majority of agents answers would close
//! that, but would also keep a 2-host site down whenever its other host is,
//! so it is not done; the fence contract ("confirmed powered off") is what
//! the automatic path relies on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgeplane_config::QuorumLossPolicy;
use serde::{Deserialize, Serialize};

use super::etcd::{has_member_data, move_aside, write_atomic};
use super::local::Agent;
use super::state::{OpKind, Outcome};

/// File in the etcd data dir naming the epoch its data belongs to.
pub const EPOCH_FILE: &str = "edgeplane-epoch";

/// The epoch of the data in `data_dir` (0 when unmarked: the first cluster).
pub fn data_epoch(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(EPOCH_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Marks `data_dir` as belonging to `epoch` (created if missing).
pub fn mark_epoch(data_dir: &Path, epoch: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    write_atomic(&data_dir.join(EPOCH_FILE), format!("{epoch}\n").as_bytes())
}

/// What `POST /recover` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// The operator confirms the lost hosts are powered off.
    pub confirm: bool,
    /// Rebuild from this snapshot file (an absolute path on this host)
    /// instead of this host's etcd data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
}

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

/// What the agent knows about a quorum loss (in `/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryDoc {
    pub quorum_lost: bool,
    pub policy: String,
    /// Voters of the last member list that do not answer.
    pub lost_voters: Vec<String>,
    /// The reachable host with the freshest data (highest applied index).
    pub freshest: Option<String>,
    /// The exact command that recovers, when recovery needs a human.
    pub command: Option<String>,
    /// What the agent is doing or waiting for, in a sentence.
    pub state: String,
}

/// Recovery bookkeeping kept by the agent between ticks.
#[derive(Debug, Default)]
pub struct Recovery {
    pub requested: Option<RecoverRequest>,
    /// Consecutive looks in which this host had the freshest data.
    pub freshest_streak: u32,
    pub next_attempt: Option<Instant>,
    pub doc: RecoveryDoc,
}

/// The reachable host with the freshest data: highest applied index among
/// hosts whose etcd answers in our epoch, config order breaking ties.
fn freshest(agent: &Agent) -> Option<usize> {
    let my_epoch = agent.data_epoch();
    agent
        .view
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let s = p.status.as_ref()?;
            let epoch = if i == agent.my_index {
                my_epoch
            } else {
                peer_epoch(p)
            };
            (epoch == my_epoch).then_some((i, s.applied_index))
        })
        // max_by_key keeps the LAST maximum: reverse so the first in config order wins.
        .rev()
        .max_by_key(|(_, applied)| *applied)
        .map(|(i, _)| i)
}

/// Whether every other survivor names this host (`peers[me]`) as the
/// freshest. A survivor is any host whose etcd OR agent answers: a host
/// whose agent answers while its etcd is down may be rebuilding from its own
/// data right now (it stops etcd to do so), so its silence on the etcd port
/// must not make it count as gone — two survivors would both rebuild.
pub fn others_agree(peers: &[super::observe::Peer], me: usize) -> bool {
    let my_name = peers[me].node.name.as_str();
    peers.iter().enumerate().all(|(i, p)| {
        i == me
            || (p.status.is_none() && p.agent_doc.is_none())
            || p.agent_doc
                .as_ref()
                .and_then(|d| d.pointer("/recovery/freshest"))
                .and_then(|f| f.as_str())
                == Some(my_name)
    })
}

pub fn peer_epoch(p: &super::observe::Peer) -> u64 {
    p.agent_doc
        .as_ref()
        .and_then(|d| d.get("epoch"))
        .and_then(|e| e.as_u64())
        .unwrap_or(0)
}

/// One look at quorum loss per tick: update the doc, and rebuild when allowed.
pub async fn tick(agent: &mut Agent, config_path: &Path) {
    if agent.quorum() != "lost" {
        agent.recovery.doc = RecoveryDoc {
            policy: policy_name(agent),
            state: "quorum ok".into(),
            ..RecoveryDoc::default()
        };
        agent.recovery.requested = None;
        return;
    }
    let lost: Vec<String> = agent
        .view
        .last_members
        .iter()
        .flatten()
        .filter(|m| !m.is_learner)
        .filter(|m| match agent.view.peer_by_url(&m.peer_url) {
            Some(i) => agent.view.peers[i].status.is_none(),
            None => true,
        })
        .map(super::plan::label)
        .collect();
    let fresh = freshest(agent);
    let fresh_name = fresh.map(|i| agent.view.peers[i].node.name.clone());
    let command = fresh_name.as_ref().map(|h| {
        format!(
            "edgeplane recover --config {} --from {h} --confirm",
            config_path.display()
        )
    });
    // No survivor's etcd answers. A snapshot loses the writes made after it,
    // and an etcd that is only slow to start still has them, so this is a
    // hint in the sentence, never "the command".
    let no_data = || match newest_snapshot(&agent.cfg.paths.snapshot_dir) {
        Some(file) => format!(
            "waiting: no surviving data is reachable; if no host's etcd data can be started again, \
             `edgeplane recover --config {} --snapshot {} --confirm` rebuilds from this host's newest snapshot \
             (writes made after it are lost)",
            config_path.display(),
            file.display()
        ),
        None => "waiting: no surviving data is reachable".into(),
    };
    let policy = agent.cfg.recovery.quorum_loss_policy;
    let mut doc = RecoveryDoc {
        quorum_lost: true,
        policy: policy_name(agent),
        lost_voters: lost.clone(),
        freshest: fresh_name.clone(),
        command: command.clone(),
        state: String::new(),
    };
    let me_freshest = fresh == Some(agent.my_index) && has_member_data(&agent.cfg.etcd.data_dir);
    // Two survivors must never both rebuild. Their views of each other's
    // applied index are taken at different moments (a learner may still be
    // applying), so each could see itself ahead. Rebuild only when this host
    // has been the freshest in two consecutive looks AND every other
    // survivor's agent names this host as the freshest too.
    agent.recovery.freshest_streak = if me_freshest {
        agent.recovery.freshest_streak + 1
    } else {
        0
    };
    let others_agree = others_agree(&agent.view.peers, agent.my_index);
    let requested = agent.recovery.requested.take();
    let automatic = policy == QuorumLossPolicy::Fenced
        && me_freshest
        && agent.recovery.freshest_streak >= 2
        && others_agree;
    if policy == QuorumLossPolicy::Fenced && me_freshest && !others_agree && requested.is_none() {
        doc.state =
            "waiting: the other survivors do not yet agree that this host has the freshest data"
                .into();
        agent.recovery.doc = doc;
        return;
    }
    if requested.is_none() && !automatic {
        doc.state = match (policy, &fresh_name) {
            (QuorumLossPolicy::Manual, Some(h)) => format!(
                "waiting for a human: power off the lost hosts ({}), then run the command (rebuilds from {h})",
                lost.join(", ")
            ),
            (QuorumLossPolicy::Manual, None) => no_data(),
            (QuorumLossPolicy::Fenced, Some(h)) => {
                format!("waiting: {h} has the freshest data and rebuilds")
            }
            (QuorumLossPolicy::Fenced, None) => no_data(),
        };
        agent.recovery.doc = doc;
        return;
    }
    // Automatic attempts back off; an operator's request runs when asked.
    if requested.is_none()
        && agent
            .recovery
            .next_attempt
            .is_some_and(|t| Instant::now() < t)
    {
        doc.state = "waiting before the next recovery attempt".into();
        agent.recovery.doc = doc;
        return;
    }
    if let Some(r) = &requested
        && !r.confirm
    {
        doc.state = "refused: recover needs --confirm".into();
        agent.recovery.doc = doc;
        return;
    }
    let source = match requested.as_ref().and_then(|r| r.snapshot.clone()) {
        Some(file) => Source::Snapshot(file),
        None => Source::OwnData,
    };
    if source == Source::OwnData && !has_member_data(&agent.cfg.etcd.data_dir) {
        doc.state = "refused: this host has no etcd data to rebuild from".into();
        agent.recovery.doc = doc;
        return;
    }
    if requested.is_none() {
        // Automatic: every lost voter must be fenced first.
        for host in &lost {
            match fence(&agent.cfg.recovery.fence_command, host).await {
                Ok(()) => {
                    tracing::warn!(host = %host, "Fence command confirmed {host} is powered off.")
                }
                Err(e) => {
                    tracing::error!(host = %host, "Not rebuilding: the fence command did not confirm {host} is off: {e:#}");
                    let op = agent
                        .state
                        .begin(OpKind::Recover, &agent.me.name, "quorum lost; fencing")
                        .ok();
                    if let Some(op) = op {
                        let _ = agent.state.finish(
                            op,
                            Outcome::Failed,
                            &format!("fence of {host} failed: {e:#}"),
                        );
                    }
                    doc.state = format!("waiting: fencing {host} failed ({e:#}); retrying in 30 s");
                    agent.recovery.next_attempt = Some(Instant::now() + Duration::from_secs(30));
                    agent.recovery.doc = doc;
                    return;
                }
            }
        }
    }
    let reason = if requested.is_some() {
        format!(
            "quorum lost ({} unreachable); recovery from {} confirmed by an operator",
            lost.join(", "),
            source.describe()
        )
    } else {
        format!("quorum lost ({} unreachable); fenced", lost.join(", "))
    };
    match rebuild(agent, &source, &reason).await {
        Ok(epoch) => {
            doc.state =
                format!("rebuilt a one-member cluster in epoch {epoch}; the other hosts rejoin");
            doc.command = None;
        }
        Err(e) => {
            tracing::error!("Rebuild failed: {e:#}");
            // An operator's request is not repeated: the journal keeps the error.
            if requested.is_some() {
                doc.state = format!("rebuild failed: {e:#}");
            } else {
                doc.state = format!("rebuild failed: {e:#}; retrying in 30 s");
                agent.recovery.next_attempt = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }
    agent.recovery.doc = doc;
}

/// The newest snapshot file in `dir` (by the time it was taken), if any.
fn newest_snapshot(dir: &Path) -> Option<PathBuf> {
    edgeplane_snapshot::list(dir)
        .ok()?
        .into_iter()
        .max_by_key(|m| m.info.created_at)
        .map(|m| m.path)
}

fn policy_name(agent: &Agent) -> String {
    match agent.cfg.recovery.quorum_loss_policy {
        QuorumLossPolicy::Manual => "manual".into(),
        QuorumLossPolicy::Fenced => "fenced".into(),
    }
}

/// Runs the fence command for `host` (`{host}` replaced); success = exit 0 within 60 s.
async fn fence(command: &[String], host: &str) -> anyhow::Result<()> {
    let Some((prog, args)) = command.split_first() else {
        anyhow::bail!("no fence command configured");
    };
    let args: Vec<String> = args.iter().map(|a| a.replace("{host}", host)).collect();
    let mut child = tokio::process::Command::new(prog)
        .args(&args)
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

/// Rebuilds a one-member cluster from `source` in a new epoch. Returns the
/// new epoch.
async fn rebuild(agent: &mut Agent, source: &Source, reason: &str) -> anyhow::Result<u64> {
    let peers_max = agent.view.peers.iter().map(peer_epoch).max().unwrap_or(0);
    let epoch = agent.data_epoch().max(peers_max) + 1;
    let op = agent
        .state
        .begin(OpKind::Recover, &agent.me.name, reason)
        .context("could not journal the recovery intent")?;
    tracing::warn!(
        "Quorum lost: rebuilding the cluster from {} as epoch {epoch} ({reason}).",
        source.describe()
    );
    let result = rebuild_inner(agent, source, epoch).await;
    match &result {
        Ok(()) => {
            let _ = agent.state.finish(
                op,
                Outcome::Done,
                &format!(
                    "one-member cluster in epoch {epoch} from {}",
                    source.describe()
                ),
            );
        }
        Err(e) => {
            let _ = agent.state.finish(op, Outcome::Failed, &format!("{e:#}"));
        }
    }
    result.map(|()| epoch)
}

async fn rebuild_inner(agent: &mut Agent, source: &Source, epoch: u64) -> anyhow::Result<()> {
    let data_dir = agent.cfg.etcd.data_dir.clone();
    // Everything is prepared in a scratch directory: the old data dir stays
    // untouched until the new one is ready.
    let work = agent.cfg.paths.state_dir.join(format!("recover-e{epoch}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .with_context(|| format!("could not create {}", work.display()))?;
    let new_dir = work.join("data");
    let target = edgeplane_snapshot::RestoreTarget::new(
        &new_dir,
        agent.me.name.clone(),
        format!("{}={}", agent.me.name, agent.me.peer_url),
        agent.token_for(epoch),
        agent.me.peer_url.clone(),
    );
    match source {
        Source::OwnData => {
            // The db must not change while it is copied.
            agent.etcd.stop(Duration::from_secs(5)).await;
            let db = work.join("db");
            std::fs::copy(data_dir.join("member").join("snap").join("db"), &db)
                .context("could not copy this member's db file")?;
            // A member's db has no snapshot hash: restored with --skip-hash-check.
            edgeplane_snapshot::restore_db_file(&db, &target)
                .context("could not restore this member's db file")?;
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
            agent.etcd.stop(Duration::from_secs(5)).await;
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
    agent.etcd.start(&super::etcd::StartMode::Restart)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::observe::Peer;

    fn peer(name: &str) -> Peer {
        Peer::new(
            edgeplane_config::Node {
                name: name.into(),
                peer_url: format!("https://{name}:2380"),
                client_url: format!("https://{name}:2379"),
                agent_url: format!("https://{name}:7070"),
            },
            None,
        )
    }

    fn names(freshest: &str) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "recovery": { "freshest": freshest } }))
    }

    /// Found by the fenced-recovery e2e test: the survivor that rebuilds
    /// first stops its etcd; the other survivor then saw it as gone, found
    /// itself freshest among those whose etcd answered, fenced it and
    /// rebuilt too. A survivor whose agent answers still has a say.
    #[test]
    fn a_survivor_whose_agent_answers_but_etcd_does_not_still_has_a_say() {
        let mut peers = vec![peer("h1"), peer("h2"), peer("h3"), peer("h4")];
        // h1, h2: powered off (nothing answers). h3: rebuilding, its etcd
        // stopped, its agent names itself. h4: this host.
        peers[2].agent_doc = names("h3");
        assert!(!others_agree(&peers, 3), "h4 must wait for h3");
        // h3 names h4: agreement.
        peers[2].agent_doc = names("h4");
        assert!(others_agree(&peers, 3));
        // h3 entirely silent (powered off): it has no say.
        peers[2].agent_doc = None;
        assert!(others_agree(&peers, 3));
    }
}
