//! The human lines: status and refusal blocks, the `list` table, the
//! `doctor` report. Nothing here decides anything.
//!
//! Every string from outside (lock fields, paths, tmux answers, reasons and
//! messages that quote them) goes through [`esc`] or [`path`] before it is
//! placed in a line, so no control character from a lock file reaches the
//! terminal; suggested commands quote their words with [`shell_quote`].

use agentlock::doctor::{self, Report};
use agentlock::lock::{Claimed, Judgement, ReleaseAction, Standing};
use agentlock::scan::Progress;
use agentlock::trust::{escape, shell_quote};
use agentlock::verdict::{State, describe_session};
use chrono::{DateTime, FixedOffset, Local, Utc};
use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use unicode_width::UnicodeWidthStr;

/// `--utc`: times in human output in UTC rather than local time.
static UTC: AtomicBool = AtomicBool::new(false);

/// Shows times in UTC (`--utc`) instead of this machine's local time.
pub fn use_utc(on: bool) {
    UTC.store(on, Ordering::Relaxed);
}

/// A recorded time as humans read it: local time (or UTC with `--utc`),
/// to the second, with its offset. JSON keeps the time as recorded.
pub fn when(t: &DateTime<FixedOffset>) -> String {
    if UTC.load(Ordering::Relaxed) {
        t.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    } else if agentlock::record::tz_names_no_regular_file() {
        // Read as chrono reads a zone it does not know: UTC.
        t.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    } else {
        t.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

/// An outside string (or a message quoting one), escaped for a terminal.
pub fn esc(s: impl Display) -> String {
    escape(&s.to_string()).into_owned()
}

/// A path, escaped for a terminal.
pub fn path(p: &Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

/// A library error as one line for stderr: escaped, with a suggested
/// worker shell-quoted.
pub fn error_text(e: &agentlock::Error) -> String {
    match e {
        agentlock::Error::NotAWorker {
            path: p,
            why,
            meant: Some(m),
        } => format!(
            "{}: not a worker directory: {}; did you mean {}?",
            path(p),
            esc(why),
            shell_quote(&m.to_string_lossy())
        ),
        e => esc(e),
    }
}

/// `agentlock SUBCOMMAND WORKER --force`, with the worker shell-quoted.
fn command_line(command: &str, worker: &Path, rest: &str) -> String {
    format!(
        "agentlock {command} {} {rest}",
        shell_quote(&worker.to_string_lossy())
    )
}

/// A worker path relative to the scan root (`.` for the root itself), escaped.
pub fn relative(p: &Path, root: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => path(rel),
        Err(_) => path(p),
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
                relative(&ins.worker_dir, &report.root),
                ins.state.to_string(),
                rec.map_or("-".into(), |r| r.pid.to_string()),
                rec.and_then(|r| r.session_id.as_deref())
                    .map_or("-".into(), esc),
                rec.and_then(|r| r.hostname.as_deref())
                    .map_or("-".into(), esc),
                rec.and_then(|r| r.acquired_at.as_ref())
                    .map_or("-".into(), |t| age(t, now)),
            ]
        })
        .collect();
    let header = ["WORKER", "STATE", "PID", "SESSION", "HOST", "AGE"].map(String::from);
    // Columns by display width: a CJK name takes two columns a character.
    // Every cell is escaped first, so no control character has a width.
    let mut width = header.clone().map(|h| h.width());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.width());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[String; 6], state: Option<State>| {
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            let pad = w - c.width();
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
                esc(&f.message)
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
                path(&f.path)
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
        parts.push(esc(describe_session(s)));
    }
    if let Some(h) = rec.hostname.as_deref() {
        parts.push(format!("host {}", esc(h)));
    }
    if let Some(t) = rec.acquired_at.as_ref() {
        let age = age(t, Utc::now());
        let ago = if age == "in the future" {
            age
        } else {
            format!("{age} ago")
        };
        parts.push(format!("since {} ({ago})", when(t)));
    }
    Some(parts.join(", "))
}

/// What `claim` prints on success: the moved-aside file, and the claim.
pub fn claimed_lines(c: &Claimed) -> String {
    let mut out = String::new();
    if let Some(to) = &c.moved_aside {
        out.push_str(&format!(
            "moved corrupt lock aside to {} ({})\n",
            path(to),
            esc(&c.before.reason)
        ));
    }
    let before = match c.before.state {
        State::Free => String::new(),
        _ => format!(", was {}: {}", c.before.state, esc(&c.before.reason)),
    };
    out.push_str(&format!(
        "{} {} ({}{before})\n",
        c.action.as_str(),
        path(&c.after.worker_dir),
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

/// The `status` line(s) of one worker; `command` is the holder's command
/// name, when it is a live process visible here.
pub fn status_lines(ins: &Judgement, command: Option<&str>, style: Style) -> String {
    let mut out = format!(
        "{}: {} ({})",
        path(&ins.worker_dir),
        style.state(ins.state),
        esc(&ins.reason)
    );
    if let Some(h) = holder(ins) {
        out.push_str(&format!("\n  holder: {h}"));
    }
    if let Some(c) = command {
        out.push_str(&format!("\n  command: {}", esc(c)));
    }
    out
}

/// The way out of a refusal, for the given state.
fn way_out(ins: &Judgement, command: &str, signal_other: bool) -> String {
    let force = command_line(command, &ins.worker_dir, "--force");
    match ins.state {
        State::HeldBySession => format!(
            "the agent lives on in tmux; end that session/pane first, or take over with: {force}"
        ),
        State::Unverified => format!(
            "nothing was changed because the holder could not be verified; if you know it is gone: {force}"
        ),
        State::Corrupt => format!("to move the corrupt file aside: {force}"),
        _ if signal_other => {
            format!("to take over anyway: {force} (add --signal-other to SIGTERM the holder)")
        }
        _ => format!("to take over anyway: {force}"),
    }
}

/// The refusal block for `claim` / `release`: what holds it, who, the way out.
pub fn refusal(ins: &Judgement, command: &str) -> String {
    refusal_with(ins, command, true)
}

/// [`refusal`], with or without the `--signal-other` hint (the fleet store
/// has none: the holder may be on another host).
pub fn refusal_with(ins: &Judgement, command: &str, signal_other: bool) -> String {
    let mut out = format!(
        "agentlock: {} is {} ({})",
        path(&ins.worker_dir),
        ins.state,
        esc(&ins.reason)
    );
    if let Some(h) = holder(ins) {
        out.push_str(&format!("\n  holder: {h}"));
    }
    let out_cmd = if command == "release" && ins.state != State::Corrupt {
        format!(
            "  only the holder may release it; to remove it anyway: {}",
            command_line("release", &ins.worker_dir, "--force")
        )
    } else {
        format!("  {}", way_out(ins, command, signal_other))
    };
    out.push('\n');
    out.push_str(&out_cmd);
    out
}

/// A warning line (after `agentlock: `).
pub fn warning(w: &str) -> String {
    format!("warning: {}", esc(w))
}

/// What a successful claim did, said if its output then fails.
pub fn claim_done(c: &Claimed) -> String {
    format!(
        "{} {} (the lock stays held)",
        c.action.as_str(),
        path(&c.after.worker_dir)
    )
}

/// What `--first-free` did, said if its output then fails.
pub fn first_free_done(c: &Claimed) -> String {
    format!(
        "claimed {} (the lock stays held)",
        path(&c.after.worker_dir)
    )
}

/// `--first-free`: a worker skipped because of an error.
pub fn skipped(p: &Path, e: &agentlock::Error) -> String {
    format!("skipped {}: {}", path(p), esc(e))
}

/// `--first-free`: a worker that was not claimable.
pub fn not_free(ins: &Judgement) -> String {
    format!(
        "{} is {} ({})",
        path(&ins.worker_dir),
        ins.state,
        esc(&ins.reason)
    )
}

/// What `release` did, said if its output then fails.
pub fn release_done(action: ReleaseAction, before: &Judgement) -> String {
    format!("{} {}", action.as_str(), path(&before.worker_dir))
}

/// The line `release` prints.
pub fn released(action: ReleaseAction, before: &Judgement, moved_to: Option<&Path>) -> String {
    match moved_to {
        Some(to) => format!("moved corrupt lock aside to {}", path(to)),
        None => release_done(action, before),
    }
}

/// The line `check` prints for one worker.
pub fn check_line(ins: &Judgement, standing: Standing, style: Style) -> String {
    let verdict = match standing {
        Standing::Yours => "held by you".to_string(),
        _ => style.state(ins.state),
    };
    format!(
        "{}: {verdict} ({})",
        path(&ins.worker_dir),
        esc(&ins.reason)
    )
}

/// `run`: a signal arrived before the command started.
pub fn interrupted(worker: &Path, signal: i32) -> String {
    format!(
        "{}: interrupted by signal {signal} before the command started; it was not started and nothing is held",
        path(worker)
    )
}

/// `run` lost its worker while the command runs.
pub fn lost(worker: &Path, why: &str, stopping: bool) -> String {
    let then = if stopping {
        "stopping the command (SIGTERM)"
    } else {
        "the command runs on (--on-lost=warn)"
    };
    format!("{}: worker lost: {}; {then}", path(worker), esc(why))
}

/// `run`'s last line after a loss: its exit code is 76, not the command's.
pub fn lost_exit(worker: &Path, code: i32) -> String {
    format!(
        "{}: the command exited with {code} after the worker was lost; exiting 76",
        path(worker)
    )
}

/// The progress line of a scan.
pub fn progress(p: &Progress) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    format!(
        "scanning: {} dirs, {} locks",
        p.dirs.load(Relaxed),
        p.locks.load(Relaxed)
    )
}

/// What `doctor --fix` did, said if its output then fails.
pub fn fixes_done(report: &Report) -> String {
    format!("doctor --fix applied {} fixes", report.fixed.len())
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
