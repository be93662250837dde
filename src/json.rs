//! The `--json` documents, as types: what `agentlock` prints and what a
//! library user can print the same way. One contract for every command:
//!
//! - every document carries `"schema": 1` and `"error"` (`null`, or one
//!   object `{"kind", "message", "path"}` with the whole message);
//! - a worker is always the same object ([`WorkerEntry`]), with the same keys
//!   with and without the fleet store (`store`, `store_key` and `fence` are
//!   `null` on lock files), `"standing"` saying where the asker stands, and
//!   `"error"` set instead of the verdict when it could not be judged;
//! - paths are absolute; a path that is not UTF-8 is written lossily and the
//!   object says `"paths_lossy": true`.
//!
//! The keys are documented, one by one, in `docs/json.md`.
//!
//! ```
//! use agentlock::json::{WorkerEntry, WorkersDoc};
//! use agentlock::lock::{self, Asker, LiveProbes};
//!
//! let worker = tempfile::tempdir()?;
//! let live = LiveProbes::new(Default::default());
//! let probes = live.probes();
//! let judged = lock::judge(&worker, &probes)?;
//! let standing = judged.standing(&Asker::this_process(), &probes);
//! let doc = WorkersDoc::new(vec![WorkerEntry::judged(&judged, standing, &probes)]);
//! let v: serde_json::Value = serde_json::to_value(&doc)?;
//! assert_eq!(v["schema"], 1);
//! assert_eq!(v["workers"][0]["state"], "free");
//! assert_eq!(v["workers"][0]["standing"], "claimable");
//! assert!(v["error"].is_null());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::doctor::{Finding, Fixed, Report};
use crate::lock::{Judgement, Standing};
use crate::paths::{is_lossy, ser_path};
use crate::probe::Probes;
use crate::probe::tmux::{ServerReport, TmuxSnapshot};
use crate::verdict::State;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The version of the JSON contract every document carries as `"schema"`.
pub const SCHEMA: u32 = 1;

/// An error: `{"kind", "message", "path"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorJson {
    /// Stable name of the kind of error (`no-such-worker`, `io`, `usage`, ...).
    pub kind: String,
    /// The whole message, as said on stderr (unescaped).
    pub message: String,
    /// The path it is about (absolute), or `null`.
    pub path: Option<String>,
}

impl ErrorJson {
    /// The JSON form of a library error.
    pub fn of(e: &crate::Error) -> ErrorJson {
        ErrorJson {
            kind: e.kind().into(),
            message: e.to_string(),
            path: e.path().map(|p| absolute(p).to_string_lossy().into_owned()),
        }
    }

    /// An error that is not a library error (usage, output).
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorJson {
        ErrorJson {
            kind: kind.into(),
            message: message.into(),
            path: None,
        }
    }
}

/// A recorded time in RFC 3339 with its recorded offset, with as many
/// fraction digits as it needs (none, 3, 6 or 9).
fn rfc3339(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One worker: an element of `"workers"` (`status`, `check`, `claim`,
/// `release`) and of `"locks"` (`list`, `doctor`). Every key is always
/// present; what does not apply is `null` (or `[]`, `false`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerEntry {
    /// The worker directory.
    #[serde(serialize_with = "ser_path")]
    pub worker_dir: PathBuf,
    /// Its lock file, `<worker>/.runtime/agent.lock`.
    #[serde(serialize_with = "ser_path")]
    pub lock_path: PathBuf,
    /// The verdict (`null` when the worker could not be judged).
    pub state: Option<State>,
    /// Where the asker stands: `yours`, `claimable` or `taken` (`null` when
    /// it could not be judged).
    pub standing: Option<Standing>,
    /// Why, in words (`null` when it could not be judged).
    pub reason: Option<String>,
    /// The recorded holder PID.
    pub pid: Option<i32>,
    /// Whether that process is alive (`null`: not known, or not asked).
    pub pid_alive: Option<bool>,
    /// The holder's command name (`/proc/PID/comm`), when the holder is a
    /// live process visible from here.
    pub command: Option<String>,
    /// The recorded tmux session or pane.
    pub session_id: Option<String>,
    /// Whether it is alive (`null`: none recorded, or cannot be told).
    pub session_alive: Option<bool>,
    /// The recorded tmux server socket (written by agentlock only).
    pub tmux_socket: Option<String>,
    /// The recorded host name.
    pub hostname: Option<String>,
    /// When the lock was taken, RFC 3339 with the recorded offset.
    pub acquired_at: Option<String>,
    /// What the command did: `claimed`, `refreshed`, `took-over`,
    /// `released`, `refused`, ... (`null` for read-only commands).
    pub action: Option<String>,
    /// Where a corrupt lock was moved aside.
    pub moved_aside: Option<String>,
    /// What `--signal-other` did, in words.
    pub signal: Option<String>,
    /// The fleet store's address (`null` on lock files).
    pub store: Option<String>,
    /// The worker's key in the fleet store (`null` on lock files).
    pub store_key: Option<String>,
    /// The holder's fence in the fleet store (`null` on lock files).
    pub fence: Option<i64>,
    /// Warnings also said on stderr.
    pub warnings: Vec<String>,
    /// Why the default holder may not outlive the claim, when it may not.
    pub holder_warning: Option<String>,
    /// A path of this entry is not UTF-8 and was written lossily.
    pub paths_lossy: bool,
    /// Why the worker could not be judged, or `null`.
    pub error: Option<ErrorJson>,
}

/// `<worker>/.runtime/agent.lock`.
fn lock_file(worker_dir: &Path) -> PathBuf {
    worker_dir
        .join(crate::lock::RUNTIME_DIR)
        .join(crate::lock::LOCK_FILE)
}

impl WorkerEntry {
    /// The entry of `worker_dir` with nothing known of it: every other key
    /// `null`, `[]` or `false` (its lock file, and whether a path is lossy,
    /// derived).
    fn blank(worker_dir: PathBuf) -> WorkerEntry {
        WorkerEntry {
            lock_path: lock_file(&worker_dir),
            paths_lossy: is_lossy(&worker_dir),
            worker_dir,
            state: None,
            standing: None,
            reason: None,
            pid: None,
            pid_alive: None,
            command: None,
            session_id: None,
            session_alive: None,
            tmux_socket: None,
            hostname: None,
            acquired_at: None,
            action: None,
            moved_aside: None,
            signal: None,
            store: None,
            store_key: None,
            fence: None,
            warnings: Vec::new(),
            holder_warning: None,
            error: None,
        }
    }

    /// A judged worker, where `standing` is where the asker stands with it;
    /// `probes` name the holder's command.
    pub fn judged(j: &Judgement, standing: Standing, probes: &Probes) -> WorkerEntry {
        let rec = j.record.as_ref();
        WorkerEntry {
            lock_path: j.lock_path.clone(),
            state: Some(j.state),
            standing: Some(standing),
            reason: Some(j.reason.clone()),
            pid: rec.map(|r| r.pid),
            pid_alive: j.pid_alive,
            command: j.holder_command(probes),
            session_id: rec.and_then(|r| r.session_id.clone()),
            session_alive: j.session_alive,
            tmux_socket: rec.and_then(|r| r.tmux_socket.clone()),
            hostname: rec.and_then(|r| r.hostname.clone()),
            acquired_at: rec.and_then(|r| r.acquired_at.as_ref()).map(rfc3339),
            ..WorkerEntry::blank(j.worker_dir.clone())
        }
    }

    /// A worker that could not be judged: `error` says why.
    pub fn failed(worker: &Path, e: &crate::Error) -> WorkerEntry {
        WorkerEntry {
            error: Some(ErrorJson::of(e)),
            ..WorkerEntry::blank(absolute(worker))
        }
    }

    /// With the action the command took.
    pub fn with_action(mut self, action: &str) -> WorkerEntry {
        self.action = Some(action.into());
        self
    }

    /// A fleet store's record: the store's address, the worker's key and the
    /// holder's fence. `lock_path` stays the worker's lock file.
    pub fn on_store(mut self, store: &str, key: &str, fence: Option<i64>) -> WorkerEntry {
        self.lock_path = lock_file(&self.worker_dir);
        self.store = Some(store.into());
        self.store_key = Some(key.into());
        self.fence = fence;
        self
    }
}

/// `status`, `check`, `claim` and `release`: `{"schema", "workers",
/// "waited", "error"}`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersDoc {
    /// [`SCHEMA`].
    pub schema: u32,
    /// One entry per worker asked about (or tried, with `--first-free`).
    pub workers: Vec<WorkerEntry>,
    /// With `--wait`: how long it waited, in seconds (`null` without).
    pub waited: Option<f64>,
    /// What failed, or `null`.
    pub error: Option<ErrorJson>,
}

impl WorkersDoc {
    /// The document for `workers`, without an error.
    pub fn new(workers: Vec<WorkerEntry>) -> WorkersDoc {
        WorkersDoc {
            schema: SCHEMA,
            workers,
            waited: None,
            error: None,
        }
    }

    /// With how long it waited (milliseconds precision).
    pub fn waited(mut self, waited: Option<Duration>) -> WorkersDoc {
        self.waited = waited.map(|w| (w.as_secs_f64() * 1000.0).round() / 1000.0);
        self
    }

    /// With an error beside (or instead of) the results.
    pub fn error(mut self, error: Option<ErrorJson>) -> WorkersDoc {
        self.error = error;
        self
    }
}

/// How many directories and locks a tree command looked at.
#[derive(Debug, Clone, Serialize)]
pub struct Scanned {
    /// Directories walked (`null` when the fleet store was read instead).
    pub dirs: Option<usize>,
    /// Locks found.
    pub locks: usize,
}

/// What tmux told: `known` when every server answered.
#[derive(Debug, Clone, Serialize)]
pub struct TmuxJson {
    /// `known` or `unknown`.
    pub state: &'static str,
    /// Each server asked and its answer.
    pub servers: Vec<ServerReport>,
}

impl TmuxJson {
    /// The JSON form of what one run learned from tmux.
    pub fn of(tmux: &TmuxSnapshot) -> TmuxJson {
        TmuxJson {
            state: if tmux.is_known() { "known" } else { "unknown" },
            servers: tmux.servers.clone(),
        }
    }
}

/// `list` and `doctor`: one object for the tree (or the fleet store).
#[derive(Debug, Clone, Serialize)]
pub struct TreeDoc {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The root scanned.
    #[serde(serialize_with = "ser_path")]
    pub root: PathBuf,
    /// The fleet store's address (`null` on lock files).
    pub store: Option<String>,
    /// What was looked at.
    pub scanned: Scanned,
    /// What tmux told.
    pub tmux: TmuxJson,
    /// Every lock found, one entry per worker.
    pub locks: Vec<WorkerEntry>,
    /// What `doctor` found (always empty for `list`).
    pub findings: Vec<Finding>,
    /// What `doctor --fix` repaired.
    pub fixed: Vec<Fixed>,
    /// A path in this document is not UTF-8 and was written lossily.
    pub paths_lossy: bool,
    /// What failed (a `--fix` that could not be applied), or `null`.
    pub error: Option<ErrorJson>,
}

impl TreeDoc {
    /// The document of a scanned tree; `locks` are its entries (with their
    /// standing).
    pub fn of(report: &Report, tmux: &TmuxSnapshot, locks: Vec<WorkerEntry>) -> TreeDoc {
        let paths_lossy = is_lossy(&report.root)
            || locks.iter().any(|l| l.paths_lossy)
            || report.findings.iter().any(|f| is_lossy(&f.worker_dir))
            || report.fixed.iter().any(|f| is_lossy(&f.path));
        TreeDoc {
            schema: SCHEMA,
            root: report.root.clone(),
            store: None,
            scanned: Scanned {
                dirs: Some(report.dirs),
                locks: report.locks.len(),
            },
            tmux: TmuxJson::of(tmux),
            locks,
            findings: report.findings.clone(),
            fixed: report.fixed.clone(),
            paths_lossy,
            error: None,
        }
    }
}

/// A command that failed before it had any result: `{"schema", "root",
/// "error"}` (`root` is `null` but for `list` and `doctor`). It has no results on
/// purpose: a consumer reading `.findings` or `.workers` fails loudly
/// instead of reading "nothing found".
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDoc {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The root of `list` / `doctor`.
    pub root: Option<String>,
    /// What failed.
    pub error: ErrorJson,
}

impl ErrorDoc {
    /// The document for `error`.
    pub fn new(root: Option<&Path>, error: ErrorJson) -> ErrorDoc {
        ErrorDoc {
            schema: SCHEMA,
            root: root.map(|r| r.to_string_lossy().into_owned()),
            error,
        }
    }
}

/// A document, pretty-printed. Everything here serializes; should a
/// serializer ever fail, the failure itself is printed as an [`ErrorDoc`].
pub fn to_string<T: Serialize>(doc: &T) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_else(|e| {
        let doc = ErrorDoc::new(
            None,
            ErrorJson::new("internal", format!("cannot encode JSON: {e}")),
        );
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    })
}
