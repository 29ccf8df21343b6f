//! The report from the facts: a pure function (no I/O), so every verdict
//! has a unit test.

use super::*;

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn sees_leader(s: &probe::EtcdStatus) -> bool {
    s.leader != 0 && !s.errors.iter().any(|e| e.contains("no leader"))
}

/// A role as diag names it: the learner is "the standby".
fn role_name(role: Role) -> String {
    match role {
        Role::Learner => "standby".to_string(),
        other => other.to_string(),
    }
}

/// The quorum verdict from what answered: pure, see the tests.
///
/// - some live agent reports its quorum lost → lost;
/// - a reachable member knows a leader → ok;
/// - no member reachable at all → unknown (this host may be the one cut off);
/// - no leader and a majority of voters unreachable → lost;
/// - no leader but a majority reachable → unknown (an election, or a partition).
pub fn decide_quorum(
    hosts: &[HostRow],
    agents_say: &[AgentSays],
    voters: &[String],
) -> (QuorumState, String) {
    let live = |h: &&HostRow| h.source == Source::Live && h.etcd_up;
    let reachable: Vec<&HostRow> = hosts.iter().filter(live).collect();
    let reachable_voters: Vec<&str> = reachable
        .iter()
        .filter(|h| voters.contains(&h.name))
        .map(|h| h.name.as_str())
        .collect();
    let unreachable: Vec<&str> = voters
        .iter()
        .filter(|v| !reachable_voters.contains(&v.as_str()))
        .map(String::as_str)
        .collect();
    let majority = voters.len() / 2 + 1;
    if let Some(a) = agents_say.iter().find(|a| a.quorum == Quorum::Lost) {
        return (
            QuorumState::Lost,
            format!(
                "the agent on {} reports quorum lost; {} of {} voters answer{}",
                a.host,
                reachable_voters.len(),
                voters.len(),
                list_suffix(" (unreachable: ", &unreachable, ")")
            ),
        );
    }
    if reachable.iter().any(|h| h.leader || h.leader_known) {
        return (
            QuorumState::Ok,
            format!(
                "{} of {} voters answer and a leader is elected",
                reachable_voters.len(),
                voters.len()
            ),
        );
    }
    if reachable.is_empty() {
        return (
            QuorumState::Unknown,
            "no etcd member answers from here: either this host is cut off from the site or every member is down; check power and network before anything else".into(),
        );
    }
    if reachable_voters.len() < majority {
        return (
            QuorumState::Lost,
            format!(
                "no leader, and only {} of {} voters answer{}",
                reachable_voters.len(),
                voters.len(),
                list_suffix(" (unreachable: ", &unreachable, ")")
            ),
        );
    }
    (
        QuorumState::Unknown,
        format!(
            "no leader yet, but {} of {} voters answer: an election is probably under way; run this again in a few seconds",
            reachable_voters.len(),
            voters.len()
        ),
    )
}

fn list_suffix(pre: &str, items: &[&str], post: &str) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{pre}{}{post}", items.join(", "))
    }
}

/// The member to recover from: the agents' own ranking
/// (`recovery_plan::freshest`: the highest commit index, the most
/// acknowledged entries, then the highest applied index; ties in config
/// order) over the members whose etcd answers now.
pub fn freshest(hosts: &[HostRow]) -> Option<&HostRow> {
    use crate::agent::recovery_plan::{self, NodeRole, Survivor};
    let survivors: Vec<Survivor> = hosts
        .iter()
        .map(|h| {
            let live = h.source == Source::Live && h.etcd_up;
            Survivor {
                name: h.name.clone(),
                role: NodeRole::Etcd,
                applied_index: h.applied_index.filter(|_| live),
                commit_index: h.raft_index.filter(|_| live),
                agent_answers: false,
                names_freshest: None,
            }
        })
        .collect();
    recovery_plan::freshest(&survivors).map(|i| &hosts[i])
}

/// The recovery command for a lost quorum.
pub fn recovery(
    me: &str,
    config_path: &str,
    hosts: &[HostRow],
    voters: &[String],
    policy: QuorumLossPolicy,
) -> Recovery {
    let lost: Vec<String> = voters
        .iter()
        .filter(|v| {
            !hosts
                .iter()
                .any(|h| &h.name == *v && h.source == Source::Live && h.etcd_up)
        })
        .cloned()
        .collect();
    let from = freshest(hosts);
    let command = crate::agent::recovery_plan::recover_command(
        me,
        config_path,
        from.map(|f| f.name.as_str()),
    );
    let mut note = format!(
        "Power off {} first: a lost host must never come back with its old data.",
        if lost.is_empty() {
            "every lost host".to_string()
        } else {
            lost.join(", ")
        }
    );
    if from.is_none() {
        note.push_str(" No member answers from here, so the freshest host is not known: find a host whose etcd data survived and add --from HOST.");
    } else {
        note.push_str(" --from names the reachable member with the most acknowledged entries (highest raft commit index, then applied index).");
    }
    if policy == QuorumLossPolicy::Fenced {
        note.push_str(" (recovery.quorum_loss_policy = fenced: the agents rebuild on their own once the fence command confirms the lost hosts are off.)");
    }
    Recovery {
        command,
        from: from.map(|f| f.name.clone()),
        from_applied_index: from.and_then(|f| f.applied_index),
        lost_hosts: lost,
        note,
        // The caller fills in the votes it saw (witnesses included).
        votes: Vec::new(),
        votes_needed: 0,
        agent_waits: None,
        agent_state: None,
    }
}

/// The votes diag sees: each configured node's agent, and whom it names the
/// freshest (`/status.recovery.freshest`).
fn votes_seen(
    agents: &[crate::diag::probe::AgentProbe],
    witnesses: &[crate::diag::probe::AgentProbe],
) -> Vec<crate::agent::recovery_plan::Vote> {
    agents
        .iter()
        .chain(witnesses)
        .map(|a| crate::agent::recovery_plan::Vote {
            voter: a.host.clone(),
            for_host: a
                .doc
                .as_ref()
                .ok()
                .and_then(|d| d.recovery.freshest.clone()),
        })
        .collect()
}

fn agent_view(doc: &StatusDoc) -> AgentView {
    AgentView {
        role: role_name(doc.role),
        coordinator: doc.coordinator,
        ready: doc.ready,
        ready_reason: doc.ready_reason.clone(),
        decision: doc.decision.clone(),
        queue_depth: doc.progress.queue_depth as u64,
        last_reconcile_age_s: doc.progress.last_reconcile_age_ms as f64 / 1000.0,
        stalled: doc.progress.stalled,
        ticks: doc.progress.ticks,
        etcd_restarts: u64::from(doc.etcd.restarts),
        epoch: doc.epoch,
        version: doc.version.clone(),
    }
}

/// Builds the report from the facts. Pure: no I/O.
pub fn build(f: &Facts<'_>) -> StatusReport {
    let cfg = f.cfg;
    let now_ms = f.now.timestamp_millis();
    let me = cfg.host.clone();
    let my_index = cfg.nodes.iter().position(|n| n.name == me);
    let members: Option<&Vec<ListedMember>> = f.probes.members.as_ref().map(|(_, m)| m);
    let cache_age = f.cache.as_ref().map(|c| age_since_ms(now_ms, c.saved_ms));

    // Leader: the member that says it is the leader.
    let leader_id = f.probes.etcd.iter().find_map(|p| {
        let s = p.status.as_ref().ok()?;
        (s.leader != 0 && s.leader == s.member_id).then_some(s.leader)
    });
    let reference_index = leader_id
        .and_then(|id| {
            f.probes.etcd.iter().find_map(|p| {
                p.status
                    .as_ref()
                    .ok()
                    .filter(|s| s.member_id == id)
                    .map(|s| s.raft_index)
            })
        })
        .or_else(|| {
            f.probes
                .etcd
                .iter()
                .filter_map(|p| p.status.as_ref().ok().map(|s| s.raft_index))
                .max()
        });

    let mut hosts = Vec::new();
    for (i, node) in cfg.nodes.iter().enumerate() {
        let etcd = f.probes.etcd.get(i).map(|p| &p.status);
        let agent = f.probes.agents.get(i).map(|p| &p.doc);
        let agent_doc = agent.and_then(|a| a.as_ref().ok());
        let cached = f
            .cache
            .as_ref()
            .and_then(|c| c.hosts.iter().find(|h| h.name == node.name));
        let listed =
            members.and_then(|ms| ms.iter().find(|m| same_url(&m.peer_url, &node.peer_url)));
        let is_me = Some(i) == my_index;
        let (role, role_origin) = match (members, listed) {
            (Some(_), Some(m)) => (
                (if m.is_learner { "standby" } else { "voter" }).to_string(),
                "member list",
            ),
            (Some(_), None) => {
                let agent_role = agent_doc.map(|d| d.role);
                let was_member = cached.is_some_and(|c| c.role == "voter" || c.role == "standby");
                let has_data = is_me && f.etcd_local.wal_present;
                if has_data || (agent_role.is_none() && was_member) {
                    ("removed".to_string(), "member list")
                } else {
                    ("spare".to_string(), "member list")
                }
            }
            (None, _) => match (agent_doc.map(|d| d.role), cached) {
                (Some(r), _) => (role_name(r), "agent"),
                (None, Some(c)) => (c.role.clone(), "last diag view"),
                (None, None) => {
                    let r = if i < cfg.cluster.voters {
                        "voter"
                    } else if i == cfg.cluster.voters {
                        "standby"
                    } else {
                        "spare"
                    };
                    (r.to_string(), "config order")
                }
            },
        };
        let agent_up = agent_doc.is_some();
        let agent_err = agent
            .and_then(|a| a.as_ref().err())
            .map(|e| format!("agent: {e}"));
        let row = match etcd {
            Some(Ok(s)) => HostRow {
                name: node.name.clone(),
                role,
                role_origin: role_origin.into(),
                etcd_up: true,
                agent_up,
                leader: s.leader != 0 && s.leader == s.member_id,
                leader_known: sees_leader(s),
                member_id: Some(format!("{:x}", s.member_id)),
                applied_index: Some(s.applied_index),
                raft_index: Some(s.raft_index),
                lag: if sees_leader(s) || leader_id.is_some() {
                    reference_index.map(|r| r.saturating_sub(s.applied_index))
                } else {
                    None
                },
                db_size: Some(s.db_size),
                db_in_use: Some(s.db_in_use),
                etcd_version: Some(s.version.clone()),
                errors: s.errors.clone(),
                source: Source::Live,
                age_s: Some(0.0),
                error: agent_err,
            },
            other => {
                let etcd_err = match other {
                    Some(Err(e)) => format!("etcd: {e}"),
                    _ => "etcd: not probed".into(),
                };
                let error = Some(match agent_err {
                    Some(a) => format!("{etcd_err}; {a}"),
                    None => etcd_err,
                });
                // Last known: this host's data dir, else diag's last live view.
                let local_db = if is_me {
                    f.etcd_local.db_file.as_ref()
                } else {
                    None
                };
                match (cached, local_db) {
                    (Some(c), _) => HostRow {
                        role,
                        role_origin: role_origin.into(),
                        etcd_up: false,
                        agent_up,
                        leader: false,
                        leader_known: false,
                        lag: None,
                        errors: Vec::new(),
                        source: Source::LastKnown,
                        age_s: cache_age.map(|a| a + c.age_s.unwrap_or(0.0)),
                        error,
                        db_size: local_db.map(|d| d.bytes as i64).or(c.db_size),
                        ..c.clone()
                    },
                    // Only the db file on disk, or nothing at all.
                    (None, d) => HostRow {
                        name: node.name.clone(),
                        role,
                        role_origin: role_origin.into(),
                        etcd_up: false,
                        agent_up,
                        leader: false,
                        leader_known: false,
                        member_id: None,
                        applied_index: None,
                        raft_index: None,
                        lag: None,
                        db_size: d.map(|d| d.bytes as i64),
                        db_in_use: None,
                        etcd_version: None,
                        errors: Vec::new(),
                        source: if d.is_some() {
                            Source::LastKnown
                        } else {
                            Source::Unavailable
                        },
                        age_s: d.and_then(|d| d.age_s),
                        error,
                    },
                }
            }
        };
        hosts.push(row);
    }

    // Leader by name: the host whose member says so, else the member list.
    let leader = hosts
        .iter()
        .find(|h| h.leader)
        .map(|h| h.name.clone())
        .or_else(|| {
            let id = f.probes.etcd.iter().find_map(|p| {
                p.status
                    .as_ref()
                    .ok()
                    .filter(|s| sees_leader(s))
                    .map(|s| s.leader)
            })?;
            let m = members?.iter().find(|m| m.id == id)?;
            cfg.nodes
                .iter()
                .find(|n| same_url(&n.peer_url, &m.peer_url))
                .map(|n| n.name.clone())
        });

    let voters: Vec<String> = hosts
        .iter()
        .filter(|h| h.role == "voter")
        .map(|h| h.name.clone())
        .collect();
    let agents_say: Vec<AgentSays> = f
        .probes
        .agents
        .iter()
        .filter_map(|a| {
            let d = a.doc.as_ref().ok()?;
            Some(AgentSays {
                host: a.host.clone(),
                quorum: d.quorum,
            })
        })
        .collect();
    let (qstate, mut qreason) = decide_quorum(&hosts, &agents_say, &voters);
    // Nothing answered because this command could not even load the site's
    // TLS key: a permission problem here, not power or network out there.
    if qstate == QuorumState::Unknown
        && let Some(why) = f.probes.etcd.iter().find_map(|p| {
            p.status
                .as_ref()
                .err()
                .filter(|e| e.contains(crate::tls::NOT_READABLE))
        })
    {
        qreason = format!("the site was not probed: {why}");
    }
    let quorum = QuorumView {
        state: qstate,
        reason: qreason,
        reachable_voters: hosts
            .iter()
            .filter(|h| h.role == "voter" && h.source == Source::Live && h.etcd_up)
            .map(|h| h.name.clone())
            .collect(),
        voters: voters.clone(),
        agents_say,
    };

    // This host.
    let my_agent = my_index.and_then(|i| f.probes.agents.get(i));
    let my_etcd = my_index.and_then(|i| f.probes.etcd.get(i));
    let my_row = my_index.and_then(|i| hosts.get(i));
    let epoch = my_agent
        .and_then(|a| a.doc.as_ref().ok())
        .map(|d| d.epoch)
        .or_else(|| {
            f.journal
                .as_ref()
                .ok()
                .and_then(|j| j.facts.get("epoch"))
                .and_then(|e| e.parse().ok())
        });
    let this_host = ThisHost {
        name: me.clone(),
        role: my_row
            .map(|r| r.role.clone())
            .unwrap_or_else(|| "unknown".into()),
        role_source: my_row
            .map(|r| match r.role_origin.as_str() {
                "member list" | "agent" => Source::Live,
                "last diag view" => Source::LastKnown,
                _ => Source::Unavailable,
            })
            .unwrap_or(Source::Unavailable),
        agent_api: my_agent.is_some_and(|a| a.doc.is_ok()),
        agent_error: my_agent.and_then(|a| a.doc.as_ref().err().cloned()),
        agent_pids: f.agent_pids.clone(),
        etcd_api: my_etcd.is_some_and(|e| e.status.is_ok()),
        etcd_error: my_etcd.and_then(|e| e.status.as_ref().err().cloned()),
        etcd_local: f.etcd_local.clone(),
        epoch,
    };

    // The agent's own view.
    let agent = match my_agent.map(|a| &a.doc) {
        Some(Ok(doc)) => Section::live("agent /status", agent_view(doc)),
        other => {
            let why = match other {
                Some(Err(e)) => format!("the agent at {} does not answer: {e}", agent_url(cfg)),
                _ => "this host is not among the configured nodes".into(),
            };
            match f.cache.as_ref().and_then(|c| c.agent.clone()) {
                Some(a) => Section::last_known("last diag view", cache_age, Some(why), a),
                None => Section::unavailable("agent /status", why),
            }
        }
    };

    let alarms = match &f.probes.alarms {
        Ok(a) => Section::live("etcd Alarm (get)", a.clone()),
        Err(e) => Section::unavailable("etcd Alarm (get)", e.clone()),
    };

    let snapshots = match &f.snapshots {
        Ok(files) => {
            let latest = files.first().cloned();
            let mut latest_on = Vec::new();
            let mut peers_unknown = Vec::new();
            if let Some(l) = &latest {
                latest_on.push(me.clone());
                for (host, list) in &f.probes.snapshot_lists {
                    if *host == me {
                        continue;
                    }
                    match list {
                        Ok(names) if names.contains(&l.name) => latest_on.push(host.clone()),
                        Ok(_) => {}
                        Err(e) => peers_unknown.push(format!("{host}: {e}")),
                    }
                }
            }
            Section::live(
                format!("{} (directory listing)", cfg.paths.snapshot_dir.display()),
                SnapshotsView {
                    dir: cfg.paths.snapshot_dir.display().to_string(),
                    count: files.len(),
                    latest,
                    latest_on,
                    peers_unknown,
                    files: files.iter().take(50).cloned().collect(),
                    space: my_agent
                        .and_then(|a| a.doc.as_ref().ok())
                        .and_then(|d| d.snapshot_space.clone()),
                    scrub: my_agent
                        .and_then(|a| a.doc.as_ref().ok())
                        .and_then(|d| d.snapshot_scrub.clone()),
                },
            )
        }
        Err(e) => Section::unavailable(cfg.paths.snapshot_dir.display().to_string(), e.clone()),
    };

    let buffer = match &f.buffer {
        Ok(s) => Section::live(
            format!("{} (read-only inspect)", cfg.paths.buffer_dir.display()),
            BufferView {
                dir: cfg.paths.buffer_dir.display().to_string(),
                budget_bytes: s.budget_bytes,
                total_bytes: s.total_bytes_on_disk,
                classes: s
                    .classes
                    .iter()
                    .map(|c| BufferClass {
                        class: c.class.clone(),
                        configured: c.configured,
                        samples: c.samples,
                        bytes: c.bytes_on_disk,
                        oldest_ms: c.oldest_ms,
                        oldest_age_s: c.oldest_ms.map(|o| age_since_ms(now_ms, o)),
                        shed_samples: c.shed_samples,
                        shed_bytes: c.shed_bytes,
                        expired_samples: c.expired_samples,
                        dropped_incoming: c.dropped_incoming,
                        corrupt_frames: c.corrupt_frames,
                    })
                    .collect(),
            },
        ),
        Err(e) => Section::unavailable(cfg.paths.buffer_dir.display().to_string(), e.clone()),
    };

    let link = link_section(
        cfg,
        my_agent.and_then(|a| a.doc.as_ref().ok()),
        f.cache.as_ref(),
        cache_age,
    );

    let journal = journal_section(f, my_agent.and_then(|a| a.doc.as_ref().ok()), now_ms);

    // Verdict, headline and advice.
    let mut advice = Vec::new();
    let recovery_plan = (qstate == QuorumState::Lost).then(|| {
        let mut r = recovery(
            &cfg.host,
            &f.config_path,
            &hosts,
            &voters,
            cfg.recovery.quorum_loss_policy,
        );
        r.votes = votes_seen(&f.probes.agents, &f.probes.witnesses);
        r.votes_needed = crate::agent::recovery_plan::majority(cfg.votes());
        let mine = my_agent.and_then(|a| a.doc.as_ref().ok());
        r.agent_waits = mine.and_then(|d| d.recovery.wait);
        r.agent_state = mine
            .map(|d| d.recovery.state.clone())
            .filter(|s| !s.is_empty());
        r
    });
    let mut verdict;
    let mut headline;
    match qstate {
        QuorumState::Lost => {
            verdict = Verdict::QuorumLost;
            let r = recovery_plan.as_ref();
            headline = format!(
                "QUORUM LOST: {}. Recover with: {}",
                quorum.reason,
                r.map(|r| r.command.as_str()).unwrap_or("edgeplane recover")
            );
            if let Some(r) = r {
                if let Some(state) = &r.agent_state {
                    advice.push(format!("This host's agent: {state}"));
                }
                advice.push(r.note.clone());
                advice.push(format!("Then run: {}", r.command));
                advice.push(format!(
                    "Votes ({} of {} needed for an automatic rebuild): {}",
                    r.votes_needed,
                    r.votes.len(),
                    r.votes
                        .iter()
                        .map(|v| format!(
                            "{} -> {}",
                            v.voter,
                            v.for_host.as_deref().unwrap_or("(no answer)")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        QuorumState::Unknown => {
            verdict = Verdict::QuorumUnknown;
            headline = format!("QUORUM UNKNOWN: {}.", quorum.reason);
        }
        QuorumState::Ok => {
            let mut issues = Vec::new();
            let down: Vec<&str> = hosts
                .iter()
                .filter(|h| (h.role == "voter" || h.role == "standby") && !h.etcd_up)
                .map(|h| h.name.as_str())
                .collect();
            if !down.is_empty() {
                issues.push(format!("members not answering: {}", down.join(", ")));
            }
            let standbys = hosts.iter().filter(|h| h.role == "standby").count();
            if standbys == 0 && cfg.nodes.len() > cfg.cluster.voters {
                issues.push("no standby".to_string());
            }
            if voters.len() < cfg.cluster.voters {
                issues.push(format!(
                    "{} voters of {} configured",
                    voters.len(),
                    cfg.cluster.voters
                ));
            }
            if !this_host.agent_api {
                issues.push(format!("the agent on {me} does not answer"));
            }
            if let Some(a) = &agent.data
                && agent.source == Source::Live
                && a.stalled
            {
                issues.push(format!("the agent on {me} has stalled"));
            }
            if alarms.data.as_ref().is_some_and(|a| !a.is_empty()) {
                issues.push("etcd alarms raised".to_string());
            }
            if issues.is_empty() {
                verdict = Verdict::Ok;
                headline = format!(
                    "OK: {} voters{}, leader {}; {} is {}.",
                    voters.len(),
                    if standbys > 0 { " + standby" } else { "" },
                    leader.as_deref().unwrap_or("?"),
                    me,
                    this_host.role
                );
            } else {
                verdict = Verdict::Degraded;
                headline = format!(
                    "DEGRADED: {}; quorum ok (leader {}).",
                    issues.join("; "),
                    leader.as_deref().unwrap_or("?")
                );
            }
        }
    }
    // A split brain outranks everything else: it is the first line.
    if let Some((host, split)) = f.probes.agents.iter().find_map(|a| {
        let d = a.doc.as_ref().ok()?;
        Some((a.host.clone(), d.split_brain.clone()?))
    }) {
        verdict = Verdict::SplitBrain;
        headline = format!(
            "SPLIT BRAIN: the agent on {host} keeps its cluster while {} report another live cluster or a newer epoch; no data is moved until a human chooses a side.",
            split.others.join(", ")
        );
        advice.insert(0, split.action);
    }
    if !this_host.agent_api {
        if this_host.agent_pids.is_empty() {
            advice.push(format!(
                "Start the agent on {me}: `systemctl start edgeplane` (it adopts a running etcd or restarts it)."
            ));
        } else {
            advice.push(format!(
                "The agent process on {me} (pid {}) runs but its API does not answer: see `journalctl -u edgeplane`; restarting it never stops etcd.",
                this_host.agent_pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(a) = alarms.data.as_ref().filter(|a| !a.is_empty()) {
        let kinds: Vec<&str> = a.iter().map(|x| x.alarm.as_str()).collect();
        if kinds.contains(&"NOSPACE") {
            advice.push("etcd raised NOSPACE: compact and defragment, then `etcdctl alarm disarm`; raise etcd.quota_backend_bytes if the data really grew.".into());
        }
        if kinds.contains(&"CORRUPT") {
            advice.push("etcd raised CORRUPT: a member's data differs from the others; replace that member (stop it, move its data dir aside, let it rejoin).".into());
        }
    }
    if buffer.source == Source::Unavailable && cfg.metrics.enabled {
        advice.push(format!(
            "Metrics buffer unreadable: {}",
            buffer.error.clone().unwrap_or_default()
        ));
    }
    if let Some(j) = &journal.data
        && j.pending > 0
    {
        advice.push(format!(
            "{} journal operation(s) pending: the agent closes them when it restarts; `edgeplane diag events` shows them.",
            j.pending
        ));
    }

    // Flap damping: hosts the agents removed recently, as this host's agent sees them.
    let damped = my_agent
        .and_then(|a| a.doc.as_ref().ok())
        .map(|d| d.flap.damped_hosts.as_slice())
        .unwrap_or_default();
    for d in damped {
        advice.push(format!(
            "{} flaps: removed {} time(s) within cluster.flap_window, so it is removed again only after {}s unreachable ({}x failure_detection). Look at that host (GC pauses, disk stalls, load); `edgeplane diag events` shows the removals.",
            d.host, d.recent_removals, d.detection_s, d.factor,
        ));
    }

    StatusReport {
        schema: SCHEMA.into(),
        generated_at: f.now.to_rfc3339_opts(SecondsFormat::Millis, true),
        config: f.config_path.clone(),
        site: cfg.site.clone(),
        host: me,
        verdict,
        headline,
        advice,
        recovery: recovery_plan,
        quorum,
        leader,
        this_host,
        hosts,
        agent,
        alarms,
        snapshots,
        buffer,
        link,
        journal,
    }
}

fn agent_url(cfg: &Config) -> String {
    cfg.this_node()
        .map(|n| n.agent_url.clone())
        .unwrap_or_default()
}

fn link_section(
    cfg: &Config,
    doc: Option<&StatusDoc>,
    cache: Option<&Cache>,
    cache_age: Option<f64>,
) -> Section<LinkView> {
    if !cfg.uplink.enabled || !cfg.metrics.enabled {
        return Section::live(
            "config",
            LinkView {
                state: "disabled".into(),
                detail: if !cfg.metrics.enabled {
                    "metrics.enabled = false".into()
                } else {
                    "uplink.enabled = false".into()
                },
            },
        );
    }
    // The agent reports the metrics path under `metrics.link` once it is wired in.
    if let Some(d) = doc {
        if let Some(m) = &d.metrics {
            let link = &m.link;
            let mut detail = format!("{} consecutive failures", link.consecutive_failures);
            if let Some(e) = &link.last_error {
                detail.push_str(&format!(
                    "; last error: {}",
                    crate::diag::redact::text(e, &Default::default())
                ));
            }
            // The region refuses the backlog for its age or order: the
            // cause and the fix, first.
            if let Some(refused) = &m.backlog_refused {
                detail = format!(
                    "BACKLOG REFUSED (kept in the buffer, retried every minute): {}; {}; {detail}",
                    crate::diag::redact::text(&refused.reason, &Default::default()),
                    refused.fix
                );
            }
            return Section::live(
                "agent /status metrics.link",
                LinkView {
                    state: link.state.to_string(),
                    detail,
                },
            );
        }
        return Section::unavailable(
            "agent /status",
            "the agent does not report the uplink link state (no `metrics.link` in /status)",
        );
    }
    match cache.and_then(|c| c.link.clone()) {
        Some(l) => Section::last_known(
            "last diag view",
            cache_age,
            Some("the agent does not answer".into()),
            l,
        ),
        None => Section::unavailable("agent /status", "the agent does not answer"),
    }
}

fn journal_section(f: &Facts<'_>, doc: Option<&StatusDoc>, now_ms: i64) -> Section<JournalSummary> {
    let summarize = |ops: &[Op]| JournalSummary {
        records_read: ops.len(),
        pending: ops.iter().filter(|o| o.outcome == Outcome::Pending).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Failed).count(),
        damped_removals: ops
            .iter()
            .filter(|o| o.outcome == Outcome::Done && o.damped())
            .count(),
        last: ops
            .last()
            .map(|o| crate::diag::events::EventRow::from_op(o, now_ms)),
    };
    match &f.journal {
        Ok(j) if doc.is_some() => Section::live(j.how.clone(), summarize(&j.ops)),
        Ok(j) => Section::last_known(
            j.how.clone(),
            j.file_age_s,
            Some("the agent does not answer: the journal as the agent last wrote it".into()),
            summarize(&j.ops),
        ),
        Err(e) => match doc {
            Some(d) => Section {
                source: Source::Live,
                age_s: Some(0.0),
                origin: "agent /status journal.recent (last 20)".into(),
                error: Some(e.clone()),
                data: Some(summarize(&d.journal.recent)),
            },
            None => Section::unavailable(
                f.cfg
                    .paths
                    .state_dir
                    .join("state.redb")
                    .display()
                    .to_string(),
                e.clone(),
            ),
        },
    }
}
