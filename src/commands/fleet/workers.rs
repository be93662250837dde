//! `claim` (and `--first-free`), `release`, `status` and `check` on the
//! fleet store.

use super::Store;
use crate::commands::{Ctx, Failure, Waiting, asker_of, claimant_of, warn_all, worker};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, WorkerEntry};
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::ops::{self, FleetClaimOutcome, FleetJudgement, FleetReleaseOutcome};
use agentlock::fleet::{locate, waiting};
use agentlock::lock::{Asker, ClaimOptions, Probes, Standing};
use std::path::PathBuf;

/// The JSON entry of a worker on the store, where `standing` is where the
/// asker stands with it.
pub(super) fn entry_as(
    store: &Store,
    j: &FleetJudgement,
    standing: Standing,
    probes: &Probes,
) -> WorkerEntry {
    let key = j.judgement.lock_path.to_string_lossy();
    WorkerEntry::judged(&j.judgement, standing, probes).on_store(&store.raw, &key, j.fence)
}

/// [`entry_as`], with where `asker` stands.
pub(super) fn entry(
    store: &Store,
    j: &FleetJudgement,
    asker: &Asker,
    probes: &Probes,
) -> WorkerEntry {
    entry_as(store, j, j.judgement.standing(asker, probes), probes)
}

/// A refusal: the JSON entry (with `--json`), the refusal block, exit 1.
fn refused(
    store: &Store,
    out: &mut Out,
    json: bool,
    (j, asker, probes): (&FleetJudgement, &Asker, &Probes),
    command: &str,
    waited: Option<std::time::Duration>,
) -> ExitCode {
    let e = entry(store, j, asker, probes);
    worker::refused_on_store(out, json, &j.judgement, e, command, waited)
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
            let asker = Asker::from(&me);
            Ok(
                refused(store, out, a.json, (&j, &asker, &probes), "claim", waited)
                    .on_conflict(a.conflict_exit_code),
            )
        }
        FleetClaimOutcome::Done(c) => {
            let after = held(&c);
            out.done = Some(format!(
                "{} {} (the lock stays held)",
                c.action.as_str(),
                output::esc(&key)
            ));
            if a.json {
                let e = entry_as(store, &after, Standing::Yours, &probes)
                    .with_action(c.action.as_str());
                out.line(output::workers_json(vec![e], None, waited));
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
    let asker = Asker::from(&me);
    let tried = ff
        .tried
        .iter()
        .map(|(path, r)| {
            let r = r
                .as_ref()
                .map(|j| (&j.judgement, entry(store, j, &asker, &probes)));
            (path.as_path(), r)
        })
        .collect();
    let after = ff.claimed.as_ref().map(|(_, c)| held(c));
    let claimed = ff
        .claimed
        .as_ref()
        .zip(after.as_ref())
        .map(|((_, c), after)| {
            let mut e =
                entry_as(store, after, Standing::Yours, &probes).with_action(c.action.as_str());
            e.warnings = warnings.clone();
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
    let probes = ctx.probes.probes();
    if a.all {
        let (root, _) = locate(&store.spec, store.root()?, &a.worker)?;
        let done = ops::release_all(fleet, &store.canonical_root()?, &root, &who, &probes)?;
        let code = crate::commands::released::print_released_all(
            ctx,
            out,
            a.json,
            &root,
            done,
            None,
            |r| match r {
                FleetReleaseOutcome::Done(j) => {
                    let line = format!("released {}", output::path(&j.judgement.worker_dir));
                    (
                        Ok(line),
                        entry(store, &j, &who, &probes).with_action("released"),
                    )
                }
                FleetReleaseOutcome::Refused(j) => (
                    Err(output::refusal(&j.judgement, "release")),
                    entry(store, &j, &who, &probes).with_action("refused"),
                ),
            },
        );
        return Ok(code);
    }
    let (worker, key) = locate(&store.spec, store.root()?, &a.worker)?;
    match ops::release(fleet, &worker, &key, &who, a.force, &probes)? {
        FleetReleaseOutcome::Refused(j) => Ok(refused(
            store,
            out,
            a.json,
            (&j, &who, &probes),
            "release",
            None,
        )),
        FleetReleaseOutcome::Done(j) => {
            let action = if j.revision == 0 {
                "already-free"
            } else {
                "released"
            };
            out.done = Some(format!("{action} {}", output::esc(&key)));
            if a.json {
                let e = entry(store, &j, &who, &probes).with_action(action);
                out.line(output::workers_json(vec![e], None, None));
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
    asker: Option<&Asker>,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let probes = ctx.probes.probes();
    let mut code = ExitCode::Success;
    let default = asker.is_none().then(|| crate::commands::default_asker(ctx));
    let asked = asker.or(default.as_ref()).expect("an asker");
    let mut entries = Vec::new();
    for (w, one) in ops::judge_many(fleet, store.root()?, workers, &probes) {
        let j = match one {
            Ok(j) => j,
            Err(e) => {
                out.error_line(output::error_text(&e));
                code = code.merge(ExitCode::Error);
                entries.push(WorkerEntry::failed(&w, &e));
                continue;
            }
        };
        let standing = j.judgement.standing(asked, &probes);
        if asker.is_some() && standing == Standing::Taken {
            code = code.merge(ExitCode::No);
        }
        if !json && !ctx.quiet {
            match asker {
                Some(_) => out.line(output::check_line(&j.judgement, standing, ctx.style)),
                None => out.line(format_args!(
                    "{}{}",
                    output::status_lines(
                        &j.judgement,
                        j.judgement.holder_command(&probes).as_deref(),
                        ctx.style
                    ),
                    j.fence
                        .map(|f| format!("\n  fence: {f}"))
                        .unwrap_or_default()
                )),
            }
        }
        if json {
            entries.push(entry_as(store, &j, standing, &probes));
        }
    }
    if json {
        out.line(output::workers_json(entries, None, None));
    }
    Ok(code)
}
