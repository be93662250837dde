//! The mutation guard: an exclusive `flock` on
//! `.runtime/agent.lock.flock` (the Go tool's guard file, never deleted), and
//! the only mutations there are, made while it is held: atomic publish (temp
//! file, `fsync`, `rename`, directory `fsync`), compare-and-delete and
//! compare-and-move.

use super::fs::{Found, Runtime, Snapshot, Worker, give_to_owner, open_runtime, read_lock};
use super::{CORRUPT_PREFIX, GUARD_FILE, GUARD_TIMEOUT, LOCK_FILE, TEMP_PREFIX};
use crate::error::{Error, Result};
use crate::record::LockRecord;
use chrono::Utc;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The exclusive mutation guard; released on drop.
pub struct Guard {
    _lock: Flock<File>,
}

impl Guard {
    /// Takes the guard on `.runtime/agent.lock.flock`, creating it if needed,
    /// waiting at most `timeout`, and giving up early when `cancel` is set.
    /// The guard is opened read-only (`flock` needs no more), so a guard
    /// another user created never locks anyone out.
    pub(crate) fn take(
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
pub(crate) struct Guarded<'w> {
    worker: &'w Worker,
    rt: File,
    _guard: Guard,
}

impl<'w> Guarded<'w> {
    /// Takes the guard, creating `.runtime` first if `create`. A symlinked or
    /// non-directory `.runtime` is an error.
    pub(crate) fn enter(worker: &'w Worker, create: bool) -> Result<Guarded<'w>> {
        Self::enter_or_cancel(worker, create, None)
    }

    /// [`Guarded::enter`], giving up when `cancel` is set while waiting.
    pub(crate) fn enter_or_cancel(
        worker: &'w Worker,
        create: bool,
        cancel: Option<&AtomicBool>,
    ) -> Result<Guarded<'w>> {
        Self::enter_within(worker, create, GUARD_TIMEOUT, cancel)
    }

    /// [`Guarded::enter`], waiting at most `timeout` for the guard.
    pub(crate) fn enter_within(
        worker: &'w Worker,
        create: bool,
        timeout: std::time::Duration,
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
        let guard = Guard::take(worker, &rt, timeout, cancel)?;
        Ok(Guarded {
            worker,
            rt,
            _guard: guard,
        })
    }

    /// The open `.runtime` directory.
    pub(crate) fn dir(&self) -> &File {
        &self.rt
    }

    pub(crate) fn read(&self) -> Result<Found> {
        read_lock(&self.rt, &self.worker.lock_path())
    }

    /// Atomically publishes `rec` as `agent.lock`.
    pub(crate) fn publish(&self, rec: &LockRecord) -> Result<()> {
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

    pub(crate) fn sync_dir(&self) -> Result<()> {
        nix::unistd::fsync(self.rt.as_fd()).map_err(|e| Error::io(self.worker.runtime_path(), e))
    }

    /// True if `agent.lock` is still exactly what `snap` saw: same inode and
    /// same bytes (or same size and mtime for files that are not read).
    pub(crate) fn unchanged(&self, snap: &Snapshot) -> Result<bool> {
        let now = match self.read()? {
            Found::Record(_, s) => s,
            Found::Corrupt(_, Some(s)) => s,
            _ => return Ok(false),
        };
        Ok(now == *snap)
    }

    /// Compare-and-delete: removes `agent.lock` only if unchanged since `snap`.
    pub(crate) fn remove_if_unchanged(&self, snap: &Snapshot) -> Result<bool> {
        if !self.unchanged(snap)? {
            return Ok(false);
        }
        unlinkat(self.rt.as_fd(), LOCK_FILE, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| Error::io(self.worker.lock_path(), e))?;
        self.sync_dir()?;
        Ok(true)
    }

    /// Removes the entry `name` of `.runtime` (`path` in messages): true if
    /// removed, false if it was already gone.
    pub(crate) fn remove_entry(
        &self,
        name: &std::ffi::OsStr,
        path: &std::path::Path,
    ) -> Result<bool> {
        match unlinkat(self.rt.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Compare-and-move: renames a corrupt `agent.lock` aside to
    /// `agent.lock.corrupt-<UTC timestamp>` (never replacing anything).
    pub(crate) fn move_aside(&self, snap: &Snapshot) -> Result<Option<PathBuf>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::tests::temp_worker as worker;

    fn snapshot(g: &Guarded) -> Snapshot {
        match g.read().unwrap() {
            Found::Record(_, s) => s,
            Found::Corrupt(_, Some(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    fn entries(w: &Worker) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(w.runtime_path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publish_is_whole_and_leaves_no_temp_file() {
        let (_d, w) = worker();
        let g = Guarded::enter(&w, true).unwrap();
        let rec = LockRecord {
            pid: 42,
            ..LockRecord::default()
        };
        g.publish(&rec).unwrap();
        assert!(matches!(g.read().unwrap(), Found::Record(r, _) if r.pid == rec.pid));
        assert_eq!(entries(&w), [LOCK_FILE, GUARD_FILE]);
    }

    #[test]
    fn compare_and_delete_spares_a_changed_lock() {
        let (_d, w) = worker();
        let g = Guarded::enter(&w, true).unwrap();
        g.publish(&LockRecord {
            pid: 42,
            ..LockRecord::default()
        })
        .unwrap();
        let seen = snapshot(&g);
        // Rewritten by another writer (same size, new bytes) after it was seen.
        g.publish(&LockRecord {
            pid: 43,
            ..LockRecord::default()
        })
        .unwrap();
        assert!(!g.remove_if_unchanged(&seen).unwrap());
        assert!(w.lock_path().exists());
        let now = snapshot(&g);
        assert!(g.remove_if_unchanged(&now).unwrap());
        assert!(!w.lock_path().exists());
    }

    #[test]
    fn move_aside_keeps_the_bytes_and_never_replaces() {
        let (_d, w) = worker();
        let g = Guarded::enter(&w, true).unwrap();
        std::fs::write(w.lock_path(), "{broken").unwrap();
        let first = g.move_aside(&snapshot(&g)).unwrap().unwrap();
        std::fs::write(w.lock_path(), "{broken too").unwrap();
        let second = g.move_aside(&snapshot(&g)).unwrap().unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "{broken");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "{broken too");
        assert!(!w.lock_path().exists());
    }

    #[test]
    fn a_held_guard_times_out_or_is_cancelled() {
        let (_d, w) = worker();
        let g = Guarded::enter(&w, true).unwrap();
        let rt = match super::super::fs::open_runtime(&w, false).unwrap() {
            Runtime::Dir(rt) => rt,
            _ => panic!(),
        };
        let e = Guard::take(&w, &rt, Duration::from_millis(20), None)
            .err()
            .unwrap();
        assert!(matches!(e, Error::GuardTimeout { .. }), "{e}");
        let cancel = AtomicBool::new(true);
        let e = Guard::take(&w, &rt, Duration::from_secs(30), Some(&cancel))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Interrupted { .. }), "{e}");
        drop(g);
        assert!(Guard::take(&w, &rt, Duration::from_millis(20), None).is_ok());
    }
}
