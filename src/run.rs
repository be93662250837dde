//! `agentlock run`: hold a worker for the lifetime of a command.
//!
//! The lock names this process (it lives exactly as long as the command),
//! SIGINT/SIGTERM/SIGHUP sent to it are forwarded to the command, and the lock
//! is released however the command ends. Signals the kernel sends to the whole
//! foreground process group (Ctrl-C, terminal hangup) already reach the
//! command, so those are not forwarded a second time: an interactive agent
//! must not see one Ctrl-C as two.

use crate::error::{Error, Result};
use crate::lock::{self, Asker, ClaimOptions, ClaimOutcome, Claimant, Inspection, Probes};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

/// How `run` ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The command ran; its exit code (128 + signal when killed by one).
    Exited {
        code: i32,
        released: Result<(), String>,
    },
    /// The claim was refused: the command was not started.
    Refused(Inspection),
    /// The command could not be started (126: not executable, 127: not found).
    CannotRun { code: i32, why: String },
}

/// Claims `worker` for this process, runs `cmd`, releases, reports.
pub fn run(
    worker: &Path,
    session: Option<String>,
    cmd: &[OsString],
    probes: &Probes,
) -> Result<RunOutcome> {
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| Error::io(worker, std::io::Error::other("no command given")))?;
    // Register before claiming, so no signal is lost between claim and spawn.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::io(worker, e))?;
    let me = Claimant {
        pid: std::process::id() as i32,
        session,
    };
    let claimed = match lock::claim(worker, &me, ClaimOptions::default(), probes)? {
        ClaimOutcome::Refused(ins) => return Ok(RunOutcome::Refused(ins)),
        ClaimOutcome::Done(c) => c,
    };
    let release = || -> Result<(), String> {
        match lock::release(
            &claimed.after.worker_dir,
            &Asker::Pid(me.pid),
            false,
            probes,
        ) {
            Ok(lock::ReleaseOutcome::Done { .. }) => Ok(()),
            Ok(lock::ReleaseOutcome::Refused(ins)) => Err(format!(
                "lock was not released: it is now {} ({})",
                ins.state, ins.reason
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut child = match Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = release();
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(RunOutcome::CannotRun {
                code,
                why: format!("{}: {e}", Path::new(program).display()),
            });
        }
    };
    let child_pid = Pid::from_raw(child.id() as i32);
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for info in signals.forever() {
            if matches!(info.cause, Cause::Kernel) {
                continue;
            }
            if let Ok(sig) = Signal::try_from(info.signal) {
                let _ = kill(child_pid, sig);
            }
        }
    });
    // Wait for the exit without reaping, so the forwarder can never signal a
    // recycled PID; stop the forwarder; then reap.
    loop {
        match waitid(
            Id::Pid(child_pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    handle.close();
    let _ = forwarder.join();
    let status = child.wait().map_err(|e| Error::io(worker, e))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(RunOutcome::Exited {
        code,
        released: release(),
    })
}
