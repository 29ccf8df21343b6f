//! The link to the region: a small state machine, pure and clock-free.
//!
//! ```text
//!            success                    failure (< down_after in a row)
//!   ┌──────────────────────┐        ┌──────────────────┐
//!   ▼                      │        │                  ▼
//!  Up ──failure──► Degraded ──failure × down_after──► Down
//!   ▲                                                  │
//!   └──────────── probe (empty WriteRequest) succeeds ─┘
//! ```
//!
//! - **Up**: the last request succeeded; both lanes send freely.
//! - **Degraded**: recent requests failed (5xx, 429, timeout, connection
//!   error) but fewer than `down_after` in a row; senders retry the same
//!   batch after the backoff delay.
//! - **Down**: the region is considered unreachable; no data is sent. Only a
//!   cheap probe (an empty `WriteRequest`, which exercises DNS, TLS, auth and
//!   the receiver itself) is tried after each backoff delay.
//!
//! Backoff is exponential (`base · 2^n`, capped at `max`) with "equal
//! jitter": the delay is drawn uniformly from `[d/2, d]`, so many sites that
//! lost the region at once do not come back in lockstep. A `Retry-After`
//! from the receiver raises the delay, never lowers it.

use std::time::Duration;

/// Link state as shown in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Degraded,
    Down,
}

impl LinkState {
    /// 0 = down, 1 = degraded, 2 = up (the value of the state gauge).
    pub fn as_gauge(self) -> u8 {
        match self {
            LinkState::Down => 0,
            LinkState::Degraded => 1,
            LinkState::Up => 2,
        }
    }
}

impl std::fmt::Display for LinkState {
    /// The name `/status` uses (`up`, `degraded`, `down`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::Up => "up",
            LinkState::Degraded => "degraded",
            LinkState::Down => "down",
        })
    }
}

/// Timing of the link machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkTiming {
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Consecutive failures that turn Degraded into Down.
    pub down_after: u32,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming {
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(15),
            down_after: 3,
        }
    }
}

/// The state machine. Feed it outcomes; it answers how long to wait.
#[derive(Debug, Clone)]
pub struct LinkMachine {
    timing: LinkTiming,
    state: LinkState,
    consecutive_failures: u32,
    last_error: Option<String>,
}

impl LinkMachine {
    /// Starts Up: the first real request tells the truth quickly, and a
    /// site that boots with a working link must not wait for a probe.
    pub fn new(timing: LinkTiming) -> Self {
        LinkMachine {
            timing,
            state: LinkState::Up,
            consecutive_failures: 0,
            last_error: None,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// A request or probe got a 2xx.
    pub fn on_success(&mut self) {
        self.state = LinkState::Up;
        self.consecutive_failures = 0;
    }

    /// A request or probe failed in a retryable way. Returns how long to
    /// wait before the next attempt. `jitter` is a uniform draw in `[0, 1)`.
    pub fn on_failure(
        &mut self,
        reason: String,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(reason);
        self.state = if self.consecutive_failures >= self.timing.down_after {
            LinkState::Down
        } else {
            LinkState::Degraded
        };
        let delay = self.backoff(jitter);
        match retry_after {
            Some(ra) if ra > delay => ra,
            _ => delay,
        }
    }

    /// The jittered exponential delay for the current failure count.
    fn backoff(&self, jitter: f64) -> Duration {
        let exp = self.consecutive_failures.saturating_sub(1).min(30);
        let full = self
            .timing
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.timing.backoff_max);
        let jitter = jitter.clamp(0.0, 1.0);
        full.mul_f64(0.5 + 0.5 * jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LinkTiming {
        LinkTiming {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            down_after: 3,
        }
    }

    #[test]
    fn up_degraded_down_up() {
        let mut m = LinkMachine::new(timing());
        assert_eq!(m.state(), LinkState::Up);
        m.on_failure("e1".into(), None, 1.0);
        assert_eq!(m.state(), LinkState::Degraded);
        m.on_failure("e2".into(), None, 1.0);
        assert_eq!(m.state(), LinkState::Degraded);
        m.on_failure("e3".into(), None, 1.0);
        assert_eq!(m.state(), LinkState::Down);
        assert_eq!(m.last_error(), Some("e3"));
        m.on_success();
        assert_eq!(m.state(), LinkState::Up);
        assert_eq!(m.consecutive_failures(), 0);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let mut m = LinkMachine::new(timing());
        let full: Vec<Duration> = (0..8)
            .map(|_| m.on_failure("x".into(), None, 1.0))
            .collect();
        let ms: Vec<u128> = full.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        let mut m = LinkMachine::new(timing());
        assert_eq!(m.on_failure("x".into(), None, 0.0).as_millis(), 50);
        m.on_success();
        assert_eq!(m.on_failure("x".into(), None, 0.5).as_millis(), 75);
    }

    #[test]
    fn retry_after_raises_never_lowers() {
        let mut m = LinkMachine::new(timing());
        assert_eq!(
            m.on_failure("x".into(), Some(Duration::from_secs(9)), 1.0),
            Duration::from_secs(9)
        );
        assert_eq!(
            m.on_failure("x".into(), Some(Duration::from_millis(1)), 1.0),
            Duration::from_millis(200)
        );
    }
}
