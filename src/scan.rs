//! Tree scan: find every `<worker>/.runtime/agent.lock` under a root, fast.
//!
//! A parallel walker (the `ignore` crate's, as `fd` uses; chosen by
//! measurement, see `examples/walkers.rs`) visits every directory without
//! following symlinks and without a `stat` per entry: the directory entry's
//! type decides. `.runtime/` is not descended into; its entries are read once
//! to find the lock and leftover temp files. Directories named `.git`,
//! `.dolt-data`, `.dolt-backup` and `node_modules` are skipped unless told
//! otherwise. Unreadable or vanished directories become [`ScanError`]s, never
//! silently dropped.
//!
//! ```
//! use agentlock::scan::{scan, Progress, ScanOptions};
//!
//! let town = tempfile::tempdir()?;
//! for name in ["max/.runtime", "ada", "node_modules/x/.runtime"] {
//!     std::fs::create_dir_all(town.path().join(name))?;
//! }
//! std::fs::write(town.path().join("max/.runtime/agent.lock"), r#"{"pid": 4242}"#)?;
//! std::fs::write(town.path().join("node_modules/x/.runtime/agent.lock"), "{}")?;
//!
//! let result = scan(&town, &ScanOptions::default(), &Progress::default())?;
//! // One lock: node_modules is skipped by default.
//! assert_eq!(result.locks.len(), 1);
//! assert!(result.locks[0].worker_dir.ends_with("max"));
//! assert!(result.errors.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{Error, Result};
use crate::lock::fs::{self, Runtime};
use crate::lock::{Found, LOCK_FILE, RUNTIME_DIR, TEMP_PREFIX};
use crate::record::CorruptReason;
use nix::fcntl::AT_FDCWD;
use nix::libc;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

/// Directory names skipped by default.
pub const DEFAULT_SKIPS: &[&str] = &[".git", ".dolt-data", ".dolt-backup", "node_modules"];

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Deepest worker directory to look at, ROOT itself being depth 0.
    pub max_depth: Option<usize>,
    /// Extra directory names to skip.
    pub skip: Vec<OsString>,
    /// Skip [`DEFAULT_SKIPS`] too.
    pub default_skips: bool,
    /// Walker threads (0: one per core).
    pub threads: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_depth: None,
            skip: Vec::new(),
            default_skips: true,
            threads: 0,
        }
    }
}

impl ScanOptions {
    fn skip_set(&self) -> Vec<OsString> {
        let mut names = self.skip.clone();
        if self.default_skips {
            names.extend(DEFAULT_SKIPS.iter().map(OsString::from));
        }
        names
    }
}

/// Counters a progress display may read while the scan runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Directories visited so far.
    pub dirs: AtomicUsize,
    /// Locks found so far.
    pub locks: AtomicUsize,
}

/// A lock (or something where a lock should be) found in one worker.
#[derive(Debug, Clone)]
pub struct FoundLock {
    /// The worker directory.
    pub worker_dir: PathBuf,
    /// Its `.runtime/agent.lock`.
    pub lock_path: PathBuf,
    /// What is there.
    pub found: Found,
}

/// A temp file left by a lock writer: `agent.lock.tmp.<pid>.<random>` (ours)
/// or `agent.lock.tmp` (the Go tool's).
#[derive(Debug, Clone)]
pub struct TempFile {
    /// The worker directory.
    pub worker_dir: PathBuf,
    /// The temp file.
    pub path: PathBuf,
    /// The writer's PID, from our naming scheme; `None` for the Go tool's name.
    pub writer_pid: Option<i32>,
    /// When it was last written.
    pub modified: Option<SystemTime>,
    /// A waiter's ticket (`agent.lock.wait.<n>`), not a writer's temp file.
    pub ticket: bool,
}

/// A directory that could not be read, or vanished during the scan.
#[derive(Debug, Clone)]
pub struct ScanError {
    /// The directory.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Everything a scan found, sorted by path.
#[derive(Debug, Clone, Default)]
pub struct ScanResult {
    /// Canonical root.
    pub root: PathBuf,
    /// Directories visited.
    pub dirs: usize,
    /// Every lock found, sorted by worker path.
    pub locks: Vec<FoundLock>,
    /// Every lock writer's temp file found, sorted by path.
    pub temps: Vec<TempFile>,
    /// Every directory that could not be read, sorted by path.
    pub errors: Vec<ScanError>,
}

/// Parses our temp file name `agent.lock.tmp.<pid>.<random>`; `Some(None)`
/// for the Go tool's fixed `agent.lock.tmp`; `None` if not a temp file.
pub fn temp_writer(name: &str) -> Option<Option<i32>> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    if rest.is_empty() {
        return Some(None);
    }
    let (pid, _random) = rest.strip_prefix('.')?.split_once('.')?;
    pid.parse().ok().filter(|p| *p > 0).map(Some)
}

#[derive(Default)]
struct Acc {
    locks: Vec<FoundLock>,
    temps: Vec<TempFile>,
    errors: Vec<ScanError>,
}

/// Reads one `.runtime` directory: the lock and any temp files.
fn visit_runtime(rt_path: &Path, worker_dir: &Path, acc: &Mutex<Acc>, progress: &Progress) {
    let lock_path = rt_path.join(LOCK_FILE);
    let rt = match fs::open_runtime_in(AT_FDCWD, rt_path, rt_path) {
        Ok(Runtime::Dir(rt)) => rt,
        Ok(Runtime::Missing) => return, // vanished: nothing there now
        Ok(Runtime::Unreadable(why)) => {
            progress.locks.fetch_add(1, Ordering::Relaxed);
            acc.lock().unwrap().locks.push(FoundLock {
                worker_dir: worker_dir.into(),
                lock_path,
                found: Found::Unreadable(why),
            });
            return;
        }
        // Swapped for a symlink or a file since the walker saw a directory.
        Ok(Runtime::Unsafe(why)) => return odd_runtime(rt_path, worker_dir, why, acc, progress),
        Err(e) => {
            acc.lock().unwrap().errors.push(ScanError {
                path: rt_path.into(),
                message: e.to_string(),
            });
            return;
        }
    };
    // List through the fd opened with O_NOFOLLOW: a `.runtime` swapped for a
    // symlink after that open is never followed.
    let entries = match nix::unistd::dup(&rt).and_then(nix::dir::Dir::from_fd) {
        Ok(d) => d,
        Err(e) => {
            acc.lock().unwrap().errors.push(ScanError {
                path: rt_path.into(),
                message: e.desc().into(),
            });
            return;
        }
    };
    let mut has_lock = false;
    let mut temps = Vec::new();
    for e in entries.into_iter().flatten() {
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if name == LOCK_FILE {
            has_lock = true;
        } else if let Some((writer_pid, ticket)) = temp_writer(name)
            .map(|w| (w, false))
            .or_else(|| crate::wait::queue::is_ticket(name).then_some((None, true)))
        {
            let st =
                nix::sys::stat::fstatat(&rt, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok();
            if let Some(st) = st.filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG) {
                temps.push(TempFile {
                    worker_dir: worker_dir.into(),
                    path: rt_path.join(name),
                    writer_pid,
                    ticket,
                    modified: SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
                        st.st_mtime.max(0) as u64,
                        st.st_mtime_nsec as u32,
                    )),
                });
            }
        }
    }
    let found = if has_lock {
        match fs::read_lock(&rt, &lock_path) {
            Ok(Found::Absent) => None,
            Ok(found) => Some(found),
            Err(e) => {
                acc.lock().unwrap().errors.push(ScanError {
                    path: lock_path.clone(),
                    message: e.to_string(),
                });
                None
            }
        }
    } else {
        None
    };
    let mut acc = acc.lock().unwrap();
    if let Some(found) = found {
        progress.locks.fetch_add(1, Ordering::Relaxed);
        acc.locks.push(FoundLock {
            worker_dir: worker_dir.into(),
            lock_path,
            found,
        });
    }
    acc.temps.extend(temps);
}

/// A `.runtime` that is not a directory (`why` says what it is): reported
/// as a corrupt lock, never followed.
fn odd_runtime(
    rt_path: &Path,
    worker_dir: &Path,
    why: String,
    acc: &Mutex<Acc>,
    progress: &Progress,
) {
    progress.locks.fetch_add(1, Ordering::Relaxed);
    acc.lock().unwrap().locks.push(FoundLock {
        worker_dir: worker_dir.into(),
        lock_path: rt_path.join(LOCK_FILE),
        found: Found::Corrupt(CorruptReason::NotRegular { what: why }, None),
    });
}

/// Scans `root` for locks.
pub fn scan(root: impl AsRef<Path>, opts: &ScanOptions, progress: &Progress) -> Result<ScanResult> {
    let root = root.as_ref();
    let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    if !root.is_dir() {
        return Err(Error::NotADirectory { path: root });
    }
    let skips = opts.skip_set();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    };
    let acc = Mutex::new(Acc::default());
    ignore::WalkBuilder::new(&root)
        .standard_filters(false)
        .follow_links(false)
        .max_depth(opts.max_depth.map(|d| d + 1))
        .threads(threads)
        .build_parallel()
        .run(|| {
            let (acc, skips, root) = (&acc, &skips, root.as_path());
            Box::new(move |entry| {
                let entry = match entry {
                    Ok(e) => e,
                    Err(err) => {
                        let path = error_path(&err);
                        acc.lock().unwrap().errors.push(ScanError {
                            path,
                            message: io_message(&err),
                        });
                        return ignore::WalkState::Continue;
                    }
                };
                let Some(ft) = entry.file_type() else {
                    return ignore::WalkState::Continue;
                };
                let name = entry.file_name();
                if name == RUNTIME_DIR && entry.depth() > 0 {
                    let worker = entry.path().parent().unwrap_or(root);
                    if ft.is_dir() {
                        visit_runtime(entry.path(), worker, acc, progress);
                        return ignore::WalkState::Skip;
                    }
                    let what = fs::describe_at(AT_FDCWD, entry.path());
                    let why = fs::not_a_runtime_dir(&what);
                    odd_runtime(entry.path(), worker, why, acc, progress);
                    return ignore::WalkState::Continue;
                }
                if ft.is_dir() {
                    if entry.depth() > 0 && skips.iter().any(|s| s == name) {
                        return ignore::WalkState::Skip;
                    }
                    progress.dirs.fetch_add(1, Ordering::Relaxed);
                    // A worker deeper than --max-depth is not looked at: its
                    // .runtime would be one level further, beyond the walk.
                }
                ignore::WalkState::Continue
            })
        });
    let acc = acc.into_inner().unwrap();
    let mut result = ScanResult {
        root,
        dirs: progress.dirs.load(Ordering::Relaxed),
        locks: acc.locks,
        temps: acc.temps,
        errors: acc.errors,
    };
    result.locks.sort_by(|a, b| a.worker_dir.cmp(&b.worker_dir));
    result.temps.sort_by(|a, b| a.path.cmp(&b.path));
    result.errors.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(result)
}

fn error_path(err: &ignore::Error) -> PathBuf {
    match err {
        ignore::Error::WithPath { path, .. } => path.clone(),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => child.clone(),
        _ => PathBuf::new(),
    }
}

fn io_message(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => io_message(err),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(temp_writer("agent.lock.tmp"), Some(None));
        assert_eq!(
            temp_writer("agent.lock.tmp.1234.aB3xYz09Qw"),
            Some(Some(1234))
        );
        assert_eq!(temp_writer("agent.lock.tmp.0.x"), None);
        assert_eq!(temp_writer("agent.lock.tmp.abc.x"), None);
        assert_eq!(temp_writer("agent.lock.tmpx"), None);
        assert_eq!(temp_writer("agent.lock"), None);
    }
}
