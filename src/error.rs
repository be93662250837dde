//! Library error type: every variant names the path or PID it is about.

use std::io;
use std::path::PathBuf;

/// Errors from lock operations. A refusal ("held by someone else") is not an
/// error: it is an outcome (see [`crate::lock::ClaimOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The worker directory does not exist.
    #[error("{path}: no such worker directory")]
    NoSuchWorker {
        /// The path as given.
        path: PathBuf,
    },

    /// The worker path exists but is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// The path cannot be a worker: `/`, a `.runtime` directory or anything
    /// inside one. Nothing is created there.
    #[error("{path}: not a worker directory: {why}{}", did_you_mean(.meant.as_deref()))]
    NotAWorker {
        /// The path as given.
        path: PathBuf,
        /// Why.
        why: String,
        /// The worker probably meant (for a path inside a `.runtime`).
        meant: Option<PathBuf>,
    },

    /// `.runtime` is a symlink or not a directory; it is never followed or replaced.
    #[error("{path}: {why}; refusing to follow or replace it")]
    UnsafeRuntime {
        /// The `.runtime` path.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },

    /// `agent.lock` is a symlink, directory, FIFO or other non-regular file that
    /// cannot be moved aside safely.
    #[error("{path}: {why}")]
    UnsafeLock {
        /// The lock (or guard) path.
        path: PathBuf,
        /// What it is, and what was not done.
        why: String,
    },

    /// An I/O operation on a path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The mutation guard could not be taken in time.
    #[error("{path}: guard is held by another process for more than {secs} s")]
    GuardTimeout {
        /// The guard file.
        path: PathBuf,
        /// How long was waited.
        secs: u64,
    },

    /// A PID given on the command line is not usable.
    #[error("pid {pid}: {why}")]
    BadPid {
        /// The PID given.
        pid: i64,
        /// Why it is not usable.
        why: String,
    },

    /// The lock file changed under the guard while it was being replaced,
    /// moved aside or removed: another tool writes it without taking the
    /// guard. Nothing was removed.
    #[error(
        "{path}: the lock file changed under the guard (another tool writes it without taking the guard); nothing was removed, try again"
    )]
    LockChanging {
        /// The lock file.
        path: PathBuf,
    },

    /// `run` was given no command.
    #[error("{path}: no command given")]
    NoCommand {
        /// The worker.
        path: PathBuf,
    },

    /// `run`'s lock was not released when its command ended: it no longer
    /// holds the record `run` wrote.
    #[error("{path}: lock was not released: it is now {state} ({reason})")]
    NotReleased {
        /// The worker.
        path: PathBuf,
        /// What the worker is now.
        state: crate::verdict::State,
        /// Why, in words.
        reason: String,
    },

    /// `--store` is not a store address agentlock knows.
    #[error("--store {store}: {why}")]
    BadStore {
        /// The address as given.
        store: String,
        /// What is wrong with it.
        why: String,
    },

    /// A worker with no name in the fleet store: outside the fleet root,
    /// the root itself, or a path that is not UTF-8 (keys are).
    #[error("{path}: {why}")]
    OutsideFleet {
        /// The worker.
        path: PathBuf,
        /// The fleet root.
        root: PathBuf,
        /// Why it has no name.
        why: String,
    },

    /// The fleet store did not answer (in time).
    #[error("fleet store {endpoints}: {why}")]
    Store {
        /// The endpoints asked.
        endpoints: String,
        /// What went wrong.
        why: String,
    },

    /// The fleet store answered, and refused the request for good (a value
    /// over its size limit, a lease that no longer exists): trying again
    /// would not help.
    #[error("fleet store, {key}: {why}")]
    StoreRejected {
        /// The key (or lease) the request was about.
        key: String,
        /// What the store said, and what it means.
        why: String,
    },

    /// A fleet record changed between being judged and being written (another
    /// host, or this host's keeper, wrote it): nothing was changed.
    #[error(
        "fleet record {key} changed while it was being judged (another host or this host's keeper wrote it); nothing was changed, try again"
    )]
    RecordChanged {
        /// The key.
        key: String,
    },

    /// This host's keeper cannot keep a claim alive (stopped, stalled, or
    /// its lease is about to expire): a claim is not acknowledged on it.
    #[error("this host's keeper (pid {pid}): {why}")]
    Keeper {
        /// The keeper's PID (0: none runs).
        pid: i32,
        /// What is wrong, and what was done.
        why: String,
    },

    /// A signal arrived while waiting (for the guard, or for the worker):
    /// nothing was changed, nothing is held.
    #[error("{path}: interrupted while waiting; nothing was changed")]
    Interrupted {
        /// The guard or lock waited for.
        path: PathBuf,
    },

    /// A claim that expected to get the worker was refused: someone else
    /// holds it (or it cannot be verified). Nothing was changed.
    #[error("{path}: {state}: {reason}")]
    Held {
        /// The worker directory.
        path: PathBuf,
        /// Its state.
        state: crate::verdict::State,
        /// Why, in words.
        reason: String,
    },

    /// A claim waited as long as it was allowed to and the worker was still
    /// taken. Nothing was changed.
    #[error("{path}: still {state} after waiting {waited:.1} s: {reason}")]
    WaitTimedOut {
        /// The worker directory.
        path: PathBuf,
        /// Its state at the end.
        state: crate::verdict::State,
        /// Why, in words.
        reason: String,
        /// How long it waited, in seconds.
        waited: f64,
    },
}

fn did_you_mean(meant: Option<&std::path::Path>) -> String {
    meant
        .map(|m| format!("; did you mean {}?", m.display()))
        .unwrap_or_default()
}

impl Error {
    /// A short stable name of the kind of error, as printed in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoSuchWorker { .. } => "no-such-worker",
            Error::NotADirectory { .. } => "not-a-directory",
            Error::NotAWorker { .. } => "not-a-worker",
            Error::UnsafeRuntime { .. } => "unsafe-runtime",
            Error::UnsafeLock { .. } => "unsafe-lock",
            Error::Io { .. } => "io",
            Error::GuardTimeout { .. } => "guard-timeout",
            Error::BadPid { .. } => "bad-pid",
            Error::Interrupted { .. } => "interrupted",
            Error::LockChanging { .. } => "lock-changing",
            Error::BadStore { .. } => "bad-store",
            Error::OutsideFleet { .. } => "outside-fleet",
            Error::Store { .. } => "store",
            Error::StoreRejected { .. } => "store-rejected",
            Error::RecordChanged { .. } => "record-changed",
            Error::Keeper { .. } => "keeper",
            Error::NoCommand { .. } => "no-command",
            Error::NotReleased { .. } => "not-released",
            Error::Held { .. } => "held",
            Error::WaitTimedOut { .. } => "wait-timed-out",
        }
    }

    /// The path the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::NoSuchWorker { path }
            | Error::NotADirectory { path }
            | Error::NotAWorker { path, .. }
            | Error::UnsafeRuntime { path, .. }
            | Error::UnsafeLock { path, .. }
            | Error::Io { path, .. }
            | Error::GuardTimeout { path, .. }
            | Error::Interrupted { path }
            | Error::LockChanging { path }
            | Error::NoCommand { path }
            | Error::NotReleased { path, .. }
            | Error::OutsideFleet { path, .. }
            | Error::Held { path, .. }
            | Error::WaitTimedOut { path, .. } => Some(path),
            Error::BadPid { .. }
            | Error::BadStore { .. }
            | Error::Store { .. }
            | Error::StoreRejected { .. }
            | Error::RecordChanged { .. }
            | Error::Keeper { .. } => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
