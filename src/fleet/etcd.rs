//! The etcd client of the fleet store: every call answers within its time
//! limit (an unreachable or slow cluster is an [`Error::Store`] naming the
//! endpoints, never a hang), a quorum that answers is enough, and every
//! mutation is one transaction guarded by the revision that was judged
//! (compare-and-swap; see [`crate::fleet::kv`]).
//!
//! A hung, slow or partitioned member costs a call at most its share of the
//! time limit: calls go to one member after the other, starting with the last
//! that answered, and errors that say nothing was applied (no leader, leader
//! changed, unavailable, no answer) are tried again on the next member until
//! the limit, so a claim during an election waits for it. Calls whose
//! deadline is tight (lease renewals, `run`'s checks) go to every member at
//! once and take the first answer ([`Fleet::race`]). Members are asked with
//! `require_leader`: a member cut off from the quorum says so at once
//! instead of waiting.

pub use super::kv::{Created, Stored, aside_key};

use super::StoreSpec;
use crate::error::{Error, Result};
use etcd_client::{Client, ConnectOptions};
use std::future::Future;
use std::time::{Duration, Instant};

pub use super::DEFAULT_TIMEOUT;

/// The pause between two rounds of attempts that all failed for a reason
/// that may pass (an election).
const BACKOFF: Duration = Duration::from_millis(50);

/// A connection to the fleet's etcd cluster: one client per member.
pub struct Fleet {
    rt: tokio::runtime::Runtime,
    clients: Vec<Client>,
    good: std::cell::Cell<usize>,
    spec: StoreSpec,
    timeout: std::cell::Cell<Duration>,
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Nothing is known to be applied, and another attempt may succeed: no
    /// answer in time, no leader, leader changed, unavailable, connection
    /// refused. (A write that got no answer may still have been applied:
    /// every mutation is built to find its own effect when tried again.)
    Retry(String),
    /// The store answered and refused the request: trying again is useless.
    Rejected(String),
    /// The answer was larger than a client message may be (a page of
    /// records too big): a smaller request may succeed.
    TooBig(String),
}

impl Failed {
    fn why(&self) -> &str {
        match self {
            Failed::Retry(w) | Failed::Rejected(w) | Failed::TooBig(w) => w,
        }
    }
}

/// Classifies a client error by its gRPC code: the codes etcd uses for a
/// request it will never accept are final; anything else may pass.
fn classify(e: &etcd_client::Error) -> Failed {
    let why = describe(e);
    let etcd_client::Error::GRpcStatus(status) = e else {
        return Failed::Retry(why);
    };
    if why.contains("message length too large") {
        return Failed::TooBig(why);
    }
    // InvalidArgument (request too large, too many operations in a
    // transaction), NotFound (lease not found), AlreadyExists,
    // PermissionDenied, FailedPrecondition, OutOfRange, Unimplemented,
    // Unauthenticated. ResourceExhausted is final only for a full database
    // ("database space exceeded"); etcd also says "too many requests" with
    // it when a member lags behind: another member may answer.
    match i32::from(status.code()) {
        8 if why.contains("space exceeded") => Failed::Rejected(why),
        3 | 5 | 6 | 7 | 9 | 11 | 12 | 16 => Failed::Rejected(why),
        _ => Failed::Retry(why),
    }
}

impl Fleet {
    /// Connects to `spec`'s endpoints (lazily: a member that is down fails on
    /// first use). `timeout` is the time limit of each call.
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
                .with_timeout(timeout)
                .with_require_leader(true);
            let connect = Client::connect([endpoint.clone()], Some(opts));
            let client = rt
                .block_on(async { tokio::time::timeout(share, connect).await })
                .map_err(|_| store_error(spec, "no answer while connecting"))?
                .map_err(|e| store_error(spec, describe(&e)))?;
            clients.push(client);
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

    /// Runs `f` on this connection's runtime (for a stream that must be
    /// read as it comes, such as a watch).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// One client per member.
    pub(crate) fn members(&self) -> &[Client] {
        &self.clients
    }

    /// The time limit of a call now.
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// The store this connects to.
    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// Runs `f` on one member after the other, each within its share of the
    /// time limit (at least 200 ms), starting with the last that answered,
    /// and round again after errors that may pass, until the limit. A request
    /// that got no answer may still have been applied: every mutation is a
    /// transaction whose retry finds its own effect rather than applying
    /// twice.
    pub(crate) fn call<T, F>(&self, f: impl Fn(Client) -> F) -> std::result::Result<T, Failed>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let limit = self.timeout.get();
        let share = share(limit, n);
        let deadline = Instant::now() + limit;
        let mut last = None;
        let mut k = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let i = (self.good.get() + k) % n;
            let fut = f(self.clients[i].clone());
            match self
                .rt
                .block_on(async { tokio::time::timeout(share.min(left), fut).await })
            {
                Ok(Ok(v)) => {
                    self.good.set(i);
                    return Ok(v);
                }
                Ok(Err(e)) => match classify(&e) {
                    f @ (Failed::Rejected(_) | Failed::TooBig(_)) => return Err(f),
                    f => last = Some(f),
                },
                Err(_) => last = Some(no_answer(share.min(left))),
            }
            // The next attempt (and the next call) starts with the next member.
            self.good.set((i + 1) % n);
            k += 1;
            if k % n == 0 {
                std::thread::sleep(BACKOFF.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        Err(last.unwrap_or_else(|| no_answer(limit)))
    }

    /// Runs `f` on every member at once and takes the first answer; rounds
    /// again after errors that may pass, until the time limit. For reads and
    /// renewals whose deadline matters more than the load: one hung member
    /// never delays them.
    pub(crate) fn race<T, F>(&self, f: impl Fn(Client) -> F) -> std::result::Result<T, Failed>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.timeout.get();
        let deadline = tokio::time::Instant::now() + limit;
        self.rt.block_on(async {
            let mut last = None;
            loop {
                let mut set = tokio::task::JoinSet::new();
                for c in &self.clients {
                    set.spawn(f(c.clone()));
                }
                loop {
                    match tokio::time::timeout_at(deadline, set.join_next()).await {
                        Err(_) => return Err(last.unwrap_or_else(|| no_answer(limit))),
                        Ok(None) => break,
                        Ok(Some(Ok(Ok(v)))) => return Ok(v),
                        Ok(Some(Ok(Err(e)))) => match classify(&e) {
                            f @ (Failed::Rejected(_) | Failed::TooBig(_)) => return Err(f),
                            f => last = Some(f),
                        },
                        Ok(Some(Err(join))) => last = Some(Failed::Retry(join.to_string())),
                    }
                }
                let pause = tokio::time::Instant::now() + BACKOFF;
                if pause >= deadline {
                    return Err(last.unwrap_or_else(|| no_answer(limit)));
                }
                tokio::time::sleep_until(pause).await;
            }
        })
    }

    /// The error for a call that failed: [`Error::StoreRejected`] for a
    /// refusal about `key`, else [`Error::Store`].
    pub(crate) fn error(&self, key: &str, f: Failed) -> Error {
        match f {
            Failed::Rejected(why) | Failed::TooBig(why) => Error::StoreRejected {
                key: key.to_string(),
                why,
            },
            Failed::Retry(why) => store_error(&self.spec, why),
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.why())
    }
}

/// Each of `n` members' share of the time limit (at least 200 ms).
fn share(timeout: Duration, n: usize) -> Duration {
    (timeout / n.max(1) as u32).max(Duration::from_millis(200))
}

fn no_answer(limit: Duration) -> Failed {
    Failed::Retry(format!("no answer within {:.1} s", limit.as_secs_f64()))
}

pub(crate) fn store_error(spec: &StoreSpec, why: impl std::fmt::Display) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_gets_its_share_of_the_limit_and_at_least_200_ms() {
        assert_eq!(share(Duration::from_secs(3), 3), Duration::from_secs(1));
        assert_eq!(
            share(Duration::from_millis(300), 3),
            Duration::from_millis(200)
        );
        assert_eq!(share(Duration::from_secs(1), 0), Duration::from_secs(1));
    }
}
