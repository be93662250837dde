//! claim and `claim --first-free` on the fleet store. The local lock file
//! is claimed first, under its guard (a live local holder, `gt`'s included,
//! refuses it), then the store in one transaction; if the store refuses, the
//! local claim is undone. A claim is acknowledged only while this host's
//! keeper can keep it alive (checked before anything is written and again
//! once both are, see [`keeper::confirm`]); otherwise both are undone and the
//! claim fails holding nothing. A write whose answer was lost is read back:
//! if the store holds exactly the record written, the claim stands.

use super::etcd::{Created, Fleet, Stored};
use super::keeper::{self, KeeperLease};
use super::kv::too_large;
use super::ops::{FleetJudgement, judge_stored, this_host};
use crate::error::{Error, Result};
use crate::holder::{Asker, Claimant, Scope, holds};
use crate::lock::{self, ClaimAction, ClaimOptions, ClaimOutcome, FleetTag, Probes};
use crate::record::LockRecord;
use crate::verdict::State;
use std::path::{Path, PathBuf};

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

/// Claims `worker` (key `key`) on the store for `me`, its record hanging
/// on `keeper`'s lease (`None`: on no lease, for tests and tools). The
/// local lock file records the store key, the lease and the worker.
pub fn claim(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    me: &Claimant,
    mut opts: ClaimOptions,
    keeper: Option<&KeeperLease>,
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
    if let Some(k) = keeper {
        keeper::confirm(fleet.spec(), k, fleet.timeout())?;
    }
    // --force takes over the store record and the lock file whatever they
    // hold.
    if !opts.force
        && let Some(refused) = clear_foreign_mirror(fleet, worker, key, keeper, probes)?
    {
        return Ok(FleetClaimOutcome::Refused(Box::new(refused)));
    }
    let lease = keeper.map(|k| k.id);
    opts.mirror = Some(FleetTag {
        key: key.to_string(),
        lease: lease.and_then(|l| u64::try_from(l).ok()),
        dir: worker.to_string_lossy().into_owned(),
    });
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
    let c = match result {
        Ok(FleetClaimOutcome::Done(c)) => c,
        other => {
            undo_local();
            return other;
        }
    };
    // Acknowledged only if the lease is sure to outlive one more renewal.
    if let Some(k) = keeper
        && let Err(e) = keeper::confirm(fleet.spec(), k, fleet.timeout())
    {
        if c.action == ClaimAction::Refreshed {
            // The holder had it before: its record stays for as long as
            // the lease lives.
            return Err(e);
        }
        let store = super::release::release_stored(fleet, key, &written);
        undo_local();
        let what = match store {
            Ok(()) => "nothing is held",
            Err(_) => "the store record was left to expire with the lease",
        };
        return Err(match e {
            Error::Keeper { pid, why } => Error::Keeper {
                pid,
                why: format!("{why}; the claim was undone, {what}"),
            },
            other => other,
        });
    }
    if keeper.is_some() {
        super::journal::note_claim(fleet.spec(), key, &c.record);
    }
    Ok(FleetClaimOutcome::Done(c))
}

/// A lock file in `worker` that mirrors another host's claim of `key` (a
/// fleet root on a filesystem the hosts share) is judged by the store: the
/// refusal when the store holds that claim, or while the claim may still be
/// landing (see [`landing`]); otherwise the file is left over and is removed
/// (only if unchanged, under the guard) so the claim can go on.
fn clear_foreign_mirror(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    keeper: Option<&KeeperLease>,
    probes: &Probes,
) -> Result<Option<FleetJudgement>> {
    let j = lock::judge(worker, probes)?;
    let Some(rec) = j.record.clone() else {
        return Ok(None);
    };
    if rec.fleet_key.as_deref() != Some(key) || this_host(&rec, probes) {
        return Ok(None);
    }
    let stored = fleet.get(key)?;
    let newer_than_stored = match stored.as_ref().map(|s| &s.record) {
        Some(Ok(fr)) if fr.record.same_claim(&rec) => {
            return Ok(Some(judge_stored(worker, key, stored.as_ref(), probes)));
        }
        Some(Ok(fr)) => rec.acquired_at > fr.record.acquired_at,
        Some(Err(_)) | None => true,
    };
    // A file naming another host but this host's own lease was not
    // written by that host.
    let own_lease = keeper.is_some_and(|k| rec.fleet_lease == u64::try_from(k.id).ok());
    if newer_than_stored
        && !own_lease
        && let Some(until) = landing(fleet, &rec)?
    {
        let mut held = FleetJudgement {
            judgement: j,
            fence: None,
            revision: 0,
        };
        held.judgement.state = State::Unverified;
        held.judgement.reason = format!(
            "its lock file names a fleet claim by host {} that the store does not hold yet: it may still be landing while that host's lease lives, until {until} at the latest",
            rec.hostname.as_deref().unwrap_or("?")
        );
        return Ok(Some(held));
    }
    let _ = lock::release_written(worker, &rec, probes);
    Ok(None)
}

/// Until when a claim recorded in a lock file may still land on the store:
/// while its host's lease lives, and no longer than three of that lease's
/// TTLs (every store call of a claim ends within the store time limit, at
/// most the TTL) plus 30 s for clocks that differ between hosts. `None`:
/// it cannot land any more.
fn landing(fleet: &Fleet, rec: &LockRecord) -> Result<Option<String>> {
    let Some(lease) = rec.fleet_lease.and_then(|l| i64::try_from(l).ok()) else {
        return Ok(None);
    };
    let (left, granted) = fleet.lease_info(lease)?;
    // A claim time in the future was not written by a claim: it could
    // only hold the worker off for as long as its writer likes.
    let Some(at) = rec.acquired_at.filter(|t| *t <= chrono::Utc::now()) else {
        return Ok(None);
    };
    let until = at + chrono::Duration::seconds(3 * granted.max(0) + 30);
    Ok((left >= 0 && chrono::Utc::now() < until).then(|| crate::record::format_time(&until)))
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
    let created = match created? {
        Created::Fence(fence) => Ok(fence),
        // This very claim, applied by an attempt whose answer was lost.
        Created::Exists(s) => own(&s, record).ok_or(s),
    };
    let stored = match created {
        Ok(fence) => {
            let before = judge_stored(worker, key, None, probes);
            return Ok(done(ClaimAction::Claimed, before, record.clone(), fence));
        }
        Err(s) => *s,
    };
    let mut before = judge_stored(worker, key, Some(&stored), probes);
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
        // A value that is not a record is kept aside, never lost; one too
        // large to be copied in a request is replaced only by --force.
        match fleet.move_aside(key, &stored, Some(record), lease) {
            Err(e) if too_large(&e) && opts.force => {
                fleet.replace(key, stored.revision, record, None, lease)
            }
            Err(e) if too_large(&e) => {
                before.judgement.reason = format!(
                    "{}; its value ({} bytes) is too large for the store to keep aside: claim --force replaces it, losing it",
                    before.judgement.reason, stored.size
                );
                return Ok(FleetClaimOutcome::Refused(Box::new(before)));
            }
            other => other.map(|moved| moved.map(|(_, fence)| fence)),
        }
    } else {
        fleet.replace(key, stored.revision, record, keep_fence, lease)
    };
    let written = match written {
        Ok(Some(fence)) => fence,
        // The compare failed: another wrote the key, or an attempt of this
        // very write did and its answer was lost.
        Ok(None) => landed(fleet, key, record, Error::RecordChanged { key: key.into() })?,
        Err(e) => landed(fleet, key, record, e)?,
    };
    Ok(done(action, before, record.clone(), written))
}

/// The fence of `stored` if it holds exactly `record` (the same process,
/// session, and claim time to the nanosecond): a write of this claim.
fn own(stored: &Stored, record: &LockRecord) -> Option<i64> {
    stored
        .record
        .as_ref()
        .ok()
        .filter(|fr| fr.record == *record)
        .map(|fr| fr.fence)
}

/// How long the read after a lost write answer may take.
const LANDED_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A claim's write whose answer was lost (no answer in time, the leader
/// changed) or whose compare failed may have been applied by this claim:
/// the key is read again, and if it holds exactly `record`, the claim
/// stands with the fence stored. Otherwise `err` stands.
fn landed(fleet: &Fleet, key: &str, record: &LockRecord, err: Error) -> Result<i64> {
    if !matches!(err, Error::Store { .. } | Error::RecordChanged { .. }) {
        return Err(err);
    }
    // Briefly: a store that did not answer the write may not answer this
    // either, and the command must still answer in bounded time.
    let unknown = |err: Error| match err {
        Error::Store { endpoints, why } => Error::Store {
            endpoints,
            why: format!(
                "{why}; whether the claim's write landed is not known (`agentlock status` tells; a record left without its lock file is reported by `doctor` and swept once its holder exits)"
            ),
        },
        other => other,
    };
    match fleet.within(LANDED_LIMIT, |f| f.get(key)) {
        Ok(Some(s)) => own(&s, record).ok_or(err),
        Ok(None) => Err(err),
        Err(_) => Err(unknown(err)),
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
                    .any(|(_, r)| matches!(r, Err(Error::Store { .. } | Error::Keeper { .. }))))
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
    keeper: Option<&KeeperLease>,
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
            .and_then(|(dir, key)| claim(fleet, &dir, &key, me, opts.clone(), keeper, probes));
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
                // The store or this host's keeper failed: every other worker
                // would fail the same way, each after its time limit.
                let down = matches!(e, Error::Store { .. } | Error::Keeper { .. });
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
