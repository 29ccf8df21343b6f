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
    Ok(report)
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
