//! `doctor` on the fleet store: the store's records judged (this host's by
//! the local rules), and the store held against this host's lock files.
//!
//! Findings: a record of this host proven `stale` (`--fix` deletes it, by
//! compare-and-delete after judging it again), a value that is not a record
//! (`corrupt`: `--fix` moves it aside under `<prefix>/corrupt/`), and a
//! `collision` where the two disagree: a live local holder whose worker has
//! no fleet record (another host could claim it) or whose record names
//! another holder.

use super::etcd::{Fleet, Stored};
use super::ops::{judge_stored, this_host};
use super::{worker_key, worker_of};
use crate::doctor::{Finding, FindingKind, Fixed, Report};
use crate::error::{Error, Result};
use crate::lock::Probes;
use crate::verdict::State;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `--fix` can do about a fleet finding.
#[derive(Debug, Clone)]
enum Repair {
    Delete(String, Stored),
    MoveAside(String, Stored),
}

/// The fleet side of a diagnosis.
#[derive(Debug, Clone, Default)]
pub struct FleetCheck {
    /// What is wrong on the store, and between it and the lock files.
    pub findings: Vec<Finding>,
    /// The repair of each finding (same order), if `--fix` may do one.
    repairs: Vec<Option<Repair>>,
}

impl FleetCheck {
    fn push(&mut self, f: Finding, repair: Option<Repair>) {
        self.findings.push(f);
        self.repairs.push(repair);
    }

    fn extend(&mut self, f: Option<Finding>) {
        if let Some(f) = f {
            self.push(f, None);
        }
    }
}

/// Judges every record of the fleet (workers named under `fleet_root`),
/// and holds the live local locks of `local` against them.
pub fn check(
    fleet: &Fleet,
    fleet_root: &Path,
    local: &Report,
    probes: &Probes,
) -> Result<FleetCheck> {
    let mut out = FleetCheck::default();
    let records = match fleet.list() {
        Ok(r) => r,
        // Unreachable: nothing can be judged, and nothing is lost.
        Err(e @ Error::Store { .. }) => {
            let message = format!("{e}; not fixed: the fleet's records cannot be judged");
            let f = Finding::other(FindingKind::Unverified, fleet_root, message, false);
            out.push(f, None);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    for (key, stored) in &records {
        let worker = worker_of(fleet.spec(), fleet_root, key).unwrap_or_default();
        let j = judge_stored(&worker, key, Some(stored), probes);
        // A key that is not UTF-8 was read lossily: it cannot be named to
        // be changed, so it is reported for a human (etcdctl) to remove.
        if key.contains(char::REPLACEMENT_CHARACTER) {
            let message = format!(
                "fleet key {key} is not UTF-8 (not written by agentlock); not fixed: remove it with etcdctl"
            );
            out.push(
                Finding::other(FindingKind::Corrupt, &worker, message, false),
                None,
            );
            continue;
        }
        let (kind, then, repair) = match (&stored.record, j.judgement.state) {
            (Err(_), _) => (
                FindingKind::Corrupt,
                "--fix moves it aside",
                Some(Repair::MoveAside(key.clone(), stored.clone())),
            ),
            (Ok(_), State::Stale) => (
                FindingKind::Stale,
                "--fix deletes it",
                Some(Repair::Delete(key.clone(), stored.clone())),
            ),
            (Ok(fr), _) => {
                out.extend(missing_mirror(
                    &worker,
                    key,
                    fr,
                    &j.judgement,
                    local,
                    probes,
                ));
                out.extend(never_judged(&worker, key, fr, stored, probes));
                continue;
            }
        };
        let message = format!("fleet record {key}: {}; {then}", j.judgement.reason);
        out.push(Finding::other(kind, &worker, message, true), repair);
    }
    let by_key: HashMap<&str, &Stored> = records.iter().map(|(k, s)| (k.as_str(), s)).collect();
    for lock in &local.locks {
        let Some(rec) = &lock.record else { continue };
        let alive = lock.pid_alive == Some(true) || lock.session_alive == Some(true);
        // Only workers of the fleet: under its root, on this host.
        let Ok(key) = worker_key(fleet.spec(), fleet_root, &lock.worker_dir) else {
            continue;
        };
        // Alive by the local rules, which see only this host's holders.
        if !alive {
            continue;
        }
        let why = match by_key.get(key.as_str()).map(|s| &s.record) {
            None => format!(
                "held here by pid {} (lock file) but the fleet has no record {key}: another host can claim it",
                rec.pid
            ),
            Some(Ok(fr)) if fr.record.pid != rec.pid || !this_host(&fr.record, probes) => format!(
                "held here by pid {} (lock file) but the fleet record {key} names pid {} on host {} (fence {})",
                rec.pid,
                fr.record.pid,
                fr.record.hostname.as_deref().unwrap_or("?"),
                fr.fence
            ),
            _ => continue,
        };
        let message = format!("{why}; not fixed: the local holder is alive");
        let f = Finding::other(FindingKind::Collision, &lock.worker_dir, message, false);
        out.push(f, None);
    }
    Ok(out)
}

/// This host's live fleet record whose worker, in the tree scanned, has no
/// lock file naming the same process: `gt` and file tools there see the
/// worker free (or another's). Left by a claim whose answer was lost, or a
/// lock file removed by hand.
fn missing_mirror(
    worker: &Path,
    key: &str,
    fr: &super::FleetRecord,
    judged: &crate::lock::Judgement,
    local: &Report,
    probes: &Probes,
) -> Option<Finding> {
    let alive = judged.pid_alive == Some(true) || judged.session_alive == Some(true);
    if !alive || !this_host(&fr.record, probes) || !worker.starts_with(&local.root) {
        return None;
    }
    // Read here, not taken from the scan: the scan may have skipped it
    // (--skip, --max-depth, node_modules).
    let Ok(mirror) = crate::lock::judge(worker, probes) else {
        return None; // not checked out here, or unreadable (the scan says)
    };
    let seen = match &mirror.record {
        Some(rec) if rec.same_claim(&fr.record) => return None,
        Some(rec) => format!("names pid {}", rec.pid),
        None if mirror.state == State::Free => "is missing".to_string(),
        None => format!("is {}", mirror.state.as_str()),
    };
    let message = format!(
        "fleet record {key} names pid {} here (fence {}), but the lock file {seen}: gt and file tools do not see its holder; not fixed: the holder is alive",
        fr.record.pid, fr.fence
    );
    Some(Finding::other(
        FindingKind::Collision,
        worker,
        message,
        false,
    ))
}

/// A record nobody can ever clear but by hand: one without a lease (it
/// never expires), or one naming this hostname without a boot id (not
/// provably this host's, so never swept here).
fn never_judged(
    worker: &Path,
    key: &str,
    fr: &super::FleetRecord,
    stored: &Stored,
    probes: &Probes,
) -> Option<Finding> {
    let why = if stored.lease == 0 {
        "hangs on no lease: it never expires"
    } else if !this_host(&fr.record, probes)
        && fr.record.hostname.as_deref() == Some(probes.host.hostname.as_str())
    {
        "names this host's name but not this boot: it cannot be judged here and is never swept"
    } else {
        return None;
    };
    let message = format!(
        "fleet record {key} (pid {}) {why}; not fixed: if its holder is gone, agentlock release --force {}",
        fr.record.pid,
        crate::trust::shell_quote(&worker.to_string_lossy())
    );
    Some(Finding::other(
        FindingKind::Unverified,
        worker,
        message,
        false,
    ))
}

/// `--fix` on the store: each repair only if the key is still at the
/// revision judged, and a stale record only if it is still stale, judged
/// again now. Fixed findings leave `check.findings`; the others stay, with
/// why.
pub fn fix(fleet: &Fleet, check: &mut FleetCheck, probes: &Probes) -> (Vec<Fixed>, Vec<Error>) {
    let (mut fixed, mut errors) = (Vec::new(), Vec::new());
    probes.sessions.refresh();
    let mut left = FleetCheck::default();
    for (mut f, repair) in std::mem::take(&mut check.findings)
        .into_iter()
        .zip(std::mem::take(&mut check.repairs))
    {
        let Some(r) = repair else {
            left.push(f, None);
            continue;
        };
        match apply(fleet, &f.worker_dir, &r, probes) {
            Ok(Ok((action, path))) => fixed.push(Fixed {
                kind: f.kind,
                worker_dir: f.worker_dir.clone(),
                action,
                path,
            }),
            Ok(Err(why)) => {
                f.message = format!("{} (fix skipped: {why})", f.message);
                f.fixable = false;
                left.push(f, None);
            }
            Err(e) => {
                f.message = format!("{} (fix failed: {e})", f.message);
                errors.push(e);
                left.push(f, None);
            }
        }
    }
    *check = left;
    (fixed, errors)
}

type Applied = std::result::Result<(&'static str, PathBuf), String>;

fn apply(fleet: &Fleet, worker: &Path, r: &Repair, probes: &Probes) -> Result<Applied> {
    let (Repair::Delete(key, judged) | Repair::MoveAside(key, judged)) = r;
    let now = fleet.get(key)?;
    let Some(now) = now.filter(|s| s.revision == judged.revision) else {
        return Ok(Err("the record changed since it was judged".into()));
    };
    match r {
        Repair::Delete(..) => {
            let again = judge_stored(worker, key, Some(&now), probes);
            if again.judgement.state != State::Stale {
                return Ok(Err(format!("now {}", again.judgement.state.as_str())));
            }
            Ok(match fleet.delete(key, now.revision)? {
                true => {
                    // And the lock file the claim wrote on this host, if it
                    // still holds that very record.
                    if let (Some(rec), Some(dir)) = (
                        again.judgement.record.as_ref(),
                        again
                            .judgement
                            .record
                            .as_ref()
                            .and_then(|r| r.fleet_dir.as_deref()),
                    ) {
                        let _ = crate::lock::release_written(dir, rec, probes);
                    }
                    Ok(("removed", PathBuf::from(key)))
                }
                false => Err("the record changed since it was judged".into()),
            })
        }
        Repair::MoveAside(..) => Ok(match fleet.move_aside(key, &now, None, None) {
            Ok(Some((aside, _))) => Ok(("moved-aside", PathBuf::from(aside))),
            Ok(None) => Err("the record changed since it was judged".into()),
            // Never deleted by doctor: a human decides what it was.
            Err(e) if super::kv::too_large(&e) => Err(format!(
                "its value ({} bytes) is too large for the store to keep aside; agentlock claim --force or release --force replaces it, losing it",
                now.size
            )),
            Err(e) => return Err(e),
        }),
    }
}
