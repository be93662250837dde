//! [`ClaimGuard`]: a worker held by this program until the guard is
//! dropped. A program that claims and then returns early (`?`) gives the
//! worker back instead of leaving it held.

use crate::error::Result;
use crate::lock::{ClaimAction, Claimed, Probes};
use crate::record::LockRecord;
use std::path::Path;

/// A claimed worker, released when dropped (or by [`ClaimGuard::release`],
/// which reports how that went). Made by [`crate::Agentlock::lock`] and
/// [`crate::Agentlock::lock_wait`].
///
/// Release is compare-and-delete: if the lock is no longer the one this
/// claim wrote (someone took the worker over), it is left alone. A guard of
/// a worker the holder already held (a nested `lock`) releases nothing.
#[must_use = "the worker is released as soon as the guard is dropped"]
pub struct ClaimGuard<'a> {
    probes: Probes<'a>,
    claimed: Box<Claimed>,
    written: Option<LockRecord>,
}

impl<'a> ClaimGuard<'a> {
    /// A guard for `claimed`. A claim that only refreshed a lock the holder
    /// already had (a nested `lock`) releases nothing: the worker stays
    /// held until the claim that took it is released.
    pub(crate) fn new(claimed: Box<Claimed>, probes: Probes<'a>) -> ClaimGuard<'a> {
        let written = match claimed.action {
            ClaimAction::Refreshed => None,
            _ => claimed.after.record.clone(),
        };
        ClaimGuard {
            probes,
            claimed,
            written,
        }
    }

    /// The worker directory.
    pub fn worker(&self) -> &Path {
        &self.claimed.after.worker_dir
    }

    /// What the claim did and found.
    pub fn claimed(&self) -> &Claimed {
        &self.claimed
    }

    /// Releases the worker now; an error says why it could not be.
    pub fn release(mut self) -> Result<()> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<()> {
        match self.written.take() {
            Some(rec) => {
                crate::run::release_file(&self.claimed.after.worker_dir, &rec, &self.probes)
            }
            None => Ok(()),
        }
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl std::fmt::Debug for ClaimGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimGuard")
            .field("worker", &self.claimed.after.worker_dir)
            .field("held", &self.written.is_some())
            .finish()
    }
}
