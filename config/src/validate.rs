//! Semantic checks on the resolved config: every problem is collected, each
//! pointed at the key in the file that causes it where the file has one.
//!
//! Errors make the file unusable; warnings are legal but risky choices.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use crate::document::Document;
use crate::model::{Config, FsyncPolicy, Node, QuorumLossPolicy};
use crate::problem::{Problem, Severity};
use crate::units::{format_bytes, format_duration};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Smallest buffer segment: below this the per-file overhead dominates.
pub const MIN_SEGMENT_BYTES: u64 = MIB;
/// Largest buffer segment: shedding works a segment at a time, so a huge
/// segment makes shedding coarse.
pub const MAX_SEGMENT_BYTES: u64 = 256 * MIB;
/// Smallest buffer budget regardless of segment size.
pub const MIN_BUDGET_BYTES: u64 = 16 * MIB;
/// etcd refuses an election timeout above 50 s.
const MAX_ELECTION_TIMEOUT: Duration = Duration::from_secs(50);
/// etcd's documented recommended maximum backend quota.
const MAX_RECOMMENDED_QUOTA: u64 = 8 * GIB;
/// etcd flags edgeplane computes itself; setting them in `etcd.extra_args`
/// would fight the agent.
const MANAGED_ETCD_FLAGS: &[&str] = &[
    "--name",
    "--data-dir",
    "--initial-cluster",
    "--initial-cluster-state",
    "--initial-cluster-token",
    "--initial-advertise-peer-urls",
    "--advertise-client-urls",
    "--listen-peer-urls",
    "--listen-client-urls",
    "--heartbeat-interval",
    "--election-timeout",
    "--quota-backend-bytes",
    "--pre-vote",
    "--force-new-cluster",
    "--cert-file",
    "--key-file",
    "--trusted-ca-file",
    "--client-cert-auth",
    "--peer-cert-file",
    "--peer-key-file",
    "--peer-trusted-ca-file",
    "--peer-client-cert-auth",
];
/// Labels the metrics agent sets itself.
const RESERVED_LABELS: &[&str] = &["site", "instance", "job"];

struct Checker<'a> {
    doc: &'a Document,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// Report a problem on `key`, located at the first of `at` the file
    /// writes (else at `key` or its nearest written ancestor).
    fn push_at(&mut self, severity: Severity, key: &str, at: &[&str], message: String) {
        if self.doc.is_broken(key) {
            return;
        }
        let loc = at
            .iter()
            .find(|k| self.doc.keys.contains_key(**k))
            .and_then(|k| self.doc.locate(k))
            .or_else(|| self.doc.locate(key));
        self.problems.push(Problem {
            severity,
            file: self.doc.origin.clone(),
            line: loc.map(|l| l.line),
            column: loc.map(|l| l.column),
            key: Some(key.to_string()),
            message,
        });
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.push_at(Severity::Error, key, &[], message.into());
    }

    fn error_at(&mut self, key: &str, at: &[&str], message: impl Into<String>) {
        self.push_at(Severity::Error, key, at, message.into());
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.push_at(Severity::Warning, key, &[], message.into());
    }

    fn line_of(&self, key: &str) -> String {
        match self.doc.keys.get(key) {
            Some(l) => format!(" (first defined on line {})", l.line),
            None => String::new(),
        }
    }

    /// A required string: reports "is required" or "must not be empty".
    fn required(&mut self, key: &str, value: &str) -> bool {
        if !value.trim().is_empty() {
            return true;
        }
        if self.doc.keys.contains_key(key) {
            self.error(key, "must not be empty");
        } else {
            self.error(key, "is required");
        }
        false
    }

    fn positive(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.error(key, "must be longer than 0s");
        }
    }

    fn absolute(&mut self, key: &str, p: &Path) {
        if !p.is_absolute() {
            self.error(
                key,
                format!(
                    "{:?} must be an absolute path (start with /)",
                    p.display().to_string()
                ),
            );
        }
    }
}

/// A parsed `http://` / `https://` URL, enough to compare and check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

/// Parse `http(s)://host[:port][/path]` with the `url` crate (the WHATWG parser
/// browsers and reqwest use), then hold the host to what etcd, Go's resolver and
/// the TLS name check accept. The WHATWG parser is lenient where a config must not
/// be: it takes `a..b` as a name and reads `10.1` or `0x0a.0.0.1` as IPv4 addresses,
/// so a typo would pass here and fail later inside etcd. Every error says what to write.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    if url.chars().any(char::is_whitespace) {
        return Err("contains spaces; remove them".into());
    }
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(
            "must not contain a user name or password; put credentials in their own files".into(),
        );
    }
    // The host and port as written: `url` normalises both, and drops a default port.
    let (raw_host, raw_port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or("has an unclosed [ in the IPv6 address; write it as [fd00::1]")?;
        let port = match &v6[close + 1..] {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("has text after the IPv6 address; write [fd00::1]:PORT")?,
            ),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if raw_host.is_empty() || raw_host == "[]" {
        return Err("has no host; write the host's address, e.g. https://10.0.0.1:2380".into());
    }
    if let Some(p) = raw_port
        && !matches!(p.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err(format!(
            "has an invalid port {p:?}; use a number from 1 to 65535"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::InvalidIpv6Address => format!(
            "{raw_host:?} is not a valid IPv6 address; write it in brackets, e.g. [fd00::1]"
        ),
        url::ParseError::InvalidIpv4Address => format!(
            "{raw_host:?} is not a valid IPv4 address: four numbers from 0 to 255, e.g. 10.0.0.1"
        ),
        url::ParseError::InvalidPort => {
            "has an invalid port; use a number from 1 to 65535".to_string()
        }
        other => format!("is not a valid URL ({other})"),
    })?;
    let host = match parsed.host() {
        None => {
            return Err("has no host; write the host's address, e.g. https://10.0.0.1:2380".into());
        }
        Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
        Some(url::Host::Ipv4(_) | url::Host::Domain(_)) => {
            check_host_syntax(raw_host)?;
            raw_host.to_ascii_lowercase()
        }
    };
    let port = match (parsed.port(), raw_port) {
        (Some(p), _) => Some(p),
        // `url` hides a port equal to the scheme's default; it was still written.
        (None, Some(_)) => parsed.port_or_known_default(),
        (None, None) => None,
    };
    let path = rest[end..].to_string();
    Ok(Endpoint {
        https,
        host,
        port,
        path,
    })
}

/// A host as etcd and TLS take it: a dotted-quad IPv4 address (each part 0-255,
/// nothing else that looks numeric), or a DNS name whose labels are 1-63 letters,
/// digits, `-` or `_`, not starting or ending with `-`, at most 253 characters.
fn check_host_syntax(host: &str) -> Result<(), String> {
    let example = "e.g. 10.0.0.1 or edge-1.example.net";
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let numeric_last = !last.is_empty()
        && (last.chars().all(|c| c.is_ascii_digit())
            || last.to_ascii_lowercase().starts_with("0x"));
    if numeric_last {
        return match host.parse::<std::net::Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "{host:?} is not a valid IPv4 address: four numbers from 0 to 255, e.g. 10.0.0.1"
            )),
        };
    }
    if host.len() > 253 {
        return Err(format!("host name {host:?} is longer than 253 characters"));
    }
    for label in host.strip_suffix('.').unwrap_or(host).split('.') {
        if label.is_empty() {
            return Err(format!(
                "host {host:?} has an empty part (two dots in a row, or a leading dot); {example}"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "host {host:?} has a part longer than 63 characters; {example}"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "host {host:?} may only hold letters, digits, '-', '_' and '.'; {example}"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host {host:?} has a part starting or ending with '-'; {example}"
            ));
        }
    }
    Ok(())
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_class(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_glob(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '*' | '?'))
}

/// Every semantic problem of `cfg`; `doc` locates them.
pub fn validate(cfg: &Config, doc: &Document) -> Vec<Problem> {
    let mut c = Checker {
        doc,
        problems: Vec::new(),
    };
    nodes(&mut c, cfg);
    cluster(&mut c, cfg);
    etcd(&mut c, cfg);
    paths(&mut c, cfg);
    snapshots_recovery_defrag(&mut c, cfg);
    metrics(&mut c, cfg);
    buffer(&mut c, cfg);
    uplink(&mut c, cfg);
    tls(&mut c, cfg);
    log(&mut c, cfg);
    c.problems
}

fn nodes(c: &mut Checker<'_>, cfg: &Config) {
    if c.required("host", &cfg.host) && !valid_name(&cfg.host) {
        c.error(
            "host",
            format!(
                "{:?} is not a valid host name (letters, digits, '.', '_', '-')",
                cfg.host
            ),
        );
    }
    c.required("site", &cfg.site);
    if cfg.nodes.is_empty() {
        if !c.doc.is_broken("nodes") {
            c.error(
                "nodes",
                if cfg.witnesses.is_empty() {
                    "at least one [[nodes]] entry is required (one per host of the site)"
                } else {
                    "every [[nodes]] entry is a witness: at least one must be an etcd host (leave out `role`)"
                },
            );
        }
        return;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut endpoints: HashMap<(String, u16), String> = HashMap::new();
    let mut all: Vec<&Node> = cfg.nodes.iter().chain(&cfg.witnesses).collect();
    all.sort_by_key(|n| n.file_index);
    for n in all {
        let i = n.file_index;
        let witness = n.role == crate::model::NodeRole::Witness;
        if witness {
            // A witness runs no etcd: an etcd URL there is a mistake (a host
            // meant as an etcd member, or a copy-paste), never ignored.
            for field in ["peer_url", "client_url"] {
                let key = format!("nodes[{i}].{field}");
                if c.doc.keys.contains_key(&key) {
                    c.error(
                        &key,
                        format!("a witness (role = \"witness\") runs the agent only, without etcd: remove `{field}`, or remove `role` if this host is meant to run an etcd member"),
                    );
                }
            }
        }
        let key = format!("nodes[{i}].name");
        if c.required(&key, &n.name) {
            if !valid_name(&n.name) {
                c.error(
                    &key,
                    format!(
                        "{:?} is not a valid host name (letters, digits, '.', '_', '-')",
                        n.name
                    ),
                );
            }
            if let Some(&first) = names.get(n.name.as_str()) {
                let at = c.line_of(&format!("nodes[{first}].name"));
                c.error(&key, format!("duplicate host name {:?}{at}", n.name));
            } else {
                names.insert(&n.name, i);
            }
        }
        let urls: &[(&str, &String)] = if witness {
            &[("agent_url", &n.agent_url)]
        } else {
            &[
                ("peer_url", &n.peer_url),
                ("client_url", &n.client_url),
                ("agent_url", &n.agent_url),
            ]
        };
        for &(field, url) in urls {
            let key = format!("nodes[{i}].{field}");
            if !c.required(&key, url) {
                continue;
            }
            match parse_url(url) {
                Err(e) => c.error(&key, format!("invalid URL {url:?}: {e}")),
                Ok(ep) => {
                    let Some(port) = ep.port else {
                        c.error(&key, format!("invalid URL {url:?}: needs an explicit port, e.g. http://10.0.0.1:2380"));
                        continue;
                    };
                    if !(ep.path.is_empty() || ep.path == "/") {
                        c.error(&key, format!("invalid URL {url:?}: must not have a path"));
                    }
                    match endpoints.get(&(ep.host.clone(), port)) {
                        Some(first) => {
                            let at = c.line_of(first);
                            c.error(&key, format!("duplicate URL: {url:?} uses the same host and port as `{first}`{at}"));
                        }
                        None => {
                            endpoints.insert((ep.host, port), key);
                        }
                    }
                }
            }
        }
    }
    if !cfg.host.is_empty()
        && !c.doc.is_broken("nodes")
        && cfg.node(&cfg.host).is_none()
        && cfg.witness(&cfg.host).is_none()
    {
        let all: Vec<&str> = cfg
            .nodes
            .iter()
            .chain(&cfg.witnesses)
            .map(|n| n.name.as_str())
            .collect();
        c.error(
            "host",
            format!(
                "this host {:?} is not one of the nodes ({}); add it to [[nodes]] or fix `host`",
                cfg.host,
                all.join(", ")
            ),
        );
    }
}

fn cluster(c: &mut Checker<'_>, cfg: &Config) {
    let v = cfg.cluster.voters;
    let n = cfg.nodes.len();
    if ![1, 3, 5].contains(&v) {
        c.error(
            "cluster.voters",
            format!("{v} voters: must be 1, 3 or 5 (an even count tolerates no more failures than one less, and more than 5 slows every write)"),
        );
    } else if n > 0 && v > n && !c.doc.is_broken("nodes") {
        c.error_at(
            "cluster.voters",
            &["cluster.voters", "nodes"],
            format!(
                "{v} voters but only {n} host{} in [[nodes]]",
                if n == 1 { "" } else { "s" }
            ),
        );
    } else if n > 0 && !c.doc.is_broken("nodes") {
        if n == 1 {
            c.push_at(
                Severity::Warning,
                "nodes",
                &["nodes"],
                "a single host: no standby and no fault tolerance; losing it loses the cluster until the host returns".into(),
            );
        } else if n == v {
            c.push_at(
                Severity::Warning,
                "cluster.voters",
                &["cluster.voters", "nodes"],
                format!("no standby host: all {n} hosts are voters, so a failed voter is not replaced automatically (the site keeps writing on the other {} of {n} until its host returns, but a second loss before then stops writes); add a host for a standby. Do not lower cluster.voters to make one: with fewer voters a single lost voter host can stop all writes", n - 1),
            );
        }
        if n == 3 && v == 1 {
            c.warn(
                "cluster.voters",
                "3 hosts with 1 voter: losing the voter's host is a quorum loss that stops all writes until recovery.quorum_loss_policy or a human acts; with voters = 3 (the default for 3 hosts) the loss of any one host needs no action",
            );
        }
        if n == 2 {
            c.warn(
                "nodes",
                "a 2-host site runs 1 voter and 1 standby: losing the voter's host is a quorum loss, recovered by recovery.quorum_loss_policy, not by automatic promotion",
            );
        }
        if n > v + 1 {
            let spares: Vec<&str> = cfg.nodes[v + 1..].iter().map(|n| n.name.as_str()).collect();
            c.warn(
                "nodes",
                format!("{n} hosts for {v} voters: etcd 3.4 allows one learner, so {} wait{} as cold spare{} (no data until the standby is promoted)",
                    spares.join(", "),
                    if spares.len() == 1 { "s" } else { "" },
                    if spares.len() == 1 { "" } else { "s" }),
            );
        }
    }
    if cfg.cluster.promotion_max_lag == 0 {
        c.error("cluster.promotion_max_lag", "must be at least 1: a learner is never exactly level with a leader that is taking writes, so 0 would block every promotion");
    }
    c.positive("cluster.failure_detection", cfg.cluster.failure_detection);
    c.positive("cluster.etcd_restart_grace", cfg.cluster.etcd_restart_grace);
    c.positive(
        "cluster.learner_stuck_after",
        cfg.cluster.learner_stuck_after,
    );
    c.positive("cluster.reconcile_interval", cfg.cluster.reconcile_interval);
    c.positive("cluster.flap_window", cfg.cluster.flap_window);
    if !cfg.cluster.flap_window.is_zero() && cfg.cluster.flap_window < cfg.cluster.failure_detection
    {
        c.error_at(
            "cluster.flap_window",
            &["cluster.flap_window", "cluster.failure_detection"],
            format!(
                "{} is shorter than cluster.failure_detection ({}): a removed host cannot even be detected again within it, so flap damping would never apply; the default is 10m",
                format_duration(cfg.cluster.flap_window),
                format_duration(cfg.cluster.failure_detection)
            ),
        );
    }
    if cfg.cluster.standby_behind_limit < cfg.cluster.learner_stuck_after {
        c.error_at(
            "cluster.standby_behind_limit",
            &["cluster.standby_behind_limit", "cluster.learner_stuck_after"],
            format!(
                "{} is shorter than cluster.learner_stuck_after ({}): a standby that has caught up once must get at least as long as one that never has, or a write burst costs the site its standby",
                format_duration(cfg.cluster.standby_behind_limit),
                format_duration(cfg.cluster.learner_stuck_after)
            ),
        );
    }
    if !cfg.cluster.failure_detection.is_zero()
        && cfg.cluster.failure_detection < cfg.etcd.election_timeout
    {
        c.warn(
            "cluster.failure_detection",
            format!(
                "{} is shorter than etcd.election_timeout ({}): an ordinary leader election may get a healthy voter replaced",
                format_duration(cfg.cluster.failure_detection),
                format_duration(cfg.etcd.election_timeout)
            ),
        );
    }
}

fn etcd(c: &mut Checker<'_>, cfg: &Config) {
    let e = &cfg.etcd;
    c.absolute("etcd.binary", &e.binary);
    c.positive("etcd.heartbeat", e.heartbeat);
    if !e.heartbeat.is_zero() && e.election_timeout < e.heartbeat * 5 {
        c.error_at(
            "etcd.election_timeout",
            &["etcd.election_timeout", "etcd.heartbeat"],
            format!(
                "{} must be at least 5 × etcd.heartbeat ({} × 5 = {}), or elections fire on ordinary jitter",
                format_duration(e.election_timeout),
                format_duration(e.heartbeat),
                format_duration(e.heartbeat * 5)
            ),
        );
    }
    if e.election_timeout > MAX_ELECTION_TIMEOUT {
        c.error(
            "etcd.election_timeout",
            "etcd refuses an election timeout above 50s",
        );
    }
    if e.quota_backend_bytes == 0 {
        c.error("etcd.quota_backend_bytes", "must be more than 0");
    } else if e.quota_backend_bytes > MAX_RECOMMENDED_QUOTA {
        c.warn(
            "etcd.quota_backend_bytes",
            format!(
                "{} is above etcd's recommended maximum of 8GiB",
                format_bytes(e.quota_backend_bytes)
            ),
        );
    }
    for (i, arg) in e.extra_args.iter().enumerate() {
        let flag = arg.split('=').next().unwrap_or(arg);
        if MANAGED_ETCD_FLAGS.contains(&flag) {
            c.error_at(
                &format!("etcd.extra_args[{i}]"),
                &["etcd.extra_args"],
                format!("{flag} is set by edgeplane from this config; remove it from extra_args"),
            );
        } else if !arg.starts_with("--") {
            c.error_at(
                &format!("etcd.extra_args[{i}]"),
                &["etcd.extra_args"],
                format!("{arg:?} is not a flag; write each flag as one \"--flag=value\" element"),
            );
        }
    }
}

fn paths(c: &mut Checker<'_>, cfg: &Config) {
    c.absolute("paths.root", &cfg.paths.root);
    let dirs = [
        ("paths.state_dir", &cfg.paths.state_dir),
        ("paths.snapshot_dir", &cfg.paths.snapshot_dir),
        ("paths.buffer_dir", &cfg.paths.buffer_dir),
        ("etcd.data_dir", &cfg.etcd.data_dir),
    ];
    for (key, dir) in dirs {
        c.absolute(key, dir);
    }
    for (i, (ka, a)) in dirs.iter().enumerate() {
        for (kb, b) in &dirs[i + 1..] {
            if a == b {
                c.error(
                    kb,
                    format!("is the same directory as {ka} ({})", a.display()),
                );
            } else if b.starts_with(a) || a.starts_with(b) {
                c.error(
                    kb,
                    format!(
                        "{} and {ka} ({}) are nested; each needs its own directory",
                        b.display(),
                        a.display()
                    ),
                );
            }
        }
    }
}

/// How many more voting nodes a site of `nodes` votes (etcd hosts and witnesses) with
/// `voters` etcd voters needs so that, after the loss policy `fenced` is
/// for (the fewest voters whose loss is a quorum loss), the rest are still a
/// strict majority of the votes (one per configured node); `None` when it
/// has enough. The agents rebuild by themselves only with such a majority.
pub fn fenced_vote_shortfall(nodes: usize, voters: usize) -> Option<usize> {
    let voters = voters.min(nodes);
    let lost = voters - voters / 2;
    // Each added node adds a vote that survives: (n + k) - lost > (n + k) / 2.
    (0..=nodes + 1)
        .find(|k| {
            let n = nodes + k;
            n - lost > n / 2
        })
        .filter(|k| *k > 0)
}

fn snapshots_recovery_defrag(c: &mut Checker<'_>, cfg: &Config) {
    let s = &cfg.snapshots;
    if s.enabled {
        c.positive("snapshots.interval", s.interval);
        if s.retain_count == 0 {
            c.error(
                "snapshots.retain_count",
                "must be at least 1 while snapshots are enabled",
            );
        }
        c.positive("snapshots.retain_age", s.retain_age);
        c.positive("snapshots.scrub_interval", s.scrub_interval);
    }

    let r = &cfg.recovery;
    if r.quorum_loss_policy == QuorumLossPolicy::Fenced {
        if r.fence_command.is_empty() {
            c.error_at(
                "recovery.fence_command",
                &["recovery.fence_command", "recovery.quorum_loss_policy"],
                "quorum_loss_policy = \"fenced\" needs a fence_command that powers off a lost host and exits 0 only once it is off",
            );
        } else if let Some(short) = fenced_vote_shortfall(cfg.votes(), cfg.cluster.voters) {
            let lost = cfg.cluster.voters - cfg.cluster.voters / 2;
            c.warn(
                "recovery.quorum_loss_policy",
                format!(
                    "fenced recovery cannot happen by itself here: with {} voter(s) a quorum loss is losing {lost}, \
                     which leaves {} of {} votes (one per etcd host and witness), and an automatic rebuild needs a strict majority ({}), so the \
                     survivors wait and print the command (a network cut must never let a minority with a working \
                     fence power off the majority); add {short} more host(s) or witness(es) ([[nodes]] with role = \"witness\": \
                     the agent only, on a small box or the site's router), or use policy manual",
                    cfg.cluster.voters,
                    cfg.votes().saturating_sub(lost),
                    cfg.votes(),
                    cfg.votes() / 2 + 1
                ),
            );
        }
    }
    if !cfg.witnesses.is_empty() && cfg.votes().is_multiple_of(2) && !c.doc.is_broken("nodes") {
        c.push_at(
            Severity::Warning,
            "nodes",
            &["nodes"],
            format!(
                "{} votes ({} etcd hosts, {} witnesses): an even count tolerates no more lost votes than one less; a witness helps where it makes the count odd",
                cfg.votes(),
                cfg.nodes.len(),
                cfg.witnesses.len()
            ),
        );
    }
    if let Some(first) = r.fence_command.first() {
        if first.trim().is_empty() {
            c.error(
                "recovery.fence_command",
                "the first element (the program to run) must not be empty",
            );
        }
        if !r.fence_command.iter().any(|a| a.contains("{host}")) {
            c.warn(
                "recovery.fence_command",
                "does not mention {host}: the command cannot know which host to fence",
            );
        }
    }
    if let Some(p) = &r.fence_environment_file {
        c.absolute("recovery.fence_environment_file", p);
    }
    c.positive("recovery.quorum_loss_window", r.quorum_loss_window);
    c.positive("recovery.self_fence_after", r.self_fence_after);
    if r.self_fence_after >= r.quorum_loss_window {
        c.error_at(
            "recovery.self_fence_after",
            &["recovery.self_fence_after", "recovery.quorum_loss_window"],
            "must be shorter than recovery.quorum_loss_window: a voter cut off from the vote majority must stop serving before the other side may fence it and rebuild",
        );
    }
    if !r.quorum_loss_window.is_zero() && r.quorum_loss_window < cfg.etcd.election_timeout {
        c.warn(
            "recovery.quorum_loss_window",
            "is shorter than etcd.election_timeout: a normal leader election may be taken for quorum loss",
        );
    }

    let d = &cfg.defrag;
    if !(d.free_ratio > 0.0 && d.free_ratio < 1.0) {
        c.error(
            "defrag.free_ratio",
            format!(
                "{} must be between 0 and 1 (exclusive), e.g. 0.5",
                d.free_ratio
            ),
        );
    }
    if d.enabled {
        c.positive("defrag.check_interval", d.check_interval);
    }
}

fn metrics(c: &mut Checker<'_>, cfg: &Config) {
    let m = &cfg.metrics;
    if m.enabled {
        c.positive("metrics.scrape_interval", m.scrape_interval);
        c.positive("metrics.scrape_timeout", m.scrape_timeout);
        if m.scrape_timeout > m.scrape_interval {
            c.error(
                "metrics.scrape_timeout",
                format!(
                    "{} is longer than metrics.scrape_interval ({})",
                    format_duration(m.scrape_timeout),
                    format_duration(m.scrape_interval)
                ),
            );
        }
    }
    let classes_ok = !c.doc.is_broken("metrics.classes");
    if m.classes.is_empty() {
        c.error(
            "metrics.classes",
            "needs at least one priority class, e.g. [\"critical\", \"normal\", \"low\"]",
        );
    }
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for cl in &m.classes {
        if !valid_class(cl) {
            c.error("metrics.classes", format!("{cl:?} is not a valid class name (lowercase letters, digits, '_', '-'; it names a directory)"));
        }
        if seen.insert(cl, ()).is_some() {
            c.error("metrics.classes", format!("class {cl:?} is listed twice"));
        }
    }
    let known = |cl: &str| m.classes.iter().any(|k| k == cl);
    let list = m.classes.join(", ");
    let check_classes = classes_ok && !m.classes.is_empty();
    if check_classes && !known(&m.default_class) {
        if c.doc.sets("metrics.default_class") {
            c.error(
                "metrics.default_class",
                format!(
                    "{:?} is not one of metrics.classes ({list})",
                    m.default_class
                ),
            );
        } else {
            c.error_at(
                "metrics.default_class",
                &["metrics.classes"],
                format!("defaults to {:?}, which is not one of metrics.classes ({list}); set metrics.default_class", m.default_class),
            );
        }
    }
    let file_rules = c.doc.sets("metrics.rules");
    if check_classes && !file_rules {
        // The profile's rules against the file's classes: one problem, not one per rule.
        let mut missing: Vec<&str> = m
            .rules
            .iter()
            .map(|r| r.class.as_str())
            .filter(|cl| !known(cl))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            c.error(
                "metrics.classes",
                format!(
                    "the {} profile's default rules use class{} {} missing from metrics.classes; add {} or write your own [[metrics.rules]]",
                    cfg.profile,
                    if missing.len() == 1 { "" } else { "es" },
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" },
                ),
            );
        }
    }
    for (i, r) in m.rules.iter().enumerate() {
        let base = format!("metrics.rules[{i}]");
        let mkey = format!("{base}.metric");
        if c.required(&mkey, &r.metric) && !valid_glob(&r.metric) {
            c.error(
                &mkey,
                format!(
                    "{:?} is not a metric name glob (letters, digits, '_', ':', '*', '?')",
                    r.metric
                ),
            );
        }
        let ckey = format!("{base}.class");
        if c.required(&ckey, &r.class) && check_classes && file_rules && !known(&r.class) {
            c.error(
                &ckey,
                format!("unknown priority class {:?} (classes are: {list})", r.class),
            );
        }
        for name in r.labels.keys() {
            if !valid_label_name(name) {
                c.error(
                    &format!("{base}.labels.{name}"),
                    format!("{name:?} is not a valid label name"),
                );
            }
        }
    }
    let mut targets: BTreeMap<(&str, &str), String> = BTreeMap::new();
    for (i, t) in m.targets.iter().enumerate() {
        let base = format!("metrics.targets[{i}]");
        c.required(&format!("{base}.job"), &t.job);
        let ukey = format!("{base}.url");
        if c.required(&ukey, &t.url)
            && let Err(e) = parse_url(&t.url)
        {
            c.error(&ukey, format!("invalid URL {:?}: {e}", t.url));
        }
        if let Some(iv) = t.interval {
            c.positive(&format!("{base}.interval"), iv);
        }
        if let Some(first) = targets.get(&(t.job.as_str(), t.url.as_str())) {
            let at = c.line_of(first);
            c.error(
                &ukey,
                format!("duplicate scrape target (same job and url as `{first}`{at})"),
            );
        } else {
            targets.insert((&t.job, &t.url), ukey);
        }
    }
    for name in m.external_labels.keys() {
        let key = format!("metrics.external_labels.{name}");
        if RESERVED_LABELS.contains(&name.as_str()) {
            c.error(
                &key,
                format!("label {name:?} is set by edgeplane itself and cannot be overridden"),
            );
        } else if !valid_label_name(name) {
            c.error(
                &key,
                format!("{name:?} is not a valid label name (letters, digits, '_')"),
            );
        }
    }
}

fn buffer(c: &mut Checker<'_>, cfg: &Config) {
    let b = &cfg.buffer;
    if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&b.segment_bytes) {
        c.error(
            "buffer.segment_bytes",
            format!(
                "{} is out of range: use 1MiB to 256MiB (8MiB is a good size)",
                format_bytes(b.segment_bytes)
            ),
        );
    }
    let min = (4 * b.segment_bytes).max(MIN_BUDGET_BYTES);
    if b.budget_bytes < min {
        c.error_at(
            "buffer.budget_bytes",
            &["buffer.budget_bytes", "buffer.segment_bytes"],
            format!(
                "{} is below the working minimum of {} (4 × buffer.segment_bytes, and at least 16MiB)",
                format_bytes(b.budget_bytes),
                format_bytes(min)
            ),
        );
    }
    match b.fsync {
        FsyncPolicy::Never => c.warn(
            "buffer.fsync",
            "\"never\": metrics written in the last ~30s may be lost on power loss",
        ),
        FsyncPolicy::Interval => c.positive("buffer.fsync_interval", b.fsync_interval),
        FsyncPolicy::Batch => {}
    }
    c.positive("buffer.max_age", b.max_age);
}

fn uplink(c: &mut Checker<'_>, cfg: &Config) {
    let u = &cfg.uplink;
    match &u.url {
        None if u.enabled => c.error_at(
            "uplink.url",
            &["uplink.enabled"],
            "the uplink is enabled but has no url; set uplink.url to the region's remote-write URL or set uplink.enabled = false",
        ),
        Some(url) => match parse_url(url) {
            Err(e) => c.error("uplink.url", format!("invalid URL {url:?}: {e}")),
            Ok(ep) => {
                if !ep.https && u.bearer_token_file.is_some() {
                    c.warn("uplink.bearer_token_file", "the bearer token would be sent unencrypted over http://");
                }
                if !ep.https && u.basic_auth_password_file.is_some() {
                    c.warn(
                        "uplink.basic_auth_password_file",
                        "the password would be sent unencrypted over http://",
                    );
                }
            }
        },
        None => {}
    }
    if u.enabled {
        c.positive("uplink.timeout", u.timeout);
        c.positive("uplink.max_sample_age", u.max_sample_age);
        if u.backfill_rate == 0 {
            c.error(
                "uplink.backfill_rate",
                "must be at least 1 sample per second, or the backlog is never sent",
            );
        }
        if u.batch_samples == 0 {
            c.error("uplink.batch_samples", "must be at least 1");
        }
    }
    match (&u.client_cert, &u.client_key) {
        (Some(_), None) => c.error("uplink.client_cert", "is set without uplink.client_key"),
        (None, Some(_)) => c.error("uplink.client_key", "is set without uplink.client_cert"),
        _ => {}
    }
    match (&u.basic_auth_user, &u.basic_auth_password_file) {
        (Some(_), None) => c.error(
            "uplink.basic_auth_user",
            "is set without uplink.basic_auth_password_file (the file holding the password)",
        ),
        (None, Some(_)) => c.error(
            "uplink.basic_auth_password_file",
            "is set without uplink.basic_auth_user",
        ),
        (Some(user), Some(_)) => {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                c.error(
                    "uplink.basic_auth_user",
                    "must be a non-empty user name without ':' or control characters",
                );
            }
            if u.bearer_token_file.is_some() {
                c.error_at(
                    "uplink.basic_auth_user",
                    &["uplink.bearer_token_file"],
                    "is set together with uplink.bearer_token_file: both use the Authorization header, choose one",
                );
            }
        }
        (None, None) => {}
    }
    uplink_headers(c, &u.headers);
    for (key, p) in [
        ("uplink.bearer_token_file", &u.bearer_token_file),
        (
            "uplink.basic_auth_password_file",
            &u.basic_auth_password_file,
        ),
        ("uplink.ca_file", &u.ca_file),
        ("uplink.client_cert", &u.client_cert),
        ("uplink.client_key", &u.client_key),
    ] {
        if let Some(p) = p {
            c.absolute(key, p);
        }
    }
}

/// Headers the uplink sets itself or HTTP manages, which `uplink.headers`
/// may not override (compared in lower case; any `content-*` too), with the
/// reason. Prometheus' `remote_write.headers` refuses the same.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    (
        "authorization",
        "credentials are not written in the config: use uplink.bearer_token_file, or uplink.basic_auth_user with uplink.basic_auth_password_file",
    ),
    (
        "proxy-authorization",
        "it is a hop-by-hop header for a proxy, and credentials are not written in the config",
    ),
    (
        "connection",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    (
        "keep-alive",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    (
        "proxy-connection",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    (
        "proxy-authenticate",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    ("te", "it is a hop-by-hop header that HTTP manages itself"),
    (
        "trailer",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    (
        "transfer-encoding",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    (
        "upgrade",
        "it is a hop-by-hop header that HTTP manages itself",
    ),
    ("host", "HTTP sets it from uplink.url"),
    ("expect", "HTTP manages it itself"),
    ("accept-encoding", "HTTP manages it itself"),
    ("user-agent", "edgeplane sets it (edgeplane/<version>)"),
    (
        "x-prometheus-remote-write-version",
        "it is part of the remote-write protocol edgeplane speaks (0.1.0)",
    ),
];

/// `uplink.headers`: valid names and values, none that edgeplane or HTTP
/// sets, no name twice in different case.
fn uplink_headers(c: &mut Checker<'_>, headers: &BTreeMap<String, String>) {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in headers {
        let key = format!("uplink.headers.{name}");
        let lower = name.to_ascii_lowercase();
        let tchar = |ch: char| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch);
        if name.is_empty() || !name.chars().all(tchar) {
            c.error(
                &key,
                format!(
                    "{name:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            );
            continue;
        }
        if let Some((_, why)) = RESERVED_HEADERS.iter().find(|(h, _)| *h == lower) {
            c.error(&key, format!("{name} cannot be set here: {why}"));
            continue;
        }
        if lower.starts_with("content-") {
            c.error(
                &key,
                format!("{name} cannot be set here: the Content-* headers describe the remote-write body (snappy-compressed protobuf) and edgeplane sets them itself"),
            );
            continue;
        }
        if value.trim().is_empty() {
            c.error(&key, "must not be empty");
        } else if value.chars().any(|ch| ch.is_control() && ch != '\t') {
            c.error(
                &key,
                "must not contain control characters (line breaks included)",
            );
        }
        if let Some(first) = seen.get(&lower) {
            c.error(
                &key,
                format!("the same header as uplink.headers.{first} (header names ignore case)"),
            );
        } else {
            seen.insert(lower, name);
        }
    }
}

/// One scheme for every node URL; https needs the three files; plain http
/// only when explicitly allowed; the health listener only on loopback.
fn tls(c: &mut Checker<'_>, cfg: &Config) {
    let t = &cfg.tls;
    let mut schemes: Vec<(String, bool)> = Vec::new();
    let mut all: Vec<&Node> = cfg.nodes.iter().chain(&cfg.witnesses).collect();
    all.sort_by_key(|n| n.file_index);
    for n in all {
        let i = n.file_index;
        for (field, url) in [
            ("peer_url", &n.peer_url),
            ("client_url", &n.client_url),
            ("agent_url", &n.agent_url),
        ] {
            if let Ok(ep) = parse_url(url) {
                schemes.push((format!("nodes[{i}].{field}"), ep.https));
            }
        }
    }
    let https = schemes.iter().filter(|(_, h)| *h).count();
    if https > 0 && https < schemes.len() {
        if let Some((key, _)) = schemes.iter().find(|(_, h)| !*h) {
            c.error(
                key,
                "mixes http:// with https://: TLS is site-wide, so every node URL must use https:// (or, for a lab with tls.allow_plaintext = true, every one http://)",
            );
        }
    } else if https == 0 && !schemes.is_empty() {
        if t.allow_plaintext {
            c.warn(
                "tls.allow_plaintext",
                "plain http://: etcd and the agents accept anyone who can reach them; for a lab only",
            );
        } else if let Some((key, _)) = schemes.first() {
            c.error(
                key,
                "plain http:// is refused: etcd and the agents would accept anyone on the network. Use https:// node URLs with [tls] certificates (`edgeplane certs init --site DIR --config FILE`), or set tls.allow_plaintext = true for a lab",
            );
        }
    }
    if https > 0 {
        for (key, p) in [
            ("tls.ca_file", &t.ca_file),
            ("tls.cert_file", &t.cert_file),
            ("tls.key_file", &t.key_file),
        ] {
            c.absolute(key, p);
        }
    }
    if let Some(addr) = &t.health_listen {
        match addr.parse::<std::net::SocketAddr>() {
            Err(_) => c.error(
                "tls.health_listen",
                format!("{addr:?} is not an address: expected IP:PORT, e.g. \"127.0.0.1:7071\""),
            ),
            Ok(a) if !a.ip().is_loopback() => c.error(
                "tls.health_listen",
                format!("{addr:?} is not a loopback address: the health listener has no authentication, so it may only listen on 127.0.0.1 or ::1"),
            ),
            Ok(_) => {}
        }
    }
}

fn log(c: &mut Checker<'_>, cfg: &Config) {
    let l = &cfg.log;
    c.required("log.level", &l.level);
    c.absolute("log.dir", &l.dir);
    if l.to_files && l.retention_files == 0 {
        c.error(
            "log.retention_files",
            "must be at least 1 while log.to_files is true",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ep = parse_url("http://10.0.0.1:2380").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ep.host.as_str(), ep.port), ("10.0.0.1", Some(2380)));
        assert!(parse_url("https://[fd00::1]:2379").is_ok());
        assert!(parse_url("https://region.example.com/api/v1/write").is_ok());
        let v6 = parse_url("https://[FD00::1]:443").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v6.host.as_str(), v6.port), ("[fd00::1]", Some(443)));
        assert_eq!(parse_url("http://h:80").map(|e| e.port), Ok(Some(80)));
        assert_eq!(parse_url("http://h").map(|e| e.port), Ok(None));
        assert!(parse_url("https://edge_1.site-a.example.:2379").is_ok());
        for bad in [
            "10.0.0.1:2380",
            "ftp://x:1",
            "http://",
            "http://:80",
            "http://a:0",
            "http://a:x",
            "http://a b:1",
            "http://u@a:1",
            "https://[zz]:2380",
            "https://999.1.1.1:2379",
            "https://a..b:7070",
            "https://.a:1",
            "https://-a.b:1",
            "https://10.1:1",
            "https://0x0a.0.0.1:1",
            "https://1.2.3.4.5:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
