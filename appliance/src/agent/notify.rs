//! systemd integration without a dependency: `sd_notify` is one datagram to
//! `$NOTIFY_SOCKET`. READY=1 once the agent serves its API and has looked at
//! the site, STOPPING=1 on exit, and WATCHDOG=1 for the reconcile loop's
//! progress: a feeder sends it every quarter of `$WATCHDOG_USEC`, but only
//! while the loop completed an iteration within the last half of it
//! ([`should_feed`]). So a stalled loop, and only that, gets the agent
//! restarted; a long operation (a fence, a defragmentation) runs off the
//! loop and neither starves nor feeds the watchdog. Without
//! `$WATCHDOG_USEC` the loop sends WATCHDOG=1 after each iteration.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::time::Duration;

use std::os::unix::net::UnixDatagram;

/// Sends one notification; errors are ignored (systemd may be gone).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().to_string();
    if let Some(abstract_name) = path.strip_prefix('@') {
        // Abstract socket namespace (Linux).
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// The watchdog timeout systemd set (`$WATCHDOG_USEC`, `WatchdogSec=`), if
/// it is meant for this process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_timeout() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether to send WATCHDOG=1 now: the loop completed an iteration within
/// half the watchdog timeout (`loop_age` is the time since it did).
pub fn should_feed(loop_age: Duration, timeout: Duration) -> bool {
    loop_age < timeout / 2
}

/// How often the feeder looks: a quarter of the timeout, so that a
/// healthy loop is confirmed at least twice per timeout.
pub fn feed_every(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(100))
}

/// Marker that asks a stopping agent to leave etcd running: a package
/// upgrade restarts the agent, never etcd (the new agent adopts it). The
/// package's postinst writes it before `systemctl try-restart` and removes it
/// after. Honoured only when younger than [`MARKER_MAX_AGE`], so a stale
/// marker never leaves etcd running through a real shutdown.
pub const UPGRADE_MARKER: &str = "/run/edgeplane/upgrade";
pub const MARKER_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether this stop should leave etcd running: a fresh upgrade marker
/// (path overridable with `EDGEPLANE_UPGRADE_MARKER` for tests).
pub fn keep_etcd_on_stop() -> bool {
    let path =
        std::env::var("EDGEPLANE_UPGRADE_MARKER").unwrap_or_else(|_| UPGRADE_MARKER.to_string());
    fresh_marker(std::path::Path::new(&path))
}

/// Whether `path` exists and is younger than [`MARKER_MAX_AGE`].
pub fn fresh_marker(path: &std::path::Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age <= MARKER_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::{feed_every, fresh_marker, should_feed};
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        /// The watchdog follows the loop: fed only while the last completed
        /// iteration is recent, so a loop stuck for the timeout is never
        /// covered by a feed, however long an operation elsewhere runs.
        #[test]
        fn fed_only_while_the_loop_progresses(age_ms in 0u64..200_000, timeout_ms in 1_000u64..120_000) {
            let (age, timeout) = (Duration::from_millis(age_ms), Duration::from_millis(timeout_ms));
            let fed = should_feed(age, timeout);
            prop_assert_eq!(fed, age < timeout / 2);
            // A feed at most a quarter-timeout later still arrives before
            // systemd's deadline for a loop that was healthy at the feed.
            prop_assert!(feed_every(timeout) <= timeout / 2);
            if age >= timeout {
                prop_assert!(!fed);
            }
        }
    }

    #[test]
    fn only_a_present_fresh_marker_keeps_etcd() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("upgrade");
        assert!(!fresh_marker(&marker), "no marker: a real stop");
        std::fs::write(&marker, "1\n")?;
        assert!(fresh_marker(&marker), "fresh marker: an upgrade");
        // A stale marker (older than 10 minutes) is ignored.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&marker)?
            .set_modified(old)?;
        assert!(!fresh_marker(&marker), "stale marker: a real stop");
        Ok(())
    }
}
