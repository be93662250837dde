//! What wakes a waiter: one `poll(2)` over the events that can free a
//! worker. `.runtime/` changing (inotify: a release, `doctor --fix`, the Go
//! tool's removal, a waiter leaving the queue), the holder process and the
//! recorded session's processes exiting (pidfds), a signal (the interrupt's
//! pipe) and, on the fleet store, the key changing (a pipe fed by the etcd
//! watch). A wake is only a reason to judge again: nothing is decided from
//! an event itself.

use crate::lock::{GUARD_FILE, TEMP_PREFIX};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiter judges again when every input of the verdict has an
/// event (the safety net for what no event covers).
pub const NET_COVERED: Duration = Duration::from_secs(10);
/// How often, at most, a waiter judges again when some input has no event
/// (a holder on another host or in another PID namespace, a tmux session
/// whose processes cannot be watched, a tmux server that did not answer, an
/// unverified lock). After an event it looks again soon ([`BACKOFF_START`])
/// and then less and less often, up to this: the bounded fallback.
pub const NET_UNCOVERED: Duration = Duration::from_secs(2);
/// The first look again after an event that left the verdict uncovered (a
/// pane exited and its tmux server was exiting as it was asked).
pub const BACKOFF_START: Duration = Duration::from_millis(10);

/// What is watched in a `.runtime/` directory (by a waiter, and by `run`
/// guarding its lock): an entry created, removed, renamed or closed after
/// writing, or the directory itself gone; never through a symlink.
pub(crate) fn dir_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// The events one waiter sleeps on.
pub(crate) struct Wake {
    inotify: Option<Inotify>,
    dirs: Vec<(PathBuf, WatchDescriptor)>,
    /// Pipes that wake by being readable (drained on wake); not owned.
    pipes: Vec<std::os::fd::RawFd>,
    /// Processes watched this round.
    pids: Vec<(i32, OwnedFd)>,
    /// Pane terminals watched this round (readable as hung up).
    ttys: Vec<OwnedFd>,
    /// Something changed while the round was set up: do not sleep.
    now: bool,
    /// Whether some input of the verdicts this round has no event.
    uncovered: bool,
    /// The next look again while uncovered.
    backoff: Duration,
}

impl Wake {
    pub(crate) fn new() -> Wake {
        Wake {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok(),
            dirs: Vec::new(),
            pipes: Vec::new(),
            pids: Vec::new(),
            ttys: Vec::new(),
            now: false,
            uncovered: false,
            backoff: BACKOFF_START,
        }
    }

    /// Starts a new round: the processes of the last one are forgotten.
    pub(crate) fn round(&mut self) {
        self.pids.clear();
        self.ttys.clear();
        self.uncovered = false;
    }

    /// Wakes when a directory entry in `dir` is created, removed, renamed
    /// or closed after writing, or `dir` itself goes. Without inotify (or
    /// when `dir` cannot be watched), the round counts as uncovered.
    pub(crate) fn watch_dir(&mut self, dir: &Path) {
        if self.dirs.iter().any(|(d, _)| d == dir) {
            return;
        }
        match self
            .inotify
            .as_ref()
            .map(|i| i.add_watch(dir, dir_events()))
        {
            Some(Ok(wd)) => self.dirs.push((dir.to_path_buf(), wd)),
            _ => self.uncovered = true,
        }
    }

    /// Wakes when a readable byte arrives on `fd` (kept open by the caller
    /// for as long as this lives).
    pub(crate) fn watch_pipe(&mut self, fd: BorrowedFd<'_>) {
        self.pipes.push(fd.as_raw_fd());
    }

    /// Wakes when process `pid` exits, if it is still the process that
    /// started at `start` (checked after its pidfd is open, so a PID reused
    /// in between wakes at once instead of watching a stranger).
    pub(crate) fn watch_pid(&mut self, pid: i32, start: Option<u64>) {
        if pid <= 0 || self.pids.iter().any(|(p, _)| *p == pid) {
            return;
        }
        match crate::probe::process::pidfd_open(pid) {
            Some(fd) => {
                let same = start.is_none_or(|s| crate::probe::process::still_runs(pid, s));
                if same {
                    self.pids.push((pid, fd));
                } else {
                    self.now = true;
                }
            }
            None => self.uncovered = true,
        }
    }

    /// Wakes when the pseudo-terminal `path` is hung up: tmux closed the
    /// pane (its master side). Only a `/dev/pts/N` path that is a pty
    /// slave is opened (read-only, never as a controlling terminal, never
    /// read from): a tmux answer is untrusted, and opening some devices has
    /// effects. And only one of user `owner` (the user the lock speaks for,
    /// whose server made it): a forged answer naming another user's
    /// terminal would have it held open here (a logout that hangs).
    /// Anything else makes the round uncovered.
    pub(crate) fn watch_tty(&mut self, path: &Path, owner: u32) {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::{Mode, SFlag, fstat, major};
        let pts = path
            .to_str()
            .and_then(|p| p.strip_prefix("/dev/pts/"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOFOLLOW;
        let owned = pts && nix::sys::stat::lstat(path).is_ok_and(|st| st.st_uid == owner);
        let fd = owned
            .then(|| open(path, flags, Mode::empty()).ok())
            .flatten();
        // UNIX98 pty slaves: majors 136 to 143.
        let slave = |fd: &OwnedFd| {
            fstat(fd).is_ok_and(|st| {
                st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits()
                    && (136..=143).contains(&major(st.st_rdev))
            })
        };
        // Looked at again once open: the same owner, a pty slave.
        let fd = fd.filter(|fd| fstat(fd).is_ok_and(|st| st.st_uid == owner));
        match fd {
            Some(fd) if slave(&fd) => self.ttys.push(fd),
            _ => self.uncovered = true,
        }
    }

    /// Marks the round as having an input without an event.
    pub(crate) fn uncovered(&mut self) {
        self.uncovered = true;
    }

    /// Sleeps until an event, the safety net or `deadline`, whichever comes
    /// first. Returns at once after a signal (EINTR).
    pub(crate) fn sleep(&mut self, deadline: Option<Instant>) {
        let net = if self.uncovered {
            let b = self.backoff;
            self.backoff = (b * 2).min(NET_UNCOVERED);
            b
        } else {
            NET_COVERED
        };
        let until = deadline.map_or(Instant::now() + net, |d| d.min(Instant::now() + net));
        while !std::mem::take(&mut self.now) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Rounded up: a wait that ends a little early would spin.
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let mut fds: Vec<PollFd> = Vec::new();
            if let Some(i) = &self.inotify {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            }
            for &p in &self.pipes {
                // SAFETY: the caller keeps each pipe open while this lives.
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(p) },
                    PollFlags::POLLIN,
                ));
            }
            for (_, fd) in &self.pids {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            // No events asked: a hang-up is reported whatever is asked.
            for fd in &self.ttys {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::empty()));
            }
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) => return,
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut k = 0;
            if self.inotify.is_some() {
                if ready[0] && self.relevant_events() {
                    self.backoff = BACKOFF_START;
                    return;
                }
                k = 1;
            }
            for i in 0..self.pipes.len() {
                if ready[k + i] {
                    self.backoff = BACKOFF_START;
                    if drain(self.pipes[i]) {
                        // Closed by its writer: never readable again.
                        self.pipes.remove(i);
                        self.uncovered = true;
                    }
                    return;
                }
            }
            k += self.pipes.len();
            if ready[k..].iter().any(|&r| r) {
                self.backoff = BACKOFF_START;
                return;
            }
        }
    }

    /// Reads the pending inotify events: true if any may matter (not a
    /// temp file or the guard). A directory that went is watched anew next
    /// round.
    fn relevant_events(&mut self) -> bool {
        let Some(i) = &self.inotify else {
            return false;
        };
        let mut relevant = false;
        while let Ok(events) = i.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                if e.mask.intersects(AddWatchFlags::IN_IGNORED)
                    || e.mask
                        .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF)
                {
                    self.dirs.retain(|(_, wd)| *wd != e.wd);
                    relevant = true;
                    continue;
                }
                let name = e.name.as_deref().and_then(|n| n.to_str()).unwrap_or("");
                if !(name.starts_with(TEMP_PREFIX) || name == GUARD_FILE) {
                    relevant = true;
                }
            }
        }
        relevant
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(i) = self.inotify.take() {
            super::last_close::close_inotify(OwnedFd::from(i));
        }
    }
}

/// Empties a non-blocking pipe: true when its writer closed it.
fn drain(fd: std::os::fd::RawFd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: the caller keeps the pipe open; reading into a local buffer.
        match unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } {
            0 => return true,
            n if n > 0 => {}
            _ => return false,
        }
    }
}
