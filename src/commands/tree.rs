//! The commands on a whole tree: `list` and `doctor [--fix]`.

use super::{Ctx, Failure};
use crate::cli::{DoctorArgs, TreeArgs};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output;
use agentlock::doctor::{self, FindingKind, Report};
use agentlock::scan::{Progress, ScanOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// ROOT as given (default: the current directory), made absolute.
pub(super) fn root_of(a: &TreeArgs) -> PathBuf {
    let root = a.root.clone().unwrap_or_else(|| PathBuf::from("."));
    std::path::absolute(&root).unwrap_or(root)
}

/// A progress line on stderr while a scan runs, on a terminal only; cleared when done.
fn with_progress<T>(show: bool, progress: &Progress, work: impl FnOnce() -> T) -> T {
    if !show {
        return work();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::io::Write;
            let mut shown = false;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = write!(std::io::stderr(), "\r{}", output::progress(progress));
                shown = true;
            }
            if shown {
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    })
}

/// Scans and judges the tree of `a`.
fn judge_tree(ctx: &Ctx, a: &TreeArgs) -> agentlock::Result<Report> {
    let root = a.root.clone().unwrap_or_else(|| PathBuf::from("."));
    let opts = ScanOptions {
        max_depth: a.max_depth,
        skip: a.skip.clone(),
        default_skips: !a.no_default_skips,
        threads: 0,
    };
    let progress = Progress::default();
    let show = !a.json && !ctx.quiet && std::io::stderr().is_terminal();
    with_progress(show, &progress, || {
        doctor::judge_tree(&root, &opts, &progress, &ctx.probes)
    })
}

pub(super) fn list(ctx: &Ctx, a: TreeArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let report = judge_tree(ctx, &a)?;
    let scan_errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::ScanError)
        .collect();
    if a.json {
        let locks = super::tree_entries(ctx, &report.locks);
        out.line(output::report_json(
            &report,
            &ctx.probes.tmux.snapshot(),
            locks,
            None,
        ));
    } else {
        if !ctx.quiet {
            out.raw(output::list_table(&report, ctx.style));
        }
        for f in &scan_errors {
            out.error_line(output::esc(&f.message));
        }
    }
    Ok(if scan_errors.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Error
    })
}

pub(super) fn doctor(ctx: &Ctx, a: DoctorArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    doctor_with(ctx, a, None, out, |_, _| Ok(Vec::new()))
}

/// `doctor`, with `more` adding its findings to the report (and, given
/// `--fix`, its repairs): the fleet store's, at `store`.
pub(super) fn doctor_with(
    ctx: &Ctx,
    a: DoctorArgs,
    store: Option<&str>,
    out: &mut Out,
    more: impl FnOnce(&mut Report, bool) -> Result<Vec<agentlock::Error>, Failure>,
) -> Result<ExitCode, Failure> {
    let mut report = judge_tree(ctx, &a.tree)?;
    let mut errors = if a.fix {
        doctor::fix(&mut report, &ctx.probes.probes())
    } else {
        Vec::new()
    };
    errors.extend(more(&mut report, a.fix)?);
    report
        .findings
        .sort_by(|x, y| (x.kind, &x.worker_dir).cmp(&(y.kind, &y.worker_dir)));
    if !report.fixed.is_empty() {
        out.done = Some(output::fixes_done(&report));
    }
    if a.tree.json {
        let mut doc = output::TreeDoc::of(
            &report,
            &ctx.probes.tmux.snapshot(),
            super::tree_entries(ctx, &report.locks),
        );
        doc.store = store.map(str::to_string);
        doc.error = output::fix_errors_json(&errors);
        out.line(output::to_string(&doc));
    } else if !ctx.quiet || !report.findings.is_empty() {
        out.line(output::doctor_text(&report, a.fix));
    }
    for e in &errors {
        out.error_line(output::error_text(e));
    }
    Ok(if !errors.is_empty() {
        ExitCode::Error
    } else if !report.findings.is_empty() {
        ExitCode::No
    } else {
        ExitCode::Success
    })
}
