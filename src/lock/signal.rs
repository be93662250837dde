//! `claim --force --signal-other`: whom the previous holder's SIGTERM may
//! reach, and sending it.

use crate::probe::process::ancestors;
use crate::probe::{Existence, Probes};
use crate::record::LockRecord;
use crate::verdict;

/// Why `--signal-other` must not signal `pid`, if it must not: a lock whose
/// file owner or recorded uid is not the caller (a lock speaks only for its
/// writer, and may be forged), PID 1, this process or any of its ancestors,
/// a tmux server, a process of another user, one on another host or PID
/// namespace, or one not proven to be the process that claimed.
/// `runtime` is the owner and mode of the `.runtime` directory the lock was
/// found in: a directory another user can write may hold a lock of the
/// caller's that was moved there from another worker, so it names a process
/// that holds something else.
fn refuse_signal(
    rec: &LockRecord,
    file_uid: Option<u32>,
    runtime: Option<(u32, u32)>,
    probes: &Probes,
) -> Option<String> {
    let pid = rec.pid;
    let my_uid = probes.host.uid;
    match file_uid {
        Some(owner) if owner == my_uid => {}
        Some(owner) => {
            return Some(format!(
                "the lock file belongs to uid {owner}, not {my_uid}: only your own locks name processes you may signal"
            ));
        }
        None => return Some("the lock file's owner is not known".into()),
    }
    if let Some((owner, mode)) = runtime {
        if owner != my_uid && owner != 0 {
            return Some(format!(
                "its .runtime directory belongs to uid {owner}, who could have moved the lock there from another worker"
            ));
        }
        if mode & 0o022 != 0 {
            return Some(format!(
                "its .runtime directory is writable by others (mode {:o}): the lock could have been moved there from another worker",
                mode & 0o7777
            ));
        }
    }
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
    match rec.uid {
        Some(uid) if uid == my_uid => {}
        Some(uid) => return Some(format!("the lock names uid {uid}, not {my_uid}")),
        None => return Some("the lock records no uid, so its holder's user is not proven".into()),
    }
    if probes
        .procs
        .comm(pid)
        .is_some_and(|c| c.starts_with("tmux"))
    {
        return Some("it is a tmux server".into());
    }
    if probes
        .procs
        .comm(pid)
        .is_some_and(|c| crate::probe::invoker::REAPERS.contains(&c.as_str()))
    {
        return Some(
            "it is a process manager (it may have adopted the real holder's claimer)".into(),
        );
    }
    match probes.procs.owner_uid(pid) {
        Some(uid) if uid == probes.host.uid => None,
        Some(uid) => Some(format!("it belongs to uid {uid}, not {}", probes.host.uid)),
        None => Some("its owner cannot be read".into()),
    }
}

/// `--signal-other`: SIGTERM the previous holder when [`refuse_signal`] finds
/// no reason not to. Returns the one-line outcome.
pub(super) fn signal_previous(
    rec: &LockRecord,
    file_uid: Option<u32>,
    runtime: Option<(u32, u32)>,
    probes: &Probes,
) -> String {
    let pid = rec.pid;
    if let Some(why) = refuse_signal(rec, file_uid, runtime, probes) {
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
            uid: Some(1000),
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
        refusal_of_file(rec, Some(1000), procs)
    }

    fn refusal_of_file(
        rec: &LockRecord,
        file_uid: Option<u32>,
        procs: &MockProcessProbe,
    ) -> Option<String> {
        let sessions = MockSessionProbe::new();
        let probes = Probes {
            host: host(),
            procs,
            sessions: &sessions,
        };
        refuse_signal(rec, file_uid, None, &probes)
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

    #[test]
    fn a_forged_lock_never_names_a_process_to_signal() {
        let ok = procs("claude", 1000);
        // Another user's file, even naming this user and a live process of it.
        let why = refusal_of_file(&rec(HOLDER), Some(65534), &ok).unwrap();
        assert!(why.contains("belongs to uid 65534"), "{why}");
        // A root daemon named by this user's own file: the recorded uid is not ours.
        let root = LockRecord {
            uid: Some(0),
            ..rec(HOLDER)
        };
        assert_eq!(
            refusal(&root, &procs("daemon", 0)).unwrap(),
            "the lock names uid 0, not 1000"
        );
        let no_uid = LockRecord {
            uid: None,
            ..rec(HOLDER)
        };
        assert!(refusal(&no_uid, &ok).unwrap().contains("records no uid"));
        assert!(refusal_of_file(&rec(HOLDER), None, &ok).is_some());
    }

    #[test]
    fn a_lock_in_a_directory_others_write_may_have_been_moved_there() {
        let ok = procs("claude", 1000);
        let sessions = MockSessionProbe::new();
        let probes = Probes {
            host: host(),
            procs: &ok,
            sessions: &sessions,
        };
        let r = rec(HOLDER);
        let with = |runtime| refuse_signal(&r, Some(1000), Some(runtime), &probes);
        assert_eq!(with((1000, 0o40755)), None);
        assert_eq!(with((0, 0o40755)), None);
        assert!(with((65534, 0o40755)).unwrap().contains("uid 65534"));
        assert!(
            with((1000, 0o40775))
                .unwrap()
                .contains("writable by others")
        );
    }
}
