//! `doctor --fix`: the guarded repairs. Each re-reads under the worker's
//! guard first: a stale lock is removed only if it is the same file with the
//! same bytes and still stale (compare-and-delete), a corrupt one is moved
//! aside (never deleted), a temp file is removed only if its writer is still
//! dead.

use super::{Fixed, Repair, Report, temp_finding};
use crate::error::Result;
use crate::lock::fs::{Found, Snapshot, Worker};
use crate::lock::{Guarded, judge_found};
use crate::probe::Probes;
use crate::scan::TempFile;
use crate::verdict::State;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn still_leftover(t: &TempFile, probes: &Probes) -> bool {
    temp_finding(t, probes, SystemTime::now()).is_some()
}

/// `--fix`: applies every fixable finding, each re-checked under its guard.
/// Fixed findings leave `findings` and enter `fixed`; a finding whose file has
/// vanished meanwhile is dropped; a repair skipped because things changed
/// stays a finding, with the reason appended. Errors are returned and their
/// findings kept.
pub fn fix(report: &mut Report, probes: &Probes) -> Vec<crate::Error> {
    let mut errors = Vec::new();
    // The scan's tmux answer may predate its PID checks: a session created by
    // a spawner that then exited would be missed. Ask again, after them.
    if report
        .findings
        .iter()
        .any(|f| matches!(f.repair, Some(Repair::RemoveStale(_))))
    {
        probes.sessions.refresh();
    }
    let mut left = Vec::new();
    for mut f in std::mem::take(&mut report.findings) {
        let outcome = match &f.repair {
            None => {
                left.push(f);
                continue;
            }
            Some(Repair::RemoveStale(snap)) => remove_stale(&f.worker_dir, snap, probes),
            Some(Repair::MoveAside(snap)) => move_corrupt_aside(&f.worker_dir, snap),
            Some(Repair::RemoveTemp(t)) => {
                remove_temp(&t.worker_dir, &t.path, || still_leftover(t, probes))
            }
        };
        match outcome {
            Ok(FixOutcome::Done(path)) => report.fixed.push(Fixed {
                kind: f.kind,
                worker_dir: f.worker_dir.clone(),
                action: if matches!(f.repair, Some(Repair::MoveAside(_))) {
                    "moved-aside"
                } else {
                    "removed"
                },
                path,
            }),
            Ok(FixOutcome::Vanished) => {}
            Ok(FixOutcome::Skipped(why)) => {
                f.message = format!("{} (fix skipped: {why})", f.message);
                f.fixable = false;
                left.push(f);
            }
            Err(e) => {
                f.message = format!("{} (fix failed: {e})", f.message);
                errors.push(e);
                left.push(f);
            }
        }
    }
    report.findings = left;
    errors
}

/// What a guarded repair by `doctor --fix` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixOutcome {
    /// Done: the path removed, or where a corrupt file now is.
    Done(PathBuf),
    /// Not done, and why: the file or its verdict changed since the scan.
    Skipped(String),
    /// Nothing to do: the file is no longer there (released, or a writer
    /// finished its publish).
    Vanished,
}

const CHANGED: &str = "the lock changed since the scan";

/// Removes a lock judged stale: under the guard, re-read it, require the same
/// file with the same bytes, judge it again, and only if still `stale`
/// remove it (compare-and-delete).
pub fn remove_stale(worker_dir: &Path, judged: &Snapshot, probes: &Probes) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    let found = g.read()?;
    let snap = match &found {
        Found::Record(_, snap) => snap,
        Found::Absent => return Ok(FixOutcome::Vanished),
        _ => return Ok(FixOutcome::Skipped(CHANGED.into())),
    };
    if snap != judged {
        return Ok(FixOutcome::Skipped(CHANGED.into()));
    }
    let now = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
    if now.state != State::Stale {
        return Ok(FixOutcome::Skipped(format!(
            "no longer stale: {}",
            now.reason
        )));
    }
    Ok(if g.remove_if_unchanged(snap)? {
        FixOutcome::Done(worker.lock_path())
    } else {
        FixOutcome::Skipped(CHANGED.into())
    })
}

/// Moves a corrupt lock aside under the guard, if it is unchanged since judged.
pub fn move_corrupt_aside(worker_dir: &Path, judged: &Snapshot) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    // Another doctor (or a claim) got there first: nothing left to do.
    if matches!(g.read()?, Found::Absent) {
        return Ok(FixOutcome::Vanished);
    }
    Ok(match g.move_aside(judged)? {
        Some(to) => FixOutcome::Done(to),
        None => FixOutcome::Skipped(CHANGED.into()),
    })
}

/// Removes a lock writer's leftover temp file under the guard (a live writer
/// holds the guard while its temp file exists), if `still_leftover` confirms.
pub fn remove_temp(
    worker_dir: &Path,
    temp: &Path,
    still_leftover: impl Fn() -> bool,
) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    let Some(name) = temp.file_name() else {
        return Ok(FixOutcome::Skipped("not a file name".into()));
    };
    // Removed meanwhile (another doctor, or its writer finished): not a
    // finding any more, whatever its writer is.
    if std::fs::symlink_metadata(temp).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(FixOutcome::Vanished);
    }
    if !still_leftover() {
        return Ok(FixOutcome::Skipped(
            "its writer is alive or it is recent".into(),
        ));
    }
    Ok(if g.remove_entry(name, temp)? {
        FixOutcome::Done(temp.into())
    } else {
        FixOutcome::Vanished
    })
}
