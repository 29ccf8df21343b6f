//! The process harness for end-to-end tests: real `etcd`, real `edgeplane`
//! agents and (later) a real Prometheus, on free loopback ports in temporary
//! directories. Everything started here is killed on drop, also when a test
//! panics, and tests check that no process is left behind.
//!
//! Whole sites of agents come from [`edgeplane::sim`] (shared with `edgeplane
//! demo`); this crate adds bare etcd clusters, the path of the binary under
//! test, and helpers to wait on conditions (never on sleeps).

pub mod history;
pub mod linearizability;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use edgeplane::sim::bare::{self, etcd_bin};
pub use edgeplane::sim::{self, LocalSite, SiteSpec, Writer, alive, free_port, wait_until};

/// The `edgeplane` binary under test: `$EDGEPLANE_BIN`, else the workspace's
/// `target/debug/edgeplane` (the README's test command builds it first).
pub fn edgeplane_bin() -> PathBuf {
    if let Ok(p) = std::env::var("EDGEPLANE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("debug").join("edgeplane")
}

/// A tokio runtime for a test body.
pub fn rt() -> tokio::runtime::Runtime {
    // reqwest is built without a default TLS provider: install ring's once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("could not start a tokio runtime: {e}"),
    }
}

/// Generous bound for things that normally take seconds: catches hangs, never judges speed.
pub const HANG: Duration = Duration::from_secs(60);

/// For a test that cannot run here (not root, a binary missing): prints
/// `SKIPPED: why` and returns true, so the test returns early, except under
/// `CI=true`, where a skip is a failure (a green CI means everything ran).
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("SKIPPED under CI=true is a failure: {why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// [`skip`] unless this process runs as root.
pub fn skip_unless_root(why: &str) -> bool {
    !nix::unistd::Uid::effective().is_root() && skip(why)
}
