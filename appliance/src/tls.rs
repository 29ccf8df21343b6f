//! The site's TLS material, loaded once from `[tls]` and turned into what
//! each side needs: etcd's flags, an etcd client, an agent server that
//! demands a certificate of this site, and an HTTP client that presents one.
//!
//! One certificate per host (server and client use, signed by the site CA)
//! serves etcd's client and peer ports, the agent API and the agent's own
//! calls, so a host has exactly one secret to protect: its key file. The key
//! is refused when group or others can read it, before anything starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeplane_config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {}", path.display(), read_hint(err))]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "private key {} is readable by group or others (mode {mode:04o}); fix: chmod 600 {} (and chown it to the user the agent runs as)",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// An I/O error as a person should read it: a refused read is named as the
/// permission problem it is, with the fix, not left as "permission denied".
pub fn read_hint(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "{err}: {} (uid {}); run as root (sudo edgeplane ...) or as the user the agent runs as",
            NOT_READABLE,
            nix::unistd::Uid::effective()
        )
    } else {
        err.to_string()
    }
}

/// How [`read_hint`] names a file this user may not read (diag looks for it).
pub const NOT_READABLE: &str = "the key is not readable by this user";

/// Refuses a private key file that group or others can read.
pub fn check_key_file(path: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(path).map_err(|err| TlsError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        path: path.to_path_buf(),
        err,
    })
}

/// The loaded CA, certificate and key of this host. Cheap to clone.
#[derive(Clone)]
pub struct SiteTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    ca_pem: Arc<Vec<u8>>,
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Vec<u8>>,
    /// The site's CRL in force (shared by every clone; see [`crate::crl`]).
    pub crl: crate::crl::CrlState,
    /// Where this host keeps it (`None`: held in memory only).
    pub crl_file: Option<PathBuf>,
}

impl std::fmt::Debug for SiteTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key's contents.
        f.debug_struct("SiteTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl SiteTls {
    /// `None` when the site runs without TLS (`http://` node URLs, allowed
    /// by `tls.allow_plaintext`). Checks the key's permissions and that
    /// every file parses.
    pub fn load(cfg: &Config) -> Result<Option<SiteTls>, TlsError> {
        if !cfg.tls_enabled() {
            return Ok(None);
        }
        let mut tls = Self::from_files(&cfg.tls.ca_file, &cfg.tls.cert_file, &cfg.tls.key_file)?;
        let path = crate::crl::crl_path(&cfg.paths.state_dir);
        // The CRL shipped beside the certificate (`certs init`, `certs
        // revoke`) is installed first when it is newer than the one held,
        // so that etcd starts with a CRL file from the first boot.
        if let Some(shipped) = cfg.tls.cert_file.parent().map(|d| d.join("crl.pem"))
            && shipped.is_file()
        {
            let taken = std::fs::read(&shipped)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    crate::crl::Crl::parse(&pem, &tls.ca_pem).map_err(|e| e.to_string())
                })
                .and_then(|crl| {
                    crate::crl::install(&path, &crl, &tls.ca_pem).map_err(|e| format!("{e:#}"))
                });
            if let Err(e) = taken {
                tracing::error!(
                    "The CRL shipped at {} is not installed: {e}",
                    shipped.display()
                );
            }
        }
        // A damaged CRL never stops the start: the last good one is kept
        // (none yet) and the error is logged at every reload.
        if let Err(e) = tls.crl.load_file(&path, &tls.ca_pem) {
            tracing::error!("The CRL is not loaded: {e}");
        }
        tls.crl_file = Some(path);
        Ok(Some(tls))
    }

    /// The site CA in PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// Loads this host's CRL file again when it holds a newer CRL of the
    /// site CA; returns whether the CRL in force changed.
    pub fn reload_crl(&self) -> Result<bool, String> {
        match &self.crl_file {
            Some(p) => self.crl.load_file(p, &self.ca_pem),
            None => Ok(false),
        }
    }

    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<SiteTls, TlsError> {
        check_key_file(key)?;
        let tls = SiteTls {
            ca_file: ca.to_path_buf(),
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
            ca_pem: Arc::new(read(ca)?),
            cert_pem: Arc::new(read(cert)?),
            key_pem: Arc::new(read(key)?),
            crl: crate::crl::CrlState::default(),
            crl_file: None,
        };
        // Parse everything now, so a broken file stops the start with its name.
        tls.ca_certs()?;
        tls.certs()?;
        tls.key()?;
        Ok(tls)
    }

    /// From PEM held in memory (a test client's identity); no files behind it.
    pub fn from_pem(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<SiteTls, TlsError> {
        let tls = SiteTls {
            ca_file: PathBuf::from("(memory)/ca.crt"),
            cert_file: PathBuf::from("(memory)/host.crt"),
            key_file: PathBuf::from("(memory)/host.key"),
            ca_pem: Arc::new(ca),
            cert_pem: Arc::new(cert),
            key_pem: Arc::new(key),
            crl: crate::crl::CrlState::default(),
            crl_file: None,
        };
        tls.ca_certs()?;
        tls.certs()?;
        tls.key()?;
        Ok(tls)
    }

    fn ca_certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        pem_certs(&self.ca_pem, &self.ca_file)
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        pem_certs(&self.cert_pem, &self.cert_file)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::Pem {
            path: self.key_file.clone(),
            what: format!("no usable private key ({e})"),
        })
    }

    /// The site CA as the only trust anchor.
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in self.ca_certs()? {
            roots
                .add(c)
                .map_err(|e| TlsError::Setup(format!("{}: {e}", self.ca_file.display())))?;
        }
        Ok(roots)
    }

    /// etcd's TLS flags: client and peer ports both require a certificate
    /// signed by the site CA, and check the CRL when one is installed
    /// (etcd reads the file again for every new connection).
    pub fn etcd_flags(&self) -> Vec<String> {
        let ca = self.ca_file.display().to_string();
        let cert = self.cert_file.display().to_string();
        let key = self.key_file.display().to_string();
        let mut crl = Vec::new();
        // etcd refuses every connection when the file cannot be read, so
        // only a CRL in force whose DER copy exists is passed.
        if let Some(p) = &self.crl_file
            && self.crl.current().is_some()
            && crate::crl::der_path(p).is_file()
        {
            let der = crate::crl::der_path(p);
            crl.push(format!("--client-crl-file={}", der.display()));
            crl.push(format!("--peer-crl-file={}", der.display()));
        }
        let mut flags = vec![
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            format!("--trusted-ca-file={ca}"),
            "--client-cert-auth=true".to_string(),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth=true".to_string(),
        ];
        flags.extend(crl);
        flags
    }

    /// TLS options for an etcd client presenting this host's certificate.
    pub fn etcd_client(&self) -> etcd_client::TlsOptions {
        let identity = etcd_client::Identity::from_pem(&*self.cert_pem, &*self.key_pem);
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&*self.ca_pem))
            .identity(identity)
    }

    /// The agent API's server side: only a client with a certificate signed
    /// by the site CA completes the handshake.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = Arc::new(CrlClientVerifier::new(
            Arc::new(self.roots()?),
            self.crl.clone(),
        )?);
        let mut cfg = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs()?, self.key()?)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", self.cert_file.display())))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A rustls client presenting this host's certificate and trusting only
    /// the site CA (for raw TLS connections; HTTP goes through
    /// [`SiteTls::http_client`]).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let verifier = Arc::new(CrlServerVerifier::new(
            Arc::new(self.roots()?),
            self.crl.clone(),
        )?);
        let cfg = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.certs()?, self.key()?)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", self.cert_file.display())))?;
        Ok(Arc::new(cfg))
    }

    /// Trusts only the site CA (minus revoked certificates) and presents
    /// this host's certificate as the client identity.
    pub fn http_client(
        &self,
        b: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        let cfg = self.client_config()?;
        Ok(b.tls_backend_preconfigured((*cfg).clone()))
    }
}

/// Builds a WebPKI verifier of the site CA with the CRL in force, again
/// whenever the CRL changes.
#[derive(Debug)]
struct Rebuilt<V: ?Sized> {
    roots: Arc<rustls::RootCertStore>,
    crl: crate::crl::CrlState,
    cache: std::sync::RwLock<(u64, Arc<V>)>,
}

fn crl_list(
    crl: &crate::crl::CrlState,
) -> Vec<rustls::pki_types::CertificateRevocationListDer<'static>> {
    crl.current().map(|c| vec![c.der()]).unwrap_or_default()
}

fn client_verifier(
    roots: &Arc<rustls::RootCertStore>,
    crl: &crate::crl::CrlState,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, rustls::Error> {
    let v = rustls::server::WebPkiClientVerifier::builder(roots.clone())
        .with_crls(crl_list(crl))
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    Ok(v)
}

fn server_verifier(
    roots: &Arc<rustls::RootCertStore>,
    crl: &crate::crl::CrlState,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, rustls::Error> {
    let v = rustls::client::WebPkiServerVerifier::builder(roots.clone())
        .with_crls(crl_list(crl))
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    Ok(v)
}

impl<V: ?Sized> Rebuilt<V> {
    fn get(
        &self,
        build: impl Fn(
            &Arc<rustls::RootCertStore>,
            &crate::crl::CrlState,
        ) -> Result<Arc<V>, rustls::Error>,
    ) -> Result<Arc<V>, rustls::Error> {
        let generation = self.crl.generation();
        if let Ok(g) = self.cache.read()
            && g.0 == generation
        {
            return Ok(g.1.clone());
        }
        let v = build(&self.roots, &self.crl)?;
        if let Ok(mut g) = self.cache.write() {
            *g = (generation, v.clone());
        }
        Ok(v)
    }
}

/// The agent API's client verifier: the site CA, and the CRL in force at
/// each handshake.
#[derive(Debug)]
pub struct CrlClientVerifier {
    inner: Rebuilt<dyn rustls::server::danger::ClientCertVerifier>,
    hints: Vec<rustls::DistinguishedName>,
}

impl CrlClientVerifier {
    pub fn new(
        roots: Arc<rustls::RootCertStore>,
        crl: crate::crl::CrlState,
    ) -> Result<Self, TlsError> {
        let first = client_verifier(&roots, &crl).map_err(|e| TlsError::Setup(e.to_string()))?;
        let hints = first.root_hint_subjects().to_vec();
        Ok(CrlClientVerifier {
            inner: Rebuilt {
                cache: std::sync::RwLock::new((crl.generation(), first)),
                roots,
                crl,
            },
            hints,
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for CrlClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.inner
            .get(client_verifier)?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .get(client_verifier)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .get(client_verifier)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner
            .get(client_verifier)
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// The agents' client-side verifier of peers: the site CA, and the CRL in
/// force at each handshake.
#[derive(Debug)]
pub struct CrlServerVerifier {
    inner: Rebuilt<dyn rustls::client::danger::ServerCertVerifier>,
}

impl CrlServerVerifier {
    pub fn new(
        roots: Arc<rustls::RootCertStore>,
        crl: crate::crl::CrlState,
    ) -> Result<Self, TlsError> {
        let first = server_verifier(&roots, &crl).map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(CrlServerVerifier {
            inner: Rebuilt {
                cache: std::sync::RwLock::new((crl.generation(), first)),
                roots,
                crl,
            },
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for CrlServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.get(server_verifier)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .get(server_verifier)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .get(server_verifier)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner
            .get(server_verifier)
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

fn pem_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate in the file".to_string(),
        });
    }
    Ok(certs)
}

/// An HTTP client for talking to agents: with the site's certificate when
/// TLS is on, plain otherwise.
pub fn agent_http_client(
    tls: Option<&SiteTls>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, TlsError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout);
    if let Some(t) = tls {
        b = t.http_client(b)?;
    }
    b.build().map_err(|e| TlsError::Setup(e.to_string()))
}

/// etcd connect options with the site's certificate when TLS is on.
pub fn etcd_options(tls: Option<&SiteTls>) -> etcd_client::ConnectOptions {
    let o = etcd_client::ConnectOptions::new();
    match tls {
        Some(t) => o.with_tls(t.etcd_client()),
        None => o,
    }
}
