//! Long operations off the reconcile loop.
//!
//! A fence may take a minute, a defragmentation as long, a compaction half
//! of it, a rebuild as long as restoring the db takes. Run inside the loop they outlived systemd's watchdog (30 s), got
//! the agent restarted in the middle of a recovery, and nothing reacted to
//! failures meanwhile. So the loop only decides and journals; the slow part
//! (the "act" of pre-check -> journal -> act -> post-check) runs as a tokio
//! task owned by the [`Runner`], and the loop goes on observing, publishing
//! `/status` and feeding the watchdog. The next tick after it ends hands
//! its result to the module that started it, which does the post-check.
//!
//! One owner, one operation: at most one disruptive operation runs at a
//! time (a second is refused with [`Refused::Busy`]), and none starts
//! without its journal record ([`Refused::Journal`]). The outcome is
//! journalled by the runner when the task ends, so a module that no longer
//! looks (the host stopped coordinating) cannot leave a record pending.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::Serialize;

use super::etcd::Supervisor;
use super::state::{OpKind, Outcome, State};

/// What runs off the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The fence command for one lost voter (quorum-loss recovery).
    Fence,
    /// The Defragment RPC on one voter.
    Defrag,
    /// The compaction of a NOSPACE alarm.
    Compact,
    /// `etcdctl defrag --data-dir` on this host's stopped standby: etcd must
    /// stay down until it ends.
    OfflineDefrag,
    /// The quorum-loss rebuild of a one-member cluster from this host's data
    /// or a snapshot: it holds this host's etcd (stops, restores, starts it
    /// sealed) until it ends.
    Rebuild,
}

impl Kind {
    fn journal_kind(self) -> OpKind {
        match self {
            Kind::Fence => OpKind::Fence,
            Kind::Defrag | Kind::Compact | Kind::OfflineDefrag => OpKind::Defrag,
            Kind::Rebuild => OpKind::Recover,
        }
    }

    /// Whether it works on this host's etcd process and data dir: nothing
    /// else may start, stop or read them until it ends.
    pub fn holds_local_etcd(self) -> bool {
        matches!(self, Kind::OfflineDefrag | Kind::Rebuild)
    }
}

/// This host's etcd [`Supervisor`], lent to an operation that holds it
/// ([`Runner::start_with_etcd`]). However the operation ends (done,
/// failed, aborted), dropping the loan hands the supervisor back, and
/// the loop takes it again with [`Runner::reclaim_etcd`].
pub struct EtcdLoan {
    etcd: Option<Supervisor>,
    slot: Arc<Mutex<Option<Supervisor>>>,
}

impl std::ops::Deref for EtcdLoan {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        // Only `drop` takes it out.
        self.etcd
            .as_ref()
            .unwrap_or_else(|| unreachable!("a loan holds its supervisor until dropped"))
    }
}

impl std::ops::DerefMut for EtcdLoan {
    fn deref_mut(&mut self) -> &mut Supervisor {
        self.etcd
            .as_mut()
            .unwrap_or_else(|| unreachable!("a loan holds its supervisor until dropped"))
    }
}

impl Drop for EtcdLoan {
    fn drop(&mut self) {
        if let Some(etcd) = self.etcd.take() {
            match self.slot.lock() {
                Ok(mut s) => *s = Some(etcd),
                Err(p) => *p.into_inner() = Some(etcd),
            }
        }
    }
}

/// Why an operation was not started.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("another operation is running: {0:?} of {1}")]
    Busy(Kind, String),
    #[error("could not journal the intent, so it does not run: {0}")]
    Journal(#[from] super::state::StateError),
}

/// How an operation ended (its journal record is already closed).
#[derive(Debug, Clone)]
pub struct Finished {
    pub kind: Kind,
    pub target: String,
    /// `Ok(detail)` or `Err(why)`, as journalled.
    pub result: Result<String, String>,
    pub took: Duration,
    /// When it ended (ms since the epoch).
    pub finished_ms: i64,
}

/// The running operation in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OperationDoc {
    pub kind: Kind,
    pub target: String,
    pub reason: String,
    pub started_ms: i64,
    pub running_for_s: f64,
    /// The journal record it belongs to.
    pub journal_id: u64,
}

struct Running {
    kind: Kind,
    target: String,
    reason: String,
    started: Instant,
    started_ms: i64,
    journal_id: u64,
    handle: tokio::task::JoinHandle<Result<String, String>>,
}

/// The one owner of the operation that runs off the loop.
#[derive(Default)]
pub struct Runner {
    running: Option<Running>,
    /// Ended since the last [`Runner::poll`], waiting for its owner.
    finished: Option<Finished>,
    /// Where an [`EtcdLoan`] hands the supervisor back.
    loan: Arc<Mutex<Option<Supervisor>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("running", &self.doc())
            .field("finished", &self.finished)
            .finish()
    }
}

impl Runner {
    /// Whether an operation is running.
    pub fn busy(&self) -> bool {
        self.running.is_some()
    }

    /// The running operation's kind and target.
    pub fn running(&self) -> Option<(Kind, &str)> {
        self.running.as_ref().map(|r| (r.kind, r.target.as_str()))
    }

    /// Whether this host's etcd must stay stopped (an offline defrag runs on
    /// its data dir).
    pub fn holds_local_etcd(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.kind.holds_local_etcd())
    }

    /// [`Runner::start`] for an operation that holds this host's etcd:
    /// `etcd` is lent to `act` (the loop keeps a stand-in that runs
    /// nothing) and comes back through [`Runner::reclaim_etcd`] once the
    /// operation ended. Refused like `start`, and then `etcd` is untouched.
    pub fn start_with_etcd<F, Fut>(
        &mut self,
        state: &State,
        kind: Kind,
        target: &str,
        reason: &str,
        etcd: &mut Supervisor,
        act: F,
    ) -> Result<u64, Refused>
    where
        F: FnOnce(EtcdLoan) -> Fut,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        if let Some(r) = &self.running {
            return Err(Refused::Busy(r.kind, r.target.clone()));
        }
        let stand_in = Supervisor::new(etcd.spec.clone());
        let loan = EtcdLoan {
            etcd: Some(std::mem::replace(etcd, stand_in)),
            slot: self.loan.clone(),
        };
        let started = self.start(state, kind, target, reason, act(loan));
        if started.is_err() {
            // The unstarted future, and with it the loan, is dropped.
            self.reclaim_etcd(etcd);
        }
        started
    }

    /// Once per tick, after [`Runner::poll`]: puts a supervisor lent to an
    /// operation that ended back in `etcd`. Returns whether it did.
    pub fn reclaim_etcd(&mut self, etcd: &mut Supervisor) -> bool {
        let back = match self.loan.lock() {
            Ok(mut s) => s.take(),
            Err(p) => p.into_inner().take(),
        };
        match back {
            Some(s) => {
                *etcd = s;
                true
            }
            None => false,
        }
    }

    /// Journals the intent, then runs `act` off the loop. Refused while
    /// another operation runs or when the journal write fails; `act` is
    /// then dropped without having run.
    pub fn start<F>(
        &mut self,
        state: &State,
        kind: Kind,
        target: &str,
        reason: &str,
        act: F,
    ) -> Result<u64, Refused>
    where
        F: Future<Output = Result<String, String>> + Send + 'static,
    {
        if let Some(r) = &self.running {
            return Err(Refused::Busy(r.kind, r.target.clone()));
        }
        let journal_id = state.begin(kind.journal_kind(), target, reason)?;
        self.running = Some(Running {
            kind,
            target: target.to_string(),
            reason: reason.to_string(),
            started: Instant::now(),
            started_ms: chrono::Utc::now().timestamp_millis(),
            journal_id,
            handle: tokio::spawn(act),
        });
        Ok(journal_id)
    }

    /// Once per tick: if the running operation ended, journals its outcome
    /// and keeps it for its owner ([`Runner::take`]) until the next poll.
    pub fn poll(&mut self, state: &State) {
        if let Some(f) = self.finished.take() {
            tracing::debug!(
                "Nobody took the result of {:?} of {}: {:?}",
                f.kind,
                f.target,
                f.result
            );
        }
        let Some(r) = &mut self.running else {
            return;
        };
        if !r.handle.is_finished() {
            return;
        }
        let Some(joined) = (&mut r.handle).now_or_never() else {
            return;
        };
        let Some(r) = self.running.take() else {
            return;
        };
        let result = joined.unwrap_or_else(|e| Err(format!("the operation's task failed: {e}")));
        let (outcome, detail) = match &result {
            Ok(d) => (Outcome::Done, d.as_str()),
            Err(e) => (Outcome::Failed, e.as_str()),
        };
        state.close(r.journal_id, outcome, detail);
        self.finished = Some(Finished {
            kind: r.kind,
            target: r.target,
            result,
            took: r.started.elapsed(),
            finished_ms: chrono::Utc::now().timestamp_millis(),
        });
    }

    /// The operation of `kind` that ended at this tick's poll, if any.
    pub fn take(&mut self, kind: Kind) -> Option<Finished> {
        if self.finished.as_ref().is_some_and(|f| f.kind == kind) {
            self.finished.take()
        } else {
            None
        }
    }

    /// The running operation, for `/status`.
    pub fn doc(&self) -> Option<OperationDoc> {
        self.running.as_ref().map(|r| OperationDoc {
            kind: r.kind,
            target: r.target.clone(),
            reason: r.reason.clone(),
            started_ms: r.started_ms,
            running_for_s: r.started.elapsed().as_secs_f64(),
            journal_id: r.journal_id,
        })
    }

    /// Stops waiting for the running operation (agent shutdown): its task
    /// is aborted (a child process started with `kill_on_drop` dies) and its
    /// record closed as failed.
    pub fn abort(&mut self, state: &State) {
        if let Some(r) = self.running.take() {
            r.handle.abort();
            state.close(r.journal_id, Outcome::Failed, "the agent stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until_finished(runner: &mut Runner, state: &State) {
        for _ in 0..200 {
            runner.poll(state);
            if !runner.busy() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn one_operation_at_a_time_each_journalled_before_and_after() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = State::open(dir.path())?;
        let mut runner = Runner::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let id = runner.start(&state, Kind::Fence, "h2", "quorum lost", async move {
            let _ = rx.await;
            Ok("fenced h2".to_string())
        })?;
        // Journalled before it acts, pending while it runs.
        let rec = state.ops(10)?;
        assert!(
            rec.iter()
                .any(|o| o.id == id && o.outcome == Outcome::Pending)
        );
        assert_eq!(runner.running(), Some((Kind::Fence, "h2")));
        assert!(runner.doc().is_some());
        // A second one is refused, and never runs.
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ran.clone();
        let refused = runner.start(&state, Kind::Defrag, "h1", "x", async move {
            r2.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(String::new())
        });
        assert!(matches!(refused, Err(Refused::Busy(Kind::Fence, _))));
        runner.poll(&state);
        assert!(runner.busy(), "still running");
        let _ = tx.send(());
        until_finished(&mut runner, &state).await;
        let rec = state.ops(10)?;
        assert!(rec.iter().any(|o| o.id == id && o.outcome == Outcome::Done));
        assert!(runner.take(Kind::Defrag).is_none(), "only its own kind");
        let f = runner
            .take(Kind::Fence)
            .ok_or_else(|| anyhow::anyhow!("no result"))?;
        assert_eq!(f.result, Ok("fenced h2".to_string()));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        Ok(())
    }

    #[tokio::test]
    async fn a_failure_is_journalled_and_an_untaken_result_expires() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = State::open(dir.path())?;
        let mut runner = Runner::default();
        let id = runner.start(&state, Kind::Compact, "h1", "NOSPACE", async {
            Err("timed out".to_string())
        })?;
        until_finished(&mut runner, &state).await;
        let rec = state.ops(10)?;
        assert!(
            rec.iter()
                .any(|o| o.id == id && o.outcome == Outcome::Failed)
        );
        runner.poll(&state);
        assert!(
            runner.take(Kind::Compact).is_none(),
            "kept for one tick only"
        );
        Ok(())
    }

    fn spec(dir: &std::path::Path) -> super::super::etcd::EtcdSpec {
        super::super::etcd::EtcdSpec {
            binary: "/nonexistent/etcd".into(),
            name: "h1".into(),
            data_dir: dir.join("etcd"),
            client_url: "http://127.0.0.1:1".into(),
            peer_url: "http://127.0.0.1:2".into(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            quota_backend_bytes: 1 << 31,
            pre_vote: true,
            extra_args: vec![],
            log_path: dir.join("etcd.log"),
            pid_path: dir.join("etcd.pid"),
        }
    }

    /// An operation that holds this host's etcd (the offline defrag) has
    /// it to itself: a rebuild asked for meanwhile (an operator's recover)
    /// is refused and never runs, the loop's stand-in stays in place, and
    /// the real supervisor comes back once the holder ended.
    #[tokio::test]
    async fn a_rebuild_is_refused_while_an_offline_defrag_holds_etcd() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = State::open(dir.path())?;
        let mut runner = Runner::default();
        let mut etcd = Supervisor::new(spec(dir.path()));
        etcd.restarts = 7; // marks the real supervisor
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        runner.start_with_etcd(
            &state,
            Kind::OfflineDefrag,
            "h1",
            "NOSPACE",
            &mut etcd,
            |loan| async move {
                assert_eq!(loan.restarts, 7, "the operation has the real one");
                let _ = rx.await;
                Ok("defragmented offline".to_string())
            },
        )?;
        assert_eq!(etcd.restarts, 0, "the loop has a stand-in");
        assert!(runner.holds_local_etcd());
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ran.clone();
        let refused = runner.start_with_etcd(
            &state,
            Kind::Rebuild,
            "h1",
            "operator recover",
            &mut etcd,
            |_loan| async move {
                r2.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(String::new())
            },
        );
        assert!(matches!(
            refused,
            Err(Refused::Busy(Kind::OfflineDefrag, _))
        ));
        assert!(!runner.reclaim_etcd(&mut etcd), "nothing to take back yet");
        assert_eq!(etcd.restarts, 0);
        let _ = tx.send(());
        until_finished(&mut runner, &state).await;
        assert!(runner.reclaim_etcd(&mut etcd));
        assert_eq!(etcd.restarts, 7, "the real supervisor is back");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        Ok(())
    }

    /// However it ends, an aborted holder (agent shutdown) hands the
    /// supervisor back too.
    #[tokio::test]
    async fn an_aborted_holder_gives_etcd_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = State::open(dir.path())?;
        let mut runner = Runner::default();
        let mut etcd = Supervisor::new(spec(dir.path()));
        etcd.restarts = 3;
        runner.start_with_etcd(
            &state,
            Kind::Rebuild,
            "h1",
            "quorum lost",
            &mut etcd,
            |_loan| async move {
                std::future::pending::<()>().await;
                Ok(String::new())
            },
        )?;
        runner.abort(&state);
        let t0 = Instant::now();
        while !runner.reclaim_etcd(&mut etcd) && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(etcd.restarts, 3);
        Ok(())
    }
}
