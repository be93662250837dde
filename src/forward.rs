//! Which signals `run` forwards to its command, so the command sees each
//! signal once.
//!
//! The command stays in `run`'s process group, so the terminal's Ctrl-C,
//! Ctrl-Z and hangup reach it directly. A signal sent to the whole group
//! (the kernel's, `timeout(1)`'s, `kill -- -PGID`, a service manager killing
//! every process) has then already reached the command, and forwarding it
//! again would make one Ctrl-C two. A signal sent to `run` alone must be
//! forwarded, or the command would never hear it.
//!
//! The kernel does not say how a signal was addressed, so `run` keeps a
//! *sentinel*: a tiny forked process in the same group that blocks SIGINT,
//! SIGTERM and SIGHUP and reports each one it receives, with its sender,
//! through a pipe. A signal that reached the sentinel too (same signal, same
//! sender, within [`GROUP_WINDOW`] of each other) reached the whole group: it
//! is not forwarded. One that did not was meant for `run` alone: it is
//! forwarded. The kernel's signals are judged the same way: Ctrl-C goes to
//! the whole foreground group, but a terminal hangup goes to the session
//! leader alone (`run`, when it is a pane's command), and must be forwarded.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::unistd::{ForkResult, Pid, fork};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a signal sent to `run` waits for the sentinel to report the same
/// signal from the same sender before it is taken as addressed to `run` alone.
pub const GROUP_WINDOW: Duration = Duration::from_millis(300);

/// The signals `run` handles.
pub const FORWARDED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

use nix::libc;

/// The sentinel process; killed and reaped on drop.
pub struct Sentinel {
    pid: Pid,
    reports: Option<File>,
}

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        if let Ok(sig) = Signal::try_from(s) {
            set.add(sig);
        }
    }
    set
}

impl Sentinel {
    /// Forks the sentinel into this process group.
    pub fn spawn() -> std::io::Result<Sentinel> {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let set = forwarded_set();
        let parent = nix::unistd::getpid();
        // Blocked across the fork, so the child never runs this process's
        // handlers; a signal meanwhile stays pending here, not lost.
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
        // SAFETY: the child calls only async-signal-safe functions (prctl,
        // getppid, close, sigwaitinfo, write, _exit) and never returns.
        let forked = unsafe { fork() };
        match forked {
            Ok(ForkResult::Child) => unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent.as_raw() {
                    libc::_exit(0);
                }
                libc::close(r.as_raw_fd());
                let fd = w.as_raw_fd();
                let raw = set.as_ref();
                loop {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    let signo = libc::sigwaitinfo(raw, &mut info);
                    if signo < 0 {
                        continue;
                    }
                    let report = [signo, info.si_pid()];
                    let n = libc::write(fd, report.as_ptr().cast(), 8);
                    if n != 8 {
                        libc::_exit(0);
                    }
                }
            },
            Ok(ForkResult::Parent { child }) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                drop(w);
                Ok(Sentinel {
                    pid: child,
                    reports: Some(File::from(r)),
                })
            }
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(e.into())
            }
        }
    }

    /// The sentinel's reports (signal, sender PID), as they arrive.
    fn reports(&mut self) -> mpsc::Receiver<(i32, i32, Instant)> {
        let (tx, rx) = mpsc::channel();
        if let Some(mut f) = self.reports.take() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                while f.read_exact(&mut buf).is_ok() {
                    let signo = i32::from_ne_bytes(buf[..4].try_into().unwrap_or_default());
                    let pid = i32::from_ne_bytes(buf[4..].try_into().unwrap_or_default());
                    if tx.send((signo, pid, Instant::now())).is_err() {
                        break;
                    }
                }
            });
        }
        rx
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Forwards to `child` every signal `signals` yields that the child's group
/// has not already received, until the iterator is closed.
pub fn forward(mut signals: SignalsInfo<WithOrigin>, mut sentinel: Option<Sentinel>, child: Pid) {
    // A command that moved to a process group of its own (timeout(1),
    // setsid, a job-control shell) receives nothing sent to run's group:
    // everything is forwarded to it then.
    let shares_group = nix::unistd::getpgid(Some(child)).is_ok_and(|g| g == nix::unistd::getpgrp());
    let reports = sentinel.as_mut().map(Sentinel::reports);
    let mut seen: Vec<(i32, i32, Instant)> = Vec::new();
    for info in signals.forever() {
        let arrived = Instant::now();
        let shares_group = shares_group
            && nix::unistd::getpgid(Some(child)).is_ok_and(|g| g == nix::unistd::getpgrp());
        if !shares_group {
            if let Ok(sig) = Signal::try_from(info.signal) {
                let _ = kill(child, sig);
            }
            continue;
        }
        // The kernel's signals carry no sender: PID 0, as the sentinel reports them.
        let sender = match info.cause {
            Cause::Kernel => Some(0),
            _ => info.process.map(|p| p.pid),
        };
        let reached_group = match (&reports, sender) {
            (Some(rx), Some(sender)) => {
                // A report is the same delivery if it came within the window of
                // this one; older ones were other, earlier signals.
                let near = |t: Instant| {
                    t.saturating_duration_since(arrived) < GROUP_WINDOW
                        && arrived.saturating_duration_since(t) < GROUP_WINDOW
                };
                let matches =
                    |r: &(i32, i32, Instant)| r.0 == info.signal && r.1 == sender && near(r.2);
                seen.retain(|r| r.2.elapsed() < GROUP_WINDOW * 2);
                let mut found = seen.iter().any(matches);
                let deadline = arrived + GROUP_WINDOW;
                while !found {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(r) => {
                            found = matches(&r);
                            seen.push(r);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        // The sentinel is gone (killed by someone): fall back
                        // to what the sender tells, the kernel or a sender in
                        // the group signalled the group.
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            found = sender == 0
                                || nix::unistd::getpgid(Some(Pid::from_raw(sender)))
                                    .is_ok_and(|g| g == nix::unistd::getpgrp());
                            break;
                        }
                    }
                }
                found
            }
            // No sentinel: the terminal's signals reach the whole foreground
            // group, so the child has them; anything else is forwarded.
            _ => matches!(info.cause, Cause::Kernel),
        };
        if reached_group {
            continue;
        }
        if let Ok(sig) = Signal::try_from(info.signal) {
            let _ = kill(child, sig);
        }
    }
    drop(sentinel);
}
