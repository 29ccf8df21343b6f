//! Processes by pid: whether one runs, and signalling it. The agent
//! supervises its etcd by pid (it survives the agent's own restarts), and
//! `diag` reads the same pid file; the test harness uses these too, so they
//! live here rather than in the harness.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Field 3 is the state; "Z" is a zombie, "X" dead.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}
