//! [`Agentlock`]: the short path for programs that use agentlock as a
//! library. One handle holds the probes (each tmux server asked at most once,
//! on first need) and the holder ("me"); each operation is one call.

use crate::doctor::{self, Report};
use crate::error::{Error, Result};
use crate::held::ClaimGuard;
use crate::holder::{Asker, Claimant};
use crate::lock::{self, ClaimOptions, ClaimOutcome, FirstFree, Judgement, ReleaseOutcome};
use crate::probe::{LiveProbes, TmuxQuery};
use crate::scan::{Progress, ScanOptions};
use crate::wait::{WaitOptions, Waited};
use std::path::Path;

/// Claims, releases and judges workers as one holder, with one set of probes.
///
/// By default the holder is this process (in its tmux pane, when it runs in
/// one) and every tmux server of this user is asked. Several operations on
/// one handle ask each tmux server once; make a new handle to see tmux anew.
///
/// ```
/// use agentlock::{Agentlock, lock::ClaimOutcome, verdict::State};
///
/// let town = tempfile::tempdir()?;
/// let worker = town.path().join("max");
/// std::fs::create_dir(&worker)?;
///
/// let al = Agentlock::new();
/// assert!(matches!(al.claim(&worker)?, ClaimOutcome::Done(_)));
/// assert_eq!(al.status(&worker)?.state, State::Held);
/// al.release(&worker)?;
/// assert_eq!(al.status(&worker)?.state, State::Free);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Agentlock {
    live: LiveProbes,
    me: Claimant,
}

impl Default for Agentlock {
    fn default() -> Self {
        Agentlock::new()
    }
}

impl Agentlock {
    /// This process as the holder; every tmux server of this user.
    pub fn new() -> Agentlock {
        Agentlock::with_tmux(TmuxQuery::default())
    }

    /// This process as the holder; the tmux servers `query` names.
    pub fn with_tmux(query: TmuxQuery) -> Agentlock {
        Agentlock {
            live: LiveProbes::new(query),
            me: Claimant::this_process(),
        }
    }

    /// Claims and releases as `holder` (say, a child process you started)
    /// instead of this process.
    pub fn holder(mut self, holder: Claimant) -> Agentlock {
        self.me = holder;
        self
    }

    /// The probes, for the functions of [`crate::lock`] and [`crate::doctor`].
    pub fn probes(&self) -> &LiveProbes {
        &self.live
    }

    /// Claims `worker` for the holder: refused when someone
    /// else holds it.
    pub fn claim(&self, worker: impl AsRef<Path>) -> Result<ClaimOutcome> {
        self.claim_with(worker, ClaimOptions::default())
    }

    /// [`Agentlock::claim`] with options (`--force`, `--signal-other`).
    pub fn claim_with(&self, worker: impl AsRef<Path>, opts: ClaimOptions) -> Result<ClaimOutcome> {
        lock::claim(worker, &self.me, opts, &self.live.probes())
    }

    /// Claims the first of `workers` that is free, stale or corrupt.
    pub fn claim_first_free<P: AsRef<Path>>(&self, workers: &[P]) -> Result<FirstFree> {
        lock::claim_first_free(workers, &self.me, &self.live.probes())
    }

    /// Claims `worker`, waiting (per `wait`) while someone else holds it:
    /// woken by what frees it, served after the waiters that came first.
    /// After the timeout the outcome is the refusal.
    pub fn claim_wait(
        &self,
        worker: impl AsRef<Path>,
        wait: &WaitOptions,
    ) -> Result<Waited<ClaimOutcome>> {
        crate::wait::claim_wait(
            worker,
            &self.me,
            ClaimOptions::default(),
            wait,
            &self.live.probes(),
        )
    }

    /// Claims whichever of `workers` frees first, waiting per `wait`.
    pub fn claim_first_free_wait<P: AsRef<Path>>(
        &self,
        workers: &[P],
        wait: &WaitOptions,
    ) -> Result<Waited<FirstFree>> {
        crate::wait::claim_first_free_wait(workers, &self.me, wait, &self.live.probes())
    }

    /// Claims `worker` and holds it until the returned guard is dropped. A
    /// worker someone else holds is an error ([`Error::Held`]).
    ///
    /// ```
    /// use agentlock::{Agentlock, verdict::State};
    ///
    /// let worker = tempfile::tempdir()?;
    /// let al = Agentlock::new();
    /// {
    ///     let held = al.lock(worker.path())?;
    ///     assert_eq!(al.status(held.worker())?.state, State::Held);
    ///     // ... work in the worker; an early `?` return releases it too.
    /// }
    /// assert_eq!(al.status(worker.path())?.state, State::Free);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self, worker: impl AsRef<Path>) -> Result<ClaimGuard<'_>> {
        match self.claim(worker)? {
            ClaimOutcome::Done(c) => Ok(ClaimGuard::new(c, self.live.probes())),
            ClaimOutcome::Refused(j) => Err(Error::Held {
                path: j.worker_dir,
                state: j.state,
                reason: j.reason,
            }),
        }
    }

    /// [`Agentlock::lock`], waiting per `wait` while someone else holds
    /// the worker; still taken after the timeout: [`Error::WaitTimedOut`].
    ///
    /// ```
    /// use agentlock::{Agentlock, Error, wait::WaitOptions};
    /// use std::time::Duration;
    ///
    /// let worker = tempfile::tempdir()?;
    /// let al = Agentlock::new();
    /// let wait = WaitOptions::up_to(Duration::from_secs(5));
    /// let held = al.lock_wait(worker.path(), &wait)?;
    ///
    /// // Another holder (this test's parent process) waits 100 ms, in vain.
    /// let parent = agentlock::lock::Claimant {
    ///     pid: nix::unistd::getppid().as_raw(),
    ///     ..agentlock::lock::Claimant::this_process()
    /// };
    /// let other = Agentlock::new().holder(parent.clone());
    /// let short = WaitOptions::up_to(Duration::from_millis(100));
    /// assert!(matches!(other.lock_wait(worker.path(), &short), Err(Error::WaitTimedOut { .. })));
    ///
    /// held.release()?;
    /// let took = other.lock_wait(worker.path(), &short)?;
    /// assert_eq!(took.claimed().after.record.as_ref().unwrap().pid, parent.pid);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_wait(
        &self,
        worker: impl AsRef<Path>,
        wait: &WaitOptions,
    ) -> Result<ClaimGuard<'_>> {
        let waited = self.claim_wait(worker, wait)?;
        match waited.outcome {
            ClaimOutcome::Done(c) => Ok(ClaimGuard::new(c, self.live.probes())),
            ClaimOutcome::Refused(j) => Err(Error::WaitTimedOut {
                path: j.worker_dir,
                state: j.state,
                reason: j.reason,
                waited: waited.waited.as_secs_f64(),
            }),
        }
    }

    /// Releases `worker` if the holder holds it.
    pub fn release(&self, worker: impl AsRef<Path>) -> Result<ReleaseOutcome> {
        let asker = Asker::from(&self.me);
        lock::release(worker, &asker, false, &self.live.probes())
    }

    /// Judges `worker`: its state, the reason, the record. Read-only.
    ///
    /// ```
    /// use agentlock::{Agentlock, verdict::State};
    ///
    /// let worker = tempfile::tempdir()?;
    /// let judged = Agentlock::new().status(worker.path())?;
    /// assert_eq!(judged.state, State::Free);
    /// assert_eq!(judged.reason, "no .runtime directory");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self, worker: impl AsRef<Path>) -> Result<Judgement> {
        lock::judge(worker, &self.live.probes())
    }

    /// Scans the tree under `root` and judges every lock in it, with the
    /// findings `doctor` reports. Read-only.
    ///
    /// ```
    /// use agentlock::{Agentlock, probe::TmuxQuery, verdict::State};
    ///
    /// let town = tempfile::tempdir()?;
    /// for name in ["max", "ada"] {
    ///     std::fs::create_dir(town.path().join(name))?;
    /// }
    /// // Ask only the tmux servers under this directory (there are none).
    /// let al = Agentlock::with_tmux(TmuxQuery {
    ///     tmpdir: Some(town.path().into()),
    ///     ..TmuxQuery::default()
    /// });
    /// al.claim(town.path().join("max"))?;
    ///
    /// let report = al.scan(town.path())?;
    /// assert_eq!(report.locks.len(), 1);
    /// assert!(report.locks[0].worker_dir.ends_with("max"));
    /// assert_eq!(report.locks[0].state, State::Held);
    /// assert!(report.findings.is_empty(), "healthy");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scan(&self, root: impl AsRef<Path>) -> Result<Report> {
        self.scan_with(root, &ScanOptions::default())
    }

    /// [`Agentlock::scan`] with options (depth, skipped names, threads).
    pub fn scan_with(&self, root: impl AsRef<Path>, opts: &ScanOptions) -> Result<Report> {
        doctor::judge_tree(root, opts, &Progress::default(), &self.live)
    }
}
