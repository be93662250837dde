//! `claim` (and `--first-free`), `release`, `status` and `check` on the
//! fleet store.

use super::Store;
use crate::commands::{Ctx, Failure, Waiting, asker_of, claimant_of, warn_all, worker};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, LockEntry, WorkerJson};
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::ops::{self, FleetClaimOutcome, FleetJudgement, FleetReleaseOutcome};
use agentlock::fleet::{locate, waiting};
use agentlock::lock::{ClaimOptions, Standing};
use std::path::PathBuf;

pub(super) fn entry<'a>(store: &'a Store, j: &'a FleetJudgement) -> LockEntry<'a> {
    let mut e = LockEntry::of(&j.judgement);
    e.fence = j.fence;
    e.store = Some(&store.raw);
    e
}

/// A refusal: the JSON entry (with `--json`), the refusal block, exit 1.
fn refused(
    store: &Store,
    out: &mut Out,
    json: bool,
    j: &FleetJudgement,
    command: &str,
    waited: Option<std::time::Duration>,
) -> ExitCode {
    worker::refused_on_store(out, json, &j.judgement, entry(store, j), command, waited)
}

/// The worker as a claim left it: held by the claimant, with its fence.
fn held(c: &ops::FleetClaimed) -> FleetJudgement {
    FleetJudgement {
        judgement: agentlock::lock::Judgement {
            record: Some(c.record.clone()),
            pid_alive: Some(true),
            ..agentlock::lock::Judgement::at(
                &c.before.judgement.worker_dir,
                &c.before.judgement.lock_path,
                agentlock::verdict::State::Held,
                format!("claimed by pid {}", c.record.pid),
            )
        },
        fence: Some(c.fence),
        revision: 0,
    }
}

pub(super) fn claim(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: crate::cli::ClaimArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let (me, _, _) = claimant_of(ctx, a.holder, out)?;
    let [worker] = &a.workers[..] else {
        return Err(Failure::usage("claim takes one WORKER"));
    };
    if a.signal_other {
        return Err(Failure::usage(
            "--signal-other does not work with --store yet",
        ));
    }
    let (worker, key) = locate(&store.spec, store.root()?, worker)?;
    let worker = &worker;
    // An unreachable store fails here, before anything local is touched.
    let lease = super::keeper_lease(store, fleet, out)?;
    let w = Waiting::new(a.wait);
    let opts = ClaimOptions {
        force: a.force,
        cancel: w.cancel(),
        ..ClaimOptions::default()
    };
    let probes = ctx.probes.probes();
    let (outcome, waited) = match &w.wait {
        None => (
            ops::claim(fleet, worker, &key, &me, opts, Some(&lease), &probes)
                .map_err(|e| w.failure(e))?,
            None,
        ),
        Some(wait) => {
            let got = waiting::claim_wait(fleet, worker, &key, &me, opts, &lease, wait, &probes)
                .map_err(|e| w.failure(e))?;
            (got.outcome, Some(got.waited))
        }
    };
    match outcome {
        FleetClaimOutcome::Refused(j) => {
            Ok(refused(store, out, a.json, &j, "claim", waited).on_conflict(a.conflict_exit_code))
        }
        FleetClaimOutcome::Done(c) => {
            let after = held(&c);
            out.done = Some(format!(
                "{} {} (the lock stays held)",
                c.action.as_str(),
                output::esc(&key)
            ));
            if a.json {
                let e = entry(store, &after).with_action(c.action.as_str());
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None, waited));
            } else if !ctx.quiet {
                out.line(format_args!(
                    "{} {} (pid {}, fence {}, {})",
                    c.action.as_str(),
                    output::path(worker),
                    c.record.pid,
                    c.fence,
                    output::esc(&key)
                ));
            }
            Ok(ExitCode::Success)
        }
    }
}

/// `claim --first-free` on the store.
pub(super) fn first_free(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: crate::cli::ClaimArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let (me, warnings, _) = claimant_of(ctx, a.holder, out)?;
    // An unreachable store fails here, before anything local is touched.
    let lease = super::keeper_lease(store, fleet, out)?;
    let probes = ctx.probes.probes();
    let w = Waiting::new(a.wait);
    let (ff, waited) = match &w.wait {
        None => (
            ops::claim_first_free(fleet, store.root()?, &a.workers, &me, Some(&lease), &probes),
            None,
        ),
        Some(wait) => {
            let got = waiting::claim_first_free_wait(
                fleet,
                store.root()?,
                &a.workers,
                &me,
                &lease,
                wait,
                &probes,
            )
            .map_err(|e| w.failure(e))?;
            (got.outcome, Some(got.waited))
        }
    };
    let tried = ff
        .tried
        .iter()
        .map(|(path, r)| {
            let r = r.as_ref().map(|j| (&j.judgement, entry(store, j)));
            (path.as_path(), r)
        })
        .collect();
    let after = ff.claimed.as_ref().map(|(_, c)| held(c));
    let claimed = ff
        .claimed
        .as_ref()
        .zip(after.as_ref())
        .map(|((_, c), after)| {
            let mut e = entry(store, after).with_action(c.action.as_str());
            e.warnings = &warnings;
            let dir = after.judgement.worker_dir.as_path();
            (
                dir,
                format!("claimed {} (the lock stays held)", output::path(dir)),
                e,
            )
        });
    for w in &ff.untried {
        out.error_line(format_args!(
            "not tried: {} (the fleet store stopped answering)",
            output::path(w)
        ));
    }
    Ok(
        worker::print_first_free(out, a.json, tried, claimed, ff.undecided(), waited)
            .on_conflict(a.conflict_exit_code),
    )
}

pub(super) fn release(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: crate::cli::ReleaseArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let mut warnings = Vec::new();
    let who = asker_of(ctx, a.asker, &mut warnings)?;
    warn_all(out, &warnings);
    let (worker, key) = locate(&store.spec, store.root()?, &a.worker)?;
    match ops::release(fleet, &worker, &key, &who, a.force, &ctx.probes.probes())? {
        FleetReleaseOutcome::Refused(j) => Ok(refused(store, out, a.json, &j, "release", None)),
        FleetReleaseOutcome::Done(j) => {
            let action = if j.revision == 0 {
                "already-free"
            } else {
                "released"
            };
            out.done = Some(format!("{action} {}", output::esc(&key)));
            if a.json {
                let e = entry(store, &j).with_action(action);
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None, None));
            } else if !ctx.quiet {
                out.line(format_args!("{action} {}", output::path(&worker)));
            }
            Ok(ExitCode::Success)
        }
    }
}

/// `status`, or `check` when `asker` is given.
pub(super) fn status(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    workers: &[PathBuf],
    json: bool,
    asker: Option<&agentlock::lock::Asker>,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let probes = ctx.probes.probes();
    let mut code = ExitCode::Success;
    let mut judged = Vec::new();
    let mut failed = Vec::new();
    for (w, one) in ops::judge_many(fleet, store.root()?, workers, &probes) {
        match one {
            Ok(j) => judged.push(j),
            Err(e) => {
                out.error_line(output::error_text(&e));
                code = code.merge(ExitCode::Error);
                failed.push((w, e));
            }
        }
    }
    for j in &judged {
        let standing = asker.map(|a| j.judgement.standing(a, &probes));
        if standing == Some(Standing::Taken) {
            code = code.merge(ExitCode::No);
        }
        if !json && !ctx.quiet {
            match standing {
                Some(s) => out.line(output::check_line(&j.judgement, s, ctx.style)),
                None => out.line(format_args!(
                    "{}{}",
                    output::status_lines(&j.judgement, ctx.style),
                    j.fence
                        .map(|f| format!("\n  fence: {f}"))
                        .unwrap_or_default()
                )),
            }
        }
    }
    if json {
        let mut entries: Vec<WorkerJson> = judged
            .iter()
            .map(|j| WorkerJson::Entry(entry(store, j)))
            .collect();
        entries.extend(failed.iter().map(|(w, e)| WorkerJson::failed(w, e)));
        out.line(output::workers_json(&entries, None, None));
    }
    Ok(code)
}
