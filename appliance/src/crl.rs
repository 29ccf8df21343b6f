//! Certificate revocation: a stolen host's certificate stops working on
//! every host of the site.
//!
//! Edge hosts stand in shops and cabinets; a stolen host carries a
//! certificate of the site, and every peer would otherwise keep trusting it
//! for the 20 years it is valid. The operator revokes it where the CA key is
//! (`edgeplane certs revoke HOST`, never on a host), which writes a CRL
//! signed by the CA with a CRL number one higher than the last. The CRL is
//! installed on any one host (`edgeplane certs install-crl FILE`); agents
//! take a newer CRL from a peer's `/crl` only when it verifies against the
//! site CA and its number is higher than the one they hold, so a peer can
//! neither forge a CRL nor roll one back.
//!
//! The CRL lives in the agent's state directory ([`crl_path`]). The agent
//! API refuses a revoked certificate at the handshake and on every request
//! (a connection opened before the revocation is refused from its next
//! request on); etcd reads its DER copy ([`der_path`]) on every new
//! connection (`--client-crl-file`, `--peer-crl-file`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;

/// Where the agent keeps the site's CRL: `<paths.state_dir>/crl.pem`.
pub fn crl_path(state_dir: &Path) -> PathBuf {
    state_dir.join("crl.pem")
}

/// Why a CRL is not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrlError {
    #[error("not a PEM CRL ({0})")]
    Pem(String),
    #[error("not a valid CRL ({0})")]
    Parse(String),
    #[error("the CRL is not signed by the site CA ({0})")]
    Signature(String),
    #[error("the CRL has no CRL number")]
    NoNumber,
    #[error("signing the CRL: {0}")]
    Sign(String),
}

/// A CRL of the site CA, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// The CRL number: higher is newer.
    pub number: u64,
    /// The revoked serial numbers (big-endian, no leading zeros).
    pub revoked: Vec<Vec<u8>>,
    pub pem: String,
    der: Vec<u8>,
}

fn trim_serial(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

impl Crl {
    /// Parses `pem` and verifies its signature against the CA in `ca_pem`.
    pub fn parse(pem: &[u8], ca_pem: &[u8]) -> Result<Crl, CrlError> {
        let der = CertificateRevocationListDer::from_pem_slice(pem)
            .map_err(|e| CrlError::Pem(e.to_string()))?;
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| CrlError::Parse(e.to_string()))?;
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem)
            .map_err(|e| CrlError::Signature(format!("the CA certificate: {e}")))?;
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref())
            .map_err(|e| CrlError::Signature(format!("the CA certificate: {e}")))?;
        crl.verify_signature(ca.public_key())
            .map_err(|e| CrlError::Signature(e.to_string()))?;
        let number = crl
            .crl_number()
            .ok_or(CrlError::NoNumber)?
            .to_u64_digits()
            .first()
            .copied()
            .unwrap_or(0);
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| trim_serial(&r.serial().to_bytes_be()))
            .collect();
        let pem = String::from_utf8_lossy(pem).into_owned();
        Ok(Crl {
            number,
            revoked,
            pem,
            der: der.as_ref().to_vec(),
        })
    }

    /// Signs a CRL with the CA: `number`, revoking `serials`.
    pub fn issue(
        ca_pem: &str,
        ca_key_pem: &str,
        number: u64,
        serials: &[Vec<u8>],
    ) -> Result<Crl, CrlError> {
        let key =
            rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| CrlError::Sign(e.to_string()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, &key)
            .map_err(|e| CrlError::Sign(e.to_string()))?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            // A site cut off for years must never find its CRL expired (and
            // an expired CRL is not an error for the verifiers anyway).
            next_update: now + std::time::Duration::from_secs(20 * 365 * 86_400),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(s),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| CrlError::Sign(e.to_string()))?;
        let pem = crl.pem().map_err(|e| CrlError::Sign(e.to_string()))?;
        Crl::parse(pem.as_bytes(), ca_pem.as_bytes())
    }

    pub fn der(&self) -> CertificateRevocationListDer<'static> {
        CertificateRevocationListDer::from(self.der.clone())
    }

    /// Whether the certificate `cert_der` is revoked by this CRL.
    pub fn revokes(&self, cert_der: &[u8]) -> bool {
        serial_of(cert_der).is_some_and(|s| self.revoked.contains(&s))
    }
}

/// The serial number of a certificate (big-endian, no leading zeros).
pub fn serial_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(trim_serial(&cert.tbs_certificate.serial.to_bytes_be()))
}

/// Whether to take `offered` over what is held (pure): only a CRL of the
/// site CA (already verified into a [`Crl`]) with a higher number. An older
/// or equal one never replaces the held one (no rollback by a peer).
pub fn is_newer(held: Option<u64>, offered: u64) -> bool {
    held.is_none_or(|h| offered > h)
}

/// The CRL in force on this host, shared by the TLS verifiers, the API and
/// the loop. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CrlState {
    inner: Arc<RwLock<Option<Arc<Crl>>>>,
    /// Bumped on every change, so that verifiers rebuild.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The CRL file as [`CrlState::load_file`] last parsed it: the loop
    /// asks every tick, and a file that did not change is not read and
    /// verified again.
    file_seen: Arc<std::sync::Mutex<Option<FileStamp>>>,
}

/// What tells a file changed without reading it: `install` replaces the
/// file by a rename (a new inode); an edit in place changes its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        }
    }
}

impl CrlState {
    pub fn current(&self) -> Option<Arc<Crl>> {
        self.inner.read().ok().and_then(|g| g.clone())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes `crl` when it is newer than the one held; returns whether it did.
    pub fn offer(&self, crl: Crl) -> bool {
        let Ok(mut g) = self.inner.write() else {
            return false;
        };
        if !is_newer(g.as_ref().map(|c| c.number), crl.number) {
            return false;
        }
        *g = Some(Arc::new(crl));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        true
    }

    /// Whether `cert_der` is revoked by the CRL in force.
    pub fn revokes(&self, cert_der: &[u8]) -> bool {
        self.current().is_some_and(|c| c.revokes(cert_der))
    }

    /// Loads the CRL at `path` (verified against `ca_pem`) when it is newer
    /// than the one held. A missing file is no CRL; a bad one is an error
    /// and changes nothing.
    pub fn load_file(&self, path: &Path, ca_pem: &[u8]) -> Result<bool, String> {
        let stamp = match std::fs::metadata(path) {
            Ok(m) => FileStamp::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let seen = |s: &Option<FileStamp>| *s == Some(stamp);
        if self.file_seen.lock().is_ok_and(|s| seen(&s)) {
            return Ok(false);
        }
        let pem = match std::fs::read(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let crl = Crl::parse(&pem, ca_pem).map_err(|e| format!("{}: {e}", path.display()))?;
        // Only a file that parsed counts as seen: a broken one is reported
        // again until it is fixed.
        if let Ok(mut s) = self.file_seen.lock() {
            *s = Some(stamp);
        }
        Ok(self.offer(crl))
    }
}

/// The DER copy etcd reads (`--client-crl-file`, `--peer-crl-file`) beside
/// the PEM file at `path`.
pub fn der_path(path: &Path) -> PathBuf {
    path.with_extension("der")
}

/// Installs `crl` at `path` (atomically, mode 0644, with its DER copy for
/// etcd, written first) when it is newer than the CRL already there;
/// returns whether it did.
pub fn install(path: &Path, crl: &Crl, ca_pem: &[u8]) -> anyhow::Result<bool> {
    let held = match std::fs::read(path) {
        Ok(pem) => Crl::parse(&pem, ca_pem).ok().map(|c| c.number),
        Err(_) => None,
    };
    if !is_newer(held, crl.number) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::certs::write_file(&der_path(path), &crl.der, 0o644)?;
    crate::certs::write_file(path, crl.pem.as_bytes(), 0o644)?;
    Ok(true)
}

/// Takes the newest CRL that peers offer (`(name, agent_url, number)`,
/// from their `/status`) when it is newer than the one in force: fetched
/// from `GET /crl`, verified against the site CA, written to this host's
/// CRL file and put in force. Returns whether the CRL in force changed.
pub async fn sync_from_peers(
    tls: &crate::tls::SiteTls,
    http: &reqwest::Client,
    offers: &[(String, String, u64)],
) -> bool {
    let held = tls.crl.current().map(|c| c.number);
    let mut offers: Vec<_> = offers
        .iter()
        .filter(|(_, _, n)| is_newer(held, *n))
        .collect();
    offers.sort_by_key(|(_, _, n)| std::cmp::Reverse(*n));
    for (peer, url, _) in offers {
        let url = format!("{}/crl", url.trim_end_matches('/'));
        let pem = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => b,
                Err(_) => continue,
            },
            _ => continue,
        };
        let crl = match Crl::parse(&pem, tls.ca_pem()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("Ignored the CRL {peer} offers: {e}.");
                continue;
            }
        };
        if let Some(path) = &tls.crl_file
            && let Err(e) = install(path, &crl, tls.ca_pem())
        {
            tracing::error!(
                "Could not write the CRL from {peer} to {}: {e:#}",
                path.display()
            );
        }
        let number = crl.number;
        if tls.crl.offer(crl) {
            tracing::info!("Took CRL number {number} from {peer}.");
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_crls_verify_revoke_and_only_newer_ones_win() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let hosts = vec![
            crate::certs::HostSpec {
                name: "a".into(),
                sans: vec!["a".into()],
            },
            crate::certs::HostSpec {
                name: "b".into(),
                sans: vec!["b".into()],
            },
        ];
        crate::certs::init(d.path(), "s", &hosts, false)?;
        let ca = std::fs::read_to_string(d.path().join("ca.crt"))?;
        let key = std::fs::read_to_string(d.path().join("ca.key"))?;
        let cert = |h: &str| -> anyhow::Result<Vec<u8>> {
            let pem = std::fs::read(crate::certs::host_dir(d.path(), h).join("host.crt"))?;
            Ok(rustls::pki_types::CertificateDer::from_pem_slice(&pem)?.to_vec())
        };
        let (a, b) = (cert("a")?, cert("b")?);
        let serial_a = serial_of(&a).ok_or_else(|| anyhow::anyhow!("no serial"))?;
        let crl = Crl::issue(&ca, &key, 2, std::slice::from_ref(&serial_a))?;
        assert_eq!(crl.number, 2);
        assert!(crl.revokes(&a));
        assert!(!crl.revokes(&b));

        // Another CA's CRL is refused.
        let other = tempfile::tempdir()?;
        crate::certs::init(other.path(), "t", &hosts, false)?;
        let other_ca = std::fs::read(other.path().join("ca.crt"))?;
        assert!(matches!(
            Crl::parse(crl.pem.as_bytes(), &other_ca),
            Err(CrlError::Signature(_))
        ));
        // A tampered one too.
        let mut bad = crl.der.clone();
        let at = bad.len() - 5;
        bad[at] ^= 1;
        let bad_pem = pem_of(&bad);
        assert!(Crl::parse(bad_pem.as_bytes(), ca.as_bytes()).is_err());

        // Only a higher number replaces the CRL in force.
        let state = CrlState::default();
        assert!(state.offer(crl.clone()));
        let older = Crl::issue(&ca, &key, 1, &[])?;
        assert!(!state.offer(older));
        assert!(state.revokes(&a));
        let newer = Crl::issue(&ca, &key, 3, &[])?;
        assert!(state.offer(newer));
        assert!(!state.revokes(&a));

        // install: same rule on disk.
        let path = d.path().join("state").join("crl.pem");
        assert!(install(&path, &crl, ca.as_bytes())?);
        assert!(!install(
            &path,
            &Crl::issue(&ca, &key, 1, &[])?,
            ca.as_bytes()
        )?);
        assert_eq!(Crl::parse(&std::fs::read(&path)?, ca.as_bytes())?.number, 2);
        assert_eq!(std::fs::read(der_path(&path))?, crl.der);
        Ok(())
    }

    #[test]
    fn an_unchanged_crl_file_is_not_read_again_and_a_replaced_one_is() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let hosts = vec![crate::certs::HostSpec {
            name: "a".into(),
            sans: vec!["a".into()],
        }];
        crate::certs::init(d.path(), "s", &hosts, false)?;
        let ca = std::fs::read_to_string(d.path().join("ca.crt"))?;
        let key = std::fs::read_to_string(d.path().join("ca.key"))?;
        let path = d.path().join("state").join("crl.pem");
        assert!(install(
            &path,
            &Crl::issue(&ca, &key, 1, &[])?,
            ca.as_bytes()
        )?);
        let state = CrlState::default();
        assert_eq!(state.load_file(&path, ca.as_bytes()), Ok(true));
        // Garbage of the same length written in place with the old mtime:
        // the stamp is unchanged, so the file is not read (no parse error).
        let before = std::fs::metadata(&path)?;
        let len = usize::try_from(before.len())?;
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        std::io::Write::write_all(&mut &f, &vec![b'x'; len])?;
        f.set_modified(before.modified()?)?;
        assert_eq!(state.load_file(&path, ca.as_bytes()), Ok(false));
        // Touched: read again, and the damage is reported, every time.
        f.set_modified(before.modified()? + std::time::Duration::from_secs(1))?;
        assert!(state.load_file(&path, ca.as_bytes()).is_err());
        assert!(state.load_file(&path, ca.as_bytes()).is_err());
        // A newer CRL installed (a rename): taken.
        std::fs::remove_file(&path)?;
        assert!(install(
            &path,
            &Crl::issue(&ca, &key, 2, &[])?,
            ca.as_bytes()
        )?);
        assert_eq!(state.load_file(&path, ca.as_bytes()), Ok(true));
        assert_eq!(state.current().map(|c| c.number), Some(2));
        Ok(())
    }

    fn pem_of(der: &[u8]) -> String {
        use std::fmt::Write;
        let b64 = {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in der.chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                for i in 0..4 {
                    if i <= c.len() {
                        s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                    } else {
                        s.push('=');
                    }
                }
            }
            s
        };
        let mut out = String::from("-----BEGIN X509 CRL-----\n");
        for line in b64.as_bytes().chunks(64) {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
        }
        out.push_str("-----END X509 CRL-----\n");
        out
    }

    #[test]
    fn newer_means_a_higher_number() {
        assert!(is_newer(None, 0));
        assert!(is_newer(Some(1), 2));
        assert!(!is_newer(Some(2), 2));
        assert!(!is_newer(Some(3), 2));
    }
}
