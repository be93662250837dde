//! Diagnosis of a scanned tree, and the guarded repairs of `doctor --fix`.
//!
//! Findings: `stale`, `corrupt`, `leftover-temp`, `orphaned`, `unverified`,
//! `collision`, `scan-error`. Only the first three are ever fixable, and each
//! fix re-reads and re-judges under the worker's guard first: a stale lock is
//! removed only if it is the same file with the same bytes and still stale, a
//! corrupt one is moved aside (never deleted), a temp file is removed only if
//! its writer is still dead.

use crate::lock::{self, FixOutcome, Found, Inspection, Probes, Snapshot};
use crate::probe::tmux::{SessionKind, TmuxSnapshot, pane_matches};
use crate::probe::{Existence, LiveProbes};
use crate::record::LockRecord;
use crate::scan::{ScanResult, TempFile};
use crate::verdict::{State, describe_session};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The Go tool's fixed temp name is a leftover once older than this.
pub const GO_TEMP_GRACE: Duration = Duration::from_secs(60);

/// Kinds of finding, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    Collision,
    Stale,
    Corrupt,
    LeftoverTemp,
    Orphaned,
    Unverified,
    ScanError,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Collision => "collision",
            FindingKind::Stale => "stale",
            FindingKind::Corrupt => "corrupt",
            FindingKind::LeftoverTemp => "leftover-temp",
            FindingKind::Orphaned => "orphaned",
            FindingKind::Unverified => "unverified",
            FindingKind::ScanError => "scan-error",
        }
    }
}

/// What `--fix` would do for a finding.
#[derive(Debug, Clone)]
enum Repair {
    RemoveStale(Snapshot),
    MoveAside(Snapshot),
    RemoveTemp(TempFile),
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    #[serde(serialize_with = "crate::output::ser_path")]
    pub worker_dir: PathBuf,
    /// The reason, and what `--fix` does or why it won't.
    pub message: String,
    pub fixable: bool,
    #[serde(skip)]
    repair: Option<Repair>,
}

/// One repair done by `--fix`.
#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    pub kind: FindingKind,
    #[serde(serialize_with = "crate::output::ser_path")]
    pub worker_dir: PathBuf,
    /// `removed` or `moved-aside`.
    pub action: &'static str,
    /// The file removed, or where a corrupt file now is.
    #[serde(serialize_with = "crate::output::ser_path")]
    pub path: PathBuf,
}

/// The whole diagnosis.
#[derive(Debug, Clone)]
pub struct Report {
    pub root: PathBuf,
    pub dirs: usize,
    pub locks: Vec<Inspection>,
    pub findings: Vec<Finding>,
    pub fixed: Vec<Fixed>,
}

fn finding(
    kind: FindingKind,
    worker_dir: &Path,
    message: String,
    repair: Option<Repair>,
) -> Finding {
    Finding {
        kind,
        worker_dir: worker_dir.into(),
        message,
        fixable: repair.is_some(),
        repair,
    }
}

/// A key under which two locks name the same pane or session: its server
/// and its id. `None` when the server cannot be told (the session is on
/// several servers, or on none that answered): no collision is claimed then.
fn session_key(rec: &LockRecord, tmux: &TmuxSnapshot) -> Option<(PathBuf, String)> {
    let id = rec.session_id.as_deref()?;
    let socket = rec.tmux_socket.as_deref().map(Path::new);
    let mut on = tmux.matching(id, socket);
    let first = on.next()?;
    if on.any(|p| p.socket != first.socket) {
        return None;
    }
    let key = match SessionKind::of(id) {
        SessionKind::Pane | SessionKind::SessionId => id.to_string(),
        SessionKind::Name => first.session_id.clone(),
    };
    Some((first.socket.clone(), key))
}

fn is_live(ins: &Inspection) -> bool {
    matches!(ins.state, State::Held | State::HeldBySession)
}

fn collisions(locks: &[Inspection], tmux: &TmuxSnapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    // One session/pane holding live locks on two or more workers.
    let mut by_session: BTreeMap<(PathBuf, String), Vec<(&Inspection, &str)>> = BTreeMap::new();
    for ins in locks
        .iter()
        .filter(|i| is_live(i) && i.session_alive == Some(true))
    {
        let Some(rec) = ins.record.as_ref() else {
            continue;
        };
        if let (Some(key), Some(s)) = (session_key(rec, tmux), rec.session_id.as_deref()) {
            by_session.entry(key).or_default().push((ins, s));
        }
    }
    for group in by_session.values().filter(|g| g.len() > 1) {
        let names: Vec<String> = group
            .iter()
            .map(|(i, _)| i.worker_dir.display().to_string())
            .collect();
        out.push(finding(
            FindingKind::Collision,
            &group[0].0.worker_dir,
            format!(
                "{} holds live locks on {} workers: {}; not fixed: decide which worker it keeps",
                describe_session(group[0].1),
                group.len(),
                names.join(", ")
            ),
            None,
        ));
    }
    // A pane working inside a worker whose live lock names another pane/session.
    let held: Vec<(&Inspection, &LockRecord, &str)> = locks
        .iter()
        .filter(|i| is_live(i))
        .filter_map(|i| {
            let rec = i.record.as_ref()?;
            Some((i, rec, rec.session_id.as_deref()?))
        })
        .collect();
    for pane in &tmux.panes {
        let inside = held
            .iter()
            .filter(|(i, ..)| pane.current_path.starts_with(&i.worker_dir))
            .max_by_key(|(i, ..)| i.worker_dir.as_os_str().len());
        let Some((ins, rec, recorded)) = inside else {
            continue;
        };
        let same_server = rec
            .tmux_socket
            .as_deref()
            .is_none_or(|s| pane.socket == Path::new(s));
        if !(same_server && pane_matches(pane, recorded)) {
            out.push(finding(
                FindingKind::Collision,
                &ins.worker_dir,
                format!(
                    "pane {} (session {}) is working inside this worker (tmux server {}), whose lock names {}; not fixed: two agents share one worker",
                    pane.pane_id,
                    pane.session_name,
                    pane.socket.display(),
                    describe_session(recorded)
                ),
                None,
            ));
        }
    }
    out
}

fn temp_finding(t: &TempFile, probes: &Probes, now: SystemTime) -> Option<Finding> {
    let name = t.path.file_name()?.to_string_lossy().into_owned();
    let message = match t.writer_pid {
        Some(pid) => match probes.procs.existence(pid) {
            Existence::Gone | Existence::Zombie => {
                format!("temp file {name} of writer pid {pid}, which has exited; --fix removes it")
            }
            _ => return None, // a live writer is mid-publish
        },
        None => {
            let age = now.duration_since(t.modified?).ok()?;
            if age < GO_TEMP_GRACE {
                return None;
            }
            format!(
                "temp file {name} of the Go tool, {}s old; --fix removes it",
                age.as_secs()
            )
        }
    };
    // Seen mid-publish by the scan, then renamed by its writer before it exited:
    // not a leftover. A dead writer can no longer rename it, so this check is final.
    std::fs::symlink_metadata(&t.path).ok()?;
    Some(finding(
        FindingKind::LeftoverTemp,
        &t.worker_dir,
        message,
        Some(Repair::RemoveTemp(t.clone())),
    ))
}

fn still_leftover(t: &TempFile, probes: &Probes) -> bool {
    temp_finding(t, probes, SystemTime::now()).is_some()
}

/// Judges every lock of a scan and lists the findings. `probes.sessions`
/// should be `tmux` itself (or a lazy query of it), so tmux is asked once.
pub fn examine(scan: &ScanResult, probes: &Probes, tmux: &TmuxSnapshot) -> Report {
    let mut locks = Vec::with_capacity(scan.locks.len());
    let mut findings = Vec::new();
    for fl in &scan.locks {
        let ins = lock::judge(&fl.worker_dir, &fl.lock_path, &fl.found, probes);
        let f = match (&fl.found, ins.state) {
            (Found::Record(_, snap), State::Stale) => Some(finding(
                FindingKind::Stale,
                &fl.worker_dir,
                format!("{}; --fix removes the lock", ins.reason),
                Some(Repair::RemoveStale(snap.clone())),
            )),
            (Found::Corrupt(_, Some(snap)), _) => Some(finding(
                FindingKind::Corrupt,
                &fl.worker_dir,
                format!("{}; --fix moves it aside", ins.reason),
                Some(Repair::MoveAside(snap.clone())),
            )),
            (Found::Corrupt(_, None), _) => Some(finding(
                FindingKind::Corrupt,
                &fl.worker_dir,
                format!(
                    "{}; not fixed: a symlink is never followed or removed, fix it by hand",
                    ins.reason
                ),
                None,
            )),
            (_, State::Orphaned) => Some(finding(
                FindingKind::Orphaned,
                &fl.worker_dir,
                format!("{}; not fixed: the holder process is alive", ins.reason),
                None,
            )),
            (_, State::Unverified) => Some(finding(
                FindingKind::Unverified,
                &fl.worker_dir,
                format!(
                    "{}; not fixed: nothing is removed unless proven dead",
                    ins.reason
                ),
                None,
            )),
            _ => None,
        };
        findings.extend(f);
        locks.push(ins);
    }
    let now = SystemTime::now();
    findings.extend(
        scan.temps
            .iter()
            .filter_map(|t| temp_finding(t, probes, now)),
    );
    for e in &scan.errors {
        findings.push(finding(
            FindingKind::ScanError,
            &e.path,
            format!("cannot scan {}: {}; not fixed", e.path.display(), e.message),
            None,
        ));
    }
    findings.extend(collisions(&locks, tmux));
    findings.sort_by(|a, b| (a.kind, &a.worker_dir).cmp(&(b.kind, &b.worker_dir)));
    Report {
        root: scan.root.clone(),
        dirs: scan.dirs,
        locks,
        findings,
        fixed: Vec::new(),
    }
}

/// Scans' locks judged with the real probes: the tmux servers the locks
/// record are asked together (once each) before any lock is judged.
pub fn examine_live(scan: &ScanResult, live: &LiveProbes) -> Report {
    live.tmux.ensure_default();
    let recorded: Vec<&Path> = scan
        .locks
        .iter()
        .filter_map(|l| match &l.found {
            Found::Record(rec, _) => rec.tmux_socket.as_deref().map(Path::new),
            _ => None,
        })
        .collect();
    live.tmux.ensure(recorded);
    examine(scan, &live.probes(), &live.tmux.snapshot())
}

/// `--fix`: applies every fixable finding, each re-checked under its guard.
/// Fixed findings leave `findings` and enter `fixed`; a finding whose file has
/// vanished meanwhile is dropped; a repair skipped because things changed
/// stays a finding, with the reason appended. Errors are returned and their
/// findings kept.
pub fn fix(report: &mut Report, probes: &Probes) -> Vec<crate::Error> {
    let mut errors = Vec::new();
    // The scan's tmux answer may predate its PID checks: a session created by
    // a spawner that then exited would be missed. Ask again, after them.
    if report
        .findings
        .iter()
        .any(|f| matches!(f.repair, Some(Repair::RemoveStale(_))))
    {
        probes.sessions.refresh();
    }
    let mut left = Vec::new();
    for mut f in std::mem::take(&mut report.findings) {
        let outcome = match &f.repair {
            None => {
                left.push(f);
                continue;
            }
            Some(Repair::RemoveStale(snap)) => lock::remove_stale(&f.worker_dir, snap, probes),
            Some(Repair::MoveAside(snap)) => lock::move_corrupt_aside(&f.worker_dir, snap),
            Some(Repair::RemoveTemp(t)) => {
                lock::remove_temp(&t.worker_dir, &t.path, || still_leftover(t, probes))
            }
        };
        match outcome {
            Ok(FixOutcome::Done(path)) => report.fixed.push(Fixed {
                kind: f.kind,
                worker_dir: f.worker_dir.clone(),
                action: if matches!(f.repair, Some(Repair::MoveAside(_))) {
                    "moved-aside"
                } else {
                    "removed"
                },
                path,
            }),
            Ok(FixOutcome::Vanished) => {}
            Ok(FixOutcome::Skipped(why)) => {
                f.message = format!("{} (fix skipped: {why})", f.message);
                f.fixable = false;
                left.push(f);
            }
            Err(e) => {
                f.message = format!("{} (fix failed: {e})", f.message);
                errors.push(e);
                left.push(f);
            }
        }
    }
    report.findings = left;
    errors
}

/// Count of findings per kind, in report order.
pub fn counts(findings: &[Finding]) -> BTreeMap<FindingKind, usize> {
    let mut m = BTreeMap::new();
    for f in findings {
        *m.entry(f.kind).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tmux::parse_list_panes;

    fn ins(dir: &str, state: State, session: &str) -> Inspection {
        Inspection {
            record: Some(LockRecord {
                pid: 1,
                session_id: Some(session.into()),
                ..LockRecord::default()
            }),
            session_alive: Some(true),
            ..Inspection::at(
                Path::new(dir),
                &Path::new(dir).join(".runtime/agent.lock"),
                state,
                String::new(),
            )
        }
    }

    fn tmux(panes: &str) -> TmuxSnapshot {
        TmuxSnapshot {
            servers: Vec::new(),
            panes: parse_list_panes(Path::new("/s/a"), panes),
        }
    }

    #[test]
    fn one_pane_holding_two_workers() {
        let t = tmux("9\t$1\t%3\t10\tmain\t/elsewhere\n");
        let f = collisions(
            &[
                ins("/t/a", State::Held, "%3"),
                ins("/t/b", State::HeldBySession, "%3"),
            ],
            &t,
        );
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("pane %3 holds live locks on 2 workers"),
            "{}",
            f[0].message
        );
        // A session name and its $N id are the same session.
        let f = collisions(
            &[
                ins("/t/a", State::Held, "main"),
                ins("/t/b", State::Held, "$1"),
            ],
            &t,
        );
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_foreign_pane_inside_a_held_worker() {
        let t = tmux(
            "9\t$1\t%3\t10\tmain\t/t/a/src\n9\t$2\t%4\t11\tother\t/t/a\n9\t$2\t%5\t12\tother\t/t/ab\n",
        );
        let f = collisions(&[ins("/t/a", State::Held, "%3")], &t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].message.starts_with(
                "pane %4 (session other) is working inside this worker (tmux server /s/a)"
            ),
            "{}",
            f[0].message
        );
        // Stale or orphaned locks are not live: no collision.
        let f = collisions(&[ins("/t/a", State::Stale, "%3")], &t);
        assert!(f.is_empty());
    }

    #[test]
    fn the_same_pane_id_on_two_servers_is_no_collision() {
        let mut t = tmux("9\t$0\t%0\t10\tmain\t/t/a\n");
        t.panes.extend(parse_list_panes(
            Path::new("/s/b"),
            "8\t$0\t%0\t20\tmain\t/t/b\n",
        ));
        let on = |dir: &str, socket: &str| {
            let mut i = ins(dir, State::Held, "%0");
            i.record.as_mut().unwrap().tmux_socket = Some(socket.into());
            i
        };
        let f = collisions(&[on("/t/a", "/s/a"), on("/t/b", "/s/b")], &t);
        assert!(f.is_empty(), "{f:?}");
        // Both on one server: a collision.
        let f = collisions(&[on("/t/a", "/s/a"), on("/t/b", "/s/a")], &t);
        assert_eq!(f.len(), 2, "{f:?}"); // two workers on one pane, and pane %0 of /s/b inside /t/b
    }
}
