//! Where `run` holds its worker while the command runs: the lock file
//! ([`FileHold`]), or the fleet store (`crate::fleet::hold`, feature `etcd`),
//! which can also lose it while the command runs.

use crate::error::{Error, Result};
use crate::holder::{Asker, Scope, holds};
use crate::lock::{self, ClaimOptions, ClaimOutcome, Claimant, Claimed, Judgement, Probes};
use crate::wait::{Interrupt, NET_COVERED, NET_UNCOVERED, WaitOptions};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a claim for `run` came to.
#[derive(Debug)]
pub enum Taken {
    /// Held; the holder's fence, when the store has one.
    Held {
        /// The fence, exported to the command as `AGENTLOCK_FENCE`.
        fence: Option<i64>,
    },
    /// Held by another: the command must not start.
    Refused(Box<Judgement>),
}

/// Whether the worker is still held, while the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Still held.
    Held,
    /// Still held, after putting back a lock someone removed: what happened.
    Restored(String),
    /// Lost: why (deleted, taken over, lease expired, store unreachable for
    /// longer than the lease is known to last).
    Lost(String),
}

/// A place `run` holds a worker in.
pub trait Hold {
    /// The worker directory (exported as `AGENTLOCK_WORKER`).
    fn worker(&self) -> &Path;
    /// Claims the worker for `me` (the gated command). A wait (for the
    /// guard, or for the worker) gives up when `interrupt` is set.
    fn claim(&mut self, me: &Claimant, interrupt: &Interrupt) -> Result<Taken>;
    /// How often [`Hold::check`] runs while the command runs (`None`: never,
    /// unless [`Hold::events`] wakes it).
    fn period(&self) -> Option<Duration> {
        None
    }
    /// A descriptor that becomes readable when [`Hold::check`] should run
    /// now (the lock file's directory changed).
    fn events(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Whether the worker is still held.
    fn check(&mut self) -> Checked {
        Checked::Held
    }
    /// Once the worker is lost: by when the command must be gone (it is
    /// SIGKILLed then, if still running). `None`: no deadline of the
    /// hold's own, only [`crate::run::KILL_AFTER`].
    fn stop_by(&self) -> Option<std::time::Instant> {
        None
    }
    /// Releases what [`Hold::claim`] took, if it is still the same.
    fn release(&mut self) -> Result<()>;
}

/// Holding a worker by its lock file. While the command runs, the lock is
/// watched (inotify on `.runtime/`): a lock removed by a tool that does not
/// take the guard (the Go tool's stale cleanup) is put back under the guard
/// if the worker is still claimable; a lock replaced by another holder's is
/// the worker lost.
pub struct FileHold<'a> {
    worker: PathBuf,
    probes: &'a Probes<'a>,
    claimed: Option<(Claimant, Claimed)>,
    wait: Option<WaitOptions>,
    watch: Option<Inotify>,
}

impl<'a> FileHold<'a> {
    /// Holds `worker`'s lock file; the worker must exist.
    pub fn new(worker: impl AsRef<Path>, probes: &'a Probes<'a>) -> Result<FileHold<'a>> {
        let dir = lock::Worker::open(worker.as_ref())?.dir;
        Ok(FileHold {
            worker: dir,
            probes,
            claimed: None,
            wait: None,
            watch: None,
        })
    }

    /// Waits for the worker (at most `timeout`; `None`: forever) instead
    /// of refusing at once.
    pub fn waiting(mut self, timeout: Option<Duration>) -> FileHold<'a> {
        self.wait = Some(WaitOptions {
            timeout,
            interrupt: None,
        });
        self
    }

    fn watch_runtime(&mut self) {
        let runtime = self.worker.join(lock::RUNTIME_DIR);
        self.watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .filter(|i| {
                i.add_watch(&runtime, crate::wait::wake::dir_events())
                    .is_ok()
            });
    }
}

impl Hold for FileHold<'_> {
    fn worker(&self) -> &Path {
        &self.worker
    }

    fn claim(&mut self, me: &Claimant, interrupt: &Interrupt) -> Result<Taken> {
        let opts = ClaimOptions::cancelled_by(interrupt.cancel.clone());
        let outcome = match &self.wait {
            None => lock::claim(&self.worker, me, opts, self.probes)?,
            Some(w) => {
                let w = w.clone().interrupted_by(interrupt.clone());
                crate::wait::claim_wait(&self.worker, me, opts, &w, self.probes)?.outcome
            }
        };
        match outcome {
            ClaimOutcome::Done(c) => {
                self.claimed = Some((me.clone(), *c));
                self.watch_runtime();
                Ok(Taken::Held { fence: None })
            }
            ClaimOutcome::Refused(j) => Ok(Taken::Refused(j)),
        }
    }

    fn period(&self) -> Option<Duration> {
        self.claimed.as_ref()?;
        Some(if self.watch.is_some() {
            NET_COVERED
        } else {
            NET_UNCOVERED
        })
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(|i| i.as_fd())
    }

    fn check(&mut self) -> Checked {
        let mut moved = false;
        if let Some(i) = &self.watch {
            while let Ok(events) = i.read_events() {
                if events.is_empty() {
                    break;
                }
                moved |= events.iter().any(|e| {
                    e.mask.intersects(
                        AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_IGNORED,
                    )
                });
            }
        }
        if moved {
            // `.runtime` itself went: watch whatever is at its path now.
            if let Some(i) = self.watch.take() {
                crate::wait::last_close::close_inotify(i.into());
            }
            self.watch_runtime();
        }
        let Some((me, claimed)) = &mut self.claimed else {
            return Checked::Held;
        };
        let j = match lock::judge(&self.worker, self.probes) {
            Ok(j) => j,
            // Cannot be read now: nothing to conclude; looked at again later.
            Err(_) => return Checked::Held,
        };
        if let Some(rec) = &j.record {
            if claimed.after.record.as_ref() == Some(rec) {
                return Checked::Held;
            }
            if holds(rec, j.owner, &Asker::from(&*me), Scope::Claim, self.probes) {
                // Refreshed by the command itself: still ours.
                claimed.after.record = Some(rec.clone());
                return Checked::Held;
            }
        }
        if !j.state.claimable() {
            return Checked::Lost(format!(
                "its lock was replaced by another holder's: {} ({})",
                j.state, j.reason
            ));
        }
        let what = format!(
            "its lock was {} while the command runs (a release, or a tool that ignores the guard)",
            if j.record.is_some() || j.state != crate::verdict::State::Free {
                "replaced"
            } else {
                "removed"
            }
        );
        match lock::claim(&self.worker, me, ClaimOptions::default(), self.probes) {
            Ok(ClaimOutcome::Done(c)) => {
                *claimed = *c;
                Checked::Restored(format!("{what}; put back (the worker was still free)"))
            }
            Ok(ClaimOutcome::Refused(j)) => Checked::Lost(format!(
                "{what}, and another holder claimed it: {} ({})",
                j.state, j.reason
            )),
            Err(e) => Checked::Lost(format!("{what}, and it could not be put back: {e}")),
        }
    }

    fn release(&mut self) -> Result<()> {
        if let Some(i) = self.watch.take() {
            crate::wait::last_close::close_inotify(i.into());
        }
        let Some(written) = self.claimed.take().and_then(|(_, c)| c.after.record) else {
            return Ok(());
        };
        match release_file(&self.worker, &written, self.probes) {
            // Someone else's lock now: the command's exit made ours stale
            // and a waiter took the worker (or it was taken while the
            // command ran, which was reported then). Nothing of ours to
            // remove.
            Err(Error::NotReleased { .. }) => Ok(()),
            r => r,
        }
    }
}

/// Removes the lock file if it still is the claim of `written` (the
/// command may have refreshed it).
pub(crate) fn release_file(
    worker: &Path,
    written: &crate::record::LockRecord,
    probes: &Probes,
) -> Result<()> {
    match lock::release_claim(worker, written, probes)? {
        lock::ReleaseOutcome::Done { .. } => Ok(()),
        lock::ReleaseOutcome::Refused(j) => Err(Error::NotReleased {
            path: j.worker_dir,
            state: j.state,
            reason: j.reason,
        }),
    }
}
