//! Holder identity: the one predicate that decides whether a lock
//! is held by the one asking. `claim`, `claim --first-free`, `release` and
//! `check` all call [`holds`].
//!
//! The holder is a process, optionally living in a tmux session/pane. "The
//! same holder" means the same host, PID namespace, PID and process (start
//! time), and, when both sides name a session, the same session on the same
//! server. A shared pane or session never makes two live processes one
//! holder. `release` and `check` widen this in two ways only: a descendant of
//! the holder process acts for it, and a session-only asker may release a
//! lock of its session whose process is dead or is the caller or one of its
//! ancestors.

use crate::probe::Probes;
use crate::probe::process::ancestors;
use crate::probe::tmux::tmux_session_name;
use crate::record::LockRecord;
use crate::verdict::{self, PidStatus};
use std::path::{Path, PathBuf};

/// Who is claiming: the process that will hold the lock, and its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// The process that will hold the lock.
    pub pid: i32,
    /// Its tmux session name, `$N` session id or `%N` pane id.
    pub session: Option<String>,
    /// The tmux server socket that session lives on, when known.
    pub tmux_socket: Option<PathBuf>,
}

impl Claimant {
    /// This process, in the tmux pane it runs in (`$TMUX_PANE` on the server
    /// of `$TMUX`), if any.
    pub fn this_process() -> Claimant {
        let (session, tmux_socket) = env_pane();
        Claimant {
            pid: nix::unistd::getpid().as_raw(),
            session,
            tmux_socket,
        }
    }

    /// A claimant with no session.
    pub fn pid(pid: i32) -> Claimant {
        Claimant {
            pid,
            session: None,
            tmux_socket: None,
        }
    }
}

/// Who asks `release` or `check`: a process, a session, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The asking process (`--pid`, or the invoking process).
    pub pid: Option<i32>,
    /// The asking session (`--session`, or `$TMUX_PANE`).
    pub session: Option<String>,
    /// The server of that session, when known.
    pub tmux_socket: Option<PathBuf>,
    /// This process: the caller is its parent, and the caller's ancestors are
    /// its ancestors.
    pub this_process: i32,
}

/// `$TMUX_PANE` and the server of `$TMUX`, when set.
fn env_pane() -> (Option<String>, Option<PathBuf>) {
    match std::env::var("TMUX_PANE").ok().filter(|s| !s.is_empty()) {
        Some(pane) => (Some(pane), crate::probe::tmux::env_socket()),
        None => (None, None),
    }
}

impl Asker {
    /// This process (and its tmux pane, if any) asking for itself.
    pub fn this_process() -> Asker {
        Asker::from(&Claimant::this_process())
    }

    /// An asker seen from this process.
    pub fn new(pid: Option<i32>, session: Option<String>, tmux_socket: Option<PathBuf>) -> Asker {
        Asker {
            pid,
            session,
            tmux_socket,
            this_process: nix::unistd::getpid().as_raw(),
        }
    }
}

impl From<&Claimant> for Asker {
    fn from(c: &Claimant) -> Asker {
        Asker::new(Some(c.pid), c.session.clone(), c.tmux_socket.clone())
    }
}

/// How wide the predicate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `claim`: only the very same holder refreshes its lock.
    Claim,
    /// `release` and `check`: a descendant of the holder acts for it, and a
    /// session-only asker may act for a dead holder of its session.
    ActFor,
}

/// Whether two recorded session strings name the same session or pane: equal
/// as written or as tmux keeps the name, and on the same server when both
/// name one.
pub fn same_session(a: &str, a_socket: Option<&Path>, b: &str, b_socket: Option<&Path>) -> bool {
    let names = a == b || tmux_session_name(a) == tmux_session_name(b);
    let servers = match (a_socket, b_socket) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    names && servers
}

/// An asker named by a session alone that no tmux server asked has now (a
/// `session-closed` hook asking), and a lock whose recorded session is not
/// proven gone (`session_alive`: alive, or unknown, e.g. a name recorded
/// without a server while not every server was asked): the same name on
/// another server, or a new session of that name. It is not the asker's
/// lock, whatever the names say.
pub fn gone_session_asks_for_live(asker: &Asker, session_alive: Option<bool>) -> bool {
    asker.pid.is_none()
        && asker.session.is_some()
        && asker.tmux_socket.is_none()
        && session_alive != Some(false)
}

/// Whether the lock's process, the claimer (`claimer`: alive here and
/// provably the one that claimed), is an ancestor of `pid`. A tmux server is
/// never acted for this way: every pane's process descends from it.
fn is_ancestor_of(rec: &LockRecord, claimer: bool, pid: i32, probes: &Probes) -> bool {
    claimer
        && ancestors(probes.procs, pid).contains(&rec.pid)
        && probes
            .procs
            .comm(rec.pid)
            .is_none_or(|c| c != "tmux: server")
}

/// The predicate: does `asker` hold the lock `rec`? `file_uid` is the owner
/// of the lock file (`None` for a fleet value): a lock that does not speak
/// for its file's owner ([`crate::trust::speaker`]) is nobody's.
pub fn holds(
    rec: &LockRecord,
    file_uid: Option<u32>,
    asker: &Asker,
    scope: Scope,
    probes: &Probes,
) -> bool {
    if verdict::foreign(rec, &probes.host).is_some() {
        return false;
    }
    let status = verdict::pid_status(rec, &probes.host, probes.procs);
    let alive = status == PidStatus::Alive;
    let Ok(speaker) = crate::trust::speaker(rec, file_uid, alive, probes.procs) else {
        return false;
    };
    // Alive here and provably the process that claimed: the reuse slack that
    // keeps a lock alive never makes a later process its holder.
    let claimer = alive && verdict::proven_claimer(rec, &probes.host, probes.procs);
    let recorded = rec.session_id.as_deref();
    let rec_socket = rec.tmux_socket.as_deref().map(Path::new);
    let asker_socket = asker.tmux_socket.as_deref();
    if let Some(pid) = asker.pid {
        // With ActFor, this very process counts too, and so does every
        // ancestor of it: a script whose last command is `agentlock release`
        // exec's into it, keeping its PID; `sh -c 'agentlock claim w &&
        // agentlock release w'` holds through the shell, which the release
        // (its last command) is a descendant of.
        let me = asker.this_process;
        let process = (claimer && rec.pid == pid)
            || (scope == Scope::ActFor
                && (is_ancestor_of(rec, claimer, pid, probes)
                    || (claimer && rec.pid == me)
                    || is_ancestor_of(rec, claimer, me, probes)));
        let session = match (recorded, asker.session.as_deref()) {
            (Some(r), Some(a)) => same_session(r, rec_socket, a, asker_socket),
            _ => true,
        };
        if process && session {
            return true;
        }
    }
    // A session names no user: acting for a lock through its session alone
    // is for the user the lock speaks for (or anyone's lock, as root).
    let my_lock =
        speaker.is_none_or(|u| u == probes.host.uid) || probes.host.uid == 0 && file_uid == Some(0);
    // A session recorded without its server (the Go tool's `%N`) that lives
    // on another server too may be that server's: not the asker's to act for.
    let namesake_elsewhere = |r: &str| {
        rec_socket.is_none()
            && asker_socket.is_some_and(|s| probes.sessions.alive_on_another_server(r, s))
    };
    if scope == Scope::ActFor
        && my_lock
        && let (Some(r), Some(a)) = (recorded, asker.session.as_deref())
        && same_session(r, rec_socket, a, asker_socket)
        && !namesake_elsewhere(r)
    {
        return match status {
            PidStatus::Dead(_) => true,
            PidStatus::Alive => {
                claimer
                    && (asker.this_process == rec.pid
                        || ancestors(probes.procs, asker.this_process).contains(&rec.pid))
            }
            PidStatus::Unknown(_) => false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::process::MockProcessProbe;
    use crate::probe::tmux::MockSessionProbe;
    use crate::probe::{Existence, HostInfo};

    /// A process table: (pid, parent, start) of live processes.
    fn table(live: &'static [(i32, i32, u64)]) -> MockProcessProbe {
        let mut p = MockProcessProbe::new();
        p.expect_existence().returning(move |pid| {
            if live.iter().any(|(q, ..)| *q == pid) {
                Existence::Alive
            } else {
                Existence::Gone
            }
        });
        p.expect_start_time()
            .returning(move |pid| live.iter().find(|(q, ..)| *q == pid).map(|(.., s)| *s));
        p.expect_parent()
            .returning(move |pid| live.iter().find(|(q, ..)| *q == pid).map(|(_, p, _)| *p));
        p.expect_comm().return_const(None);
        p
    }

    fn host() -> HostInfo {
        HostInfo {
            hostname: "here".into(),
            pid_ns: Some(7),
            ..HostInfo::default()
        }
    }

    fn rec(pid: i32, start: Option<u64>, session: Option<&str>) -> LockRecord {
        LockRecord {
            pid,
            pid_start: start,
            session_id: session.map(str::to_string),
            hostname: Some("here".into()),
            pid_ns: Some(7),
            ..LockRecord::default()
        }
    }

    fn asker(pid: Option<i32>, session: Option<&str>) -> Asker {
        Asker {
            pid,
            session: session.map(str::to_string),
            tmux_socket: None,
            this_process: 50 + pid.unwrap_or(30) / 10,
        }
    }

    // 1 <- 10 (tmux pane shell) <- 20 (agent) <- 30 (its hook)
    // 1 <- 10 <- 40 (another process in the same pane) ; 50 (agentlock) <- 30
    // 5x: agentlock, invoked by x0.
    const LIVE: &[(i32, i32, u64)] = &[
        (1, 0, 1),
        (10, 1, 5),
        (20, 10, 9),
        (30, 20, 12),
        (40, 10, 13),
        (51, 10, 20),
        (52, 20, 20),
        (53, 30, 20),
        (54, 40, 20),
    ];

    fn check(r: &LockRecord, a: &Asker, scope: Scope) -> bool {
        let procs = table(LIVE);
        let sessions = MockSessionProbe::new();
        let probes = Probes {
            host: host(),
            procs: &procs,
            sessions: &sessions,
        };
        holds(r, None, a, scope, &probes)
    }

    #[test]
    fn the_table() {
        use Scope::*;
        let held = rec(20, Some(9), Some("%3"));
        // (lock, asker, claim?, release/check?)
        let cases: &[(&LockRecord, Asker, bool, bool, &str)] = &[
            (
                &held,
                asker(Some(20), Some("%3")),
                true,
                true,
                "same process, same pane",
            ),
            (
                &held,
                asker(Some(20), None),
                true,
                true,
                "same process, no session given",
            ),
            (
                &held,
                asker(Some(20), Some("%4")),
                false,
                false,
                "same process, another pane",
            ),
            (
                &held,
                asker(Some(40), Some("%3")),
                false,
                false,
                "another live process in the same pane",
            ),
            (
                &held,
                asker(Some(30), Some("%3")),
                false,
                true,
                "a descendant of the holder",
            ),
            (
                &held,
                asker(Some(10), Some("%3")),
                false,
                false,
                "an ancestor of the holder",
            ),
            (
                &rec(40, Some(13), Some("%3")),
                asker(None, Some("%3")),
                false,
                false,
                "session only, holder alive, not the caller's ancestor",
            ),
            (
                &rec(20, Some(8), Some("%3")),
                asker(Some(20), Some("%3")),
                false,
                true,
                "pid reused: the holder is dead, and the asker shares its pane",
            ),
            (
                &rec(20, Some(8), Some("%3")),
                asker(Some(20), Some("%4")),
                false,
                false,
                "pid reused, another pane",
            ),
            (
                &rec(99, None, Some("%3")),
                asker(None, Some("%3")),
                false,
                true,
                "session only, holder dead",
            ),
            (
                &rec(99, None, Some("%3")),
                asker(Some(40), Some("%3")),
                false,
                true,
                "dead holder, asker in its pane",
            ),
            (
                &rec(99, None, Some("%3")),
                asker(Some(40), Some("%4")),
                false,
                false,
                "dead holder, other pane",
            ),
            (
                &rec(30, Some(12), Some("%3")),
                asker(None, Some("%3")),
                false,
                true,
                "session only, holder is the caller",
            ),
            (
                &rec(20, Some(9), Some("%3")),
                asker(None, Some("%3")),
                false,
                true,
                "session only, holder is an ancestor of the caller",
            ),
        ];
        for (r, a, claim, act_for, what) in cases {
            assert_eq!(check(r, a, Claim), *claim, "claim: {what}");
            assert_eq!(check(r, a, ActFor), *act_for, "release/check: {what}");
        }
    }

    #[test]
    fn another_host_or_namespace_is_never_the_asker() {
        let mut r = rec(20, Some(9), None);
        r.hostname = Some("elsewhere".into());
        assert!(!check(&r, &asker(Some(20), None), Scope::ActFor));
        let mut r = rec(20, Some(9), None);
        r.pid_ns = Some(8);
        assert!(!check(&r, &asker(Some(20), None), Scope::ActFor));
    }

    #[test]
    fn pane_ids_on_two_servers_are_two_panes() {
        assert!(same_session(
            "%0",
            Some(Path::new("/a")),
            "%0",
            Some(Path::new("/a"))
        ));
        assert!(!same_session(
            "%0",
            Some(Path::new("/a")),
            "%0",
            Some(Path::new("/b"))
        ));
        assert!(same_session("%0", None, "%0", Some(Path::new("/b"))));
        assert!(same_session("a:b", None, "a_b", None));
        assert!(!same_session("%0", None, "%1", None));
    }
}
