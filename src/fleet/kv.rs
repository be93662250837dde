//! What the fleet store holds and the operations on it: read a key, page
//! through every key, create-if-absent, compare-and-swap, move aside,
//! compare-and-delete, and the lease calls. Each mutation is one transaction
//! guarded by what was judged, so a retry after a lost answer never applies
//! twice; the callers in [`crate::fleet::ops`] recognise their own effect.

use super::FleetRecord;
use super::etcd::{Failed, Fleet};
use crate::error::{Error, Result};
use crate::record::LockRecord;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

/// Keys asked for in one page of a listing (fewer when the page would
/// exceed a client message: see [`Fleet::scan`]).
const PAGE: i64 = 1000;

/// A stored identity and the revision it was read at (what a later
/// compare-and-swap compares against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The record and its fence; `Err` with the reason for a value that is
    /// not a valid record.
    pub record: std::result::Result<FleetRecord, String>,
    /// The key's `mod_revision` when read.
    pub revision: i64,
    /// The value as stored, for a value that is not a record (what it is
    /// moved aside with); empty for a record.
    pub value: Vec<u8>,
    /// The size of the value as stored, in bytes.
    pub size: usize,
    /// The lease the key hangs on (0: none; it never expires).
    pub lease: i64,
}

impl Stored {
    fn of(kv: &etcd_client::KeyValue) -> Stored {
        let record = FleetRecord::parse(kv.value(), kv.mod_revision());
        Stored {
            value: if record.is_err() {
                kv.value().to_vec()
            } else {
                Vec::new()
            },
            record,
            revision: kv.mod_revision(),
            size: kv.value().len(),
            lease: kv.lease(),
        }
    }
}

/// Where a value under `key` that is not a record is kept when it is
/// replaced or removed: `<prefix>/corrupt/<worker>@<revision>`, outside
/// `workers/`, without a lease (kept until removed by hand).
pub fn aside_key(key: &str, revision: i64) -> String {
    format!("{}@{revision}", key.replacen("/workers/", "/corrupt/", 1))
}

/// What a create-if-absent transaction found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and now holds the record; its fence.
    Fence(i64),
    /// The key exists: what it holds (nothing was written).
    Exists(Box<Stored>),
}

fn put_options(lease: Option<i64>) -> Option<PutOptions> {
    lease.map(|id| PutOptions::new().with_lease(id))
}

impl Fleet {
    /// What `key` holds, if anything.
    pub fn get(&self, key: &str) -> Result<Option<Stored>> {
        let owned = key.to_string();
        let resp = self
            .race(|mut c| {
                let key = owned.clone();
                async move { c.get(key, None).await }
            })
            .map_err(|f| self.error(key, f))?;
        Ok(resp.kvs().first().map(Stored::of))
    }

    /// Calls `each` with every key under the prefix and what it holds, in
    /// key order, a page at a time, all pages read at the revision of the
    /// first (one snapshot, however many records; never one answer over
    /// the client's message limit: a page that would be is asked again
    /// smaller).
    pub fn scan(&self, mut each: impl FnMut(String, Stored)) -> Result<usize> {
        let prefix = format!("{}/workers/", self.spec().prefix);
        let end = {
            let mut e = prefix.clone().into_bytes();
            *e.last_mut().expect("prefix ends with /") += 1;
            e
        };
        let mut from = prefix.clone().into_bytes();
        let (mut revision, mut limit, mut seen) = (0, PAGE, 0);
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(limit)
                .with_revision(revision);
            let got = self.call(|mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            });
            let resp = match got {
                Ok(r) => r,
                Err(Failed::TooBig(_)) if limit > 1 => {
                    limit = (limit / 4).max(1);
                    continue;
                }
                Err(f) => return Err(self.error(&prefix, f)),
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let kvs = resp.kvs();
            for kv in kvs {
                each(
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Stored::of(kv),
                );
            }
            seen += kvs.len();
            match kvs.last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                    limit = PAGE;
                }
                _ => return Ok(seen),
            }
        }
    }

    /// Every key under the prefix and what it holds, sorted by key (paged:
    /// see [`Fleet::scan`]).
    pub fn list(&self) -> Result<Vec<(String, Stored)>> {
        let mut out = Vec::new();
        self.scan(|k, s| out.push((k, s)))?;
        Ok(out)
    }

    /// Writes `record` under `key` only if the key is absent (one
    /// transaction); otherwise returns what is there.
    pub fn create(&self, key: &str, record: &LockRecord, lease: Option<i64>) -> Result<Created> {
        let value = FleetRecord::value(record, None);
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, put_options(lease))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .map_err(|f| self.error(key, f))?;
        if resp.succeeded() {
            return Ok(Created::Fence(resp.header().map_or(0, |h| h.revision())));
        }
        let existing = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(Stored::of),
            _ => None,
        });
        match existing {
            Some(s) => Ok(Created::Exists(Box::new(s))),
            None => Err(super::etcd::store_error(
                self.spec(),
                "transaction answered without the key",
            )),
        }
    }

    /// Replaces what `key` holds with `record`, only if the key is still at
    /// `judged` (compare-and-swap). `keep_fence`: a refresh by the same
    /// holder keeps its fence; a new holder gets the revision of this write.
    /// Returns the fence, or `None` if the key changed since it was judged.
    pub fn replace(
        &self,
        key: &str,
        judged: i64,
        record: &LockRecord,
        keep_fence: Option<i64>,
        lease: Option<i64>,
    ) -> Result<Option<i64>> {
        let value = FleetRecord::value(record, keep_fence);
        self.swap(key, judged, TxnOp::put(key, value, put_options(lease)))
            .map(|r| r.map(|rev| keep_fence.unwrap_or(rev)))
    }

    /// Moves the value `judged` out of `key` to [`aside_key`], only if `key`
    /// is still at its revision, writing `record` (on `lease`) in its place
    /// when given, all in one transaction. Returns where the old value went
    /// and the new record's fence (0 without a record), or `None` if the
    /// key changed since it was judged. A value too large to be copied in
    /// one request is [`Error::StoreRejected`].
    pub fn move_aside(
        &self,
        key: &str,
        judged: &Stored,
        record: Option<&LockRecord>,
        lease: Option<i64>,
    ) -> Result<Option<(String, i64)>> {
        let aside = aside_key(key, judged.revision);
        let then = match record {
            Some(r) => TxnOp::put(key, FleetRecord::value(r, None), put_options(lease)),
            None => TxnOp::delete(key, None),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                judged.revision,
            )])
            .and_then([TxnOp::put(aside.as_str(), judged.value.clone(), None), then]);
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .map_err(|f| self.error(key, f))?;
        let fence = match record {
            Some(_) => resp.header().map_or(0, |h| h.revision()),
            None => 0,
        };
        Ok(resp.succeeded().then_some((aside, fence)))
    }

    /// Deletes `key` only if it is still at `judged` (compare-and-delete).
    pub fn delete(&self, key: &str, judged: i64) -> Result<bool> {
        self.swap(key, judged, TxnOp::delete(key, None))
            .map(|r| r.is_some())
    }

    /// `op` on `key` if it is still at revision `judged`; the revision of the
    /// write, or `None` if the key changed.
    fn swap(&self, key: &str, judged: i64, op: TxnOp) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, judged)])
            .and_then([op]);
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .map_err(|f| self.error(key, f))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Grants a lease of `ttl` seconds; returns its id and the TTL granted
    /// (etcd raises one below its minimum).
    pub fn grant(&self, ttl: i64) -> Result<(i64, i64)> {
        let resp = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .map_err(|f| self.error("lease", f))?;
        Ok((resp.id(), resp.ttl()))
    }

    /// Renews lease `id` once, on every member at once (the first answer
    /// counts); returns its TTL now (0 or less: it expired).
    pub fn keep_alive(&self, id: i64) -> Result<i64> {
        self.race(move |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            // A stream that ends without an answer says nothing about the
            // lease: an error to try again, never "expired".
            match stream.message().await? {
                Some(m) => Ok(m.ttl()),
                None => Err(etcd_client::Error::InvalidArgs(
                    "the keep-alive stream ended without an answer".into(),
                )),
            }
        })
        .map_err(|f| self.error(&format!("lease {id:x}"), f))
    }

    /// Whole seconds lease `id` has left, rounded down by etcd (0: less than
    /// a second, but alive); -1: the lease is gone.
    pub fn lease_ttl(&self, id: i64) -> Result<i64> {
        self.lease_info(id).map(|(left, _)| left)
    }

    /// Lease `id`'s whole seconds left (-1: gone) and the TTL it was
    /// granted with.
    pub fn lease_info(&self, id: i64) -> Result<(i64, i64)> {
        let resp = self
            .race(move |mut c| async move { c.lease_time_to_live(id, None).await })
            .map_err(|f| self.error(&format!("lease {id:x}"), f))?;
        Ok((resp.ttl(), resp.granted_ttl()))
    }

    /// Revokes lease `id` (its keys go with it).
    pub fn revoke(&self, id: i64) -> Result<()> {
        self.call(|mut c| async move { c.lease_revoke(id).await })
            .map(|_| ())
            .map_err(|f| self.error(&format!("lease {id:x}"), f))
    }
}

/// Whether `e` is a store refusal of a request over its size limit.
pub fn too_large(e: &Error) -> bool {
    matches!(e, Error::StoreRejected { why, .. } if why.contains("too large"))
}
