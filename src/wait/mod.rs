//! Waiting for a worker (`--wait`): instead of refusing, wait until the
//! worker (any worker of a pool) can be claimed, and claim it.
//!
//! Waiting is driven by the events that free a worker, never by sleeping
//! for a guess ([`wake`]): `.runtime/` changing, the holder and the recorded
//! session's processes exiting, a signal, the fleet key changing. Each wake
//! is only a reason to judge again by the usual rules; a slow periodic
//! re-judge is the safety net for what no event covers (another host's
//! lock).
//!
//! Waiters of one worker are served in arrival order ([`queue`]): only the
//! first live waiter claims. A waiter ahead that does not claim a claimable
//! worker within [`HANDOVER`] (stopped, or a ticket somebody forged) is
//! passed over, so no waiter can block the others for longer than that.
//!
//! ```
//! use agentlock::lock::{self, ClaimOptions, ClaimOutcome, Claimant, LiveProbes};
//! use agentlock::wait::{self, WaitOptions};
//! use std::time::Duration;
//!
//! let worker = tempfile::tempdir()?;
//! let live = LiveProbes::new(Default::default());
//! let me = Claimant::this_process();
//!
//! // Free: claimed at once.
//! let first = wait::claim_wait(&worker, &me, ClaimOptions::default(),
//!     &WaitOptions::up_to(Duration::from_millis(200)), &live.probes())?;
//! assert!(matches!(first.outcome, ClaimOutcome::Done(_)));
//!
//! // Held by a live process (the parent of this test): refused after 200 ms.
//! let other = Claimant { pid: nix::unistd::getppid().as_raw(), ..Claimant::this_process() };
//! let second = wait::claim_wait(&worker, &other, ClaimOptions::default(),
//!     &WaitOptions::up_to(Duration::from_millis(200)), &live.probes())?;
//! assert!(matches!(second.outcome, ClaimOutcome::Refused(_)));
//! assert!(second.waited >= Duration::from_millis(200));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod files;
mod interrupt;
pub(crate) mod last_close;
pub mod queue;
pub(crate) mod wake;

pub use files::{claim_first_free_wait, claim_wait};
pub use interrupt::Interrupt;
pub use wake::{BACKOFF_START, NET_COVERED, NET_UNCOVERED};

use crate::error::{Error, Result};
use crate::lock::claim::claimant_lives;
use crate::lock::{Claimant, Judgement, Probes};
use crate::verdict::State;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wake::Wake;

/// How long a waiter ahead may leave a claimable worker unclaimed before
/// the next waiter claims it anyway.
pub const HANDOVER: Duration = Duration::from_secs(5);

/// How long to wait, and what ends the wait early.
#[derive(Debug, Clone, Default)]
pub struct WaitOptions {
    /// Give up after this long (`None`: wait forever).
    pub timeout: Option<Duration>,
    /// Give up, holding nothing, when one of its signals arrives.
    pub interrupt: Option<Interrupt>,
}

impl WaitOptions {
    /// Waits as long as it takes.
    pub fn forever() -> WaitOptions {
        WaitOptions::default()
    }

    /// Waits at most `timeout`.
    pub fn up_to(timeout: Duration) -> WaitOptions {
        WaitOptions {
            timeout: Some(timeout),
            interrupt: None,
        }
    }

    /// When a wait that starts at `start` ends (`None`: never).
    pub fn deadline(&self, start: Instant) -> Option<Instant> {
        self.timeout.and_then(|t| start.checked_add(t))
    }

    /// Gives up when `interrupt` is set (a signal arrived).
    pub fn interrupted_by(mut self, interrupt: Interrupt) -> WaitOptions {
        self.interrupt = Some(interrupt);
        self
    }
}

/// The outcome of a wait, and how long it took.
#[derive(Debug)]
pub struct Waited<T> {
    /// What the claim came to: claimed, or (after the timeout) refused.
    pub outcome: T,
    /// From the start of the wait until it ended.
    pub waited: Duration,
}

/// What one look at the worker(s) came to.
pub(crate) enum Look<T> {
    /// Claimed.
    Done(T),
    /// Not claimed; whether some worker looked claimable (so a waiter ahead
    /// is expected to claim it within [`HANDOVER`]).
    Waiting { claimable: bool },
}

/// Looks, sleeps on `wake` and looks again until `look` claims, the time is
/// up (`None`) or a signal arrives (`Error::Interrupted` about `path`).
/// `look` is told when waiters ahead have had their [`HANDOVER`].
pub(crate) fn wait_loop<T>(
    path: &Path,
    opts: &WaitOptions,
    wake: &mut Wake,
    mut look: impl FnMut(&mut Wake, bool) -> Result<Look<T>>,
) -> Result<Option<T>> {
    let start = Instant::now();
    let deadline = opts.deadline(start);
    if let Some(i) = &opts.interrupt {
        wake.watch_pipe(i.fd());
    }
    let interrupted = || opts.interrupt.as_ref().is_some_and(Interrupt::is_set);
    let mut claimable_since: Option<Instant> = None;
    loop {
        if interrupted() {
            return Err(Error::Interrupted { path: path.into() });
        }
        wake.round();
        let passed = claimable_since.is_some_and(|t| t.elapsed() >= HANDOVER);
        let claimable = match look(wake, passed)? {
            Look::Done(t) => return Ok(Some(t)),
            Look::Waiting { claimable } => claimable,
        };
        claimable_since = if claimable {
            claimable_since.or(Some(Instant::now()))
        } else {
            None
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        let handover = claimable_since.map(|t| t + HANDOVER);
        let until = match (deadline, handover) {
            (Some(d), Some(h)) => Some(d.min(h)),
            (d, h) => d.or(h),
        };
        wake.sleep(until);
    }
}

/// Registers on `wake` what can change `j`'s verdict: the holder's exit
/// when it runs here, the session's processes when it lives. What cannot
/// be watched makes the round uncovered (judged again sooner).
pub(crate) fn watch_judged(j: &Judgement, wake: &mut Wake, probes: &Probes) {
    if j.state == State::Unverified {
        wake.uncovered();
    }
    let Some(rec) = &j.record else {
        return;
    };
    match j.pid_alive {
        Some(true) if crate::verdict::foreign(rec, &probes.host).is_none() => {
            wake.watch_pid(rec.pid, rec.pid_start)
        }
        Some(false) => {}
        _ => wake.uncovered(),
    }
    if let Some(session) = &rec.session_id {
        let socket = rec.tmux_socket.as_deref().map(Path::new);
        match j.session_alive {
            Some(true) => {
                // Its panes' processes and server exiting, its panes'
                // terminals hung up (the session killed while a process
                // that ignores SIGHUP lives on).
                let pids = probes.sessions.watch_pids(session, socket);
                let ttys = probes.sessions.watch_ttys(session, socket);
                if pids.is_empty() || ttys.is_empty() {
                    wake.uncovered();
                }
                for pid in pids {
                    wake.watch_pid(pid, None);
                }
                match j.owner {
                    Some(owner) => ttys.iter().for_each(|t| wake.watch_tty(t, owner)),
                    None => wake.uncovered(),
                }
            }
            Some(false) => {}
            None => wake.uncovered(),
        }
    }
}

/// An error a waiter gets past by looking again: the lock or record
/// changed while it was judged, the guard was busy, the store did not
/// answer in time, this host's keeper could not vouch for a claim just now
/// (a late renewal). If the wait ends on one, it is the outcome.
pub(crate) fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::LockChanging { .. }
            | Error::RecordChanged { .. }
            | Error::GuardTimeout { .. }
            | Error::Store { .. }
            | Error::Keeper { .. }
    )
}

/// An error one worker of several gave: a signal ends the wait; anything
/// else is that worker's outcome this round (the others are still waited
/// for), and it is looked at again soon.
pub(crate) fn one_of_many(e: Error, wake: &mut Wake) -> Result<Error> {
    match e {
        e @ Error::Interrupted { .. } => Err(e),
        e => {
            wake.uncovered();
            Ok(e)
        }
    }
}

/// The error that ends a wait in which every worker failed for good this
/// round (nothing to wait for), if they all did.
pub(crate) fn all_failed<J>(tried: &mut Vec<(PathBuf, Result<J>)>) -> Option<Error> {
    let hopeless = !tried.is_empty()
        && tried
            .iter()
            .all(|(_, r)| r.as_ref().is_err_and(|e| !transient(e)));
    if hopeless {
        tried.remove(0).1.err()
    } else {
        None
    }
}

/// How long a wait may take the guard for, with `deadline` ahead.
pub(crate) fn guard_limit(deadline: Option<Instant>) -> Duration {
    deadline.map_or(crate::lock::GUARD_TIMEOUT, |d| {
        d.saturating_duration_since(Instant::now())
            .min(crate::lock::GUARD_TIMEOUT)
    })
}

/// The claimant must outlive the wait: watched, and checked every round.
pub(crate) fn claimant_still(
    me: &Claimant,
    my_start: Option<u64>,
    wake: &mut Wake,
    probes: &Probes,
) -> Result<()> {
    if !claimant_lives(me, my_start, probes) {
        return Err(Error::BadPid {
            pid: me.pid.into(),
            why: "the holder exited while waiting for the worker; nothing is held".into(),
        });
    }
    wake.watch_pid(me.pid, my_start);
    Ok(())
}
