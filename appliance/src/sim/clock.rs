//! Faked wall clocks for single agents of a [`LocalSite`]: every host of the
//! loopback site shares the machine's clock, which a test must never change,
//! so a clock jump seen by one host's agent is made with libfaketime
//! preloaded into that agent alone ([`SiteSpec::faketime`]).
//!
//! The agent starts with `LD_PRELOAD` of libfaketime, its monotonic clock
//! left real (`FAKETIME_DONT_FAKE_MONOTONIC=1`), and its offset read from
//! `HOST/faketime` on every clock read (`FAKETIME_TIMESTAMP_FILE` with
//! `FAKETIME_NO_CACHE=1`), so [`LocalSite::jump_clock`] moves its wall
//! clock while it runs. The agent strips those variables from etcd, etcdctl
//! and the fence commands it starts, so only the agent's clock moves.

use std::io;
use std::path::PathBuf;

use super::{LocalSite, SiteSpec};

/// The offset file libfaketime reads, in a host's directory.
pub const FAKETIME_FILE: &str = "faketime";

/// libfaketime's multi-threaded preload library (Debian `libfaketime`), if
/// installed: `$EDGEPLANE_FAKETIME_LIB`, else the multiarch path.
pub fn faketime_lib() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EDGEPLANE_FAKETIME_LIB") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let lib = std::fs::read_dir("/usr/lib").ok()?.find_map(|e| {
        let p = e.ok()?.path().join("faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    });
    lib.or_else(|| {
        let p = PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    })
}

impl SiteSpec {
    /// The environment that makes host `dir`'s agent read its wall clock
    /// through libfaketime (empty when the site does not fake clocks).
    pub(super) fn faketime_env(&self, dir: &std::path::Path) -> io::Result<Vec<(String, String)>> {
        if !self.faketime {
            return Ok(Vec::new());
        }
        let lib = faketime_lib().ok_or_else(|| {
            io::Error::other("libfaketime is not installed (Debian package libfaketime)")
        })?;
        let file = dir.join(FAKETIME_FILE);
        if !file.exists() {
            std::fs::write(&file, "+0\n")?;
        }
        Ok(vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ])
    }
}

impl LocalSite {
    /// Sets host `i`'s agent's wall clock to the real one plus `offset_s`
    /// seconds (negative: behind), at once, while it runs. Needs
    /// [`SiteSpec::faketime`]. The file is replaced atomically, so the agent
    /// never reads half an offset.
    pub fn jump_clock(&self, i: usize, offset_s: i64) -> io::Result<()> {
        if !self.spec.faketime {
            return Err(io::Error::other(
                "the site was not created with faketime: its agents' clocks cannot jump",
            ));
        }
        let dir = &self.hosts[i].dir;
        let tmp = dir.join(format!("{FAKETIME_FILE}.tmp"));
        std::fs::write(&tmp, format!("{offset_s:+}\n"))?;
        std::fs::rename(&tmp, dir.join(FAKETIME_FILE))
    }
}
