//! TLS for simulated sites: every site of this process is signed by one CA
//! made at first use and held in memory, so one client identity (the
//! "sim client") reaches every site's etcd and agents, whatever test or
//! bench built them. Each site still gets its own files (`ROOT/tls/`), laid
//! out exactly as `edgeplane certs init` lays them out for a real site.

use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::certs::{HostSpec, host_dir};
use crate::tls::SiteTls;

struct SimCa {
    ca_crt: String,
    ca_key: String,
    client: SiteTls,
}

static SIM_CA: OnceLock<Result<SimCa, String>> = OnceLock::new();

fn make_ca() -> Result<SimCa, String> {
    let dir = tempfile::Builder::new()
        .prefix("edgeplane-sim-ca-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let client = HostSpec {
        name: "sim-client".into(),
        sans: vec!["sim-client".into()],
    };
    crate::certs::init(dir.path(), "simulated", &[client], false).map_err(|e| e.to_string())?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let hd = host_dir(dir.path(), "sim-client");
    let client = SiteTls::from_pem(
        read(&dir.path().join("ca.crt"))?,
        read(&hd.join("host.crt"))?,
        read(&hd.join("host.key"))?,
    )
    .map_err(|e| e.to_string())?;
    let text = |p: &Path| String::from_utf8(read(p)?).map_err(|e| e.to_string());
    Ok(SimCa {
        ca_crt: text(&dir.path().join("ca.crt"))?,
        ca_key: text(&dir.path().join("ca.key"))?,
        client,
    })
}

fn sim_ca() -> io::Result<&'static SimCa> {
    SIM_CA
        .get_or_init(make_ca)
        .as_ref()
        .map_err(|e| io::Error::other(format!("simulated site CA: {e}")))
}

/// The client identity of this process (signed by the simulated sites' CA).
pub fn client_tls() -> Option<SiteTls> {
    sim_ca().ok().map(|c| c.client.clone())
}

/// Issues `hosts` their certificates under `dir` (`certs init` layout).
pub fn issue_site(dir: &Path, site: &str, hosts: &[HostSpec]) -> io::Result<()> {
    let ca = sim_ca()?;
    std::fs::create_dir_all(dir)?;
    let err = |e: anyhow::Error| io::Error::other(format!("{e:#}"));
    crate::certs::write_file(&dir.join("ca.crt"), ca.ca_crt.as_bytes(), 0o644).map_err(err)?;
    crate::certs::write_file(&dir.join("ca.key"), ca.ca_key.as_bytes(), 0o600).map_err(err)?;
    crate::certs::init(dir, site, hosts, false).map_err(err)?;
    Ok(())
}

/// etcd connect options for a simulated site's `url`: with the sim client's
/// certificate when the url is `https://`.
pub fn etcd_options(url: &str) -> etcd_client::ConnectOptions {
    let tls = url.starts_with("https://").then(client_tls).flatten();
    crate::tls::etcd_options(tls.as_ref())
}

/// etcd connect options for a list of urls (all one scheme on a site).
pub fn etcd_options_for(urls: &[String]) -> etcd_client::ConnectOptions {
    etcd_options(urls.first().map(String::as_str).unwrap_or(""))
}

/// An HTTP client for a simulated site's agents (presents the sim client's
/// certificate, trusts only the sim CA).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let tls = client_tls();
    crate::tls::agent_http_client(tls.as_ref(), timeout).unwrap_or_else(|e| {
        tracing::warn!("sim HTTP client without TLS: {e}");
        reqwest::Client::new()
    })
}

/// A server certificate for a local service on 127.0.0.1 (the region's
/// Prometheus in the demo and tests), signed by the simulated sites' CA, so
/// the agents' uplink verifies it with `uplink.ca_file`.
pub fn issue_server(
    dir: &Path,
    name: &str,
) -> io::Result<edgeplane_metrics::local_prometheus::WebTls> {
    let host = HostSpec {
        name: name.to_string(),
        sans: vec![name.to_string(), "127.0.0.1".to_string()],
    };
    issue_site(dir, name, &[host])?;
    let hd = host_dir(dir, name);
    Ok(edgeplane_metrics::local_prometheus::WebTls {
        cert_file: hd.join("host.crt"),
        key_file: hd.join("host.key"),
        ca_file: hd.join("ca.crt"),
    })
}
