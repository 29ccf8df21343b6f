//! Commands for the programs the agent starts (etcd, etcdctl, fence
//! commands): one constructor, so that none of them inherits a preload
//! meant for the agent alone. The tests fake one agent's wall clock by
//! preloading libfaketime into it (`LD_PRELOAD`, `FAKETIME*`); etcd, its
//! tools and a fence must keep the machine's clock. This crate is the
//! lowest one that starts programs for the agent, so the constructor lives
//! here and the agent's own spawns use it too.

use std::ffi::OsStr;
use std::process::Command;

/// Whether `name` is a variable of a preloaded library that must not reach
/// a child: `LD_PRELOAD` and libfaketime's `FAKETIME*`.
pub fn preload_var(name: &OsStr) -> bool {
    name == "LD_PRELOAD" || name.to_string_lossy().starts_with("FAKETIME")
}

/// `Command::new(program)` with every [`preload_var`] of this process's
/// environment removed.
pub fn child_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if preload_var(&k) {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_and_faketime_variables_are_stripped_and_nothing_else() {
        for v in [
            "LD_PRELOAD",
            "FAKETIME",
            "FAKETIME_TIMESTAMP_FILE",
            "FAKETIME_NO_CACHE",
        ] {
            assert!(preload_var(OsStr::new(v)), "{v}");
        }
        for v in ["PATH", "ETCDCTL_API", "LD_LIBRARY_PATH", "NOTIFY_SOCKET"] {
            assert!(!preload_var(OsStr::new(v)), "{v}");
        }
    }
}
