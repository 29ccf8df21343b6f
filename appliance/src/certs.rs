//! `edgeplane certs init`: a site CA and one certificate per host, for a
//! first install, an image build or a test site.
//!
//! Layout of the output directory (mode 0700):
//!
//! ```text
//! DIR/ca.crt, DIR/ca.key            the site CA (keep ca.key off the hosts)
//! DIR/hosts/NAME/ca.crt             what goes to /etc/edgeplane/tls/ on NAME
//! DIR/hosts/NAME/host.crt
//! DIR/hosts/NAME/host.key           mode 0600
//! ```
//!
//! Rerunning it keeps the CA and every existing host certificate and only
//! adds the missing hosts, so a host added to the site later gets a
//! certificate of the same CA. Certificates are ECDSA P-256, valid from
//! issue for 20 years: a site cut off for weeks must never find its
//! certificates expired, and the CA key is the thing to protect and rotate.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;

/// One host to issue a certificate for: its name and every name or address
/// peers use to reach it (the host parts of its node URLs).
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub name: String,
    pub sans: Vec<String>,
}

impl HostSpec {
    /// The host's name plus the host part of each of its URLs.
    pub fn from_node(n: &edgeplane_config::Node) -> HostSpec {
        let mut sans = vec![n.name.clone()];
        for u in [&n.peer_url, &n.client_url, &n.agent_url] {
            if let Ok(ep) = edgeplane_config::parse_url(u) {
                let h = ep.host.trim_start_matches('[').trim_end_matches(']');
                if !sans.iter().any(|s| s == h) {
                    sans.push(h.to_string());
                }
            }
        }
        HostSpec {
            name: n.name.clone(),
            sans,
        }
    }
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct InitReport {
    pub ca_created: bool,
    pub issued: Vec<String>,
    pub kept: Vec<String>,
}

/// Where a host's three files are under the output directory.
pub fn host_dir(dir: &Path, host: &str) -> PathBuf {
    dir.join("hosts").join(host)
}

fn validity(p: &mut CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A day of slack for hosts whose clocks lag the one that issued.
    let from = std::time::Duration::from_secs(secs.saturating_sub(86_400));
    p.not_before = rcgen::date_time_ymd(1970, 1, 1) + from;
    p.not_after = p.not_before + std::time::Duration::from_secs(20 * 365 * 86_400);
}

/// Creates (or completes) the site's CA and host certificates under `dir`.
pub fn init(dir: &Path, site: &str, hosts: &[HostSpec], force: bool) -> Result<InitReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))?;
    let mut report = InitReport::default();
    let (ca_pem, ca_key) = match (
        std::fs::read_to_string(dir.join("ca.crt")),
        std::fs::read_to_string(dir.join("ca.key")),
    ) {
        (Ok(crt), Ok(key)) => {
            let key = KeyPair::from_pem(&key)
                .with_context(|| format!("{}: not a private key", dir.join("ca.key").display()))?;
            (crt, key)
        }
        (Err(_), Err(_)) => {
            let key = KeyPair::generate().context("generating the CA key")?;
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name
                .push(DnType::CommonName, format!("Edgeplane site CA {site}"));
            p.distinguished_name
                .push(DnType::OrganizationName, "Edgeplane");
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut p);
            let cert = p.self_signed(&key).context("signing the CA")?;
            write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
            report.ca_created = true;
            (cert.pem(), key)
        }
        _ => bail!(
            "{} has one of ca.crt and ca.key but not the other; restore the missing one or start from an empty directory",
            dir.display()
        ),
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
        .with_context(|| format!("{}: not a CA certificate", dir.join("ca.crt").display()))?;
    for h in hosts {
        let hd = host_dir(dir, &h.name);
        if !force && hd.join("host.crt").exists() && hd.join("host.key").exists() {
            report.kept.push(h.name.clone());
            continue;
        }
        std::fs::create_dir_all(&hd).with_context(|| format!("creating {}", hd.display()))?;
        std::fs::set_permissions(&hd, std::fs::Permissions::from_mode(0o700))?;
        let key = KeyPair::generate().context("generating a host key")?;
        let mut p = CertificateParams::new(h.sans.clone())
            .with_context(|| format!("host {}: invalid name in {:?}", h.name, h.sans))?;
        p.distinguished_name
            .push(DnType::CommonName, h.name.clone());
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, site.to_string());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p);
        let cert = p
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing the certificate of {}", h.name))?;
        write_file(&hd.join("host.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&hd.join("host.crt"), cert.pem().as_bytes(), 0o644)?;
        write_file(&hd.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
        report.issued.push(h.name.clone());
    }
    // The commissioning CRL: number 1, nothing revoked. With a CRL in place
    // from the first start, etcd runs with `--client-crl-file` and reads
    // every later CRL on each new connection, with no restart.
    let crl_file = dir.join("crl.pem");
    if !crl_file.exists() {
        let crl = crate::crl::Crl::issue(&ca_pem, &ca_key.serialize_pem(), 1, &[])?;
        write_file(&crl_file, crl.pem.as_bytes(), 0o644)?;
    }
    ship_crl(dir, hosts.iter().map(|h| h.name.as_str()))?;
    Ok(report)
}

/// Copies the site's newest CRL (`DIR/crl.pem`) into each host's directory
/// (`hosts/NAME/crl.pem`, beside its certificate), where its agent installs
/// it at start when it is newer than the one it holds.
fn ship_crl<'a>(dir: &Path, hosts: impl Iterator<Item = &'a str>) -> Result<()> {
    let crl_file = dir.join("crl.pem");
    let pem =
        std::fs::read(&crl_file).with_context(|| format!("reading {}", crl_file.display()))?;
    for h in hosts {
        let hd = host_dir(dir, h);
        if hd.is_dir() {
            write_file(&hd.join("crl.pem"), &pem, 0o644)?;
        }
    }
    Ok(())
}

/// Writes a file atomically with `mode` from the start (a key is never
/// readable by others, not even for a moment).
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// `edgeplane certs init --site DIR --config FILE [--force]`.
pub fn run_init(dir: &Path, config: &Path, force: bool) -> Result<()> {
    let loaded = edgeplane_config::load(config)
        .map_err(|e| crate::BadConfig(e.to_string()))
        .context("loading the site config")?;
    let cfg = loaded.config;
    let hosts: Vec<HostSpec> = cfg
        .nodes
        .iter()
        .chain(&cfg.witnesses)
        .map(HostSpec::from_node)
        .collect();
    let r = init(dir, &cfg.site, &hosts, force)?;
    if r.ca_created {
        println!("created the site CA: {}", dir.join("ca.crt").display());
    } else {
        println!("kept the site CA: {}", dir.join("ca.crt").display());
    }
    for h in &r.issued {
        println!("issued {:<16} {}", h, host_dir(dir, h).display());
    }
    for h in &r.kept {
        println!(
            "kept   {:<16} {} (--force reissues)",
            h,
            host_dir(dir, h).display()
        );
    }
    println!(
        "copy hosts/NAME/{{ca.crt,host.crt,host.key}} to {} on each host (key mode 0600); keep ca.key off the hosts",
        edgeplane_config::DEFAULT_TLS_DIR
    );
    Ok(())
}

/// What [`revoke`] did.
#[derive(Debug)]
pub struct RevokeReport {
    pub crl: crate::crl::Crl,
    pub crl_file: PathBuf,
    /// Where the revoked host's files were moved (so that `certs init`
    /// issues a new certificate for a replacement host).
    pub moved_to: PathBuf,
}

/// Revokes `host`'s certificate: `dir/crl.pem` becomes a CRL of the CA
/// with every serial revoked so far plus this one, numbered one higher.
pub fn revoke(dir: &Path, host: &str) -> Result<RevokeReport> {
    let ca = std::fs::read_to_string(dir.join("ca.crt"))
        .with_context(|| format!("reading {}", dir.join("ca.crt").display()))?;
    let key = std::fs::read_to_string(dir.join("ca.key")).with_context(|| {
        format!(
            "reading {} (certs revoke runs where the CA key is, not on a host)",
            dir.join("ca.key").display()
        )
    })?;
    let hd = host_dir(dir, host);
    let pem = std::fs::read(hd.join("host.crt")).with_context(|| {
        format!(
            "reading {} ({host} has no certificate in {})",
            hd.join("host.crt").display(),
            dir.display()
        )
    })?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem)
        .with_context(|| format!("{}: not a PEM certificate", hd.join("host.crt").display()))?;
    let serial = crate::crl::serial_of(der.as_ref())
        .with_context(|| format!("{}: no serial number", hd.join("host.crt").display()))?;
    let crl_file = dir.join("crl.pem");
    let (number, mut serials) = match std::fs::read(&crl_file) {
        Ok(p) => {
            let held = crate::crl::Crl::parse(&p, ca.as_bytes())
                .with_context(|| format!("{}", crl_file.display()))?;
            (held.number, held.revoked)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", crl_file.display())),
    };
    if !serials.contains(&serial) {
        serials.push(serial);
    }
    let crl = crate::crl::Crl::issue(&ca, &key, number + 1, &serials)?;
    write_file(&crl_file, crl.pem.as_bytes(), 0o644)?;
    let moved_to = dir
        .join("hosts")
        .join(format!("{host}.revoked-{}", crl.number));
    std::fs::rename(&hd, &moved_to)
        .with_context(|| format!("moving {} to {}", hd.display(), moved_to.display()))?;
    // The other hosts' directories get the new CRL too: a host installed
    // from them later starts with it.
    let others: Vec<String> = std::fs::read_dir(dir.join("hosts"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("host.crt").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ship_crl(dir, others.iter().map(String::as_str))?;
    Ok(RevokeReport {
        crl,
        crl_file,
        moved_to,
    })
}

/// `edgeplane certs revoke HOST --site DIR --config FILE`.
pub fn run_revoke(dir: &Path, host: &str, config: &Path) -> Result<()> {
    // The config only serves the printed command; revoking works without it.
    let cfg = edgeplane_config::load(config).ok().map(|l| l.config);
    let r = revoke(dir, host)?;
    println!(
        "revoked {host}: {} (CRL number {}, {} certificate(s) revoked); its files moved to {}",
        r.crl_file.display(),
        r.crl.number,
        r.crl.revoked.len(),
        r.moved_to.display()
    );
    println!();
    println!(
        "Install the CRL on any one other host of the site: its agent passes it on to every peer, and once they hold it, {host}'s etcd member is removed (etcd checks a CRL only on new connections):"
    );
    println!(
        "     scp {} HOST: && ssh HOST edgeplane certs install-crl crl.pem --remove-member {host}",
        r.crl_file.display()
    );
    println!("If that host cannot reach the others' etcd, remove the member by hand:");
    println!("{}", member_removal_command(cfg.as_ref(), host));
    Ok(())
}

/// The exact commands that remove `host`'s etcd member, run on any other
/// host of the site.
pub fn member_removal_command(cfg: Option<&edgeplane_config::Config>, host: &str) -> String {
    let (endpoints, tls) = match cfg {
        Some(c) => (
            c.nodes
                .iter()
                .filter(|n| n.name != host)
                .map(|n| n.client_url.clone())
                .collect::<Vec<_>>()
                .join(","),
            c.tls_enabled().then(|| {
                format!(
                    " --cacert={} --cert={} --key={}",
                    c.tls.ca_file.display(),
                    c.tls.cert_file.display(),
                    c.tls.key_file.display()
                )
            }),
        ),
        None => ("CLIENT_URLS_OF_THE_OTHER_HOSTS".to_string(), None),
    };
    let tls = tls.unwrap_or_default();
    format!(
        "     ID=$(ETCDCTL_API=3 etcdctl --endpoints={endpoints}{tls} member list | awk -F', ' '$3 == \"{host}\" {{print $1}}')\n     ETCDCTL_API=3 etcdctl --endpoints={endpoints}{tls} member remove \"$ID\""
    )
}

/// `edgeplane certs install-crl FILE --config FILE [--remove-member HOST]...`:
/// verified against this host's CA, installed when newer than the CRL held;
/// then, once the other agents hold it, the named hosts' etcd members are
/// removed (etcd checks a CRL only on new connections, so a revoked
/// member's open raft streams are cut by its removal).
pub fn run_install_crl(file: &Path, config: &Path, remove: &[String]) -> Result<()> {
    let loaded = edgeplane_config::load(config)
        .map_err(|e| crate::BadConfig(e.to_string()))
        .context("loading the config")?;
    let cfg = loaded.config;
    if !cfg.tls_enabled() {
        bail!("this site runs without TLS (http:// URLs): there are no certificates to revoke");
    }
    let ca = std::fs::read(&cfg.tls.ca_file)
        .with_context(|| format!("reading {}", cfg.tls.ca_file.display()))?;
    let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let crl = crate::crl::Crl::parse(&pem, &ca).with_context(|| format!("{}", file.display()))?;
    let dest = crate::crl::crl_path(&cfg.paths.state_dir);
    if crate::crl::install(&dest, &crl, &ca)? {
        println!(
            "installed CRL number {} ({} certificate(s) revoked) at {}; the agent loads it within a reconcile and passes it on to its peers",
            crl.number,
            crl.revoked.len(),
            dest.display()
        );
    } else {
        println!(
            "kept the CRL at {}: it is as new as or newer than CRL number {}",
            dest.display(),
            crl.number
        );
    }
    if remove.is_empty() {
        return Ok(());
    }
    if remove.iter().any(|h| h == &cfg.host) {
        bail!(
            "not removing {}: it is this host; run install-crl on another host of the site",
            cfg.host
        );
    }
    let tls = crate::tls::SiteTls::load(&cfg)?
        .context("this site runs without TLS: there are no certificates to revoke")?;
    crate::runtime()?.block_on(async {
        let behind = wait_for_crl(&cfg, &tls, crl.number, remove).await;
        if !behind.is_empty() {
            println!(
                "these agents do not report CRL number {} yet (down, or cut off): {}; they take it from a peer when they can",
                crl.number,
                behind.join(", ")
            );
        }
        for host in remove {
            match remove_member(&cfg, &tls, host).await {
                Ok(Some(id)) => println!("removed {host}'s etcd member ({id:x})"),
                Ok(None) => println!("{host} has no etcd member: nothing to remove"),
                Err(e) => bail!(
                    "could not remove {host}'s etcd member: {e:#}; remove it by hand:\n{}",
                    member_removal_command(Some(&cfg), host)
                ),
            }
        }
        Ok(())
    })
}

/// How long install-crl waits for the other agents to hold the new CRL
/// before it removes members: the etcd of a host that has not loaded it yet
/// would still accept the revoked host's new connections (a way back in as
/// a new member).
const CRL_SPREAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until every agent of the site but `except` reports CRL `number`
/// or newer in `/status`, at most [`CRL_SPREAD_WAIT`]; returns the hosts
/// that did not.
async fn wait_for_crl(
    cfg: &edgeplane_config::Config,
    tls: &crate::tls::SiteTls,
    number: u64,
    except: &[String],
) -> Vec<String> {
    let Ok(http) = crate::tls::agent_http_client(Some(tls), std::time::Duration::from_secs(2))
    else {
        return vec!["(no HTTP client)".into()];
    };
    let deadline = std::time::Instant::now() + CRL_SPREAD_WAIT;
    loop {
        let mut behind = Vec::new();
        for n in cfg.nodes.iter().chain(&cfg.witnesses) {
            if except.contains(&n.name) {
                continue;
            }
            let url = format!("{}/status", n.agent_url.trim_end_matches('/'));
            let held = match http.get(&url).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|d| d.get("crl_number").and_then(serde_json::Value::as_u64)),
                Err(_) => None,
            };
            if held.is_none_or(|h| h < number) {
                behind.push(n.name.clone());
            }
        }
        if behind.is_empty() || std::time::Instant::now() >= deadline {
            return behind;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Removes `host`'s etcd member (found by name, or by its peer URL when it
/// never started), through the other hosts' etcd with this host's
/// certificate. etcd refuses a removal that would cost the quorum
/// (`--strict-reconfig-check`, on by default).
async fn remove_member(
    cfg: &edgeplane_config::Config,
    tls: &crate::tls::SiteTls,
    host: &str,
) -> Result<Option<u64>> {
    let endpoints: Vec<String> = cfg
        .nodes
        .iter()
        .filter(|n| n.name != host)
        .map(|n| n.client_url.clone())
        .collect();
    let peer_url = cfg
        .nodes
        .iter()
        .find(|n| n.name == host)
        .map(|n| n.peer_url.trim_end_matches('/').to_string());
    let opts = crate::tls::etcd_options(Some(tls))
        .with_connect_timeout(std::time::Duration::from_secs(2))
        .with_timeout(std::time::Duration::from_secs(5));
    let mut c = etcd_client::Client::connect(endpoints, Some(opts)).await?;
    let members = c.member_list().await?;
    let Some(id) = members
        .members()
        .iter()
        .find(|m| {
            m.name() == host
                || m.peer_urls()
                    .iter()
                    .any(|u| Some(u.trim_end_matches('/')) == peer_url.as_deref())
        })
        .map(|m| m.id())
    else {
        return Ok(None);
    };
    c.member_remove(id).await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_loads_and_rerun_keeps() -> Result<()> {
        let d = tempfile::tempdir()?;
        let hosts = vec![
            HostSpec {
                name: "a".into(),
                sans: vec!["a".into(), "127.0.0.1".into()],
            },
            HostSpec {
                name: "b".into(),
                sans: vec!["b".into(), "10.0.0.2".into()],
            },
        ];
        let r = init(d.path(), "s", &hosts, false)?;
        assert!(r.ca_created);
        assert_eq!(r.issued, ["a", "b"]);
        let hd = host_dir(d.path(), "a");
        let tls = crate::tls::SiteTls::from_files(
            &hd.join("ca.crt"),
            &hd.join("host.crt"),
            &hd.join("host.key"),
        )?;
        tls.server_config()?;
        let mode = std::fs::metadata(d.path().join("ca.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(hd.join("host.crt"))?;
        let r2 = init(d.path(), "s", &hosts, false)?;
        assert!(!r2.ca_created);
        assert_eq!(r2.kept, ["a", "b"]);
        assert_eq!(before, std::fs::read(hd.join("host.crt"))?);
        Ok(())
    }

    #[test]
    fn group_readable_key_is_refused_with_the_fix() -> Result<()> {
        let d = tempfile::tempdir()?;
        let hosts = vec![HostSpec {
            name: "a".into(),
            sans: vec!["a".into()],
        }];
        init(d.path(), "s", &hosts, false)?;
        let key = host_dir(d.path(), "a").join("host.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))?;
        let err = crate::tls::check_key_file(&key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("readable by group or others"), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", key.display())),
            "{err}"
        );
        Ok(())
    }
}
