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
