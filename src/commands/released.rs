//! `release --all`: every worker under a root that the asker holds, for
//! tmux `session-closed` hooks; printed the same on lock files and on the
//! fleet store.

use super::{Ctx, entry};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, WorkerEntry};
use agentlock::lock::{self, Asker, ReleaseOutcome};
use std::path::PathBuf;

/// `release --all ROOT` on lock files.
pub(super) fn release_all(
    ctx: &Ctx,
    root: &std::path::Path,
    json: bool,
    who: &Asker,
    out: &mut Out,
) -> Result<ExitCode, super::Failure> {
    let opts = agentlock::scan::ScanOptions::default();
    let all = lock::release_all(root, who, &opts, &ctx.probes)?;
    for f in &all.unreadable {
        out.error_line(output::esc(&f.message));
    }
    // A directory not read may hold the asker's locks: an error, in the
    // JSON document too.
    let scan_error = all.unreadable.first().map(|f| {
        let mut e = output::ErrorJson::new("io", f.message.clone());
        e.path = Some(f.worker_dir.to_string_lossy().into_owned());
        if all.unreadable.len() > 1 {
            let more = all.unreadable.len() - 1;
            e.message = format!("{} (and {more} more directories not read)", e.message);
        }
        e
    });
    let probes = ctx.probes.probes();
    let code = print_released_all(ctx, out, json, root, all.workers, scan_error, |r| match r {
        ReleaseOutcome::Done {
            action,
            before,
            moved_to,
        } => {
            let mut e = entry(&before, who, &probes).with_action(action.as_str());
            e.moved_aside = moved_to.map(|p| p.to_string_lossy().into_owned());
            (Ok(output::released(action, &before, None)), e)
        }
        ReleaseOutcome::Refused(j) => (
            Err(output::refusal(&j, "release")),
            entry(&j, who, &probes).with_action("refused"),
        ),
    });
    let scan = if all.unreadable.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Error
    };
    Ok(code.merge(scan))
}

/// Prints what `release --all` did: a line per worker released (a refusal
/// on stderr for one that changed hands since the scan), or one JSON
/// document. `error` is what kept it from seeing everything (an unreadable
/// directory). `shown` turns an outcome into its line (or refusal) and entry.
pub(super) fn print_released_all<R>(
    ctx: &Ctx,
    out: &mut Out,
    json: bool,
    root: &std::path::Path,
    workers: Vec<(PathBuf, agentlock::Result<R>)>,
    error: Option<output::ErrorJson>,
    mut shown: impl FnMut(R) -> (Result<String, String>, WorkerEntry),
) -> ExitCode {
    let mut code = ExitCode::Success;
    let mut entries = Vec::new();
    let mut released = 0;
    for (worker, r) in workers {
        match r {
            Ok(r) => {
                let (line, e) = shown(r);
                match line {
                    Ok(line) => {
                        released += 1;
                        if !json && !ctx.quiet {
                            out.line(line);
                        }
                    }
                    Err(refusal) => {
                        code = code.merge(ExitCode::No);
                        out.err(refusal);
                    }
                }
                entries.push(e);
            }
            Err(e) => {
                code = code.merge(ExitCode::Error);
                out.error_line(output::error_text(&e));
                entries.push(WorkerEntry::failed(&worker, &e));
            }
        }
    }
    if json {
        out.line(output::workers_json(entries, error.as_ref(), None));
    } else if released == 0 && code == ExitCode::Success && error.is_none() && !ctx.quiet {
        out.error_line(format_args!("nothing held under {}", output::path(root)));
    }
    if released > 0 {
        out.done = Some(format!(
            "released {released} worker(s) under {}",
            output::path(root)
        ));
    }
    code
}
