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
        Self::from_files(&cfg.tls.ca_file, &cfg.tls.cert_file, &cfg.tls.key_file).map(Some)
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
    /// signed by the site CA.
    pub fn etcd_flags(&self) -> Vec<String> {
        let ca = self.ca_file.display().to_string();
        let cert = self.cert_file.display().to_string();
        let key = self.key_file.display().to_string();
        vec![
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            format!("--trusted-ca-file={ca}"),
            "--client-cert-auth=true".to_string(),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth=true".to_string(),
        ]
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
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(self.roots()?))
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
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
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.certs()?, self.key()?)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", self.cert_file.display())))?;
        Ok(Arc::new(cfg))
    }

    /// Adds the site CA as the only trusted root and this host's certificate
    /// as the client identity.
    pub fn http_client(
        &self,
        b: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        let roots =
            reqwest::Certificate::from_pem_bundle(&self.ca_pem).map_err(|e| TlsError::Pem {
                path: self.ca_file.clone(),
                what: e.to_string(),
            })?;
        let mut pem = self.cert_pem.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(&self.key_pem);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::Pem {
            path: self.cert_file.clone(),
            what: e.to_string(),
        })?;
        Ok(b.tls_certs_only(roots).identity(id))
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
