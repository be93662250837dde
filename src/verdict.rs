//! The verdict: which of the seven states a worker is in, and why.
//!
//! The rule that matters most: a lock is `stale` only when its process is
//! proven dead **and** its tmux session is proven gone (or none was recorded).
//! Whenever a probe cannot answer, the state is `unverified`, never `stale`.

use crate::probe::tmux::{SessionKind, SessionProbe};
use crate::probe::{Existence, HostInfo, ProcessProbe, SessionStatus};
use crate::record::LockRecord;
use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// Clock slack allowed when comparing a lock's `acquired_at` with a process
/// start or the boot time. The wall clock is stepped (NTP, a resumed VM) and
/// the boot time is recomputed from it, so a live holder's start can seem
/// later than its lock by as much as the step. A minute covers common steps;
/// a PID reused within a minute of its claim is only not *proven* reused
/// (judged alive: the safe side).
pub const CLOCK_SLACK: chrono::Duration = chrono::Duration::seconds(60);

/// State of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No lock: claimable.
    Free,
    /// The holder process is alive.
    Held,
    /// The process is gone but its tmux session lives on: the agent lives on.
    HeldBySession,
    /// The process is alive but its session is gone.
    Orphaned,
    /// Both process and session are provably gone: claimable.
    Stale,
    /// Cannot be told (another host, PID namespace or user; tmux unreachable; permission denied): nothing is removed.
    Unverified,
    /// Not a valid lock: claimable, moved aside first.
    Corrupt,
}

impl State {
    /// The name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Held => "held",
            State::HeldBySession => "held-by-session",
            State::Orphaned => "orphaned",
            State::Stale => "stale",
            State::Unverified => "unverified",
            State::Corrupt => "corrupt",
        }
    }

    /// States a plain `claim` may take without `--force`.
    pub fn claimable(self) -> bool {
        matches!(self, State::Free | State::Stale | State::Corrupt)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A judged lock: the state, one human line of why, and what each probe said
/// (`None`: not asked, or could not tell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The state.
    pub state: State,
    /// Why, in words.
    pub reason: String,
    /// Whether the process is alive: `None` when not known.
    pub pid_alive: Option<bool>,
    /// Whether the session is alive: `None` when none is recorded or it cannot be told.
    pub session_alive: Option<bool>,
}

/// What the process probes say of the recorded PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidStatus {
    /// The process is alive (and is the one that claimed, as far as can be proven).
    Alive,
    /// Proven dead; the text says how (exited, zombie, reused, reboot).
    Dead(String),
    /// Cannot be told, and why.
    Unknown(String),
}

/// "pane %3", "session $1" or "session gt-max".
pub fn describe_session(id: &str) -> String {
    match SessionKind::of(id) {
        SessionKind::Pane => format!("pane {id}"),
        _ => format!("session {id}"),
    }
}

/// Inode of the initial PID namespace: the kernel's fixed `PROC_PID_INIT_INO`.
pub const INIT_PID_NS: u64 = 4026531836;

/// Why a lock cannot be judged from here (another host, another PID
/// namespace), or `None` when its PID and session mean something here. A
/// lock that records no PID namespace (the Go tool's) was written in an
/// unknown one: only a checker in the initial namespace, which sees every
/// process, can judge its PID.
pub fn foreign(rec: &LockRecord, host: &HostInfo) -> Option<String> {
    if !host.is_local(rec.hostname.as_deref()) {
        return Some(format!(
            "written on host {}, this is {}: its process and session cannot be checked from here",
            rec.hostname.as_deref().unwrap_or("?"),
            host.hostname
        ));
    }
    match (rec.pid_ns, host.pid_ns) {
        (Some(theirs), Some(ours)) if theirs != ours => Some(format!(
            "written in PID namespace {theirs}, this is {ours}: pid {} means nothing here",
            rec.pid
        )),
        (Some(theirs), None) => Some(format!(
            "written in PID namespace {theirs}, and this process cannot read its own"
        )),
        (None, ours) if ours != Some(INIT_PID_NS) => Some(format!(
            "the lock records no PID namespace and this checker is not in the initial one: pid {} may be a process it cannot see",
            rec.pid
        )),
        _ => None,
    }
}

fn utc(t: &DateTime<FixedOffset>) -> DateTime<Utc> {
    t.with_timezone(&Utc)
}

/// How much later than `acquired_at` a process may seem to have started and
/// still be the claimer: start times are in clock ticks (10 ms) after a
/// boot time known to the nanosecond.
pub const ASKER_SLACK: chrono::Duration = chrono::Duration::milliseconds(20);

/// Whether the live process `pid` is provably the one that claimed, as an
/// asker must be: by its recorded start time, or, for a lock without one
/// (the Go tool's), by having started before the lock was acquired. The
/// clock slack that keeps a lock alive does not make a later process its
/// holder.
pub fn proven_claimer(rec: &LockRecord, host: &HostInfo, procs: &dyn ProcessProbe) -> bool {
    match (rec.pid_start, procs.start_time(rec.pid)) {
        (Some(recorded), Some(actual)) => recorded == actual,
        (None, Some(actual)) => match (rec.acquired_at.as_ref(), host.started_at(actual)) {
            (Some(acq), Some(started)) => started <= utc(acq) + ASKER_SLACK,
            _ => false,
        },
        (_, None) => false,
    }
}

/// Judges the recorded PID on this host, including PID reuse and reboots:
/// by `pid_start`/`boot_id` where the record has them, else (the Go tool's
/// locks) by a process that started after `acquired_at`, or an
/// `acquired_at` before this boot.
pub fn pid_status(rec: &LockRecord, host: &HostInfo, procs: &dyn ProcessProbe) -> PidStatus {
    let pid = rec.pid;
    let acquired_before_boot = |slack: chrono::Duration| matches!((rec.acquired_at.as_ref(), host.boot_time), (Some(acq), Some(boot)) if utc(acq) + slack < boot);
    match (rec.boot_id.as_deref(), host.boot_id.as_deref()) {
        // Another boot id with this hostname: a reboot only when the lock
        // predates this boot; otherwise another machine of the same name (a
        // clone) wrote it, and its PID means nothing here.
        (Some(then), Some(now)) if then != now => {
            return if acquired_before_boot(CLOCK_SLACK) {
                PidStatus::Dead(format!(
                    "pid {pid} died: the host rebooted since the lock was written"
                ))
            } else {
                PidStatus::Unknown(format!(
                    "the lock names boot {then} but this host booted as {now} before it was acquired: another machine with this hostname (a clone) may have written it"
                ))
            };
        }
        (None, _) if acquired_before_boot(CLOCK_SLACK) => {
            return PidStatus::Dead(format!(
                "pid {pid} died: the lock was acquired before this host booted"
            ));
        }
        _ => {}
    }
    match procs.existence(pid) {
        Existence::Gone => PidStatus::Dead(format!("pid {pid} has exited")),
        Existence::Zombie => PidStatus::Dead(format!("pid {pid} has exited (zombie)")),
        Existence::Unknown(why) => PidStatus::Unknown(why),
        Existence::Alive => match (rec.pid_start, procs.start_time(pid)) {
            (Some(recorded), Some(actual)) if recorded != actual => PidStatus::Dead(format!(
                "pid {pid} has exited and was reused by another process (start time {actual}, recorded {recorded})"
            )),
            (None, Some(actual)) => match (rec.acquired_at.as_ref(), host.started_at(actual)) {
                (Some(acq), Some(started)) if started > utc(acq) + CLOCK_SLACK => {
                    PidStatus::Dead(format!(
                        "pid {pid} has exited and was reused: the process now there started at {}, after the lock was acquired",
                        started.format("%Y-%m-%d %H:%M:%S UTC")
                    ))
                }
                _ => PidStatus::Alive,
            },
            _ => PidStatus::Alive,
        },
    }
}

/// Whose tmux servers hold the recorded session: `speaker`'s, the user the
/// lock speaks for ([`crate::trust::speaker`]). A recorded server is asked,
/// but only its owner's answer can prove the session gone; and from another
/// mount namespace than the recorder's (a sandbox's private `/tmp`), tmux
/// servers seen here prove nothing absent.
fn session_status(
    rec: &LockRecord,
    id: &str,
    speaker: Option<u32>,
    host: &HostInfo,
    sessions: &dyn SessionProbe,
) -> SessionStatus {
    let status = if let Some(socket) = rec.tmux_socket.as_deref() {
        sessions.session_status(id, Some(Path::new(socket)), speaker)
    } else {
        match speaker {
            Some(uid) if uid != host.uid => {
                return SessionStatus::Unknown(format!(
                    "the lock belongs to uid {uid} and records no tmux server; that user's servers cannot be queried with certainty"
                ));
            }
            _ => sessions.session_status(id, None, speaker),
        }
    };
    match (status, rec.mnt_ns, host.mnt_ns) {
        (SessionStatus::Gone, Some(theirs), Some(ours)) if theirs != ours => {
            SessionStatus::Unknown(format!(
                "recorded in mount namespace {theirs}, this is {ours}: its tmux server may not be visible from here"
            ))
        }
        (status, _, _) => status,
    }
}

/// Judges a valid record with the given probes. `file_uid` is the owner of
/// the lock file (`None` for a fleet value): the lock speaks only for that
/// user ([`crate::trust::speaker`]).
pub fn judge(
    rec: &LockRecord,
    file_uid: Option<u32>,
    host: &HostInfo,
    procs: &dyn ProcessProbe,
    sessions: &dyn SessionProbe,
) -> Verdict {
    explain::record(rec, file_uid, host);
    let v = judge_record(rec, file_uid, host, procs, sessions);
    explain::verdict(rec, &v);
    v
}

fn judge_record(
    rec: &LockRecord,
    file_uid: Option<u32>,
    host: &HostInfo,
    procs: &dyn ProcessProbe,
    sessions: &dyn SessionProbe,
) -> Verdict {
    if let Some(reason) = foreign(rec, host) {
        return Verdict {
            state: State::Unverified,
            reason,
            pid_alive: None,
            session_alive: None,
        };
    }
    let pid = pid_status(rec, host, procs);
    explain::pid(rec, procs, &pid);
    let speaker = crate::trust::speaker(rec, file_uid, pid == PidStatus::Alive, procs);
    explain::speaker(&speaker);
    let speaker = match speaker {
        Ok(speaker) => speaker,
        Err(reason) => {
            return Verdict {
                state: State::Unverified,
                reason,
                pid_alive: match pid {
                    PidStatus::Alive => Some(true),
                    PidStatus::Dead(_) => Some(false),
                    PidStatus::Unknown(_) => None,
                },
                session_alive: None,
            };
        }
    };
    let session = rec.session_id.as_deref().map(|id| {
        let (described, status) = (
            describe_session(id),
            session_status(rec, id, speaker, host, sessions),
        );
        explain::session(&described, rec, host, &status);
        (described, status)
    });
    judge_statuses(rec.pid, pid, session)
}

/// The decision table of the states, on probe answers alone.
pub fn judge_statuses(
    pid: i32,
    pid_status: PidStatus,
    session: Option<(String, SessionStatus)>,
) -> Verdict {
    use PidStatus as P;
    use SessionStatus as S;
    let pid_alive = match &pid_status {
        P::Alive => Some(true),
        P::Dead(_) => Some(false),
        P::Unknown(_) => None,
    };
    let session_alive = session.as_ref().and_then(|(_, s)| match s {
        S::Alive => Some(true),
        S::Gone => Some(false),
        S::Unknown(_) => None,
    });
    let (state, reason) = match (pid_status, session) {
        (P::Unknown(why), _) => (
            State::Unverified,
            format!("cannot tell whether pid {pid} is alive: {why}"),
        ),
        (P::Alive, None) => (State::Held, format!("pid {pid} is alive")),
        (P::Alive, Some((s, S::Alive))) => (State::Held, format!("pid {pid} is alive in {s}")),
        (P::Alive, Some((s, S::Unknown(why)))) => (
            State::Held,
            format!("pid {pid} is alive ({s} not checked: {why})"),
        ),
        (P::Alive, Some((s, S::Gone))) => (
            State::Orphaned,
            format!("pid {pid} is alive but {s} is gone"),
        ),
        (P::Dead(how), None) => (State::Stale, format!("{how} and no session was recorded")),
        (P::Dead(how), Some((s, S::Gone))) => (State::Stale, format!("{how} and {s} is gone")),
        (P::Dead(how), Some((s, S::Alive))) => {
            (State::HeldBySession, format!("{how} but {s} is alive"))
        }
        (P::Dead(how), Some((s, S::Unknown(why)))) => (
            State::Unverified,
            format!("{how} but {s} cannot be checked: {why}"),
        ),
    };
    Verdict {
        state,
        reason,
        pid_alive,
        session_alive,
    }
}

mod explain;
#[cfg(test)]
mod tests;
