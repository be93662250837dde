//! `agentlock run`: hold a worker for the lifetime of a command.
//!
//! The lock names the command's own process. The child is forked and waits at
//! a gate before `exec`: its PID is claimed first, and only then is it let
//! through to run the command; a refused claim means the command never runs.
//! So the worker is held exactly while the command runs, even if `run` itself
//! is killed (the lock then still names the live command, and becomes stale
//! when it exits).
//!
//! SIGINT/SIGTERM/SIGHUP sent to `run` alone are forwarded to the command;
//! those sent to the whole process group (Ctrl-C, `timeout(1)`, `kill --
//! -PGID`) already reached it and are not sent twice (see [`crate::forward`]).
//! A signal that arrives while `run` waits for the guard aborts the claim:
//! the command is never started. The lock is released however the command
//! ends.
//!
//! The command finds the worker in `AGENTLOCK_WORKER` and, on the fleet
//! store, its fence in `AGENTLOCK_FENCE`. A store can lose the worker while
//! the command runs (its lease expired, another host took it over): `run`
//! checks every [`Hold::period`] and then stops the command ([`OnLost`]).

mod gate;
mod hold;

pub use gate::{FENCE_VAR, WORKER_VAR};
pub(crate) use hold::release_file;
pub use hold::{Checked, FileHold, Hold, Taken};

use crate::error::{Error, Result};
use crate::forward::{FORWARDED, Sentinel};
use crate::lock::{Claimant, Judgement, Probes};
pub use crate::wait::Interrupt;
use gate::Gate;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How `run` ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The command ran; its exit code (128 + signal when killed by one).
    Exited {
        /// The command's exit status (128 + N when signal N killed it).
        code: i32,
        /// Whether the lock was released afterwards.
        released: Result<()>,
        /// Why the worker was lost while the command ran, if it was.
        lost: Option<String>,
    },
    /// The claim was refused: the command was not started.
    Refused(Box<Judgement>),
    /// The command could not be started: nothing is held.
    CannotRun {
        /// True when the program was not found; otherwise it exists but
        /// cannot be executed.
        not_found: bool,
        /// The program and the error.
        why: String,
    },
    /// A signal arrived before the command started: it was never started,
    /// and nothing is held.
    Interrupted {
        /// The signal number.
        signal: i32,
    },
}

/// Whether signal `s` is ignored now (`SIG_IGN`), as a shell leaves SIGINT
/// for a background job.
fn is_ignored(s: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one.
    unsafe {
        let mut old: nix::libc::sigaction = std::mem::zeroed();
        nix::libc::sigaction(s, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == nix::libc::SIG_IGN
    }
}

/// What `run` does when the worker is lost while the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLost {
    /// SIGTERM to the command; SIGKILL if it still runs [`KILL_AFTER`] later,
    /// or sooner by the hold's deadline ([`Hold::stop_by`]).
    #[default]
    Term,
    /// Only report it; the command runs on.
    Warn,
}

/// How long a command may run on after the SIGTERM for a lost worker before
/// it is SIGKILLed.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

/// Claims `worker`'s lock file for the command's process, runs it, releases,
/// reports. `session` and `tmux_socket` are recorded as the command's session.
pub fn run(
    worker: impl AsRef<Path>,
    session: Option<String>,
    tmux_socket: Option<PathBuf>,
    cmd: &[OsString],
    probes: &Probes,
) -> Result<RunOutcome> {
    let mut hold = FileHold::new(worker, probes)?;
    let me = Claimant {
        pid: 0,
        session,
        tmux_socket,
    };
    run_with(&mut hold, me, cmd, OnLost::Term, |_| {})
}

/// Claims the worker of `hold` for the command's process (`me`, whose `pid`
/// is filled in with the command's), runs it, releases, reports. While it
/// runs, [`Hold::check`] is asked every [`Hold::period`]; when the worker is
/// lost, `tell` is called with why, and the command is stopped per `on_lost`;
/// `tell` also hears of a removed lock put back ([`Checked::Restored`]).
pub fn run_with(
    hold: &mut dyn Hold,
    me: Claimant,
    cmd: &[OsString],
    on_lost: OnLost,
    mut tell: impl FnMut(&Checked),
) -> Result<RunOutcome> {
    let worker = hold.worker().to_path_buf();
    let worker = worker.as_path();
    let (program, args) = cmd.split_first().ok_or_else(|| Error::NoCommand {
        path: worker.into(),
    })?;
    // What the command should start with: ignored where `run` was started
    // with a signal ignored (nohup, a background job), read before `run`
    // installs its own handlers.
    let ignored: Vec<(i32, bool)> = FORWARDED.iter().map(|&s| (s, is_ignored(s))).collect();
    // Register before forking, so no signal is lost between claim and exec.
    let signals = SignalsInfo::<WithOrigin>::new(FORWARDED).map_err(|e| Error::io(worker, e))?;
    let interrupt = Interrupt::on(&FORWARDED).map_err(|e| Error::io(worker, e))?;
    let first_signal = interrupt.signal.clone();
    let sentinel = Sentinel::spawn().ok();
    let gate = Gate::fork(program, args, ignored, worker).map_err(|e| Error::io(worker, e))?;
    let Some(child_pid) = gate.pid else {
        return Err(Error::io(worker, gate.fork_error()));
    };
    let me = Claimant {
        pid: child_pid,
        ..me
    };
    let claimed = hold.claim(&me, &interrupt);
    let interrupted = first_signal.load(Ordering::SeqCst);
    let fence = match claimed {
        Ok(Taken::Held { fence }) if interrupted == 0 => fence,
        other => {
            gate.stop();
            return match other {
                Ok(Taken::Held { .. }) => {
                    // Ctrl-C arrived while claiming: give the worker back, start nothing.
                    let _ = hold.release();
                    Ok(RunOutcome::Interrupted {
                        signal: interrupted,
                    })
                }
                Err(Error::Interrupted { .. }) => Ok(RunOutcome::Interrupted {
                    signal: first_signal.load(Ordering::SeqCst),
                }),
                Ok(Taken::Refused(ins)) => Ok(RunOutcome::Refused(ins)),
                Err(e) => Err(e),
            };
        }
    };
    let mut child = match gate.open(fence) {
        Ok(c) => c,
        Err(e) => {
            let _ = hold.release();
            return Ok(RunOutcome::CannotRun {
                not_found: e.kind() == std::io::ErrorKind::NotFound,
                why: format!("{}: {e}", Path::new(program).display()),
            });
        }
    };
    let child_pid = Pid::from_raw(child_pid);
    let handle = signals.handle();
    let forwarder =
        std::thread::spawn(move || crate::forward::forward(signals, sentinel, child_pid));
    // Wait for the exit without reaping, so neither the forwarder nor a stop
    // for a lost worker can ever signal a recycled PID; stop the forwarder;
    // then reap.
    // The waiter writes to a pipe, so the watch can sleep on it and on the
    // hold's events in one poll.
    let (exited, exited_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io(worker, e))?;
    let waiter = std::thread::spawn(move || {
        while let Err(nix::errno::Errno::EINTR) = waitid(
            Id::Pid(child_pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {}
        let _ = nix::unistd::write(&exited_tx, b"x");
    });
    let lost_why = watch(hold, &exited, child_pid, on_lost, &mut tell);
    let _ = waiter.join();
    handle.close();
    let _ = forwarder.join();
    // Released while the exited command is still a zombie: its PID cannot be
    // reused until it is reaped below.
    let released = hold.release();
    let status = child.wait().map_err(|e| Error::io(worker, e))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(RunOutcome::Exited {
        code,
        released,
        lost: lost_why,
    })
}

/// Sends `sig` to the command (not reaped yet, see the waiter: still ours)
/// and to its descendants, those seen now and those in `tree` from before
/// (orphaned meanwhile), each only if its start time still matches.
fn stop(child: Pid, tree: &mut Vec<(i32, u64)>, sig: Signal) {
    // Seen first: once the command exits, its children are another's.
    for d in crate::probe::process::descendants(child.as_raw()) {
        if !tree.contains(&d) {
            tree.push(d);
        }
    }
    let _ = nix::sys::signal::kill(child, sig);
    for &(pid, start) in tree.iter() {
        if crate::probe::process::still_runs(pid, start) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Waits until every process of `tree` still alive (same start time, not a
/// zombie) is gone, or SIGKILLs them at `kill_at`.
fn outlived(tree: &[(i32, u64)], kill_at: Instant) {
    loop {
        let alive: Vec<i32> = tree
            .iter()
            .filter(|&&(pid, start)| crate::probe::process::still_runs(pid, start))
            .map(|&(pid, _)| pid)
            .collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() >= kill_at {
            for pid in alive {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the command has exited (without reaping it: its PID stays ours).
fn has_exited(child: Pid) -> bool {
    use nix::sys::wait::WaitStatus;
    !matches!(
        waitid(
            Id::Pid(child),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ),
        Ok(WaitStatus::StillAlive) | Err(_)
    )
}

/// Sleeps until `exited` is readable (true), `events` fire or `wait` is
/// over (false).
fn sleep_on(exited: &OwnedFd, events: Option<BorrowedFd<'_>>, wait: Option<Duration>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let until = wait.map(|w| Instant::now() + w);
    loop {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
        if let Some(e) = events {
            fds.push(PollFd::new(e, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return fds[0].revents().is_some_and(|r| !r.is_empty()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // Cannot poll: the waiter's pipe alone, as before.
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(exited, &mut b);
                return true;
            }
        }
    }
}

/// Until the command exits (`exited`): asks `hold` every period (and on its
/// events) whether the worker is still held; on the first loss, reports it
/// and stops the command per `on_lost`. Returns why it was lost, if it was.
fn watch(
    hold: &mut dyn Hold,
    exited: &OwnedFd,
    child: Pid,
    on_lost: OnLost,
    tell: &mut impl FnMut(&Checked),
) -> Option<String> {
    let mut why: Option<String> = None;
    let mut kill_at: Option<Instant> = None;
    // The command's descendants when it was told to stop: they work in the
    // worker too (an agent started through a shell or a wrapper).
    let mut tree: Vec<(i32, u64)> = Vec::new();
    loop {
        // Asked every time: a hold may want to check sooner as a deadline nears.
        let wait = match (hold.period(), kill_at) {
            (Some(p), Some(t)) => Some(p.min(t.saturating_duration_since(Instant::now()))),
            (None, Some(t)) => Some(t.saturating_duration_since(Instant::now())),
            (p, None) => p,
        };
        if sleep_on(exited, hold.events(), wait) {
            // The command is gone; what it left of the tree told to stop
            // still works in the worker: given until the SIGKILL, then
            // killed, before the worker is released.
            if let Some(at) = kill_at {
                outlived(&tree, at);
            }
            return why;
        }
        let checked = if why.is_none() {
            hold.check()
        } else {
            Checked::Held
        };
        // Judged after the command exited (its zombie is a dead holder, so
        // a waiter may rightly have taken the worker): not a loss. Looked
        // at after the check, so a command that exits during it counts.
        if checked != Checked::Held && has_exited(child) {
            if let Some(at) = kill_at {
                outlived(&tree, at);
            }
            return why;
        }
        if let Checked::Restored(_) = &checked {
            tell(&checked);
        }
        if let Checked::Lost(w) = checked.clone() {
            tell(&checked);
            if on_lost == OnLost::Term {
                stop(child, &mut tree, Signal::SIGTERM);
                // SIGKILL by the hold's deadline (before a lease it can no
                // longer vouch for could expire), never later than KILL_AFTER.
                let now = Instant::now();
                let by = hold.stop_by().map_or(now + KILL_AFTER, |t| t.max(now));
                kill_at = Some(by.min(now + KILL_AFTER));
            }
            why = Some(w);
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            stop(child, &mut tree, Signal::SIGKILL);
            kill_at = None;
        }
    }
}
