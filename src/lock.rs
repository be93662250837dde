//! Lock operations on one worker: inspect, claim, release, first-free.
//!
//! Every mutation holds an exclusive `flock` on
//! `<worker>/.runtime/agent.lock.flock` (the Go tool's guard file, never
//! deleted), publishes by writing a unique temp file, `fsync`, `rename` and a
//! directory `fsync`, and removes only after re-reading the file and finding
//! it unchanged (compare-and-delete). All file access goes through directory
//! file descriptors opened with `O_NOFOLLOW`, so a symlinked `.runtime` or
//! `agent.lock` is never followed.
//!
//! ```no_run
//! use agentlock::lock::{self, Claimant, ClaimOptions, ClaimOutcome, LiveProbes};
//!
//! let live = LiveProbes::new(Default::default());
//! let probes = live.probes();
//! let me = Claimant::pid(std::process::id() as i32);
//! match lock::claim("workers/max".as_ref(), &me, ClaimOptions::default(), &probes)? {
//!     ClaimOutcome::Done(done) => println!("claimed: {:?}", done.action),
//!     ClaimOutcome::Refused(held) => println!("held: {}", held.reason),
//! }
//! # Ok::<(), agentlock::Error>(())
//! ```

use crate::error::{Error, Result};
pub use crate::holder::{Asker, Claimant};
use crate::holder::{Scope, holds};
use crate::probe::Existence;
use crate::probe::process::ancestors;
pub use crate::probe::{LiveProbes, Probes};
use crate::record::{CorruptReason, LockRecord, MAX_LOCK_BYTES};
use crate::verdict::{self, State};
use chrono::{DateTime, FixedOffset, Utc};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `<worker>/.runtime`.
pub const RUNTIME_DIR: &str = ".runtime";
/// `<worker>/.runtime/agent.lock`.
pub const LOCK_FILE: &str = "agent.lock";
/// The mutation guard, shared with the Go tool.
pub const GUARD_FILE: &str = "agent.lock.flock";
/// Prefix of temp files: `agent.lock.tmp.<writer pid>.<random>` (ours) or
/// exactly `agent.lock.tmp` (the Go tool's).
pub const TEMP_PREFIX: &str = "agent.lock.tmp";
/// Prefix of corrupt files moved aside.
pub const CORRUPT_PREFIX: &str = "agent.lock.corrupt-";
/// How long a mutation waits for the guard before giving up.
pub const GUARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker directory, resolved to an absolute path and opened.
#[derive(Debug)]
pub struct Worker {
    /// Absolute, canonical worker path.
    pub dir: PathBuf,
    fd: File,
    /// Owner of the worker directory: what root gives the files it creates
    /// there, so the owner is never locked out of its own worker.
    owner: Option<u32>,
}

/// Gives a file root just created in a user's worker to that user.
fn give_to_owner(worker: &Worker, fd: &impl AsFd, path: &Path) -> Result<()> {
    match worker.owner {
        Some(owner) if nix::unistd::geteuid().is_root() && owner != 0 => {
            nix::unistd::fchown(fd.as_fd(), Some(nix::unistd::Uid::from_raw(owner)), None)
                .map_err(|e| Error::io(path, e))
        }
        _ => Ok(()),
    }
}

impl Worker {
    /// Opens a worker directory given on the command line.
    pub fn open(path: &Path) -> Result<Worker> {
        let dir = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoSuchWorker { path: path.into() },
            _ => Error::io(path, e),
        })?;
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOTDIR => Error::NotADirectory { path: dir.clone() },
            e => Error::io(&dir, e),
        })?;
        let fd = File::from(fd);
        let owner = fstat(fd.as_fd()).map(|st| st.st_uid).ok();
        Ok(Worker { dir, fd, owner })
    }

    /// `<worker>/.runtime`.
    pub fn runtime_path(&self) -> PathBuf {
        self.dir.join(RUNTIME_DIR)
    }

    /// `<worker>/.runtime/agent.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.runtime_path().join(LOCK_FILE)
    }
}

/// Describes a non-regular file type in a few words.
fn describe_type(dir: &File, name: &str, st: &FileStat) -> String {
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    match kind {
        SFlag::S_IFDIR => "a directory".into(),
        SFlag::S_IFIFO => "a FIFO".into(),
        SFlag::S_IFSOCK => "a socket".into(),
        SFlag::S_IFCHR => "a character device".into(),
        SFlag::S_IFBLK => "a block device".into(),
        SFlag::S_IFLNK => match nix::fcntl::readlinkat(dir.as_fd(), name) {
            Ok(t) => format!("a symlink to {}", Path::new(&t).display()),
            Err(_) => "a symlink".into(),
        },
        SFlag::S_IFREG => "a regular file".into(),
        _ => "not a regular file".into(),
    }
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

/// `.runtime`, opened without following a symlink.
enum Runtime {
    Missing,
    Dir(File),
    /// A symlink, a file, or anything that is not a plain directory.
    Unsafe(String),
    /// Could not be opened (e.g. permission denied).
    Unreadable(String),
}

fn open_runtime(worker: &Worker, create: bool) -> Result<Runtime> {
    let mut created = false;
    if create {
        match mkdirat(
            worker.fd.as_fd(),
            RUNTIME_DIR,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => created = true,
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io(worker.runtime_path(), e)),
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(worker.fd.as_fd(), RUNTIME_DIR, flags, Mode::empty()) {
        Ok(fd) => {
            let rt = File::from(fd);
            if created {
                give_to_owner(worker, &rt, &worker.runtime_path())?;
            }
            Ok(Runtime::Dir(rt))
        }
        Err(Errno::ENOENT) => Ok(Runtime::Missing),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            let what = match fstatat(
                worker.fd.as_fd(),
                RUNTIME_DIR,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => describe_type(&worker.fd, RUNTIME_DIR, &st),
                Err(e) => e.desc().to_string(),
            };
            Ok(Runtime::Unsafe(format!(
                "{RUNTIME_DIR} is {what}, not a directory"
            )))
        }
        Err(e @ (Errno::EACCES | Errno::EPERM)) => Ok(Runtime::Unreadable(format!(
            "cannot open {}: {}",
            worker.runtime_path().display(),
            e.desc()
        ))),
        Err(e) => Err(Error::io(worker.runtime_path(), e)),
    }
}

/// The identity and content of `agent.lock` at one moment: what
/// compare-and-delete compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    /// Owner of the file.
    pub(crate) uid: u32,
    /// Contents, when it is a regular file within the size limit.
    bytes: Option<Vec<u8>>,
}

/// What is at `agent.lock`.
#[derive(Debug, Clone)]
pub enum Found {
    Absent,
    Record(LockRecord, Snapshot),
    /// Not a valid record. The snapshot is `None` for a symlink (never touched).
    Corrupt(CorruptReason, Option<Snapshot>),
    /// Exists but cannot be read: permission denied and the like.
    Unreadable(String),
}

fn snapshot_of(st: &FileStat, bytes: Option<Vec<u8>>) -> Snapshot {
    Snapshot {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        uid: st.st_uid,
        bytes,
    }
}

/// Reads `agent.lock` in an open `.runtime` without following symlinks,
/// without blocking on a FIFO, and without reading more than the size limit.
pub(crate) fn read_lock(rt: &File, lock_path: &Path) -> Result<Found> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    let fd = match openat(rt.as_fd(), LOCK_FILE, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(Found::Absent),
        Err(e @ (Errno::EACCES | Errno::EPERM)) => {
            return Ok(Found::Unreadable(format!(
                "cannot read {}: {}",
                lock_path.display(),
                e.desc()
            )));
        }
        // ELOOP: a symlink. ENXIO: a socket. Describe without following.
        Err(Errno::ELOOP | Errno::ENXIO | Errno::EOPNOTSUPP) => {
            let st = fstatat(
                rt.as_fd(),
                LOCK_FILE,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io(lock_path, e))?;
            let what = describe_type(rt, LOCK_FILE, &st);
            let snap = (!is_type(&st, SFlag::S_IFLNK)).then(|| snapshot_of(&st, None));
            return Ok(Found::Corrupt(
                CorruptReason::NotRegular {
                    what: format!("{LOCK_FILE} is {what}"),
                },
                snap,
            ));
        }
        Err(e) => return Err(Error::io(lock_path, e)),
    };
    let st = fstat(fd.as_fd()).map_err(|e| Error::io(lock_path, e))?;
    if !is_type(&st, SFlag::S_IFREG) {
        let what = describe_type(rt, LOCK_FILE, &st);
        return Ok(Found::Corrupt(
            CorruptReason::NotRegular {
                what: format!("{LOCK_FILE} is {what}"),
            },
            Some(snapshot_of(&st, None)),
        ));
    }
    if st.st_size as u64 > MAX_LOCK_BYTES {
        return Ok(Found::Corrupt(
            CorruptReason::TooLarge {
                size: st.st_size as u64,
            },
            Some(snapshot_of(&st, None)),
        ));
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    match (&fd).take(MAX_LOCK_BYTES + 1).read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Ok(Found::Unreadable(format!(
                "cannot read {}: {e}",
                lock_path.display()
            )));
        }
        Err(e) => return Err(Error::io(lock_path, e)),
    }
    let parsed = LockRecord::parse(&bytes);
    let snap = snapshot_of(&st, Some(bytes));
    Ok(match parsed {
        Ok(rec) => Found::Record(rec, snap),
        Err(reason) => Found::Corrupt(reason, Some(snap)),
    })
}

/// One worker, judged: what `status`, `check` and the JSON output report.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub worker_dir: PathBuf,
    pub lock_path: PathBuf,
    pub state: State,
    pub reason: String,
    pub record: Option<LockRecord>,
    pub pid_alive: Option<bool>,
    pub session_alive: Option<bool>,
}

impl Inspection {
    fn new(worker: &Worker, state: State, reason: String) -> Inspection {
        Inspection::at(&worker.dir, &worker.lock_path(), state, reason)
    }

    /// An inspection of the worker at these paths.
    pub fn at(worker_dir: &Path, lock_path: &Path, state: State, reason: String) -> Inspection {
        Inspection {
            worker_dir: worker_dir.into(),
            lock_path: lock_path.into(),
            state,
            reason,
            record: None,
            pid_alive: None,
            session_alive: None,
        }
    }
}

/// Judges what was found at `lock_path`.
pub fn judge(worker_dir: &Path, lock_path: &Path, found: &Found, probes: &Probes) -> Inspection {
    let at = |state, reason| Inspection::at(worker_dir, lock_path, state, reason);
    match found {
        Found::Absent => at(State::Free, "no lock file".into()),
        Found::Corrupt(reason, _) => at(State::Corrupt, reason.to_string()),
        Found::Unreadable(why) => at(State::Unverified, why.clone()),
        Found::Record(rec, snap) => {
            let v = verdict::assess(
                rec,
                Some(snap.uid),
                &probes.host,
                probes.procs,
                probes.sessions,
            );
            Inspection {
                record: Some(rec.clone()),
                pid_alive: v.pid_alive,
                session_alive: v.session_alive,
                ..at(v.state, v.reason)
            }
        }
    }
}

/// A worker read but not judged yet: either already decided (no lock, an
/// odd `.runtime`), or what is at its lock path.
enum ReadWorker {
    Decided(Inspection),
    Found(Worker, Found),
}

fn read_worker(path: &Path) -> Result<ReadWorker> {
    let worker = Worker::open(path)?;
    let decided = |state, why| Ok(ReadWorker::Decided(Inspection::new(&worker, state, why)));
    match open_runtime(&worker, false)? {
        Runtime::Missing => decided(State::Free, "no .runtime directory".into()),
        Runtime::Unsafe(why) => decided(State::Corrupt, why),
        Runtime::Unreadable(why) => decided(State::Unverified, why),
        Runtime::Dir(rt) => {
            let found = read_lock(&rt, &worker.lock_path())?;
            Ok(ReadWorker::Found(worker, found))
        }
    }
}

fn judge_read(read: ReadWorker, probes: &Probes) -> Inspection {
    match read {
        ReadWorker::Decided(ins) => ins,
        ReadWorker::Found(worker, found) => judge(&worker.dir, &worker.lock_path(), &found, probes),
    }
}

/// Read-only: judges a worker. Creates and changes nothing.
pub fn inspect(path: &Path, probes: &Probes) -> Result<Inspection> {
    Ok(judge_read(read_worker(path)?, probes))
}

/// Read-only: judges several workers, asking the tmux servers their locks
/// record all at once (each server once) before judging any.
pub fn inspect_many(
    paths: &[PathBuf],
    tmux: &crate::probe::tmux::Tmux,
    probes: &Probes,
) -> Vec<(PathBuf, Result<Inspection>)> {
    let read: Vec<(PathBuf, Result<ReadWorker>)> =
        paths.iter().map(|p| (p.clone(), read_worker(p))).collect();
    tmux.ensure(read.iter().filter_map(|(_, r)| match r {
        Ok(ReadWorker::Found(_, Found::Record(rec, _))) => {
            rec.tmux_socket.as_deref().map(Path::new)
        }
        _ => None,
    }));
    read.into_iter()
        .map(|(p, r)| (p, r.map(|r| judge_read(r, probes))))
        .collect()
}

/// The exclusive mutation guard; released on drop.
pub struct Guard {
    _lock: Flock<File>,
}

impl Guard {
    /// Takes the guard on `.runtime/agent.lock.flock`, creating it if needed,
    /// waiting at most `timeout`, and giving up early when `cancel` is set.
    /// The guard is opened read-only (`flock` needs no more), so a guard
    /// another user created never locks anyone out.
    fn take(
        worker: &Worker,
        rt: &File,
        timeout: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Result<Guard> {
        let path = worker.runtime_path().join(GUARD_FILE);
        let open = |flags: OFlag| {
            openat(
                rt.as_fd(),
                GUARD_FILE,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | flags,
                Mode::from_bits_truncate(0o644),
            )
        };
        let fd = match open(OFlag::O_CREAT | OFlag::O_EXCL) {
            Ok(fd) => {
                let f = File::from(fd);
                give_to_owner(worker, &f, &path)?;
                Ok(f)
            }
            Err(Errno::EEXIST) => open(OFlag::empty()).map(File::from),
            Err(e) => Err(e),
        }
        .map_err(|e| match e {
            Errno::ELOOP | Errno::EEXIST => Error::UnsafeLock {
                path: path.clone(),
                why: "guard file is a symlink; refusing to follow it".into(),
            },
            e => Error::io(&path, e),
        })?;
        let mut file = fd;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Guard { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) => {
                    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                        return Err(Error::Interrupted { path });
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::GuardTimeout {
                            path,
                            secs: timeout.as_secs(),
                        });
                    }
                    file = f;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err((_, Errno::EINTR)) => return Err(Error::io(&path, Errno::EINTR)),
                Err((_, e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}

/// An open `.runtime` with the guard held: the only place mutations happen.
struct Guarded<'w> {
    worker: &'w Worker,
    rt: File,
    _guard: Guard,
}

impl<'w> Guarded<'w> {
    /// Takes the guard, creating `.runtime` first if `create`. A symlinked or
    /// non-directory `.runtime` is an error.
    fn enter(worker: &'w Worker, create: bool) -> Result<Guarded<'w>> {
        Self::enter_or_cancel(worker, create, None)
    }

    /// [`Guarded::enter`], giving up when `cancel` is set while waiting.
    fn enter_or_cancel(
        worker: &'w Worker,
        create: bool,
        cancel: Option<&AtomicBool>,
    ) -> Result<Guarded<'w>> {
        let rt = match open_runtime(worker, create)? {
            Runtime::Dir(rt) => rt,
            Runtime::Missing => {
                return Err(Error::io(worker.runtime_path(), Errno::ENOENT));
            }
            Runtime::Unsafe(why) => {
                return Err(Error::UnsafeRuntime {
                    path: worker.runtime_path(),
                    why,
                });
            }
            Runtime::Unreadable(why) => {
                return Err(Error::io(
                    worker.runtime_path(),
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
                ));
            }
        };
        let guard = Guard::take(worker, &rt, GUARD_TIMEOUT, cancel)?;
        Ok(Guarded {
            worker,
            rt,
            _guard: guard,
        })
    }

    fn read(&self) -> Result<Found> {
        read_lock(&self.rt, &self.worker.lock_path())
    }

    /// Atomically publishes `rec` as `agent.lock`.
    fn publish(&self, rec: &LockRecord) -> Result<()> {
        let runtime = self.worker.runtime_path();
        let name = format!(
            "{TEMP_PREFIX}.{}.{}",
            std::process::id(),
            std::iter::repeat_with(fastrand::alphanumeric)
                .take(10)
                .collect::<String>()
        );
        let tmp_path = runtime.join(&name);
        let fd = openat(
            self.rt.as_fd(),
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::io(&tmp_path, e))?;
        let mut tmp = File::from(fd);
        let written = tmp
            .write_all(rec.to_json().as_bytes())
            .and_then(|()| tmp.sync_all())
            .map_err(|e| Error::io(&tmp_path, e))
            .and_then(|()| {
                nix::fcntl::renameat(self.rt.as_fd(), name.as_str(), self.rt.as_fd(), LOCK_FILE)
                    .map_err(|e| Error::io(self.worker.lock_path(), e))
            });
        if let Err(e) = written {
            let _ = unlinkat(self.rt.as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        nix::unistd::fsync(self.rt.as_fd()).map_err(|e| Error::io(self.worker.runtime_path(), e))
    }

    /// True if `agent.lock` is still exactly what `snap` saw: same inode and
    /// same bytes (or same size and mtime for files that are not read).
    fn unchanged(&self, snap: &Snapshot) -> Result<bool> {
        let now = match self.read()? {
            Found::Record(_, s) => s,
            Found::Corrupt(_, Some(s)) => s,
            _ => return Ok(false),
        };
        Ok(now == *snap)
    }

    /// Compare-and-delete: removes `agent.lock` only if unchanged since `snap`.
    fn remove_if_unchanged(&self, snap: &Snapshot) -> Result<bool> {
        if !self.unchanged(snap)? {
            return Ok(false);
        }
        unlinkat(self.rt.as_fd(), LOCK_FILE, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| Error::io(self.worker.lock_path(), e))?;
        self.sync_dir()?;
        Ok(true)
    }

    /// Compare-and-move: renames a corrupt `agent.lock` aside to
    /// `agent.lock.corrupt-<UTC timestamp>` (never replacing anything).
    fn move_aside(&self, snap: &Snapshot) -> Result<Option<PathBuf>> {
        if !self.unchanged(snap)? {
            return Ok(None);
        }
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.9fZ").to_string();
        for n in 0..100 {
            let name = if n == 0 {
                format!("{CORRUPT_PREFIX}{stamp}")
            } else {
                format!("{CORRUPT_PREFIX}{stamp}.{n}")
            };
            match nix::fcntl::renameat2(
                self.rt.as_fd(),
                LOCK_FILE,
                self.rt.as_fd(),
                name.as_str(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    self.sync_dir()?;
                    return Ok(Some(self.worker.runtime_path().join(name)));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(Error::io(self.worker.lock_path(), e)),
            }
        }
        Err(Error::io(self.worker.lock_path(), Errno::EEXIST))
    }
}

/// Options of `claim`.
#[derive(Debug, Clone, Default)]
pub struct ClaimOptions {
    /// Take over a lock held by someone else.
    pub force: bool,
    /// With `force`: SIGTERM the previous holder first, when that is safe.
    pub signal_other: bool,
    /// Take only a `free`, `stale` or `corrupt` worker: a worker the
    /// claimant already holds is not free (`--first-free`).
    pub only_free: bool,
    /// Give up waiting for the guard once this is set (a signal arrived).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What a successful claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction {
    /// The worker was free.
    Claimed,
    /// The same holder already had it; the lock was rewritten.
    Refreshed,
    /// A stale lock was replaced.
    ReplacedStale,
    /// A corrupt file was moved aside, then the worker claimed.
    ReplacedCorrupt,
    /// `--force`: a lock held by someone else was taken over.
    TookOver,
}

impl ClaimAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimAction::Claimed => "claimed",
            ClaimAction::Refreshed => "refreshed",
            ClaimAction::ReplacedStale => "replaced-stale",
            ClaimAction::ReplacedCorrupt => "replaced-corrupt",
            ClaimAction::TookOver => "took-over",
        }
    }
}

/// A successful claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub action: ClaimAction,
    /// The worker as it was judged under the guard, before the claim.
    pub before: Inspection,
    /// The lock now in place.
    pub after: Inspection,
    /// Where a corrupt file was moved.
    pub moved_aside: Option<PathBuf>,
    /// With `--signal-other`: the one-line outcome.
    pub signal: Option<String>,
}

/// The result of a claim.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    Done(Box<Claimed>),
    /// Held by someone else (or cannot be verified): nothing was changed.
    Refused(Box<Inspection>),
}

fn now() -> DateTime<FixedOffset> {
    chrono::Local::now().fixed_offset()
}

/// Builds the record a claimant writes. A refresh by a claimant that names
/// no session keeps the session (and server) already recorded.
fn record_for(
    me: &Claimant,
    start: Option<u64>,
    previous: Option<&LockRecord>,
    probes: &Probes,
) -> LockRecord {
    let host = &probes.host;
    let (session, socket) = match (&me.session, previous) {
        (Some(s), _) => (
            Some(s.clone()),
            me.tmux_socket
                .as_deref()
                .and_then(Path::to_str)
                .map(str::to_string),
        ),
        (None, Some(prev)) => (prev.session_id.clone(), prev.tmux_socket.clone()),
        (None, None) => (None, None),
    };
    LockRecord {
        pid: me.pid,
        acquired_at: Some(now()),
        session_id: session.filter(|s| !s.is_empty()),
        hostname: Some(host.hostname.clone()).filter(|h| !h.is_empty()),
        pid_start: start,
        boot_id: host.boot_id.clone(),
        uid: Some(probes.procs.owner_uid(me.pid).unwrap_or(host.uid)),
        tmux_socket: socket,
        pid_ns: host.pid_ns,
    }
}

/// Checks a claimant PID: it must be a live process.
fn check_claimant(me: &Claimant, probes: &Probes) -> Result<Option<u64>> {
    if me.pid <= 0 {
        return Err(Error::BadPid {
            pid: me.pid.into(),
            why: "not a positive process id".into(),
        });
    }
    match probes.procs.existence(me.pid) {
        Existence::Alive => Ok(probes.procs.start_time(me.pid)),
        _ => Err(Error::BadPid {
            pid: me.pid.into(),
            why: "no such running process; a lock must name a live holder".into(),
        }),
    }
}

/// Claims a worker (SPEC §5 `claim`).
pub fn claim(
    path: &Path,
    me: &Claimant,
    opts: ClaimOptions,
    probes: &Probes,
) -> Result<ClaimOutcome> {
    let my_start = check_claimant(me, probes)?;
    claim_as(path, me, my_start, &opts, probes)
}

/// `claim` for a claimant already checked, whose start time is `my_start`.
fn claim_as(
    path: &Path,
    me: &Claimant,
    my_start: Option<u64>,
    opts: &ClaimOptions,
    probes: &Probes,
) -> Result<ClaimOutcome> {
    let worker = Worker::open(path)?;
    let g = Guarded::enter_or_cancel(&worker, true, opts.cancel.as_deref())?;
    let found = g.read()?;
    let mut before = judge(&worker.dir, &worker.lock_path(), &found, probes);
    if before.state == State::Stale && before.session_alive.is_some() {
        // Replacing: ask tmux again now that the PID was seen dead.
        probes.sessions.refresh();
        before = judge(&worker.dir, &worker.lock_path(), &found, probes);
    }
    let mut moved_aside = None;
    let mut signal = None;
    let mine = |rec: &LockRecord| holds(rec, &Asker::from(me), Scope::Claim, probes);
    let action = match &found {
        Found::Absent => ClaimAction::Claimed,
        Found::Record(rec, _) if mine(rec) => {
            if opts.only_free {
                before.reason = format!("already yours: {}", before.reason);
                return Ok(ClaimOutcome::Refused(Box::new(before)));
            }
            ClaimAction::Refreshed
        }
        Found::Corrupt(_, None) => {
            return Err(Error::UnsafeLock {
                path: worker.lock_path(),
                why: format!("{}; not followed, not replaced", before.reason),
            });
        }
        Found::Corrupt(_, Some(snap)) => {
            moved_aside = g.move_aside(snap)?;
            if moved_aside.is_none() {
                // Changed under us by a tool that ignores the guard: judge again.
                return Err(Error::io(
                    worker.lock_path(),
                    std::io::Error::other("lock file changed while being moved aside; try again"),
                ));
            }
            ClaimAction::ReplacedCorrupt
        }
        Found::Record(..) if before.state == State::Stale => ClaimAction::ReplacedStale,
        Found::Record(rec, _) if opts.force => {
            if opts.signal_other {
                signal = Some(signal_previous(rec, probes));
            }
            ClaimAction::TookOver
        }
        Found::Unreadable(_) if opts.force => ClaimAction::TookOver,
        Found::Record(..) | Found::Unreadable(_) => {
            return Ok(ClaimOutcome::Refused(Box::new(before)));
        }
    };
    let previous = match (&found, action) {
        (Found::Record(rec, _), ClaimAction::Refreshed) => Some(rec),
        _ => None,
    };
    let rec = record_for(me, my_start, previous, probes);
    g.publish(&rec)?;
    let after = Inspection {
        record: Some(rec),
        pid_alive: Some(true),
        session_alive: None,
        ..Inspection::new(&worker, State::Held, format!("claimed by pid {}", me.pid))
    };
    Ok(ClaimOutcome::Done(Box::new(Claimed {
        action,
        before,
        after,
        moved_aside,
        signal,
    })))
}

/// Why `--signal-other` must not signal `pid`, if it must not: PID 1, this
/// process or any of its ancestors, a tmux server, a process of another user,
/// one on another host or PID namespace, or one not proven to be the process
/// that claimed.
fn refuse_signal(rec: &LockRecord, probes: &Probes) -> Option<String> {
    let pid = rec.pid;
    if let Some(why) = verdict::foreign(rec, &probes.host) {
        return Some(why);
    }
    if pid == 1 {
        return Some("it is PID 1".into());
    }
    let me = std::process::id() as i32;
    if pid == me || ancestors(probes.procs, me).contains(&pid) {
        return Some("it is this process or one of its ancestors".into());
    }
    if probes.procs.existence(pid) != Existence::Alive {
        return Some("it is not running".into());
    }
    let Some(recorded) = rec.pid_start else {
        return Some(
            "the lock has no start time, so it cannot be proven to be the process that claimed"
                .into(),
        );
    };
    match probes.procs.start_time(pid) {
        Some(t) if t == recorded => {}
        Some(_) => {
            return Some("the PID now belongs to another process (start time differs)".into());
        }
        None => return Some("its start time cannot be read".into()),
    }
    if probes
        .procs
        .comm(pid)
        .is_some_and(|c| c.starts_with("tmux"))
    {
        return Some("it is a tmux server".into());
    }
    match probes.procs.owner_uid(pid) {
        Some(uid) if uid == probes.host.uid => None,
        Some(uid) => Some(format!("it belongs to uid {uid}, not {}", probes.host.uid)),
        None => Some("its owner cannot be read".into()),
    }
}

/// `--signal-other`: SIGTERM the previous holder when [`refuse_signal`] finds
/// no reason not to. Returns the one-line outcome.
fn signal_previous(rec: &LockRecord, probes: &Probes) -> String {
    let pid = rec.pid;
    if let Some(why) = refuse_signal(rec, probes) {
        return format!("did not signal pid {pid}: {why}");
    }
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    ) {
        Ok(()) => format!("signalled pid {pid} with SIGTERM"),
        Err(e) => format!("did not signal pid {pid}: kill failed: {}", e.desc()),
    }
}

/// What `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    Released,
    AlreadyFree,
    /// `--force` on a corrupt file: moved aside, not deleted.
    MovedAside,
}

impl ReleaseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseAction::Released => "released",
            ReleaseAction::AlreadyFree => "already-free",
            ReleaseAction::MovedAside => "moved-aside",
        }
    }
}

/// The result of a release.
#[derive(Debug, Clone)]
pub enum ReleaseOutcome {
    Done {
        action: ReleaseAction,
        before: Inspection,
        moved_to: Option<PathBuf>,
    },
    /// Held by someone else (or corrupt, without `--force`): nothing changed.
    Refused(Inspection),
}

/// Releases a worker (SPEC §5 `release`).
pub fn release(path: &Path, who: &Asker, force: bool, probes: &Probes) -> Result<ReleaseOutcome> {
    release_where(path, force, probes, &|rec| {
        holds(rec, who, Scope::ActFor, probes)
    })
}

/// Releases the very lock `written` that this process published (`run`,
/// once its command has exited): removed only while the file still holds
/// exactly that record.
pub fn release_written(
    path: &Path,
    written: &LockRecord,
    probes: &Probes,
) -> Result<ReleaseOutcome> {
    release_where(path, false, probes, &|rec| rec == written)
}

fn release_where(
    path: &Path,
    force: bool,
    probes: &Probes,
    is_mine: &dyn Fn(&LockRecord) -> bool,
) -> Result<ReleaseOutcome> {
    let worker = Worker::open(path)?;
    // A worker without .runtime is free: nothing to create, nothing to guard.
    if let Runtime::Missing = open_runtime(&worker, false)? {
        return Ok(ReleaseOutcome::Done {
            action: ReleaseAction::AlreadyFree,
            before: Inspection::new(&worker, State::Free, "no .runtime directory".into()),
            moved_to: None,
        });
    }
    let g = Guarded::enter(&worker, false)?;
    // A tool that ignores the guard may change the file between our read and
    // our compare; judge again then (bounded).
    for _ in 0..5 {
        let found = g.read()?;
        let before = judge(&worker.dir, &worker.lock_path(), &found, probes);
        match &found {
            Found::Absent => {
                return Ok(ReleaseOutcome::Done {
                    action: ReleaseAction::AlreadyFree,
                    before,
                    moved_to: None,
                });
            }
            Found::Unreadable(_) => return Ok(ReleaseOutcome::Refused(before)),
            Found::Corrupt(_, None) => {
                return Err(Error::UnsafeLock {
                    path: worker.lock_path(),
                    why: format!("{}; not followed, not removed", before.reason),
                });
            }
            Found::Corrupt(_, Some(snap)) => {
                if !force {
                    return Ok(ReleaseOutcome::Refused(before));
                }
                if let Some(to) = g.move_aside(snap)? {
                    return Ok(ReleaseOutcome::Done {
                        action: ReleaseAction::MovedAside,
                        before,
                        moved_to: Some(to),
                    });
                }
            }
            Found::Record(rec, snap) => {
                if !force && !is_mine(rec) {
                    return Ok(ReleaseOutcome::Refused(before));
                }
                if g.remove_if_unchanged(snap)? {
                    return Ok(ReleaseOutcome::Done {
                        action: ReleaseAction::Released,
                        before,
                        moved_to: None,
                    });
                }
            }
        }
    }
    Err(Error::io(
        worker.lock_path(),
        std::io::Error::other(
            "lock file keeps changing under the guard; another tool is writing it without the guard",
        ),
    ))
}

/// The result of `claim --first-free`.
#[derive(Debug)]
pub struct FirstFree {
    /// Index into the given workers and the claim, if one was claimed.
    pub claimed: Option<(usize, Box<Claimed>)>,
    /// Each worker tried before it (or all, if none was claimed).
    pub tried: Vec<(PathBuf, Result<Inspection>)>,
}

/// Claims the first worker, in order, that is `free`, `stale` or `corrupt`.
pub fn claim_first_free(paths: &[PathBuf], me: &Claimant, probes: &Probes) -> Result<FirstFree> {
    let my_start = check_claimant(me, probes)?;
    let mut tried = Vec::new();
    let opts = ClaimOptions {
        only_free: true,
        ..ClaimOptions::default()
    };
    for (i, p) in paths.iter().enumerate() {
        match claim_as(p, me, my_start, &opts, probes) {
            Ok(ClaimOutcome::Done(c)) => {
                return Ok(FirstFree {
                    claimed: Some((i, c)),
                    tried,
                });
            }
            Ok(ClaimOutcome::Refused(ins)) => tried.push((p.clone(), Ok(*ins))),
            Err(e) => tried.push((p.clone(), Err(e))),
        }
    }
    Ok(FirstFree {
        claimed: None,
        tried,
    })
}

/// What a guarded repair by `doctor --fix` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixOutcome {
    /// Done: the path removed, or where a corrupt file now is.
    Done(PathBuf),
    /// Not done, and why: the file or its verdict changed since the scan.
    Skipped(String),
    /// Nothing to do: the file is no longer there (released, or a writer
    /// finished its publish).
    Vanished,
}

const CHANGED: &str = "the lock changed since the scan";

/// Removes a lock judged stale: under the guard, re-read it, require the same
/// file with the same bytes, judge it again, and only if still `stale`
/// remove it (compare-and-delete).
pub fn remove_stale(worker_dir: &Path, judged: &Snapshot, probes: &Probes) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    let found = g.read()?;
    let snap = match &found {
        Found::Record(_, snap) => snap,
        Found::Absent => return Ok(FixOutcome::Vanished),
        _ => return Ok(FixOutcome::Skipped(CHANGED.into())),
    };
    if snap != judged {
        return Ok(FixOutcome::Skipped(CHANGED.into()));
    }
    let now = judge(&worker.dir, &worker.lock_path(), &found, probes);
    if now.state != State::Stale {
        return Ok(FixOutcome::Skipped(format!(
            "no longer stale: {}",
            now.reason
        )));
    }
    Ok(if g.remove_if_unchanged(snap)? {
        FixOutcome::Done(worker.lock_path())
    } else {
        FixOutcome::Skipped(CHANGED.into())
    })
}

/// Moves a corrupt lock aside under the guard, if it is unchanged since judged.
pub fn move_corrupt_aside(worker_dir: &Path, judged: &Snapshot) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    Ok(match g.move_aside(judged)? {
        Some(to) => FixOutcome::Done(to),
        None => FixOutcome::Skipped(CHANGED.into()),
    })
}

/// Removes a lock writer's leftover temp file under the guard (a live writer
/// holds the guard while its temp file exists), if `still_leftover` confirms.
pub fn remove_temp(
    worker_dir: &Path,
    temp: &Path,
    still_leftover: impl Fn() -> bool,
) -> Result<FixOutcome> {
    let worker = Worker::open(worker_dir)?;
    let g = Guarded::enter(&worker, false)?;
    let Some(name) = temp.file_name() else {
        return Ok(FixOutcome::Skipped("not a file name".into()));
    };
    if !still_leftover() {
        return Ok(FixOutcome::Skipped(
            "its writer is alive or it is recent".into(),
        ));
    }
    match unlinkat(g.rt.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {
            g.sync_dir()?;
            Ok(FixOutcome::Done(temp.into()))
        }
        Err(Errno::ENOENT) => Ok(FixOutcome::Vanished),
        Err(e) => Err(Error::io(temp, e)),
    }
}
