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

use crate::error::{Error, Result};
use crate::forward::{FORWARDED, Sentinel};
use crate::lock::{self, ClaimOptions, ClaimOutcome, Claimant, Judgement, Probes};
use nix::fcntl::OFlag;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// How `run` ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The command ran; its exit code (128 + signal when killed by one).
    Exited {
        /// The command's exit status (128 + N when signal N killed it).
        code: i32,
        /// Whether the lock was released afterwards.
        released: Result<()>,
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

/// Bytes the parent sends through the gate.
const GO: u8 = 1;
const STOP: u8 = 0;

/// Forks the command, stopped at the gate before `exec`. Returns the thread
/// that will yield the spawned child once the gate opens, the child's PID, and
/// the write end of the gate.
#[allow(clippy::type_complexity)]
fn fork_gated(
    program: &OsString,
    args: &[OsString],
    ignored: Vec<(i32, bool)>,
) -> std::io::Result<(
    std::thread::JoinHandle<std::io::Result<Child>>,
    Option<i32>,
    OwnedFd,
)> {
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (gate_r, gate_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (pid_w_fd, gate_r_fd) = (pid_w.as_raw_fd(), gate_r.as_raw_fd());
    let (pid_r_fd, gate_w_fd) = (pid_r.as_raw_fd(), gate_w.as_raw_fd());
    let mut cmd = Command::new(program);
    cmd.args(args);
    // Called on run's main thread: the mask the command should start with.
    let mask: nix::libc::sigset_t = *nix::sys::signal::SigSet::thread_get_mask()?.as_ref();
    // What the command should start with for each forwarded signal: ignored
    // if `run` was started with it ignored (a background job), else default.
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (getpid, close, read, write); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Until exec, a signal must not run the handlers inherited from
            // `run` (it would be lost): keep them pending.
            let mut block: nix::libc::sigset_t = std::mem::zeroed();
            nix::libc::sigemptyset(&mut block);
            for (s, _) in &ignored {
                nix::libc::sigaddset(&mut block, *s);
            }
            nix::libc::sigprocmask(nix::libc::SIG_BLOCK, &block, std::ptr::null_mut());
            // The parent's ends: closed here, so the child sees EOF on the gate if
            // the parent dies before opening it.
            nix::libc::close(pid_r_fd);
            nix::libc::close(gate_w_fd);
            let pid = nix::libc::getpid().to_ne_bytes();
            if nix::libc::write(pid_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut b = [STOP];
            loop {
                let n = nix::libc::read(gate_r_fd, b.as_mut_ptr().cast(), 1);
                if n == -1 && *nix::libc::__errno_location() == nix::libc::EINTR {
                    continue;
                }
                if n == 1 && b[0] == GO {
                    // The command's own dispositions, then whatever arrived
                    // meanwhile is delivered: a Ctrl-C before exec ends it here.
                    for (s, ign) in &ignored {
                        let h = if *ign {
                            nix::libc::SIG_IGN
                        } else {
                            nix::libc::SIG_DFL
                        };
                        nix::libc::signal(*s, h);
                    }
                    // The mask `run` itself started with, not the spawner
                    // thread's (which blocks the forwarded signals).
                    nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &mask, std::ptr::null_mut());
                    return Ok(());
                }
                if n == 0 {
                    // `run` died before opening the gate: nobody is left to
                    // report to, and the command must not start. Leave quietly.
                    nix::libc::_exit(1);
                }
                return Err(std::io::Error::from_raw_os_error(nix::libc::ECANCELED));
            }
        });
    }
    // spawn() returns only once the child has exec'd (or failed), i.e. after
    // the gate opens: it runs on its own thread while this one claims.
    let spawner = std::thread::spawn(move || {
        // Blocked on this thread from before the fork, so the child never runs
        // `run`'s handlers; its pre_exec keeps them blocked until exec.
        let mut block = nix::sys::signal::SigSet::empty();
        for s in FORWARDED {
            if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
                block.add(sig);
            }
        }
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&block),
            None,
        );
        let child = cmd.spawn();
        drop((pid_w, gate_r));
        child
    });
    let mut pid_bytes = [0u8; 4];
    let pid = std::fs::File::from(pid_r)
        .read_exact(&mut pid_bytes)
        .ok()
        .map(|()| i32::from_ne_bytes(pid_bytes));
    Ok((spawner, pid, gate_w))
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

fn open_gate(gate: OwnedFd, byte: u8) {
    let _ = nix::unistd::write(&gate, &[byte]);
}

/// Flags the first of some signals sets when it arrives, instead of ending
/// the process: a wait for the guard gives up (see
/// [`crate::lock::ClaimOptions::cancel`]) and the caller says which signal
/// ended it.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// Set once any of the signals arrived.
    pub cancel: Arc<AtomicBool>,
    /// The first signal that arrived (0: none yet).
    pub signal: Arc<AtomicI32>,
}

impl Interrupt {
    /// Handles `signals` from now on by setting the flags.
    pub fn on(signals: &[i32]) -> std::io::Result<Interrupt> {
        let cancel = Arc::new(AtomicBool::new(false));
        let first = Arc::new(AtomicI32::new(0));
        for &s in signals {
            let (cancel, first) = (cancel.clone(), first.clone());
            // SAFETY: the action only stores into atomics (async-signal-safe).
            unsafe {
                signal_hook::low_level::register(s, move || {
                    let _ = first.compare_exchange(0, s, Ordering::SeqCst, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
                })
            }?;
        }
        Ok(Interrupt {
            cancel,
            signal: first,
        })
    }

    /// The first signal that arrived, if any.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

/// Claims `worker` for the command's process, runs it, releases, reports.
/// `session` and `tmux_socket` are recorded as the command's session.
pub fn run(
    worker: impl AsRef<Path>,
    session: Option<String>,
    tmux_socket: Option<PathBuf>,
    cmd: &[OsString],
    probes: &Probes,
) -> Result<RunOutcome> {
    let worker = worker.as_ref();
    let (program, args) = cmd.split_first().ok_or_else(|| Error::NoCommand {
        path: worker.into(),
    })?;
    // Resolve the worker first: a bad path is an error before anything is forked.
    lock::Worker::open(worker)?;
    // What the command should start with: ignored where `run` was started
    // with a signal ignored (nohup, a background job), read before `run`
    // installs its own handlers.
    let ignored: Vec<(i32, bool)> = FORWARDED.iter().map(|&s| (s, is_ignored(s))).collect();
    // Register before forking, so no signal is lost between claim and exec.
    let signals = SignalsInfo::<WithOrigin>::new(FORWARDED).map_err(|e| Error::io(worker, e))?;
    let Interrupt {
        cancel,
        signal: first_signal,
    } = Interrupt::on(&FORWARDED).map_err(|e| Error::io(worker, e))?;
    let sentinel = Sentinel::spawn().ok();
    let (spawner, child_pid, gate) =
        fork_gated(program, args, ignored).map_err(|e| Error::io(worker, e))?;
    let Some(child_pid) = child_pid else {
        // The fork itself failed: spawner holds the error.
        let e = spawner
            .join()
            .ok()
            .and_then(|r| r.err())
            .unwrap_or_else(|| std::io::Error::other("fork failed"));
        return Err(Error::io(worker, e));
    };
    let me = Claimant {
        pid: child_pid,
        session,
        tmux_socket,
    };
    let opts = ClaimOptions {
        cancel: Some(cancel.clone()),
        ..ClaimOptions::default()
    };
    let claimed = lock::claim(worker, &me, opts, probes);
    let release = |c: &lock::Claimed| -> Result<()> {
        let Some(written) = c.after.record.as_ref() else {
            return Ok(()); // a claim always writes one
        };
        match lock::release_written(&c.after.worker_dir, written, probes)? {
            lock::ReleaseOutcome::Done { .. } => Ok(()),
            lock::ReleaseOutcome::Refused(ins) => Err(Error::NotReleased {
                path: ins.worker_dir,
                state: ins.state,
                reason: ins.reason,
            }),
        }
    };
    let interrupted = first_signal.load(Ordering::SeqCst);
    let claimed = match claimed {
        Ok(ClaimOutcome::Done(c)) if interrupted == 0 => c,
        other => {
            open_gate(gate, STOP);
            let _ = spawner.join();
            return match other {
                Ok(ClaimOutcome::Done(c)) => {
                    // Ctrl-C arrived while claiming: give the worker back, start nothing.
                    let _ = release(&c);
                    Ok(RunOutcome::Interrupted {
                        signal: interrupted,
                    })
                }
                Err(Error::Interrupted { .. }) => Ok(RunOutcome::Interrupted {
                    signal: first_signal.load(Ordering::SeqCst),
                }),
                Ok(ClaimOutcome::Refused(ins)) => Ok(RunOutcome::Refused(ins)),
                Err(e) => Err(e),
            };
        }
    };
    open_gate(gate, GO);
    let joined = spawner
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("spawner thread panicked")));
    let mut child = match joined {
        Ok(c) => c,
        Err(e) => {
            let _ = release(&claimed);
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
    // Wait for the exit without reaping, so the forwarder can never signal a
    // recycled PID; stop the forwarder; then reap.
    while let Err(nix::errno::Errno::EINTR) = waitid(
        Id::Pid(child_pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    ) {}
    handle.close();
    let _ = forwarder.join();
    // Released while the exited command is still a zombie: its PID cannot be
    // reused until it is reaped below.
    let released = release(&claimed);
    let status = child.wait().map_err(|e| Error::io(worker, e))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(RunOutcome::Exited { code, released })
}
