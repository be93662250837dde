//! release on the fleet store: compare-and-delete of the record judged,
//! then the local lock file (the mirror a fleet claim wrote). The keeper may
//! sweep the record between the two (its holder exited: an exit hook
//! releasing its agent's worker races it), and a delete's answer may be
//! lost: either way the record is gone, the worker is free, and the local
//! file is still cleaned up.

use super::etcd::{Fleet, Stored};
use super::ops::{FleetJudgement, judge};
use crate::error::{Error, Result};
use crate::holder::{Asker, Scope, gone_session_asks_for_live, holds};
use crate::lock::{self, Probes};
use crate::record::LockRecord;
use crate::verdict::State;
use std::path::Path;

/// The result of a fleet release.
#[derive(Debug, Clone)]
pub enum FleetReleaseOutcome {
    /// Removed from the store (and the local file), or there was nothing.
    Done(Box<FleetJudgement>),
    /// Held by another: nothing changed.
    Refused(Box<FleetJudgement>),
}

/// How many times a release judges again when the record changed under it.
const ROUNDS: usize = 3;

/// Releases `worker` on the store if `who` holds it, its record is stale,
/// or with `force`, by compare-and-delete on the judged revision; then the
/// local lock file.
pub fn release(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    who: &Asker,
    force: bool,
    probes: &Probes,
) -> Result<FleetReleaseOutcome> {
    let mut first: Option<FleetJudgement> = None;
    for _ in 0..ROUNDS {
        let mut before = judge(fleet, worker, key, probes)?;
        if !force
            && before.judgement.state == State::Stale
            && before.judgement.session_alive.is_some()
        {
            // Removing a record proven dead by its session: ask tmux again
            // now that the PID was seen dead, as a lock file's release does
            // (a new session of the same name may have claimed meanwhile).
            probes.sessions.refresh();
            before = judge(fleet, worker, key, probes)?;
        }
        let first = first.get_or_insert_with(|| before.clone());
        let removed = match &before.judgement.record {
            Some(rec) => {
                // A record whose holder is provably gone (stale) is nobody's:
                // removing it is what the keeper's sweep would do (an exit
                // hook releasing its just-exited agent's worker).
                let stale = before.judgement.state == State::Stale;
                let mine = holds(rec, rec.uid, who, Scope::ActFor, probes)
                    && !gone_session_asks_for_live(who, before.judgement.session_alive);
                if !force && !stale && !mine {
                    return Ok(FleetReleaseOutcome::Refused(Box::new(before)));
                }
                delete(fleet, key, before.revision)?
            }
            // No record: the local mirror is all there may be left.
            None if before.revision == 0 => {
                release_mirror(worker, key, who, force, probes);
                return Ok(FleetReleaseOutcome::Done(Box::new(first.clone())));
            }
            // A value that is not a record: only --force moves it aside.
            None => {
                if !force {
                    return Ok(FleetReleaseOutcome::Refused(Box::new(before)));
                }
                match fleet.get(key)? {
                    Some(s) if s.revision == before.revision => aside(fleet, key, &s)?,
                    _ => false,
                }
            }
        };
        if removed {
            if let Some(rec) = &before.judgement.record {
                // The very record the fleet claim wrote, whoever asks.
                let _ = lock::release_written(worker, rec, probes);
            }
            release_mirror(worker, key, who, force, probes);
            return Ok(FleetReleaseOutcome::Done(Box::new(before)));
        }
        // Changed since judged (the keeper swept it, another host wrote
        // it): judge what is there now.
    }
    Err(Error::RecordChanged { key: key.into() })
}

/// Compare-and-delete, reading the key back when the answer was lost: gone
/// (by this delete or anyone's) is released.
fn delete(fleet: &Fleet, key: &str, revision: i64) -> Result<bool> {
    match fleet.delete(key, revision) {
        Ok(done) => Ok(done),
        Err(e @ Error::Store { .. }) => match fleet.get(key) {
            Ok(None) => Ok(true),
            Ok(Some(s)) if s.revision != revision => Ok(false),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Moves a value that is not a record aside; one too large to be copied is
/// deleted (it is not a record: nobody's claim is lost).
fn aside(fleet: &Fleet, key: &str, s: &Stored) -> Result<bool> {
    match fleet.move_aside(key, s, None, None) {
        Ok(moved) => Ok(moved.is_some()),
        Err(e) if super::kv::too_large(&e) => delete(fleet, key, s.revision),
        Err(e @ Error::Store { .. }) => match fleet.get(key) {
            Ok(None) => Ok(true),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// With no record of `key` on the store, the local lock file, if it
/// mirrors `key`, is left over: removed (only if unchanged, under the guard)
/// when the asker holds it, with `force`, or when its holder is provably
/// gone. A local lock that is not a mirror of the store is not this
/// command's: left alone.
fn release_mirror(worker: &Path, key: &str, who: &Asker, force: bool, probes: &Probes) {
    let Ok(j) = lock::judge(worker, probes) else {
        return;
    };
    let Some(rec) = &j.record else { return };
    if rec.fleet_key.as_deref() != Some(key) {
        return;
    }
    let mine = holds(rec, j.owner, who, Scope::ActFor, probes)
        && !gone_session_asks_for_live(who, j.session_alive);
    if force || j.state == State::Stale || mine {
        let _ = lock::release_written(worker, rec, probes);
    }
}

/// Removes the fleet record of a claim: if it still is the claim of
/// `written` (its holder may have refreshed it, or this host's keeper
/// claimed it again on a new lease), by compare-and-delete on the revision
/// read. A record that is gone or another holder's is left alone: the worker
/// was lost, not released. (The local lock file is the caller's:
/// [`crate::run::FileHold`]'s rule.)
pub fn release_stored(fleet: &Fleet, key: &str, written: &LockRecord) -> Result<()> {
    let ours = |s: &Stored| {
        s.record
            .as_ref()
            .is_ok_and(|fr| fr.record.same_claim(written))
    };
    for _ in 0..ROUNDS {
        match fleet.get(key)? {
            Some(s) if ours(&s) => {
                if delete(fleet, key, s.revision)? {
                    return Ok(());
                }
            }
            // Gone, or another's: nothing of ours to remove.
            _ => return Ok(()),
        }
    }
    Err(Error::RecordChanged { key: key.into() })
}

/// `release --all` on the store: every worker under `root` (inside the
/// fleet root) whose record `who` holds, released as [`release`] does.
/// Records of others are never touched.
pub fn release_all(
    fleet: &Fleet,
    fleet_root: &Path,
    root: &Path,
    who: &Asker,
    probes: &Probes,
) -> Result<Vec<(std::path::PathBuf, Result<FleetReleaseOutcome>)>> {
    let judged = super::ops::judge_all(fleet, fleet_root, probes)?;
    Ok(judged
        .into_iter()
        .filter(|j| j.judgement.worker_dir.starts_with(root))
        .filter(|j| j.judgement.standing(who, probes) == crate::lock::Standing::Yours)
        .map(|j| {
            let worker = j.judgement.worker_dir.clone();
            let key = j.judgement.lock_path.to_string_lossy().into_owned();
            let done = release(fleet, &worker, &key, who, false, probes);
            (worker, done)
        })
        .collect())
}
