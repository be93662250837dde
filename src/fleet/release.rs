//! release on the fleet store: compare-and-delete of the record judged,
//! then the local lock file (the mirror a fleet claim wrote).

use super::etcd::{Fleet, Stored};
use super::ops::{FleetJudgement, judge};
use crate::error::{Error, Result};
use crate::holder::{Asker, Scope, holds};
use crate::lock::{self, Probes};
use crate::record::LockRecord;
use std::path::Path;

/// The result of a fleet release.
#[derive(Debug, Clone)]
pub enum FleetReleaseOutcome {
    /// Removed from the store (and the local file), or there was nothing.
    Done(Box<FleetJudgement>),
    /// Held by another: nothing changed.
    Refused(Box<FleetJudgement>),
}

/// Releases `worker` on the store if `who` holds it (or with `force`), by
/// compare-and-delete on the judged revision; then the local lock file.
pub fn release(
    fleet: &Fleet,
    worker: &Path,
    key: &str,
    who: &Asker,
    force: bool,
    probes: &Probes,
) -> Result<FleetReleaseOutcome> {
    let before = judge(fleet, worker, key, probes)?;
    let stored_record = before.judgement.record.clone();
    if let Some(rec) = &stored_record {
        if !force && !holds(rec, rec.uid, who, Scope::ActFor, probes) {
            return Ok(FleetReleaseOutcome::Refused(Box::new(before)));
        }
        if !fleet.delete(key, before.revision)? {
            return Err(Error::LockChanging { path: key.into() });
        }
    } else if before.revision != 0 {
        // A value that is not a record: only --force moves it aside.
        if !force {
            return Ok(FleetReleaseOutcome::Refused(Box::new(before)));
        }
        let moved = match fleet.get(key)? {
            Some(s) if s.revision == before.revision => fleet.move_aside(key, &s, None, None)?,
            _ => None,
        };
        if moved.is_none() {
            return Err(Error::LockChanging { path: key.into() });
        }
    }
    // The local mirror: the very record the fleet claim wrote; with no
    // record on the store (it expired), the asker's own local lock.
    match &stored_record {
        Some(rec) => {
            let _ = lock::release_written(worker, rec, probes);
        }
        None => {
            let _ = lock::release(worker, who, force, probes);
        }
    }
    Ok(FleetReleaseOutcome::Done(Box::new(before)))
}

/// Removes the fleet record of a claim: if it still is the claim of
/// `written` with `fence` (the holder may have refreshed it), by
/// compare-and-delete on the revision read. A record that is gone or another
/// holder's is left alone: the worker was lost, not released. (The local
/// lock file is the caller's: [`crate::run::FileHold`]'s rule.)
pub fn release_stored(fleet: &Fleet, key: &str, written: &LockRecord, fence: i64) -> Result<()> {
    let ours = |s: &Stored| {
        s.record
            .as_ref()
            .is_ok_and(|fr| fr.fence == fence && fr.record.same_claim(written))
    };
    // Twice at most: this host's keeper may delete the record (its holder
    // has exited) between the read and the compare-and-delete.
    for _ in 0..2 {
        match fleet.get(key)? {
            Some(s) if ours(&s) => {
                if fleet.delete(key, s.revision)? {
                    return Ok(());
                }
            }
            // Gone, or another's: nothing of ours to remove.
            _ => return Ok(()),
        }
    }
    Err(Error::LockChanging { path: key.into() })
}
