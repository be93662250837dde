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
use std::time::{Duration, SystemTime};

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
    // Guards held for long (a live writer, or someone holding them on
    // purpose) cost this run at most FIX_GUARD_BUDGET in all.
    let deadline = std::time::Instant::now() + FIX_GUARD_BUDGET;
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
            Some(Repair::RemoveStale(snap)) => {
                remove_stale_within(&f.worker_dir, snap, probes, guard_wait(deadline))
            }
            Some(Repair::MoveAside(snap)) => {
                move_aside_within(&f.worker_dir, snap, guard_wait(deadline))
            }
            Some(Repair::RemoveTemp(t)) => remove_temp_within(
                &t.worker_dir,
                &t.path,
                || still_leftover(t, probes),
                guard_wait(deadline),
            ),
        };
        // A guard held by someone else: not this run's to fix.
        let outcome = match outcome {
            Err(crate::Error::GuardTimeout { secs, .. }) => Ok(FixOutcome::Skipped(format!(
                "its guard stayed held by another process ({secs} s waited)"
            ))),
            other => other,
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

/// How long one guard is waited for by `doctor --fix`.
const FIX_GUARD_WAIT: Duration = Duration::from_secs(5);
/// How long all guards of one `doctor --fix` are waited for, in all.
const FIX_GUARD_BUDGET: Duration = Duration::from_secs(30);

fn guard_wait(deadline: std::time::Instant) -> Duration {
    FIX_GUARD_WAIT.min(deadline.saturating_duration_since(std::time::Instant::now()))
}

/// Removes a lock judged stale: under the guard, re-read it, require the same
/// file with the same bytes, judge it again, and only if still `stale`
/// remove it (compare-and-delete).
fn remove_stale_within(
    worker_dir: &Path,
    judged: &Snapshot,
    probes: &Probes,
    wait: Duration,
) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter_within(&worker, false, wait, None)?;
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
fn move_aside_within(worker_dir: &Path, judged: &Snapshot, wait: Duration) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter_within(&worker, false, wait, None)?;
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
fn remove_temp_within(
    worker_dir: &Path,
    temp: &Path,
    still_leftover: impl Fn() -> bool,
    wait: Duration,
) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter_within(&worker, false, wait, None)?;
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
