//! The waiters' queue of one worker on the store: a key per waiter under
//! `<prefix>/waiters/<worker>/`, served in the order etcd created them
//! (create revision), as etcd's own lock recipe does.
//!
//! A waiter's key hangs on its host's keeper lease, so the waiters of a host
//! that dies go with it. A waiter of this host whose process is gone is
//! removed by the next waiter that looks (compare-and-delete); one of
//! another host is passed over once it leaves a claimable worker unclaimed
//! for [`crate::wait::HANDOVER`].

use super::FleetRecord;
use super::etcd::Fleet;
use super::ops::this_host;
use crate::error::Result;
use crate::lock::Probes;
use crate::record::LockRecord;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

/// Where the waiters of worker key `key` queue: `<prefix>/waiters/<worker>/`.
pub(crate) fn waiters_of(key: &str) -> String {
    format!("{}/", key.replacen("/workers/", "/waiters/", 1))
}

/// Whether a queue key is a waiter of this host that is provably gone: its
/// process (same PID namespace: by PID and start time; another, a sandbox:
/// no process on the host started at its start time).
fn gone(kv: &etcd_client::KeyValue, probes: &Probes) -> bool {
    let Ok(r) = FleetRecord::parse(kv.value(), kv.mod_revision()) else {
        return false;
    };
    let rec = &r.record;
    if !this_host(rec, probes) {
        return false;
    }
    if rec.pid_ns == probes.host.pid_ns {
        rec.pid_start
            .is_some_and(|s| !crate::probe::process::still_runs(rec.pid, s))
    } else {
        super::sweep::sandbox_gone(rec, probes)
    }
}

/// Removes the queue keys of this host's dead waiters, every worker's (the
/// keeper's sweep): a waiter killed while no other waited behind it.
pub(crate) fn sweep_waiters(fleet: &Fleet, probes: &Probes) -> Result<usize> {
    let prefix = format!("{}/waiters/", fleet.spec().prefix);
    let resp = fleet
        .race(|mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .map_err(|f| fleet.error(&prefix, f))?;
    let mut removed = 0;
    for kv in resp.kvs() {
        if gone(kv, probes)
            && let Ok(k) = kv.key_str()
            && fleet.delete(k, kv.mod_revision())?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// This waiter's place in one worker's queue on the store.
pub(crate) struct StoreTicket {
    key: String,
    prefix: String,
    /// The revision that created it: the place in the queue.
    pub(crate) revision: i64,
}

impl StoreTicket {
    /// Joins the queue of worker key `key`, on `lease`. The key names this
    /// process, the one waiting (not the claimant it waits for): a waiter
    /// that dies leaves a key another waiter of this host can prove dead.
    pub(crate) fn join(
        fleet: &Fleet,
        key: &str,
        lease: i64,
        probes: &Probes,
    ) -> Result<StoreTicket> {
        let prefix = waiters_of(key);
        let pid = std::process::id() as i32;
        let name = format!("{prefix}{lease:x}-{pid}-{:08x}", fastrand::u32(..));
        let rec = LockRecord {
            pid,
            pid_start: probes.procs.start_time(pid),
            acquired_at: Some(crate::record::local_now()),
            hostname: Some(probes.host.hostname.clone()),
            boot_id: probes.host.boot_id.clone(),
            pid_ns: probes.host.pid_ns,
            ..LockRecord::default()
        };
        let value = FleetRecord::value(&rec, None);
        let txn = Txn::new()
            .when([Compare::create_revision(name.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                name.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = fleet
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .map_err(|f| fleet.error(&name, f))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(StoreTicket {
            key: name,
            prefix,
            revision,
        })
    }

    /// The live waiters ahead of this one. A waiter of this host whose
    /// process is gone is removed on the way (only if unchanged).
    pub(crate) fn ahead(&self, fleet: &Fleet, probes: &Probes) -> Result<usize> {
        let prefix = self.prefix.clone();
        let resp = fleet
            .race(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .map_err(|f| fleet.error(&self.prefix, f))?;
        let mut live = 0;
        for kv in resp.kvs() {
            if kv.create_revision() >= self.revision {
                continue;
            }
            if gone(kv, probes) {
                if let Ok(k) = kv.key_str() {
                    let _ = fleet.delete(k, kv.mod_revision());
                }
                continue;
            }
            live += 1;
        }
        Ok(live)
    }

    /// Leaves the queue.
    pub(crate) fn leave(&self, fleet: &Fleet) {
        let _ = fleet.delete(&self.key, self.revision);
    }
}
