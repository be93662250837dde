//! Rendering of results: human lines and the `--json` objects of SPEC §5.
//! Nothing here decides anything; it only formats what the library found.

use crate::doctor::{self, Finding, Fixed, Report};
use crate::lock::Judgement;
use crate::probe::tmux::{ServerReport, TmuxSnapshot};
use crate::record::format_time;
use crate::verdict::{State, describe_session};
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Serialize, Serializer};
use std::path::Path;

/// Serializes a path as a string, lossily when it is not UTF-8 (never a
/// panic); entries holding such a path say so with `"paths_lossy": true`.
pub fn ser_path<P: AsRef<Path>, S: Serializer>(p: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.as_ref().to_string_lossy())
}

/// [`ser_path`] for an optional path.
pub fn ser_opt_path<S: Serializer>(p: &Option<&Path>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => ser_path(p, s),
        None => s.serialize_none(),
    }
}

/// Whether a path will be written lossily.
pub fn is_lossy(p: &Path) -> bool {
    p.to_str().is_none()
}

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
}

impl ErrorJson {
    /// The JSON form of a library error.
    pub fn of(e: &crate::Error) -> ErrorJson {
        ErrorJson {
            kind: e.kind().into(),
            message: e.to_string(),
            path: e.path().map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.to_path_buf())
                    .to_string_lossy()
                    .into_owned()
            }),
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
    /// Warnings said on stderr (a session that does not exist now, ...).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
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
    pub fn failed(worker: &Path, e: &crate::Error) -> WorkerJson<'static> {
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
            warnings: &[],
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
pub fn workers_json(entries: &[WorkerJson], error: Option<&ErrorJson>) -> String {
    #[derive(Serialize)]
    struct Workers<'a> {
        workers: &'a [WorkerJson<'a>],
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a ErrorJson>,
    }
    to_json(&Workers {
        workers: entries,
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

/// The one object `list --json` and `doctor --json` print.
pub fn report_json(report: &Report, tmux: &TmuxSnapshot) -> String {
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
    };
    to_json(&tree)
}

/// A worker path relative to the scan root (`.` for the root itself).
pub fn relative<'a>(path: &'a Path, root: &Path) -> std::borrow::Cow<'a, str> {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.to_string_lossy(),
        Err(_) => path.to_string_lossy(),
    }
}

/// `list`: one aligned row per worker, sorted by path.
pub fn list_table(report: &Report, style: Style) -> String {
    let now = Utc::now();
    let rows: Vec<[String; 6]> = report
        .locks
        .iter()
        .map(|ins| {
            let rec = ins.record.as_ref();
            [
                relative(&ins.worker_dir, &report.root).into_owned(),
                ins.state.to_string(),
                rec.map_or("-".into(), |r| r.pid.to_string()),
                rec.and_then(|r| r.session_id.clone())
                    .unwrap_or_else(|| "-".into()),
                rec.and_then(|r| r.hostname.clone())
                    .unwrap_or_else(|| "-".into()),
                rec.and_then(|r| r.acquired_at.as_ref())
                    .map_or("-".into(), |t| age(t, now)),
            ]
        })
        .collect();
    let header = ["WORKER", "STATE", "PID", "SESSION", "HOST", "AGE"].map(String::from);
    let mut width = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[String; 6], state: Option<State>| {
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            let cell = match (i, state) {
                (1, Some(s)) => style.state(s),
                _ => c.clone(),
            };
            out.push_str(&cell);
            if i < 5 {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &header, None);
    for (r, ins) in rows.iter().zip(&report.locks) {
        line(&mut out, r, Some(ins.state));
    }
    out
}

/// `doctor`: findings grouped by kind, fixes done, and a summary line.
pub fn doctor_text(report: &Report, fixing: bool) -> String {
    let mut out = String::new();
    let counts = doctor::counts(&report.findings);
    for (kind, n) in &counts {
        out.push_str(&format!("{} ({n}):\n", kind.as_str()));
        for f in report.findings.iter().filter(|f| f.kind == *kind) {
            out.push_str(&format!(
                "  {}: {}\n",
                relative(&f.worker_dir, &report.root),
                f.message
            ));
        }
    }
    if !report.fixed.is_empty() {
        out.push_str(&format!("fixed ({}):\n", report.fixed.len()));
        for f in &report.fixed {
            out.push_str(&format!(
                "  {}: {} {} {}\n",
                relative(&f.worker_dir, &report.root),
                f.kind.as_str(),
                f.action,
                f.path.display()
            ));
        }
    }
    let fixable = report.findings.iter().filter(|f| f.fixable).count();
    let kinds: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.as_str()))
        .collect();
    out.push_str(&format!(
        "{} dirs scanned, {} locks; {}",
        report.dirs,
        report.locks.len(),
        if kinds.is_empty() {
            "healthy".to_string()
        } else {
            kinds.join(", ")
        }
    ));
    if !report.fixed.is_empty() {
        out.push_str(&format!("; {} fixed", report.fixed.len()));
    }
    if fixable > 0 && !fixing {
        out.push_str(&format!("; {fixable} fixable with --fix"));
    }
    out
}

/// "3h 12m", "42s", "2d 4h": the age of a lock.
pub fn age(since: &DateTime<FixedOffset>, now: DateTime<Utc>) -> String {
    let secs = (now - since.with_timezone(&Utc)).num_seconds();
    if secs < 0 {
        return "in the future".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// "pid 4242, pane %3, host build-1, since 2026-01-05 10:00:00 -08:00 (3h 12m ago)".
pub fn holder(ins: &Judgement) -> Option<String> {
    let rec = ins.record.as_ref()?;
    let mut parts = vec![format!("pid {}", rec.pid)];
    if let Some(s) = rec.session_id.as_deref() {
        parts.push(describe_session(s));
    }
    if let Some(h) = rec.hostname.as_deref() {
        parts.push(format!("host {h}"));
    }
    if let Some(t) = rec.acquired_at.as_ref() {
        let age = age(t, Utc::now());
        let ago = if age == "in the future" {
            age
        } else {
            format!("{age} ago")
        };
        parts.push(format!(
            "since {} ({ago})",
            t.format("%Y-%m-%d %H:%M:%S %:z")
        ));
    }
    Some(parts.join(", "))
}

/// What `claim` prints on success: the moved-aside file, and the claim.
pub fn claimed_lines(c: &crate::lock::Claimed) -> String {
    let mut out = String::new();
    if let Some(to) = &c.moved_aside {
        out.push_str(&format!(
            "moved corrupt lock aside to {} ({})\n",
            to.display(),
            c.before.reason
        ));
    }
    let before = match c.before.state {
        State::Free => String::new(),
        _ => format!(", was {}: {}", c.before.state, c.before.reason),
    };
    out.push_str(&format!(
        "{} {} ({}{before})\n",
        c.action.as_str(),
        c.after.worker_dir.display(),
        holder(&c.after).unwrap_or_default()
    ));
    out
}

/// Whether to colour human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// A state word, coloured by severity when colour is on.
    pub fn state(&self, s: State) -> String {
        if !self.color {
            return s.to_string();
        }
        let code = match s {
            State::Free => "32",
            State::Held | State::HeldBySession => "33",
            State::Orphaned | State::Unverified => "35",
            State::Stale | State::Corrupt => "31",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }
}

/// The `status` line(s) of one worker.
pub fn status_lines(ins: &Judgement, style: Style) -> String {
    let mut out = format!(
        "{}: {} ({})",
        ins.worker_dir.display(),
        style.state(ins.state),
        ins.reason
    );
    if let Some(h) = holder(ins) {
        out.push_str(&format!("\n  holder: {h}"));
    }
    out
}

/// The way out of a refusal, for the given state.
fn way_out(ins: &Judgement, command: &str) -> String {
    let w = ins.worker_dir.display();
    match ins.state {
        State::HeldBySession => format!(
            "the agent lives on in tmux; end that session/pane first, or take over with: agentlock {command} {w} --force"
        ),
        State::Unverified => format!(
            "nothing was changed because the holder could not be verified; if you know it is gone: agentlock {command} {w} --force"
        ),
        State::Corrupt => {
            format!("to move the corrupt file aside: agentlock {command} {w} --force")
        }
        _ => format!(
            "to take over anyway: agentlock {command} {w} --force (add --signal-other to SIGTERM the holder)"
        ),
    }
}

/// The refusal block for `claim` / `release`: what holds it, who, the way out.
pub fn refusal(ins: &Judgement, command: &str) -> String {
    let mut out = format!(
        "agentlock: {} is {} ({})",
        ins.worker_dir.display(),
        ins.state,
        ins.reason
    );
    if let Some(h) = holder(ins) {
        out.push_str(&format!("\n  holder: {h}"));
    }
    let out_cmd = if command == "release" && ins.state != State::Corrupt {
        format!(
            "  only the holder may release it; to remove it anyway: agentlock release {} --force",
            ins.worker_dir.display()
        )
    } else {
        format!("  {}", way_out(ins, command))
    };
    out.push('\n');
    out.push_str(&out_cmd);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now = Utc::now();
        let t = |secs: i64| (now - chrono::Duration::seconds(secs)).fixed_offset();
        assert_eq!(age(&t(5), now), "5s");
        assert_eq!(age(&t(125), now), "2m 5s");
        assert_eq!(age(&t(3 * 3600 + 12 * 60), now), "3h 12m");
        assert_eq!(age(&t(2 * 86_400 + 4 * 3600), now), "2d 4h");
        assert_eq!(age(&t(-60), now), "in the future");
    }
}
