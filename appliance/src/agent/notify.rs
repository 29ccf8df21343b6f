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
/// upgrade restarts the agent, never etcd. The new agent adopts etcd.
pub const KEEP_ETCD_MARKER: &str = "/run/edgeplane/keep-etcd";

/// Whether this stop should leave etcd running (marker file present, or
/// `EDGEPLANE_KEEP_ETCD=1`). The marker is consumed.
pub fn keep_etcd_on_stop() -> bool {
    if std::env::var("EDGEPLANE_KEEP_ETCD").is_ok_and(|v| v == "1") {
        return true;
    }
    let path = std::env::var("EDGEPLANE_KEEP_ETCD_MARKER")
        .unwrap_or_else(|_| KEEP_ETCD_MARKER.to_string());
    if std::path::Path::new(&path).exists() {
        let _ = std::fs::remove_file(&path);
        return true;
    }
    false
}
