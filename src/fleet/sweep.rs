//! The keeper's sweep of this host's records: delete those the local PID +
//! tmux rules prove stale (compare-and-delete, then the lock file the claim
//! wrote), move live ones left on a lease nobody renews onto the keeper's,
//! and remember the live claims. After the keeper's lease expired, every
//! remembered claim whose holder still lives and still has its lock file is
//! claimed again on the new lease, with a new fence, unless another holder
//! took the worker meanwhile: that collision is logged (and `doctor` shows
//! it). Claims are remembered from the sweeps and from the claims file
//! every acknowledged claim appends to ([`crate::fleet::journal`]), so a
//! claim made just before a stall, or on a predecessor keeper's lease (a
//! restart), is not forgotten.

use super::FleetRecord;
use super::etcd::{Created, Fleet, Stored};
use super::keeping::esc;
use super::ops::{judge_stored, this_host};
use crate::error::Result;
use crate::probe::{LiveProbes, Probes, TmuxQuery};
use crate::record::LockRecord;
use crate::trust::escape;
use crate::verdict::State;
use std::collections::BTreeMap;
use std::path::Path;
use tracing::{debug, info, warn};

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// This host's records looked at.
    pub records: usize,
    /// Stale ones deleted.
    pub deleted: usize,
}

/// This host's live claims on the keeper's lease, by key: what is claimed
/// again if the lease expires.
pub(crate) type Remembered = BTreeMap<String, LockRecord>;

/// What `rec`'s lock file on this host (`fleet_dir`) holds now, read the
/// way every lock file is (no symlinks of others, regular files only, size
/// capped: a FIFO or `/dev/zero` planted there stops nothing).
#[derive(Debug, PartialEq, Eq)]
enum Mirror {
    /// Exactly `rec`: the claim was not released.
    Same,
    /// Another host's fleet claim of the same key (a fleet root the hosts
    /// share): the worker was taken from this host's holder.
    Taken,
    /// Anything else: released, or claimed again on this host.
    Gone,
}

fn mirror(key: &str, rec: &LockRecord, probes: &Probes) -> Mirror {
    let Some(dir) = rec.fleet_dir.as_deref() else {
        return Mirror::Gone;
    };
    match crate::lock::judge(dir, probes).ok().and_then(|j| j.record) {
        Some(r) if r == *rec => Mirror::Same,
        Some(r) if r.fleet_key.as_deref() == Some(key) && !this_host(&r, probes) => Mirror::Taken,
        _ => Mirror::Gone,
    }
}

/// Whether a remembered claim is still worth remembering: its holder lives
/// and its lock file was not released.
fn keep(key: &str, rec: &LockRecord, probes: &Probes) -> bool {
    lives(rec, probes) && mirror(key, rec, probes) != Mirror::Gone
}

/// Whether a holder judged `state` provably lives: one this keeper cannot
/// judge (another PID namespace) is never claimed again on its behalf.
fn provably_live(state: State) -> bool {
    matches!(state, State::Held | State::HeldBySession | State::Orphaned)
}

/// Whether `rec`'s holder provably lives by the local rules.
fn lives(rec: &LockRecord, probes: &Probes) -> bool {
    let v = crate::verdict::judge(rec, rec.uid, &probes.host, probes.procs, probes.sessions);
    provably_live(v.state)
}

/// Whether no process on this host started at clock tick `start` (since
/// boot): then a holder recorded with that start time, in whatever PID
/// namespace, is provably gone. A `/proc/PID/stat` that cannot be read
/// makes the answer "not proven".
fn nothing_started_at(start: u64) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<i32>() else {
            continue;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(text) => match crate::probe::process::parse_stat(&text) {
                Some(st)
                    if crate::probe::process::host_ticks(st.start_time) == start
                        && st.state != 'Z' =>
                {
                    return false;
                }
                Some(_) => {}
                None => return false,
            },
            // Exited meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return false,
        }
    }
    true
}

/// A record written from a PID namespace of its own (a sandbox) is
/// `unverified` by the PID rules (its PID means nothing here). With no
/// session recorded and no process on the host started at its holder's
/// start time, the holder is provably gone, whatever namespace it was in.
pub(crate) fn sandbox_gone(rec: &LockRecord, probes: &Probes) -> bool {
    rec.session_id.is_none()
        && rec.pid_ns.is_some_and(|ns| Some(ns) != probes.host.pid_ns)
        && rec.pid_start.is_some_and(nothing_started_at)
}

/// Deletes this host's records the local rules prove stale, each by
/// compare-and-delete on the revision judged, then the lock file the claim
/// wrote (only if it still holds that very record); tmux is asked afresh.
/// Records of this host on `lease` whose holders live are added to
/// `remembered`.
pub fn sweep(fleet: &Fleet, lease: i64, remembered: &mut Remembered) -> Result<Swept> {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let mut swept = Swept::default();
    let mut mine = Vec::new();
    let mut lease_seen = false;
    fleet.scan(|key, stored| {
        if let Ok(fr) = &stored.record
            && this_host(&fr.record, &probes)
        {
            mine.push((key, stored));
        }
    })?;
    let seen: std::collections::HashSet<String> = mine.iter().map(|(k, _)| k.clone()).collect();
    for (key, stored) in mine {
        let Ok(fr) = &stored.record else { continue };
        // A session recorded without its server could live on a tmux server
        // this long-lived process cannot see (another TMUX_TMPDIR): never
        // proven gone here; its holder or `--force` clears it.
        if fr.record.session_id.is_some() && fr.record.tmux_socket.is_none() {
            continue;
        }
        swept.records += 1;
        lease_seen |= stored.lease == lease;
        let judged = judge_stored(Path::new("/"), &key, Some(&stored), &probes);
        let state = judged.judgement.state;
        let gone = state == State::Stale
            || (state == State::Unverified && sandbox_gone(&fr.record, &probes));
        if !gone {
            if provably_live(state) {
                if stored.lease != 0 && stored.lease != lease {
                    // Left on a lease nobody renews (a move that failed
                    // when this keeper started).
                    move_to(fleet, &key, &stored, fr, lease);
                }
                remembered.insert(key, fr.record.clone());
            }
            continue;
        }
        if fleet.delete(&key, stored.revision)? {
            swept.deleted += 1;
            info!(
                "swept {}: {} (fence {})",
                escape(&key),
                escape(&judged.judgement.reason),
                fr.fence
            );
            if let Some(dir) = &fr.record.fleet_dir {
                let _ = crate::lock::release_written(dir, &fr.record, &probes);
            }
        }
    }
    // A claim is forgotten once its holder is gone or its lock file no
    // longer holds it (released).
    remembered.retain(|key, rec| keep(key, rec, &probes));
    // Some of this host's records on the lease were seen, so the lease
    // lived: a remembered claim missing from the store was removed on
    // purpose (`release --force` elsewhere), not lost with the lease.
    if lease_seen {
        remembered.retain(|key, _| seen.contains(key));
    }
    // Waiters of this host that died in the queue (a lost answer to their
    // leaving, a SIGKILL): gone from the queue within a period.
    let _ = super::queue::sweep_waiters(fleet, &probes);
    debug!(
        "sweep: {} records of this host looked at, {} stale deleted, {} live claims remembered",
        swept.records,
        swept.deleted,
        remembered.len()
    );
    Ok(swept)
}

/// Hangs `stored` (the record `fr` of `key`) on `lease`, keeping its fence:
/// a live claim left on a lease nobody renews any more.
fn move_to(fleet: &Fleet, key: &str, stored: &Stored, fr: &FleetRecord, lease: i64) {
    match fleet.replace(
        key,
        stored.revision,
        &fr.record,
        Some(fr.fence),
        Some(lease),
    ) {
        Ok(Some(_)) => info!(
            "moved {} (pid {}, fence {}) to lease {lease:x}",
            escape(key),
            fr.record.pid,
            fr.fence
        ),
        Ok(None) => info!(
            "{} changed while being moved to lease {lease:x}; the next sweep judges it",
            escape(key)
        ),
        Err(e) => warn!(
            "could not move {} to lease {lease:x}: {}",
            escape(key),
            esc(&e)
        ),
    }
}

/// After the lease expired: claims every remembered worker again on `lease`
/// (the same record, a new fence) unless another holder took it.
pub(crate) fn reclaim(fleet: &Fleet, lease: i64, remembered: &mut Remembered) {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    remembered.retain(|key, rec| keep(key, rec, &probes));
    for (key, rec) in remembered.iter() {
        // Its lock file now holds another host's claim (a shared fleet
        // root): never claimed again here; reported if that host holds it.
        let created = if mirror(key, rec, &probes) == Mirror::Taken {
            fleet.get(key).map(|s| match s {
                Some(s) => Created::Exists(Box::new(s)),
                None => Created::Fence(0),
            })
        } else {
            fleet.create(key, rec, Some(lease))
        };
        match created {
            Ok(Created::Fence(0)) => {}
            Ok(Created::Fence(f)) => warn!(
                "re-claimed {} for pid {} on the new lease {lease:x} (fence {f}): the worker was free while the lease was lost",
                escape(key),
                rec.pid
            ),
            Ok(Created::Exists(s)) => match &s.record {
                // Still there on the old lease (it was not quite gone):
                // hung on the new one, same holder, same fence.
                Ok(fr) if fr.record.same_claim(rec) && s.lease != lease => {
                    move_to(fleet, key, &s, fr, lease)
                }
                Ok(fr) if fr.record.same_claim(rec) => {}
                Ok(fr) => warn!(
                    "COLLISION {}: pid {} on this host still holds it, but while this host's lease was lost pid {} on host {} claimed it (fence {})",
                    escape(key),
                    rec.pid,
                    fr.record.pid,
                    escape(fr.record.hostname.as_deref().unwrap_or("?")),
                    fr.fence
                ),
                Err(why) => warn!(
                    "COLLISION {}: pid {} on this host still holds it, but the store holds a value that is not a record ({})",
                    escape(key),
                    rec.pid,
                    escape(&why.to_string())
                ),
            },
            Err(e) => warn!("could not re-claim {}: {}", escape(key), esc(&e)),
        }
    }
}
