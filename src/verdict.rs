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

/// State of a worker (SPEC §2).
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

/// Why a lock cannot be judged from here (another host, another PID
/// namespace), or `None` when its PID and session mean something here.
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
        _ => None,
    }
}

fn utc(t: &DateTime<FixedOffset>) -> DateTime<Utc> {
    t.with_timezone(&Utc)
}

/// Judges the recorded PID on this host, including PID reuse and reboots:
/// by `pid_start`/`boot_id` where the record has them, else (the Go tool's
/// locks) by a process that started after `acquired_at`, or an
/// `acquired_at` before this boot.
pub fn pid_status(rec: &LockRecord, host: &HostInfo, procs: &dyn ProcessProbe) -> PidStatus {
    let pid = rec.pid;
    match (rec.boot_id.as_deref(), host.boot_id.as_deref()) {
        (Some(then), Some(now)) if then != now => {
            return PidStatus::Dead(format!(
                "pid {pid} died: the host rebooted since the lock was written"
            ));
        }
        (None, _) => {
            if let (Some(acq), Some(boot)) = (rec.acquired_at.as_ref(), host.boot_time)
                && utc(acq) + CLOCK_SLACK < boot
            {
                return PidStatus::Dead(format!(
                    "pid {pid} died: the lock was acquired before this host booted"
                ));
            }
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

/// Whose tmux servers hold the recorded session: the lock's `uid`, else the
/// owner of the lock file (the Go tool records no uid).
fn session_status(
    rec: &LockRecord,
    id: &str,
    file_uid: Option<u32>,
    host: &HostInfo,
    sessions: &dyn SessionProbe,
) -> SessionStatus {
    if let Some(socket) = rec.tmux_socket.as_deref() {
        return sessions.session_status(id, Some(Path::new(socket)));
    }
    match rec.uid.or(file_uid) {
        Some(uid) if uid != host.uid => SessionStatus::Unknown(format!(
            "the lock belongs to uid {uid} and records no tmux server; that user's servers cannot be queried with certainty"
        )),
        _ => sessions.session_status(id, None),
    }
}

/// Judges a valid record with the given probes. `file_uid` is the owner of
/// the lock file, standing in for a `uid` the record lacks.
pub fn judge(
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
    let session = rec.session_id.as_deref().map(|id| {
        (
            describe_session(id),
            session_status(rec, id, file_uid, host, sessions),
        )
    });
    judge_statuses(rec.pid, pid, session)
}

/// The decision table of SPEC §2, on probe answers alone.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::process::MockProcessProbe;
    use crate::probe::tmux::MockSessionProbe;
    use mockall::predicate::eq;

    fn host() -> HostInfo {
        HostInfo {
            hostname: "here".into(),
            uid: 1000,
            boot_id: Some("boot-now".into()),
            pid_ns: Some(7),
            boot_time: Some("2026-11-20T00:00:00Z".parse().unwrap()),
            ticks_per_sec: 100,
        }
    }

    fn rec(session: Option<&str>) -> LockRecord {
        LockRecord {
            pid: 100,
            session_id: session.map(str::to_string),
            hostname: Some("here".into()),
            ..LockRecord::default()
        }
    }

    fn at(t: &str) -> Option<DateTime<FixedOffset>> {
        Some(DateTime::parse_from_rfc3339(t).unwrap())
    }

    fn procs(existence: Existence, start: Option<u64>) -> MockProcessProbe {
        let mut p = MockProcessProbe::new();
        p.expect_existence().with(eq(100)).return_const(existence);
        p.expect_start_time().return_const(start);
        p
    }

    fn sessions(status: SessionStatus) -> MockSessionProbe {
        let mut s = MockSessionProbe::new();
        s.expect_session_status().return_const(status);
        s
    }

    fn state(r: &LockRecord, e: Existence, start: Option<u64>, s: SessionStatus) -> State {
        judge(r, None, &host(), &procs(e, start), &sessions(s)).state
    }

    #[test]
    fn table() {
        let r = rec(Some("%3"));
        use Existence as E;
        use SessionStatus as S;
        assert_eq!(state(&r, E::Alive, None, S::Alive), State::Held);
        assert_eq!(state(&r, E::Alive, None, S::Gone), State::Orphaned);
        assert_eq!(
            state(&r, E::Alive, None, S::Unknown("x".into())),
            State::Held
        );
        assert_eq!(state(&r, E::Gone, None, S::Alive), State::HeldBySession);
        assert_eq!(state(&r, E::Zombie, None, S::Alive), State::HeldBySession);
        assert_eq!(state(&r, E::Gone, None, S::Gone), State::Stale);
        assert_eq!(state(&r, E::Zombie, None, S::Gone), State::Stale);
        assert_eq!(
            state(&r, E::Gone, None, S::Unknown("x".into())),
            State::Unverified
        );
        assert_eq!(
            state(&r, E::Unknown("x".into()), None, S::Gone),
            State::Unverified
        );
    }

    #[test]
    fn no_session_recorded_never_asks_tmux() {
        let r = rec(None);
        let mut s = MockSessionProbe::new();
        s.expect_session_status().never();
        let v = judge(&r, None, &host(), &procs(Existence::Gone, None), &s);
        assert_eq!(v.state, State::Stale);
        assert_eq!(v.reason, "pid 100 has exited and no session was recorded");
        let v = judge(&r, None, &host(), &procs(Existence::Alive, None), &s);
        assert_eq!(v.state, State::Held);
    }

    #[test]
    fn reused_pid_counts_as_dead() {
        let mut r = rec(Some("gt-max"));
        r.pid_start = Some(500);
        let v = judge(
            &r,
            None,
            &host(),
            &procs(Existence::Alive, Some(900)),
            &sessions(SessionStatus::Gone),
        );
        assert_eq!(v.state, State::Stale);
        assert!(v.reason.contains("reused"), "{}", v.reason);
        assert_eq!(v.pid_alive, Some(false));
        // Same start time: the same process.
        let v = judge(
            &r,
            None,
            &host(),
            &procs(Existence::Alive, Some(500)),
            &sessions(SessionStatus::Gone),
        );
        assert_eq!(v.state, State::Orphaned);
        // Start time unreadable: cannot prove reuse, so alive (the safe side).
        let v = judge(
            &r,
            None,
            &host(),
            &procs(Existence::Alive, None),
            &sessions(SessionStatus::Gone),
        );
        assert_eq!(v.state, State::Orphaned);
    }

    #[test]
    fn reboot_counts_as_dead_without_probing_the_pid() {
        let mut r = rec(Some("%1"));
        r.boot_id = Some("boot-before".into());
        let mut p = MockProcessProbe::new();
        p.expect_existence().never();
        let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
        assert_eq!(v.state, State::Stale);
        assert!(v.reason.contains("rebooted"));
    }

    #[test]
    fn foreign_host_is_unverified_without_any_probe() {
        let mut r = rec(Some("%1"));
        r.hostname = Some("elsewhere".into());
        let mut p = MockProcessProbe::new();
        p.expect_existence().never();
        let mut s = MockSessionProbe::new();
        s.expect_session_status().never();
        let v = judge(&r, None, &host(), &p, &s);
        assert_eq!(v.state, State::Unverified);
        assert!(v.reason.contains("elsewhere"));
    }

    #[test]
    fn another_pid_namespace_is_unverified_without_any_probe() {
        let mut r = rec(Some("%1"));
        r.pid_ns = Some(8);
        let mut p = MockProcessProbe::new();
        p.expect_existence().never();
        let mut s = MockSessionProbe::new();
        s.expect_session_status().never();
        let v = judge(&r, None, &host(), &p, &s);
        assert_eq!(v.state, State::Unverified);
        assert!(v.reason.contains("PID namespace 8"), "{}", v.reason);
        // The same namespace: judged as usual.
        r.pid_ns = Some(7);
        assert_eq!(
            state(&r, Existence::Gone, None, SessionStatus::Gone),
            State::Stale
        );
    }

    #[test]
    fn go_locks_prove_reuse_by_start_time_and_boot() {
        // Boot at 2026-11-20T00:00:00Z; 100 ticks a second.
        let mut r = rec(Some("%1"));
        r.acquired_at = at("2026-11-21T00:00:00Z");
        // The process at that PID started a day after the lock: reused.
        let day = 2 * 86_400 * 100;
        let v = judge(
            &r,
            None,
            &host(),
            &procs(Existence::Alive, Some(day)),
            &sessions(SessionStatus::Gone),
        );
        assert_eq!(v.state, State::Stale, "{}", v.reason);
        assert!(v.reason.contains("reused"), "{}", v.reason);
        // Started before the lock (or within the clock slack): the same process.
        for start in [86_400 * 100 - 100, 86_400 * 100 + 5_900] {
            let v = judge(
                &r,
                None,
                &host(),
                &procs(Existence::Alive, Some(start)),
                &sessions(SessionStatus::Gone),
            );
            assert_eq!(v.state, State::Orphaned, "start {start}: {}", v.reason);
        }
        // Acquired before this boot: dead, whatever runs at that PID now.
        r.acquired_at = at("2026-11-19T23:00:00Z");
        let mut p = MockProcessProbe::new();
        p.expect_existence().never();
        let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
        assert_eq!(v.state, State::Stale);
        assert!(v.reason.contains("before this host booted"), "{}", v.reason);
    }

    #[test]
    fn another_users_session_is_looked_up_only_on_its_recorded_server() {
        let mut r = rec(Some("%1"));
        r.uid = Some(65534);
        let mut s = MockSessionProbe::new();
        s.expect_session_status().never();
        let v = judge(&r, None, &host(), &procs(Existence::Gone, None), &s);
        assert_eq!(v.state, State::Unverified, "{}", v.reason);
        assert!(v.reason.contains("uid 65534"), "{}", v.reason);
        // The Go tool records no uid: the file's owner stands in.
        r.uid = None;
        let v = judge(&r, Some(65534), &host(), &procs(Existence::Gone, None), &s);
        assert_eq!(v.state, State::Unverified, "{}", v.reason);
        // With its server recorded, that server alone is asked.
        r.tmux_socket = Some("/tmp/tmux-65534/default".into());
        let mut s = MockSessionProbe::new();
        s.expect_session_status()
            .withf(|id, sock| id == "%1" && *sock == Some(Path::new("/tmp/tmux-65534/default")))
            .return_const(SessionStatus::Alive);
        let v = judge(&r, Some(65534), &host(), &procs(Existence::Gone, None), &s);
        assert_eq!(v.state, State::HeldBySession);
    }

    #[test]
    fn reasons_name_pane_or_session() {
        let v = judge_statuses(
            7,
            PidStatus::Dead("pid 7 has exited".into()),
            Some((describe_session("%2"), SessionStatus::Alive)),
        );
        assert_eq!(v.reason, "pid 7 has exited but pane %2 is alive");
        let v = judge_statuses(
            7,
            PidStatus::Alive,
            Some((describe_session("gt-max"), SessionStatus::Gone)),
        );
        assert_eq!(v.reason, "pid 7 is alive but session gt-max is gone");
    }
}
