//! `edgeplane diag check`: preflight and health checks, each PASS / WARN /
//! FAIL (or SKIP when it does not apply) with one line saying what to do.
//! Exit 0 when everything passes, 1 with warnings, 2 with a failure.
//!
//! Every check reads this host only (the clock check also asks the peers'
//! agents for the time, under the usual short timeout), so it runs before
//! the agent was ever started, and with it down.

use std::net::ToSocketAddrs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use edgeplane_config::{Config, QuorumLossPolicy};
use serde::{Deserialize, Serialize};

use super::{PROBE_TIMEOUT, human_age, human_bytes, local, table};

pub const SCHEMA: &str = "edgeplane.diag.check/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Skip,
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// Stable identifier, e.g. `config`, `etcd-binary`, `port-client`.
    pub id: String,
    pub status: Status,
    /// What was found, in a sentence.
    pub summary: String,
    /// What to do, in a sentence (absent on PASS and SKIP).
    pub remedy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    pub schema: String,
    pub generated_at: String,
    pub config: String,
    pub host: Option<String>,
    pub passed: usize,
    pub warnings: usize,
    pub failures: usize,
    pub skipped: usize,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    pub fn exit_code(&self) -> u8 {
        if self.failures > 0 {
            2
        } else if self.warnings > 0 {
            1
        } else {
            0
        }
    }
}

fn res(
    id: &str,
    status: Status,
    summary: impl Into<String>,
    remedy: Option<String>,
) -> CheckResult {
    CheckResult {
        id: id.into(),
        status,
        summary: summary.into(),
        remedy: if matches!(status, Status::Pass | Status::Skip) {
            None
        } else {
            remedy
        },
    }
}
fn pass(id: &str, s: impl Into<String>) -> CheckResult {
    res(id, Status::Pass, s, None)
}
fn skip(id: &str, s: impl Into<String>) -> CheckResult {
    res(id, Status::Skip, s, None)
}
fn warn(id: &str, s: impl Into<String>, r: impl Into<String>) -> CheckResult {
    res(id, Status::Warn, s, Some(r.into()))
}
fn fail(id: &str, s: impl Into<String>, r: impl Into<String>) -> CheckResult {
    res(id, Status::Fail, s, Some(r.into()))
}

/// Runs every check; a config that cannot be loaded is one FAIL and the
/// checks that need it are skipped. `region`: also ask the region's
/// receiver what it accepts ([`region_check`]; it writes canary samples).
pub async fn run_checks(config_path: &Path, region: bool) -> CheckReport {
    let mut checks = Vec::new();
    let report = edgeplane_config::check(config_path);
    let shown = super::display_config_path(config_path)
        .display()
        .to_string();
    let first = |n: usize, errors: bool| {
        report
            .problems
            .iter()
            .filter(|p| p.is_error() == errors)
            .take(n)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let remedy = format!("run `edgeplane config check {shown}` and fix every line it prints");
    if report.errors() > 0 {
        checks.push(fail(
            "config",
            format!("{} error(s): {}", report.errors(), first(3, true)),
            remedy,
        ));
    } else if report.warnings() > 0 {
        checks.push(warn(
            "config",
            format!(
                "valid, {} warning(s): {}",
                report.warnings(),
                first(3, false)
            ),
            remedy,
        ));
    } else {
        checks.push(pass("config", format!("{shown} is valid")));
    }
    let cfg = edgeplane_config::load(config_path).ok().map(|l| l.config);
    match &cfg {
        Some(cfg) => {
            let c = cfg.clone();
            let cpath = config_path.to_path_buf();
            let local = tokio::task::spawn_blocking(move || local_checks(&c, &cpath));
            let clock = clock_check(cfg);
            let agent = agent_check(cfg);
            let (local, clock, agent) = tokio::join!(local, clock, agent);
            match local {
                Ok(l) => checks.extend(l),
                Err(e) => checks.push(fail(
                    "local",
                    format!("the local checks crashed: {e}"),
                    "report this as a bug",
                )),
            }
            checks.push(clock);
            checks.push(agent);
            if region {
                checks.push(region_check(cfg).await);
            }
        }
        None => checks.push(skip("others", "skipped: the config cannot be loaded")),
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    CheckReport {
        schema: SCHEMA.into(),
        generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        config: shown,
        host: cfg.as_ref().map(|c| c.host.clone()),
        passed: count(Status::Pass),
        warnings: count(Status::Warn),
        failures: count(Status::Fail),
        skipped: count(Status::Skip),
        checks,
    }
}

fn local_checks(cfg: &Config, config_path: &Path) -> Vec<CheckResult> {
    let mut out = vec![etcd_binary(cfg)];
    out.extend(data_dir_checks(cfg));
    out.extend(port_checks(cfg, config_path));
    out.push(address_check(cfg));
    out.push(fence_check(cfg));
    out.extend(key_checks(cfg));
    out.extend(buffer_checks(cfg));
    out.push(state_check(cfg));
    out.push(etcd_process_check(cfg));
    out.push(snapshot_check(cfg));
    out
}

/// `name` as given when it has a slash, else the first match on `$PATH`.
fn resolve_program(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return name.exists().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn etcd_binary(cfg: &Config) -> CheckResult {
    let id = "etcd-binary";
    let Some(p) = resolve_program(&cfg.etcd.binary) else {
        return fail(
            id,
            format!("{} not found", cfg.etcd.binary.display()),
            "install it (`apt-get install etcd-server`) or set etcd.binary to its path",
        );
    };
    if !executable(&p) {
        return fail(
            id,
            format!("{} is not executable", p.display()),
            format!("chmod 755 {}", p.display()),
        );
    }
    match crate::version::etcd_version(&p) {
        Some(v) if v.starts_with("3.4.") || v.starts_with("3.5.") => {
            pass(id, format!("{} is etcd {v}", p.display()))
        }
        Some(v) => warn(
            id,
            format!(
                "{} is etcd {v}, not a version Edgeplane was tested with (3.4, 3.5)",
                p.display()
            ),
            "install etcd 3.4 or 3.5 (Debian bookworm's etcd-server is 3.4.23)",
        ),
        None => fail(
            id,
            format!("{} does not print an etcd version", p.display()),
            "point etcd.binary at the etcd server binary",
        ),
    }
}

/// The nearest existing ancestor of `p` (the path itself when it exists).
fn existing(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    loop {
        if cur.exists() {
            return std::fs::canonicalize(&cur).unwrap_or(cur);
        }
        match cur.parent() {
            Some(parent) if parent != cur => cur = parent.to_path_buf(),
            _ => return PathBuf::from("/"),
        }
    }
}

/// (mount point, fs type) holding `p`, from `/proc/mounts`.
pub fn mount_of(p: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/mounts").ok()?;
    let p = existing(p);
    let mut best: Option<(String, String)> = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (_, Some(mp), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mp = mp.replace("\\040", " ");
        if p.starts_with(&mp) && best.as_ref().is_none_or(|(b, _)| mp.len() >= b.len()) {
            best = Some((mp, fs.to_string()));
        }
    }
    best
}

/// Free bytes for unprivileged users on the filesystem holding `p`.
pub fn free_bytes(p: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(&existing(p)).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
];

fn data_dir_checks(cfg: &Config) -> Vec<CheckResult> {
    let dir = &cfg.etcd.data_dir;
    let fs = match mount_of(dir) {
        Some((mp, fs)) if NETWORK_FS.contains(&fs.as_str()) => fail(
            "data-dir-fs",
            format!(
                "{} is on {fs} (mounted at {mp}), a network filesystem",
                dir.display()
            ),
            "put etcd.data_dir on a local disk: etcd's fsync latency over the network stalls the cluster",
        ),
        Some((mp, fs)) if fs == "tmpfs" || fs == "ramfs" => fail(
            "data-dir-fs",
            format!(
                "{} is on {fs} (mounted at {mp}): lost at every reboot",
                dir.display()
            ),
            "put etcd.data_dir on a persistent local disk",
        ),
        Some((mp, fs)) => pass(
            "data-dir-fs",
            format!("{} is on local {fs} ({mp})", dir.display()),
        ),
        None => warn(
            "data-dir-fs",
            format!("cannot tell which filesystem holds {}", dir.display()),
            "check that /proc is mounted",
        ),
    };
    let quota = cfg.etcd.quota_backend_bytes;
    let space = match free_bytes(dir) {
        Some(free) if free < 256 << 20 => fail(
            "data-dir-space",
            format!("{} free for {}", human_bytes(free), dir.display()),
            "free disk space: etcd stops accepting writes (NOSPACE) when it cannot grow",
        ),
        Some(free) if free < quota => warn(
            "data-dir-space",
            format!(
                "{} free for {}, less than etcd.quota_backend_bytes ({})",
                human_bytes(free),
                dir.display(),
                human_bytes(quota)
            ),
            "free disk space or lower etcd.quota_backend_bytes",
        ),
        Some(free) => pass(
            "data-dir-space",
            format!(
                "{} free for {} (quota {})",
                human_bytes(free),
                dir.display(),
                human_bytes(quota)
            ),
        ),
        None => warn(
            "data-dir-space",
            format!("statvfs failed for {}", dir.display()),
            "check the path exists and is readable",
        ),
    };
    vec![fs, space]
}

/// A listening socket: local port and inode.
struct Listener {
    port: u16,
    inode: u64,
}

fn listeners() -> Vec<Listener> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let Some(port) = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            let inode = cols[9].parse().unwrap_or(0);
            out.push(Listener { port, inode });
        }
    }
    out
}

/// The pid owning socket `inode`, if visible to us.
fn socket_owner(inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                return Some(pid);
            }
        }
    }
    None
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn url_port(url: &str) -> Option<u16> {
    edgeplane_config::parse_url(url).ok().and_then(|e| e.port)
}

fn port_checks(cfg: &Config, config_path: &Path) -> Vec<CheckResult> {
    let Some(me) = cfg.this_node() else {
        return vec![fail(
            "ports",
            format!("host {:?} is not among the nodes", cfg.host),
            "fix `host` in the config",
        )];
    };
    let listening = listeners();
    let etcd = local::etcd_local(&cfg.etcd.data_dir, &cfg.paths.state_dir);
    let etcd_pid = etcd.pid_file.filter(|_| etcd.pid_alive);
    let agents = local::agent_pids(config_path);
    let mut out = Vec::new();
    for (label, url, ours) in [
        ("client", &me.client_url, "etcd"),
        ("peer", &me.peer_url, "etcd"),
        ("agent", &me.agent_url, "agent"),
    ] {
        let id = format!("port-{label}");
        let Some(port) = url_port(url) else {
            out.push(fail(
                &id,
                format!("{label} URL {url} has no port"),
                "write the URL as http://HOST:PORT",
            ));
            continue;
        };
        let Some(l) = listening.iter().find(|l| l.port == port) else {
            out.push(pass(&id, format!("port {port} ({label} URL) is free")));
            continue;
        };
        match socket_owner(l.inode) {
            Some(pid) if ours == "etcd" && Some(pid) == etcd_pid => out.push(pass(
                &id,
                format!("port {port} ({label} URL) is served by our etcd (pid {pid})"),
            )),
            Some(pid) if ours == "agent" && agents.contains(&pid) => out.push(pass(
                &id,
                format!("port {port} ({label} URL) is served by our agent (pid {pid})"),
            )),
            Some(pid) => out.push(fail(
                &id,
                format!(
                    "port {port} ({label} URL) is taken by {} (pid {pid})",
                    comm(pid)
                ),
                format!("stop that process or move this host's {label} URL to a free port"),
            )),
            None => out.push(warn(
                &id,
                format!("port {port} ({label} URL) is in use by a process this user cannot see"),
                "run `diag check` as root to see the owner (`ss -ltnp`)",
            )),
        }
    }
    out
}

/// Whether this host owns the addresses of its node URLs: etcd and the
/// agent listen on them, and peers reach them there. A host installed from
/// another host's image, or whose DHCP lease moved, fails here (binding a
/// socket to an address no interface holds gives EADDRNOTAVAIL).
fn address_check(cfg: &Config) -> CheckResult {
    let Some(me) = cfg.this_node() else {
        return skip("address", "this host is not among the nodes");
    };
    let mut hosts: Vec<String> = [&me.client_url, &me.peer_url, &me.agent_url]
        .iter()
        .filter_map(|u| edgeplane_config::parse_url(u).ok().map(|e| e.host))
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut missing = Vec::new();
    for h in &hosts {
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::IpAddr> = match (bare, 0u16).to_socket_addrs() {
            Ok(a) => a.map(|a| a.ip()).collect(),
            Err(e) => {
                missing.push(format!("{h} (does not resolve: {e})"));
                continue;
            }
        };
        if !addrs
            .iter()
            .any(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok())
        {
            missing.push(format!(
                "{h} ({})",
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if missing.is_empty() {
        pass(
            "address",
            format!(
                "this host owns the address of its node URLs ({})",
                hosts.join(", ")
            ),
        )
    } else {
        fail(
            "address",
            format!(
                "this host does not own the address of its node URLs: {}",
                missing.join("; ")
            ),
            format!(
                "give this host that address (static network config), or fix host {:?}'s URLs in [[nodes]]",
                cfg.host
            ),
        )
    }
}

fn fence_check(cfg: &Config) -> CheckResult {
    let id = "fence-command";
    if cfg.recovery.quorum_loss_policy != QuorumLossPolicy::Fenced {
        return skip(
            id,
            "recovery.quorum_loss_policy = manual: no fence command needed",
        );
    }
    let Some(prog) = cfg.recovery.fence_command.first() else {
        return fail(
            id,
            "policy fenced but recovery.fence_command is empty",
            "set recovery.fence_command, or use policy manual",
        );
    };
    match resolve_program(Path::new(prog)) {
        Some(p) if executable(&p) => pass(id, format!("{} is present and executable", p.display())),
        Some(p) => fail(
            id,
            format!("{} is not executable", p.display()),
            format!("chmod 755 {}", p.display()),
        ),
        None => fail(
            id,
            format!("fence command {prog} not found"),
            "install it or fix recovery.fence_command",
        ),
    }
}

fn key_checks(cfg: &Config) -> Vec<CheckResult> {
    let u = &cfg.uplink;
    let t = &cfg.tls;
    let site_tls = cfg.tls_enabled();
    let mut out = Vec::new();
    for (id, path, secret, section, needed) in [
        ("tls-key", Some(&t.key_file), true, "[tls]", site_tls),
        ("tls-cert", Some(&t.cert_file), false, "[tls]", site_tls),
        ("tls-ca", Some(&t.ca_file), false, "[tls]", site_tls),
        (
            "bearer-token-file",
            u.bearer_token_file.as_ref(),
            true,
            "[uplink]",
            u.enabled,
        ),
        (
            "basic-auth-password-file",
            u.basic_auth_password_file.as_ref(),
            true,
            "[uplink]",
            u.enabled,
        ),
        (
            "client-key",
            u.client_key.as_ref(),
            true,
            "[uplink]",
            u.enabled,
        ),
        (
            "client-cert",
            u.client_cert.as_ref(),
            false,
            "[uplink]",
            u.enabled,
        ),
        ("ca-file", u.ca_file.as_ref(), false, "[uplink]", u.enabled),
        (
            "fence-environment-file",
            cfg.recovery.fence_environment_file.as_ref(),
            true,
            "[recovery]",
            cfg.recovery.quorum_loss_policy == QuorumLossPolicy::Fenced,
        ),
    ] {
        let Some(p) = path else { continue };
        if section == "[tls]" && !site_tls {
            continue;
        }
        match std::fs::metadata(p) {
            Err(e) => {
                let s = format!("{} cannot be read: {e}", p.display());
                let r = if section == "[tls]" {
                    "create it with `edgeplane certs init` and copy it here, or fix the path in [tls]".to_string()
                } else {
                    format!("create it or fix the path in {section}")
                };
                out.push(if needed {
                    fail(id, s, r)
                } else {
                    warn(id, s, r)
                });
            }
            Ok(m) if secret && m.permissions().mode() & 0o077 != 0 => out.push(fail(
                id,
                format!(
                    "{} is readable by group or others (mode {:o})",
                    p.display(),
                    m.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", p.display()),
            )),
            Ok(_)
                if std::fs::File::open(p)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) =>
            {
                out.push(fail(
                    id,
                    format!(
                        "{} is not readable by this user (uid {}): {}",
                        p.display(),
                        nix::unistd::Uid::effective(),
                        if secret {
                            crate::tls::NOT_READABLE
                        } else {
                            "permission denied"
                        }
                    ),
                    "run as root (sudo edgeplane diag check); the agent reads it as its own user"
                        .to_string(),
                ))
            }
            Ok(m) => out.push(pass(
                id,
                format!(
                    "{} present (mode {:o})",
                    p.display(),
                    m.permissions().mode() & 0o777
                ),
            )),
        }
    }
    if out.is_empty() {
        out.push(skip("key-files", "no key material configured"));
    }
    out
}

fn buffer_checks(cfg: &Config) -> Vec<CheckResult> {
    if !cfg.metrics.enabled {
        return vec![skip("buffer", "metrics.enabled = false: no buffer")];
    }
    let dir = &cfg.paths.buffer_dir;
    let (used, readable) = if dir.exists() {
        match edgeplane_buffer::inspect(dir) {
            Ok(s) => (
                s.total_bytes_on_disk,
                pass(
                    "buffer",
                    format!(
                        "{} readable: {} samples, {}",
                        dir.display(),
                        s.classes.iter().map(|c| c.samples).sum::<u64>(),
                        human_bytes(s.total_bytes_on_disk)
                    ),
                ),
            ),
            Err(e) => (
                0,
                fail(
                    "buffer",
                    format!("{} is unreadable: {e}", dir.display()),
                    format!(
                        "stop the agent, move {} aside, start the agent (it starts a new buffer)",
                        dir.display()
                    ),
                ),
            ),
        }
    } else {
        (
            0,
            pass(
                "buffer",
                format!("{} not created yet (the agent creates it)", dir.display()),
            ),
        )
    };
    let budget = cfg.buffer.budget_bytes;
    let space = match free_bytes(dir) {
        Some(free) if free + used < budget / 2 => fail(
            "buffer-space",
            format!(
                "buffer.budget_bytes is {} but only {} is free",
                human_bytes(budget),
                human_bytes(free + used)
            ),
            "lower buffer.budget_bytes or free disk space: the disk fills before the budget sheds",
        ),
        Some(free) if free + used < budget => warn(
            "buffer-space",
            format!(
                "buffer.budget_bytes is {} but only {} is free",
                human_bytes(budget),
                human_bytes(free + used)
            ),
            "lower buffer.budget_bytes below the free space",
        ),
        Some(free) => pass(
            "buffer-space",
            format!(
                "budget {} fits in {} free",
                human_bytes(budget),
                human_bytes(free + used)
            ),
        ),
        None => warn(
            "buffer-space",
            format!("statvfs failed for {}", dir.display()),
            "check the path",
        ),
    };
    vec![readable, space]
}

fn state_check(cfg: &Config) -> CheckResult {
    let id = "state-store";
    let path = local::state_file(&cfg.paths.state_dir);
    if !path.exists() {
        return warn(
            id,
            format!("{} does not exist", path.display()),
            "start the agent once (`systemctl start edgeplane`); it creates its state",
        );
    }
    match local::read_journal(&cfg.paths.state_dir, 1000) {
        Ok(j) => pass(
            id,
            format!(
                "{} readable: {} journal records, {} pending",
                path.display(),
                j.ops.len(),
                j.ops
                    .iter()
                    .filter(|o| o.outcome == crate::agent::state::Outcome::Pending)
                    .count()
            ),
        ),
        Err(e) => fail(
            id,
            e,
            format!(
                "stop the agent, move {} aside (the journal history is lost; etcd's data is not affected), start the agent",
                path.display()
            ),
        ),
    }
}

fn etcd_process_check(cfg: &Config) -> CheckResult {
    let id = "etcd-process";
    let e = local::etcd_local(&cfg.etcd.data_dir, &cfg.paths.state_dir);
    match (e.pid_file, e.pid_alive, e.pid_is_etcd) {
        (Some(p), true, true) => pass(id, format!("etcd runs (pid {p})")),
        (Some(p), true, false) => fail(
            id,
            format!("etcd.pid names pid {p}, which is alive but not an etcd"),
            "stop the agent, remove the stale etcd.pid, start the agent",
        ),
        (Some(p), false, _) => warn(
            id,
            format!("etcd (pid {p}) is not running"),
            "start the agent: it restarts etcd (`systemctl start edgeplane`)",
        ),
        (None, _, _) if e.wal_present => warn(
            id,
            "etcd is not running, and this host has etcd data",
            "start the agent: it restarts etcd (`systemctl start edgeplane`)",
        ),
        (None, _, _) => pass(
            id,
            "etcd is not running here and this host holds no etcd data (spare or fresh host)",
        ),
    }
}

fn snapshot_check(cfg: &Config) -> CheckResult {
    let id = "snapshots";
    if !cfg.snapshots.enabled {
        return warn(
            id,
            "snapshots.enabled = false",
            "enable snapshots: a lost site is only recoverable from one",
        );
    }
    match local::list_snapshots(&cfg.paths.snapshot_dir) {
        Ok(l) if l.is_empty() => warn(
            id,
            format!("no snapshot in {}", cfg.paths.snapshot_dir.display()),
            "take one now: `edgeplane snapshot save`",
        ),
        Ok(l) => {
            let age = l[0].age_s.unwrap_or(0.0);
            let max = cfg.snapshots.interval.as_secs_f64() * 2.0;
            if age > max {
                warn(
                    id,
                    format!(
                        "the newest snapshot {} is {} old",
                        l[0].name,
                        human_age(age)
                    ),
                    "check the agent's log for snapshot errors; take one now: `edgeplane snapshot save`",
                )
            } else {
                pass(
                    id,
                    format!("newest snapshot {} is {} old", l[0].name, human_age(age)),
                )
            }
        }
        Err(e) => fail(id, e, "fix the permissions of paths.snapshot_dir"),
    }
}

/// Clock offset against the peers' agents (their `Date` header, 1 s resolution).
async fn clock_check(cfg: &Config) -> CheckResult {
    let id = "clock";
    let peers: Vec<_> = cfg
        .nodes
        .iter()
        .filter(|n| n.name != cfg.host)
        .cloned()
        .collect();
    if peers.is_empty() {
        return skip(id, "single-host site: no peer to compare clocks with");
    }
    let mut sub = cfg.clone();
    sub.nodes = peers;
    let probes = super::probe::probe_all(&sub, PROBE_TIMEOUT).await;
    let mut offsets = Vec::new();
    for a in &probes.agents {
        if let Some(d) = a.date {
            let mid = a.sent_at + chrono::Duration::from_std(a.rtt / 2).unwrap_or_default();
            // The Date header is truncated to the second: add half a second.
            let off = (d - mid).num_milliseconds() as f64 / 1000.0 + 0.5;
            offsets.push((a.host.clone(), off));
        }
    }
    if offsets.is_empty() {
        return skip(id, "no peer agent answered: clocks not compared");
    }
    let (worst_host, worst) = offsets
        .iter()
        .cloned()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap_or_default();
    let summary = format!(
        "offsets against peers: {}",
        offsets
            .iter()
            .map(|(h, o)| format!("{h} {o:+.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if worst.abs() > 60.0 {
        fail(
            id,
            summary,
            format!(
                "fix time sync (chrony/systemd-timesyncd) on this host or {worst_host}: metrics timestamps and snapshot ages are wrong"
            ),
        )
    } else if worst.abs() > 2.0 {
        warn(
            id,
            summary,
            format!("check time sync (`timedatectl`) here and on {worst_host}"),
        )
    } else {
        pass(id, summary)
    }
}

async fn agent_check(cfg: &Config) -> CheckResult {
    let id = "agent";
    let Some(me) = cfg.this_node() else {
        return skip(id, "this host is not among the nodes");
    };
    let url = format!("{}/livez", me.agent_url.trim_end_matches('/'));
    match super::probe::get_text(cfg, &url, PROBE_TIMEOUT).await {
        Ok(t) => pass(id, format!("agent alive: {}", t.trim())),
        Err(e) => warn(
            id,
            format!("the agent at {} does not answer ({e})", me.agent_url),
            "start it: `systemctl start edgeplane` (see `journalctl -u edgeplane` if it exits)",
        ),
    }
}

pub fn render(r: &CheckReport) -> String {
    let mut rows = vec![vec!["STATUS".to_string(), "CHECK".into(), "FINDING".into()]];
    for c in &r.checks {
        let status = format!("{:?}", c.status).to_uppercase();
        rows.push(vec![status, c.id.clone(), c.summary.clone()]);
        if let Some(rem) = &c.remedy {
            rows.push(vec![String::new(), String::new(), format!("-> {rem}")]);
        }
    }
    let mut o = format!(
        "{}: {} passed, {} warning(s), {} failure(s), {} skipped ({})\n",
        if r.failures > 0 {
            "FAIL"
        } else if r.warnings > 0 {
            "WARN"
        } else {
            "PASS"
        },
        r.passed,
        r.warnings,
        r.failures,
        r.skipped,
        r.config
    );
    o.push_str(&table(&rows, "  "));
    o
}

/// `diag check --region`: the region's answers to three canary samples
/// (`edgeplane_metrics::region_check`), with what they mean for a backlog.
async fn region_check(cfg: &Config) -> CheckResult {
    use edgeplane_metrics::region_check::{AGE_CANARY_MS, Answer, probe};
    let id = "region";
    let opts = edgeplane_metrics::pipeline::PipelineOptions::from_config(
        cfg,
        &cfg.paths.buffer_dir,
        vec![],
    );
    let Some(uplink) = &opts.uplink else {
        return skip(id, "no uplink (uplink.enabled = false or no uplink.url)");
    };
    let mut labels = opts.external_labels.clone();
    labels.push(("site".into(), opts.site.clone()));
    let a = match probe(uplink, &labels).await {
        Ok(a) => a,
        Err(e) => {
            return fail(
                id,
                format!("cannot set up the uplink: {e}"),
                "fix the [uplink] section (edgeplane config check)",
            );
        }
    };
    let hours = AGE_CANARY_MS / 3_600_000;
    let setup = "set up the receiver for backfill as docs/region.md says (Prometheus: \
                 storage.tsdb.out_of_order_time_window in prometheus.yml, longer than the outages you expect)";
    match (&a.recent, &a.minute_older, &a.two_hours_old) {
        (Answer::Failed(why), ..) => fail(
            id,
            format!("the region takes no samples: {why}"),
            "check uplink.url, the credentials and the region's remote-write receiver",
        ),
        (Answer::Refused(why), ..) => fail(
            id,
            format!("the region refuses a sample at now: {why}"),
            "check the receiver's remote-write settings (docs/region.md)",
        ),
        (Answer::Accepted, Answer::Accepted, Answer::Accepted) => pass(
            id,
            format!(
                "the region accepts out-of-order samples and samples {hours} h old: backlogs are flushed live-first and delivered at their timestamps"
            ),
        ),
        (Answer::Accepted, Answer::Accepted, old) => warn(
            id,
            format!(
                "the region accepts out-of-order samples but not samples {hours} h old ({}): a backlog older than its accept window is kept but refused",
                reason(old)
            ),
            setup,
        ),
        (Answer::Accepted, ooo, _) => warn(
            id,
            format!(
                "the region refuses out-of-order samples ({}): Edgeplane flushes in order, oldest first, so outages shorter than the receiver's accept window (about 1 h on Prometheus) arrive whole; older backlog is kept but refused",
                reason(ooo)
            ),
            setup,
        ),
        (Answer::NotAsked, ..) => fail(id, "the region was not asked", "report this as a bug"),
    }
}

fn reason(a: &edgeplane_metrics::region_check::Answer) -> String {
    use edgeplane_metrics::region_check::Answer;
    match a {
        Answer::Accepted => "accepted".into(),
        Answer::Refused(r) => format!("refused: {r}"),
        Answer::Failed(r) => format!("no answer: {r}"),
        Answer::NotAsked => "not asked".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_the_worst_status() {
        let mut r = CheckReport {
            schema: SCHEMA.into(),
            generated_at: String::new(),
            config: "c".into(),
            host: None,
            passed: 1,
            warnings: 0,
            failures: 0,
            skipped: 0,
            checks: vec![],
        };
        assert_eq!(r.exit_code(), 0);
        r.warnings = 1;
        assert_eq!(r.exit_code(), 1);
        r.failures = 1;
        assert_eq!(r.exit_code(), 2);
    }

    /// Issue #20 §4: a node URL on an address no interface of this host
    /// holds fails `diag check`; loopback passes.
    #[test]
    fn an_address_this_host_does_not_own_fails() {
        let mut cfg = edgeplane_config::defaults(edgeplane_config::Profile::Edge);
        let node = |addr: &str| edgeplane_config::Node {
            name: "h1".into(),
            peer_url: format!("https://{addr}:2380"),
            client_url: format!("https://{addr}:2379"),
            agent_url: format!("https://{addr}:7070"),
            role: edgeplane_config::NodeRole::Etcd,
            file_index: 0,
        };
        cfg.host = "h1".into();
        cfg.nodes = vec![node("127.0.0.1")];
        let r = address_check(&cfg);
        assert_eq!(r.status, Status::Pass, "{r:?}");
        // TEST-NET-3 (RFC 5737): never assigned to a real interface.
        cfg.nodes = vec![node("203.0.113.7")];
        let r = address_check(&cfg);
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert!(r.summary.contains("203.0.113.7"), "{r:?}");
    }

    #[test]
    fn mounts_and_space_are_found_for_missing_paths() {
        let p = Path::new("/nonexistent/a/b");
        assert!(mount_of(p).is_some_and(|(mp, _)| mp == "/"));
        assert!(free_bytes(p).is_some());
    }

    #[test]
    fn key_material_readable_by_others_fails() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("client.key");
        std::fs::write(&key, "k")?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
        let text = format!(
            "host = \"h1\"\nsite = \"s\"\n[[nodes]]\nname = \"h1\"\npeer_url = \"http://127.0.0.1:1\"\nclient_url = \"http://127.0.0.1:2\"\nagent_url = \"http://127.0.0.1:3\"\n[uplink]\nenabled = false\nclient_key = {:?}\nclient_cert = {:?}\n[tls]\nallow_plaintext = true\n",
            key.display().to_string(),
            key.display().to_string()
        );
        let cfg = edgeplane_config::load_str(&text, Path::new("t.toml"))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config;
        let r = key_checks(&cfg);
        assert_eq!(r[0].status, Status::Fail, "{r:?}");
        assert!(
            r[0].remedy
                .as_deref()
                .is_some_and(|x| x.starts_with("chmod 600"))
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(key_checks(&cfg)[0].status, Status::Pass);
        Ok(())
    }
}
