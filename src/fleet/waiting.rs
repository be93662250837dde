//! Waiting for a worker on the store (`--wait`): the same loop as on lock
//! files ([`crate::wait`]), woken by an etcd watch on the worker's key and
//! its waiters' queue ([`super::watch`]), and, for a holder on this host,
//! by its process and session exiting. Waiters are served in the order the
//! store created their queue keys ([`super::queue`]).

use super::claim::{FleetClaimOutcome, FleetClaimed, FleetFirstFree, claim};
use super::etcd::Fleet;
use super::keeper::KeeperLease;
use super::ops::{FleetJudgement, judge, this_host};
use super::queue::{StoreTicket, waiters_of};
use super::watch::KeyWatch;
use crate::error::{Error, Result};
use crate::lock::claim::check_claimant;
use crate::lock::{Asker, ClaimOptions, Claimant, Probes, Standing};
use crate::verdict::State;
use crate::wait::wake::Wake;
use crate::wait::{
    Look, WaitOptions, Waited, all_failed, claimant_still, guard_limit, one_of_many, wait_loop,
    watch_judged,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One worker waited for: as given, its directory, its key, its place.
struct Target {
    given: PathBuf,
    dir: PathBuf,
    key: String,
    ticket: StoreTicket,
}

/// Registers what can change a store verdict besides the watched key: a
/// holder on this host (its process and session).
fn watch_fleet_judged(j: &FleetJudgement, wake: &mut Wake, probes: &Probes) {
    if j.judgement
        .record
        .as_ref()
        .is_some_and(|r| this_host(r, probes))
    {
        watch_judged(&j.judgement, wake, probes);
    }
}

/// What a wait over `targets` came to: the claim (index and claim), or
/// each worker as last judged.
type Outcome = (
    Option<(usize, Box<FleetClaimed>)>,
    Vec<(PathBuf, Result<FleetJudgement>)>,
);

/// One look at `t`: claimed when first in its queue (or `passed`),
/// otherwise judged.
fn look(
    fleet: &Fleet,
    t: &Target,
    me: &Claimant,
    opts: &ClaimOptions,
    keeper: &KeeperLease,
    passed: bool,
    probes: &Probes,
) -> Result<std::result::Result<FleetJudgement, Box<FleetClaimed>>> {
    if passed || t.ticket.ahead(fleet, probes)? == 0 {
        // Judged first, claimed only when it can be had: a fleet claim
        // writes the local lock file before the store, and a waiter killed
        // between a refused store write and undoing the file would leave
        // a lock naming its claimant behind. Claiming only a claimable
        // worker (or the claimant's own) keeps that window to real chances.
        let j = judge(fleet, &t.dir, &t.key, probes)?;
        if j.judgement.standing(&Asker::from(me), probes) == Standing::Taken {
            return Ok(Ok(j));
        }
        match claim(
            fleet,
            &t.dir,
            &t.key,
            me,
            opts.clone(),
            Some(keeper),
            probes,
        )? {
            FleetClaimOutcome::Done(c) => Ok(Err(c)),
            FleetClaimOutcome::Refused(j) => Ok(Ok(*j)),
        }
    } else {
        let j = judge(fleet, &t.dir, &t.key, probes)?;
        // A stale record of this host: the waiter first in line may be on
        // another host, where only this host's keeper (every period) could
        // clear it. Cleared now, as the sweep would (compare-and-delete,
        // judged again); the watch wakes the first waiter.
        if j.judgement.state == State::Stale
            && j.judgement
                .record
                .as_ref()
                .is_some_and(|r| this_host(r, probes))
        {
            let asker = Asker::this_process();
            let _ = super::release::release(fleet, &t.dir, &t.key, &asker, false, probes);
        }
        Ok(Ok(j))
    }
}

#[allow(clippy::too_many_arguments)]
fn wait_for(
    fleet: &Fleet,
    targets: &[Target],
    me: &Claimant,
    my_start: Option<u64>,
    opts: &ClaimOptions,
    keeper: &KeeperLease,
    wait: &WaitOptions,
    watch: Option<KeyWatch>,
    probes: &Probes,
) -> Result<Outcome> {
    let mut wake = Wake::new();
    let mut keys = Vec::new();
    for t in targets {
        keys.push((t.key.clone(), false));
        keys.push((waiters_of(&t.key), true));
    }
    let from = targets.iter().map(|t| t.ticket.revision).min().unwrap_or(0);
    // Without a watch (cannot start a thread), judged periodically.
    let mut watch = watch;
    if let Some(w) = &mut watch {
        w.begin(keys, from);
    }
    match &watch {
        Some(w) => wake.watch_pipe(w.fd()),
        None => wake.uncovered(),
    }
    let mut tried = Vec::new();
    let about = targets.first().map_or_else(PathBuf::new, |t| t.dir.clone());
    let deadline = wait.deadline(std::time::Instant::now());
    let mut opts = opts.clone();
    let got = wait_loop(&about, wait, &mut wake, |wake, passed| {
        claimant_still(me, my_start, wake, probes)?;
        probes.sessions.refresh();
        opts.guard_timeout = Some(guard_limit(deadline));
        tried.clear();
        let mut claimable = false;
        for (i, t) in targets.iter().enumerate() {
            let looked = match look(fleet, t, me, &opts, keeper, passed, probes) {
                Ok(Err(c)) => return Ok(Look::Done((i, c))),
                Ok(Ok(j)) => Ok(j),
                // Changed while judged (a holder's release, the keeper's
                // sweep), the store slow to answer, or one worker of several
                // failed for good: looked at again, the others still waited
                // for; all failed for good ends the wait (below).
                Err(e) => Err(one_of_many(e, wake)?),
            };
            if let Ok(j) = &looked {
                claimable |= j.judgement.state.claimable();
                watch_fleet_judged(j, wake, probes);
            }
            tried.push((t.given.clone(), looked));
        }
        if let Some(e) = all_failed(&mut tried) {
            return Err(e);
        }
        Ok(Look::Waiting { claimable })
    });
    drop(watch);
    for t in targets {
        t.ticket.leave(fleet);
    }
    let got = got?;
    if let Some((i, _)) = &got {
        tried.truncate(*i);
    }
    Ok((got, tried))
}

fn join(
    fleet: &Fleet,
    given: &Path,
    dir: PathBuf,
    key: String,
    keeper: &KeeperLease,
    probes: &Probes,
) -> Result<Target> {
    let ticket = StoreTicket::join(fleet, &key, keeper.id, probes)?;
    Ok(Target {
        given: given.into(),
        dir,
        key,
        ticket,
    })
}

/// Claims worker `worker` (key `key`) on the store for `me`, waiting (per
/// `wait`) while someone else holds it. After the timeout, the outcome is
/// the refusal.
#[allow(clippy::too_many_arguments)]
pub fn claim_wait(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    me: &Claimant,
    mut opts: ClaimOptions,
    keeper: &KeeperLease,
    wait: &WaitOptions,
    probes: &Probes,
) -> Result<Waited<FleetClaimOutcome>> {
    let start = Instant::now();
    let my_start = check_claimant(me, probes)?;
    if let Some(i) = &wait.interrupt {
        opts.cancel = Some(i.cancel.clone());
    }
    // Connecting while the waiter joins the queue.
    let watch = KeyWatch::connect(fleet.spec(), fleet.timeout()).ok();
    let target = join(fleet, worker, worker.into(), key.into(), keeper, probes)?;
    let (got, mut tried) = wait_for(
        fleet,
        &[target],
        me,
        my_start,
        &opts,
        keeper,
        wait,
        watch,
        probes,
    )?;
    let outcome = match (got, tried.pop()) {
        (Some((_, c)), _) => FleetClaimOutcome::Done(c),
        (None, Some((_, Ok(j)))) => FleetClaimOutcome::Refused(Box::new(j)),
        (None, Some((_, Err(e)))) => return Err(e),
        (None, None) => FleetClaimOutcome::Refused(Box::new(judge(fleet, worker, key, probes)?)),
    };
    Ok(Waited {
        outcome,
        waited: start.elapsed(),
    })
}

/// Claims whichever of `workers` frees first on the store, waiting per
/// `wait`. A worker outside the fleet root is reported and not waited for.
pub fn claim_first_free_wait<P: AsRef<Path>>(
    fleet: &Fleet,
    fleet_root: &Path,
    workers: &[P],
    me: &Claimant,
    keeper: &KeeperLease,
    wait: &WaitOptions,
    probes: &Probes,
) -> Result<Waited<FleetFirstFree>> {
    let start = Instant::now();
    let my_start = check_claimant(me, probes)?;
    let opts = ClaimOptions {
        only_free: true,
        cancel: wait.interrupt.as_ref().map(|i| i.cancel.clone()),
        ..ClaimOptions::default()
    };
    let watch = KeyWatch::connect(fleet.spec(), fleet.timeout()).ok();
    let mut failed = Vec::new();
    let mut targets = Vec::new();
    let mut index = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let w = w.as_ref();
        match super::locate(fleet.spec(), fleet_root, w)
            .and_then(|(dir, key)| join(fleet, w, dir, key, keeper, probes))
        {
            Ok(t) => {
                targets.push(t);
                index.push(i);
            }
            Err(e @ Error::Store { .. }) => {
                for t in &targets {
                    t.ticket.leave(fleet);
                }
                return Err(e);
            }
            Err(e) => failed.push((w.to_path_buf(), Err(e))),
        }
    }
    let (got, tried) = if targets.is_empty() {
        (None, Vec::new())
    } else {
        wait_for(
            fleet, &targets, me, my_start, &opts, keeper, wait, watch, probes,
        )?
    };
    failed.extend(tried);
    Ok(Waited {
        outcome: FleetFirstFree {
            claimed: got.map(|(i, c)| (index[i], c)),
            tried: failed,
            untried: Vec::new(),
        },
        waited: start.elapsed(),
    })
}
