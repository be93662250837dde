//! The no-follow file layer of one worker: open the worker and its
//! `.runtime` through directory descriptors (`O_NOFOLLOW`, never following a
//! symlink), read `agent.lock` without blocking or reading past the size
//! limit, snapshot it for compare-and-delete, and describe odd file types.

use super::{LOCK_FILE, RUNTIME_DIR};
use crate::error::{Error, Result};
use crate::record::{CorruptReason, LockRecord, MAX_LOCK_BYTES};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

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
pub(crate) fn give_to_owner(worker: &Worker, fd: &impl AsFd, path: &Path) -> Result<()> {
    match worker.owner {
        Some(owner) if nix::unistd::geteuid().is_root() && owner != 0 => {
            nix::unistd::fchown(fd.as_fd(), Some(nix::unistd::Uid::from_raw(owner)), None)
                .map_err(|e| Error::io(path, e))
        }
        _ => Ok(()),
    }
}

/// Why `path` cannot be a worker, if it cannot: the root directory, a
/// `.runtime` directory or anything inside one (the worker meant is named).
pub fn not_a_worker(path: &Path) -> Option<Error> {
    use std::path::Component;
    let refuse = |why: String, meant: Option<PathBuf>| {
        Some(Error::NotAWorker {
            path: path.into(),
            why,
            meant,
        })
    };
    if path.parent().is_none() && path.has_root() {
        return refuse("the root directory holds no agent".into(), None);
    }
    let mut worker = PathBuf::new();
    for c in path.components() {
        if c == Component::Normal(RUNTIME_DIR.as_ref()) {
            let meant = if worker.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                worker
            };
            return refuse(
                format!("it is a {RUNTIME_DIR} directory or inside one"),
                Some(meant),
            );
        }
        worker.push(c);
    }
    None
}

impl Worker {
    /// Opens a worker directory given on the command line, walked without a
    /// race and without another user's symlink ([`super::resolve`]). `/`, a
    /// `.runtime` directory and anything inside one are refused, as given
    /// and as resolved.
    pub fn open(path: &Path) -> Result<Worker> {
        if let Some(e) = not_a_worker(path) {
            return Err(e);
        }
        let (fd, dir) = super::resolve::open_dir(path)?;
        if let Some(e) = not_a_worker(&dir) {
            return Err(e);
        }
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
fn describe_type(at: BorrowedFd<'_>, name: &Path, st: &FileStat) -> String {
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    match kind {
        SFlag::S_IFDIR => "a directory".into(),
        SFlag::S_IFIFO => "a FIFO".into(),
        SFlag::S_IFSOCK => "a socket".into(),
        SFlag::S_IFCHR => "a character device".into(),
        SFlag::S_IFBLK => "a block device".into(),
        SFlag::S_IFLNK => match nix::fcntl::readlinkat(at, name) {
            Ok(t) => format!("a symlink to {}", Path::new(&t).display()),
            Err(_) => "a symlink".into(),
        },
        SFlag::S_IFREG => "a regular file".into(),
        _ => "not a regular file".into(),
    }
}

pub(crate) fn is_type(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

/// `.runtime`, opened without following a symlink.
pub(crate) enum Runtime {
    Missing,
    Dir(File),
    /// A symlink, a file, or anything that is not a plain directory.
    Unsafe(String),
    /// Could not be opened (e.g. permission denied).
    Unreadable(String),
}

pub(crate) fn open_runtime(worker: &Worker, create: bool) -> Result<Runtime> {
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
    let rt = open_runtime_in(
        worker.fd.as_fd(),
        Path::new(RUNTIME_DIR),
        &worker.runtime_path(),
    )?;
    if let (Runtime::Dir(dir), true) = (&rt, created) {
        give_to_owner(worker, dir, &worker.runtime_path())?;
    }
    Ok(rt)
}

/// Opens the `.runtime` directory `name` (relative to `at`, or absolute)
/// without following a symlink; `path` is what messages call it.
pub(crate) fn open_runtime_in(at: BorrowedFd<'_>, name: &Path, path: &Path) -> Result<Runtime> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(at, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Runtime::Dir(File::from(fd))),
        Err(Errno::ENOENT) => Ok(Runtime::Missing),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            Ok(Runtime::Unsafe(not_a_runtime_dir(&describe_at(at, name))))
        }
        Err(e @ (Errno::EACCES | Errno::EPERM)) => Ok(Runtime::Unreadable(format!(
            "cannot open {}: {}",
            path.display(),
            e.desc()
        ))),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Why a `.runtime` that is `what` is not used.
pub(crate) fn not_a_runtime_dir(what: &str) -> String {
    format!("{RUNTIME_DIR} is {what}, not a directory")
}

/// Describes what is at `name` (relative to `at`) without following it.
pub(crate) fn describe_at(at: BorrowedFd<'_>, name: &Path) -> String {
    match fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => describe_type(at, name, &st),
        Err(e) => e.desc().to_string(),
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
    /// No `agent.lock`.
    Absent,
    /// A valid lock record, and the snapshot it was read in.
    Record(LockRecord, Snapshot),
    /// Not a valid record. The snapshot is `None` for a symlink (never touched).
    Corrupt(CorruptReason, Option<Snapshot>),
    /// Exists but cannot be read: permission denied and the like.
    Unreadable(String),
}

pub(crate) fn snapshot_of(st: &FileStat, bytes: Option<Vec<u8>>) -> Snapshot {
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
            let what = describe_type(rt.as_fd(), Path::new(LOCK_FILE), &st);
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
        let what = describe_type(rt.as_fd(), Path::new(LOCK_FILE), &st);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::tests::temp_worker as worker;
    use std::os::unix::fs::symlink;

    fn runtime(w: &Worker) -> File {
        match open_runtime(w, true).unwrap() {
            Runtime::Dir(rt) => rt,
            _ => panic!("no runtime"),
        }
    }

    fn corrupt_what(found: Found) -> (String, bool) {
        match found {
            Found::Corrupt(CorruptReason::NotRegular { what }, snap) => (what, snap.is_some()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_worker_is_its_own_error() {
        let e = Worker::open(Path::new("/nonexistent/agentlock-w")).unwrap_err();
        assert!(matches!(e, Error::NoSuchWorker { .. }), "{e}");
    }

    #[test]
    fn absent_valid_and_corrupt_locks() {
        let (_d, w) = worker();
        let rt = runtime(&w);
        assert!(matches!(
            read_lock(&rt, &w.lock_path()).unwrap(),
            Found::Absent
        ));
        std::fs::write(w.lock_path(), r#"{"pid": 42}"#).unwrap();
        match read_lock(&rt, &w.lock_path()).unwrap() {
            Found::Record(rec, snap) => {
                assert_eq!(rec.pid, 42);
                assert_eq!(snap.bytes.as_deref(), Some(&br#"{"pid": 42}"#[..]));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(w.lock_path(), "{").unwrap();
        assert!(matches!(
            read_lock(&rt, &w.lock_path()).unwrap(),
            Found::Corrupt(CorruptReason::BadJson { .. }, Some(_))
        ));
    }

    #[test]
    fn a_symlinked_lock_is_described_and_never_followed() {
        let (d, w) = worker();
        let rt = runtime(&w);
        let target = d.path().join("elsewhere");
        std::fs::write(&target, r#"{"pid": 42}"#).unwrap();
        symlink(&target, w.lock_path()).unwrap();
        let (what, snapshot) = corrupt_what(read_lock(&rt, &w.lock_path()).unwrap());
        assert_eq!(
            what,
            format!("agent.lock is a symlink to {}", target.display())
        );
        assert!(
            !snapshot,
            "a symlink gets no snapshot, so nothing ever moves it"
        );
    }

    #[test]
    fn a_fifo_lock_is_read_without_blocking() {
        let (_d, w) = worker();
        let rt = runtime(&w);
        nix::unistd::mkfifo(&w.lock_path(), Mode::from_bits_truncate(0o644)).unwrap();
        let (what, snapshot) = corrupt_what(read_lock(&rt, &w.lock_path()).unwrap());
        assert_eq!(what, "agent.lock is a FIFO");
        assert!(snapshot);
    }

    #[test]
    fn an_oversized_lock_is_not_read() {
        let (_d, w) = worker();
        let rt = runtime(&w);
        let f = File::create(w.lock_path()).unwrap();
        f.set_len(MAX_LOCK_BYTES + 1).unwrap();
        match read_lock(&rt, &w.lock_path()).unwrap() {
            Found::Corrupt(CorruptReason::TooLarge { size }, Some(snap)) => {
                assert_eq!(size, MAX_LOCK_BYTES + 1);
                assert!(snap.bytes.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn odd_runtimes_are_described_not_followed() {
        let (d, w) = worker();
        assert!(matches!(open_runtime(&w, false).unwrap(), Runtime::Missing));
        let target = d.path().join("target");
        std::fs::create_dir(&target).unwrap();
        symlink(&target, w.runtime_path()).unwrap();
        match open_runtime(&w, true).unwrap() {
            Runtime::Unsafe(why) => assert_eq!(
                why,
                format!(
                    ".runtime is a symlink to {}, not a directory",
                    target.display()
                )
            ),
            _ => panic!("followed a symlinked .runtime"),
        }
        std::fs::remove_file(w.runtime_path()).unwrap();
        std::fs::write(w.runtime_path(), "").unwrap();
        assert!(matches!(
            open_runtime(&w, true).unwrap(),
            Runtime::Unsafe(why) if why == ".runtime is a regular file, not a directory"
        ));
    }
}
