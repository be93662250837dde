//! `release`: remove a lock the asker holds (or any, with `--force`), by
//! compare-and-delete under the guard; a corrupt file is moved aside.

use super::fs::{Found, Runtime, Worker, open_runtime};
use super::guard::Guarded;
use super::{Judgement, judge_found};
use crate::error::{Error, Result};
use crate::holder::{Asker, Scope, holds};
use crate::probe::Probes;
use crate::record::LockRecord;
use crate::verdict::State;
use std::path::{Path, PathBuf};

/// What `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    /// The asker's (or, with force, anyone's) lock was removed.
    Released,
    /// There was no lock.
    AlreadyFree,
    /// `--force` on a corrupt file: moved aside, not deleted.
    MovedAside,
}

impl ReleaseAction {
    /// The kebab-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseAction::Released => "released",
            ReleaseAction::AlreadyFree => "already-free",
            ReleaseAction::MovedAside => "moved-aside",
        }
    }
}

/// The result of a release.
#[derive(Debug, Clone)]
pub enum ReleaseOutcome {
    /// Done.
    Done {
        /// What was done.
        action: ReleaseAction,
        /// The worker as judged under the guard, before.
        before: Judgement,
        /// Where a corrupt file was moved.
        moved_to: Option<PathBuf>,
    },
    /// Held by someone else (or corrupt, without `--force`): nothing changed.
    Refused(Judgement),
}

/// Releases a worker.
pub fn release(
    path: impl AsRef<Path>,
    who: &Asker,
    force: bool,
    probes: &Probes,
) -> Result<ReleaseOutcome> {
    release_where(path.as_ref(), force, probes, &|rec, owner| {
        holds(rec, owner, who, Scope::ActFor, probes)
    })
}

/// Releases the very lock `written` that this process published (`run`,
/// once its command has exited): removed only while the file still holds
/// exactly that record.
pub fn release_written(
    path: impl AsRef<Path>,
    written: &LockRecord,
    probes: &Probes,
) -> Result<ReleaseOutcome> {
    release_where(path.as_ref(), false, probes, &|rec, _| rec == written)
}

/// Removes the lock at `path` if it still is the claim of `written`
/// ([`LockRecord::same_claim`]), even if its process rewrote it since (a
/// refresh): what `run` does once its command has exited.
pub fn release_claim(
    path: impl AsRef<Path>,
    written: &LockRecord,
    probes: &Probes,
) -> Result<ReleaseOutcome> {
    release_where(path.as_ref(), false, probes, &|rec, _| {
        rec.same_claim(written)
    })
}

fn release_where(
    path: &Path,
    force: bool,
    probes: &Probes,
    is_mine: &dyn Fn(&LockRecord, Option<u32>) -> bool,
) -> Result<ReleaseOutcome> {
    let worker = Worker::open(path)?;
    // A worker without .runtime is free: nothing to create, nothing to guard.
    if let Runtime::Missing = open_runtime(&worker, false)? {
        return Ok(ReleaseOutcome::Done {
            action: ReleaseAction::AlreadyFree,
            before: Judgement::new(&worker, State::Free, "no .runtime directory".into()),
            moved_to: None,
        });
    }
    let g = Guarded::enter(&worker, false)?;
    // A tool that ignores the guard may change the file between our read and
    // our compare; judge again then (bounded).
    for _ in 0..5 {
        let found = g.read()?;
        let before = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
        match &found {
            Found::Absent => {
                return Ok(ReleaseOutcome::Done {
                    action: ReleaseAction::AlreadyFree,
                    before,
                    moved_to: None,
                });
            }
            Found::Unreadable(_) => return Ok(ReleaseOutcome::Refused(before)),
            Found::Corrupt(_, None) => {
                return Err(Error::UnsafeLock {
                    path: worker.lock_path(),
                    why: format!("{}; not followed, not removed", before.reason),
                });
            }
            Found::Corrupt(_, Some(snap)) => {
                if !force {
                    return Ok(ReleaseOutcome::Refused(before));
                }
                if let Some(to) = g.move_aside(snap)? {
                    return Ok(ReleaseOutcome::Done {
                        action: ReleaseAction::MovedAside,
                        before,
                        moved_to: Some(to),
                    });
                }
            }
            Found::Record(rec, snap) => {
                if !force && !is_mine(rec, Some(snap.uid)) {
                    return Ok(ReleaseOutcome::Refused(before));
                }
                if g.remove_if_unchanged(snap)? {
                    return Ok(ReleaseOutcome::Done {
                        action: ReleaseAction::Released,
                        before,
                        moved_to: None,
                    });
                }
            }
        }
    }
    Err(Error::LockChanging {
        path: worker.lock_path(),
    })
}
