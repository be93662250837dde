//! Where `run` holds its worker while the command runs: the lock file
//! ([`FileHold`]), or the fleet store (`crate::fleet::hold`, feature `etcd`),
//! which can also lose it while the command runs.

use crate::error::{Error, Result};
use crate::lock::{self, ClaimOptions, ClaimOutcome, Claimant, Claimed, Judgement, Probes};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
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
    /// Lost: why (deleted, taken over, lease expired, store unreachable for
    /// longer than the lease is known to last).
    Lost(String),
}

/// A place `run` holds a worker in.
pub trait Hold {
    /// The worker directory (exported as `AGENTLOCK_WORKER`).
    fn worker(&self) -> &Path;
    /// Claims the worker for `me` (the gated command). A wait for the
    /// guard gives up when `cancel` is set.
    fn claim(&mut self, me: &Claimant, cancel: Arc<AtomicBool>) -> Result<Taken>;
    /// How often [`Hold::check`] runs while the command runs (`None`: never).
    fn period(&self) -> Option<Duration> {
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

/// Holding a worker by its lock file.
pub struct FileHold<'a> {
    worker: PathBuf,
    probes: &'a Probes<'a>,
    claimed: Option<Claimed>,
}

impl<'a> FileHold<'a> {
    /// Holds `worker`'s lock file; the worker must exist.
    pub fn new(worker: impl AsRef<Path>, probes: &'a Probes<'a>) -> Result<FileHold<'a>> {
        let dir = lock::Worker::open(worker.as_ref())?.dir;
        Ok(FileHold {
            worker: dir,
            probes,
            claimed: None,
        })
    }
}

impl Hold for FileHold<'_> {
    fn worker(&self) -> &Path {
        &self.worker
    }

    fn claim(&mut self, me: &Claimant, cancel: Arc<AtomicBool>) -> Result<Taken> {
        let opts = ClaimOptions::cancelled_by(cancel);
        match lock::claim(&self.worker, me, opts, self.probes)? {
            ClaimOutcome::Done(c) => {
                self.claimed = Some(*c);
                Ok(Taken::Held { fence: None })
            }
            ClaimOutcome::Refused(j) => Ok(Taken::Refused(j)),
        }
    }

    fn release(&mut self) -> Result<()> {
        let Some(written) = self.claimed.take().and_then(|c| c.after.record) else {
            return Ok(());
        };
        release_file(&self.worker, &written, self.probes)
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
