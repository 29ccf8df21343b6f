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
pub mod rng;
pub mod workload;

use std::ops::RangeBounds;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use edgeplane::sim::bare::{self, etcd_bin};
pub use edgeplane::sim::{self, LocalSite, SiteSpec, Writer, alive, free_port, wait_until};

/// The `edgeplane` binary under test: `$EDGEPLANE_BIN`, else the workspace's
/// `target/debug/edgeplane` (the README's test command builds it first).
/// `cargo test` does not rebuild that binary, so a run after a code change
/// without `cargo build --bin edgeplane` would test the old one: when the
/// binary's commit is not the one these tests were built from, this panics
/// and says so.
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
    let bin = target.join("debug").join("edgeplane");
    static CHECKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let stale = CHECKED.get_or_init(|| stale_binary(&bin));
    if let Some(why) = stale {
        panic!("{why}");
    }
    bin
}

/// Why `bin` is not the binary of the commit these tests were built from
/// (`None` when it is, or when it does not exist: the tests say SKIPPED).
fn stale_binary(bin: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let commit = version.split("(commit ").nth(1)?.split(')').next()?;
    let ours = edgeplane::version::COMMIT;
    (commit != ours).then(|| {
        format!(
            "{} is from commit {commit}, but these tests were built from {ours}: \
             run `cargo build --bin edgeplane` first (scripts/test does), or set EDGEPLANE_BIN",
            bin.display()
        )
    })
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

/// Whether this is a CI run (`CI=true`, as CI services set it).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A test, or a part of one, that cannot run here (not root, a binary
/// missing). Prints `SKIPPED: <reason>`; under `CI=true` it fails instead
/// (panics), so a green CI run means that everything ran. The one place that
/// decides; call it, then return.
pub fn skip(reason: &str) {
    skip_or_fail(ci(), reason);
}

fn skip_or_fail(ci: bool, reason: &str) {
    if ci {
        panic!("SKIPPED: {reason} (and CI=true: a CI run must run every test)");
    }
    eprintln!("SKIPPED: {reason}");
}

/// True when running as root; otherwise [`skip`]s with `reason` and returns
/// false: `if !root_or_skip("…") { return Ok(()); }`.
pub fn root_or_skip(reason: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    skip(&format!("{reason} (needs root)"));
    false
}

/// Asserts that `writer` had puts sent and acknowledged within `window` (the
/// window the test is about: during a fault, before a loss) and that none of
/// the writes it acknowledged, in the window or not, is missing from the site
/// at `urls`. `Writer::lost` alone returns 0 when nothing was acknowledged;
/// this is the one call that checks both. Returns the count in the window.
pub async fn assert_no_acked_write_lost(
    writer: &Writer,
    urls: &[String],
    window: impl RangeBounds<Instant>,
    what: &str,
) -> anyhow::Result<usize> {
    let in_window = writer.sent_and_acked_within(window);
    assert!(
        in_window > 0,
        "{what}: no put was acknowledged in the window that matters ({} acknowledged in all): a loss check of nothing proves nothing",
        writer.acked_count()
    );
    let lost = writer.lost(urls).await?;
    assert_eq!(
        lost,
        0,
        "{what}: {lost} of {} acknowledged writes lost ({in_window} of them in the window that matters)",
        writer.acked_count()
    );
    Ok(in_window)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_skip_outside_ci_only_says_so() {
        super::skip_or_fail(false, "nothing to see");
    }

    #[test]
    #[should_panic(expected = "SKIPPED: no root (and CI=true")]
    fn a_skip_under_ci_fails() {
        super::skip_or_fail(true, "no root");
    }
}
