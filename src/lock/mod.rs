//! Lock operations on one worker: inspect, claim, release, first-free.
//!
//! Every mutation holds an exclusive `flock` on
//! `<worker>/.runtime/agent.lock.flock` (the Go tool's guard file, never
//! deleted), publishes by writing a unique temp file, `fsync`, `rename` and a
//! directory `fsync`, and removes only after re-reading the file and finding
//! it unchanged (compare-and-delete). All file access goes through directory
//! file descriptors opened with `O_NOFOLLOW`, so a symlinked `.runtime` or
//! `agent.lock` is never followed.
//!
//! ```
//! use agentlock::lock::{self, Asker, ClaimAction, ClaimOptions, ClaimOutcome, Claimant};
//! use agentlock::lock::{LiveProbes, ReleaseAction, ReleaseOutcome};
//! use agentlock::verdict::State;
//!
//! let worker = tempfile::tempdir()?;
//! let live = LiveProbes::new(Default::default());
//! let probes = live.probes();
//!
//! // Claim for this process: the lock names it, and it is held.
//! let me = Claimant::this_process();
//! match lock::claim(&worker, &me, ClaimOptions::default(), &probes)? {
//!     ClaimOutcome::Done(done) => assert_eq!(done.action, ClaimAction::Claimed),
//!     ClaimOutcome::Refused(held) => panic!("held: {}", held.reason),
//! }
//! let judged = lock::judge(&worker, &probes)?;
//! assert_eq!(judged.state, State::Held);
//! assert_eq!(judged.record.unwrap().pid, me.pid);
//!
//! // Release it as the same holder: the worker is free again.
//! match lock::release(&worker, &Asker::this_process(), false, &probes)? {
//!     ReleaseOutcome::Done { action, .. } => assert_eq!(action, ReleaseAction::Released),
//!     ReleaseOutcome::Refused(held) => panic!("refused: {}", held.reason),
//! }
//! assert_eq!(lock::judge(&worker, &probes)?.state, State::Free);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod claim;
pub(crate) mod fs;
mod guard;
mod release;
mod resolve;
mod signal;

pub use claim::{
    ClaimAction, ClaimOptions, ClaimOutcome, Claimed, FirstFree, FleetTag, claim, claim_first_free,
};
pub use fs::{Found, Snapshot, Worker, not_a_worker};
pub use guard::Guard;
pub(crate) use guard::Guarded;
pub use release::{
    ReleaseAction, ReleaseOutcome, ReleasedAll, release, release_all, release_claim,
    release_written,
};

use crate::error::Result;
pub use crate::holder::{Asker, Claimant};
pub use crate::probe::{LiveProbes, Probes};
use crate::record::LockRecord;
use crate::verdict::{self, State};
use fs::{Runtime, open_runtime, read_lock};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `<worker>/.runtime`.
pub const RUNTIME_DIR: &str = ".runtime";
/// `<worker>/.runtime/agent.lock`.
pub const LOCK_FILE: &str = "agent.lock";
/// The mutation guard, shared with the Go tool.
pub const GUARD_FILE: &str = "agent.lock.flock";
/// Prefix of temp files: `agent.lock.tmp.<writer pid>.<random>` (ours) or
/// exactly `agent.lock.tmp` (the Go tool's).
pub const TEMP_PREFIX: &str = "agent.lock.tmp";
/// Prefix of corrupt files moved aside.
pub const CORRUPT_PREFIX: &str = "agent.lock.corrupt-";
/// How long a mutation waits for the guard before giving up.
pub const GUARD_TIMEOUT: Duration = Duration::from_secs(30);

/// One worker, judged: what `status`, `check` and the JSON output report.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The worker directory, canonical.
    pub worker_dir: PathBuf,
    /// Its `.runtime/agent.lock`.
    pub lock_path: PathBuf,
    /// The verdict.
    pub state: State,
    /// Why, in words (the same as printed).
    pub reason: String,
    /// The lock, when it is a valid record.
    pub record: Option<LockRecord>,
    /// Whether the holder process is alive: `None` when not known or not asked.
    pub pid_alive: Option<bool>,
    /// Whether the recorded session is alive: `None` when none is recorded or it cannot be told.
    pub session_alive: Option<bool>,
    /// Owner of the lock file: the only user the lock speaks for (a fleet
    /// value's recorded uid). `None` when there is no valid record.
    pub owner: Option<u32>,
}

/// Where an asker stands with a judged worker: what `check` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// The asker holds it (or acts for its holder).
    Yours,
    /// Nobody live holds it: `free`, `stale` or `corrupt`.
    Claimable,
    /// Someone else holds it, or it cannot be verified.
    Taken,
}

impl Judgement {
    /// Where `asker` stands with this worker, by the one holder predicate
    /// ([`crate::holder::holds`], acting-for scope).
    pub fn standing(&self, asker: &Asker, probes: &Probes) -> Standing {
        let yours = self.record.as_ref().is_some_and(|r| {
            crate::holder::holds(r, self.owner, asker, crate::holder::Scope::ActFor, probes)
        }) && !crate::holder::gone_session_asks_for_live(asker, self.session_alive);
        tracing::debug!(
            "{}: the asker (pid {}, session {}) {} the lock",
            crate::trust::escape(&self.worker_dir.to_string_lossy()),
            asker.pid.map_or_else(|| "none".into(), |p| p.to_string()),
            crate::trust::escape(asker.session.as_deref().unwrap_or("none")),
            if yours { "holds" } else { "does not hold" }
        );
        if yours {
            Standing::Yours
        } else if self.state.claimable() {
            Standing::Claimable
        } else {
            Standing::Taken
        }
    }

    /// The holder's command name (`/proc/PID/comm`), only when the verdict
    /// found the recorded process alive here and judged it the holder
    /// (`held` or `orphaned`), and the process is still provably the one
    /// that claimed once its name was read (a PID reused meanwhile names
    /// nothing). Written by the holder: escape it to print.
    pub fn holder_command(&self, probes: &Probes) -> Option<String> {
        if !matches!(self.state, State::Held | State::Orphaned) || self.pid_alive != Some(true) {
            return None;
        }
        let rec = self.record.as_ref()?;
        let name = probes.procs.comm(rec.pid)?;
        verdict::proven_claimer(rec, &probes.host, probes.procs).then_some(name)
    }

    fn new(worker: &Worker, state: State, reason: String) -> Judgement {
        Judgement::at(&worker.dir, &worker.lock_path(), state, reason)
    }

    /// A judgement of the worker at these paths.
    pub fn at(worker_dir: &Path, lock_path: &Path, state: State, reason: String) -> Judgement {
        Judgement {
            worker_dir: worker_dir.into(),
            lock_path: lock_path.into(),
            state,
            reason,
            record: None,
            pid_alive: None,
            session_alive: None,
            owner: None,
        }
    }
}

/// Judges what was found at `lock_path`.
pub fn judge_found(
    worker_dir: &Path,
    lock_path: &Path,
    found: &Found,
    probes: &Probes,
) -> Judgement {
    let at = |state, reason| Judgement::at(worker_dir, lock_path, state, reason);
    let judged = judge_what(found, probes, at);
    explain(&judged);
    judged
}

/// Says, as a debug event, what a worker was judged and why.
fn explain(j: &Judgement) {
    tracing::debug!(
        "{}: {}: {} (lock file {})",
        crate::trust::escape(&j.worker_dir.to_string_lossy()),
        j.state,
        crate::trust::escape(&j.reason),
        crate::trust::escape(&j.lock_path.to_string_lossy())
    );
}

fn judge_what(
    found: &Found,
    probes: &Probes,
    at: impl Fn(State, String) -> Judgement,
) -> Judgement {
    match found {
        Found::Absent => at(State::Free, "no lock file".into()),
        Found::Corrupt(reason, _) => at(State::Corrupt, reason.to_string()),
        Found::Unreadable(why) => at(State::Unverified, why.clone()),
        Found::Record(rec, snap) => {
            let v = verdict::judge(
                rec,
                Some(snap.uid),
                &probes.host,
                probes.procs,
                probes.sessions,
            );
            Judgement {
                record: Some(rec.clone()),
                pid_alive: v.pid_alive,
                session_alive: v.session_alive,
                owner: Some(snap.uid),
                ..at(v.state, v.reason)
            }
        }
    }
}

/// A worker read but not judged yet: either already decided (no lock, an
/// odd `.runtime`), or what is at its lock path.
enum ReadWorker {
    Decided(Judgement),
    Found(Worker, Found),
}

fn read_worker(path: &Path) -> Result<ReadWorker> {
    let worker = Worker::open(path)?;
    let decided = |state, why| {
        let judged = Judgement::new(&worker, state, why);
        explain(&judged);
        Ok(ReadWorker::Decided(judged))
    };
    match open_runtime(&worker, false)? {
        Runtime::Missing => decided(State::Free, "no .runtime directory".into()),
        Runtime::Unsafe(why) => decided(State::Corrupt, why),
        Runtime::Unreadable(why) => decided(State::Unverified, why),
        Runtime::Dir(rt) => {
            let found = read_lock(&rt, &worker.lock_path())?;
            Ok(ReadWorker::Found(worker, found))
        }
    }
}

fn judge_read(read: ReadWorker, probes: &Probes) -> Judgement {
    match read {
        ReadWorker::Decided(ins) => ins,
        ReadWorker::Found(worker, found) => {
            judge_found(&worker.dir, &worker.lock_path(), &found, probes)
        }
    }
}

/// Read-only: judges a worker. Creates and changes nothing.
pub fn judge(path: impl AsRef<Path>, probes: &Probes) -> Result<Judgement> {
    Ok(judge_read(read_worker(path.as_ref())?, probes))
}

/// Read-only: judges several workers, asking the tmux servers their locks
/// record all at once (each server once) before judging any.
pub fn judge_many<P: AsRef<Path>>(
    paths: &[P],
    tmux: &crate::probe::tmux::Tmux,
    probes: &Probes,
) -> Vec<(PathBuf, Result<Judgement>)> {
    let read: Vec<(PathBuf, Result<ReadWorker>)> = paths
        .iter()
        .map(|p| (p.as_ref().to_path_buf(), read_worker(p.as_ref())))
        .collect();
    tmux.ensure(read.iter().filter_map(|(_, r)| match r {
        Ok(ReadWorker::Found(_, Found::Record(rec, _))) => {
            rec.tmux_socket.as_deref().map(Path::new)
        }
        _ => None,
    }));
    read.into_iter()
        .map(|(p, r)| (p, r.map(|r| judge_read(r, probes))))
        .collect()
}

#[cfg(test)]
mod tests;
