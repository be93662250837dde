//! `run` on the fleet store: the worker is claimed on the store (and in the
//! local lock file) for the command, and checked while the command runs. The
//! record hangs on this host's keeper lease; it is lost when the key is gone
//! (the lease expired: a stalled keeper, a partition), when another holder
//! replaced it (`--force` elsewhere), or when neither the keeper (its
//! published renewals) nor the store (the lease's time left) vouched for the
//! lease until shortly before it could expire. The command is then told to
//! stop (SIGTERM) a grace of a sixth of the TTL (at most 5 s) before the
//! lease could expire, and SIGKILLed when it could ([`Hold::stop_by`]).

use super::etcd::{Fleet, Stored};
use super::keeper::{self, KeeperLease, MARGIN, now};
use super::ops::{self, FleetClaimOutcome};
use crate::error::{Error, Result};
use crate::lock::{ClaimOptions, Claimant, Probes};
use crate::record::LockRecord;
use crate::run::{Checked, Hold, Taken};
use crate::wait::Interrupt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    lease: KeeperLease,
    period: Duration,
    /// The command is told to stop this long before the lease could expire
    /// (SIGTERM), and is SIGKILLed when it could ([`Hold::stop_by`]).
    grace: Duration,
    probes: &'a Probes<'a>,
    /// The record written and its fence, once claimed.
    held: Option<(LockRecord, i64)>,
    /// Until when (`CLOCK_BOOTTIME`) the lease is known to live: the later
    /// of the keeper's last published renewal plus the TTL, and the lease's
    /// time left as the store last told it (rounded down to whole seconds),
    /// each minus [`MARGIN`].
    sure_until: Duration,
    /// When the loss was found, if it was.
    lost_at: Option<Duration>,
    /// `--wait`: how long to wait for the worker (`Some(None)`: forever).
    wait: Option<Option<Duration>>,
}

impl<'a> FleetHold<'a> {
    /// Holds `worker` (key `key`, from [`super::locate`]) on this host's
    /// keeper's `lease`.
    pub fn new(
        fleet: &'a Fleet,
        worker: PathBuf,
        key: String,
        lease: KeeperLease,
        probes: &'a Probes<'a>,
    ) -> FleetHold<'a> {
        // Several checks per TTL, at most one a second.
        let period = Duration::from_millis((lease.ttl.clamp(1, 4) as u64 * 250).min(1000));
        let grace = Duration::from_secs_f64(lease.ttl as f64 / 6.0).min(Duration::from_secs(5));
        FleetHold {
            fleet,
            worker,
            key,
            period,
            grace,
            probes,
            held: None,
            sure_until: lease.sure_until(),
            lease,
            lost_at: None,
            wait: None,
        }
    }

    /// Waits for the worker (at most `timeout`; `None`: forever) instead
    /// of refusing at once.
    pub fn waiting(mut self, timeout: Option<Duration>) -> FleetHold<'a> {
        self.wait = Some(timeout);
        self
    }

    /// What the keeper published since: a renewal of the same lease moves
    /// `sure_until` on.
    fn keeper_renewed(&mut self) {
        if let Ok(Some(l)) = keeper::published(self.fleet.spec())
            && l.id == self.lease.id
        {
            self.sure_until = self.sure_until.max(l.sure_until());
        }
    }

    /// Lost once the lease could expire within the grace: neither the
    /// keeper nor the store vouched for it since.
    fn unsure(&self, why: impl std::fmt::Display) -> Checked {
        let left = self.sure_until.saturating_sub(now());
        if left > self.grace {
            Checked::Held
        } else {
            Checked::Lost(format!(
                "this host's lease {:x} could expire in {:.1} s and neither its keeper nor the store vouched for it ({why})",
                self.lease.id,
                left.as_secs_f64()
            ))
        }
    }

    /// Reads the lease's time left, asked at `asked`, within `limit`.
    fn lease_left(&mut self, asked: Duration, limit: Duration) -> Checked {
        match self.fleet.within(limit, |f| f.lease_ttl(self.lease.id)) {
            // Rounded down: 0 is "less than a second", alive.
            Ok(left) if left >= 0 => {
                let until = (asked + Duration::from_secs(left as u64)).saturating_sub(MARGIN);
                self.sure_until = self.sure_until.max(until);
                self.unsure("its keeper has not renewed it")
            }
            Ok(_) => Checked::Lost(format!(
                "this host's lease {:x} expired (its keeper stalled or lost the store)",
                self.lease.id
            )),
            Err(e) => self.unsure(e),
        }
    }
}

impl Hold for FleetHold<'_> {
    fn worker(&self) -> &Path {
        &self.worker
    }

    fn claim(&mut self, me: &Claimant, interrupt: &Interrupt) -> Result<Taken> {
        let opts = ClaimOptions::cancelled_by(interrupt.cancel.clone());
        let mut asked = now();
        let outcome = match self.wait {
            None => ops::claim(
                self.fleet,
                &self.worker,
                &self.key,
                me,
                opts,
                Some(&self.lease),
                self.probes,
            )?,
            Some(timeout) => {
                let wait = crate::wait::WaitOptions {
                    timeout,
                    interrupt: Some(interrupt.clone()),
                };
                let got = super::waiting::claim_wait(
                    self.fleet,
                    &self.worker,
                    &self.key,
                    me,
                    opts,
                    &self.lease,
                    &wait,
                    self.probes,
                )?;
                // The lease's time left is asked after this: counted from
                // now, not from the start of the wait (still before the
                // question, so never later than the truth).
                asked = now();
                got.outcome
            }
        };
        match outcome {
            FleetClaimOutcome::Done(c) => {
                self.held = Some((c.record.clone(), c.fence));
                self.keeper_renewed();
                let _ = self.lease_left(asked, self.fleet.timeout());
                Ok(Taken::Held {
                    fence: Some(c.fence),
                })
            }
            FleetClaimOutcome::Refused(j) => Ok(Taken::Refused(Box::new(j.judgement))),
        }
    }

    fn period(&self) -> Option<Duration> {
        // Checked again by the time the command would have to be told to
        // stop, at the latest.
        let left = self.sure_until.saturating_sub(now() + self.grace);
        Some(self.period.min(left).max(MIN_WAIT))
    }

    fn check(&mut self) -> Checked {
        let checked = self.check_once();
        if checked != Checked::Held && self.lost_at.is_none() {
            self.lost_at = Some(now());
        }
        checked
    }

    fn stop_by(&self) -> Option<Instant> {
        // By the time the lease could expire, and at most the grace after
        // the loss was found (the record gone or taken over: another may
        // hold the worker already).
        let lost_at = self.lost_at.unwrap_or_else(now);
        let by = self.sure_until.min(lost_at + self.grace).max(lost_at);
        Some(Instant::now() + by.saturating_sub(now()))
    }

    fn release(&mut self) -> Result<()> {
        let Some((rec, _)) = self.held.take() else {
            return Ok(());
        };
        let (fleet, key) = (self.fleet, self.key.as_str());
        let store = if self.lost_at.is_some() {
            // Lost: the record is gone, another's, or ours on a store that
            // did not answer. Then it waits for this host's keeper, which
            // deletes it once the store answers (its holder is dead by then).
            match fleet.within(LOST_RELEASE, |f| ops::release_stored(f, key, &rec)) {
                Err(Error::Store { .. }) => Ok(()),
                other => other,
            }
        } else {
            ops::release_stored(fleet, key, &rec)
        };
        // The local file is this host's: released whatever the store said.
        // Someone else's by now (the command's exit made ours stale and a
        // waiter took the worker, or a loss already reported): nothing of
        // ours to remove, on either side.
        let local = crate::run::release_file(&self.worker, &rec, self.probes);
        match store.and(local) {
            Err(Error::NotReleased { .. }) => Ok(()),
            r => r,
        }
    }
}

impl FleetHold<'_> {
    fn check_once(&mut self) -> Checked {
        let Some((mine, fence)) = self.held.clone() else {
            return Checked::Held;
        };
        self.keeper_renewed();
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
            Ok(Some(Stored {
                record: Ok(fr),
                lease,
                ..
            })) if fr.fence == fence && fr.record.pid == mine.pid => {
                // The same claim, moved by a restarted keeper onto its own
                // lease: that lease vouches for it from now on.
                if lease != self.lease.id
                    && let Ok(Some(l)) = keeper::published(self.fleet.spec())
                    && l.id == lease
                {
                    self.lease = l;
                    self.sure_until = l.sure_until();
                }
                let limit = self.sure_until.saturating_sub(now()).max(MIN_WAIT);
                self.lease_left(asked, limit)
            }
            Ok(Some(Stored { record: Ok(fr), .. })) if fr.record.same_claim(&mine) => {
                Checked::Lost(format!(
                    "this host's lease {:x} expired and its keeper claimed the worker again (fence {}, ours was {fence}): it was free meanwhile",
                    self.lease.id, fr.fence
                ))
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
