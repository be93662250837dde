//! `claim` and `claim --first-free`: judge under the guard, then publish,
//! refresh, replace or refuse.

use super::fs::{Found, Snapshot, Worker};
use super::guard::Guarded;
use super::signal::signal_previous;
use super::{Judgement, judge_found};
use crate::error::{Error, Result};
use crate::holder::{Asker, Claimant, Scope, holds};
use crate::probe::{Existence, Probes};
use crate::record::LockRecord;
use crate::verdict::State;
use chrono::{DateTime, FixedOffset};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Options of `claim`.
#[derive(Debug, Clone, Default)]
pub struct ClaimOptions {
    /// Take over a lock held by someone else.
    pub force: bool,
    /// With `force`: SIGTERM the previous holder first, when that is safe.
    pub signal_other: bool,
    /// Take only a `free`, `stale` or `corrupt` worker: a worker the
    /// claimant already holds is not free (`--first-free`).
    pub only_free: bool,
    /// Give up waiting for the guard once this is set (a signal arrived).
    pub cancel: Option<Arc<AtomicBool>>,
    /// A claim on the fleet store: what the lock file it writes records of
    /// the store record it mirrors.
    pub mirror: Option<FleetTag>,
    /// Wait at most this long for the guard (default
    /// [`super::GUARD_TIMEOUT`]); a wait for the worker gives it only the
    /// time it has left.
    pub guard_timeout: Option<std::time::Duration>,
}

/// What a lock file written for a claim on the fleet store records of it
/// (`fleet_key`, `fleet_lease`, `fleet_dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetTag {
    /// The store key.
    pub key: String,
    /// The keeper lease the store record hangs on.
    pub lease: Option<u64>,
    /// The worker directory, as resolved on this host.
    pub dir: String,
}

impl ClaimOptions {
    /// The default options, giving up the wait for the guard once `cancel`
    /// is set.
    pub fn cancelled_by(cancel: Arc<AtomicBool>) -> ClaimOptions {
        ClaimOptions {
            cancel: Some(cancel),
            ..ClaimOptions::default()
        }
    }
}

/// What a successful claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction {
    /// The worker was free.
    Claimed,
    /// The same holder already had it; the lock was rewritten.
    Refreshed,
    /// A stale lock was replaced.
    ReplacedStale,
    /// A corrupt file was moved aside, then the worker claimed.
    ReplacedCorrupt,
    /// `--force`: a lock held by someone else was taken over.
    TookOver,
}

impl ClaimAction {
    /// The kebab-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimAction::Claimed => "claimed",
            ClaimAction::Refreshed => "refreshed",
            ClaimAction::ReplacedStale => "replaced-stale",
            ClaimAction::ReplacedCorrupt => "replaced-corrupt",
            ClaimAction::TookOver => "took-over",
        }
    }
}

/// A successful claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// What was done.
    pub action: ClaimAction,
    /// The worker as it was judged under the guard, before the claim.
    pub before: Judgement,
    /// The lock now in place.
    pub after: Judgement,
    /// Where a corrupt file was moved.
    pub moved_aside: Option<PathBuf>,
    /// With `--signal-other`: the one-line outcome.
    pub signal: Option<String>,
}

/// The result of a claim.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// Claimed: what was done, before and after.
    Done(Box<Claimed>),
    /// Held by someone else (or cannot be verified): nothing was changed.
    Refused(Box<Judgement>),
}

fn now() -> DateTime<FixedOffset> {
    crate::record::local_now()
}

/// Builds the record a claimant writes. A refresh by a claimant that names
/// no session keeps the session (and server) already recorded.
fn record_for(
    me: &Claimant,
    start: Option<u64>,
    previous: Option<&LockRecord>,
    mirror: Option<&FleetTag>,
    probes: &Probes,
) -> LockRecord {
    let host = &probes.host;
    let (session, socket) = match (&me.session, previous) {
        (Some(s), _) => (
            Some(s.clone()),
            me.tmux_socket
                .as_deref()
                .and_then(Path::to_str)
                .map(str::to_string),
        ),
        (None, Some(prev)) => (prev.session_id.clone(), prev.tmux_socket.clone()),
        (None, None) => (None, None),
    };
    LockRecord {
        pid: me.pid,
        acquired_at: Some(now()),
        session_id: session.filter(|s| !s.is_empty()),
        hostname: Some(host.hostname.clone()).filter(|h| !h.is_empty()),
        pid_start: start,
        boot_id: host.boot_id.clone(),
        uid: Some(probes.procs.owner_uid(me.pid).unwrap_or(host.uid)),
        tmux_socket: socket,
        pid_ns: host.pid_ns,
        mnt_ns: host.mnt_ns,
        fleet_key: mirror.map(|m| m.key.clone()),
        fleet_lease: mirror.and_then(|m| m.lease),
        fleet_dir: mirror.map(|m| m.dir.clone()),
    }
}

/// Whether the claimant still runs, the same process (start time) as
/// checked before the claim.
pub(crate) fn claimant_lives(me: &Claimant, start: Option<u64>, probes: &Probes) -> bool {
    probes.procs.existence(me.pid) == Existence::Alive
        && (start.is_none() || probes.procs.start_time(me.pid) == start)
}

/// Checks a claimant PID: it must be a live process.
pub(crate) fn check_claimant(me: &Claimant, probes: &Probes) -> Result<Option<u64>> {
    if me.pid <= 0 {
        return Err(Error::BadPid {
            pid: me.pid.into(),
            why: "not a positive process id".into(),
        });
    }
    match probes.procs.existence(me.pid) {
        Existence::Alive => Ok(probes.procs.start_time(me.pid)),
        _ => Err(Error::BadPid {
            pid: me.pid.into(),
            why: "no such running process; a lock must name a live holder".into(),
        }),
    }
}

/// Claims a worker.
pub fn claim(
    path: impl AsRef<Path>,
    me: &Claimant,
    opts: ClaimOptions,
    probes: &Probes,
) -> Result<ClaimOutcome> {
    let path = path.as_ref();
    let my_start = check_claimant(me, probes)?;
    claim_as(path, me, my_start, &opts, probes)
}

/// `claim` for a claimant already checked, whose start time is `my_start`.
pub(crate) fn claim_as(
    path: &Path,
    me: &Claimant,
    my_start: Option<u64>,
    opts: &ClaimOptions,
    probes: &Probes,
) -> Result<ClaimOutcome> {
    let worker = Worker::open(path)?;
    let limit = opts.guard_timeout.unwrap_or(super::GUARD_TIMEOUT);
    let g = Guarded::enter_within(&worker, true, limit, opts.cancel.as_deref())?;
    let found = g.read()?;
    let mut before = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
    if before.state == State::Stale && before.session_alive.is_some() {
        // Replacing: ask tmux again now that the PID was seen dead.
        probes.sessions.refresh();
        before = judge_found(&worker.dir, &worker.lock_path(), &found, probes);
    }
    let mut moved_aside = None;
    let mut signal = None;
    let mine = |rec: &LockRecord, snap: &Snapshot| {
        holds(rec, Some(snap.uid), &Asker::from(me), Scope::Claim, probes)
    };
    let action = match &found {
        Found::Absent => ClaimAction::Claimed,
        Found::Record(rec, snap) if mine(rec, snap) => {
            if opts.only_free {
                before.reason = format!("already yours: {}", before.reason);
                return Ok(ClaimOutcome::Refused(Box::new(before)));
            }
            ClaimAction::Refreshed
        }
        Found::Corrupt(_, None) => {
            return Err(Error::UnsafeLock {
                path: worker.lock_path(),
                why: format!("{}; not followed, not replaced", before.reason),
            });
        }
        Found::Corrupt(_, Some(snap)) => {
            moved_aside = g.move_aside(snap)?;
            if moved_aside.is_none() {
                // Changed under us by a tool that ignores the guard: judge again.
                return Err(Error::LockChanging {
                    path: worker.lock_path(),
                });
            }
            ClaimAction::ReplacedCorrupt
        }
        Found::Record(..) if before.state == State::Stale => ClaimAction::ReplacedStale,
        Found::Record(rec, snap) if opts.force => {
            if opts.signal_other {
                let runtime = std::fs::symlink_metadata(worker.runtime_path())
                    .ok()
                    .map(|m| (m.uid(), m.mode()));
                signal = Some(signal_previous(rec, Some(snap.uid), runtime, probes));
            }
            ClaimAction::TookOver
        }
        Found::Unreadable(_) if opts.force => ClaimAction::TookOver,
        Found::Record(..) | Found::Unreadable(_) => {
            return Ok(ClaimOutcome::Refused(Box::new(before)));
        }
    };
    if opts.signal_other && signal.is_none() {
        // Said every time it was asked for: nobody was signalled, and why.
        signal = Some(match &found {
            Found::Record(rec, _) => format!(
                "did not signal pid {}: the lock was {} ({})",
                rec.pid, before.state, before.reason
            ),
            _ => format!(
                "did not signal: no holder to signal (the worker was {})",
                before.state
            ),
        });
    }
    let previous = match (&found, action) {
        (Found::Record(rec, _), ClaimAction::Refreshed) => Some(rec),
        _ => None,
    };
    let rec = record_for(me, my_start, previous, opts.mirror.as_ref(), probes);
    g.publish(&rec)?;
    // The claimant exited while this claim was made (a spawner killed
    // mid-claim): a lock naming it would hold nothing. Take it back, still
    // under the guard, and fail: the lock that was there before is put
    // back (a refresh or a takeover must not free a worker whose session
    // lives on), or the worker is left free.
    if !claimant_lives(me, my_start, probes) {
        if let Found::Record(now, snap) = g.read()?
            && now == rec
        {
            match &found {
                Found::Record(before, _) => g.publish(before)?,
                _ => {
                    g.remove_if_unchanged(&snap)?;
                }
            }
        }
        return Err(Error::BadPid {
            pid: me.pid.into(),
            why: "the claimant exited before its claim was published; nothing is held".into(),
        });
    }
    let after = Judgement {
        record: Some(rec),
        pid_alive: Some(true),
        session_alive: None,
        ..Judgement::new(&worker, State::Held, format!("claimed by pid {}", me.pid))
    };
    Ok(ClaimOutcome::Done(Box::new(Claimed {
        action,
        before,
        after,
        moved_aside,
        signal,
    })))
}

/// The result of `claim --first-free`.
#[derive(Debug)]
pub struct FirstFree {
    /// Index into the given workers and the claim, if one was claimed.
    pub claimed: Option<(usize, Box<Claimed>)>,
    /// Each worker tried before it (or all, if none was claimed).
    pub tried: Vec<(PathBuf, Result<Judgement>)>,
}

impl FirstFree {
    /// True when nothing was claimed because every worker failed with an
    /// error (none was even judged): an error, not a "no".
    pub fn all_failed(&self) -> bool {
        self.claimed.is_none()
            && !self.tried.is_empty()
            && self.tried.iter().all(|(_, r)| r.is_err())
    }
}

/// Claims the first worker, in order, that is `free`, `stale` or `corrupt`.
pub fn claim_first_free<P: AsRef<Path>>(
    paths: &[P],
    me: &Claimant,
    probes: &Probes,
) -> Result<FirstFree> {
    let my_start = check_claimant(me, probes)?;
    let mut tried = Vec::new();
    let opts = ClaimOptions {
        only_free: true,
        ..ClaimOptions::default()
    };
    for (i, p) in paths.iter().enumerate() {
        let p = p.as_ref();
        match claim_as(p, me, my_start, &opts, probes) {
            Ok(ClaimOutcome::Done(c)) => {
                return Ok(FirstFree {
                    claimed: Some((i, c)),
                    tried,
                });
            }
            Ok(ClaimOutcome::Refused(ins)) => tried.push((p.into(), Ok(*ins))),
            Err(e) => tried.push((p.into(), Err(e))),
        }
    }
    Ok(FirstFree {
        claimed: None,
        tried,
    })
}
