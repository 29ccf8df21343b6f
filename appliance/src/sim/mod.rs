//! A whole site on one machine: N hosts on loopback, each a real
//! `edgeplane agent` process (which runs a real etcd) with its own config,
//! directories and ports.
//!
//! It exists because three things need the same site: `edgeplane demo`,
//! `edgeplane bench failover`, and the end-to-end tests (the `tests` crate
//! builds on it). A "host kill" is SIGKILL to the host's agent and its etcd,
//! which is what a power loss looks like to the rest of the site.
//!
//! Everything it starts is killed when the [`LocalSite`] is dropped, also when
//! a test panics.

pub mod bare;
pub mod certs;
pub mod clock;
pub mod lazy_disk;
pub mod witness_cut;

use std::fmt::Write as _;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A free TCP port on 127.0.0.1 (bound and released; a race with another
/// process is possible but rare on a test machine). Never the same port
/// twice in one process: the kernel may hand a just-released port out again
/// at once, and two hosts of one site then got the same URL.
pub fn free_port() -> io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN
            .lock()
            .map_err(|_| io::Error::other("port registry poisoned"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(io::Error::other("no port that was not handed out before"))
}

pub use crate::process::{alive, signal};

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What site to build.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub hosts: usize,
    pub voters: usize,
    /// The `edgeplane` binary to run as the agent.
    pub binary: PathBuf,
    /// Appended to every host's config (extra sections). Placeholders:
    /// `{root}` the site's directory, `{host_name}` the host's name, and
    /// `{gateway}` an address of the root network namespace that every host
    /// reaches (127.0.0.1, or the outer end of the veth pair when a host is
    /// isolated), for services a test runs beside the site (a region
    /// Prometheus, a scrape target) listening on 0.0.0.0.
    pub extra_toml: String,
    /// Extra keys of every host's `[etcd]` section (which the simulator
    /// writes itself), e.g. `quota_backend_bytes = "8MiB"`.
    pub etcd_toml: String,
    /// Extra keys of every host's `[cluster]` section (also written by the
    /// simulator), e.g. `learner_stuck_after = "3s"`.
    pub cluster_toml: String,
    /// Site name.
    pub site: String,
    /// Run this host in its own network namespace, joined to the others by a
    /// veth pair, so a test can cut it off ([`LocalSite::partition`]). The
    /// other hosts then listen on the veth's address instead of 127.0.0.1.
    /// Needs root and `ip` (iproute2).
    pub isolated_host: Option<usize>,
    /// Start every host's etcd through `ROOT/etcd-disk.sh` (see
    /// [`DISK_WRAPPER`]), so a test can stall its fsyncs
    /// ([`LocalSite::stall_fsync`]) or make them fail
    /// ([`LocalSite::arm_fsync_eio`]). Needs `strace`.
    pub disk_faults: bool,
    /// Start every agent with libfaketime preloaded, its offset in
    /// `HOST/faketime` (see [`clock`]), so a test can jump one agent's wall
    /// clock ([`LocalSite::jump_clock`]). Needs Debian `libfaketime`.
    pub faketime: bool,
    /// Start host `i`'s agent (and so its etcd) with group id `base + i`
    /// (root keeps its uid), so that a test can tell the hosts of the root
    /// namespace apart in a firewall rule (`meta skgid`): they share one
    /// address.
    pub host_gids: Option<u32>,
    /// Keep each host's state, snapshots, buffer and etcd data dir on a
    /// disk that loses what was never fsynced at a power cut
    /// ([`lazy_disk::LazyDisk`], [`LocalSite::power_cut`]). Needs root and
    /// `/dev/fuse`.
    /// The value is the `edgeplane-lazyfs` binary (built by the test crate).
    pub lazy_disk: Option<PathBuf>,
    /// Witness nodes (`role = "witness"`: the agent only, no etcd), named
    /// `witness-1`..., in the root namespace; started with
    /// [`LocalSite::start_witness`].
    pub witnesses: usize,
}

impl SiteSpec {
    pub fn new(hosts: usize, voters: usize, binary: impl Into<PathBuf>) -> Self {
        SiteSpec {
            hosts,
            voters,
            isolated_host: None,
            disk_faults: false,
            faketime: false,
            host_gids: None,
            witnesses: 0,
            lazy_disk: None,
            binary: binary.into(),
            // Metrics and uplink are switched off unless a caller asks for them.
            extra_toml: "[metrics]\nenabled = false\n\n[uplink]\nenabled = false\n".to_string(),
            etcd_toml: String::new(),
            cluster_toml: String::new(),
            site: "loopback".to_string(),
        }
    }
}

/// One host of a [`LocalSite`].
#[derive(Debug)]
pub struct LocalHost {
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    pub agent_url: String,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where the agent keeps its files (`paths.root`): the host's directory,
    /// or its lazy disk's mount point ([`SiteSpec::lazy_disk`]).
    pub store: PathBuf,
    disk: Option<lazy_disk::LazyDisk>,
    agent: Option<Child>,
    /// etcd pids this host ever ran (for cleanup even after the pid file is gone).
    etcd_pids: Vec<i32>,
}

impl LocalHost {
    /// The pid of this host's etcd, from the agent's pid file, if it runs.
    pub fn etcd_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir.join("etcd.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// An HTTP client that presents this host's own certificate, as the
    /// `edgeplane` commands run on this host do (operator actions are taken
    /// only from the host itself).
    pub fn own_http_client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let cfg = edgeplane_config::load(&self.config_path)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config;
        let tls = crate::tls::SiteTls::load(&cfg)?;
        Ok(crate::tls::agent_http_client(tls.as_ref(), timeout)?)
    }

    /// The pid of this host's agent, if it runs.
    pub fn agent_pid(&mut self) -> Option<i32> {
        let child = self.agent.as_mut()?;
        match child.try_wait() {
            Ok(None) => i32::try_from(child.id()).ok(),
            _ => None,
        }
    }
}

/// A running loopback site. Dropping it kills every process it started.
#[derive(Debug)]
pub struct LocalSite {
    pub root: PathBuf,
    pub hosts: Vec<LocalHost>,
    /// The witnesses ([`SiteSpec::witnesses`]): no etcd, empty etcd URLs.
    pub witnesses: Vec<LocalHost>,
    pub spec: SiteSpec,
    netns: Option<Netns>,
    _tmp: Option<tempfile::TempDir>,
}

impl LocalSite {
    /// Lays out `spec.hosts` hosts under a new temporary directory (kept when
    /// `keep`), with one config file each. Starts nothing.
    pub fn create(spec: SiteSpec, keep: bool) -> io::Result<LocalSite> {
        let tmp = tempfile::Builder::new()
            .prefix("edgeplane-site-")
            .tempdir()?;
        let root = tmp.path().to_path_buf();
        let netns = match spec.isolated_host {
            Some(_) => Some(Netns::create()?),
            None => None,
        };
        let ip_of = |i: usize| match (&netns, spec.isolated_host) {
            (Some(ns), Some(iso)) if i == iso => ns.inner_ip.clone(),
            (Some(ns), Some(_)) => ns.outer_ip.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let mut hosts = Vec::new();
        for i in 0..spec.hosts {
            let name = format!("host-{}", i + 1);
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir)?;
            let disk = match &spec.lazy_disk {
                Some(bin) => Some(lazy_disk::LazyDisk::mount(bin, &dir)?),
                None => None,
            };
            let store = disk
                .as_ref()
                .map_or(dir.clone(), |d| d.path().to_path_buf());
            hosts.push(LocalHost {
                config_path: dir.join("edgeplane.toml"),
                client_url: format!("https://{}:{}", ip_of(i), free_port()?),
                peer_url: format!("https://{}:{}", ip_of(i), free_port()?),
                agent_url: format!("https://{}:{}", ip_of(i), free_port()?),
                state_dir: store.join("state"),
                data_dir: store.join("etcd"),
                store,
                disk,
                name,
                dir,
                agent: None,
                etcd_pids: Vec::new(),
            });
            // Where an in-band fence reaches this host ("its BMC").
            std::fs::write(
                root.join(format!("host-{}", i + 1)).join("bmc.addr"),
                ip_of(i) + "\n",
            )?;
        }
        // Witnesses sit in the root namespace (with every host but the isolated one).
        let witness_ip = match &netns {
            Some(ns) => ns.outer_ip.clone(),
            None => "127.0.0.1".to_string(),
        };
        let mut witnesses = Vec::new();
        for j in 0..spec.witnesses {
            let name = format!("witness-{}", j + 1);
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir)?;
            witnesses.push(LocalHost {
                config_path: dir.join("edgeplane.toml"),
                client_url: String::new(),
                peer_url: String::new(),
                agent_url: format!("https://{witness_ip}:{}", free_port()?),
                state_dir: dir.join("state"),
                data_dir: dir.join("etcd"),
                store: dir.clone(),
                disk: None,
                name,
                dir,
                agent: None,
                etcd_pids: Vec::new(),
            });
        }
        // TLS on, as on a real site: a CA and one certificate per host.
        let mut specs: Vec<crate::certs::HostSpec> = (0..hosts.len())
            .map(|i| crate::certs::HostSpec {
                name: hosts[i].name.clone(),
                sans: vec![hosts[i].name.clone(), ip_of(i)],
            })
            .collect();
        specs.extend(witnesses.iter().map(|w| crate::certs::HostSpec {
            name: w.name.clone(),
            sans: vec![w.name.clone(), witness_ip.clone()],
        }));
        certs::issue_site(&root.join("tls"), &spec.site, &specs)?;
        let gateway = match &netns {
            Some(ns) => ns.outer_ip.clone(),
            None => "127.0.0.1".to_string(),
        };
        for h in hosts.iter().chain(&witnesses) {
            let cfg =
                render_site_config(&spec, &hosts, &witnesses, h).replace("{gateway}", &gateway);
            std::fs::write(&h.config_path, cfg)?;
        }
        write_fence_script(&root)?;
        if spec.disk_faults {
            write_disk_wrapper(&root)?;
        }
        // EDGEPLANE_KEEP_SITE=1 keeps every site's files for a post-mortem.
        let keep = keep || std::env::var("EDGEPLANE_KEEP_SITE").is_ok_and(|v| v == "1");
        let tmp = if keep {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Ok(LocalSite {
            root,
            hosts,
            witnesses,
            spec,
            netns,
            _tmp: tmp,
        })
    }

    /// Starts host `i`'s agent (its stderr goes to `agent.log` in the host's
    /// directory). A host a fence powered off is powered on by this.
    pub fn start_agent(&mut self, i: usize) -> io::Result<()> {
        self.start_agent_with_env(i, &[])
    }

    /// [`LocalSite::start_agent`] with extra environment variables for the
    /// agent (e.g. the `NOTIFY_SOCKET` and `WATCHDOG_USEC` systemd sets).
    pub fn start_agent_with_env(&mut self, i: usize, env: &[(String, String)]) -> io::Result<()> {
        let binary = self.spec.binary.clone();
        let faketime = self.spec.faketime_env(&self.hosts[i].dir)?;
        let h = &mut self.hosts[i];
        match std::fs::remove_file(h.dir.join(POWERED_OFF)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.dir.join("agent.log"))?;
        let mut cmd = match (&self.netns, self.spec.isolated_host) {
            (Some(ns), Some(iso)) if iso == i => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(&binary);
                c
            }
            _ => Command::new(&binary),
        };
        if let Some(base) = self.spec.host_gids {
            use std::os::unix::process::CommandExt;
            cmd.gid(base + i as u32);
        }
        let child = cmd
            .arg("agent")
            .arg("--config")
            .arg(&h.config_path)
            .env(
                "RUST_LOG",
                std::env::var("EDGEPLANE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(faketime)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        // For the fence script, which "powers off" a host by its pids.
        std::fs::write(h.dir.join("agent.pid"), format!("{}\n", child.id()))?;
        h.agent = Some(child);
        Ok(())
    }

    /// Starts witness `j`'s agent (log: `agent.log` in its directory).
    pub fn start_witness(&mut self, j: usize) -> io::Result<()> {
        let binary = self.spec.binary.clone();
        let w = &mut self.witnesses[j];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(w.dir.join("agent.log"))?;
        let child = Command::new(&binary)
            .arg("agent")
            .arg("--config")
            .arg(&w.config_path)
            .env(
                "RUST_LOG",
                std::env::var("EDGEPLANE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        w.agent = Some(child);
        Ok(())
    }

    /// Whether a fence powered host `i` off (and nobody powered it on since).
    pub fn powered_off(&self, i: usize) -> bool {
        self.hosts[i].dir.join(POWERED_OFF).exists()
    }

    /// Powers host `i` on again after a fence: starts its agent.
    pub fn power_on(&mut self, i: usize) -> io::Result<()> {
        self.start_agent(i)
    }

    /// SIGKILL host `i`'s agent only (etcd keeps running).
    pub fn kill_agent(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(mut child) = h.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL host `i`'s etcd only.
    pub fn kill_etcd(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(pid) = h.etcd_pid() {
            h.etcd_pids.push(pid);
            signal(pid, Signal::SIGKILL);
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
    }

    /// Power loss: SIGKILL the agent, then etcd.
    pub fn kill_host(&mut self, i: usize) {
        let etcd = self.hosts[i].etcd_pid();
        self.kill_agent(i);
        if let Some(pid) = etcd.or_else(|| self.hosts[i].etcd_pid()) {
            self.hosts[i].etcd_pids.push(pid);
            signal(pid, Signal::SIGKILL);
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
    }

    /// Power loss that also loses what the disks held in their caches:
    /// hosts `which` SIGKILLed (agent, then etcd), then each one's lazy
    /// disk drops every write not fsynced and is mounted again (needs
    /// [`SiteSpec::lazy_disk`]). Start the agents again with
    /// [`LocalSite::start_agent`]. Returns each disk's account of what it
    /// dropped, `HOST: power cut: ...`.
    pub fn power_cut(&mut self, which: &[usize]) -> io::Result<Vec<String>> {
        for &i in which {
            self.kill_host(i);
        }
        let mut said = Vec::new();
        for &i in which {
            let h = &mut self.hosts[i];
            let disk = h.disk.as_mut().ok_or_else(|| {
                io::Error::other(format!(
                    "{} has no lazy disk: the site was not created with lazy_disk",
                    h.name
                ))
            })?;
            said.push(format!("{}: {}", h.name, disk.power_cut()?));
        }
        Ok(said)
    }

    /// Where host `i`'s store really is: its lazy disk's backing directory
    /// ([`SiteSpec::lazy_disk`]; a test mounts a small tmpfs inside it to
    /// fill the disk), or the store itself.
    pub fn backing_store(&self, i: usize) -> PathBuf {
        let h = &self.hosts[i];
        h.disk
            .as_ref()
            .map_or_else(|| h.store.clone(), |d| d.backing().to_path_buf())
    }

    /// Host `i`'s lazy disk ([`SiteSpec::lazy_disk`]), if it has one.
    pub fn lazy_disk(&self, i: usize) -> Option<&lazy_disk::LazyDisk> {
        self.hosts[i].disk.as_ref()
    }

    /// SIGSTOP or SIGCONT the whole host (agent and etcd).
    pub fn signal_host(&mut self, i: usize, sig: Signal) {
        if let Some(pid) = self.hosts[i].agent_pid() {
            signal(pid, sig);
        }
        if let Some(pid) = self.hosts[i].etcd_pid() {
            signal(pid, sig);
        }
    }

    /// Stalls (`stalled = true`) or releases every fsync and fdatasync of
    /// host `i`'s etcd: SIGSTOP or SIGCONT of the strace that traces them
    /// (needs [`SiteSpec::disk_faults`]). While the tracer is stopped, an
    /// etcd thread that calls fsync waits in the kernel as on a hung disk;
    /// every other syscall runs on. Returns the tracer's pid.
    pub fn stall_fsync(&self, i: usize, stalled: bool) -> io::Result<i32> {
        let pid = self.hosts[i]
            .etcd_pid()
            .ok_or_else(|| io::Error::other(format!("{} runs no etcd", self.hosts[i].name)))?;
        let tracer = tracer_of(pid).ok_or_else(|| {
            io::Error::other(format!(
                "{}'s etcd (pid {pid}) has no tracer: the site was not created with disk_faults",
                self.hosts[i].name
            ))
        })?;
        signal(
            tracer,
            if stalled {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            },
        );
        Ok(tracer)
    }

    /// Arms fsync failures for host `i`'s *next* etcd start: from its
    /// `after`-th fsync or fdatasync on (counted per thread, as strace
    /// does), every one fails with EIO. Used once: the wrapper removes the
    /// file when it reads it. strace fixes what it injects when it starts,
    /// so the failures begin only after etcd (re)starts.
    pub fn arm_fsync_eio(&self, i: usize, after: u32) -> io::Result<()> {
        std::fs::write(
            self.hosts[i].store.join(FSYNC_INJECT),
            format!("error=EIO:when={after}+\n"),
        )
    }

    /// Removes an armed fsync failure that no etcd start has used (the host
    /// ran no etcd), so it does not strike a later, unrelated start.
    pub fn disarm_fsync_eio(&self, i: usize) -> io::Result<()> {
        match std::fs::remove_file(self.hosts[i].store.join(FSYNC_INJECT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Kills everything this site started.
    pub fn kill_all(&mut self) {
        for w in &mut self.witnesses {
            if let Some(mut child) = w.agent.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for i in 0..self.hosts.len() {
            self.kill_host(i);
            let h = &mut self.hosts[i];
            for pid in h.etcd_pids.drain(..) {
                if alive(pid) {
                    signal(pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Cuts the isolated host off the network (`up = false`) or reconnects it.
    pub fn set_link(&self, up: bool) -> io::Result<()> {
        let ns = self
            .netns
            .as_ref()
            .ok_or_else(|| io::Error::other("this site has no isolated host"))?;
        run_ip(&["link", "set", &ns.outer_if, if up { "up" } else { "down" }])
    }

    /// The isolated host's network namespace, its address inside and the
    /// root namespace's address on the veth pair: `(netns, inner, outer)`.
    pub fn isolated_net(&self) -> Option<(String, String, String)> {
        self.netns
            .as_ref()
            .map(|ns| (ns.name.clone(), ns.inner_ip.clone(), ns.outer_ip.clone()))
    }

    /// The address of the root network namespace every host reaches (what
    /// `{gateway}` in [`SiteSpec::extra_toml`] becomes).
    pub fn gateway(&self) -> String {
        match &self.netns {
            Some(ns) => ns.outer_ip.clone(),
            None => "127.0.0.1".to_string(),
        }
    }

    /// Client URLs of every host (for an etcd client that should reach whoever is a voter).
    pub fn client_urls(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.client_url.clone()).collect()
    }
}

impl Drop for LocalSite {
    fn drop(&mut self) {
        self.kill_all();
        // A failing test's message points at the site's files: keep them.
        if std::thread::panicking()
            && let Some(tmp) = self._tmp.take()
        {
            let _ = tmp.keep();
            eprintln!("site files kept in {}", self.root.display());
        }
    }
}

/// The config file of host `me` (an ordinary Edgeplane config: the agent
/// cannot tell a loopback site from a real one).
pub fn render_config(spec: &SiteSpec, hosts: &[LocalHost], me: &LocalHost) -> String {
    render_site_config(spec, hosts, &[], me)
}

/// [`render_config`] for a site with witnesses (`role = "witness"`, after
/// the hosts).
pub fn render_site_config(
    spec: &SiteSpec,
    hosts: &[LocalHost],
    witnesses: &[LocalHost],
    me: &LocalHost,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated for a loopback site by edgeplane's site simulator."
    );
    let _ = writeln!(
        s,
        "profile = \"edge\"\nhost = \"{}\"\nsite = \"{}\"\n",
        me.name, spec.site
    );
    let _ = writeln!(
        s,
        "[cluster]\nvoters = {}\n{}\n",
        spec.voters, spec.cluster_toml
    );
    for h in hosts {
        let _ = writeln!(
            s,
            "[[nodes]]\nname = \"{}\"\npeer_url = \"{}\"\nclient_url = \"{}\"\nagent_url = \"{}\"\n",
            h.name, h.peer_url, h.client_url, h.agent_url
        );
    }
    for w in witnesses {
        let _ = writeln!(
            s,
            "[[nodes]]\nname = \"{}\"\nrole = \"witness\"\nagent_url = \"{}\"\n",
            w.name, w.agent_url
        );
    }
    if let Some(site_dir) = me.dir.parent() {
        let tls = crate::certs::host_dir(&site_dir.join("tls"), &me.name);
        let _ = writeln!(
            s,
            "[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            toml_path(&tls.join("ca.crt")),
            toml_path(&tls.join("host.crt")),
            toml_path(&tls.join("host.key"))
        );
    }
    let _ = writeln!(
        s,
        "[etcd]\ndata_dir = {}\n{}\n",
        toml_path(&me.data_dir),
        spec.etcd_toml
    );
    if spec.disk_faults
        && let Some(root) = me.dir.parent()
    {
        // Still inside [etcd]: the table above ends with the extra keys.
        s = s.trim_end().to_string();
        let _ = writeln!(s, "\nbinary = {}\n", toml_path(&root.join(DISK_WRAPPER)));
    }
    let _ = writeln!(s, "[paths]\nroot = {}\n", toml_path(&me.store));
    let _ = writeln!(
        s,
        "[log]\ndir = {}\nto_files = false\n",
        toml_path(&me.dir.join("log"))
    );
    // `{root}` in the extra sections is the site's directory (e.g. for the fence script).
    let root = me
        .dir
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    s.push_str(
        &spec
            .extra_toml
            .replace("{root}", &root)
            .replace("{host_name}", &me.name),
    );
    s
}

/// A network namespace for one host, joined to the root namespace by a veth
/// pair on a /30 of 10.200.0.0/16 chosen per site. Deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
    outer_if: String,
    inner_ip: String,
    outer_ip: String,
}

static NETNS_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn run_ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    fn create() -> io::Result<Netns> {
        let seq = NETNS_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() * 16 + seq) % 16_000;
        let name = format!("edgeplane-{id}");
        let outer_if = format!("epo{id}");
        let inner_if = format!("epi{id}");
        // 10.200.0.0/16 split in /30s: .1 outside, .2 inside.
        let base = id * 4;
        let (a, b) = (base / 256, base % 256);
        let outer_ip = format!("10.200.{a}.{}", b + 1);
        let inner_ip = format!("10.200.{a}.{}", b + 2);
        let _ = run_ip(&["netns", "del", &name]);
        run_ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            outer_if,
            inner_ip,
            outer_ip,
        };
        run_ip(&[
            "link",
            "add",
            &ns.outer_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
        ])?;
        run_ip(&["link", "set", &inner_if, "netns", &ns.name])?;
        run_ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.outer_ip),
            "dev",
            &ns.outer_if,
        ])?;
        run_ip(&["link", "set", &ns.outer_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            run_ip(&all)
        };
        exec(&[
            "addr",
            "add",
            &format!("{}/30", ns.inner_ip),
            "dev",
            &inner_if,
        ])?;
        exec(&["link", "set", &inner_if, "up"])?;
        exec(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_ip(&["link", "del", &self.outer_if]);
        let _ = run_ip(&["netns", "del", &self.name]);
    }
}

/// `ROOT/fence.sh HOST`: the loopback stand-in for a BMC power-off, out of
/// band (it works whatever the network between the hosts does). It marks
/// the host powered off (`ROOT/HOST/powered-off`, which keeps it down until
/// [`LocalSite::power_on`] or [`LocalSite::start_agent`]), SIGKILLs the
/// host's agent and then its etcd (by their pid files) and exits 0 once
/// both are gone — "confirmed powered off".
pub const FENCE_SCRIPT: &str = "fence.sh";

/// `ROOT/fence-inband.sh HOST`: the same power-off, but reached in band,
/// over the site's own network (as an IPMI over the LAN is): it first pings
/// the host's address (`ROOT/HOST/bmc.addr`) from the namespace of the
/// agent that runs it, and fails when the host cannot be reached, e.g.
/// across a partition. Needs `ping` (iputils-ping).
pub const FENCE_INBAND_SCRIPT: &str = "fence-inband.sh";

/// The marker a fence leaves in a host's directory.
pub const POWERED_OFF: &str = "powered-off";

fn write_fence_script(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(FENCE_SCRIPT);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# Loopback fence: power off host $1 by killing its processes; it stays off\n# until the test powers it on (the powered-off marker).\nset -u\nroot={root}\n[ -d \"$root/$1\" ] || {{ echo \"fence: no host $1\" >&2; exit 1; }}\n: > \"$root/$1/{POWERED_OFF}\"\nfor f in \"$root/$1/agent.pid\" \"$root/$1/state/etcd.pid\" \"$root/$1/disk/state/etcd.pid\"; do\n  [ -f \"$f\" ] || continue\n  pid=$(cat \"$f\")\n  kill -9 \"$pid\" 2>/dev/null\n  n=0\n  while kill -0 \"$pid\" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done\ndone\nexit 0\n",
            root = root.display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let path = root.join(FENCE_INBAND_SCRIPT);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# In-band loopback fence: the power-off of fence.sh, only if host $1 is\n# reachable over the site's network from here.\nset -u\nroot={root}\naddr=$(cat \"$root/$1/bmc.addr\" 2>/dev/null) || {{ echo \"fence: no address for $1\" >&2; exit 1; }}\nif ! ping -c 1 -W 1 \"$addr\" >/dev/null 2>&1; then\n  echo \"fence: $1 ($addr) is unreachable from here\" >&2\n  exit 1\nfi\nexec \"$root/{FENCE_SCRIPT}\" \"$1\"\n",
            root = root.display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// `ROOT/etcd-disk.sh ARGS…`: etcd (`$EDGEPLANE_ETCD` or `/usr/bin/etcd`)
/// under `strace -D -f --seccomp-bpf -e trace=fsync,fdatasync`. With
/// seccomp-bpf only those two syscalls stop for the tracer; every other one
/// runs at full speed. `-D` makes the tracer a detached grandchild, so the
/// pid the agent started (and its pid file names) is etcd itself: a
/// SIGKILL, SIGSTOP or fence hits etcd as without the wrapper, and the
/// tracer exits with it. The tracer's pid is `TracerPid` in
/// `/proc/ETCD/status`. If `HOST/fsync-inject` exists when etcd starts
/// (`HOST` is the directory of `--data-dir`), its line is an strace
/// injection (`error=EIO:when=N+`) applied to both syscalls, and the file
/// is removed.
pub const DISK_WRAPPER: &str = "etcd-disk.sh";

/// The one-shot injection file [`DISK_WRAPPER`] reads, in a host's directory.
pub const FSYNC_INJECT: &str = "fsync-inject";

fn write_disk_wrapper(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(DISK_WRAPPER);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# etcd with its fsyncs traced, for disk faults (see the simulator's DISK_WRAPPER).\nset -u\nhost=\nfor a in \"$@\"; do\n  case \"$a\" in --data-dir=*) host=$(dirname \"${{a#--data-dir=}}\");; esac\ndone\ninject=\nif [ -n \"$host\" ] && [ -f \"$host/{FSYNC_INJECT}\" ]; then\n  inject=$(cat \"$host/{FSYNC_INJECT}\")\n  rm -f \"$host/{FSYNC_INJECT}\"\nfi\nif [ -n \"$inject\" ]; then\n  exec strace -D -f -qq --seccomp-bpf -o /dev/null -e trace=fsync,fdatasync -e \"inject=fsync,fdatasync:$inject\" {etcd} \"$@\"\nfi\nexec strace -D -f -qq --seccomp-bpf -o /dev/null -e trace=fsync,fdatasync {etcd} \"$@\"\n",
            etcd = bare::etcd_bin().display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// The pid tracing `pid` (`TracerPid` in its status), if any.
pub fn tracer_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p != 0)
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// One etcd member as seen from outside the site (the agent's own type).
pub use crate::agent::plan::Member as SeenMember;

/// The member list as the leader answers it, else from the first of
/// `client_urls` that answers with a leader. The leader's first: it
/// applies a membership change before any follower, and a member that was
/// just removed, or resumed after a SIGSTOP, still answers for a moment
/// with the membership and leader it last knew (a test once saw a removed
/// voter's stale list as "full strength" before it was added back).
pub async fn member_list(client_urls: &[String]) -> Option<Vec<SeenMember>> {
    let mut fallback = None;
    for url in client_urls {
        let opts = certs::etcd_options(url)
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_secs(1));
        let Ok(mut c) = etcd_client::Client::connect([url.as_str()], Some(opts)).await else {
            continue;
        };
        let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await else {
            continue;
        };
        if st.leader() == 0 || st.is_learner() {
            continue;
        }
        let leads = st.header().is_some_and(|h| h.member_id() == st.leader());
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), c.member_list()).await {
            let list: Vec<SeenMember> = r.members().iter().map(SeenMember::from).collect();
            if leads {
                return Some(list);
            }
            fallback.get_or_insert(list);
        }
    }
    fallback
}

/// Status of one member: (member id, leader id, is_learner), if it answers.
pub async fn member_status(client_url: &str) -> Option<(u64, u64, bool)> {
    let opts = certs::etcd_options(client_url)
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_secs(1));
    let mut c = etcd_client::Client::connect([client_url], Some(opts))
        .await
        .ok()?;
    let st = tokio::time::timeout(Duration::from_secs(1), c.status())
        .await
        .ok()?
        .ok()?;
    Some((
        st.header().map(|h| h.member_id()).unwrap_or(0),
        st.leader(),
        st.is_learner(),
    ))
}

impl LocalSite {
    /// Index of the host whose etcd is the leader.
    pub async fn leader_host(&self) -> Option<usize> {
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some((id, leader, _)) = member_status(&h.client_url).await
                && id != 0
                && id == leader
            {
                return Some(i);
            }
        }
        None
    }

    /// The member ids and learner flags, sorted: any change between two
    /// reads is a removal, a promotion or a join.
    pub async fn member_ids(&self) -> Option<Vec<(u64, bool)>> {
        let mut ids: Vec<(u64, bool)> = member_list(&self.client_urls())
            .await?
            .iter()
            .map(|m| (m.id, m.is_learner))
            .collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// (voters, learners) by host index, when a member list can be read and
    /// every voter answers with a leader: the site at full strength has
    /// `spec.voters` entries in the first vector.
    pub async fn roles(&self) -> Option<(Vec<usize>, Vec<usize>)> {
        let ms = member_list(&self.client_urls()).await?;
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for m in &ms {
            let i = self.hosts.iter().position(|h| h.peer_url == m.peer_url)?;
            if m.is_learner {
                learners.push(i)
            } else {
                voters.push(i)
            }
        }
        Some((voters, learners))
    }

    /// Whether the site is at full strength: `spec.voters` voters that all
    /// answer with a leader, plus `learners` standbys.
    pub async fn full_strength(&self, learners: usize) -> bool {
        let Some((v, l)) = self.roles().await else {
            return false;
        };
        if v.len() != self.spec.voters || l.len() != learners {
            return false;
        }
        for i in v {
            match member_status(&self.hosts[i].client_url).await {
                Some((_, leader, false)) if leader != 0 => {}
                _ => return false,
            }
        }
        true
    }

    /// Polls [`LocalSite::full_strength`] every 100 ms until it holds (true)
    /// or `bound` has passed (false).
    pub async fn wait_full_strength(&self, learners: usize, bound: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.full_strength(learners).await {
                return true;
            }
            if t0.elapsed() >= bound {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `/status` document of host `i`'s agent.
    pub async fn agent_status(&self, i: usize) -> Option<serde_json::Value> {
        let url = format!("{}/status", self.hosts[i].agent_url);
        let c = certs::http_client(Duration::from_secs(3));
        c.get(url).send().await.ok()?.json().await.ok()
    }

    /// Witness `j`'s `/status`, if it answers.
    pub async fn witness_status(&self, j: usize) -> Option<serde_json::Value> {
        let url = format!("{}/status", self.witnesses[j].agent_url);
        let c = certs::http_client(Duration::from_secs(3));
        c.get(url).send().await.ok()?.json().await.ok()
    }

    /// Promotions recorded in the journals of every agent that answers
    /// (each asked up to three times: a loaded host may answer late).
    /// Promotions journalled as done, started at or after `since_ms` (ms
    /// since the epoch), by the agents that answer. Counting from a moment
    /// rather than subtracting totals: a host killed since takes its own
    /// earlier records (e.g. of the bootstrap) out of a total with it.
    pub async fn promotions_since(&self, since_ms: i64) -> u64 {
        let mut n = 0;
        for i in 0..self.hosts.len() {
            for _ in 0..3 {
                if let Some(doc) = self.agent_status(i).await {
                    n += crate::agent::status::recent_ops(&doc)
                        .iter()
                        .filter(|o| {
                            o["kind"] == "promote"
                                && o["outcome"] == "done"
                                && o["started_ms"].as_i64().is_some_and(|t| t >= since_ms)
                        })
                        .count() as u64;
                    break;
                }
            }
        }
        n
    }

    pub async fn promotions(&self) -> u64 {
        let mut n = 0;
        for i in 0..self.hosts.len() {
            for _ in 0..3 {
                if let Some(doc) = self.agent_status(i).await {
                    n += doc
                        .pointer("/journal/promotions")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0);
                    break;
                }
            }
        }
        n
    }
}

/// One acknowledged put of a [`Writer`].
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub value: String,
    /// When the put was sent (its first attempt; retries on other members
    /// within the put's deadline belong to the same put).
    pub sent: Instant,
    /// When etcd acknowledged it.
    pub acked: Instant,
}

/// A write workload: sequential puts of unique keys, each recorded only once
/// etcd acknowledged it, so a checker can prove no acknowledged write was lost.
#[derive(Debug)]
pub struct Writer {
    /// Every acknowledged put, in the order sent (puts are sequential).
    pub acked: std::sync::Arc<std::sync::Mutex<Vec<Ack>>>,
    pub failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The loop of [`Writer::start_with_timeout`]: sequential puts until `s` is set.
async fn write_loop(
    client_urls: Vec<String>,
    prefix: String,
    put_timeout: Duration,
    a: std::sync::Arc<std::sync::Mutex<Vec<Ack>>>,
    f: std::sync::Arc<std::sync::atomic::AtomicU64>,
    s: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut clients: Vec<Option<etcd_client::Client>> = vec![None; client_urls.len()];
    let mut next = 0usize;
    let mut n = 0u64;
    while !s.load(Ordering::Relaxed) {
        let key = format!("{prefix}/{n:08}");
        let value = format!("v{n}");
        let sent = Instant::now();
        let deadline = sent + put_timeout;
        // As etcd's own clients do: an error answer (no leader during
        // an election or a leadership transfer, a refused connection)
        // is retried on the next member until the put's deadline; a
        // member that does not answer in time ends the attempt.
        let mut ok = false;
        loop {
            let i = next % client_urls.len();
            if clients[i].is_none() {
                let opts = certs::etcd_options(&client_urls[i])
                    .with_connect_timeout(Duration::from_millis(300))
                    // The client's own deadline must not undercut `put_timeout`.
                    .with_timeout(put_timeout.max(Duration::from_secs(2)))
                    .with_require_leader(true);
                clients[i] = etcd_client::Client::connect([client_urls[i].as_str()], Some(opts))
                    .await
                    .ok();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(c) = clients[i].as_mut() {
                match tokio::time::timeout(left, c.put(key.as_str(), value.as_str(), None)).await {
                    Ok(Ok(_)) => {
                        ok = true;
                        break;
                    }
                    Ok(Err(_)) => {}
                    Err(_) => break,
                }
            }
            next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n += 1;
        if ok {
            let acked = Instant::now();
            if let Ok(mut v) = a.lock() {
                v.push(Ack {
                    key,
                    value,
                    sent,
                    acked,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            // A failed put may still have been applied: it is not counted as
            // acknowledged, and the next attempt uses a fresh key.
            f.fetch_add(1, Ordering::Relaxed);
            next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Writer {
    /// The bound on one put of [`Writer::start`].
    pub const PUT_TIMEOUT: Duration = Duration::from_millis(700);

    /// Starts writing `prefix/N` keys to whichever host accepts them; a put
    /// not acknowledged within [`Writer::PUT_TIMEOUT`] (error answers retried
    /// on the next member meanwhile) counts as failed and the next member is
    /// tried.
    pub fn start(client_urls: Vec<String>, prefix: &str) -> Writer {
        Writer::start_with_timeout(client_urls, prefix, Writer::PUT_TIMEOUT)
    }

    /// As [`Writer::start`], with another bound per put (a stalled but healthy
    /// member, e.g. one being defragmented, answers late rather than never).
    pub fn start_with_timeout(
        client_urls: Vec<String>,
        prefix: &str,
        put_timeout: Duration,
    ) -> Writer {
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, f, s, prefix) = (
            acked.clone(),
            failed.clone(),
            stop.clone(),
            prefix.to_string(),
        );
        let task = tokio::spawn(write_loop(client_urls, prefix, put_timeout, a, f, s));
        Writer {
            acked,
            failed,
            stop,
            task: Some(task),
        }
    }

    /// As [`Writer::start`], but from inside host `i`'s network namespace
    /// (the isolated host's, [`SiteSpec::isolated_host`]): a client there
    /// keeps reaching that host across a cut, as its local users do. The
    /// loop runs on its own thread (a namespace is per thread), with its
    /// own runtime.
    pub fn start_in_netns(
        site: &LocalSite,
        client_urls: Vec<String>,
        prefix: &str,
    ) -> io::Result<Writer> {
        let ns = site
            .netns
            .as_ref()
            .ok_or_else(|| io::Error::other("this site has no isolated host"))?;
        let path = PathBuf::from("/run/netns").join(&ns.name);
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, f, s, prefix) = (
            acked.clone(),
            failed.clone(),
            stop.clone(),
            prefix.to_string(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::spawn(move || {
            let entered = std::fs::File::open(&path).and_then(|file| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
            });
            let rt = entered.and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            });
            match rt {
                Ok(rt) => {
                    let _ = ready_tx.send(Ok(()));
                    rt.block_on(write_loop(
                        client_urls,
                        prefix,
                        Writer::PUT_TIMEOUT,
                        a,
                        f,
                        s,
                    ));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the writer thread ended before starting"))??;
        let task = tokio::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
        Ok(Writer {
            acked,
            failed,
            stop,
            task: Some(task),
        })
    }

    /// The `p`th percentile of acknowledged put latency (nearest rank).
    pub fn latency_percentile(&self, p: f64) -> Duration {
        let mut v: Vec<Duration> = self
            .acked
            .lock()
            .map(|a| a.iter().map(|x| x.acked - x.sent).collect())
            .unwrap_or_default();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// When the site was writable again after `t`: the acknowledgement of the
    /// first put *sent* at or after `t`. A put sent before `t` and
    /// acknowledged after it (sent before a kill, answered just after)
    /// says nothing about the site after `t`, so it does not count.
    pub fn ack_of_first_put_sent_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .ok()?
            .iter()
            .find(|a| a.sent >= t)
            .map(|a| a.acked)
    }

    /// How many puts were both sent and acknowledged within `window` (e.g.
    /// during a fault): the writes a loss check of that window is about.
    pub fn sent_and_acked_within(&self, window: impl std::ops::RangeBounds<Instant>) -> usize {
        self.acked
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|a| window.contains(&a.sent) && window.contains(&a.acked))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stops the workload and waits for it.
    pub async fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Reads back every acknowledged key from the site; returns how many are
    /// missing or wrong. 0 also when nothing was acknowledged: a check of
    /// "nothing lost" must also check that something was acknowledged in the
    /// window it is about ([`Writer::sent_and_acked_within`]; the tests'
    /// `assert_no_acked_write_lost` does both).
    pub async fn lost(&self, client_urls: &[String]) -> anyhow::Result<usize> {
        Ok(self.lost_acks(client_urls).await?.len())
    }

    /// The acknowledged puts that do not read back from the site (missing
    /// or with another value), with their send and acknowledgement times.
    pub async fn lost_acks(&self, client_urls: &[String]) -> anyhow::Result<Vec<Ack>> {
        let acked: Vec<Ack> = self.acked.lock().map(|v| v.clone()).unwrap_or_default();
        let Some(prefix) = acked.first().map(|a| {
            let k = &a.key;
            k.rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default()
        }) else {
            return Ok(Vec::new());
        };
        for url in client_urls {
            let opts = certs::etcd_options(url)
                .with_connect_timeout(Duration::from_millis(300))
                .with_timeout(Duration::from_secs(5))
                .with_require_leader(true);
            let Ok(mut c) = etcd_client::Client::connect([url.as_str()], Some(opts)).await else {
                continue;
            };
            let Ok(resp) = c
                .get(
                    format!("{prefix}/"),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
            else {
                continue;
            };
            let have: std::collections::HashMap<String, String> = resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    Some((
                        kv.key_str().ok()?.to_string(),
                        kv.value_str().ok()?.to_string(),
                    ))
                })
                .collect();
            return Ok(acked
                .into_iter()
                .filter(|a| have.get(&a.key) != Some(&a.value))
                .collect());
        }
        anyhow::bail!("no member answered a linearizable read")
    }
}
