//! The waiters' queue of one worker, on the host: tickets under `.runtime/`,
//! `agent.lock.wait.<number>`, served in number order.
//!
//! A ticket is taken under the mutation guard (the next number after every
//! ticket there), and lives exactly as long as its waiter: the waiter holds
//! an exclusive `flock` on it, taken before the ticket gets its name, so a
//! ticket whose `flock` can be had is a dead waiter's, and the kernel
//! releases it however the waiter ended (even SIGKILL). A dead ticket is
//! removed under the guard after looking again, and never blocks anyone.
//! The Go tool does not queue: it can still win a worker from a waiter.

use crate::error::{Error, Result};
use crate::lock::{Guarded, TEMP_PREFIX, Worker};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Prefix of a ticket's name; the number follows, zero-padded.
pub const TICKET_PREFIX: &str = "agent.lock.wait.";

/// This waiter's place in one worker's queue; left on drop.
pub(crate) struct Ticket {
    rt: File,
    name: String,
    number: u64,
    path: PathBuf,
    _lock: Flock<File>,
}

fn number_of(name: &str) -> Option<u64> {
    name.strip_prefix(TICKET_PREFIX)?.parse().ok()
}

/// The tickets in `.runtime`, by number.
fn tickets(rt: &File) -> Result<Vec<(u64, String)>> {
    let mut dir = Dir::openat(
        rt.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .map_err(|e| Error::Io {
        path: PathBuf::from(".runtime"),
        source: e,
    })?;
    let mut out: Vec<(u64, String)> = dir
        .iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str().ok()?.to_string();
            Some((number_of(&name)?, name))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Whether the ticket `name` belongs to a live waiter: its `flock` is held.
/// A ticket that is gone, or that cannot be opened, is not in the way
/// (one that cannot be opened is no waiter of this tool).
fn alive(rt: &File, name: &str) -> bool {
    let Ok(fd) = openat(
        rt.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) else {
        return false;
    };
    matches!(
        Flock::lock(File::from(fd), FlockArg::LockSharedNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

impl Ticket {
    /// Joins the queue of `worker` (creating `.runtime` when needed).
    pub(crate) fn take(worker: &Worker, cancel: Option<&AtomicBool>) -> Result<Ticket> {
        let g = Guarded::enter_or_cancel(worker, true, cancel)?;
        let rt = g
            .dir()
            .try_clone()
            .map_err(|e| Error::io(worker.runtime_path(), e))?;
        let last = tickets(&rt)?.last().map(|(n, name)| (*n, name.clone()));
        let number = match last {
            None => 1,
            Some((n, name)) => n.checked_add(1).ok_or_else(|| Error::UnsafeLock {
                path: worker.runtime_path().join(name),
                why:
                    "a waiter's ticket with the largest number there is; nobody can queue after it"
                        .into(),
            })?,
        };
        let name = format!("{TICKET_PREFIX}{number:010}");
        let path = worker.runtime_path().join(&name);
        // Locked before it has its name: a named ticket is never unlocked
        // while its waiter lives. The temp name is a writer's temp file, so
        // one left by a waiter killed right here is cleaned like any other.
        let temp = format!(
            "{TEMP_PREFIX}.{}.w{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let fd = openat(
            rt.as_fd(),
            temp.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::io(&path, e))?;
        let lock = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io(&path, e))?;
        if let Err(e) = renameat(rt.as_fd(), temp.as_str(), rt.as_fd(), name.as_str()) {
            let _ = unlinkat(rt.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(Error::io(&path, e));
        }
        drop(g);
        Ok(Ticket {
            rt,
            name,
            number,
            path,
            _lock: lock,
        })
    }

    /// The live waiters ahead of this one. Dead tickets ahead are removed
    /// under the guard (after looking again there), when the guard is free.
    pub(crate) fn ahead(&self, worker: &Worker) -> Result<usize> {
        let mut live = 0;
        for (n, name) in tickets(&self.rt)? {
            if n >= self.number {
                break;
            }
            if alive(&self.rt, &name) {
                live += 1;
                continue;
            }
            // New tickets are named under the guard: there, the name still
            // means the file just looked at, or a live ticket.
            if let Ok(g) = Guarded::enter_within(worker, false, std::time::Duration::ZERO, None)
                && !alive(g.dir(), &name)
            {
                let _ = unlinkat(g.dir().as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
        Ok(live)
    }

    /// Its path (for messages).
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Unlinked while still locked: nobody ever sees it unlocked by name.
        let _ = unlinkat(
            self.rt.as_fd(),
            self.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
}
