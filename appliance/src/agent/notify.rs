//! systemd integration without a dependency: `sd_notify` is one datagram to
//! `$NOTIFY_SOCKET`. READY=1 once the agent serves its API and has looked at
//! the site, WATCHDOG=1 from the loop after each completed reconcile (so a
//! stalled loop, and only that, gets the agent restarted), STOPPING=1 on exit.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

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
    use super::fresh_marker;

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
