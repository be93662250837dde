//! The fleet store: worker identities kept in etcd, for fleets
//! that span hosts. This module holds what needs no etcd client: the store
//! address (`etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`), the key a worker is
//! kept under (its path relative to the fleet root), and the stored value (the
//! lock record plus `fence`). The client itself is [`etcd`], behind the cargo
//! feature `etcd`.

#[cfg(feature = "etcd")]
mod claim;
#[cfg(feature = "etcd")]
pub mod doctor;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod hold;
#[cfg(feature = "etcd")]
mod journal;
#[cfg(feature = "etcd")]
pub mod keeper;
#[cfg(feature = "etcd")]
pub mod keeping;
#[cfg(feature = "etcd")]
pub mod kv;
#[cfg(feature = "etcd")]
pub mod ops;
#[cfg(feature = "etcd")]
mod queue;
#[cfg(feature = "etcd")]
mod release;
#[cfg(feature = "etcd")]
pub mod sweep;
#[cfg(feature = "etcd")]
pub mod waiting;
#[cfg(feature = "etcd")]
mod watch;

use crate::error::{Error, Result};
use crate::record::LockRecord;
use std::path::{Component, Path, PathBuf};

/// Lease TTL by default, in seconds.
pub const DEFAULT_TTL: i64 = 15;

/// The least lease TTL, in seconds: etcd's own minimum with its default
/// election timeout (it raises a shorter one), and the least that leaves a
/// renewal every third of it room for a round trip.
pub const MIN_TTL: i64 = 2;

/// How long a fleet store call may take, by default (at most the TTL).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The prefix keys live under when the address names none.
pub const DEFAULT_PREFIX: &str = "/agentlock";

/// Where the fleet's identities are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// `http://HOST:PORT` of each etcd member given.
    pub endpoints: Vec<String>,
    /// Key prefix, starting with `/` and without a trailing `/`.
    pub prefix: String,
}

impl StoreSpec {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
    ///
    /// ```
    /// use agentlock::fleet::StoreSpec;
    ///
    /// let s = StoreSpec::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/town")?;
    /// assert_eq!(s.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    /// assert_eq!(s.prefix, "/town");
    /// assert_eq!(StoreSpec::parse("etcd://localhost:2379")?.prefix, "/agentlock");
    /// assert!(StoreSpec::parse("redis://x:1").is_err());
    /// # Ok::<(), agentlock::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<StoreSpec> {
        let bad = |why: &str| Error::BadStore {
            store: s.to_string(),
            why: why.to_string(),
        };
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("only etcd://HOST:PORT[,HOST:PORT...][/PREFIX] is supported"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_matches('/'))),
            None => (rest, DEFAULT_PREFIX.to_string()),
        };
        let prefix = if prefix == "/" {
            DEFAULT_PREFIX.to_string()
        } else {
            prefix
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("{h:?} is not HOST:PORT")))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("{h:?} is not HOST:PORT")));
            }
            endpoints.push(format!("http://{h}"));
        }
        Ok(StoreSpec { endpoints, prefix })
    }
}

/// The key `worker` is kept under: `<prefix>/workers/<path relative to the
/// fleet root>`. Both paths are resolved first, so each host may keep its
/// checkout anywhere; a worker outside the root is an error.
pub fn worker_key(spec: &StoreSpec, fleet_root: &Path, worker: &Path) -> Result<String> {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoSuchWorker { path: p.into() },
            _ => Error::io(p, e),
        })
    };
    let (root, dir) = (canon(fleet_root)?, canon(worker)?);
    let outside = |why: String| Error::OutsideFleet {
        path: dir.clone(),
        root: root.clone(),
        why,
    };
    let rel = dir
        .strip_prefix(&root)
        .map_err(|_| outside(format!("not inside the fleet root {}", root.display())))?;
    if rel.as_os_str().is_empty() {
        return Err(outside(
            "is the fleet root itself, not a worker in it".into(),
        ));
    }
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if parts.len() != rel.components().count() {
        return Err(outside(
            "its path under the fleet root is not UTF-8, and fleet keys are".into(),
        ));
    }
    Ok(format!("{}/workers/{}", spec.prefix, parts.join("/")))
}

/// `worker` resolved (canonical) and the key it is kept under.
pub fn locate(spec: &StoreSpec, fleet_root: &Path, worker: &Path) -> Result<(PathBuf, String)> {
    if let Some(e) = crate::lock::not_a_worker(worker) {
        return Err(e);
    }
    let key = worker_key(spec, fleet_root, worker)?;
    let dir = std::fs::canonicalize(worker).map_err(|e| Error::io(worker, e))?;
    if let Some(e) = crate::lock::not_a_worker(&dir) {
        return Err(e);
    }
    Ok((dir, key))
}

/// The worker path of `key` under `fleet_root` (the inverse of [`worker_key`]).
pub fn worker_of(spec: &StoreSpec, fleet_root: &Path, key: &str) -> Option<PathBuf> {
    let rel = key.strip_prefix(&format!("{}/workers/", spec.prefix))?;
    Some(fleet_root.join(rel))
}

/// A stored identity: the lock record and its fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRecord {
    /// The same record the lock file holds.
    pub record: LockRecord,
    /// Strictly increases with every new holder of the worker: the etcd
    /// revision of the claim that made this holder.
    pub fence: i64,
}

impl FleetRecord {
    /// Reads a stored value. `fence` is the value's own `fence` (kept across
    /// refreshes), else the key's revision (the claim that wrote it). A
    /// fence is the revision of a past write, so one above `mod_revision`
    /// (or not a positive integer) was not written by a claim: such a value
    /// is not a valid record, or a later holder's fence could be smaller.
    pub fn parse(value: &[u8], mod_revision: i64) -> std::result::Result<FleetRecord, String> {
        let record = LockRecord::parse(value).map_err(|e| e.to_string())?;
        let fence = match serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("fence").cloned())
        {
            None => mod_revision,
            Some(f) => match f.as_i64() {
                Some(f) if f > 0 && f <= mod_revision => f,
                _ => {
                    return Err(format!(
                        "fence {f} is not a revision up to the key's ({mod_revision})"
                    ));
                }
            },
        };
        Ok(FleetRecord { record, fence })
    }

    /// The value to store: the record, plus `fence` when it must be kept (a
    /// refresh); a new holder's fence is the revision its claim gets.
    pub fn value(record: &LockRecord, keep_fence: Option<i64>) -> String {
        let json = record.to_json();
        match (keep_fence, serde_json::from_str::<serde_json::Value>(&json)) {
            (Some(f), Ok(serde_json::Value::Object(mut m))) => {
                m.insert("fence".into(), f.into());
                serde_json::to_string_pretty(&m).unwrap_or(json)
            }
            _ => json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_above_the_keys_revision_is_not_trusted() {
        let v = FleetRecord::value(
            &LockRecord {
                pid: 7,
                ..LockRecord::default()
            },
            Some(40),
        );
        assert_eq!(FleetRecord::parse(v.as_bytes(), 41).unwrap().fence, 40);
        assert_eq!(FleetRecord::parse(v.as_bytes(), 40).unwrap().fence, 40);
        assert!(FleetRecord::parse(v.as_bytes(), 39).is_err());
        for bad in [r#"{"pid": 7, "fence": -1}"#, r#"{"pid": 7, "fence": "9"}"#] {
            assert!(FleetRecord::parse(bad.as_bytes(), 50).is_err(), "{bad}");
        }
        let plain = LockRecord {
            pid: 7,
            ..LockRecord::default()
        }
        .to_json();
        assert_eq!(FleetRecord::parse(plain.as_bytes(), 12).unwrap().fence, 12);
    }

    #[test]
    fn store_addresses() {
        let s = StoreSpec::parse("etcd://a:1,b:2/").unwrap();
        assert_eq!(s.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(s.prefix, DEFAULT_PREFIX);
        assert_eq!(StoreSpec::parse("etcd://a:1/x/y/").unwrap().prefix, "/x/y");
        for bad in [
            "etcd://",
            "etcd://a",
            "etcd://a:x",
            "etcd://:1",
            "http://a:1",
            "etcd://a:1,",
        ] {
            assert!(StoreSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_relative_to_the_fleet_root() {
        let root = tempfile::tempdir().unwrap();
        let w = root.path().join("rig/max");
        std::fs::create_dir_all(&w).unwrap();
        let spec = StoreSpec::parse("etcd://a:1/town").unwrap();
        let key = worker_key(&spec, root.path(), &w).unwrap();
        assert_eq!(key, "/town/workers/rig/max");
        assert_eq!(worker_of(&spec, root.path(), &key).unwrap(), w);
        let outside = tempfile::tempdir().unwrap();
        assert!(matches!(
            worker_key(&spec, root.path(), outside.path()),
            Err(Error::OutsideFleet { .. })
        ));
        let why = |w: &Path| match worker_key(&spec, root.path(), w) {
            Err(Error::OutsideFleet { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(outside.path()).contains("not inside the fleet root"));
        assert!(why(root.path()).contains("fleet root itself"));
        use std::os::unix::ffi::OsStrExt;
        let odd = root.path().join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        std::fs::create_dir(&odd).unwrap();
        assert!(why(&odd).contains("not UTF-8"));
    }

    #[test]
    fn the_fence_is_kept_across_refreshes_only() {
        let rec = LockRecord {
            pid: 42,
            ..LockRecord::default()
        };
        let fresh = FleetRecord::value(&rec, None);
        assert_eq!(FleetRecord::parse(fresh.as_bytes(), 17).unwrap().fence, 17);
        let refreshed = FleetRecord::value(&rec, Some(17));
        let back = FleetRecord::parse(refreshed.as_bytes(), 99).unwrap();
        assert_eq!((back.fence, back.record.pid), (17, 42));
    }
}
