//! The commands on named workers: `claim` (and `--first-free`), `release`,
//! `status`, `check`.

use super::{Ctx, Failure, Waiting, asker_of, claimant_of, default_asker, entry, warn_all};
use crate::cli::{CheckArgs, ClaimArgs, ReleaseArgs, StatusArgs};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, WorkerEntry};
use agentlock::lock::{
    self, Asker, ClaimOptions, ClaimOutcome, Claimant, Judgement, ReleaseOutcome, Standing,
};
use agentlock::wait;
use std::path::PathBuf;

pub(super) fn claim(ctx: &Ctx, a: ClaimArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let (me, warnings, holder_warning) = claimant_of(ctx, a.holder, out)?;
    let w = Waiting::new(a.wait);
    if a.first_free {
        let ctx_json = (&warnings[..], holder_warning.as_deref());
        let probes = ctx.probes.probes();
        let code = match &w.wait {
            None => {
                let ff = lock::claim_first_free(&a.workers, &me, &probes)?;
                print_ff(out, a.json, ff, &me, &probes, ctx_json, None)
            }
            Some(wait) => {
                let got = wait::claim_first_free_wait(&a.workers, &me, wait, &probes)
                    .map_err(|e| w.failure(e))?;
                print_ff(
                    out,
                    a.json,
                    got.outcome,
                    &me,
                    &probes,
                    ctx_json,
                    Some(got.waited),
                )
            }
        };
        return Ok(code.on_conflict(a.conflict_exit_code));
    }
    let [worker] = &a.workers[..] else {
        return Err(Failure::usage(
            "claim takes one WORKER (use --first-free to pick among several)",
        ));
    };
    let opts = ClaimOptions {
        force: a.force,
        signal_other: a.signal_other,
        cancel: w.cancel(),
        ..ClaimOptions::default()
    };
    let probes = ctx.probes.probes();
    let (claimed, waited) = match &w.wait {
        None => (
            lock::claim(worker, &me, opts, &probes).map_err(|e| w.failure(e))?,
            None,
        ),
        Some(wait) => {
            let got =
                wait::claim_wait(worker, &me, opts, wait, &probes).map_err(|e| w.failure(e))?;
            (got.outcome, Some(got.waited))
        }
    };
    match claimed {
        ClaimOutcome::Refused(ins) => {
            let e = entry(&ins, &Asker::from(&me), &probes);
            let code = refused_with(out, a.json, &ins, e, "claim", true, waited);
            Ok(code.on_conflict(a.conflict_exit_code))
        }
        ClaimOutcome::Done(c) => {
            out.done = Some(output::claim_done(&c));
            // The --signal-other outcome is always printed: it says what
            // happened to another process.
            if let Some(s) = &c.signal {
                out.error_line(output::esc(s));
            }
            if a.json {
                let e = claimed_entry(&c, &probes, &warnings, holder_warning.as_deref());
                out.line(output::workers_json(vec![e], None, waited));
            } else if !ctx.quiet {
                out.raw(output::claimed_lines(&c));
            }
            Ok(ExitCode::Success)
        }
    }
}

/// The JSON entry of a worker just claimed: the asker's.
fn claimed_entry(
    c: &lock::Claimed,
    probes: &lock::Probes,
    warnings: &[String],
    holder_warning: Option<&str>,
) -> WorkerEntry {
    let mut e =
        WorkerEntry::judged(&c.after, Standing::Yours, probes).with_action(c.action.as_str());
    e.moved_aside = c
        .moved_aside
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    e.signal = c.signal.clone();
    e.warnings = warnings.to_vec();
    e.holder_warning = holder_warning.map(str::to_string);
    e
}

/// A refusal on the fleet store: its JSON entry is `entry` (with the
/// fence), and the way out has no `--signal-other`.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(super) fn refused_on_store(
    out: &mut Out,
    json: bool,
    ins: &Judgement,
    entry: WorkerEntry,
    command: &str,
    waited: Option<std::time::Duration>,
) -> ExitCode {
    refused_with(out, json, ins, entry, command, false, waited)
}

fn refused_with(
    out: &mut Out,
    json: bool,
    ins: &Judgement,
    entry: WorkerEntry,
    command: &str,
    signal_other: bool,
    waited: Option<std::time::Duration>,
) -> ExitCode {
    if json {
        let e = entry.with_action("refused");
        out.line(output::workers_json(vec![e], None, waited));
    }
    out.err(output::refusal_with(ins, command, signal_other));
    if let Some(w) = waited {
        out.err(format_args!(
            "  waited {:.1} s; still taken",
            w.as_secs_f64()
        ));
    }
    ExitCode::No
}

/// Prints a `--first-free` outcome on lock files.
fn print_ff(
    out: &mut Out,
    json: bool,
    ff: lock::FirstFree,
    me: &Claimant,
    probes: &lock::Probes,
    (warnings, holder_warning): (&[String], Option<&str>),
    waited: Option<std::time::Duration>,
) -> ExitCode {
    let asker = Asker::from(me);
    let tried = ff
        .tried
        .iter()
        .map(|(path, r)| {
            let r = r.as_ref().map(|j| (j, entry(j, &asker, probes)));
            (path.as_path(), r)
        })
        .collect();
    let claimed = ff.claimed.as_ref().map(|(_, c)| {
        let e = claimed_entry(c, probes, warnings, holder_warning);
        (c.after.worker_dir.as_path(), output::first_free_done(c), e)
    });
    print_first_free(out, json, tried, claimed, ff.all_failed(), waited)
}

/// A worker `--first-free` tried and did not claim: judged (with its JSON
/// entry), or the error.
pub(super) type Tried<'a> = (
    &'a std::path::Path,
    Result<(&'a Judgement, WorkerEntry), &'a agentlock::Error>,
);

/// Prints what `--first-free` tried and claimed (the worker claimed,
/// `claimed`: its directory, its "done" line and its JSON entry).
pub(super) fn print_first_free(
    out: &mut Out,
    json: bool,
    tried: Vec<Tried>,
    claimed: Option<(&std::path::Path, String, WorkerEntry)>,
    all_failed: bool,
    waited: Option<std::time::Duration>,
) -> ExitCode {
    let mut entries: Vec<WorkerEntry> = Vec::new();
    let mut judged = Vec::new();
    for (path, r) in tried {
        match r {
            Ok((j, e)) => {
                judged.push(j);
                entries.push(e.with_action("refused"));
            }
            Err(e) => {
                out.error_line(output::skipped(path, e));
                entries.push(WorkerEntry::failed(path, e));
            }
        }
    }
    let dir = claimed.map(|(dir, done, e)| {
        out.done = Some(done);
        entries.push(e);
        dir
    });
    if json {
        out.line(output::workers_json(entries, None, waited));
    }
    if let Some(dir) = dir {
        if !json {
            // The claimed worker alone on stdout: slot=$(agentlock claim --first-free a b c)
            out.line(output::path(dir));
        }
        return ExitCode::Success;
    }
    for j in judged {
        out.error_line(output::not_free(j));
    }
    if all_failed {
        ExitCode::Error
    } else {
        match waited {
            Some(w) => out.error_line(format_args!(
                "no free worker after waiting {:.1} s",
                w.as_secs_f64()
            )),
            None => out.error_line("no free worker"),
        }
        ExitCode::No
    }
}

pub(super) fn release(ctx: &Ctx, a: ReleaseArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let mut warnings = Vec::new();
    let who = asker_of(ctx, a.asker, &mut warnings)?;
    warn_all(out, &warnings);
    if a.all {
        return super::released::release_all(ctx, &a.worker, a.json, &who, out);
    }
    let probes = ctx.probes.probes();
    match lock::release(&a.worker, &who, a.force, &probes)? {
        ReleaseOutcome::Refused(ins) => {
            let e = entry(&ins, &who, &probes);
            Ok(refused_with(out, a.json, &ins, e, "release", true, None))
        }
        ReleaseOutcome::Done {
            action,
            before,
            moved_to,
        } => {
            out.done = Some(output::release_done(action, &before));
            if a.json {
                let mut e = entry(&before, &who, &probes).with_action(action.as_str());
                e.moved_aside = moved_to.map(|p| p.to_string_lossy().into_owned());
                out.line(output::workers_json(vec![e], None, None));
            } else if !ctx.quiet {
                out.line(output::released(action, &before, moved_to.as_deref()));
            }
            Ok(ExitCode::Success)
        }
    }
}

/// Judges each worker, asking every tmux server the locks record at once.
fn judge_all(ctx: &Ctx, workers: &[PathBuf]) -> Vec<(PathBuf, agentlock::Result<Judgement>)> {
    lock::judge_many(workers, &ctx.probes.tmux, &ctx.probes.probes())
}

/// The JSON entries of judged workers, failures included, with where
/// `asker` stands with each.
fn entries(
    found: &[(PathBuf, agentlock::Result<Judgement>)],
    asker: &Asker,
    probes: &lock::Probes,
) -> Vec<WorkerEntry> {
    found
        .iter()
        .map(|(path, r)| match r {
            Ok(ins) => entry(ins, asker, probes),
            Err(e) => WorkerEntry::failed(path, e),
        })
        .collect()
}

pub(super) fn status(ctx: &Ctx, a: StatusArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let found = judge_all(ctx, &a.workers);
    let mut code = ExitCode::Success;
    for (_, r) in &found {
        match r {
            Ok(ins) if !a.json && !ctx.quiet => {
                let command = ins.holder_command(&ctx.probes.probes());
                out.line(output::status_lines(ins, command.as_deref(), ctx.style))
            }
            Ok(_) => {}
            Err(e) => {
                code = code.merge(ExitCode::Error);
                out.error_line(output::error_text(e));
            }
        }
    }
    if a.json {
        let asker = default_asker(ctx);
        let e = entries(&found, &asker, &ctx.probes.probes());
        out.line(output::workers_json(e, None, None));
    }
    Ok(code)
}

pub(super) fn check(ctx: &Ctx, a: CheckArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let mut warnings = Vec::new();
    let asker = asker_of(ctx, a.asker, &mut warnings)?;
    warn_all(out, &warnings);
    let found = judge_all(ctx, &a.workers);
    let probes = ctx.probes.probes();
    let mut code = ExitCode::Success;
    for (_, r) in &found {
        let ins = match r {
            Ok(ins) => ins,
            Err(e) => {
                code = code.merge(ExitCode::Error);
                out.error_line(output::error_text(e));
                continue;
            }
        };
        let standing = ins.standing(&asker, &probes);
        if standing == Standing::Taken {
            code = code.merge(ExitCode::No);
        }
        if !a.json && !ctx.quiet {
            out.line(output::check_line(ins, standing, ctx.style));
        }
    }
    if a.json {
        out.line(output::workers_json(
            entries(&found, &asker, &probes),
            None,
            None,
        ));
    }
    Ok(code)
}
