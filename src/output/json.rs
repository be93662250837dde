//! The `--json` documents: one object per run, built from what
//! the library found. Nothing here decides anything.

use agentlock::doctor::{Finding, Fixed, Report};
use agentlock::lock::Judgement;
use agentlock::paths::{is_lossy, ser_opt_path, ser_path};
use agentlock::probe::tmux::{ServerReport, TmuxSnapshot};
use agentlock::record::format_time;
use agentlock::verdict::State;
use serde::Serialize;
use std::path::Path;

/// An error as printed in JSON: `{"kind", "message", "path"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorJson {
    /// Stable name of the kind of error (`no-such-worker`, `io`, `usage`, ...).
    pub kind: String,
    /// The one line also printed on stderr.
    pub message: String,
    /// The path it is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The line for stderr: escaped, hints shell-quoted.
    #[serde(skip)]
    pub human: String,
}

impl ErrorJson {
    /// The JSON form of a library error.
    pub fn of(e: &agentlock::Error) -> ErrorJson {
        ErrorJson {
            kind: e.kind().into(),
            message: e.to_string(),
            path: e.path().map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.to_path_buf())
                    .to_string_lossy()
                    .into_owned()
            }),
            human: super::text::error_text(e),
        }
    }

    /// An error that is not a library error (usage, output).
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorJson {
        let message = message.into();
        ErrorJson {
            kind: kind.into(),
            human: super::text::esc(&message),
            message,
            path: None,
        }
    }
}

/// A JSON document, pretty-printed. Everything printed serializes; should a
/// serializer ever fail, the failure itself is printed as the error object.
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| {
        let err = ErrorJson::new("internal", format!("cannot encode JSON: {e}"));
        format!(
            "{{\n  \"error\": {}\n}}",
            serde_json::to_string(&err).unwrap_or_default()
        )
    })
}

/// One worker as printed by `status`, `check`, `claim`, `release` (and the
/// `locks` array of `list`/`doctor`).
#[derive(Debug, Clone, Serialize)]
pub struct LockEntry<'a> {
    #[serde(serialize_with = "ser_path")]
    pub worker_dir: &'a Path,
    #[serde(serialize_with = "ser_path")]
    pub lock_path: &'a Path,
    pub state: State,
    pub pid: Option<i32>,
    pub pid_alive: Option<bool>,
    pub session_id: Option<&'a str>,
    pub session_alive: Option<bool>,
    pub hostname: Option<&'a str>,
    pub acquired_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmux_socket: Option<&'a str>,
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub moved_aside: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'a str>,
    /// Fleet store: the holder's fence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<i64>,
    /// Fleet store: where the record is kept (the store address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'a str>,
    /// Warnings said on stderr (a session that does not exist now, ...).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
    /// Why the default holder may not outlive the claim (a process manager
    /// agentlock may have been reparented to), when it may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_warning: Option<&'a str>,
    /// A path of this entry is not UTF-8 and was written lossily.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paths_lossy: bool,
}

/// One element of `"workers"`: a judged worker, or a worker that could not
/// be judged and why.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum WorkerJson<'a> {
    /// A judged worker.
    Entry(LockEntry<'a>),
    /// A worker given on the command line that could not be judged.
    Failed {
        /// The worker as given, made absolute.
        #[serde(serialize_with = "ser_path")]
        worker_dir: std::path::PathBuf,
        /// Why.
        error: ErrorJson,
        /// The path is not UTF-8 and was written lossily.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        paths_lossy: bool,
    },
}

impl WorkerJson<'_> {
    /// The entry of a worker that failed with `e`.
    pub fn failed(worker: &Path, e: &agentlock::Error) -> WorkerJson<'static> {
        let worker_dir = std::path::absolute(worker).unwrap_or_else(|_| worker.to_path_buf());
        WorkerJson::Failed {
            paths_lossy: is_lossy(&worker_dir),
            worker_dir,
            error: ErrorJson::of(e),
        }
    }
}

impl<'a> LockEntry<'a> {
    /// The entry for an inspection, without an action.
    pub fn of(ins: &'a Judgement) -> LockEntry<'a> {
        let rec = ins.record.as_ref();
        LockEntry {
            worker_dir: &ins.worker_dir,
            lock_path: &ins.lock_path,
            state: ins.state,
            pid: rec.map(|r| r.pid),
            pid_alive: ins.pid_alive,
            session_id: rec.and_then(|r| r.session_id.as_deref()),
            session_alive: ins.session_alive,
            hostname: rec.and_then(|r| r.hostname.as_deref()),
            acquired_at: rec.and_then(|r| r.acquired_at.as_ref()).map(format_time),
            tmux_socket: rec.and_then(|r| r.tmux_socket.as_deref()),
            reason: &ins.reason,
            action: None,
            moved_aside: None,
            signal: None,
            fence: None,
            store: None,
            warnings: &[],
            holder_warning: None,
            paths_lossy: is_lossy(&ins.worker_dir),
        }
    }

    /// Adds the action taken.
    pub fn with_action(mut self, action: &'a str) -> LockEntry<'a> {
        self.action = Some(action);
        self
    }
}

/// `{ "workers": [ ... ] }`, with `"error"` beside them when the command failed.
pub fn workers_json(
    entries: &[WorkerJson],
    error: Option<&ErrorJson>,
    waited: Option<std::time::Duration>,
) -> String {
    #[derive(Serialize)]
    struct Workers<'a> {
        workers: &'a [WorkerJson<'a>],
        /// With `--wait`: how long it waited, in seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        waited: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a ErrorJson>,
    }
    to_json(&Workers {
        workers: entries,
        waited: waited.map(|w| (w.as_secs_f64() * 1000.0).round() / 1000.0),
        error,
    })
}

/// `{ "error": {...} }` (plus `"root"` for a tree command) when a command
/// failed before it had any result.
pub fn error_json(root: Option<&Path>, error: &ErrorJson) -> String {
    #[derive(Serialize)]
    struct Failed<'a> {
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "ser_opt_path"
        )]
        root: Option<&'a Path>,
        error: &'a ErrorJson,
    }
    to_json(&Failed { root, error })
}

/// The `"error"` of `doctor --fix --json` when fixes failed: the first
/// failure, and how many there were.
pub fn fix_errors_json(errors: &[agentlock::Error]) -> Option<ErrorJson> {
    let first = errors.first()?;
    let mut e = ErrorJson::of(first);
    if errors.len() > 1 {
        e.message = format!("{} (and {} more fixes failed)", e.message, errors.len() - 1);
    }
    Some(e)
}

/// The one object `list --json` and `doctor --json` print; `error` beside
/// the results when something failed (a `--fix` that could not be applied).
pub fn report_json(report: &Report, tmux: &TmuxSnapshot, error: Option<&ErrorJson>) -> String {
    #[derive(Serialize)]
    struct Scanned {
        dirs: usize,
        locks: usize,
    }
    #[derive(Serialize)]
    struct Tmux<'a> {
        state: &'static str,
        servers: &'a [ServerReport],
    }
    #[derive(Serialize)]
    struct Tree<'a> {
        #[serde(serialize_with = "ser_path")]
        root: &'a Path,
        scanned: Scanned,
        tmux: Tmux<'a>,
        locks: Vec<LockEntry<'a>>,
        findings: &'a [Finding],
        fixed: &'a [Fixed],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        paths_lossy: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a ErrorJson>,
    }
    let paths_lossy = is_lossy(&report.root)
        || report.locks.iter().any(|l| is_lossy(&l.worker_dir))
        || report.findings.iter().any(|f| is_lossy(&f.worker_dir))
        || report.fixed.iter().any(|f| is_lossy(&f.path));
    let tree = Tree {
        paths_lossy,
        root: &report.root,
        scanned: Scanned {
            dirs: report.dirs,
            locks: report.locks.len(),
        },
        tmux: Tmux {
            state: if tmux.is_known() { "known" } else { "unknown" },
            servers: &tmux.servers,
        },
        locks: report.locks.iter().map(LockEntry::of).collect(),
        findings: &report.findings,
        fixed: &report.fixed,
        error,
    };
    to_json(&tree)
}
