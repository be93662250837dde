//! `claim --force --signal-other`: whom the previous holder's SIGTERM may
//! reach, and sending it.

use crate::probe::process::ancestors;
use crate::probe::{Existence, Probes};
use crate::record::LockRecord;
use crate::verdict;

/// Why `--signal-other` must not signal `pid`, if it must not: PID 1, this
/// process or any of its ancestors, a tmux server, a process of another user,
/// one on another host or PID namespace, or one not proven to be the process
/// that claimed.
fn refuse_signal(rec: &LockRecord, probes: &Probes) -> Option<String> {
    let pid = rec.pid;
    if let Some(why) = verdict::foreign(rec, &probes.host) {
        return Some(why);
    }
    if pid == 1 {
        return Some("it is PID 1".into());
    }
    let me = std::process::id() as i32;
    if pid == me || ancestors(probes.procs, me).contains(&pid) {
        return Some("it is this process or one of its ancestors".into());
    }
    if probes.procs.existence(pid) != Existence::Alive {
        return Some("it is not running".into());
    }
    let Some(recorded) = rec.pid_start else {
        return Some(
            "the lock has no start time, so it cannot be proven to be the process that claimed"
                .into(),
        );
    };
    match probes.procs.start_time(pid) {
        Some(t) if t == recorded => {}
        Some(_) => {
            return Some("the PID now belongs to another process (start time differs)".into());
        }
        None => return Some("its start time cannot be read".into()),
    }
    if probes
        .procs
        .comm(pid)
        .is_some_and(|c| c.starts_with("tmux"))
    {
        return Some("it is a tmux server".into());
    }
    match probes.procs.owner_uid(pid) {
        Some(uid) if uid == probes.host.uid => None,
        Some(uid) => Some(format!("it belongs to uid {uid}, not {}", probes.host.uid)),
        None => Some("its owner cannot be read".into()),
    }
}

/// `--signal-other`: SIGTERM the previous holder when [`refuse_signal`] finds
/// no reason not to. Returns the one-line outcome.
pub(super) fn signal_previous(rec: &LockRecord, probes: &Probes) -> String {
    let pid = rec.pid;
    if let Some(why) = refuse_signal(rec, probes) {
        return format!("did not signal pid {pid}: {why}");
    }
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    ) {
        Ok(()) => format!("signalled pid {pid} with SIGTERM"),
        Err(e) => format!("did not signal pid {pid}: kill failed: {}", e.desc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::tests::host;
    use crate::probe::process::MockProcessProbe;
    use crate::probe::tmux::MockSessionProbe;

    const HOLDER: i32 = 4242;
    const PARENT: i32 = 4000;

    fn rec(pid: i32) -> LockRecord {
        LockRecord {
            pid,
            hostname: Some("here".into()),
            pid_ns: Some(7),
            pid_start: Some(555),
            ..LockRecord::default()
        }
    }

    /// A process table: HOLDER alive (start 555, `comm`, owned by `uid`);
    /// this process's parent is PARENT, whose parent is 1.
    fn procs(comm: &str, uid: u32) -> MockProcessProbe {
        let me = std::process::id() as i32;
        let mut p = MockProcessProbe::new();
        p.expect_parent().returning(move |pid| match pid {
            pid if pid == me => Some(PARENT),
            PARENT => Some(1),
            _ => None,
        });
        p.expect_existence().returning(|pid| {
            if pid == HOLDER || pid == PARENT {
                Existence::Alive
            } else {
                Existence::Gone
            }
        });
        p.expect_start_time().return_const(Some(555));
        let comm = comm.to_string();
        p.expect_comm().returning(move |_| Some(comm.clone()));
        p.expect_owner_uid().return_const(Some(uid));
        p
    }

    fn refusal(rec: &LockRecord, procs: &MockProcessProbe) -> Option<String> {
        let sessions = MockSessionProbe::new();
        let probes = Probes {
            host: host(),
            procs,
            sessions: &sessions,
        };
        refuse_signal(rec, &probes)
    }

    #[test]
    fn only_the_proven_holder_of_this_user_may_be_signalled() {
        let ok = procs("claude", 1000);
        assert_eq!(refusal(&rec(HOLDER), &ok), None);
        let why = |r: &LockRecord, p: &MockProcessProbe| refusal(r, p).unwrap();
        assert_eq!(why(&rec(1), &ok), "it is PID 1");
        assert_eq!(
            why(&rec(PARENT), &ok),
            "it is this process or one of its ancestors"
        );
        assert_eq!(why(&rec(77), &ok), "it is not running");
        let other_host = LockRecord {
            hostname: Some("elsewhere".into()),
            ..rec(HOLDER)
        };
        assert!(why(&other_host, &ok).contains("elsewhere"));
        let no_start = LockRecord {
            pid_start: None,
            ..rec(HOLDER)
        };
        assert!(why(&no_start, &ok).contains("no start time"));
        let reused = LockRecord {
            pid_start: Some(1),
            ..rec(HOLDER)
        };
        assert!(why(&reused, &ok).contains("another process"));
        assert_eq!(
            why(&rec(HOLDER), &procs("tmux: server", 1000)),
            "it is a tmux server"
        );
        assert_eq!(
            why(&rec(HOLDER), &procs("claude", 0)),
            "it belongs to uid 0, not 1000"
        );
    }
}
