//! The etcd client of the fleet store: every call answers within the time
//! limit (an unreachable or slow cluster is an [`Error::Store`] naming the
//! endpoints, never a hang), and every mutation is one transaction guarded by
//! the revision that was judged (compare-and-swap).

use super::{FleetRecord, StoreSpec};
use crate::error::{Error, Result};
use crate::record::LockRecord;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use std::future::Future;
use std::time::Duration;

/// How long a fleet store call may take, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A stored identity and the revision it was read at (what a later
/// compare-and-swap compares against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The record and its fence; `Err` with the reason for a value that is
    /// not a valid record.
    pub record: std::result::Result<FleetRecord, String>,
    /// The key's `mod_revision` when read.
    pub revision: i64,
    /// The value as stored (what a value that is not a record is moved
    /// aside with).
    pub value: Vec<u8>,
    /// The lease the key hangs on (0: none; it never expires).
    pub lease: i64,
}

impl Stored {
    fn of(kv: &etcd_client::KeyValue) -> Stored {
        Stored {
            record: FleetRecord::parse(kv.value(), kv.mod_revision()),
            revision: kv.mod_revision(),
            value: kv.value().to_vec(),
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

/// A connection to the fleet's etcd cluster: one client per member, tried
/// in turn (starting with the last one that answered), so a stopped or
/// hung member costs at most its share of the time limit.
pub struct Fleet {
    rt: tokio::runtime::Runtime,
    clients: Vec<Client>,
    good: std::cell::Cell<usize>,
    spec: StoreSpec,
    timeout: std::cell::Cell<Duration>,
}

impl Fleet {
    /// Connects to `spec`'s endpoints, giving up after `timeout`.
    pub fn connect(spec: &StoreSpec, timeout: Duration) -> Result<Fleet> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| store_error(spec, e))?;
        let share = share(timeout, spec.endpoints.len());
        let mut clients = Vec::new();
        for endpoint in &spec.endpoints {
            let opts = ConnectOptions::new()
                .with_connect_timeout(share)
                .with_timeout(share);
            // Connects lazily: a member that is down fails on first use.
            let connect = Client::connect([endpoint.clone()], Some(opts));
            clients.push(run(&rt, spec, share, connect)?);
        }
        Ok(Fleet {
            rt,
            clients,
            good: std::cell::Cell::new(0),
            spec: spec.clone(),
            timeout: std::cell::Cell::new(timeout),
        })
    }

    /// Runs `f` with the time limit lowered to `limit` (never raised): a
    /// caller that must decide by a deadline cannot wait the whole limit.
    pub fn within<T>(&self, limit: Duration, f: impl FnOnce(&Fleet) -> T) -> T {
        let old = self.timeout.get();
        self.timeout.set(limit.min(old));
        let r = f(self);
        self.timeout.set(old);
        r
    }

    /// The store this connects to.
    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// Runs `f` on one member after the other until one answers, each
    /// within its share of the time limit. A request that timed out may
    /// still have been applied: every mutation here is a transaction whose
    /// retry finds its own effect (create sees the key; compare-and-swap
    /// sees the revision moved) rather than applying twice.
    fn call<T, F>(&self, f: impl Fn(Client) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let limit = self.timeout.get();
        let share = share(limit, n);
        // The whole call stays within the limit, however many members there
        // are: each gets its share of what is left.
        let deadline = std::time::Instant::now() + limit;
        let mut last = None;
        for k in 0..n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let i = (self.good.get() + k) % n;
            match run(
                &self.rt,
                &self.spec,
                share.min(left),
                f(self.clients[i].clone()),
            ) {
                Ok(v) => {
                    self.good.set(i);
                    return Ok(v);
                }
                Err(e) => {
                    // The next call starts with the next member.
                    self.good.set((i + 1) % n);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| store_error(&self.spec, "no endpoints")))
    }

    /// What `key` holds, if anything.
    pub fn get(&self, key: &str) -> Result<Option<Stored>> {
        let resp = self.call(|mut c| async move { c.get(key, None).await })?;
        Ok(resp.kvs().first().map(Stored::of))
    }

    /// Every key under the prefix and what it holds, sorted by key.
    pub fn list(&self) -> Result<Vec<(String, Stored)>> {
        let prefix = format!("{}/workers/", self.spec.prefix);
        let resp = self.call(|mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        let mut out: Vec<(String, Stored)> = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Stored::of(kv),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
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
        let resp = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        if resp.succeeded() {
            return Ok(Created::Fence(resp.header().map_or(0, |h| h.revision())));
        }
        let existing = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(Stored::of),
            _ => None,
        });
        match existing {
            Some(s) => Ok(Created::Exists(Box::new(s))),
            // Deleted between the compare and the get of the same
            // transaction cannot happen; a missing answer is the store's fault.
            None => Err(store_error(
                &self.spec,
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
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, judged)])
            .and_then([TxnOp::put(key, value, put_options(lease))]);
        let resp = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        Ok(resp
            .succeeded()
            .then(|| keep_fence.unwrap_or_else(|| resp.header().map_or(0, |h| h.revision()))))
    }

    /// Moves the value `judged` out of `key` to [`aside_key`], only if `key`
    /// is still at its revision, writing `record` (on `lease`) in its place
    /// when given, all in one transaction. Returns where the old value went
    /// and the new record's fence (0 without a record), or `None` if the
    /// key changed since it was judged.
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
        let resp = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        let fence = match record {
            Some(_) => resp.header().map_or(0, |h| h.revision()),
            None => 0,
        };
        Ok(resp.succeeded().then_some((aside, fence)))
    }

    /// Deletes `key` only if it is still at `judged` (compare-and-delete).
    pub fn delete(&self, key: &str, judged: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, judged)])
            .and_then([TxnOp::delete(key, None)]);
        let resp = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        Ok(resp.succeeded())
    }
}

impl Fleet {
    /// Grants a lease of `ttl` seconds; returns its id.
    pub fn grant(&self, ttl: i64) -> Result<i64> {
        let resp = self.call(|mut c| async move { c.lease_grant(ttl, None).await })?;
        Ok(resp.id())
    }

    /// Renews lease `id` once; returns its TTL now (0 or less: it expired).
    pub fn keep_alive(&self, id: i64) -> Result<i64> {
        self.call(|mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.map_or(0, |m| m.ttl()))
        })
    }

    /// Seconds lease `id` has left (0 or less: gone).
    pub fn lease_ttl(&self, id: i64) -> Result<i64> {
        let resp = self.call(|mut c| async move { c.lease_time_to_live(id, None).await })?;
        Ok(resp.ttl())
    }
}

/// Each of `n` members' share of the time limit (at least 200 ms).
fn share(timeout: Duration, n: usize) -> Duration {
    (timeout / n.max(1) as u32).max(Duration::from_millis(200))
}

fn put_options(lease: Option<i64>) -> Option<PutOptions> {
    lease.map(|id| PutOptions::new().with_lease(id))
}

fn store_error(spec: &StoreSpec, why: impl std::fmt::Display) -> Error {
    Error::Store {
        endpoints: spec.endpoints.join(","),
        why: why.to_string(),
    }
}

/// One line for a client error: gRPC's message and the innermost cause
/// (`tcp connect error: Connection refused (os error 111)`), not the whole
/// debug chain.
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut inner: &dyn std::error::Error = status;
    while let Some(next) = inner.source() {
        inner = next;
    }
    if std::ptr::addr_eq(inner, status) {
        status.message().to_string()
    } else {
        format!("{}: {inner}", status.message())
    }
}

/// Runs `fut` to completion within `timeout`.
fn run<T>(
    rt: &tokio::runtime::Runtime,
    spec: &StoreSpec,
    timeout: Duration,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    let no_answer = || {
        store_error(
            spec,
            format!("no answer within {:.1} s", timeout.as_secs_f64()),
        )
    };
    match rt.block_on(async { tokio::time::timeout(timeout, fut).await }) {
        Ok(Ok(v)) => Ok(v),
        // The client's own deadline (the same limit) says it at length.
        Ok(Err(e)) if e.to_string().contains("Timeout expired") => Err(no_answer()),
        Ok(Err(e)) => Err(store_error(spec, describe(&e))),
        Err(_) => Err(no_answer()),
    }
}
