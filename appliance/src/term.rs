//! A long wait's state on a terminal: one line on stderr rewritten in
//! place, and nothing at all when stderr is not a terminal (a script, a
//! log, a CI job), so captured output stays clean.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// The status line of one wait.
pub struct StatusLine {
    on: bool,
    started: Instant,
    shown: bool,
}

impl StatusLine {
    pub fn new() -> StatusLine {
        StatusLine {
            on: std::io::stderr().is_terminal(),
            started: Instant::now(),
            shown: false,
        }
    }

    /// Shows `what` with the time waited so far (cut to the line's width).
    pub fn show(&mut self, what: &str) {
        if !self.on {
            return;
        }
        let line: String = format!("  {what} ({:.0} s)", self.started.elapsed().as_secs_f64())
            .chars()
            .take(120)
            .collect();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{line}");
        let _ = e.flush();
        self.shown = true;
    }

    /// Clears the line (before anything else is printed).
    pub fn clear(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.shown = false;
        }
    }
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}
