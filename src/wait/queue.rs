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
use nix::fcntl::{Flock, FlockArg, OFlag, RenameFlags, openat, renameat2};
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

/// Ticket numbers this tool hands out stay far below this; a name with a
/// larger number (or not all digits) is no ticket of ours and is ignored.
const MAX_NUMBER: u64 = 999_999_999_999;

fn number_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(TICKET_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n <= MAX_NUMBER)
}

/// Whether `name` is shaped like a ticket's name.
pub fn is_ticket(name: &str) -> bool {
    number_of(name).is_some()
}

/// Whether the ticket at `path` is provably a dead waiter's (opened, its
/// `flock` free). Read-only: a shared `flock` tried and dropped at once.
pub fn ticket_dead(path: &std::path::Path) -> bool {
    use std::os::fd::IntoRawFd;
    let open = nix::fcntl::open(path, PROBE, Mode::empty()).map(|fd| fd.into_raw_fd());
    open.is_ok() && waiter_of(open) == Waiter::Dead
}

/// Whether `name` in `rt` is a regular file (not followed): only those can
/// be tickets; a directory, FIFO or symlink named like one is ignored.
fn regular(rt: &File, name: &str) -> bool {
    use nix::sys::stat::{SFlag, fstatat};
    fstatat(rt.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits())
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

/// What a ticket is found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// Its `flock` is held: a waiter is in the queue.
    Live,
    /// Opened and its `flock` taken (or gone): nobody waits on it.
    Dead,
    /// Cannot be opened (another user's, mode 0600): cannot be told, so it
    /// counts as a waiter (passed over after the handover) and is never
    /// removed.
    Unknown,
}

fn waiter_of(open: nix::Result<std::os::fd::RawFd>) -> Waiter {
    let fd = match open {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Waiter::Dead,
        Err(_) => return Waiter::Unknown,
    };
    // SAFETY: a descriptor just opened, owned from here on.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => Waiter::Dead,
        Err((_, Errno::EWOULDBLOCK)) => Waiter::Live,
        Err(_) => Waiter::Unknown,
    }
}

const PROBE: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK);

/// The ticket `name` in `rt`.
fn waiter(rt: &File, name: &str) -> Waiter {
    waiter_of(openat(rt.as_fd(), name, PROBE, Mode::empty()).map(|fd| {
        use std::os::fd::IntoRawFd;
        fd.into_raw_fd()
    }))
}

impl Ticket {
    /// Joins the queue of `worker` (creating `.runtime` when needed),
    /// waiting at most `limit` for the guard.
    pub(crate) fn take(
        worker: &Worker,
        limit: std::time::Duration,
        cancel: Option<&AtomicBool>,
    ) -> Result<Ticket> {
        let g = Guarded::enter_within(worker, true, limit, cancel)?;
        let rt = g
            .dir()
            .try_clone()
            .map_err(|e| Error::io(worker.runtime_path(), e))?;
        // After every live ticket; dead ones are removed on the way (the
        // guard is held: their names mean what was looked at).
        let mut last = 0;
        for (n, name) in tickets(&rt)? {
            if !regular(&rt, &name) {
                continue;
            }
            match waiter(&rt, &name) {
                Waiter::Dead => {
                    let _ = unlinkat(rt.as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
                }
                Waiter::Live | Waiter::Unknown => last = n,
            }
        }
        // Locked before it has its name: a named ticket is never unlocked
        // while its waiter lives. The temp name is a writer's temp file, so
        // one left by a waiter killed right here is cleaned like any other.
        let temp = format!(
            "{TEMP_PREFIX}.{}.w{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let at = |name: &str| worker.runtime_path().join(name);
        let fd = openat(
            rt.as_fd(),
            temp.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::io(at(&temp), e))?;
        // Readable by every waiter whatever the umask: a ticket another
        // waiter cannot open is never proven dead, only passed over.
        let _ = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o644));
        let lock = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io(at(&temp), e))?;
        // Never over anything: a name taken by something that is no ticket
        // (a directory someone made) is skipped.
        let mut named = None;
        for number in last + 1..last + 64 {
            let name = format!("{TICKET_PREFIX}{number:010}");
            match renameat2(
                rt.as_fd(),
                temp.as_str(),
                rt.as_fd(),
                name.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    named = Some((number, name));
                    break;
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    let _ = unlinkat(rt.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
                    return Err(Error::io(at(&name), e));
                }
            }
        }
        let Some((number, name)) = named else {
            let _ = unlinkat(rt.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(Error::UnsafeRuntime {
                path: worker.runtime_path(),
                why: "64 ticket names in a row are taken by things that are no tickets".into(),
            });
        };
        let path = at(&name);
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
            if !regular(&self.rt, &name) {
                continue;
            }
            if waiter(&self.rt, &name) != Waiter::Dead {
                live += 1;
                continue;
            }
            // New tickets are named under the guard: there, the name still
            // means the file just looked at, or a live ticket.
            if let Ok(g) = Guarded::enter_within(worker, false, std::time::Duration::ZERO, None)
                && regular(g.dir(), &name)
                && waiter(g.dir(), &name) == Waiter::Dead
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
