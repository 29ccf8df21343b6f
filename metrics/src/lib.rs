//! Edgeplane's metrics path (work in progress; see the module docs).

pub mod bench;
pub mod classify;
pub mod dead_letter;
pub mod link;
pub mod live;
pub mod local_prometheus;
pub mod parse;
pub mod pipeline;
pub mod remote_write;
pub mod scrape;
pub mod status;
pub mod store;
pub mod uplink;

/// One sample as it travels through the pipeline and the buffer:
/// `labels` include `("__name__", name)` and are sorted by name.
pub use edgeplane_buffer::Sample;

/// Installs rustls' ring crypto provider for the process (reqwest is built
/// without a default provider). Idempotent; call before building a client.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
