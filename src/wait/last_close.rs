//! Closing an inotify descriptor without waiting for the kernel to tear
//! its watches down. The last close of one waits for an SRCU grace period
//! (8-20 ms measured here), which would delay a waiter's exit, or `run`'s
//! command, after the worker is already held.
//!
//! A short-lived `true` takes the last reference and pays that wait: it is
//! (`/usr/bin/true` or `/bin/true`, by full path) started with the
//! descriptor as its standard input (and nothing else of
//! ours: standard output and error are `/dev/null`, every other descriptor
//! is close-on-exec), so this process's own close is only a reference
//! dropped. It is started the way `std::process::Command` starts programs
//! (`posix_spawn` where it can), cheap whatever this process's size and
//! safe in a multi-threaded one; a thread reaps it, and if this process
//! exits first, init does. Where it cannot be started, the descriptor is
//! closed here, slowly.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

/// Closes `fd` (an inotify descriptor) without waiting for its teardown.
pub(crate) fn close_inotify(fd: OwnedFd) {
    // A full path (no lookup in anyone's PATH), so `posix_spawn` applies.
    let program = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(program) = program else {
        return drop(fd);
    };
    let started = Command::new(program)
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .spawn();
    if let Ok(mut child) = started {
        let _ = std::thread::Builder::new()
            .name("agentlock-reap".into())
            .spawn(move || child.wait());
    }
}
