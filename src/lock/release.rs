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
    release_where(path.as_ref(), force, probes, &|rec, owner, before| {
        holds(rec, owner, who, Scope::ActFor, probes)
            && !crate::holder::gone_session_asks_for_live(who, before.session_alive)
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
    release_where(path.as_ref(), false, probes, &|rec, _, _| rec == written)
}

/// Removes the lock at `path` if it still is the claim of `written`
/// ([`LockRecord::same_claim`]), even if its process rewrote it since (a
/// refresh): what `run` does once its command has exited.
pub fn release_claim(
    path: impl AsRef<Path>,
    written: &LockRecord,
    probes: &Probes,
) -> Result<ReleaseOutcome> {
    release_where(path.as_ref(), false, probes, &|rec, _, _| {
        rec.same_claim(written)
    })
}

fn release_where(
    path: &Path,
    force: bool,
    probes: &Probes,
    is_mine: &dyn Fn(&LockRecord, Option<u32>, &Judgement) -> bool,
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
        let mut before = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
        if !force && before.state == State::Stale && before.session_alive.is_some() {
            // Removing a lock proven dead by its session: ask tmux again now
            // that the PID was seen dead (as claim does). A session-only
            // asker (`release --all` from a session-closed hook) would
            // otherwise remove a new namesake session's claim, made after
            // tmux was first asked.
            probes.sessions.refresh();
            before = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
        }
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
                if !force && !is_mine(rec, Some(snap.uid), &before) {
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

/// What `release --all` did under a root.
#[derive(Debug)]
pub struct ReleasedAll {
    /// Each worker found held by the asker, and how releasing it went (a
    /// lock that changed hands since the scan is refused, unchanged).
    pub workers: Vec<(PathBuf, Result<ReleaseOutcome>)>,
    /// Directories the scan could not read: locks there were not seen.
    pub unreadable: Vec<crate::doctor::Finding>,
}

/// Releases every worker under `root` that `who` holds, for a tmux
/// `session-closed` hook or an exiting spawner: the tree is scanned and
/// judged as `list` does, and each lock the asker holds (by the one holder
/// predicate) is released as [`release`] does, re-checked under its guard.
/// Locks of others are never touched.
pub fn release_all(
    root: impl AsRef<Path>,
    who: &Asker,
    opts: &crate::scan::ScanOptions,
    live: &crate::lock::LiveProbes,
) -> Result<ReleasedAll> {
    let progress = crate::scan::Progress::default();
    let report = crate::doctor::judge_tree(root, opts, &progress, live)?;
    let probes = live.probes();
    let workers = report
        .locks
        .iter()
        .filter(|j| j.standing(who, &probes) == crate::lock::Standing::Yours)
        .map(|j| {
            (
                j.worker_dir.clone(),
                release(&j.worker_dir, who, false, &probes),
            )
        })
        .collect();
    let unreadable = report
        .findings
        .into_iter()
        .filter(|f| f.kind == crate::doctor::FindingKind::ScanError)
        .collect();
    Ok(ReleasedAll {
        workers,
        unreadable,
    })
}
