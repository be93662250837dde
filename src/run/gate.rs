//! The exec gate of `run`: the command is forked first and waits before
//! `exec` until its PID is claimed. Opening the gate lets it through, with
//! its fence in `AGENTLOCK_FENCE`; stopping it (or `run` dying) ends it
//! before it ever runs.
//!
//! Between fork and exec the child may only make async-signal-safe calls, so
//! its whole environment is built before the fork ([`Env`]): the child only
//! writes the fence's digits into a slot that is already there.

use crate::forward::FORWARDED;
use nix::fcntl::OFlag;
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::thread::JoinHandle;

/// The variable naming the worker the command holds.
pub const WORKER_VAR: &str = "AGENTLOCK_WORKER";
/// The variable holding the command's fence (fleet store only).
pub const FENCE_VAR: &str = "AGENTLOCK_FENCE";

/// Bytes the parent sends through the gate: `GO` and the fence (8 bytes,
/// 0 for none), or `STOP`.
const GO: u8 = 1;
const STOP: u8 = 0;

/// A forked command waiting at its gate.
pub(super) struct Gate {
    /// Yields the spawned child once the gate opened and it exec'd (or
    /// failed to).
    spawner: JoinHandle<std::io::Result<Child>>,
    /// The child's PID (`None`: the fork failed; the spawner has the error).
    pub pid: Option<i32>,
    fd: OwnedFd,
}

impl Gate {
    /// Forks `program args`, stopped at the gate. `ignored` says, for each
    /// forwarded signal, whether the command starts with it ignored.
    pub fn fork(
        program: &OsString,
        args: &[OsString],
        ignored: Vec<(i32, bool)>,
        worker: &Path,
    ) -> std::io::Result<Gate> {
        let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (gate_r, gate_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (pid_w_fd, gate_r_fd) = (pid_w.as_raw_fd(), gate_r.as_raw_fd());
        let (pid_r_fd, gate_w_fd) = (pid_r.as_raw_fd(), gate_w.as_raw_fd());
        let mut cmd = Command::new(program);
        cmd.args(args);
        let mut env = Env::new(worker);
        // Called on run's main thread: the mask the command should start with.
        let mask: nix::libc::sigset_t = *nix::sys::signal::SigSet::thread_get_mask()?.as_ref();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (getpid, close, read, write, signal,
        // sigprocmask) and writes into memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Until exec, a signal must not run the handlers inherited
                // from `run` (it would be lost): keep them pending.
                let mut block: nix::libc::sigset_t = std::mem::zeroed();
                nix::libc::sigemptyset(&mut block);
                for (s, _) in &ignored {
                    nix::libc::sigaddset(&mut block, *s);
                }
                nix::libc::sigprocmask(nix::libc::SIG_BLOCK, &block, std::ptr::null_mut());
                // The parent's ends: closed here, so the child sees EOF on the
                // gate if the parent dies before opening it.
                nix::libc::close(pid_r_fd);
                nix::libc::close(gate_w_fd);
                let pid = nix::libc::getpid().to_ne_bytes();
                if nix::libc::write(pid_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize
                {
                    return Err(std::io::Error::last_os_error());
                }
                let mut go = [STOP];
                let mut fence = [0u8; 8];
                if !read_all(gate_r_fd, &mut go)
                    || (go[0] == GO && !read_all(gate_r_fd, &mut fence))
                {
                    // `run` died before opening the gate: nobody is left to
                    // report to, and the command must not start. Leave quietly.
                    nix::libc::_exit(1);
                }
                if go[0] != GO {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ECANCELED));
                }
                env.install(i64::from_ne_bytes(fence));
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
                Ok(())
            });
        }
        // spawn() returns only once the child has exec'd (or failed), i.e.
        // after the gate opens: it runs on its own thread while run claims.
        let spawner = std::thread::spawn(move || {
            // Blocked on this thread from before the fork, so the child never
            // runs `run`'s handlers; its pre_exec keeps them blocked until exec.
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
        Ok(Gate {
            spawner,
            pid,
            fd: gate_w,
        })
    }

    /// Lets the command through, with `fence` exported (when it has one);
    /// returns the child once it exec'd, or why it could not.
    pub fn open(self, fence: Option<i64>) -> std::io::Result<Child> {
        let mut msg = [GO; 9];
        msg[1..].copy_from_slice(&fence.unwrap_or(0).to_ne_bytes());
        // 9 bytes: one atomic pipe write.
        let _ = nix::unistd::write(&self.fd, &msg);
        drop(self.fd);
        self.spawner
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("spawner thread panicked")))
    }

    /// Ends the command before it runs.
    pub fn stop(self) {
        let _ = nix::unistd::write(&self.fd, &[STOP]);
        drop(self.fd);
        let _ = self.spawner.join();
    }

    /// The error of a failed fork.
    pub fn fork_error(self) -> std::io::Error {
        drop(self.fd);
        self.spawner
            .join()
            .ok()
            .and_then(|r| r.err())
            .unwrap_or_else(|| std::io::Error::other("fork failed"))
    }
}

/// Reads exactly `buf.len()` bytes from `fd` (retrying on EINTR); false on
/// EOF or error. Async-signal-safe.
fn read_all(fd: i32, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: `buf[got..]` is valid for writes of its length.
        let n = unsafe { nix::libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            n if n > 0 => got += n as usize,
            -1 if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            _ => return false,
        }
    }
    true
}

/// The command's environment, built before the fork: `run`'s own without
/// `AGENTLOCK_FENCE` and `AGENTLOCK_WORKER` (an outer `run`'s), then
/// `AGENTLOCK_WORKER`, then a slot the child fills with the fence's digits
/// (or drops) once the gate opens.
struct Env {
    _vars: Vec<CString>,
    fence: Vec<u8>,
    /// The `environ` array: pointers into `_vars` and `fence`, then null.
    ptrs: Vec<*const c_char>,
}

// SAFETY: the pointers point into the buffers `Env` owns, which never move
// or reallocate; only the forked child writes to them.
unsafe impl Send for Env {}
unsafe impl Sync for Env {}

/// Room for `AGENTLOCK_FENCE=` and any i64 in decimal, plus the NUL.
const FENCE_SLOT: usize = FENCE_VAR.len() + 1 + 20 + 1;

impl Env {
    fn new(worker: &Path) -> Env {
        let entry = |k: &[u8], v: &[u8]| CString::new([k, b"=", v].concat()).ok();
        let mut vars: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != FENCE_VAR && k != WORKER_VAR)
            .filter_map(|(k, v)| entry(k.as_bytes(), v.as_bytes()))
            .collect();
        vars.extend(entry(WORKER_VAR.as_bytes(), worker.as_os_str().as_bytes()));
        let mut fence = vec![0u8; FENCE_SLOT];
        fence[..FENCE_VAR.len()].copy_from_slice(FENCE_VAR.as_bytes());
        fence[FENCE_VAR.len()] = b'=';
        let mut ptrs: Vec<*const c_char> = vars.iter().map(|v| v.as_ptr()).collect();
        // The fence's slot, then the end: filled in by `install`.
        ptrs.extend([std::ptr::null(), std::ptr::null()]);
        Env {
            _vars: vars,
            fence,
            ptrs,
        }
    }

    /// In the child: writes `fence` (0: none) into its slot and makes this
    /// the environment `exec` passes on. Async-signal-safe: no allocation.
    fn install(&mut self, fence: i64) {
        let slot = self.ptrs.len() - 2;
        if fence > 0 {
            let mut digits = [0u8; 20];
            let (mut n, mut i) = (fence as u64, digits.len());
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let at = FENCE_VAR.len() + 1;
            let len = digits.len() - i;
            self.fence[at..at + len].copy_from_slice(&digits[i..]);
            self.fence[at + len] = 0;
            self.ptrs[slot] = self.fence.as_ptr().cast();
        }
        // SAFETY: single-threaded child before exec; the array and the
        // strings live until exec replaces the process image.
        unsafe {
            nix::libc::environ = self.ptrs.as_ptr() as *mut *mut c_char;
        }
    }
}
