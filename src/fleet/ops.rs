//! claim / release / judge on the fleet store. The etcd key is the
//! authority; the local `.runtime/agent.lock` is kept too (written on claim,
//! removed on release), so `gt` and file-based tools on this host see the
//! worker held. A record of another host is `held` while its key exists (its
//! keeper keeps it, or its lease expires); one of this host is judged by the
//! local PID + tmux rules.

use super::etcd::{Created, Fleet, Stored};
use crate::error::{Error, Result};
use crate::holder::{Asker, Claimant, Scope, holds};
use crate::lock::{self, ClaimAction, ClaimOptions, ClaimOutcome, Judgement, Probes};
use crate::record::LockRecord;
use crate::verdict::{self, State};
use std::path::{Path, PathBuf};

pub use super::release::{FleetReleaseOutcome, release, release_stored};

/// A worker judged on the fleet store.
#[derive(Debug, Clone)]
pub struct FleetJudgement {
    /// The verdict, as for a lock file (`lock_path` is the etcd key).
    pub judgement: Judgement,
    /// The holder's fence, when there is a record.
    pub fence: Option<i64>,
    /// The revision it was judged at (0: no key).
    pub revision: i64,
}

/// Judges what `key` holds: `free` when absent, `held` for another host's
/// record, the local rules for this host's, `corrupt` for a bad value.
pub fn judge_stored(
    worker: &Path,
    key: &str,
    stored: Option<&Stored>,
    probes: &Probes,
) -> FleetJudgement {
    let at = |state, reason: String| Judgement::at(worker, Path::new(key), state, reason);
    let Some(stored) = stored else {
        return FleetJudgement {
            judgement: at(State::Free, "no fleet record".into()),
            fence: None,
            revision: 0,
        };
    };
    let fr = match &stored.record {
        Ok(fr) => fr,
        Err(why) => {
            return FleetJudgement {
                judgement: at(State::Corrupt, format!("fleet record: {why}")),
                fence: None,
                revision: stored.revision,
            };
        }
    };
    let rec = &fr.record;
    let judgement = if this_host(rec, probes) {
        let v = verdict::judge(rec, rec.uid, &probes.host, probes.procs, probes.sessions);
        Judgement {
            record: Some(rec.clone()),
            pid_alive: v.pid_alive,
            session_alive: v.session_alive,
            owner: rec.uid,
            ..at(v.state, v.reason)
        }
    } else {
        Judgement {
            record: Some(rec.clone()),
            ..at(
                State::Held,
                format!(
                    "held on host {} (fleet record, fence {}): alive while that host's keeper keeps its lease",
                    rec.hostname.as_deref().unwrap_or("?"),
                    fr.fence
                ),
            )
        }
    };
    FleetJudgement {
        judgement,
        fence: Some(fr.fence),
        revision: stored.revision,
    }
}

/// Whether a fleet record was written on this host: the same hostname and
/// the same boot (`boot_id`, which every fleet claim records). Anything
/// else is another host's, `held` while its key exists: hostnames repeat
/// across cloned machines, a record without `boot_id` was not written by a
/// claim here and cannot be proven this host's, and this host's records
/// from before a reboot expired with its old keeper's lease anyway.
pub fn this_host(rec: &LockRecord, probes: &Probes) -> bool {
    let host = &probes.host;
    let same_name = rec.hostname.as_deref().is_some_and(|h| h == host.hostname);
    let same_boot = matches!((&rec.boot_id, &host.boot_id), (Some(a), Some(b)) if a == b);
    same_name && same_boot
}

/// Judges `worker` on the store.
pub fn judge(fleet: &Fleet, worker: &Path, key: &str, probes: &Probes) -> Result<FleetJudgement> {
    let stored = fleet.get(key)?;
    Ok(judge_stored(worker, key, stored.as_ref(), probes))
}

/// Judges each of `workers` (paths, named under `fleet_root`). A store
/// that does not answer makes a worker `unverified`, never an error (a
/// read cannot tell); once it did not answer, the rest are not asked again
/// (each would cost the time limit). Other errors (no such worker, outside
/// the fleet root) are returned per worker.
pub fn judge_many<P: AsRef<Path>>(
    fleet: &Fleet,
    fleet_root: &Path,
    workers: &[P],
    probes: &Probes,
) -> Vec<(PathBuf, Result<FleetJudgement>)> {
    let mut down: Option<String> = None;
    let mut out = Vec::new();
    for w in workers {
        let w = w.as_ref();
        let located = super::locate(fleet.spec(), fleet_root, w);
        let judged = match (&down, located) {
            (_, Err(e)) => Err(e),
            (Some(why), Ok((dir, key))) => Ok(unverified(&dir, &key, why.clone())),
            (None, Ok((dir, key))) => match judge(fleet, &dir, &key, probes) {
                Err(e @ Error::Store { .. }) => {
                    down = Some(e.to_string());
                    Ok(unverified(&dir, &key, e.to_string()))
                }
                other => other,
            },
        };
        out.push((w.to_path_buf(), judged));
    }
    out
}

fn unverified(worker: &Path, key: &str, why: String) -> FleetJudgement {
    FleetJudgement {
        judgement: Judgement::at(worker, Path::new(key), State::Unverified, why),
        fence: None,
        revision: 0,
    }
}

/// Every worker of the fleet (all hosts), judged, sorted by key; each
/// named by its path under this host's `fleet_root`.
pub fn judge_all(fleet: &Fleet, fleet_root: &Path, probes: &Probes) -> Result<Vec<FleetJudgement>> {
    Ok(fleet
        .list()?
        .iter()
        .map(|(key, stored)| {
            let worker = super::worker_of(fleet.spec(), fleet_root, key).unwrap_or_default();
            judge_stored(&worker, key, Some(stored), probes)
        })
        .collect())
}

/// A successful fleet claim.
#[derive(Debug, Clone)]
pub struct FleetClaimed {
    /// What was done.
    pub action: ClaimAction,
    /// The worker as judged on the store before.
    pub before: FleetJudgement,
    /// The record now held.
    pub record: LockRecord,
    /// The new holder's fence.
    pub fence: i64,
}

/// The result of a fleet claim.
#[derive(Debug, Clone)]
pub enum FleetClaimOutcome {
    /// Claimed (on the store and in the local file).
    Done(Box<FleetClaimed>),
    /// Held by another (on the store or in the local file): nothing changed.
    Refused(Box<FleetJudgement>),
}

/// Claims `worker` (key `key`) on the store for `me`, its record hanging on
/// `lease`. The local lock file is claimed first, under its guard (a live
/// local holder, `gt`'s included, refuses it), then the store in one
/// transaction; if the store refuses, the local claim is undone.
pub fn claim(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    me: &Claimant,
    opts: ClaimOptions,
    lease: Option<i64>,
    probes: &Probes,
) -> Result<FleetClaimOutcome> {
    // Without this boot's id the record could never be proven this host's:
    // nobody could judge it stale, and it would be held until its lease ends.
    if probes.host.boot_id.is_none() {
        return Err(Error::io(
            crate::probe::BOOT_ID,
            std::io::Error::other(
                "cannot be read: a fleet claim records it, so this host's keeper can judge the claim later",
            ),
        ));
    }
    let local = match lock::claim(worker, me, opts.clone(), probes)? {
        ClaimOutcome::Done(c) => c,
        ClaimOutcome::Refused(j) => {
            return Ok(FleetClaimOutcome::Refused(Box::new(FleetJudgement {
                judgement: *j,
                fence: None,
                revision: 0,
            })));
        }
    };
    let written = local.after.record.clone().unwrap_or_default();
    // Undo only what this claim made: a local lock the holder already had
    // (a refresh) stays.
    let undo_local = || {
        if local.action != ClaimAction::Refreshed {
            let _ = lock::release_written(worker, &written, probes);
        }
    };
    // The store holds the very record the local file holds.
    let result = claim_store(fleet, worker, key, me, &written, &opts, lease, probes);
    match result {
        Ok(FleetClaimOutcome::Done(c)) => Ok(FleetClaimOutcome::Done(c)),
        other => {
            undo_local();
            other
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn claim_store(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    me: &Claimant,
    record: &LockRecord,
    opts: &ClaimOptions,
    lease: Option<i64>,
    probes: &Probes,
) -> Result<FleetClaimOutcome> {
    let created = fleet
        .create(key, record, lease)
        .or_else(|e| landed(fleet, key, record, e).map(Created::Fence));
    let stored = match created? {
        Created::Fence(fence) => {
            let before = judge_stored(worker, key, None, probes);
            return Ok(done(ClaimAction::Claimed, before, record.clone(), fence));
        }
        Created::Exists(s) => *s,
    };
    let before = judge_stored(worker, key, Some(&stored), probes);
    let previous = stored.record.as_ref().ok();
    let mine = previous.is_some_and(|p| {
        holds(
            &p.record,
            p.record.uid,
            &Asker::from(me),
            Scope::Claim,
            probes,
        )
    });
    let (action, keep_fence) = match before.judgement.state {
        _ if mine && opts.only_free => return Ok(refused(before, "already yours")),
        _ if mine => (ClaimAction::Refreshed, previous.map(|p| p.fence)),
        State::Stale => (ClaimAction::ReplacedStale, None),
        State::Corrupt => (ClaimAction::ReplacedCorrupt, None),
        _ if opts.force => (ClaimAction::TookOver, None),
        _ => return Ok(FleetClaimOutcome::Refused(Box::new(before))),
    };
    let written = if stored.record.is_err() {
        // A value that is not a record is kept aside, never lost.
        fleet
            .move_aside(key, &stored, Some(record), lease)
            .map(|moved| moved.map(|(_, fence)| fence))
    } else {
        fleet.replace(key, stored.revision, record, keep_fence, lease)
    };
    let written = written.or_else(|e| landed(fleet, key, record, e).map(Some))?;
    match written {
        Some(fence) => Ok(done(action, before, record.clone(), fence)),
        None => Err(Error::LockChanging { path: key.into() }),
    }
}

/// How long the read after a lost write answer may take.
const LANDED_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A claim's write whose answer was lost (the call timed out, the leader
/// changed) may still have been applied: the key is read again, and if it
/// holds exactly `record` (same PID, start, time to the nanosecond), the
/// claim stands, with the fence stored. Otherwise the error stands.
fn landed(fleet: &Fleet, key: &str, record: &LockRecord, err: Error) -> Result<i64> {
    if !matches!(err, Error::Store { .. }) {
        return Err(err);
    }
    // Briefly: a store that did not answer the write likely will not
    // answer this either, and the command must still answer in bounded time.
    match fleet.within(LANDED_LIMIT, |f| f.get(key)) {
        Ok(Some(Stored { record: Ok(fr), .. })) if fr.record == *record => Ok(fr.fence),
        _ => Err(err),
    }
}

fn done(
    action: ClaimAction,
    before: FleetJudgement,
    record: LockRecord,
    fence: i64,
) -> FleetClaimOutcome {
    FleetClaimOutcome::Done(Box::new(FleetClaimed {
        action,
        before,
        record,
        fence,
    }))
}

fn refused(mut before: FleetJudgement, why: &str) -> FleetClaimOutcome {
    before.judgement.reason = format!("{why}: {}", before.judgement.reason);
    FleetClaimOutcome::Refused(Box::new(before))
}

/// What a fleet `claim --first-free` came to.
#[derive(Debug)]
pub struct FleetFirstFree {
    /// The worker claimed: its index among those given, and the claim.
    pub claimed: Option<(usize, Box<FleetClaimed>)>,
    /// The workers tried and not claimed, in order: judged, or the error.
    pub tried: Vec<(PathBuf, Result<FleetJudgement>)>,
    /// The workers not tried: the store stopped answering before them.
    pub untried: Vec<PathBuf>,
}

impl FleetFirstFree {
    /// Nothing claimed, and "no free worker" was not established: every
    /// worker tried failed, or the store did not answer for one (exit 2).
    pub fn undecided(&self) -> bool {
        self.claimed.is_none()
            && !self.tried.is_empty()
            && (self.tried.iter().all(|(_, r)| r.is_err())
                || self
                    .tried
                    .iter()
                    .any(|(_, r)| matches!(r, Err(Error::Store { .. }))))
    }
}

/// Claims the first of `workers`, in order, that is `free`, `stale` or
/// `corrupt` on the store (and in its lock file); a worker `me` already
/// holds is not free. An unreachable store ends the search: every other
/// worker would cost the time limit again.
pub fn claim_first_free<P: AsRef<Path>>(
    fleet: &Fleet,
    fleet_root: &Path,
    workers: &[P],
    me: &Claimant,
    lease: Option<i64>,
    probes: &Probes,
) -> FleetFirstFree {
    let opts = ClaimOptions {
        only_free: true,
        ..ClaimOptions::default()
    };
    let mut tried = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let w = w.as_ref();
        let r = super::locate(fleet.spec(), fleet_root, w)
            .and_then(|(dir, key)| claim(fleet, &dir, &key, me, opts.clone(), lease, probes));
        match r {
            Ok(FleetClaimOutcome::Done(c)) => {
                return FleetFirstFree {
                    claimed: Some((i, c)),
                    tried,
                    untried: Vec::new(),
                };
            }
            Ok(FleetClaimOutcome::Refused(j)) => tried.push((w.to_path_buf(), Ok(*j))),
            Err(e) => {
                let down = matches!(e, Error::Store { .. });
                tried.push((w.to_path_buf(), Err(e)));
                if down {
                    let untried = workers[i + 1..]
                        .iter()
                        .map(|w| w.as_ref().to_path_buf())
                        .collect();
                    return FleetFirstFree {
                        claimed: None,
                        tried,
                        untried,
                    };
                }
            }
        }
    }
    FleetFirstFree {
        claimed: None,
        tried,
        untried: Vec::new(),
    }
}
