//! `run` on the fleet store: the worker is claimed on the store (and in the
//! local lock file) for the command, and checked while the command runs. The
//! record hangs on this host's keeper lease; it is lost when the key is gone
//! (the lease expired: a stalled keeper, a partition), when another holder
//! replaced it (`--force` elsewhere), or when the store has not answered for
//! longer than the lease was last known to live.

use super::etcd::{Fleet, Stored};
use super::ops::{self, FleetClaimOutcome};
use crate::error::{Error, Result};
use crate::lock::{ClaimOptions, Claimant, Probes};
use crate::record::LockRecord;
use crate::run::{Checked, Hold, Taken};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Taken off the lease's time left: a safety margin for clock-rate skew
/// between this host and the etcd leader.
const MARGIN: Duration = Duration::from_millis(500);

/// Now on CLOCK_BOOTTIME: unlike `Instant` (CLOCK_MONOTONIC) it goes on
/// while the machine is suspended, as the lease's time does on the store.
fn now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// How long a release after a loss may wait for the store.
const LOST_RELEASE: Duration = Duration::from_secs(1);

/// The shortest wait between checks, and the shortest time a check's call
/// may take.
const MIN_WAIT: Duration = Duration::from_millis(200);

/// Holding a worker on the fleet store for `run`.
pub struct FleetHold<'a> {
    fleet: &'a Fleet,
    worker: PathBuf,
    key: String,
    lease: i64,
    period: Duration,
    probes: &'a Probes<'a>,
    /// The record written and its fence, once claimed.
    held: Option<(LockRecord, i64)>,
    /// Until when the record is known to live: when its lease's time left
    /// was last read, plus that time (minus [`MARGIN`]).
    /// On CLOCK_BOOTTIME (see [`now`]).
    sure_until: Duration,
    /// A check found the worker lost.
    lost: bool,
}

impl<'a> FleetHold<'a> {
    /// Holds `worker` (key `key`, from [`super::locate`]) on `lease` (this
    /// host's keeper's, of `ttl` seconds).
    pub fn new(
        fleet: &'a Fleet,
        worker: PathBuf,
        key: String,
        lease: i64,
        ttl: i64,
        probes: &'a Probes<'a>,
    ) -> FleetHold<'a> {
        // Several checks per TTL, at most one a second.
        let period = Duration::from_millis((ttl.clamp(1, 4) as u64 * 250).min(1000));
        FleetHold {
            fleet,
            worker,
            key,
            lease,
            period,
            probes,
            held: None,
            sure_until: now(),
            lost: false,
        }
    }

    /// Not lost yet while the lease is known to live; lost after that.
    fn unsure(&self, why: impl std::fmt::Display) -> Checked {
        if now() < self.sure_until {
            Checked::Held
        } else {
            Checked::Lost(format!(
                "the store did not answer before this host's lease could have expired ({why})"
            ))
        }
    }

    /// Reads the lease's time left, asked at `asked`, within `limit`.
    fn lease_left(&mut self, asked: Duration, limit: Duration) -> Checked {
        match self.fleet.within(limit, |f| f.lease_ttl(self.lease)) {
            Ok(left) if left > 0 => {
                self.sure_until = asked + Duration::from_secs(left as u64).saturating_sub(MARGIN);
                Checked::Held
            }
            Ok(_) => Checked::Lost(format!(
                "this host's lease {:x} expired (its keeper stalled or lost the store)",
                self.lease
            )),
            Err(e) => self.unsure(e),
        }
    }
}

impl Hold for FleetHold<'_> {
    fn worker(&self) -> &Path {
        &self.worker
    }

    fn claim(&mut self, me: &Claimant, cancel: Arc<AtomicBool>) -> Result<Taken> {
        let opts = ClaimOptions::cancelled_by(cancel);
        let asked = now();
        match ops::claim(
            self.fleet,
            &self.worker,
            &self.key,
            me,
            opts,
            Some(self.lease),
            self.probes,
        )? {
            FleetClaimOutcome::Done(c) => {
                self.held = Some((c.record.clone(), c.fence));
                // Nothing is known of the lease's time yet: this read may
                // take the store's whole time limit.
                let _ = self.lease_left(asked, Duration::MAX);
                Ok(Taken::Held {
                    fence: Some(c.fence),
                })
            }
            FleetClaimOutcome::Refused(j) => Ok(Taken::Refused(Box::new(j.judgement))),
        }
    }

    fn period(&self) -> Option<Duration> {
        // Checked again by the time the lease could expire, at the latest.
        let left = self.sure_until.saturating_sub(now());
        Some(self.period.min(left).max(MIN_WAIT))
    }

    fn check(&mut self) -> Checked {
        let checked = self.check_once();
        self.lost |= checked != Checked::Held;
        checked
    }

    fn release(&mut self) -> Result<()> {
        let Some((rec, fence)) = self.held.take() else {
            return Ok(());
        };
        let (fleet, key) = (self.fleet, self.key.as_str());
        let store = if self.lost {
            // Lost: the record is gone, another's, or ours on a store that
            // did not answer. Then it waits for this host's keeper, which
            // deletes it once the store answers (its holder is dead by then).
            match fleet.within(LOST_RELEASE, |f| ops::release_stored(f, key, &rec, fence)) {
                Err(Error::Store { .. }) => Ok(()),
                other => other,
            }
        } else {
            ops::release_stored(fleet, key, &rec, fence)
        };
        // The local file is this host's: released whatever the store said.
        let local = crate::run::release_file(&self.worker, &rec, self.probes);
        store.and(local)
    }
}

impl FleetHold<'_> {
    fn check_once(&mut self) -> Checked {
        let Some((mine, fence)) = self.held.clone() else {
            return Checked::Held;
        };
        let asked = now();
        // A store that does not answer must not hold the decision past the
        // lease's known life.
        let limit = self.sure_until.saturating_sub(asked).max(MIN_WAIT);
        match self.fleet.within(limit, |f| f.get(&self.key)) {
            Err(e) => self.unsure(e),
            Ok(None) => Checked::Lost(format!(
                "its fleet record {} is gone (this host's lease expired, or it was released elsewhere)",
                self.key
            )),
            Ok(Some(Stored { record: Ok(fr), .. }))
                if fr.fence == fence && fr.record.pid == mine.pid =>
            {
                let limit = self.sure_until.saturating_sub(now()).max(MIN_WAIT);
                self.lease_left(asked, limit)
            }
            Ok(Some(Stored { record: Ok(fr), .. })) => Checked::Lost(format!(
                "taken over: pid {} on host {} holds it now (fence {}, ours was {fence})",
                fr.record.pid,
                fr.record.hostname.as_deref().unwrap_or("?"),
                fr.fence
            )),
            Ok(Some(Stored {
                record: Err(why), ..
            })) => Checked::Lost(format!(
                "its fleet record was replaced by a value that is not a record ({why})"
            )),
        }
    }
}
