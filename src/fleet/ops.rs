//! Judging workers on the fleet store, and the operations on them
//! ([`claim`], [`release`]). The etcd key is the authority; the local
//! `.runtime/agent.lock` is kept too (written on claim, removed on release),
//! so `gt` and file-based tools on this host see the worker held. A record of
//! another host is `held` while its key exists (its keeper keeps it, or its
//! lease expires); one of this host is judged by the local PID + tmux rules.

use super::etcd::{Fleet, Stored};
use crate::error::{Error, Result};
use crate::lock::{Judgement, Probes};
use crate::record::LockRecord;
use crate::trust::escape;
use crate::verdict::{self, State};
use std::path::{Path, PathBuf};

pub use super::claim::{FleetClaimOutcome, FleetClaimed, FleetFirstFree, claim, claim_first_free};
pub use super::release::{FleetReleaseOutcome, release, release_all, release_stored};

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
    let here = this_host(rec, probes);
    tracing::debug!(
        "fleet key {} (revision {}, lease {:x}, fence {}): written on host {} boot {}, this is {} boot {}: {}",
        escape(key),
        stored.revision,
        stored.lease,
        fr.fence,
        escape(rec.hostname.as_deref().unwrap_or("none")),
        escape(rec.boot_id.as_deref().unwrap_or("none")),
        escape(&probes.host.hostname),
        escape(probes.host.boot_id.as_deref().unwrap_or("none")),
        if here {
            "this host's, judged by its PID and tmux"
        } else {
            "another host's, held while its key exists"
        }
    );
    let judgement = if here {
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
    tracing::debug!(
        "fleet key {}: {}: {}",
        escape(key),
        judgement.state,
        escape(&judgement.reason)
    );
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
