//! The human report; line one is the verdict.

use super::*;

impl StatusReport {
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Ok => 0,
            Verdict::Degraded | Verdict::QuorumUnknown => 1,
            Verdict::QuorumLost | Verdict::SplitBrain => 2,
        }
    }
}

fn mark<T>(s: &Section<T>) -> String {
    match (s.source, s.age_s) {
        (Source::Live, _) => "[live]".into(),
        (Source::LastKnown, Some(a)) => format!("[last-known, {} old]", human_age(a)),
        (Source::LastKnown, None) => "[last-known]".into(),
        (Source::Unavailable, _) => "[unavailable]".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The human report. Line one is the verdict.
pub fn render(r: &StatusReport) -> String {
    let mut o = String::new();
    o.push_str(&r.headline);
    o.push('\n');
    for a in &r.advice {
        o.push_str(&format!("  -> {a}\n"));
    }
    o.push('\n');
    o.push_str(&format!(
        "Site {}, host {}, config {}\n",
        r.site, r.host, r.config
    ));
    o.push_str(
        &format!("Quorum: {:?} — {}\n", r.quorum.state, r.quorum.reason)
            .replace("Ok —", "ok —")
            .replace("Lost —", "LOST —")
            .replace("Unknown —", "unknown —"),
    );

    // This host.
    let t = &r.this_host;
    let origin = r
        .hosts
        .iter()
        .find(|h| h.name == t.name)
        .map(|h| h.role_origin.clone())
        .unwrap_or_default();
    o.push_str(&format!(
        "\nThis host: {} ({}, from the {origin})\n",
        t.name, t.role
    ));
    o.push_str(&format!(
        "  agent    {}{}\n",
        if t.agent_api {
            "answers".to_string()
        } else {
            format!(
                "does not answer ({})",
                t.agent_error.clone().unwrap_or_default()
            )
        },
        if t.agent_pids.is_empty() {
            if t.agent_api {
                String::new()
            } else {
                "; no agent process with this config".into()
            }
        } else {
            format!(
                "; process pid {}",
                t.agent_pids
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    ));
    let e = &t.etcd_local;
    o.push_str(&format!(
        "  etcd     {}; pid file {}{}\n",
        if t.etcd_api {
            "answers".to_string()
        } else {
            format!(
                "does not answer ({})",
                t.etcd_error.clone().unwrap_or_default()
            )
        },
        opt(e.pid_file),
        match (e.pid_file, e.pid_alive, e.pid_is_etcd) {
            (None, _, _) => String::new(),
            (Some(_), true, true) => " (running)".into(),
            (Some(_), true, false) => " (alive but not an etcd!)".into(),
            (Some(_), false, _) => " (not running)".into(),
        }
    ));
    o.push_str(&format!(
        "  data dir {}: {}{}{}\n",
        e.data_dir,
        match &e.db_file {
            Some(d) => format!(
                "db {} (written {} ago)",
                human_bytes(d.bytes),
                d.age_s.map(human_age).unwrap_or_default()
            ),
            None if e.data_dir_exists => "no member/snap/db".into(),
            None => "missing".into(),
        },
        if e.wal_present {
            format!(", wal {} files {}", e.wal_files, human_bytes(e.wal_bytes))
        } else {
            ", no wal".into()
        },
        if e.moved_aside.is_empty() {
            String::new()
        } else {
            format!(", {} old data dir(s) moved aside", e.moved_aside.len())
        }
    ));
    for err in &e.errors {
        o.push_str(&format!("  ! {err}\n"));
    }
    if let Some(ep) = t.epoch {
        o.push_str(&format!("  epoch    {ep}\n"));
    }

    // Agent.
    o.push_str(&format!("\nAgent {}\n", mark(&r.agent)));
    match &r.agent.data {
        Some(a) => {
            o.push_str(&format!(
                "  role {}, coordinator {}, ready {} ({}), queue depth {}, last reconcile {} ago{}\n",
                a.role,
                if a.coordinator { "yes" } else { "no" },
                if a.ready { "yes" } else { "no" },
                a.ready_reason,
                a.queue_depth,
                human_age(a.last_reconcile_age_s),
                if a.stalled { ", STALLED" } else { "" }
            ));
            o.push_str(&format!("  decision: {}\n", a.decision));
            if let Some(err) = &r.agent.error {
                o.push_str(&format!("  ! {err}\n"));
            }
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.agent.error.clone().unwrap_or_default()
        )),
    }

    // Members.
    o.push_str(&format!(
        "\nHosts (leader: {})\n",
        r.leader.clone().unwrap_or_else(|| "none".into())
    ));
    let mut rows = vec![
        [
            "HOST", "ROLE", "ETCD", "AGENT", "APPLIED", "LAG", "DB", "IN USE", "SOURCE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for h in &r.hosts {
        rows.push(vec![
            format!("{}{}", h.name, if h.leader { " *" } else { "" }),
            h.role.clone(),
            if h.etcd_up {
                "up".into()
            } else {
                "down".into()
            },
            if h.agent_up {
                "up".into()
            } else {
                "down".into()
            },
            opt(h.applied_index),
            opt(h.lag),
            h.db_size
                .map(|b| human_bytes(b.max(0) as u64))
                .unwrap_or_else(|| "-".into()),
            h.db_in_use
                .map(|b| human_bytes(b.max(0) as u64))
                .unwrap_or_else(|| "-".into()),
            match (h.source, h.age_s) {
                (Source::LastKnown, Some(a)) => format!("last-known {} old", human_age(a)),
                (s, _) => s.as_str().to_string(),
            },
        ]);
    }
    o.push_str(&table(&rows, "  "));
    for h in &r.hosts {
        for e in &h.errors {
            o.push_str(&format!("  ! {}: {e}\n", h.name));
        }
        if !h.etcd_up
            && let Some(e) = &h.error
        {
            o.push_str(&format!("  ! {}: {e}\n", h.name));
        }
    }

    // Alarms.
    o.push_str(&format!("\nAlarms {}: ", mark(&r.alarms)));
    match &r.alarms.data {
        Some(a) if a.is_empty() => o.push_str("none\n"),
        Some(a) => o.push_str(&format!(
            "{}\n",
            a.iter()
                .map(|x| format!("{} on member {}", x.alarm, x.member_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => o.push_str(&format!("{}\n", r.alarms.error.clone().unwrap_or_default())),
    }

    // Snapshots.
    o.push_str(&format!("\nSnapshots {}\n", mark(&r.snapshots)));
    if let Some(sp) = r.snapshots.data.as_ref().and_then(|s| s.space.as_ref()) {
        o.push_str(&format!("  {}\n", space_line(sp)));
        if let Some(last) = &sp.last_refusal {
            o.push_str(&format!("  ! last refused: {last}\n"));
        }
    }
    if let Some(sc) = r.snapshots.data.as_ref().and_then(|s| s.scrub.as_ref()) {
        o.push_str(&format!("  {}\n", scrub_line(sc)));
        if let Some(last) = sc.last_corrupt.as_ref().filter(|_| sc.corrupt > 0) {
            o.push_str(&format!("  ! last corrupt: {last}\n"));
        }
        if !sc.unrepaired.is_empty() {
            o.push_str(&format!(
                "  ! set aside, no intact copy fetched from a peer yet: {}\n",
                sc.unrepaired.join(", ")
            ));
        }
    }
    match &r.snapshots.data {
        Some(s) if s.count == 0 => o.push_str(&format!("  none in {}\n", s.dir)),
        Some(s) => {
            if let Some(l) = &s.latest {
                o.push_str(&format!(
                    "  latest {} (by {}, {}, {} old); held by: {}; {} snapshot file(s) in {}\n",
                    l.name,
                    l.origin.as_deref().unwrap_or("?"),
                    human_bytes(l.bytes),
                    l.age_s.map(human_age).unwrap_or_default(),
                    s.latest_on.join(", "),
                    s.count,
                    s.dir
                ));
                if !s.peers_unknown.is_empty() {
                    o.push_str(&format!(
                        "  peers not asked successfully: {}\n",
                        s.peers_unknown.join("; ")
                    ));
                }
                for f in s.files.iter().filter(|f| f.footer_error.is_some()) {
                    o.push_str(&format!(
                        "  ! {} is damaged: {}\n",
                        f.name,
                        f.footer_error.clone().unwrap_or_default()
                    ));
                }
            }
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.snapshots.error.clone().unwrap_or_default()
        )),
    }

    // Buffer and link.
    o.push_str(&format!("\nLink {}: ", mark(&r.link)));
    match &r.link.data {
        Some(l) => o.push_str(&format!(
            "{} {}\n",
            l.state,
            if l.detail.is_empty() {
                String::new()
            } else {
                format!("({})", l.detail)
            }
        )),
        None => o.push_str(&format!(
            "unknown ({})\n",
            r.link.error.clone().unwrap_or_default()
        )),
    }
    o.push_str(&format!("\nBuffer {}\n", mark(&r.buffer)));
    match &r.buffer.data {
        Some(b) => {
            o.push_str(&format!(
                "  {}: {} of {} budget\n",
                b.dir,
                human_bytes(b.total_bytes),
                human_bytes(b.budget_bytes)
            ));
            let mut rows = vec![
                [
                    "CLASS", "SAMPLES", "BYTES", "OLDEST", "SHED", "EXPIRED", "DROPPED",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ];
            for c in &b.classes {
                rows.push(vec![
                    c.class.clone(),
                    c.samples.to_string(),
                    human_bytes(c.bytes),
                    c.oldest_age_s
                        .map(|a| format!("{} ago", human_age(a)))
                        .unwrap_or_else(|| "-".into()),
                    format!("{} ({})", c.shed_samples, human_bytes(c.shed_bytes)),
                    c.expired_samples.to_string(),
                    c.dropped_incoming.to_string(),
                ]);
            }
            o.push_str(&table(&rows, "  "));
        }
        None => o.push_str(&format!(
            "  {}\n",
            r.buffer.error.clone().unwrap_or_default()
        )),
    }

    // Journal.
    o.push_str(&format!("\nJournal {}: ", mark(&r.journal)));
    match &r.journal.data {
        Some(j) => {
            o.push_str(&format!(
                "{} records, {} pending, {} failed",
                j.records_read, j.pending, j.failed
            ));
            if j.damped_removals > 0 {
                o.push_str(&format!(
                    ", {} flap-damped removal(s) (a host removed again within cluster.flap_window)",
                    j.damped_removals
                ));
            }
            if let Some(l) = &j.last {
                o.push_str(&format!(
                    "; last: {} {} {} ({} ago)",
                    l.kind,
                    l.target,
                    l.outcome,
                    human_age(l.age_s)
                ));
            }
            o.push('\n');
            if let Some(e) = &r.journal.error {
                o.push_str(&format!("  ({e})\n"));
            }
        }
        None => o.push_str(&format!(
            "{}\n",
            r.journal.error.clone().unwrap_or_default()
        )),
    }
    o
}
