//! Diagnosis of a scanned tree, and the guarded repairs of `doctor --fix`.
//!
//! Findings: `stale`, `corrupt`, `leftover-temp`, `orphaned`, `unverified`,
//! `collision`, `scan-error`. Only the first three are ever fixable, and each
//! fix re-reads and re-judges under the worker's guard first: a stale lock is
//! removed only if it is the same file with the same bytes and still stale, a
//! corrupt one is moved aside (never deleted), a temp file is removed only if
//! its writer is still dead.

mod collisions;
mod repair;

pub use repair::{FixOutcome, fix};

use crate::lock::{self, Found, Judgement, Probes, Snapshot};
use crate::probe::tmux::TmuxSnapshot;
use crate::probe::{Existence, LiveProbes};
use crate::scan::{Progress, ScanOptions, ScanResult, TempFile};
use crate::verdict::State;
use collisions::collisions;
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
    /// One pane or session holds live locks on several workers, or a pane works inside a worker whose lock names another.
    Collision,
    /// A lock whose process and session are both provably gone: `--fix` removes it.
    Stale,
    /// Not a valid lock: `--fix` moves it aside.
    Corrupt,
    /// A lock writer's temp file whose writer is gone: `--fix` removes it.
    LeftoverTemp,
    /// The process is alive but its recorded session is gone.
    Orphaned,
    /// The holder cannot be verified: nothing is removed.
    Unverified,
    /// A directory the scan could not read.
    ScanError,
}

impl FindingKind {
    /// The kebab-case name used in output.
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
    /// What kind of finding.
    pub kind: FindingKind,
    #[serde(serialize_with = "crate::paths::ser_path")]
    /// The worker (or, for a scan error, the directory) it is about.
    pub worker_dir: PathBuf,
    /// The reason, and what `--fix` does or why it won't.
    pub message: String,
    /// Whether `--fix` would repair it.
    pub fixable: bool,
    #[serde(skip)]
    repair: Option<Repair>,
}

impl Finding {
    /// A finding another module repairs itself (the fleet store's):
    /// `fixable` says whether it will.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn other(
        kind: FindingKind,
        worker_dir: &Path,
        message: String,
        fixable: bool,
    ) -> Finding {
        Finding {
            fixable,
            ..finding(kind, worker_dir, message, None)
        }
    }
}

/// One repair done by `--fix`.
#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    /// The kind of finding repaired.
    pub kind: FindingKind,
    #[serde(serialize_with = "crate::paths::ser_path")]
    /// The worker it was in.
    pub worker_dir: PathBuf,
    /// `removed` or `moved-aside`.
    pub action: &'static str,
    /// The file removed, or where a corrupt file now is.
    #[serde(serialize_with = "crate::paths::ser_path")]
    pub path: PathBuf,
}

/// The whole diagnosis.
#[derive(Debug, Clone)]
pub struct Report {
    /// The canonical root that was scanned.
    pub root: PathBuf,
    /// Directories visited.
    pub dirs: usize,
    /// Every lock found, judged, sorted by worker path.
    pub locks: Vec<Judgement>,
    /// What is wrong, in report order.
    pub findings: Vec<Finding>,
    /// What `--fix` repaired.
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

fn temp_finding(t: &TempFile, probes: &Probes, now: SystemTime) -> Option<Finding> {
    let name = t.path.file_name()?.to_string_lossy().into_owned();
    let message = match t.writer_pid {
        _ if t.ticket => {
            if !crate::wait::queue::ticket_dead(&t.path) {
                return None; // a live waiter's place, or one that cannot be told
            }
            format!("waiter's ticket {name}, whose waiter is gone; --fix removes it")
        }
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

/// Judges every lock of a scan and lists the findings. `probes.sessions`
/// should be `tmux` itself (or a lazy query of it), so tmux is asked once.
pub fn judge(scan: &ScanResult, probes: &Probes, tmux: &TmuxSnapshot) -> Report {
    let mut locks = Vec::with_capacity(scan.locks.len());
    let mut findings = Vec::new();
    for fl in &scan.locks {
        let ins = lock::judge_found(&fl.worker_dir, &fl.lock_path, &fl.found, probes);
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
                    "{}; not fixed: it is never followed, moved or removed; fix it by hand",
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
pub fn judge_live(scan: &ScanResult, live: &LiveProbes) -> Report {
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
    judge(scan, &live.probes(), &live.tmux.snapshot())
}

/// Scans `root` and judges every lock found: tmux's default servers are
/// asked while the tree is walked, the servers the locks record right after
/// it (each server once).
pub fn judge_tree(
    root: impl AsRef<Path>,
    opts: &ScanOptions,
    progress: &Progress,
    live: &LiveProbes,
) -> crate::Result<Report> {
    let scanned = std::thread::scope(|s| {
        s.spawn(|| live.tmux.ensure_default());
        crate::scan::scan(root, opts, progress)
    })?;
    Ok(judge_live(&scanned, live))
}

/// Count of findings per kind, in report order.
pub fn counts(findings: &[Finding]) -> BTreeMap<FindingKind, usize> {
    let mut m = BTreeMap::new();
    for f in findings {
        *m.entry(f.kind).or_insert(0) += 1;
    }
    m
}
