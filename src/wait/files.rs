//! Waiting on lock files: a ticket in each worker's queue, the loop of
//! [`super::wait_loop`], a claim under the guard when first in line.

use super::queue::Ticket;
use super::wake::Wake;
use super::{
    Look, WaitOptions, Waited, all_failed, claimant_still, guard_limit, one_of_many, transient,
    wait_loop, watch_judged,
};
use crate::error::{Error, Result};
use crate::lock::claim::{check_claimant, claim_as};
use crate::lock::{ClaimOptions, ClaimOutcome, Claimant, FirstFree, Judgement, Probes, Worker};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One worker this waiter queues for.
struct Queued {
    given: PathBuf,
    worker: Worker,
    ticket: Ticket,
}

impl Queued {
    /// Takes a ticket for `given`. A busy guard is waited out until
    /// `deadline` (forever without one), a signal ends it.
    fn join(
        given: &Path,
        opts: &WaitOptions,
        deadline: Option<Instant>,
        wake: &mut Wake,
    ) -> Result<Queued> {
        let worker = Worker::open(given)?;
        let cancel = opts.interrupt.as_ref().map(|i| &*i.cancel);
        let ticket = loop {
            match Ticket::take(&worker, guard_limit(deadline), cancel) {
                Err(Error::GuardTimeout { .. }) if deadline.is_none() => continue,
                r => break r?,
            }
        };
        wake.watch_dir(&worker.runtime_path());
        Ok(Queued {
            given: given.into(),
            worker,
            ticket,
        })
    }

    /// Claims when first in the queue (or `passed`); otherwise judges.
    fn look(
        &self,
        me: &Claimant,
        my_start: Option<u64>,
        opts: &ClaimOptions,
        passed: bool,
        wake: &mut Wake,
        probes: &Probes,
    ) -> Result<std::result::Result<Box<crate::lock::Claimed>, Judgement>> {
        wake.watch_dir(&self.worker.runtime_path());
        let j = if passed || self.ticket.ahead(&self.worker)? == 0 {
            match claim_as(&self.given, me, my_start, opts, probes)? {
                ClaimOutcome::Done(c) => return Ok(Ok(c)),
                ClaimOutcome::Refused(j) => *j,
            }
        } else {
            crate::lock::judge(&self.worker.dir, probes)?
        };
        watch_judged(&j, wake, probes);
        Ok(Err(j))
    }
}

/// What one worker last came to: judged, or an error looked past.
type Last = Option<Result<Judgement>>;

/// Records an error a waiter looks past (and looks again soon); any other
/// ends the wait.
fn looked_past(e: Error, wake: &mut Wake) -> Result<Result<Judgement>> {
    if transient(&e) {
        wake.uncovered();
        Ok(Err(e))
    } else {
        Err(e)
    }
}

/// Claims `path` for `me`, waiting (per `wait`) while someone else holds it.
/// After the timeout, the outcome is the refusal, with the last verdict (or
/// the error the last look ended on: a guard held all along, a lock that
/// kept changing).
pub fn claim_wait(
    path: impl AsRef<Path>,
    me: &Claimant,
    mut opts: ClaimOptions,
    wait: &WaitOptions,
    probes: &Probes,
) -> Result<Waited<ClaimOutcome>> {
    let start = Instant::now();
    let deadline = wait.deadline(start);
    let path = path.as_ref();
    let my_start = check_claimant(me, probes)?;
    if let Some(i) = &wait.interrupt {
        opts.cancel = Some(i.cancel.clone());
    }
    let mut wake = Wake::new();
    let queued = Queued::join(path, wait, deadline, &mut wake)?;
    let mut last: Last = None;
    let got = wait_loop(
        &queued.worker.lock_path(),
        wait,
        &mut wake,
        |wake, passed| {
            claimant_still(me, my_start, wake, probes)?;
            probes.sessions.refresh();
            opts.guard_timeout = Some(guard_limit(deadline));
            let looked = match queued.look(me, my_start, &opts, passed, wake, probes) {
                Ok(Ok(c)) => return Ok(Look::Done(c)),
                Ok(Err(j)) => Ok(j),
                Err(e) => looked_past(e, wake)?,
            };
            let claimable = looked.as_ref().is_ok_and(|j| j.state.claimable());
            last = Some(looked);
            Ok(Look::Waiting { claimable })
        },
    )?;
    let outcome = match (got, last) {
        (Some(c), _) => ClaimOutcome::Done(c),
        (None, Some(Ok(j))) => ClaimOutcome::Refused(Box::new(j)),
        (None, Some(Err(e))) => return Err(e),
        (None, None) => ClaimOutcome::Refused(Box::new(crate::lock::judge(path, probes)?)),
    };
    Ok(Waited {
        outcome,
        waited: start.elapsed(),
    })
}

/// Claims whichever of `paths` can be claimed first (in the given order
/// when several can), waiting per `wait`. A worker that cannot be opened
/// is reported in `tried` and not waited for.
pub fn claim_first_free_wait<P: AsRef<Path>>(
    paths: &[P],
    me: &Claimant,
    wait: &WaitOptions,
    probes: &Probes,
) -> Result<Waited<FirstFree>> {
    let start = Instant::now();
    let deadline = wait.deadline(start);
    let my_start = check_claimant(me, probes)?;
    let mut opts = ClaimOptions {
        only_free: true,
        cancel: wait.interrupt.as_ref().map(|i| i.cancel.clone()),
        ..ClaimOptions::default()
    };
    let mut wake = Wake::new();
    let mut failed = Vec::new();
    let mut queued = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        match Queued::join(p.as_ref(), wait, deadline, &mut wake) {
            Ok(q) => queued.push((i, q)),
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => failed.push((p.as_ref().to_path_buf(), Err(e))),
        }
    }
    let mut tried = Vec::new();
    let about = queued
        .first()
        .map_or_else(PathBuf::new, |(_, q)| q.worker.lock_path());
    let got = if queued.is_empty() {
        None
    } else {
        wait_loop(&about, wait, &mut wake, |wake, passed| {
            claimant_still(me, my_start, wake, probes)?;
            probes.sessions.refresh();
            opts.guard_timeout = Some(guard_limit(deadline));
            tried.clear();
            let mut claimable = false;
            for (i, q) in &queued {
                let looked = match q.look(me, my_start, &opts, passed, wake, probes) {
                    Ok(Ok(c)) => return Ok(Look::Done((*i, c))),
                    Ok(Err(j)) => Ok(j),
                    Err(e) => Err(one_of_many(e, wake)?),
                };
                claimable |= looked.as_ref().is_ok_and(|j| j.state.claimable());
                tried.push((q.given.clone(), looked));
            }
            if let Some(e) = all_failed(&mut tried) {
                return Err(e);
            }
            Ok(Look::Waiting { claimable })
        })?
    };
    // Only the workers before the one claimed were passed over.
    if let Some((i, _)) = &got {
        tried.retain(|(p, _)| paths[..*i].iter().any(|q| q.as_ref() == p));
    }
    failed.extend(tried);
    Ok(Waited {
        outcome: FirstFree {
            claimed: got,
            tried: failed,
        },
        waited: start.elapsed(),
    })
}
