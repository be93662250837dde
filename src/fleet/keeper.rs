//! The keeper: one process per host and store that keeps the host's lease
//! alive (renewed every TTL/3) and, every period, deletes this host's
//! records that the local PID + tmux rules prove stale (compare-and-delete).
//! If the host or its keeper dies, the lease expires and every record on it
//! with it: the host's workers become free fleet-wide.
//!
//! One keeper per host and store: it holds a `flock` on
//! `<state dir>/keeper-<store>.lock` and publishes its lease id in
//! `keeper-<store>.lease`, where the state dir is `$XDG_RUNTIME_DIR/agentlock`
//! or `/tmp/agentlock-<uid>`. `claim` starts one when none runs.

use super::StoreSpec;
use super::etcd::Fleet;
use super::ops::judge_stored;
use crate::error::{Error, Result};
use crate::probe::{LiveProbes, TmuxQuery};
use crate::verdict::State;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lease TTL by default, in seconds.
pub const DEFAULT_TTL: i64 = 15;

/// Where keepers keep their lock and lease files.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Path::new(&d).join("agentlock"),
        None => PathBuf::from(format!("/tmp/agentlock-{}", nix::unistd::getuid())),
    }
}

/// `keeper-<store>` with every character but letters, digits, `.` and `-`
/// made `_`.
fn stem(spec: &StoreSpec) -> String {
    let raw = format!("{}{}", spec.endpoints.join(","), spec.prefix);
    let name: String = raw
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(180)
        .collect();
    format!("keeper-{name}")
}

fn paths(spec: &StoreSpec) -> (PathBuf, PathBuf) {
    let dir = state_dir();
    let stem = stem(spec);
    (
        dir.join(format!("{stem}.lock")),
        dir.join(format!("{stem}.lease")),
    )
}

fn open_lock(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// The lease of the keeper running for `spec` on this host, if one runs and
/// its lease is alive.
pub fn running_lease(spec: &StoreSpec, fleet: &Fleet) -> Result<Option<i64>> {
    let (lock, lease) = paths(spec);
    let Ok(f) = File::open(&lock) else {
        return Ok(None);
    };
    if Flock::lock(f, FlockArg::LockSharedNonblock).is_ok() {
        return Ok(None); // nobody holds it: no keeper
    }
    let Some((id, _pid)) = read_lease_file(&lease) else {
        return Ok(None);
    };
    Ok((fleet.lease_ttl(id)? > 0).then_some(id))
}

/// `<lease id> <keeper pid>` as the keeper publishes them.
fn read_lease_file(path: &Path) -> Option<(i64, i32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The PID of the keeper running for `spec` on this host, as it published it.
pub fn keeper_pid(spec: &StoreSpec) -> Option<i32> {
    read_lease_file(&paths(spec).1).map(|(_, pid)| pid)
}

/// The lease of this host's keeper for `spec`, starting the keeper (in the
/// background, detached) when none runs.
pub fn ensure(spec: &StoreSpec, store: &str, ttl: i64, fleet: &Fleet) -> Result<i64> {
    if let Some(id) = running_lease(spec, fleet)? {
        return Ok(id);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["keeper", "--foreground", "--store", store, "--lease-ttl"])
        .arg(ttl.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(&exe, e))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(id) = running_lease(spec, fleet)? {
            return Ok(id);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another keeper won the start race, or this one failed.
            if let Some(id) = running_lease(spec, fleet)? {
                return Ok(id);
            }
            return Err(Error::Store {
                endpoints: spec.endpoints.join(","),
                why: format!("the keeper could not start ({status})"),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Store {
                endpoints: spec.endpoints.join(","),
                why: "the keeper did not publish a lease within 15 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// This host's records looked at.
    pub records: usize,
    /// Stale ones deleted.
    pub deleted: usize,
}

/// Deletes this host's records the local rules prove stale, each by
/// compare-and-delete on the revision judged; tmux is asked afresh.
pub fn sweep(fleet: &Fleet, fleet_root: &Path) -> Result<Swept> {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let mut swept = Swept::default();
    for (key, stored) in fleet.list()? {
        let Ok(fr) = &stored.record else { continue };
        if !probes.host.is_local(fr.record.hostname.as_deref()) {
            continue;
        }
        swept.records += 1;
        let worker = super::worker_of(fleet.spec(), fleet_root, &key).unwrap_or_default();
        let judged = judge_stored(&worker, &key, Some(&stored), &probes);
        if judged.judgement.state == State::Stale && fleet.delete(&key, stored.revision)? {
            swept.deleted += 1;
        }
    }
    Ok(swept)
}

/// Runs the keeper in the foreground until killed: one per host and store
/// (returns at once if another runs).
pub fn run(spec: &StoreSpec, ttl: i64, period: Duration, fleet: &Fleet) -> Result<()> {
    let (lock, lease_path) = paths(spec);
    let Ok(_held) = Flock::lock(open_lock(&lock)?, FlockArg::LockExclusiveNonblock) else {
        return Ok(()); // another keeper runs for this store
    };
    let publish = |id: i64| -> Result<()> {
        let tmp = lease_path.with_extension("lease.tmp");
        let me = nix::unistd::getpid();
        std::fs::write(&tmp, format!("{id} {me}\n")).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &lease_path).map_err(|e| Error::io(&lease_path, e))
    };
    let mut id = fleet.grant(ttl)?;
    publish(id)?;
    let renew = Duration::from_secs_f64(ttl as f64 / 3.0);
    let mut next_sweep = Instant::now();
    loop {
        match fleet.keep_alive(id) {
            Ok(left) if left > 0 => {}
            // Expired (the keeper stalled past its TTL): every record on it is
            // gone; a new lease for new claims.
            Ok(_) => {
                id = fleet.grant(ttl)?;
                publish(id)?;
            }
            Err(_) => {} // etcd unreachable: try again next time
        }
        if Instant::now() >= next_sweep {
            let _ = sweep(fleet, Path::new("/"));
            next_sweep = Instant::now() + period;
        }
        std::thread::sleep(renew);
    }
}
