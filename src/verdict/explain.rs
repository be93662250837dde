//! What a verdict read and why it decided, as `tracing` debug events
//! (`AGENTLOCK_LOG=debug`): the record against this host, the holder
//! process, whom the lock speaks for, the session, and the state reached.
//! Everything quoted from a lock file or a tmux answer is escaped; a probe
//! asked only to be logged is asked only when debug events are enabled.

use super::{PidStatus, Verdict};
use crate::probe::{HostInfo, ProcessProbe, SessionStatus};
use crate::record::LockRecord;
use crate::trust::escape;
use std::fmt::Display;
use tracing::debug;

/// An optional fact, escaped; `none` when absent.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".into(), |v| escape(&v.to_string()).into_owned())
}

/// The record's host, boot and namespaces against this host's.
pub(super) fn record(rec: &LockRecord, file_uid: Option<u32>, host: &HostInfo) {
    debug!(
        "the lock names pid {} on host {} (this is {}), boot {} (this boot {}), PID namespace {} (this one {}), session {} on tmux server {}, uid {}; its file belongs to uid {}",
        rec.pid,
        opt(rec.hostname.as_deref()),
        escape(&host.hostname),
        opt(rec.boot_id.as_deref()),
        opt(host.boot_id.as_deref()),
        opt(rec.pid_ns),
        opt(host.pid_ns),
        opt(rec.session_id.as_deref()),
        opt(rec.tmux_socket.as_deref()),
        opt(rec.uid),
        file_uid.map_or_else(|| "nobody (a fleet value)".into(), |u| u.to_string()),
    );
}

/// What the process table says of the recorded PID.
pub(super) fn pid(rec: &LockRecord, procs: &dyn ProcessProbe, status: &PidStatus) {
    let said = match status {
        PidStatus::Alive => "alive".to_string(),
        PidStatus::Dead(how) => format!("dead: {}", escape(how)),
        PidStatus::Unknown(why) => format!("unknown: {}", escape(why)),
    };
    debug!(
        "pid {}: {said} (start time recorded {}, now {}; runs as uid {})",
        rec.pid,
        opt(rec.pid_start),
        opt(procs.start_time(rec.pid)),
        opt(procs.owner_uid(rec.pid)),
    );
}

/// Whom the lock speaks for.
pub(super) fn speaker(speaker: &Result<Option<u32>, String>) {
    match speaker {
        Ok(Some(uid)) => debug!("the lock speaks for uid {uid}"),
        Ok(None) => debug!("the lock speaks for no user in particular"),
        Err(why) => debug!("the lock speaks for nobody: {}", escape(why)),
    }
}

/// What tmux says of the recorded session.
pub(super) fn session(described: &str, rec: &LockRecord, host: &HostInfo, status: &SessionStatus) {
    let said = match status {
        SessionStatus::Alive => "alive".to_string(),
        SessionStatus::Gone => "gone".to_string(),
        SessionStatus::Unknown(why) => format!("unknown: {}", escape(why)),
    };
    debug!(
        "{} on {}: {said} (mount namespace recorded {}, this one {})",
        escape(described),
        rec.tmux_socket
            .as_deref()
            .map_or_else(|| "the servers asked".into(), |s| escape(s).into_owned()),
        opt(rec.mnt_ns),
        opt(host.mnt_ns),
    );
}

/// The verdict reached.
pub(super) fn verdict(rec: &LockRecord, v: &Verdict) {
    debug!(
        "verdict on the lock of pid {}: {}: {}",
        rec.pid,
        v.state,
        escape(&v.reason)
    );
}
