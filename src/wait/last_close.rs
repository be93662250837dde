//! Closing an inotify descriptor without waiting for the kernel to tear
//! its watches down. The last close of one waits for an SRCU grace period
//! (8-20 ms measured here), which would delay a waiter's exit, or `run`'s
//! command, after the worker is already held.
//!
//! A grandchild takes the last reference and pays that wait: this process
//! clones a child (a raw `clone`, so no `pthread_atfork` handler runs in a
//! multi-threaded process), the child clones the grandchild and exits at
//! once, and this process reaps the child right away, so nothing is left
//! for it (or a library's host program) to reap. The grandchild, adopted by
//! init, first closes every descriptor but the inotify one (nothing it
//! inherited, a pipe a `$(...)` reads, a socket, a lock, outlives this
//! moment), then exits. Between clone and exit both children make raw
//! system calls only.

use nix::libc;
use std::os::fd::{AsRawFd, OwnedFd};

/// A raw `fork`: `clone(SIGCHLD)`, no `pthread_atfork` handlers.
///
/// # Safety
/// The child may only make async-signal-safe calls and must `_exit`.
unsafe fn raw_fork() -> libc::c_long {
    // SAFETY: clone with no stack (a copy of the caller's, as fork does)
    // and no flags but the exit signal; the caller's contract covers the
    // child.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) }
}

/// Closes `fd` (an inotify descriptor) without waiting for its teardown.
pub(crate) fn close_inotify(fd: OwnedFd) {
    let keep = fd.as_raw_fd();
    // SAFETY: the child and the grandchild make raw system calls only
    // (clone, close_range, exit_group), as a child of a multi-threaded
    // process must.
    let child = unsafe { raw_fork() };
    if child == 0 {
        unsafe {
            if raw_fork() == 0 {
                if keep > 0 {
                    libc::syscall(libc::SYS_close_range, 0, keep as libc::c_uint - 1, 0);
                }
                libc::syscall(
                    libc::SYS_close_range,
                    keep as libc::c_uint + 1,
                    libc::c_uint::MAX,
                    0,
                );
                libc::_exit(0);
            }
            libc::_exit(0);
        }
    }
    drop(fd);
    if child > 0 {
        let child = nix::unistd::Pid::from_raw(child as i32);
        while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
    }
}
