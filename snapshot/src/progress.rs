//! Progress of long operations (save, verify, restore, copies): bytes done,
//! rate, ETA. The library calls a callback at most every [`INTERVAL`] and
//! once at the end; [`terminal_reporter`] draws it on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Minimum time between two progress callbacks (the last one always comes).
pub const INTERVAL: Duration = Duration::from_millis(250);

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// What is being done: `save`, `verify`, `restore`, `receive`, `push`.
    pub phase: &'static str,
    /// Bytes done so far (uncompressed stream bytes for save/verify/restore).
    pub done: u64,
    /// Bytes expected in total, when known.
    pub total: Option<u64>,
    pub elapsed: Duration,
    /// The last report of this operation.
    pub finished: bool,
}

impl Progress {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.done as f64 / s } else { 0.0 }
    }

    /// Time left at the current rate, when the total is known.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        let rate = self.rate();
        (rate > 0.0).then(|| Duration::from_secs_f64(total.saturating_sub(self.done) as f64 / rate))
    }
}

/// Rate-limits callbacks.
pub(crate) struct Ticker<'a> {
    phase: &'static str,
    start: Instant,
    last: Option<Instant>,
    cb: &'a mut (dyn FnMut(&Progress) + Send),
}

impl<'a> Ticker<'a> {
    pub(crate) fn new(phase: &'static str, cb: &'a mut (dyn FnMut(&Progress) + Send)) -> Self {
        Ticker {
            phase,
            start: Instant::now(),
            last: None,
            cb,
        }
    }

    pub(crate) fn tick(&mut self, done: u64, total: Option<u64>) {
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < INTERVAL) {
            return;
        }
        self.last = Some(now);
        self.emit(done, total, false);
    }

    pub(crate) fn finish(&mut self, done: u64, total: Option<u64>) {
        self.emit(done, total, true);
    }

    fn emit(&mut self, done: u64, total: Option<u64>, finished: bool) {
        (self.cb)(&Progress {
            phase: self.phase,
            done,
            total,
            elapsed: self.start.elapsed(),
            finished,
        });
    }
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

/// A callback that draws one updating line on stderr when stderr is a
/// terminal, and does nothing otherwise (logs and pipes stay clean).
pub fn terminal_reporter(label: &str) -> impl FnMut(&Progress) + Send + 'static {
    let tty = std::io::stderr().is_terminal();
    let label = label.to_string();
    move |p: &Progress| {
        if !tty {
            return;
        }
        let mut line = format!("\r{label}: {:.1} MiB", mib(p.done as f64));
        if let Some(t) = p.total {
            line += &format!(" / {:.1} MiB", mib(t as f64));
        }
        line += &format!("  {:.1} MiB/s", mib(p.rate()));
        if p.finished {
            line += &format!("  done in {:.1}s\x1b[K\n", p.elapsed.as_secs_f64());
        } else if let Some(eta) = p.eta() {
            line += &format!("  ETA {:.0}s\x1b[K", eta.as_secs_f64().ceil());
        } else {
            line += "\x1b[K";
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta() {
        let p = Progress {
            phase: "save",
            done: 50,
            total: Some(150),
            elapsed: Duration::from_secs(1),
            finished: false,
        };
        assert_eq!(p.rate(), 50.0);
        assert_eq!(p.eta(), Some(Duration::from_secs(2)));
    }
}
